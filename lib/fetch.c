/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "macro.h"
#include "vdir_p.h"

typedef struct staged {
	fetched_item *f;
	ks_item_info info;
	char *filename;
	struct stat st;
	char hash[65];
	bool is_new;
	bool skip_write;	/* the file already holds these bytes */
	bool adopt;		/* an untracked local file with this UID becomes the item */
	bool ours;		/* a new row for a local file (an upload a crash cut off) */
} staged;

static void batch_clear_items(batch *b);
static int on_item(const ks_remote_item *ri, void *userdata);
static int add_item(batch *b, const char *href, const char *etag, const char *data, size_t len);
static int untracked_differs(coll_run *c, const char *name, const char *data, size_t len);
static int untracked_same(coll_run *c, const char *name, const char *data, size_t len,
			  struct stat *ret_st);
static int find_untracked(coll_run *c);
static int untracked_with_uid(coll_run *c, const char *uid, const char *href, const char **ret);
static int take_renamed(coll_run *c, const char *name, ks_cache_item *it);
static int file_damaged(coll_run *c, const ks_cache_item *it);
static int new_item_state(coll_run *c, const fetched_item *f, const ks_item_info *info,
			  const char **ret_mine, struct stat *ret_st, ks_plan_file *ret);
static int repair_damaged(coll_run *c, const ks_cache_item *it);
static int pick_filename(coll_run *c, const fetched_item *f, const ks_item_info *info,
			 const staged *batch_items, size_t n_batch, char **ret);
static int apply_batch(coll_run *c, batch *b);
static int note_missing(coll_run *c, const batch *b);
static int get_into(batch *b, const char *href);
static int fetch_missing(coll_run *c);
static int on_batch_done(ks_remote_batch *rb, void *userdata);

int ks_fetch_all(coll_run *c)
{
	size_t nb0 = (c->fetch[0].n + KS_MULTIGET_BATCH - 1) / KS_MULTIGET_BATCH;
	size_t nb = nb0 + (c->fetch[1].n + KS_MULTIGET_BATCH - 1) / KS_MULTIGET_BATCH;
	batch *bs;
	ks_remote_batch *rbs;
	int r = 0;

	if (nb == 0)
		return 0;
	bs = calloc(nb, sizeof(*bs));
	rbs = calloc(nb, sizeof(*rbs));
	if (!bs || !rbs) {
		free(bs);
		free(rbs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nb; i++) {
		bool v4 = i >= nb0;
		const href_list *l = &c->fetch[v4];
		size_t off = (v4 ? i - nb0 : i) * KS_MULTIGET_BATCH;
		bs[i] = (batch) {
			.c = c, .vcard4 = v4, .hrefs = l->v + off,
			.n_hrefs = KS_MIN((size_t) KS_MULTIGET_BATCH, l->n - off),
		};
		rbs[i] = (ks_remote_batch) {
			.collection = c->L.col->href,
			.card = c->L.col->kind == KS_COLLECTION_ADDRESSBOOK,
			.hrefs = bs[i].hrefs, .n_hrefs = bs[i].n_hrefs, .vcard4 = v4,
			.on_item = on_item, .userdata = &bs[i],
		};
	}
	r = ks_remote_fetch(c->R->remote, rbs, nb, on_batch_done, NULL);
	if (r >= 0 && c->cb_error)
		r = c->cb_error;
	if (r >= 0)
		r = fetch_missing(c);
	for (size_t i = 0; i < nb; i++) {
		batch_clear_items(&bs[i]);
		ks_remote_reply_done(&rbs[i].reply);
	}
	free(bs);
	free(rbs);
	return r;
}

static void batch_clear_items(batch *b)
{
	for (size_t i = 0; i < b->n_items; i++) {
		free(b->items[i].href);
		free(b->items[i].etag);
		free(b->items[i].data);
	}
	free(b->items);
	b->items = NULL;
	b->n_items = 0;
}

/* An item of a multiget's answer. */
static int on_item(const ks_remote_item *ri, void *userdata)
{
	batch *b = userdata;
	_cleanup_free_ char *href = NULL;
	int k;

	k = ks_href_normalize(ks_remote_base_url(b->c->R->remote), ri->href, &href);
	if (k == -ENOMEM)
		return k;
	if (k < 0)
		return 0;
	/* Only what was asked for: a server cannot slip in items under other names. */
	bool asked = false;
	for (size_t i = 0; i < b->n_hrefs && !asked; i++)
		asked = strcmp(b->hrefs[i], href) == 0;
	if (!asked)
		return 0;
	/* One answer per href: a second one would become a second file for one row, which the
	 * next scan would take for a new local item and upload. */
	for (size_t i = 0; i < b->n_items; i++)
		if (strcmp(b->items[i].href, href) == 0) {
			b->c->skipped++;
			ks_run_fail(b->c->R, KS_SYNC_ITEM_SKIPPED, b->c->L.label, -ENOTUNIQ,
				    "ignoring a second answer for '%.200s' in one multiget", href);
			return 0;
		}
	return add_item(b, href, ri->etag, ri->data, ri->len);
}

/* Adds a copy of an item to the batch's items. */
static int add_item(batch *b, const char *href, const char *etag, const char *data, size_t len)
{
	fetched_item *ni = realloc(b->items, (b->n_items + 1) * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	b->items = ni;
	fetched_item *it = &ni[b->n_items];
	*it = (fetched_item) {
		.href = strdup(href), .etag = etag ? strdup(etag) : NULL, .data = malloc(len + 1),
		.len = len,
	};
	b->n_items++;
	if (!it->href || (etag && !it->etag) || !it->data)
		return -ENOMEM;
	memcpy(it->data, data, len);
	it->data[len] = 0;
	return 0;
}

/* An untracked file already named name: 0 when it holds exactly data (a crash left it, or an
 * upload just made it) or does not exist, 1 when it holds something else. */
static int untracked_differs(coll_run *c, const char *name, const char *data, size_t len)
{
	_cleanup_free_ char *cur = NULL;
	size_t n = 0;
	int r = ks_fs_read_file(c->L.dirfd, name, KS_CARD_MAX, &cur, &n);

	if (r == -ENOENT)
		return 0;
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 1;
	return n == len && memcmp(cur, data, len) == 0 ? 0 : 1;
}

/* 1 when the untracked file name holds exactly data, with its stat in *ret_st, taken before
 * and checked after the read so that an edit in between is not missed; 0 otherwise. */
static int untracked_same(coll_run *c, const char *name, const char *data, size_t len,
			  struct stat *ret_st)
{
	struct stat st;
	int r;

	if (fstatat(c->L.dirfd, name, ret_st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(ret_st->st_mode))
		return 0;
	r = untracked_differs(c, name, data, len);
	if (r != 0)
		return r < 0 ? r : 0;
	if (fstatat(c->L.dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !ks_scan_stat_matches(&st,
				  (int64_t) ret_st->st_mtim.tv_sec * 1000000000 +
					  ret_st->st_mtim.tv_nsec,
				  (int64_t) ret_st->st_ino, (int64_t) ret_st->st_size))
		return 0;
	return 1;
}

/* Local item files without a row, by UID: created here while the server got an item with
 * the same UID (or uploaded before a crash kept their row from being written). Read once per
 * run, and only when the server has new items. */
static int find_untracked(coll_run *c)
{
	ks_scan_result sr = {};
	/* Read-only: this runs inside apply_batch()'s transaction, where the scan could not
	 * open its own to record touched files (the push's scan records them). */
	int r = ks_scan_collection(c->R->e->cache, c->L.col->id, c->L.dirfd, c->L.ext, true,
				   &sr);

	c->untracked_known = true;
	if (r < 0)
		return r;
	for (size_t i = 0; r >= 0 && i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		ks_item_info info = {};
		if (ch->kind != KS_LOCAL_NEW || !ch->data)
			continue;
		if (ks_item_parse_info(ch->data, ch->len, &info, NULL) >= 0 && info.uid) {
			r = ks_strv_push(&c->untracked_uids, &c->n_untracked, &c->cap_untracked,
					 info.uid);
			if (r >= 0)
				r = ks_strv_push(&c->untracked_uids, &c->n_untracked,
						 &c->cap_untracked, ch->filename);
		}
		ks_item_info_done(&info);
	}
	ks_scan_result_done(&sr);
	return r;
}

/* The file without a row holding uid, as the run found them, into *ret (NULL when none). A
 * file a row took since (an item of this run's fetches with that UID) is no longer one. */
static int untracked_with_uid(coll_run *c, const char *uid, const char *href, const char **ret)
{
	*ret = NULL;
	for (size_t i = 0; uid && i + 1 < c->n_untracked; i += 2) {
		if (strcmp(c->untracked_uids[i], uid) != 0)
			continue;
		int r = ks_cache_filename_taken(c->R->e->cache, c->L.col->id,
						c->untracked_uids[i + 1], href);
		if (r < 0)
			return r;
		if (r == 0) {
			*ret = c->untracked_uids[i + 1];
			return 0;
		}
	}
	return 0;
}

/* 1 when the untracked file name holds the bytes of the row it (a file renamed and nothing
 * more): the row takes that name. 0 otherwise. */
static int take_renamed(coll_run *c, const char *name, ks_cache_item *it)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	char hex[65];
	int r = ks_fs_read_file(c->L.dirfd, name, KS_CARD_MAX, &data, &len);

	if (r == -ENOMEM)
		return r;
	if (r < 0 || !it->hash)
		return 0;
	ks_sha256_hex(data, len, hex);
	if (strcmp(hex, it->hash) != 0)
		return 0;
	char *n = strdup(name);
	if (!n)
		return -ENOMEM;
	free(it->filename);
	it->filename = n;
	return 1;
}

const ks_intent *ks_coll_find_intent(const coll_run *c, const char *href)
{
	for (size_t i = 0; i < c->n_intents; i++)
		if (strcmp(c->intents[i].href, href) == 0)
			return &c->intents[i];
	return NULL;
}

/* Whether the file of it (edited) is no item any more: unreadable, or not parsing. */
static int file_damaged(coll_run *c, const ks_cache_item *it)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	ks_item_info info = {};
	int r = ks_fs_read_file(c->L.dirfd, it->filename, KS_CARD_MAX, &data, &len);

	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 1;
	r = ks_item_parse_info(data, len, &info, NULL);
	ks_item_info_done(&info);
	return r == -ENOMEM ? r : r < 0;
}

int ks_coll_file_state(coll_run *c, ks_cache_item *it, ks_plan_file *ret)
{
	int r = ks_local_file_state(&c->L, it);

	if (r < 0)
		return r;
	switch (r) {
	case KS_PLAN_FILE_AS_RECORDED:
	case KS_PLAN_FILE_OTHER:
		*ret = r;
		return 0;
	case KS_PLAN_FILE_MISSING:
		/* Renamed here (mv, an editor saving under another name): the file with the
		 * item's UID is the item. */
		if (!c->untracked_known) {
			r = find_untracked(c);
			if (r < 0)
				return r;
		}
		const char *moved;
		r = untracked_with_uid(c, it->uid, it->href, &moved);
		if (r >= 0 && moved)
			r = take_renamed(c, moved, it);
		if (r < 0)
			return r;
		*ret = r > 0 ? KS_PLAN_FILE_AS_RECORDED : moved ? KS_PLAN_FILE_RENAMED
							     : KS_PLAN_FILE_MISSING;
		return 0;
	}
	/* Edited: only --force looks whether the edit left an item at all. */
	r = c->R->o->force ? file_damaged(c, it) : 0;
	if (r < 0)
		return r;
	*ret = r ? KS_PLAN_FILE_DAMAGED : KS_PLAN_FILE_EDITED;
	return 0;
}

/* The state of a new item's file: a local file without a row that holds its UID (*ret_mine,
 * with its stat in *ret_st when it holds the server's very bytes), or none. */
static int new_item_state(coll_run *c, const fetched_item *f, const ks_item_info *info,
			  const char **ret_mine, struct stat *ret_st, ks_plan_file *ret)
{
	int r;

	if (!c->untracked_known) {
		r = find_untracked(c);
		if (r < 0)
			return r;
	}
	r = untracked_with_uid(c, info->uid, f->href, ret_mine);
	if (r < 0)
		return r;
	if (!*ret_mine) {
		*ret = KS_PLAN_FILE_NONE;
		return 0;
	}
	/* A file holding the server's very bytes (a crash or a rebuilt cache left it) is the
	 * item as it is; another one is merged. */
	r = untracked_same(c, *ret_mine, f->data, f->len, ret_st);
	if (r < 0)
		return r;
	*ret = r > 0 ? KS_PLAN_FILE_UNTRACKED_SAME : KS_PLAN_FILE_UNTRACKED_OTHER;
	return 0;
}

/* --force on an edited file that is no item any more (truncated, overwritten): it is kept as
 * a conflict copy, after which the server's version replaces it. */
static int repair_damaged(coll_run *c, const ks_cache_item *it)
{
	_cleanup_free_ char *data = NULL, *kept = NULL;
	size_t len = 0;
	int r = ks_fs_read_file(c->L.dirfd, it->filename, KS_CARD_MAX, &data, &len);

	if (r == -ENOMEM)
		return r;
	if (r >= 0) {
		r = ks_conflict_keep(c, it->filename, it->uid, data, len, "damaged", "server",
				     "damaged local file", &kept);
		if (r < 0)
			return r;
	}
	ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
		    "'%s' was damaged and is restored from the server%s%s", it->filename,
		    kept ? "; the damaged file is kept in " : "", kept ? kept : "");
	return 0;
}

/* 1 when the file of an interrupted creation holds the body that was sent (by its hash) or
 * the server's data, 0 when it holds something else. */
static int intent_file_unchanged(coll_run *c, const ks_intent *in, const char *data, size_t len)
{
	_cleanup_free_ char *cur = NULL;
	size_t n = 0;
	char hex[65];
	int r = ks_fs_read_file(c->L.dirfd, in->filename, KS_CARD_MAX, &cur, &n);

	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 0;
	if (n == len && memcmp(cur, data, len) == 0)
		return 1;
	ks_sha256_hex(cur, n, hex);
	return in->hash && strcmp(hex, in->hash) == 0;
}

static int pick_filename(coll_run *c, const fetched_item *f, const ks_item_info *info,
			 const staged *batch_items, size_t n_batch, char **ret)
{
	_cleanup_free_ char *base = NULL;
	int r;

	/* An upload that a crash cut off before its row was written: the item is the user's
	 * file, which keeps its name (a second file with the same UID would be a duplicate),
	 * as long as it still holds what was sent or what the server has. A file changed since
	 * into something that is no item of this UID (junk, a half-written save) is the
	 * user's: the server's version goes under another name and the file stays. */
	const ks_intent *in = ks_coll_find_intent(c, f->href);
	if (in && in->op == KS_INTENT_CREATE && in->filename &&
	    faccessat(c->L.dirfd, in->filename, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    ks_cache_filename_taken(c->R->e->cache, c->L.col->id, in->filename, f->href) == 0) {
		r = intent_file_unchanged(c, in, f->data, f->len);
		if (r < 0)
			return r;
		if (r > 0) {
			*ret = strdup(in->filename);
			return *ret ? 0 : -ENOMEM;
		}
	}
	r = ks_vdir_item_name(info->uid, f->href, &base);
	if (r < 0)
		return r;
	for (unsigned attempt = 0; attempt < 100; attempt++) {
		char *name;
		if (attempt == 0)
			r = asprintf(&name, "%s%s", base, c->L.ext);
		else {
			char hex[65];
			ks_sha256_hex(f->href, strlen(f->href), hex);
			r = asprintf(&name, "%s-%.*s%s", base, 8 + (int) attempt, hex, c->L.ext);
		}
		if (r < 0)
			return -ENOMEM;
		bool taken = false;
		for (size_t i = 0; i < n_batch && !taken; i++)
			taken = batch_items[i].filename && strcmp(batch_items[i].filename,
								  name) == 0;
		if (!taken) {
			r = ks_cache_filename_taken(c->R->e->cache, c->L.col->id, name, f->href);
			if (r >= 0 && r == 0)
				r = untracked_differs(c, name, f->data, f->len);
			if (r < 0) {
				free(name);
				return r;
			}
			taken = r > 0;
		}
		if (!taken) {
			*ret = name;
			return 0;
		}
		free(name);
	}
	return -EEXIST;
}

/* A file of the collection could not be written or deleted (a read-only directory, a full
 * disk): the collection fails with the path and the cause, reported once. No row was
 * written for it, so the next run fetches it again. */
int ks_coll_file_failed(coll_run *c, const char *what, const char *name, int r)
{
	if (r == -ENOMEM)
		return r;
	if (c->cb_error)
		return c->cb_error;
	if (name)
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "cannot %s '%s/%s': %s",
			    what, c->L.dir, name, strerror(-r));
	else
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "cannot %s files in '%s': %s",
			    what, c->L.dir, strerror(-r));
	/* A directory that cannot be written stops this collection only, where -EACCES would
	 * stop the account as a refused login does. */
	c->cb_error = r == -EACCES || r == -EPERM ? -EROFS : r;
	return c->cb_error;
}

/* Writes a batch of fetched items: files first (one flush for the batch), then their rows in
 * one transaction. */
static int apply_batch(coll_run *c, batch *b)
{
	ks_cache *cache = c->R->e->cache;
	staged *st = calloc(b->n_items ? b->n_items : 1, sizeof(*st));
	ks_fs_batch *fb = NULL;
	size_t n = 0;
	bool in_tx = false;
	int r;

	if (!st)
		return -ENOMEM;
	r = ks_fs_batch_new(c->L.dirfd, &fb);
	if (r < 0)
		goto out;
	/* One transaction for the lookups and the rows of the batch: besides atomicity, it
	 * spares SQLite a lock and unlock per statement. */
	r = ks_cache_begin(cache);
	if (r < 0)
		goto out;
	in_tx = true;
	unsigned left_out = c->win.left_out;
	for (size_t i = 0; i < b->n_items; i++) {
		fetched_item *f = &b->items[i];
		staged *s = &st[n];
		_cleanup_free_ char *why = NULL;
		ks_cache_item old = {};

		s->f = f;
		r = ks_item_parse_info(f->data, f->len, &s->info, &why);
		if (r == -ENOMEM)
			goto out;
		if (r >= 0 && c->L.col->kind == KS_COLLECTION_ADDRESSBOOK &&
		    s->info.kind != KS_ITEM_VCARD) {
			r = -EBADMSG;
			why = strdup("not a vCard");
		} else if (r >= 0 && c->L.col->kind == KS_COLLECTION_CALENDAR &&
			   s->info.kind == KS_ITEM_VCARD) {
			r = -EBADMSG;
			why = strdup("not an iCalendar object");
		}
		if (r < 0) {
			c->skipped++;
			ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, r,
				    "skipping '%.200s': %s",
				    f->href, why ? why : strerror(-r));
			ks_item_info_done(&s->info);
			continue;
		}
		r = ks_cache_get_item(cache, c->L.col->id, f->href, &old);
		if (r < 0 && r != -ENOENT)
			goto out;
		s->is_new = r == -ENOENT;
		ks_sha256_hex(f->data, f->len, s->hash);
		const char *mine = NULL;
		ks_plan_file file;
		r = s->is_new ? new_item_state(c, f, &s->info, &mine, &s->st, &file)
			      : ks_coll_file_state(c, &old, &file);
		if (r < 0) {
			ks_cache_item_done(&old);
			goto out;
		}
		if (s->is_new && file == KS_PLAN_FILE_NONE && !mine &&
		    !ks_coll_find_intent(c, f->href)) {
			/* New here, with no file of its UID: an event outside the time window
			 * gets none. */
			r = ks_window_leave_out(c, f->href, f->etag, f->data, f->len);
			if (r != 0) {
				ks_cache_item_done(&old);
				if (r < 0)
					goto out;
				ks_item_info_done(&s->info);
				*s = (staged) {};
				continue;
			}
		}
		ks_plan_action action = ks_plan_fetched(file, old.hash && strcmp(old.hash,
										   s->hash) == 0,
							c->R->o->force);
		switch (action) {
		case KS_PLAN_DEFER:
		case KS_PLAN_HOLD:
			/* The upload merges an edited file; nothing is sent for a symlink or a
			 * FIFO, so the listing must name this change again until the file is
			 * back. */
			ks_cache_item_done(&old);
			ks_item_info_done(&s->info);
			*s = (staged) {};
			if (action == KS_PLAN_HOLD)
				c->held++;
			c->deferred++;
			continue;
		case KS_PLAN_REPAIR:
			r = repair_damaged(c, &old);
			break;
		case KS_PLAN_RECORD:
			s->skip_write = true;
			if (!s->is_new) {
				/* Only the row changes: the file and its readers are left in
				 * peace. */
				s->st.st_mtim.tv_sec = old.mtime_ns / 1000000000;
				s->st.st_mtim.tv_nsec = old.mtime_ns % 1000000000;
				s->st.st_ino = (ino_t) old.ino;
				s->st.st_size = (off_t) old.size;
			}
			break;
		case KS_PLAN_ADOPT:
			/* The user's own new file with this UID: it stays as it is, the row
			 * has no base, and the upload merges the two versions. */
			s->adopt = true;
			memset(&s->st, 0, sizeof(s->st));
			break;
		default:
			break;
		}
		if (r < 0) {
			ks_cache_item_done(&old);
			goto out;
		}
		if (!s->is_new)
			s->filename = TAKE_PTR(old.filename);
		else if (mine) {
			/* The user's own file with this UID: no addition. */
			s->ours = true;
			s->filename = strdup(mine);
			r = s->filename ? 0 : -ENOMEM;
		} else {
			r = pick_filename(c, f, &s->info, st, n, &s->filename);
			const ks_intent *in = ks_coll_find_intent(c, f->href);
			s->ours = r >= 0 && in && in->op == KS_INTENT_CREATE && in->filename &&
				  strcmp(in->filename, s->filename) == 0;
		}
		ks_cache_item_done(&old);
		if (r < 0)
			goto out;
		if (!s->skip_write && !s->adopt) {
			r = ks_fs_batch_add(fb, s->filename, f->data, f->len, &s->st);
			if (r < 0) {
				r = ks_coll_file_failed(c, "write", s->filename, r);
				goto out;
			}
		}
		n++;
	}
	if (n == 0) {
		/* Events the time window left out are recorded all the same. */
		r = c->win.left_out != left_out ? ks_cache_commit(cache) : 0;
		if (r >= 0 && c->win.left_out != left_out)
			in_tx = false;
		goto out;
	}
	if (ks_fs_batch_count(fb) > 0)
		r = ks_fs_batch_commit(fb);
	if (r < 0) {
		r = ks_coll_file_failed(c, "write", NULL, r);
		goto out;
	}
	/* The files are durable before their rows: a crash in between leaves files the next
	 * run rewrites with the same bytes, never a row pointing at a missing file. */
	for (size_t i = 0; i < n; i++) {
		ks_item_row row = {
			.href = st[i].f->href,
			.etag = st[i].adopt ? NULL : st[i].f->etag,
			.filename = st[i].filename,
			.data = st[i].adopt ? "" : st[i].f->data,
			.len = st[i].adopt ? 0 : st[i].f->len,
			.info = &st[i].info,
			.hash = st[i].adopt ? NULL : st[i].hash,
			.mtime_ns = (int64_t) st[i].st.st_mtim.tv_sec * 1000000000 +
				    st[i].st.st_mtim.tv_nsec,
			.ino = (int64_t) st[i].st.st_ino,
			.size = (int64_t) st[i].st.st_size,
		};
		r = ks_cache_put_item(cache, c->L.col->id, &row);
		if (r >= 0 && c->win.active)
			r = ks_cache_delete_outside(cache, c->L.col->id, row.href);
		if (r >= 0 && ks_coll_find_intent(c, row.href))
			r = ks_cache_clear_intent(cache, c->L.col->id, row.href);
		if (r < 0)
			goto out;
		if (st[i].is_new && !st[i].ours)
			c->added++;	/* the user's own file found on the server is no addition */
		else if (st[i].skip_write)
			;	/* same bytes under a new etag: nothing changed for the user */
		else if (!c->read_back || !ks_coll_uploaded_here(c, row.href))
			c->updated++;	/* reading back this run's own uploads is no update */
	}
	r = ks_cache_commit(cache);
	if (r >= 0)
		in_tx = false;
out:
	if (in_tx)
		ks_cache_rollback(cache);
	for (size_t i = 0; i < b->n_items; i++) {
		ks_item_info_done(&st[i].info);
		free(st[i].filename);
	}
	free(st);
	ks_fs_batch_free(fb);
	return r;
}

/* Hrefs a multiget did not answer are noted here and fetched one by one once every multiget
 * has ended: never from inside the request loop, whose callback this runs in. They are never
 * taken as deleted. */
static int note_missing(coll_run *c, const batch *b)
{
	for (size_t i = 0; i < b->n_hrefs; i++) {
		bool got = false;
		for (size_t j = 0; j < b->n_items && !got; j++)
			got = strcmp(b->items[j].href, b->hrefs[i]) == 0;
		if (got)
			continue;
		href_list *l = &c->missing[b->vcard4];
		int r = ks_strv_push(&l->v, &l->n, &l->cap, b->hrefs[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* One item fetched on its own into b: its GET failing for a reason of that item is reported
 * (a deleted one is simply not there), while other failures count against the run. */
static int get_into(batch *b, const char *href)
{
	coll_run *c = b->c;
	ks_remote_reply reply = {};
	int r = ks_remote_get(c->R->remote, href, b->vcard4, &reply);

	if (r == -ENOENT)
		r = 0;	/* gone between listing and fetch: the next listing reports it */
	else if (r == -EFBIG) {
		/* Like an item that does not parse: reported and skipped, so that it is not
		 * downloaded again on every run until it changes. */
		c->skipped++;
		ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, r,
			    "skipping '%.200s': it is over the %d MB limit for one item", href,
			    KS_CARD_MAX >> 20);
		r = 0;
	} else if (r < 0 || !reply.body) {
		c->failed_fetch++;
		ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, r < 0 ? r : -EIO,
			    "could not fetch '%.200s': %s", href,
			    reply.errmsg[0] ? reply.errmsg : "empty response");
		r = r == -ENOMEM ? r : 0;
	} else
		r = add_item(b, href, reply.etag, reply.body, reply.body_len);
	ks_remote_reply_done(&reply);
	return r;
}

/* GETs the hrefs the multigets left out, a batch at a time, and applies what arrived. */
static int fetch_missing(coll_run *c)
{
	int r = 0;

	for (size_t v = 0; v < 2; v++) {
		href_list *l = &c->missing[v];
		for (size_t off = 0; r >= 0 && off < l->n; off += KS_MULTIGET_BATCH) {
			size_t n = KS_MIN((size_t) KS_MULTIGET_BATCH, l->n - off);
			batch b = { .c = c, .hrefs = l->v + off, .n_hrefs = n, .vcard4 = v };
			for (size_t i = 0; r >= 0 && i < n; i++) {
				r = get_into(&b, b.hrefs[i]);
				if (r >= 0 && ks_run_cancelled(c->R))
					r = -ECANCELED;
			}
			if (r >= 0 && b.n_items)
				r = apply_batch(c, &b);
			batch_clear_items(&b);
		}
		ks_strv_free(l->v, l->n);
		*l = (href_list) {};
	}
	return r;
}

static int on_batch_done(ks_remote_batch *rb, void *userdata)
{
	batch *b = rb->userdata;
	coll_run *c = b->c;
	const ks_remote_reply *reply = &rb->reply;
	int r;

	if (ks_run_cancelled(c->R)) {
		batch_clear_items(b);
		return -ECANCELED;
	}
	/* Malformed XML, or an item over the size cap, ends the parse at that point: what came
	 * before is applied and the rest fetched one by one, so one bad item costs its batch
	 * nothing. */
	if (reply->result == -ENOENT) {
		/* A multiget answered 404 as a whole (SabreDAV 1.8, when one of its items was
		 * deleted since the listing): each item is fetched on its own. */
		ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0, "%s; fetching its %zu item(s) one "
			    "by one", reply->errmsg, b->n_hrefs);
		batch_clear_items(b);
	} else if (reply->result < 0 && reply->result != -EBADMSG && reply->result != -EFBIG) {
		/* The whole batch failed: the collection fails this run, nothing is lost. */
		c->cb_error = reply->result;
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, reply->result, "%s",
			    reply->errmsg[0] ? reply->errmsg : strerror(-reply->result));
		batch_clear_items(b);
		return 0;
	}
	if (reply->result == -EBADMSG)
		/* What came before the damage is used; the rest is fetched item by item. */
		ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, reply->result,
			    "%s; %zu of the %zu item(s) asked for had arrived, the rest are "
			    "fetched one by one", reply->errmsg, b->n_items, b->n_hrefs);
	r = note_missing(c, b);
	if (r >= 0)
		r = apply_batch(c, b);
	c->fetched += (unsigned) b->n_hrefs;
	batch_clear_items(b);
	if (r < 0)
		return r;
	ks_sync_event ev = {
		.type = KS_SYNC_PROGRESS, .account = c->R->acc->name, .collection = c->L.label,
		.done = c->fetched, .total = (unsigned) (c->fetch[0].n + c->fetch[1].n),
	};
	ks_run_emit(c->R, &ev);
	return 0;
}

/* Whether the server is to be asked for a card as vCard 4.0: the version of data, the card
 * sent or merged, in an address book that offers it. */
static int one_done(ks_remote_batch *rb, void *userdata)
{
	return 0;
}

/* The server's current version of href: 0 with data and etag, -ENOENT when it has none. */
int ks_fetch_one(coll_run *c, const char *href, bool vcard4, char **ret, size_t *ret_len,
		 char **ret_etag)
{
	_cleanup_free_ char *h = strdup(href);
	char *hrefs[1] = { h };
	batch b = { .c = c, .hrefs = hrefs, .n_hrefs = 1, .vcard4 = vcard4 };
	ks_remote_batch rb = {
		.collection = c->L.col->href, .card = c->L.col->kind == KS_COLLECTION_ADDRESSBOOK,
		.hrefs = hrefs, .n_hrefs = 1, .vcard4 = vcard4, .on_item = on_item, .userdata = &b,
	};
	int r = h ? ks_remote_fetch(c->R->remote, &rb, 1, one_done, NULL) : -ENOMEM;

	if (r >= 0)
		r = rb.reply.result;
	ks_remote_reply_done(&rb.reply);
	if (r >= 0 && b.n_items == 0) {
		/* Not in the multiget: ask for it alone before believing it is gone. */
		ks_remote_reply reply = {};
		r = ks_remote_get(c->R->remote, href, vcard4, &reply);
		if (r >= 0 && reply.body)
			r = add_item(&b, href, reply.etag, reply.body, reply.body_len);
		else if (r >= 0)
			r = -ENOENT;
		ks_remote_reply_done(&reply);
	}
	if (r >= 0) {
		*ret = TAKE_PTR(b.items[0].data);
		*ret_len = b.items[0].len;
		*ret_etag = TAKE_PTR(b.items[0].etag);
	}
	batch_clear_items(&b);
	return r;
}
