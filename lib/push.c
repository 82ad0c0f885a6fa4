/* SPDX-License-Identifier: MIT */
#include <sys/random.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "macro.h"
#include "refusal_p.h"
#include "vdir_p.h"

static void push_item_done(push_item *p);
static int refuse_item(coll_run *c, push_item *p, long status, const char *body,
		       size_t body_len, const char *why);
static int on_push_done(ks_remote_write *w, void *userdata);
static ks_plan_change plan_change(ks_local_kind k);
static int refuse_readonly(coll_run *c, ks_local_change *ch);
static int refused_here(const coll_run *c, const ks_local_change *ch, const push_item *p,
			char **ret_why);
static int give_new_uid(coll_run *c, push_item *p);
static int prepare_push(coll_run *c, ks_local_change *ch, const push_item *prepared,
			size_t n_prepared, push_item *p);
static int match_renames(coll_run *c, ks_scan_result *sr);
static void report_ignored(coll_run *c, const ks_local_change *ch);
static unsigned second_look_wait_ms(const coll_run *c);
static int confirm_deletions(coll_run *c, ks_scan_result *sr, size_t *n_deleted);
static const ks_refusal *find_refusal(const coll_run *c, const char *filename);
static int load_refusals(coll_run *c, const ks_scan_result *sr);
static int still_refused(coll_run *c, const ks_local_change *ch);

/* A file found missing is looked for again this long after its directory last changed before
 * its item is deleted. */
#define SECOND_LOOK_MS 1000

/* Scans the directory and sends every local change to the server. */
int ks_push_collection(coll_run *c)
{
	ks_scan_result sr = {};
	push_item *items = NULL;
	ks_remote_write *writes = NULL;
	size_t n = 0, n_deleted = 0;
	int r;

	r = ks_scan_collection(c->R->e->cache, c->L.col->id, c->L.dirfd, c->L.ext, false, &sr);
	if (r < 0) {
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "cannot read the local directory: %s", strerror(-r));
		return r;
	}
	/* A file whose event left the time window, left by a crash between its row and its
	 * removal, is no new item. */
	for (size_t i = 0; i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		if (ch->kind != KS_LOCAL_NEW || !ch->data)
			continue;
		r = ks_window_leftover(c, ch);
		if (r < 0)
			goto out;
		if (r > 0)
			ch->kind = KS_LOCAL_MOVED;	/* nothing left to do */
	}
	r = match_renames(c, &sr);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < sr.n_changes; i++) {
		if (sr.changes[i].kind == KS_LOCAL_DELETED)
			n_deleted++;
		if (sr.changes[i].kind == KS_LOCAL_IGNORED)
			report_ignored(c, &sr.changes[i]);
	}
	if (n_deleted) {
		r = confirm_deletions(c, &sr, &n_deleted);
		if (r < 0)
			goto out;
	}
	/* A missing file of an event outside the time window is never taken for a deletion to
	 * send: the event stays on the server. */
	for (size_t i = 0; i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		if (ch->kind != KS_LOCAL_DELETED)
			continue;
		r = ks_window_deleted(c, ch);
		if (r < 0)
			goto out;
		if (r > 0)
			ch->kind = KS_LOCAL_MOVED;
	}
	r = load_refusals(c, &sr);
	if (r < 0)
		goto out;
	if (sr.n_changes == 0)
		goto out;
	size_t n_new = 0;
	for (size_t i = 0; i < sr.n_changes; i++)
		n_new += sr.changes[i].kind == KS_LOCAL_DELETED &&
			 !ks_guard_counted_before(c, sr.changes[i].href, sr.changes[i].filename);
	r = ks_guard_deletions(c, n_new, "on the server",
			       "their files are missing here: was the directory emptied, removed "
			       "or unmounted?",
			       "If the files were removed by mistake, `ksyncctl sync "
			       "--force` fetches them again. ");
	if (r < 0)
		goto out;
	items = calloc(sr.n_changes, sizeof(*items));
	writes = calloc(sr.n_changes, sizeof(*writes));
	if (!items || !writes) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		ks_plan_local_in in = {
			.change = plan_change(ch->kind),
			.readonly = c->L.col->readonly,
			.has_etag = ch->etag != NULL,
		};
		if (in.change != KS_PLAN_CHANGE_IGNORED && in.change != KS_PLAN_CHANGE_MOVED) {
			r = still_refused(c, ch);
			if (r < 0)
				goto out;
			in.refused = r > 0;
		}
		ks_plan_action action = ks_plan_local(&in);
		if (action == KS_PLAN_NOTHING || action == KS_PLAN_REFUSE)
			continue;	/* still_refused() said why */
		if (action == KS_PLAN_REVERT) {
			r = refuse_readonly(c, ch);
			if (r < 0)
				goto out;
			continue;
		}
		r = prepare_push(c, ch, items, n, &items[n]);
		if (r < 0) {
			push_item_done(&items[n]);
			goto out;
		}
		if (r == 0) {
			push_item_done(&items[n]);
			memset(&items[n], 0, sizeof(items[n]));
			continue;
		}
		items[n].needs_merge = action == KS_PLAN_MERGE;
		n++;
	}
	if (n == 0) {
		r = 0;
		goto out;
	}
	/* Write-ahead: every upload is recorded before it is sent, so that a crash at any
	 * point is followed by a run that knows what may have reached the server. */
	r = ks_cache_begin(c->R->e->cache);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ks_cache_add_intent(c->R->e->cache, c->L.col->id, items[i].href, items[i].op,
					items[i].ch->filename,
					items[i].op == KS_INTENT_DELETE ? NULL : items[i].hash);
	if (r >= 0)
		r = ks_cache_commit(c->R->e->cache);
	if (r < 0) {
		ks_cache_rollback(c->R->e->cache);
		goto out;
	}
	/* Those to merge without sending first (no etag to condition a write on) are left out
	 * of the writes. */
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		push_item *p = &items[i];
		if (p->needs_merge)
			continue;
		writes[m++] = (ks_remote_write) {
			.op = p->op == KS_INTENT_DELETE ? KS_REMOTE_DELETE : KS_REMOTE_PUT,
			.href = p->href,
			.data = p->body,
			.len = p->len,
			.card = c->L.col->kind == KS_COLLECTION_ADDRESSBOOK,
			.if_match = p->op == KS_INTENT_CREATE ? NULL : p->ch->etag,
			.userdata = p,
		};
	}
	if (ks_run_cancelled(c->R)) {
		r = -ECANCELED;
		goto out;
	}
	r = ks_remote_write_all(c->R->remote, writes, m, on_push_done, NULL);
	for (size_t i = 0; i < m; i++)
		ks_remote_reply_done(&writes[i].reply);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		push_item *p = &items[i];
		if (p->refetch) {
			r = ks_conflict_read_back(c, p->href, p->ch->filename, p->body, p->len,
						  &p->st);
			if (r < 0 && ks_error_scope_of(r) == KS_SCOPE_ACCOUNT)
				goto out;
		}
		if (p->needs_merge) {
			r = ks_conflict_merge(c, p);
			if (r < 0)
				goto out;
		}
	}
	r = 0;
out:
	/* Every failure is reported once; the guard and ks_coll_file_failed() reported their
	 * own. */
	if (r < 0 && r != -EDQUOT && r != c->cb_error)
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "cannot send local changes: %s", strerror(-r));
	for (size_t i = 0; items && i < n; i++)
		push_item_done(&items[i]);
	free(items);
	free(writes);
	ks_scan_result_done(&sr);
	return r;
}

static ks_plan_change plan_change(ks_local_kind k)
{
	switch (k) {
	case KS_LOCAL_NEW:
		return KS_PLAN_CHANGE_NEW;
	case KS_LOCAL_MODIFIED:
		return KS_PLAN_CHANGE_MODIFIED;
	case KS_LOCAL_DELETED:
		return KS_PLAN_CHANGE_DELETED;
	case KS_LOCAL_MOVED:
		return KS_PLAN_CHANGE_MOVED;
	default:
		return KS_PLAN_CHANGE_IGNORED;
	}
}

static void push_item_done(push_item *p)
{
	free(p->href);
	free(p->body);
	ks_item_info_done(&p->info);
}

int ks_random_uid(char out[37])
{
	uint8_t b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		return -EIO;
	b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

/* A refusal of p's change, by the server (status, with its error body) or by ksync before
 * sending (status 0, why given): recorded with the bytes refused, its intent cleared (nothing
 * reached the server), and reported. The file stays as it is and is sent again once it
 * changes; the rest of the collection goes on. */
static int refuse_item(coll_run *c, push_item *p, long status, const char *body,
		       size_t body_len, const char *why)
{
	_cleanup_free_ char *reason = NULL;
	int r;

	if (why)
		reason = strdup(why);
	else {
		r = ks_refusal_reason(status, body, body_len,
				      p->op == KS_INTENT_DELETE ? NULL : p->body, p->len, &reason);
		if (r < 0)
			return r;
	}
	if (!reason)
		return -ENOMEM;
	ks_refusal rf = {
		.filename = p->ch->filename, .href = p->href, .op = p->op,
		.hash = p->op == KS_INTENT_DELETE ? NULL : p->hash,
		.status = (int) status, .reason = reason,
	};
	r = ks_cache_begin(c->R->e->cache);
	if (r >= 0)
		r = ks_cache_add_refusal(c->R->e->cache, c->L.col->id, &rf);
	if (r >= 0 && status)
		r = ks_cache_clear_intent(c->R->e->cache, c->L.col->id, p->href);
	if (r >= 0)
		r = ks_cache_commit(c->R->e->cache);
	if (r < 0) {
		ks_cache_rollback(c->R->e->cache);
		return r;
	}
	c->refused++;
	c->skipped++;
	if (status)
		ks_run_skip_file(c->R, c->L.label, p->ch->filename, -EPERM,
				 "the server refused %s'%s': %s; the file is kept and sent again "
				 "once it changes",
				 p->op == KS_INTENT_DELETE ? "the deletion of " : "",
				 p->ch->filename, reason);
	else
		ks_run_skip_file(c->R, c->L.label, p->ch->filename, -EPERM,
				 "not sending '%s': %s; it is sent once the file changes",
				 p->ch->filename, reason);
	return 0;
}

static int on_push_done(ks_remote_write *w, void *userdata)
{
	push_item *p = w->userdata;
	coll_run *c = p->c;
	const ks_remote_reply *req = &w->reply;
	int r = req->result;

	switch (ks_plan_written(p->op == KS_INTENT_DELETE, p->op == KS_INTENT_UPDATE, r,
				req->status)) {
	case KS_PLAN_FORGET:
		c->pushed_deletes++;
		return ks_local_forget_item(&c->L, p->href);
	case KS_PLAN_RECORD:
		/* Read back after every write, not from inside the request loop. */
		r = ks_conflict_record_sent(c, p->href, req->etag, p->ch->filename, p->body,
					    p->len, &p->st);
		p->refetch = r > 0;
		return r < 0 ? r : 0;
	case KS_PLAN_MERGE:
		p->needs_merge = true;
		return 0;
	case KS_PLAN_REFUSE:
		/* That item's failure: the other uploads of the run and the other collections
		 * go on. */
		return refuse_item(c, p, req->status, req->body, req->body_len, NULL);
	default:
		break;
	}
	c->failed_fetch++;
	c->failed_push++;
	ks_run_skip_file(c->R, c->L.label, p->ch->filename, r, "could not upload '%s': %s",
			 p->ch->filename, req->errmsg[0] ? req->errmsg : strerror(-r));
	/* A network or credentials failure stops the collection; a refused item does not. */
	return ks_error_scope_of(r) == KS_SCOPE_ACCOUNT ? r : 0;
}

/* Read-only collections are never written: a local change is kept as a conflict copy and
 * the server's version put back. */
static int refuse_readonly(coll_run *c, ks_local_change *ch)
{
	_cleanup_free_ char *base = NULL, *kept = NULL;
	size_t blen = 0;
	struct stat nst;
	int r;

	if (ch->kind == KS_LOCAL_NEW || ch->kind == KS_LOCAL_MODIFIED) {
		r = ks_conflict_keep(c, ch->filename, ch->uid, ch->data, ch->len, "local", "server",
				     "read-only collection", &kept);
		if (r < 0)
			return r;
	}
	if (ch->kind == KS_LOCAL_NEW) {
		r = ks_neg_errno(unlinkat(c->L.dirfd, ch->filename, 0));
		if (r >= 0)
			r = ks_fs_fsync_dir(c->L.dirfd);
	} else {
		r = ks_cache_get_item_data(c->R->e->cache, c->L.col->id, ch->href, &base, &blen);
		if (r >= 0)
			r = ks_local_replace_file(&c->L, ch->filename,
						  ch->kind == KS_LOCAL_MODIFIED ? &ch->st : NULL,
						  base, blen, &nst);
		if (r > 0)
			r = ks_cache_set_item_stat(c->R->e->cache, ch->id, ks_stat_mtime_ns(&nst),
						   (int64_t) nst.st_ino, (int64_t) nst.st_size);
	}
	if (r < 0)
		return r;
	ks_run_fail(c->R, KS_SYNC_CONFLICT, c->L.label, -EROFS,
		    "'%s' is in a read-only collection: the local %s was not sent and the server's "
		    "version is back%s%s", ch->filename,
		    ch->kind == KS_LOCAL_DELETED ? "deletion" : "change",
		    kept ? "; the local version is kept in " : "", kept ? kept : "");
	return 0;
}

/* Works out what one local change sends. Returns 1 when there is a request to send, 0 when
 * the change is left alone (reported), or a negative errno. */
static const char *kind_words(ks_item_kind k)
{
	return k == KS_ITEM_VTODO ? "a task" : k == KS_ITEM_VJOURNAL ? "a journal entry"
								  : "an event";
}

/* What no server would take, found before anything is sent: an item of a kind the calendar
 * does not hold (its supported-calendar-component-set), an edit that changed the UID (the
 * server knows the item by it). 1 with *ret_why set, or 0. */
static int refused_here(const coll_run *c, const ks_local_change *ch, const push_item *p,
			char **ret_why)
{
	static const struct {
		unsigned bit;
		ks_item_kind kind;
		const char *plural;
	} comps[] = {
		{ KS_COMP_VEVENT, KS_ITEM_VEVENT, "events" },
		{ KS_COMP_VTODO, KS_ITEM_VTODO, "tasks" },
		{ KS_COMP_VJOURNAL, KS_ITEM_VJOURNAL, "journal entries" },
	};
	const ks_collection *col = c->L.col;
	char *why = NULL;

	if (col->kind == KS_COLLECTION_CALENDAR && col->components) {
		unsigned bit = 0;
		char takes[64] = "";
		for (size_t i = 0; i < ELEMENTSOF(comps); i++) {
			if (comps[i].kind == p->info.kind)
				bit = comps[i].bit;
			if (col->components & comps[i].bit)
				snprintf(takes + strlen(takes), sizeof(takes) - strlen(takes),
					 "%s%s",
					 takes[0] ? " and " : "", comps[i].plural);
		}
		if (bit && !(col->components & bit) &&
		    asprintf(&why, "it is %s and the calendar '%s' takes only %s",
			     kind_words(p->info.kind), col->displayname ? col->displayname
									: col->name,
			     takes) < 0)
			return -ENOMEM;
	}
	if (!why && ch->kind == KS_LOCAL_MODIFIED && ch->uid && p->info.uid &&
	    strcmp(ch->uid, p->info.uid) != 0 &&
	    asprintf(&why, "its UID changed from '%.100s' to '%.100s', and the server knows the "
		     "item by its UID: put the old UID back, or move the file to a new name (the "
		     "old item is then deleted on the server and the file uploaded as a new one)",
		     ch->uid, p->info.uid) < 0)
		return -ENOMEM;
	*ret_why = why;
	return why ? 1 : 0;
}

/* Rewrites the new file of p with a new UID: 1 when done, 0 when the file changed meanwhile
 * (left for the next run). */
static int give_new_uid(coll_run *c, push_item *p)
{
	_cleanup_free_ char *why = NULL;
	char uid[37];
	char *nb = NULL;
	size_t nlen = 0;
	int r = ks_random_uid(uid);

	if (r >= 0)
		r = ks_item_set_uid(p->body, p->len, p->info.uid, uid, &nb, &nlen);
	if (r < 0)
		return r;
	free(p->body);
	p->body = nb;
	p->len = nlen;
	ks_item_info_done(&p->info);
	r = ks_item_parse_info(p->body, p->len, &p->info, &why);
	if (r < 0 || !p->info.uid || strcmp(p->info.uid, uid) != 0)
		return r == -ENOMEM ? r : -EBADMSG;
	r = ks_local_replace_file(&c->L, p->ch->filename, &p->ch->st, p->body, p->len, &p->st);
	if (r == 0)
		c->deferred++;
	if (r > 0)
		ks_sha256_hex(p->body, p->len, p->hash);
	return r;
}

static int prepare_push(coll_run *c, ks_local_change *ch, const push_item *prepared,
			size_t n_prepared, push_item *p)
{
	_cleanup_free_ char *why = NULL;
	int r;

	p->c = c;
	p->ch = ch;
	p->st = ch->st;
	if (ch->kind == KS_LOCAL_DELETED) {
		p->op = KS_INTENT_DELETE;
		p->href = strdup(ch->href);
		return p->href ? 1 : -ENOMEM;
	}
	p->body = malloc(ch->len + 1);
	if (!p->body)
		return -ENOMEM;
	memcpy(p->body, ch->data, ch->len + 1);
	p->len = ch->len;
	r = ks_item_parse_info(p->body, p->len, &p->info, &why);
	if (r == -ENODATA && ch->kind == KS_LOCAL_NEW) {
		/* A new file without a UID gets one, written back before it is sent, so that
		 * the file and the server agree on it. */
		char uid[37];
		char *nb = NULL;
		size_t nlen = 0;
		r = ks_random_uid(uid);
		if (r >= 0)
			r = ks_item_set_uid(p->body, p->len, NULL, uid, &nb, &nlen);
		if (r < 0)
			return r;
		free(p->body);
		p->body = nb;
		p->len = nlen;
		free(why);
		why = NULL;
		r = ks_item_parse_info(p->body, p->len, &p->info, &why);
		if (r >= 0) {
			r = ks_local_replace_file(&c->L, ch->filename, &ch->st, p->body, p->len,
						  &p->st);
			if (r == 0) {
				c->deferred++;
				return 0;
			}
		}
	}
	if (r == -ENOMEM)
		return r;
	bool card = c->L.col->kind == KS_COLLECTION_ADDRESSBOOK;
	if (r >= 0 && (p->info.kind == KS_ITEM_VCARD) != card) {
		r = -EBADMSG;
		free(why);
		why = strdup(card ? "not a vCard" : "not an iCalendar object");
	}
	if (r < 0) {
		c->skipped++;
		ks_run_skip_file(c->R, c->L.label, ch->filename, r,
				 "not uploading '%s': %s; fix the file and it is sent on the next "
				 "run", ch->filename, why ? why : strerror(-r));
		return 0;
	}
	ks_sha256_hex(p->body, p->len, p->hash);
	p->op = ch->kind == KS_LOCAL_MODIFIED ? KS_INTENT_UPDATE : KS_INTENT_CREATE;
	r = refused_here(c, ch, p, &why);
	if (r < 0)
		return r;
	if (r > 0)
		return refuse_item(c, p, 0, NULL, 0, why);
	if (ch->kind == KS_LOCAL_MODIFIED) {
		p->op = KS_INTENT_UPDATE;
		p->href = strdup(ch->href);
		return p->href ? 1 : -ENOMEM;
	}
	/* A new item: its resource is named after its UID. A UID another item of the collection
	 * has already (the file is a copy of that item's, or of another new file's) makes it an
	 * item of its own all the same: it gets a new UID, written into the file before it is
	 * sent, so that neither version is merged into the other or left behind. */
	_cleanup_free_ char *twin = NULL;
	ks_cache_item other = {};
	r = ks_cache_get_item_by_uid(c->R->e->cache, c->L.col->id, p->info.uid, &other);
	if (r >= 0)
		twin = TAKE_PTR(other.filename);
	ks_cache_item_done(&other);
	if (r < 0 && r != -ENOENT)
		return r;
	for (size_t i = 0; !twin && i < n_prepared; i++)
		if (prepared[i].op == KS_INTENT_CREATE && strcmp(prepared[i].info.uid,
								 p->info.uid) == 0)
			twin = strdup(prepared[i].ch->filename);
	if (twin) {
		r = give_new_uid(c, p);
		if (r <= 0)
			return r;
		ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
			    "'%s' had the UID of '%s'; it got a new UID and is uploaded as an item "
			    "of its own", ch->filename, twin);
	}
	_cleanup_free_ char *base = NULL;
	r = ks_vdir_item_name(p->info.uid, NULL, &base);
	if (r < 0)
		return r;
	p->op = KS_INTENT_CREATE;
	if (asprintf(&p->href, "%s%s%s", c->L.col->href, base, c->L.ext) < 0) {
		p->href = NULL;
		return -ENOMEM;
	}
	return 1;
}

/* A file renamed (mv, or an editor saving under another name) shows up as a deleted row and
 * a new file with the same UID: it is the same item, which keeps its resource on the server.
 * Unchanged content only moves the row; changed content becomes an edit. */
static int match_renames(coll_run *c, ks_scan_result *sr)
{
	for (size_t i = 0; i < sr->n_changes; i++) {
		ks_local_change *ch = &sr->changes[i];
		ks_item_info info = {};
		if (ch->kind != KS_LOCAL_NEW || !ch->data)
			continue;
		int r = ks_item_parse_info(ch->data, ch->len, &info, NULL);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* Not an item (yet): prepare_push() reports it. */
			ks_item_info_done(&info);
			continue;
		}
		for (size_t j = 0; r >= 0 && j < sr->n_changes; j++) {
			ks_local_change *old = &sr->changes[j];
			if (old->kind != KS_LOCAL_DELETED || !old->uid || strcmp(old->uid,
										 info.uid))
				continue;
			_cleanup_free_ char *base = NULL;
			size_t blen = 0;
			r = ks_cache_get_item_data(c->R->e->cache, c->L.col->id, old->href, &base,
						   &blen);
			if (r < 0)
				break;
			char hex[65];
			ks_sha256_hex(base, blen, hex);
			if (strcmp(hex, ch->hash) == 0) {
				r = ks_cache_set_item_file(c->R->e->cache, old->id, ch->filename,
							   ks_stat_mtime_ns(&ch->st),
							   (int64_t) ch->st.st_ino,
							   (int64_t) ch->st.st_size);
				ch->kind = KS_LOCAL_MOVED;
			} else {
				ch->kind = KS_LOCAL_MODIFIED;
				ch->id = old->id;
				ch->href = TAKE_PTR(old->href);
				ch->etag = TAKE_PTR(old->etag);
				ch->uid = TAKE_PTR(old->uid);
			}
			old->kind = KS_LOCAL_MOVED;
			break;
		}
		ks_item_info_done(&info);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A file with an item's name that is no regular file, or cannot be read: it is neither sent
 * nor taken for a deletion, and the server's item stays. */
static void report_ignored(coll_run *c, const ks_local_change *ch)
{
	mode_t m = ch->st.st_mode;
	const char *what = ch->error != -EBADF ? NULL
			   : S_ISLNK(m)		 ? "a symbolic link"
			   : S_ISFIFO(m)	 ? "a FIFO"
			   : S_ISDIR(m)		 ? "a directory"
						 : "a special file";

	if (what)
		ks_run_skip_file(c->R, c->L.label, ch->filename, ch->error,
				 "ignoring '%s/%s': it is %s, not a regular file; it is not read, "
				 "sent or deleted on the server", c->L.dir, ch->filename, what);
	else
		ks_run_skip_file(c->R, c->L.label, ch->filename, ch->error,
				 "ignoring '%s/%s': %s; it is not sent or deleted on the server",
				 c->L.dir,
				 ch->filename, strerror(-ch->error));
}

/* How long to wait before the second look: until SECOND_LOOK_MS have passed since the
 * directory last changed. A directory quiet for that long holds no file in transit, and
 * costs no wait. */
static unsigned second_look_wait_ms(const coll_run *c)
{
	struct stat st;
	struct timespec now;

	if (fstat(c->L.dirfd, &st) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
		return SECOND_LOOK_MS;
	int64_t since = ((int64_t) now.tv_sec - st.st_mtim.tv_sec) * 1000 +
			(now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
	return since >= SECOND_LOOK_MS ? 0 : since < 0 ? SECOND_LOOK_MS
						       : (unsigned) (SECOND_LOOK_MS - since);
}

/* A file missing now may be away for a moment: moved out and back, or replaced in two steps
 * by a program. A deletion is sent only when a second look, a little later, still misses the
 * file and finds its item under no other name; the others are left to a later run. */
static int confirm_deletions(coll_run *c, ks_scan_result *sr, size_t *n_deleted)
{
	ks_scan_result again = {};
	unsigned wait = second_look_wait_ms(c);
	int r;

	for (unsigned waited = 0; waited < wait && !ks_run_cancelled(c->R); waited += 50)
		(void) nanosleep(&(struct timespec) { .tv_nsec = 50 * 1000000 }, NULL);
	if (ks_run_cancelled(c->R))
		return -ECANCELED;
	r = ks_scan_collection(c->R->e->cache, c->L.col->id, c->L.dirfd, c->L.ext, true, &again);
	if (r < 0)
		return r;
	for (size_t i = 0; r >= 0 && i < sr->n_changes; i++) {
		ks_local_change *ch = &sr->changes[i];
		bool still = false;
		if (ch->kind != KS_LOCAL_DELETED)
			continue;
		for (size_t j = 0; j < again.n_changes && !still; j++)
			still = again.changes[j].kind == KS_LOCAL_DELETED &&
				strcmp(again.changes[j].filename, ch->filename) == 0;
		for (size_t j = 0; r >= 0 && still && ch->uid && j < again.n_changes; j++) {
			ks_local_change *a = &again.changes[j];
			ks_item_info info = {};
			if (a->kind != KS_LOCAL_NEW || !a->data)
				continue;
			r = ks_item_parse_info(a->data, a->len, &info, NULL);
			still = !(r >= 0 && info.uid && strcmp(info.uid, ch->uid) == 0);
			ks_item_info_done(&info);
			r = r == -ENOMEM ? r : 0;
		}
		if (!still) {
			/* Back (or under another name): a later run sees what it is now. */
			ch->kind = KS_LOCAL_MOVED;
			(*n_deleted)--;
			c->deferred++;
		}
	}
	ks_scan_result_done(&again);
	return r;
}

static const ks_refusal *find_refusal(const coll_run *c, const char *filename)
{
	for (size_t i = 0; i < c->n_refusals; i++)
		if (strcmp(c->refusals[i].filename, filename) == 0)
			return &c->refusals[i];
	return NULL;
}

/* The refusals of earlier runs that still stand: a refusal whose file is no pending change
 * any more (the user deleted the new file, took the edit back, put the deleted file back) is
 * forgotten, and --force forgets them all, so that everything is sent again. */
static int load_refusals(coll_run *c, const ks_scan_result *sr)
{
	ks_cache *cache = c->R->e->cache;
	int r = ks_cache_list_refusals(cache, c->L.col->id, &c->refusals, &c->n_refusals);

	for (size_t i = 0; r >= 0 && i < c->n_refusals; i++) {
		ks_refusal *rf = &c->refusals[i];
		bool pending = false;
		for (size_t j = 0; j < sr->n_changes && !pending; j++)
			pending = sr->changes[j].kind != KS_LOCAL_IGNORED &&
				  strcmp(sr->changes[j].filename, rf->filename) == 0;
		if (pending && !c->R->o->force)
			continue;
		r = ks_cache_clear_refusal(cache, c->L.col->id, rf->filename);
		free(rf->filename);
		rf->filename = strdup("");	/* matches no file */
		if (r >= 0 && !rf->filename)
			r = -ENOMEM;
	}
	return r;
}

/* 1 when ch was refused before and has not changed since: it is not sent again, and says
 * why. 0 when it is to be sent (a changed file's refusal is forgotten). */
static int still_refused(coll_run *c, const ks_local_change *ch)
{
	const ks_refusal *rf = find_refusal(c, ch->filename);

	if (!rf)
		return 0;
	bool same = ch->kind == KS_LOCAL_DELETED ? rf->op == KS_INTENT_DELETE
						 : rf->hash && strcmp(rf->hash, ch->hash) == 0;
	if (!same)
		return ks_cache_clear_refusal(c->R->e->cache, c->L.col->id, ch->filename);
	c->refused++;
	c->skipped++;
	ks_run_skip_file(c->R, c->L.label, ch->filename, -EPERM, "not sending %s'%s': %s%s; %s",
			 ch->kind == KS_LOCAL_DELETED ? "the deletion of " : "", ch->filename,
			 rf->status ? "the server refused it: " : "", rf->reason,
			 ch->kind == KS_LOCAL_DELETED ? "the item stays on the server, and "
			 "`ksyncctl sync --force` brings its file back"
						    : "it is sent once the file changes");
	return 1;
}
