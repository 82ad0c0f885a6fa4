/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fsutil_p.h"
#include "hash_p.h"
#include "limits.h"
#include "macro.h"
#include "scan_p.h"

bool ks_scan_is_item_name(const char *name, const char *ext)
{
	size_t n = strlen(name), e = strlen(ext);

	if (name[0] == '.' || n <= e)
		return false;
	return strcasecmp(name + n - e, ext) == 0;
}

bool ks_scan_stat_matches(const struct stat *st, int64_t mtime_ns, int64_t ino, int64_t size)
{
	int64_t m = (int64_t) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	return m == mtime_ns && (int64_t) st->st_ino == ino && (int64_t) st->st_size == size;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static int list_names(int dirfd, const char *ext, char ***ret, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0, cap = 0;
	int fd = dup(dirfd), r = 0;
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		if (!ks_scan_is_item_name(de->d_name, ext))
			continue;
		if (n >= KS_COLLECTION_MAX_ITEMS) {
			r = -E2BIG;
			break;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			char **nv = realloc(v, ncap * sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[n] = strdup(de->d_name);
		if (!v[n]) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_name);
	*ret = v;
	*ret_n = n;
	return 0;
}

static ks_local_change *add_change(ks_scan_result *res, size_t *cap)
{
	if (res->n_changes == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		ks_local_change *nc = realloc(res->changes, ncap * sizeof(*nc));
		if (!nc)
			return NULL;
		res->changes = nc;
		*cap = ncap;
	}
	ks_local_change *c = &res->changes[res->n_changes++];
	memset(c, 0, sizeof(*c));
	return c;
}

/* Reads the file name into c (data, hash, stat). Returns -ENOMEM, or another negative errno
 * for a file that cannot be read as an item. */
static int read_item(int dirfd, const char *name, ks_local_change *c)
{
	int r;

	/* Symlinks, FIFOs and devices are never opened: no content from elsewhere is sent,
	 * and no open blocks. ks_fs_read_file() checks again on the file it opens. */
	if (fstatat(dirfd, name, &c->st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(c->st.st_mode))
		return -EBADF;
	r = ks_fs_read_file(dirfd, name, KS_CARD_MAX, &c->data, &c->len);
	if (r < 0)
		return r;
	ks_sha256_hex(c->data, c->len, c->hash);
	return 0;
}

static char *dup_or_null(const char *s, int *r)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*r = -ENOMEM;
	return d;
}

int ks_scan_collection(ks_cache *cache, int64_t coll, int dirfd, const char *ext, bool read_only,
		       ks_scan_result *ret)
{
	ks_scan_result res = {};
	ks_local_row *rows = NULL;
	char **names = NULL;
	size_t n_rows = 0, n_names = 0, cap = 0, i = 0, j = 0;
	bool in_tx = false;
	int r;

	r = ks_cache_list_local(cache, coll, &rows, &n_rows);
	if (r < 0)
		return r;
	r = list_names(dirfd, ext, &names, &n_names);
	if (r < 0)
		goto out;
	res.n_rows = n_rows;
	/* Both lists are sorted by strcmp (SQLite's BINARY collation): walk them together. */
	while (r >= 0 && (i < n_names || j < n_rows)) {
		int c = i >= n_names ? 1 : j >= n_rows ? -1 : strcmp(names[i], rows[j].filename);
		ks_local_change *ch;

		if (c >= 0) {
			/* A row to report or compare by content: its details now. */
			const ks_local_row *row = &rows[j];
			struct stat st;
			if (c == 0 && fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISREG(st.st_mode) &&
			    ks_scan_stat_matches(&st, row->mtime_ns, row->ino, row->size)) {
				i++;
				j++;
				continue;
			}
			r = ks_cache_fill_local_row(cache, &rows[j]);
			if (r < 0)
				break;
		}
		if (c > 0) {
			ch = add_change(&res, &cap);
			if (!ch) {
				r = -ENOMEM;
				break;
			}
			ch->kind = KS_LOCAL_DELETED;
			ch->filename = dup_or_null(rows[j].filename, &r);
			ch->id = rows[j].id;
			ch->href = dup_or_null(rows[j].href, &r);
			ch->etag = dup_or_null(rows[j].etag, &r);
			ch->uid = dup_or_null(rows[j].uid, &r);
			j++;
			continue;
		}
		ch = add_change(&res, &cap);
		if (!ch) {
			r = -ENOMEM;
			break;
		}
		ch->filename = dup_or_null(names[i], &r);
		int k = read_item(dirfd, names[i], ch);
		if (k == -ENOMEM) {
			r = k;
			break;
		}
		if (k == -ENOENT) {
			/* Gone between readdir and open: a deletion if it was known. */
			if (c == 0) {
				ch->kind = KS_LOCAL_DELETED;
				ch->id = rows[j].id;
				ch->href = dup_or_null(rows[j].href, &r);
				ch->etag = dup_or_null(rows[j].etag, &r);
				ch->uid = dup_or_null(rows[j].uid, &r);
			} else {
				free(ch->filename);
				res.n_changes--;
			}
		} else if (k < 0) {
			ch->kind = KS_LOCAL_IGNORED;
			ch->error = k;
			free(ch->data);
			ch->data = NULL;
		} else if (c == 0 && rows[j].hash && strcmp(rows[j].hash, ch->hash) == 0) {
			/* Touched, not changed: remember the new stat so that the next scan does
			 * not read it again. */
			if (read_only) {
				free(ch->filename);
				free(ch->data);
				res.n_changes--;
				res.touched++;
				i++;
				j++;
				continue;
			}
			if (!in_tx) {
				r = ks_cache_begin(cache);
				if (r < 0)
					break;
				in_tx = true;
			}
			r = ks_cache_set_item_stat(cache, rows[j].id,
						   (int64_t) ch->st.st_mtim.tv_sec * 1000000000 +
							   ch->st.st_mtim.tv_nsec,
						   (int64_t) ch->st.st_ino, (int64_t) ch->st.st_size);
			free(ch->filename);
			free(ch->data);
			res.n_changes--;
			res.touched++;
		} else
			ch->kind = c == 0 ? KS_LOCAL_MODIFIED : KS_LOCAL_NEW;
		if (c == 0 && ch->kind != KS_LOCAL_DELETED && res.n_changes &&
		    &res.changes[res.n_changes - 1] == ch) {
			ch->id = rows[j].id;
			ch->href = dup_or_null(rows[j].href, &r);
			ch->etag = dup_or_null(rows[j].etag, &r);
			ch->uid = dup_or_null(rows[j].uid, &r);
		}
		i++;
		if (c == 0)
			j++;
	}
	if (in_tx) {
		if (r >= 0)
			r = ks_cache_commit(cache);
		if (r < 0)
			ks_cache_rollback(cache);
	}
out:
	for (size_t k = 0; k < n_names; k++)
		free(names[k]);
	free(names);
	ks_local_rows_free(rows, n_rows);
	if (r < 0) {
		ks_scan_result_done(&res);
		return r;
	}
	*ret = res;
	return 0;
}

void ks_scan_result_done(ks_scan_result *r)
{
	for (size_t i = 0; r->changes && i < r->n_changes; i++) {
		free(r->changes[i].filename);
		free(r->changes[i].href);
		free(r->changes[i].etag);
		free(r->changes[i].uid);
		free(r->changes[i].data);
	}
	free(r->changes);
	*r = (ks_scan_result) {};
}
