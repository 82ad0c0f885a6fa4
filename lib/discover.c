/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf_p.h"
#include "discover_p.h"
#include "log_p.h"
#include "manage_p.h"
#include "text_p.h"
#include "macro.h"
#include "vdir_p.h"

static const char propfind_principal[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<d:propfind xmlns:d=\"DAV:\"><d:prop><d:current-user-principal/><d:resourcetype/>"
	"</d:prop></d:propfind>\n";

static const char propfind_homes[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<d:propfind xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" "
	"xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop><c:calendar-home-set/>"
	"<a:addressbook-home-set/><d:current-user-principal/></d:prop></d:propfind>\n";

#define PROPFIND_COLLECTIONS(tokens)                                                          \
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"                                         \
	"<d:propfind xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" "                \
	"xmlns:a=\"urn:ietf:params:xml:ns:carddav\" xmlns:cs=\"http://calendarserver.org/ns/\" " \
	"xmlns:ic=\"http://apple.com/ns/ical/\"><d:prop><d:resourcetype/><d:displayname/>"         \
	"<ic:calendar-color/><c:supported-calendar-component-set/>"                              \
	"<d:current-user-privilege-set/>" tokens "<d:supported-report-set/>"                     \
	"<c:calendar-description/><a:addressbook-description/><a:supported-address-data/>"      \
	"</d:prop></d:propfind>\n"

/* Indexed by KS_LIST_* flags. */
static const char *const propfind_collections[] = {
	[0] = PROPFIND_COLLECTIONS(""),
	[KS_LIST_SYNC_TOKEN] = PROPFIND_COLLECTIONS("<d:sync-token/>"),
	[KS_LIST_CTAG] = PROPFIND_COLLECTIONS("<cs:getctag/>"),
	[KS_LIST_TOKENS] = PROPFIND_COLLECTIONS("<d:sync-token/><cs:getctag/>"),
};

typedef struct found {
	const char *base_url;
	char *principal;
	char *calendar_home;
	char *addressbook_home;
} found;

static int take_href(const char *base_url, const char *href, char **slot)
{
	if (!href || *slot)
		return 0;
	/* A home or principal on another host, or a malformed one, is not followed. */
	return ks_href_normalize(base_url, href, slot) == -ENOMEM ? -ENOMEM : 0;
}

static int on_found(const ks_ms_response *r, void *userdata)
{
	found *f = userdata;
	int k;

	k = take_href(f->base_url, r->principal, &f->principal);
	if (k >= 0)
		k = take_href(f->base_url, r->calendar_home, &f->calendar_home);
	if (k >= 0)
		k = take_href(f->base_url, r->addressbook_home, &f->addressbook_home);
	return k;
}

static void found_done(found *f)
{
	free(f->principal);
	free(f->calendar_home);
	free(f->addressbook_home);
}

/* What one PROPFIND of discovery got. */
typedef struct attempt {
	int r;
	long status;
	char *errmsg;
} attempt;

static void attempt_done(attempt *a)
{
	free(a->errmsg);
	*a = (attempt) {};
}

static int propfind0(ks_dav *d, const char *url, const char *body, found *f, attempt *ret)
{
	ks_dav_request req = {
		.method = "PROPFIND",
		.url = url,
		.depth = "0",
		.body = body,
		.body_len = strlen(body),
		.follow_redirects = true,
		.on_response = on_found,
		.userdata = f,
	};
	int r = ks_dav_run_one(d, &req);

	if (ret) {
		attempt_done(ret);
		ret->r = r;
		ret->status = req.status;
		ret->errmsg = r < 0 && req.errmsg[0] ? strdup(req.errmsg) : NULL;
	}
	ks_dav_request_done(&req);
	return r;
}

/* For a TLS handshake that failed on an https URL: whether the port answers plain HTTP. A
 * request without credentials (none are given to this handle), whose only use is to name
 * the cause. */
static bool speaks_plain_http(const char *url)
{
	_cleanup_free_ char *plain = NULL;
	ks_dav *d = NULL;
	bool yes = false;

	if (strncasecmp(url, "https://", 8) != 0)
		return false;
	const char *host = url + 8;
	if (asprintf(&plain, "http://%.*s/", (int) strcspn(host, "/?#"), host) < 0)
		return false;
	ks_dav_opts o = { .base_url = plain, .allow_insecure_http = true, .connect_timeout_s = 5,
			  .low_speed_time_s = 5 };
	if (ks_dav_new(&o, &d) < 0)
		return false;
	ks_dav_request req = { .method = "GET", .url = plain, .max_body = 4096 };
	(void) ks_dav_run_one(d, &req);
	yes = req.status >= 100;
	ks_dav_request_done(&req);
	ks_dav_free(d);
	return yes;
}

/* Why the account's URL led to no principal, in words that name the cause. */
static int explain_no_principal(const char *url, const attempt *first, char **reterr_msg)
{
	long st = first->status;

	if (st == 403)
		return ks_set_error(reterr_msg, -EPERM, "%s refused access (HTTP 403): is the path "
				    "right?", url);
	if (st == 404 || st == 410)
		return ks_set_error(reterr_msg, -ENOENT, "%s was not found (HTTP %ld): is the path "
				    "right?", url, st);
	if (st == 405 || st == 501)
		return ks_set_error(reterr_msg, -EOPNOTSUPP, "%s does not speak CalDAV/CardDAV "
				    "(PROPFIND answered %ld): is it the server's DAV address?", url,
				    st);
	/* A 2xx whose body was no multistatus (a web page); a body cut short is the
	 * connection's failure, said below. */
	if (st >= 200 && st < 300 && (first->r == -EBADMSG || first->r == -EPROTO))
		return ks_set_error(reterr_msg, -EOPNOTSUPP, "%s does not speak CalDAV/CardDAV "
				    "(PROPFIND answered %ld with something else than a WebDAV "
				    "multistatus): is it the server's DAV address?", url, st);
	if (st == 0 && first->r == -EPROTO && speaks_plain_http(url))
		return ks_set_error(reterr_msg, -EPROTO, "%s: this port speaks plain http, not "
				    "https; use http:// (and allow_insecure_http = true for a host "
				    "that is not this machine) or the server's https port", url);
	if (first->r < 0 && first->r != -ENOENT && first->r != -EOPNOTSUPP)
		return ks_set_error(reterr_msg, first->r, "%s",
				    first->errmsg ? first->errmsg : strerror(-first->r));
	return ks_set_error(reterr_msg, -ENOENT, "the server accepted the credentials but "
			    "reported no current-user-principal (is the username right? for "
			    "Infomaniak it is the account id such as AB12345, not the e-mail "
			    "address)");
}

int ks_discover(ks_dav *d, const char *base_url, ks_cache_account *ret, char **reterr_msg)
{
	_cleanup_(attempt_done) attempt first = {}, homes = {};
	found f = { .base_url = base_url };
	int r;

	r = propfind0(d, base_url, propfind_principal, &f, &first);
	if (first.status == 401)
		goto auth;
	if (r == -ENOMEM)
		goto out;
	/* RFC 6764: the well-known URIs lead to the context path when the URL does not. */
	static const char *const wk[] = { "/.well-known/caldav", "/.well-known/carddav" };
	for (size_t i = 0; !f.principal && i < ELEMENTSOF(wk); i++) {
		attempt a = {};
		int k = propfind0(d, wk[i], propfind_principal, &f, &a);
		long st = a.status;

		attempt_done(&a);
		if (st == 401)
			goto auth;
		if (k == -ENOMEM) {
			r = k;
			goto out;
		}
	}
	if (!f.principal) {
		r = explain_no_principal(base_url, &first, reterr_msg);
		goto out;
	}
	r = propfind0(d, f.principal, propfind_homes, &f, &homes);
	if (homes.status == 401)
		goto auth;
	if (r == -ENOENT || r == -EACCES) {
		free(*reterr_msg);
		*reterr_msg = NULL;
		(void) asprintf(reterr_msg, "the principal '%s' %s (is the username right? for "
				"Infomaniak it is the account id such as AB12345)", f.principal,
				r == -ENOENT ? "does not exist" : "is not accessible");
		r = -ENOENT;
		goto out;
	}
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "%s", homes.errmsg ? homes.errmsg : strerror(-r));
		goto out;
	}
	if (!f.calendar_home && !f.addressbook_home) {
		free(*reterr_msg);
		*reterr_msg = NULL;
		(void) asprintf(reterr_msg, "the principal '%s' has neither a calendar-home-set nor "
				"an addressbook-home-set (is the username right?)", f.principal);
		r = -ENOENT;
		goto out;
	}
	ks_log_debug("discovery at %s: principal %s, calendar home %s, address book home %s",
		     base_url, f.principal, f.calendar_home ? f.calendar_home : "(none)",
		     f.addressbook_home ? f.addressbook_home : "(none)");
	ret->principal = TAKE_PTR(f.principal);
	ret->calendar_home = TAKE_PTR(f.calendar_home);
	ret->addressbook_home = TAKE_PTR(f.addressbook_home);
	r = 0;
	goto out;
auth:
	r = ks_set_error(reterr_msg, -EACCES, "%s", ks_manage_auth_message());
out:
	found_done(&f);
	return r;
}

int ks_discover_check_auth(ks_dav *d, const char *url)
{
	attempt a = {};
	found f = { .base_url = url };

	(void) propfind0(d, url, propfind_principal, &f, &a);
	found_done(&f);
	long st = a.status;
	attempt_done(&a);
	return st == 401 ? -EACCES : 0;
}

typedef struct listing {
	unsigned tokens;
	const char *base_url;
	const char *home;
	ks_collection *a;
	size_t n, cap;
} listing;

static int on_collection(const ks_ms_response *r, void *userdata)
{
	listing *l = userdata;
	_cleanup_free_ char *href = NULL;
	int k;

	if (r->status && (r->status < 200 || r->status >= 300))
		return 0;
	if (!(r->resourcetype & (KS_RT_CALENDAR | KS_RT_ADDRESSBOOK)))
		return 0;
	k = ks_href_normalize(l->base_url, r->href, &href);
	if (k == -ENOMEM)
		return k;
	if (k < 0)
		return 0;
	if (!strchr(href, '/') || href[strlen(href) - 1] != '/') {
		/* Collections are addressed with a trailing slash. */
		char *h2;
		if (asprintf(&h2, "%s/", href) < 0)
			return -ENOMEM;
		free(href);
		href = h2;
	}
	if (strcmp(href, l->home) == 0)
		return 0;
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 8;
		ks_collection *na = realloc(l->a, ncap * sizeof(*na));
		if (!na)
			return -ENOMEM;
		l->a = na;
		l->cap = ncap;
	}
	ks_collection *c = &l->a[l->n];
	*c = (ks_collection) {
		.href = TAKE_PTR(href),
		.kind = r->resourcetype & KS_RT_ADDRESSBOOK ? KS_COLLECTION_ADDRESSBOOK
							    : KS_COLLECTION_CALENDAR,
		.displayname = ks_vdir_displayname(r->displayname),
		.color = ks_vdir_color(r->color),
		.description = r->description ? strdup(r->description) : NULL,
		.components = r->has_components ? r->components
				: KS_COMP_VEVENT | KS_COMP_VTODO | KS_COMP_VJOURNAL,
		.readonly = r->has_privileges &&
			    !(r->privileges & (KS_PRIV_WRITE | KS_PRIV_WRITE_CONTENT)),
		/* A server that lists its reports says whether sync-collection is one of them;
		 * otherwise it is tried (without tokens asked, the token cannot tell), and
		 * given up on the first refusal. */
		.supports_sync = r->has_sync_report || r->sync_token ||
				 (!(l->tokens & KS_LIST_SYNC_TOKEN) && !r->has_report_set),
		.enabled = true,
		.sync_token = r->sync_token ? strdup(r->sync_token) : NULL,
		.ctag = r->ctag ? strdup(r->ctag) : NULL,
		.vcard4 = r->vcard4,
	};
	if (c->kind == KS_COLLECTION_ADDRESSBOOK)
		c->components = 0;
	l->n++;
	return 0;
}

int ks_list_home(ks_dav *d, const char *home, unsigned tokens, ks_collection **ret,
		 size_t *ret_n, char **reterr_msg)
{
	listing l = { .home = home, .tokens = tokens & KS_LIST_TOKENS };
	ks_dav_request req = {
		.method = "PROPFIND",
		.url = home,
		.depth = "1",
		.body = propfind_collections[l.tokens],
		.body_len = strlen(propfind_collections[l.tokens]),
		.on_response = on_collection,
		.userdata = &l,
	};
	int r;

	l.base_url = ks_dav_base_url(d);
	r = ks_dav_run_one(d, &req);
	if (r < 0) {
		if (req.status == 401)
			r = ks_set_error(reterr_msg, -EACCES, "%s", ks_manage_auth_message());
		else if (req.status == 403)
			r = ks_set_error(reterr_msg, -EPERM, "%s refused access (HTTP 403)", home);
		else if (reterr_msg) {
			free(*reterr_msg);
			*reterr_msg = strdup(req.errmsg);
		}
		ks_collection_free_array(l.a, l.n);
	} else {
		ks_log_debug("listing of %s: %zu collection(s)", home, l.n);
		*ret = l.a;
		*ret_n = l.n;
	}
	ks_dav_request_done(&req);
	return r;
}
