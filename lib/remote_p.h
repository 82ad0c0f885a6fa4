/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache_p.h"
#include "dav_p.h"
#include "ksync.h"

/* The remote store: an account's server as the sync engine and the duplicate merge see it.
 * lib/remote_dav.c speaks CalDAV/CardDAV to a real server; the engine's tests plug in a store
 * held in memory (tests/unit/memremote.c). Every operation tells how it went in a
 * ks_remote_reply: the result (0 or a negative errno, HTTP statuses mapped as
 * ks_dav_status_to_errno() maps them), the HTTP status, a message naming the request and the
 * cause, and what the answer carried. The result's scope (ks_error_scope_of()) says what a
 * failure stops: the item, the collection or the account. */

typedef struct ks_remote ks_remote;

typedef struct ks_remote_reply {
	int result;
	long status;		/* HTTP status, 0 when none came */
	char *etag;		/* of the item written or read */
	char *sync_token;	/* a listing's new token */
	char *ctag;		/* the collection's getctag, as an etag listing found it */
	char *body;		/* an item's bytes (get), or an error body */
	size_t body_len;
	char errmsg[KS_DAV_ERRMSG_MAX];
} ks_remote_reply;

void ks_remote_reply_done(ks_remote_reply *r);

/* One member of a listing, as the server wrote it: the engine normalizes and checks the
 * href. status is 0 or 2xx for a member that is there, 404 or 410 for one deleted (an
 * incremental listing), 507 for a listing truncated there (RFC 6578 3.6). */
typedef struct ks_remote_member {
	const char *href;
	const char *etag;	/* NULL when none, or when it held a control character */
	int status;
} ks_remote_member;

/* A callback's negative return stops the operation and is its result. */
typedef int (*ks_remote_member_fn)(const ks_remote_member *m, void *userdata);

/* One item as the server serves it: data[0..len), NUL-terminated, borrowed for the call. */
typedef struct ks_remote_item {
	const char *href;
	const char *etag;
	const char *data;
	size_t len;
} ks_remote_item;

typedef int (*ks_remote_item_fn)(const ks_remote_item *it, void *userdata);

/* One batch of items to fetch at once (a multiget): hrefs (canonical), as vCard 4.0 when
 * vcard4. on_item is called for each item the answer holds, whatever it holds; items it
 * leaves out are the caller's to fetch one by one. reply says how the batch went: -EBADMSG
 * (malformed answer: what came before the damage was given), -EFBIG (an item over
 * KS_CARD_MAX stopped it), -ENOENT (the whole batch answered 404), others. */
typedef struct ks_remote_batch {
	const char *collection;
	bool card;		/* an address book (else a calendar) */
	char *const *hrefs;
	size_t n_hrefs;
	bool vcard4;
	ks_remote_item_fn on_item;
	void *userdata;
	ks_remote_reply reply;
} ks_remote_batch;

typedef enum ks_remote_op {
	KS_REMOTE_PUT,
	KS_REMOTE_DELETE,
	_KS_REMOTE_OP_MAX,
	_KS_REMOTE_OP_INVALID = -22,
} ks_remote_op;

/* One change to send: a PUT of data (with If-Match: if_match, or If-None-Match: * without
 * it) or a DELETE (with If-Match: if_match when given). */
typedef struct ks_remote_write {
	ks_remote_op op;
	const char *href;
	const char *data;
	size_t len;
	bool card;		/* the data is a vCard (else iCalendar) */
	const char *if_match;
	void *userdata;
	ks_remote_reply reply;
} ks_remote_write;

typedef struct ks_remote_ops {
	/* Lists a collection: its changes since token (RFC 6578; token NULL: every member)
	 * with sync, or every member with its etag (PROPFIND Depth 1) without. fn gets each
	 * member as it arrives; ret gets the new token (or, without sync, the collection's
	 * getctag when the server gave one) and how it went. A token the server
	 * refuses fails with its status (403/409 valid-sync-token, 400, or a 500). */
	int (*list)(ks_remote *r, const char *collection, bool sync, const char *token,
		    ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret);
	/* Lists the single events of a calendar (calendar-query, RFC 4791 7.8: objects with a
	 * VEVENT that has no RRULE, RDATE or RECURRENCE-ID, whose time servers judge alike)
	 * that overlap [start, end) (Unix seconds, 0 for an open side; both 0: all of them),
	 * each member with its etag to fn. NULL in a store that cannot. */
	int (*query)(ks_remote *r, const char *collection, int64_t start, int64_t end,
		     ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret);
	/* The collection's getctag into *ret_ctag (NULL when it has none). known is the one
	 * stored (or NULL), which a store may ask with (a conditional GET). */
	int (*ctag)(ks_remote *r, const char *collection, const char *known, char **ret_ctag,
		    ks_remote_reply *ret);
	/* Fetches n batches, several at once; done is called for each as soon as it has
	 * ended, and may not start another operation on r. Returns 0 when every batch ran
	 * (each has its reply), or the first negative value a callback returned. */
	int (*fetch)(ks_remote *r, ks_remote_batch *b, size_t n,
		     int (*done)(ks_remote_batch *b, void *userdata), void *userdata);
	/* One item on its own (GET): its bytes and etag in ret. -EFBIG past KS_CARD_MAX. */
	int (*get)(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret);
	/* Sends n changes, several at once; as fetch. */
	int (*write)(ks_remote *r, ks_remote_write *w, size_t n,
		     int (*done)(ks_remote_write *w, void *userdata), void *userdata);
	/* Whether the collection is there (0), gone (-ENOENT), or the server did not say. */
	int (*probe)(ks_remote *r, const char *collection, ks_remote_reply *ret);
	/* The principal and home sets from the account's URL, as ks_discover() does. */
	int (*discover)(ks_remote *r, ks_cache_account *ret, char **reterr_msg);
	/* The collections of a home set, as ks_list_home() does. */
	int (*list_home)(ks_remote *r, const char *home, unsigned tokens, ks_collection **ret,
			 size_t *ret_n, char **reterr_msg);
	/* Whether the server refuses the account's credentials (-EACCES) or not (0). */
	int (*check_auth)(ks_remote *r);
	/* The account URL hrefs resolve against. */
	const char *(*base_url)(const ks_remote *r);
	/* Requests sent so far, and the longest Retry-After (seconds) a 429 or 503 asked for. */
	unsigned (*request_count)(const ks_remote *r);
	unsigned (*retry_after)(const ks_remote *r);
	void (*free)(ks_remote *r);
} ks_remote_ops;

struct ks_remote {
	const ks_remote_ops *ops;
};

/* The account's server over CalDAV/CardDAV, with the session ks_session_new_with() makes
 * (password may be NULL). *ret is freed with ks_remote_free(). Errors as ks_session_new(). */
int ks_remote_dav_new(const ks_account_config *a, const char *password, ks_remote **ret,
		      char **reterr_msg);
/* ks_remote_dav_new() with the password fetched as the account says, as ks_session_new()
 * does (and with its errors). */
int ks_remote_dav_open(const ks_account_config *a, ks_remote **ret, char **reterr_msg);
/* The store of a calendar subscription (an account with feed =, lib/remote_feed.c), with
 * the session as ks_remote_dav_new() (fetch_password: as ks_remote_dav_open()). */
int ks_remote_feed_new(const ks_account_config *a, const char *password, bool fetch_password,
		       ks_remote **ret, char **reterr_msg);
/* Frees r (NULL is fine); returns NULL. */
ks_remote *ks_remote_free(ks_remote *r);

static inline int ks_remote_list(ks_remote *r, const char *collection, bool sync,
				 const char *token, ks_remote_member_fn fn, void *userdata,
				 ks_remote_reply *ret)
{
	return r->ops->list(r, collection, sync, token, fn, userdata, ret);
}

static inline int ks_remote_query(ks_remote *r, const char *collection, int64_t start,
				  int64_t end, ks_remote_member_fn fn, void *userdata,
				  ks_remote_reply *ret)
{
	if (!r->ops->query)
		return -EOPNOTSUPP;
	return r->ops->query(r, collection, start, end, fn, userdata, ret);
}

static inline int ks_remote_ctag(ks_remote *r, const char *collection, const char *known,
				 char **ret_ctag, ks_remote_reply *ret)
{
	return r->ops->ctag(r, collection, known, ret_ctag, ret);
}

static inline int ks_remote_fetch(ks_remote *r, ks_remote_batch *b, size_t n,
				  int (*done)(ks_remote_batch *b, void *userdata), void *userdata)
{
	return r->ops->fetch(r, b, n, done, userdata);
}

static inline int ks_remote_get(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret)
{
	return r->ops->get(r, href, vcard4, ret);
}

static inline int ks_remote_write_all(ks_remote *r, ks_remote_write *w, size_t n,
				      int (*done)(ks_remote_write *w, void *userdata),
				      void *userdata)
{
	return r->ops->write(r, w, n, done, userdata);
}

/* One change alone: the result of w, whose reply holds the rest. */
int ks_remote_write_one(ks_remote *r, ks_remote_write *w);

static inline int ks_remote_probe(ks_remote *r, const char *collection, ks_remote_reply *ret)
{
	return r->ops->probe(r, collection, ret);
}

static inline const char *ks_remote_base_url(const ks_remote *r)
{
	return r->ops->base_url(r);
}

static inline unsigned ks_remote_request_count(const ks_remote *r)
{
	return r->ops->request_count(r);
}

static inline unsigned ks_remote_retry_after(const ks_remote *r)
{
	return r->ops->retry_after(r);
}
