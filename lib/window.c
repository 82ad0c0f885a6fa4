/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dav_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "ical_p.h"
#include "macro.h"

/* The time window of events (past_days, future_days): which events of a calendar get a file.
 *
 * An event outside the window gets an outside row (its href and etag, no file), so that
 * listings do not fetch it again until it changes. An event whose file ksync wrote and that
 * left the window loses its file only while the file is exactly as ksync wrote it, and its
 * row becomes an outside row before the file goes: a crash in between leaves a file without
 * a row, which the next scan would take for a new item, never a row without its file, which
 * it would take for a deletion to send. That file is known by its outside row's name and
 * hash (ks_window_leftover()). Nothing here ever sends anything to the server. */

#define DAY ((int64_t) 86400)

static int reset_listing(coll_run *c)
{
	ks_collection *col = c->L.col;

	free(col->sync_token);
	col->sync_token = NULL;
	free(col->ctag);
	col->ctag = NULL;
	return 0;
}

int ks_window_begin(coll_run *c)
{
	run *R = c->R;
	ks_collection *col = c->L.col;
	ks_cache *cache = R->e->cache;
	const ks_account_config *a = R->acc;
	int past = KS_MAX(a->past_days, 0), future = KS_MAX(a->future_days, 0);
	bool want = col->kind == KS_COLLECTION_CALENDAR && !a->feed && (past || future);
	ks_cache_window w = {};
	int r = ks_cache_get_window(cache, col->id, &w);

	if (r < 0 && r != -ENOENT)
		return r;
	bool had = r >= 0;
	if (!want && !had)
		return 0;
	int64_t now = (int64_t) time(NULL);
	bool grew = !want || (had && ((w.past_days && (!past || past > w.past_days)) ||
				     (w.future_days && (!future || future > w.future_days))));
	bool changed = !want || !had || w.past_days != past || w.future_days != future;

	if (changed) {
		/* A window that grew (or went) leaves events out that now belong in: the next
		 * listing is a full one, and fetches every event without a row. One transaction,
		 * so that a crash cannot keep the new window with the old listing's token. */
		ks_cache_window nw = { .past_days = past, .future_days = future };
		r = ks_cache_begin(cache);
		if (r < 0)
			return r;
		if (grew)
			r = ks_cache_delete_outside(cache, col->id, NULL);
		if (r >= 0 && grew)
			r = ks_cache_set_collection_state(cache, col->id, NULL, NULL);
		if (r >= 0)
			r = ks_cache_set_window(cache, col->id, want ? &nw : NULL);
		if (r >= 0)
			r = ks_cache_commit(cache);
		if (r < 0) {
			ks_cache_rollback(cache);
			return r;
		}
		if (grew)
			(void) reset_listing(c);
		w = nw;
	}
	if (!want)
		return grew;
	c->win.active = true;
	c->win.past_days = past;
	c->win.future_days = future;
	c->win.start = past ? now - past * DAY : 0;
	c->win.end = future ? now + future * DAY : 0;
	c->win.day = now / DAY;
	c->win.check = w.checked_day != c->win.day;
	return grew;
}

typedef struct query_ctx {
	coll_run *c;
	bool all;	/* every event, with etags */
} query_ctx;

static int on_query(const ks_remote_member *m, void *userdata)
{
	query_ctx *q = userdata;
	coll_run *c = q->c;
	_cleanup_free_ char *href = NULL, *pair = NULL;
	size_t n = strlen(c->L.col->href);

	if (!m->href[0] || (m->status && (m->status < 200 || m->status >= 300)))
		return 0;
	int r = ks_href_normalize(ks_remote_base_url(c->R->remote), m->href, &href);
	if (r == -ENOMEM)
		return r;
	/* Only direct members, as in a listing; what is not one is simply not taken. */
	if (r < 0 || strncmp(href, c->L.col->href, n) != 0 || !href[n] || strchr(href + n, '/'))
		return 0;
	if (!q->all)
		return ks_strv_push(&c->win.inside, &c->win.n_inside, &c->win.cap_inside, href);
	if (!m->etag)
		return 0;	/* nothing to recognise it by later: fetched */
	if (asprintf(&pair, "%s\n%s", href, m->etag) < 0)
		return -ENOMEM;
	return ks_strv_push(&c->win.events, &c->win.n_events, &c->win.cap_events, pair);
}

/* Compares an "href\netag" pair (or a bare href as the key) by href. */
static int cmp_pair(const void *a, const void *b)
{
	const char *x = *(const char *const *) a, *y = *(const char *const *) b;
	size_t nx = strcspn(x, "\n"), ny = strcspn(y, "\n");
	int d = strncmp(x, y, KS_MIN(nx, ny));

	return d ? d : (nx > ny) - (nx < ny);
}

static int run_queries(coll_run *c)
{
	ks_remote_reply reply = {};
	query_ctx q = { .c = c, .all = true };
	/* Only single events are judged by the server: a recurring one is fetched and judged
	 * here (Xandikos, for one, does not expand rules in a time-range).
	 * Every event first, then those inside: an event changed in between is either inside
	 * by the second answer (and fetched), or recorded with the first answer's older etag,
	 * which the next listing tells apart from the server's. */
	int r = ks_remote_query(c->R->remote, c->L.col->href, 0, 0, on_query, &q, &reply);

	ks_remote_reply_done(&reply);
	if (r >= 0) {
		q.all = false;
		r = ks_remote_query(c->R->remote, c->L.col->href, c->win.start, c->win.end,
				    on_query, &q, &reply);
		ks_remote_reply_done(&reply);
	}
	if (r == -ENOMEM || r == -ECANCELED)
		return r;
	if (r < 0) {
		/* The listing goes on without: every event is fetched and sorted after. */
		c->win.no_query = true;
		return 0;
	}
	if (c->win.n_events > 1)
		qsort(c->win.events, c->win.n_events, sizeof(char *), cmp_pair);
	if (c->win.n_inside > 1)
		qsort(c->win.inside, c->win.n_inside, sizeof(char *), ks_strv_cmp);
	c->win.queried = true;
	return 0;
}

int ks_window_prefilter(coll_run *c)
{
	ks_cache *cache = c->R->e->cache;
	href_list *l = &c->fetch[0];
	size_t kept = 0;
	int r = 0;

	if (!c->win.active || c->R->o->force || c->read_back || c->win.no_query || l->n == 0)
		return 0;
	if (!c->win.queried) {
		r = run_queries(c);
		if (r < 0 || !c->win.queried)
			return r;
	}
	r = ks_cache_begin(cache);
	if (r < 0)
		return r;
	for (size_t i = 0; i < l->n; i++) {
		const char *href = l->v[i];
		char **pair = c->win.n_events ? bsearch(&href, c->win.events, c->win.n_events,
							sizeof(char *), cmp_pair) : NULL;
		bool out = pair && !(c->win.n_inside && bsearch(&href, c->win.inside,
								   c->win.n_inside, sizeof(char *),
								   ks_strv_cmp));
		if (out) {
			ks_cache_item it = {};
			r = ks_cache_get_item(cache, c->L.col->id, href, &it);
			ks_cache_item_done(&it);
			if (r < 0 && r != -ENOENT)
				break;
			/* Only what has no row here: a row's file is the sweep's to judge. */
			out = r == -ENOENT && !ks_coll_find_intent(c, href);
			r = 0;
		}
		if (out) {
			/* Without future_days an event wholly before the window never comes
			 * into it; with it, one may: it is fetched once the window's end has
			 * passed today's, on the next day's look, and judged then. */
			r = ks_cache_put_outside(cache, c->L.col->id, href, strchr(*pair, '\n') + 1,
						 NULL, NULL, c->win.end ? c->win.end + 1 : 0);
			if (r < 0)
				break;
			c->win.left_out++;
			free(l->v[i]);
			continue;
		}
		l->v[kept++] = l->v[i];
	}
	if (r < 0) {
		/* The hrefs already taken out are gone from the list: the rest of the run
		 * must not go on as if they were fetched. */
		ks_cache_rollback(cache);
		l->n = kept;
		return r;
	}
	l->n = kept;
	return ks_cache_commit(cache);
}

void ks_window_done(coll_run *c)
{
	ks_strv_free(c->win.events, c->win.n_events);
	ks_strv_free(c->win.inside, c->win.n_inside);
	c->win.events = c->win.inside = NULL;
	c->win.n_events = c->win.n_inside = c->win.cap_events = c->win.cap_inside = 0;
}

int ks_window_skip_listed(coll_run *c, const char *href, const char *etag)
{
	_cleanup_free_ char *known = NULL;
	int r;

	if (!c->win.active || c->R->o->force)
		return 0;
	r = ks_cache_get_outside(c->R->e->cache, c->L.col->id, href, &known);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	return known && etag && strcmp(known, etag) == 0;
}

int ks_window_leave_out(coll_run *c, const char *href, const char *etag, const char *data,
			size_t len)
{
	int64_t next = 0;
	int r;

	if (!c->win.active)
		return 0;
	r = ks_ical_in_window(data, len, c->win.start, c->win.end, &next);
	if (r != 0)
		return r < 0 ? r : 0;
	r = ks_cache_put_outside(c->R->e->cache, c->L.col->id, href, etag, NULL, NULL, next);
	if (r < 0)
		return r;
	c->win.left_out++;
	return 1;
}

int ks_window_leftover(coll_run *c, ks_local_change *ch)
{
	ks_cache *cache = c->R->e->cache;
	_cleanup_free_ char *href = NULL, *hash = NULL;
	int r = ks_cache_outside_by_filename(cache, c->L.col->id, ch->filename, &href, &hash);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (!hash || strcmp(hash, ch->hash) != 0) {
		/* Changed since ksync wrote it: the user's, sent as an item of its own (a server
		 * that has it under its UID's name answers 412 and the two are merged). */
		r = ks_cache_outside_forget_file(cache, c->L.col->id, href);
		return r < 0 ? r : 0;
	}
	if (unlinkat(c->L.dirfd, ch->filename, 0) < 0 && errno != ENOENT)
		return ks_coll_file_failed(c, "delete", ch->filename, -errno);
	r = ks_fs_fsync_dir(c->L.dirfd);
	if (r >= 0)
		r = ks_cache_outside_forget_file(cache, c->L.col->id, href);
	if (r < 0)
		return r;
	c->win.removed++;
	return 1;
}

int ks_window_deleted(coll_run *c, const ks_local_change *ch)
{
	ks_cache *cache = c->R->e->cache;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int64_t next = 0;
	int r;

	if (!c->win.active || !ch->href || !ch->etag)
		return 0;
	r = ks_cache_get_item_data(cache, c->L.col->id, ch->href, &data, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = ks_ical_in_window(data, len, c->win.start, c->win.end, &next);
	if (r != 0)
		return r < 0 ? r : 0;
	r = ks_cache_begin(cache);
	if (r >= 0)
		r = ks_cache_put_outside(cache, c->L.col->id, ch->href, ch->etag, NULL, NULL, next);
	if (r >= 0)
		r = ks_cache_delete_item(cache, c->L.col->id, ch->href);
	if (r >= 0)
		r = ks_cache_commit(cache);
	if (r < 0) {
		ks_cache_rollback(cache);
		return r;
	}
	c->win.not_sent++;
	return 1;
}

typedef struct sweep {
	coll_run *c;
	char **hrefs;
	int64_t *next;
	size_t n, cap;
	int64_t due;
} sweep;

static int sweep_push(sweep *s, const char *href, int64_t next)
{
	size_t n = s->n, cap = s->cap;
	int r = ks_strv_push(&s->hrefs, &n, &cap, href);

	if (r < 0)
		return r;
	if (cap != s->cap || !s->next) {
		int64_t *v = reallocarray(s->next, cap, sizeof(*v));
		if (!v) {
			free(s->hrefs[--n]);
			return -ENOMEM;
		}
		s->next = v;
	}
	s->next[s->n] = next;
	s->n = n;
	s->cap = cap;
	return 0;
}

static void sweep_done(sweep *s)
{
	ks_strv_free(s->hrefs, s->n);
	free(s->next);
}

static int collect_due(const char *href, int64_t next_at, void *userdata)
{
	coll_run *c = userdata;

	return ks_strv_push(&c->fetch[0].v, &c->fetch[0].n, &c->fetch[0].cap, href);
}

static int collect_outside(const char *href, const char *etag, const char *uid,
			   const char *filename, const char *data, size_t len, void *userdata)
{
	sweep *s = userdata;
	int64_t next = 0;
	int r;

	if (!etag || ks_coll_find_intent(s->c, href))
		return 0;	/* sent and not read back yet, or an upload a crash cut short */
	r = ks_ical_in_window(data, len, s->c->win.start, s->c->win.end, &next);
	if (r != 0)
		return r < 0 ? r : 0;
	return sweep_push(s, href, next);
}

/* Removes the file of one event outside the window, if it is exactly as ksync wrote it:
 * 1 when removed, 0 when kept. */
static int remove_one(coll_run *c, const char *href, int64_t next, bool *ret_unlinked)
{
	ks_cache *cache = c->R->e->cache;
	ks_cache_item it = {};
	ks_plan_file file;
	int r = ks_cache_get_item(cache, c->L.col->id, href, &it);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = ks_coll_file_state(c, &it, &file);
	bool missing = r >= 0 && file == KS_PLAN_FILE_MISSING && it.etag;
	if (r < 0 || (!missing && (file != KS_PLAN_FILE_AS_RECORDED || !it.etag || !it.hash))) {
		/* Edited here (its change goes up as usual), renamed, missing, or no regular
		 * file: kept, with its row. */
		if (r >= 0)
			c->win.kept++;
		ks_cache_item_done(&it);
		return r < 0 ? r : 0;
	}
	/* The row becomes an outside row before the file goes: a crash in between leaves a
	 * file the next scan recognises by its name and hash, where a row without its file
	 * would be taken for a deletion and sent to the server. */
	r = ks_cache_begin(cache);
	if (r >= 0)
		r = ks_cache_put_outside(cache, c->L.col->id, href, it.etag,
					 missing ? NULL : it.filename, missing ? NULL : it.hash,
					 next);
	if (r >= 0)
		r = ks_cache_delete_item(cache, c->L.col->id, href);
	if (r >= 0)
		r = ks_cache_commit(cache);
	if (r < 0) {
		ks_cache_rollback(cache);
		ks_cache_item_done(&it);
		return r;
	}
	if (missing) {
		/* Deleted here while outside the window: never taken for a deletion to send. */
		ks_cache_item_done(&it);
		c->win.not_sent++;
		return 1;
	}
	if (unlinkat(c->L.dirfd, it.filename, 0) < 0 && errno != ENOENT) {
		r = ks_coll_file_failed(c, "delete", it.filename, -errno);
		ks_cache_item_done(&it);
		return r;
	}
	ks_cache_item_done(&it);
	*ret_unlinked = true;
	c->win.removed++;
	return 1;
}

int ks_window_check(coll_run *c)
{
	ks_cache *cache = c->R->e->cache;
	sweep s = { .c = c };
	bool unlinked = false;
	int r = 0;

	if (!c->win.active || !c->win.check)
		return 0;
	/* Events the window reaches as the days pass (future_days): fetched again, and given
	 * a file when they are in. */
	if (c->win.end) {
		ks_coll_reset_lists(c, false);
		r = ks_cache_foreach_outside(cache, c->L.col->id, c->win.end, collect_due, c);
		if (r >= 0 && c->fetch[0].n)
			r = ks_fetch_all(c);
		ks_coll_reset_lists(c, false);
		if (r < 0)
			return r;
	}
	/* Events that left it. */
	r = ks_cache_foreach_item_data(cache, c->L.col->id, collect_outside, &s);
	for (size_t i = 0; r >= 0 && i < s.n; i++)
		r = remove_one(c, s.hrefs[i], s.next[i], &unlinked);
	/* The files are gone for good before their outside rows forget them. */
	if (unlinked) {
		int k = ks_fs_fsync_dir(c->L.dirfd);
		r = r < 0 ? r : k;
		for (size_t i = 0; r >= 0 && i < s.n; i++)
			r = ks_cache_outside_forget_file(cache, c->L.col->id, s.hrefs[i]);
	}
	sweep_done(&s);
	if (r < 0)
		return r;
	ks_cache_window w = {
		.past_days = c->win.past_days, .future_days = c->win.future_days,
		.checked_day = c->win.day,
	};
	return ks_cache_set_window(cache, c->L.col->id, &w);
}

void ks_window_report(coll_run *c)
{
	if (c->win.removed)
		ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
			    "%u event(s) outside the window removed locally (kept on the server)",
			    c->win.removed);
	if (c->win.kept)
		ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
			    "%u event(s) outside the window kept: their files are not as ksync "
			    "wrote them", c->win.kept);
	if (c->win.not_sent)
		ks_run_fail(c->R, KS_SYNC_NOTICE, c->L.label, 0,
			    "%u event(s) outside the window were deleted here; they are not "
			    "deleted on the server", c->win.not_sent);
}
