/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "log_p.h"
#include "macro.h"
#include "vdir_p.h"

static int assign_dir_name(run *R, ks_collection *col, ks_collection *known, size_t n_known);
static int replace_str(char **dst, const char *src);
static int refresh_collection(ks_collection *col, const ks_collection *remote);
static int collection_gone(run *R, const char *href);
static int move_aside(run *R, const char *label, int dirfd, const char *name, char **ret_path);
static int cmp_local_row(const void *key, const void *elem);
static int file_is_ksyncs(ks_cache *cache, ks_local_row *rows, size_t n, int dirfd,
			  const char *name);
static int remove_collection_files(run *R, const ks_collection *col);
static int config_rule(run *R, const ks_collection *col);
static int dir_holds_items(const char *dir, const char *ext);
static int move_dir(run *R, ks_collection *col, const char *path, const char *old,
		    const char *now);

/* Brings the cached collections in line with a home listing: new ones get a directory name
 * and a row, changed properties are saved, and those gone from the server are removed with
 * their files, if the mass-deletion guard lets them go. Returns the number of collections
 * that could not be recorded or removed. */
int ks_collections_reconcile(run *R, ks_collection *remote, size_t n_remote, ks_collection **known,
			     size_t *n_known)
{
	ks_cache *cache = R->e->cache;
	int failed = 0, r;

	for (size_t i = 0; i < *n_known; i++) {
		ks_collection *k = &(*known)[i];
		bool present = false;
		for (size_t j = 0; j < n_remote && !present; j++)
			present = strcmp(k->href, remote[j].href) == 0;
		if (present)
			continue;
		char label[KS_NAME_MAX + 16];
		snprintf(label, sizeof(label), "%s/%s",
			 k->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", k->name);
		r = collection_gone(R, k->href);
		if (r == 0) {
			ks_run_fail(R, KS_SYNC_NOTICE, label, 0,
				    "the listing of the collections did not name %s, which the "
				    "server still has; nothing changed",
				    k->href);
			continue;
		}
		int n = r > 0 ? ks_cache_count_items(cache, k->id) : 0;
		if (r < 0 || n < 0) {
			r = r < 0 ? r : n;
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, label, r, "the listing of the "
				    "collections did not name %s, and asking it failed (%s); "
				    "nothing changed", k->href, strerror(-r));
			failed++;
			goto skip;
		}
		if (n > 0 && k->enabled && !R->o->allow_mass_delete &&
		    !(R->o->delete_href && strcmp(R->o->delete_href, k->href) == 0)) {
			/* A collection going away takes all its items with it: the mass-deletion
			 * guard stops that whatever the size. */
			_cleanup_free_ char *dir = NULL;
			(void) ks_engine_collection_dir(R->e, R->acc->name, k, &dir);
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, label, -EDQUOT,
				    "the server no longer has this collection (%s: deleted, or "
				    "moved?); its %d items are kept in '%s' and nothing was "
				    "deleted. If it was deleted on purpose, run `ksyncctl sync "
				    "--allow-mass-delete %s` to remove it here too (what was not "
				    "sent is kept under conflicts/)",
				    k->href, n, dir ? dir : k->name, R->acc->name);
			failed++;
			goto skip;
		}
		r = remove_collection_files(R, k);
		if (r >= 0)
			r = ks_cache_delete_collection(cache, k->id);
		if (r < 0) {
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, label, r,
				    "cannot remove the collection deleted on the server: %s",
				    strerror(-r));
			failed++;
			goto skip;
		}
		if (k->enabled)
			ks_run_fail(R, KS_SYNC_NOTICE, label, 0,
				    "the collection was deleted on the server; it was removed here "
				    "with its %d items", n);
skip:
		/* Not synced this run either way: it is no longer listed. */
		ks_collection_done(k);
		memmove(k, k + 1, (*n_known - i - 1) * sizeof(*k));
		(*n_known)--;
		i--;
	}
	for (size_t j = 0; j < n_remote; j++) {
		ks_collection *col = NULL;
		for (size_t i = 0; i < *n_known && !col; i++)
			if (strcmp((*known)[i].href, remote[j].href) == 0)
				col = &(*known)[i];
		if (col) {
			r = refresh_collection(col, &remote[j]);
			if (r > 0)
				r = ks_cache_save_collection(cache, col);
		} else {
			/* New collections follow `collections =`, except one just created here. */
			bool enable = R->acc->collections != KS_NEW_COLLECTIONS_NONE ||
				      (R->o->enable_href && strcmp(R->o->enable_href,
								   remote[j].href) == 0);
			ks_collection fresh = {
				.account = strdup(R->acc->name),
				.href = strdup(remote[j].href),
				.kind = remote[j].kind,
				.enabled = enable,
				.supports_sync = remote[j].supports_sync,
			};
			r = fresh.account && fresh.href ? 0 : -ENOMEM;
			if (r >= 0)
				r = assign_dir_name(R, &fresh, *known, *n_known);
			if (r >= 0)
				r = refresh_collection(&fresh, &remote[j]);
			if (r >= 0)
				r = config_rule(R, &fresh);
			if (r >= 0) {
				fresh.ruled = r != 2;
				fresh.enabled = r == 1 || (r == 2 && fresh.enabled);
				r = ks_cache_save_collection(cache, &fresh);
			}
			if (r >= 0) {
				ks_collection *nk = realloc(*known, (*n_known + 1) * sizeof(*nk));
				if (!nk)
					r = -ENOMEM;
				else {
					*known = nk;
					(*known)[(*n_known)++] = fresh;
				}
			}
			if (r < 0)
				ks_collection_done(&fresh);
		}
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, remote[j].href, r,
				    "cannot record the collection: %s", strerror(-r));
			failed++;
		}
	}
	return failed;
}

/* What include = and exclude = say of col: 1, 0, or 2 when they do not name it (-ENOMEM). */
static int config_rule(run *R, const ks_collection *col)
{
	_cleanup_free_ char *path = NULL;
	int rule;

	if (asprintf(&path, "%s/%s", col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" :
				     "calendars", col->name) < 0)
		return -ENOMEM;
	rule = ks_account_collection_rule(R->acc, path, col->displayname);
	return rule < 0 ? 2 : rule;
}

int ks_collections_follow_config(run *R, ks_collection *known, size_t n_known)
{
	for (size_t i = 0; i < n_known; i++) {
		ks_collection *col = &known[i];
		int r = config_rule(R, col);
		bool enabled = col->enabled;

		if (r < 0)
			return r;
		/* Named by a pattern: as it says. No longer named: as collections = says of a
		 * new collection. Never named: as found, enabled or disabled. */
		if (r != 2)
			enabled = r == 1;
		else if (col->ruled)
			enabled = R->acc->collections != KS_NEW_COLLECTIONS_NONE;
		if (enabled == col->enabled && col->ruled == (r != 2))
			continue;
		col->enabled = enabled;
		col->ruled = r != 2;
		r = ks_cache_save_collection(R->e->cache, col);
		if (r < 0)
			return r;
	}
	return 0;
}

static int assign_dir_name(run *R, ks_collection *col, ks_collection *known, size_t n_known)
{
	_cleanup_free_ char *base = NULL;
	int r = ks_vdir_collection_name(col->href, &base);

	if (r < 0)
		return r;
	for (unsigned i = 1; i < 1000; i++) {
		_cleanup_free_ char *name = NULL;
		if (i == 1)
			name = strdup(base);
		else if (asprintf(&name, "%s-%u", base, i) < 0)
			name = NULL;
		if (!name)
			return -ENOMEM;
		bool taken = false;
		for (size_t j = 0; j < n_known && !taken; j++)
			taken = known[j].kind == col->kind && known[j].name &&
				strcmp(known[j].name, name) == 0;
		if (!taken) {
			col->name = TAKE_PTR(name);
			return 0;
		}
	}
	return -EEXIST;
}

static int replace_str(char **dst, const char *src)
{
	if (ks_str_eq(*dst, src))
		return 0;
	char *n = src ? strdup(src) : NULL;
	if (src && !n)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 1;
}

/* Updates the cached collection from the server's listing; returns 1 when a row changed. */
static int refresh_collection(ks_collection *col, const ks_collection *remote)
{
	int changed = 0, r;

	r = replace_str(&col->displayname, remote->displayname);
	if (r < 0)
		return r;
	changed |= r;
	r = replace_str(&col->color, remote->color);
	if (r < 0)
		return r;
	changed |= r;
	r = replace_str(&col->description, remote->description);
	if (r < 0)
		return r;
	changed |= r;
	if (col->components != remote->components || col->readonly != remote->readonly ||
	    col->vcard4 != remote->vcard4) {
		col->components = remote->components;
		col->readonly = remote->readonly;
		col->vcard4 = remote->vcard4;
		changed = 1;
	}
	if (!col->supports_sync && remote->supports_sync && remote->sync_token) {
		col->supports_sync = true;
		changed = 1;
	}
	return changed;
}

/* Whether the collection at href is gone from the server (1), still there (0), or the server
 * did not say (a negative errno). A home listing that leaves a collection out may be wrong (a
 * server or a proxy glitch, a 207 naming nothing): only the collection's own 404 counts. */
static int collection_gone(run *R, const char *href)
{
	ks_remote_reply reply = {};
	int r = ks_remote_probe(R->remote, href, &reply);

	ks_remote_reply_done(&reply);
	if (r == -ENOENT)
		return 1;
	return r < 0 ? r : 0;
}

/* Moves the entry name of dirfd under conflicts/<account>/<label>/ (a free name there), where
 * the user finds what a removed collection held that ksync had not written. */
static int move_aside(run *R, const char *label, int dirfd, const char *name, char **ret_path)
{
	_cleanup_free_ char *rel = NULL;
	int fd, r;

	if (asprintf(&rel, "conflicts/%s/%s", R->acc->name, label) < 0)
		return -ENOMEM;
	r = ks_fs_open_beneath(R->e->data_dir, rel, true, &fd, NULL);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < 1000; i++) {
		_cleanup_free_ char *to = NULL;
		if ((i == 0 ? asprintf(&to, "%s", name) : asprintf(&to, "%s.%u", name, i)) < 0) {
			r = -ENOMEM;
			break;
		}
		if (faccessat(fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		r = ks_neg_errno(renameat(dirfd, name, fd, to));
		if (r >= 0)
			r = ks_fs_fsync_dir(fd);
		if (r >= 0 && asprintf(ret_path, "%s/%s/%s", R->e->data_dir, rel, to) < 0)
			r = -ENOMEM;
		break;
	}
	close(fd);
	return r;
}

static int cmp_local_row(const void *key, const void *elem)
{
	return strcmp(key, ((const ks_local_row *) elem)->filename);
}

/* Whether the file name of dirfd is the item file ksync wrote and nothing else: a row names
 * it, and its stat, or else its content, is what the row recorded. */
static int file_is_ksyncs(ks_cache *cache, ks_local_row *rows, size_t n, int dirfd,
			  const char *name)
{
	/* No rows is no array: bsearch() takes none (UBSan: a null argument). */
	ks_local_row *row = n ? bsearch(name, rows, n, sizeof(*rows), cmp_local_row) : NULL;
	_cleanup_free_ char *data = NULL;
	struct stat st;
	size_t len = 0;
	char hex[65];
	int r;

	if (!row || fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (ks_scan_stat_matches(&st, row->mtime_ns, row->ino, row->size))
		return 1;
	r = ks_cache_fill_local_row(cache, row);
	if (r >= 0)
		r = ks_fs_read_file(dirfd, name, KS_CARD_MAX, &data, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !row->hash)
		return 0;
	ks_sha256_hex(data, len, hex);
	return strcmp(hex, row->hash) == 0;
}

/* Removes the directory of a collection the server no longer has. Only what ksync wrote is
 * deleted: item files as their rows recorded them, and the displayname and color files.
 * Everything else (an edit not sent, a new item, a file that is no item) is moved under
 * conflicts/ first, recorded and reported, so that nothing of the user's is lost. */
static int remove_collection_files(run *R, const ks_collection *col)
{
	_cleanup_free_ char *parent = NULL;
	char label[KS_NAME_MAX + 16];
	ks_local_row *rows = NULL;
	size_t n_rows = 0;
	unsigned kept = 0;
	DIR *d;
	struct dirent *de;
	int pfd, fd, r;

	snprintf(label, sizeof(label), "%s/%s",
		 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", col->name);
	const char *base = col->name;
	if (col->dir) {
		/* A directory of ksync.conf's: the way to it is the user's, as when syncing. */
		const char *slash = strrchr(col->dir, '/');
		base = slash + 1;
		parent = slash == col->dir ? strdup("/") : strndup(col->dir,
								   (size_t) (slash - col->dir));
		if (!parent)
			return -ENOMEM;
		pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = pfd < 0 ? -errno : 0;
	} else if (asprintf(&parent, "%s/%s", col->kind == KS_COLLECTION_ADDRESSBOOK ?
				   "contacts" : "calendars", R->acc->name) < 0)
		return -ENOMEM;
	else
		/* Never through a symlink: the files deleted are ksync's own, nobody else's. */
		r = ks_fs_open_beneath(R->e->data_dir, parent, false, &pfd, NULL);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT ? 0 : -errno;
		close(pfd);
		return r;
	}
	r = ks_cache_list_local(R->e->cache, col->id, &rows, &n_rows);
	d = r >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		r = r < 0 ? r : -errno;
		close(fd);
		close(pfd);
		ks_local_rows_free(rows, n_rows);
		return r;
	}
	while (r >= 0 && (de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (strcmp(name, "displayname") == 0 || strcmp(name, "color") == 0 ||
		    ks_fs_is_temp_name(name)) {
			r = ks_neg_errno(unlinkat(dirfd(d), name, 0));
			continue;
		}
		r = file_is_ksyncs(R->e->cache, rows, n_rows, dirfd(d), name);
		if (r > 0) {
			r = ks_neg_errno(unlinkat(dirfd(d), name, 0));
			continue;
		}
		_cleanup_free_ char *kept_path = NULL;
		if (r >= 0)
			r = move_aside(R, label, dirfd(d), name, &kept_path);
		if (r >= 0)
			r = ks_cache_add_conflict(R->e->cache, R->acc->name, label, NULL, name,
						  kept_path, "server", "collection removed");
		if (r >= 0) {
			kept++;
			ks_run_fail(R, KS_SYNC_NOTICE, label, 0, "'%s' was not sent to the server "
				    "before the collection was removed there; it is kept in %s",
				    name,
				    kept_path);
		}
	}
	closedir(d);
	ks_local_rows_free(rows, n_rows);
	if (r >= 0)
		r = ks_neg_errno(unlinkat(pfd, base, AT_REMOVEDIR));
	if (r >= 0)
		r = ks_fs_fsync_dir(pfd);
	close(pfd);
	return r;
}

/* Whether dir is there and holds an item file (1), is there without one (0), or is not
 * there (-ENOENT); other errors of opening and reading it. */
static int dir_holds_items(const char *dir, const char *ext)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d))) {
		size_t n = strlen(de->d_name), e = strlen(ext);
		r = n > e && de->d_name[0] != '.' && strcmp(de->d_name + n - e, ext) == 0;
	}
	closedir(d);
	return r;
}

static bool dir_within(const char *a, const char *b)
{
	size_t n = strlen(b);
	return strncmp(a, b, n) == 0 && (a[n] == 0 || a[n] == '/');
}

/* Removes dir when it holds nothing but ksync's displayname, color and temp files. */
static void clear_meta_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool other = false;

	if (!d)
		return;
	while (!other && (de = readdir(d)))
		other = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
			strcmp(de->d_name, "displayname") != 0 && strcmp(de->d_name, "color") != 0 &&
			!ks_fs_is_temp_name(de->d_name);
	if (!other) {
		rewinddir(d);
		while ((de = readdir(d)))
			if (de->d_name[0] != '.' || ks_fs_is_temp_name(de->d_name))
				(void) unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	if (!other)
		(void) rmdir(dir);
}

/* Makes now the directory of col, whose files are in old: nothing to do when old is not
 * there (the user moved it, or it was never made); otherwise old is renamed to now, which
 * must not hold anything but what ksync writes itself, unless old holds nothing of the
 * collection's and now is there already (then now is taken as it is). Failures are
 * reported, and leave both where they are. */
static int move_dir(run *R, ks_collection *col, const char *path, const char *old,
		    const char *now)
{
	const char *ext = col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics";
	struct stat st;
	int items, rows, r;

	if (lstat(old, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, r, "cannot look at '%s': %s", old,
			    strerror(-r));
		return r;
	}
	bool old_dir = S_ISDIR(st.st_mode);
	items = old_dir ? dir_holds_items(old, ext) : 1;
	rows = ks_cache_count_items(R->e->cache, col->id);
	if (items < 0 || rows < 0) {
		r = items < 0 ? items : rows;
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, r, "cannot read '%s': %s", old,
			    strerror(-r));
		return r;
	}
	/* A directory there holding nothing but what ksync writes itself (a collection that
	 * moved before it had items leaves its displayname file behind) is as good as none. */
	if (lstat(now, &st) == 0 && S_ISDIR(st.st_mode))
		clear_meta_dir(now);
	if (!items && !rows && lstat(now, &st) == 0)
		return 0;	/* nothing of it where it was: the new place is taken as it is */
	_cleanup_free_ char *parent = strdup(now);
	if (!parent)
		return -ENOMEM;
	*strrchr(parent, '/') = 0;
	r = old_dir ? 0 : -ENOTDIR;
	if (r >= 0 && *parent)
		r = ks_fs_mkdir_p(parent);
	/* renameat2() refuses to replace what is there. */
	if (r >= 0)
		r = ks_neg_errno(renameat2(AT_FDCWD, old, AT_FDCWD, now, RENAME_NOREPLACE));
	if (r >= 0) {
		ks_run_fail(R, KS_SYNC_NOTICE, path, 0, "moved its directory from '%s' to '%s', as "
			    "ksync.conf now says", old, now);
		return 0;
	}
	if (r == -EEXIST || r == -ENOTEMPTY)
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, -EEXIST,
			    "ksync.conf now puts it in '%s', but its files are in '%s', and '%s' "
			    "holds files already; nothing was read, written or deleted. Put the "
			    "files together in one of them by hand, or give the old place back "
			    "in ksync.conf", now, old, now);
	else
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, r,
			    "ksync.conf now puts it in '%s', but its files are in '%s', and moving "
			    "them failed (%s); nothing was read, written or deleted. Move the "
			    "directory (mv '%s' '%s') and sync again, or give the old place back "
			    "in ksync.conf", now, old, strerror(-r), old, now);
	return -EEXIST;
}

int ks_collection_place(run *R, ks_collection *col)
{
	_cleanup_free_ char *path = NULL, *want = NULL, *old = NULL, *now = NULL;
	bool card = col->kind == KS_COLLECTION_ADDRESSBOOK;
	const char *data_dir = R->e->data_dir;
	int64_t other = 0;
	int r;

	if (asprintf(&path, "%s/%s", card ? "contacts" : "calendars", col->name) < 0)
		return -ENOMEM;
	r = ks_account_collection_dir(R->acc, path, &want);
	if (r < 0)
		return r;
	if (ks_str_eq(want, col->dir))
		return 0;
	if (want && (dir_within(want, data_dir) || dir_within(data_dir, want))) {
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, -EINVAL,
			    "ksync.conf puts it in '%s', which %s ksync's data directory '%s'; "
			    "give it a directory of its own", want,
			    dir_within(want, data_dir) ? "lies inside" : "holds", data_dir);
		return -EINVAL;
	}
	if (want) {
		r = ks_cache_find_collection_dir(R->e->cache, want, &other);
		if (r < 0)
			return r;
		if (r > 0 && other != col->id) {
			ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, -EEXIST,
				    "ksync.conf puts it in '%s', which is already the directory of "
				    "another collection; give it a directory of its own", want);
			return -EEXIST;
		}
	}
	r = ks_engine_collection_dir(R->e, R->acc->name, col, &old);
	if (r >= 0) {
		char *keep = col->dir;
		col->dir = want;
		r = ks_engine_collection_dir(R->e, R->acc->name, col, &now);
		col->dir = keep;
	}
	if (r < 0)
		return r;
	r = move_dir(R, col, path, old, now);
	if (r < 0)
		return r;
	free(col->dir);
	col->dir = TAKE_PTR(want);
	if (col->dir)
		ks_log(KS_LOG_INFO, "%s/%s: files in '%s'", R->acc->name, path, col->dir);
	r = ks_cache_save_collection(R->e->cache, col);
	if (r < 0 && r != -ENOMEM)
		ks_run_fail(R, KS_SYNC_COLLECTION_FAILED, path, r, "cannot write the cache: %s",
			    strerror(-r));
	return r;
}
