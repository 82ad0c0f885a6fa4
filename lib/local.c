/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "macro.h"
#include "text_p.h"

static int find_kept(int dirfd, const char *base, size_t base_len, const char *side,
		     const char *ext, const char *data, size_t len, char **ret);

/* Whether the file of a cached item was changed locally since ksync wrote or last saw it:
 * KS_PLAN_FILE_EDITED when it differs, KS_PLAN_FILE_OTHER when it is no regular file (a
 * symlink, a FIFO), KS_PLAN_FILE_AS_RECORDED, KS_PLAN_FILE_MISSING. */
int ks_local_file_state(ks_local *l, const ks_cache_item *it)
{
	struct stat st;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	char hex[65];

	if (fstatat(l->dirfd, it->filename, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? KS_PLAN_FILE_MISSING : -errno;
	if (!S_ISREG(st.st_mode))
		return KS_PLAN_FILE_OTHER;
	if (ks_scan_stat_matches(&st, it->mtime_ns, it->ino, it->size))
		return KS_PLAN_FILE_AS_RECORDED;
	int r = ks_fs_read_file(l->dirfd, it->filename, KS_CARD_MAX, &data, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return KS_PLAN_FILE_EDITED;
	ks_sha256_hex(data, len, hex);
	return it->hash && strcmp(hex, it->hash) == 0 ? KS_PLAN_FILE_AS_RECORDED
						       : KS_PLAN_FILE_EDITED;
}

int64_t ks_stat_mtime_ns(const struct stat *st)
{
	return (int64_t) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Writes data over the item file name, unless the file changed since expected was taken (the
 * user is editing it: the next run sees that). Returns 1 when written, 0 when left alone. */
int ks_local_replace_file(ks_local *l, const char *name, const struct stat *expected,
			  const char *data, size_t len, struct stat *ret_st)
{
	struct stat st;
	int r;

	if (expected) {
		if (fstatat(l->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				return -errno;
		} else if (!ks_scan_stat_matches(&st, ks_stat_mtime_ns(expected),
						 (int64_t) expected->st_ino,
						 (int64_t) expected->st_size))
			return 0;
	}
	r = ks_fs_write_atomic(l->dirfd, name, data, len);
	if (r >= 0 && ret_st && fstatat(l->dirfd, name, ret_st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	return r < 0 ? r : 1;
}

/* A copy of data kept earlier under dirfd as "<base>.<time>.<side><ext>": a run cut off after
 * keeping it meets the same conflict again and must not keep a second copy. */
static int find_kept(int dirfd, const char *base, size_t base_len, const char *side,
		     const char *ext, const char *data, size_t len, char **ret)
{
	int fd = dup(dirfd);
	DIR *d;
	struct dirent *de;
	char tail[64];

	snprintf(tail, sizeof(tail), ".%s%s", side, ext);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int r = 0;
	while (r == 0 && (de = readdir(d))) {
		size_t n = strlen(de->d_name), t = strlen(tail);
		if (n <= base_len + t || strncmp(de->d_name, base, base_len) != 0 ||
		    de->d_name[base_len] != '.' || strcmp(de->d_name + n - t, tail) != 0)
			continue;
		_cleanup_free_ char *cur = NULL;
		size_t cl = 0;
		if (ks_fs_read_file(dirfd, de->d_name, KS_CARD_MAX, &cur, &cl) < 0)
			continue;
		if (cl == len && memcmp(cur, data, len) == 0) {
			*ret = strdup(de->d_name);
			r = *ret ? 1 : -ENOMEM;
		}
	}
	closedir(d);
	return r;
}

/* Keeps a version that lost a conflict under conflicts/<account>/<collection>/ and records
 * it: the copy first, then its row, both before the losing side is overwritten anywhere, so
 * that a crash at any point leaves the version either where it was or kept (and a repeated
 * conflict reuses the copy). *ret_path (optional) gets where. */
int ks_local_keep_copy(ks_local *l, const char *filename, const char *uid, const char *data,
		       size_t len, const char *side, const char *winner, const char *summary,
		       char **ret_path, char **reterr_msg)
{
	_cleanup_free_ char *dir = NULL, *name = NULL, *path = NULL;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int fd, r = 0;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (asprintf(&dir, "%s/conflicts/%s/%s", l->e->data_dir, l->account, l->label) < 0)
		return -ENOMEM;
	size_t base = strlen(filename);
	if (base > strlen(l->ext))
		base -= strlen(l->ext);
	/* The user's data goes nowhere a symlink in ksync's tree points to. */
	r = ks_local_open_conflicts(l, NULL, true, &fd, NULL);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot keep the losing side of a conflict in "
				    "'%s': %s; nothing was merged", dir,
				    r == -ELOOP ? "a symbolic link is on the way, which ksync does "
				    "not follow" : strerror(-r));
	r = find_kept(fd, filename, base, side, l->ext, data, len, &name);
	for (unsigned i = 0; r == 0 && i < 100; i++) {
		free(name);
		name = NULL;
		if ((i == 0 ? asprintf(&name, "%.*s.%s.%s%s", (int) base, filename, stamp, side,
				       l->ext)
			    : asprintf(&name, "%.*s.%s.%s-%u%s", (int) base, filename, stamp, side,
				       i, l->ext)) < 0) {
			r = -ENOMEM;
			break;
		}
		if (faccessat(fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		r = ks_fs_write_atomic(fd, name, data, len);
		if (r >= 0)
			r = 1;
	}
	close(fd);
	if (r < 0)
		return r;
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	r = ks_cache_add_conflict(l->e->cache, l->account, l->label, uid, filename, path,
				  winner, summary);
	if (r < 0)
		return r;
	if (ret_path)
		*ret_path = TAKE_PTR(path);
	return 0;
}

/* Records that the server now holds data at href with etag (NULL: unknown, fetched later)
 * and that the file name holds it too, and clears the intent: one transaction. */
int ks_local_record_item(ks_local *l, const char *href, const char *etag, const char *filename,
			 const char *data, size_t len, const struct stat *st)
{
	ks_item_info info = {};
	char hex[65];
	int r;

	r = ks_item_parse_info(data, len, &info, NULL);
	if (r == -ENOMEM)
		return r;
	ks_sha256_hex(data, len, hex);
	ks_item_row row = {
		.href = href, .etag = etag, .filename = filename, .data = data, .len = len,
		.info = r >= 0 ? &info : NULL, .hash = hex, .mtime_ns = ks_stat_mtime_ns(st),
		.ino = (int64_t) st->st_ino, .size = (int64_t) st->st_size,
	};
	r = ks_cache_begin(l->e->cache);
	if (r >= 0) {
		r = ks_cache_put_item(l->e->cache, l->col->id, &row);
		if (r >= 0)
			r = ks_cache_clear_intent(l->e->cache, l->col->id, href);
		if (r >= 0)
			r = ks_cache_commit(l->e->cache);
		if (r < 0)
			ks_cache_rollback(l->e->cache);
	}
	ks_item_info_done(&info);
	return r;
}

int ks_local_forget_item(ks_local *l, const char *href)
{
	int r = ks_cache_begin(l->e->cache);

	if (r < 0)
		return r;
	r = ks_cache_delete_item(l->e->cache, l->col->id, href);
	if (r >= 0)
		r = ks_cache_clear_intent(l->e->cache, l->col->id, href);
	if (r >= 0)
		r = ks_cache_commit(l->e->cache);
	if (r < 0)
		ks_cache_rollback(l->e->cache);
	return r;
}

bool ks_local_wants_vcard4(const ks_local *l, const char *data, size_t len)
{
	return l->col->vcard4 && memmem(data, KS_MIN(len, (size_t) 512), "VERSION:4.0", 11);
}

int ks_local_remove_file(ks_local *l, const char *name)
{
	if (unlinkat(l->dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return ks_fs_fsync_dir(l->dirfd);
}

int ks_local_open_conflicts(ks_local *l, const char *sub, bool create, int *ret_fd,
			    char **reterr_path)
{
	_cleanup_free_ char *rel = NULL;
	size_t at = 0;
	int r;

	if (asprintf(&rel, "conflicts/%s/%s%s%s", l->account, l->label, sub ? "/" : "",
		     sub ? sub : "") < 0)
		return -ENOMEM;
	r = ks_fs_open_beneath(l->e->data_dir, rel, create, ret_fd, &at);
	if (r < 0 && reterr_path &&
	    asprintf(reterr_path, "%s%s%.*s", l->e->data_dir, at ? "/" : "", (int) at, rel) < 0)
		*reterr_path = NULL;
	return r;
}

int ks_local_init(ks_local *l, ks_engine *e, const char *account, ks_collection *col)
{
	bool card = col->kind == KS_COLLECTION_ADDRESSBOOK;

	*l = (ks_local) {
		.e = e, .account = account, .col = col, .ext = card ? ".vcf" : ".ics", .dirfd = -1,
	};
	snprintf(l->label, sizeof(l->label), "%s/%s", card ? "contacts" : "calendars", col->name);
	return ks_engine_collection_dir(e, account, col, &l->dir);
}

int ks_local_open(ks_local *l, bool create, char **reterr_path)
{
	return ks_engine_open_collection_dir(l->e, l->account, l->col, create, &l->dirfd,
					     reterr_path);
}

void ks_local_done(ks_local *l)
{
	if (l->dirfd >= 0)
		close(l->dirfd);
	free(l->dir);
	*l = (ks_local) { .dirfd = -1 };
}

/* Waits (at most max_ms) until the coarse clock the kernel stamps files with is past
 * mtime_ns. Whether it is. */
static bool clock_past(int64_t mtime_ns, unsigned max_ms)
{
	for (unsigned waited = 0;; waited++) {
		struct timespec now;
		if (clock_gettime(CLOCK_REALTIME_COARSE, &now) < 0)
			return false;
		if ((int64_t) now.tv_sec * 1000000000 + now.tv_nsec > mtime_ns)
			return true;
		if (waited >= max_ms)
			return false;
		(void) nanosleep(&(struct timespec) { .tv_nsec = 1000000 }, NULL);
	}
}

int ks_local_settle(ks_local *l)
{
	ks_cache *cache = l->e->cache;
	ks_local_row *rows = NULL;
	size_t n = 0;
	bool in_tx = false;
	int r;

	if (ks_cache_take_unsettled(cache) == 0)
		return 0;
	r = ks_cache_list_unsettled(cache, l->col->id, &rows, &n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_free_ char *data = NULL;
		struct stat before, after;
		size_t len = 0;
		char hex[65];
		if (fstatat(l->dirfd, rows[i].filename, &before, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(before.st_mode) || !clock_past(ks_stat_mtime_ns(&before), 50))
			continue;	/* the next scan looks at it */
		/* Read once the tick is over: a write since gave it another mtime. */
		r = ks_fs_read_file(l->dirfd, rows[i].filename, KS_CARD_MAX, &data, &len);
		if (r == -ENOMEM)
			break;
		r = 0;
		if (!data || fstatat(l->dirfd, rows[i].filename, &after, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !ks_scan_stat_matches(&after, ks_stat_mtime_ns(&before),
					  (int64_t) before.st_ino, (int64_t) before.st_size))
			continue;
		ks_sha256_hex(data, len, hex);
		if (strcmp(hex, rows[i].hash) != 0)
			continue;	/* edited: the next scan sends it */
		if (!in_tx) {
			r = ks_cache_begin(cache);
			in_tx = r >= 0;
		}
		if (r >= 0)
			r = ks_cache_set_item_stat(cache, rows[i].id, ks_stat_mtime_ns(&before),
						   (int64_t) before.st_ino, (int64_t) before.st_size);
	}
	if (in_tx && r >= 0)
		r = ks_cache_commit(cache);
	else if (in_tx)
		ks_cache_rollback(cache);
	ks_local_rows_free(rows, n);
	return r;
}

