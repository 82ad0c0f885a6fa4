/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "macro.h"

static bool is_collection_href(const coll_run *c, const char *href);
static int on_listing(const ks_remote_member *r, void *userdata);
static int list(coll_run *c, bool sync, const char *token, ks_remote_reply *ret);
static int fetch_ctag(coll_run *c, char **ret, char *errmsg, size_t size);
static int delete_items(coll_run *c, char **hrefs, size_t n);
static int collect_unseen(const char *href, const char *etag, const char *filename, void *userdata);
static int delete_remote_gone(coll_run *c, char **hrefs, size_t n);
static int delete_unseen(coll_run *c);

/* Brings the server's changes into the files and the cache. remote is what a home listing
 * said about the collection right now, or NULL. Failures are reported here. */
int ks_pull_collection(coll_run *c, const ks_collection *remote, bool force)
{
	run *R = c->R;
	ks_collection *col = c->L.col;
	ks_remote_reply req = {};
	_cleanup_free_ char *new_token = NULL, *ctag = NULL, *round_token = NULL;
	int r;

	ks_coll_reset_lists(c, false);
	/* Without a listing the ctag is only known for collections asked for it below: keep
	 * the stored one rather than forget it. */
	const char *known_ctag = remote ? remote->ctag : col->ctag;
	if (known_ctag) {
		ctag = strdup(known_ctag);
		if (!ctag) {
			r = -ENOMEM;
			goto failed;
		}
	}
	if (!force && remote && remote->sync_token && col->sync_token &&
	    strcmp(remote->sync_token, col->sync_token) == 0)
		return 0;
	if (!force && remote && !remote->sync_token && remote->ctag && col->ctag &&
	    strcmp(remote->ctag, col->ctag) == 0)
		return 0;
	if ((!remote || (!remote->ctag && col->ctag)) && !col->supports_sync) {
		/* Without a fresh home listing, or one that did not say, the collection's own
		 * ctag tells whether to list. */
		char why[KS_DAV_ERRMSG_MAX] = "";
		r = fetch_ctag(c, &ctag, why, sizeof(why));
		if (r == -ENOENT)
			goto out;	/* gone: the caller lists the home sets */
		if (r < 0) {
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "%s",
				    why[0] ? why : strerror(-r));
			goto out;
		}
		if (!force && ctag && col->ctag && strcmp(ctag, col->ctag) == 0)
			return 0;
	}

	if (col->supports_sync) {
		const char *token = force ? NULL : col->sync_token;
		c->full = !token;
		for (unsigned round = 0; round < 10000; round++) {
			r = list(c, true, token, &req);
			if (r < 0 && token && round == 0 && ks_pull_token_rejected(&req)) {
				/* The token expired: list everything once. */
				ks_run_fail(R, KS_SYNC_NOTICE, c->L.label, r,
					    "the stored sync-token was refused (%s); listing the "
					    "whole collection",
					    req.errmsg[0] ? req.errmsg : strerror(-r));
				ks_remote_reply_done(&req);
				ks_coll_reset_lists(c, false);
				token = NULL;
				c->full = true;
				r = list(c, true, NULL, &req);
			}
			if (r < 0 && !token && round == 0 &&
			    (r == -EOPNOTSUPP || r == -EPROTO || req.status == 403)) {
				/* No sync-collection after all: fall back to etag listings. */
				ks_remote_reply_done(&req);
				ks_coll_reset_lists(c, false);
				col->supports_sync = false;
				(void) ks_cache_save_collection(R->e->cache, col);
				break;
			}
			if (r == -ENOENT && !remote)
				goto out;	/* gone: the caller lists the home sets */
			if (r < 0) {
				ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "%s",
					    req.errmsg[0] ? req.errmsg : strerror(-r));
				goto out;
			}
			/* Deletions first: an item the server moved (a deletion and an
			 * addition with one UID) then takes its file name with it rather
			 * than a suffixed one. */
			r = delete_remote_gone(c, c->gone, c->n_gone);
			if (r >= 0 && c->full)
				r = ks_window_prefilter(c);
			if (r >= 0)
				r = ks_fetch_all(c);
			if (r == -EDQUOT)
				goto out;
			if (r < 0)
				goto failed;
			free(new_token);
			new_token = req.sync_token && *req.sync_token ? strdup(req.sync_token)
								      : NULL;
			bool truncated = c->truncated || req.status == 507;
			ks_remote_reply_done(&req);
			if (truncated && (!new_token || (token && strcmp(new_token, token) == 0 &&
							 c->fetch[0].n + c->fetch[1].n == 0 &&
							 c->n_gone == 0))) {
				/* A partial listing that gives no token to go on from (or the
				 * same one, having listed nothing) cannot be completed, and taken
				 * as complete it would delete what it left out. */
				r = -EBADMSG;
				ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
					    "the server truncated the listing of %s (507) without "
					    "a sync-token to continue from; nothing was deleted",
					    col->href);
				goto out;
			}
			if (c->failed_fetch || c->held)
				break;
			if (!truncated && c->full) {
				r = delete_unseen(c);
				if (r == -EDQUOT)
					goto out;
				if (r < 0)
					goto failed;
			}
			/* Each round's token of an incremental listing is stored once its changes
			 * are applied, so a crash in a long truncated listing does not start it
			 * over. A full listing's only at its end: only then are the items it did
			 * not list known to be gone, and a run going on from a partial one's
			 * token would keep them forever (an interrupted full listing starts over,
			 * fetching nothing that is current). An unchanged token is not written
			 * again: a quiet run writes nothing. */
			if (new_token && !(truncated && c->full) &&
			    (!col->sync_token || strcmp(new_token, col->sync_token) ||
			     !ks_str_eq(ctag, col->ctag))) {
				r = ks_cache_set_collection_state(R->e->cache, col->id, new_token,
								  ctag);
				if (r < 0)
					goto failed;
				free(col->sync_token);
				col->sync_token = strdup(new_token);
			}
			if (!truncated)
				break;
			ks_coll_reset_lists(c, true);
			free(round_token);
			round_token = TAKE_PTR(new_token);
			token = round_token;
		}
	}
	if (!col->supports_sync) {
		c->full = true;
		r = list(c, false, NULL, &req);
		if (r < 0) {
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "%s",
				    req.errmsg[0] ? req.errmsg : strerror(-r));
			goto out;
		}
		if (req.ctag) {
			/* Asked for with the etags: true of what was listed, where a ctag
			 * from before (or none, on a first sync) is not. */
			free(ctag);
			ctag = TAKE_PTR(req.ctag);
		}
		ks_remote_reply_done(&req);
		r = ks_window_prefilter(c);
		if (r >= 0)
			r = ks_fetch_all(c);
		if (r >= 0)
			r = delete_unseen(c);
		if (r == -EDQUOT)
			goto out;
		if (r < 0)
			goto failed;
		if (!c->failed_fetch && !c->held) {
			r = ks_cache_set_collection_state(R->e->cache, col->id, NULL, ctag);
			if (r < 0)
				goto failed;
		}
	}
	if (c->failed_fetch) {
		r = -EIO;
		ks_sync_report_failed(c);
		goto out;
	}
	r = 0;
	goto out;
failed:
	if (!c->cb_error)
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "%s", strerror(-r));
out:
	ks_remote_reply_done(&req);
	return r;
}

static bool is_collection_href(const coll_run *c, const char *href)
{
	size_t n = strlen(c->L.col->href);
	/* The collection itself, with or without its trailing slash. */
	return strcmp(href, c->L.col->href) == 0 ||
	       (strlen(href) == n - 1 && strncmp(href, c->L.col->href, n - 1) == 0);
}

/* Whether this run uploaded href (c->uploaded is sorted before the read-back listing). */
bool ks_coll_uploaded_here(const coll_run *c, const char *href)
{
	return c->n_uploaded &&
	       bsearch(&href, c->uploaded, c->n_uploaded, sizeof(char *), ks_strv_cmp) != NULL;
}

/* A listing entry (sync-collection or PROPFIND Depth 1): decide fetch or delete. */
static int on_listing(const ks_remote_member *r, void *userdata)
{
	coll_run *c = userdata;
	_cleanup_free_ char *href = NULL;
	ks_cache_item it = {};
	int k;

	/* An empty href is a relative reference to the request-URI itself (RFC 3986 5.2), which
	 * is how a 507 for the collection may come (RFC 6578 3.6): it must not be skipped, or a
	 * truncated listing would be taken as complete. */
	if (!r->href[0]) {
		if (r->status == 507)
			c->truncated = true;
		return 0;
	}
	k = ks_href_normalize(ks_remote_base_url(c->R->remote), r->href, &href);
	if (k == -ENOMEM)
		return k;
	if (k < 0) {
		c->skipped++;
		ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, -EINVAL,
			    "ignoring unusable href '%.200s' from the server", r->href);
		return 0;
	}
	if (is_collection_href(c, href)) {
		if (r->status == 507)
			c->truncated = true;
		return 0;
	}
	/* Only direct members of the collection become items. What lies outside it is no
	 * business of this collection, neither to write nor to delete: it is reported (a few
	 * times per run, a server may list any number) and left alone. A member collection
	 * (a trailing slash) is not an item either, and nothing to report. */
	size_t n = strlen(c->L.col->href);
	if (strncmp(href, c->L.col->href, n) != 0) {
		c->skipped++;
		if (c->skipped_outside++ < 3)
			ks_run_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->L.label, -EINVAL,
				    "ignoring '%.200s' from the server: it is not in the "
				    "collection", r->href);
		return 0;
	}
	if (strchr(href + n, '/'))
		return 0;
	if (r->status == 404 || r->status == 410)
		return ks_strv_push(&c->gone, &c->n_gone, &c->cap_gone, href);
	if (r->status && (r->status < 200 || r->status >= 300))
		return 0;
	if (c->full) {
		k = ks_strv_push(&c->seen, &c->n_seen, &c->cap_seen, href);
		if (k < 0)
			return k;
	}
	k = ks_cache_get_item(c->R->e->cache, c->L.col->id, href, &it);
	if (k < 0 && k != -ENOENT)
		return k;
	if (k == -ENOENT) {
		/* An event the time window left out, unchanged since. */
		int w = ks_window_skip_listed(c, href, r->etag);
		if (w != 0)
			return w < 0 ? w : 0;
	}
	bool same = k >= 0 && r->etag && it.etag && strcmp(it.etag, r->etag) == 0;
	ks_cache_item_done(&it);
	/* This run's own uploads are read back: some servers store them changed and still
	 * answer with an ETag (Radicale reorders an event's properties). */
	if (same && c->read_back && ks_coll_uploaded_here(c, href))
		same = false;
	if (same && !c->R->o->force)
		return 0;
	/* A server that converts cards (SabreDAV, Cyrus: vCard 3.0 unless asked otherwise)
	 * is asked for each card in the version it had here, and for a new card in 4.0, which
	 * loses nothing: a card keeps the version its author wrote, and a 4.0 card written
	 * elsewhere keeps what 3.0 cannot say. */
	int v4 = 0;
	if (c->L.col->vcard4) {
		v4 = k >= 0 ? ks_cache_item_is_vcard4(c->R->e->cache, c->L.col->id, href) : 1;
		if (v4 < 0)
			return v4;
	}
	href_list *l = &c->fetch[v4];
	return ks_strv_push(&l->v, &l->n, &l->cap, href);
}

bool ks_pull_token_rejected(const ks_remote_reply *req)
{
	/* RFC 6578 3.2: 403 or 409 with DAV:valid-sync-token; some servers answer 400, and
	 * Xandikos a 500, for a token they no longer know. */
	if (req->status == 403 || req->status == 409 || req->status == 400)
		return !req->body || strstr(req->body, "valid-sync-token") || req->status == 400;
	return req->status == 500;
}

/* Lists the collection (sync-collection with token, or a PROPFIND of etags without sync),
 * each member going to on_listing, inside one read transaction: the cache lookup for every
 * member then costs no lock of its own. */
static int list(coll_run *c, bool sync, const char *token, ks_remote_reply *ret)
{
	int r = ks_cache_begin_read(c->R->e->cache);
	if (r < 0)
		return r;
	r = ks_remote_list(c->R->remote, c->L.col->href, sync, token, on_listing, c, ret);
	ks_cache_end_read(c->R->e->cache);
	return r;
}

/* The collection's getctag, for collections without sync-collection. */
static int fetch_ctag(coll_run *c, char **ret, char *errmsg, size_t size)
{
	ks_remote_reply reply = {};
	char *ctag = NULL;
	int r = ks_remote_ctag(c->R->remote, c->L.col->href, c->L.col->ctag, &ctag, &reply);

	snprintf(errmsg, size, "%s", reply.errmsg);
	ks_remote_reply_done(&reply);
	if (r < 0)
		return r;
	free(*ret);
	*ret = ctag;
	return 0;
}

/* Forgets one listing round; the hrefs seen by a full listing are kept unless keep_seen is
 * false, since a truncated full listing goes on over several rounds. */
void ks_coll_reset_lists(coll_run *c, bool keep_seen)
{
	for (size_t v = 0; v < 2; v++) {
		ks_strv_free(c->fetch[v].v, c->fetch[v].n);
		ks_strv_free(c->missing[v].v, c->missing[v].n);
		c->fetch[v] = c->missing[v] = (href_list) {};
	}
	ks_strv_free(c->gone, c->n_gone);
	c->gone = NULL;
	c->n_gone = c->cap_gone = 0;
	if (!keep_seen) {
		ks_strv_free(c->seen, c->n_seen);
		c->seen = NULL;
		c->n_seen = c->cap_seen = 0;
	}
	c->truncated = false;
	c->fetched = 0;
}

static int delete_items(coll_run *c, char **hrefs, size_t n)
{
	ks_cache *cache = c->R->e->cache;
	bool any = false;
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		ks_cache_item it = {};
		r = ks_cache_get_item(cache, c->L.col->id, hrefs[i], &it);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r < 0)
			return r;
		/* Deleted on the server, edited here: the edit wins. Only the row goes; the
		 * file, untracked now, is uploaded again as a new item. */
		ks_plan_file file;
		r = ks_coll_file_state(c, &it, &file);
		if (r < 0) {
			ks_cache_item_done(&it);
			return r;
		}
		any = true;
		const ks_intent *in = ks_coll_find_intent(c, hrefs[i]);
		if (ks_plan_gone(file, in && in->op == KS_INTENT_DELETE) != KS_PLAN_DELETE_FILE) {
			ks_cache_item_done(&it);
			continue;
		}
		if (unlinkat(c->L.dirfd, it.filename, 0) < 0 && errno != ENOENT) {
			r = ks_coll_file_failed(c, "delete", it.filename, -errno);
			ks_cache_item_done(&it);
			return r;
		}
		ks_cache_item_done(&it);
		/* The files without a row found so far may count the one just deleted (a
		 * file only renamed): they are looked for again when needed. */
		ks_strv_free(c->untracked_uids, c->n_untracked);
		c->untracked_uids = NULL;
		c->n_untracked = c->cap_untracked = 0;
		c->untracked_known = false;
	}
	if (!any)
		return 0;
	r = ks_fs_fsync_dir(c->L.dirfd);
	if (r < 0)
		return r;
	/* Rows go after the files: a crash in between leaves rows whose files are gone, which
	 * the next listing deletes again. */
	r = ks_cache_begin(cache);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = ks_cache_delete_item(cache, c->L.col->id, hrefs[i]);
		/* A deletion this account sent before a crash: its intent is fulfilled. */
		if (r >= 0 && ks_coll_find_intent(c, hrefs[i]))
			r = ks_cache_clear_intent(cache, c->L.col->id, hrefs[i]);
		if (r < 0) {
			ks_cache_rollback(cache);
			return r;
		}
		c->deleted++;
	}
	return ks_cache_commit(cache);
}

typedef struct unseen {
	coll_run *c;
	char **hrefs;
	size_t n, cap;
} unseen;

static int collect_unseen(const char *href, const char *etag, const char *filename, void *userdata)
{
	unseen *u = userdata;
	coll_run *c = u->c;

	if (c->n_seen && bsearch(&href, c->seen, c->n_seen, sizeof(char *), ks_strv_cmp))
		return 0;
	return ks_strv_push(&u->hrefs, &u->n, &u->cap, href);
}

/* The server no longer has these items: their files go (an edited one stays, to be uploaded
 * again), once the guard agreed to as many deletions as there are rows among them. */
static int delete_remote_gone(coll_run *c, char **hrefs, size_t n)
{
	size_t known = 0;
	int r;

	/* Events the time window left out have no file to delete, and count for nothing. */
	for (size_t i = 0; c->win.active && i < n; i++) {
		r = ks_cache_delete_outside(c->R->e->cache, c->L.col->id, hrefs[i]);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < n; i++) {
		ks_cache_item it = {};
		r = ks_cache_get_item(c->R->e->cache, c->L.col->id, hrefs[i], &it);
		ks_cache_item_done(&it);
		if (r < 0 && r != -ENOENT)
			return r;
		known += r >= 0 && !ks_guard_counted_before(c, hrefs[i], NULL);
	}
	r = ks_guard_deletions(c, known, "locally",
			       "the server no longer lists them: was it emptied?",
			       NULL);
	if (r < 0)
		return r;
	return delete_items(c, hrefs, n);
}

static int collect_unseen_outside(const char *href, int64_t next_at, void *userdata)
{
	return collect_unseen(href, NULL, NULL, userdata);
}

static int delete_unseen(coll_run *c)
{
	unseen u = { .c = c };
	int r = 0;

	if (c->n_seen > 1)
		qsort(c->seen, c->n_seen, sizeof(char *), ks_strv_cmp);
	if (c->win.active) {
		/* Events the window left out that the server no longer has. */
		r = ks_cache_foreach_outside(c->R->e->cache, c->L.col->id, 0,
					     collect_unseen_outside, &u);
		for (size_t i = 0; r >= 0 && i < u.n; i++)
			r = ks_cache_delete_outside(c->R->e->cache, c->L.col->id, u.hrefs[i]);
		ks_strv_free(u.hrefs, u.n);
		u = (unseen) { .c = c };
		if (r < 0)
			return r;
	}
	r = ks_cache_foreach_item(c->R->e->cache, c->L.col->id, collect_unseen, &u);
	if (r >= 0)
		r = delete_remote_gone(c, u.hrefs, u.n);
	ks_strv_free(u.hrefs, u.n);
	return r;
}
