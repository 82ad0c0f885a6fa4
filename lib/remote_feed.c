/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "feed_p.h"
#include "hash_p.h"
#include "limits.h"
#include "macro.h"
#include "remote_p.h"
#include "session_p.h"
#include "text_p.h"

/* The remote store of a calendar subscription (an account with `feed =`): one read-only
 * calendar whose items are the events, tasks and journal entries of an iCalendar file on a
 * web server, one item per UID (with its exceptions and the time zones it names). The file
 * is fetched with a conditional GET against the validator the engine stored as the
 * collection's ctag (the ETag, "lm " and the Last-Modified date, or "sha256 " and the hash
 * of the bytes when the server gives neither); a 304 costs no parsing. Items have virtual
 * hrefs under the collection, which is the feed's path without ".ics", and etags that are
 * hashes of their bytes, so the engine sees an ordinary ctag-only calendar. Writes are
 * refused: the engine never sends any for a read-only collection. */

typedef struct feed_remote {
	ks_remote r;
	ks_dav *dav;
	char *url;		/* the feed's URL */
	char *coll;		/* the collection's href */
	char *name;		/* the account's name, shown as the calendar's */
	ks_feed_item *items;	/* sorted by href once loaded */
	size_t n_items;
	bool loaded;
	char *validator;	/* the ctag of the loaded file */
} feed_remote;

static feed_remote *of(ks_remote *r)
{
	return (feed_remote *) r;
}

static const feed_remote *of_const(const ks_remote *r)
{
	return (const feed_remote *) r;
}

static void items_free(feed_remote *f)
{
	ks_feed_items_free(f->items, f->n_items);
	f->items = NULL;
	f->n_items = 0;
	f->loaded = false;
	free(f->validator);
	f->validator = NULL;
}

static _printf_(4, 5) void fail(ks_remote_reply *ret, int r, long status, const char *fmt, ...)
{
	va_list ap;

	if (!ret)
		return;
	ret->result = r;
	ret->status = status;
	va_start(ap, fmt);
	vsnprintf(ret->errmsg, sizeof(ret->errmsg), fmt, ap);
	va_end(ap);
}

/* ---- fetching ----------------------------------------------------------------------------- */

/* GETs the file, conditionally on known (a validator as the ctag holds it). 1: the file is
 * unchanged (304, or the same bytes); 0: loaded. */
static int feed_get(feed_remote *f, const char *known, ks_remote_reply *ret)
{
	bool lm = known && strncmp(known, "lm ", 3) == 0;
	bool sha = known && strncmp(known, "sha256 ", 7) == 0;
	ks_dav_request req = {
		.method = "GET", .url = f->url, .accept = "text/calendar, */*;q=0.5",
		.follow_redirects = true, .max_body = KS_FEED_MAX,
		.if_none_match = known && !lm && !sha ? known : NULL,
		.if_modified_since = lm ? known + 3 : NULL,
	};
	char hex[65];
	int r = ks_dav_run_one(f->dav, &req);

	if (ret) {
		ret->result = req.result;
		ret->status = req.status;
		snprintf(ret->errmsg, sizeof(ret->errmsg), "%s", req.errmsg);
	}
	if (r < 0 && req.status != 304)
		goto out;
	items_free(f);
	if (req.status == 304) {
		r = 1;
		if (ret)
			ret->result = 0;
		goto out;
	}
	if (req.status != 200) {
		r = -EPROTO;
		fail(ret, r, req.status, "GET %s: the server answered without the file", f->url);
		goto out;
	}
	ks_sha256_hex(req.body_text ? req.body_text : "", req.body_text_len, hex);
	if (req.etag)
		f->validator = strdup(req.etag);
	else if (req.last_modified)
		r = asprintf(&f->validator, "lm %s", req.last_modified) < 0 ? -ENOMEM : 0;
	else
		r = asprintf(&f->validator, "sha256 %s", hex) < 0 ? -ENOMEM : 0;
	if (r >= 0 && !f->validator)
		r = -ENOMEM;
	if (r >= 0 && sha && strcmp(known + 7, hex) == 0) {
		r = 1;
		goto out;
	}
	if (r >= 0) {
		_cleanup_free_ char *why = NULL;
		r = ks_feed_split(f->coll, req.body_text ? req.body_text : "", req.body_text_len,
				  &f->items, &f->n_items, &why);
		if (r == -EBADMSG || r == -EFBIG)
			fail(ret, r, 200, "%s: %s", f->url, why ? why : strerror(-r));
		f->loaded = r >= 0;
	}
out:
	ks_dav_request_done(&req);
	return r;
}

static int feed_ctag(ks_remote *r, const char *collection, const char *known, char **ret_ctag,
		     ks_remote_reply *ret)
{
	feed_remote *f = of(r);
	int k = feed_get(f, known, ret);

	if (k < 0)
		return k;
	*ret_ctag = strdup(k == 1 ? known : f->validator);
	return *ret_ctag ? 0 : -ENOMEM;
}

static int feed_list(ks_remote *r, const char *collection, bool sync, const char *token,
		     ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret)
{
	feed_remote *f = of(r);
	int k = 0;

	if (sync) {
		fail(ret, -EOPNOTSUPP, 0, "%s: a subscription has no sync-collection", f->url);
		return -EOPNOTSUPP;
	}
	if (!f->loaded)
		k = feed_get(f, NULL, ret);
	if (k < 0)
		return k;
	for (size_t i = 0; i < f->n_items; i++) {
		ks_remote_member m = { .href = f->items[i].href, .etag = f->items[i].etag,
				       .status = 200 };
		k = fn(&m, userdata);
		if (k < 0)
			return k;
	}
	ret->result = 0;
	ret->status = 200;
	ret->ctag = f->validator ? strdup(f->validator) : NULL;
	return f->validator && !ret->ctag ? -ENOMEM : 0;
}

static int cmp_href(const void *key, const void *elem)
{
	return strcmp(key, ((const ks_feed_item *) elem)->href);
}

static const ks_feed_item *find(const feed_remote *f, const char *href)
{
	return f->n_items ? bsearch(href, f->items, f->n_items, sizeof(*f->items), cmp_href)
			  : NULL;
}

static int feed_fetch(ks_remote *r, ks_remote_batch *b, size_t n,
		      int (*done)(ks_remote_batch *b, void *userdata), void *userdata)
{
	feed_remote *f = of(r);

	for (size_t i = 0; i < n; i++) {
		int k = 0;

		for (size_t j = 0; k >= 0 && f->loaded && j < b[i].n_hrefs; j++) {
			const ks_feed_item *it = find(f, b[i].hrefs[j]);
			if (!it)
				continue;
			ks_remote_item item = { .href = it->href, .etag = it->etag,
						.data = it->data, .len = it->len };
			k = b[i].on_item(&item, b[i].userdata);
		}
		b[i].reply.result = k < 0 ? k : 0;
		b[i].reply.status = 207;
		if (k >= 0)
			k = done(&b[i], userdata);
		if (k < 0)
			return k;
	}
	return 0;
}

static int feed_get_one(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret)
{
	const ks_feed_item *it = find(of(r), href);

	if (!it) {
		fail(ret, -ENOENT, 404, "%s: no such item in the subscription", href);
		return -ENOENT;
	}
	ret->body = malloc(it->len + 1);
	ret->etag = strdup(it->etag);
	if (!ret->body || !ret->etag)
		return -ENOMEM;
	memcpy(ret->body, it->data, it->len + 1);
	ret->body_len = it->len;
	ret->result = 0;
	ret->status = 200;
	return 0;
}

static int feed_write(ks_remote *r, ks_remote_write *w, size_t n,
		      int (*done)(ks_remote_write *w, void *userdata), void *userdata)
{
	for (size_t i = 0; i < n; i++) {
		fail(&w[i].reply, -EROFS, 403, "%s: a subscription is read-only", w[i].href);
		int k = done(&w[i], userdata);
		if (k < 0)
			return k;
	}
	return 0;
}

static int feed_probe(ks_remote *r, const char *collection, ks_remote_reply *ret)
{
	return 0;
}

static int feed_discover(ks_remote *r, ks_cache_account *ret, char **reterr_msg)
{
	feed_remote *f = of(r);

	ks_cache_account_done(ret);
	ret->principal = strdup(f->coll);
	ret->calendar_home = strdup(f->coll);
	return ret->principal && ret->calendar_home ? 0 : -ENOMEM;
}

static int feed_list_home(ks_remote *r, const char *home, unsigned tokens, ks_collection **ret,
			  size_t *ret_n, char **reterr_msg)
{
	feed_remote *f = of(r);
	ks_collection *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	*c = (ks_collection) {
		.href = strdup(f->coll), .kind = KS_COLLECTION_CALENDAR,
		.displayname = strdup(f->name), .readonly = true,
		.components = KS_COMP_VEVENT | KS_COMP_VTODO,
	};
	if (!c->href || !c->displayname) {
		ks_collection_free_array(c, 1);
		return -ENOMEM;
	}
	*ret = c;
	*ret_n = 1;
	return 0;
}

static int feed_check_auth(ks_remote *r)
{
	return 0;
}

static const char *feed_base_url(const ks_remote *r)
{
	return of_const(r)->url;
}

static unsigned feed_request_count(const ks_remote *r)
{
	return ks_dav_request_count(of_const(r)->dav);
}

static unsigned feed_retry_after(const ks_remote *r)
{
	return ks_dav_retry_after(of_const(r)->dav);
}

static void feed_free(ks_remote *r)
{
	feed_remote *f = of(r);

	items_free(f);
	ks_dav_free(f->dav);
	free(f->url);
	free(f->coll);
	free(f->name);
	free(f);
}

static const ks_remote_ops feed_ops = {
	.list = feed_list,
	.ctag = feed_ctag,
	.fetch = feed_fetch,
	.get = feed_get_one,
	.write = feed_write,
	.probe = feed_probe,
	.discover = feed_discover,
	.list_home = feed_list_home,
	.check_auth = feed_check_auth,
	.base_url = feed_base_url,
	.request_count = feed_request_count,
	.retry_after = feed_retry_after,
	.free = feed_free,
};

/* The collection's href: the feed's path without ".ics", with a slash. */
static int collection_href(const char *url, char **ret)
{
	_cleanup_free_ char *path = NULL;
	int r = ks_href_normalize(url, url, &path);
	size_t n;

	if (r < 0)
		return r;
	n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (n > 4 && strncasecmp(path + n - 4, ".ics", 4) == 0)
		n -= 4;
	if (n <= 1)
		return asprintf(ret, "/feed/") < 0 ? -ENOMEM : 0;
	return asprintf(ret, "%.*s/", (int) n, path) < 0 ? -ENOMEM : 0;
}

int ks_remote_feed_new(const ks_account_config *a, const char *password, bool fetch_password,
		       ks_remote **ret, char **reterr_msg)
{
	feed_remote *f = calloc(1, sizeof(*f));
	int r;

	if (!f)
		return -ENOMEM;
	f->r.ops = &feed_ops;
	f->url = strdup(a->url);
	f->name = strdup(a->name);
	r = f->url && f->name ? collection_href(a->url, &f->coll) : -ENOMEM;
	if (r == -EINVAL)
		r = ks_set_error(reterr_msg, r, "cannot use the feed URL '%s'", a->url);
	if (r >= 0)
		r = fetch_password ? ks_session_new(a, &f->dav, reterr_msg)
				   : ks_session_new_with(a, password, &f->dav, reterr_msg);
	if (r < 0) {
		feed_free(&f->r);
		return r;
	}
	*ret = &f->r;
	return 0;
}
