/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf_p.h"
#include "dav_p.h"
#include "discover_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "json_p.h"
#include "log_p.h"
#include "macro.h"
#include "manage_p.h"
#include "session_p.h"
#include "vdir_p.h"
#include "xml_p.h"
#include "text_p.h"

_Static_assert((int) KS_CALENDAR_EVENTS == (int) KS_COMP_VEVENT &&
	       (int) KS_CALENDAR_TASKS == (int) KS_COMP_VTODO &&
	       (int) KS_CALENDAR_JOURNALS == (int) KS_COMP_VJOURNAL, "component bits differ");

/* Attempts at a free name for a new collection before giving up. */
#define CREATE_ATTEMPTS 4
/* Largest displayname or color file read from a collection directory. */
#define META_MAX 4096

#define NS_DECL                                                                                \
	"xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" "                          \
	"xmlns:a=\"urn:ietf:params:xml:ns:carddav\" xmlns:ic=\"http://apple.com/ns/ical/\""

static const struct {
	unsigned bit;
	const char *name, *alias;
} comp_names[] = {
	{ KS_COMP_VEVENT, "VEVENT", "events" },
	{ KS_COMP_VTODO, "VTODO", "tasks" },
	{ KS_COMP_VJOURNAL, "VJOURNAL", "journals" },
};

int ks_calendar_components_parse(const char *const *names, unsigned *ret)
{
	unsigned bits = 0;

	assert(ret);
	for (size_t i = 0; names && names[i]; i++) {
		for (const char *p = names[i]; *p;) {
			size_t n;

			p += strspn(p, ", \t");
			n = strcspn(p, ", \t");
			if (n == 0)
				break;
			size_t j;
			for (j = 0; j < ELEMENTSOF(comp_names); j++)
				if ((strlen(comp_names[j].name) == n &&
				     strncasecmp(p, comp_names[j].name, n) == 0) ||
				    (strlen(comp_names[j].alias) == n &&
				     strncasecmp(p, comp_names[j].alias, n) == 0))
					break;
			if (j == ELEMENTSOF(comp_names))
				return -EINVAL;
			bits |= comp_names[j].bit;
			p += n;
		}
	}
	*ret = bits;
	return 0;
}

/* ---- names -------------------------------------------------------------------------------- */

/* ASCII for U+00C0..U+00FF; NULL for the two signs among them. */
static const char *const latin1_fold[64] = {
	"a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i",
	"d", "n", "o", "o", "o", "o", "o", NULL, "o", "u", "u", "u", "u", "y", "th", "ss",
	"a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i",
	"d", "n", "o", "o", "o", "o", "o", NULL, "o", "u", "u", "u", "u", "y", "th", "y",
};

/* The ASCII letters or digits that stand for the character at s (of *ret_len bytes), or
 * NULL when it is a separator. */
static const char *slug_piece(const unsigned char *s, size_t *ret_len, char ascii[2])
{
	size_t len = 1;

	if (*s < 0x80) {
		*ret_len = 1;
		if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')) {
			ascii[0] = (char) *s;
			return ascii;
		}
		if (*s >= 'A' && *s <= 'Z') {
			ascii[0] = (char) (*s - 'A' + 'a');
			return ascii;
		}
		return NULL;
	}
	if (*s >= 0xc2 && *s <= 0xdf)
		len = 2;
	else if (*s >= 0xe0 && *s <= 0xef)
		len = 3;
	else if (*s >= 0xf0 && *s <= 0xf4)
		len = 4;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80) {
			len = 1;
			break;
		}
	*ret_len = len;
	if (len != 2)
		return NULL;
	unsigned cp = ((unsigned) (s[0] & 0x1f) << 6) | (s[1] & 0x3f);
	if (cp >= 0xc0 && cp <= 0xff)
		return latin1_fold[cp - 0xc0];
	if (cp == 0x152 || cp == 0x153)
		return "oe";
	return NULL;
}

int ks_manage_slug(const char *name, const char *suffix, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	const unsigned char *s = (const unsigned char *) name;
	bool dash = false;
	int r = 0;

	assert(name && ret);
	while (*s) {
		char ascii[2] = "";
		size_t len;
		const char *piece = slug_piece(s, &len, ascii);

		s += len;
		if (!piece) {
			dash = true;
			continue;
		}
		size_t need = strlen(piece) + (dash && b.len > 0);
		if (b.len + need > KS_MANAGE_SLUG_MAX)
			break;
		if (dash && b.len > 0)
			r = ks_buf_puts(&b, "-");
		if (r >= 0)
			r = ks_buf_puts(&b, piece);
		if (r < 0)
			return r;
		dash = false;
	}
	if (suffix) {
		if (b.len > 0)
			r = ks_buf_puts(&b, "-");
		if (r >= 0)
			r = ks_buf_puts(&b, suffix);
		if (r < 0)
			return r;
	}
	char *out = ks_buf_steal(&b);
	if (!out)
		return -ENOMEM;
	*ret = out;
	return 0;
}

int ks_manage_uuid(char ret[37])
{
	unsigned char u[16];
	size_t got = 0;

	while (got < sizeof(u)) {
		ssize_t n = getrandom(u + got, sizeof(u) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t) n;
	}
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
	snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
	return 0;
}

/* "#RGB", "#RRGGBB" or "#RRGGBBAA" (surrounding blanks allowed) as "#RRGGBB". */
static int color_normalize(const char *in, char **ret)
{
	size_t n;

	in += strspn(in, " \t");
	n = strspn(in + (*in == '#'), "0123456789abcdefABCDEF");
	if (in[0] != '#' || (n != 3 && n != 6 && n != 8) || in[1 + n + strspn(in + 1 + n, " \t")])
		return -EINVAL;
	*ret = ks_vdir_color(in);
	return *ret ? 0 : -ENOMEM;
}

/* ---- request bodies ----------------------------------------------------------------------- */

static int put_element(ks_buf *b, const char *tag, const char *text)
{
	int r = ks_buf_printf(b, "<%s>", tag);

	if (r >= 0)
		r = ks_xml_escape(b, text);
	if (r >= 0)
		r = ks_buf_printf(b, "</%s>", tag);
	return r;
}

static char *take_body(ks_buf *b, int *r)
{
	char *s;

	if (*r < 0)
		return NULL;
	s = ks_buf_steal(b);
	if (!s)
		*r = -ENOMEM;
	return s;
}

int ks_manage_mkcol_body(const char *name, const char *description, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	int r;

	assert(name && ret);
	r = ks_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
			"<d:mkcol xmlns:d=\"DAV:\" xmlns:a=\"urn:ietf:params:xml:ns:carddav\">"
			"<d:set><d:prop><d:resourcetype><d:collection/><a:addressbook/>"
			"</d:resourcetype>");
	if (r >= 0)
		r = put_element(&b, "d:displayname", name);
	if (r >= 0 && description && *description)
		r = put_element(&b, "a:addressbook-description", description);
	if (r >= 0)
		r = ks_buf_puts(&b, "</d:prop></d:set></d:mkcol>\n");
	char *s = take_body(&b, &r);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

int ks_manage_mkcalendar_body(const char *name, unsigned components, const char *color,
			      char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	_cleanup_free_ char *col = NULL;
	int r;

	assert(name && ret);
	if (color) {
		r = color_normalize(color, &col);
		if (r < 0)
			return r;
	}
	r = ks_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
			"<c:mkcalendar xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" "
			"xmlns:ic=\"http://apple.com/ns/ical/\"><d:set><d:prop>");
	if (r >= 0)
		r = put_element(&b, "d:displayname", name);
	if (r >= 0 && components) {
		r = ks_buf_puts(&b, "<c:supported-calendar-component-set>");
		for (size_t i = 0; r >= 0 && i < ELEMENTSOF(comp_names); i++)
			if (components & comp_names[i].bit)
				r = ks_buf_printf(&b, "<c:comp name=\"%s\"/>", comp_names[i].name);
		if (r >= 0)
			r = ks_buf_puts(&b, "</c:supported-calendar-component-set>");
	}
	if (r >= 0 && col)
		r = put_element(&b, "ic:calendar-color", col);
	if (r >= 0)
		r = ks_buf_puts(&b, "</d:prop></d:set></c:mkcalendar>\n");
	char *s = take_body(&b, &r);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

int ks_manage_proppatch_body(bool calendar, const char *displayname, const char *description,
			     const char *color, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	_cleanup_free_ char *col = NULL;
	int r;

	assert(ret);
	if (!displayname && !description && !color)
		return -ENODATA;
	if (color) {
		r = color_normalize(color, &col);
		if (r < 0)
			return r;
	}
	r = ks_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
			"<d:propertyupdate " NS_DECL "><d:set><d:prop>");
	if (r >= 0 && displayname)
		r = put_element(&b, "d:displayname", displayname);
	if (r >= 0 && description)
		r = put_element(&b, calendar ? "c:calendar-description" : "a:addressbook-description",
				description);
	if (r >= 0 && col)
		r = put_element(&b, "ic:calendar-color", col);
	if (r >= 0)
		r = ks_buf_puts(&b, "</d:prop></d:set></d:propertyupdate>\n");
	char *s = take_body(&b, &r);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

/* ---- answers ------------------------------------------------------------------------------ */

const char *ks_manage_auth_message(void)
{
	return "the server refused the credentials (HTTP 401): check the username and the "
	       "password (for Infomaniak the username is the account id shown in the Manager, "
	       "such as AB12345, not the e-mail address); with two-factor authentication on, "
	       "the account password is refused: create an application password (Infomaniak: "
	       "in the Manager, under the account's security settings) and give that instead";
}

const char *ks_credentials_refused_message(void)
{
	return ks_manage_auth_message();
}

int ks_manage_create_result(bool calendar, long status, const char *body, const char *href,
			    char **ret_msg)
{
	const char *what = calendar ? "calendars" : "address books";
	const char *how = calendar ? "MKCALENDAR, RFC 4791" : "extended MKCOL, RFC 5689";
	char *msg = NULL;
	int r;

	assert(href && ret_msg);
	if (status >= 200 && status < 300 && status != 207)
		return 0;
	/* RFC 4791 and RFC 4918: a resource is already there. Radicale answers 409 with it,
	 * Xandikos 207, others 403. */
	if ((body && strstr(body, "resource-must-be-null")) || status == 405 || status == 409)
		return -EEXIST;

	switch (status) {
	case 401:
		r = -EACCES;
		msg = strdup(ks_manage_auth_message());
		break;
	case 403:
		r = -EACCES;
		if (body && strstr(body, "calendar-collection-location-ok"))
			r = asprintf(&msg, "the server does not allow a calendar at %s", href);
		else
			r = asprintf(&msg, "the server does not allow creating %s at %s "
				     "(read-only account?)", what, href);
		r = r < 0 ? -ENOMEM : -EACCES;
		break;
	case 415:
	case 501:
		r = asprintf(&msg, "the server does not support creating %s (%s; HTTP %ld)", what,
			     how, status) < 0 ? -ENOMEM : -EOPNOTSUPP;
		break;
	case 507:
		r = asprintf(&msg, "the server has no room for another collection at %s "
			     "(HTTP 507, quota?)", href) < 0 ? -ENOMEM : -ENOSPC;
		break;
	case 429:
	case 503:
		r = asprintf(&msg, "the server is busy (HTTP %ld); try again later", status) < 0
		    ? -ENOMEM : -EAGAIN;
		break;
	case 207:
		r = asprintf(&msg, "the server refused to create %s (HTTP 207 with errors)", href)
		    < 0 ? -ENOMEM : -EPROTO;
		break;
	default:
		if (status >= 500)
			r = asprintf(&msg, "the server failed to create %s (HTTP %ld)", href,
				     status) < 0 ? -ENOMEM : -EIO;
		else
			r = asprintf(&msg, "the server refused to create %s (HTTP %ld; does it "
				     "support %s?)", href, status, how) < 0 ? -ENOMEM : -EPROTO;
		break;
	}
	if (!msg)
		return -ENOMEM;
	*ret_msg = msg;
	return r;
}

/* ---- JSON --------------------------------------------------------------------------------- */

/* "VEVENT, VTODO" for messages. */
static void components_text(unsigned components, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = 0;
	for (size_t i = 0; i < ELEMENTSOF(comp_names) && n < size; i++)
		if (components & comp_names[i].bit)
			n += (size_t) snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
					       comp_names[i].name);
}

int ks_manage_json_components(ks_json_writer *w, unsigned components)
{
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < ELEMENTSOF(comp_names); i++)
		if (components & comp_names[i].bit)
			ks_json_write_string(w, comp_names[i].name);
	return ks_json_write_array_end(w);
}

static void strv_free_n(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* The directory names the first sync gives the collections: as each href says, with -2,
 * -3... after a name an earlier collection of its kind took (as the run names new ones).
 * ret[0..n) is the caller's to free with strv_free_n(). */
static int probe_dir_names(const ks_collection *cols, size_t n, char ***ret)
{
	char **v = calloc(n + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *base = NULL;
		int r = ks_vdir_collection_name(cols[i].href, &base);
		for (unsigned k = 1; r >= 0 && !v[i] && k < 1000; k++) {
			_cleanup_free_ char *name = NULL;
			bool taken = false;
			if (k == 1 ? !(name = strdup(base)) : asprintf(&name, "%s-%u", base, k) < 0) {
				r = -ENOMEM;
				break;
			}
			for (size_t j = 0; j < i && !taken; j++)
				taken = cols[j].kind == cols[i].kind && strcmp(v[j], name) == 0;
			if (!taken)
				v[i] = TAKE_PTR(name);
		}
		if (r >= 0 && !v[i])
			r = -EEXIST;
		if (r < 0) {
			strv_free_n(v, i);
			return r;
		}
	}
	*ret = v;
	return 0;
}

int ks_manage_probe_json(const char *name, const char *url, const char *principal,
			 const ks_collection *cols, size_t n, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	ks_json_writer w;
	int r;

	assert(ret);
	ks_json_writer_init(&w, &b, false);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "name");
	ks_json_write_string(&w, name);
	ks_json_write_key(&w, "url");
	ks_json_write_string(&w, url);
	ks_json_write_key(&w, "principal");
	ks_json_write_string(&w, principal);
	ks_json_write_key(&w, "collections");
	ks_json_write_array_begin(&w);
	char **dirs = NULL;
	r = probe_dir_names(cols, n, &dirs);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const ks_collection *c = &cols[i];

		ks_json_write_object_begin(&w);
		ks_json_write_key(&w, "href");
		ks_json_write_string(&w, c->href);
		ks_json_write_key(&w, "dir");
		ks_json_write_string(&w, dirs[i]);
		ks_json_write_key(&w, "kind");
		ks_json_write_string(&w, ks_collection_kind_to_string(c->kind));
		ks_json_write_key(&w, "displayname");
		ks_json_write_string(&w, c->displayname);
		ks_json_write_key(&w, "components");
		ks_manage_json_components(&w, c->kind == KS_COLLECTION_CALENDAR ? c->components : 0);
		ks_json_write_key(&w, "readonly");
		ks_json_write_bool(&w, c->readonly);
		ks_json_write_object_end(&w);
	}
	strv_free_n(dirs, n);
	ks_json_write_array_end(&w);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	char *s = take_body(&b, &r);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

/* ---- talking to the server ---------------------------------------------------------------- */

typedef struct session {
	ks_config *checked;		/* a validated copy of the account, alone */
	const ks_account_config *acc;	/* its account */
	ks_dav *dav;
	ks_cache_account homes;
} session;

static void session_done(session *s)
{
	ks_dav_free(s->dav);
	ks_config_free(s->checked);
	ks_cache_account_done(&s->homes);
}

/* given: the password to use (fetch), or NULL to send none. */
static int session_open(const ks_account_config *a, bool fetch, const char *given, session *s,
			char **reterr_msg)
{
	_cleanup_free_ char *why = NULL;
	int r;

	r = ks_config_check_account(a, &s->checked, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));
	s->acc = &s->checked->accounts[0];

	free(why);
	why = NULL;
	if (fetch)
		r = ks_session_new(s->acc, &s->dav, &why);
	else
		r = ks_session_new_with(s->acc, given, &s->dav, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));

	free(why);
	why = NULL;
	r = ks_discover(s->dav, s->acc->url, &s->homes, &why);
	if (r == -EACCES || r == -EPERM || r == -EOPNOTSUPP)
		return ks_set_error(reterr_msg, r, "%s", why ? why : ks_manage_auth_message());
	if (r < 0)
		return ks_set_error(reterr_msg, r, "discovery at %s failed: %s", s->acc->url,
			       why ? why : strerror(-r));
	return 0;
}

/* What a PROPFIND Depth 0 on one collection found. */
typedef struct readback {
	bool found;
	bool has_resourcetype;
	unsigned resourcetype;
	char *displayname, *color, *description;
	unsigned components;
	bool has_components;
} readback;

static void readback_done(readback *rb)
{
	free(rb->displayname);
	free(rb->color);
	free(rb->description);
	*rb = (readback) {};
}

static int on_readback(const ks_ms_response *m, void *userdata)
{
	readback *rb = userdata;

	if (rb->found || (m->status && (m->status < 200 || m->status >= 300)))
		return 0;
	rb->found = true;
	rb->has_resourcetype = m->has_resourcetype;
	rb->resourcetype = m->resourcetype;
	rb->components = m->components;
	rb->has_components = m->has_components;
	/* Xandikos answers 200 with an empty value for a property it does not keep. */
	if (m->displayname && *m->displayname && !(rb->displayname = strdup(m->displayname)))
		return -ENOMEM;
	/* A color that is not one (or no memory for it) counts as none. */
	rb->color = ks_vdir_color(m->color);
	if (m->description && *m->description && !(rb->description = strdup(m->description)))
		return -ENOMEM;
	return 0;
}

static const char propfind_readback[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<d:propfind " NS_DECL "><d:prop><d:resourcetype/><d:displayname/><ic:calendar-color/>"
	"<c:supported-calendar-component-set/><c:calendar-description/>"
	"<a:addressbook-description/></d:prop></d:propfind>\n";

/* PROPFIND Depth 0 on href: 1 and *rb filled when something is there, 0 when not (a 404,
 * or a multistatus whose response says 404, as Xandikos answers). */
static int stat_href(session *s, const char *href, readback *rb, char **reterr_msg)
{
	ks_dav_request req = {
		.method = "PROPFIND",
		.url = href,
		.depth = "0",
		.body = propfind_readback,
		.body_len = sizeof(propfind_readback) - 1,
		.on_response = on_readback,
		.userdata = rb,
	};
	int r;

	readback_done(rb);
	r = ks_dav_run_one(s->dav, &req);
	if (r == -ENOENT)
		r = 0;
	else if (r >= 0)
		r = rb->found;
	else if (req.status == 401)
		ks_set_error(reterr_msg, r, "%s", ks_manage_auth_message());
	else
		ks_set_error(reterr_msg, r, "cannot look at %s: %s", href,
			req.errmsg[0] ? req.errmsg : strerror(-r));
	ks_dav_request_done(&req);
	return r;
}

typedef struct create_spec {
	bool calendar;
	const char *name;
	const char *description;
	unsigned components;
	const char *color;	/* normalized */
	const char *body;
} create_spec;

/* Sends the MKCOL or MKCALENDAR; 0 created, -EEXIST, or an error with its message. */
static int send_create(session *s, const create_spec *c, const char *href, char **reterr_msg)
{
	ks_dav_request req = {
		.method = c->calendar ? "MKCALENDAR" : "MKCOL",
		.url = href,
		.body = c->body,
		.body_len = strlen(c->body),
	};
	char *msg = NULL;
	int r;

	r = ks_dav_run_one(s->dav, &req);
	if (req.status == 0 && r < 0) {
		ks_set_error(reterr_msg, r, "%s %s failed: %s", req.method, href,
			req.errmsg[0] ? req.errmsg : strerror(-r));
		ks_dav_request_done(&req);
		return r;
	}
	r = ks_manage_create_result(c->calendar, req.status, req.body_text, href, &msg);
	ks_log_debug("%s %s: HTTP %ld", req.method, href, req.status);
	ks_dav_request_done(&req);
	if (r < 0 && r != -EEXIST) {
		if (reterr_msg) {
			free(*reterr_msg);
			*reterr_msg = msg;
		} else
			free(msg);
	}
	return r;
}

/* Sets with PROPPATCH what the server left out of the new collection. */
static void complete_collection(session *s, const create_spec *c, const char *href,
				readback *rb)
{
	_cleanup_free_ char *body = NULL;
	const char *what = c->calendar ? "calendar" : "address book";
	bool want_desc = c->description && *c->description && !rb->description;
	bool want_color = c->color && !rb->color;
	bool want_name = !rb->displayname;

	if (ks_manage_proppatch_body(c->calendar, want_name ? c->name : NULL,
				     want_desc ? c->description : NULL,
				     want_color ? c->color : NULL, &body) >= 0) {
		readback dummy = {};
		ks_dav_request req = {
			.method = "PROPPATCH",
			.url = href,
			.body = body,
			.body_len = strlen(body),
			.on_response = on_readback,
			.userdata = &dummy,
		};

		(void) ks_dav_run_one(s->dav, &req);
		ks_log_debug("PROPPATCH %s: HTTP %ld", href, req.status);
		ks_dav_request_done(&req);
		readback_done(&dummy);
		if (stat_href(s, href, rb, NULL) <= 0)
			return;
	}
	if (want_name && !rb->displayname)
		ks_log(KS_LOG_NOTICE, "account '%s': the server did not keep the name '%s' of the "
		       "new %s %s", s->acc->name, c->name, what, href);
	if (want_desc && !rb->description)
		ks_log(KS_LOG_NOTICE, "account '%s': the server did not keep the description of "
		       "the new %s %s", s->acc->name, what, href);
	if (want_color && !rb->color)
		ks_log(KS_LOG_NOTICE, "account '%s': the server did not keep the color %s of the "
		       "new calendar %s", s->acc->name, c->color, href);
	if (c->calendar && c->components && rb->has_components &&
	    rb->components != c->components) {
		char want[64], got[64];

		components_text(c->components, want, sizeof(want));
		components_text(rb->components, got, sizeof(got));
		ks_log(KS_LOG_NOTICE, "account '%s': the server keeps its own component set (%s) "
		       "for the new calendar %s instead of %s", s->acc->name, got, href, want);
	}
}

/* -EEXIST when a collection of that kind in home already shows name (case aside), other than
 * except (NULL: none): two of one name cannot be told apart, and todoman refuses to start
 * with two lists of one name. */
static int refuse_taken_name(session *s, const char *home, bool calendar, const char *name,
			     const char *except, char **reterr_msg)
{
	_cleanup_free_ char *why = NULL;
	ks_collection *cols = NULL;
	size_t n = 0;
	int r = ks_list_home(s->dav, home, 0, &cols, &n, &why);

	if (r == -EACCES)
		return ks_set_error(reterr_msg, r, "%s", ks_manage_auth_message());
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		/* What comes next says better what is wrong with the home set. */
		ks_log_debug("cannot list %s to look for '%s': %s", home, name,
			     why ? why : strerror(-r));
		return 0;
	}
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const ks_collection *k = &cols[i];
		if ((k->kind == KS_COLLECTION_CALENDAR) != calendar || !k->displayname ||
		    strcasecmp(k->displayname, name) != 0 || (except && strcmp(k->href, except) == 0))
			continue;
		r = ks_set_error(reterr_msg, -EEXIST, "a%s %s called '%s' exists already (%s); "
				 "choose another name", calendar ? "" : "n",
				 calendar ? "calendar" : "address book", k->displayname, k->href);
	}
	ks_collection_free_array(cols, n);
	return r;
}

static int create_collection(const ks_account_config *a, const create_spec *c,
			     char **ret_href, char **reterr_msg)
{
	_cleanup_(session_done) session s = {};
	_cleanup_(readback_done) readback rb = {};
	_cleanup_free_ char *href = NULL;
	const char *what = c->calendar ? "calendar" : "address book";
	unsigned surprises = 0;
	int r;

	r = session_open(a, true, NULL, &s, reterr_msg);
	if (r < 0)
		return r;
	const char *home = c->calendar ? s.homes.calendar_home : s.homes.addressbook_home;
	if (!home)
		return ks_set_error(reterr_msg, -EOPNOTSUPP, "the server reports no %s for %s, so it "
			       "offers no %ss to this account",
			       c->calendar ? "calendar-home-set" : "addressbook-home-set",
			       s.homes.principal, what);
	r = refuse_taken_name(&s, home, c->calendar, c->name, NULL, reterr_msg);
	if (r < 0)
		return r;
	size_t hl = strlen(home);

	for (unsigned attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
		_cleanup_free_ char *slug = NULL;
		char uuid[37];

		r = ks_manage_uuid(uuid);
		if (r < 0)
			return ks_set_error(reterr_msg, r, "cannot get random bytes: %s", strerror(-r));
		/* A second try gets a suffix; a name without letters or digits a whole UUID. */
		uuid[8] = 0;
		r = ks_manage_slug(c->name, attempt ? uuid : NULL, &slug);
		if (r >= 0 && !*slug) {
			free(slug);
			slug = NULL;
			uuid[8] = '-';
			r = ks_manage_slug("", uuid, &slug);
		}
		if (r < 0)
			return r;
		free(href);
		if (asprintf(&href, "%s%s%s/", home, hl && home[hl - 1] == '/' ? "" : "/",
			     slug) < 0) {
			href = NULL;
			return -ENOMEM;
		}

		r = stat_href(&s, href, &rb, reterr_msg);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		r = send_create(&s, c, href, reterr_msg);
		if (r != -EEXIST)
			break;
		/* Free a moment ago and taken now: a race, once; twice, the server answers
		 * "exists" for another reason. */
		if (++surprises >= 2)
			return ks_set_error(reterr_msg, -EOPNOTSUPP, "the server answers that %s exists, "
				       "but it does not: it does not let this account create %ss "
				       "there", href, what);
	}
	if (r == -EEXIST || r > 0)
		return ks_set_error(reterr_msg, -EEXIST, "a collection already exists at %s (and at "
			       "%u other names tried)", href, CREATE_ATTEMPTS - 1);
	if (r < 0)
		return r;
	ks_log_debug("account '%s': created %s %s", s.acc->name, what, href);

	r = stat_href(&s, href, &rb, NULL);
	if (r > 0 && rb.found && rb.has_resourcetype &&
	    !(rb.resourcetype & (c->calendar ? KS_RT_CALENDAR : KS_RT_ADDRESSBOOK))) {
		/* It did not exist before this call, so removing it loses nothing. */
		ks_dav_request del = { .method = "DELETE", .url = href };

		(void) ks_dav_run_one(s.dav, &del);
		ks_dav_request_done(&del);
		return ks_set_error(reterr_msg, -EOPNOTSUPP, "the server made %s a plain collection, "
			       "not a%s %s: it does not support creating %ss (%s)", href,
			       c->calendar ? "" : "n", what, what,
			       c->calendar ? "MKCALENDAR, RFC 4791" : "extended MKCOL, RFC 5689");
	}
	if (r > 0)
		complete_collection(&s, c, href, &rb);
	if (ret_href)
		*ret_href = TAKE_PTR(href);
	return 0;
}

int ks_create_addressbook(const ks_account_config *a, const char *name, const char *description,
			  char **ret_href, char **reterr_msg)
{
	_cleanup_free_ char *body = NULL;
	int r;

	assert(a && name);
	if (!*name)
		return ks_set_error(reterr_msg, -EINVAL, "the name of the address book is empty");
	r = ks_manage_mkcol_body(name, description, &body);
	if (r == -EINVAL)
		return ks_set_error(reterr_msg, r, "the name or description holds characters that "
			       "cannot be sent (invalid UTF-8 or control characters)");
	if (r < 0)
		return r;
	create_spec c = { .name = name, .description = description, .body = body };
	return create_collection(a, &c, ret_href, reterr_msg);
}

int ks_create_calendar(const ks_account_config *a, const char *name, unsigned components,
		       const char *color, char **ret_href, char **reterr_msg)
{
	_cleanup_free_ char *body = NULL, *col = NULL;
	int r;

	assert(a && name);
	if (!*name)
		return ks_set_error(reterr_msg, -EINVAL, "the name of the calendar is empty");
	if (components & ~(unsigned) (KS_COMP_VEVENT | KS_COMP_VTODO | KS_COMP_VJOURNAL))
		return ks_set_error(reterr_msg, -EINVAL, "unknown calendar components 0x%x",
			       components);
	if (color && *color) {
		r = color_normalize(color, &col);
		if (r == -EINVAL)
			return ks_set_error(reterr_msg, r, "invalid color '%s'; use #RRGGBB", color);
		if (r < 0)
			return r;
	}
	r = ks_manage_mkcalendar_body(name, components, col, &body);
	if (r == -EINVAL)
		return ks_set_error(reterr_msg, r, "the name holds characters that cannot be sent "
			       "(invalid UTF-8 or control characters)");
	if (r < 0)
		return r;
	create_spec c = { .calendar = true, .name = name, .components = components, .color = col,
			  .body = body };
	return create_collection(a, &c, ret_href, reterr_msg);
}

int ks_rename_collection(const ks_account_config *a, const char *href, bool calendar,
			 const char *name, char **reterr_msg)
{
	_cleanup_(session_done) session s = {};
	_cleanup_(readback_done) readback rb = {};
	_cleanup_free_ char *body = NULL;
	const char *what = calendar ? "calendar" : "address book";
	int r;

	assert(a && href && name);
	if (!*name)
		return ks_set_error(reterr_msg, -EINVAL, "the new name is empty");
	r = ks_manage_proppatch_body(calendar, name, NULL, NULL, &body);
	if (r == -EINVAL)
		return ks_set_error(reterr_msg, r, "the name holds characters that cannot be sent "
				    "(invalid UTF-8 or control characters)");
	if (r < 0)
		return r;
	r = session_open(a, true, NULL, &s, reterr_msg);
	if (r < 0)
		return r;
	const char *home = calendar ? s.homes.calendar_home : s.homes.addressbook_home;
	if (home) {
		r = refuse_taken_name(&s, home, calendar, name, href, reterr_msg);
		if (r < 0)
			return r;
	}
	readback answer = {};
	ks_dav_request req = {
		.method = "PROPPATCH",
		.url = href,
		.body = body,
		.body_len = strlen(body),
		.on_response = on_readback,
		.userdata = &answer,
	};
	r = ks_dav_run_one(s.dav, &req);
	readback_done(&answer);
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "%s", req.status == 401 ? ks_manage_auth_message()
				 : req.errmsg[0] ? req.errmsg : strerror(-r));
		ks_dav_request_done(&req);
		return r;
	}
	ks_dav_request_done(&req);
	/* A 207 may refuse the property inside: what the server keeps is what counts. */
	r = stat_href(&s, href, &rb, reterr_msg);
	if (r < 0)
		return r;
	if (r == 0)
		return ks_set_error(reterr_msg, -ENOENT, "the %s %s is not on the server any more",
				    what, href);
	if (!rb.displayname || strcmp(rb.displayname, name) != 0)
		return ks_set_error(reterr_msg, -EOPNOTSUPP, "the server did not take the new name "
				    "of %s (it shows '%s')", href,
				    rb.displayname ? rb.displayname : "no name");
	ks_log_debug("account '%s': renamed %s %s to '%s'", s.acc->name, what, href, name);
	return 0;
}

int ks_delete_collection(const ks_account_config *a, const char *href, char **reterr_msg)
{
	_cleanup_(session_done) session s = {};
	int r;

	assert(a && href);
	r = session_open(a, true, NULL, &s, reterr_msg);
	if (r < 0)
		return r;
	ks_dav_request req = { .method = "DELETE", .url = href };
	r = ks_dav_run_one(s.dav, &req);
	if (r == -ENOENT)
		r = 0;	/* gone already */
	else if (r < 0 && req.status == 401)
		r = ks_set_error(reterr_msg, r, "%s", ks_manage_auth_message());
	else if (r < 0 && (req.status == 403 || req.status == 405))
		r = ks_set_error(reterr_msg, r, "the server does not let this account delete %s "
				 "(HTTP %ld)", href, req.status);
	else if (r < 0)
		r = ks_set_error(reterr_msg, r, "%s", req.errmsg[0] ? req.errmsg : strerror(-r));
	ks_dav_request_done(&req);
	if (r >= 0)
		ks_log_debug("account '%s': deleted %s", s.acc->name, href);
	return r;
}

static int probe(const ks_account_config *a, bool fetch, const char *password, char **ret_json,
		 char **reterr_msg)
{
	_cleanup_(session_done) session s = {};
	ks_collection *all = NULL;
	size_t n_all = 0;
	int r;

	assert(a && ret_json);
	r = session_open(a, fetch, password, &s, reterr_msg);
	if (r < 0)
		return r;

	const char *homes[2];
	size_t n_homes = ks_cache_account_homes(&s.homes, homes);
	for (size_t h = 0; r >= 0 && h < n_homes; h++) {
		_cleanup_free_ char *why = NULL;
		ks_collection *part = NULL;
		size_t n_part = 0;

		r = ks_list_home(s.dav, homes[h], 0, &part, &n_part, &why);
		if (r == -EACCES) {
			ks_set_error(reterr_msg, r, "%s", ks_manage_auth_message());
			break;
		}
		if (r < 0) {
			ks_set_error(reterr_msg, r, "cannot list %s: %s", homes[h],
				why ? why : strerror(-r));
			break;
		}
		r = ks_collection_append_array(&all, &n_all, part, n_part);
	}
	if (r >= 0)
		r = ks_manage_probe_json(s.acc->name, s.acc->url, s.homes.principal, all, n_all,
					 ret_json);
	ks_collection_free_array(all, n_all);
	return r;
}

int ks_probe_account(const ks_account_config *a, char **ret_json, char **reterr_msg)
{
	return probe(a, true, NULL, ret_json, reterr_msg);
}

int ks_probe_account_with(const ks_account_config *a, const char *password, char **ret_json,
			  char **reterr_msg)
{
	return probe(a, false, password, ret_json, reterr_msg);
}

/* "scheme://host:port" of url, lowercased, for comparing servers. */
static char *origin_of(const char *url)
{
	const char *p = strstr(url, "://");

	if (!p)
		return NULL;
	p += 3;
	char *o = strndup(url, (size_t) (p - url) + strcspn(p, "/?#"));
	for (char *c = o; o && *c; c++)
		*c = ks_ascii_lower(*c);
	return o;
}

int ks_probe_json_add_same_as(ks_engine *e, const ks_config *c, const char *url, char **json)
{
	_cleanup_(ks_json_freep) ks_json *tree = NULL;
	_cleanup_(ks_buf_done) ks_buf b = {};
	_cleanup_free_ char *origin = NULL;
	ks_json_writer w;
	int r;

	assert(e && c && url && json && *json);
	r = ks_json_parse(*json, strlen(*json), &tree, NULL);
	if (r == -ENOMEM)
		return r;
	const char *principal = r < 0 ? NULL : ks_json_get_string(tree, "principal");
	size_t len = strlen(*json);
	if (!principal || len < 2 || (*json)[len - 1] != '}')
		return -EBADMSG;
	origin = origin_of(url);
	if (!origin)
		return -ENOMEM;

	ks_json_writer_init(&w, &b, false);
	ks_json_write_array_begin(&w);
	for (size_t i = 0; i < c->n_accounts; i++) {
		const ks_account_config *a = &c->accounts[i];
		ks_cache_account known = {};
		_cleanup_free_ char *o = a->url ? origin_of(a->url) : NULL;

		if (!o || strcmp(o, origin) != 0)
			continue;
		if (ks_cache_get_account(e->cache, a->name, &known) < 0)
			continue;
		if (known.principal && strcmp(known.principal, principal) == 0)
			ks_json_write_string(&w, a->name);
		ks_cache_account_done(&known);
	}
	ks_json_write_array_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0)
		return r;
	char *out;
	/* The object's closing brace gives way to one more member. */
	if (asprintf(&out, "%.*s%s\"same_as\":%s}", (int) (len - 1), *json,
		     len > 2 ? "," : "", b.data) < 0)
		return -ENOMEM;
	free(*json);
	*json = out;
	return 0;
}

/* ---- configuration of the readers --------------------------------------------------------- */

/* configobj (khal, khard) reads a value in quotes without escapes. */
static int put_configobj_value(ks_buf *b, const char *s)
{
	const char *q = !strchr(s, '"') ? "\"" : !strchr(s, '\'') ? "'" : "\"\"\"";

	if (strstr(s, "\"\"\"") && strchr(s, '\''))
		return -EINVAL;
	return ks_buf_printf(b, "%s%s%s", q, s, q);
}

/* s inside a Python string literal for todoman's config.py; glob_escape puts the characters
 * glob() takes as patterns in brackets. */
static int put_python_chars(ks_buf *b, const char *s, bool glob_escape)
{
	int r = 0;

	for (const unsigned char *p = (const unsigned char *) s; r >= 0 && *p; p++) {
		if (*p == '"' || *p == '\\')
			r = ks_buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			r = ks_buf_printf(b, "\\x%02x", *p);
		else if (glob_escape && (*p == '*' || *p == '?' || *p == '['))
			r = ks_buf_printf(b, "[%c]", *p);
		else
			r = ks_buf_append(b, p, 1);
	}
	return r;
}

static int put_python_string(ks_buf *b, const char *s)
{
	int r = ks_buf_puts(b, "\"");

	if (r >= 0)
		r = put_python_chars(b, s, false);
	return r < 0 ? r : ks_buf_puts(b, "\"");
}

/* A displayname configobj can carry as a section name as it is. */
static bool section_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 200 || s[0] == ' ' || s[n - 1] == ' ')
		return false;
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7f || strchr("[]\"'#", *p))
			return false;
	return true;
}

/* Section names for the collections picked[0..n): the displayname where it is usable and
 * unique among them, else ACCOUNT/DIR, which is always unique. */
static int section_names(const ks_client_collection *const *picked, size_t n, char ***ret)
{
	char **names = calloc(n ? n : 1, sizeof(char *));
	bool *fallback = calloc(n ? n : 1, sizeof(bool));
	int r = 0;

	if (!names || !fallback) {
		free(names);
		free(fallback);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		fallback[i] = !picked[i]->displayname || !section_name_ok(picked[i]->displayname);
	for (bool changed = true; changed;) {
		changed = false;
		for (size_t i = 0; r >= 0 && i < n; i++) {
			free(names[i]);
			if (fallback[i])
				r = asprintf(&names[i], "%s/%s", picked[i]->account, picked[i]->dir);
			else
				r = (names[i] = strdup(picked[i]->displayname)) ? 0 : -1;
			if (r < 0) {
				names[i] = NULL;
				r = -ENOMEM;
			}
		}
		for (size_t i = 0; r >= 0 && i < n; i++)
			for (size_t j = i + 1; j < n; j++)
				if (strcasecmp(names[i], names[j]) == 0) {
					changed |= !fallback[i] || !fallback[j];
					fallback[i] = fallback[j] = true;
				}
		if (r < 0)
			break;
	}
	free(fallback);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return r;
	}
	*ret = names;
	return 0;
}

static int collection_path(const char *data_dir, const ks_client_collection *c, char **ret)
{
	if (c->path)
		return (*ret = strdup(c->path)) ? 0 : -ENOMEM;
	return asprintf(ret, "%s/%s/%s/%s", data_dir, c->calendar ? "calendars" : "contacts",
			c->account, c->dir) < 0 ? -ENOMEM : 0;
}

static int gen_khal(const char *data_dir, const ks_client_collection *const *cal, size_t n,
		    ks_buf *b)
{
	char **names = NULL;
	const char *def = NULL;
	int r;

	r = ks_buf_puts(b, "# khal: ~/.config/khal/config\n");
	if (r < 0)
		return r;
	if (n == 0)
		return ks_buf_puts(b, "# No calendar with events is synced yet.\n");
	r = section_names(cal, n, &names);
	if (r < 0)
		return r;
	r = ks_buf_puts(b, "[calendars]\n");
	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_free_ char *path = NULL;

		r = collection_path(data_dir, cal[i], &path);
		if (r >= 0)
			r = ks_buf_printf(b, "\n[[%s]]\npath = ", names[i]);
		if (r >= 0)
			r = put_configobj_value(b, path);
		/* auto: the color file in the directory, which follows the server's color. */
		if (r >= 0)
			r = ks_buf_puts(b, "\ntype = calendar\ncolor = auto\n");
		if (r >= 0 && cal[i]->readonly)
			r = ks_buf_puts(b, "readonly = True\n");
	}
	/* The default is where `khal new` writes: a calendar for events, rather one of events
	 * alone than a task list that takes events too. */
	for (size_t pass = 0; pass < 2 && !def; pass++)
		for (size_t i = 0; i < n && !def; i++)
			if ((cal[i]->components & KS_COMP_VEVENT) && !cal[i]->readonly &&
			    (pass == 1 || !(cal[i]->components & KS_COMP_VTODO)))
				def = names[i];
	if (r >= 0)
		r = ks_buf_puts(b, "\n[default]\n");
	if (r >= 0)
		r = ks_buf_printf(b, "%sdefault_calendar = %s\n", def ? "" : "# ",
				  def ? def : names[0]);
	/* Without formats khal takes the locale's, which `khal new` may then not parse. */
	if (r >= 0)
		r = ks_buf_puts(b, "\n[locale]\n"
				"# Dates as `khal new 2025-03-01 10:00 11:00 Title` takes them, in any "
				"locale:\n"
				"timeformat = %H:%M\n"
				"dateformat = %Y-%m-%d\n"
				"longdateformat = %Y-%m-%d\n"
				"datetimeformat = %Y-%m-%d %H:%M\n"
				"longdatetimeformat = %Y-%m-%d %H:%M\n"
				"# khal follows the system's time zone; to choose, e.g.:\n"
				"# firstweekday = 0\n"
				"# local_timezone = Europe/Zurich\n"
				"# default_timezone = Europe/Zurich\n");
	strv_free_n(names, n);
	return r;
}

static int gen_khard(const char *data_dir, const ks_client_collection *const *books, size_t n,
		     ks_buf *b)
{
	char **names = NULL;
	int r;

	r = ks_buf_puts(b, "# khard: ~/.config/khard/khard.conf\n");
	if (r < 0)
		return r;
	if (n == 0)
		return ks_buf_puts(b, "# No address book is synced yet.\n");
	r = section_names(books, n, &names);
	if (r < 0)
		return r;
	r = ks_buf_puts(b, "[addressbooks]\n");
	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_free_ char *path = NULL;

		r = collection_path(data_dir, books[i], &path);
		if (r >= 0)
			r = ks_buf_printf(b, "\n[[%s]]\npath = ", names[i]);
		if (r >= 0)
			r = put_configobj_value(b, path);
		if (r >= 0)
			r = ks_buf_puts(b, "\n");
	}
	if (r >= 0)
		r = ks_buf_puts(b, "\n[general]\ndefault_action = list\n");
	strv_free_n(names, n);
	return r;
}

/* todoman names a list after its displayname file, else its directory. */
static const char *todoman_name(const ks_client_collection *c)
{
	return c->displayname && *c->displayname ? c->displayname : c->dir;
}

/* s in a comment line: control characters, which would end it, as '?'. */
static int put_comment_text(ks_buf *b, const char *s)
{
	int r = 0;

	for (const unsigned char *p = (const unsigned char *) s; r >= 0 && *p; p++)
		r = ks_buf_append(b, *p < 0x20 || *p == 0x7f ? "?" : (const char *) p, 1);
	return r;
}

/* todoman refuses to start when two lists have the same name. */
static int todoman_duplicates(const ks_client_collection *const *lists, size_t n, ks_buf *b)
{
	bool header = false;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < n; i++) {
		bool first = true, earlier = false;

		for (size_t j = 0; j < i && !earlier; j++)
			earlier = strcmp(todoman_name(lists[i]), todoman_name(lists[j])) == 0;
		for (size_t j = i + 1; r >= 0 && !earlier && j < n; j++) {
			if (strcmp(todoman_name(lists[i]), todoman_name(lists[j])) != 0)
				continue;
			if (!header)
				r = ks_buf_puts(b, "# todoman needs a distinct name for each list; "
						"rename one of each group on the server:\n");
			header = true;
			if (r >= 0 && first) {
				r = ks_buf_puts(b, "#   \"");
				if (r >= 0)
					r = put_comment_text(b, todoman_name(lists[i]));
				if (r >= 0)
					r = ks_buf_printf(b, "\": %s/%s", lists[i]->account,
							  lists[i]->dir);
				first = false;
			}
			if (r >= 0)
				r = ks_buf_printf(b, ", %s/%s", lists[j]->account, lists[j]->dir);
		}
		if (r >= 0 && !first)
			r = ks_buf_puts(b, "\n");
	}
	return r;
}

/* Whether path is a directory right inside parent. */
static bool todoman_within(const char *path, const char *parent)
{
	size_t n = strlen(parent);
	return strncmp(path, parent, n) == 0 && path[n] == '/' && !strchr(path + n + 1, '/');
}

/* When a task list lives where ksync.conf put it: the directory holding the first such list,
 * which todoman's glob then names (NULL when every list is under the data directory). */
static int todoman_parent(const ks_client_collection *const *lists, size_t n, char **ret)
{
	*ret = NULL;
	for (size_t i = 0; i < n; i++) {
		if (!lists[i]->path)
			continue;
		const char *slash = strrchr(lists[i]->path, '/');
		*ret = strndup(lists[i]->path, (size_t) (slash - lists[i]->path));
		return *ret ? 0 : -ENOMEM;
	}
	return 0;
}

static int gen_todoman(const char *data_dir, const ks_client_collection *const *lists,
		       size_t n, bool all_calendars, ks_buf *b)
{
	const char *account = n ? lists[0]->account : NULL;
	const char *def = NULL;
	int r;

	r = ks_buf_puts(b, "# todoman: ~/.config/todoman/config.py\n");
	if (r < 0)
		return r;
	if (n == 0)
		return ks_buf_puts(b, "# No calendar with tasks is synced yet.\n");
	for (size_t i = 0; i < n; i++)
		if (account && strcmp(account, lists[i]->account) != 0)
			account = NULL;
	/* Where `todoman new` writes: a task list, rather one of tasks alone. */
	for (size_t pass = 0; pass < 2 && !def; pass++)
		for (size_t i = 0; i < n && !def; i++)
			if ((lists[i]->components & KS_COMP_VTODO) && !lists[i]->readonly &&
			    (pass == 1 || !(lists[i]->components & KS_COMP_VEVENT)))
				def = todoman_name(lists[i]);
	/* One glob for every list: all calendars, or those of the one account, or the
	 * directory ksync.conf put them in. */
	_cleanup_free_ char *parent = NULL;
	r = todoman_parent(lists, n, &parent);
	if (r < 0)
		return r;
	r = ks_buf_puts(b, "path = \"");
	if (r >= 0 && parent) {
		r = put_python_chars(b, parent, true);
		if (r >= 0)
			r = ks_buf_puts(b, "/*\"\n");
	} else {
		if (r >= 0)
			r = put_python_chars(b, data_dir, true);
		if (r >= 0)
			r = ks_buf_puts(b, "/calendars/");
		if (r >= 0 && !all_calendars && account) {
			r = put_python_chars(b, account, true);
			if (r >= 0)
				r = ks_buf_puts(b, "/*\"\n");
		} else if (r >= 0)
			r = ks_buf_puts(b, "*/*\"\n");
	}
	if (r >= 0 && (!all_calendars || parent))
		r = ks_buf_puts(b, "# (this may also match calendars without tasks, which todoman "
				"shows as empty lists)\n");
	for (size_t i = 0; r >= 0 && parent && i < n; i++) {
		_cleanup_free_ char *path = NULL;
		r = collection_path(data_dir, lists[i], &path);
		if (r >= 0 && !todoman_within(path, parent)) {
			r = ks_buf_puts(b, "# todoman takes one glob: the list in ");
			if (r >= 0)
				r = ks_buf_puts(b, path);
			if (r >= 0)
				r = ks_buf_puts(b, " is left out\n");
		}
	}
	if (r >= 0)
		r = todoman_duplicates(lists, n, b);
	if (r >= 0)
		r = ks_buf_printf(b, "%sdefault_list = ", def ? "" : "# ");
	if (r >= 0)
		r = put_python_string(b, def ? def : todoman_name(lists[0]));
	/* Without formats todoman takes the locale's, which `todoman new --due` may then not
	 * parse. */
	if (r >= 0)
		r = ks_buf_puts(b, "\n\n# Dates as `todoman new --due \"2025-03-01 10:00\" Title` takes "
				"them, in any locale:\n"
				"date_format = \"%Y-%m-%d\"\ntime_format = \"%H:%M\"\n"
				"dt_separator = \" \"\n");
	return r;
}

int ks_manage_clients_json(const char *data_dir, const ks_client_collection *cols, size_t n,
			   bool all_calendars, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf khal = {}, khard = {}, todoman = {}, out = {};
	_cleanup_free_ const ks_client_collection **cal = calloc(n ? n : 1, sizeof(*cal));
	_cleanup_free_ const ks_client_collection **books = calloc(n ? n : 1, sizeof(*books));
	_cleanup_free_ const ks_client_collection **lists = calloc(n ? n : 1, sizeof(*lists));
	_cleanup_free_ char *dir = NULL;
	size_t n_cal = 0, n_books = 0, n_lists = 0;
	int r;

	assert(data_dir && ret);
	if (!cal || !books || !lists)
		return -ENOMEM;
	dir = strdup(data_dir);
	if (!dir)
		return -ENOMEM;
	for (size_t l = strlen(dir); l > 1 && dir[l - 1] == '/'; l--)
		dir[l - 1] = 0;
	for (size_t i = 0; i < n; i++) {
		const ks_client_collection *c = &cols[i];
		unsigned comps = c->components ? c->components : ~0u;

		if (!c->account || !c->dir)
			return -EINVAL;
		if (!c->calendar)
			books[n_books++] = c;
		if (c->calendar && comps & KS_COMP_VEVENT)
			cal[n_cal++] = c;
		if (c->calendar && comps & KS_COMP_VTODO)
			lists[n_lists++] = c;
	}
	r = gen_khal(dir, cal, n_cal, &khal);
	if (r >= 0)
		r = gen_khard(dir, books, n_books, &khard);
	if (r >= 0)
		r = gen_todoman(dir, lists, n_lists, all_calendars, &todoman);
	if (r >= 0) {
		ks_json_writer w;

		ks_json_writer_init(&w, &out, false);
		ks_json_write_object_begin(&w);
		ks_json_write_key(&w, "khal");
		ks_json_write_string_len(&w, khal.data, khal.len);
		ks_json_write_key(&w, "khard");
		ks_json_write_string_len(&w, khard.data, khard.len);
		ks_json_write_key(&w, "todoman");
		ks_json_write_string_len(&w, todoman.data, todoman.len);
		ks_json_write_object_end(&w);
		r = ks_json_writer_finish(&w);
	}
	char *s = take_body(&out, &r);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

/* Collection directories found under data_dir, with the strings they point to. */
typedef struct found_dirs {
	ks_client_collection *c;
	size_t n, cap;
	char **strings;
	size_t n_strings, cap_strings;
} found_dirs;

static void found_dirs_done(found_dirs *f)
{
	strv_free_n(f->strings, f->n_strings);
	free(f->c);
	*f = (found_dirs) {};
}

/* Keeps s (owned) with f; returns it, or NULL when out of memory (s is then freed). */
static char *keep_string(found_dirs *f, char *s)
{
	if (!s)
		return NULL;
	if (f->n_strings == f->cap_strings) {
		size_t ncap = f->cap_strings ? f->cap_strings * 2 : 16;
		char **ns = reallocarray(f->strings, ncap, sizeof(*ns));
		if (!ns) {
			free(s);
			return NULL;
		}
		f->strings = ns;
		f->cap_strings = ncap;
	}
	f->strings[f->n_strings++] = s;
	return s;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The sorted names of the directories in dirfd/name that do not start with a dot (symbolic
 * links are not followed), and an fd of that directory. -ENOENT when it does not exist. */
static int list_dirs(int dirfd, const char *name, int *ret_fd, char ***ret, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0, cap = 0;
	int fd, dfd, r = 0;
	DIR *d;

	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		r = -errno;
		if (dfd >= 0)
			(void) close(dfd);
		(void) close(fd);
		return r;
	}
	for (struct dirent *de; r >= 0 && (de = readdir(d));) {
		struct stat st;

		if (de->d_name[0] == '.' ||
		    fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nv = reallocarray(v, ncap, sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[n] = strdup(de->d_name);
		if (!v[n])
			r = -ENOMEM;
		else
			n++;
	}
	closedir(d);
	if (r < 0) {
		strv_free_n(v, n);
		(void) close(fd);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_names);
	*ret_fd = fd;
	*ret = v;
	*ret_n = n;
	return 0;
}

/* The first line of a small metadata file, or NULL. */
static char *read_meta(int dirfd, const char *name)
{
	_cleanup_free_ char *s = NULL;

	if (ks_fs_read_file(dirfd, name, META_MAX, &s, NULL) < 0)
		return NULL;
	s[strcspn(s, "\r\n")] = 0;
	return TAKE_PTR(s);
}

static int scan_kind(int top, const ks_config *c, bool calendar, found_dirs *f,
		     char **reterr_msg, const char *data_dir)
{
	const char *kind = calendar ? "calendars" : "contacts";
	char **accounts = NULL;
	size_t n_accounts = 0;
	int kind_fd = -1, r;

	r = list_dirs(top, kind, &kind_fd, &accounts, &n_accounts);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot read %s/%s: %s", data_dir, kind,
			       strerror(-r));
	for (size_t i = 0; r >= 0 && i < n_accounts; i++) {
		const char *acc = accounts[i];
		char **dirs = NULL;
		size_t n_dirs = 0;
		int acc_fd = -1;

		if (c && !ks_config_find_account(c, acc))
			continue;
		r = list_dirs(kind_fd, acc, &acc_fd, &dirs, &n_dirs);
		if (r < 0) {
			ks_set_error(reterr_msg, r, "cannot read %s/%s/%s: %s", data_dir, kind, acc,
				strerror(-r));
			break;
		}
		char *acc_copy = keep_string(f, strdup(acc));
		if (!acc_copy)
			r = -ENOMEM;
		for (size_t j = 0; r >= 0 && j < n_dirs; j++) {
			int fd = openat(acc_fd, dirs[j], O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					O_CLOEXEC);
			char *name = NULL, *color = NULL;
			char *dn = keep_string(f, strdup(dirs[j]));

			if (fd >= 0) {
				char *raw = read_meta(fd, "displayname");
				name = raw ? ks_vdir_displayname(raw) : NULL;
				free(raw);
				raw = read_meta(fd, "color");
				color = raw ? ks_vdir_color(raw) : NULL;
				free(raw);
				(void) close(fd);
			}
			name = keep_string(f, name);
			color = keep_string(f, color);
			if (!dn) {
				r = -ENOMEM;
				break;
			}
			if (f->n == f->cap) {
				size_t ncap = f->cap ? f->cap * 2 : 16;
				ks_client_collection *nc = reallocarray(f->c, ncap, sizeof(*nc));
				if (!nc) {
					r = -ENOMEM;
					break;
				}
				f->c = nc;
				f->cap = ncap;
			}
			f->c[f->n++] = (ks_client_collection) {
				.account = acc_copy,
				.dir = dn,
				.calendar = calendar,
				.displayname = name && *name ? name : NULL,
				.color = color,
			};
		}
		strv_free_n(dirs, n_dirs);
		(void) close(acc_fd);
	}
	strv_free_n(accounts, n_accounts);
	(void) close(kind_fd);
	return r;
}

int ks_clients_config(const ks_config *c, const char *data_dir, const ks_client_collection *cols,
		      size_t n_cols, char **ret_json, char **reterr_msg)
{
	_cleanup_(found_dirs_done) found_dirs f = {};
	int top, r;

	assert(data_dir && ret_json);
	if (data_dir[0] != '/')
		return ks_set_error(reterr_msg, -EINVAL, "the data directory '%s' is not an absolute "
			       "path", data_dir);
	for (const char *p = data_dir; *p; p++)
		if ((unsigned char) *p < 0x20)
			return ks_set_error(reterr_msg, -EINVAL, "the data directory's path holds a "
				       "control character");
	top = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0 && errno != ENOENT) {
		r = -errno;
		return ks_set_error(reterr_msg, r, "cannot open %s: %s", data_dir, strerror(-r));
	}
	r = 0;
	if (top >= 0) {
		r = scan_kind(top, cols ? NULL : c, true, &f, reterr_msg, data_dir);
		if (r >= 0 && !cols)
			r = scan_kind(top, c, false, &f, reterr_msg, data_dir);
		(void) close(top);
	}
	if (r < 0)
		return r;

	bool all_calendars = true;
	if (cols) {
		/* Is every calendar directory on disk one that todoman should read? */
		for (size_t i = 0; all_calendars && i < f.n; i++) {
			bool listed = false;

			for (size_t j = 0; !listed && j < n_cols; j++)
				listed = cols[j].calendar && cols[j].account && cols[j].dir &&
					 strcmp(cols[j].account, f.c[i].account) == 0 &&
					 strcmp(cols[j].dir, f.c[i].dir) == 0 &&
					 (!cols[j].components ||
					  cols[j].components & KS_COMP_VTODO);
			all_calendars = listed;
		}
		return ks_manage_clients_json(data_dir, cols, n_cols, all_calendars, ret_json);
	}
	/* Without a config every account on disk is taken; with one, the glob must not reach
	 * the directories of accounts left out. */
	if (c) {
		_cleanup_(found_dirs_done) found_dirs every = {};

		top = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (top >= 0) {
			r = scan_kind(top, NULL, true, &every, reterr_msg, data_dir);
			(void) close(top);
		}
		if (r < 0)
			return r;
		size_t n_cal = 0;
		for (size_t i = 0; i < f.n; i++)
			n_cal += f.c[i].calendar;
		all_calendars = every.n == n_cal;
	}
	return ks_manage_clients_json(data_dir, f.c, f.n, all_calendars, ret_json);
}
