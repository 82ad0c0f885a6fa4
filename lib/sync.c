/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dav_p.h"
#include "discover_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "item_p.h"
#include "ksync.h"
#include "limits.h"
#include "log_p.h"
#include "macro.h"
#include "vdir_p.h"

/* Discovery of principal and home sets is repeated at most this often; collections are
 * listed from the home sets on every run, which also finds new ones. */
#define REDISCOVER_SECS (24 * 3600)
/* The home sets are listed (new, removed and renamed collections) at most this often. */
#define LIST_SECS 3600

struct ks_engine {
	char *data_dir;
	ks_cache *cache;
};

int ks_data_dir_default(char **ret)
{
	const char *x = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	char *p;

	if (x && x[0] == '/')
		return asprintf(&p, "%s/ksync", x) < 0 ? -ENOMEM : (*ret = p, 0);
	if (!home || home[0] != '/')
		return -ENOENT;
	return asprintf(&p, "%s/.local/share/ksync", home) < 0 ? -ENOMEM : (*ret = p, 0);
}

int ks_engine_new(const char *data_dir, ks_engine **ret)
{
	_cleanup_free_ char *db = NULL;
	ks_engine *e;
	int r;

	r = ks_fs_mkdir_p(data_dir);
	if (r < 0)
		return r;
	if (asprintf(&db, "%s/ksync.db", data_dir) < 0)
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->data_dir = strdup(data_dir);
	if (!e->data_dir) {
		free(e);
		return -ENOMEM;
	}
	r = ks_cache_open(db, &e->cache);
	if (r < 0) {
		ks_engine_free(e);
		return r;
	}
	*ret = e;
	return 0;
}

ks_engine *ks_engine_free(ks_engine *e)
{
	if (!e)
		return NULL;
	ks_cache_free(e->cache);
	free(e->data_dir);
	free(e);
	return NULL;
}

ks_error_scope ks_error_scope_of(int r)
{
	switch (r) {
	case -EBADMSG:
	case -ENODATA:
	case -ENOTUNIQ:
	case -EFBIG:
		return KS_SCOPE_ITEM;
	case -EACCES:
	case -ECONNREFUSED:
	case -ETIMEDOUT:
	case -EHOSTUNREACH:
	case -ECONNRESET:
	case -EAGAIN:
	case -ENOMEM:
	case -EPROTO:
	case -EKEYREJECTED:
		return KS_SCOPE_ACCOUNT;
	default:
		return KS_SCOPE_COLLECTION;
	}
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* ---- one run ------------------------------------------------------------------------------ */

typedef struct run {
	ks_engine *e;
	const ks_account_config *acc;
	const ks_sync_opts *o;
	ks_dav *dav;
} run;

static void emit(run *R, const ks_sync_event *ev)
{
	if (R->o->on_event)
		R->o->on_event(ev, R->o->userdata);
}

static void emit_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void emit_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ks_sync_event ev = {
		.type = t, .account = R->acc->name, .collection = coll, .error = err, .message = msg,
	};
	emit(R, &ev);
}

/* Per-collection state while it syncs. */
typedef struct coll_run {
	run *R;
	ks_collection *col;
	char label[KS_NAME_MAX + 16];	/* contacts/<name> */
	int dirfd;
	const char *ext;
	bool full;		/* listing everything: items not seen are gone */
	/* hrefs to fetch (with the etag the listing gave) and to delete */
	char **fetch;
	size_t n_fetch, cap_fetch;
	char **gone;
	size_t n_gone, cap_gone;
	char **seen;		/* full listings: every href the server has, sorted later */
	size_t n_seen, cap_seen;
	bool truncated;
	int cb_error;
	unsigned added, updated, deleted, skipped, failed_fetch;
	unsigned fetched;
} coll_run;

static int strv_push(char ***v, size_t *n, size_t *cap, const char *s)
{
	if (*n >= KS_COLLECTION_MAX_ITEMS)
		return -E2BIG;
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		char **nv = realloc(*v, ncap * sizeof(char *));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	char *d = strdup(s);
	if (!d)
		return -ENOMEM;
	(*v)[(*n)++] = d;
	return 0;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void coll_run_done(coll_run *c)
{
	strv_free(c->fetch, c->n_fetch);
	strv_free(c->gone, c->n_gone);
	strv_free(c->seen, c->n_seen);
	if (c->dirfd >= 0)
		close(c->dirfd);
}

static bool is_collection_href(const coll_run *c, const char *href)
{
	size_t n = strlen(c->col->href);
	/* The collection itself, with or without its trailing slash. */
	return strcmp(href, c->col->href) == 0 ||
	       (strlen(href) == n - 1 && strncmp(href, c->col->href, n - 1) == 0);
}

/* A listing entry (sync-collection or PROPFIND Depth 1): decide fetch or delete. */
static int on_listing(const ks_ms_response *r, void *userdata)
{
	coll_run *c = userdata;
	_cleanup_free_ char *href = NULL;
	ks_cache_item it = {};
	int k;

	k = ks_href_normalize(ks_dav_base_url(c->R->dav), r->href, &href);
	if (k == -ENOMEM)
		return k;
	if (k < 0) {
		c->skipped++;
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, -EINVAL,
			  "ignoring unusable href '%.200s' from the server", r->href);
		return 0;
	}
	if (is_collection_href(c, href)) {
		if (r->status == 507)
			c->truncated = true;
		return 0;
	}
	/* Only direct members of the collection become items. */
	size_t n = strlen(c->col->href);
	if (strncmp(href, c->col->href, n) != 0 || strchr(href + n, '/'))
		return 0;
	if (r->status == 404 || r->status == 410)
		return strv_push(&c->gone, &c->n_gone, &c->cap_gone, href);
	if (r->status && (r->status < 200 || r->status >= 300))
		return 0;
	if (c->full) {
		k = strv_push(&c->seen, &c->n_seen, &c->cap_seen, href);
		if (k < 0)
			return k;
	}
	k = ks_cache_get_item(c->R->e->cache, c->col->id, href, &it);
	if (k < 0 && k != -ENOENT)
		return k;
	bool same = k >= 0 && r->etag && it.etag && strcmp(it.etag, r->etag) == 0;
	ks_cache_item_done(&it);
	if (same && !c->R->o->force)
		return 0;
	return strv_push(&c->fetch, &c->n_fetch, &c->cap_fetch, href);
}

static bool token_rejected(const ks_dav_request *req)
{
	/* RFC 6578 3.2: 403 or 409 with DAV:valid-sync-token; some servers answer 400, and
	 * Xandikos a 500, for a token they no longer know. */
	if (req->status == 403 || req->status == 409 || req->status == 400)
		return !req->body_text || strstr(req->body_text, "valid-sync-token") ||
		       req->status == 400;
	return req->status == 500;
}

/* Runs a listing request inside one read transaction: the cache lookup for every member
 * then costs no lock of its own. */
static int run_listing(coll_run *c, ks_dav_request *req)
{
	int r = ks_cache_begin_read(c->R->e->cache);
	if (r < 0)
		return r;
	r = ks_dav_run_one(c->R->dav, req);
	ks_cache_end_read(c->R->e->cache);
	return r;
}

static int sync_report(coll_run *c, const char *token, ks_dav_request *req)
{
	ks_buf body = {};
	int r;

	r = ks_buf_puts(&body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
			       "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>");
	if (r >= 0 && token)
		r = ks_xml_escape(&body, token);
	if (r >= 0)
		r = ks_buf_puts(&body, "</d:sync-token><d:sync-level>1</d:sync-level>"
				       "<d:prop><d:getetag/></d:prop></d:sync-collection>\n");
	if (r < 0) {
		ks_buf_done(&body);
		return r;
	}
	*req = (ks_dav_request) {
		.method = "REPORT",
		.url = c->col->href,
		.depth = "0",
		.body = body.data,
		.body_len = body.len,
		.on_response = on_listing,
		.userdata = c,
	};
	r = run_listing(c, req);
	ks_buf_done(&body);
	return r;
}

static int propfind_listing(coll_run *c, ks_dav_request *req)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\"><d:prop><d:getetag/><d:resourcetype/></d:prop>"
		"</d:propfind>\n";

	*req = (ks_dav_request) {
		.method = "PROPFIND",
		.url = c->col->href,
		.depth = "1",
		.body = body,
		.body_len = sizeof(body) - 1,
		.on_response = on_listing,
		.userdata = c,
	};
	return run_listing(c, req);
}

static int on_ctag(const ks_ms_response *r, void *userdata)
{
	char **ctag = userdata;

	if (r->ctag && !*ctag) {
		*ctag = strdup(r->ctag);
		if (!*ctag)
			return -ENOMEM;
	}
	return 0;
}

/* PROPFIND Depth 0 for getctag, for collections without sync-collection. */
static int fetch_ctag(coll_run *c, char **ret)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\" xmlns:cs=\"http://calendarserver.org/ns/\">"
		"<d:prop><cs:getctag/></d:prop></d:propfind>\n";
	char *ctag = NULL;
	ks_dav_request req = {
		.method = "PROPFIND",
		.url = c->col->href,
		.depth = "0",
		.body = body,
		.body_len = sizeof(body) - 1,
		.on_response = on_ctag,
		.userdata = &ctag,
	};
	int r = ks_dav_run_one(c->R->dav, &req);

	ks_dav_request_done(&req);
	if (r < 0) {
		free(ctag);
		return r;
	}
	free(*ret);
	*ret = ctag;
	return 0;
}

/* ---- fetching and applying ---------------------------------------------------------------- */

typedef struct fetched_item {
	char *href;
	char *etag;
	char *data;
	size_t len;
} fetched_item;

typedef struct batch {
	coll_run *c;
	char **hrefs;		/* borrowed from c->fetch */
	size_t n_hrefs;
	fetched_item *items;
	size_t n_items;
	ks_buf body;
} batch;

static void batch_clear_items(batch *b)
{
	for (size_t i = 0; i < b->n_items; i++) {
		free(b->items[i].href);
		free(b->items[i].etag);
		free(b->items[i].data);
	}
	free(b->items);
	b->items = NULL;
	b->n_items = 0;
}

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

static int on_multiget(const ks_ms_response *r, void *userdata)
{
	batch *b = userdata;
	_cleanup_free_ char *href = NULL;
	int k;

	if (!r->data)
		return 0;
	k = ks_href_normalize(ks_dav_base_url(b->c->R->dav), r->href, &href);
	if (k == -ENOMEM)
		return k;
	if (k < 0)
		return 0;
	/* Only what was asked for: a server cannot slip in items under other names. */
	bool asked = false;
	for (size_t i = 0; i < b->n_hrefs && !asked; i++)
		asked = strcmp(b->hrefs[i], href) == 0;
	if (!asked)
		return 0;
	fetched_item *ni = realloc(b->items, (b->n_items + 1) * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	b->items = ni;
	fetched_item *it = &b->items[b->n_items];
	*it = (fetched_item) { .href = TAKE_PTR(href), .etag = r->etag ? strdup(r->etag) : NULL };
	b->n_items++;
	return restore_crlf(r->data, r->data_len, &it->data, &it->len);
}

typedef struct staged {
	fetched_item *f;
	ks_item_info info;
	char *filename;
	struct stat st;
	char hash[65];
	bool is_new;
} staged;

static int pick_filename(coll_run *c, const fetched_item *f, const ks_item_info *info,
			 const staged *batch_items, size_t n_batch, char **ret)
{
	_cleanup_free_ char *base = NULL;
	int r = ks_vdir_item_name(info->uid, f->href, &base);

	if (r < 0)
		return r;
	for (unsigned attempt = 0; attempt < 100; attempt++) {
		char *name;
		if (attempt == 0)
			r = asprintf(&name, "%s%s", base, c->ext);
		else {
			char hex[65];
			ks_sha256_hex(f->href, strlen(f->href), hex);
			r = asprintf(&name, "%s-%.*s%s", base, 8 + (int) attempt, hex, c->ext);
		}
		if (r < 0)
			return -ENOMEM;
		bool taken = false;
		for (size_t i = 0; i < n_batch && !taken; i++)
			taken = batch_items[i].filename && strcmp(batch_items[i].filename, name) == 0;
		if (!taken) {
			r = ks_cache_filename_taken(c->R->e->cache, c->col->id, name, f->href);
			if (r < 0) {
				free(name);
				return r;
			}
			taken = r > 0;
		}
		if (!taken) {
			*ret = name;
			return 0;
		}
		free(name);
	}
	return -EEXIST;
}

/* Writes a batch of fetched items: files first (one flush for the batch), then their rows in
 * one transaction. */
static int apply_batch(coll_run *c, batch *b)
{
	ks_cache *cache = c->R->e->cache;
	staged *st = calloc(b->n_items ? b->n_items : 1, sizeof(*st));
	ks_fs_batch *fb = NULL;
	size_t n = 0;
	bool in_tx = false;
	int r;

	if (!st)
		return -ENOMEM;
	r = ks_fs_batch_new(c->dirfd, &fb);
	if (r < 0)
		goto out;
	/* One transaction for the lookups and the rows of the batch: besides atomicity, it
	 * spares SQLite a lock and unlock per statement. */
	r = ks_cache_begin(cache);
	if (r < 0)
		goto out;
	in_tx = true;
	for (size_t i = 0; i < b->n_items; i++) {
		fetched_item *f = &b->items[i];
		staged *s = &st[n];
		_cleanup_free_ char *why = NULL;
		ks_cache_item old = {};

		s->f = f;
		r = ks_item_parse_info(f->data, f->len, &s->info, &why);
		if (r == -ENOMEM)
			goto out;
		if (r >= 0 && c->col->kind == KS_COLLECTION_ADDRESSBOOK &&
		    s->info.kind != KS_ITEM_VCARD) {
			r = -EBADMSG;
			why = strdup("not a vCard");
		} else if (r >= 0 && c->col->kind == KS_COLLECTION_CALENDAR &&
			   s->info.kind == KS_ITEM_VCARD) {
			r = -EBADMSG;
			why = strdup("not an iCalendar object");
		}
		if (r < 0) {
			c->skipped++;
			emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r, "skipping '%.200s': %s",
				  f->href, why ? why : strerror(-r));
			ks_item_info_done(&s->info);
			continue;
		}
		r = ks_cache_get_item(cache, c->col->id, f->href, &old);
		if (r < 0 && r != -ENOENT)
			goto out;
		s->is_new = r == -ENOENT;
		if (!s->is_new) {
			/* A file keeps its name across updates. */
			s->filename = TAKE_PTR(old.filename);
			ks_cache_item_done(&old);
		} else {
			r = pick_filename(c, f, &s->info, st, n, &s->filename);
			if (r < 0)
				goto out;
		}
		r = ks_fs_batch_add(fb, s->filename, f->data, f->len, &s->st);
		if (r < 0)
			goto out;
		ks_sha256_hex(f->data, f->len, s->hash);
		n++;
	}
	if (n == 0) {
		r = 0;
		goto out;
	}
	r = ks_fs_batch_commit(fb);
	if (r < 0)
		goto out;
	/* The files are durable before their rows: a crash in between leaves files the next
	 * run rewrites with the same bytes, never a row pointing at a missing file. */
	for (size_t i = 0; i < n; i++) {
		ks_item_row row = {
			.href = st[i].f->href,
			.etag = st[i].f->etag,
			.filename = st[i].filename,
			.data = st[i].f->data,
			.len = st[i].f->len,
			.info = &st[i].info,
			.hash = st[i].hash,
			.mtime_ns = (int64_t) st[i].st.st_mtim.tv_sec * 1000000000 +
				    st[i].st.st_mtim.tv_nsec,
			.ino = (int64_t) st[i].st.st_ino,
			.size = (int64_t) st[i].st.st_size,
		};
		r = ks_cache_put_item(cache, c->col->id, &row);
		if (r < 0)
			goto out;
		if (st[i].is_new)
			c->added++;
		else
			c->updated++;
	}
	r = ks_cache_commit(cache);
	if (r >= 0)
		in_tx = false;
out:
	if (in_tx)
		ks_cache_rollback(cache);
	for (size_t i = 0; i < b->n_items; i++) {
		ks_item_info_done(&st[i].info);
		free(st[i].filename);
	}
	free(st);
	ks_fs_batch_free(fb);
	return r;
}

static int multiget_body(coll_run *c, batch *b)
{
	bool card = c->col->kind == KS_COLLECTION_ADDRESSBOOK;
	int r;

	r = ks_buf_puts(&b->body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
	if (r >= 0)
		r = ks_buf_puts(&b->body,
				card ? "<a:addressbook-multiget xmlns:d=\"DAV:\" "
				       "xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop>"
				       "<d:getetag/><a:address-data/></d:prop>"
				     : "<c:calendar-multiget xmlns:d=\"DAV:\" "
				       "xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:prop>"
				       "<d:getetag/><c:calendar-data/></d:prop>");
	for (size_t i = 0; r >= 0 && i < b->n_hrefs; i++) {
		r = ks_buf_puts(&b->body, "<d:href>");
		if (r >= 0)
			r = ks_xml_escape(&b->body, b->hrefs[i]);
		if (r >= 0)
			r = ks_buf_puts(&b->body, "</d:href>");
	}
	if (r >= 0)
		r = ks_buf_puts(&b->body, card ? "</a:addressbook-multiget>\n"
					       : "</c:calendar-multiget>\n");
	return r;
}

/* Hrefs a multiget did not answer are fetched one by one; they are never taken as deleted. */
static int fetch_missing(coll_run *c, batch *b)
{
	for (size_t i = 0; i < b->n_hrefs; i++) {
		bool got = false;
		for (size_t j = 0; j < b->n_items && !got; j++)
			got = strcmp(b->items[j].href, b->hrefs[i]) == 0;
		if (got)
			continue;
		ks_dav_request req = { .method = "GET", .url = b->hrefs[i] };
		ks_buf data = { .max = KS_CARD_MAX };
		int r = ks_dav_run_one(c->R->dav, &req);
		if (r == -ENOENT) {
			/* Gone between listing and fetch: the next listing reports it. */
			ks_dav_request_done(&req);
			continue;
		}
		if (r < 0 || !req.body_text) {
			c->failed_fetch++;
			emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r < 0 ? r : -EIO,
				  "could not fetch '%.200s': %s", b->hrefs[i],
				  req.errmsg[0] ? req.errmsg : "empty response");
			ks_dav_request_done(&req);
			continue;
		}
		fetched_item *ni = realloc(b->items, (b->n_items + 1) * sizeof(*ni));
		if (!ni) {
			ks_dav_request_done(&req);
			return -ENOMEM;
		}
		b->items = ni;
		b->items[b->n_items++] = (fetched_item) {
			.href = strdup(b->hrefs[i]),
			.etag = req.etag ? strdup(req.etag) : NULL,
			.data = TAKE_PTR(req.body_text),
			.len = 0,
		};
		b->items[b->n_items - 1].len = strlen(b->items[b->n_items - 1].data);
		ks_dav_request_done(&req);
		ks_buf_done(&data);
		if (!b->items[b->n_items - 1].href)
			return -ENOMEM;
	}
	return 0;
}

static int on_batch_done(ks_dav_request *req, void *userdata)
{
	batch *b = userdata;
	coll_run *c = b->c;
	int r;

	ks_buf_done(&b->body);
	if (req->result < 0 && req->result != -EBADMSG) {
		/* The whole batch failed: the collection fails this run, nothing is lost. */
		c->cb_error = req->result;
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, req->result, "%s",
			  req->errmsg[0] ? req->errmsg : strerror(-req->result));
		batch_clear_items(b);
		return 0;
	}
	r = fetch_missing(c, b);
	if (r >= 0)
		r = apply_batch(c, b);
	c->fetched += (unsigned) b->n_hrefs;
	batch_clear_items(b);
	if (r < 0)
		return r;
	ks_sync_event ev = {
		.type = KS_SYNC_PROGRESS, .account = c->R->acc->name, .collection = c->label,
		.done = c->fetched, .total = (unsigned) c->n_fetch,
	};
	emit(c->R, &ev);
	return 0;
}

static int fetch_all(coll_run *c)
{
	size_t nb = (c->n_fetch + KS_MULTIGET_BATCH - 1) / KS_MULTIGET_BATCH;
	batch *bs;
	ks_dav_request *reqs;
	int r = 0;

	if (nb == 0)
		return 0;
	/* Request bodies are built as requests start, so memory stays at a few batches. */
	bs = calloc(nb, sizeof(*bs));
	reqs = calloc(nb, sizeof(*reqs));
	if (!bs || !reqs) {
		free(bs);
		free(reqs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nb; i++) {
		bs[i].c = c;
		bs[i].hrefs = c->fetch + i * KS_MULTIGET_BATCH;
		bs[i].n_hrefs = KS_MIN((size_t) KS_MULTIGET_BATCH, c->n_fetch - i * KS_MULTIGET_BATCH);
		r = multiget_body(c, &bs[i]);
		if (r < 0)
			goto out;
		reqs[i] = (ks_dav_request) {
			.method = "REPORT",
			.url = c->col->href,
			.depth = "1",
			.body = bs[i].body.data,
			.body_len = bs[i].body.len,
			.on_response = on_multiget,
			.userdata = &bs[i],
			.on_done = on_batch_done,
		};
	}
	r = ks_dav_run(c->R->dav, reqs, nb);
	if (r >= 0 && c->cb_error)
		r = c->cb_error;
out:
	for (size_t i = 0; i < nb; i++) {
		batch_clear_items(&bs[i]);
		ks_buf_done(&bs[i].body);
		ks_dav_request_done(&reqs[i]);
	}
	free(bs);
	free(reqs);
	return r;
}

static int delete_items(coll_run *c, char **hrefs, size_t n)
{
	ks_cache *cache = c->R->e->cache;
	bool any = false;
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		ks_cache_item it = {};
		r = ks_cache_get_item(cache, c->col->id, hrefs[i], &it);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r < 0)
			return r;
		if (unlinkat(c->dirfd, it.filename, 0) < 0 && errno != ENOENT) {
			r = -errno;
			ks_cache_item_done(&it);
			return r;
		}
		ks_cache_item_done(&it);
		any = true;
	}
	if (!any)
		return 0;
	r = ks_fs_fsync_dir(c->dirfd);
	if (r < 0)
		return r;
	/* Rows go after the files: a crash in between leaves rows whose files are gone, which
	 * the next listing deletes again. */
	r = ks_cache_begin(cache);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = ks_cache_delete_item(cache, c->col->id, hrefs[i]);
		if (r < 0) {
			ks_cache_rollback(cache);
			return r;
		}
		c->deleted++;
	}
	return ks_cache_commit(cache);
}

typedef struct unseen {
	coll_run *c;
	char **hrefs;
	size_t n, cap;
} unseen;

static int collect_unseen(const char *href, const char *etag, const char *filename, void *userdata)
{
	unseen *u = userdata;
	coll_run *c = u->c;

	if (bsearch(&href, c->seen, c->n_seen, sizeof(char *), cmp_str))
		return 0;
	return strv_push(&u->hrefs, &u->n, &u->cap, href);
}

static int delete_unseen(coll_run *c)
{
	unseen u = { .c = c };
	int r;

	qsort(c->seen, c->n_seen, sizeof(char *), cmp_str);
	r = ks_cache_foreach_item(c->R->e->cache, c->col->id, collect_unseen, &u);
	if (r >= 0)
		r = delete_items(c, u.hrefs, u.n);
	strv_free(u.hrefs, u.n);
	return r;
}

/* Forgets one listing round; the hrefs seen by a full listing are kept unless keep_seen is
 * false, since a truncated full listing goes on over several rounds. */
static void coll_reset_lists(coll_run *c, bool keep_seen)
{
	strv_free(c->fetch, c->n_fetch);
	strv_free(c->gone, c->n_gone);
	c->fetch = c->gone = NULL;
	c->n_fetch = c->cap_fetch = c->n_gone = c->cap_gone = 0;
	if (!keep_seen) {
		strv_free(c->seen, c->n_seen);
		c->seen = NULL;
		c->n_seen = c->cap_seen = 0;
	}
	c->truncated = false;
	c->fetched = 0;
}

static int open_collection_dir(run *R, coll_run *c)
{
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path, "%s/%s/%s/%s", R->e->data_dir,
		     c->col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
		     R->acc->name, c->col->name) < 0)
		return -ENOMEM;
	r = ks_fs_mkdir_p(path);
	if (r < 0)
		return r;
	c->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->dirfd < 0)
		return -errno;
	(void) ks_fs_clean_temp(c->dirfd);
	return 0;
}

static int write_metadata(coll_run *c)
{
	int r = 0;

	if (c->col->displayname && *c->col->displayname) {
		_cleanup_free_ char *v = NULL;
		if (asprintf(&v, "%s\n", c->col->displayname) < 0)
			return -ENOMEM;
		r = ks_fs_write_if_changed(c->dirfd, "displayname", v);
	}
	if (r >= 0 && c->col->color) {
		_cleanup_free_ char *v = NULL;
		if (asprintf(&v, "%s\n", c->col->color) < 0)
			return -ENOMEM;
		r = ks_fs_write_if_changed(c->dirfd, "color", v);
	}
	return r < 0 ? r : 0;
}

/* Pulls one collection. remote is what the home listing said about it right now. */
static int sync_collection(run *R, ks_collection *col, const ks_collection *remote)
{
	coll_run c = { .R = R, .col = col, .dirfd = -1 };
	ks_dav_request req = {};
	unsigned req0 = ks_dav_request_count(R->dav);
	_cleanup_free_ char *new_token = NULL, *ctag = NULL;
	int r;

	snprintf(c.label, sizeof(c.label), "%s/%s",
		 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", col->name);
	c.ext = col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics";
	r = open_collection_dir(R, &c);
	if (r < 0) {
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r,
			  "cannot open the local directory: %s", strerror(-r));
		goto out;
	}
	r = write_metadata(&c);
	if (r < 0) {
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r,
			  "cannot write displayname/color: %s", strerror(-r));
		goto out;
	}
	bool force = R->o->force;
	/* Without a listing the ctag is only known for collections asked for it below: keep
	 * the stored one rather than forget it. */
	const char *known_ctag = remote ? remote->ctag : col->ctag;
	if (known_ctag) {
		ctag = strdup(known_ctag);
		if (!ctag) {
			r = -ENOMEM;
			goto failed;
		}
	}
	if (!force && remote && remote->sync_token && col->sync_token &&
	    strcmp(remote->sync_token, col->sync_token) == 0)
		goto done;
	if (!force && remote && !remote->sync_token && remote->ctag && col->ctag &&
	    strcmp(remote->ctag, col->ctag) == 0)
		goto done;
	if (!remote && !col->supports_sync) {
		/* Without a fresh home listing, the collection's own ctag tells whether to list. */
		r = fetch_ctag(&c, &ctag);
		if (r == -ENOENT)
			goto out;	/* gone: the caller lists the home sets */
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "%s", strerror(-r));
			goto out;
		}
		if (!force && ctag && col->ctag && strcmp(ctag, col->ctag) == 0)
			goto done;
	}

	if (col->supports_sync) {
		const char *token = force ? NULL : col->sync_token;
		c.full = !token;
		for (unsigned round = 0; round < 10000; round++) {
			r = sync_report(&c, token, &req);
			if (r < 0 && token && round == 0 && token_rejected(&req)) {
				/* The token expired: list everything once. */
				ks_dav_request_done(&req);
				coll_reset_lists(&c, false);
				token = NULL;
				c.full = true;
				r = sync_report(&c, NULL, &req);
			}
			if (r < 0 && !token && round == 0 &&
			    (r == -EOPNOTSUPP || r == -EPROTO || req.status == 403)) {
				/* No sync-collection after all: fall back to etag listings. */
				ks_dav_request_done(&req);
				coll_reset_lists(&c, false);
				col->supports_sync = false;
				(void) ks_cache_save_collection(R->e->cache, col);
				break;
			}
			if (r == -ENOENT && !remote)
				goto out;	/* gone: the caller lists the home sets */
			if (r < 0) {
				emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "%s",
					  req.errmsg[0] ? req.errmsg : strerror(-r));
				goto out;
			}
			r = fetch_all(&c);
			if (r >= 0)
				r = delete_items(&c, c.gone, c.n_gone);
			if (r < 0)
				goto failed;
			free(new_token);
			new_token = req.sync_token ? strdup(req.sync_token) : NULL;
			bool truncated = (c.truncated || req.status == 507) && new_token;
			ks_dav_request_done(&req);
			if (c.failed_fetch)
				break;
			if (!truncated && c.full) {
				r = delete_unseen(&c);
				if (r < 0)
					goto failed;
			}
			/* Each round's token is stored once its changes are applied, so a crash
			 * in a long truncated listing does not start it over. An unchanged token
			 * is not written again: a quiet run writes nothing. */
			if (new_token && (!col->sync_token || strcmp(new_token, col->sync_token) ||
					  !str_eq(ctag, col->ctag))) {
				r = ks_cache_set_collection_state(R->e->cache, col->id, new_token,
								  ctag);
				if (r < 0)
					goto failed;
				free(col->sync_token);
				col->sync_token = strdup(new_token);
			}
			if (!truncated)
				break;
			coll_reset_lists(&c, true);
			token = col->sync_token;
		}
	}
	if (!col->supports_sync) {
		c.full = true;
		r = propfind_listing(&c, &req);
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "%s",
				  req.errmsg[0] ? req.errmsg : strerror(-r));
			goto out;
		}
		ks_dav_request_done(&req);
		r = fetch_all(&c);
		if (r >= 0)
			r = delete_unseen(&c);
		if (r < 0)
			goto failed;
		if (!c.failed_fetch) {
			r = ks_cache_set_collection_state(R->e->cache, col->id, NULL, ctag);
			if (r < 0)
				goto failed;
		}
	}
	if (c.failed_fetch) {
		r = -EIO;
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r,
			  "%u item(s) could not be fetched; they will be retried", c.failed_fetch);
		goto out;
	}
done:
	{
		ks_sync_event ev = {
			.type = KS_SYNC_COLLECTION_DONE, .account = R->acc->name,
			.collection = c.label, .added = c.added, .updated = c.updated,
			.deleted = c.deleted, .skipped = c.skipped,
			.requests = ks_dav_request_count(R->dav) - req0,
		};
		emit(R, &ev);
	}
	r = 0;
	goto out;
failed:
	if (!c.cb_error)
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "%s", strerror(-r));
out:
	ks_dav_request_done(&req);
	coll_run_done(&c);
	return r;
}

/* ---- collections of an account ------------------------------------------------------------ */

static int assign_dir_name(run *R, ks_collection *col, ks_collection *known, size_t n_known)
{
	_cleanup_free_ char *base = NULL;
	int r = ks_vdir_collection_name(col->href, &base);

	if (r < 0)
		return r;
	for (unsigned i = 1; i < 1000; i++) {
		_cleanup_free_ char *name = NULL;
		if (i == 1)
			name = strdup(base);
		else if (asprintf(&name, "%s-%u", base, i) < 0)
			name = NULL;
		if (!name)
			return -ENOMEM;
		bool taken = false;
		for (size_t j = 0; j < n_known && !taken; j++)
			taken = known[j].kind == col->kind && known[j].name &&
				strcmp(known[j].name, name) == 0;
		if (!taken) {
			col->name = TAKE_PTR(name);
			return 0;
		}
	}
	return -EEXIST;
}

static int replace_str(char **dst, const char *src)
{
	if (str_eq(*dst, src))
		return 0;
	char *n = src ? strdup(src) : NULL;
	if (src && !n)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 1;
}

/* Updates the cached collection from the server's listing; returns 1 when a row changed. */
static int refresh_collection(ks_collection *col, const ks_collection *remote)
{
	int changed = 0, r;

	r = replace_str(&col->displayname, remote->displayname);
	if (r < 0)
		return r;
	changed |= r;
	r = replace_str(&col->color, remote->color);
	if (r < 0)
		return r;
	changed |= r;
	r = replace_str(&col->description, remote->description);
	if (r < 0)
		return r;
	changed |= r;
	if (col->components != remote->components || col->readonly != remote->readonly) {
		col->components = remote->components;
		col->readonly = remote->readonly;
		changed = 1;
	}
	if (!col->supports_sync && remote->supports_sync && remote->sync_token) {
		col->supports_sync = true;
		changed = 1;
	}
	return changed;
}

static int remove_collection_files(run *R, const ks_collection *col)
{
	_cleanup_free_ char *path = NULL;
	DIR *d;
	struct dirent *de;
	int fd;

	if (asprintf(&path, "%s/%s/%s/%s", R->e->data_dir,
		     col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
		     R->acc->name, col->name) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			(void) unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	return ks_neg_errno(rmdir(path));
}

static int discover_account(run *R, ks_cache_account *acc)
{
	_cleanup_free_ char *why = NULL;
	int r;

	ks_cache_account_done(acc);
	r = ks_discover(R->dav, R->acc->url, acc, &why);
	if (r < 0) {
		emit_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "discovery at %s failed: %s",
			  R->acc->url, why ? why : strerror(-r));
		return r;
	}
	acc->discovered_at = (int64_t) time(NULL);
	return ks_cache_put_account(R->e->cache, R->acc->name, acc);
}

static int list_homes(run *R, ks_cache_account *acc, ks_collection **ret, size_t *ret_n)
{
	const char *homes[2] = { acc->addressbook_home, acc->calendar_home };
	ks_collection *all = NULL;
	size_t n_all = 0;
	int r = 0;

	for (size_t h = 0; h < 2; h++) {
		if (!homes[h] || (h == 1 && homes[0] && strcmp(homes[0], homes[1]) == 0))
			continue;
		_cleanup_free_ char *why = NULL;
		ks_collection *part = NULL;
		size_t n_part = 0;
		r = ks_list_home(R->dav, homes[h], &part, &n_part, &why);
		if (r < 0) {
			if (why && !strstr(why, homes[h])) {
				char *w2;
				if (asprintf(&w2, "listing %s: %s", homes[h], why) >= 0) {
					free(why);
					why = w2;
				}
			}
			emit_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s",
				  why ? why : strerror(-r));
			break;
		}
		ks_collection *na = realloc(all, (n_all + n_part + 1) * sizeof(*na));
		if (!na) {
			ks_collection_free_array(part, n_part);
			r = -ENOMEM;
			break;
		}
		all = na;
		memcpy(all + n_all, part, n_part * sizeof(*part));
		n_all += n_part;
		free(part);
	}
	if (r < 0) {
		ks_collection_free_array(all, n_all);
		return r;
	}
	*ret = all;
	*ret_n = n_all;
	return 0;
}

/* Brings the cached collections in line with a home listing: new ones get a directory name
 * and a row, changed properties are saved, and those gone from the server are removed with
 * their files. Returns the number of collections that could not be recorded or removed. */
static int reconcile(run *R, ks_collection *remote, size_t n_remote, ks_collection **known,
		     size_t *n_known)
{
	ks_cache *cache = R->e->cache;
	int failed = 0, r;

	for (size_t i = 0; i < *n_known; i++) {
		ks_collection *k = &(*known)[i];
		bool present = false;
		for (size_t j = 0; j < n_remote && !present; j++)
			present = strcmp(k->href, remote[j].href) == 0;
		if (present)
			continue;
		r = remove_collection_files(R, k);
		if (r >= 0)
			r = ks_cache_delete_collection(cache, k->id);
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, k->name, r,
				  "cannot remove the collection deleted on the server: %s",
				  strerror(-r));
			failed++;
			continue;
		}
		ks_collection_done(k);
		memmove(k, k + 1, (*n_known - i - 1) * sizeof(*k));
		(*n_known)--;
		i--;
	}
	for (size_t j = 0; j < n_remote; j++) {
		ks_collection *col = NULL;
		for (size_t i = 0; i < *n_known && !col; i++)
			if (strcmp((*known)[i].href, remote[j].href) == 0)
				col = &(*known)[i];
		if (col) {
			r = refresh_collection(col, &remote[j]);
			if (r > 0)
				r = ks_cache_save_collection(cache, col);
		} else {
			ks_collection fresh = {
				.account = strdup(R->acc->name),
				.href = strdup(remote[j].href),
				.kind = remote[j].kind,
				.enabled = true,
				.supports_sync = remote[j].supports_sync,
			};
			r = fresh.account && fresh.href ? 0 : -ENOMEM;
			if (r >= 0)
				r = assign_dir_name(R, &fresh, *known, *n_known);
			if (r >= 0)
				r = refresh_collection(&fresh, &remote[j]);
			if (r >= 0)
				r = ks_cache_save_collection(cache, &fresh);
			if (r >= 0) {
				ks_collection *nk = realloc(*known, (*n_known + 1) * sizeof(*nk));
				if (!nk)
					r = -ENOMEM;
				else {
					*known = nk;
					(*known)[(*n_known)++] = fresh;
				}
			}
			if (r < 0)
				ks_collection_done(&fresh);
		}
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, remote[j].href, r,
				  "cannot record the collection: %s", strerror(-r));
			failed++;
		}
	}
	return failed;
}

static const ks_collection *find_remote(const ks_collection *remote, size_t n, const char *href)
{
	for (size_t i = 0; remote && i < n; i++)
		if (strcmp(remote[i].href, href) == 0)
			return &remote[i];
	return NULL;
}

/* Lists the home sets and reconciles the cached collections with them; on a failure the
 * principal and home sets are discovered again once, as they may have moved. */
static int list_and_reconcile(run *R, ks_cache_account *acc, bool fresh, ks_collection **remote,
			      size_t *n_remote, ks_collection **known, size_t *n_known)
{
	int r = list_homes(R, acc, remote, n_remote);

	if (r < 0 && !fresh && ks_error_scope_of(r) != KS_SCOPE_ACCOUNT) {
		r = discover_account(R, acc);
		if (r >= 0)
			r = list_homes(R, acc, remote, n_remote);
	}
	if (r < 0)
		return r;
	r = reconcile(R, *remote, *n_remote, known, n_known);
	if (r < 0)
		return r;
	acc->listed_at = (int64_t) time(NULL);
	int k = ks_cache_put_account(R->e->cache, R->acc->name, acc);
	return k < 0 ? k : r;
}

int ks_sync_account(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o)
{
	run R = { .e = e, .acc = a, .o = o };
	ks_cache_account acc = {};
	ks_collection *known = NULL, *remote = NULL;
	size_t n_known = 0, n_remote = 0;
	char *password = NULL, *why = NULL;
	int r, failed = 0;

	r = ks_account_get_password(a, &password, &why);
	if (r < 0 && r != -ENOKEY) {
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "cannot get the password: %s",
			  why ? why : strerror(-r));
		free(why);
		return r;
	}
	free(why);
	why = NULL;
	ks_dav_opts dopts = {
		.base_url = a->url,
		.username = a->username,
		.password = password,
		.ca_file = a->ca_file,
		.allow_insecure_http = a->allow_insecure_http,
	};
	r = ks_dav_new(&dopts, &R.dav);
	password = ks_secret_free(password);
	if (r < 0) {
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "cannot set up HTTP: %s", strerror(-r));
		return r;
	}

	int64_t now = (int64_t) time(NULL);
	r = ks_cache_get_account(e->cache, a->name, &acc);
	bool fresh = false;
	if (r == -ENOENT || (r >= 0 && (o->force || acc.discovered_at + REDISCOVER_SECS < now))) {
		r = discover_account(&R, &acc);
		fresh = true;
	}
	if (r < 0)
		goto out;
	r = ks_cache_list_collections(e->cache, a->name, &known, &n_known);
	if (r < 0) {
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "cannot read the cache: %s",
			  strerror(-r));
		goto out;
	}
	/* Listing the home sets finds new and removed collections and their new names and
	 * colours, but costs the server a look at every collection: it is done on the first
	 * run, with --force, and at most every LIST_SECS; other runs ask each collection
	 * directly, one request each when nothing changed. */
	bool listed = false;
	if (fresh || o->force || n_known == 0 || acc.listed_at + LIST_SECS < now ||
	    acc.listed_at > now) {
		r = list_and_reconcile(&R, &acc, fresh, &remote, &n_remote, &known, &n_known);
		if (r < 0)
			goto out;
		failed += r;
		listed = true;
	}

	bool gone = false;
	for (size_t i = 0; i < n_known; i++) {
		ks_collection *col = &known[i];
		if (!col->enabled)
			continue;
		r = sync_collection(&R, col, listed ? find_remote(remote, n_remote, col->href) : NULL);
		if (r == -ENOENT && !listed) {
			gone = true;
			continue;
		}
		if (r < 0) {
			failed++;
			if (ks_error_scope_of(r) == KS_SCOPE_ACCOUNT)
				goto out;
		}
	}
	if (gone) {
		/* A collection vanished since the last listing: list now so that it goes away
		 * here too instead of failing every run until the next listing. */
		r = list_and_reconcile(&R, &acc, fresh, &remote, &n_remote, &known, &n_known);
		if (r < 0)
			goto out;
	}
	r = failed;
out:
	ks_cache_account_done(&acc);
	ks_collection_free_array(known, n_known);
	ks_collection_free_array(remote, n_remote);
	ks_dav_free(R.dav);
	return r < 0 ? r : failed;
}
