/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"

#include "item_p.h"
#include "limits.h"
#include "macro.h"
#include "vcard_p.h"

#define read_fixture(name, ret_len) ks_test_read_fixture("vcard", name, ret_len)

static void assert_str_or_null(const char *got, const char *want)
{
	if (!want)
		assert_null(got);
	else {
		assert_non_null(got);
		assert_string_equal(got, want);
	}
}

/* ---- ks_item_parse_info() / ks_vcard_parse_info() on the fixtures ------------------------- */

static const struct {
	const char *file;
	int r;
	const char *uid;
	const char *summary;
	const char *email;
	const char *msg;	/* for failures: a substring of the message */
} info_cases[] = {
	{ .file = "v3_full.vcf", .uid = "0d4c3f9e-5d1a-4b7e-9a51-7f2c1e6b8a90",
	  .summary = "Dr. Anne-Sophie Lefèvre, PhD", .email = "anne-sophie.lefevre@example.org" },
	{ .file = "v4_full.vcf", .uid = "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1",
	  .summary = "Jürgen Müller-Lüdenscheidt von Hohenzollern-Sigmaringen und Weißenburg",
	  .email = "juergen.mueller@example.net" },
	{ .file = "folded_utf8.vcf", .uid = "fold-utf8-7731@example.org",
	  .summary = "Zoë Ødegård" },
	{ .file = "n_only.vcf", .uid = "n-only-2bd7a1@example.com", .summary = "Siobhán O'Brien",
	  .email = "siobhan.obrien@example.ie" },
	{ .file = "two_same_uid.vcf", .uid = "dup-33@example.org", .summary = "Chloé Martin",
	  .email = "chloe@example.org" },
	{ .file = "v21_qp.vcf", .uid = "v21-qp-88@example.se",
	  .summary = "Björn Åström – Sjöfartsverket", .email = "bjorn.astrom@example.se" },
	{ .file = "no_uid.vcf", .r = -ENODATA, .msg = "vCard has no UID" },
	{ .file = "two_uids.vcf", .r = -ENOTUNIQ, .msg = "different UIDs" },
	{ .file = "invalid_utf8.vcf", .r = -EBADMSG, .msg = "invalid UTF-8 at byte 59 (line 4)" },
	{ .file = "missing_end.vcf", .r = -EBADMSG, .msg = "not closed by END:VCARD" },
	{ .file = "no_colon.vcf", .r = -EBADMSG, .msg = "line 3: no ':' in content line" },
	{ .file = "cr_only.vcf", .r = -EBADMSG, .msg = "line 1:" },
};

static void check_info_case(size_t i, int (*parse)(const char *, size_t, ks_item_info *, char **))
{
	ks_item_info info = { .priority = 42 };
	char *msg = NULL;
	size_t len;
	char *data = read_fixture(info_cases[i].file, &len);
	int r;

	r = parse(data, len, &info, &msg);
	if (r != info_cases[i].r)
		fail_msg("%s: got %d (%s), want %d", info_cases[i].file, r, msg ? msg : "-",
			 info_cases[i].r);
	if (r == 0) {
		assert_null(msg);
		assert_int_equal(info.kind, KS_ITEM_VCARD);
		assert_str_or_null(info.uid, info_cases[i].uid);
		assert_str_or_null(info.summary, info_cases[i].summary);
		assert_str_or_null(info.email, info_cases[i].email);
		assert_null(info.dtstart);
		assert_null(info.dtend);
		assert_null(info.due);
		assert_null(info.status);
		assert_int_equal(info.priority, 0);
		assert_false(info.has_rrule);
		ks_item_info_done(&info);
	} else {
		/* *ret is left alone on failure. */
		assert_int_equal(info.priority, 42);
		assert_null(info.uid);
		assert_non_null(msg);
		if (!strstr(msg, info_cases[i].msg))
			fail_msg("%s: message '%s' lacks '%s'", info_cases[i].file, msg,
				 info_cases[i].msg);
	}
	free(msg);
	free(data);
}

static void test_info_fixtures(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(info_cases); i++) {
		check_info_case(i, ks_vcard_parse_info);
		check_info_case(i, ks_item_parse_info);
	}
}

/* Without reterr_msg nothing is allocated for the message. */
static void test_info_no_msg(void **state)
{
	ks_item_info info = {};
	size_t len;
	char *data = read_fixture("two_uids.vcf", &len);

	assert_int_equal(ks_vcard_parse_info(data, len, &info, NULL), -ENOTUNIQ);
	free(data);
}

/* ---- ks_vcard_parse(): the structure of a card ------------------------------------------- */

static void test_parse_v3_structure(void **state)
{
	ks_vcard *cards = NULL;
	size_t n = 0, len;
	char *msg = NULL;
	char *data = read_fixture("v3_full.vcf", &len);
	const ks_vcard_prop *p;

	assert_int_equal(ks_vcard_parse(data, len, &cards, &n, &msg), 0);
	assert_null(msg);
	assert_int_equal(n, 1);
	assert_string_equal(cards[0].version, "3.0");
	assert_null(ks_vcard_get(&cards[0], "BEGIN"));
	assert_null(ks_vcard_get(&cards[0], "END"));
	assert_null(ks_vcard_get(&cards[0], "VERSION"));

	/* The first EMAIL is in group item1; names are upper-cased, values are as written. */
	p = ks_vcard_get(&cards[0], "email");
	assert_non_null(p);
	assert_string_equal(p->group, "item1");
	assert_string_equal(p->name, "EMAIL");
	assert_int_equal(p->n_params, 2);
	assert_string_equal(p->params[0].name, "TYPE");
	assert_string_equal(p->params[0].value, "INTERNET");
	assert_string_equal(p->params[1].value, "pref");
	assert_string_equal(p->value, "anne-sophie.lefevre@example.org");

	p = ks_vcard_get(&cards[0], "X-ABLABEL");
	assert_non_null(p);
	assert_string_equal(p->group, "item1");
	assert_string_equal(p->value, "_$!<Other>!$_");

	/* Quotes removed, the comma-separated values kept together. */
	p = ks_vcard_get(&cards[0], "TEL");
	assert_non_null(p);
	assert_null(p->group);
	assert_string_equal(ks_vcard_param_get(p, "type"), "work,voice");
	assert_string_equal(p->params[1].value, "pref");
	assert_null(ks_vcard_param_get(p, "PREF"));

	/* Unfolded but still escaped. */
	p = ks_vcard_get(&cards[0], "NOTE");
	assert_non_null(p);
	assert_string_equal(p->value, "Rencontrée au salon 2023.\\nPréfère être contactée le "
			    "matin\\, pas le week-end.");

	p = ks_vcard_get(&cards[0], "ORG");
	assert_non_null(p);
	assert_string_equal(p->value, "Boulangerie du Lac\\; Succursale Nord;Comptabilité");

	ks_vcard_free_array(cards, n);
	free(data);
}

static void test_parse_v4_structure(void **state)
{
	ks_vcard *cards = NULL;
	size_t n = 0, len;
	char *data = read_fixture("v4_full.vcf", &len);
	const ks_vcard_prop *p;

	assert_int_equal(ks_vcard_parse(data, len, &cards, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(cards[0].version, "4.0");

	/* A quoted parameter value holding escapes and a fold in the value. */
	p = ks_vcard_get(&cards[0], "ADR");
	assert_non_null(p);
	assert_string_equal(ks_vcard_param_get(p, "LABEL"),
			    "Hauptstraße 1\\n10115 Berlin\\nDeutschland");
	assert_string_equal(p->value, ";;Hauptstraße 1;Berlin;;10115;Deutschland");

	p = ks_vcard_get(&cards[0], "TEL");
	assert_non_null(p);
	assert_string_equal(ks_vcard_param_get(p, "VALUE"), "uri");
	assert_string_equal(ks_vcard_param_get(p, "TYPE"), "voice,cell");
	assert_string_equal(p->value, "tel:+49-170-555-0199");

	ks_vcard_free_array(cards, n);
	free(data);
}

static void test_parse_v21(void **state)
{
	ks_vcard *cards = NULL;
	size_t n = 0, len;
	char *data = read_fixture("v21_qp.vcf", &len);
	const ks_vcard_prop *p;

	assert_int_equal(ks_vcard_parse(data, len, &cards, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(cards[0].version, "2.1");

	/* Bare parameters: encodings go to ENCODING, everything else to TYPE. */
	p = ks_vcard_get(&cards[0], "TEL");
	assert_non_null(p);
	assert_int_equal(p->n_params, 2);
	assert_string_equal(p->params[0].name, "TYPE");
	assert_string_equal(p->params[0].value, "WORK");
	assert_string_equal(p->params[1].name, "TYPE");
	assert_string_equal(p->params[1].value, "VOICE");

	/* The soft line break is joined; the value stays encoded. */
	p = ks_vcard_get(&cards[0], "FN");
	assert_non_null(p);
	assert_string_equal(ks_vcard_param_get(p, "ENCODING"), "QUOTED-PRINTABLE");
	assert_string_equal(ks_vcard_param_get(p, "charset"), "UTF-8");
	assert_string_equal(p->value,
			    "Bj=C3=B6rn =C3=85str=C3=B6m =E2=80=93 Sj=C3=B6fartsverket");

	ks_vcard_free_array(cards, n);
	free(data);
}

/* ---- ks_vcard_parse() on content lines --------------------------------------------------- */

static const struct {
	const char *name;
	const char *text;
	int r;
	size_t n_cards;
	const char *prop;	/* checked when set: its value ... */
	const char *value;
	const char *param;	/* ... and the value of this parameter */
	const char *param_value;
	const char *msg;
} line_cases[] = {
#define OK(n, t, nc, p, v) { .name = n, .text = t, .n_cards = nc, .prop = p, .value = v }
#define OKP(n, t, p, v, pn, pv)                                                              \
	{ .name = n, .text = t, .n_cards = 1, .prop = p, .value = v, .param = pn,            \
	  .param_value = pv }
#define BAD(n, t, m) { .name = n, .text = t, .r = -EBADMSG, .msg = m }
	OK("crlf", "BEGIN:VCARD\r\nUID:1\r\nFN:A\r\nEND:VCARD\r\n", 1, "FN", "A"),
	OK("bare lf", "BEGIN:VCARD\nUID:1\nFN:A\nEND:VCARD\n", 1, "FN", "A"),
	OK("no final break", "BEGIN:VCARD\nUID:1\nEND:VCARD", 1, "UID", "1"),
	OK("fold with space", "BEGIN:VCARD\r\nFN:Ab\r\n cd\r\nEND:VCARD\r\n", 1, "FN", "Abcd"),
	OK("fold with tab", "BEGIN:VCARD\nFN:Ab\n\tcd\nEND:VCARD\n", 1, "FN", "Abcd"),
	OK("empty continuation line", "BEGIN:VCARD\nFN:\xc3\n \n \xa9\nEND:VCARD\n", 1, "FN",
	   "\xc3\xa9"),
	OK("fold keeps further blanks", "BEGIN:VCARD\nFN:Ab\n  cd\nEND:VCARD\n", 1, "FN", "Ab cd"),
	OKP("fold inside the name", "BEGIN:VCARD\nE\n MAIL;TY\n PE=work:x@example.org\nEND:VCARD\n",
	    "EMAIL", "x@example.org", "TYPE", "work"),
	OK("lower-case begin and end", "begin:vcard\nfn:x\nend:vcard\n", 1, "FN", "x"),
	OK("blanks around begin", "BEGIN : VCARD \r\r\nFN:x\r\nEND:VCARD\t\r\n", 1, "FN", "x"),
	OK("bom", "\xef\xbb\xbf" "BEGIN:VCARD\nFN:x\nEND:VCARD\n", 1, "FN", "x"),
	OK("blank lines", "\n\r\n  \nBEGIN:VCARD\n\nFN:x\n\nEND:VCARD\n\n", 1, "FN", "x"),
	OK("colon in value", "BEGIN:VCARD\nURL:https://example.org:8443/a?b=c;d\nEND:VCARD\n", 1,
	   "URL", "https://example.org:8443/a?b=c;d"),
	OKP("quoted ':' and ';' in a parameter",
	    "BEGIN:VCARD\nX-A;LABEL=\"a:b;c\";TYPE=x:value\nEND:VCARD\n", "X-A", "value", "LABEL",
	    "a:b;c"),
	OKP("quotes around each value", "BEGIN:VCARD\nTEL;TYPE=\"work\",\"voice\":1\nEND:VCARD\n",
	    "TEL", "1", "TYPE", "work,voice"),
	OKP("empty parameter value", "BEGIN:VCARD\nTEL;TYPE=:1\nEND:VCARD\n", "TEL", "1", "TYPE",
	    ""),
	OKP("empty parameters skipped", "BEGIN:VCARD\nTEL;;;=x;TYPE=home:1\nEND:VCARD\n", "TEL",
	    "1", "TYPE", "home"),
	OKP("blanks around a parameter name", "BEGIN:VCARD\nTEL; type =home:1\nEND:VCARD\n", "TEL",
	    "1", "TYPE", "home"),
	OK("empty value", "BEGIN:VCARD\nNOTE:\nEND:VCARD\n", 1, "NOTE", ""),
	OK("group", "BEGIN:VCARD\nitem7.TEL:1\nEND:VCARD\n", 1, "TEL", "1"),
	OK("nested agent card skipped",
	   "BEGIN:VCARD\nVERSION:2.1\nAGENT:\nBEGIN:VCARD\nFN:Inner\nEND:VCARD\nFN:Outer\n"
	   "END:VCARD\n",
	   1, "FN", "Outer"),
	OK("three cards",
	   "BEGIN:VCARD\nEND:VCARD\nBEGIN:VCARD\nEND:VCARD\nBEGIN:VCARD\nEND:VCARD\n", 3, NULL,
	   NULL),
	BAD("empty input", "", "no vCard found"),
	BAD("only blank lines", "\r\n \r\n\t\n", "no vCard found"),
	BAD("no begin", "FN:x\nEND:VCARD\n", "line 1: content outside"),
	BAD("end without begin", "END:VCARD\n", "line 1: content outside"),
	BAD("junk after end", "BEGIN:VCARD\nEND:VCARD\nhello:world\n", "line 3: content outside"),
	BAD("calendar", "BEGIN:VCALENDAR\nEND:VCALENDAR\n", "line 1:"),
	BAD("missing end", "BEGIN:VCARD\nFN:x\n", "vCard 1 is not closed"),
	BAD("missing end of second card", "BEGIN:VCARD\nEND:VCARD\nBEGIN:VCARD\n",
	    "vCard 2 is not closed"),
	BAD("nested card not closed", "BEGIN:VCARD\nBEGIN:VCARD\nEND:VCARD\n", "not closed"),
	BAD("no colon", "BEGIN:VCARD\nFN x\nEND:VCARD\n", "line 2: no ':' in content line"),
	BAD("no colon after params", "BEGIN:VCARD\nTEL;TYPE=x\nEND:VCARD\n", "line 2: no ':'"),
	BAD("line number counts folds", "BEGIN:VCARD\nFN:a\n b\n c\nbroken\nEND:VCARD\n",
	    "line 5: no ':'"),
	BAD("empty name", "BEGIN:VCARD\n:x\nEND:VCARD\n", "line 2: empty property"),
	BAD("empty name after group", "BEGIN:VCARD\nitem1.:x\nEND:VCARD\n", "empty property"),
	BAD("unterminated quote", "BEGIN:VCARD\nTEL;TYPE=\"work:1\nEND:VCARD\n",
	    "line 2: unterminated quoted"),
	BAD("cr only", "BEGIN:VCARD\rUID:x\rEND:VCARD\r", "line 1:"),
	BAD("nul byte", "BEGIN:VCARD\nFN:a\0b\nEND:VCARD\n", "invalid UTF-8 at byte 16 (line 2)"),
#undef OK
#undef OKP
#undef BAD
};

static size_t line_case_len(size_t i)
{
	/* The one case with an embedded NUL has a known length. */
	if (strcmp(line_cases[i].name, "nul byte") == 0)
		return sizeof("BEGIN:VCARD\nFN:a\0b\nEND:VCARD\n") - 1;
	return strlen(line_cases[i].text);
}

static void test_content_lines(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(line_cases); i++) {
		ks_vcard *cards = NULL;
		size_t n = 0;
		char *msg = NULL;
		int r;

		r = ks_vcard_parse(line_cases[i].text, line_case_len(i), &cards, &n, &msg);
		if (r != line_cases[i].r)
			fail_msg("%s: got %d (%s), want %d", line_cases[i].name, r, msg ? msg : "-",
				 line_cases[i].r);
		if (r < 0) {
			assert_null(cards);
			assert_non_null(msg);
			if (!strstr(msg, line_cases[i].msg))
				fail_msg("%s: message '%s' lacks '%s'", line_cases[i].name, msg,
					 line_cases[i].msg);
			free(msg);
			continue;
		}
		assert_null(msg);
		if (n != line_cases[i].n_cards)
			fail_msg("%s: %zu cards, want %zu", line_cases[i].name, n,
				 line_cases[i].n_cards);
		if (line_cases[i].prop) {
			const ks_vcard_prop *p = ks_vcard_get(&cards[0], line_cases[i].prop);

			if (!p)
				fail_msg("%s: no %s", line_cases[i].name, line_cases[i].prop);
			if (strcmp(p->value, line_cases[i].value) != 0)
				fail_msg("%s: value '%s', want '%s'", line_cases[i].name, p->value,
					 line_cases[i].value);
			if (line_cases[i].param) {
				const char *v = ks_vcard_param_get(p, line_cases[i].param);

				if (!v || strcmp(v, line_cases[i].param_value) != 0)
					fail_msg("%s: param %s is '%s', want '%s'",
						 line_cases[i].name, line_cases[i].param,
						 v ? v : "(null)", line_cases[i].param_value);
			}
		}
		ks_vcard_free_array(cards, n);
	}
}

static void test_group(void **state)
{
	static const char text[] = "BEGIN:VCARD\nitem7.TEL:1\nTEL:2\n.X-A:3\nEND:VCARD\n";
	ks_vcard *cards = NULL;
	size_t n = 0;

	assert_int_equal(ks_vcard_parse(text, strlen(text), &cards, &n, NULL), 0);
	assert_int_equal(cards[0].n_props, 3);
	assert_string_equal(cards[0].props[0].group, "item7");
	assert_null(cards[0].props[1].group);
	assert_null(cards[0].props[2].group);
	assert_string_equal(cards[0].props[2].name, "X-A");
	assert_null(cards[0].version);
	ks_vcard_free_array(cards, n);
	ks_vcard_free_array(NULL, 0);
}

/* ---- ks_vcard_unescape() ----------------------------------------------------------------- */

static void test_unescape(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ .in = "", .out = "" },
		{ .in = "plain text", .out = "plain text" },
		{ .in = "a\\,b", .out = "a,b" },
		{ .in = "a\\;b", .out = "a;b" },
		{ .in = "l1\\nl2", .out = "l1\nl2" },
		{ .in = "l1\\Nl2", .out = "l1\nl2" },
		{ .in = "back\\\\slash", .out = "back\\slash" },
		{ .in = "\\\\n", .out = "\\n" },
		{ .in = "\\\\\\,", .out = "\\," },
		{ .in = "trailing\\", .out = "trailing\\" },
		{ .in = "unknown \\: \\t", .out = "unknown \\: \\t" },
		{ .in = "Müller\\, Jürgen", .out = "Müller, Jürgen" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *s = ks_vcard_unescape(cases[i].in);

		assert_non_null(s);
		assert_string_equal(s, cases[i].out);
		free(s);
	}
}

/* ---- item info details --------------------------------------------------------------------- */

static const struct {
	const char *name;
	const char *text;
	int r;
	const char *uid, *summary, *email;
} detail_cases[] = {
#define OK(n, t, u, s, e) { .name = n, .text = t, .uid = u, .summary = s, .email = e }
#define BAD(n, t, err) { .name = n, .text = t, .r = err }
	OK("uid trimmed and unescaped", "BEGIN:VCARD\nUID: a\\,b \nEND:VCARD\n", "a,b", NULL, NULL),
	BAD("empty uid", "BEGIN:VCARD\nUID:  \nFN:x\nEND:VCARD\n", -ENODATA),
	OK("empty fn falls back to n", "BEGIN:VCARD\nUID:1\nFN:\nN:Doe;John;;;\nEND:VCARD\n", "1",
	   "John Doe", NULL),
	OK("n family only", "BEGIN:VCARD\nUID:1\nN:Doe\nEND:VCARD\n", "1", "Doe", NULL),
	OK("n given only", "BEGIN:VCARD\nUID:1\nN:;John;;;\nEND:VCARD\n", "1", "John", NULL),
	OK("n escaped semicolon", "BEGIN:VCARD\nUID:1\nN:Doe\\;Smith;Jo\\,hn;;;\nEND:VCARD\n", "1",
	   "Jo,hn Doe;Smith", NULL),
	OK("n empty", "BEGIN:VCARD\nUID:1\nN:;;;;\nEND:VCARD\n", "1", NULL, NULL),
	OK("neither fn nor n", "BEGIN:VCARD\nUID:1\nEMAIL: a@example.org \nEND:VCARD\n", "1", NULL,
	   "a@example.org"),
	OK("fn with newline escape", "BEGIN:VCARD\nUID:1\nFN:A\\nB\nEND:VCARD\n", "1", "A\nB",
	   NULL),
	BAD("one card without uid", "BEGIN:VCARD\nUID:1\nEND:VCARD\nBEGIN:VCARD\nEND:VCARD\n",
	    -ENOTUNIQ),
	BAD("first card without uid", "BEGIN:VCARD\nEND:VCARD\nBEGIN:VCARD\nUID:1\nEND:VCARD\n",
	    -ENOTUNIQ),
	BAD("two uid lines in one card", "BEGIN:VCARD\nUID:a\nFN:x\nUID:b\nEND:VCARD\n",
	    -ENOTUNIQ),
	OK("the same uid twice in one card", "BEGIN:VCARD\nUID:a\nUID: a\nEND:VCARD\n", "a",
	   NULL, NULL),
	BAD("uids differing in case",
	    "BEGIN:VCARD\nUID:a\nEND:VCARD\nBEGIN:VCARD\nUID:A\nEND:VCARD\n", -ENOTUNIQ),
	OK("summary from the card with the uid",
	   "BEGIN:VCARD\nUID:u\nFN:One\nEND:VCARD\nBEGIN:VCARD\nUID:u\nFN:Two\nEND:VCARD\n", "u",
	   "One", NULL),
	OK("qp in latin-1",
	   "BEGIN:VCARD\nVERSION:2.1\nUID:1\nFN;CHARSET=ISO-8859-1;QUOTED-PRINTABLE:Ren=E9\n"
	   "END:VCARD\n", "1", "René", NULL),
	BAD("qp soft break at end of input", "BEGIN:VCARD\nUID:1\nFN;QUOTED-PRINTABLE:a=",
	    -EBADMSG),
	OK("qp with =00 and bad hex",
	   "BEGIN:VCARD\nUID:1\nFN;ENCODING=QUOTED-PRINTABLE:a=00b=ZZc=4\nEND:VCARD\n", "1",
	   "a=00b=ZZc=4", NULL),
	OK("qp decoded text is not unfolded",
	   "BEGIN:VCARD\nUID:1\nFN;ENCODING=QUOTED-PRINTABLE:a=C3=0A=20=A9\nEND:VCARD\n", "1",
	   "a\xc3\x83\n \xc2\xa9", NULL),
	OK("urn uuid kept", "BEGIN:VCARD\nUID:urn:uuid:0000-1\nEND:VCARD\n", "urn:uuid:0000-1",
	   NULL, NULL),
	OK("email from group",
	   "BEGIN:VCARD\nUID:1\nitem1.EMAIL;TYPE=INTERNET:b@example.org\nEMAIL:c@example.org\n"
	   "END:VCARD\n", "1", NULL, "b@example.org"),
#undef OK
#undef BAD
};

static void test_info_details(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(detail_cases); i++) {
		ks_item_info info = {};
		char *msg = NULL;
		int r;

		r = ks_vcard_parse_info(detail_cases[i].text, strlen(detail_cases[i].text), &info,
					&msg);
		if (r != detail_cases[i].r)
			fail_msg("%s: got %d (%s), want %d", detail_cases[i].name, r,
				 msg ? msg : "-", detail_cases[i].r);
		if (r < 0) {
			assert_non_null(msg);
			free(msg);
			continue;
		}
		assert_str_or_null(info.uid, detail_cases[i].uid);
		if ((info.summary || detail_cases[i].summary) &&
		    (!info.summary || !detail_cases[i].summary ||
		     strcmp(info.summary, detail_cases[i].summary) != 0))
			fail_msg("%s: summary '%s', want '%s'", detail_cases[i].name,
				 info.summary ? info.summary : "(null)",
				 detail_cases[i].summary ? detail_cases[i].summary : "(null)");
		assert_str_or_null(info.email, detail_cases[i].email);
		ks_item_info_done(&info);
	}
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

static void test_utf8(void **state)
{
	static const struct {
		const char *name;
		const char *s;
		size_t len;
		bool folded;
		bool ok;
		size_t bad;
	} cases[] = {
#define GOOD(n, x, f) { .name = n, .s = x, .len = sizeof(x) - 1, .folded = f, .ok = true }
#define BAD(n, x, f, b) { .name = n, .s = x, .len = sizeof(x) - 1, .folded = f, .bad = b }
		GOOD("ascii", "hello", false),
		GOOD("two bytes", "\xc3\xa9", false),
		GOOD("three bytes", "\xe2\x80\x93", false),
		GOOD("four bytes", "\xf0\x9f\x98\x80", false),
		GOOD("largest", "\xf4\x8f\xbf\xbf", false),
		BAD("nul", "ab\0c", false, 2),
		BAD("lone continuation", "a\x80", false, 1),
		BAD("overlong c0", "\xc0\xaf", false, 0),
		BAD("overlong three bytes", "x\xe0\x80\xaf", false, 1),
		BAD("overlong four bytes", "\xf0\x80\x80\xaf", false, 0),
		BAD("surrogate", "ab\xed\xa0\x80", false, 2),
		BAD("past U+10FFFF", "\xf4\x90\x80\x80", false, 0),
		BAD("f5", "\xf5\x80\x80\x80", false, 0),
		BAD("ff", "\xff", false, 0),
		BAD("truncated at end", "abc\xe2\x82", false, 3),
		BAD("ascii inside sequence", "\xe2\x41\x82", false, 0),
		GOOD("crlf fold inside", "\xc3\r\n \xa9", true),
		GOOD("lf fold inside", "\xe2\x80\n\t\x93", true),
		BAD("fold not skipped unless folded", "\xc3\n \xa9", false, 0),
		GOOD("two folds inside", "\xe2\n \r\n\t\x80\x93", true),
		BAD("line break without blank", "\xc3\n\xa9", true, 0),
		BAD("fold at end", "\xc3\r\n ", true, 0),
#undef GOOD
#undef BAD
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		size_t bad = 12345;
		bool ok = ks_item_utf8_valid(cases[i].s, cases[i].len, cases[i].folded, &bad);

		if (ok != cases[i].ok)
			fail_msg("%s: got %d", cases[i].name, ok);
		if (!ok && bad != cases[i].bad)
			fail_msg("%s: bad at %zu, want %zu", cases[i].name, bad, cases[i].bad);
		if (ok)
			assert_int_equal(bad, 12345);
	}
	assert_true(ks_item_utf8_valid(NULL, 0, true, NULL));
}

/* ---- size ------------------------------------------------------------------------------------ */

/* A card of exactly len bytes: a PHOTO folded at 75 columns, as clients write them. */
static char *big_card(size_t len)
{
	static const char head[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:big-1@example.org\r\n"
				   "FN:Big\r\nPHOTO;ENCODING=b;TYPE=JPEG:";
	static const char tail[] = "\r\nEND:VCARD\r\n";
	char *s = malloc(len + 1);
	size_t o = 0, col = strlen("PHOTO;ENCODING=b;TYPE=JPEG:");

	assert_non_null(s);
	memcpy(s, head, strlen(head));
	o = strlen(head);
	while (o < len - strlen(tail)) {
		if (col == 75 && o + 3 < len - strlen(tail)) {
			memcpy(s + o, "\r\n ", 3);
			o += 3;
			col = 1;
			continue;
		}
		s[o] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[o % 64];
		o++;
		col++;
	}
	memcpy(s + o, tail, strlen(tail));
	s[len] = 0;
	return s;
}

static void test_huge(void **state)
{
	char *s = big_card(KS_CARD_MAX);
	ks_item_info info = {};
	ks_vcard *cards = NULL;
	char *msg = NULL;
	size_t n = 0;

	assert_int_equal(ks_vcard_parse_info(s, KS_CARD_MAX, &info, &msg), 0);
	assert_string_equal(info.uid, "big-1@example.org");
	assert_string_equal(info.summary, "Big");
	ks_item_info_done(&info);

	assert_int_equal(ks_vcard_parse(s, KS_CARD_MAX, &cards, &n, NULL), 0);
	const ks_vcard_prop *p = ks_vcard_get(&cards[0], "PHOTO");
	assert_non_null(p);
	assert_null(strchr(p->value, '\r'));
	assert_null(strchr(p->value, ' '));
	ks_vcard_free_array(cards, n);
	free(s);

	/* One byte more is refused before anything is read. */
	s = big_card(KS_CARD_MAX + 1);
	assert_int_equal(ks_vcard_parse_info(s, KS_CARD_MAX + 1, &info, &msg), -EFBIG);
	assert_non_null(msg);
	assert_non_null(strstr(msg, "more than the limit"));
	free(msg);
	msg = NULL;
	assert_int_equal(ks_item_parse_info(s, KS_CARD_MAX + 1, &info, NULL), -EFBIG);
	free(s);

	/* Many tiny properties. */
	size_t n_props = 256 * 1024, len = 21 + 4 * n_props + 10;
	s = malloc(len);
	assert_non_null(s);
	memcpy(s, "BEGIN:VCARD\nUID:many\n", 21);
	for (size_t i = 0; i < n_props; i++)
		memcpy(s + 21 + 4 * i, "X:y\n", 4);
	memcpy(s + len - 10, "END:VCARD\n", 10);
	assert_int_equal(ks_vcard_parse_info(s, len, &info, NULL), 0);
	assert_string_equal(info.uid, "many");
	ks_item_info_done(&info);
	free(s);

	/* Past KS_CARD_MAX_LINES lines and parameters, refused: each costs tens of bytes. */
	n_props = KS_CARD_MAX_LINES;
	len = 21 + 4 * n_props + 10;
	s = malloc(len);
	assert_non_null(s);
	memcpy(s, "BEGIN:VCARD\nUID:many\n", 21);
	for (size_t i = 0; i < n_props; i++)
		memcpy(s + 21 + 4 * i, "X:y\n", 4);
	memcpy(s + len - 10, "END:VCARD\n", 10);
	assert_int_equal(ks_vcard_parse_info(s, len, &info, &msg), -EFBIG);
	assert_non_null(strstr(msg, "lines"));
	free(msg);
	msg = NULL;
	/* The same number on one line, as parameters. */
	len = 21 + 1 + 4 * n_props + 3 + 10;
	s = realloc(s, len);
	assert_non_null(s);
	memcpy(s + 21, "X", 1);
	for (size_t i = 0; i < n_props; i++)
		memcpy(s + 22 + 4 * i, ";A=b", 4);
	memcpy(s + 22 + 4 * n_props, ":v\n", 3);
	memcpy(s + len - 10, "END:VCARD\n", 10);
	assert_int_equal(ks_vcard_parse_info(s, len, &info, &msg), -EFBIG);
	free(msg);
	free(s);
}

/* ---- robustness ------------------------------------------------------------------------------ */

/* Every prefix and a few thousand mutations of the fixtures: any result is fine, as long as the
 * parser neither crashes nor leaks (run under ASan) and sets a message exactly on failure. */
static void check_any(const char *data, size_t len)
{
	ks_item_info info = {};
	char *msg = NULL;
	int r = ks_vcard_parse_info(data, len, &info, &msg);

	if (r < 0) {
		assert_true(r == -EBADMSG || r == -ENODATA || r == -ENOTUNIQ || r == -EFBIG);
		assert_non_null(msg);
		free(msg);
	} else {
		assert_null(msg);
		assert_non_null(info.uid);
		assert_true(ks_item_utf8_valid(info.uid, strlen(info.uid), false, NULL));
		if (info.summary)
			assert_true(ks_item_utf8_valid(info.summary, strlen(info.summary), false,
						       NULL));
		ks_item_info_done(&info);
	}
}

static void test_robustness(void **state)
{
	static const char *const files[] = {
		"v3_full.vcf", "v4_full.vcf", "folded_utf8.vcf", "v21_qp.vcf", "two_same_uid.vcf",
	};
	uint32_t seed = 12345;

	for (size_t f = 0; f < ELEMENTSOF(files); f++) {
		size_t len;
		char *data = read_fixture(files[f], &len);

		for (size_t cut = 0; cut <= len; cut++) {
			/* A copy of exactly cut bytes, so that ASan sees any read past it. */
			char *p = malloc(cut ? cut : 1);
			assert_non_null(p);
			memcpy(p, data, cut);
			check_any(p, cut);
			free(p);
		}
		for (unsigned k = 0; k < 2000; k++) {
			char *p = malloc(len);
			assert_non_null(p);
			memcpy(p, data, len);
			for (unsigned m = 0; m < 1 + k % 4; m++) {
				static const char special[] = ":;,=\"\\.\r\n \t\x80\xc3\xff";

				seed = seed * 1103515245 + 12345;
				size_t at = (seed >> 8) % len;
				seed = seed * 1103515245 + 12345;
				if ((seed >> 16) % 2)
					p[at] = special[(seed >> 8) % (sizeof(special) - 1)];
				else
					p[at] = (char) (seed >> 8);
			}
			check_any(p, len);
			free(p);
		}
		free(data);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_info_fixtures),
		cmocka_unit_test(test_info_no_msg),
		cmocka_unit_test(test_parse_v3_structure),
		cmocka_unit_test(test_parse_v4_structure),
		cmocka_unit_test(test_parse_v21),
		cmocka_unit_test(test_content_lines),
		cmocka_unit_test(test_group),
		cmocka_unit_test(test_unescape),
		cmocka_unit_test(test_info_details),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_huge),
		cmocka_unit_test(test_robustness),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
