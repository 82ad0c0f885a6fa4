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

#include "engine_p.h"
#include "fsutil_p.h"
#include "macro.h"

/* The local store's directories: opened without following a symbolic link anywhere below the
 * data directory, made when asked; item files removed. */

typedef struct fixture {
	char root[64];
	char *data;
	char *outside;
	ks_engine *e;
	ks_collection col;
	ks_local l;
} fixture;

static void path_of(char *buf, size_t n, const fixture *f, const char *rel)
{
	snprintf(buf, n, "%s/%s", f->data, rel);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->root, sizeof(f->root), "/tmp/ksync-test-local-XXXXXX");
	assert_non_null(mkdtemp(f->root));
	assert_true(asprintf(&f->data, "%s/data", f->root) > 0);
	assert_true(asprintf(&f->outside, "%s/outside", f->root) > 0);
	assert_int_equal(mkdir(f->outside, 0700), 0);
	assert_int_equal(ks_engine_new(f->data, &f->e), 0);
	f->col = (ks_collection) { .kind = KS_COLLECTION_ADDRESSBOOK, .name = (char *) "book" };
	assert_int_equal(ks_local_init(&f->l, f->e, "acct", &f->col), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	char cmd[128];

	ks_local_done(&f->l);
	ks_engine_free(f->e);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
	assert_int_equal(system(cmd), 0);
	free(f->data);
	free(f->outside);
	free(f);
	return 0;
}

static bool outside_empty(const fixture *f)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", f->outside);
	return system(cmd) == 0;
}

static void test_open_creates_and_refuses_links(void **state)
{
	fixture *f = *state;
	_cleanup_free_ char *where = NULL;
	char p[512];

	/* Missing and not to be made. */
	assert_int_equal(ks_local_open(&f->l, false, &where), -ENOENT);
	free(where);
	where = NULL;
	assert_int_equal(ks_local_open(&f->l, true, NULL), 0);
	assert_true(f->l.dirfd >= 0);
	close(f->l.dirfd);
	f->l.dirfd = -1;

	/* The account directory replaced by a link: refused, nothing made where it points. */
	path_of(p, sizeof(p), f, "contacts/acct");
	char moved[512];
	snprintf(moved, sizeof(moved), "%s/acct-moved", f->root);
	assert_int_equal(rename(p, moved), 0);
	assert_int_equal(symlink(f->outside, p), 0);
	assert_int_equal(ks_local_open(&f->l, true, &where), -ELOOP);
	path_of(p, sizeof(p), f, "contacts/acct");
	assert_string_equal(where, p);
	assert_int_equal(f->l.dirfd, -1);
	assert_true(outside_empty(f));
}

static void test_conflicts_refuses_links(void **state)
{
	fixture *f = *state;
	_cleanup_free_ char *where = NULL;
	char p[512];
	int fd = -1;

	assert_int_equal(ks_local_open_conflicts(&f->l, NULL, false, &fd, &where), -ENOENT);
	free(where);
	where = NULL;
	assert_int_equal(ks_local_open_conflicts(&f->l, "merge-1", true, &fd, NULL), 0);
	close(fd);
	path_of(p, sizeof(p), f, "conflicts/acct/contacts/book/merge-1");
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* A link anywhere on the way (here the account's) stops it. */
	char moved[512];
	snprintf(moved, sizeof(moved), "%s/conflicts-moved", f->root);
	path_of(p, sizeof(p), f, "conflicts/acct");
	assert_int_equal(rename(p, moved), 0);
	assert_int_equal(symlink(f->outside, p), 0);
	fd = -1;
	assert_int_equal(ks_local_open_conflicts(&f->l, "merge-2", true, &fd, &where), -ELOOP);
	assert_int_equal(fd, -1);
	assert_string_equal(where, p);
	assert_true(outside_empty(f));
}

static void test_remove_file(void **state)
{
	fixture *f = *state;

	assert_int_equal(ks_local_open(&f->l, true, NULL), 0);
	assert_int_equal(ks_fs_write_atomic(f->l.dirfd, "a.vcf", "x", 1), 0);
	assert_int_equal(ks_local_remove_file(&f->l, "a.vcf"), 0);
	assert_int_equal(faccessat(f->l.dirfd, "a.vcf", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(errno, ENOENT);
	/* Gone already is what was wanted. */
	assert_int_equal(ks_local_remove_file(&f->l, "a.vcf"), 0);
	/* A directory is no item file: refused, left. */
	assert_int_equal(mkdirat(f->l.dirfd, "d.vcf", 0700), 0);
	assert_int_equal(ks_local_remove_file(&f->l, "d.vcf"), -EISDIR);
}

static void test_wants_vcard4(void **state)
{
	fixture *f = *state;
	static const char v4[] = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:a\r\nEND:VCARD\r\n";
	static const char v3[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nEND:VCARD\r\n";

	assert_false(ks_local_wants_vcard4(&f->l, v4, strlen(v4)));
	f->col.vcard4 = true;
	assert_true(ks_local_wants_vcard4(&f->l, v4, strlen(v4)));
	assert_false(ks_local_wants_vcard4(&f->l, v3, strlen(v3)));
	/* Only the bytes given count. */
	assert_false(ks_local_wants_vcard4(&f->l, v4, 20));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_and_refuses_links, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conflicts_refuses_links, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wants_vcard4, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
