/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json_p.h"
#include "ksync.h"
#include "macro.h"

/* Parses text and writes it back compactly. */
static char *roundtrip(const char *text, size_t len, int *ret_r, size_t *ret_off)
{
	ks_json *j = NULL;
	ks_buf b = {};
	ks_json_writer w;

	*ret_r = ks_json_parse(text, len, &j, ret_off);
	if (*ret_r < 0)
		return NULL;
	ks_json_writer_init(&w, &b, false);
	assert_int_equal(ks_json_write_value(&w, j), 0);
	assert_int_equal(ks_json_writer_finish(&w), 0);
	ks_json_free(j);
	return ks_buf_steal(&b);
}

static const struct {
	const char *in;
	const char *out;
} valid[] = {
	{ "null", "null" },
	{ " true ", "true" },
	{ "\t\r\nfalse\n", "false" },
	{ "0", "0" },
	{ "-0", "-0" },
	{ "12345678901234567890", "12345678901234567890" },
	{ "-1.5e-3", "-1.5e-3" },
	{ "1E+2", "1E+2" },
	{ "\"\"", "\"\"" },
	{ "\"a\\\"b\\\\c\\/d\"", "\"a\\\"b\\\\c/d\"" },
	{ "\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\"" },
	{ "\"\\u0001\\u001f\\u007f\"", "\"\\u0001\\u001f\x7f\"" },
	{ "\"\\u00e9\\u20AC\"", "\"\xc3\xa9\xe2\x82\xac\"" },
	{ "\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"" },
	{ "\"\xf0\x9f\x98\x80 \xc3\xa9\"", "\"\xf0\x9f\x98\x80 \xc3\xa9\"" },
	{ "[]", "[]" },
	{ "{}", "{}" },
	{ " [ 1 , [ ] , { } , \"x\" ] ", "[1,[],{},\"x\"]" },
	{ "{\"a\":1,\"b\":[true,null],\"c\":{\"d\":\"e\"}}",
	  "{\"a\":1,\"b\":[true,null],\"c\":{\"d\":\"e\"}}" },
	{ "{\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}" },
	{ "{\"\":0}", "{\"\":0}" },
};

static void test_valid(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(valid); i++) {
		int r;
		size_t off;
		char *s = roundtrip(valid[i].in, strlen(valid[i].in), &r, &off);

		if (r < 0)
			fail_msg("case %zu '%s': %d at %zu", i, valid[i].in, r, off);
		assert_string_equal(s, valid[i].out);
		free(s);
	}
}

static const struct {
	const char *in;
	int err;
	size_t off;
} invalid[] = {
	{ "", -EBADMSG, 0 },
	{ "   ", -EBADMSG, 3 },
	{ "nul", -EBADMSG, 0 },
	{ "truex", -EBADMSG, 4 },
	{ "True", -EBADMSG, 0 },
	{ "1 2", -EBADMSG, 2 },
	{ "01", -EBADMSG, 1 },
	{ "+1", -EBADMSG, 0 },
	{ "-", -EBADMSG, 1 },
	{ "1.", -EBADMSG, 2 },
	{ ".5", -EBADMSG, 0 },
	{ "1e", -EBADMSG, 2 },
	{ "1e+", -EBADMSG, 3 },
	{ "0x10", -EBADMSG, 1 },
	{ "NaN", -EBADMSG, 0 },
	{ "1e999", -ERANGE, 0 },
	{ "-1e999", -ERANGE, 0 },
	{ "\"abc", -EBADMSG, 4 },
	{ "\"abc\\", -EBADMSG, 5 },
	{ "\"a\nb\"", -EBADMSG, 2 },
	{ "\"a\tb\"", -EBADMSG, 2 },
	{ "\"\\x\"", -EBADMSG, 1 },
	{ "\"\\u12\"", -EBADMSG, 1 },
	{ "\"\\u12G4\"", -EBADMSG, 1 },
	{ "\"\\u0000\"", -EBADMSG, 1 },
	{ "\"\\ud800\"", -EBADMSG, 1 },
	{ "\"\\ud800x\"", -EBADMSG, 1 },
	{ "\"\\ud800\\u0041\"", -EBADMSG, 1 },
	{ "\"\\udc00\\ud800\"", -EBADMSG, 1 },
	{ "\"\xff\"", -EBADMSG, 1 },
	{ "\"\xc0\xaf\"", -EBADMSG, 1 },
	{ "\"\xe0\x80\x80\"", -EBADMSG, 1 },
	{ "\"\xed\xa0\x80\"", -EBADMSG, 1 },
	{ "\"\xf4\x90\x80\x80\"", -EBADMSG, 1 },
	{ "\"\xe2\x82\"", -EBADMSG, 1 },
	{ "\xef\xbb\xbf{}", -EBADMSG, 0 },
	{ "[", -EBADMSG, 1 },
	{ "[1", -EBADMSG, 2 },
	{ "[1,", -EBADMSG, 3 },
	{ "[1,]", -EBADMSG, 3 },
	{ "[,1]", -EBADMSG, 1 },
	{ "[1 2]", -EBADMSG, 3 },
	{ "]", -EBADMSG, 0 },
	{ "{", -EBADMSG, 1 },
	{ "{\"a\"}", -EBADMSG, 4 },
	{ "{\"a\":}", -EBADMSG, 5 },
	{ "{\"a\":1,}", -EBADMSG, 7 },
	{ "{a:1}", -EBADMSG, 1 },
	{ "{\"a\" 1}", -EBADMSG, 5 },
	{ "{\"a\":1]", -EBADMSG, 6 },
	{ "[1}", -EBADMSG, 2 },
	{ "{'a':1}", -EBADMSG, 1 },
	{ "[1]x", -EBADMSG, 3 },
	{ "/* */ 1", -EBADMSG, 0 },
};

static void test_invalid(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
		ks_json *j = NULL;
		size_t off = SIZE_MAX;
		int r = ks_json_parse(invalid[i].in, strlen(invalid[i].in), &j, &off);

		if (r != invalid[i].err || off != invalid[i].off)
			fail_msg("case %zu '%s': got %d at %zu, want %d at %zu", i, invalid[i].in,
				 r, off, invalid[i].err, invalid[i].off);
		assert_null(j);
	}
}

/* The length given is honoured: a NUL inside it is not whitespace, and text after it is
 * never read. */
static void test_length(void **state)
{
	ks_json *j = NULL;
	size_t off;

	assert_int_equal(ks_json_parse("[1]\0", 4, &j, &off), -EBADMSG);
	assert_int_equal(off, 3);
	assert_int_equal(ks_json_parse("\"a\0b\"", 5, &j, &off), -EBADMSG);
	assert_int_equal(ks_json_parse("[1]]]]", 3, &j, NULL), 0);
	assert_int_equal(ks_json_count(j), 1);
	j = ks_json_free(j);
	assert_int_equal(ks_json_parse("truefalse", 4, &j, NULL), 0);
	assert_true(ks_json_is_true(j));
	j = ks_json_free(j);
	assert_int_equal(ks_json_parse(NULL, 0, &j, NULL), -EBADMSG);
}

static char *repeat(const char *a, size_t n, const char *mid, const char *b)
{
	size_t la = strlen(a), lm = strlen(mid), lb = strlen(b);
	char *s = malloc(n * (la + lb) + lm + 1), *p = s;

	assert_non_null(s);
	for (size_t i = 0; i < n; i++, p += la)
		memcpy(p, a, la);
	memcpy(p, mid, lm);
	p += lm;
	for (size_t i = 0; i < n; i++, p += lb)
		memcpy(p, b, lb);
	*p = 0;
	return s;
}

static void test_caps(void **state)
{
	static const struct {
		const char *open, *mid, *close;
		size_t n;
		int want;
	} depth[] = {
		{ "[", "", "]", KS_JSON_MAX_DEPTH, 0 },
		{ "[", "", "]", KS_JSON_MAX_DEPTH + 1, -E2BIG },
		{ "{\"k\":", "1", "}", KS_JSON_MAX_DEPTH, 0 },
		{ "{\"k\":", "1", "}", KS_JSON_MAX_DEPTH + 1, -E2BIG },
		{ "[", "", "", 100000, -E2BIG },
	};
	for (size_t i = 0; i < ELEMENTSOF(depth); i++) {
		char *s = repeat(depth[i].open, depth[i].n, depth[i].mid, depth[i].close);
		ks_json *j = NULL;

		assert_int_equal(ks_json_parse(s, strlen(s), &j, NULL), depth[i].want);
		ks_json_free(j);
		free(s);
	}

	/* One value more than allowed: the array itself and KS_JSON_MAX_VALUES zeros. */
	size_t n = KS_JSON_MAX_VALUES;
	char *s = malloc(2 * n + 2);
	assert_non_null(s);
	s[0] = '[';
	for (size_t i = 0; i < n; i++) {
		s[1 + 2 * i] = '0';
		s[2 + 2 * i] = ',';
	}
	s[2 * n] = ']';
	ks_json *j = NULL;
	assert_int_equal(ks_json_parse(s, 2 * n + 1, &j, NULL), -E2BIG);
	s[2 * n - 2] = ']';
	assert_int_equal(ks_json_parse(s, 2 * n - 1, &j, NULL), 0);
	assert_int_equal(ks_json_count(j), n - 1);
	ks_json_free(j);
	free(s);

	j = NULL;
	assert_int_equal(ks_json_parse("0", (size_t) KS_JSON_MAX_TEXT + 1, &j, NULL), -E2BIG);
	assert_null(j);
}

static void test_access(void **state)
{
	static const char text[] =
		"{\"name\":\"work\",\"n\":42,\"big\":9223372036854775807,"
		"\"small\":-9223372036854775808,\"over\":9223372036854775808,"
		"\"f\":2.5,\"whole\":3.0,\"e\":1e3,\"t\":true,\"no\":false,\"nil\":null,"
		"\"list\":[\"a\",{\"x\":1}],\"dup\":1,\"dup\":2}";
	ks_json *j = NULL;
	int64_t v;
	double d;

	assert_int_equal(ks_json_parse(text, strlen(text), &j, NULL), 0);
	assert_int_equal(ks_json_get_type(j), KS_JSON_OBJECT);
	assert_int_equal(ks_json_count(j), 14);
	assert_string_equal(ks_json_key_at(j, 0), "name");
	assert_null(ks_json_key_at(j, 14));
	assert_null(ks_json_at(j, 14));

	assert_string_equal(ks_json_get_string(j, "name"), "work");
	assert_null(ks_json_get_string(j, "n"));
	assert_null(ks_json_get_string(j, "missing"));
	assert_int_equal(ks_json_get_int(j, "n", -1), 42);
	assert_int_equal(ks_json_get_int(j, "name", -1), -1);
	assert_int_equal(ks_json_get_int(j, "big", 0), INT64_MAX);
	assert_int_equal(ks_json_get_int(j, "small", 0), INT64_MIN);
	assert_int_equal(ks_json_int(ks_json_get(j, "over"), &v), -ERANGE);
	assert_int_equal(ks_json_int(ks_json_get(j, "f"), &v), -ERANGE);
	assert_int_equal(ks_json_get_int(j, "whole", 0), 3);
	assert_int_equal(ks_json_get_int(j, "e", 0), 1000);
	assert_int_equal(ks_json_double(ks_json_get(j, "f"), &d), 0);
	assert_true(d == 2.5);
	assert_int_equal(ks_json_double(ks_json_get(j, "name"), &d), -EINVAL);
	assert_int_equal(ks_json_int(NULL, &v), -EINVAL);

	assert_true(ks_json_get_bool(j, "t", false));
	assert_false(ks_json_get_bool(j, "no", true));
	assert_true(ks_json_get_bool(j, "nil", true));
	assert_true(ks_json_is_true(ks_json_get(j, "t")));
	assert_false(ks_json_is_true(ks_json_get(j, "n")));

	assert_int_equal(ks_json_get_type(ks_json_get(j, "nil")), KS_JSON_NULL);
	assert_int_equal(ks_json_get_type(ks_json_get(j, "missing")), KS_JSON_NULL);
	assert_null(ks_json_get(j, "missing"));

	const ks_json *list = ks_json_get(j, "list");
	assert_int_equal(ks_json_get_type(list), KS_JSON_ARRAY);
	assert_int_equal(ks_json_count(list), 2);
	assert_string_equal(ks_json_string(ks_json_at(list, 0)), "a");
	assert_null(ks_json_key_at(list, 0));
	assert_null(ks_json_get(list, "x"));
	assert_int_equal(ks_json_get_int(ks_json_at(list, 1), "x", 0), 1);
	assert_null(ks_json_at(list, 2));
	assert_int_equal(ks_json_count(ks_json_get(j, "name")), 0);

	assert_int_equal(ks_json_get_int(j, "dup", 0), 2);
	ks_json_free(j);
	assert_null(ks_json_free(NULL));
}

/* Writes the value described by a tiny program: {, }, [, ], k (key "k"), s, i, b, n. */
static int write_prog(ks_json_writer *w, const char *prog)
{
	int r = 0;

	for (const char *p = prog; *p; p++)
		switch (*p) {
		case '{':
			r = ks_json_write_object_begin(w);
			break;
		case '}':
			r = ks_json_write_object_end(w);
			break;
		case '[':
			r = ks_json_write_array_begin(w);
			break;
		case ']':
			r = ks_json_write_array_end(w);
			break;
		case 'k':
			r = ks_json_write_key(w, "k");
			break;
		case 's':
			r = ks_json_write_string(w, "s");
			break;
		case 'i':
			r = ks_json_write_int(w, -7);
			break;
		case 'b':
			r = ks_json_write_bool(w, true);
			break;
		case 'n':
			r = ks_json_write_null(w);
			break;
		}
	return r;
}

static void test_writer_structure(void **state)
{
	static const struct {
		const char *prog;
		int want;
		const char *compact;
		const char *pretty;
	} c[] = {
		{ "n", 0, "null", "null" },
		{ "{}", 0, "{}", "{}" },
		{ "[]", 0, "[]", "[]" },
		{ "{ks}", 0, "{\"k\":\"s\"}", "{\n  \"k\": \"s\"\n}" },
		{ "[sib]", 0, "[\"s\",-7,true]", "[\n  \"s\",\n  -7,\n  true\n]" },
		{ "{k[i{}]k[]}", 0, "{\"k\":[-7,{}],\"k\":[]}",
		  "{\n  \"k\": [\n    -7,\n    {}\n  ],\n  \"k\": []\n}" },
		{ "", -EINVAL, NULL, NULL },
		{ "[", -EINVAL, NULL, NULL },
		{ "{k", -EINVAL, NULL, NULL },
		{ "{s}", -EINVAL, NULL, NULL },
		{ "{kk}", -EINVAL, NULL, NULL },
		{ "{k}", -EINVAL, NULL, NULL },
		{ "[k]", -EINVAL, NULL, NULL },
		{ "k", -EINVAL, NULL, NULL },
		{ "[}", -EINVAL, NULL, NULL },
		{ "{]", -EINVAL, NULL, NULL },
		{ "]", -EINVAL, NULL, NULL },
		{ "nn", -EINVAL, NULL, NULL },
		{ "[]s", -EINVAL, NULL, NULL },
	};
	for (size_t i = 0; i < ELEMENTSOF(c); i++)
		for (int pretty = 0; pretty <= 1; pretty++) {
			ks_buf b = {};
			ks_json_writer w;

			ks_json_writer_init(&w, &b, pretty);
			(void) write_prog(&w, c[i].prog);
			int r = ks_json_writer_finish(&w);
			if (r != c[i].want)
				fail_msg("case %zu '%s': %d", i, c[i].prog, r);
			if (r == 0)
				assert_string_equal(b.data, pretty ? c[i].pretty : c[i].compact);
			/* The first error sticks. */
			if (w.error)
				assert_int_equal(ks_json_write_null(&w), w.error);
			ks_buf_done(&b);
		}
}

static void test_writer_depth(void **state)
{
	ks_buf b = {};
	ks_json_writer w;

	ks_json_writer_init(&w, &b, false);
	for (unsigned i = 0; i < KS_JSON_MAX_DEPTH; i++)
		assert_int_equal(ks_json_write_array_begin(&w), 0);
	assert_int_equal(ks_json_write_array_begin(&w), -EINVAL);
	ks_buf_done(&b);
}

static void test_writer_strings(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} c[] = {
		{ "plain", 5, "\"plain\"" },
		{ "q\"b\\s/", 6, "\"q\\\"b\\\\s/\"" },
		{ "\n\r\t\b\f\x01\x1f\x7f", 8, "\"\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\"" },
		{ "\xc3\xa9\xf0\x9f\x98\x80", 6, "\"\xc3\xa9\xf0\x9f\x98\x80\"" },
		{ "a\xff" "b", 3, "\"a\xef\xbf\xbd" "b\"" },
		{ "\xc3", 1, "\"\xef\xbf\xbd\"" },
		{ "\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
		{ "a\0b", 3, "\"a\xef\xbf\xbd" "b\"" },
		{ "", 0, "\"\"" },
	};
	for (size_t i = 0; i < ELEMENTSOF(c); i++) {
		ks_buf b = {};
		ks_json_writer w;

		ks_json_writer_init(&w, &b, false);
		assert_int_equal(ks_json_write_string_len(&w, c[i].in, c[i].len), 0);
		assert_int_equal(ks_json_writer_finish(&w), 0);
		assert_string_equal(b.data, c[i].out);

		/* What the writer produces, the parser reads. */
		ks_json *j = NULL;
		assert_int_equal(ks_json_parse(b.data, b.len, &j, NULL), 0);
		ks_json_free(j);
		ks_buf_done(&b);
	}

	ks_buf b = {};
	ks_json_writer w;
	ks_json_writer_init(&w, &b, false);
	assert_int_equal(ks_json_write_array_begin(&w), 0);
	assert_int_equal(ks_json_write_string(&w, NULL), 0);
	assert_int_equal(ks_json_write_object_begin(&w), 0);
	assert_int_equal(ks_json_write_key(&w, "\x01k\xff"), 0);
	assert_int_equal(ks_json_write_uint(&w, UINT64_MAX), 0);
	assert_int_equal(ks_json_write_object_end(&w), 0);
	assert_int_equal(ks_json_write_array_end(&w), 0);
	assert_int_equal(ks_json_writer_finish(&w), 0);
	assert_string_equal(b.data, "[null,{\"\\u0001k\xef\xbf\xbd\":18446744073709551615}]");
	ks_buf_done(&b);
}

static void test_writer_numbers(void **state)
{
	static const struct {
		double v;
		const char *out;
	} c[] = {
		{ 0.0, "0" },
		{ 1.5, "1.5" },
		{ -0.1, "-0.1" },
		{ 1e300, "1e+300" },
		{ 0.1 + 0.2, "0.30000000000000004" },
		{ 1.0 / 3.0, "0.3333333333333333" },
	};
	for (size_t i = 0; i < ELEMENTSOF(c); i++) {
		ks_buf b = {};
		ks_json_writer w;
		ks_json *j = NULL;
		double d;

		ks_json_writer_init(&w, &b, false);
		assert_int_equal(ks_json_write_double(&w, c[i].v), 0);
		assert_string_equal(b.data, c[i].out);
		assert_int_equal(ks_json_parse(b.data, b.len, &j, NULL), 0);
		assert_int_equal(ks_json_double(j, &d), 0);
		assert_true(d == c[i].v);
		ks_json_free(j);
		ks_buf_done(&b);
	}

	ks_buf b = {};
	ks_json_writer w;
	ks_json_writer_init(&w, &b, false);
	assert_int_equal(ks_json_write_int(&w, INT64_MIN), 0);
	assert_string_equal(b.data, "-9223372036854775808");
	ks_buf_reset(&b);
	ks_json_writer_init(&w, &b, false);
	assert_int_equal(ks_json_write_double(&w, INFINITY), -EINVAL);
	assert_int_equal(ks_json_writer_finish(&w), -EINVAL);
	ks_buf_done(&b);
}

/* A capped buffer: the writer passes the buffer's error on and keeps it. */
static void test_writer_buffer_cap(void **state)
{
	ks_buf b = { .max = 8 };
	ks_json_writer w;

	ks_json_writer_init(&w, &b, false);
	assert_int_equal(ks_json_write_array_begin(&w), 0);
	assert_int_equal(ks_json_write_string(&w, "too long for the cap"), -EFBIG);
	assert_int_equal(ks_json_write_array_end(&w), -EFBIG);
	assert_int_equal(ks_json_writer_finish(&w), -EFBIG);
	ks_buf_done(&b);
}

/* The writer of ks_json_writer_new(), as the front ends have it: its own buffer, the text
 * handed over once, nothing more taken after. */
static void test_writer_own(void **state)
{
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	char *text = NULL;

	for (int pretty = 0; pretty <= 1; pretty++) {
		assert_int_equal(ks_json_writer_new(pretty, &w), 0);
		assert_int_equal(ks_json_writer_steal(w, &text), -EINVAL);
		assert_null(text);
		assert_int_equal(ks_json_write_object_begin(w), 0);
		assert_int_equal(ks_json_write_key(w, "s"), 0);
		assert_int_equal(ks_json_write_string(w, "a\xff\n"), 0);
		assert_int_equal(ks_json_write_key(w, "n"), 0);
		assert_int_equal(ks_json_write_uint(w, 7), 0);
		assert_int_equal(ks_json_writer_steal(w, &text), -EINVAL);
		assert_int_equal(ks_json_write_object_end(w), 0);
		assert_int_equal(ks_json_writer_finish(w), 0);
		assert_int_equal(ks_json_writer_steal(w, &text), 0);
		assert_string_equal(text, pretty ? "{\n  \"s\": \"a\xef\xbf\xbd\\n\",\n  \"n\": 7\n}"
					 : "{\"s\":\"a\xef\xbf\xbd\\n\",\"n\":7}");
		free(text);
		text = NULL;
		/* Spent: a second value would make the text two. */
		assert_int_equal(ks_json_write_null(w), -EINVAL);
		w = ks_json_writer_free(w);
		assert_null(w);
	}

	/* Texts from elsewhere go in as values, checked. */
	assert_int_equal(ks_json_writer_new(false, &w), 0);
	assert_int_equal(ks_json_write_array_begin(w), 0);
	assert_int_equal(ks_json_write_text(w, " {\"a\": [1, \"\\u00e9\"]} "), 0);
	assert_int_equal(ks_json_write_text(w, "null"), 0);
	assert_int_equal(ks_json_write_array_end(w), 0);
	assert_int_equal(ks_json_writer_steal(w, &text), 0);
	assert_string_equal(text, "[{\"a\":[1,\"\xc3\xa9\"]},null]");
	free(text);
	w = ks_json_writer_free(w);
	assert_int_equal(ks_json_writer_new(false, &w), 0);
	assert_int_equal(ks_json_write_array_begin(w), 0);
	assert_int_equal(ks_json_write_text(w, "{\"a\":"), -EBADMSG);
	assert_int_equal(ks_json_write_array_end(w), -EBADMSG);
	assert_int_equal(ks_json_writer_finish(w), -EBADMSG);
	w = ks_json_writer_free(w);

	/* A writer abandoned half way is freed with what it holds (the cleanup at the end). */
	assert_null(ks_json_writer_free(NULL));
	assert_int_equal(ks_json_writer_new(false, &w), 0);
	assert_int_equal(ks_json_write_array_begin(w), 0);
	assert_int_equal(ks_json_write_string(w, "left"), 0);
}

/* A pretty-printed parse of a compact text parses to the same compact text. */
static void test_pretty_roundtrip(void **state)
{
	static const char text[] =
		"{\"accounts\":[{\"name\":\"w\",\"last_sync\":1764148440,\"collections\":"
		"[{\"path\":\"calendars/t\",\"components\":[\"VTODO\"],\"readonly\":false}],"
		"\"conflicts\":[]}],\"version\":\"0.1\",\"x\":-1.25E-7}";
	ks_json *j = NULL, *k = NULL;
	ks_buf pretty = {}, compact = {};
	ks_json_writer w;

	assert_int_equal(ks_json_parse(text, strlen(text), &j, NULL), 0);
	ks_json_writer_init(&w, &pretty, true);
	assert_int_equal(ks_json_write_value(&w, j), 0);
	assert_int_equal(ks_json_writer_finish(&w), 0);
	assert_non_null(strstr(pretty.data, "\n      \"collections\": [\n"));
	assert_int_equal(ks_json_parse(pretty.data, pretty.len, &k, NULL), 0);
	ks_json_writer_init(&w, &compact, false);
	assert_int_equal(ks_json_write_value(&w, k), 0);
	assert_string_equal(compact.data, text);
	ks_json_free(j);
	ks_json_free(k);
	ks_buf_done(&pretty);
	ks_buf_done(&compact);
}

/* Every prefix of a valid text, and every single-byte corruption of it, either parses or
 * fails cleanly (the sanitizer build checks the "cleanly"). */
static void test_mutations(void **state)
{
	static const char text[] =
		"{\"a\":[1,-2.5e3,true,false,null,\"\\u00e9\\ud83d\\ude00\\n\"],"
		"\"b\":{\"c\":\"\xc3\xa9\"}}";
	static const char bytes[] = "{}[]\":,\\u0-.eE1tfn \x80\xff\xc3\xed";
	size_t n = strlen(text);
	char *copy = malloc(n);

	assert_non_null(copy);
	for (size_t len = 0; len < n; len++) {
		/* Exactly len bytes, so that a read past the end is caught. */
		char *prefix = malloc(len ? len : 1);
		ks_json *j = NULL;

		assert_non_null(prefix);
		memcpy(prefix, text, len);
		assert_int_equal(ks_json_parse(prefix, len, &j, NULL), -EBADMSG);
		assert_null(j);
		free(prefix);
	}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < sizeof(bytes) - 1; k++) {
			ks_json *j = NULL;
			memcpy(copy, text, n);
			copy[i] = bytes[k];
			int r = ks_json_parse(copy, n, &j, NULL);
			assert_true(r == 0 || r == -EBADMSG || r == -ERANGE);
			ks_json_free(j);
		}
	free(copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_length),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_access),
		cmocka_unit_test(test_writer_structure),
		cmocka_unit_test(test_writer_depth),
		cmocka_unit_test(test_writer_strings),
		cmocka_unit_test(test_writer_numbers),
		cmocka_unit_test(test_writer_buffer_cap),
		cmocka_unit_test(test_writer_own),
		cmocka_unit_test(test_pretty_roundtrip),
		cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
