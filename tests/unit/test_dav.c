/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dav_p.h"

static const struct {
	const char *href;
	const char *want;	/* NULL: -EINVAL */
} norm_cases[] = {
	{ "/dav/user/contacts/", "/dav/user/contacts/" },
	{ "  /dav/a%2fb.vcf\n", "/dav/a%2Fb.vcf" },
	{ "/dav/a%2Fb.vcf", "/dav/a%2Fb.vcf" },
	{ "/dav/J%c3%b6rg.vcf", "/dav/J%C3%B6rg.vcf" },
	{ "/dav/J%C3%B6rg.vcf", "/dav/J%C3%B6rg.vcf" },
	{ "/dav/J\xc3\xb6rg.vcf", "/dav/J%C3%B6rg.vcf" },
	{ "/dav/%41bc@x.ics", "/dav/Abc@x.ics" },
	{ "/dav/a b.ics", "/dav/a%20b.ics" },
	{ "/dav/a%20b.ics", "/dav/a%20b.ics" },
	{ "/dav//x.ics", "/dav/x.ics" },
	{ "/dav/x.ics?foo=1", "/dav/x.ics" },
	{ "/dav/100%25.ics", "/dav/100%25.ics" },
	{ "https://dav.example.org/cal/x.ics", "/cal/x.ics" },
	{ "HTTPS://DAV.example.org/cal/x.ics", "/cal/x.ics" },
	{ "https://evil.example.net/cal/x.ics", NULL },
	{ "http://dav.example.org/cal/x.ics", NULL },
	{ "/dav/../etc/passwd", NULL },
	{ "/dav/%2e%2e/etc/passwd", NULL },
	{ "/dav/./x.ics", NULL },
	{ "/dav/x%00.ics", NULL },
	{ "/dav/x%zz.ics", NULL },
	{ "/dav/x%4", NULL },
	{ "relative/x.ics", NULL },
	{ "", NULL },
};

static void test_href_normalize(void **state)
{
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		char *out = NULL;
		int r = ks_href_normalize("https://dav.example.org/", norm_cases[i].href, &out);
		if (!norm_cases[i].want) {
			if (r != -EINVAL)
				fail_msg("case %zu '%s': want -EINVAL, got %d '%s'", i,
					 norm_cases[i].href, r, out ? out : "");
		} else {
			if (r < 0)
				fail_msg("case %zu '%s': got %d", i, norm_cases[i].href, r);
			assert_string_equal(out, norm_cases[i].want);
		}
		free(out);
	}
}

static void test_href_normalize_is_idempotent(void **state)
{
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		char *a = NULL, *b = NULL;
		if (ks_href_normalize("https://dav.example.org/", norm_cases[i].href, &a) < 0)
			continue;
		assert_int_equal(ks_href_normalize("https://dav.example.org/", a, &b), 0);
		assert_string_equal(a, b);
		free(a);
		free(b);
	}
}

static void test_href_basename(void **state)
{
	static const struct {
		const char *href, *want;
	} c[] = {
		{ "/dav/user/contacts/", "contacts" },
		{ "/dav/user/contacts", "contacts" },
		{ "/dav/J%C3%B6rg.vcf", "J\xc3\xb6rg.vcf" },
		{ "/dav/a%2Fb.vcf", "a/b.vcf" },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *out = NULL;
		assert_int_equal(ks_href_basename(c[i].href, &out), 0);
		assert_string_equal(out, c[i].want);
		free(out);
	}
	char *out = NULL;
	assert_int_equal(ks_href_basename("/", &out), -EINVAL);
}

static void test_status_to_errno(void **state)
{
	static const struct {
		long status;
		int want;
	} c[] = {
		{ 200, 0 }, { 201, 0 }, { 204, 0 }, { 207, 0 },
		{ 401, -EACCES }, { 403, -EACCES }, { 404, -ENOENT }, { 410, -ENOENT },
		{ 412, -ESTALE }, { 507, -ENOSPC }, { 429, -EAGAIN }, { 503, -EAGAIN },
		{ 500, -EIO }, { 502, -EIO }, { 501, -EOPNOTSUPP }, { 405, -EOPNOTSUPP },
		{ 400, -EPROTO }, { 409, -EPROTO }, { 302, -EPROTO },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		assert_int_equal(ks_dav_status_to_errno(c[i].status), c[i].want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_href_normalize),
		cmocka_unit_test(test_href_normalize_is_idempotent),
		cmocka_unit_test(test_href_basename),
		cmocka_unit_test(test_status_to_errno),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
