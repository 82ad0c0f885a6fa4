/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "fsutil_p.h"

static char dir[64];
static int dfd = -1;

static int setup(void **state)
{
	strcpy(dir, "/tmp/ks-fs-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	return dfd >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	close(dfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_write_atomic(void **state)
{
	char *s = NULL;
	size_t n = 0;
	struct stat st;

	assert_int_equal(ks_fs_write_atomic(dfd, "a.vcf", "hello", 5), 0);
	assert_int_equal(ks_fs_read_file(dfd, "a.vcf", 100, &s, &n), 0);
	assert_int_equal(n, 5);
	assert_string_equal(s, "hello");
	free(s);
	assert_int_equal(fstatat(dfd, "a.vcf", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* A temp file left by a crash does not block the next write. */
	int fd = openat(dfd, ".ksync-a.vcf.tmp", O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ks_fs_write_atomic(dfd, "a.vcf", "bye", 3), 0);
	assert_int_equal(faccessat(dfd, ".ksync-a.vcf.tmp", F_OK, 0), -1);
	assert_int_equal(ks_fs_read_file(dfd, "a.vcf", 2, &s, &n), -EFBIG);
	assert_int_equal(symlinkat("/etc/passwd", dfd, "link.vcf"), 0);
	assert_int_equal(ks_fs_read_file(dfd, "link.vcf", 100000, &s, &n), -ELOOP);
}

static void test_batch(void **state)
{
	ks_fs_batch *b = NULL;
	struct stat st;
	char *s = NULL;

	assert_int_equal(ks_fs_batch_new(dfd, &b), 0);
	assert_int_equal(ks_fs_batch_add(b, "x.ics", "X", 1, &st), 0);
	assert_int_equal(ks_fs_batch_add(b, "y.ics", "YY", 2, NULL), 0);
	assert_int_equal(st.st_size, 1);
	/* Nothing is visible before the commit. */
	assert_int_equal(faccessat(dfd, "x.ics", F_OK, 0), -1);
	assert_int_equal(ks_fs_batch_commit(b), 0);
	ks_fs_batch_free(b);
	assert_int_equal(ks_fs_read_file(dfd, "y.ics", 10, &s, NULL), 0);
	assert_string_equal(s, "YY");
	free(s);
	struct stat st2;
	assert_int_equal(fstatat(dfd, "x.ics", &st2, 0), 0);
	assert_int_equal(st.st_ino, st2.st_ino);

	/* An abandoned batch leaves nothing behind. */
	assert_int_equal(ks_fs_batch_new(dfd, &b), 0);
	assert_int_equal(ks_fs_batch_add(b, "z.ics", "Z", 1, NULL), 0);
	ks_fs_batch_free(b);
	assert_int_equal(faccessat(dfd, ".ksync-z.ics.tmp", F_OK, 0), -1);
	assert_int_equal(faccessat(dfd, "z.ics", F_OK, 0), -1);
}

static void test_write_if_changed_and_clean(void **state)
{
	struct stat a, b;

	assert_int_equal(ks_fs_write_if_changed(dfd, "color", "#FF0000\n"), 1);
	assert_int_equal(fstatat(dfd, "color", &a, 0), 0);
	assert_int_equal(ks_fs_write_if_changed(dfd, "color", "#FF0000\n"), 0);
	assert_int_equal(fstatat(dfd, "color", &b, 0), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(ks_fs_write_if_changed(dfd, "color", "#00FF00\n"), 1);

	int fd = openat(dfd, ".ksync-left.ics.tmp", O_WRONLY | O_CREAT, 0600);
	close(fd);
	fd = openat(dfd, "keep.tmp", O_WRONLY | O_CREAT, 0600);
	close(fd);
	/* Another program's temp file (an editor saving) is not ksync's to remove. */
	fd = openat(dfd, ".notes.ics.tmp", O_WRONLY | O_CREAT, 0600);
	close(fd);
	assert_int_equal(ks_fs_clean_temp(dfd), 1);
	assert_int_equal(faccessat(dfd, "keep.tmp", F_OK, 0), 0);
	assert_int_equal(faccessat(dfd, ".notes.ics.tmp", F_OK, 0), 0);
	assert_true(ks_fs_is_temp_name(".ksync-a.vcf.tmp"));
	assert_false(ks_fs_is_temp_name(".ksync-.tmp"));
	assert_false(ks_fs_is_temp_name(".a.vcf.tmp"));
}

static void test_mkdir_p(void **state)
{
	char p[160];
	struct stat st;

	snprintf(p, sizeof(p), "%s/a/b/c", dir);
	assert_int_equal(ks_fs_mkdir_p(p), 0);
	assert_int_equal(ks_fs_mkdir_p(p), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(p, sizeof(p), "%s/file", dir);
	assert_int_equal(ks_fs_write_atomic(dfd, "file", "", 0), 0);
	snprintf(p, sizeof(p), "%s/file/sub", dir);
	assert_int_equal(ks_fs_mkdir_p(p), -ENOTDIR);
}

static void test_open_beneath(void **state)
{
	static const struct {
		const char *rel;
		bool create;
		int want;
		size_t at;	/* where the failing component ends */
	} cases[] = {
		{ "contacts/acct/book", true, 0, 0 },
		{ "contacts/acct/book", false, 0, 0 },
		{ "contacts/acct/new", false, -ENOENT, 17 },
		{ "contacts/link/book", true, -ELOOP, 13 },
		{ "contacts/acct/dangling", true, -ELOOP, 22 },
		{ "contacts/acct/file", true, -ENOTDIR, 18 },
		{ "contacts/acct/file/x", true, -ENOTDIR, 18 },
	};
	char p[160];
	int fd;

	snprintf(p, sizeof(p), "%s/outside", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(ks_fs_open_beneath(dir, "contacts/acct", true, &fd, NULL), 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/contacts/link", dir);
	assert_int_equal(symlink("../outside", p), 0);
	snprintf(p, sizeof(p), "%s/contacts/acct/dangling", dir);
	assert_int_equal(symlink("/nonexistent/ksync", p), 0);
	snprintf(p, sizeof(p), "%s/contacts/acct/file", dir);
	assert_int_equal(close(open(p, O_WRONLY | O_CREAT, 0600)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t at = 99;
		fd = -1;
		int r = ks_fs_open_beneath(dir, cases[i].rel, cases[i].create, &fd, &at);
		assert_int_equal(r, cases[i].want);
		if (r == 0) {
			assert_true(fd >= 0);
			close(fd);
		} else
			assert_int_equal(at, cases[i].at);
	}
	/* Nothing was created through the link. */
	snprintf(p, sizeof(p), "%s/outside/book", dir);
	assert_int_equal(access(p, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_if_changed_and_clean, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_beneath, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
