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

#include "dup_p.h"
#include "fsutil_p.h"
#include "macro.h"
#include "vcard_p.h"

static void assert_key(int (*fn)(const char *, char **), const char *in, const char *want)
{
	char *k = (char *) 1;

	assert_int_equal(fn(in, &k), 0);
	if (!want)
		assert_null(k);
	else {
		assert_non_null(k);
		assert_string_equal(k, want);
	}
	free(k);
}

static void test_name_key(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "Jürgen Müller", "jurgen muller" },
		{ "Müller, Jürgen", "jurgen muller" },
		{ "  MULLER   jurgen ", "jurgen muller" },
		/* NFD: e + U+0301 combining acute. */
		{ "Rene\xcc\x81" "e Dupont", "dupont renee" },
		{ "Renée Dupont", "dupont renee" },
		{ "Łukasz Żółć", "lukasz zolc" },
		{ "Ærøskøbing Straße", "aeroskobing strasse" },
		{ "STRAUSS, Johann", "johann strauss" },
		{ "Jean-Pierre O'Neil", "jean neil o pierre" },
		/* U+2019 apostrophe */
		{ "Jean-Pierre O\xe2\x80\x99Neil", "jean neil o pierre" },
		/* Letters outside Latin-1 and Latin Extended-A. */
		{ "Ștefan Popescu", "popescu stefan" },
		/* S + U+0327 combining cedilla */
		{ "S\xcc\xa7tefan Popescu", "popescu stefan" },
		{ "Nguyễn Văn Đức", "duc nguyen van" },
		{ "Nguyen Van Duc", "duc nguyen van" },
		{ "İlker Işık", "ilker isik" },
		{ "Gal·la Gaŀla", "galla galla" },
		{ "ＪＯＨＮ ＳＭＩＴＨ", "john smith" },
		/* Case in other scripts; Greek final sigma is sigma. */
		{ "Анна Иванова", "анна иванова" },
		{ "ИВАНОВА Анна", "анна иванова" },
		{ "ΟΔΥΣΣΕΑΣ ΕΛΥΤΗΣ", "ελυτησ οδυσσεασ" },
		{ "Οδυσσέας Ελύτης", "ελυτησ οδυσσεασ" },
		/* Marks that are not accents make another name. */
		{ "राम", "राम" },
		/* カ U+3099 ク */
		{ "ガク", "\xe3\x82\xab\xe3\x82\x99\xe3\x82\xaf" },
		/* A byte that is not UTF-8 separates words. */
		{ "Jos\xff" "Maria", "jos maria" },
		{ "", NULL },
		{ " ,.- ", NULL },
		{ NULL, NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		assert_key(ks_dup_name_key, cases[i].in, cases[i].want);
}

static void test_email_key(void **state)
{
	assert_key(ks_dup_email_key, "Jane.Doe@Example.COM", "jane.doe@example.com");
	assert_key(ks_dup_email_key, " mailto:JANE@example.com ", "jane@example.com");
	assert_key(ks_dup_email_key, "MAILTO:x@y", "x@y");
	assert_key(ks_dup_email_key, "not an address", NULL);
	assert_key(ks_dup_email_key, "@example.com", NULL);
	assert_key(ks_dup_email_key, NULL, NULL);
}

static void test_phone_key(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "+41 79 123 45 67", "791234567" },
		{ "079 123 45 67", "791234567" },
		{ "0041791234567", "791234567" },
		{ "+41 (0)79 123-45-67", "791234567" },
		{ "tel:+41-79-123-45-67", "791234567" },
		{ "tel:+41-79-123-45-67;ext=12", "791234567" },
		{ "+1 (555) 123-4567", "551234567" },
		{ "555-1234", "5551234" },
		{ "112", NULL },
		{ "12345", NULL },
		{ "", NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		assert_key(ks_dup_phone_key, cases[i].in, cases[i].want);
}

static const char *const group_cards[] = {
	/* 0 */ "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:Jürgen Müller\r\n"
		"EMAIL:jm@example.org\r\nEND:VCARD\r\n",
	/* 1: swapped order, no accents */
	"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:MULLER, Jurgen\r\nEND:VCARD\r\n",
	/* 2: another person sharing 0's address, in another case */
	"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c\r\nFN:Office\r\nEMAIL:JM@Example.ORG\r\n"
	"TEL:+41 79 123 45 67\r\nEND:VCARD\r\n",
	/* 3: unrelated */
	"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:d\r\nFN:Somebody Else\r\nTEL:+41 21 000 00 00\r\n"
	"END:VCARD\r\n",
	/* 4: shares 2's number, written nationally */
	"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:e\r\nN:;;;;\r\nFN:\r\nTEL;VALUE=uri:tel:079-123-45-67\r\n"
	"END:VCARD\r\n",
	/* 5, 6: the same name from N only */
	"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:f\r\nN:Doe;Jane;;;\r\nEND:VCARD\r\n",
	"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:g\r\nFN:Jane   Doe\r\nEND:VCARD\r\n",
	/* 7: a group card with the same name: never grouped */
	"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:h\r\nKIND:group\r\nFN:Jane Doe\r\nEND:VCARD\r\n",
};

static void test_groups(void **state)
{
	size_t n = ELEMENTSOF(group_cards);
	ks_dup_card *cards = calloc(n, sizeof(*cards));
	ks_dup_groups g = {};

	assert_non_null(cards);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ks_dup_card_parse(group_cards[i], strlen(group_cards[i]),
						   &cards[i]), 0);
	assert_true(cards[7].is_group);
	assert_string_equal(cards[5].name, "Jane Doe");
	assert_int_equal(ks_dup_find_groups(cards, n, &g), 0);
	assert_int_equal(g.n_groups, 2);
	/* 0-1 by name, 0-2 by e-mail, 2-4 by phone. */
	assert_int_equal(g.start[1] - g.start[0], 4);
	size_t want0[] = { 0, 1, 2, 4 };
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(g.members[g.start[0] + i], want0[i]);
	assert_int_equal(g.why[0], KS_DUP_BY_NAME | KS_DUP_BY_EMAIL | KS_DUP_BY_PHONE);
	assert_int_equal(g.start[2] - g.start[1], 2);
	assert_int_equal(g.members[g.start[1]], 5);
	assert_int_equal(g.members[g.start[1] + 1], 6);
	assert_int_equal(g.why[1], KS_DUP_BY_NAME);
	ks_dup_groups_done(&g);
	for (size_t i = 0; i < n; i++)
		ks_dup_card_done(&cards[i]);
	free(cards);
}

/* The reference: the most properties, then the most bytes, then the smallest UID. */
static void test_reference_and_id(void **state)
{
	size_t n = ELEMENTSOF(group_cards);
	ks_dup_card *cards = calloc(n, sizeof(*cards));
	size_t len[ELEMENTSOF(group_cards)] = {};
	const char *uids[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
	const char *shuffled[] = { "e", "c", "b", "d", "a", "f", "g", "h" };
	ks_dup_groups g = {};
	char *id = NULL, *id2 = NULL;

	assert_non_null(cards);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ks_dup_card_parse(group_cards[i], strlen(group_cards[i]),
						   &cards[i]), 0);
	assert_int_equal(ks_dup_find_groups(cards, n, &g), 0);
	/* 2 and 4 have four properties each, 0 three and 1 two. */
	for (size_t i = 0; i < n; i++)
		len[i] = 100;
	assert_int_equal(ks_dup_default_reference(&g, 0, cards, len, uids), 2);
	len[4] = 101;
	assert_int_equal(ks_dup_default_reference(&g, 0, cards, len, uids), 4);
	len[4] = 100;
	uids[2] = "z";
	assert_int_equal(ks_dup_default_reference(&g, 0, cards, len, uids), 4);
	uids[2] = "c";

	/* SHA-256 of "acct\0/dav/people/\0a\0b\0c\0e\0": the ids listed so far stay. */
	assert_int_equal(ks_dup_group_id(&g, 0, uids, "acct", "/dav/people/", "people", &id), 0);
	assert_string_equal(id, "people:8b130e39");
	/* The same UIDs on other members: the same group. */
	assert_int_equal(ks_dup_group_id(&g, 0, shuffled, "acct", "/dav/people/", "people",
					 &id2), 0);
	assert_string_equal(id2, id);
	free(id2);
	id2 = NULL;
	uids[4] = "x";
	assert_int_equal(ks_dup_group_id(&g, 0, uids, "acct", "/dav/people/", "people", &id2), 0);
	assert_string_not_equal(id2, id);
	free(id2);
	id2 = NULL;
	uids[4] = "e";
	assert_int_equal(ks_dup_group_id(&g, 0, uids, "other", "/dav/people/", "people", &id2), 0);
	assert_string_not_equal(id2, id);
	free(id2);
	free(id);
	ks_dup_groups_done(&g);
	for (size_t i = 0; i < n; i++)
		ks_dup_card_done(&cards[i]);
	free(cards);
}

/* What differs between the cards of a group, as "ksyncctl duplicates" shows it. */
static void test_differing_props(void **state)
{
	static const char *const cards[] = {
		"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:Jane Doe\r\n"
		"EMAIL:jane@example.org\r\nTEL:+41 79 123 45 67\r\nX-FOO:1\r\nEND:VCARD\r\n",
		"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:b\r\nFN:jane  DOE\r\n"
		"EMAIL:JANE@example.org\r\nTEL:079 123 45 67\r\nBDAY:19800203\r\nX-FOO:2\r\n"
		"END:VCARD\r\n",
		"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c\r\nFN:Jane Doe\r\nEMAIL:jane@example.org\r\n"
		"EMAIL:jd@example.org\r\nTEL:+41 79 123 45 67\r\nEND:VCARD\r\n",
	};
	ks_vcard *parsed[ELEMENTSOF(cards) + 1] = {};
	size_t n_parsed[ELEMENTSOF(cards) + 1] = {};
	char **names = NULL;
	size_t n = 0;

	for (size_t i = 0; i < ELEMENTSOF(cards); i++)
		assert_int_equal(ks_vcard_parse(cards[i], strlen(cards[i]), &parsed[i],
						&n_parsed[i], NULL), 0);
	/* Values compared as the merge does: FN and TEL are the same on every card. */
	assert_int_equal(ks_dup_differing_props(parsed, 3, &names, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "BDAY");
	assert_string_equal(names[1], "EMAIL");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	/* Two cards alike differ in nothing; next to a card that did not parse, in all. */
	ks_vcard *two[] = { parsed[0], parsed[0], NULL };
	assert_int_equal(ks_dup_differing_props(two, 2, &names, &n), 0);
	assert_int_equal(n, 0);
	free(names);
	assert_int_equal(ks_dup_differing_props(two, 3, &names, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(names[0], "EMAIL");
	assert_string_equal(names[1], "FN");
	assert_string_equal(names[2], "TEL");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	for (size_t i = 0; i < ELEMENTSOF(cards); i++)
		ks_vcard_free_array(parsed[i], n_parsed[i]);
}

/* Pairs of cards a person takes for the same name, in scripts and letters beyond Latin-1. */
static void test_groups_unicode(void **state)
{
	static const char *const names[] = {
		"Ștefan Popescu", "POPESCU, Stefan",
		"ИВАН ПЕТРОВ", "Петров Иван",
		"Nguyễn Thị Đào", "Nguyen Thi Dao",
		"Jakob Strauß", "Jakob Strauss",
		"Οδυσσέας Ελύτης", "ΟΔΥΣΣΕΑΣ ΕΛΥΤΗΣ",
	};
	size_t n = ELEMENTSOF(names);
	ks_dup_card cards[ELEMENTSOF(names)] = {};
	ks_dup_groups g = {};

	for (size_t i = 0; i < n; i++) {
		char *card;
		assert_true(asprintf(&card, "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u%zu\r\nFN:%s\r\n"
				     "END:VCARD\r\n", i, names[i]) > 0);
		assert_int_equal(ks_dup_card_parse(card, strlen(card), &cards[i]), 0);
		free(card);
	}
	assert_int_equal(ks_dup_find_groups(cards, n, &g), 0);
	assert_int_equal(g.n_groups, n / 2);
	for (size_t k = 0; k < g.n_groups; k++) {
		assert_int_equal(g.start[k + 1] - g.start[k], 2);
		assert_int_equal(g.members[g.start[k]], 2 * k);
		assert_int_equal(g.members[g.start[k] + 1], 2 * k + 1);
		assert_int_equal(g.why[k], KS_DUP_BY_NAME);
	}
	ks_dup_groups_done(&g);
	for (size_t i = 0; i < n; i++)
		ks_dup_card_done(&cards[i]);
}

static void test_groups_large(void **state)
{
	/* 10,000 cards chained by shared numbers and names: one group, fast. */
	size_t n = 10000;
	ks_dup_card *cards = calloc(n, sizeof(*cards));
	ks_dup_groups g = {};

	assert_non_null(cards);
	for (size_t i = 0; i < n; i++) {
		char *card;
		assert_true(asprintf(&card, "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u%zu\r\n"
				     "FN:Person %zu\r\nTEL:+41 79 %07zu\r\nTEL:079 %07zu\r\n"
				     "END:VCARD\r\n", i, i, i, i + 1) > 0);
		assert_int_equal(ks_dup_card_parse(card, strlen(card), &cards[i]), 0);
		free(card);
	}
	uint64_t t0 = ks_now_ns();
	assert_int_equal(ks_dup_find_groups(cards, n, &g), 0);
	uint64_t t1 = ks_now_ns();
	assert_int_equal(g.n_groups, 1);
	assert_int_equal(g.start[1], n);
	print_message("grouping 10000 cards: %.1f ms\n", (double) (t1 - t0) / 1e6);
	ks_dup_groups_done(&g);
	for (size_t i = 0; i < n; i++)
		ks_dup_card_done(&cards[i]);
	free(cards);
}

static ks_dup_merged merge3(const char *a, const char *b, const char *c, size_t ref)
{
	const char *data[] = { a, b, c };
	size_t len[] = { strlen(a), strlen(b), c ? strlen(c) : 0 };
	ks_dup_merged m = {};

	assert_int_equal(ks_dup_merge_cards(data, len, c ? 3 : 2, ref, &m), 0);
	return m;
}

static void test_merge_rules(void **state)
{
	const char *ref = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ref\r\nFN:Jane Doe\r\n"
			  "N:Doe;Jane;;;\r\nEMAIL;TYPE=work:jane@work.example\r\nTEL:+41 79 123 45 67\r\n"
			  "NOTE:Met at the fair\r\nCATEGORIES:Friends,Work\r\nREV:20240101T000000Z\r\n"
			  "item1.URL:https://jane.example\r\nitem1.X-ABLabel:blog\r\nEND:VCARD\r\n";
	const char *b = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:Doe Jane\r\n"
			"EMAIL:JANE@WORK.EXAMPLE\r\nEMAIL:jane@home.example\r\nTEL:079 123 45 67\r\n"
			"TEL:+41 21 555 12 34\r\nBDAY:1980-02-03\r\nNOTE:Likes tea\r\n"
			"CATEGORIES:work,Family\r\nPHOTO;ENCODING=b;TYPE=JPEG:AAAA\r\n"
			"item1.URL:https://other.example\r\nitem1.X-ABLabel:shop\r\n"
			"REV:20250101T000000Z\r\nEND:VCARD\r\n";
	const char *c = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c\r\nFN:J. Doe\r\n"
			"BDAY:1981-01-01\r\nNOTE:Met at the fair\r\nNOTE:Allergic to nuts\r\n"
			"ADR;TYPE=home:;;Main Street 1;Bern;;3000;CH\r\nEND:VCARD\r\n";
	ks_dup_merged m = merge3(ref, b, c, 0);
	const char *want =
		"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ref\r\nFN:Jane Doe\r\nN:Doe;Jane;;;\r\n"
		"EMAIL;TYPE=work:jane@work.example\r\nTEL:+41 79 123 45 67\r\n"
		"NOTE:Met at the fair\\n\\nLikes tea\\n\\nAllergic to nuts\r\n"
		"CATEGORIES:Friends,Work,Family\r\nREV:20240101T000000Z\r\n"
		"item1.URL:https://jane.example\r\nitem1.X-ABLABEL:blog\r\n"
		"EMAIL:jane@home.example\r\nTEL:+41 21 555 12 34\r\nBDAY:1980-02-03\r\n"
		"PHOTO;ENCODING=b;TYPE=JPEG:AAAA\r\nitem2.URL:https://other.example\r\n"
		"item2.X-ABLABEL:shop\r\nADR;TYPE=home:;;Main Street 1;Bern;;3000;CH\r\n"
		"END:VCARD\r\n";
	assert_string_equal(m.data, want);
	assert_int_equal(m.len, strlen(want));
	/* Names are written upper-case, as the parser gives them. NOTE and CATEGORIES are
	 * made of several cards; EMAIL from b is added. */
	assert_int_equal(m.n_added, 9);
	assert_string_equal(m.lines[5].text, "NOTE:Met at the fair\\n\\nLikes tea\\n\\nAllergic to nuts");
	assert_int_equal(m.lines[5].from, SIZE_MAX);
	assert_true(m.lines[5].added);
	assert_int_equal(m.lines[10].from, 1);
	assert_false(m.lines[0].added);
	assert_int_equal(m.lines[0].from, 0);
	ks_dup_merged_done(&m);

	/* The reference's PHOTO stays; without one, another card's is taken. */
	const char *p1 = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:p1\r\nFN:A\r\n"
			 "PHOTO:data:image/png;base64,ONE\r\nEND:VCARD\r\n";
	const char *p2 = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:p2\r\nFN:A\r\n"
			 "PHOTO:data:image/png;base64,TWO\r\nEND:VCARD\r\n";
	m = merge3(p1, p2, NULL, 1);
	assert_non_null(strstr(m.data, "UID:p2\r\n"));
	assert_non_null(strstr(m.data, "TWO"));
	assert_null(strstr(m.data, "ONE"));
	assert_int_equal(m.n_added, 0);
	ks_dup_merged_done(&m);

	/* Nothing to add: the merged card is the reference's content. */
	m = merge3(ref, ref, NULL, 0);
	assert_int_equal(m.n_added, 0);
	ks_dup_merged_done(&m);
}

static void test_merge_long_lines_fold(void **state)
{
	const char *a = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:A\r\nEND:VCARD\r\n";
	const char *b = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:A\r\nNOTE:"
			"ääääääääääääääääääääääääääääääääääääääääääääääää\r\nEND:VCARD\r\n";
	ks_dup_merged m = merge3(a, b, NULL, 0);
	const char *p = strstr(m.data, "NOTE:");

	assert_non_null(p);
	/* Folded at 75 octets, not inside a two-byte character. */
	const char *nl = strstr(p, "\r\n");
	assert_true(nl - p <= 75);
	assert_int_equal((nl - p) % 2, 1);
	assert_int_equal(nl[2], ' ');
	ks_dup_merged_done(&m);

	const char *bad = "no vcard";
	const char *data[] = { a, bad };
	size_t len[] = { strlen(a), strlen(bad) };
	assert_int_equal(ks_dup_merge_cards(data, len, 2, 0, &m), -EBADMSG);
	assert_int_equal(ks_dup_merge_cards(data, len, 1, 1, &m), -EINVAL);
}

/* ".X.Y:v" is a property named "X.Y" with an empty group: written back without its leading
 * dot it would read as group X with an empty name, and the merged card would not parse. */
static void test_merge_dotted_name(void **state)
{
	const char *a = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:Jane Doe\r\n"
			".X-NOTE.:one\r\nEND:VCARD\r\n";
	const char *b = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:Jane Doe\r\n"
			"EMAIL:jane@example.org\r\nEND:VCARD\r\n";
	ks_dup_merged m = merge3(a, b, NULL, 0);
	ks_vcard *v = NULL;
	size_t n = 0;

	assert_int_equal(ks_vcard_parse(m.data, m.len, &v, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_non_null(ks_vcard_get(&v[0], "X-NOTE."));
	assert_non_null(strstr(m.data, "\r\n.X-NOTE.:one\r\n"));
	ks_vcard_free_array(v, n);
	ks_dup_merged_done(&m);
}

static void test_rewrite_members(void **state)
{
	const char *g4 = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:grp\r\nKIND:group\r\nFN:Team\r\n"
			 "MEMBER:urn:uuid:keep\r\nMEMBER:urn:uuid:gone1\r\nMEMBER:urn:uuid:other\r\n"
			 "MEMBER:urn:uuid:gone2\r\nEND:VCARD\r\n";
	const char *old[] = { "gone1", "gone2" };
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(ks_dup_rewrite_members(g4, strlen(g4), old, 2, "keep", &out, &len), 1);
	assert_string_equal(out, "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:grp\r\nKIND:group\r\n"
				 "FN:Team\r\nMEMBER:urn:uuid:keep\r\nMEMBER:urn:uuid:other\r\n"
				 "END:VCARD\r\n");
	free(out);
	out = NULL;

	const char *apple = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ag\r\n"
			    "X-ADDRESSBOOKSERVER-KIND:group\r\nFN:Club\r\n"
			    "X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:gone1\r\nEND:VCARD\r\n";
	assert_int_equal(ks_dup_rewrite_members(apple, strlen(apple), old, 2, "keep", &out, &len),
			 1);
	assert_non_null(strstr(out, "X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:keep\r\n"));
	free(out);
	out = NULL;

	assert_int_equal(ks_dup_rewrite_members(apple, strlen(apple), old + 1, 1, "keep", &out,
						&len), 0);
	assert_null(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_key),
		cmocka_unit_test(test_email_key),
		cmocka_unit_test(test_phone_key),
		cmocka_unit_test(test_groups),
		cmocka_unit_test(test_reference_and_id),
		cmocka_unit_test(test_differing_props),
		cmocka_unit_test(test_groups_unicode),
		cmocka_unit_test(test_groups_large),
		cmocka_unit_test(test_merge_rules),
		cmocka_unit_test(test_merge_long_lines_fold),
		cmocka_unit_test(test_merge_dotted_name),
		cmocka_unit_test(test_rewrite_members),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
