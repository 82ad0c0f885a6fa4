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

#include "hash_p.h"
#include "vdir_p.h"

static void test_item_name(void **state)
{
	static const struct {
		const char *uid, *href, *want;	/* want "#" = hash of uid */
	} c[] = {
		{ "abc-123@example.org", "/c/x.vcf", "abc-123@example.org" },
		{ "A.B_C+D", "/c/x.vcf", "A.B_C+D" },
		/* unsafe UID: the href's name without extension */
		{ "urn:uuid:1234", "/c/1234.vcf", "1234" },
		{ "a b", "/c/Foo.ICS", "Foo" },
		/* neither: a hash */
		{ "../../etc/passwd", "/c/..%2F..%2Fx.vcf", "#" },
		{ ".hidden", "/c/.also-hidden.vcf", "#" },
		{ "J\xc3\xb6rg", "/c/J%C3%B6rg.vcf", "#" },
		{ "x/y", "/c/%2F.ics", "#" },
		{ "", "/c/ok.ics", "ok" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *out = NULL;
		assert_int_equal(ks_vdir_item_name(c[i].uid, c[i].href, &out), 0);
		if (strcmp(c[i].want, "#") == 0) {
			char hex[65], want[40];
			ks_sha256_hex(c[i].uid, strlen(c[i].uid), hex);
			snprintf(want, sizeof(want), "h%.32s", hex);
			assert_string_equal(out, want);
		} else
			assert_string_equal(out, c[i].want);
		assert_true(ks_vdir_name_is_safe(out));
		free(out);
	}
}

static void test_item_name_long_uid(void **state)
{
	char uid[300];
	char *out = NULL;

	memset(uid, 'a', sizeof(uid) - 1);
	uid[sizeof(uid) - 1] = 0;
	assert_int_equal(ks_vdir_item_name(uid, "/c/also-long-but-fine.vcf", &out), 0);
	assert_string_equal(out, "also-long-but-fine");
	free(out);
	uid[128] = 0;
	assert_int_equal(ks_vdir_item_name(uid, "/c/x.vcf", &out), 0);
	assert_string_equal(out, uid);
	free(out);
}

static void test_collection_name(void **state)
{
	static const struct {
		const char *href, *want;
	} c[] = {
		{ "/calendars/AB12345/personal/", "personal" },
		{ "/user/9f1c-aa/", "9f1c-aa" },
		{ "/dav/My%20Calendar/", "My_Calendar" },
		{ "/dav/.secret/", "_secret" },
		{ "/dav/%2E%2E/", "_." },
		{ "/", "collection" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *out = NULL;
		assert_int_equal(ks_vdir_collection_name(c[i].href, &out), 0);
		assert_string_equal(out, c[i].want);
		free(out);
	}
}

static void test_color(void **state)
{
	static const struct {
		const char *in, *want;
	} c[] = {
		{ "#ff8800", "#FF8800" }, { "#FF8800FF", "#FF8800" }, { "#f80", "#FF8800" },
		{ " #a1b2c3 \n", "#A1B2C3" }, { "red", NULL }, { "#12345", NULL },
		{ "#gg0000", NULL }, { "", NULL }, { "#ff8800\n../../x", "#FF8800" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *out = ks_vdir_color(c[i].in);
		if (!c[i].want)
			assert_null(out);
		else
			assert_string_equal(out, c[i].want);
		free(out);
	}
}

static void test_displayname(void **state)
{
	char *s = ks_vdir_displayname("  Work\nstuff\t\x01 ");
	assert_string_equal(s, "Work stuff");
	free(s);
	/* C1 controls (CSI), DEL and bidi overrides; other non-ASCII text is kept. */
	s = ks_vdir_displayname("\xc2\x9b" "31mRed\x7f\xe2\x80\xae" "evil\xe2\x81\xa6 Caf\xc3\xa9\xc2\xa0");
	assert_string_equal(s, "31mRed  evil  Caf\xc3\xa9\xc2\xa0");
	free(s);
	assert_null(ks_vdir_displayname(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_item_name),
		cmocka_unit_test(test_item_name_long_uid),
		cmocka_unit_test(test_collection_name),
		cmocka_unit_test(test_color),
		cmocka_unit_test(test_displayname),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
