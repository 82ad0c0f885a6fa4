/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf_p.h"
#include "fsutil_p.h"
#include "log_p.h"
#include "macro.h"

int ks_fs_mkdir_p(const char *path)
{
	_cleanup_free_ char *p = strdup(path);
	struct stat st;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != 0)
			continue;
		char c = *s;
		*s = 0;
		if (mkdir(p, 0700) < 0) {
			if (errno != EEXIST)
				return -errno;
			if (stat(p, &st) < 0)
				return -errno;
			if (!S_ISDIR(st.st_mode))
				return -ENOTDIR;
		}
		*s = c;
		if (c == 0 || s[1] == 0)
			break;
	}
	return 0;
}

/* Opens name below parentfd without following a symlink, so that nothing is ever written
 * through a link the user (or anyone) put where a directory of ksync's was. */
static int open_subdir(int parentfd, const char *name, bool create)
{
	struct stat st;
	int fd;

	if (create && mkdirat(parentfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno != ENOTDIR && errno != ELOOP)
		return -errno;
	/* O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a symlink: tell the two apart. */
	if (fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
}

int ks_fs_open_beneath(const char *base, const char *rel, bool create, int *ret_fd,
		       size_t *reterr_at)
{
	_cleanup_free_ char *p = strdup(rel);
	int fd, r;

	if (!p)
		return -ENOMEM;
	if (reterr_at)
		*reterr_at = 0;
	if (create) {
		r = ks_fs_mkdir_p(base);
		if (r < 0)
			return r;
	}
	fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (char *s = p, *save = NULL, *tok; (tok = strtok_r(s, "/", &save)); s = NULL) {
		r = open_subdir(fd, tok, create);
		close(fd);
		if (r < 0) {
			if (reterr_at)
				*reterr_at = (size_t) (tok - p) + strlen(tok);
			return r;
		}
		fd = r;
	}
	*ret_fd = fd;
	return 0;
}

/* Temp files carry a prefix of ksync's own, so that cleaning up after a crash never takes
 * another program's temp file (an editor's ".name.tmp") in the same directory. */
#define TEMP_PREFIX ".ksync-"
#define TEMP_SUFFIX ".tmp"

static int temp_name(const char *name, char *out, size_t n)
{
	int k = snprintf(out, n, TEMP_PREFIX "%s" TEMP_SUFFIX, name);
	return k < 0 || (size_t) k >= n ? -ENAMETOOLONG : 0;
}

bool ks_fs_is_temp_name(const char *name)
{
	size_t l = strlen(name), p = strlen(TEMP_PREFIX), x = strlen(TEMP_SUFFIX);

	return l > p + x && strncmp(name, TEMP_PREFIX, p) == 0 &&
	       strcmp(name + l - x, TEMP_SUFFIX) == 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		len -= (size_t) k;
	}
	return 0;
}

static int write_temp(int dirfd, const char *tmp, const void *data, size_t len, int *ret_fd)
{
	int fd, r;

	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		/* A leftover from a crash: nobody else writes here (one writer per account). */
		(void) unlinkat(dirfd, tmp, 0);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;
	r = write_all(fd, data, len);
	if (r < 0) {
		close(fd);
		(void) unlinkat(dirfd, tmp, 0);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int ks_fs_write_atomic(int dirfd, const char *name, const void *data, size_t len)
{
	char tmp[512];
	int fd, r;

	r = temp_name(name, tmp, sizeof(tmp));
	if (r < 0)
		return r;
	r = write_temp(dirfd, tmp, data, len, &fd);
	if (r < 0)
		return r;
	if (fdatasync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	/* Renaming before the data is on disk could leave an empty file under the real name
	 * after a power loss. */
	if (r == 0)
		r = ks_neg_errno(renameat(dirfd, tmp, dirfd, name));
	if (r < 0) {
		(void) unlinkat(dirfd, tmp, 0);
		return r;
	}
	r = ks_fs_fsync_dir(dirfd);
	if (r == 0)
		ks_step("file");
	return r;
}

int ks_fs_fsync_dir(int dirfd)
{
	return ks_neg_errno(fsync(dirfd));
}

typedef struct batch_entry {
	char *name;
	char *tmp;
	int fd;
} batch_entry;

struct ks_fs_batch {
	int dirfd;
	batch_entry *e;
	size_t n, cap;
};

int ks_fs_batch_new(int dirfd, ks_fs_batch **ret)
{
	ks_fs_batch *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->dirfd = dirfd;
	*ret = b;
	return 0;
}

size_t ks_fs_batch_count(const ks_fs_batch *b)
{
	return b ? b->n : 0;
}

int ks_fs_batch_add(ks_fs_batch *b, const char *name, const void *data, size_t len,
		    struct stat *ret_st)
{
	char tmp[512];
	int fd, r;

	r = temp_name(name, tmp, sizeof(tmp));
	if (r < 0)
		return r;
	if (b->n == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 32;
		batch_entry *ne = realloc(b->e, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		b->e = ne;
		b->cap = ncap;
	}
	batch_entry *e = &b->e[b->n];
	e->name = strdup(name);
	e->tmp = strdup(tmp);
	if (!e->name || !e->tmp) {
		free(e->name);
		free(e->tmp);
		return -ENOMEM;
	}
	r = write_temp(b->dirfd, tmp, data, len, &fd);
	if (r < 0) {
		free(e->name);
		free(e->tmp);
		return r;
	}
	if (ret_st && fstat(fd, ret_st) < 0) {
		r = -errno;
		close(fd);
		(void) unlinkat(b->dirfd, tmp, 0);
		free(e->name);
		free(e->tmp);
		return r;
	}
	e->fd = fd;
	b->n++;
	return 0;
}

int ks_fs_batch_commit(ks_fs_batch *b)
{
	int r = 0;

	/* Every file's data must be on disk before any rename: a rename that reaches the disk
	 * first would leave an empty item under its real name after a power loss. One syncfs
	 * costs one journal commit where a flush per file costs one each; a small batch does
	 * not pay for flushing whatever else the file system holds. */
	bool whole_fs = b->n >= 8 && syncfs(b->dirfd) == 0;
	for (size_t i = 0; i < b->n; i++) {
		if (b->e[i].fd < 0)
			continue;
		if (r == 0 && !whole_fs && fdatasync(b->e[i].fd) < 0)
			r = -errno;
		if (close(b->e[i].fd) < 0 && r == 0)
			r = -errno;
		b->e[i].fd = -1;
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < b->n; i++) {
		r = ks_neg_errno(renameat(b->dirfd, b->e[i].tmp, b->dirfd, b->e[i].name));
		if (r < 0)
			break;
		free(b->e[i].tmp);
		b->e[i].tmp = NULL;
	}
	if (r == 0)
		r = ks_fs_fsync_dir(b->dirfd);
	if (r == 0)
		ks_step("file batch");
	return r;
}

ks_fs_batch *ks_fs_batch_free(ks_fs_batch *b)
{
	if (!b)
		return NULL;
	for (size_t i = 0; i < b->n; i++) {
		if (b->e[i].fd >= 0)
			close(b->e[i].fd);
		if (b->e[i].tmp)
			(void) unlinkat(b->dirfd, b->e[i].tmp, 0);
		free(b->e[i].tmp);
		free(b->e[i].name);
	}
	free(b->e);
	free(b);
	return NULL;
}

int ks_fs_read_file(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len)
{
	ks_buf b = { .max = max };
	struct stat st;
	char chunk[65536];
	int fd, r = 0;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EBADF;
		goto out;
	}
	if ((uint64_t) st.st_size > max) {
		r = -EFBIG;
		goto out;
	}
	for (;;) {
		ssize_t k = read(fd, chunk, sizeof(chunk));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		r = ks_buf_append(&b, chunk, (size_t) k);
		if (r < 0)
			goto out;
	}
	if (ret_len)
		*ret_len = b.len;
	*ret = ks_buf_steal(&b);
	if (!*ret)
		r = -ENOMEM;
out:
	close(fd);
	ks_buf_done(&b);
	return r;
}

int ks_fs_write_if_changed(int dirfd, const char *name, const char *content)
{
	_cleanup_free_ char *old = NULL;
	int r;

	r = ks_fs_read_file(dirfd, name, 64 * 1024, &old, NULL);
	if (r >= 0 && strcmp(old, content) == 0)
		return 0;
	r = ks_fs_write_atomic(dirfd, name, content, strlen(content));
	return r < 0 ? r : 1;
}

int ks_fs_clean_temp(int dirfd)
{
	int fd = dup(dirfd), n = 0;
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
		if (!ks_fs_is_temp_name(de->d_name))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

uint64_t ks_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}
