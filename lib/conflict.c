/* SPDX-License-Identifier: MIT */
#include <sys/random.h>
#include <stdio.h>
#include <string.h>

#include "engine_p.h"
#include "macro.h"
#include "vdir_p.h"

static int same_uid(const char *data, size_t len, const char *uid);
static int create_elsewhere(coll_run *c, push_item *p);

/* Both sides changed p's item (or the server lost it): merge and bring both sides to the
 * result, keeping the losing version of any conflict. */
int ks_conflict_merge(coll_run *c, push_item *p)
{
	_cleanup_free_ char *remote = NULL, *etag = NULL, *base = NULL, *new_etag = NULL;
	ks_merge_result m = {};
	size_t rlen = 0, blen = 0;
	struct stat nst = p->st;
	const char *name = p->ch->filename;
	char errmsg[512] = "";
	int r;

	r = ks_fetch_one(c, p->href, ks_local_wants_vcard4(&c->L, p->body, p->len), &remote, &rlen, &etag);
	if (r == -ENOENT) {
		if (p->op == KS_INTENT_DELETE)
			return ks_local_forget_item(&c->L, p->href);
		/* Gone from the server, edited here: the edit wins and is uploaded anew. */
		r = ks_conflict_put(c, p->href, p->body, p->len, NULL, &new_etag, errmsg,
				    sizeof(errmsg));
		if (r < 0)
			goto fail;
		r = ks_conflict_record_sent(c, p->href, new_etag, name, p->body, p->len, &p->st);
		if (r > 0)
			r = ks_conflict_read_back(c, p->href, name, p->body, p->len, &p->st);
		return r;
	}
	if (r < 0)
		goto fail;
	if (p->op == KS_INTENT_DELETE) {
		/* Deleted here, changed on the server: the change wins and comes back. */
		r = ks_local_replace_file(&c->L, name, NULL, remote, rlen, &nst);
		if (r > 0)
			r = ks_local_record_item(&c->L, p->href, etag, name, remote, rlen, &nst);
		if (r >= 0) {
			c->updated++;
			ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
				    "'%s' was deleted here but changed on the server; the server's "
				    "version is back", name);
		}
		return r;
	}
	if (p->op == KS_INTENT_CREATE) {
		/* The resource a new item was to go to is taken. Only the same item (a copy
		 * an interrupted run uploaded, or another client's with this UID) is merged
		 * with it; an item with another UID is nobody's earlier version of this one. */
		r = same_uid(remote, rlen, p->info.uid);
		if (r < 0)
			return r;
		if (r == 0)
			return create_elsewhere(c, p);
	}
	if (p->op == KS_INTENT_UPDATE) {
		r = ks_cache_get_item_data(c->R->e->cache, c->L.col->id, p->href, &base, &blen);
		/* No row, or a row adopted without a base: a two-way merge. */
		if (r == -ENOENT || (r >= 0 && blen == 0)) {
			free(base);
			base = NULL;
			blen = 0;
		} else if (r < 0)
			return r;
	}
	ks_conflict_policy policy = ks_coll_policy(c);
	r = ks_merge(base, blen, p->body, p->len, remote, rlen, policy, &m);
	if (r == -ENOMEM)
		return r;
	bool whole = r < 0;
	if (whole) {
		/* Not mergeable line by line: the policy takes one side whole. */
		const char *win = policy == KS_CONFLICT_LOCAL_WINS ? p->body : remote;
		size_t wlen = policy == KS_CONFLICT_LOCAL_WINS ? p->len : rlen;
		m = (ks_merge_result) { .data = malloc(wlen + 1), .len = wlen, .conflict = true,
					.same_as_remote = policy != KS_CONFLICT_LOCAL_WINS,
					.same_as_local = policy == KS_CONFLICT_LOCAL_WINS };
		if (!m.data)
			return -ENOMEM;
		memcpy(m.data, win, wlen);
		m.data[wlen] = 0;
	}
	if (m.conflict) {
		/* The losing version is kept before either side is overwritten. */
		bool server_won = policy == KS_CONFLICT_SERVER_WINS;
		_cleanup_free_ char *kept = NULL;
		r = ks_conflict_keep(c, name, p->info.uid, server_won ? p->body : remote,
				     server_won ? p->len : rlen, server_won ? "local" : "server",
				     server_won ? "server" : "local",
				     whole ? "the whole item" : m.summary, &kept);
		if (r < 0)
			goto out;
		ks_run_fail(c->R, KS_SYNC_CONFLICT, c->L.label, 0,
			    "conflict in '%s' (%s): the %s version won; the %s version is kept in "
			    "%s",
			    name, whole ? "not mergeable" : m.summary ? m.summary : "content",
			    server_won ? "server" : "local", server_won ? "local" : "server", kept);
	}
	const char *result_etag = etag;
	bool sent = false;
	if (!m.same_as_remote) {
		r = ks_conflict_put(c, p->href, m.data, m.len, etag, &new_etag, errmsg,
				    sizeof(errmsg));
		if (r == -ESTALE) {
			c->deferred++;
			ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, r,
				    "'%s' changed on the server again while it was merged; it will "
				    "be merged on the next run", name);
			r = 0;
			goto out;
		}
		if (r < 0)
			goto fail;
		sent = true;
		result_etag = new_etag;
	}
	if (!m.same_as_local || p->op == KS_INTENT_CREATE) {
		r = ks_local_replace_file(&c->L, name, &p->st, m.data, m.len, &nst);
		if (r < 0)
			goto out;
		if (r == 0) {
			c->deferred++;
			r = 0;
			goto out;
		}
		if (!m.same_as_local)
			c->updated++;	/* the file took the server's side of the merge */
	}
	if (sent)
		r = ks_conflict_record_sent(c, p->href, result_etag, name, m.data, m.len, &nst);
	else {
		r = ks_local_record_item(&c->L, p->href, result_etag, name, m.data, m.len, &nst);
		if (r >= 0)
			r = !result_etag && !c->L.col->supports_sync;
	}
	if (r > 0)
		r = ks_conflict_read_back(c, p->href, name, m.data, m.len, &nst);
	goto out;
fail:
	ks_run_skip_file(c->R, c->L.label, name, r, "could not merge '%s': %s", name,
			 errmsg[0] ? errmsg : strerror(-r));
	c->failed_fetch++;
	c->failed_push++;
	if (ks_error_scope_of(r) != KS_SCOPE_ACCOUNT)
		r = 0;
out:
	ks_merge_result_done(&m);
	return r;
}

ks_conflict_policy ks_coll_policy(const coll_run *c)
{
	return c->R->acc->conflict == KS_CONFLICT_MODE_LOCAL_WINS ? KS_CONFLICT_LOCAL_WINS
								  : KS_CONFLICT_SERVER_WINS;
}

/* 1 when the object data holds one item with that UID, 0 otherwise (another UID, or no item
 * at all). */
static int same_uid(const char *data, size_t len, const char *uid)
{
	ks_item_info info = {};
	int r = ks_item_parse_info(data, len, &info, NULL);
	bool same = r >= 0 && info.uid && uid && strcmp(info.uid, uid) == 0;

	ks_item_info_done(&info);
	return r == -ENOMEM ? r : same;
}

/* Uploads p's new item under another name, its UID's resource being held by another item.
 * An item failure is reported and returns 0. */
static int create_elsewhere(coll_run *c, push_item *p)
{
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r = -ESTALE;

	for (unsigned attempt = 0; attempt < 3 && r == -ESTALE; attempt++) {
		_cleanup_free_ char *base = NULL, *href = NULL, *etag = NULL;
		uint8_t rnd[4];
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -EIO;
		r = ks_vdir_item_name(p->info.uid, NULL, &base);
		if (r < 0)
			return r;
		if (asprintf(&href, "%s%s-%02x%02x%02x%02x%s", c->L.col->href, base, rnd[0], rnd[1],
			     rnd[2], rnd[3], c->L.ext) < 0)
			return -ENOMEM;
		/* The intent moves with the upload, so that a crash leaves it where the item
		 * may now be. */
		r = ks_cache_begin(c->R->e->cache);
		if (r >= 0)
			r = ks_cache_add_intent(c->R->e->cache, c->L.col->id, href,
						KS_INTENT_CREATE,
						p->ch->filename, p->hash);
		if (r >= 0)
			r = ks_cache_clear_intent(c->R->e->cache, c->L.col->id, p->href);
		if (r >= 0)
			r = ks_cache_commit(c->R->e->cache);
		if (r < 0) {
			ks_cache_rollback(c->R->e->cache);
			return r;
		}
		free(p->href);
		p->href = TAKE_PTR(href);
		r = ks_conflict_put(c, p->href, p->body, p->len, NULL, &etag, errmsg,
				    sizeof(errmsg));
		if (r < 0)
			continue;
		r = ks_conflict_record_sent(c, p->href, etag, p->ch->filename, p->body, p->len,
					    &p->st);
		if (r > 0)
			r = ks_conflict_read_back(c, p->href, p->ch->filename, p->body, p->len,
						  &p->st);
		return r;
	}
	ks_run_skip_file(c->R, c->L.label, p->ch->filename, r, "could not upload '%s': %s",
			 p->ch->filename, errmsg[0] ? errmsg : strerror(-r));
	c->failed_fetch++;
	c->failed_push++;
	return ks_error_scope_of(r) == KS_SCOPE_ACCOUNT ? r : 0;
}

/* PUT with a condition, one request; fills *ret_etag (NULL when the reply had none). */
int ks_conflict_put(coll_run *c, const char *href, const char *data, size_t len,
		    const char *if_match, char **ret_etag, char *errmsg, size_t errmsg_len)
{
	ks_remote_write w = {
		.op = KS_REMOTE_PUT, .href = href, .data = data, .len = len,
		.card = c->L.col->kind == KS_COLLECTION_ADDRESSBOOK, .if_match = if_match,
	};
	int r = ks_remote_write_one(c->R->remote, &w);

	if (r >= 0)
		*ret_etag = TAKE_PTR(w.reply.etag);
	else if (errmsg)
		snprintf(errmsg, errmsg_len, "%s", w.reply.errmsg);
	ks_remote_reply_done(&w.reply);
	return r;
}

int ks_conflict_record_sent(coll_run *c, const char *href, const char *etag,
			    const char *filename, const char *data, size_t len,
			    const struct stat *st)
{
	bool read_back_later = c->L.col->supports_sync;
	int r;

	c->pushed++;
	r = ks_strv_push(&c->uploaded, &c->n_uploaded, &c->cap_uploaded, href);
	if (r >= 0)
		r = ks_local_record_item(&c->L, href, read_back_later ? NULL : etag, filename,
					 data, len, st);
	if (r < 0)
		return r;
	return !etag && !read_back_later;
}

/* After an upload without an ETag in the reply, or to see what a server made of it: read
 * the item back; the cache holds what the server stores, and so does the file unless it was
 * edited again meanwhile. */
int ks_conflict_read_back(coll_run *c, const char *href, const char *filename, const char *sent,
			  size_t sent_len, const struct stat *st)
{
	_cleanup_free_ char *data = NULL, *etag = NULL;
	size_t len = 0;
	struct stat nst = *st;
	int r = ks_fetch_one(c, href, ks_local_wants_vcard4(&c->L, sent, sent_len), &data, &len, &etag);

	if (r < 0)
		return r;
	if (len != sent_len || memcmp(data, sent, len) != 0) {
		r = ks_local_replace_file(&c->L, filename, st, data, len, &nst);
		if (r < 0)
			return r;
		if (r == 0)
			return 0;	/* edited meanwhile: next run */
	}
	return ks_local_record_item(&c->L, href, etag, filename, data, len, &nst);
}

int ks_conflict_keep(coll_run *c, const char *filename, const char *uid, const char *data,
		     size_t len, const char *side, const char *winner, const char *summary,
		     char **ret_path)
{
	_cleanup_free_ char *why = NULL;
	int r = ks_local_keep_copy(&c->L, filename, uid, data, len, side, winner, summary, ret_path,
				   &why);

	if (r >= 0) {
		c->conflicts++;
		return r;
	}
	if (why)
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, r, "%s", why);
	if (why && r != -ENOMEM && !c->cb_error)
		c->cb_error = r;
	return r;
}
