/* SPDX-License-Identifier: MIT */
/* The streaming multistatus parser, fed the same body once whole and once in chunks: the
 * sequence of callbacks, the result and the sync token must not depend on how the network
 * cut the body.
 *
 * Input layout: byte 0 holds the number of chunk-size bytes that follow (bits 0-2) and after
 * how many responses the callback stops the parse (bits 3-5, 0 = never); each chunk-size byte
 * b gives a chunk of b + 1 bytes, used in turn (none: 1-byte chunks). The rest is the body. */

#include <errno.h>
#include <string.h>

#include "buf_p.h"
#include "fuzz.h"
#include "xml_p.h"

typedef struct trace {
	ks_buf log;
	unsigned stop_after;
	unsigned calls;
} trace;

static void put_str(ks_buf *b, const char *name, const char *s)
{
	if (s)
		(void) ks_buf_printf(b, "%s=[%zu]%s\n", name, strlen(s), s);
	else
		(void) ks_buf_printf(b, "%s=NULL\n", name);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int on_response(const ks_ms_response *r, void *userdata)
{
	trace *t = userdata;
	ks_buf *b = &t->log;

	fuzz_check(r->href);
	size_t hl = strlen(r->href);
	if (hl > 0)
		fuzz_check(!is_space(r->href[0]) && !is_space(r->href[hl - 1]));
	if (r->data)
		fuzz_check(!memchr(r->data, 0, r->data_len));
	else
		fuzz_check(r->data_len == 0);

	(void) ks_buf_printf(b, "response %u status=%d\n", t->calls, r->status);
	put_str(b, "href", r->href);
	put_str(b, "etag", r->etag);
	put_str(b, "displayname", r->displayname);
	put_str(b, "color", r->color);
	put_str(b, "sync_token", r->sync_token);
	put_str(b, "ctag", r->ctag);
	put_str(b, "principal", r->principal);
	put_str(b, "calendar_home", r->calendar_home);
	put_str(b, "addressbook_home", r->addressbook_home);
	put_str(b, "description", r->description);
	if (r->data) {
		(void) ks_buf_printf(b, "data=[%zu]", r->data_len);
		(void) ks_buf_append(b, r->data, r->data_len);
		(void) ks_buf_puts(b, "\n");
	} else
		(void) ks_buf_puts(b, "data=NULL\n");
	(void) ks_buf_printf(b, "rt=%u/%d comp=%u/%d priv=%u/%d sync=%d\n", r->resourcetype,
			     r->has_resourcetype, r->components, r->has_components, r->privileges,
			     r->has_privileges, r->has_sync_report);
	t->calls++;
	if (t->stop_after && t->calls >= t->stop_after)
		return -ECANCELED;
	return 0;
}

/* Parses body with the given chunk sizes (none: all at once) and returns the parse result;
 * the callbacks and the final state are logged into t. */
static int parse(const char *body, size_t len, const uint8_t *sizes, size_t n_sizes, trace *t)
{
	ks_ms_parser *p = NULL;
	int r;

	r = ks_ms_parser_new(on_response, t, &p);
	if (r < 0)
		return r;
	size_t off = 0, k = 0;
	r = 0;
	while (off < len && r >= 0) {
		size_t chunk = n_sizes ? (size_t) sizes[k++ % n_sizes] + 1 : len;
		if (chunk > len - off)
			chunk = len - off;
		r = ks_ms_parser_feed(p, body + off, chunk);
		off += chunk;
	}
	if (r >= 0)
		r = ks_ms_parser_finish(p);
	else
		/* Errors are sticky. */
		fuzz_check(ks_ms_parser_finish(p) == r);
	fuzz_check(ks_ms_parser_count(p) == t->calls);
	(void) ks_buf_printf(&t->log, "result=%d count=%zu\n", r, ks_ms_parser_count(p));
	put_str(&t->log, "token", ks_ms_parser_sync_token(p));
	ks_ms_parser_free(p);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t n_sizes = data[0] & 7;
	unsigned stop_after = (data[0] >> 3) & 7;
	if (size < 1 + n_sizes)
		return 0;
	const uint8_t *sizes = data + 1;
	const char *body = (const char *) data + 1 + n_sizes;
	size_t len = size - 1 - n_sizes;

	trace whole = { .stop_after = stop_after }, chunked = { .stop_after = stop_after };
	int r1 = parse(body, len, NULL, 0, &whole);
	static const uint8_t one_byte = 0;
	int r2 = n_sizes ? parse(body, len, sizes, n_sizes, &chunked) :
			   parse(body, len, &one_byte, 1, &chunked);
	if (r1 == -ENOMEM || r2 == -ENOMEM)
		goto done;
	if (r1 != r2 || whole.log.len != chunked.log.len ||
	    (whole.log.len && memcmp(whole.log.data, chunked.log.data, whole.log.len) != 0)) {
		fprintf(stderr, "whole and chunked parses differ\n--- whole:\n%s\n",
			whole.log.data ? whole.log.data : "");
		fprintf(stderr, "--- chunked:\n%s\n", chunked.log.data ? chunked.log.data : "");
		abort();
	}
done:
	ks_buf_done(&whole.log);
	ks_buf_done(&chunked.log);
	return 0;
}
