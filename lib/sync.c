/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "log_p.h"
#include "macro.h"

static void coll_run_done(coll_run *c);
static int open_collection_dir(run *R, coll_run *c, size_t n_rows);
static int write_metadata(coll_run *c);
static int drop_stale_intents(coll_run *c);
static void keep_old_state(coll_run *c, char *token, char *ctag);

/* Syncs one collection both ways. remote is what a home listing said about it right now,
 * or NULL when the home sets were not listed this run. */
int ks_sync_collection(run *R, ks_collection *col, const ks_collection *remote)
{
	coll_run c = { .R = R };
	unsigned req0 = ks_remote_request_count(R->remote);
	_cleanup_free_ char *token0 = col->sync_token ? strdup(col->sync_token) : NULL;
	_cleanup_free_ char *ctag0 = col->ctag ? strdup(col->ctag) : NULL;
	int r = ks_collection_place(R, col);

	if (r < 0)
		return r;
	r = ks_local_init(&c.L, R->e, R->acc->name, col);
	if (r < 0)
		return r;
	if ((col->sync_token && !token0) || (col->ctag && !ctag0)) {
		ks_local_done(&c.L);
		return -ENOMEM;
	}
	r = ks_cache_count_items(R->e->cache, col->id);
	if (r < 0) {
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c.L.label, r, "cannot read the cache: %s",
			    strerror(-r));
		goto out;
	}
	c.rows_at_start = (size_t) r;
	r = open_collection_dir(R, &c, c.rows_at_start);
	if (r < 0)
		goto out;
	r = write_metadata(&c);
	if (r < 0) {
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c.L.label, r,
			    "cannot write displayname/color: %s", strerror(-r));
		goto out;
	}
	/* Uploads a crash interrupted: the listing below tells what reached the server, and
	 * the conditional requests of the upload make a repeated one harmless. */
	r = ks_cache_list_intents(R->e->cache, col->id, &c.intents, &c.n_intents);
	if (r < 0) {
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c.L.label, r, "cannot read the cache: %s",
			    strerror(-r));
		goto out;
	}
	if (c.n_intents)
		ks_log(KS_LOG_INFO, "%s/%s: resuming %zu interrupted upload(s)", R->acc->name,
		       c.L.label, c.n_intents);

	r = ks_window_begin(&c);
	if (r > 0) {
		/* A window that grew lists the collection again: that is the state to keep. */
		free(token0);
		free(ctag0);
		token0 = ctag0 = NULL;
	}
	if (r < 0) {
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c.L.label, r,
			    "cannot apply the time window: %s", strerror(-r));
		goto out;
	}
	r = ks_pull_collection(&c, remote, R->o->force);
	if (r >= 0)
		r = drop_stale_intents(&c);
	if (r < 0)
		goto out;
	r = ks_window_check(&c);
	if (r < 0) {
		if (!c.cb_error)
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c.L.label, r,
				    "cannot apply the time window: %s", strerror(-r));
		goto out;
	}
	/* Local changes go after the server's: files the server changed are then up to date,
	 * so a file a crash left behind is recognised rather than uploaded as a duplicate,
	 * and items both sides changed were left alone above for the merge below. */
	r = ks_push_collection(&c);
	if (r < 0)
		goto out;
	if ((c.n_uploaded || c.pushed_deletes) && col->supports_sync) {
		/* One more listing moves the stored token past this run's own uploads (so that
		 * the next run finds nothing to do) and reads back what the server made of
		 * them: the cache and the files then hold what it stores. */
		if (c.n_uploaded > 1)
			qsort(c.uploaded, c.n_uploaded, sizeof(char *), ks_strv_cmp);
		c.read_back = true;
		r = ks_pull_collection(&c, NULL, false);
		if (r < 0)
			goto out;
	}
	if (c.failed_fetch) {
		r = -EIO;
		ks_sync_report_failed(&c);
		goto out;
	}
	ks_window_report(&c);
	(void) ks_report_collection_synced(R->e->cache, col);
	{
		ks_sync_event ev = {
			.type = KS_SYNC_COLLECTION_DONE, .account = R->acc->name,
			.collection = c.L.label, .added = c.added, .updated = c.updated,
			.deleted = c.deleted, .skipped = c.skipped, .uploaded = c.pushed,
			.removed = c.pushed_deletes, .conflicts = c.conflicts,
			.requests = ks_remote_request_count(R->remote) - req0,
		};
		ks_run_emit(R, &ev);
	}
	r = 0;
out:
	if (c.failed_push)
		keep_old_state(&c, token0, ctag0);
	if (c.L.dirfd >= 0)
		(void) ks_local_settle(&c.L);
	coll_run_done(&c);
	return r;
}

static void coll_run_done(coll_run *c)
{
	ks_window_done(c);
	ks_intents_free(c->intents, c->n_intents);
	ks_refusals_free(c->refusals, c->n_refusals);
	ks_strv_free(c->uploaded, c->n_uploaded);
	ks_strv_free(c->untracked_uids, c->n_untracked);
	for (size_t v = 0; v < 2; v++) {
		ks_strv_free(c->fetch[v].v, c->fetch[v].n);
		ks_strv_free(c->missing[v].v, c->missing[v].n);
	}
	ks_strv_free(c->gone, c->n_gone);
	ks_strv_free(c->seen, c->n_seen);
	ks_local_done(&c->L);
}

/* Opens the collection's directory. A missing one is made for a collection without items;
 * for one with items it was renamed, removed or is on a file system that is not mounted, and
 * taking its files for deleted would empty the collection on the server: the collection stops
 * until the user puts it back or says what to do (--force fetches the files again,
 * --allow-mass-delete deletes them on the server too). */
static int open_collection_dir(run *R, coll_run *c, size_t n_rows)
{
	_cleanup_free_ char *where = NULL;
	int r;

	r = ks_local_open(&c->L, false, &where);
	if (r == -ENOENT && (n_rows == 0 || R->o->force || R->o->allow_mass_delete)) {
		free(where);
		where = NULL;
		r = ks_local_open(&c->L, true, &where);
	} else if (r == -ENOENT) {
		r = -ENOMEDIUM;
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "the directory '%s' is missing (renamed, removed, or on a file system "
			    "that is not mounted?); nothing was deleted on the server. Put it "
			    "back, run `ksyncctl sync --force %s/%s` to fetch its %zu items again, "
			    "or `ksyncctl sync --allow-mass-delete %s/%s` to delete them on the "
			    "server too",
			    where ? where : c->L.dir, R->acc->name, c->L.label, n_rows,
			    R->acc->name,
			    c->L.label);
		return r;
	}
	if (r == -ELOOP)
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "'%s' is a symbolic link: ksync does not follow links below its data "
			    "directory, so nothing was read, written or deleted through it; put "
			    "the directory back in its place", where ? where : c->L.dir);
	else if (r < 0)
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, c->L.label, r,
			    "cannot open the local directory '%s': %s", where ? where : c->L.dir,
			    strerror(-r));
	if (r < 0)
		return r;
	(void) ks_fs_clean_temp(c->L.dirfd);
	return 0;
}

static int write_metadata(coll_run *c)
{
	int r = 0;

	if (c->L.col->displayname && *c->L.col->displayname) {
		_cleanup_free_ char *v = NULL;
		if (asprintf(&v, "%s\n", c->L.col->displayname) < 0)
			return -ENOMEM;
		r = ks_fs_write_if_changed(c->L.dirfd, "displayname", v);
	}
	if (r >= 0 && c->L.col->color) {
		_cleanup_free_ char *v = NULL;
		if (asprintf(&v, "%s\n", c->L.col->color) < 0)
			return -ENOMEM;
		r = ks_fs_write_if_changed(c->L.dirfd, "color", v);
	}
	return r < 0 ? r : 0;
}

/* The collection's failure line for items that could not be fetched or sent (each was
 * reported on its own before). */
void ks_sync_report_failed(coll_run *c)
{
	unsigned fetch = c->failed_fetch - c->failed_push, push = c->failed_push;

	if (fetch && push)
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, -EIO,
			    "%u item(s) could not be fetched and %u local change(s) not sent; they "
			    "will be retried",
			    fetch,
			    push);
	else if (push)
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, -EIO, "%u local change(s) "
			    "could not be sent; they will be retried", push);
	else
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, -EIO,
			    "%u item(s) could not be fetched; they will be retried", fetch);
}

/* A local change that could not be sent may stand for a server change the pull left to its
 * merge (a file edited on both sides): the token (or ctag) the pull stored would pass over
 * that change for good if the user then took the edit back. The collection goes back to the
 * state it had when the run began, so that the next listing names those changes again (what
 * this run applied is listed with the etags it has now, and not fetched again). */
static void keep_old_state(coll_run *c, char *token, char *ctag)
{
	ks_collection *col = c->L.col;

	if (ks_cache_set_collection_state(c->R->e->cache, col->id, token, ctag) < 0)
		return;
	free(col->sync_token);
	free(col->ctag);
	col->sync_token = token ? strdup(token) : NULL;
	col->ctag = ctag ? strdup(ctag) : NULL;
}

/* Intents nothing is left to do for (each would be "resumed" on every run): an interrupted
 * upload of a file the user deleted since (the listing just done brought in whatever of it
 * reached the server), and an interrupted deletion of a file that is back (moved away and
 * back: a deletion that reached the server took the row with it above, and the file goes up
 * as a new item). */
static int drop_stale_intents(coll_run *c)
{
	for (size_t i = 0; i < c->n_intents; i++) {
		const ks_intent *in = &c->intents[i];
		bool deletion = in->op == KS_INTENT_DELETE;
		if (!in->filename)
			continue;
		bool there = faccessat(c->L.dirfd, in->filename, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		if (!there && errno != ENOENT)
			continue;
		if (there != deletion)
			continue;
		ks_cache_item it = {};
		int r = ks_cache_get_item(c->R->e->cache, c->L.col->id, in->href, &it);
		bool same_file = r >= 0 && it.filename && strcmp(it.filename, in->filename) == 0;
		ks_cache_item_done(&it);
		if (deletion ? same_file : r == -ENOENT)
			r = ks_cache_clear_intent(c->R->e->cache, c->L.col->id, in->href);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return 0;
}
