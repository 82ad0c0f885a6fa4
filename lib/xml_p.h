/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Streaming parser for WebDAV multistatus bodies (RFC 4918 13, RFC 6578, RFC 4791, RFC 6352).
 * It is fed the body in chunks as they arrive and calls back once per <response>; memory
 * does not grow with the number of responses. Entities are never loaded or expanded,
 * depth and text sizes are capped (limits.h). */

enum {
	KS_RT_COLLECTION = 1 << 0,
	KS_RT_CALENDAR = 1 << 1,
	KS_RT_ADDRESSBOOK = 1 << 2,
	KS_RT_PRINCIPAL = 1 << 3,
};

enum {
	KS_COMP_VEVENT = 1 << 0,
	KS_COMP_VTODO = 1 << 1,
	KS_COMP_VJOURNAL = 1 << 2,
};

enum {
	KS_PRIV_READ = 1 << 0,
	KS_PRIV_WRITE = 1 << 1,		/* DAV:write or DAV:all */
	KS_PRIV_WRITE_CONTENT = 1 << 2,
	KS_PRIV_BIND = 1 << 3,
	KS_PRIV_UNBIND = 1 << 4,
};

/* One <response>. Only properties found in a propstat with a 2xx status are set; the
 * others stay NULL / 0 / false. Strings are borrowed: valid during the callback only.
 * Elements are matched by namespace URI and local name, never by prefix. Text values are
 * trimmed of surrounding whitespace, except data, which is kept exactly as the XML carries it
 * (CDATA or escaped text alike; XML line-end normalization turns a raw CR LF into LF, only
 * "&#13;" delivers a CR). */
typedef struct ks_ms_response {
	const char *href;	/* as sent (still percent-encoded), whitespace trimmed */
	int status;		/* <response><status>: 404 for a member deleted in sync-collection,
				 * 507 for truncation; 0 when the response has propstats */
	const char *etag;	/* getetag, quotes kept; NULL with a control character but tab */
	const char *displayname;
	const char *color;	/* calendar-color (Apple namespace) */
	const char *sync_token;	/* DAV:sync-token as a property */
	const char *ctag;	/* getctag (CalendarServer namespace) */
	const char *principal;	/* current-user-principal/href */
	const char *calendar_home;	/* first calendar-home-set/href */
	const char *addressbook_home;	/* first addressbook-home-set/href */
	const char *description;	/* calendar-description or addressbook-description */
	const char *data;	/* calendar-data or address-data; no NUL inside */
	size_t data_len;
	unsigned resourcetype;	/* KS_RT_* */
	unsigned components;	/* KS_COMP_* from supported-calendar-component-set */
	unsigned privileges;	/* KS_PRIV_* from current-user-privilege-set */
	bool has_resourcetype;
	bool has_components;
	bool has_privileges;
	bool has_report_set;	/* a supported-report-set came (with a 2xx status) */
	bool has_sync_report;	/* supported-report-set lists DAV:sync-collection */
	bool vcard4;		/* supported-address-data offers vCard version 4.0 */
} ks_ms_response;

/* Return < 0 to stop the parse; ks_ms_parser_feed() then returns that value. */
typedef int (*ks_ms_response_fn)(const ks_ms_response *r, void *userdata);

typedef struct ks_ms_parser ks_ms_parser;

/* A parser that calls fn(response, userdata) once per <response>, from inside feed/finish.
 * *ret is owned by the caller (ks_ms_parser_free()). -ENOMEM. */
int ks_ms_parser_new(ks_ms_response_fn fn, void *userdata, ks_ms_parser **ret);
/* Feeds the next chunk. -EBADMSG on malformed XML, a body not in UTF-8 (a declared encoding
 * other than UTF-8 or US-ASCII, a UTF-16 or UTF-32 byte-order mark), a root other than DAV:multistatus,
 * nesting past KS_XML_MAX_DEPTH, a DOCTYPE, a response without href, an unparsable status
 * line, or property text past KS_XML_MAX_TEXT; -EFBIG when a calendar-data or address-data
 * exceeds KS_CARD_MAX (the whole body is abandoned: fetch that item on its own to skip it);
 * -ENOMEM; or the callback's error. Errors are sticky: later calls return the same value.
 * -EINVAL after ks_ms_parser_finish(). */
int ks_ms_parser_feed(ks_ms_parser *p, const char *data, size_t len);
/* Ends the document. -EBADMSG when it is incomplete (truncated or empty body). */
int ks_ms_parser_finish(ks_ms_parser *p);
/* After a failure with -EBADMSG: what was wrong, for messages ("the document declares the
 * encoding 'utf-7'; only UTF-8 is accepted", libxml2's message with its line). Borrowed from p;
 * never NULL (p may be NULL). */
const char *ks_ms_parser_why(const ks_ms_parser *p);
/* The top-level <sync-token> of a sync-collection report, or NULL. Borrowed. */
const char *ks_ms_parser_sync_token(const ks_ms_parser *p);
/* Number of complete <response> elements seen, which is the number of callbacks made. */
size_t ks_ms_parser_count(const ks_ms_parser *p);
/* Frees p (NULL is fine), also in the middle of a document. Returns NULL. */
ks_ms_parser *ks_ms_parser_free(ks_ms_parser *p);

/* What a DAV:error body (RFC 4918 16) says: the first precondition or postcondition named, as
 * "DAV:name", "CALDAV:name" or "CARDDAV:name" (empty when none of those), and the text of
 * DAV:responsedescription or SabreDAV's s:message, blanks folded, controls removed, at most
 * 300 bytes (NULL when none). text is owned by the struct (ks_xml_error_done()).
 * A DAV:multistatus is read the same way at its first response that reports a failure (its
 * DAV:error and responsedescription), whose status goes into status (0 when none does):
 * some servers (Xandikos) answer a PUT they refuse with a 207. */
typedef struct ks_xml_error {
	char precondition[80];
	char *text;
	int status;
} ks_xml_error;

/* Reads an error body. -EBADMSG when it is neither a DAV:error nor a DAV:multistatus document
 * (an HTML page, a DOCTYPE, more than 64 KB), -ENOMEM. */
int ks_xml_error_body(const char *body, size_t len, ks_xml_error *ret);
void ks_xml_error_done(ks_xml_error *e);

/* Appends s to b with &, <, >, " and ' escaped, and CR as "&#13;" so that it survives.
 * -EINVAL when s is not valid UTF-8 or holds a character XML 1.0 cannot carry (most C0
 * controls); -EFBIG or -ENOMEM from the buffer. On failure b is left as it was. */
struct ks_buf;
int ks_xml_escape(struct ks_buf *b, const char *s);
