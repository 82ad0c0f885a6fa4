/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "item_p.h"

/* The SQLite cache: accounts, collections, items (server bytes = merge base). SQLITE_* codes
 * are translated here: SQLITE_BUSY/LOCKED → -EBUSY, SQLITE_CORRUPT/NOTADB → -EUCLEAN,
 * SQLITE_FULL → -ENOSPC, SQLITE_CANTOPEN → -EACCES, SQLITE_NOMEM → -ENOMEM, other → -EIO. */

#define KS_CACHE_SCHEMA_VERSION 8

typedef struct ks_cache ks_cache;

typedef enum ks_collection_kind {
	KS_COLLECTION_ADDRESSBOOK,
	KS_COLLECTION_CALENDAR,
	_KS_COLLECTION_MAX,
	_KS_COLLECTION_INVALID = -22,
} ks_collection_kind;

typedef struct ks_cache_account {
	char *principal;
	char *calendar_home;
	char *addressbook_home;
	int64_t discovered_at;	/* unix seconds */
	int64_t listed_at;	/* when the home sets were last listed, unix seconds */
	int home_tokens;	/* whether the last listing that asked for them carried the token
				 * (or ctag) of every enabled collection: 1, -1 not, 0 not known */
} ks_cache_account;

typedef struct ks_collection {
	int64_t id;
	char *account;
	char *href;		/* canonical (ks_href_normalize) */
	ks_collection_kind kind;
	char *name;		/* directory name under contacts/<account>/ or calendars/<account>/ */
	char *displayname;
	char *color;		/* #RRGGBB or NULL */
	char *description;
	unsigned components;	/* KS_COMP_* */
	bool readonly;
	bool supports_sync;
	bool enabled;
	bool ruled;		/* enabled as include = or exclude = of ksync.conf said */
	bool vcard4;		/* an address book's supported-address-data offers vCard 4.0 */
	char *sync_token;	/* token of the last state applied locally */
	char *ctag;
	/* The mass-deletion guard's window: when it started (unix seconds), the items then (-1:
	 * none started yet) and the items deleted on either side since. */
	int64_t guard_at;
	int64_t guard_base;
	int64_t guard_deleted;
	int64_t synced_at;	/* when a sync of it last completed (unix seconds, 0: never) */
	char *dir;		/* its directory when ksync.conf places it elsewhere (absolute),
				 * NULL for <data_dir>/<contacts|calendars>/<account>/<name> */
} ks_collection;

typedef struct ks_cache_item {
	int64_t id;
	char *href;
	char *etag;
	char *uid;
	char *filename;
	char *hash;		/* sha256 of the file as ksync wrote or last saw it */
	int64_t mtime_ns;	/* its stat then */
	int64_t ino;
	int64_t size;
} ks_cache_item;

/* Opens (creating, migrating forward) the database at path: WAL, synchronous=FULL.
 * -EUCLEAN for a corrupt file, -EPROTO for a schema newer than this build knows. */
int ks_cache_open(const char *path, ks_cache **ret);
ks_cache *ks_cache_free(ks_cache *c);
/* Reads every page once (PRAGMA quick_check; some 3 ms per thousand items). A file damaged in
 * the middle opens fine and fails only when a damaged page is read, so this is asked when a
 * run met -EUCLEAN. 0 when sound, -EUCLEAN when damaged. */
int ks_cache_check(ks_cache *c);

int ks_cache_begin(ks_cache *c);
/* A read transaction: many lookups under one lock. Ended with ks_cache_end_read(). */
int ks_cache_begin_read(ks_cache *c);
void ks_cache_end_read(ks_cache *c);
int ks_cache_commit(ks_cache *c);
void ks_cache_rollback(ks_cache *c);

/* -ENOENT when the account was never discovered. Fields owned by *ret (ks_cache_account_done). */
int ks_cache_get_account(ks_cache *c, const char *name, ks_cache_account *ret);
int ks_cache_put_account(ks_cache *c, const char *name, const ks_cache_account *a);
void ks_cache_account_done(ks_cache_account *a);
/* Deletes the account's row and its conflict records (collections go separately). */
int ks_cache_forget_account(ks_cache *c, const char *name);

/* All collections of account, ordered by kind and name. *ret is an array freed with
 * ks_collection_free_array(). */
int ks_cache_list_collections(ks_cache *c, const char *account, ks_collection **ret, size_t *ret_n);
/* Inserts (id == 0, sets id) or updates col's row; sync_token and ctag are not touched by an
 * update (ks_cache_set_collection_state does that). -EEXIST when the name is taken. */
int ks_cache_save_collection(ks_cache *c, ks_collection *col);
int ks_cache_set_collection_state(ks_cache *c, int64_t id, const char *sync_token, const char *ctag);
/* Stores the mass-deletion guard's window of collection id (base -1: none). */
int ks_cache_set_collection_guard(ks_cache *c, int64_t id, int64_t at, int64_t base,
				  int64_t deleted);
/* Stores when a sync of collection id completed (unix seconds). */
int ks_cache_set_collection_synced(ks_cache *c, int64_t id, int64_t at);
int ks_cache_delete_collection(ks_cache *c, int64_t id);
void ks_collection_done(ks_collection *col);
void ks_collection_free_array(ks_collection *a, size_t n);
/* Moves the n_more collections of more (an array from ks_list_home(), freed here either way)
 * to the end of *a. */
int ks_collection_append_array(ks_collection **a, size_t *n, ks_collection *more, size_t n_more);
/* The account's distinct home sets, address books' first: how many went to homes. */
size_t ks_cache_account_homes(const ks_cache_account *acc, const char *homes[static 2]);
const char *ks_collection_kind_to_string(ks_collection_kind k);

/* -ENOENT when absent. */
int ks_cache_get_item(ks_cache *c, int64_t coll, const char *href, ks_cache_item *ret);
void ks_cache_item_done(ks_cache_item *i);
/* Whether the stored bytes of the item at href are a vCard 4.0 (1) or not (0); -ENOENT. */
int ks_cache_item_is_vcard4(ks_cache *c, int64_t coll, const char *href);
/* Whether filename is used by an item of coll other than the one at href. */
int ks_cache_filename_taken(ks_cache *c, int64_t coll, const char *filename, const char *href);

typedef struct ks_item_row {
	const char *href;
	const char *etag;
	const char *filename;
	const char *data;
	size_t len;
	const ks_item_info *info;	/* NULL for an item that could not be parsed */
	const char *hash;		/* sha256 hex of data */
	int64_t mtime_ns;
	int64_t ino;
	int64_t size;
} ks_item_row;

/* Inserts or replaces the item at row->href. */
int ks_cache_put_item(ks_cache *c, int64_t coll, const ks_item_row *row);
int ks_cache_delete_item(ks_cache *c, int64_t coll, const char *href);

/* Calls fn for every item of coll (href, etag, filename); a negative return stops the walk. */
typedef int (*ks_cache_item_fn)(const char *href, const char *etag, const char *filename,
				void *userdata);
int ks_cache_foreach_item(ks_cache *c, int64_t coll, ks_cache_item_fn fn, void *userdata);
int ks_cache_count_items(ks_cache *c, int64_t coll);
/* Whether a collection has dir as its directory (1, its id in *ret_id) or none (0). */
int ks_cache_find_collection_dir(ks_cache *c, const char *dir, int64_t *ret_id);
/* Calls fn for every item of coll, in the order they were stored, with its server bytes
 * (data[0..len), not NUL-terminated, borrowed for the call only); a negative return stops
 * the walk and is returned. */
typedef int (*ks_cache_data_fn)(const char *href, const char *etag, const char *uid,
				const char *filename, const char *data, size_t len, void *userdata);
int ks_cache_foreach_item_data(ks_cache *c, int64_t coll, ks_cache_data_fn fn, void *userdata);
/* Changes made through this connection since it was opened (sqlite3_total_changes). */
int64_t ks_cache_total_changes(ks_cache *c);

/* What the local scan compares a directory against: every item of coll, sorted by filename,
 * with id, filename and stat only (href, etag, uid and hash NULL until
 * ks_cache_fill_local_row()): a quiet scan of a large collection allocates little.
 * Freed with ks_local_rows_free(). */
typedef struct ks_local_row {
	int64_t id;
	char *href;
	char *etag;
	char *uid;
	char *filename;
	char *hash;
	int64_t mtime_ns;
	int64_t ino;
	int64_t size;
} ks_local_row;

int ks_cache_list_local(ks_cache *c, int64_t coll, ks_local_row **ret, size_t *ret_n);
/* Rows whose stat was stored untrusted (mtime 0: taken within the clock tick of the file's
 * mtime) and that have a hash: id, filename and hash filled. */
int ks_cache_list_unsettled(ks_cache *c, int64_t coll, ks_local_row **ret, size_t *ret_n);
/* How many stats were stored untrusted since the last call. */
unsigned ks_cache_take_unsettled(ks_cache *c);
/* Loads href, etag, uid and hash of a row from ks_cache_list_local(). */
int ks_cache_fill_local_row(ks_cache *c, ks_local_row *row);
void ks_local_rows_free(ks_local_row *a, size_t n);

/* The stored server bytes of the item at href (the merge base). -ENOENT when absent.
 * *ret is NUL-terminated and owned by the caller. */
int ks_cache_get_item_data(ks_cache *c, int64_t coll, const char *href, char **ret, size_t *ret_len);
/* The item of coll with that UID, -ENOENT when none. */
int ks_cache_get_item_by_uid(ks_cache *c, int64_t coll, const char *uid, ks_cache_item *ret);
/* Records that the item id now lives in filename, with that stat (a local rename). */
int ks_cache_set_item_file(ks_cache *c, int64_t id, const char *filename, int64_t mtime_ns,
			   int64_t ino, int64_t size);
/* Records the file's stat after a scan found its content unchanged. */
int ks_cache_set_item_stat(ks_cache *c, int64_t id, int64_t mtime_ns, int64_t ino, int64_t size);

typedef enum ks_intent_op {
	KS_INTENT_CREATE,
	KS_INTENT_UPDATE,
	KS_INTENT_DELETE,
	_KS_INTENT_MAX,
	_KS_INTENT_INVALID = -22,
} ks_intent_op;

typedef struct ks_intent {
	char *href;
	ks_intent_op op;
	char *filename;
	char *hash;
	int64_t created_at;
} ks_intent;

/* Records, before a request is sent, that href of coll is being created, updated or deleted
 * with a body of that hash. One intent per href: a newer one replaces it. */
int ks_cache_add_intent(ks_cache *c, int64_t coll, const char *href, ks_intent_op op,
			const char *filename, const char *hash);
int ks_cache_clear_intent(ks_cache *c, int64_t coll, const char *href);
/* Intents a crash left for coll. Freed with ks_intents_free(). */
int ks_cache_list_intents(ks_cache *c, int64_t coll, ks_intent **ret, size_t *ret_n);
void ks_intents_free(ks_intent *a, size_t n);

/* A local change a server refused (or ksync refused before sending): file, what was to be
 * done, the hash of the bytes refused (NULL for a deletion), the HTTP status (0 for a local
 * refusal) and the reason in words. */
typedef struct ks_refusal {
	char *filename;
	char *href;
	ks_intent_op op;
	char *hash;
	int status;
	char *reason;
	int64_t created_at;
} ks_refusal;

/* Records a refusal of filename in coll, replacing an earlier one of that file. */
int ks_cache_add_refusal(ks_cache *c, int64_t coll, const ks_refusal *rf);
int ks_cache_clear_refusal(ks_cache *c, int64_t coll, const char *filename);
/* The refusals of coll, by file name. Freed with ks_refusals_free(). */
int ks_cache_list_refusals(ks_cache *c, int64_t coll, ks_refusal **ret, size_t *ret_n);
void ks_refusals_free(ks_refusal *a, size_t n);

typedef struct ks_conflict_row {
	int64_t id;
	char *account;
	char *collection;	/* "contacts/<name>" */
	char *uid;
	char *filename;
	char *kept_path;	/* the copy of the losing version */
	char *winner;		/* "server", "local" or "merged" */
	char *summary;		/* what conflicted */
	int64_t created_at;
} ks_conflict_row;

/* Records a conflict (summary and uid may be NULL). */
int ks_cache_add_conflict(ks_cache *c, const char *account, const char *collection,
			  const char *uid, const char *filename, const char *kept_path,
			  const char *winner, const char *summary);
/* Conflicts of account (all accounts for NULL), newest first. Freed with
 * ks_conflict_rows_free(). */
int ks_cache_list_conflicts(ks_cache *c, const char *account, ks_conflict_row **ret, size_t *ret_n);
void ks_conflict_rows_free(ks_conflict_row *a, size_t n);
/* Forgets the conflict id (once resolved). */
int ks_cache_delete_conflict(ks_cache *c, int64_t id);

/* ---- time windows of events ---------------------------------------------------------------- */

/* The outside row of href in coll (an event the window leaves out): 0 with its etag in
 * *ret_etag (if not NULL; owned by the caller, NULL when none), -ENOENT when there is none. */
int ks_cache_get_outside(ks_cache *c, int64_t coll, const char *href, char **ret_etag);
/* Records href as outside the window with etag; filename and hash name its file while it is
 * being removed (NULL otherwise); next_at is the earliest time it could enter the window (0:
 * never, as far as known). */
int ks_cache_put_outside(ks_cache *c, int64_t coll, const char *href, const char *etag,
			 const char *filename, const char *hash, int64_t next_at);
/* Forgets href's outside row, or with href NULL all of coll's (those whose file is being
 * removed only lose their etag, and are fetched again). */
int ks_cache_delete_outside(ks_cache *c, int64_t coll, const char *href);
/* The outside row whose file filename is being removed: its href and the file's hash as ksync
 * wrote it (owned by the caller). -ENOENT when none. */
int ks_cache_outside_by_filename(ks_cache *c, int64_t coll, const char *filename,
				 char **ret_href, char **ret_hash);
/* The file of href's outside row is gone: its filename and hash are cleared. */
int ks_cache_outside_forget_file(ks_cache *c, int64_t coll, const char *href);
/* Calls fn for every outside row of coll (with due_before not 0: those with a next_at not
 * after it); a negative return stops the walk and is returned. */
typedef int (*ks_cache_outside_fn)(const char *href, int64_t next_at, void *userdata);
int ks_cache_foreach_outside(ks_cache *c, int64_t coll, int64_t due_before,
			     ks_cache_outside_fn fn, void *userdata);
int ks_cache_count_outside(ks_cache *c, int64_t coll);

/* The window a collection's rows were sorted by, and the day (since the epoch, UTC) they
 * were last looked at. */
typedef struct ks_cache_window {
	int past_days;
	int future_days;
	int64_t checked_day;
} ks_cache_window;

/* -ENOENT when the collection has no window. */
int ks_cache_get_window(ks_cache *c, int64_t coll, ks_cache_window *ret);
/* Stores w, or forgets the collection's window with w NULL. */
int ks_cache_set_window(ks_cache *c, int64_t coll, const ks_cache_window *w);
