/* SPDX-License-Identifier: MIT */
#pragma once

/* Reading the files under tests/fixtures/<subdir>/ (KSYNC_FIXTURES, set by make check-unit)
 * for the unit tests. Include after <cmocka.h>. */

#include <stdio.h>
#include <stdlib.h>

/* The whole file, NUL-terminated; the test fails when it cannot be read. */
static inline char *ks_test_read_fixture(const char *subdir, const char *name, size_t *ret_len)
{
	const char *dir = getenv("KSYNC_FIXTURES");
	char path[4096];
	FILE *f;
	char *data;
	long n;

	if (!dir)
		fail_msg("KSYNC_FIXTURES is not set");
	snprintf(path, sizeof(path), "%s/%s/%s", dir, subdir, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	data = malloc((size_t) n + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t) n, f), (size_t) n);
	data[n] = 0;
	fclose(f);
	*ret_len = (size_t) n;
	return data;
}
