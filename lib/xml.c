/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>

#include "buf_p.h"
#include "limits.h"
#include "macro.h"
#include "xml_p.h"

/* A libxml2 SAX2 push parser fed straight from the HTTP body. Per-response state lives in
 * buffers that are reset, not freed, between responses, so memory follows the largest response
 * rather than the number of them. Elements are identified by (namespace URI, local name) and
 * their position under multistatus/response/propstat/prop.
 *
 * A calendar-data or address-data past KS_CARD_MAX fails the whole body with -EFBIG instead of
 * skipping the item: the response struct has no way to say "this one was dropped", an item
 * missing from a multiget is retried rather than taken as deleted, and so a silent skip would
 * be fetched again forever. The caller sees the cause and can fetch items one by one. */

#define NS_DAV "DAV:"
#define NS_CALDAV "urn:ietf:params:xml:ns:caldav"
#define NS_CARDDAV "urn:ietf:params:xml:ns:carddav"
#define NS_CS "http://calendarserver.org/ns/"
#define NS_APPLE "http://apple.com/ns/ical/"

/* libxml2 is handed at most this much per xmlParseChunk() call: its "huge input lookup" guard
 * counts unparsed bytes, so a caller passing a whole large body at once would otherwise trip it,
 * and an error raised in a callback is acted on before the next piece is parsed. */
#define FEED_STEP (64 * 1024)

/* A data buffer grown past this by one big item is freed after its response rather than kept
 * for the rest of the body. */
#define DATA_KEEP_MAX (256 * 1024)

#define XML_WS " \t\r\n"

/* An XML declaration longer than this is refused: it has no reason to be. */
#define PROLOG_MAX 256

enum {
	EL_OTHER,
	EL_MULTISTATUS,
	EL_RESPONSE,
	EL_HREF,
	EL_STATUS,
	EL_PROPSTAT,
	EL_PROP,
	EL_SYNC_TOKEN,
	EL_GETETAG,
	EL_DISPLAYNAME,
	EL_RESOURCETYPE,
	EL_COLLECTION,
	EL_PRINCIPAL,
	EL_CURRENT_USER_PRINCIPAL,
	EL_CURRENT_USER_PRIVILEGE_SET,
	EL_PRIVILEGE,
	EL_READ,
	EL_WRITE,
	EL_WRITE_CONTENT,
	EL_BIND,
	EL_UNBIND,
	EL_ALL,
	EL_SUPPORTED_REPORT_SET,
	EL_SUPPORTED_REPORT,
	EL_REPORT,
	EL_SYNC_COLLECTION,
	EL_CALENDAR,
	EL_CALENDAR_HOME_SET,
	EL_CALENDAR_DESCRIPTION,
	EL_CALENDAR_DATA,
	EL_SUPPORTED_CALENDAR_COMPONENT_SET,
	EL_COMP,
	EL_ADDRESSBOOK,
	EL_ADDRESSBOOK_HOME_SET,
	EL_ADDRESSBOOK_DESCRIPTION,
	EL_ADDRESS_DATA,
	EL_SUPPORTED_ADDRESS_DATA,
	EL_GETCTAG,
	EL_CALENDAR_COLOR,
};

typedef struct element_name {
	const char *name;
	uint8_t id;
} element_name;

static const element_name dav_elements[] = {
	{ "multistatus", EL_MULTISTATUS },
	{ "response", EL_RESPONSE },
	{ "href", EL_HREF },
	{ "status", EL_STATUS },
	{ "propstat", EL_PROPSTAT },
	{ "prop", EL_PROP },
	{ "sync-token", EL_SYNC_TOKEN },
	{ "getetag", EL_GETETAG },
	{ "displayname", EL_DISPLAYNAME },
	{ "resourcetype", EL_RESOURCETYPE },
	{ "collection", EL_COLLECTION },
	{ "principal", EL_PRINCIPAL },
	{ "current-user-principal", EL_CURRENT_USER_PRINCIPAL },
	{ "current-user-privilege-set", EL_CURRENT_USER_PRIVILEGE_SET },
	{ "privilege", EL_PRIVILEGE },
	{ "read", EL_READ },
	{ "write", EL_WRITE },
	{ "write-content", EL_WRITE_CONTENT },
	{ "bind", EL_BIND },
	{ "unbind", EL_UNBIND },
	{ "all", EL_ALL },
	{ "supported-report-set", EL_SUPPORTED_REPORT_SET },
	{ "supported-report", EL_SUPPORTED_REPORT },
	{ "report", EL_REPORT },
	{ "sync-collection", EL_SYNC_COLLECTION },
};

static const element_name caldav_elements[] = {
	{ "calendar", EL_CALENDAR },
	{ "calendar-home-set", EL_CALENDAR_HOME_SET },
	{ "calendar-description", EL_CALENDAR_DESCRIPTION },
	{ "calendar-data", EL_CALENDAR_DATA },
	{ "supported-calendar-component-set", EL_SUPPORTED_CALENDAR_COMPONENT_SET },
	{ "comp", EL_COMP },
};

static const element_name carddav_elements[] = {
	{ "addressbook", EL_ADDRESSBOOK },
	{ "addressbook-home-set", EL_ADDRESSBOOK_HOME_SET },
	{ "addressbook-description", EL_ADDRESSBOOK_DESCRIPTION },
	{ "address-data", EL_ADDRESS_DATA },
	{ "supported-address-data", EL_SUPPORTED_ADDRESS_DATA },
};

static const element_name cs_elements[] = {
	{ "getctag", EL_GETCTAG },
};

static const element_name apple_elements[] = {
	{ "calendar-color", EL_CALENDAR_COLOR },
};

/* The string properties of a response, in the order of ks_ms_response's fields. */
enum {
	F_ETAG,
	F_DISPLAYNAME,
	F_COLOR,
	F_SYNC_TOKEN,
	F_CTAG,
	F_PRINCIPAL,
	F_CALENDAR_HOME,
	F_ADDRESSBOOK_HOME,
	F_DESCRIPTION,
	F_DATA,
	_F_MAX,
};

/* The non-string properties gathered from one propstat. */
typedef struct prop_flags {
	unsigned resourcetype;
	unsigned components;
	unsigned privileges;
	bool has_resourcetype;
	bool has_components;
	bool has_privileges;
	bool has_report_set;
	bool has_sync_report;
	bool vcard4;
} prop_flags;

/* The thread's libxml2 error handlers, saved while ours are installed. */
typedef struct error_handlers {
	xmlStructuredErrorFunc serror;
	void *serror_ctx;
	xmlGenericErrorFunc gerror;
	void *gerror_ctx;
} error_handlers;

struct ks_ms_parser {
	xmlParserCtxtPtr ctxt;
	ks_ms_response_fn fn;
	void *userdata;
	int r;			/* first error, sticky */
	bool finished;
	bool root_done;
	size_t count;
	error_handlers saved;

	unsigned depth;
	uint8_t stack[KS_XML_MAX_DEPTH + 1];	/* element ids by depth; [0] unused */

	/* Where character data goes: the buffer, and the depth of the element owning it. */
	ks_buf *text;
	unsigned text_depth;
	bool text_trim;
	bool text_is_data;
	bool cdata_cr;		/* the last CDATA piece ended in CR */

	/* The current <response>. */
	ks_buf href;
	bool has_href;
	ks_buf status;
	bool has_status;
	ks_buf val[_F_MAX];
	bool val_set[_F_MAX];
	prop_flags flags;

	/* The current <propstat>, committed into the above at its end when its status is 2xx. */
	ks_buf ps_status;
	bool ps_has_status;
	ks_buf pend[_F_MAX];
	bool pend_set[_F_MAX];
	prop_flags pend_flags;

	ks_buf sync_token;
	bool has_sync_token;

	/* The start of the body, held back until the XML declaration is complete. */
	char prolog[PROLOG_MAX];
	size_t prolog_len;
	bool prolog_done;

	char why[200];		/* what made the first error, for messages */
};

KS_DEFINE_CLEANUP(ks_ms_parser, ks_ms_parser_free);

static uint8_t element_id(const xmlChar *uri, const xmlChar *localname)
{
	const element_name *t;
	size_t n;

	if (!uri)
		return EL_OTHER;
	if (strcmp((const char *) uri, NS_DAV) == 0) {
		t = dav_elements;
		n = ELEMENTSOF(dav_elements);
	} else if (strcmp((const char *) uri, NS_CALDAV) == 0) {
		t = caldav_elements;
		n = ELEMENTSOF(caldav_elements);
	} else if (strcmp((const char *) uri, NS_CARDDAV) == 0) {
		t = carddav_elements;
		n = ELEMENTSOF(carddav_elements);
	} else if (strcmp((const char *) uri, NS_CS) == 0) {
		t = cs_elements;
		n = ELEMENTSOF(cs_elements);
	} else if (strcmp((const char *) uri, NS_APPLE) == 0) {
		t = apple_elements;
		n = ELEMENTSOF(apple_elements);
	} else
		return EL_OTHER;

	for (size_t i = 0; i < n; i++)
		if (strcmp((const char *) localname, t[i].name) == 0)
			return t[i].id;
	return EL_OTHER;
}

static void errors_ignore(void *ctx, const char *msg, ...)
{
}

static void sax_error(void *userdata, xmlErrorPtr e);

/* Errors libxml2 raises without a parser context (encoding conversion, allocation) go to the
 * thread's handlers, which print to stderr by default; ours are installed only while libxml2
 * runs on our behalf, so nothing outside this parser sees a change. */
static void errors_capture(ks_ms_parser *p)
{
	p->saved = (error_handlers) {
		.serror = xmlStructuredError,
		.serror_ctx = xmlStructuredErrorContext,
		.gerror = xmlGenericError,
		.gerror_ctx = xmlGenericErrorContext,
	};
	xmlSetStructuredErrorFunc(p, sax_error);
	xmlSetGenericErrorFunc(p, errors_ignore);
}

static void errors_release(ks_ms_parser *p)
{
	xmlSetStructuredErrorFunc(p->saved.serror_ctx, p->saved.serror);
	xmlSetGenericErrorFunc(p->saved.gerror_ctx, p->saved.gerror);
}

static void parser_fail_why(ks_ms_parser *p, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void parser_fail(ks_ms_parser *p, int r)
{
	assert(r < 0);
	if (p->r >= 0)
		p->r = r;
	p->text = NULL;
	/* Not xmlStopParser(): in libxml2 2.9 it frees the input buffer, which the libxml2 frame
	 * that called us goes on reading after we return. Ending the state machine and the SAX
	 * events by hand stops the parse just the same and leaves that memory alive. */
	if (p->ctxt) {
		p->ctxt->disableSAX = 1;
		p->ctxt->instate = XML_PARSER_EOF;
	}
}

static void parser_fail_why(ks_ms_parser *p, int r, const char *fmt, ...)
{
	va_list ap;

	if (p->r >= 0 && !p->why[0]) {
		va_start(ap, fmt);
		vsnprintf(p->why, sizeof(p->why), fmt, ap);
		va_end(ap);
	}
	parser_fail(p, r);
}

static void sax_error(void *userdata, xmlErrorPtr e)
{
	ks_ms_parser *p = userdata;

	if (!p || !e || e->level < XML_ERR_ERROR)
		return;
	size_t n = e->message ? strcspn(e->message, "\n") : 0;
	parser_fail_why(p, e->code == XML_ERR_NO_MEMORY ? -ENOMEM : -EBADMSG, "%.*s (line %d)",
			(int) KS_MIN(n, (size_t) 120), e->message ? e->message : "", e->line);
}

static void sax_internal_subset(void *userdata, const xmlChar *name, const xmlChar *external_id,
				const xmlChar *system_id)
{
	/* A multistatus never needs a DTD; refusing any DOCTYPE is what keeps entity
	 * declarations, expansion bombs and external entities out entirely. */
	parser_fail_why(userdata, -EBADMSG, "a DOCTYPE declaration");
}

/* "HTTP/1.1 200 OK", "HTTP/2 200", "HTTP/1.1 404": the status code, or -EBADMSG. */
static int parse_status_line(const char *s)
{
	s += strspn(s, XML_WS);
	if (strncasecmp(s, "HTTP/", 5) == 0) {
		s += 5;
		s += strcspn(s, XML_WS);
		s += strspn(s, XML_WS);
	}
	for (unsigned i = 0; i < 3; i++)
		if (s[i] < '0' || s[i] > '9')
			return -EBADMSG;
	if (s[3] && !strchr(XML_WS, s[3]))
		return -EBADMSG;
	int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	if (code < 100 || code > 599)
		return -EBADMSG;
	return code;
}

static void text_trim(ks_buf *b)
{
	if (!b->data)
		return;
	size_t start = strspn(b->data, XML_WS);
	size_t end = b->len;
	while (end > start && strchr(XML_WS, b->data[end - 1]))
		end--;
	if (start > 0)
		memmove(b->data, b->data + start, end - start);
	b->len = end - start;
	b->data[b->len] = 0;
}

static void text_begin(ks_ms_parser *p, ks_buf *b, bool is_data)
{
	ks_buf_reset(b);
	p->text = b;
	p->text_depth = p->depth;
	p->text_trim = !is_data;
	p->text_is_data = is_data;
}

static void pend_begin(ks_ms_parser *p, unsigned f)
{
	p->pend_set[f] = true;
	text_begin(p, &p->pend[f], f == F_DATA);
}

static void response_reset(ks_ms_parser *p)
{
	ks_buf_reset(&p->href);
	ks_buf_reset(&p->status);
	p->has_href = p->has_status = false;
	for (unsigned f = 0; f < _F_MAX; f++) {
		ks_buf_reset(&p->val[f]);
		p->val_set[f] = false;
	}
	p->flags = (prop_flags) {};

	/* One large calendar object must not pin its buffer for the rest of a long body. */
	if (p->val[F_DATA].cap > DATA_KEEP_MAX)
		ks_buf_done(&p->val[F_DATA]);
	if (p->pend[F_DATA].cap > DATA_KEEP_MAX)
		ks_buf_done(&p->pend[F_DATA]);
}

static void propstat_begin(ks_ms_parser *p)
{
	p->ps_has_status = false;
	ks_buf_reset(&p->ps_status);
	for (unsigned f = 0; f < _F_MAX; f++)
		p->pend_set[f] = false;
	p->pend_flags = (prop_flags) {};
}

static int propstat_end(ks_ms_parser *p)
{
	/* RFC 4918 requires the status; a server leaving it out means its props are there. */
	int code = 200;

	if (p->ps_has_status) {
		code = parse_status_line(p->ps_status.data ? p->ps_status.data : "");
		if (code < 0)
			return code;
	}
	if (code < 200 || code > 299)
		return 0;

	for (unsigned f = 0; f < _F_MAX; f++) {
		if (!p->pend_set[f])
			continue;
		/* Swapping keeps both allocations for reuse instead of copying a big item. */
		ks_buf t = p->val[f];
		p->val[f] = p->pend[f];
		p->pend[f] = t;
		p->val_set[f] = true;
	}
	const prop_flags *n = &p->pend_flags;
	p->flags.resourcetype |= n->resourcetype;
	p->flags.components |= n->components;
	p->flags.privileges |= n->privileges;
	p->flags.has_resourcetype |= n->has_resourcetype;
	p->flags.has_components |= n->has_components;
	p->flags.has_privileges |= n->has_privileges;
	p->flags.has_report_set |= n->has_report_set;
	p->flags.has_sync_report |= n->has_sync_report;
	p->flags.vcard4 |= n->vcard4;
	return 0;
}

static const char *buf_str(const ks_buf *b)
{
	return b->data ? b->data : "";
}

static const char *val_str(const ks_ms_parser *p, unsigned f)
{
	return p->val_set[f] ? buf_str(&p->val[f]) : NULL;
}

/* An ETag goes back to the server in an If-Match header: one with a control character other
 * than a tab (a CR LF would start a header line of the server's choosing) is no usable ETag. */
static const char *etag_str(const ks_ms_parser *p)
{
	const char *e = val_str(p, F_ETAG);

	for (const unsigned char *c = (const unsigned char *) e; c && *c; c++)
		if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
			return NULL;
	return e;
}

static int response_end(ks_ms_parser *p)
{
	int r;

	/* Callers rely on every response naming its resource. */
	if (!p->has_href)
		return -EBADMSG;

	int status = 0;
	if (p->has_status) {
		status = parse_status_line(buf_str(&p->status));
		if (status < 0)
			return status;
	}

	ks_ms_response resp = {
		.href = buf_str(&p->href),
		.status = status,
		.etag = etag_str(p),
		.displayname = val_str(p, F_DISPLAYNAME),
		.color = val_str(p, F_COLOR),
		.sync_token = val_str(p, F_SYNC_TOKEN),
		.ctag = val_str(p, F_CTAG),
		.principal = val_str(p, F_PRINCIPAL),
		.calendar_home = val_str(p, F_CALENDAR_HOME),
		.addressbook_home = val_str(p, F_ADDRESSBOOK_HOME),
		.description = val_str(p, F_DESCRIPTION),
		.data = val_str(p, F_DATA),
		.data_len = p->val_set[F_DATA] ? p->val[F_DATA].len : 0,
		.resourcetype = p->flags.resourcetype,
		.components = p->flags.components,
		.privileges = p->flags.privileges,
		.has_resourcetype = p->flags.has_resourcetype,
		.has_components = p->flags.has_components,
		.has_privileges = p->flags.has_privileges,
		.has_report_set = p->flags.has_report_set,
		.has_sync_report = p->flags.has_sync_report,
		.vcard4 = p->flags.vcard4,
	};

	p->count++;
	/* The callback may use libxml2 itself; it must see the handlers its thread had. */
	errors_release(p);
	r = p->fn(&resp, p->userdata);
	errors_capture(p);
	response_reset(p);
	return r < 0 ? r : 0;
}

static unsigned component_bit(const xmlChar **attrs, int n_attrs)
{
	static const struct {
		const char *name;
		unsigned bit;
	} comps[] = {
		{ "VEVENT", KS_COMP_VEVENT },
		{ "VTODO", KS_COMP_VTODO },
		{ "VJOURNAL", KS_COMP_VJOURNAL },
	};

	/* SAX2 passes each attribute as localname, prefix, URI, value, end of value. */
	for (int i = 0; i < n_attrs; i++) {
		const xmlChar **a = attrs + 5 * i;
		if (a[2] || strcmp((const char *) a[0], "name") != 0)
			continue;
		size_t len = (size_t) (a[4] - a[3]);
		for (size_t j = 0; j < ELEMENTSOF(comps); j++)
			if (strlen(comps[j].name) == len &&
			    strncasecmp((const char *) a[3], comps[j].name, len) == 0)
				return comps[j].bit;
	}
	return 0;
}

static unsigned privilege_bits(uint8_t id)
{
	switch (id) {
	case EL_READ:
		return KS_PRIV_READ;
	case EL_ALL:
		return KS_PRIV_READ | KS_PRIV_WRITE | KS_PRIV_WRITE_CONTENT | KS_PRIV_BIND |
		       KS_PRIV_UNBIND;
	case EL_WRITE:
		/* RFC 3744 3.2: DAV:write aggregates write-content, bind and unbind. */
		return KS_PRIV_WRITE | KS_PRIV_WRITE_CONTENT | KS_PRIV_BIND | KS_PRIV_UNBIND;
	case EL_WRITE_CONTENT:
		return KS_PRIV_WRITE_CONTENT;
	case EL_BIND:
		return KS_PRIV_BIND;
	case EL_UNBIND:
		return KS_PRIV_UNBIND;
	default:
		return 0;
	}
}

static unsigned resourcetype_bit(uint8_t id)
{
	switch (id) {
	case EL_COLLECTION:
		return KS_RT_COLLECTION;
	case EL_CALENDAR:
		return KS_RT_CALENDAR;
	case EL_ADDRESSBOOK:
		return KS_RT_ADDRESSBOOK;
	case EL_PRINCIPAL:
		return KS_RT_PRINCIPAL;
	default:
		return 0;
	}
}

/* An element inside multistatus/response/propstat/prop, at depth 5 (the property) or deeper. */
static void property_start(ks_ms_parser *p, uint8_t id, const xmlChar **attrs, int n_attrs)
{
	unsigned d = p->depth;
	uint8_t parent = p->stack[d - 1];
	prop_flags *fl = &p->pend_flags;

	if (d == 5) {
		switch (id) {
		case EL_GETETAG:
			pend_begin(p, F_ETAG);
			break;
		case EL_DISPLAYNAME:
			pend_begin(p, F_DISPLAYNAME);
			break;
		case EL_CALENDAR_COLOR:
			pend_begin(p, F_COLOR);
			break;
		case EL_SYNC_TOKEN:
			pend_begin(p, F_SYNC_TOKEN);
			break;
		case EL_GETCTAG:
			pend_begin(p, F_CTAG);
			break;
		case EL_CALENDAR_DESCRIPTION:
		case EL_ADDRESSBOOK_DESCRIPTION:
			pend_begin(p, F_DESCRIPTION);
			break;
		case EL_CALENDAR_DATA:
		case EL_ADDRESS_DATA:
			pend_begin(p, F_DATA);
			break;
		case EL_RESOURCETYPE:
			fl->has_resourcetype = true;
			break;
		case EL_SUPPORTED_CALENDAR_COMPONENT_SET:
			fl->has_components = true;
			break;
		case EL_CURRENT_USER_PRIVILEGE_SET:
			fl->has_privileges = true;
			break;
		case EL_SUPPORTED_REPORT_SET:
			fl->has_report_set = true;
			break;
		}
		return;
	}

	if (d == 6) {
		unsigned f;

		switch (parent) {
		case EL_RESOURCETYPE:
			fl->resourcetype |= resourcetype_bit(id);
			return;
		case EL_SUPPORTED_CALENDAR_COMPONENT_SET:
			if (id == EL_COMP)
				fl->components |= component_bit(attrs, n_attrs);
			return;
		case EL_SUPPORTED_ADDRESS_DATA:
			/* RFC 6352 6.2.2 names the element address-data-type; Xandikos
			 * writes content-type. Either way, the version attribute counts. */
			for (int i = 0; i < n_attrs; i++) {
				const xmlChar *name = attrs[5 * i];
				const xmlChar *v = attrs[5 * i + 3], *end = attrs[5 * i + 4];
				if (strcmp((const char *) name, "version") == 0 && end - v == 3 &&
				    memcmp(v, "4.0", 3) == 0)
					fl->vcard4 = true;
			}
			return;
		case EL_CURRENT_USER_PRINCIPAL:
			f = F_PRINCIPAL;
			break;
		case EL_CALENDAR_HOME_SET:
			f = F_CALENDAR_HOME;
			break;
		case EL_ADDRESSBOOK_HOME_SET:
			f = F_ADDRESSBOOK_HOME;
			break;
		default:
			return;
		}
		/* Of several home set hrefs, the first is the one to use. */
		if (id == EL_HREF && !p->pend_set[f])
			pend_begin(p, f);
		return;
	}

	if (d == 7 && parent == EL_PRIVILEGE && p->stack[5] == EL_CURRENT_USER_PRIVILEGE_SET) {
		fl->privileges |= privilege_bits(id);
		return;
	}

	/* RFC 3253 3.1.5 wraps each report in DAV:report; Xandikos names it directly inside
	 * DAV:supported-report. */
	if (id == EL_SYNC_COLLECTION && p->stack[5] == EL_SUPPORTED_REPORT_SET &&
	    ((d == 8 && parent == EL_REPORT && p->stack[6] == EL_SUPPORTED_REPORT) ||
	     (d == 7 && parent == EL_SUPPORTED_REPORT)))
		fl->has_sync_report = true;
}

static void sax_start_element(void *userdata, const xmlChar *localname, const xmlChar *prefix,
			      const xmlChar *uri, int n_namespaces, const xmlChar **namespaces,
			      int n_attrs, int n_defaulted, const xmlChar **attrs)
{
	ks_ms_parser *p = userdata;

	if (p->r < 0)
		return;
	if (p->depth >= KS_XML_MAX_DEPTH) {
		parser_fail_why(p, -EBADMSG, "elements nested too deeply");
		return;
	}

	p->cdata_cr = false;
	uint8_t id = element_id(uri, localname);
	unsigned d = ++p->depth;
	p->stack[d] = id;

	switch (d) {
	case 1:
		if (id != EL_MULTISTATUS)
			parser_fail_why(p, -EBADMSG, "the root element is not DAV:multistatus");
		break;
	case 2:
		if (id == EL_RESPONSE)
			response_reset(p);
		else if (id == EL_SYNC_TOKEN) {
			p->has_sync_token = true;
			text_begin(p, &p->sync_token, false);
		}
		break;
	case 3:
		if (p->stack[2] != EL_RESPONSE)
			break;
		if (id == EL_HREF && !p->has_href) {
			/* RFC 4918 allows several hrefs sharing one status; the first names it. */
			p->has_href = true;
			text_begin(p, &p->href, false);
		} else if (id == EL_STATUS) {
			p->has_status = true;
			text_begin(p, &p->status, false);
		} else if (id == EL_PROPSTAT)
			propstat_begin(p);
		break;
	case 4:
		if (p->stack[3] == EL_PROPSTAT && p->stack[2] == EL_RESPONSE && id == EL_STATUS) {
			p->ps_has_status = true;
			text_begin(p, &p->ps_status, false);
		}
		break;
	default:
		if (p->stack[4] == EL_PROP && p->stack[3] == EL_PROPSTAT &&
		    p->stack[2] == EL_RESPONSE)
			property_start(p, id, attrs, n_attrs);
		break;
	}
}

static void sax_end_element(void *userdata, const xmlChar *localname, const xmlChar *prefix,
			    const xmlChar *uri)
{
	ks_ms_parser *p = userdata;
	int r = 0;

	if (p->r < 0 || p->depth == 0)
		return;

	p->cdata_cr = false;
	unsigned d = p->depth;
	if (p->text && p->text_depth == d) {
		if (p->text_trim)
			text_trim(p->text);
		p->text = NULL;
	}

	if (d == 3 && p->stack[3] == EL_PROPSTAT && p->stack[2] == EL_RESPONSE)
		r = propstat_end(p);
	else if (d == 2 && p->stack[2] == EL_RESPONSE)
		r = response_end(p);
	else if (d == 1)
		p->root_done = true;
	p->depth--;
	if (r == -EBADMSG)
		parser_fail_why(p, r, "a response without href or with a bad status line");
	else if (r < 0)
		parser_fail(p, r);
}

static void text_append(ks_ms_parser *p, const void *s, size_t len)
{
	int r;

	if (len == 0)
		return;
	r = ks_buf_append(p->text, s, len);
	if (r == -EFBIG)
		r = p->text_is_data ? -EFBIG : -EBADMSG;
	if (r < 0)
		parser_fail(p, r);
}

static bool text_wanted(const ks_ms_parser *p, int len)
{
	/* Only text directly inside the capturing element counts, not that of its children. */
	return p->r >= 0 && p->text && p->depth == p->text_depth && len > 0;
}

static void sax_characters(void *userdata, const xmlChar *ch, int len)
{
	ks_ms_parser *p = userdata;

	p->cdata_cr = false;
	if (text_wanted(p, len))
		text_append(p, ch, (size_t) len);
}

/* Whether a CDATA piece ending in CR goes on in the next piece: the push parser cuts long
 * sections into pieces taken straight from its input buffer, and a piece that ends its section
 * is followed there by "]]>". When ch is not in that buffer, assume the section goes on. */
static bool cdata_continues(const ks_ms_parser *p, const xmlChar *ch, int len)
{
	const xmlParserInput *in = p->ctxt ? p->ctxt->input : NULL;

	if (!in || !in->base || !in->end || ch < in->base || ch + len >= in->end)
		return true;
	return ch[len] != ']';
}

/* XML 1.0 section 2.11: line ends are normalized to LF before parsing, inside CDATA sections
 * too. libxml2 2.9's push parser does this for text but hands CDATA over raw, so a server's
 * choice between CDATA and escaped text would otherwise change the bytes we return. The
 * pieces of one section may split a CR LF pair, hence cdata_cr. */
static void sax_cdata(void *userdata, const xmlChar *ch, int len)
{
	ks_ms_parser *p = userdata;
	bool skip_lf = p->cdata_cr;

	p->cdata_cr = false;
	if (!text_wanted(p, len))
		return;

	const char *s = (const char *) ch, *end = s + len;
	if (skip_lf && *s == '\n')
		s++;
	while (s < end && p->r >= 0) {
		const char *cr = memchr(s, '\r', (size_t) (end - s));
		if (!cr) {
			text_append(p, s, (size_t) (end - s));
			break;
		}
		text_append(p, s, (size_t) (cr - s));
		text_append(p, "\n", 1);
		s = cr + 1;
		if (s == end)
			p->cdata_cr = cdata_continues(p, ch, len);
		else if (*s == '\n')
			s++;
	}
}

static void buf_init(ks_buf *b, size_t max)
{
	*b = (ks_buf) { .max = max };
}

int ks_ms_parser_new(ks_ms_response_fn fn, void *userdata, ks_ms_parser **ret)
{
	_cleanup_(ks_ms_parser_freep) ks_ms_parser *p = NULL;

	assert(fn && ret);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->userdata = userdata;
	buf_init(&p->href, KS_XML_MAX_TEXT);
	buf_init(&p->status, KS_XML_MAX_TEXT);
	buf_init(&p->ps_status, KS_XML_MAX_TEXT);
	buf_init(&p->sync_token, KS_XML_MAX_TEXT);
	for (unsigned f = 0; f < _F_MAX; f++) {
		size_t max = f == F_DATA ? KS_CARD_MAX : KS_XML_MAX_TEXT;
		buf_init(&p->val[f], max);
		buf_init(&p->pend[f], max);
	}

	/* Everything not set here stays NULL: no entity, DTD or external resource callbacks,
	 * so none of them is ever looked up or loaded. */
	xmlSAXHandler sax = {
		.initialized = XML_SAX2_MAGIC,
		.startElementNs = sax_start_element,
		.endElementNs = sax_end_element,
		.characters = sax_characters,
		.cdataBlock = sax_cdata,
		/* With the same handler libxml2 never has to decide what is ignorable, so
		 * whitespace inside calendar-data reaches us whatever the parser thinks. */
		.ignorableWhitespace = sax_characters,
		.internalSubset = sax_internal_subset,
		.serror = sax_error,
	};

	xmlInitParser();
	errors_capture(p);
	p->ctxt = xmlCreatePushParserCtxt(&sax, p, NULL, 0, NULL);
	errors_release(p);
	if (!p->ctxt)
		return -ENOMEM;
	if (p->r < 0)
		return p->r;
	/* No XML_PARSE_NOENT, DTDLOAD, DTDATTR or HUGE: entities stay unexpanded, nothing is
	 * fetched, and libxml2's own size limits stay in force behind ours. */
	(void) xmlCtxtUseOptions(p->ctxt, XML_PARSE_NONET | XML_PARSE_NOERROR |
					  XML_PARSE_NOWARNING);
	*ret = TAKE_PTR(p);
	return 0;
}

/* The encoding the XML declaration at the start of data names, as [*ret, *ret + *ret_len):
 * 1 when found, 0 when there is none, -EAGAIN when the declaration is not complete yet
 * (more bytes needed), -EBADMSG for one that never ends. */
static int declared_encoding(const char *data, size_t len, bool final, const char **ret,
			     size_t *ret_len)
{
	static const char bom[] = "\xef\xbb\xbf";
	static const char decl[] = "<?xml";
	size_t i = 0;

	if (len > 0 && (unsigned char) data[0] == 0xef) {
		if (len < 3)
			return final ? 0 : -EAGAIN;
		if (memcmp(data, bom, 3) == 0)
			i = 3;
	}
	size_t n = KS_MIN(len - i, sizeof(decl) - 1);
	if (memcmp(data + i, decl, n) != 0)
		return 0;
	if (n < sizeof(decl) - 1 || len - i == sizeof(decl) - 1)
		return final ? 0 : -EAGAIN;
	i += sizeof(decl) - 1;
	if (!strchr(XML_WS, data[i]))
		return 0;	/* "<?xml-stylesheet" and the like: not a declaration */
	const char *end = memmem(data + i, len - i, "?>", 2);
	if (!end)
		return final || len >= PROLOG_MAX ? -EBADMSG : -EAGAIN;
	const char *e = memmem(data + i, (size_t) (end - (data + i)), "encoding", 8);
	if (!e)
		return 0;
	e += 8;
	e += strspn(e, XML_WS);
	if (*e != '=')
		return 0;	/* malformed: libxml2 says so */
	e++;
	e += strspn(e, XML_WS);
	if (*e != '"' && *e != '\'')
		return 0;
	const char *v = e + 1, *q = memchr(v, *e, (size_t) (end - v));
	if (!q)
		return 0;
	*ret = v;
	*ret_len = (size_t) (q - v);
	return 1;
}

static void feed_chunks(ks_ms_parser *p, const char *data, size_t len)
{
	while (len > 0 && p->r >= 0) {
		size_t n = KS_MIN(len, (size_t) FEED_STEP);
		if (xmlParseChunk(p->ctxt, data, (int) n, 0) != 0 && p->r >= 0)
			parser_fail_why(p, -EBADMSG, "not well-formed");
		data += n;
		len -= n;
	}
}

/* Only UTF-8 (and its subset US-ASCII) is read. libxml2 converts other encodings as it goes,
 * and for stateful ones (UTF-7, HZ, ISO-2022) the result of a conversion depends on where the
 * network cut the body; no DAV server sends anything but UTF-8 anyway. A byte-order mark of
 * UTF-16 or UTF-32, or no '<' at the start, means another encoding too. */
static int check_prolog(ks_ms_parser *p, bool final)
{
	const char *enc = NULL;
	size_t n = 0;
	const unsigned char *d = (const unsigned char *) p->prolog;
	int r;

	if (p->prolog_len == 0 && !final)
		return -EAGAIN;
	if (p->prolog_len > 0 && (d[0] == 0xfe || d[0] == 0xff || d[0] == 0x00 ||
				  (d[0] != 0xef && d[0] != '<' && !strchr(XML_WS, d[0])))) {
		parser_fail_why(p, -EBADMSG, "not UTF-8 (the body starts with byte 0x%02x)", d[0]);
		return p->r;
	}
	r = declared_encoding(p->prolog, p->prolog_len, final, &enc, &n);
	if (r == -EAGAIN)
		return r;
	if (r == -EBADMSG) {
		parser_fail_why(p, r, "an XML declaration that does not end");
		return r;
	}
	if (r > 0 && !((n == 5 && strncasecmp(enc, "UTF-8", 5) == 0) ||
		       (n == 8 && strncasecmp(enc, "US-ASCII", 8) == 0) ||
		       (n == 5 && strncasecmp(enc, "ASCII", 5) == 0))) {
		parser_fail_why(p, -EBADMSG, "the document declares the encoding '%.*s'; only "
				"UTF-8 is accepted", (int) KS_MIN(n, (size_t) 40), enc);
		return p->r;
	}
	return 0;
}

/* Holds back the first bytes until check_prolog() can decide, then feeds them; *data and
 * *len are advanced past what was taken. */
static void feed_prolog(ks_ms_parser *p, const char **data, size_t *len, bool final)
{
	size_t take = KS_MIN(*len, sizeof(p->prolog) - p->prolog_len);

	memcpy(p->prolog + p->prolog_len, *data, take);
	p->prolog_len += take;
	*data += take;
	*len -= take;
	int r = check_prolog(p, final || p->prolog_len == sizeof(p->prolog));
	if (r == -EAGAIN)
		return;
	p->prolog_done = true;
	if (r >= 0)
		feed_chunks(p, p->prolog, p->prolog_len);
}

int ks_ms_parser_feed(ks_ms_parser *p, const char *data, size_t len)
{
	assert(p);
	if (p->r < 0)
		return p->r;
	if (p->finished)
		return -EINVAL;
	if (len == 0)
		return 0;
	assert(data);

	errors_capture(p);
	if (!p->prolog_done)
		feed_prolog(p, &data, &len, false);
	if (p->prolog_done)
		feed_chunks(p, data, len);
	errors_release(p);
	return p->r < 0 ? p->r : 0;
}

int ks_ms_parser_finish(ks_ms_parser *p)
{
	assert(p);
	if (p->r < 0)
		return p->r;
	if (p->finished)
		return 0;
	p->finished = true;

	errors_capture(p);
	if (!p->prolog_done) {
		size_t none = 0;
		const char *nothing = "";
		feed_prolog(p, &nothing, &none, true);
	}
	if (p->r >= 0 && xmlParseChunk(p->ctxt, NULL, 0, 1) != 0 && p->r >= 0)
		parser_fail_why(p, -EBADMSG, "not well-formed");
	errors_release(p);
	/* libxml2 complains about a truncated document itself; this also covers an empty one. */
	if (p->r >= 0 && !p->root_done)
		parser_fail_why(p, -EBADMSG, "the document ends before its root element does");
	return p->r < 0 ? p->r : 0;
}

const char *ks_ms_parser_why(const ks_ms_parser *p)
{
	return p && p->why[0] ? p->why : "not well-formed";
}

const char *ks_ms_parser_sync_token(const ks_ms_parser *p)
{
	assert(p);
	return p->has_sync_token ? buf_str(&p->sync_token) : NULL;
}

size_t ks_ms_parser_count(const ks_ms_parser *p)
{
	assert(p);
	return p->count;
}

ks_ms_parser *ks_ms_parser_free(ks_ms_parser *p)
{
	if (!p)
		return NULL;
	if (p->ctxt) {
		errors_capture(p);
		xmlFreeParserCtxt(p->ctxt);
		errors_release(p);
	}
	ks_buf_done(&p->href);
	ks_buf_done(&p->status);
	ks_buf_done(&p->ps_status);
	ks_buf_done(&p->sync_token);
	for (unsigned f = 0; f < _F_MAX; f++) {
		ks_buf_done(&p->val[f]);
		ks_buf_done(&p->pend[f]);
	}
	free(p);
	return NULL;
}

/* Decodes one UTF-8 sequence at s (n bytes available): the code point, and *len; or -1 for a
 * malformed, overlong or surrogate sequence. */
static int32_t utf8_decode(const unsigned char *s, size_t n, size_t *len)
{
	unsigned char c = s[0];
	size_t need;
	int32_t cp, min;

	if (c < 0x80) {
		*len = 1;
		return c;
	}
	if ((c & 0xe0) == 0xc0) {
		need = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		need = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		need = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else
		return -1;
	if (n < need)
		return -1;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*len = need;
	return cp;
}

/* XML 1.0 Char production (section 2.2). */
static bool xml_char_ok(int32_t cp)
{
	return cp == 0x9 || cp == 0xa || cp == 0xd || (cp >= 0x20 && cp <= 0xd7ff) ||
	       (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
}

int ks_xml_escape(ks_buf *b, const char *s)
{
	int r = 0;

	assert(b && s);
	const size_t old_len = b->len;
	const unsigned char *u = (const unsigned char *) s;
	size_t n = strlen(s), run = 0;
	for (size_t i = 0; i < n;) {
		const char *rep = NULL;
		size_t len;
		int32_t cp = utf8_decode(u + i, n - i, &len);

		if (cp < 0 || !xml_char_ok(cp)) {
			r = -EINVAL;
			break;
		}
		switch (cp) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		case '\r':
			/* A raw CR would be turned into LF by the receiving parser. */
			rep = "&#13;";
			break;
		}
		if (!rep) {
			run += len;
			i += len;
			continue;
		}
		r = ks_buf_append(b, s + i - run, run);
		if (r < 0)
			break;
		run = 0;
		r = ks_buf_puts(b, rep);
		if (r < 0)
			break;
		i += len;
	}
	if (r >= 0)
		r = ks_buf_append(b, s + n - run, run);
	if (r < 0) {
		/* Leave the request body as it was, not with half a value in it. */
		b->len = old_len;
		if (b->data)
			b->data[old_len] = 0;
		return r;
	}
	return 0;
}

/* ---- error bodies ------------------------------------------------------------------------- */

/* An error body is read whole, as a tree: it is small, and read only after a request failed. */
#define ERROR_BODY_MAX (64 * 1024)
#define ERROR_TEXT_MAX 300

static void error_text(ks_buf *b, const xmlNode *n)
{
	for (const xmlNode *c = n->children; c; c = c->next)
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
			(void) ks_buf_puts(b, (const char *) c->content);
		else if (c->type == XML_ELEMENT_NODE)
			error_text(b, c);
}

static const char *ns_prefix(const xmlNode *n)
{
	const char *uri = n->ns && n->ns->href ? (const char *) n->ns->href : "";

	if (strcmp(uri, NS_DAV) == 0)
		return "DAV:";
	if (strcmp(uri, NS_CALDAV) == 0)
		return "CALDAV:";
	if (strcmp(uri, NS_CARDDAV) == 0)
		return "CARDDAV:";
	return NULL;
}

static bool is_dav(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
	       strcmp((const char *) n->ns->href, NS_DAV) == 0 &&
	       strcmp((const char *) n->name, name) == 0;
}

static const xmlNode *dav_child(const xmlNode *n, const char *name)
{
	for (const xmlNode *c = n->children; c; c = c->next)
		if (is_dav(c, name))
			return c;
	return NULL;
}

/* The status code of a <status> element, or 0. */
static int status_of(const xmlNode *status)
{
	xmlChar *t = status ? xmlNodeGetContent(status) : NULL;
	int code = t ? parse_status_line((const char *) t) : 0;

	xmlFree(t);
	return code > 0 ? code : 0;
}

/* The first <response> of a multistatus that reports a failure, in its own <status> or in
 * a propstat's, and that status into *ret_status. */
static const xmlNode *failed_response(const xmlNode *ms, int *ret_status)
{
	for (const xmlNode *resp = ms->children; resp; resp = resp->next) {
		if (!is_dav(resp, "response"))
			continue;
		int code = status_of(dav_child(resp, "status"));
		for (const xmlNode *ps = resp->children; ps && (code == 0 || code < 300);
		     ps = ps->next)
			if (is_dav(ps, "propstat"))
				code = status_of(dav_child(ps, "status"));
		if (code >= 300) {
			*ret_status = code;
			return resp;
		}
	}
	return NULL;
}

int ks_xml_error_body(const char *body, size_t len, ks_xml_error *ret)
{
	ks_xml_error e = {};
	xmlDoc *doc;
	int r = 0;

	assert(ret);
	if (!body || len == 0 || len > ERROR_BODY_MAX || memchr(body, 0, len))
		return -EBADMSG;
	/* No DOCTYPE, so no entity is ever declared, let alone expanded or loaded. */
	if (memmem(body, len, "<!DOCTYPE", 9) || memmem(body, len, "<!doctype", 9))
		return -EBADMSG;
	doc = xmlReadMemory(body, (int) len, NULL, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
				    XML_PARSE_NOCDATA);
	if (!doc)
		return -EBADMSG;
	const xmlNode *root = xmlDocGetRootElement(doc);
	const xmlNode *err = NULL, *response = NULL;
	if (root && !doc->intSubset && is_dav(root, "error"))
		err = root;
	else if (root && !doc->intSubset && is_dav(root, "multistatus")) {
		response = failed_response(root, &e.status);
		err = response ? dav_child(response, "error") : NULL;
	} else {
		xmlFreeDoc(doc);
		return -EBADMSG;
	}
	ks_buf text = { .max = ERROR_TEXT_MAX * 4 };
	if (response && dav_child(response, "responsedescription"))
		error_text(&text, dav_child(response, "responsedescription"));
	for (const xmlNode *c = err ? err->children : NULL; c && r >= 0; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		const char *ns = ns_prefix(c);
		const char *uri = c->ns && c->ns->href ? (const char *) c->ns->href : "";
		if (ns && strcmp(ns, "DAV:") == 0 && strcmp((const char *) c->name,
							    "responsedescription") == 0)
			error_text(&text, c);
		else if (strcmp(uri, "http://sabredav.org/ns") == 0 &&
			 strcmp((const char *) c->name, "message") == 0)
			error_text(&text, c);
		else if (ns && !e.precondition[0])
			snprintf(e.precondition, sizeof(e.precondition), "%s%s", ns,
				 (const char *) c->name);
	}
	xmlFreeDoc(doc);
	if (text.len) {
		/* Blanks folded, controls gone, cut on a character boundary: a server's words
		 * go into one line of a message. */
		size_t o = 0, i = 0;
		bool space = true;
		for (; i < text.len && o < ERROR_TEXT_MAX; i++) {
			unsigned char ch = (unsigned char) text.data[i];
			if (ch < 0x20 || ch == 0x7f) {
				if (!space)
					text.data[o++] = ' ';
				space = true;
				continue;
			}
			if (ch == ' ' && space)
				continue;
			space = ch == ' ';
			text.data[o++] = (char) ch;
		}
		if (i < text.len) {
			/* Cut: a character left incomplete at the end goes. */
			size_t k = o;
			while (k > 0 && ((unsigned char) text.data[k - 1] & 0xc0) == 0x80)
				k--;
			if (k > 0) {
				unsigned char lead = (unsigned char) text.data[k - 1];
				size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
				if (o - (k - 1) < need)
					o = k - 1;
			}
		}
		while (o > 0 && text.data[o - 1] == ' ')
			o--;
		text.data[o] = 0;
		if (o)
			e.text = strndup(text.data, o);
		if (o && !e.text)
			r = -ENOMEM;
	}
	ks_buf_done(&text);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

void ks_xml_error_done(ks_xml_error *e)
{
	if (!e)
		return;
	free(e->text);
	*e = (ks_xml_error) {};
}
