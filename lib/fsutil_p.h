/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Creates dir and its missing parents with mode 0700. Existing dirs are left as they are.
 * -ENOTDIR when a component is not a directory. */
int ks_fs_mkdir_p(const char *path);

/* Opens base/rel as a directory (O_RDONLY|O_DIRECTORY|O_CLOEXEC). base is followed as it is
 * (the user may have linked it elsewhere); every component of rel is opened with O_NOFOLLOW
 * below the one before, and created with mode 0700 when create is set. A component that is a
 * symlink gives -ELOOP (also a dangling one), one that is not a directory -ENOTDIR. On
 * failure, *reterr_at (if not NULL) is the length of the part of rel that names the component
 * that failed. */
int ks_fs_open_beneath(const char *base, const char *rel, bool create, int *ret_fd,
		       size_t *reterr_at);

/* Writes data to dirfd/name durably and atomically: a temp file (".ksync-name.tmp") opened
 * O_EXCL|O_NOFOLLOW with mode 0600, written, fdatasync'ed, renamed over name, and the
 * directory flushed. The temp file is unlinked on failure; a stale one from a crash is
 * replaced. Many files at once go through a ks_fs_batch, flushed together. */
int ks_fs_write_atomic(int dirfd, const char *name, const void *data, size_t len);

/* A batch of files staged as temp files and then renamed into place together, so that a batch
 * of many files costs one flush of the file system, not one per file. */
typedef struct ks_fs_batch ks_fs_batch;

int ks_fs_batch_new(int dirfd, ks_fs_batch **ret);
/* Writes ".name.tmp" (O_EXCL, 0600) with data; nothing is visible under name yet.
 * *ret_st (if not NULL) gets the file's stat, which stays true after the rename. */
struct stat;
int ks_fs_batch_add(ks_fs_batch *b, const char *name, const void *data, size_t len,
		    struct stat *ret_st);
/* Flushes every staged file to disk, renames each into place, then fsyncs the directory.
 * After it returns 0 every file is durable under its name. */
int ks_fs_batch_commit(ks_fs_batch *b);
/* Unlinks staged temp files not yet committed and frees b. Accepts NULL. */
ks_fs_batch *ks_fs_batch_free(ks_fs_batch *b);
size_t ks_fs_batch_count(const ks_fs_batch *b);

int ks_fs_fsync_dir(int dirfd);

/* Reads a whole regular file (O_NOFOLLOW) of at most max bytes. *ret is NUL-terminated and
 * owned by the caller. -EFBIG past max, -ELOOP for a symlink. */
int ks_fs_read_file(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len);

/* Writes a small metadata file (vdir displayname/color) only when its content differs,
 * so that readers keyed on its mtime see no change. Returns 1 when written, 0 when equal. */
int ks_fs_write_if_changed(int dirfd, const char *name, const char *content);

/* Whether name is one of ksync's temp files (".ksync-NAME.tmp"). */
bool ks_fs_is_temp_name(const char *name);
/* Removes ksync's temp files a crash may have left in dirfd, and no other program's.
 * Returns how many. */
int ks_fs_clean_temp(int dirfd);

/* Nanoseconds from CLOCK_MONOTONIC. */
uint64_t ks_now_ns(void);
