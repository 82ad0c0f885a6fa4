/* SPDX-License-Identifier: MIT */
#pragma once

/* The sync engine's own declarations: what an engine holds, and the state and the functions
 * the parts of one run share (account.c, collections.c, sync.c, pull.c, fetch.c, push.c,
 * conflict.c, local.c, guard.c, run.c). */

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dav_p.h"
#include "item_p.h"
#include "ksync.h"
#include "limits.h"
#include "merge_p.h"
#include "plan_p.h"
#include "remote_p.h"
#include "scan_p.h"

/* What an engine holds: the data directory and its cache connection. */
struct ks_engine {
	char *data_dir;
	ks_cache *cache;
};

/* The directory of a collection: col->dir, or <data_dir>/<contacts|calendars>/<account>/<name>.
 * Owned by the caller. */
int ks_engine_collection_dir(const ks_engine *e, const char *account, const ks_collection *col,
			     char **ret);
/* Opens the directory of a collection without following a symbolic link anywhere below the
 * data directory (-ELOOP), or in the last component of col->dir, creating what is missing
 * with create. On failure, *reterr_path (if
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

/* The engine's run of an account (lib/account.c), as ks_sync_account() without the
 * KS_SYNC_COLLECTION_SKIPPED events, which lib/report.c adds. */
int ks_sync_account_run(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o);

/* A collection's completed sync is stored (collection.synced_at) again only once the time
 * stored is this many seconds old, so that a run that changes nothing writes nothing. */
#define KS_SYNCED_AT_STEP 600

/* Records that col just completed a sync (lib/report.c): col->synced_at and its row, unless
 * the stored time is less than KS_SYNCED_AT_STEP old. Errors of the cache. */
int ks_report_collection_synced(ks_cache *c, ks_collection *col);

/* A damaged cache found in a run (-EUCLEAN) is checked page by page; when damaged it is set
 * aside and a new one opened. 1 when a new cache was made, 0 when the check found nothing,
 * or a negative errno. */
int ks_engine_recover_cache(ks_engine *e);

/* ---- one run of an account: the state every part of the engine shares ------------------- */

static inline bool ks_str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

typedef struct run {
	ks_engine *e;
	const ks_account_config *acc;
	const ks_sync_opts *o;
	ks_remote *remote;	/* the account's server */
	bool damaged;		/* the cache answered -EUCLEAN */
	bool first_pass;	/* a damaged cache gets a second pass: keep its -EUCLEAN quiet */
} run;

typedef struct href_list {
	char **v;
	size_t n, cap;
} href_list;

/* The local store of one collection: its directory, opened without following a link, and its
 * rows in the cache. The engine and the duplicate merge reach an item's file and row through
 * it (lib/local.c). */
typedef struct ks_local {
	ks_engine *e;
	const char *account;
	ks_collection *col;
	char label[KS_NAME_MAX + 16];	/* contacts/<name> */
	const char *ext;		/* ".vcf" or ".ics" */
	int dirfd;			/* -1 when not open */
	char *dir;			/* the directory's path, for messages */
} ks_local;

/* Per-collection state while it syncs. */
typedef struct coll_run {
	run *R;
	ks_local L;		/* the collection's files and rows */
	size_t rows_at_start;	/* items of the collection when its run started */
	bool full;		/* listing everything: items not seen are gone */
	/* hrefs to fetch, as the server serves them ([0]) and as vCard 4.0 ([1], in address
	 * books that offer it), and to delete */
	href_list fetch[2];
	char **gone;
	size_t n_gone, cap_gone;
	char **seen;		/* full listings: every href the server has, sorted later */
	size_t n_seen, cap_seen;
	href_list missing[2];	/* hrefs the multigets left out, fetched one by one after them */
	bool truncated;
	int cb_error;
	unsigned added, updated, deleted, skipped, failed_fetch;
	unsigned failed_push;	/* of failed_fetch, the local changes that could not be sent */
	unsigned skipped_outside;	/* listed hrefs outside the collection */
	unsigned fetched;
	unsigned pushed, pushed_deletes, conflicts, deferred;
	unsigned held;		/* server changes not applied that no upload takes care of */
	unsigned refused;	/* local changes the server (or ksync) refused */
	ks_refusal *refusals;	/* earlier refusals, by file name, while the push runs */
	size_t n_refusals;
	ks_intent *intents;	/* uploads a crash interrupted */
	size_t n_intents;
	char **uploaded;	/* hrefs this run sent, sorted before the read-back listing */
	size_t n_uploaded, cap_uploaded;
	bool read_back;		/* the listing after the uploads: fetch those again */
	char **untracked_uids;	/* UID and file name pairs of local files without a row */
	size_t n_untracked, cap_untracked;
	bool untracked_known;
	/* The time window of events (lib/window.c) */
	struct {
		bool active;
		bool check;		/* the rows are looked at this run (once a day) */
		int past_days, future_days;
		int64_t start, end;	/* Unix seconds, 0 for an open side */
		int64_t day;		/* today, in days since the epoch */
		unsigned left_out;	/* events fetched and found outside */
		unsigned removed;	/* files of events that left it, removed */
		unsigned kept;		/* files of events that left it, kept (changed here) */
		unsigned not_sent;	/* files of events outside it deleted here, not sent */
		/* A full listing's calendar-queries: every event ("href\netag", sorted), the
		 * hrefs of those inside (sorted); asked once a run, not at all when a query
		 * failed. */
		bool queried, no_query;
		char **events, **inside;
		size_t n_events, cap_events, n_inside, cap_inside;
	} win;
} coll_run;


typedef struct fetched_item {
	char *href;
	char *etag;
	char *data;
	size_t len;
} fetched_item;

typedef struct batch {
	coll_run *c;
	char **hrefs;		/* borrowed from c->fetch */
	bool vcard4;		/* cards asked for as vCard 4.0 */
	size_t n_hrefs;
	fetched_item *items;
	size_t n_items;
} batch;


typedef struct push_item {
	coll_run *c;
	ks_local_change *ch;
	ks_intent_op op;
	char *href;
	char *body;		/* what is sent: the bytes of the file (a UID added when none) */
	size_t len;
	char hash[65];
	ks_item_info info;
	struct stat st;		/* the file as it was when body was read or written */
	bool needs_merge;
	bool refetch;
	bool done;
} push_item;

/* ---- run.c: events and small lists ------------------------------------------------------- */

/* Hands ev to the caller's on_event. */
void ks_run_emit(run *R, const ks_sync_event *ev);
/* Emits an event of type t for coll (NULL: the account) with err and a message made from fmt,
 * control characters, C1 controls and bidi overrides escaped (a server's words or a file name
 * cannot forge a log line). -EUCLEAN marks the run's cache as damaged. */
void ks_run_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* ks_run_fail() for an event with more than a type, collection and error set: ev as given
 * (account: the run's), with the message made from fmt. */
void ks_run_report(run *R, const ks_sync_event *ev, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A KS_SYNC_ITEM_SKIPPED of the local file named file in collection coll, as ks_run_fail(). */
void ks_run_skip_file(run *R, const char *coll, const char *file, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Whether the run was asked to stop (SIGTERM). */
bool ks_run_cancelled(const run *R);
/* Appends a copy of s to the array *v of *n strings (capacity *cap), at most
 * KS_COLLECTION_MAX_ITEMS (-E2BIG). -ENOMEM. */
int ks_strv_push(char ***v, size_t *n, size_t *cap, const char *s);
void ks_strv_free(char **v, size_t n);
/* qsort() and bsearch() comparison of two char * elements. */
int ks_strv_cmp(const void *a, const void *b);

/* ---- account.c, collections.c: an account's run, its collections ------------------------- */

/* Brings the cached collections *known of the run's account in line with a home listing
 * remote: new ones get a directory name and a row, changed properties are saved, and those
 * gone from the server are removed with their files when the mass-deletion guard lets them
 * go (a collection left out of the listing but still on the server is kept). Collections not
 * to be synced this run are taken out of *known. Returns the number of collections that could
 * not be recorded or removed (each reported), or a negative errno. */
int ks_collections_reconcile(run *R, ks_collection *remote, size_t n_remote,
			     ks_collection **known, size_t *n_known);

/* Makes the cached collections follow include = and exclude = of ksync.conf (saved where
 * they change). */
int ks_collections_follow_config(run *R, ks_collection *known, size_t n_known);

/* Puts col where ksync.conf says (calendars_path, contacts_path, path =): its directory is
 * renamed there (or, gone from where it was or never used, the new place taken as it is) and
 * the place recorded. When it cannot be moved (another file system, files in the way) the
 * collection stops with a message saying what to do, and nothing is touched. 0 to go on, or
 * a negative errno (reported). */
int ks_collection_place(run *R, ks_collection *col);

/* ---- sync.c: one collection both ways ---------------------------------------------------- */

/* Syncs col both ways: pull, push, the read-back of the uploads. remote is what a home
 * listing said of the collection right now, or NULL. Failures are reported; -ENOENT when the
 * collection is gone from the server (and no listing was made this run). */
int ks_sync_collection(run *R, ks_collection *col, const ks_collection *remote);
/* Reports the collection's failure line for items that could not be fetched or sent. */
void ks_sync_report_failed(coll_run *c);

/* ---- pull.c: the server's changes into the files and the cache --------------------------- */

/* Lists what changed on the server (sync-collection with the stored token, a full listing, or
 * a PROPFIND with etags), fetches it, applies it, deletes what the server deleted, and stores
 * the new token. remote is what a home listing said of the collection right now, or NULL.
 * Failures are reported here. */
int ks_pull_collection(coll_run *c, const ks_collection *remote, bool force);
/* Whether a listing failed because the server no longer knows the sync-token it was given
 * (RFC 6578 3.2: 403 or 409 valid-sync-token; some servers answer 400, Xandikos 500). */
bool ks_pull_token_rejected(const ks_remote_reply *req);
/* Whether this run uploaded href (c->uploaded sorted). */
bool ks_coll_uploaded_here(const coll_run *c, const char *href);
/* Forgets one listing round; with keep_seen the hrefs a full listing saw stay. */
void ks_coll_reset_lists(coll_run *c, bool keep_seen);

/* ---- fetch.c: items from the server into the files and the cache ------------------------- */

/* Fetches c->fetch (multigets, several in flight; what they leave out by GET afterwards) and
 * applies each answer: files first, then rows, one transaction per batch. */
int ks_fetch_all(coll_run *c);
/* The server's current version of href, asked as vCard 4.0 with vcard4: 0 with data and etag,
 * -ENOENT when it has none. */
int ks_fetch_one(coll_run *c, const char *href, bool vcard4, char **ret, size_t *ret_len,
		 char **ret_etag);
/* The state of the file of it, a cached item the server changed or deleted. A file only
 * renamed here, its bytes still the row's, gives it its new name and is as recorded: the
 * rename is no change to send, and the server's change (or deletion) applies to it. Only
 * --force tells a damaged file from an edited one. */
int ks_coll_file_state(coll_run *c, ks_cache_item *it, ks_plan_file *ret);
/* The intent a crash left for href, or NULL. Borrowed. */
const ks_intent *ks_coll_find_intent(const coll_run *c, const char *href);
/* A file of the collection could not be written or deleted: the collection fails with the
 * path and the cause, reported once; returns the error to fail with. */
int ks_coll_file_failed(coll_run *c, const char *what, const char *name, int r);

/* ---- window.c: the time window of events ------------------------------------------------ */

/* Sets c->win from the account's past_days and future_days. A window that grew or went since
 * the last run forgets the events it left out and the listing's token and ctag (the next
 * listing is a full one): 1 then, else 0, or a negative errno. */
int ks_window_begin(coll_run *c);
/* Whether a listed member without a row is an event left out with this etag already (1: not
 * to fetch), 0, or a negative errno. */
int ks_window_skip_listed(coll_run *c, const char *href, const char *etag);
/* A fetched item new here, with no file of its UID: 1 when it is an event outside the window
 * (recorded as such; it gets no file), 0, or a negative errno. Inside the caller's
 * transaction. */
int ks_window_leave_out(coll_run *c, const char *href, const char *etag, const char *data,
			size_t len);
/* A new file (no row) that is the file of an event whose removal a crash cut short: removed
 * when it is as ksync wrote it (1), else 0 (and it is the user's to send), or a negative
 * errno. */
int ks_window_leftover(coll_run *c, ks_local_change *ch);
/* A deleted file of an event outside the window: its row becomes an outside row, and nothing
 * is sent (1); 0 for others, or a negative errno. */
int ks_window_deleted(coll_run *c, const ks_local_change *ch);
/* Before a full listing's fetch: the new members a calendar-query says are events outside
 * the window get outside rows and are taken out of c->fetch, unfetched. A server that cannot
 * answer leaves them to be fetched and sorted after. 0 or a negative errno. */
int ks_window_prefilter(coll_run *c);
/* Frees what the window kept for the run. */
void ks_window_done(coll_run *c);
/* Once a day: fetches the events the window now reaches, removes the files of those that
 * left it (when as ksync wrote them), and stores the day. */
int ks_window_check(coll_run *c);
/* Reports what the window did this run. */
void ks_window_report(coll_run *c);

/* ---- guard.c: the mass-deletion guard ---------------------------------------------------- */

/* Lets n_delete deletions happen or stops the collection (-EDQUOT, reported): see guard.c.
 * side names where they would happen, why what points at them, remedy what else to do. */
int ks_guard_deletions(coll_run *c, size_t n_delete, const char *side, const char *why,
		       const char *remedy);
/* Whether the deletion of href (the file filename, NULL for a deletion on the server's side)
 * was counted by the guard in an earlier run: sent then, its answer never came (the intent is
 * left), or refused by the server and not sent again. Counted again, a deletion retried run
 * after run would add up to a mass deletion. */
bool ks_guard_counted_before(const coll_run *c, const char *href, const char *filename);

/* ---- push.c, conflict.c: local changes to the server, merges ----------------------------- */

/* Scans the directory and sends every local change; merges what both sides changed. */
int ks_push_collection(coll_run *c);
/* A random version 4 UUID in out. -EIO when no random bytes could be had. */
int ks_random_uid(char out[37]);
/* Both sides changed p's item (or the server lost it): merges and brings both sides to the
 * result, keeping the losing version of any conflict. */
int ks_conflict_merge(coll_run *c, push_item *p);
/* Keeps a losing version (ks_local_keep_copy()) and counts the conflict; a failure fails the
 * collection, reported. */
int ks_conflict_keep(coll_run *c, const char *filename, const char *uid, const char *data,
		     size_t len, const char *side, const char *winner, const char *summary,
		     char **ret_path);
/* The account's conflict policy as the merge takes it. */
ks_conflict_policy ks_coll_policy(const coll_run *c);
/* PUT with a condition (if_match, or If-None-Match: * without it); *ret_etag is the answer's
 * ETag (NULL without one); errmsg gets the failure. */
int ks_conflict_put(coll_run *c, const char *href, const char *data, size_t len,
		    const char *if_match, char **ret_etag, char *errmsg, size_t errmsg_len);
/* Records an item this run has just sent (a PUT answered with etag, NULL without one): it is
 * counted, noted for the read-back listing, and its row written. Where that listing follows
 * (collections with sync-collection) the row waits for it without the etag, so that a crash
 * before it leaves the item to be fetched again, rather than the cache holding bytes the
 * server may store otherwise (Radicale re-serializes and still answers with an ETag).
 * 1 when the item is to be read back at once (no etag, and no listing follows), 0, or a
 * negative errno. */
int ks_conflict_record_sent(coll_run *c, const char *href, const char *etag,
			    const char *filename, const char *data, size_t len,
			    const struct stat *st);
/* Reads href back after an upload (answered without an ETag): the cache holds what the server
 * stores, and so does the file unless it was edited again meanwhile. */
int ks_conflict_read_back(coll_run *c, const char *href, const char *filename, const char *sent,
			  size_t sent_len, const struct stat *st);

/* ---- local.c: the local store, a collection's files and rows ----------------------------- */

/* Fills *l for col of account (its label, extension and directory path), not yet open.
 * -ENOMEM. Cleared with ks_local_done(). */
int ks_local_init(ks_local *l, ks_engine *e, const char *account, ks_collection *col);
/* Opens the collection's directory, made with create when missing, never through a symbolic
 * link (-ELOOP); *reterr_path (if not NULL) names the directory that failed. */
int ks_local_open(ks_local *l, bool create, char **reterr_path);
void ks_local_done(ks_local *l);
/* The file of it next to its row: KS_PLAN_FILE_AS_RECORDED (as ksync wrote or last saw it),
 * _EDITED (its bytes differ), _MISSING or _OTHER (no regular file: a symlink, a FIFO), or a
 * negative errno. */
int ks_local_file_state(ks_local *l, const ks_cache_item *it);
int64_t ks_stat_mtime_ns(const struct stat *st);
/* Writes data over the item file name (atomically, flushed), unless the file changed since
 * expected (NULL: no check) was taken. 1 when written (*ret_st its new stat), 0 when left. */
int ks_local_replace_file(ks_local *l, const char *name, const struct stat *expected,
			  const char *data, size_t len, struct stat *ret_st);
/* Keeps the version data that lost a conflict under conflicts/<account>/<collection>/ and
 * records it (a copy kept before is reused). *ret_path (optional) gets where; a failure
 * leaves a message in *reterr_msg. */
int ks_local_keep_copy(ks_local *l, const char *filename, const char *uid, const char *data,
		       size_t len, const char *side, const char *winner, const char *summary,
		       char **ret_path, char **reterr_msg);
/* Records that the server holds data at href with etag (NULL: unknown) and the file filename
 * (with stat st) holds it too, and clears the intent: one transaction. */
int ks_local_record_item(ks_local *l, const char *href, const char *etag, const char *filename,
			 const char *data, size_t len, const struct stat *st);
/* Stores the real stat of the collection's files whose stat was stored untrusted in this run
 * (taken within the clock tick of their mtime, lib/cache.c), once the tick is over and the
 * file is read again and found as recorded: the next run then need not read them. */
int ks_local_settle(ks_local *l);
/* Forgets the row of href and its intent. */
int ks_local_forget_item(ks_local *l, const char *href);
/* Whether a card is to be asked for as vCard 4.0: data is 4.0, and the address book offers
 * 4.0 (servers that convert cards serve 3.0 otherwise). */
bool ks_local_wants_vcard4(const ks_local *l, const char *data, size_t len);
/* Removes the item file name (gone already is fine) and flushes the directory. */
int ks_local_remove_file(ks_local *l, const char *name);
/* Opens conflicts/<account>/<collection>, or its subdirectory sub (when not NULL), below the
 * data directory without following a symbolic link (-ELOOP), made with create when missing.
 * *reterr_path (if not NULL) names the directory that failed. *ret_fd is the caller's. */
int ks_local_open_conflicts(ks_local *l, const char *sub, bool create, int *ret_fd,
			    char **reterr_path);
