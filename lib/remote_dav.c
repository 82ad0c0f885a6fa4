/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf_p.h"
#include "discover_p.h"
#include "limits.h"
#include "macro.h"
#include "remote_p.h"
#include "session_p.h"
#include "xml_p.h"

/* The remote store over CalDAV/CardDAV: each operation is one or more requests on the
 * account's libcurl session, and each answer is read as it streams in. */

typedef struct dav_remote {
	ks_remote r;
	ks_dav *dav;
	char *url;
} dav_remote;

static int dav_list(ks_remote *r, const char *collection, bool sync, const char *token,
		    ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret);
static int dav_query(ks_remote *r, const char *collection, int64_t start, int64_t end,
		     ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret);
static int dav_ctag(ks_remote *r, const char *collection, const char *known, char **ret_ctag,
		    ks_remote_reply *ret);
static int dav_fetch(ks_remote *r, ks_remote_batch *b, size_t n,
		     int (*done)(ks_remote_batch *b, void *userdata), void *userdata);
static int dav_get(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret);
static int dav_write(ks_remote *r, ks_remote_write *w, size_t n,
		     int (*done)(ks_remote_write *w, void *userdata), void *userdata);
static int dav_probe(ks_remote *r, const char *collection, ks_remote_reply *ret);
static int dav_discover(ks_remote *r, ks_cache_account *ret, char **reterr_msg);
static int dav_list_home(ks_remote *r, const char *home, unsigned tokens, ks_collection **ret,
			 size_t *ret_n, char **reterr_msg);
static int dav_check_auth(ks_remote *r);
static const char *dav_base_url(const ks_remote *r);
static unsigned dav_request_count(const ks_remote *r);
static unsigned dav_retry_after(const ks_remote *r);
static void dav_free(ks_remote *r);

static const ks_remote_ops dav_ops = {
	.list = dav_list,
	.query = dav_query,
	.ctag = dav_ctag,
	.fetch = dav_fetch,
	.get = dav_get,
	.write = dav_write,
	.probe = dav_probe,
	.discover = dav_discover,
	.list_home = dav_list_home,
	.check_auth = dav_check_auth,
	.base_url = dav_base_url,
	.request_count = dav_request_count,
	.retry_after = dav_retry_after,
	.free = dav_free,
};

static int remote_new(const ks_account_config *a, bool fetch_password, const char *password,
		      ks_remote **ret, char **reterr_msg)
{
	dav_remote *d;
	int r;

	/* A subscription is a store of its own; everything else is CalDAV/CardDAV. */
	if (a->feed)
		return ks_remote_feed_new(a, password, fetch_password, ret, reterr_msg);
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->r.ops = &dav_ops;
	d->url = strdup(a->url);
	if (!d->url) {
		free(d);
		return -ENOMEM;
	}
	r = fetch_password ? ks_session_new(a, &d->dav, reterr_msg)
			   : ks_session_new_with(a, password, &d->dav, reterr_msg);
	if (r < 0) {
		dav_free(&d->r);
		return r;
	}
	*ret = &d->r;
	return 0;
}

int ks_remote_dav_new(const ks_account_config *a, const char *password, ks_remote **ret,
		      char **reterr_msg)
{
	return remote_new(a, false, password, ret, reterr_msg);
}

int ks_remote_dav_open(const ks_account_config *a, ks_remote **ret, char **reterr_msg)
{
	return remote_new(a, true, NULL, ret, reterr_msg);
}

ks_remote *ks_remote_free(ks_remote *r)
{
	if (r)
		r->ops->free(r);
	return NULL;
}

void ks_remote_reply_done(ks_remote_reply *r)
{
	if (!r)
		return;
	free(r->etag);
	free(r->sync_token);
	free(r->ctag);
	free(r->body);
	r->etag = r->sync_token = r->ctag = r->body = NULL;
	r->body_len = 0;
}

static int write_one_done(ks_remote_write *w, void *userdata)
{
	return 0;
}

int ks_remote_write_one(ks_remote *r, ks_remote_write *w)
{
	int k = ks_remote_write_all(r, w, 1, write_one_done, NULL);

	return k < 0 ? k : w->reply.result;
}

static dav_remote *of(ks_remote *r)
{
	return (dav_remote *) r;
}

static const dav_remote *of_const(const ks_remote *r)
{
	return (const dav_remote *) r;
}

/* What a finished request says, moved into a reply. */
static void take_reply(ks_dav_request *req, ks_remote_reply *ret)
{
	ret->result = req->result;
	ret->status = req->status;
	snprintf(ret->errmsg, sizeof(ret->errmsg), "%s", req->errmsg);
	ret->etag = TAKE_PTR(req->etag);
	ret->sync_token = TAKE_PTR(req->sync_token);
	ret->body = TAKE_PTR(req->body_text);
	ret->body_len = req->body_text_len;
	ks_dav_request_done(req);
}

/* ---- listings ------------------------------------------------------------------------------ */

typedef struct member_ctx {
	ks_remote_member_fn fn;
	void *userdata;
	char *ctag;		/* the collection's own, from an etag listing */
} member_ctx;

static int on_member(const ks_ms_response *resp, void *userdata)
{
	member_ctx *m = userdata;
	ks_remote_member member = {
		.href = resp->href, .etag = resp->etag, .status = resp->status,
	};

	if (resp->ctag && (resp->resourcetype & KS_RT_COLLECTION) && !m->ctag) {
		/* Read in the same request as the etags, it cannot be newer than they are. */
		m->ctag = strdup(resp->ctag);
		if (!m->ctag)
			return -ENOMEM;
	}
	return m->fn(&member, m->userdata);
}

static int dav_list(ks_remote *r, const char *collection, bool sync, const char *token,
		    ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret)
{
	static const char propfind[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\" xmlns:cs=\"http://calendarserver.org/ns/\"><d:prop>"
		"<d:getetag/><d:resourcetype/><cs:getctag/></d:prop></d:propfind>\n";
	member_ctx m = { .fn = fn, .userdata = userdata };
	ks_buf body = {};
	int k = 0;

	if (sync) {
		k = ks_buf_puts(&body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
				       "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>");
		if (k >= 0 && token)
			k = ks_xml_escape(&body, token);
		if (k >= 0)
			k = ks_buf_puts(&body, "</d:sync-token><d:sync-level>1</d:sync-level>"
					"<d:prop><d:getetag/></d:prop></d:sync-collection>\n");
		if (k < 0) {
			ks_buf_done(&body);
			return k;
		}
	}
	ks_dav_request req = {
		.method = sync ? "REPORT" : "PROPFIND",
		.url = collection,
		.depth = sync ? "0" : "1",
		.body = sync ? body.data : propfind,
		.body_len = sync ? body.len : sizeof(propfind) - 1,
		.on_response = on_member,
		.userdata = &m,
	};
	k = ks_dav_run_one(of(r)->dav, &req);
	take_reply(&req, ret);
	ret->ctag = TAKE_PTR(m.ctag);
	ks_buf_done(&body);
	return k;
}

static int time_range_attr(ks_buf *b, const char *name, int64_t t)
{
	time_t tt = (time_t) t;
	struct tm tm;
	char when[32];

	if (!gmtime_r(&tt, &tm) || !strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm))
		return -ERANGE;
	return ks_buf_printf(b, " %s=\"%s\"", name, when);
}

static int dav_query(ks_remote *r, const char *collection, int64_t start, int64_t end,
		     ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret)
{
	member_ctx m = { .fn = fn, .userdata = userdata };
	ks_buf body = {};
	int k = ks_buf_puts(&body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
				   "<c:calendar-query xmlns:d=\"DAV:\" "
				   "xmlns:c=\"urn:ietf:params:xml:ns:caldav\">"
				   "<d:prop><d:getetag/></d:prop><c:filter>"
				   "<c:comp-filter name=\"VCALENDAR\"><c:comp-filter name=\"VEVENT\">");

	/* RFC 4791 9.7.1: the time-range comes before the prop-filters. */
	if (k >= 0 && (start || end)) {
		k = ks_buf_puts(&body, "<c:time-range");
		if (k >= 0 && start)
			k = time_range_attr(&body, "start", start);
		if (k >= 0 && end)
			k = time_range_attr(&body, "end", end);
		if (k >= 0)
			k = ks_buf_puts(&body, "/>");
	}
	if (k >= 0)
		k = ks_buf_puts(&body, "<c:prop-filter name=\"RRULE\"><c:is-not-defined/>"
				       "</c:prop-filter><c:prop-filter name=\"RDATE\">"
				       "<c:is-not-defined/></c:prop-filter>"
				       "<c:prop-filter name=\"RECURRENCE-ID\"><c:is-not-defined/>"
				       "</c:prop-filter></c:comp-filter></c:comp-filter></c:filter>"
				       "</c:calendar-query>\n");
	if (k < 0) {
		ks_buf_done(&body);
		return k;
	}
	ks_dav_request req = {
		.method = "REPORT", .url = collection, .depth = "1", .body = body.data,
		.body_len = body.len, .on_response = on_member, .userdata = &m,
	};
	k = ks_dav_run_one(of(r)->dav, &req);
	take_reply(&req, ret);
	free(m.ctag);
	ks_buf_done(&body);
	return k;
}

static int on_ctag(const ks_ms_response *resp, void *userdata)
{
	char **ctag = userdata;

	if (resp->ctag && !*ctag) {
		*ctag = strdup(resp->ctag);
		if (!*ctag)
			return -ENOMEM;
	}
	return 0;
}

static int dav_ctag(ks_remote *r, const char *collection, const char *known, char **ret_ctag,
		    ks_remote_reply *ret)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\" xmlns:cs=\"http://calendarserver.org/ns/\">"
		"<d:prop><cs:getctag/></d:prop></d:propfind>\n";
	char *ctag = NULL;
	ks_dav_request req = {
		.method = "PROPFIND", .url = collection, .depth = "0", .body = body,
		.body_len = sizeof(body) - 1, .on_response = on_ctag, .userdata = &ctag,
	};
	int k = ks_dav_run_one(of(r)->dav, &req);

	take_reply(&req, ret);
	if (k < 0) {
		free(ctag);
		return k;
	}
	*ret_ctag = ctag;
	return 0;
}

/* ---- fetching ------------------------------------------------------------------------------ */

/* XML parsers turn CRLF into LF (XML 1.0, 2.11), so calendar-data and address-data arrive
 * with bare LF unless the server wrote CR as "&#13;". vCard and iCalendar lines end in CRLF
 * (RFC 6350 3.2, RFC 5545 3.1): without any CR, put them back, which gives the bytes the
 * server holds for every item stored as the standards require. */
static int restore_crlf(const char *data, size_t len, char **ret, size_t *ret_len)
{
	size_t lf = 0;
	bool has_cr = memchr(data, '\r', len) != NULL;

	if (!has_cr)
		for (size_t i = 0; i < len; i++)
			lf += data[i] == '\n';
	char *out = malloc(len + lf + 1);
	if (!out)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (!has_cr && data[i] == '\n')
			out[o++] = '\r';
		out[o++] = data[i];
	}
	out[o] = 0;
	*ret = out;
	*ret_len = o;
	return 0;
}

typedef struct slot slot;

static int on_multiget(const ks_ms_response *resp, void *userdata);
static int multiget_body(const ks_remote_batch *b, ks_buf *body)
{
	const char *open = !b->card ? "<c:calendar-multiget xmlns:d=\"DAV:\" "
				      "xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:prop>"
				      "<d:getetag/><c:calendar-data/></d:prop>"
			   : b->vcard4 ? "<a:addressbook-multiget xmlns:d=\"DAV:\" "
					 "xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop>"
					 "<d:getetag/><a:address-data content-type=\"text/vcard\" "
					 "version=\"4.0\"/></d:prop>"
				       : "<a:addressbook-multiget xmlns:d=\"DAV:\" "
					 "xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop>"
					 "<d:getetag/><a:address-data/></d:prop>";
	int k = ks_buf_puts(body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");

	if (k >= 0)
		k = ks_buf_puts(body, open);
	for (size_t i = 0; k >= 0 && i < b->n_hrefs; i++) {
		k = ks_buf_puts(body, "<d:href>");
		if (k >= 0)
			k = ks_xml_escape(body, b->hrefs[i]);
		if (k >= 0)
			k = ks_buf_puts(body, "</d:href>");
	}
	if (k >= 0)
		k = ks_buf_puts(body, b->card ? "</a:addressbook-multiget>\n"
					      : "</c:calendar-multiget>\n");
	return k;
}

/* What each request of a dav_fetch() or dav_write() knows: its job and the caller's done. */
struct slot {
	void *job;
	int (*done)(void *job, void *userdata);
	void *userdata;
	ks_remote_reply *reply;
};

static int on_multiget(const ks_ms_response *resp, void *userdata)
{
	slot *s = userdata;
	ks_remote_batch *b = s->job;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int k;

	if (!resp->data)
		return 0;
	k = restore_crlf(resp->data, resp->data_len, &data, &len);
	if (k < 0)
		return k;
	ks_remote_item it = { .href = resp->href, .etag = resp->etag, .data = data, .len = len };
	return b->on_item(&it, b->userdata);
}

static int on_slot_done(ks_dav_request *req, void *userdata)
{
	slot *s = userdata;

	take_reply(req, s->reply);
	return s->done(s->job, s->userdata);
}

static int dav_fetch(ks_remote *r, ks_remote_batch *b, size_t n,
		     int (*done)(ks_remote_batch *b, void *userdata), void *userdata)
{
	ks_dav_request *reqs = calloc(n ? n : 1, sizeof(*reqs));
	slot *slots = calloc(n ? n : 1, sizeof(*slots));
	ks_buf *bodies = calloc(n ? n : 1, sizeof(*bodies));
	int k = reqs && slots && bodies ? 0 : -ENOMEM;

	/* Request bodies are small (100 hrefs): all of them are built before the run. */
	for (size_t i = 0; k >= 0 && i < n; i++) {
		k = multiget_body(&b[i], &bodies[i]);
		slots[i] = (slot) {
			.job = &b[i], .done = (int (*)(void *, void *)) done, .userdata = userdata,
			.reply = &b[i].reply,
		};
		reqs[i] = (ks_dav_request) {
			.method = "REPORT", .url = b[i].collection, .depth = "1",
			.body = bodies[i].data, .body_len = bodies[i].len,
			.on_response = on_multiget, .on_done = on_slot_done, .userdata = &slots[i],
		};
	}
	if (k >= 0)
		k = ks_dav_run(of(r)->dav, reqs, n);
	for (size_t i = 0; reqs && i < n; i++)
		ks_dav_request_done(&reqs[i]);
	for (size_t i = 0; bodies && i < n; i++)
		ks_buf_done(&bodies[i]);
	free(reqs);
	free(slots);
	free(bodies);
	return k;
}

static int dav_get(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret)
{
	ks_dav_request req = {
		.method = "GET", .url = href, .max_body = KS_CARD_MAX,
		.accept = vcard4 ? "text/vcard; version=4.0" : NULL,
	};
	int k = ks_dav_run_one(of(r)->dav, &req);

	take_reply(&req, ret);
	return k;
}

/* ---- writing ------------------------------------------------------------------------------- */

static int dav_write(ks_remote *r, ks_remote_write *w, size_t n,
		     int (*done)(ks_remote_write *w, void *userdata), void *userdata)
{
	ks_dav_request *reqs = calloc(n ? n : 1, sizeof(*reqs));
	slot *slots = calloc(n ? n : 1, sizeof(*slots));
	int k = reqs && slots ? 0 : -ENOMEM;

	for (size_t i = 0; k >= 0 && i < n; i++) {
		bool put = w[i].op == KS_REMOTE_PUT;
		slots[i] = (slot) {
			.job = &w[i], .done = (int (*)(void *, void *)) done, .userdata = userdata,
			.reply = &w[i].reply,
		};
		reqs[i] = (ks_dav_request) {
			.method = put ? "PUT" : "DELETE",
			.url = w[i].href,
			.body = put ? w[i].data : NULL,
			.body_len = put ? w[i].len : 0,
			.content_type = !put ? NULL : w[i].card ? "text/vcard; charset=utf-8"
								: "text/calendar; charset=utf-8",
			.if_match = w[i].if_match,
			.if_none_match = put && !w[i].if_match ? "*" : NULL,
			.on_done = on_slot_done,
			.userdata = &slots[i],
		};
	}
	if (k >= 0)
		k = ks_dav_run(of(r)->dav, reqs, n);
	for (size_t i = 0; reqs && i < n; i++)
		ks_dav_request_done(&reqs[i]);
	free(reqs);
	free(slots);
	return k;
}

/* ---- collections and the account ----------------------------------------------------------- */

static int on_probe(const ks_ms_response *resp, void *userdata)
{
	int *gone = userdata;

	/* Depth 0: this is the collection itself, whatever form its href takes. Some servers
	 * (Xandikos) answer a missing one with a 207 whose response says 404. */
	if (resp->status == 404 || resp->status == 410)
		*gone = 1;
	return 0;
}

static int dav_probe(ks_remote *r, const char *collection, ks_remote_reply *ret)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\"><d:prop><d:resourcetype/></d:prop></d:propfind>\n";
	int gone = 0;
	ks_dav_request req = {
		.method = "PROPFIND", .url = collection, .depth = "0", .body = body,
		.body_len = sizeof(body) - 1, .on_response = on_probe, .userdata = &gone,
	};
	int k = ks_dav_run_one(of(r)->dav, &req);

	take_reply(&req, ret);
	if (k >= 0 && gone)
		k = ret->result = -ENOENT;
	return k;
}

static int dav_discover(ks_remote *r, ks_cache_account *ret, char **reterr_msg)
{
	return ks_discover(of(r)->dav, of(r)->url, ret, reterr_msg);
}

static int dav_list_home(ks_remote *r, const char *home, unsigned tokens, ks_collection **ret,
			 size_t *ret_n, char **reterr_msg)
{
	return ks_list_home(of(r)->dav, home, tokens, ret, ret_n, reterr_msg);
}

static int dav_check_auth(ks_remote *r)
{
	return ks_discover_check_auth(of(r)->dav, of(r)->url);
}

static const char *dav_base_url(const ks_remote *r)
{
	return ks_dav_base_url(of_const(r)->dav);
}

static unsigned dav_request_count(const ks_remote *r)
{
	return ks_dav_request_count(of_const(r)->dav);
}

static unsigned dav_retry_after(const ks_remote *r)
{
	return ks_dav_retry_after(of_const(r)->dav);
}

static void dav_free(ks_remote *r)
{
	dav_remote *d = of(r);

	ks_dav_free(d->dav);
	free(d->url);
	free(d);
}
