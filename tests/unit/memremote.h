/* SPDX-License-Identifier: MIT */
#pragma once

/* A CalDAV/CardDAV server held in memory, behind the remote store interface (lib/remote_p.h),
 * for running the real sync engine without a network: collections of items (href, etag,
 * bytes), sync tokens with the semantics of RFC 6578 (changes since a token, deletions as 404
 * members, truncation with 507 and a token to go on from, tokens that expire), getctag,
 * If-Match and If-None-Match on PUT and DELETE, and the ways real servers differ
 * (tests/integration/test_server_behaviour.py): no sync-collection, stored data rewritten on
 * PUT with or without an ETag in the answer, UIDs held twice refused or allowed, missing
 * hrefs of a multiget answered, left out or failing the whole report. Faults are injected per
 * kind of request, and every request is counted.
 *
 * The server's tree: the principal /principals/user/, the calendar home /calendars/user/ and
 * the address book home /addressbooks/user/, under the base URL https://dav.memory.test/.
 * Item hrefs are kept in canonical form (ks_href_normalize()). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_p.h"
#include "remote_p.h"

#define MEM_BASE_URL "https://dav.memory.test/"
#define MEM_CALENDAR_HOME "/calendars/user/"
#define MEM_ADDRESSBOOK_HOME "/addressbooks/user/"

typedef struct mem_remote mem_remote;

/* One item as the server holds it. Borrowed from the server, valid until it next changes. */
typedef struct mem_item {
	char *href;		/* canonical */
	char *etag;		/* quoted */
	char *uid;		/* NULL when the data has none */
	char *data;		/* NUL-terminated */
	size_t len;
	uint64_t rev;		/* the collection's revision of its last change */
	bool gone;		/* deleted: kept for the changes since older tokens */
} mem_item;

/* The kinds of request, as faults and counters name them. */
typedef enum mem_req {
	MEM_REQ_LIST,		/* REPORT sync-collection, or PROPFIND Depth 1 for etags */
	MEM_REQ_CTAG,		/* PROPFIND Depth 0 for getctag */
	MEM_REQ_MULTIGET,
	MEM_REQ_GET,
	MEM_REQ_PUT,
	MEM_REQ_DELETE,
	MEM_REQ_PROBE,
	MEM_REQ_DISCOVER,
	MEM_REQ_HOMES,		/* PROPFIND Depth 1 on a home set */
	MEM_REQ_AUTH,
	MEM_REQ_QUERY,		/* REPORT calendar-query of events */
	_MEM_REQ_MAX,
} mem_req;

/* What a server does with a multiget naming an href it does not have. */
typedef enum mem_missing {
	MEM_MISSING_404,	/* a 404 response for it inside the 207 (Radicale, Xandikos) */
	MEM_MISSING_OMIT,	/* left out of the 207 (DAViCal) */
	MEM_MISSING_FAIL,	/* the whole REPORT answered 404 (SabreDAV 1.8) */
} mem_missing;

/* What a server does with a new item whose UID another item of the collection has. */
typedef enum mem_uid_clash {
	MEM_UID_ALLOW,		/* stored as a second item (DAViCal, SabreDAV) */
	MEM_UID_409,		/* 409 no-uid-conflict (Radicale) */
	MEM_UID_207,		/* a 207 holding 412 no-uid-conflict (Xandikos) */
} mem_uid_clash;

/* What a server stores of the data a PUT sends. */
typedef enum mem_rewrite {
	MEM_REWRITE_NONE,	/* the bytes as sent */
	MEM_REWRITE_SORT,	/* the properties of each component reordered, and the ETag of
				 * what is stored in the answer (Radicale re-serializes) */
	MEM_REWRITE_STAMP,	/* a property added to what has none, and no ETag in the answer
				 * (DAViCal stamps REV on cards) */
} mem_rewrite;

/* How hrefs are written in answers. */
typedef enum mem_hrefs {
	MEM_HREFS_PATH,		/* the canonical path */
	MEM_HREFS_ABSOLUTE,	/* https://dav.memory.test/path */
	MEM_HREFS_ENCODED,	/* every byte but [A-Za-z0-9/._-] percent-encoded, in lower-case
				 * hex */
} mem_hrefs;

/* How the server behaves as a whole; mem_remote_new() starts with the defaults below. */
typedef struct mem_behaviour {
	mem_missing missing;		/* MEM_MISSING_404 */
	mem_uid_clash uid_clash;	/* MEM_UID_ALLOW */
	bool refuse_uid_change;		/* PUT If-Match changing the UID: 409 (Radicale) */
	mem_rewrite rewrite;		/* MEM_REWRITE_NONE */
	mem_hrefs hrefs;		/* MEM_HREFS_PATH */
	long token_refused;		/* refusing an unknown token: 403 (or 409, 400, 500) */
	bool missing_if_match_404;	/* If-Match on a missing item: 404 (else 412) */
	bool enforce_components;	/* a calendar refuses other components: 403 (SabreDAV) */
	/* The order requests sent together are carried out and answered in: with a seed,
	 * shuffled with it; 0 keeps the order they were given in. */
	uint64_t shuffle_seed;
} mem_behaviour;

/* A fault: the next count requests of kind (after skip of them have passed) matching href
 * fail: with status (the body its error body, e.g. a DAV:error), or, when status is 0, as the
 * connection would with err (-ECONNRESET, -ETIMEDOUT, or -EBADMSG for a malformed answer).
 * A listing, or a multiget, failing by err gives the first half of its answer first.
 * applied: a PUT or DELETE carried out whose answer is lost. omit: a multiget answers
 * without href, a home listing without the collection href, and nothing fails. */
typedef struct mem_fault {
	mem_req kind;
	const char *href;	/* NULL: any; else the item (or collection) the request names */
	unsigned skip;
	unsigned count;
	long status;
	int err;
	const char *body;
	bool applied;
	bool omit;
	unsigned retry_after;	/* with 429 or 503 */
} mem_fault;

/* A new empty server with the default behaviour. -ENOMEM. */
int mem_remote_new(mem_remote **ret);
/* NULL is fine; returns NULL. */
mem_remote *mem_remote_free(mem_remote *m);
/* The remote store to hand the engine (ks_sync_opts.remote). Borrowed from m. */
ks_remote *mem_remote_store(mem_remote *m);
/* The server's behaviour, to change before or between runs. */
mem_behaviour *mem_remote_behaviour(mem_remote *m);

/* Adds a collection called name (the last segment of its href) under the home of kind.
 * Calendars take every component. -EEXIST. *ret_href (optional) is borrowed from m. */
int mem_add_collection(mem_remote *m, ks_collection_kind kind, const char *name,
		       const char *displayname, const char **ret_href);
/* Whether the server has the collection href. */
bool mem_has_collection(const mem_remote *m, const char *href);
/* Removes a collection with its items (as another client would). -ENOENT. */
int mem_remove_collection(mem_remote *m, const char *href);
/* Collection settings: sync-collection offered (default true), getctag given (default true),
 * read-only, KS_COMP_* taken (calendars), sync listings truncated after page changes with a
 * 507 (0: never, the default). -ENOENT for no such collection. */
int mem_collection_set(mem_remote *m, const char *href, bool sync, bool ctag, bool readonly,
		       unsigned components, unsigned page);
/* Forgets the changes recorded so far: every token given before is refused from now on
 * (with the behaviour's token_refused status), as a server does that keeps a bounded
 * history. */
int mem_expire_tokens(mem_remote *m, const char *href);

/* Another client's changes, with no condition: the item at href (canonical) created or
 * replaced with data, or deleted (-ENOENT), or moved to a new href (-ENOENT, -EEXIST). Each
 * changes the collection's revision, ctag and token as a real server's would. -ENOENT when
 * no collection holds href. */
int mem_put(mem_remote *m, const char *href, const char *data, size_t len);
int mem_delete(mem_remote *m, const char *href);
int mem_move(mem_remote *m, const char *from, const char *to);

/* What the server stores of data a PUT sends (its behaviour's rewrite). *ret (NUL-terminated)
 * is owned by the caller. -ENOMEM. */
int mem_stored_form(const mem_remote *m, const char *data, size_t len, char **ret);

/* The item at href, or NULL when there is none (deleted ones are none). Borrowed. */
const mem_item *mem_find(const mem_remote *m, const char *href);
/* The number of items of a collection, and the i-th of them (in order of creation). */
size_t mem_count(const mem_remote *m, const char *collection);
const mem_item *mem_item_at(const mem_remote *m, const char *collection, size_t i);

/* Adds a fault (copied, with href and body). -ENOMEM. */
int mem_add_fault(mem_remote *m, const mem_fault *f);
/* Forgets every fault not yet used up. */
void mem_clear_faults(mem_remote *m);
/* Faults added and not used up. */
size_t mem_pending_faults(const mem_remote *m);
/* Refuses the credentials: check_auth answers -EACCES, as a 401 does. */
void mem_refuse_auth(mem_remote *m, bool refuse);

/* Requests of a kind answered so far, and all of them. */
unsigned mem_requests(const mem_remote *m, mem_req kind);
unsigned mem_requests_total(const mem_remote *m);
/* Changes made through the store (PUTs and DELETEs that succeeded, answered or not). */
unsigned mem_changes(const mem_remote *m);
/* Operations started from inside a callback of a running one (the contract forbids it: a
 * real transport would re-enter its request loop). Each was refused with -EDEADLK. */
unsigned mem_reentries(const mem_remote *m);
/* Sets every counter back to 0. */
void mem_reset_counters(mem_remote *m);
