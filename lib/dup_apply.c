/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dup_journal_p.h"
#include "dup_plan_p.h"
#include "engine_p.h"
#include "json_p.h"
#include "ksync.h"
#include "macro.h"
#include "remote_p.h"
#include "text_p.h"

/* A merge of duplicates carried out, and undone: the plan of lib/dup_list.c applied on the
 * server, in the files and in the cache, each step recorded in the journal
 * (lib/dup_journal.c). It runs under the account's lock, so that no sync runs meanwhile. */

/* What a merge or an undo works on: the address book's files and rows, and the server. */
typedef struct job {
	const ks_account_config *acc;
	ks_local L;		/* the address book's directory and rows */
	ks_remote *remote;	/* the account's server */
	char **reterr_msg;
} job;

static int merge_run(ks_engine *e, const ks_config *c, dup_plan *p, dup_journal *J,
		     char **reterr_msg);
static int write_result(const dup_plan *p, const dup_journal *J, bool dry_run, char **ret);
static int undo_run(ks_engine *e, const ks_config *c, dup_journal *J, ks_json_writer *w,
		    char **reterr_msg);
static int restore_name(job *j, const dup_jentry *en, char **ret);
static int job_start(job *j, ks_engine *e, const ks_config *c, const char *account,
		     ks_collection *col, char **reterr_msg);
static void job_done(job *j);
static int check_local(job *j, const char *href, const char *label);
static int check_intents(job *j, const char *const *hrefs, size_t n);
static int check_server(job *j, const char *const *hrefs, const char *const *etags,
			const char *const *labels, size_t n);
static int send_one(job *j, const char *href, const char *data, size_t len, const char *if_match,
		    char **ret_etag, char *errmsg, size_t errlen);
static int store_item(job *j, const char *href, const char *etag, const char *filename,
		      const char *data, size_t len, char **ret_etag);
static int drop_item(job *j, const char *href, const char *filename);

int ks_dup_merge(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		 bool dry_run, char **ret_json, char **reterr_msg)
{
	_cleanup_(ks_dup_plan_done) dup_plan p = {};
	dup_journal J = { .dirfd = -1 };
	int r;

	assert(e && c && ret_json);
	r = ks_dup_plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r < 0)
		return r;
	if (p.b.col.readonly)
		return ks_set_error(reterr_msg, -EROFS, "the address book '%s' of account %s is read-only "
			       "on the server: its cards cannot be merged", p.b.col.displayname
			       ? p.b.col.displayname : p.b.col.name, p.b.account);
	if (dry_run)
		return write_result(&p, NULL, true, ret_json);

	/* The plan is made again under the lock: a sync that ran meanwhile may have brought
	 * new versions of the cards (or sent local edits of them), which the merge must use. */
	_cleanup_free_ char *account = strdup(p.b.account);
	int lock_fd = -1;
	if (!account)
		return -ENOMEM;
	ks_dup_plan_done(&p);
	/* A sync of the account waits for the merge, and the merge for a sync under way:
	 * what it reads from the cache is read under the lock. */
	r = ks_engine_lock_account(e, account, true, &lock_fd, reterr_msg);
	if (r < 0)
		return r;
	r = ks_dup_plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r >= 0 && strcmp(p.b.account, account) != 0)
		r = ks_set_error(reterr_msg, -ENOENT, "group %s moved to another account meanwhile; list "
			    "the duplicates again", id);
	if (r >= 0)
		r = merge_run(e, c, &p, &J, reterr_msg);
	if (r >= 0)
		r = write_result(&p, &J, false, ret_json);
	close(lock_fd);
	ks_dup_journal_done(&J);
	return r;
}

int ks_dup_undo(ks_engine *e, const ks_config *c, const char *account, char **ret_json,
		char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	dup_journal J = { .dirfd = -1 };
	ks_json_writer w;
	int r;

	assert(e && c && ret_json);
	if (account && *account && !ks_config_find_account(c, account))
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	r = ks_dup_journal_find_last(e, c, account, &J, reterr_msg);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "no merge of duplicates to undo");
	if (r < 0)
		return r;
	int lock_fd = -1;
	r = ks_engine_lock_account(e, J.account, true, &lock_fd, reterr_msg);
	if (r < 0) {
		ks_dup_journal_done(&J);
		return r;
	}
	ks_json_writer_init(&w, &buf, false);
	r = undo_run(e, c, &J, &w, reterr_msg);
	close(lock_fd);
	ks_dup_journal_done(&J);
	if (r < 0)
		return r;
	return ks_dup_finish_json(&w, &buf, ret_json);
}

static int merge_run(ks_engine *e, const ks_config *c, dup_plan *p, dup_journal *J,
		     char **reterr_msg)
{
	_cleanup_(job_done) job j = { .L.dirfd = -1 };
	dup_book *b = &p->b;
	size_t n_inv = p->n_members + p->n_groups;
	_cleanup_free_ const char **hrefs = calloc(n_inv, sizeof(char *));
	_cleanup_free_ const char **etags = calloc(n_inv, sizeof(char *));
	_cleanup_free_ char **labels = calloc(n_inv, sizeof(char *));
	_cleanup_free_ char *new_etag = NULL;
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r;

	if (!hrefs || !etags || !labels)
		return -ENOMEM;
	r = job_start(&j, e, c, b->account, &b->col, reterr_msg);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_inv; i++) {
		size_t idx = i < p->n_members ? p->members[i] : p->groups[i - p->n_members];
		const dup_book_item *it = &b->items[idx];
		hrefs[i] = it->href;
		etags[i] = it->etag;
		labels[i] = ks_dup_label(b, idx);
		if (!labels[i]) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; r >= 0 && i < n_inv; i++)
		r = check_local(&j, hrefs[i], labels[i]);
	if (r >= 0)
		r = check_intents(&j, hrefs, n_inv);
	if (r >= 0)
		r = check_server(&j, hrefs, etags, (const char *const *) labels, n_inv);
	if (r >= 0)
		r = ks_dup_journal_begin(&j.L, p, J, reterr_msg);
	if (r < 0)
		goto out;

	/* The merged card first: a failure here leaves every card as it was. */
	const dup_book_item *ref = &b->items[p->ref];
	r = send_one(&j, ref->href, p->merged.data, p->merged.len,
		     ref->etag ? ref->etag : "*", &new_etag,
		     errmsg, sizeof(errmsg));
	if (r < 0) {
		/* Nothing changed anywhere: the copies are not needed. */
		ks_dup_journal_remove(J);
		if (r == -ESTALE)
			r = ks_set_error(reterr_msg, r, "%s changed on the server meanwhile; nothing was "
				    "merged. Run 'ksyncctl sync' and look at the group again.",
				    labels[0]);
		else
			r = ks_set_error(reterr_msg, r, "cannot write the merged card: %s",
				    errmsg[0] ? errmsg : strerror(-r));
		goto out;
	}
	J->kept.done = true;
	J->kept.etag_after = new_etag ? strdup(new_etag) : NULL;
	/* The etag the undo expects is the one the server holds now, as read back. */
	r = store_item(&j, ref->href, new_etag, ref->filename, p->merged.data, p->merged.len,
		       &J->kept.etag_after);
	if (r >= 0)
		r = ks_dup_journal_set_state(J, "partial");
	if (r < 0)
		goto out;

	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		const dup_book_item *it = &b->items[p->groups[i]];
		_cleanup_free_ char *et = NULL;
		r = send_one(&j, it->href, p->group_data[i], p->group_len[i],
			     it->etag ? it->etag : "*", &et,
			     errmsg, sizeof(errmsg));
		if (r < 0)
			break;
		r = store_item(&j, it->href, et, it->filename, p->group_data[i], p->group_len[i],
			       &J->groups[i].etag_after);
		if (r >= 0) {
			J->groups[i].done = true;
			r = ks_dup_journal_save(J);
		}
	}
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "the merged card was written, but a group card could not "
			    "be updated (%s); the other cards were kept. 'ksyncctl duplicates undo' "
			    "puts the reference card back.", r == -ESTALE
				    ? "it changed on the server meanwhile"
				    : errmsg[0] ? errmsg : strerror(-r));
		goto out;
	}

	for (size_t i = 1; r >= 0 && i < p->n_members; i++) {
		const dup_book_item *it = &b->items[p->members[i]];
		r = send_one(&j, it->href, NULL, 0, it->etag ? it->etag : "*", NULL,
			     errmsg, sizeof(errmsg));
		if (r == -ENOENT)
			r = 0;	/* gone already: what the merge wanted */
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "%s %s, so it was not removed; the merged card was "
				    "written and the cards before it removed. Sync, then merge the "
				    "group again, or undo with 'ksyncctl duplicates undo'.",
				    labels[i], r == -ESTALE ? "changed on the server during the merge"
							    : errmsg[0] ? errmsg : strerror(-r));
			break;
		}
		r = drop_item(&j, it->href, it->filename);
		if (r >= 0) {
			J->removed[i - 1].done = true;
			r = ks_dup_journal_save(J);
		}
	}
	if (r >= 0)
		r = ks_dup_journal_set_state(J, "done");
out:
	for (size_t i = 0; i < n_inv; i++)
		free(labels[i]);
	return r;
}

static int write_result(const dup_plan *p, const dup_journal *J, bool dry_run, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;

	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	ks_dup_write_plan(&w, p);
	ks_json_write_key(&w, "dry_run");
	ks_json_write_bool(&w, dry_run);
	ks_json_write_key(&w, "kept");
	ks_json_write_string(&w, p->b.items[p->ref].uid);
	ks_json_write_key(&w, "removed");
	ks_json_write_array_begin(&w);
	for (size_t i = 1; i < p->n_members; i++)
		if (dry_run || (J && J->removed[i - 1].done))
			ks_json_write_string(&w, p->b.items[p->members[i]].uid);
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "backup");
	ks_json_write_string(&w, J ? J->dir : NULL);
	ks_json_write_object_end(&w);
	return ks_dup_finish_json(&w, &buf, ret);
}

static int undo_run(ks_engine *e, const ks_config *c, dup_journal *J, ks_json_writer *w,
		    char **reterr_msg)
{
	_cleanup_(job_done) job j = { .L.dirfd = -1 };
	ks_collection *cols = NULL, *col = NULL;
	size_t n_cols = 0;
	ks_cache_item kept = {};
	_cleanup_free_ char *old = NULL, *et = NULL;
	_cleanup_(ks_buf_done) ks_buf notices = {};
	size_t len = 0;
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r;

	r = ks_cache_list_collections(e->cache, J->account, &cols, &n_cols);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_cols; i++)
		if (cols[i].kind == KS_COLLECTION_ADDRESSBOOK && strcmp(cols[i].name, J->collection) == 0)
			col = &cols[i];
	if (!col) {
		r = ks_set_error(reterr_msg, -ENOENT, "the address book %s of account %s is gone; the "
			    "cards are kept in %s", J->collection, J->account, J->dir);
		goto out;
	}
	if (col->readonly) {
		r = ks_set_error(reterr_msg, -EROFS, "the address book %s is read-only now; the cards are "
			    "kept in %s", J->collection, J->dir);
		goto out;
	}
	r = job_start(&j, e, c, J->account, col, reterr_msg);
	if (r < 0)
		goto out;

	/* An undo cut off halfway is taken up where it stopped: what it did is marked in the
	 * journal step by step, and the kept card is then as the undo left it. */
	if (strcmp(J->state, "undoing") != 0) {
		r = ks_dup_journal_set_state(J, "undoing");
		if (r < 0)
			goto out;
	}
	const char *kept_etag = J->kept.undone ? J->kept.etag_undone : J->kept.etag_after;
	/* The kept card must be as the merge (or the undo) left it: an edit since would be
	 * lost. */
	r = ks_cache_get_item(e->cache, col->id, J->kept.href, &kept);
	if (r == -ENOENT || (r >= 0 && kept_etag &&
			     (!kept.etag || strcmp(kept.etag, kept_etag) != 0))) {
		r = ks_set_error(reterr_msg, -ESTALE, "the kept card (UID %s) changed since the merge; "
			    "undo refused so that the change is not lost. The cards removed by the "
			    "merge are kept in %s", J->kept.uid, J->dir);
		goto out;
	}
	if (r < 0)
		goto out;
	r = check_local(&j, J->kept.href, "the kept card");
	if (r < 0)
		goto out;

	if (!J->kept.undone) {
		r = ks_dup_journal_read_copy(J, &J->kept, &old, &len);
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot read the copy of the kept card in %s: %s",
				    J->dir, strerror(-r));
			goto out;
		}
		r = send_one(&j, J->kept.href, old, len, kept_etag ? kept_etag : kept.etag,
			     &et, errmsg, sizeof(errmsg));
		if (r == -ESTALE) {
			r = ks_set_error(reterr_msg, r, "the kept card (UID %s) changed on the server "
				    "since the merge; undo refused. The cards removed by the merge are "
				    "kept in %s", J->kept.uid, J->dir);
			goto out;
		}
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot put the kept card back: %s",
				    errmsg[0] ? errmsg : strerror(-r));
			goto out;
		}
		r = store_item(&j, J->kept.href, et, kept.filename, old, len, &et);
		if (r >= 0)
			r = ks_dup_journal_mark_undone(J, &J->kept, et);
		if (r < 0)
			goto out;
	}

	ks_json_write_object_begin(w);
	ks_json_write_key(w, "id");
	ks_json_write_string(w, J->id);
	ks_json_write_key(w, "account");
	ks_json_write_string(w, J->account);
	ks_json_write_key(w, "collection");
	ks_json_write_string(w, J->collection);
	ks_json_write_key(w, "kept");
	ks_json_write_string(w, J->kept.uid);
	ks_json_write_key(w, "backup");
	ks_json_write_string(w, J->dir);
	ks_json_write_key(w, "restored");
	ks_json_write_array_begin(w);
	for (size_t i = 0; r >= 0 && i < J->n_removed; i++) {
		dup_jentry *en = &J->removed[i];
		_cleanup_free_ char *data = NULL, *etag = NULL, *name = NULL;
		size_t dlen = 0;
		if (!en->done)
			continue;	/* never removed */
		if (en->undone) {
			ks_json_write_string(w, en->uid);	/* by the undo cut off before */
			continue;
		}
		r = ks_dup_journal_read_copy(J, en, &data, &dlen);
		if (r < 0)
			break;
		r = send_one(&j, en->href, data, dlen, NULL, &etag, errmsg, sizeof(errmsg));
		if (r == -ESTALE) {
			/* Something is at that href again: it is not overwritten. */
			r = ks_buf_printf(&notices, "%s%s exists again on the server and was left "
					  "as it is (the old card is in %s/%s)", notices.len ? "; " : "",
					  en->href, J->dir, en->file);
			if (r >= 0)
				r = ks_dup_journal_mark_undone(J, en, NULL);
			continue;
		}
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot create the card %s again: %s", en->uid,
				    errmsg[0] ? errmsg : strerror(-r));
			break;
		}
		r = restore_name(&j, en, &name);
		if (r >= 0)
			r = store_item(&j, en->href, etag, name, data, dlen, &etag);
		if (r >= 0)
			r = ks_dup_journal_mark_undone(J, en, etag);
		if (r >= 0)
			ks_json_write_string(w, en->uid);
	}
	ks_json_write_array_end(w);
	for (size_t i = 0; r >= 0 && i < J->n_groups; i++) {
		dup_jentry *en = &J->groups[i];
		_cleanup_free_ char *data = NULL, *etag = NULL;
		size_t dlen = 0;
		if (!en->done || !en->etag_after || en->undone)
			continue;
		r = ks_dup_journal_read_copy(J, en, &data, &dlen);
		if (r >= 0)
			r = send_one(&j, en->href, data, dlen, en->etag_after, &etag, errmsg,
				     sizeof(errmsg));
		if (r == -ESTALE || r == -ENOENT) {
			r = ks_buf_printf(&notices, "%sthe group card %s changed since the merge; "
					  "its members were left as they are", notices.len ? "; " : "",
					  en->uid);
			if (r >= 0)
				r = ks_dup_journal_mark_undone(J, en, NULL);
			continue;
		}
		if (r >= 0)
			r = store_item(&j, en->href, etag, en->filename, data, dlen, &etag);
		if (r >= 0)
			r = ks_dup_journal_mark_undone(J, en, etag);
	}
	if (r < 0)
		goto out;
	ks_json_write_key(w, "notice");
	ks_json_write_string(w, notices.len ? notices.data : NULL);
	ks_json_write_object_end(w);
	r = ks_dup_journal_set_state(J, "undone");
out:
	ks_cache_item_done(&kept);
	ks_collection_free_array(cols, n_cols);
	return r;
}

/* A name for a restored card's file: its old one, unless another item took it since or a
 * file is there (one kept because it was edited during the merge, and not synced since). */
static int restore_name(job *j, const dup_jentry *en, char **ret)
{
	int r = ks_cache_filename_taken(j->L.e->cache, j->L.col->id, en->filename, en->href);

	if (r < 0)
		return r;
	if (r == 0 && faccessat(j->L.dirfd, en->filename, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		r = 1;
	else if (r == 0 && errno != ENOENT)
		return -errno;
	if (r == 0)
		return (*ret = strdup(en->filename)) ? 0 : -ENOMEM;
	const char *dot = strrchr(en->filename, '.');
	size_t base = dot ? (size_t) (dot - en->filename) : strlen(en->filename);
	return asprintf(ret, "%.*s-restored%s", (int) base, en->filename, dot ? dot : "") < 0
		       ? -ENOMEM : 0;
}

static int job_start(job *j, ks_engine *e, const ks_config *c, const char *account,
		     ks_collection *col, char **reterr_msg)
{
	_cleanup_free_ char *why = NULL, *where = NULL;
	int r;

	*j = (job) { .L.dirfd = -1, .reterr_msg = reterr_msg };
	j->acc = ks_config_find_account(c, account);
	if (!j->acc)
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	r = ks_local_init(&j->L, e, account, col);
	if (r >= 0)
		r = ks_local_open(&j->L, false, &where);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot open %s: %s", where ? where : col->name,
				    r == -ELOOP ? "a symbolic link is on the way, which ksync does "
						  "not follow" : strerror(-r));
	r = ks_remote_dav_open(j->acc, &j->remote, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));
	return 0;
}

static void job_done(job *j)
{
	ks_remote_free(j->remote);
	ks_local_done(&j->L);
	*j = (job) { .L.dirfd = -1 };
}

/* Whether the file of the item at href is as ksync last wrote or saw it: no local edit that a
 * sync has yet to send. */
static int check_local(job *j, const char *href, const char *label)
{
	ks_cache_item it = {};
	int r = ks_cache_get_item(j->L.e->cache, j->L.col->id, href, &it);

	if (r >= 0)
		r = ks_local_file_state(&j->L, &it);
	if (r == KS_PLAN_FILE_MISSING)
		r = ks_set_error(j->reterr_msg, -EBUSY, "the file of %s (%s) was removed here and the "
			    "removal is not synced yet: run 'ksyncctl sync' first", label,
			    it.filename);
	else if (r == KS_PLAN_FILE_EDITED)
		r = ks_set_error(j->reterr_msg, -EBUSY, "%s (%s) was edited here and the edit is not "
			    "synced yet: run 'ksyncctl sync' first", label, it.filename);
	else if (r == KS_PLAN_FILE_OTHER)
		r = ks_set_error(j->reterr_msg, -EBUSY, "the file of %s (%s) is no regular file (a "
			    "symbolic link?), which ksync leaves alone: make it a file again", label,
			    it.filename);
	ks_cache_item_done(&it);
	return r < 0 ? r : 0;
}

static int check_intents(job *j, const char *const *hrefs, size_t n)
{
	ks_intent *in = NULL;
	size_t n_in = 0;
	int r = ks_cache_list_intents(j->L.e->cache, j->L.col->id, &in, &n_in);

	for (size_t i = 0; r >= 0 && i < n_in; i++)
		for (size_t k = 0; k < n; k++)
			if (strcmp(in[i].href, hrefs[k]) == 0)
				r = ks_set_error(j->reterr_msg, -EBUSY, "an upload of %s is under way: "
					    "run 'ksyncctl sync' first", hrefs[k]);
	ks_intents_free(in, n_in);
	return r;
}

/* Asks the server for the items at hrefs (GET) and checks that each still has the etag the
 * cache holds: before anything is written, so that a card changed elsewhere since the last
 * sync stops the merge with nothing changed. */
static int check_server(job *j, const char *const *hrefs, const char *const *etags,
			const char *const *labels, size_t n)
{
	int r = 0;

	for (size_t i = 0; r >= 0 && i < n; i++) {
		ks_remote_reply got = {};
		int k = ks_remote_get(j->remote, hrefs[i], false, &got);

		if (k == -ENOENT)
			r = ks_set_error(j->reterr_msg, -ESTALE, "%s was deleted on the server since the "
				    "last sync; nothing was merged. Run 'ksyncctl sync' and list "
				    "the duplicates again.", labels[i]);
		else if (k < 0)
			r = ks_set_error(j->reterr_msg, k, "cannot read %s from the server: %s",
				    labels[i], got.errmsg[0] ? got.errmsg : strerror(-k));
		else if (etags[i] && got.etag && strcmp(etags[i], got.etag) != 0)
			r = ks_set_error(j->reterr_msg, -ESTALE, "%s changed on the server since the last "
				    "sync; nothing was merged. Run 'ksyncctl sync' and look at the "
				    "group again.", labels[i]);
		ks_remote_reply_done(&got);
	}
	return r;
}

/* A conditional PUT (data) or DELETE (data NULL): If-Match: if_match, or If-None-Match: *
 * without it. *ret_etag (PUT) gets the reply's ETag or NULL; errmsg the failure. */
static int send_one(job *j, const char *href, const char *data, size_t len, const char *if_match,
		    char **ret_etag, char *errmsg, size_t errlen)
{
	ks_remote_write w = {
		.op = data ? KS_REMOTE_PUT : KS_REMOTE_DELETE, .href = href, .data = data,
		.len = len, .card = true, .if_match = if_match,
	};
	int r = ks_remote_write_one(j->remote, &w);

	if (r >= 0 && ret_etag)
		*ret_etag = TAKE_PTR(w.reply.etag);
	if (r < 0 && errmsg)
		snprintf(errmsg, errlen, "%s", w.reply.errmsg);
	ks_remote_reply_done(&w.reply);
	return r;
}

/* Writes the item's file and its row as the server now holds it: read back, since servers
 * may store a card otherwise than it was sent (Radicale writes it anew), and the file and
 * the cache should hold the server's bytes. When the read fails, what was sent (with the
 * reply's etag) is recorded; the next sync corrects it. *ret_etag (replaced) gets the etag
 * the server holds, as far as known.
 *
 * A file edited here since the merge looked at it is the user's: it is left as it is, and so
 * is its row, so that the next sync merges the edit with what the server now holds, as it
 * does for any edit made while the server changed. Returns 1 when the file and its row were
 * written, 0 when the file was left. */
static int store_item(job *j, const char *href, const char *etag, const char *filename,
		      const char *data, size_t len, char **ret_etag)
{
	_cleanup_free_ char *got = NULL, *got_etag = NULL;
	struct stat st, cur, *expected = NULL;
	ks_cache_item row = {};
	int r;

	ks_remote_reply rb = {};
	r = ks_remote_get(j->remote, href, ks_local_wants_vcard4(&j->L, data, len), &rb);
	if (r >= 0 && rb.body && rb.etag) {
		got = TAKE_PTR(rb.body);
		got_etag = TAKE_PTR(rb.etag);
		data = got;
		len = rb.body_len;
		etag = got_etag;
	}
	ks_remote_reply_done(&rb);
	if (etag && (!*ret_etag || strcmp(*ret_etag, etag) != 0)) {
		char *e = strdup(etag);
		if (!e)
			return -ENOMEM;
		free(*ret_etag);
		*ret_etag = e;
	}

	r = ks_cache_get_item(j->L.e->cache, j->L.col->id, href, &row);
	if (r >= 0 && strcmp(row.filename, filename) == 0)
		r = ks_local_file_state(&j->L, &row);
	else if (r >= 0 || r == -ENOENT)
		r = KS_PLAN_FILE_MISSING;	/* a card put back, under a name of its own */
	ks_cache_item_done(&row);
	if (r == KS_PLAN_FILE_AS_RECORDED) {
		/* Checked again right before the file is replaced. */
		if (fstatat(j->L.dirfd, filename, &cur, AT_SYMLINK_NOFOLLOW) == 0)
			expected = &cur;
		else if (errno != ENOENT)
			r = -errno;
	}
	if (r < 0)
		return r;
	if (r == KS_PLAN_FILE_EDITED || r == KS_PLAN_FILE_OTHER)
		return 0;
	r = ks_local_replace_file(&j->L, filename, expected, data, len, &st);
	if (r <= 0)
		return r;
	r = ks_local_record_item(&j->L, href, etag, filename, data, len, &st);
	return r < 0 ? r : 1;
}

/* The server no longer has href: its file goes, then its row (a crash between the two
 * leaves a row for a missing file, which the next sync's listing clears). A file edited here
 * since the merge looked at it stays: only its row goes, and the next sync sends the file as
 * a new card, as it does with any edit of a card deleted on the server. */
static int drop_item(job *j, const char *href, const char *filename)
{
	ks_cache_item row = {};
	int r = ks_cache_get_item(j->L.e->cache, j->L.col->id, href, &row);

	if (r >= 0)
		r = ks_local_file_state(&j->L, &row);
	else if (r == -ENOENT)
		r = KS_PLAN_FILE_AS_RECORDED;
	ks_cache_item_done(&row);
	if (r == KS_PLAN_FILE_AS_RECORDED || r == KS_PLAN_FILE_MISSING)
		r = ks_local_remove_file(&j->L, filename);
	return r < 0 ? r : ks_local_forget_item(&j->L, href);
}
