/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "xml_p.h"

/* HTTP/WebDAV transport on libcurl's multi interface: one connection pool per server,
 * several requests in flight, bodies streamed into the multistatus parser as they arrive.
 * CURLcode and HTTP status are translated to negative errno here and nowhere else. */

typedef struct ks_dav ks_dav;

typedef struct ks_dav_opts {
	const char *base_url;	/* the account's URL; hrefs resolve against it */
	const char *username;	/* NULL: no authentication */
	const char *password;
	const char *ca_file;
	bool allow_insecure_http;
	long connect_timeout_s;	/* 0: 30 s */
	long low_speed_time_s;	/* abort when under 1 byte/s for this long; 0: 60 s */
	unsigned max_parallel;	/* 0: KS_DAV_MAX_PARALLEL */
} ks_dav_opts;

/* Room for a request's failure message: the method, the URL and the cause. */
#define KS_DAV_ERRMSG_MAX 512

typedef struct ks_dav_request ks_dav_request;

/* Called as soon as one request of a ks_dav_run() batch has completed, in order of completion. */
typedef int (*ks_dav_done_fn)(ks_dav_request *req, void *userdata);

struct ks_dav_request {
	/* Inputs, owned by the caller. */
	const char *method;
	const char *url;		/* absolute URL, or a path resolved against base_url */
	const char *depth;		/* "0", "1" or NULL */
	const char *body;
	size_t body_len;
	const char *content_type;	/* default "application/xml; charset=utf-8" with a body */
	const char *if_match;
	const char *if_none_match;
	const char *if_modified_since;	/* an HTTP-date, as a Last-Modified gave it */
	const char *accept;
	bool follow_redirects;
	/* 0: a non-multistatus body is kept up to KS_DAV_MAX_BODY and cut there (error pages).
	 * Otherwise the body is the answer's payload: one longer than this stops the transfer
	 * and fails the request with -EFBIG, never a silently shortened body. */
	size_t max_body;
	ks_ms_response_fn on_response;	/* multistatus bodies go here as they arrive */
	void *userdata;
	ks_dav_done_fn on_done;

	/* Outputs, set by ks_dav_run(); freed by ks_dav_request_done(). */
	int result;		/* 0 or negative errno (see ks_dav_status_to_errno) */
	long status;		/* HTTP status of the last response, 0 if none */
	char *etag;		/* ETag response header, quotes kept */
	char *last_modified;	/* Last-Modified response header */
	char *effective_url;	/* after redirects */
	char *sync_token;	/* top-level sync-token of a multistatus */
	char *body_text;	/* non-multistatus body, up to KS_DAV_MAX_BODY or max_body bytes */
	size_t body_text_len;	/* its length (it may hold NUL bytes) */
	char *redirect_url;	/* Location of a 3xx answer */
	size_t n_responses;	/* <response> elements parsed */
	unsigned retry_after;	/* seconds from Retry-After, 0 if none */
	char errmsg[KS_DAV_ERRMSG_MAX];	/* human-readable cause: method, URL, cause */

	void *priv;
};

int ks_dav_new(const ks_dav_opts *o, ks_dav **ret);
ks_dav *ks_dav_free(ks_dav *d);

/* Runs n requests with up to max_parallel in flight over shared connections. Returns 0 when
 * every request ran (each has its own ->result), or the first negative value an on_done or
 * on_response callback returned (remaining requests are then abandoned), or -ENOMEM.
 * Not re-entrant: called from a callback of a running ks_dav_run() (ks_dav_run_one()
 * included) it returns -EDEADLK and sends nothing; such work is queued for after the run. */
int ks_dav_run(ks_dav *d, ks_dav_request *reqs, size_t n);
/* Runs one request; returns its ->result. With follow_redirects, 3xx answers whose target
 * has the account URL's scheme, host and port are followed (at most 5); any other target
 * fails with -EPERM and a message (another host, or https to http). */
int ks_dav_run_one(ks_dav *d, ks_dav_request *req);
void ks_dav_request_done(ks_dav_request *req);

/* The account URL d was made with. Borrowed. */
const char *ks_dav_base_url(const ks_dav *d);

/* The longest Retry-After (seconds) a 429 or 503 answer through d asked for, 0 if none. */
unsigned ks_dav_retry_after(const ks_dav *d);

/* Number of HTTP requests sent through d so far (redirects included). */
unsigned ks_dav_request_count(const ks_dav *d);

/* Maps an HTTP status to 0 or a negative errno: 2xx → 0, 401/403 → -EACCES, 404/410 → -ENOENT,
 * 412 → -ESTALE, 507 → -ENOSPC, 429/503 → -EAGAIN, 5xx → -EIO, 501/405 → -EOPNOTSUPP,
 * other → -EPROTO. */
int ks_dav_status_to_errno(long status);
/* The reason phrase of an HTTP status ("Precondition Failed"), or NULL for one not known. */
const char *ks_http_reason(long status);
/* The arguments for "%s%s" after a status code in a message: " Reason", or nothing. */
#define REASON(status) ks_http_reason(status) ? " " : "", ks_http_reason(status) ?: ""

/* Canonical form of an href or URL, used as the key everywhere: the path only, with
 * percent-encoding decoded where it is not needed and upper-case hex where it is ("%2F" and
 * "%25" stay encoded). -EINVAL for a path that is not absolute or contains "..", a NUL, or
 * a host other than base's. *ret is owned by the caller. */
int ks_href_normalize(const char *base_url, const char *href, char **ret);

/* The last non-empty path segment of a canonical href, percent-decoded. Owned by caller. */
int ks_href_basename(const char *href, char **ret);
