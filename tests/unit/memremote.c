/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf_p.h"
#include "dav_p.h"
#include "discover_p.h"
#include "ical_p.h"
#include "item_p.h"
#include "limits.h"
#include "macro.h"
#include "memremote.h"
#include "vdir_p.h"
#include "xml_p.h"

/* A server in memory. Each collection counts its changes in a revision number: an item
 * remembers the revision of its last change, a deleted one stays as a tombstone, and a sync
 * token names a revision, so that "the changes since a token" are the items (and tombstones)
 * changed after it, as RFC 6578 has them. */

#define TOKEN_PREFIX "https://dav.memory.test/ns/sync/"
#define PRINCIPAL "/principals/user/"

typedef struct mem_coll {
	unsigned id;
	char *href;
	ks_collection_kind kind;
	char *displayname;
	unsigned components;
	bool sync, ctag, readonly;
	unsigned page;
	uint64_t rev;
	uint64_t valid_from;	/* tokens of an older revision are refused */
	mem_item *items;	/* tombstones included */
	size_t n, cap;
} mem_coll;

typedef struct fault {
	mem_fault f;
	char *href, *body;
} fault;

struct mem_remote {
	ks_remote r;		/* first: the store the engine holds is the server */
	mem_behaviour b;
	mem_coll **colls;
	size_t n_colls;
	unsigned next_id;
	uint64_t next_etag;
	fault *faults;
	size_t n_faults;
	unsigned counts[_MEM_REQ_MAX];
	unsigned changes, reentries;
	unsigned running;	/* callbacks of an operation in progress */
	unsigned retry_after;
	bool auth_refused;
	uint64_t rng;
};

static mem_remote *of(ks_remote *r)
{
	return (mem_remote *) r;
}

static uint64_t next_random(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* ---- collections and items ------------------------------------------------------------- */

static mem_coll *find_coll(const mem_remote *m, const char *href)
{
	size_t n = strlen(href);

	for (size_t i = 0; i < m->n_colls; i++) {
		const char *h = m->colls[i]->href;
		/* The collection with or without its trailing slash. */
		if (strcmp(h, href) == 0 || (strlen(h) == n + 1 && strncmp(h, href, n) == 0))
			return m->colls[i];
	}
	return NULL;
}

/* The collection an item href is a direct member of, or NULL. */
static mem_coll *coll_of_item(const mem_remote *m, const char *href)
{
	for (size_t i = 0; i < m->n_colls; i++) {
		const char *h = m->colls[i]->href;
		size_t n = strlen(h);
		if (strncmp(h, href, n) == 0 && href[n] && !strchr(href + n, '/'))
			return m->colls[i];
	}
	return NULL;
}

static mem_item *find_entry(mem_coll *c, const char *href)
{
	for (size_t i = 0; c && i < c->n; i++)
		if (strcmp(c->items[i].href, href) == 0)
			return &c->items[i];
	return NULL;
}

static mem_item *find_live(const mem_remote *m, const char *href)
{
	mem_item *it = find_entry(coll_of_item(m, href), href);

	return it && !it->gone ? it : NULL;
}

static mem_item *find_uid(mem_coll *c, const char *uid, const char *except_href)
{
	for (size_t i = 0; uid && i < c->n; i++) {
		mem_item *it = &c->items[i];
		if (!it->gone && it->uid && strcmp(it->uid, uid) == 0 &&
		    strcmp(it->href, except_href) != 0)
			return it;
	}
	return NULL;
}

static void item_clear(mem_item *it)
{
	free(it->etag);
	free(it->uid);
	free(it->data);
	it->etag = it->uid = it->data = NULL;
	it->len = 0;
}

static char *uid_of(const char *data, size_t len)
{
	ks_item_info info = {};
	char *uid = NULL;

	if (ks_item_parse_info(data, len, &info, NULL) >= 0 && info.uid)
		uid = strdup(info.uid);
	ks_item_info_done(&info);
	return uid;
}

/* Stores data at href in c: a new revision, a new etag. */
static int store(mem_remote *m, mem_coll *c, const char *href, const char *data, size_t len)
{
	mem_item *it = find_entry(c, href);
	char *copy = malloc(len + 1), *etag = NULL;

	if (!copy || asprintf(&etag, "\"e%" PRIu64 "\"", ++m->next_etag) < 0) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(copy, data, len);
	copy[len] = 0;
	if (!it) {
		if (c->n == c->cap) {
			size_t ncap = c->cap ? c->cap * 2 : 16;
			mem_item *ni = realloc(c->items, ncap * sizeof(*ni));
			if (!ni) {
				free(copy);
				free(etag);
				return -ENOMEM;
			}
			c->items = ni;
			c->cap = ncap;
		}
		it = &c->items[c->n++];
		*it = (mem_item) { .href = strdup(href) };
		if (!it->href) {
			c->n--;
			free(copy);
			free(etag);
			return -ENOMEM;
		}
	}
	item_clear(it);
	it->data = copy;
	it->len = len;
	it->etag = etag;
	it->uid = uid_of(data, len);
	it->gone = false;
	it->rev = ++c->rev;
	return 0;
}

static void drop(mem_coll *c, mem_item *it)
{
	item_clear(it);
	it->gone = true;
	it->rev = ++c->rev;
}

static char *canonical(const char *href)
{
	char *h = NULL;

	return ks_href_normalize(MEM_BASE_URL, href, &h) >= 0 ? h : NULL;
}

/* ---- what the server stores of a PUT --------------------------------------------------- */

typedef struct line {
	const char *s;
	size_t len;		/* the logical line with its continuation lines and line end */
} line;

static bool line_is(const line *l, const char *prefix)
{
	size_t n = strlen(prefix);
	return l->len >= n && strncasecmp(l->s, prefix, n) == 0;
}

/* Splits data into logical lines (a line and the folded lines after it). */
static line *split_lines(const char *data, size_t len, size_t *ret_n)
{
	line *v = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < len;) {
		size_t j = i;
		for (;;) {
			const char *e = memchr(data + j, '\n', len - j);
			j = e ? (size_t) (e - data) + 1 : len;
			if (j >= len || (data[j] != ' ' && data[j] != '\t'))
				break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			line *nv = realloc(v, cap * sizeof(*nv));
			if (!nv) {
				free(v);
				return NULL;
			}
			v = nv;
		}
		v[n++] = (line) { .s = data + i, .len = j - i };
		i = j;
	}
	*ret_n = n;
	return v ? v : calloc(1, sizeof(line));
}

static int cmp_prop(const void *a, const void *b)
{
	const line *x = *(const line *const *) a, *y = *(const line *const *) b;
	/* A card's VERSION stays first (RFC 6350 6.7.9). */
	bool vx = line_is(x, "VERSION:"), vy = line_is(y, "VERSION:");
	if (vx != vy)
		return vx ? -1 : 1;
	int c = memcmp(x->s, y->s, KS_MIN(x->len, y->len));
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int put_line(ks_buf *out, const line *l)
{
	int r = ks_buf_append(out, l->s, l->len);
	if (r >= 0 && (l->len == 0 || l->s[l->len - 1] != '\n'))
		r = ks_buf_puts(out, "\r\n");
	return r;
}

/* Writes the component opened at lines[*i] with its properties in order and its
 * subcomponents after them; *i ends past its END line. */
static int sort_component(const line *lines, size_t n, size_t *i, ks_buf *out)
{
	const line **props = calloc(n, sizeof(*props));
	size_t *subs = calloc(n, sizeof(*subs));
	size_t np = 0, ns = 0;
	int r = props && subs ? put_line(out, &lines[(*i)++]) : -ENOMEM;

	while (r >= 0 && *i < n && !line_is(&lines[*i], "END:")) {
		if (line_is(&lines[*i], "BEGIN:")) {
			subs[ns++] = *i;
			unsigned depth = 0;
			do {
				depth += line_is(&lines[*i], "BEGIN:");
				depth -= line_is(&lines[*i], "END:");
				(*i)++;
			} while (depth > 0 && *i < n);
		} else
			props[np++] = &lines[(*i)++];
	}
	if (r >= 0)
		qsort(props, np, sizeof(*props), cmp_prop);
	for (size_t k = 0; r >= 0 && k < np; k++)
		r = put_line(out, props[k]);
	for (size_t k = 0; r >= 0 && k < ns; k++) {
		size_t j = subs[k];
		r = sort_component(lines, n, &j, out);
	}
	if (r >= 0 && *i < n)
		r = put_line(out, &lines[(*i)++]);
	free(props);
	free(subs);
	return r;
}

/* The properties of every component in order: what a server that parses and serializes
 * again stores. Doing it twice gives the same bytes. */
static int rewrite_sorted(const char *data, size_t len, ks_buf *out)
{
	size_t n = 0;
	_cleanup_free_ line *lines = split_lines(data, len, &n);
	int r = lines ? 0 : -ENOMEM;

	for (size_t i = 0; r >= 0 && i < n;) {
		if (line_is(&lines[i], "BEGIN:"))
			r = sort_component(lines, n, &i, out);
		else
			r = put_line(out, &lines[i++]);
	}
	return r;
}

/* A property the server adds when the object has none: REV on a card, DTSTAMP on the first
 * component of a calendar object. */
static int rewrite_stamped(const char *data, size_t len, ks_buf *out)
{
	size_t n = 0;
	_cleanup_free_ line *lines = split_lines(data, len, &n);
	bool card = n && line_is(&lines[0], "BEGIN:VCARD");
	const char *prop = card ? "REV:" : "DTSTAMP:";
	bool has = false, done = false;
	int r = lines ? 0 : -ENOMEM;

	for (size_t i = 0; i < n; i++)
		has |= line_is(&lines[i], prop);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		bool at = card ? line_is(&lines[i], "END:VCARD")
			       : line_is(&lines[i], "END:VEVENT") ||
				 line_is(&lines[i], "END:VTODO") ||
				 line_is(&lines[i], "END:VJOURNAL");
		if (!has && !done && at) {
			r = ks_buf_puts(out, card ? "REV:20240101T000000Z\r\n"
						  : "DTSTAMP:20240101T000000Z\r\n");
			done = true;
		}
		if (r >= 0)
			r = put_line(out, &lines[i]);
	}
	return r;
}

/* ---- answers ---------------------------------------------------------------------------- */

/* href as the server writes it in an answer. */
static char *answer_href(const mem_remote *m, const char *href)
{
	ks_buf b = {};
	int r = 0;

	if (m->b.hrefs == MEM_HREFS_ABSOLUTE)
		r = ks_buf_printf(&b, "https://dav.memory.test%s", href);
	else if (m->b.hrefs == MEM_HREFS_ENCODED) {
		for (const char *p = href; r >= 0 && *p; p++) {
			unsigned char c = (unsigned char) *p;
			if (c == '%' && p[1] && p[2]) {
				/* Already encoded: the same byte, in lower-case hex. */
				char hex[4] = { '%', (char) tolower(p[1]), (char) tolower(p[2]),
						0 };
				r = ks_buf_puts(&b, hex);
				p += 2;
			} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				   (c >= '0' && c <= '9') || strchr("/._-", c))
				r = ks_buf_append(&b, p, 1);
			else
				r = ks_buf_printf(&b, "%%%02x", c);
		}
	} else
		r = ks_buf_puts(&b, href);
	if (r < 0) {
		ks_buf_done(&b);
		return NULL;
	}
	return ks_buf_steal(&b);
}

static void set_msg(ks_remote_reply *ret, const char *method, const char *href, const char *fmt,
		    ...) _printf_(4, 5);
static void set_msg(ks_remote_reply *ret, const char *method, const char *href, const char *fmt,
		    ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(ret->errmsg, sizeof(ret->errmsg), "%s https://dav.memory.test%s: %s", method,
		 href, why);
}

/* An HTTP status answer: the result as ks_dav_status_to_errno() maps it. */
static int answer(ks_remote_reply *ret, const char *method, const char *href, long status,
		  const char *body)
{
	ret->status = status;
	ret->result = ks_dav_status_to_errno(status);
	if (status == 207 && ret->result == 0)
		/* A multistatus to a PUT or DELETE is no success (lib/dav.c). */
		ret->result = -EPROTO;
	if (body) {
		ret->body = strdup(body);
		ret->body_len = ret->body ? strlen(body) : 0;
	}
	if (ret->result < 0)
		set_msg(ret, method, href, "HTTP %ld%s%s", status, REASON(status));
	return ret->result;
}

/* A request that got no answer (a cut connection) or a malformed one. */
static int transport(ks_remote_reply *ret, const char *method, const char *href, int err)
{
	ret->status = err == -EBADMSG ? 207 : 0;
	ret->result = err;
	if (err == -EBADMSG)
		set_msg(ret, method, href, "malformed XML in the answer");
	else
		set_msg(ret, method, href, "%s", strerror(-err));
	return err;
}

/* ---- faults and counters ---------------------------------------------------------------- */

/* The fault that hits this request of kind naming the n hrefs (n 0: none), or NULL. Each
 * fault that matches counts the request against its skip first. */
static const mem_fault *take_fault_of(mem_remote *m, mem_req kind, const char *const *hrefs,
				      size_t n, bool omit)
{
	fault *hit = NULL;

	for (size_t i = 0; i < m->n_faults; i++) {
		fault *f = &m->faults[i];
		bool named = !f->href;
		for (size_t k = 0; k < n && !named; k++)
			named = hrefs[k] && strcmp(f->href, hrefs[k]) == 0;
		if (f->f.kind != kind || f->f.omit != omit || f->f.count == 0 || !named)
			continue;
		if (f->f.skip > 0) {
			f->f.skip--;
			continue;
		}
		if (!hit) {
			hit = f;
			f->f.count--;
		}
	}
	if (hit && (hit->f.status == 429 || hit->f.status == 503) &&
	    hit->f.retry_after > m->retry_after)
		m->retry_after = hit->f.retry_after;
	return hit ? &hit->f : NULL;
}

static const mem_fault *take_fault(mem_remote *m, mem_req kind, const char *href, bool omit)
{
	return take_fault_of(m, kind, &href, href ? 1 : 0, omit);
}

/* Counts a request; false when it is started from a callback of a running one. */
static bool begin(mem_remote *m, mem_req kind)
{
	if (m->running) {
		m->reentries++;
		return false;
	}
	m->counts[kind]++;
	return true;
}

static int refuse_reentry(ks_remote_reply *ret)
{
	ret->result = -EDEADLK;
	snprintf(ret->errmsg, sizeof(ret->errmsg), "started from a callback of a running request");
	return -EDEADLK;
}

/* The order n requests sent together are carried out in. */
static size_t *order(mem_remote *m, size_t n)
{
	size_t *o = calloc(n ? n : 1, sizeof(*o));

	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++)
		o[i] = i;
	if (m->b.shuffle_seed) {
		if (!m->rng)
			m->rng = m->b.shuffle_seed;
		for (size_t i = n; i > 1; i--) {
			size_t j = (size_t) (next_random(&m->rng) % i);
			size_t t = o[i - 1];
			o[i - 1] = o[j];
			o[j] = t;
		}
	}
	return o;
}

/* ---- listings --------------------------------------------------------------------------- */

static bool token_rev(const mem_coll *c, const char *token, uint64_t *ret)
{
	char *end;
	size_t n = strlen(TOKEN_PREFIX);

	if (strncmp(token, TOKEN_PREFIX, n) != 0)
		return false;
	unsigned long id = strtoul(token + n, &end, 10);
	if (*end != '-' || id != c->id)
		return false;
	uint64_t rev = strtoull(end + 1, &end, 10);
	if (*end || rev > c->rev || rev < c->valid_from)
		return false;
	*ret = rev;
	return true;
}

static int cmp_rev(const void *a, const void *b)
{
	const mem_item *x = *(const mem_item *const *) a, *y = *(const mem_item *const *) b;
	return (x->rev > y->rev) - (x->rev < y->rev);
}

/* Gives fn the members of the listing, the first half only when it is to break off. */
static int give_members(mem_remote *m, const mem_item **v, size_t n, bool half,
			ks_remote_member_fn fn, void *userdata)
{
	int k = 0;

	m->running++;
	for (size_t i = 0; k >= 0 && i < (half ? n / 2 : n); i++) {
		_cleanup_free_ char *href = answer_href(m, v[i]->href);
		if (!href) {
			k = -ENOMEM;
			break;
		}
		ks_remote_member mb = {
			.href = href, .etag = v[i]->gone ? NULL : v[i]->etag,
			.status = v[i]->gone ? 404 : 200,
		};
		k = fn(&mb, userdata);
	}
	m->running--;
	return k;
}

static int mem_list(ks_remote *r, const char *collection, bool sync, const char *token,
		    ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret)
{
	mem_remote *m = of(r);
	const char *method = sync ? "REPORT" : "PROPFIND";
	mem_coll *c = find_coll(m, collection);
	uint64_t since = 0;
	int k;

	if (!begin(m, MEM_REQ_LIST))
		return refuse_reentry(ret);
	const mem_fault *f = take_fault(m, MEM_REQ_LIST, collection, false);
	if (f && f->status)
		return answer(ret, method, collection, f->status, f->body);
	if (!c)
		return answer(ret, method, collection, 404, NULL);
	if (sync && !c->sync)
		return answer(ret, method, collection, 403,
			      "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
			      "<d:error xmlns:d=\"DAV:\"><d:supported-report/></d:error>\n");
	if (sync && token && !token_rev(c, token, &since))
		return answer(ret, method, collection, m->b.token_refused,
			      m->b.token_refused == 500 ? NULL
			      : "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error "
				"xmlns:d=\"DAV:\"><d:valid-sync-token/></d:error>\n");

	const mem_item **v = calloc(c->n + 2, sizeof(*v));
	size_t n = 0;
	if (!v)
		return -ENOMEM;
	/* An etag listing names the collection itself first, as PROPFIND Depth 1 does. */
	mem_item self = { .href = c->href };
	if (!sync)
		v[n++] = &self;
	for (size_t i = 0; i < c->n; i++) {
		const mem_item *it = &c->items[i];
		if (sync ? (token ? it->rev > since : !it->gone) : !it->gone)
			v[n++] = it;
	}
	uint64_t upto = c->rev;
	bool truncated = false;
	if (sync) {
		qsort(v, n, sizeof(*v), cmp_rev);
		if (c->page && n > c->page) {
			/* RFC 6578 3.6: the first changes, a 507 for the request-URI, and a
			 * token that goes on from the last change given. */
			n = c->page;
			upto = v[n - 1]->rev;
			truncated = true;
		}
	}
	k = give_members(m, v, n, f && f->err, fn, userdata);
	free(v);
	if (k >= 0 && f && f->err)
		return transport(ret, method, collection, f->err);
	if (k >= 0 && truncated) {
		_cleanup_free_ char *href = answer_href(m, c->href);
		ks_remote_member mb = { .href = href, .status = 507 };
		m->running++;
		k = href ? fn(&mb, userdata) : -ENOMEM;
		m->running--;
	}
	if (k < 0) {
		ret->result = k;
		ret->status = 207;
		return k;
	}
	ret->status = 207;
	ret->result = 0;
	if (sync && asprintf(&ret->sync_token, TOKEN_PREFIX "%u-%" PRIu64, c->id, upto) < 0) {
		ret->sync_token = NULL;
		return -ENOMEM;
	}
	if (!sync && c->ctag && asprintf(&ret->ctag, "\"ctag-%u-%" PRIu64 "\"", c->id,
					  c->rev) < 0) {
		ret->ctag = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* A calendar-query of single events (no RRULE, RDATE or RECURRENCE-ID):
 * those in the time range as ksync itself tells (a real server's reading may differ at the
 * edges). */
static int mem_query(ks_remote *r, const char *collection, int64_t start, int64_t end,
		     ks_remote_member_fn fn, void *userdata, ks_remote_reply *ret)
{
	mem_remote *m = of(r);
	mem_coll *c = find_coll(m, collection);

	if (!begin(m, MEM_REQ_QUERY))
		return refuse_reentry(ret);
	const mem_fault *f = take_fault(m, MEM_REQ_QUERY, collection, false);
	if (f && f->status)
		return answer(ret, "REPORT", collection, f->status, f->body);
	if (!c)
		return answer(ret, "REPORT", collection, 404, NULL);
	const mem_item **v = calloc(c->n + 1, sizeof(*v));
	size_t n = 0;
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++) {
		const mem_item *it = &c->items[i];
		if (it->gone || !strstr(it->data, "BEGIN:VEVENT") || strstr(it->data, "RRULE") ||
		    strstr(it->data, "RDATE") || strstr(it->data, "RECURRENCE-ID"))
			continue;
		if ((start || end) && ks_ical_in_window(it->data, it->len, start, end, NULL) != 1)
			continue;
		v[n++] = it;
	}
	int k = give_members(m, v, n, f && f->err, fn, userdata);
	free(v);
	if (k >= 0 && f && f->err)
		return transport(ret, "REPORT", collection, f->err);
	ret->status = 207;
	ret->result = k < 0 ? k : 0;
	return k < 0 ? k : 0;
}

static int mem_ctag(ks_remote *r, const char *collection, const char *known, char **ret_ctag,
		    ks_remote_reply *ret)
{
	mem_remote *m = of(r);
	mem_coll *c = find_coll(m, collection);

	if (!begin(m, MEM_REQ_CTAG))
		return refuse_reentry(ret);
	const mem_fault *f = take_fault(m, MEM_REQ_CTAG, collection, false);
	if (f)
		return f->status ? answer(ret, "PROPFIND", collection, f->status, f->body)
				 : transport(ret, "PROPFIND", collection, f->err);
	if (!c)
		return answer(ret, "PROPFIND", collection, 404, NULL);
	char *ctag = NULL;
	if (c->ctag && asprintf(&ctag, "\"ctag-%u-%" PRIu64 "\"", c->id, c->rev) < 0)
		return -ENOMEM;
	ret->status = 207;
	*ret_ctag = ctag;
	return 0;
}

/* ---- fetching --------------------------------------------------------------------------- */

static int give_item(mem_remote *m, ks_remote_batch *b, const mem_item *it)
{
	_cleanup_free_ char *href = answer_href(m, it->href);
	ks_remote_item ri = { .href = href, .etag = it->etag, .data = it->data, .len = it->len };
	int k;

	if (!href)
		return -ENOMEM;
	m->running++;
	k = b->on_item(&ri, b->userdata);
	m->running--;
	return k;
}

/* One multiget: its items to on_item, how it went in b->reply. A callback's failure stops
 * it and is returned. */
static int multiget(mem_remote *m, ks_remote_batch *b)
{
	mem_coll *c = find_coll(m, b->collection);
	char **canon = calloc(b->n_hrefs + 1, sizeof(char *));
	if (!canon)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_hrefs; i++)
		canon[i] = canonical(b->hrefs[i]);
	const mem_fault *f = take_fault_of(m, MEM_REQ_MULTIGET, (const char *const *) canon,
					   b->n_hrefs, false);
	for (size_t i = 0; i < b->n_hrefs; i++)
		free(canon[i]);
	free(canon);
	int k;

	if (f && f->status) {
		answer(&b->reply, "REPORT", b->collection, f->status, f->body);
		return 0;
	}
	if (!c) {
		answer(&b->reply, "REPORT", b->collection, 404, NULL);
		return 0;
	}
	if (m->b.missing == MEM_MISSING_FAIL)
		for (size_t i = 0; i < b->n_hrefs; i++) {
			_cleanup_free_ char *h = canonical(b->hrefs[i]);
			if (!h || coll_of_item(m, h) != c || !find_live(m, h)) {
				answer(&b->reply, "REPORT", b->collection, 404, NULL);
				return 0;
			}
		}
	size_t upto = f && f->err ? b->n_hrefs / 2 : b->n_hrefs;
	for (size_t i = 0; i < upto; i++) {
		_cleanup_free_ char *h = canonical(b->hrefs[i]);
		const mem_item *it = h && coll_of_item(m, h) == c ? find_live(m, h) : NULL;
		/* A 404 response for a missing href carries no data: nothing reaches
		 * on_item, as when it is left out. */
		if (!it || take_fault(m, MEM_REQ_MULTIGET, h, true))
			continue;
		k = give_item(m, b, it);
		if (k < 0) {
			b->reply.result = k;
			return k;
		}
	}
	if (f && f->err) {
		transport(&b->reply, "REPORT", b->collection, f->err);
		return 0;
	}
	b->reply.status = 207;
	b->reply.result = 0;
	return 0;
}

/* Requests sent together are in flight a few at a time, as lib/dav.c sends them: when a
 * callback stops the operation, those already in flight have reached the server (what they
 * changed stays changed) and their answers are dropped. */
#define IN_FLIGHT KS_DAV_MAX_PARALLEL

static int mem_fetch(ks_remote *r, ks_remote_batch *b, size_t n,
		     int (*done)(ks_remote_batch *b, void *userdata), void *userdata)
{
	mem_remote *m = of(r);
	_cleanup_free_ size_t *o = NULL;
	size_t sent = 0;
	int k = 0;

	if (m->running) {
		m->reentries++;
		return -EDEADLK;
	}
	o = order(m, n);
	if (!o)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		b[i].reply = (ks_remote_reply) {};
	for (size_t j = 0; k >= 0 && j < n; j++) {
		for (; k >= 0 && sent < n && sent < j + IN_FLIGHT; sent++) {
			m->counts[MEM_REQ_MULTIGET]++;
			k = multiget(m, &b[o[sent]]);
		}
		if (k >= 0) {
			m->running++;
			k = done(&b[o[j]], userdata);
			m->running--;
		}
		if (k < 0)
			for (size_t l = j + 1; l < n; l++) {
				ks_remote_reply_done(&b[o[l]].reply);
				b[o[l]].reply = (ks_remote_reply) { .result = -ECANCELED };
			}
	}
	return k;
}

static int mem_get(ks_remote *r, const char *href, bool vcard4, ks_remote_reply *ret)
{
	mem_remote *m = of(r);
	_cleanup_free_ char *h = canonical(href);

	if (!begin(m, MEM_REQ_GET))
		return refuse_reentry(ret);
	const mem_fault *f = take_fault(m, MEM_REQ_GET, h, false);
	if (f)
		return f->status ? answer(ret, "GET", href, f->status, f->body)
				 : transport(ret, "GET", href, f->err);
	const mem_item *it = h ? find_live(m, h) : NULL;
	if (!it)
		return answer(ret, "GET", href, 404, NULL);
	if (it->len > KS_CARD_MAX) {
		set_msg(ret, "GET", href, "the answer is over the limit");
		return ret->result = -EFBIG;
	}
	ret->body = malloc(it->len + 1);
	ret->etag = strdup(it->etag);
	if (!ret->body || !ret->etag)
		return -ENOMEM;
	memcpy(ret->body, it->data, it->len + 1);
	ret->body_len = it->len;
	ret->status = 200;
	ret->result = 0;
	return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

static const char *precondition(const char *cond)
{
	static char body[256];

	snprintf(body, sizeof(body), "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error "
		 "xmlns:d=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\" "
		 "xmlns:CR=\"urn:ietf:params:xml:ns:carddav\"><%s/></d:error>\n", cond);
	return body;
}

static const char uid_clash_207[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus xmlns:d=\"DAV:\"><d:response>"
	"<d:href>%s</d:href><d:status>HTTP/1.1 412 Precondition Failed</d:status><d:error>"
	"<C:no-uid-conflict xmlns:C=\"urn:ietf:params:xml:ns:caldav\"/></d:error></d:response>"
	"</d:multistatus>\n";

static int do_put(mem_remote *m, ks_remote_write *w, const char *h)
{
	ks_remote_reply *ret = &w->reply;
	mem_coll *c = coll_of_item(m, h);
	mem_item *old = find_live(m, h);
	ks_item_info info = {};
	bool card = c && c->kind == KS_COLLECTION_ADDRESSBOOK;
	int k;

	if (!c)
		return answer(ret, "PUT", w->href, 409, NULL);
	if (c->readonly)
		return answer(ret, "PUT", w->href, 403, precondition("d:need-privileges"));
	if (w->if_match && !old)
		return answer(ret, "PUT", w->href, m->b.missing_if_match_404 ? 404 : 412, NULL);
	if ((w->if_match && strcmp(w->if_match, old->etag) != 0) || (!w->if_match && old))
		return answer(ret, "PUT", w->href, 412, NULL);
	k = ks_item_parse_info(w->data, w->len, &info, NULL);
	if (k == -ENOMEM)
		return k;
	bool valid = k >= 0 && info.uid && (info.kind == KS_ITEM_VCARD) == card;
	unsigned comp = info.kind == KS_ITEM_VEVENT ? KS_COMP_VEVENT
			: info.kind == KS_ITEM_VTODO ? KS_COMP_VTODO
			: KS_COMP_VJOURNAL;
	_cleanup_free_ char *uid = valid ? strdup(info.uid) : NULL;
	ks_item_info_done(&info);
	if (!valid)
		return answer(ret, "PUT", w->href, 403,
			      precondition(card ? "CR:valid-address-data"
						: "C:valid-calendar-data"));
	if (!uid)
		return -ENOMEM;
	if (!card && m->b.enforce_components && c->components && !(c->components & comp))
		return answer(ret, "PUT", w->href, 403,
			      precondition("C:supported-calendar-component"));
	if (old && m->b.refuse_uid_change && old->uid && strcmp(old->uid, uid) != 0)
		return answer(ret, "PUT", w->href, 409,
			      precondition(card ? "CR:no-uid-conflict" : "C:no-uid-conflict"));
	if (find_uid(c, uid, h) && m->b.uid_clash == MEM_UID_409)
		return answer(ret, "PUT", w->href, 409,
			      precondition(card ? "CR:no-uid-conflict" : "C:no-uid-conflict"));
	if (find_uid(c, uid, h) && m->b.uid_clash == MEM_UID_207) {
		_cleanup_free_ char *body = NULL;
		if (asprintf(&body, uid_clash_207, h) < 0)
			return -ENOMEM;
		return answer(ret, "PUT", w->href, 207, body);
	}
	_cleanup_free_ char *stored = NULL;
	k = mem_stored_form(m, w->data, w->len, &stored);
	if (k >= 0)
		k = store(m, c, h, stored, strlen(stored));
	if (k < 0)
		return k;
	m->changes++;
	ret->status = old ? 204 : 201;
	ret->result = 0;
	if (m->b.rewrite != MEM_REWRITE_STAMP) {
		ret->etag = strdup(find_live(m, h)->etag);
		if (!ret->etag)
			return -ENOMEM;
	}
	return 0;
}

static int do_delete(mem_remote *m, ks_remote_write *w, const char *h)
{
	ks_remote_reply *ret = &w->reply;
	mem_coll *c = coll_of_item(m, h);
	mem_item *old = find_live(m, h);

	if (c && c->readonly)
		return answer(ret, "DELETE", w->href, 403, precondition("d:need-privileges"));
	if (w->if_match && !old)
		return answer(ret, "DELETE", w->href, m->b.missing_if_match_404 ? 404 : 412, NULL);
	if (!old)
		return answer(ret, "DELETE", w->href, 404, NULL);
	if (w->if_match && strcmp(w->if_match, old->etag) != 0)
		return answer(ret, "DELETE", w->href, 412, NULL);
	drop(c, old);
	m->changes++;
	ret->status = 204;
	ret->result = 0;
	return 0;
}

/* One PUT or DELETE carried out (or not) as the faults have it, its answer in w->reply. */
static int write_one(mem_remote *m, ks_remote_write *w)
{
	bool is_put = w->op == KS_REMOTE_PUT;
	const char *method = is_put ? "PUT" : "DELETE";
	mem_req kind = is_put ? MEM_REQ_PUT : MEM_REQ_DELETE;
	_cleanup_free_ char *h = canonical(w->href);
	int k;

	m->counts[kind]++;
	const mem_fault *f = take_fault(m, kind, h, false);
	if (!h)
		k = answer(&w->reply, method, w->href, 400, NULL);
	else if (f && !f->applied)
		k = f->status ? answer(&w->reply, method, w->href, f->status, f->body)
			      : transport(&w->reply, method, w->href, f->err);
	else
		k = is_put ? do_put(m, w, h) : do_delete(m, w, h);
	if (k == -ENOMEM)
		return k;
	if (f && f->applied) {
		/* Carried out, and the answer lost on the way back. */
		ks_remote_reply_done(&w->reply);
		w->reply = (ks_remote_reply) {};
		if (f->status)
			answer(&w->reply, method, w->href, f->status, f->body);
		else
			transport(&w->reply, method, w->href, f->err);
	}
	return 0;
}

static int mem_write(ks_remote *r, ks_remote_write *w, size_t n,
		     int (*done)(ks_remote_write *w, void *userdata), void *userdata)
{
	mem_remote *m = of(r);
	_cleanup_free_ size_t *o = NULL;
	size_t sent = 0;
	int k = 0;

	if (m->running) {
		m->reentries++;
		return -EDEADLK;
	}
	o = order(m, n);
	if (!o)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		w[i].reply = (ks_remote_reply) {};
	for (size_t j = 0; k >= 0 && j < n; j++) {
		for (; k >= 0 && sent < n && sent < j + IN_FLIGHT; sent++)
			k = write_one(m, &w[o[sent]]);
		if (k >= 0) {
			m->running++;
			k = done(&w[o[j]], userdata);
			m->running--;
		}
		if (k < 0)
			for (size_t l = j + 1; l < n; l++) {
				ks_remote_reply_done(&w[o[l]].reply);
				w[o[l]].reply = (ks_remote_reply) { .result = -ECANCELED };
			}
	}
	return k;
}

/* ---- collections and the account -------------------------------------------------------- */

static int mem_probe(ks_remote *r, const char *collection, ks_remote_reply *ret)
{
	mem_remote *m = of(r);

	if (!begin(m, MEM_REQ_PROBE))
		return refuse_reentry(ret);
	const mem_fault *f = take_fault(m, MEM_REQ_PROBE, collection, false);
	if (f)
		return f->status ? answer(ret, "PROPFIND", collection, f->status, f->body)
				 : transport(ret, "PROPFIND", collection, f->err);
	if (!find_coll(m, collection))
		return answer(ret, "PROPFIND", collection, 404, NULL);
	ret->status = 207;
	return 0;
}

static int fail_msg(char **reterr_msg, const char *what, const mem_fault *f)
{
	int r = f->status ? ks_dav_status_to_errno(f->status) : f->err;

	if (reterr_msg) {
		free(*reterr_msg);
		if (f->status && asprintf(reterr_msg, "%s: HTTP %ld", what, f->status) < 0)
			*reterr_msg = NULL;
		else if (!f->status && asprintf(reterr_msg, "%s: %s", what, strerror(-r)) < 0)
			*reterr_msg = NULL;
	}
	return r;
}

static int mem_discover(ks_remote *r, ks_cache_account *ret, char **reterr_msg)
{
	mem_remote *m = of(r);

	if (!begin(m, MEM_REQ_DISCOVER))
		return -EDEADLK;
	const mem_fault *f = take_fault(m, MEM_REQ_DISCOVER, NULL, false);
	if (f)
		return fail_msg(reterr_msg, "PROPFIND " MEM_BASE_URL, f);
	ret->principal = strdup(PRINCIPAL);
	ret->calendar_home = strdup(MEM_CALENDAR_HOME);
	ret->addressbook_home = strdup(MEM_ADDRESSBOOK_HOME);
	if (!ret->principal || !ret->calendar_home || !ret->addressbook_home)
		return -ENOMEM;
	return 0;
}

static int mem_list_home(ks_remote *r, const char *home, unsigned tokens, ks_collection **ret,
			 size_t *ret_n, char **reterr_msg)
{
	mem_remote *m = of(r);
	ks_collection *a = calloc(m->n_colls + 1, sizeof(*a));
	size_t n = 0, hl = strlen(home);

	if (!begin(m, MEM_REQ_HOMES)) {
		free(a);
		return -EDEADLK;
	}
	if (!a)
		return -ENOMEM;
	const mem_fault *f = take_fault(m, MEM_REQ_HOMES, home, false);
	if (f) {
		free(a);
		return fail_msg(reterr_msg, home, f);
	}
	for (size_t i = 0; i < m->n_colls; i++) {
		const mem_coll *c = m->colls[i];
		if (strncmp(c->href, home, hl) != 0 || strchr(c->href + hl, '/') !=
							       c->href + strlen(c->href) - 1)
			continue;
		if (take_fault(m, MEM_REQ_HOMES, c->href, true))
			continue;	/* a listing that leaves it out */
		ks_collection *k = &a[n++];
		/* What ks_list_home() makes of such a collection's PROPFIND response. */
		*k = (ks_collection) {
			.href = strdup(c->href), .kind = c->kind,
			.displayname = ks_vdir_displayname(c->displayname),
			.components = c->kind == KS_COLLECTION_CALENDAR ? c->components : 0,
			.readonly = c->readonly,
			.supports_sync = c->sync || !(tokens & KS_LIST_SYNC_TOKEN),
			.enabled = true,
		};
		if ((tokens & KS_LIST_SYNC_TOKEN) && c->sync)
			(void) asprintf(&k->sync_token, TOKEN_PREFIX "%u-%" PRIu64, c->id, c->rev);
		if ((tokens & KS_LIST_CTAG) && c->ctag)
			(void) asprintf(&k->ctag, "\"ctag-%u-%" PRIu64 "\"", c->id, c->rev);
		if (!k->href || ((tokens & KS_LIST_SYNC_TOKEN) && c->sync && !k->sync_token) ||
		    ((tokens & KS_LIST_CTAG) && c->ctag && !k->ctag)) {
			ks_collection_free_array(a, n);
			return -ENOMEM;
		}
	}
	*ret = a;
	*ret_n = n;
	return 0;
}

static int mem_check_auth(ks_remote *r)
{
	mem_remote *m = of(r);

	if (!begin(m, MEM_REQ_AUTH))
		return -EDEADLK;
	return m->auth_refused ? -EACCES : 0;
}

static const char *mem_base_url(const ks_remote *r)
{
	return MEM_BASE_URL;
}

static unsigned mem_request_count(const ks_remote *r)
{
	return mem_requests_total((const mem_remote *) r);
}

static unsigned mem_retry_after(const ks_remote *r)
{
	return ((const mem_remote *) r)->retry_after;
}

static void mem_free_op(ks_remote *r)
{
	/* The test owns the server: the engine never frees a store it was handed. */
}

static const ks_remote_ops mem_ops = {
	.list = mem_list,
	.query = mem_query,
	.ctag = mem_ctag,
	.fetch = mem_fetch,
	.get = mem_get,
	.write = mem_write,
	.probe = mem_probe,
	.discover = mem_discover,
	.list_home = mem_list_home,
	.check_auth = mem_check_auth,
	.base_url = mem_base_url,
	.request_count = mem_request_count,
	.retry_after = mem_retry_after,
	.free = mem_free_op,
};

/* ---- the test's side -------------------------------------------------------------------- */

int mem_remote_new(mem_remote **ret)
{
	mem_remote *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->r.ops = &mem_ops;
	m->b = (mem_behaviour) { .token_refused = 403 };
	*ret = m;
	return 0;
}

static void coll_free(mem_coll *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		item_clear(&c->items[i]);
		free(c->items[i].href);
	}
	free(c->items);
	free(c->href);
	free(c->displayname);
	free(c);
}

mem_remote *mem_remote_free(mem_remote *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n_colls; i++)
		coll_free(m->colls[i]);
	free(m->colls);
	mem_clear_faults(m);
	free(m);
	return NULL;
}

ks_remote *mem_remote_store(mem_remote *m)
{
	return &m->r;
}

mem_behaviour *mem_remote_behaviour(mem_remote *m)
{
	return &m->b;
}

int mem_add_collection(mem_remote *m, ks_collection_kind kind, const char *name,
		       const char *displayname, const char **ret_href)
{
	mem_coll *c = calloc(1, sizeof(*c));
	mem_coll **nc = realloc(m->colls, (m->n_colls + 1) * sizeof(*nc));

	if (nc)
		m->colls = nc;
	if (!c || !nc) {
		free(c);
		return -ENOMEM;
	}
	*c = (mem_coll) {
		.id = ++m->next_id, .kind = kind, .sync = true, .ctag = true,
		.components = kind == KS_COLLECTION_CALENDAR
				      ? KS_COMP_VEVENT | KS_COMP_VTODO | KS_COMP_VJOURNAL : 0,
		.rev = 1, .valid_from = 1,
	};
	if (asprintf(&c->href, "%s%s/", kind == KS_COLLECTION_CALENDAR ? MEM_CALENDAR_HOME
								       : MEM_ADDRESSBOOK_HOME,
		     name) < 0) {
		free(c);
		return -ENOMEM;
	}
	if (find_coll(m, c->href)) {
		coll_free(c);
		return -EEXIST;
	}
	c->displayname = displayname ? strdup(displayname) : NULL;
	if (displayname && !c->displayname) {
		coll_free(c);
		return -ENOMEM;
	}
	m->colls[m->n_colls++] = c;
	if (ret_href)
		*ret_href = c->href;
	return 0;
}

bool mem_has_collection(const mem_remote *m, const char *href)
{
	return find_coll(m, href) != NULL;
}

int mem_remove_collection(mem_remote *m, const char *href)
{
	for (size_t i = 0; i < m->n_colls; i++)
		if (m->colls[i] == find_coll(m, href)) {
			coll_free(m->colls[i]);
			memmove(&m->colls[i], &m->colls[i + 1],
				(m->n_colls - i - 1) * sizeof(*m->colls));
			m->n_colls--;
			return 0;
		}
	return -ENOENT;
}

int mem_collection_set(mem_remote *m, const char *href, bool sync, bool ctag, bool readonly,
		       unsigned components, unsigned page)
{
	mem_coll *c = find_coll(m, href);

	if (!c)
		return -ENOENT;
	c->sync = sync;
	c->ctag = ctag;
	c->readonly = readonly;
	if (c->kind == KS_COLLECTION_CALENDAR)
		c->components = components;
	c->page = page;
	return 0;
}

int mem_expire_tokens(mem_remote *m, const char *href)
{
	mem_coll *c = find_coll(m, href);
	size_t k = 0;

	if (!c)
		return -ENOENT;
	/* The history is compacted: the tombstones go, every item is recorded anew after a
	 * revision of its own that no token given before reaches, so that tokens given from now
	 * on (a truncated listing's included) name revisions that are still known. */
	c->valid_from = ++c->rev;
	for (size_t i = 0; i < c->n; i++) {
		if (c->items[i].gone) {
			free(c->items[i].href);
			continue;
		}
		c->items[k] = c->items[i];
		c->items[k++].rev = ++c->rev;
	}
	c->n = k;
	return 0;
}

int mem_put(mem_remote *m, const char *href, const char *data, size_t len)
{
	mem_coll *c = coll_of_item(m, href);

	return c ? store(m, c, href, data, len) : -ENOENT;
}

int mem_delete(mem_remote *m, const char *href)
{
	mem_item *it = find_live(m, href);

	if (!it)
		return -ENOENT;
	drop(coll_of_item(m, href), it);
	return 0;
}

int mem_move(mem_remote *m, const char *from, const char *to)
{
	mem_item *it = find_live(m, from);
	mem_coll *c = coll_of_item(m, to);

	if (!it || !c)
		return -ENOENT;
	if (find_live(m, to))
		return -EEXIST;
	_cleanup_free_ char *data = malloc(it->len + 1);
	size_t len = it->len;
	if (!data)
		return -ENOMEM;
	memcpy(data, it->data, len + 1);
	drop(coll_of_item(m, from), it);
	return store(m, c, to, data, len);
}

int mem_stored_form(const mem_remote *m, const char *data, size_t len, char **ret)
{
	ks_buf b = {};
	int r = m->b.rewrite == MEM_REWRITE_SORT ? rewrite_sorted(data, len, &b)
		: m->b.rewrite == MEM_REWRITE_STAMP ? rewrite_stamped(data, len, &b)
		: ks_buf_append(&b, data, len);

	if (r >= 0)
		*ret = ks_buf_steal(&b);
	ks_buf_done(&b);
	return r < 0 ? r : *ret ? 0 : -ENOMEM;
}

const mem_item *mem_find(const mem_remote *m, const char *href)
{
	return find_live(m, href);
}

size_t mem_count(const mem_remote *m, const char *collection)
{
	const mem_coll *c = find_coll(m, collection);
	size_t n = 0;

	for (size_t i = 0; c && i < c->n; i++)
		n += !c->items[i].gone;
	return n;
}

const mem_item *mem_item_at(const mem_remote *m, const char *collection, size_t i)
{
	const mem_coll *c = find_coll(m, collection);

	for (size_t k = 0; c && k < c->n; k++)
		if (!c->items[k].gone && i-- == 0)
			return &c->items[k];
	return NULL;
}

int mem_add_fault(mem_remote *m, const mem_fault *f)
{
	fault *nf = realloc(m->faults, (m->n_faults + 1) * sizeof(*nf));

	if (!nf)
		return -ENOMEM;
	m->faults = nf;
	fault *x = &nf[m->n_faults];
	*x = (fault) { .f = *f };
	x->href = f->href ? strdup(f->href) : NULL;
	x->body = f->body ? strdup(f->body) : NULL;
	if ((f->href && !x->href) || (f->body && !x->body)) {
		free(x->href);
		free(x->body);
		return -ENOMEM;
	}
	x->f.href = x->href;
	x->f.body = x->body;
	m->n_faults++;
	return 0;
}

void mem_clear_faults(mem_remote *m)
{
	for (size_t i = 0; i < m->n_faults; i++) {
		free(m->faults[i].href);
		free(m->faults[i].body);
	}
	free(m->faults);
	m->faults = NULL;
	m->n_faults = 0;
}

size_t mem_pending_faults(const mem_remote *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_faults; i++)
		n += m->faults[i].f.count > 0;
	return n;
}

void mem_refuse_auth(mem_remote *m, bool refuse)
{
	m->auth_refused = refuse;
}

unsigned mem_requests(const mem_remote *m, mem_req kind)
{
	return m->counts[kind];
}

unsigned mem_requests_total(const mem_remote *m)
{
	unsigned n = 0;

	for (size_t i = 0; i < _MEM_REQ_MAX; i++)
		n += m->counts[i];
	return n;
}

unsigned mem_changes(const mem_remote *m)
{
	return m->changes;
}

unsigned mem_reentries(const mem_remote *m)
{
	return m->reentries;
}

void mem_reset_counters(mem_remote *m)
{
	memset(m->counts, 0, sizeof(m->counts));
	m->changes = m->reentries = 0;
	m->retry_after = 0;
}
