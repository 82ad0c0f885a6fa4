/* SPDX-License-Identifier: MIT */
#pragma once

#include "cache_p.h"
#include "ksync.h"

/* What an engine holds: the data directory and its cache connection. */
struct ks_engine {
	char *data_dir;
	ks_cache *cache;
};

/* The directory of a collection: <data_dir>/<contacts|calendars>/<account>/<name>.
 * Owned by the caller. */
int ks_engine_collection_dir(const ks_engine *e, const char *account, const ks_collection *col,
			     char **ret);
/* Opens the directory of a collection without following a symbolic link anywhere below the
 * data directory (-ELOOP), creating what is missing with create. On failure, *reterr_path (if
 * not NULL) names the directory that failed. *ret_fd is the caller's to close. */
int ks_engine_open_collection_dir(const ks_engine *e, const char *account,
				  const ks_collection *col, bool create, int *ret_fd,
				  char **reterr_path);
/* Takes the account's lock (one writer per account: syncs, merges of duplicates), waiting
 * for it with wait. *ret_fd holds it until closed. -EBUSY when another process holds it and
 * wait is false (*reterr_msg names the holder's pid); -ELOOP when a symbolic link is on the
 * way. Every failure but -ENOMEM leaves a message naming the lock file in *reterr_msg (if not
 * NULL). */
int ks_engine_lock_account(const ks_engine *e, const char *account, bool wait, int *ret_fd,
			   char **reterr_msg);
