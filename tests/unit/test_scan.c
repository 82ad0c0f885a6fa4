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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cache_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "scan_p.h"

static char dir[64], dbpath[128];
static int dfd = -1;
static ks_cache *cache;
static int64_t coll;

static int setup(void **state)
{
	strcpy(dir, "/tmp/ks-scan-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(dbpath, sizeof(dbpath), "%s/db", dir);
	char sub[96];
	snprintf(sub, sizeof(sub), "%s/c", dir);
	if (mkdir(sub, 0700) < 0)
		return -1;
	dfd = open(sub, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || ks_cache_open(dbpath, &cache) < 0)
		return -1;
	ks_collection col = { .account = strdup("a"), .href = strdup("/c/"),
			      .kind = KS_COLLECTION_ADDRESSBOOK, .name = strdup("c"),
			      .enabled = true };
	int r = ks_cache_save_collection(cache, &col);
	coll = col.id;
	ks_collection_done(&col);
	return r;
}

static int teardown(void **state)
{
	char cmd[128];
	ks_cache_free(cache);
	close(dfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Writes name with data and records it in the cache as ksync would after a sync. */
static void tracked(const char *name, const char *data)
{
	struct stat st;
	char hex[65], href[64];

	/* Written a while ago: a stat taken in the clock tick of the file's mtime is not
	 * trusted (lib/cache.c). */
	struct timespec before[2] = { { 0, UTIME_OMIT }, { time(NULL) - 60, 0 } };

	assert_int_equal(ks_fs_write_atomic(dfd, name, data, strlen(data)), 0);
	assert_int_equal(utimensat(dfd, name, before, 0), 0);
	assert_int_equal(fstatat(dfd, name, &st, 0), 0);
	ks_sha256_hex(data, strlen(data), hex);
	snprintf(href, sizeof(href), "/c/%s", name);
	ks_item_row row = {
		.href = href, .etag = "\"1\"", .filename = name, .data = data,
		.len = strlen(data), .hash = hex,
		.mtime_ns = (int64_t) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
		.ino = (int64_t) st.st_ino, .size = st.st_size,
	};
	assert_int_equal(ks_cache_put_item(cache, coll, &row), 0);
}

static void put(const char *name, const char *data)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t) strlen(data));
	close(fd);
}

static const ks_local_change *find(const ks_scan_result *r, const char *name)
{
	for (size_t i = 0; i < r->n_changes; i++)
		if (strcmp(r->changes[i].filename, name) == 0)
			return &r->changes[i];
	return NULL;
}

static void test_names(void **state)
{
	static const struct {
		const char *name;
		bool item;
	} c[] = {
		{ "a.vcf", true }, { "A.VCF", true }, { ".a.vcf", false }, { "a.vcf~", false },
		{ ".#a.vcf", false }, { ".a.vcf.swp", false }, { "a.vcf.tmp", false },
		{ "a", false }, { ".vcf", false }, { "vcf", false }, { "a.ics", false },
		{ "displayname", false },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		assert_int_equal(ks_scan_is_item_name(c[i].name, ".vcf"), c[i].item);
}

static void test_changes(void **state)
{
	ks_scan_result r = {};
	/* Another mtime, in the past: a stat taken before the clock is past the file's mtime
	 * is not trusted (lib/cache.c), and would be read again. */
	struct timespec other[2] = { { 0, UTIME_OMIT }, { 1600000000, 0 } };

	tracked("same.vcf", "BEGIN:VCARD\r\nUID:s\r\nEND:VCARD\r\n");
	tracked("edited.vcf", "BEGIN:VCARD\r\nUID:e\r\nEND:VCARD\r\n");
	tracked("touched.vcf", "BEGIN:VCARD\r\nUID:t\r\nEND:VCARD\r\n");
	tracked("gone.vcf", "BEGIN:VCARD\r\nUID:g\r\nEND:VCARD\r\n");
	tracked("renamed-over.vcf", "BEGIN:VCARD\r\nUID:r\r\nEND:VCARD\r\n");

	/* An in-place edit keeping size but changing content and mtime. */
	put("edited.vcf", "BEGIN:VCARD\r\nUID:E\r\nEND:VCARD\r\n");
	assert_int_equal(utimensat(dfd, "edited.vcf", other, 0), 0);
	/* Only the mtime changed. */
	assert_int_equal(utimensat(dfd, "touched.vcf", other, 0), 0);
	assert_int_equal(unlinkat(dfd, "gone.vcf", 0), 0);
	/* An editor writing a new file and renaming it over the old one: new inode. */
	put("tmpfile", "BEGIN:VCARD\r\nUID:r\r\nFN:x\r\nEND:VCARD\r\n");
	assert_int_equal(renameat(dfd, "tmpfile", dfd, "renamed-over.vcf"), 0);
	put("new.vcf", "BEGIN:VCARD\r\nUID:n\r\nEND:VCARD\r\n");
	put("backup.vcf~", "x");
	put(".#lock.vcf", "x");
	put("notes.txt", "x");
	assert_int_equal(symlinkat("/etc/passwd", dfd, "link.vcf"), 0);
	assert_int_equal(mkfifoat(dfd, "fifo.vcf", 0600), 0);

	assert_int_equal(ks_scan_collection(cache, coll, dfd, ".vcf", false, &r), 0);
	assert_int_equal(r.n_rows, 5);
	assert_int_equal(r.n_changes, 6);
	assert_int_equal(r.touched, 1);
	assert_int_equal(find(&r, "edited.vcf")->kind, KS_LOCAL_MODIFIED);
	assert_string_equal(find(&r, "edited.vcf")->href, "/c/edited.vcf");
	assert_string_equal(find(&r, "edited.vcf")->etag, "\"1\"");
	assert_non_null(find(&r, "edited.vcf")->data);
	assert_int_equal(find(&r, "renamed-over.vcf")->kind, KS_LOCAL_MODIFIED);
	assert_int_equal(find(&r, "gone.vcf")->kind, KS_LOCAL_DELETED);
	assert_int_equal(find(&r, "new.vcf")->kind, KS_LOCAL_NEW);
	assert_null(find(&r, "new.vcf")->href);
	assert_int_equal(find(&r, "link.vcf")->kind, KS_LOCAL_IGNORED);
	assert_int_equal(find(&r, "link.vcf")->error, -EBADF);
	assert_true(S_ISLNK(find(&r, "link.vcf")->st.st_mode));
	/* Never opened: an open for reading would block until a writer came. */
	assert_int_equal(find(&r, "fifo.vcf")->kind, KS_LOCAL_IGNORED);
	assert_true(S_ISFIFO(find(&r, "fifo.vcf")->st.st_mode));
	assert_null(find(&r, "touched.vcf"));
	assert_null(find(&r, "same.vcf"));
	ks_scan_result_done(&r);

	/* The touched file's new stat was recorded: it is not read again. */
	assert_int_equal(ks_scan_collection(cache, coll, dfd, ".vcf", false, &r), 0);
	assert_int_equal(r.touched, 0);
	assert_null(find(&r, "touched.vcf"));
	ks_scan_result_done(&r);
}

/* A file whose stat was recorded while the clock was still in the tick of its mtime (here an
 * mtime ahead of the clock) and then edited in place within that tick, same size, same mtime:
 * the scan reads it, and finds the edit. */
static void test_edit_within_the_tick(void **state)
{
	static const char v1[] = "BEGIN:VCARD\r\nUID:q\r\nFN:one\r\nEND:VCARD\r\n";
	static const char v2[] = "BEGIN:VCARD\r\nUID:q\r\nFN:two\r\nEND:VCARD\r\n";
	struct timespec ahead[2] = { { 0, UTIME_OMIT }, { time(NULL) + 3600, 0 } };
	ks_scan_result r = {};
	struct stat st;
	char hex[65];

	put("quick.vcf", v1);
	assert_int_equal(utimensat(dfd, "quick.vcf", ahead, 0), 0);
	assert_int_equal(fstatat(dfd, "quick.vcf", &st, 0), 0);
	ks_sha256_hex(v1, strlen(v1), hex);
	ks_item_row row = {
		.href = "/c/quick.vcf", .etag = "\"1\"", .filename = "quick.vcf", .data = v1,
		.len = strlen(v1), .hash = hex,
		.mtime_ns = (int64_t) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
		.ino = (int64_t) st.st_ino, .size = st.st_size,
	};
	assert_int_equal(ks_cache_put_item(cache, coll, &row), 0);
	assert_int_equal(ks_cache_take_unsettled(cache), 1);

	put("quick.vcf", v2);
	assert_int_equal(utimensat(dfd, "quick.vcf", ahead, 0), 0);
	assert_int_equal(ks_scan_collection(cache, coll, dfd, ".vcf", false, &r), 0);
	assert_non_null(find(&r, "quick.vcf"));
	assert_int_equal(find(&r, "quick.vcf")->kind, KS_LOCAL_MODIFIED);
	ks_scan_result_done(&r);
}

static void test_empty(void **state)
{
	ks_scan_result r = {};

	assert_int_equal(ks_scan_collection(cache, coll, dfd, ".vcf", false, &r), 0);
	assert_int_equal(r.n_changes, 0);
	assert_int_equal(r.n_rows, 0);
	ks_scan_result_done(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_edit_within_the_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
