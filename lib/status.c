/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf_p.h"
#include "engine_p.h"
#include "json_p.h"
#include "limits.h"
#include "macro.h"
#include "scan_p.h"
#include "xml_p.h"

/* At most this many pending files are named per collection; "pending" counts them all. */
#define PENDING_FILES_MAX 100

/* Why a local change has not reached the server, in words. */
static void pending_reason(const ks_collection *col, const ks_local_change *ch,
			   const ks_refusal *rf, size_t n_rf, const ks_intent *in, size_t n_in,
			   ks_json_writer *w)
{
	static const char *const kinds[] = {
		[KS_LOCAL_NEW] = "new", [KS_LOCAL_MODIFIED] = "modified",
		[KS_LOCAL_DELETED] = "deleted", [KS_LOCAL_MOVED] = "renamed",
	};
	const ks_refusal *refused = NULL;
	bool interrupted = false;

	for (size_t i = 0; i < n_rf && !refused; i++) {
		if (strcmp(rf[i].filename, ch->filename) != 0)
			continue;
		/* Only a refusal of these very bytes (or of this deletion) still stands. */
		if (ch->kind == KS_LOCAL_DELETED ? rf[i].op == KS_INTENT_DELETE
						 : rf[i].hash && strcmp(rf[i].hash, ch->hash) == 0)
			refused = &rf[i];
	}
	for (size_t i = 0; i < n_in && !interrupted; i++)
		interrupted = (in[i].filename && strcmp(in[i].filename, ch->filename) == 0) ||
			      (ch->href && strcmp(in[i].href, ch->href) == 0);

	ks_json_write_object_begin(w);
	ks_json_write_key(w, "file");
	ks_json_write_string(w, ch->filename);
	ks_json_write_key(w, "change");
	ks_json_write_string(w, (size_t) ch->kind < ELEMENTSOF(kinds) && kinds[ch->kind] ?
			     kinds[ch->kind] : "changed");
	ks_json_write_key(w, "refused");
	ks_json_write_bool(w, refused != NULL);
	ks_json_write_key(w, "status");
	if (refused && refused->status)
		ks_json_write_int(w, refused->status);
	else
		ks_json_write_null(w);
	ks_json_write_key(w, "since");
	if (refused)
		ks_json_write_int(w, refused->created_at);
	else
		ks_json_write_null(w);
	ks_json_write_key(w, "reason");
	_cleanup_free_ char *why = NULL;
	if (refused && refused->status)
		(void) asprintf(&why, "the server refused it (HTTP %d): %s; it is sent again once the "
			   "file changes", refused->status, refused->reason);
	else if (refused)
		(void) asprintf(&why, "%s; it is sent once the file changes", refused->reason);
	else if (!col->enabled)
		(void) asprintf(&why, "the collection does not sync ('ksyncctl enable' turns it on)");
	else if (col->readonly)
		(void) asprintf(&why, "the collection is read-only: the next sync keeps this version "
			   "as a conflict copy and puts the server's back");
	else if (interrupted)
		(void) asprintf(&why, "its upload was interrupted; the next sync finishes it");
	else
		(void) asprintf(&why, "not sent yet; the next sync sends it");
	ks_json_write_string(w, why ? why : "not sent yet");
	ks_json_write_object_end(w);
}

/* The local changes of a collection not on the server yet, counted without writing
 * anything: the count, and "pending_files" with the first PENDING_FILES_MAX of them and
 * why each waits written to w (nothing written when the directory cannot be read). */
static int pending_changes(ks_engine *e, const char *dir, const ks_collection *col,
			   ks_json_writer *w)
{
	ks_scan_result sr = {};
	ks_refusal *rf = NULL;
	ks_intent *in = NULL;
	size_t n_rf = 0, n_in = 0;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int r, n = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = ks_scan_collection(e->cache, col->id, fd,
			       col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics", true, &sr);
	close(fd);
	if (r < 0)
		return r;
	/* Status reads what the runs recorded: a failure to read it loses only the reasons. */
	(void) ks_cache_list_refusals(e->cache, col->id, &rf, &n_rf);
	(void) ks_cache_list_intents(e->cache, col->id, &in, &n_in);
	ks_json_write_key(w, "pending_files");
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < sr.n_changes; i++) {
		if (sr.changes[i].kind == KS_LOCAL_IGNORED)
			continue;
		if (n++ < PENDING_FILES_MAX)
			pending_reason(col, &sr.changes[i], rf, n_rf, in, n_in, w);
	}
	ks_json_write_array_end(w);
	ks_refusals_free(rf, n_rf);
	ks_intents_free(in, n_in);
	ks_scan_result_done(&sr);
	return n;
}

int ks_engine_collections_json(ks_engine *e, const char *account, const char *only_href,
			       ks_collection_state_fn state, void *userdata, char **ret)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	ks_buf b = {};
	ks_json_writer w;
	int r;

	r = ks_cache_list_collections(e->cache, account, &cols, &n);
	if (r < 0)
		return r;
	ks_json_writer_init(&w, &b, false);
	if (!only_href)
		r = ks_json_write_array_begin(&w);
	bool found = false;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const ks_collection *c = &cols[i];
		if (only_href && strcmp(c->href, only_href) != 0)
			continue;
		found = true;
		_cleanup_free_ char *dir = NULL, *path = NULL;
		const char *kind = c->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars";

		r = ks_engine_collection_dir(e, account, c, &dir);
		if (r < 0)
			break;
		if (asprintf(&path, "%s/%s", kind, c->name) < 0) {
			r = -ENOMEM;
			break;
		}
		int items = ks_cache_count_items(e->cache, c->id);
		ks_collection_state st = {};
		if (state)
			state(path, &st, userdata);
		ks_json_write_object_begin(&w);
		ks_json_write_key(&w, "account");
		ks_json_write_string(&w, account);
		ks_json_write_key(&w, "name");
		ks_json_write_string(&w, c->name);
		ks_json_write_key(&w, "path");
		ks_json_write_string(&w, path);
		ks_json_write_key(&w, "href");
		ks_json_write_string(&w, c->href);
		ks_json_write_key(&w, "kind");
		ks_json_write_string(&w, ks_collection_kind_to_string(c->kind));
		ks_json_write_key(&w, "displayname");
		ks_json_write_string(&w, c->displayname);
		ks_json_write_key(&w, "color");
		ks_json_write_string(&w, c->color);
		ks_json_write_key(&w, "components");
		ks_json_write_array_begin(&w);
		static const struct {
			unsigned bit;
			const char *name;
		} comps[] = { { KS_COMP_VEVENT, "VEVENT" }, { KS_COMP_VTODO, "VTODO" },
			      { KS_COMP_VJOURNAL, "VJOURNAL" } };
		for (size_t k = 0; k < ELEMENTSOF(comps); k++)
			if (c->components & comps[k].bit)
				ks_json_write_string(&w, comps[k].name);
		ks_json_write_array_end(&w);
		ks_json_write_key(&w, "readonly");
		ks_json_write_bool(&w, c->readonly);
		ks_json_write_key(&w, "enabled");
		ks_json_write_bool(&w, c->enabled);
		ks_json_write_key(&w, "items");
		ks_json_write_int(&w, items < 0 ? 0 : items);
		int pending = pending_changes(e, dir, c, &w);
		if (pending < 0) {
			ks_json_write_key(&w, "pending_files");
			ks_json_write_null(&w);
		}
		ks_json_write_key(&w, "pending");
		ks_json_write_int(&w, pending < 0 ? 0 : pending);
		/* The daemon knows the runs since it started; the cache knows, across restarts,
		 * when a sync last completed. */
		uint64_t last = st.last_sync ? st.last_sync : (uint64_t) KS_MAX(c->synced_at, 0);
		ks_json_write_key(&w, "last_sync");
		if (last)
			ks_json_write_uint(&w, last);
		else
			ks_json_write_null(&w);
		ks_json_write_key(&w, "last_run");
		if (st.last_run)
			ks_json_write_uint(&w, st.last_run);
		else
			ks_json_write_null(&w);
		ks_json_write_key(&w, "last_result");
		ks_json_write_string(&w, st.result);
		ks_json_write_key(&w, "last_error");
		ks_json_write_string(&w, st.error);
		ks_json_write_key(&w, "dir");
		ks_json_write_string(&w, dir);
		/* The time window the last run sorted the events by, and how many it left
		 * on the server only. */
		ks_cache_window win = {};
		int k = ks_cache_get_window(e->cache, c->id, &win);
		ks_json_write_key(&w, "window");
		if (k >= 0) {
			int outside = ks_cache_count_outside(e->cache, c->id);
			ks_json_write_object_begin(&w);
			ks_json_write_key(&w, "past_days");
			ks_json_write_int(&w, win.past_days);
			ks_json_write_key(&w, "future_days");
			ks_json_write_int(&w, win.future_days);
			ks_json_write_key(&w, "outside");
			ks_json_write_int(&w, outside < 0 ? 0 : outside);
			ks_json_write_object_end(&w);
		} else
			ks_json_write_null(&w);
		r = ks_json_write_object_end(&w);
	}
	if (r >= 0 && !only_href)
		r = ks_json_write_array_end(&w);
	if (r >= 0)
		r = ks_json_writer_finish(&w);
	if (only_href && !found)
		r = -ENOENT;
	ks_collection_free_array(cols, n);
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

/* The item file a conflict is about, as a path; NULL when its collection is gone. */
static char *conflict_file_path(ks_engine *e, const ks_conflict_row *row,
				const ks_collection *cols, size_t n)
{
	for (size_t i = 0; row->filename && i < n; i++) {
		char label[KS_NAME_MAX + 16];
		_cleanup_free_ char *dir = NULL;
		char *p = NULL;

		snprintf(label, sizeof(label), "%s/%s",
			 cols[i].kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
			 cols[i].name);
		if (strcmp(label, row->collection) != 0)
			continue;
		if (ks_engine_collection_dir(e, row->account, &cols[i], &dir) < 0 ||
		    asprintf(&p, "%s/%s", dir, row->filename) < 0)
			return NULL;
		return p;
	}
	return NULL;
}

int ks_engine_conflicts_json(ks_engine *e, const char *account, char **ret)
{
	ks_conflict_row *rows = NULL;
	ks_collection *cols = NULL;
	size_t n = 0, n_cols = 0;
	ks_buf b = {};
	ks_json_writer w;
	int r = ks_cache_list_conflicts(e->cache, account, &rows, &n);

	if (r < 0)
		return r;
	if (account)
		(void) ks_cache_list_collections(e->cache, account, &cols, &n_cols);
	ks_json_writer_init(&w, &b, false);
	r = ks_json_write_array_begin(&w);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		/* A copy the user has dealt with (deleted) is no longer a conflict to show. */
		if (access(rows[i].kept_path, F_OK) < 0)
			continue;
		ks_json_write_object_begin(&w);
		ks_json_write_key(&w, "id");
		ks_json_write_int(&w, rows[i].id);
		ks_json_write_key(&w, "account");
		ks_json_write_string(&w, rows[i].account);
		ks_json_write_key(&w, "collection");
		ks_json_write_string(&w, rows[i].collection);
		ks_json_write_key(&w, "uid");
		ks_json_write_string(&w, rows[i].uid);
		ks_json_write_key(&w, "file");
		ks_json_write_string(&w, rows[i].filename);
		_cleanup_free_ char *path = conflict_file_path(e, &rows[i], cols, n_cols);
		ks_json_write_key(&w, "path");
		ks_json_write_string(&w, path);
		ks_json_write_key(&w, "kept");
		ks_json_write_string(&w, rows[i].kept_path);
		ks_json_write_key(&w, "winner");
		ks_json_write_string(&w, rows[i].winner);
		ks_json_write_key(&w, "what");
		ks_json_write_string(&w, rows[i].summary);
		ks_json_write_key(&w, "time");
		ks_json_write_int(&w, rows[i].created_at);
		r = ks_json_write_object_end(&w);
	}
	if (r >= 0)
		r = ks_json_write_array_end(&w);
	if (r >= 0)
		r = ks_json_writer_finish(&w);
	ks_conflict_rows_free(rows, n);
	ks_collection_free_array(cols, n_cols);
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

static bool collection_matches(const ks_collection *c, const char *name)
{
	const char *kind = c->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts/" : "calendars/";
	size_t k = strlen(kind);

	if (strncmp(name, kind, k) == 0)
		return strcmp(name + k, c->name) == 0;
	return strcmp(name, c->name) == 0;
}

void ks_collection_info_done(ks_collection_info *i)
{
	free(i->href);
	free(i->path);
	free(i->displayname);
	*i = (ks_collection_info) {};
}

int ks_engine_find_collection(ks_engine *e, const char *account, const char *collection,
			      ks_collection_info *ret)
{
	ks_collection *cols = NULL;
	size_t n = 0, found = 0, at = 0;
	int r = ks_cache_list_collections(e->cache, account, &cols, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (collection_matches(&cols[i], collection)) {
			found++;
			at = i;
		}
	if (found != 1) {
		ks_collection_free_array(cols, n);
		return found ? -EINVAL : -ENOENT;
	}
	const ks_collection *c = &cols[at];
	ks_collection_info info = {
		.href = strdup(c->href),
		.displayname = c->displayname ? strdup(c->displayname) : NULL,
		.calendar = c->kind == KS_COLLECTION_CALENDAR,
		.readonly = c->readonly,
		.enabled = c->enabled,
		.items = ks_cache_count_items(e->cache, c->id),
	};
	if (asprintf(&info.path, "%s/%s", info.calendar ? "calendars" : "contacts", c->name) < 0)
		info.path = NULL;
	r = info.href && info.path && (info.displayname || !c->displayname) ? 0 : -ENOMEM;
	if (r >= 0 && info.items < 0)
		r = info.items;
	ks_collection_free_array(cols, n);
	if (r < 0) {
		ks_collection_info_done(&info);
		return r;
	}
	*ret = info;
	return 0;
}

int ks_engine_set_enabled(ks_engine *e, const char *config_path, const char *account,
			  const char *collection, bool enabled, char **reterr_msg)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	int r = ks_cache_list_collections(e->cache, account, &cols, &n), found = 0, changed = 0;

	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_free_ char *path = NULL;

		if (!collection_matches(&cols[i], collection))
			continue;
		found++;
		if (asprintf(&path, "%s/%s", cols[i].kind == KS_COLLECTION_ADDRESSBOOK ?
				     "contacts" : "calendars", cols[i].name) < 0) {
			r = -ENOMEM;
			break;
		}
		/* ksync.conf first: the cache alone would not survive its own rebuilding. */
		if (config_path) {
			r = ks_config_set_collection(config_path, account, path, cols[i].displayname,
						     enabled, reterr_msg);
			if (r < 0)
				break;
			changed |= r;
		}
		/* ksync.conf now gives this state whether a pattern names the collection or
		 * collections = does. */
		if (cols[i].enabled != enabled || (config_path && !cols[i].ruled)) {
			cols[i].enabled = enabled;
			cols[i].ruled |= config_path != NULL;
			r = ks_cache_save_collection(e->cache, &cols[i]);
		}
	}
	ks_collection_free_array(cols, n);
	if (r < 0)
		return r;
	return found ? changed : -ENOENT;
}

static int remove_tree(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return errno == ENOENT ? 0 : errno == ENOTDIR ? ks_neg_errno(unlinkat(parent, name, 0))
							       : -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int r = remove_tree(dirfd(d), de->d_name);
		if (r < 0) {
			closedir(d);
			return r;
		}
	}
	closedir(d);
	return ks_neg_errno(unlinkat(parent, name, AT_REMOVEDIR));
}

void ks_engine_dirs_free(char **dirs)
{
	for (size_t i = 0; dirs && dirs[i]; i++)
		free(dirs[i]);
	free(dirs);
}

int ks_engine_collection_dirs(ks_engine *e, const char *account, char ***ret)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	char **v;
	int r = ks_cache_list_collections(e->cache, account, &cols, &n);

	if (r < 0)
		return r;
	v = calloc(n + 1, sizeof(*v));
	for (size_t i = 0; v && r >= 0 && i < n; i++)
		r = ks_engine_collection_dir(e, account, &cols[i], &v[i]);
	ks_collection_free_array(cols, n);
	if (!v || r < 0) {
		ks_engine_dirs_free(v);
		return -ENOMEM;
	}
	*ret = v;
	return 0;
}

int ks_engine_forget_account(ks_engine *e, const char *account, bool delete_files)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	int r = ks_cache_list_collections(e->cache, account, &cols, &n);

	if (r < 0)
		return r;
	r = ks_cache_begin(e->cache);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ks_cache_delete_collection(e->cache, cols[i].id);
	if (r >= 0)
		r = ks_cache_forget_account(e->cache, account);
	if (r >= 0)
		r = ks_cache_commit(e->cache);
	else
		ks_cache_rollback(e->cache);
	ks_collection_free_array(cols, n);
	if (r < 0 || !delete_files)
		return r;
	static const char *const trees[] = { "contacts", "calendars", "conflicts" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(trees); i++) {
		_cleanup_free_ char *dir = NULL;
		if (asprintf(&dir, "%s/%s", e->data_dir, trees[i]) < 0)
			return -ENOMEM;
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		r = remove_tree(fd, account);
		close(fd);
	}
	return r;
}

int ks_engine_clients_config(ks_engine *e, const ks_config *c, char **ret_json,
			     char **reterr_msg)
{
	ks_collection *all = NULL;
	size_t n_all = 0;
	int r = 0;

	/* Every enabled collection of the configured accounts that has its directory, with
	 * the components the server gave it, so that each reader gets its kind. */
	for (size_t i = 0; r >= 0 && i < c->n_accounts; i++) {
		ks_collection *cols = NULL;
		size_t n = 0;
		r = ks_cache_list_collections(e->cache, c->accounts[i].name, &cols, &n);
		if (r < 0)
			break;
		for (size_t k = 0; k < n; k++) {
			_cleanup_free_ char *dir = NULL;
			struct stat st;
			if (!cols[k].enabled ||
			    ks_engine_collection_dir(e, cols[k].account, &cols[k], &dir) < 0 ||
			    stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
				continue;
			ks_collection *na = realloc(all, (n_all + 1) * sizeof(*na));
			if (!na) {
				r = -ENOMEM;
				break;
			}
			all = na;
			all[n_all++] = cols[k];
			cols[k] = (ks_collection) {};
		}
		ks_collection_free_array(cols, n);
	}
	ks_client_collection *cc = calloc(n_all + 1, sizeof(*cc));
	if (r >= 0 && !cc)
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n_all; i++)
		cc[i] = (ks_client_collection) {
			.account = all[i].account, .dir = all[i].name, .path = all[i].dir,
			.calendar = all[i].kind == KS_COLLECTION_CALENDAR,
			.displayname = all[i].displayname, .color = all[i].color,
			.components = all[i].components, .readonly = all[i].readonly,
		};
	if (r >= 0)
		r = ks_clients_config(c, e->data_dir, cc, n_all, ret_json, reterr_msg);
	free(cc);
	ks_collection_free_array(all, n_all);
	return r;
}
