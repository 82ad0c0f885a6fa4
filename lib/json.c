/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_p.h"
#include "macro.h"

struct ks_json {
	ks_json_type type;
	bool boolean;
	double number;
	char *str;		/* a string's value, or the text of a number */
	char *key;		/* the member name, inside an object */
	ks_json *items;		/* elements of an array, members of an object */
	size_t n_items;
};

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), storing its code point, or 0
 * when the bytes are not valid UTF-8 (overlong forms, surrogates and values above U+10FFFF
 * included). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
	uint32_t cp, min;
	size_t len;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*ret_cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		len = 2;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		len = 3;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		len = 4;
		min = 0x10000;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return len;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char) (0xc0 | (cp >> 6));
		out[1] = (char) (0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char) (0xe0 | (cp >> 12));
		out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char) (0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char) (0xf0 | (cp >> 18));
	out[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char) (0x80 | (cp & 0x3f));
	return 4;
}

/* ---- parser ------------------------------------------------------------------------------ */

typedef struct parser {
	const char *start, *p, *end;
	unsigned depth;
	size_t values;
	locale_t c_locale;	/* for strtod_l(), created on the first fraction or exponent */
} parser;

static void json_done(ks_json *j)
{
	for (size_t i = 0; i < j->n_items; i++)
		json_done(&j->items[i]);
	free(j->items);
	free(j->str);
	free(j->key);
	*j = (ks_json) {};
}

static void skip_ws(parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static int hex4(const char *p, uint32_t *ret)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t) (c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t) (c - 'A' + 10);
		else
			return -EBADMSG;
	}
	*ret = v;
	return 0;
}

/* Reads a string whose opening quote ps->p points at. The decoded text is never longer than
 * the quoted text (an escape of 2, 6 or 12 bytes yields at most 1, 3 or 4), which bounds the
 * allocation. */
static int parse_string(parser *ps, char **ret)
{
	const char *q = ps->p + 1;

	while (q < ps->end && *q != '"')
		q += *q == '\\' && ps->end - q > 1 ? 2 : 1;
	if (q >= ps->end) {
		ps->p = ps->end;
		return -EBADMSG;
	}

	const char *s = ps->p + 1, *e = q;
	_cleanup_free_ char *out = malloc((size_t) (e - s) + 1);
	size_t n = 0;

	if (!out)
		return -ENOMEM;
	while (s < e) {
		unsigned char c = (unsigned char) *s;
		uint32_t cp;

		ps->p = s;
		if (c < 0x20)
			return -EBADMSG;
		if (c != '\\') {
			size_t k = utf8_decode((const unsigned char *) s, (size_t) (e - s), &cp);
			if (k == 0)
				return -EBADMSG;
			memcpy(out + n, s, k);
			n += k;
			s += k;
			continue;
		}
		if (e - s < 2)
			return -EBADMSG;
		switch (s[1]) {
		case '"':
		case '\\':
		case '/':
			out[n++] = s[1];
			s += 2;
			continue;
		case 'b':
			out[n++] = '\b';
			s += 2;
			continue;
		case 'f':
			out[n++] = '\f';
			s += 2;
			continue;
		case 'n':
			out[n++] = '\n';
			s += 2;
			continue;
		case 'r':
			out[n++] = '\r';
			s += 2;
			continue;
		case 't':
			out[n++] = '\t';
			s += 2;
			continue;
		case 'u':
			break;
		default:
			return -EBADMSG;
		}
		if (e - s < 6 || hex4(s + 2, &cp) < 0)
			return -EBADMSG;
		s += 6;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return -EBADMSG;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			uint32_t lo;

			if (e - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo) < 0 ||
			    lo < 0xdc00 || lo > 0xdfff)
				return -EBADMSG;
			s += 6;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		/* C strings cannot carry U+0000; refusing it keeps every string whole. */
		if (cp == 0)
			return -EBADMSG;
		n += utf8_encode(cp, out + n);
	}
	out[n] = 0;
	ps->p = q + 1;
	*ret = TAKE_PTR(out);
	return 0;
}

static const char *skip_digits(const char *p, const char *end)
{
	while (p < end && *p >= '0' && *p <= '9')
		p++;
	return p;
}

static int parse_number(parser *ps, ks_json *out)
{
	const char *p = ps->p, *end = ps->end;
	bool plain = true;

	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		p = skip_digits(p, end);
	else {
		ps->p = p;
		return -EBADMSG;
	}
	if (p < end && *p == '.') {
		const char *d = ++p;
		p = skip_digits(p, end);
		if (p == d) {
			ps->p = p;
			return -EBADMSG;
		}
		plain = false;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		const char *d = p;
		p = skip_digits(p, end);
		if (p == d) {
			ps->p = p;
			return -EBADMSG;
		}
		plain = false;
	}

	_cleanup_free_ char *text = strndup(ps->p, (size_t) (p - ps->p));
	if (!text)
		return -ENOMEM;
	if (!plain && ps->c_locale == (locale_t) 0) {
		ps->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t) 0);
		if (ps->c_locale == (locale_t) 0)
			return -ENOMEM;
	}
	double v = plain ? strtod(text, NULL) : strtod_l(text, NULL, ps->c_locale);
	if (isinf(v))
		return -ERANGE;
	out->type = KS_JSON_NUMBER;
	out->number = v;
	out->str = TAKE_PTR(text);
	ps->p = p;
	return 0;
}

static int parse_literal(parser *ps, const char *word)
{
	size_t n = strlen(word);

	if ((size_t) (ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return -EBADMSG;
	ps->p += n;
	return 0;
}

static int parse_value(parser *ps, ks_json *out);

/* Appends a zeroed element to a growing item array. */
static ks_json *items_push(ks_json *j, size_t *cap)
{
	if (j->n_items == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		ks_json *n = reallocarray(j->items, ncap, sizeof(*n));
		if (!n)
			return NULL;
		j->items = n;
		*cap = ncap;
	}
	ks_json *e = &j->items[j->n_items++];
	*e = (ks_json) {};
	return e;
}

/* Reads an array or object whose opening bracket ps->p points at, into out (of type
 * KS_JSON_ARRAY or KS_JSON_OBJECT already); out's items are freed by the caller on failure. */
static int parse_container(parser *ps, ks_json *out)
{
	bool object = out->type == KS_JSON_OBJECT;
	char close = object ? '}' : ']';
	size_t cap = 0;
	int r;

	if (++ps->depth > KS_JSON_MAX_DEPTH)
		return -E2BIG;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		ps->depth--;
		return 0;
	}
	for (;;) {
		ks_json *e = items_push(out, &cap);
		if (!e)
			return -ENOMEM;
		if (object) {
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != '"')
				return -EBADMSG;
			r = parse_string(ps, &e->key);
			if (r < 0)
				return r;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':')
				return -EBADMSG;
			ps->p++;
		}
		r = parse_value(ps, e);
		if (r < 0)
			return r;
		skip_ws(ps);
		if (ps->p >= ps->end)
			return -EBADMSG;
		if (*ps->p == close) {
			ps->p++;
			break;
		}
		if (*ps->p != ',')
			return -EBADMSG;
		ps->p++;
	}
	ps->depth--;
	return 0;
}

static int parse_value(parser *ps, ks_json *out)
{
	int r;

	if (++ps->values > KS_JSON_MAX_VALUES)
		return -E2BIG;
	skip_ws(ps);
	if (ps->p >= ps->end)
		return -EBADMSG;
	switch (*ps->p) {
	case '{':
		out->type = KS_JSON_OBJECT;
		return parse_container(ps, out);
	case '[':
		out->type = KS_JSON_ARRAY;
		return parse_container(ps, out);
	case '"':
		r = parse_string(ps, &out->str);
		if (r < 0)
			return r;
		out->type = KS_JSON_STRING;
		return 0;
	case 't':
		out->type = KS_JSON_BOOL;
		out->boolean = true;
		return parse_literal(ps, "true");
	case 'f':
		out->type = KS_JSON_BOOL;
		return parse_literal(ps, "false");
	case 'n':
		out->type = KS_JSON_NULL;
		return parse_literal(ps, "null");
	default:
		return parse_number(ps, out);
	}
}

int ks_json_parse(const char *text, size_t len, ks_json **ret, size_t *reterr_offset)
{
	int r;

	assert(text || len == 0);
	assert(ret);
	if (!text)
		text = "";

	parser ps = { .start = text, .p = text, .end = text + len };
	if (len > KS_JSON_MAX_TEXT) {
		if (reterr_offset)
			*reterr_offset = KS_JSON_MAX_TEXT;
		return -E2BIG;
	}

	ks_json *root = calloc(1, sizeof(*root));
	if (!root)
		return -ENOMEM;
	r = parse_value(&ps, root);
	if (r >= 0) {
		skip_ws(&ps);
		if (ps.p != ps.end)
			r = -EBADMSG;
	}
	if (ps.c_locale != (locale_t) 0)
		freelocale(ps.c_locale);
	if (r < 0) {
		if (reterr_offset)
			*reterr_offset = (size_t) (ps.p - ps.start);
		ks_json_free(root);
		return r;
	}
	*ret = root;
	return 0;
}

ks_json *ks_json_free(ks_json *j)
{
	if (!j)
		return NULL;
	json_done(j);
	free(j);
	return NULL;
}

/* ---- accessors --------------------------------------------------------------------------- */

ks_json_type ks_json_get_type(const ks_json *j)
{
	return j ? j->type : KS_JSON_NULL;
}

size_t ks_json_count(const ks_json *j)
{
	if (!j || (j->type != KS_JSON_ARRAY && j->type != KS_JSON_OBJECT))
		return 0;
	return j->n_items;
}

const ks_json *ks_json_at(const ks_json *j, size_t i)
{
	if (i >= ks_json_count(j))
		return NULL;
	return &j->items[i];
}

const char *ks_json_key_at(const ks_json *j, size_t i)
{
	if (!j || j->type != KS_JSON_OBJECT || i >= j->n_items)
		return NULL;
	return j->items[i].key;
}

const ks_json *ks_json_get(const ks_json *j, const char *key)
{
	if (!j || j->type != KS_JSON_OBJECT)
		return NULL;
	for (size_t i = j->n_items; i > 0; i--)
		if (strcmp(j->items[i - 1].key, key) == 0)
			return &j->items[i - 1];
	return NULL;
}

const char *ks_json_string(const ks_json *j)
{
	return j && j->type == KS_JSON_STRING ? j->str : NULL;
}

bool ks_json_is_true(const ks_json *j)
{
	return j && j->type == KS_JSON_BOOL && j->boolean;
}

int ks_json_double(const ks_json *j, double *ret)
{
	if (!j || j->type != KS_JSON_NUMBER)
		return -EINVAL;
	*ret = j->number;
	return 0;
}

int ks_json_int(const ks_json *j, int64_t *ret)
{
	if (!j || j->type != KS_JSON_NUMBER)
		return -EINVAL;
	if (!strpbrk(j->str, ".eE")) {
		/* Exact, where the double would round integers beyond 2^53. */
		const char *p = j->str;
		bool neg = *p == '-';
		uint64_t v = 0, limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

		if (neg)
			p++;
		for (; *p; p++) {
			unsigned d = (unsigned) (*p - '0');
			if (v > (limit - d) / 10)
				return -ERANGE;
			v = v * 10 + d;
		}
		*ret = neg ? (int64_t) (0 - v) : (int64_t) v;
		return 0;
	}
	double v = j->number;
	if (v != floor(v) || v < -9223372036854775808.0 || v >= 9223372036854775808.0)
		return -ERANGE;
	*ret = (int64_t) v;
	return 0;
}

const char *ks_json_get_string(const ks_json *j, const char *key)
{
	return ks_json_string(ks_json_get(j, key));
}

bool ks_json_get_bool(const ks_json *j, const char *key, bool def)
{
	const ks_json *v = ks_json_get(j, key);

	if (!v || v->type != KS_JSON_BOOL)
		return def;
	return v->boolean;
}

int64_t ks_json_get_int(const ks_json *j, const char *key, int64_t def)
{
	int64_t v;

	if (ks_json_int(ks_json_get(j, key), &v) < 0)
		return def;
	return v;
}

/* ---- writer ------------------------------------------------------------------------------ */

#define BIT(d) (UINT64_C(1) << (d))

void ks_json_writer_init(ks_json_writer *w, ks_buf *buf, bool pretty)
{
	assert(w && buf);
	*w = (ks_json_writer) { .buf = buf, .pretty = pretty };
}

int ks_json_writer_new(bool pretty, ks_json_writer **ret)
{
	ks_json_writer *w = malloc(sizeof(*w));

	assert(ret);
	if (!w)
		return -ENOMEM;
	ks_json_writer_init(w, &w->own, pretty);
	*ret = w;
	return 0;
}

ks_json_writer *ks_json_writer_free(ks_json_writer *w)
{
	if (!w)
		return NULL;
	assert(w->buf == &w->own);
	ks_buf_done(&w->own);
	free(w);
	return NULL;
}

int ks_json_writer_finish(const ks_json_writer *w)
{
	if (w->error)
		return w->error;
	return w->done ? 0 : -EINVAL;
}

int ks_json_writer_steal(ks_json_writer *w, char **ret)
{
	int r = ks_json_writer_finish(w);

	assert(ret);
	if (r < 0)
		return r;
	char *text = ks_buf_steal(w->buf);
	if (!text)
		return -ENOMEM;
	*ret = text;
	return 0;
}

static int writer_fail(ks_json_writer *w, int r)
{
	if (!w->error)
		w->error = r;
	return w->error;
}

static int writer_put(ks_json_writer *w, const char *s, size_t n)
{
	int r;

	if (w->error)
		return w->error;
	r = ks_buf_append(w->buf, s, n);
	if (r < 0)
		return writer_fail(w, r);
	return 0;
}

static int writer_puts(ks_json_writer *w, const char *s)
{
	return writer_put(w, s, strlen(s));
}

static int writer_newline(ks_json_writer *w)
{
	int r;

	if (!w->pretty)
		return 0;
	r = writer_put(w, "\n", 1);
	for (unsigned i = 0; r >= 0 && i < w->depth; i++)
		r = writer_put(w, "  ", 2);
	return r;
}

/* Separator and indentation before an element of an array or a member of an object. */
static int writer_element(ks_json_writer *w)
{
	int r;

	if (w->has_items & BIT(w->depth - 1)) {
		r = writer_put(w, ",", 1);
		if (r < 0)
			return r;
	}
	w->has_items |= BIT(w->depth - 1);
	return writer_newline(w);
}

static int writer_before_value(ks_json_writer *w)
{
	if (w->error)
		return w->error;
	if (w->done)
		return writer_fail(w, -EINVAL);
	if (w->depth == 0)
		return 0;
	if (w->in_object & BIT(w->depth - 1)) {
		if (!w->want_value)
			return writer_fail(w, -EINVAL);
		w->want_value = false;
		return 0;
	}
	return writer_element(w);
}

static void writer_after_value(ks_json_writer *w)
{
	if (w->depth == 0 && !w->error)
		w->done = true;
}

static int writer_begin(ks_json_writer *w, bool object)
{
	int r;

	r = writer_before_value(w);
	if (r < 0)
		return r;
	if (w->depth >= KS_JSON_MAX_DEPTH)
		return writer_fail(w, -EINVAL);
	r = writer_put(w, object ? "{" : "[", 1);
	if (r < 0)
		return r;
	if (object)
		w->in_object |= BIT(w->depth);
	else
		w->in_object &= ~BIT(w->depth);
	w->has_items &= ~BIT(w->depth);
	w->depth++;
	return 0;
}

static int writer_end(ks_json_writer *w, bool object)
{
	int r;

	if (w->error)
		return w->error;
	if (w->depth == 0 || w->want_value || !!(w->in_object & BIT(w->depth - 1)) != object)
		return writer_fail(w, -EINVAL);
	bool had_items = w->has_items & BIT(w->depth - 1);
	w->depth--;
	if (had_items) {
		r = writer_newline(w);
		if (r < 0)
			return r;
	}
	r = writer_put(w, object ? "}" : "]", 1);
	if (r < 0)
		return r;
	writer_after_value(w);
	return 0;
}

int ks_json_write_object_begin(ks_json_writer *w)
{
	return writer_begin(w, true);
}

int ks_json_write_object_end(ks_json_writer *w)
{
	return writer_end(w, true);
}

int ks_json_write_array_begin(ks_json_writer *w)
{
	return writer_begin(w, false);
}

int ks_json_write_array_end(ks_json_writer *w)
{
	return writer_end(w, false);
}

static int writer_quoted(ks_json_writer *w, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *) s, *end = p + len;
	int r;

	r = writer_put(w, "\"", 1);
	while (r >= 0 && p < end) {
		const unsigned char *run = p;
		uint32_t cp;
		size_t k;

		while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
			p++;
		if (p > run) {
			r = writer_put(w, (const char *) run, (size_t) (p - run));
			continue;
		}
		switch (*p) {
		case '"':
			r = writer_put(w, "\\\"", 2);
			break;
		case '\\':
			r = writer_put(w, "\\\\", 2);
			break;
		case '\n':
			r = writer_put(w, "\\n", 2);
			break;
		case '\r':
			r = writer_put(w, "\\r", 2);
			break;
		case '\t':
			r = writer_put(w, "\\t", 2);
			break;
		case '\b':
			r = writer_put(w, "\\b", 2);
			break;
		case '\f':
			r = writer_put(w, "\\f", 2);
			break;
		case 0:
			r = writer_put(w, "\xef\xbf\xbd", 3);
			break;
		default:
			if (*p < 0x20) {
				char u[] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };
				r = writer_put(w, u, sizeof(u));
				break;
			}
			k = utf8_decode(p, (size_t) (end - p), &cp);
			if (k == 0) {
				r = writer_put(w, "\xef\xbf\xbd", 3);
				break;
			}
			r = writer_put(w, (const char *) p, k);
			p += k;
			continue;
		}
		p++;
	}
	if (r >= 0)
		r = writer_put(w, "\"", 1);
	return r;
}

int ks_json_write_key(ks_json_writer *w, const char *key)
{
	int r;

	if (w->error)
		return w->error;
	if (!key || w->depth == 0 || !(w->in_object & BIT(w->depth - 1)) || w->want_value)
		return writer_fail(w, -EINVAL);
	r = writer_element(w);
	if (r >= 0)
		r = writer_quoted(w, key, strlen(key));
	if (r >= 0)
		r = writer_puts(w, w->pretty ? ": " : ":");
	if (r < 0)
		return r;
	w->want_value = true;
	return 0;
}

/* A scalar whose text is ready. */
static int writer_scalar(ks_json_writer *w, const char *text)
{
	int r;

	r = writer_before_value(w);
	if (r >= 0)
		r = writer_puts(w, text);
	if (r < 0)
		return r;
	writer_after_value(w);
	return 0;
}

int ks_json_write_string_len(ks_json_writer *w, const char *s, size_t len)
{
	int r;

	if (!s)
		return ks_json_write_null(w);
	r = writer_before_value(w);
	if (r >= 0)
		r = writer_quoted(w, s, len);
	if (r < 0)
		return r;
	writer_after_value(w);
	return 0;
}

int ks_json_write_string(ks_json_writer *w, const char *s)
{
	return ks_json_write_string_len(w, s, s ? strlen(s) : 0);
}

int ks_json_write_int(ks_json_writer *w, int64_t v)
{
	char t[32];

	snprintf(t, sizeof(t), "%" PRId64, v);
	return writer_scalar(w, t);
}

int ks_json_write_uint(ks_json_writer *w, uint64_t v)
{
	char t[32];

	snprintf(t, sizeof(t), "%" PRIu64, v);
	return writer_scalar(w, t);
}

int ks_json_write_double(ks_json_writer *w, double v)
{
	char t[40];

	if (w->error)
		return w->error;
	if (!isfinite(v))
		return writer_fail(w, -EINVAL);

	/* The decimal point must be '.' whatever locale the front end set. */
	locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t) 0);
	if (c == (locale_t) 0)
		return writer_fail(w, -ENOMEM);
	locale_t old = uselocale(c);
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(t, sizeof(t), "%.*g", prec, v);
		if (strtod(t, NULL) == v)
			break;
	}
	uselocale(old);
	freelocale(c);
	return writer_scalar(w, t);
}

int ks_json_write_bool(ks_json_writer *w, bool v)
{
	return writer_scalar(w, v ? "true" : "false");
}

int ks_json_write_null(ks_json_writer *w)
{
	return writer_scalar(w, "null");
}

int ks_json_write_text(ks_json_writer *w, const char *text)
{
	ks_json *j = NULL;
	int r;

	if (w->error)
		return w->error;
	r = ks_json_parse(text, strlen(text), &j, NULL);
	if (r < 0)
		return writer_fail(w, r);
	r = ks_json_write_value(w, j);
	ks_json_free(j);
	return r;
}

int ks_json_write_value(ks_json_writer *w, const ks_json *j)
{
	int r;

	switch (ks_json_get_type(j)) {
	case KS_JSON_NULL:
		return ks_json_write_null(w);
	case KS_JSON_BOOL:
		return ks_json_write_bool(w, j->boolean);
	case KS_JSON_NUMBER:
		return writer_scalar(w, j->str);
	case KS_JSON_STRING:
		return ks_json_write_string(w, j->str);
	case KS_JSON_ARRAY:
	case KS_JSON_OBJECT: {
		bool object = j->type == KS_JSON_OBJECT;

		r = writer_begin(w, object);
		for (size_t i = 0; r >= 0 && i < j->n_items; i++) {
			if (object)
				r = ks_json_write_key(w, j->items[i].key);
			if (r >= 0)
				r = ks_json_write_value(w, &j->items[i]);
		}
		if (r < 0)
			return r;
		return writer_end(w, object);
	}
	default:
		return writer_fail(w, -EINVAL);
	}
}
