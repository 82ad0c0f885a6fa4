/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <strings.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dav_p.h"
#include "discover_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "item_p.h"
#include "ksync.h"
#include "limits.h"
#include "log_p.h"
#include "macro.h"
#include "manage_p.h"
#include "merge_p.h"
#include "refusal_p.h"
#include "scan_p.h"
#include "secret_p.h"
#include "session_p.h"
#include "text_p.h"
#include "vdir_p.h"

/* Discovery of principal and home sets is repeated at most this often; collections are
 * listed from the home sets on every run, which also finds new ones. */
#define REDISCOVER_SECS (24 * 3600)
/* The home sets are listed (new, removed and renamed collections) at most this often. */
#define LIST_SECS 3600
/* Deletions within this long of the first are counted together by the mass-deletion guard. */
#define GUARD_WINDOW_SECS 3600
/* A file found missing is looked for again this long after its directory last changed before
 * its item is deleted. */
#define SECOND_LOOK_MS 1000

int ks_engine_collection_dir(const ks_engine *e, const char *account, const ks_collection *col,
			     char **ret)
{
	return asprintf(ret, "%s/%s/%s/%s", e->data_dir,
			col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", account,
			col->name) < 0 ? -ENOMEM : 0;
}

int ks_engine_open_collection_dir(const ks_engine *e, const char *account,
				  const ks_collection *col, bool create, int *ret_fd,
				  char **reterr_path)
{
	_cleanup_free_ char *rel = NULL;
	size_t at = 0;
	int r;

	if (asprintf(&rel, "%s/%s/%s",
		     col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", account,
		     col->name) < 0)
		return -ENOMEM;
	r = ks_fs_open_beneath(e->data_dir, rel, create, ret_fd, &at);
	if (r < 0 && reterr_path &&
	    asprintf(reterr_path, "%s%s%.*s", e->data_dir, at ? "/" : "", (int) at, rel) < 0)
		*reterr_path = NULL;
	return r;
}

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

/* A damaged cache is moved aside (with its WAL, which belongs to it) rather than deleted, and
 * a new one is built: the run that follows lists every collection in full and matches the
 * files to the server's items by UID, so nothing is taken as deleted on either side. The
 * inode check keeps a second process that found the same damage from moving the new one. */
static int set_aside(const char *db, const struct stat *seen)
{
	_cleanup_free_ char *kept = NULL, *wal = NULL, *kept_wal = NULL, *shm = NULL;
	char when[32];
	struct stat st;
	time_t now = time(NULL);

	if (stat(db, &st) < 0 || st.st_ino != seen->st_ino || st.st_dev != seen->st_dev)
		return 0;
	strftime(when, sizeof(when), "%Y%m%dT%H%M%S", gmtime(&now));
	if (asprintf(&kept, "%s.corrupt-%s", db, when) < 0 ||
	    asprintf(&wal, "%s-wal", db) < 0 || asprintf(&kept_wal, "%s-wal", kept) < 0 ||
	    asprintf(&shm, "%s-shm", db) < 0)
		return -ENOMEM;
	if (rename(wal, kept_wal) < 0 && errno != ENOENT)
		return -errno;
	(void) unlink(shm);
	if (rename(db, kept) < 0)
		return -errno;
	ks_log(KS_LOG_WARNING,
	       "The cache '%s' is damaged: it was moved to '%s' and a new one is built from the "
	       "server and the files; nothing is deleted on either side, and files that differ "
	       "from the server's items are merged with them", db, kept);
	return 1;
}

int ks_engine_new(const char *data_dir, ks_engine **ret)
{
	struct stat seen = {};
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
	if (stat(db, &seen) == 0 && seen.st_size == 0)
		/* SQLite takes an empty file for an empty database: say why everything is
		 * listed and matched again. */
		ks_log(KS_LOG_WARNING, "The cache '%s' is empty: a new one is built from the server "
		       "and the files; nothing is deleted on either side", db);
	r = ks_cache_open(db, &e->cache);
	if (r == -EUCLEAN) {
		r = set_aside(db, &seen);
		if (r >= 0)
			r = ks_cache_open(db, &e->cache);
	}
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
	bool damaged;		/* the cache answered -EUCLEAN */
	bool first_pass;	/* a damaged cache gets a second pass: keep its -EUCLEAN quiet */
} run;

static void emit(run *R, const ks_sync_event *ev)
{
	if (R->o->on_event)
		R->o->on_event(ev, R->o->userdata);
}

static void emit_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Messages quote file names and servers' words: a newline or an escape sequence in either
 * must not forge a line of the log or drive the terminal, so control characters are written
 * as C escapes; so are C1 controls (CSI, U+009B, acts like ESC [) and the bidi overrides,
 * which reorder what the reader sees. */
static void escape_controls(const char *in, char *out, size_t n)
{
	size_t k = 0;

	for (; *in && k + 7 < n; in++) {
		unsigned char ch = (unsigned char) *in;
		const unsigned char *u = (const unsigned char *) in;
		if (ch == '\n' || ch == '\t' || ch == '\r') {
			out[k++] = '\\';
			out[k++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
		} else if (ch < 0x20 || ch == 0x7f)
			k += (size_t) snprintf(out + k, n - k, "\\x%02x", ch);
		else if (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f) {
			k += (size_t) snprintf(out + k, n - k, "\\u%04x", u[1]);
			in++;
		} else if (u[0] == 0xe2 && ((u[1] == 0x80 && u[2] >= 0xaa && u[2] <= 0xae) ||
					    (u[1] == 0x81 && u[2] >= 0xa6 && u[2] <= 0xa9))) {
			/* U+202A..U+202E and U+2066..U+2069 */
			k += (size_t) snprintf(out + k, n - k, "\\u%04x",
					       0x2000 | ((u[1] & 0x3f) << 6) | (u[2] & 0x3f));
			in += 2;
		} else
			out[k++] = (char) ch;
	}
	out[k] = 0;
}

static void emit_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
{
	char raw[1024], msg[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	escape_controls(raw, msg, sizeof(msg));
	if (err == -EUCLEAN) {
		R->damaged = true;
		if (R->first_pass)
			return;
	}
	ks_sync_event ev = {
		.type = t, .account = R->acc->name, .collection = coll, .error = err, .message = msg,
	};
	emit(R, &ev);
}

typedef struct href_list {
	char **v;
	size_t n, cap;
} href_list;

/* Per-collection state while it syncs. */
typedef struct coll_run {
	run *R;
	ks_collection *col;
	char label[KS_NAME_MAX + 16];	/* contacts/<name> */
	size_t rows_at_start;	/* items of the collection when its run started */
	int dirfd;
	char *dir;		/* the directory's path, for messages */
	const char *ext;
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
	ks_intents_free(c->intents, c->n_intents);
	ks_refusals_free(c->refusals, c->n_refusals);
	strv_free(c->uploaded, c->n_uploaded);
	strv_free(c->untracked_uids, c->n_untracked);
	for (size_t v = 0; v < 2; v++) {
		strv_free(c->fetch[v].v, c->fetch[v].n);
		strv_free(c->missing[v].v, c->missing[v].n);
	}
	strv_free(c->gone, c->n_gone);
	strv_free(c->seen, c->n_seen);
	if (c->dirfd >= 0)
		close(c->dirfd);
	free(c->dir);
}

static bool is_collection_href(const coll_run *c, const char *href)
{
	size_t n = strlen(c->col->href);
	/* The collection itself, with or without its trailing slash. */
	return strcmp(href, c->col->href) == 0 ||
	       (strlen(href) == n - 1 && strncmp(href, c->col->href, n - 1) == 0);
}

/* Whether this run uploaded href (c->uploaded is sorted before the read-back listing). */
static bool uploaded_here(const coll_run *c, const char *href)
{
	return c->n_uploaded &&
	       bsearch(&href, c->uploaded, c->n_uploaded, sizeof(char *), cmp_str) != NULL;
}

/* A listing entry (sync-collection or PROPFIND Depth 1): decide fetch or delete. */
static int on_listing(const ks_ms_response *r, void *userdata)
{
	coll_run *c = userdata;
	_cleanup_free_ char *href = NULL;
	ks_cache_item it = {};
	int k;

	/* An empty href is a relative reference to the request-URI itself (RFC 3986 5.2), which
	 * is how a 507 for the collection may come (RFC 6578 3.6): it must not be skipped, or a
	 * truncated listing would be taken as complete. */
	if (!r->href[0]) {
		if (r->status == 507)
			c->truncated = true;
		return 0;
	}
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
	/* Only direct members of the collection become items. What lies outside it is no
	 * business of this collection, neither to write nor to delete: it is reported (a few
	 * times per run, a server may list any number) and left alone. A member collection
	 * (a trailing slash) is not an item either, and nothing to report. */
	size_t n = strlen(c->col->href);
	if (strncmp(href, c->col->href, n) != 0) {
		c->skipped++;
		if (c->skipped_outside++ < 3)
			emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, -EINVAL,
				  "ignoring '%.200s' from the server: it is not in the collection",
				  r->href);
		return 0;
	}
	if (strchr(href + n, '/'))
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
	if (same && c->read_back && uploaded_here(c, href))
		same = false;
	if (same && !c->R->o->force)
		return 0;
	/* A server that converts cards (SabreDAV, Cyrus: vCard 3.0 unless asked otherwise)
	 * is asked for each card in the version it had here, and for a new card in 4.0, which
	 * loses nothing: a card keeps the version its author wrote, and a 4.0 card written
	 * elsewhere keeps what 3.0 cannot say. */
	int v4 = 0;
	if (c->col->vcard4) {
		v4 = k >= 0 ? ks_cache_item_is_vcard4(c->R->e->cache, c->col->id, href) : 1;
		if (v4 < 0)
			return v4;
	}
	href_list *l = &c->fetch[v4];
	return strv_push(&l->v, &l->n, &l->cap, href);
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
	bool vcard4;		/* cards asked for as vCard 4.0 */
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
	/* One answer per href: a second one would become a second file for one row, which the
	 * next scan would take for a new local item and upload. */
	for (size_t i = 0; i < b->n_items; i++)
		if (strcmp(b->items[i].href, href) == 0) {
			b->c->skipped++;
			emit_fail(b->c->R, KS_SYNC_ITEM_SKIPPED, b->c->label, -ENOTUNIQ,
				  "ignoring a second answer for '%.200s' in one multiget", href);
			return 0;
		}
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
	bool skip_write;	/* the file already holds these bytes */
	bool adopt;		/* an untracked local file with this UID becomes the item */
	bool ours;		/* a new row for a local file (an upload a crash cut off) */
} staged;

enum { FILE_AS_RECORDED, FILE_EDITED, FILE_MISSING, FILE_OTHER };

/* Whether the file of a cached item was changed locally since ksync wrote or last saw it:
 * FILE_EDITED when it differs, FILE_OTHER when it is no regular file (a symlink, a FIFO),
 * FILE_AS_RECORDED, FILE_MISSING. */
static int local_edit_pending(coll_run *c, const ks_cache_item *it)
{
	struct stat st;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	char hex[65];

	if (fstatat(c->dirfd, it->filename, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? FILE_MISSING : -errno;
	if (!S_ISREG(st.st_mode))
		return FILE_OTHER;
	if (ks_scan_stat_matches(&st, it->mtime_ns, it->ino, it->size))
		return FILE_AS_RECORDED;
	int r = ks_fs_read_file(c->dirfd, it->filename, KS_CARD_MAX, &data, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return FILE_EDITED;
	ks_sha256_hex(data, len, hex);
	return it->hash && strcmp(hex, it->hash) == 0 ? FILE_AS_RECORDED : FILE_EDITED;
}

/* An untracked file already named name: 0 when it holds exactly data (a crash left it, or an
 * upload just made it) or does not exist, 1 when it holds something else. */
static int untracked_differs(coll_run *c, const char *name, const char *data, size_t len)
{
	_cleanup_free_ char *cur = NULL;
	size_t n = 0;
	int r = ks_fs_read_file(c->dirfd, name, KS_CARD_MAX, &cur, &n);

	if (r == -ENOENT)
		return 0;
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 1;
	return n == len && memcmp(cur, data, len) == 0 ? 0 : 1;
}

/* 1 when the untracked file name holds exactly data, with its stat in *ret_st, taken before
 * and checked after the read so that an edit in between is not missed; 0 otherwise. */
static int untracked_same(coll_run *c, const char *name, const char *data, size_t len,
			  struct stat *ret_st)
{
	struct stat st;
	int r;

	if (fstatat(c->dirfd, name, ret_st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(ret_st->st_mode))
		return 0;
	r = untracked_differs(c, name, data, len);
	if (r != 0)
		return r < 0 ? r : 0;
	if (fstatat(c->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !ks_scan_stat_matches(&st,
				  (int64_t) ret_st->st_mtim.tv_sec * 1000000000 +
					  ret_st->st_mtim.tv_nsec,
				  (int64_t) ret_st->st_ino, (int64_t) ret_st->st_size))
		return 0;
	return 1;
}

/* Local item files without a row, by UID: created here while the server got an item with
 * the same UID (or uploaded before a crash kept their row from being written). Read once per
 * run, and only when the server has new items. */
static int find_untracked(coll_run *c)
{
	ks_scan_result sr = {};
	/* Read-only: this runs inside apply_batch()'s transaction, where the scan could not
	 * open its own to record touched files (the push's scan records them). */
	int r = ks_scan_collection(c->R->e->cache, c->col->id, c->dirfd, c->ext, true, &sr);

	c->untracked_known = true;
	if (r < 0)
		return r;
	for (size_t i = 0; r >= 0 && i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		ks_item_info info = {};
		if (ch->kind != KS_LOCAL_NEW || !ch->data)
			continue;
		if (ks_item_parse_info(ch->data, ch->len, &info, NULL) >= 0 && info.uid) {
			r = strv_push(&c->untracked_uids, &c->n_untracked, &c->cap_untracked,
				      info.uid);
			if (r >= 0)
				r = strv_push(&c->untracked_uids, &c->n_untracked,
					      &c->cap_untracked, ch->filename);
		}
		ks_item_info_done(&info);
	}
	ks_scan_result_done(&sr);
	return r;
}

static const char *untracked_with_uid(const coll_run *c, const char *uid)
{
	for (size_t i = 0; uid && i + 1 < c->n_untracked; i += 2)
		if (strcmp(c->untracked_uids[i], uid) == 0)
			return c->untracked_uids[i + 1];
	return NULL;
}

static const ks_intent *find_intent(const coll_run *c, const char *href)
{
	for (size_t i = 0; i < c->n_intents; i++)
		if (strcmp(c->intents[i].href, href) == 0)
			return &c->intents[i];
	return NULL;
}

static int keep_copy(coll_run *c, const char *filename, const char *uid, const char *data,
		     size_t len, const char *side, const char *winner, const char *summary,
		     char **ret_path);

/* An edited file that does not parse as an item: kept as a conflict copy, after which the
 * server's version may replace it (1). 0 when the file is a valid item (an edit to send). */
static int repair_damaged(coll_run *c, const ks_cache_item *it)
{
	_cleanup_free_ char *data = NULL, *kept = NULL;
	size_t len = 0;
	ks_item_info info = {};
	int r = ks_fs_read_file(c->dirfd, it->filename, KS_CARD_MAX, &data, &len);

	if (r == -ENOMEM)
		return r;
	if (r >= 0) {
		r = ks_item_parse_info(data, len, &info, NULL);
		ks_item_info_done(&info);
		if (r == -ENOMEM)
			return r;
		if (r >= 0)
			return 0;
		r = keep_copy(c, it->filename, it->uid, data, len, "damaged", "server",
			      "damaged local file", &kept);
		if (r < 0)
			return r;
	}
	emit_fail(c->R, KS_SYNC_NOTICE, c->label, 0,
		  "'%s' was damaged and is restored from the server%s%s", it->filename,
		  kept ? "; the damaged file is kept in " : "", kept ? kept : "");
	return 1;
}

static int pick_filename(coll_run *c, const fetched_item *f, const ks_item_info *info,
			 const staged *batch_items, size_t n_batch, char **ret)
{
	_cleanup_free_ char *base = NULL;
	int r;

	/* An upload that a crash cut off before its row was written: the item is the user's
	 * file, which keeps its name (a second file with the same UID would be a duplicate). */
	const ks_intent *in = find_intent(c, f->href);
	if (in && in->op == KS_INTENT_CREATE && in->filename &&
	    faccessat(c->dirfd, in->filename, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    ks_cache_filename_taken(c->R->e->cache, c->col->id, in->filename, f->href) == 0) {
		*ret = strdup(in->filename);
		return *ret ? 0 : -ENOMEM;
	}
	r = ks_vdir_item_name(info->uid, f->href, &base);
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
			if (r >= 0 && r == 0)
				r = untracked_differs(c, name, f->data, f->len);
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

/* A file of the collection could not be written or deleted (a read-only directory, a full
 * disk): the collection fails with the path and the cause, reported once. No row was
 * written for it, so the next run fetches it again. */
static int file_failed(coll_run *c, const char *what, const char *name, int r)
{
	if (r == -ENOMEM)
		return r;
	if (c->cb_error)
		return c->cb_error;
	if (name)
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, r, "cannot %s '%s/%s': %s",
			  what, c->dir, name, strerror(-r));
	else
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, r, "cannot %s files in '%s': %s",
			  what, c->dir, strerror(-r));
	/* A directory that cannot be written stops this collection only, where -EACCES would
	 * stop the account as a refused login does. */
	c->cb_error = r == -EACCES || r == -EPERM ? -EROFS : r;
	return c->cb_error;
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
		r = 0;
		if (!s->is_new) {
			/* A file keeps its name across updates; one edited locally since ksync
			 * wrote it is left alone, and the upload that follows merges the two. */
			r = local_edit_pending(c, &old);
			bool renamed = false;
			if (r == FILE_MISSING) {
				/* Renamed here (mv, an editor saving under another name): the
				 * file with the item's UID is the item, maybe edited, and the push
				 * that follows sends it, merged with this change. Writing the
				 * server's version under the old name would make two files with
				 * one UID. */
				if (!c->untracked_known) {
					r = find_untracked(c);
					if (r < 0) {
						ks_cache_item_done(&old);
						goto out;
					}
				}
				renamed = untracked_with_uid(c, old.uid) != NULL;
				r = renamed ? FILE_EDITED : FILE_MISSING;
			}
			if (r == FILE_EDITED && c->R->o->force && !renamed) {
				/* --force repairs a file that is no item any more (truncated,
				 * overwritten); the broken one is kept aside. */
				r = repair_damaged(c, &old);
				if (r == 0)
					r = FILE_EDITED;
				else if (r > 0)
					r = FILE_MISSING;
			}
			if (r < 0 || r == FILE_EDITED || r == FILE_OTHER) {
				ks_cache_item_done(&old);
				ks_item_info_done(&s->info);
				if (r < 0)
					goto out;
				/* The upload merges an edited file; nothing is sent for a symlink
				 * or a FIFO, so the listing must name this change again until the
				 * file is back. */
				if (r == FILE_OTHER)
					c->held++;
				c->deferred++;
				continue;
			}
			ks_sha256_hex(f->data, f->len, s->hash);
			s->skip_write = r == FILE_AS_RECORDED && old.hash &&
					strcmp(old.hash, s->hash) == 0;
			if (s->skip_write) {
				/* Same bytes (a new etag, a --force run, a read-back): only the
				 * row changes, the file and its readers are left in peace. */
				s->st.st_mtim.tv_sec = old.mtime_ns / 1000000000;
				s->st.st_mtim.tv_nsec = old.mtime_ns % 1000000000;
				s->st.st_ino = (ino_t) old.ino;
				s->st.st_size = (off_t) old.size;
			}
			s->filename = TAKE_PTR(old.filename);
			ks_cache_item_done(&old);
		} else {
			const char *mine = untracked_with_uid(c, s->info.uid);
			if (!c->untracked_known) {
				r = find_untracked(c);
				if (r < 0)
					goto out;
				mine = untracked_with_uid(c, s->info.uid);
			}
			if (mine) {
				s->ours = true;
				s->filename = strdup(mine);
				if (!s->filename) {
					r = -ENOMEM;
					goto out;
				}
				/* A file holding the server's very bytes (a crash or a rebuilt
				 * cache left it) is the item as it is; another one is merged. */
				r = untracked_same(c, mine, f->data, f->len, &s->st);
				if (r < 0)
					goto out;
				s->skip_write = r > 0;
				s->adopt = r == 0;
			} else {
				r = pick_filename(c, f, &s->info, st, n, &s->filename);
				if (r < 0)
					goto out;
				const ks_intent *in = find_intent(c, f->href);
				s->ours = in && in->op == KS_INTENT_CREATE && in->filename &&
					  strcmp(in->filename, s->filename) == 0;
			}
		}
		if (s->adopt) {
			/* The user's own new file with this UID: it stays as it is, the row
			 * has no base, and the upload merges the two versions. */
			memset(&s->st, 0, sizeof(s->st));
			n++;
			continue;
		}
		if (!s->skip_write) {
			r = ks_fs_batch_add(fb, s->filename, f->data, f->len, &s->st);
			if (r < 0) {
				r = file_failed(c, "write", s->filename, r);
				goto out;
			}
		}
		ks_sha256_hex(f->data, f->len, s->hash);
		n++;
	}
	if (n == 0) {
		r = 0;
		goto out;
	}
	if (ks_fs_batch_count(fb) > 0)
		r = ks_fs_batch_commit(fb);
	if (r < 0) {
		r = file_failed(c, "write", NULL, r);
		goto out;
	}
	/* The files are durable before their rows: a crash in between leaves files the next
	 * run rewrites with the same bytes, never a row pointing at a missing file. */
	for (size_t i = 0; i < n; i++) {
		ks_item_row row = {
			.href = st[i].f->href,
			.etag = st[i].adopt ? NULL : st[i].f->etag,
			.filename = st[i].filename,
			.data = st[i].adopt ? "" : st[i].f->data,
			.len = st[i].adopt ? 0 : st[i].f->len,
			.info = &st[i].info,
			.hash = st[i].adopt ? NULL : st[i].hash,
			.mtime_ns = (int64_t) st[i].st.st_mtim.tv_sec * 1000000000 +
				    st[i].st.st_mtim.tv_nsec,
			.ino = (int64_t) st[i].st.st_ino,
			.size = (int64_t) st[i].st.st_size,
		};
		r = ks_cache_put_item(cache, c->col->id, &row);
		if (r >= 0 && find_intent(c, row.href))
			r = ks_cache_clear_intent(cache, c->col->id, row.href);
		if (r < 0)
			goto out;
		if (st[i].is_new && !st[i].ours)
			c->added++;	/* the user's own file found on the server is no addition */
		else if (st[i].skip_write)
			;	/* same bytes under a new etag: nothing changed for the user */
		else if (!c->read_back || !uploaded_here(c, row.href))
			c->updated++;	/* reading back this run's own uploads is no update */
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
	const char *open = !card ? "<c:calendar-multiget xmlns:d=\"DAV:\" "
				   "xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:prop>"
				   "<d:getetag/><c:calendar-data/></d:prop>"
			   : b->vcard4 ? "<a:addressbook-multiget xmlns:d=\"DAV:\" "
					 "xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop>"
					 "<d:getetag/><a:address-data content-type=\"text/vcard\" "
					 "version=\"4.0\"/></d:prop>"
				       : "<a:addressbook-multiget xmlns:d=\"DAV:\" "
					 "xmlns:a=\"urn:ietf:params:xml:ns:carddav\"><d:prop>"
					 "<d:getetag/><a:address-data/></d:prop>";
	int r;

	r = ks_buf_puts(&b->body, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
	if (r >= 0)
		r = ks_buf_puts(&b->body, open);
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

static bool cancelled(const run *R)
{
	return R->o->cancel && *R->o->cancel;
}

/* Hrefs a multiget did not answer are noted here and fetched one by one once every multiget
 * has ended: never from inside the request loop, whose callback this runs in. They are never
 * taken as deleted. */
static int note_missing(coll_run *c, const batch *b)
{
	for (size_t i = 0; i < b->n_hrefs; i++) {
		bool got = false;
		for (size_t j = 0; j < b->n_items && !got; j++)
			got = strcmp(b->items[j].href, b->hrefs[i]) == 0;
		if (got)
			continue;
		href_list *l = &c->missing[b->vcard4];
		int r = strv_push(&l->v, &l->n, &l->cap, b->hrefs[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

typedef struct get_slot {
	batch *b;
	const char *href;
} get_slot;

static int on_get_done(ks_dav_request *req, void *userdata)
{
	get_slot *g = userdata;
	coll_run *c = g->b->c;
	int r = req->result;

	if (r == -ENOENT)
		return 0;	/* gone between listing and fetch: the next listing reports it */
	if (r == -EFBIG) {
		/* Like an item that does not parse: reported and skipped, so that it is not
		 * downloaded again on every run until it changes. */
		c->skipped++;
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r,
			  "skipping '%.200s': it is over the %d MB limit for one item", g->href,
			  KS_CARD_MAX >> 20);
		return 0;
	}
	if (r < 0 || !req->body_text) {
		c->failed_fetch++;
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r < 0 ? r : -EIO,
			  "could not fetch '%.200s': %s", g->href,
			  req->errmsg[0] ? req->errmsg : "empty response");
		return 0;
	}
	fetched_item *ni = realloc(g->b->items, (g->b->n_items + 1) * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	g->b->items = ni;
	fetched_item *it = &ni[g->b->n_items];
	*it = (fetched_item) {
		.href = strdup(g->href),
		.etag = req->etag ? strdup(req->etag) : NULL,
		.len = req->body_text_len,
		.data = TAKE_PTR(req->body_text),
	};
	g->b->n_items++;
	return it->href ? 0 : -ENOMEM;
}

/* GETs the hrefs the multigets left out, a batch at a time, and applies what arrived. */
static int fetch_missing(coll_run *c)
{
	int r = 0;

	for (size_t v = 0; v < 2; v++) {
		href_list *l = &c->missing[v];
		for (size_t off = 0; r >= 0 && off < l->n; off += KS_MULTIGET_BATCH) {
			size_t n = KS_MIN((size_t) KS_MULTIGET_BATCH, l->n - off);
			batch b = { .c = c, .hrefs = l->v + off, .n_hrefs = n, .vcard4 = v };
			get_slot *slots = calloc(n, sizeof(*slots));
			ks_dav_request *reqs = calloc(n, sizeof(*reqs));
			if (!slots || !reqs)
				r = -ENOMEM;
			for (size_t i = 0; r >= 0 && i < n; i++) {
				slots[i] = (get_slot) { .b = &b, .href = b.hrefs[i] };
				reqs[i] = (ks_dav_request) {
					.method = "GET", .url = b.hrefs[i], .max_body = KS_CARD_MAX,
					.accept = v ? "text/vcard; version=4.0" : NULL,
					.userdata = &slots[i], .on_done = on_get_done,
				};
			}
			if (r >= 0)
				r = ks_dav_run(c->R->dav, reqs, n);
			if (r >= 0 && cancelled(c->R))
				r = -ECANCELED;
			if (r >= 0 && b.n_items)
				r = apply_batch(c, &b);
			for (size_t i = 0; reqs && i < n; i++)
				ks_dav_request_done(&reqs[i]);
			batch_clear_items(&b);
			free(slots);
			free(reqs);
		}
		strv_free(l->v, l->n);
		*l = (href_list) {};
	}
	return r;
}

static int on_batch_done(ks_dav_request *req, void *userdata)
{
	batch *b = userdata;
	coll_run *c = b->c;
	int r;

	ks_buf_done(&b->body);
	if (cancelled(c->R)) {
		batch_clear_items(b);
		return -ECANCELED;
	}
	/* Malformed XML, or an item over the size cap, ends the parse at that point: what came
	 * before is applied and the rest fetched one by one, so one bad item costs its batch
	 * nothing. */
	if (req->result == -ENOENT) {
		/* A multiget answered 404 as a whole (SabreDAV 1.8, when one of its items was
		 * deleted since the listing): each item is fetched on its own. */
		emit_fail(c->R, KS_SYNC_NOTICE, c->label, 0, "%s; fetching its %zu item(s) one "
			  "by one", req->errmsg, b->n_hrefs);
		batch_clear_items(b);
	} else if (req->result < 0 && req->result != -EBADMSG && req->result != -EFBIG) {
		/* The whole batch failed: the collection fails this run, nothing is lost. */
		c->cb_error = req->result;
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, req->result, "%s",
			  req->errmsg[0] ? req->errmsg : strerror(-req->result));
		batch_clear_items(b);
		return 0;
	}
	if (req->result == -EBADMSG)
		/* What came before the damage is used; the rest is fetched item by item. */
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, req->result,
			  "%s; %zu of the %zu item(s) asked for had arrived, the rest are fetched "
			  "one by one", req->errmsg, b->n_items, b->n_hrefs);
	r = note_missing(c, b);
	if (r >= 0)
		r = apply_batch(c, b);
	c->fetched += (unsigned) b->n_hrefs;
	batch_clear_items(b);
	if (r < 0)
		return r;
	ks_sync_event ev = {
		.type = KS_SYNC_PROGRESS, .account = c->R->acc->name, .collection = c->label,
		.done = c->fetched, .total = (unsigned) (c->fetch[0].n + c->fetch[1].n),
	};
	emit(c->R, &ev);
	return 0;
}

static int fetch_all(coll_run *c)
{
	size_t nb0 = (c->fetch[0].n + KS_MULTIGET_BATCH - 1) / KS_MULTIGET_BATCH;
	size_t nb = nb0 + (c->fetch[1].n + KS_MULTIGET_BATCH - 1) / KS_MULTIGET_BATCH;
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
		bool v4 = i >= nb0;
		const href_list *l = &c->fetch[v4];
		size_t off = (v4 ? i - nb0 : i) * KS_MULTIGET_BATCH;
		bs[i].c = c;
		bs[i].vcard4 = v4;
		bs[i].hrefs = l->v + off;
		bs[i].n_hrefs = KS_MIN((size_t) KS_MULTIGET_BATCH, l->n - off);
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
	if (r >= 0)
		r = fetch_missing(c);
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
		/* Deleted on the server, edited here: the edit wins. Only the row goes; the
		 * file, untracked now, is uploaded again as a new item. */
		r = local_edit_pending(c, &it);
		if (r < 0 || r == FILE_EDITED || r == FILE_OTHER) {
			ks_cache_item_done(&it);
			if (r < 0)
				return r;
			any = true;
			continue;
		}
		if (unlinkat(c->dirfd, it.filename, 0) < 0 && errno != ENOENT) {
			r = file_failed(c, "delete", it.filename, -errno);
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
		/* A deletion this account sent before a crash: its intent is fulfilled. */
		if (r >= 0 && find_intent(c, hrefs[i]))
			r = ks_cache_clear_intent(cache, c->col->id, hrefs[i]);
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

	if (c->n_seen && bsearch(&href, c->seen, c->n_seen, sizeof(char *), cmp_str))
		return 0;
	return strv_push(&u->hrefs, &u->n, &u->cap, href);
}

/* The mass-deletion guard. Deletions on either side are counted in a window of
 * GUARD_WINDOW_SECS that starts with the first of them, against the items the collection had
 * then (its size at the last complete sync), so that deleting in small steps (runs, pages of
 * a truncated listing) goes no further than deleting at once. Going past half of those items
 * (in a collection of more than KS_MASS_DELETE_MIN), or deleting every one of them (two or
 * more), whatever the size, stops the collection with a message unless the user allowed it.
 * side names where the deletions would happen, why what points at them, remedy what else the
 * user may do. The deletions that pass are counted before they are made, so that a crash can
 * only make the guard stricter; runs that delete nothing write nothing. */
static int guard_deletions(coll_run *c, size_t n_delete, const char *side, const char *why,
			   const char *remedy)
{
	ks_collection *col = c->col;
	int64_t now = (int64_t) time(NULL);
	bool open = col->guard_base >= 0 && now >= col->guard_at &&
		    now - col->guard_at < GUARD_WINDOW_SECS;
	int64_t at = open ? col->guard_at : now;
	size_t base = open ? (size_t) col->guard_base : c->rows_at_start;
	size_t total = (open ? (size_t) col->guard_deleted : 0) + n_delete;
	bool all = base >= 2 && total >= base;
	bool most = base > KS_MASS_DELETE_MIN && total * 2 > base;
	int r;

	if (n_delete == 0)
		return 0;
	if ((all || most) && !c->R->o->allow_mass_delete) {
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, -EDQUOT,
			  "refusing to delete %zu of %zu items %s (%s); nothing was deleted. %s"
			  "If this is intended, run `ksyncctl sync --allow-mass-delete %s/%s` (or "
			  "ksyncd --once --allow-mass-delete)", n_delete, base, side, why,
			  remedy ? remedy : "", c->R->acc->name, c->label);
		return -EDQUOT;
	}
	r = ks_cache_set_collection_guard(c->R->e->cache, col->id, at, (int64_t) base,
					  (int64_t) total);
	if (r < 0)
		return r;
	col->guard_at = at;
	col->guard_base = (int64_t) base;
	col->guard_deleted = (int64_t) total;
	return 0;
}

/* The server no longer has these items: their files go (an edited one stays, to be uploaded
 * again), once the guard agreed to as many deletions as there are rows among them. */
static int delete_remote_gone(coll_run *c, char **hrefs, size_t n)
{
	size_t known = 0;
	int r;

	for (size_t i = 0; i < n; i++) {
		ks_cache_item it = {};
		r = ks_cache_get_item(c->R->e->cache, c->col->id, hrefs[i], &it);
		ks_cache_item_done(&it);
		if (r < 0 && r != -ENOENT)
			return r;
		known += r >= 0;
	}
	r = guard_deletions(c, known, "locally", "the server no longer lists them: was it emptied?",
			    NULL);
	if (r < 0)
		return r;
	return delete_items(c, hrefs, n);
}

static int delete_unseen(coll_run *c)
{
	unseen u = { .c = c };
	int r;

	if (c->n_seen > 1)
		qsort(c->seen, c->n_seen, sizeof(char *), cmp_str);
	r = ks_cache_foreach_item(c->R->e->cache, c->col->id, collect_unseen, &u);
	if (r >= 0)
		r = delete_remote_gone(c, u.hrefs, u.n);
	strv_free(u.hrefs, u.n);
	return r;
}

/* Forgets one listing round; the hrefs seen by a full listing are kept unless keep_seen is
 * false, since a truncated full listing goes on over several rounds. */
static void coll_reset_lists(coll_run *c, bool keep_seen)
{
	for (size_t v = 0; v < 2; v++) {
		strv_free(c->fetch[v].v, c->fetch[v].n);
		strv_free(c->missing[v].v, c->missing[v].n);
		c->fetch[v] = c->missing[v] = (href_list) {};
	}
	strv_free(c->gone, c->n_gone);
	c->gone = NULL;
	c->n_gone = c->cap_gone = 0;
	if (!keep_seen) {
		strv_free(c->seen, c->n_seen);
		c->seen = NULL;
		c->n_seen = c->cap_seen = 0;
	}
	c->truncated = false;
	c->fetched = 0;
}

/* Opens the collection's directory. A missing one is made for a collection without items;
 * for one with items it was renamed, removed or is on a file system that is not mounted, and
 * taking its files for deleted would empty the collection on the server: the collection stops
 * until the user puts it back or says what to do (--force fetches the files again,
 * --allow-mass-delete deletes them on the server too). */
static int open_collection_dir(run *R, coll_run *c, size_t n_rows)
{
	_cleanup_free_ char *where = NULL;
	int r;

	r = ks_engine_collection_dir(R->e, R->acc->name, c->col, &c->dir);
	if (r < 0)
		return r;
	r = ks_engine_open_collection_dir(R->e, R->acc->name, c->col, false, &c->dirfd, &where);
	if (r == -ENOENT && (n_rows == 0 || R->o->force || R->o->allow_mass_delete)) {
		free(where);
		where = NULL;
		r = ks_engine_open_collection_dir(R->e, R->acc->name, c->col, true, &c->dirfd, &where);
	} else if (r == -ENOENT) {
		r = -ENOMEDIUM;
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "the directory '%s' is missing (renamed, removed, or on a file system that "
			  "is not mounted?); nothing was deleted on the server. Put it back, run "
			  "`ksyncctl sync --force %s/%s` to fetch its %zu items again, or `ksyncctl "
			  "sync --allow-mass-delete %s/%s` to delete them on the server too",
			  where ? where : c->dir, R->acc->name, c->label, n_rows, R->acc->name,
			  c->label);
		return r;
	}
	if (r == -ELOOP)
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "'%s' is a symbolic link: ksync does not follow links below its data "
			  "directory, so nothing was read, written or deleted through it; put the "
			  "directory back in its place", where ? where : c->dir);
	else if (r < 0)
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "cannot open the local directory '%s': %s", where ? where : c->dir,
			  strerror(-r));
	if (r < 0)
		return r;
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

static int push_collection(coll_run *c);

/* The collection's failure line for items that could not be fetched or sent (each was
 * reported on its own before). */
static void report_failed(coll_run *c)
{
	unsigned fetch = c->failed_fetch - c->failed_push, push = c->failed_push;

	if (fetch && push)
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, -EIO, "%u item(s) could not "
			  "be fetched and %u local change(s) not sent; they will be retried", fetch,
			  push);
	else if (push)
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, -EIO, "%u local change(s) "
			  "could not be sent; they will be retried", push);
	else
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, -EIO, "%u item(s) could not "
			  "be fetched; they will be retried", fetch);
}

/* Brings the server's changes into the files and the cache. remote is what a home listing
 * said about the collection right now, or NULL. Failures are reported here. */
static int pull_collection(coll_run *c, const ks_collection *remote, bool force)
{
	run *R = c->R;
	ks_collection *col = c->col;
	ks_dav_request req = {};
	_cleanup_free_ char *new_token = NULL, *ctag = NULL, *round_token = NULL;
	int r;

	coll_reset_lists(c, false);
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
		return 0;
	if (!force && remote && !remote->sync_token && remote->ctag && col->ctag &&
	    strcmp(remote->ctag, col->ctag) == 0)
		return 0;
	if (!remote && !col->supports_sync) {
		/* Without a fresh home listing, the collection's own ctag tells whether to list. */
		r = fetch_ctag(c, &ctag);
		if (r == -ENOENT)
			goto out;	/* gone: the caller lists the home sets */
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r, "%s", strerror(-r));
			goto out;
		}
		if (!force && ctag && col->ctag && strcmp(ctag, col->ctag) == 0)
			return 0;
	}

	if (col->supports_sync) {
		const char *token = force ? NULL : col->sync_token;
		c->full = !token;
		for (unsigned round = 0; round < 10000; round++) {
			r = sync_report(c, token, &req);
			if (r < 0 && token && round == 0 && token_rejected(&req)) {
				/* The token expired: list everything once. */
				emit_fail(R, KS_SYNC_NOTICE, c->label, r, "the stored sync-token was "
					  "refused (%s); listing the whole collection",
					  req.errmsg[0] ? req.errmsg : strerror(-r));
				ks_dav_request_done(&req);
				coll_reset_lists(c, false);
				token = NULL;
				c->full = true;
				r = sync_report(c, NULL, &req);
			}
			if (r < 0 && !token && round == 0 &&
			    (r == -EOPNOTSUPP || r == -EPROTO || req.status == 403)) {
				/* No sync-collection after all: fall back to etag listings. */
				ks_dav_request_done(&req);
				coll_reset_lists(c, false);
				col->supports_sync = false;
				(void) ks_cache_save_collection(R->e->cache, col);
				break;
			}
			if (r == -ENOENT && !remote)
				goto out;	/* gone: the caller lists the home sets */
			if (r < 0) {
				emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r, "%s",
					  req.errmsg[0] ? req.errmsg : strerror(-r));
				goto out;
			}
			/* Deletions first: an item the server moved (a deletion and an
			 * addition with one UID) then takes its file name with it rather
			 * than a suffixed one. */
			r = delete_remote_gone(c, c->gone, c->n_gone);
			if (r >= 0)
				r = fetch_all(c);
			if (r == -EDQUOT)
				goto out;
			if (r < 0)
				goto failed;
			free(new_token);
			new_token = req.sync_token && *req.sync_token ? strdup(req.sync_token) : NULL;
			bool truncated = c->truncated || req.status == 507;
			ks_dav_request_done(&req);
			if (truncated && (!new_token || (token && strcmp(new_token, token) == 0 &&
							 c->fetch[0].n + c->fetch[1].n == 0 &&
							 c->n_gone == 0))) {
				/* A partial listing that gives no token to go on from (or the
				 * same one, having listed nothing) cannot be completed, and taken
				 * as complete it would delete what it left out. */
				r = -EBADMSG;
				emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r,
					  "the server truncated the listing of %s (507) without a "
					  "sync-token to continue from; nothing was deleted",
					  col->href);
				goto out;
			}
			if (c->failed_fetch || c->held)
				break;
			if (!truncated && c->full) {
				r = delete_unseen(c);
				if (r == -EDQUOT)
					goto out;
				if (r < 0)
					goto failed;
			}
			/* Each round's token of an incremental listing is stored once its changes
			 * are applied, so a crash in a long truncated listing does not start it
			 * over. A full listing's only at its end: only then are the items it did
			 * not list known to be gone, and a run going on from a partial one's
			 * token would keep them forever (an interrupted full listing starts over,
			 * fetching nothing that is current). An unchanged token is not written
			 * again: a quiet run writes nothing. */
			if (new_token && !(truncated && c->full) &&
			    (!col->sync_token || strcmp(new_token, col->sync_token) ||
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
			coll_reset_lists(c, true);
			free(round_token);
			round_token = TAKE_PTR(new_token);
			token = round_token;
		}
	}
	if (!col->supports_sync) {
		c->full = true;
		r = propfind_listing(c, &req);
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r, "%s",
				  req.errmsg[0] ? req.errmsg : strerror(-r));
			goto out;
		}
		ks_dav_request_done(&req);
		r = fetch_all(c);
		if (r >= 0)
			r = delete_unseen(c);
		if (r == -EDQUOT)
			goto out;
		if (r < 0)
			goto failed;
		if (!c->failed_fetch && !c->held) {
			r = ks_cache_set_collection_state(R->e->cache, col->id, NULL, ctag);
			if (r < 0)
				goto failed;
		}
	}
	if (c->failed_fetch) {
		r = -EIO;
		report_failed(c);
		goto out;
	}
	r = 0;
	goto out;
failed:
	if (!c->cb_error)
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c->label, r, "%s", strerror(-r));
out:
	ks_dav_request_done(&req);
	return r;
}

/* An interrupted upload of a file the user deleted since: the listing just done brought in
 * whatever of it reached the server, and nothing is left to send, so its intent goes (it
 * would be "resumed" on every run). */
static int drop_stale_intents(coll_run *c)
{
	for (size_t i = 0; i < c->n_intents; i++) {
		const ks_intent *in = &c->intents[i];
		if (in->op == KS_INTENT_DELETE || !in->filename ||
		    faccessat(c->dirfd, in->filename, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
		    errno != ENOENT)
			continue;
		ks_cache_item it = {};
		int r = ks_cache_get_item(c->R->e->cache, c->col->id, in->href, &it);
		ks_cache_item_done(&it);
		if (r == -ENOENT)
			r = ks_cache_clear_intent(c->R->e->cache, c->col->id, in->href);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Syncs one collection both ways. remote is what a home listing said about it right now,
 * or NULL when the home sets were not listed this run. */
static int sync_collection(run *R, ks_collection *col, const ks_collection *remote)
{
	coll_run c = { .R = R, .col = col, .dirfd = -1 };
	unsigned req0 = ks_dav_request_count(R->dav);
	int r;

	snprintf(c.label, sizeof(c.label), "%s/%s",
		 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", col->name);
	c.ext = col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics";
	r = ks_cache_count_items(R->e->cache, col->id);
	if (r < 0) {
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "cannot read the cache: %s",
			  strerror(-r));
		goto out;
	}
	c.rows_at_start = (size_t) r;
	r = open_collection_dir(R, &c, c.rows_at_start);
	if (r < 0)
		goto out;
	r = write_metadata(&c);
	if (r < 0) {
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r,
			  "cannot write displayname/color: %s", strerror(-r));
		goto out;
	}
	/* Uploads a crash interrupted: the listing below tells what reached the server, and
	 * the conditional requests of the upload make a repeated one harmless. */
	r = ks_cache_list_intents(R->e->cache, col->id, &c.intents, &c.n_intents);
	if (r < 0) {
		emit_fail(R, KS_SYNC_COLLECTION_FAILED, c.label, r, "cannot read the cache: %s",
			  strerror(-r));
		goto out;
	}
	if (c.n_intents)
		ks_log(KS_LOG_INFO, "%s/%s: resuming %zu interrupted upload(s)", R->acc->name,
		       c.label, c.n_intents);

	r = pull_collection(&c, remote, R->o->force);
	if (r >= 0)
		r = drop_stale_intents(&c);
	if (r < 0)
		goto out;
	/* Local changes go after the server's: files the server changed are then up to date,
	 * so a file a crash left behind is recognised rather than uploaded as a duplicate,
	 * and items both sides changed were left alone above for the merge below. */
	r = push_collection(&c);
	if (r < 0)
		goto out;
	if ((c.n_uploaded || c.pushed_deletes) && col->supports_sync) {
		/* One more listing moves the stored token past this run's own uploads (so that
		 * the next run finds nothing to do) and reads back what the server made of
		 * them: the cache and the files then hold what it stores. */
		if (c.n_uploaded > 1)
			qsort(c.uploaded, c.n_uploaded, sizeof(char *), cmp_str);
		c.read_back = true;
		r = pull_collection(&c, NULL, false);
		if (r < 0)
			goto out;
	}
	if (c.failed_fetch) {
		r = -EIO;
		report_failed(&c);
		goto out;
	}
	{
		ks_sync_event ev = {
			.type = KS_SYNC_COLLECTION_DONE, .account = R->acc->name,
			.collection = c.label, .added = c.added, .updated = c.updated,
			.deleted = c.deleted, .skipped = c.skipped, .uploaded = c.pushed,
			.removed = c.pushed_deletes, .conflicts = c.conflicts,
			.requests = ks_dav_request_count(R->dav) - req0,
		};
		emit(R, &ev);
	}
	r = 0;
out:
	coll_run_done(&c);
	return r;
}

/* ---- local changes to the server ---------------------------------------------------------- */

typedef struct push_item {
	coll_run *c;
	ks_local_change *ch;
	ks_intent_op op;
	char *href;
	char *body;		/* what is sent: the file's bytes, with a UID added if it had none */
	size_t len;
	char hash[65];
	ks_item_info info;
	struct stat st;		/* the file as it was when body was read or written */
	ks_dav_request req;
	bool needs_merge;
	bool refetch;
	bool done;
} push_item;

static void push_item_done(push_item *p)
{
	free(p->href);
	free(p->body);
	ks_item_info_done(&p->info);
	ks_dav_request_done(&p->req);
}

static ks_conflict_policy policy_of(const coll_run *c)
{
	return c->R->acc->conflict == KS_CONFLICT_MODE_LOCAL_WINS ? KS_CONFLICT_LOCAL_WINS
								  : KS_CONFLICT_SERVER_WINS;
}

static int64_t stat_mtime_ns(const struct stat *st)
{
	return (int64_t) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int random_uid(char out[37])
{
	uint8_t b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		return -EIO;
	b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

/* Writes data over the item file name, unless the file changed since expected was taken (the
 * user is editing it: the next run sees that). Returns 1 when written, 0 when left alone. */
static int replace_file(coll_run *c, const char *name, const struct stat *expected,
			const char *data, size_t len, struct stat *ret_st)
{
	struct stat st;
	int r;

	if (expected) {
		if (fstatat(c->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				return -errno;
		} else if (!ks_scan_stat_matches(&st, stat_mtime_ns(expected),
						 (int64_t) expected->st_ino,
						 (int64_t) expected->st_size))
			return 0;
	}
	r = ks_fs_write_atomic(c->dirfd, name, data, len, true);
	if (r >= 0)
		r = ks_fs_fsync_dir(c->dirfd);
	if (r >= 0 && ret_st && fstatat(c->dirfd, name, ret_st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	return r < 0 ? r : 1;
}

/* Keeps a version that lost a conflict under conflicts/<account>/<collection>/ and records
 * it. *ret_path (optional) gets where. */
/* A copy of data kept earlier under dirfd as "<base>.<time>.<side><ext>": a run cut off after
 * keeping it meets the same conflict again and must not keep a second copy. */
static int find_kept(int dirfd, const char *base, size_t base_len, const char *side,
		     const char *ext, const char *data, size_t len, char **ret)
{
	int fd = dup(dirfd);
	DIR *d;
	struct dirent *de;
	char tail[64];

	snprintf(tail, sizeof(tail), ".%s%s", side, ext);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int r = 0;
	while (r == 0 && (de = readdir(d))) {
		size_t n = strlen(de->d_name), t = strlen(tail);
		if (n <= base_len + t || strncmp(de->d_name, base, base_len) != 0 ||
		    de->d_name[base_len] != '.' || strcmp(de->d_name + n - t, tail) != 0)
			continue;
		_cleanup_free_ char *cur = NULL;
		size_t cl = 0;
		if (ks_fs_read_file(dirfd, de->d_name, KS_CARD_MAX, &cur, &cl) < 0)
			continue;
		if (cl == len && memcmp(cur, data, len) == 0) {
			*ret = strdup(de->d_name);
			r = *ret ? 1 : -ENOMEM;
		}
	}
	closedir(d);
	return r;
}

/* Keeps a version that lost a conflict under conflicts/<account>/<collection>/ and records
 * it: the copy first, then its row, both before the losing side is overwritten anywhere, so
 * that a crash at any point leaves the version either where it was or kept (and a repeated
 * conflict reuses the copy). *ret_path (optional) gets where. */
static int keep_copy(coll_run *c, const char *filename, const char *uid, const char *data,
		     size_t len, const char *side, const char *winner, const char *summary,
		     char **ret_path)
{
	_cleanup_free_ char *dir = NULL, *name = NULL, *path = NULL;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int fd, r = 0;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (asprintf(&dir, "%s/conflicts/%s/%s", c->R->e->data_dir, c->R->acc->name, c->label) < 0)
		return -ENOMEM;
	size_t base = strlen(filename);
	if (base > strlen(c->ext))
		base -= strlen(c->ext);
	/* The user's data goes nowhere a symlink in ksync's tree points to. */
	r = ks_fs_open_beneath(c->R->e->data_dir, dir + strlen(c->R->e->data_dir) + 1, true, &fd,
			       NULL);
	if (r < 0) {
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "cannot keep the losing side of a conflict in '%s': %s; nothing was "
			  "merged", dir,
			  r == -ELOOP ? "a symbolic link is on the way, which ksync does not follow"
				      : strerror(-r));
		if (r != -ENOMEM && !c->cb_error)
			c->cb_error = r;
		return r;
	}
	r = find_kept(fd, filename, base, side, c->ext, data, len, &name);
	for (unsigned i = 0; r == 0 && i < 100; i++) {
		free(name);
		name = NULL;
		if ((i == 0 ? asprintf(&name, "%.*s.%s.%s%s", (int) base, filename, stamp, side, c->ext)
			    : asprintf(&name, "%.*s.%s.%s-%u%s", (int) base, filename, stamp, side,
				       i, c->ext)) < 0) {
			r = -ENOMEM;
			break;
		}
		if (faccessat(fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		r = ks_fs_write_atomic(fd, name, data, len, true);
		if (r >= 0)
			r = ks_fs_fsync_dir(fd);
		if (r >= 0)
			r = 1;
	}
	close(fd);
	if (r < 0)
		return r;
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	r = ks_cache_add_conflict(c->R->e->cache, c->R->acc->name, c->label, uid, filename, path,
				  winner, summary);
	if (r < 0)
		return r;
	c->conflicts++;
	if (ret_path)
		*ret_path = TAKE_PTR(path);
	return 0;
}

/* Records that the server now holds data at href with etag (NULL: unknown, fetched later)
 * and that the file name holds it too, and clears the intent: one transaction. */
static int record_item(coll_run *c, const char *href, const char *etag, const char *filename,
		       const char *data, size_t len, const struct stat *st)
{
	ks_item_info info = {};
	char hex[65];
	int r;

	r = ks_item_parse_info(data, len, &info, NULL);
	if (r == -ENOMEM)
		return r;
	ks_sha256_hex(data, len, hex);
	ks_item_row row = {
		.href = href, .etag = etag, .filename = filename, .data = data, .len = len,
		.info = r >= 0 ? &info : NULL, .hash = hex, .mtime_ns = stat_mtime_ns(st),
		.ino = (int64_t) st->st_ino, .size = (int64_t) st->st_size,
	};
	r = ks_cache_begin(c->R->e->cache);
	if (r >= 0) {
		r = ks_cache_put_item(c->R->e->cache, c->col->id, &row);
		if (r >= 0)
			r = ks_cache_clear_intent(c->R->e->cache, c->col->id, href);
		if (r >= 0)
			r = ks_cache_commit(c->R->e->cache);
		if (r < 0)
			ks_cache_rollback(c->R->e->cache);
	}
	ks_item_info_done(&info);
	return r;
}

static int forget_item(coll_run *c, const char *href)
{
	int r = ks_cache_begin(c->R->e->cache);

	if (r < 0)
		return r;
	r = ks_cache_delete_item(c->R->e->cache, c->col->id, href);
	if (r >= 0)
		r = ks_cache_clear_intent(c->R->e->cache, c->col->id, href);
	if (r >= 0)
		r = ks_cache_commit(c->R->e->cache);
	if (r < 0)
		ks_cache_rollback(c->R->e->cache);
	return r;
}

/* Whether the server is to be asked for a card as vCard 4.0: the version of data, the card
 * sent or merged, in an address book that offers it. */
static bool wants_vcard4(const coll_run *c, const char *data, size_t len)
{
	return c->col->vcard4 && memmem(data, KS_MIN(len, (size_t) 512), "VERSION:4.0", 11);
}

/* The server's current version of href: 0 with data and etag, -ENOENT when it has none. */
static int fetch_one(coll_run *c, const char *href, bool vcard4, char **ret, size_t *ret_len,
		     char **ret_etag)
{
	_cleanup_free_ char *h = strdup(href);
	char *hrefs[1] = { h };
	batch b = { .c = c, .hrefs = hrefs, .n_hrefs = 1, .vcard4 = vcard4 };
	int r = h ? multiget_body(c, &b) : -ENOMEM;

	if (r >= 0) {
		ks_dav_request req = {
			.method = "REPORT", .url = c->col->href, .depth = "1", .body = b.body.data,
			.body_len = b.body.len, .on_response = on_multiget, .userdata = &b,
		};
		r = ks_dav_run_one(c->R->dav, &req);
		ks_dav_request_done(&req);
	}
	ks_buf_done(&b.body);
	if (r >= 0 && b.n_items == 0) {
		/* Not in the multiget: ask for it alone before believing it is gone. */
		ks_dav_request req = {
			.method = "GET", .url = href, .max_body = KS_CARD_MAX,
			.accept = vcard4 ? "text/vcard; version=4.0" : NULL,
		};
		r = ks_dav_run_one(c->R->dav, &req);
		if (r >= 0 && req.body_text) {
			b.items = calloc(1, sizeof(*b.items));
			if (!b.items)
				r = -ENOMEM;
			else {
				b.n_items = 1;
				b.items[0].len = req.body_text_len;
				b.items[0].data = TAKE_PTR(req.body_text);
				b.items[0].etag = req.etag ? strdup(req.etag) : NULL;
			}
		} else if (r >= 0)
			r = -ENOENT;
		ks_dav_request_done(&req);
	}
	if (r >= 0) {
		*ret = TAKE_PTR(b.items[0].data);
		*ret_len = b.items[0].len;
		*ret_etag = TAKE_PTR(b.items[0].etag);
	}
	batch_clear_items(&b);
	return r;
}

/* PUT with a condition, one request; fills *ret_etag (NULL when the reply had none). */
static int put_item(coll_run *c, const char *href, const char *data, size_t len,
		    const char *if_match, char **ret_etag, char *errmsg, size_t errmsg_len)
{
	ks_dav_request req = {
		.method = "PUT", .url = href, .body = data, .body_len = len,
		.content_type = c->col->kind == KS_COLLECTION_ADDRESSBOOK
					? "text/vcard; charset=utf-8"
					: "text/calendar; charset=utf-8",
		.if_match = if_match, .if_none_match = if_match ? NULL : "*",
	};
	int r = ks_dav_run_one(c->R->dav, &req);

	if (r >= 0)
		*ret_etag = TAKE_PTR(req.etag);
	else if (errmsg)
		snprintf(errmsg, errmsg_len, "%s", req.errmsg);
	ks_dav_request_done(&req);
	return r;
}

/* After an upload without an ETag in the reply, or to see what a server made of it: read
 * the item back; the cache holds what the server stores, and so does the file unless it was
 * edited again meanwhile. */
static int read_back(coll_run *c, const char *href, const char *filename, const char *sent,
		     size_t sent_len, const struct stat *st)
{
	_cleanup_free_ char *data = NULL, *etag = NULL;
	size_t len = 0;
	struct stat nst = *st;
	int r = fetch_one(c, href, wants_vcard4(c, sent, sent_len), &data, &len, &etag);

	if (r < 0)
		return r;
	if (len != sent_len || memcmp(data, sent, len) != 0) {
		r = replace_file(c, filename, st, data, len, &nst);
		if (r < 0)
			return r;
		if (r == 0)
			return 0;	/* edited meanwhile: next run */
	}
	return record_item(c, href, etag, filename, data, len, &nst);
}

/* 1 when the object data holds one item with that UID, 0 otherwise (another UID, or no item
 * at all). */
static int same_uid(const char *data, size_t len, const char *uid)
{
	ks_item_info info = {};
	int r = ks_item_parse_info(data, len, &info, NULL);
	bool same = r >= 0 && info.uid && uid && strcmp(info.uid, uid) == 0;

	ks_item_info_done(&info);
	return r == -ENOMEM ? r : same;
}

/* Uploads p's new item under another name, its UID's resource being held by another item.
 * An item failure is reported and returns 0. */
static int create_elsewhere(coll_run *c, push_item *p)
{
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r = -ESTALE;

	for (unsigned attempt = 0; attempt < 3 && r == -ESTALE; attempt++) {
		_cleanup_free_ char *base = NULL, *href = NULL, *etag = NULL;
		uint8_t rnd[4];
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -EIO;
		r = ks_vdir_item_name(p->info.uid, NULL, &base);
		if (r < 0)
			return r;
		if (asprintf(&href, "%s%s-%02x%02x%02x%02x%s", c->col->href, base, rnd[0], rnd[1],
			     rnd[2], rnd[3], c->ext) < 0)
			return -ENOMEM;
		/* The intent moves with the upload, so that a crash leaves it where the item
		 * may now be. */
		r = ks_cache_begin(c->R->e->cache);
		if (r >= 0)
			r = ks_cache_add_intent(c->R->e->cache, c->col->id, href, KS_INTENT_CREATE,
						p->ch->filename, p->hash);
		if (r >= 0)
			r = ks_cache_clear_intent(c->R->e->cache, c->col->id, p->href);
		if (r >= 0)
			r = ks_cache_commit(c->R->e->cache);
		if (r < 0) {
			ks_cache_rollback(c->R->e->cache);
			return r;
		}
		free(p->href);
		p->href = TAKE_PTR(href);
		r = put_item(c, p->href, p->body, p->len, NULL, &etag, errmsg, sizeof(errmsg));
		if (r < 0)
			continue;
		c->pushed++;
		r = strv_push(&c->uploaded, &c->n_uploaded, &c->cap_uploaded, p->href);
		if (r >= 0)
			r = record_item(c, p->href, etag, p->ch->filename, p->body, p->len, &p->st);
		if (r >= 0 && !etag && !c->col->supports_sync)
			r = read_back(c, p->href, p->ch->filename, p->body, p->len, &p->st);
		return r;
	}
	emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r, "could not upload '%s': %s",
		  p->ch->filename, errmsg[0] ? errmsg : strerror(-r));
	c->failed_fetch++;
	c->failed_push++;
	return ks_error_scope_of(r) == KS_SCOPE_ACCOUNT ? r : 0;
}

/* Both sides changed p's item (or the server lost it): merge and bring both sides to the
 * result, keeping the losing version of any conflict. */
static int resolve(coll_run *c, push_item *p)
{
	_cleanup_free_ char *remote = NULL, *etag = NULL, *base = NULL, *new_etag = NULL;
	ks_merge_result m = {};
	size_t rlen = 0, blen = 0;
	struct stat nst = p->st;
	const char *name = p->ch->filename;
	char errmsg[512] = "";
	int r;

	r = fetch_one(c, p->href, wants_vcard4(c, p->body, p->len), &remote, &rlen, &etag);
	if (r == -ENOENT) {
		if (p->op == KS_INTENT_DELETE)
			return forget_item(c, p->href);
		/* Gone from the server, edited here: the edit wins and is uploaded anew. */
		r = put_item(c, p->href, p->body, p->len, NULL, &new_etag, errmsg, sizeof(errmsg));
		if (r < 0)
			goto fail;
		c->pushed++;
		r = strv_push(&c->uploaded, &c->n_uploaded, &c->cap_uploaded, p->href);
		if (r >= 0)
			r = record_item(c, p->href, new_etag, name, p->body, p->len, &p->st);
		if (r >= 0 && !new_etag && !c->col->supports_sync)
			r = read_back(c, p->href, name, p->body, p->len, &p->st);
		return r;
	}
	if (r < 0)
		goto fail;
	if (p->op == KS_INTENT_DELETE) {
		/* Deleted here, changed on the server: the change wins and comes back. */
		r = replace_file(c, name, NULL, remote, rlen, &nst);
		if (r > 0)
			r = record_item(c, p->href, etag, name, remote, rlen, &nst);
		if (r >= 0) {
			c->updated++;
			emit_fail(c->R, KS_SYNC_NOTICE, c->label, 0,
				  "'%s' was deleted here but changed on the server; the server's "
				  "version is back", name);
		}
		return r;
	}
	if (p->op == KS_INTENT_CREATE) {
		/* The resource a new item was to go to is taken. Only the same item (a copy
		 * an interrupted run uploaded, or another client's with this UID) is merged
		 * with it; an item with another UID is nobody's earlier version of this one. */
		r = same_uid(remote, rlen, p->info.uid);
		if (r < 0)
			return r;
		if (r == 0)
			return create_elsewhere(c, p);
	}
	if (p->op == KS_INTENT_UPDATE) {
		r = ks_cache_get_item_data(c->R->e->cache, c->col->id, p->href, &base, &blen);
		/* No row, or a row adopted without a base: a two-way merge. */
		if (r == -ENOENT || (r >= 0 && blen == 0)) {
			free(base);
			base = NULL;
			blen = 0;
		} else if (r < 0)
			return r;
	}
	ks_conflict_policy policy = policy_of(c);
	r = ks_merge(base, blen, p->body, p->len, remote, rlen, policy, &m);
	if (r == -ENOMEM)
		return r;
	bool whole = r < 0;
	if (whole) {
		/* Not mergeable line by line: the policy takes one side whole. */
		const char *win = policy == KS_CONFLICT_LOCAL_WINS ? p->body : remote;
		size_t wlen = policy == KS_CONFLICT_LOCAL_WINS ? p->len : rlen;
		m = (ks_merge_result) { .data = malloc(wlen + 1), .len = wlen, .conflict = true,
					.same_as_remote = policy != KS_CONFLICT_LOCAL_WINS,
					.same_as_local = policy == KS_CONFLICT_LOCAL_WINS };
		if (!m.data)
			return -ENOMEM;
		memcpy(m.data, win, wlen);
		m.data[wlen] = 0;
	}
	if (m.conflict) {
		/* The losing version is kept before either side is overwritten. */
		bool server_won = policy == KS_CONFLICT_SERVER_WINS;
		_cleanup_free_ char *kept = NULL;
		r = keep_copy(c, name, p->info.uid, server_won ? p->body : remote,
			      server_won ? p->len : rlen, server_won ? "local" : "server",
			      server_won ? "server" : "local",
			      whole ? "the whole item" : m.summary, &kept);
		if (r < 0)
			goto out;
		emit_fail(c->R, KS_SYNC_CONFLICT, c->label, 0,
			  "conflict in '%s' (%s): the %s version won; the %s version is kept in %s",
			  name, whole ? "not mergeable" : m.summary ? m.summary : "content",
			  server_won ? "server" : "local", server_won ? "local" : "server", kept);
	}
	const char *result_etag = etag;
	if (!m.same_as_remote) {
		r = put_item(c, p->href, m.data, m.len, etag, &new_etag, errmsg, sizeof(errmsg));
		if (r == -ESTALE) {
			c->deferred++;
			emit_fail(c->R, KS_SYNC_NOTICE, c->label, r,
				  "'%s' changed on the server again while it was merged; it will be "
				  "merged on the next run", name);
			r = 0;
			goto out;
		}
		if (r < 0)
			goto fail;
		c->pushed++;
		result_etag = new_etag;
		r = strv_push(&c->uploaded, &c->n_uploaded, &c->cap_uploaded, p->href);
		if (r < 0)
			goto out;
	}
	if (!m.same_as_local || p->op == KS_INTENT_CREATE) {
		r = replace_file(c, name, &p->st, m.data, m.len, &nst);
		if (r < 0)
			goto out;
		if (r == 0) {
			c->deferred++;
			r = 0;
			goto out;
		}
	}
	r = record_item(c, p->href, result_etag, name, m.data, m.len, &nst);
	if (r >= 0 && !result_etag && !c->col->supports_sync)
		r = read_back(c, p->href, name, m.data, m.len, &nst);
	goto out;
fail:
	emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r, "could not merge '%s': %s", name,
		  errmsg[0] ? errmsg : strerror(-r));
	c->failed_fetch++;
	c->failed_push++;
	if (ks_error_scope_of(r) != KS_SCOPE_ACCOUNT)
		r = 0;
out:
	ks_merge_result_done(&m);
	return r;
}

/* A refusal of p's change, by the server (status, with its error body) or by ksync before
 * sending (status 0, why given): recorded with the bytes refused, its intent cleared (nothing
 * reached the server), and reported. The file stays as it is and is sent again once it
 * changes; the rest of the collection goes on. */
static int refuse_item(coll_run *c, push_item *p, long status, const char *body,
		       size_t body_len, const char *why)
{
	_cleanup_free_ char *reason = NULL;
	int r;

	if (why)
		reason = strdup(why);
	else {
		r = ks_refusal_reason(status, body, body_len,
				      p->op == KS_INTENT_DELETE ? NULL : p->body, p->len, &reason);
		if (r < 0)
			return r;
	}
	if (!reason)
		return -ENOMEM;
	ks_refusal rf = {
		.filename = p->ch->filename, .href = p->href, .op = p->op,
		.hash = p->op == KS_INTENT_DELETE ? NULL : p->hash,
		.status = (int) status, .reason = reason,
	};
	r = ks_cache_begin(c->R->e->cache);
	if (r >= 0)
		r = ks_cache_add_refusal(c->R->e->cache, c->col->id, &rf);
	if (r >= 0 && status)
		r = ks_cache_clear_intent(c->R->e->cache, c->col->id, p->href);
	if (r >= 0)
		r = ks_cache_commit(c->R->e->cache);
	if (r < 0) {
		ks_cache_rollback(c->R->e->cache);
		return r;
	}
	c->refused++;
	c->skipped++;
	if (status)
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, -EPERM, "the server refused %s'%s': "
			  "%s; the file is kept and sent again once it changes",
			  p->op == KS_INTENT_DELETE ? "the deletion of " : "", p->ch->filename,
			  reason);
	else
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, -EPERM, "not sending '%s': %s; it "
			  "is sent once the file changes", p->ch->filename, reason);
	return 0;
}

static int on_push_done(ks_dav_request *req, void *userdata)
{
	push_item *p = userdata;
	coll_run *c = p->c;
	int r = req->result;

	if (p->op == KS_INTENT_DELETE) {
		if (r == 0 || r == -ENOENT) {
			c->pushed_deletes++;
			return forget_item(c, p->href);
		}
	} else if (r == 0) {
		c->pushed++;
		p->refetch = !req->etag && !c->col->supports_sync;
		r = strv_push(&c->uploaded, &c->n_uploaded, &c->cap_uploaded, p->href);
		if (r < 0)
			return r;
		return record_item(c, p->href, req->etag, p->ch->filename, p->body, p->len, &p->st);
	}
	if (r == -ESTALE || (r == -ENOENT && p->op == KS_INTENT_UPDATE)) {
		p->needs_merge = true;
		return 0;
	}
	/* A 4xx to one item's request (a strict server's validation, a calendar that takes
	 * no tasks, a UID another item has) is that item's failure: the other uploads of the
	 * run and the other collections go on. */
	if (ks_refusal_is_item_status(req->status))
		return refuse_item(c, p, req->status, req->body_text, req->body_text_len, NULL);
	c->failed_fetch++;
	c->failed_push++;
	emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r, "could not upload '%s': %s",
		  p->ch->filename, req->errmsg[0] ? req->errmsg : strerror(-r));
	/* A network or credentials failure stops the collection; a refused item does not. */
	return ks_error_scope_of(r) == KS_SCOPE_ACCOUNT ? r : 0;
}

/* Read-only collections are never written: a local change is kept as a conflict copy and
 * the server's version put back. */
static int refuse_readonly(coll_run *c, ks_local_change *ch)
{
	_cleanup_free_ char *base = NULL, *kept = NULL;
	size_t blen = 0;
	struct stat nst;
	int r;

	if (ch->kind == KS_LOCAL_NEW || ch->kind == KS_LOCAL_MODIFIED) {
		r = keep_copy(c, ch->filename, ch->uid, ch->data, ch->len, "local", "server",
			      "read-only collection", &kept);
		if (r < 0)
			return r;
	}
	if (ch->kind == KS_LOCAL_NEW) {
		r = ks_neg_errno(unlinkat(c->dirfd, ch->filename, 0));
		if (r >= 0)
			r = ks_fs_fsync_dir(c->dirfd);
	} else {
		r = ks_cache_get_item_data(c->R->e->cache, c->col->id, ch->href, &base, &blen);
		if (r >= 0)
			r = replace_file(c, ch->filename, ch->kind == KS_LOCAL_MODIFIED ? &ch->st : NULL,
					 base, blen, &nst);
		if (r > 0)
			r = ks_cache_set_item_stat(c->R->e->cache, ch->id, stat_mtime_ns(&nst),
						   (int64_t) nst.st_ino, (int64_t) nst.st_size);
	}
	if (r < 0)
		return r;
	emit_fail(c->R, KS_SYNC_CONFLICT, c->label, -EROFS,
		  "'%s' is in a read-only collection: the local %s was not sent and the server's "
		  "version is back%s%s", ch->filename,
		  ch->kind == KS_LOCAL_DELETED ? "deletion" : "change",
		  kept ? "; the local version is kept in " : "", kept ? kept : "");
	return 0;
}

/* Works out what one local change sends. Returns 1 when there is a request to send, 0 when
 * the change is left alone (reported), or a negative errno. */
static const char *kind_words(ks_item_kind k)
{
	return k == KS_ITEM_VTODO ? "a task" : k == KS_ITEM_VJOURNAL ? "a journal entry"
								  : "an event";
}

/* What no server would take, found before anything is sent: an item of a kind the calendar
 * does not hold (its supported-calendar-component-set), an edit that changed the UID (the
 * server knows the item by it). 1 with *ret_why set, or 0. */
static int refused_here(const coll_run *c, const ks_local_change *ch, const push_item *p,
			char **ret_why)
{
	static const struct {
		unsigned bit;
		ks_item_kind kind;
		const char *plural;
	} comps[] = {
		{ KS_COMP_VEVENT, KS_ITEM_VEVENT, "events" },
		{ KS_COMP_VTODO, KS_ITEM_VTODO, "tasks" },
		{ KS_COMP_VJOURNAL, KS_ITEM_VJOURNAL, "journal entries" },
	};
	const ks_collection *col = c->col;
	char *why = NULL;

	if (col->kind == KS_COLLECTION_CALENDAR && col->components) {
		unsigned bit = 0;
		char takes[64] = "";
		for (size_t i = 0; i < ELEMENTSOF(comps); i++) {
			if (comps[i].kind == p->info.kind)
				bit = comps[i].bit;
			if (col->components & comps[i].bit)
				snprintf(takes + strlen(takes), sizeof(takes) - strlen(takes), "%s%s",
					 takes[0] ? " and " : "", comps[i].plural);
		}
		if (bit && !(col->components & bit) &&
		    asprintf(&why, "it is %s and the calendar '%s' takes only %s",
			     kind_words(p->info.kind), col->displayname ? col->displayname
									: col->name,
			     takes) < 0)
			return -ENOMEM;
	}
	if (!why && ch->kind == KS_LOCAL_MODIFIED && ch->uid && p->info.uid &&
	    strcmp(ch->uid, p->info.uid) != 0 &&
	    asprintf(&why, "its UID changed from '%.100s' to '%.100s', and the server knows the "
		     "item by its UID: put the old UID back, or move the file to a new name (the "
		     "old item is then deleted on the server and the file uploaded as a new one)",
		     ch->uid, p->info.uid) < 0)
		return -ENOMEM;
	*ret_why = why;
	return why ? 1 : 0;
}

/* Rewrites the new file of p with a new UID: 1 when done, 0 when the file changed meanwhile
 * (left for the next run). */
static int give_new_uid(coll_run *c, push_item *p)
{
	_cleanup_free_ char *why = NULL;
	char uid[37];
	char *nb = NULL;
	size_t nlen = 0;
	int r = random_uid(uid);

	if (r >= 0)
		r = ks_item_set_uid(p->body, p->len, p->info.uid, uid, &nb, &nlen);
	if (r < 0)
		return r;
	free(p->body);
	p->body = nb;
	p->len = nlen;
	ks_item_info_done(&p->info);
	r = ks_item_parse_info(p->body, p->len, &p->info, &why);
	if (r < 0 || !p->info.uid || strcmp(p->info.uid, uid) != 0)
		return r == -ENOMEM ? r : -EBADMSG;
	r = replace_file(c, p->ch->filename, &p->ch->st, p->body, p->len, &p->st);
	if (r == 0)
		c->deferred++;
	if (r > 0)
		ks_sha256_hex(p->body, p->len, p->hash);
	return r;
}

static int prepare_push(coll_run *c, ks_local_change *ch, const push_item *prepared,
			size_t n_prepared, push_item *p)
{
	_cleanup_free_ char *why = NULL;
	int r;

	p->c = c;
	p->ch = ch;
	p->st = ch->st;
	if (ch->kind == KS_LOCAL_DELETED) {
		p->op = KS_INTENT_DELETE;
		p->href = strdup(ch->href);
		return p->href ? 1 : -ENOMEM;
	}
	p->body = malloc(ch->len + 1);
	if (!p->body)
		return -ENOMEM;
	memcpy(p->body, ch->data, ch->len + 1);
	p->len = ch->len;
	r = ks_item_parse_info(p->body, p->len, &p->info, &why);
	if (r == -ENODATA && ch->kind == KS_LOCAL_NEW) {
		/* A new file without a UID gets one, written back before it is sent, so that
		 * the file and the server agree on it. */
		char uid[37];
		char *nb = NULL;
		size_t nlen = 0;
		r = random_uid(uid);
		if (r >= 0)
			r = ks_item_set_uid(p->body, p->len, NULL, uid, &nb, &nlen);
		if (r < 0)
			return r;
		free(p->body);
		p->body = nb;
		p->len = nlen;
		free(why);
		why = NULL;
		r = ks_item_parse_info(p->body, p->len, &p->info, &why);
		if (r >= 0) {
			r = replace_file(c, ch->filename, &ch->st, p->body, p->len, &p->st);
			if (r == 0) {
				c->deferred++;
				return 0;
			}
		}
	}
	if (r == -ENOMEM)
		return r;
	bool card = c->col->kind == KS_COLLECTION_ADDRESSBOOK;
	if (r >= 0 && (p->info.kind == KS_ITEM_VCARD) != card) {
		r = -EBADMSG;
		free(why);
		why = strdup(card ? "not a vCard" : "not an iCalendar object");
	}
	if (r < 0) {
		c->skipped++;
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, r,
			  "not uploading '%s': %s; fix the file and it is sent on the next run",
			  ch->filename, why ? why : strerror(-r));
		return 0;
	}
	ks_sha256_hex(p->body, p->len, p->hash);
	p->op = ch->kind == KS_LOCAL_MODIFIED ? KS_INTENT_UPDATE : KS_INTENT_CREATE;
	r = refused_here(c, ch, p, &why);
	if (r < 0)
		return r;
	if (r > 0)
		return refuse_item(c, p, 0, NULL, 0, why);
	if (ch->kind == KS_LOCAL_MODIFIED) {
		p->op = KS_INTENT_UPDATE;
		p->href = strdup(ch->href);
		return p->href ? 1 : -ENOMEM;
	}
	/* A new item: its resource is named after its UID. A UID another item of the collection
	 * has already (the file is a copy of that item's, or of another new file's) makes it an
	 * item of its own all the same: it gets a new UID, written into the file before it is
	 * sent, so that neither version is merged into the other or left behind. */
	_cleanup_free_ char *twin = NULL;
	ks_cache_item other = {};
	r = ks_cache_get_item_by_uid(c->R->e->cache, c->col->id, p->info.uid, &other);
	if (r >= 0)
		twin = TAKE_PTR(other.filename);
	ks_cache_item_done(&other);
	if (r < 0 && r != -ENOENT)
		return r;
	for (size_t i = 0; !twin && i < n_prepared; i++)
		if (prepared[i].op == KS_INTENT_CREATE && strcmp(prepared[i].info.uid, p->info.uid) == 0)
			twin = strdup(prepared[i].ch->filename);
	if (twin) {
		r = give_new_uid(c, p);
		if (r <= 0)
			return r;
		emit_fail(c->R, KS_SYNC_NOTICE, c->label, 0, "'%s' had the UID of '%s'; it got a new "
			  "UID and is uploaded as an item of its own", ch->filename, twin);
	}
	_cleanup_free_ char *base = NULL;
	r = ks_vdir_item_name(p->info.uid, NULL, &base);
	if (r < 0)
		return r;
	p->op = KS_INTENT_CREATE;
	if (asprintf(&p->href, "%s%s%s", c->col->href, base, c->ext) < 0) {
		p->href = NULL;
		return -ENOMEM;
	}
	return 1;
}

/* A file renamed (mv, or an editor saving under another name) shows up as a deleted row and
 * a new file with the same UID: it is the same item, which keeps its resource on the server.
 * Unchanged content only moves the row; changed content becomes an edit. */
static int match_renames(coll_run *c, ks_scan_result *sr)
{
	for (size_t i = 0; i < sr->n_changes; i++) {
		ks_local_change *ch = &sr->changes[i];
		ks_item_info info = {};
		if (ch->kind != KS_LOCAL_NEW || !ch->data)
			continue;
		int r = ks_item_parse_info(ch->data, ch->len, &info, NULL);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* Not an item (yet): prepare_push() reports it. */
			ks_item_info_done(&info);
			continue;
		}
		for (size_t j = 0; r >= 0 && j < sr->n_changes; j++) {
			ks_local_change *old = &sr->changes[j];
			if (old->kind != KS_LOCAL_DELETED || !old->uid || strcmp(old->uid, info.uid))
				continue;
			_cleanup_free_ char *base = NULL;
			size_t blen = 0;
			r = ks_cache_get_item_data(c->R->e->cache, c->col->id, old->href, &base,
						   &blen);
			if (r < 0)
				break;
			char hex[65];
			ks_sha256_hex(base, blen, hex);
			if (strcmp(hex, ch->hash) == 0) {
				r = ks_cache_set_item_file(c->R->e->cache, old->id, ch->filename,
							   stat_mtime_ns(&ch->st),
							   (int64_t) ch->st.st_ino,
							   (int64_t) ch->st.st_size);
				ch->kind = KS_LOCAL_MOVED;
			} else {
				ch->kind = KS_LOCAL_MODIFIED;
				ch->id = old->id;
				ch->href = TAKE_PTR(old->href);
				ch->etag = TAKE_PTR(old->etag);
				ch->uid = TAKE_PTR(old->uid);
			}
			old->kind = KS_LOCAL_MOVED;
			break;
		}
		ks_item_info_done(&info);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A file with an item's name that is no regular file, or cannot be read: it is neither sent
 * nor taken for a deletion, and the server's item stays. */
static void report_ignored(coll_run *c, const ks_local_change *ch)
{
	mode_t m = ch->st.st_mode;
	const char *what = ch->error != -EBADF ? NULL
			   : S_ISLNK(m)		 ? "a symbolic link"
			   : S_ISFIFO(m)	 ? "a FIFO"
			   : S_ISDIR(m)		 ? "a directory"
						 : "a special file";

	if (what)
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, ch->error,
			  "ignoring '%s/%s': it is %s, not a regular file; it is not read, sent "
			  "or deleted on the server", c->dir, ch->filename, what);
	else
		emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, ch->error,
			  "ignoring '%s/%s': %s; it is not sent or deleted on the server", c->dir,
			  ch->filename, strerror(-ch->error));
}

/* How long to wait before the second look: until SECOND_LOOK_MS have passed since the
 * directory last changed. A directory quiet for that long holds no file in transit, and
 * costs no wait. */
static unsigned second_look_wait_ms(const coll_run *c)
{
	struct stat st;
	struct timespec now;

	if (fstat(c->dirfd, &st) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
		return SECOND_LOOK_MS;
	int64_t since = ((int64_t) now.tv_sec - st.st_mtim.tv_sec) * 1000 +
			(now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
	return since >= SECOND_LOOK_MS ? 0 : since < 0 ? SECOND_LOOK_MS
						       : (unsigned) (SECOND_LOOK_MS - since);
}

/* A file missing now may be away for a moment: moved out and back, or replaced in two steps
 * by a program. A deletion is sent only when a second look, a little later, still misses the
 * file and finds its item under no other name; the others are left to a later run. */
static int confirm_deletions(coll_run *c, ks_scan_result *sr, size_t *n_deleted)
{
	ks_scan_result again = {};
	unsigned wait = second_look_wait_ms(c);
	int r;

	for (unsigned waited = 0; waited < wait && !cancelled(c->R); waited += 50)
		(void) nanosleep(&(struct timespec) { .tv_nsec = 50 * 1000000 }, NULL);
	if (cancelled(c->R))
		return -ECANCELED;
	r = ks_scan_collection(c->R->e->cache, c->col->id, c->dirfd, c->ext, true, &again);
	if (r < 0)
		return r;
	for (size_t i = 0; r >= 0 && i < sr->n_changes; i++) {
		ks_local_change *ch = &sr->changes[i];
		bool still = false;
		if (ch->kind != KS_LOCAL_DELETED)
			continue;
		for (size_t j = 0; j < again.n_changes && !still; j++)
			still = again.changes[j].kind == KS_LOCAL_DELETED &&
				strcmp(again.changes[j].filename, ch->filename) == 0;
		for (size_t j = 0; r >= 0 && still && ch->uid && j < again.n_changes; j++) {
			ks_local_change *a = &again.changes[j];
			ks_item_info info = {};
			if (a->kind != KS_LOCAL_NEW || !a->data)
				continue;
			r = ks_item_parse_info(a->data, a->len, &info, NULL);
			still = !(r >= 0 && info.uid && strcmp(info.uid, ch->uid) == 0);
			ks_item_info_done(&info);
			r = r == -ENOMEM ? r : 0;
		}
		if (!still) {
			/* Back (or under another name): a later run sees what it is now. */
			ch->kind = KS_LOCAL_MOVED;
			(*n_deleted)--;
			c->deferred++;
		}
	}
	ks_scan_result_done(&again);
	return r;
}

static const ks_refusal *find_refusal(const coll_run *c, const char *filename)
{
	for (size_t i = 0; i < c->n_refusals; i++)
		if (strcmp(c->refusals[i].filename, filename) == 0)
			return &c->refusals[i];
	return NULL;
}

/* The refusals of earlier runs that still stand: a refusal whose file is no pending change
 * any more (the user deleted the new file, took the edit back, put the deleted file back) is
 * forgotten, and --force forgets them all, so that everything is sent again. */
static int load_refusals(coll_run *c, const ks_scan_result *sr)
{
	ks_cache *cache = c->R->e->cache;
	int r = ks_cache_list_refusals(cache, c->col->id, &c->refusals, &c->n_refusals);

	for (size_t i = 0; r >= 0 && i < c->n_refusals; i++) {
		ks_refusal *rf = &c->refusals[i];
		bool pending = false;
		for (size_t j = 0; j < sr->n_changes && !pending; j++)
			pending = sr->changes[j].kind != KS_LOCAL_IGNORED &&
				  strcmp(sr->changes[j].filename, rf->filename) == 0;
		if (pending && !c->R->o->force)
			continue;
		r = ks_cache_clear_refusal(cache, c->col->id, rf->filename);
		free(rf->filename);
		rf->filename = strdup("");	/* matches no file */
		if (r >= 0 && !rf->filename)
			r = -ENOMEM;
	}
	return r;
}

/* 1 when ch was refused before and has not changed since: it is not sent again, and says
 * why. 0 when it is to be sent (a changed file's refusal is forgotten). */
static int still_refused(coll_run *c, const ks_local_change *ch)
{
	const ks_refusal *rf = find_refusal(c, ch->filename);

	if (!rf)
		return 0;
	bool same = ch->kind == KS_LOCAL_DELETED ? rf->op == KS_INTENT_DELETE
						 : rf->hash && strcmp(rf->hash, ch->hash) == 0;
	if (!same)
		return ks_cache_clear_refusal(c->R->e->cache, c->col->id, ch->filename);
	c->refused++;
	c->skipped++;
	emit_fail(c->R, KS_SYNC_ITEM_SKIPPED, c->label, -EPERM, "not sending %s'%s': %s%s; %s",
		  ch->kind == KS_LOCAL_DELETED ? "the deletion of " : "", ch->filename,
		  rf->status ? "the server refused it: " : "", rf->reason,
		  ch->kind == KS_LOCAL_DELETED ? "the item stays on the server, and `ksyncctl "
						 "sync --force` brings its file back"
					       : "it is sent once the file changes");
	return 1;
}

/* Scans the directory and sends every local change to the server. */
static int push_collection(coll_run *c)
{
	ks_scan_result sr = {};
	push_item *items = NULL;
	ks_dav_request *reqs = NULL;
	size_t n = 0, n_deleted = 0;
	int r;

	r = ks_scan_collection(c->R->e->cache, c->col->id, c->dirfd, c->ext, false, &sr);
	if (r < 0) {
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "cannot read the local directory: %s", strerror(-r));
		return r;
	}
	r = match_renames(c, &sr);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < sr.n_changes; i++) {
		if (sr.changes[i].kind == KS_LOCAL_DELETED)
			n_deleted++;
		if (sr.changes[i].kind == KS_LOCAL_IGNORED)
			report_ignored(c, &sr.changes[i]);
	}
	if (n_deleted) {
		r = confirm_deletions(c, &sr, &n_deleted);
		if (r < 0)
			goto out;
	}
	r = load_refusals(c, &sr);
	if (r < 0)
		goto out;
	if (sr.n_changes == 0)
		goto out;
	r = guard_deletions(c, n_deleted, "on the server",
			    "their files are missing here: was the directory emptied, removed or "
			    "unmounted?", "If the files were removed by mistake, `ksyncctl sync "
			    "--force` fetches them again. ");
	if (r < 0)
		goto out;
	items = calloc(sr.n_changes, sizeof(*items));
	reqs = calloc(sr.n_changes, sizeof(*reqs));
	if (!items || !reqs) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < sr.n_changes; i++) {
		ks_local_change *ch = &sr.changes[i];
		if (ch->kind == KS_LOCAL_IGNORED || ch->kind == KS_LOCAL_MOVED)
			continue;
		r = still_refused(c, ch);
		if (r < 0)
			goto out;
		if (r > 0)
			continue;
		if (c->col->readonly) {
			r = refuse_readonly(c, ch);
			if (r < 0)
				goto out;
			continue;
		}
		r = prepare_push(c, ch, items, n, &items[n]);
		if (r < 0) {
			push_item_done(&items[n]);
			goto out;
		}
		if (r == 0) {
			push_item_done(&items[n]);
			memset(&items[n], 0, sizeof(items[n]));
			continue;
		}
		n++;
	}
	if (n == 0) {
		r = 0;
		goto out;
	}
	/* Write-ahead: every upload is recorded before it is sent, so that a crash at any
	 * point is followed by a run that knows what may have reached the server. */
	r = ks_cache_begin(c->R->e->cache);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ks_cache_add_intent(c->R->e->cache, c->col->id, items[i].href, items[i].op,
					items[i].ch->filename,
					items[i].op == KS_INTENT_DELETE ? NULL : items[i].hash);
	if (r >= 0)
		r = ks_cache_commit(c->R->e->cache);
	if (r < 0) {
		ks_cache_rollback(c->R->e->cache);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		push_item *p = &items[i];
		reqs[i] = (ks_dav_request) {
			.method = p->op == KS_INTENT_DELETE ? "DELETE" : "PUT",
			.url = p->href,
			.body = p->body,
			.body_len = p->len,
			.content_type = p->op == KS_INTENT_DELETE ? NULL
					: c->col->kind == KS_COLLECTION_ADDRESSBOOK
						? "text/vcard; charset=utf-8"
						: "text/calendar; charset=utf-8",
			.if_match = p->op == KS_INTENT_CREATE ? NULL : p->ch->etag,
			.if_none_match = p->op == KS_INTENT_CREATE ? "*" : NULL,
			.userdata = p,
			.on_done = on_push_done,
		};
		/* A row without an etag cannot be conditioned: the server's version is fetched
		 * and merged instead of being overwritten blindly. */
		if (p->op != KS_INTENT_CREATE && !p->ch->etag) {
			reqs[i].method = "PROPFIND";
			p->needs_merge = true;
		}
	}
	if (cancelled(c->R)) {
		r = -ECANCELED;
		goto out;
	}
	/* Items needing a merge without a request are left out of the run. */
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(reqs[i].method, "PROPFIND") != 0)
			reqs[m++] = reqs[i];
	r = ks_dav_run(c->R->dav, reqs, m);
	for (size_t i = 0; i < m; i++)
		ks_dav_request_done(&reqs[i]);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		push_item *p = &items[i];
		if (p->refetch) {
			r = read_back(c, p->href, p->ch->filename, p->body, p->len, &p->st);
			if (r < 0 && ks_error_scope_of(r) == KS_SCOPE_ACCOUNT)
				goto out;
		}
		if (p->needs_merge) {
			r = resolve(c, p);
			if (r < 0)
				goto out;
		}
	}
	r = 0;
out:
	/* Every failure is reported once; the guard and file_failed() reported their own. */
	if (r < 0 && r != -EDQUOT && r != c->cb_error)
		emit_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->label, r,
			  "cannot send local changes: %s", strerror(-r));
	for (size_t i = 0; items && i < n; i++)
		push_item_done(&items[i]);
	free(items);
	free(reqs);
	ks_scan_result_done(&sr);
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
	if (col->components != remote->components || col->readonly != remote->readonly ||
	    col->vcard4 != remote->vcard4) {
		col->components = remote->components;
		col->readonly = remote->readonly;
		col->vcard4 = remote->vcard4;
		changed = 1;
	}
	if (!col->supports_sync && remote->supports_sync && remote->sync_token) {
		col->supports_sync = true;
		changed = 1;
	}
	return changed;
}

static int on_gone_check(const ks_ms_response *r, void *userdata)
{
	int *state = userdata;

	/* Depth 0: this is the collection itself, whatever form its href takes. Some servers
	 * (Xandikos) answer a missing one with a 207 whose response says 404. */
	if (r->status == 404 || r->status == 410)
		*state = 1;
	return 0;
}

/* Whether the collection at href is gone from the server (1), still there (0), or the server
 * did not say (a negative errno). A home listing that leaves a collection out may be wrong (a
 * server or a proxy glitch, a 207 naming nothing): only the collection's own 404 counts. */
static int collection_gone(run *R, const char *href)
{
	static const char body[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propfind xmlns:d=\"DAV:\"><d:prop><d:resourcetype/></d:prop></d:propfind>\n";
	int state = 0;
	ks_dav_request req = {
		.method = "PROPFIND", .url = href, .depth = "0", .body = body,
		.body_len = sizeof(body) - 1, .on_response = on_gone_check, .userdata = &state,
	};
	int r = ks_dav_run_one(R->dav, &req);

	ks_dav_request_done(&req);
	if (r == -ENOENT)
		return 1;
	return r < 0 ? r : state;
}

/* Moves the entry name of dirfd under conflicts/<account>/<label>/ (a free name there), where
 * the user finds what a removed collection held that ksync had not written. */
static int move_aside(run *R, const char *label, int dirfd, const char *name, char **ret_path)
{
	_cleanup_free_ char *rel = NULL;
	int fd, r;

	if (asprintf(&rel, "conflicts/%s/%s", R->acc->name, label) < 0)
		return -ENOMEM;
	r = ks_fs_open_beneath(R->e->data_dir, rel, true, &fd, NULL);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < 1000; i++) {
		_cleanup_free_ char *to = NULL;
		if ((i == 0 ? asprintf(&to, "%s", name) : asprintf(&to, "%s.%u", name, i)) < 0) {
			r = -ENOMEM;
			break;
		}
		if (faccessat(fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		r = ks_neg_errno(renameat(dirfd, name, fd, to));
		if (r >= 0)
			r = ks_fs_fsync_dir(fd);
		if (r >= 0 && asprintf(ret_path, "%s/%s/%s", R->e->data_dir, rel, to) < 0)
			r = -ENOMEM;
		break;
	}
	close(fd);
	return r;
}

static int cmp_local_row(const void *key, const void *elem)
{
	return strcmp(key, ((const ks_local_row *) elem)->filename);
}

/* Whether the file name of dirfd is the item file ksync wrote and nothing else: a row names
 * it, and its stat, or else its content, is what the row recorded. */
static int file_is_ksyncs(ks_cache *cache, ks_local_row *rows, size_t n, int dirfd,
			  const char *name)
{
	ks_local_row *row = bsearch(name, rows, n, sizeof(*rows), cmp_local_row);
	_cleanup_free_ char *data = NULL;
	struct stat st;
	size_t len = 0;
	char hex[65];
	int r;

	if (!row || fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (ks_scan_stat_matches(&st, row->mtime_ns, row->ino, row->size))
		return 1;
	r = ks_cache_fill_local_row(cache, row);
	if (r >= 0)
		r = ks_fs_read_file(dirfd, name, KS_CARD_MAX, &data, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !row->hash)
		return 0;
	ks_sha256_hex(data, len, hex);
	return strcmp(hex, row->hash) == 0;
}

/* Removes the directory of a collection the server no longer has. Only what ksync wrote is
 * deleted: item files as their rows recorded them, and the displayname and color files.
 * Everything else (an edit not sent, a new item, a file that is no item) is moved under
 * conflicts/ first, recorded and reported, so that nothing of the user's is lost. */
static int remove_collection_files(run *R, const ks_collection *col)
{
	_cleanup_free_ char *parent = NULL;
	char label[KS_NAME_MAX + 16];
	ks_local_row *rows = NULL;
	size_t n_rows = 0;
	unsigned kept = 0;
	DIR *d;
	struct dirent *de;
	int pfd, fd, r;

	snprintf(label, sizeof(label), "%s/%s",
		 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", col->name);
	if (asprintf(&parent, "%s/%s", col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts"
									    : "calendars",
		     R->acc->name) < 0)
		return -ENOMEM;
	/* Never through a symlink: the files deleted are ksync's own, nobody else's. */
	r = ks_fs_open_beneath(R->e->data_dir, parent, false, &pfd, NULL);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	fd = openat(pfd, col->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT ? 0 : -errno;
		close(pfd);
		return r;
	}
	r = ks_cache_list_local(R->e->cache, col->id, &rows, &n_rows);
	d = r >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		r = r < 0 ? r : -errno;
		close(fd);
		close(pfd);
		ks_local_rows_free(rows, n_rows);
		return r;
	}
	while (r >= 0 && (de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (strcmp(name, "displayname") == 0 || strcmp(name, "color") == 0 ||
		    ks_fs_is_temp_name(name)) {
			r = ks_neg_errno(unlinkat(dirfd(d), name, 0));
			continue;
		}
		r = file_is_ksyncs(R->e->cache, rows, n_rows, dirfd(d), name);
		if (r > 0) {
			r = ks_neg_errno(unlinkat(dirfd(d), name, 0));
			continue;
		}
		_cleanup_free_ char *kept_path = NULL;
		if (r >= 0)
			r = move_aside(R, label, dirfd(d), name, &kept_path);
		if (r >= 0)
			r = ks_cache_add_conflict(R->e->cache, R->acc->name, label, NULL, name,
						  kept_path, "server", "collection removed");
		if (r >= 0) {
			kept++;
			emit_fail(R, KS_SYNC_NOTICE, label, 0, "'%s' was not sent to the server "
				  "before the collection was removed there; it is kept in %s", name,
				  kept_path);
		}
	}
	closedir(d);
	ks_local_rows_free(rows, n_rows);
	if (r >= 0)
		r = ks_neg_errno(unlinkat(pfd, col->name, AT_REMOVEDIR));
	if (r >= 0)
		r = ks_fs_fsync_dir(pfd);
	close(pfd);
	return r;
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

static int list_homes(run *R, ks_cache_account *acc, bool with_tokens, ks_collection **ret,
		      size_t *ret_n)
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
		r = ks_list_home(R->dav, homes[h], with_tokens, &part, &n_part, &why);
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
		if (n_part)
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

/* Whether col is the collection named by name: its directory name, or "contacts/NAME" /
 * "calendars/NAME". */
static bool collection_is(const ks_collection *col, const char *name)
{
	const char *kind = col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts/" : "calendars/";
	size_t k = strlen(kind);

	if (strncmp(name, kind, k) == 0)
		name += k;
	return strcmp(name, col->name) == 0;
}

/* Brings the cached collections in line with a home listing: new ones get a directory name
 * and a row, changed properties are saved, and those gone from the server are removed with
 * their files, if the mass-deletion guard lets them go. Returns the number of collections
 * that could not be recorded or removed. */
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
		char label[KS_NAME_MAX + 16];
		snprintf(label, sizeof(label), "%s/%s",
			 k->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", k->name);
		r = collection_gone(R, k->href);
		if (r == 0) {
			emit_fail(R, KS_SYNC_NOTICE, label, 0, "the listing of the collections did "
				  "not name %s, which the server still has; nothing changed", k->href);
			continue;
		}
		int n = r > 0 ? ks_cache_count_items(cache, k->id) : 0;
		if (r < 0 || n < 0) {
			r = r < 0 ? r : n;
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, label, r, "the listing of the "
				  "collections did not name %s, and asking it failed (%s); nothing "
				  "changed", k->href, strerror(-r));
			failed++;
			goto skip;
		}
		if (n > 0 && k->enabled && !R->o->allow_mass_delete) {
			/* A collection going away takes all its items with it: the mass-deletion
			 * guard stops that whatever the size. */
			_cleanup_free_ char *dir = NULL;
			(void) ks_engine_collection_dir(R->e, R->acc->name, k, &dir);
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, label, -EDQUOT,
				  "the server no longer has this collection (%s: deleted, or moved?); "
				  "its %d items are kept in '%s' and nothing was deleted. If it was "
				  "deleted on purpose, run `ksyncctl sync --allow-mass-delete %s` to "
				  "remove it here too (what was not sent is kept under conflicts/)",
				  k->href, n, dir ? dir : k->name, R->acc->name);
			failed++;
			goto skip;
		}
		r = remove_collection_files(R, k);
		if (r >= 0)
			r = ks_cache_delete_collection(cache, k->id);
		if (r < 0) {
			emit_fail(R, KS_SYNC_COLLECTION_FAILED, label, r,
				  "cannot remove the collection deleted on the server: %s",
				  strerror(-r));
			failed++;
			goto skip;
		}
		if (k->enabled)
			emit_fail(R, KS_SYNC_NOTICE, label, 0, "the collection was deleted on the "
				  "server; it was removed here with its %d items", n);
skip:
		/* Not synced this run either way: it is no longer listed. */
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
			/* New collections follow `collections =`, except one just created here. */
			bool enable = R->acc->collections != KS_NEW_COLLECTIONS_NONE ||
				      (R->o->enable_href && strcmp(R->o->enable_href, remote[j].href) == 0);
			ks_collection fresh = {
				.account = strdup(R->acc->name),
				.href = strdup(remote[j].href),
				.kind = remote[j].kind,
				.enabled = enable,
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
	bool with_tokens = false;
	for (size_t i = 0; i < *n_known && !with_tokens; i++)
		with_tokens = (*known)[i].sync_token || (*known)[i].ctag;
	int r = list_homes(R, acc, with_tokens, remote, n_remote);

	if (r < 0 && !fresh && ks_error_scope_of(r) != KS_SCOPE_ACCOUNT) {
		r = discover_account(R, acc);
		if (r >= 0)
			r = list_homes(R, acc, with_tokens, remote, n_remote);
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

/* Whether any enabled collection of the account has a local change (1) or not (0): a scan of
 * the directories against the cache, without a request. */
static int local_changes_pending(run *R)
{
	ks_collection *known = NULL;
	size_t n_known = 0;
	int r = ks_cache_list_collections(R->e->cache, R->acc->name, &known, &n_known);

	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < n_known; i++) {
		ks_scan_result sr = {};
		ks_collection *col = &known[i];
		int fd;
		if (!col->enabled)
			continue;
		r = ks_engine_open_collection_dir(R->e, R->acc->name, col, false, &fd, NULL);
		if (r == -ENOMEM)
			break;
		if (r < 0) {
			r = 1;	/* a missing directory is a change the full run reports */
			break;
		}
		r = ks_scan_collection(R->e->cache, col->id, fd,
				       col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics", false,
				       &sr);
		close(fd);
		for (size_t k = 0; r == 0 && k < sr.n_changes; k++)
			r = sr.changes[k].kind != KS_LOCAL_IGNORED;
		ks_scan_result_done(&sr);
	}
	ks_collection_free_array(known, n_known);
	return r;
}

/* One writer per account: a second process syncing it would race the first one's intents
 * and files. The lock lives in the data directory it protects (locks/<account>.lock), so
 * that every process writing there, the service and a cron job without XDG_RUNTIME_DIR
 * alike, takes the same one; it names the holder's pid. */
int ks_engine_lock_account(const ks_engine *e, const char *account, bool wait, int *ret_fd,
			   char **reterr_msg)
{
	const char *base = e->data_dir, *sub = "locks";
	_cleanup_free_ char *path = NULL;
	int dfd, fd, r;

	if (asprintf(&path, "%s/%s/%s.lock", base, sub, account) < 0)
		return -ENOMEM;
	/* Not through a symlink either: the lock file is written. */
	r = ks_fs_open_beneath(base, sub, true, &dfd, NULL);
	if (r < 0)
		goto failed;
	fd = openat(dfd, strrchr(path, '/') + 1, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	r = -errno;
	close(dfd);
	if (fd < 0)
		goto failed;
	if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		r = -errno;
		char buf[32] = "";
		ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
		buf[k > 0 ? k : 0] = 0;
		buf[strcspn(buf, "\n")] = 0;
		close(fd);
		if (r == -EWOULDBLOCK)
			return ks_set_error(reterr_msg, -EBUSY, "another ksync process%s%s is syncing "
					    "this account (lock %s); try again later, or wait for it "
					    "with --wait", buf[0] ? " with pid " : "", buf, path);
		goto failed;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n) {
		r = -errno;
		close(fd);
		goto failed;
	}
	*ret_fd = fd;
	return 0;
failed:
	return ks_set_error(reterr_msg, r, "cannot lock the account with '%s': %s", path,
			    r == -ELOOP ? "a symbolic link is on the way, which ksync does not follow"
					: strerror(-r));
}

static int lock_account(run *R, int *ret_fd)
{
	_cleanup_free_ char *why = NULL;
	int r = ks_engine_lock_account(R->e, R->acc->name, R->o->wait_lock, ret_fd, &why);

	if (r < 0 && r != -ENOMEM)
		emit_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s",
			  why ? why : "cannot lock the account");
	return r;
}

/* A run that ended with -EACCES: whether the credentials were refused (a 401), confirmed
 * with one request unless discovery or a listing already saw the 401 (auth_known). */
static int credentials_refused(run *R, bool auth_known, const char *fingerprint)
{
	if (!auth_known && ks_discover_check_auth(R->dav, R->acc->url) != -EACCES)
		return -EPERM;	/* a 403 on something: not the credentials */
	ks_sync_event ev = { .type = KS_SYNC_CREDENTIALS_REFUSED, .account = R->acc->name,
			     .error = -EACCES, .credentials = fingerprint,
			     .message = auth_known ? NULL : ks_manage_auth_message() };
	emit(R, &ev);
	return -EACCES;
}

static int sync_account_once(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o,
			     bool first_pass, bool *ret_damaged)
{
	run R = { .e = e, .acc = a, .o = o, .first_pass = first_pass };

	*ret_damaged = false;
	ks_cache_account acc = {};
	ks_collection *known = NULL, *remote = NULL;
	size_t n_known = 0, n_remote = 0;
	char *password = NULL, *why = NULL;
	int r, failed = 0;

	if (o->only_if_local_changes) {
		r = local_changes_pending(&R);
		if (r <= 0)
			return r;
	}
	/* The password comes first: a command that waits for a prompt or a locked keyring must
	 * not hold the account's lock (and every other run of it) while it waits. */
	r = ks_secret_get(a, o->cancel, &password, &why);
	if (r < 0 && r != -ENOKEY) {
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "cannot get the password: %s",
			  why ? why : strerror(-r));
		free(why);
		return r;
	}
	free(why);
	why = NULL;
	char fingerprint[65];
	ks_secret_fingerprint(a, password, fingerprint);
	if (o->refused_credentials && strcmp(o->refused_credentials, fingerprint) == 0) {
		password = ks_secret_free(password);
		return -EKEYREVOKED;
	}
	bool auth_known = false;
	int lock_fd = -1;
	r = lock_account(&R, &lock_fd);
	if (r < 0) {
		password = ks_secret_free(password);
		return r;
	}
	/* Another program in a write transaction on the cache (a sqlite3 shell) would fail
	 * every collection, each after the busy timeout: find out once, before any request. */
	r = ks_cache_begin(e->cache);
	if (r >= 0)
		ks_cache_rollback(e->cache);
	if (r < 0) {
		close(lock_fd);
		password = ks_secret_free(password);
		if (r == -EBUSY)
			emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
				  "the cache '%s/ksync.db' is locked by another program (waited 5 s); "
				  "end its transaction or close it and run again", e->data_dir);
		else
			emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
				  "cannot write the cache '%s/ksync.db': %s", e->data_dir,
				  strerror(-r));
		return r;
	}
	r = ks_session_new_with(a, password, &R.dav, &why);
	password = ks_secret_free(password);
	if (r < 0) {
		close(lock_fd);
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s", why ? why : strerror(-r));
		free(why);
		return r;
	}

	int64_t now = (int64_t) time(NULL);
	r = ks_cache_get_account(e->cache, a->name, &acc);
	bool fresh = false;
	if (r == -ENOENT || (r >= 0 && (o->force || acc.discovered_at + REDISCOVER_SECS < now))) {
		r = discover_account(&R, &acc);
		auth_known = r == -EACCES;
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
	if (fresh || o->force || o->list_collections || n_known == 0 ||
	    acc.listed_at + LIST_SECS < now || acc.listed_at > now) {
		r = list_and_reconcile(&R, &acc, fresh, &remote, &n_remote, &known, &n_known);
		auth_known |= r == -EACCES;
		if (r < 0)
			goto out;
		failed += r;
		listed = true;
	}

	bool gone = false;
	int transport_error = 0;
	for (size_t i = 0; i < n_known; i++) {
		ks_collection *col = &known[i];
		if (!col->enabled)
			continue;
		if (o->only_collection && !collection_is(col, o->only_collection))
			continue;
		if (cancelled(&R)) {
			r = -ECANCELED;
			goto out;
		}
		r = sync_collection(&R, col, listed ? find_remote(remote, n_remote, col->href) : NULL);
		if (r == -ENOENT && !listed) {
			gone = true;
			continue;
		}
		if (r < 0) {
			failed++;
			/* A connection cut or stalled on one collection, or an answer that makes
			 * no sense there (a redirect), may be that collection's trouble (a huge
			 * answer, a proxy's limit, a moved collection): the others are tried, each
			 * within its timeout, until a second one fails the same way. Other
			 * account-wide failures (credentials, refused connections, a server
			 * asking to wait) stop the account at once. */
			bool transport = r == -ECONNRESET || r == -ETIMEDOUT || r == -EPROTO;
			if (ks_error_scope_of(r) == KS_SCOPE_ACCOUNT &&
			    (!transport || transport_error))
				goto out;
			if (transport)
				transport_error = r;
		}
	}
	if (gone) {
		/* A collection vanished since the last listing: list now so that it goes away
		 * here too instead of failing every run until the next listing. */
		r = list_and_reconcile(&R, &acc, fresh, &remote, &n_remote, &known, &n_known);
		if (r < 0)
			goto out;
	}
	/* The caller backs off after a failure of the connection, as it would had the run
	 * stopped there. */
	r = transport_error ? transport_error : failed;
out:
	if (r == -EACCES)
		r = credentials_refused(&R, auth_known, fingerprint);
	if (ks_dav_retry_after(R.dav)) {
		/* The server is overloaded or rate-limits: the caller waits as long as it asked. */
		char msg[128];
		snprintf(msg, sizeof(msg), "the server asked to wait %u s before trying again",
			 ks_dav_retry_after(R.dav));
		ks_sync_event ev = { .type = KS_SYNC_NOTICE, .account = a->name, .message = msg,
				     .retry_after = ks_dav_retry_after(R.dav) };
		emit(&R, &ev);
	}
	ks_cache_account_done(&acc);
	ks_collection_free_array(known, n_known);
	ks_collection_free_array(remote, n_remote);
	ks_dav_free(R.dav);
	close(lock_fd);
	*ret_damaged = R.damaged;
	return r < 0 ? r : failed;
}

/* A cache damaged in the middle opens fine and fails where a damaged page is read. Checking
 * every page at each open would cost a no-change run more than the run itself, so the check
 * is made when the cache answered -EUCLEAN: a damaged file is then set aside and the account
 * synced again from a new cache, which matches files and server items by UID and so
 * deletes nothing on either side. */
static int recover_cache(ks_engine *e)
{
	_cleanup_free_ char *db = NULL;
	struct stat seen;
	int r = ks_cache_check(e->cache);

	if (r != -EUCLEAN)
		return r;
	if (asprintf(&db, "%s/ksync.db", e->data_dir) < 0)
		return -ENOMEM;
	if (stat(db, &seen) < 0)
		return -errno;
	e->cache = ks_cache_free(e->cache);
	r = set_aside(db, &seen);
	if (r >= 0)
		r = ks_cache_open(db, &e->cache);
	return r < 0 ? r : 1;
}

int ks_sync_account(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o)
{
	run R = { .e = e, .acc = a, .o = o };
	bool damaged = false;
	int r = -EUCLEAN;

	if (e->cache)
		r = sync_account_once(e, a, o, true, &damaged);
	if (damaged) {
		int k = recover_cache(e);
		if (k > 0)
			r = sync_account_once(e, a, o, false, &damaged);
		else if (e->cache)
			emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, -EUCLEAN,
				  "the cache '%s/ksync.db' reported damage: %s", e->data_dir,
				  k < 0 ? strerror(-k) : "its check found none; run again");
	}
	if (!e->cache)
		emit_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
			  "the cache '%s/ksync.db' was set aside as damaged and a new one could not "
			  "be made", e->data_dir);
	return r;
}
