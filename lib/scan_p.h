/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cache_p.h"

/* The local side of a collection: which item files were created, modified or deleted since
 * ksync last wrote or saw them. Only regular files named *.vcf (address books) or *.ics
 * (calendars) that do not start with '.' are items; editors' temp and backup files
 * ("*.tmp", "*~", ".#*", "*.swp", names without the extension) are not. */

typedef enum ks_local_kind {
	KS_LOCAL_NEW,		/* a file with no row */
	KS_LOCAL_MODIFIED,	/* content differs from what ksync wrote or saw */
	KS_LOCAL_DELETED,	/* a row whose file is gone */
	KS_LOCAL_IGNORED,	/* an item name that is not a regular file (symlink, FIFO...) */
	KS_LOCAL_MOVED,		/* a deleted row whose item reappeared under another name */
	_KS_LOCAL_MAX,
	_KS_LOCAL_INVALID = -22,
} ks_local_kind;

typedef struct ks_local_change {
	ks_local_kind kind;
	char *filename;
	int64_t id;		/* row id, 0 for NEW */
	char *href;		/* the row's href, NULL for NEW */
	char *etag;		/* the row's etag */
	char *uid;		/* the row's UID */
	char *data;		/* content now on disk (NEW, MODIFIED), NUL-terminated */
	size_t len;
	char hash[65];		/* sha256 of data */
	struct stat st;		/* stat of the file as read (IGNORED: lstat, if it worked) */
	int error;		/* IGNORED: why it could not be read, as a negative errno */
} ks_local_change;

typedef struct ks_scan_result {
	ks_local_change *changes;
	size_t n_changes;
	size_t n_rows;		/* items the cache knew for this collection */
	unsigned touched;	/* files whose stat changed but not their content */
} ks_scan_result;

/* Compares the directory dirfd with the cache rows of coll. Files whose stat changed but
 * whose content did not get their new stat recorded in the cache, unless read_only (a
 * status query that must not wait for the writer). ext is ".vcf" or ".ics".
 * Reading a file fails the scan only for -ENOMEM; other read errors make the file IGNORED.
 * *ret is freed with ks_scan_result_done(). */
int ks_scan_collection(ks_cache *cache, int64_t coll, int dirfd, const char *ext, bool read_only,
		       ks_scan_result *ret);
void ks_scan_result_done(ks_scan_result *r);

/* Whether a directory entry name is an item file of a collection with that extension. */
bool ks_scan_is_item_name(const char *name, const char *ext);
/* Whether st matches the stat recorded in the cache row (mtime_ns, inode, size). */
bool ks_scan_stat_matches(const struct stat *st, int64_t mtime_ns, int64_t ino, int64_t size);
