/* SPDX-License-Identifier: MIT */
#pragma once

#include "cache_p.h"
#include "dav_p.h"

/* Service discovery (RFC 6764 well-known URIs, RFC 5397 current-user-principal, RFC 4791 and
 * RFC 6352 home sets). Fills ret->principal and the home sets (canonical hrefs).
 * *reterr_msg gets a message naming the cause: -EACCES: the credentials were refused (HTTP
 * 401), with the application password hint; -EPERM: the URL refused access (403: "is the
 * path right?"); -EOPNOTSUPP: the URL does not speak CalDAV/CardDAV (501 or 405 to
 * PROPFIND, or no multistatus); -EPROTO: also "this port speaks plain http, not https"
 * when an https handshake failed and the port answers plain HTTP (asked without
 * credentials); -ENOENT: no principal or no home set (the message says which, and hints at
 * the username), or the URL was not found; network errors as from ks_dav_run_one(). */
int ks_discover(ks_dav *d, const char *base_url, ks_cache_account *ret, char **reterr_msg);

/* One PROPFIND Depth 0 on url: -EACCES when the server answers 401 (the credentials are
 * refused), 0 for any other outcome. */
int ks_discover_check_auth(ks_dav *d, const char *url);

/* A collection as listed on the server by a home set PROPFIND. */
typedef struct ks_remote_collection {
	ks_collection c;	/* href, kind, displayname, color, description, components, readonly,
				 * supports_sync; sync_token and ctag are the server's current ones */
} ks_remote_collection;

/* What a home listing asks of each collection besides what it is: its sync-token, its getctag
 * (both are computed from all its items, so only asked for when there are stored ones to
 * compare with). */
enum {
	KS_LIST_SYNC_TOKEN = 1 << 0,
	KS_LIST_CTAG = 1 << 1,
	KS_LIST_TOKENS = KS_LIST_SYNC_TOKEN | KS_LIST_CTAG,
};

/* PROPFIND Depth 1 on home: every calendar and address book directly under it, with the
 * tokens asked for (KS_LIST_*, 0 for none). -EACCES for a 401 (with the message of
 * ks_discover()), -EPERM for a 403. *ret is an array of *ret_n collections, freed with
 * ks_collection_free_array(). */
int ks_list_home(ks_dav *d, const char *home, unsigned tokens, ks_collection **ret,
		 size_t *ret_n, char **reterr_msg);
