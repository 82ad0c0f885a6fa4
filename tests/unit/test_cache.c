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
#include <unistd.h>
#include <cmocka.h>

#include "cache_p.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
	strcpy(dir, "/tmp/ks-cache-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/ksync.db", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static ks_collection make_col(const char *href, const char *name)
{
	return (ks_collection) {
		.account = strdup("acc"), .href = strdup(href), .kind = KS_COLLECTION_CALENDAR,
		.name = strdup(name), .displayname = strdup("Cal"), .color = strdup("#FF0000"),
		.components = 3, .supports_sync = true, .enabled = true,
	};
}

static void test_roundtrip(void **state)
{
	ks_cache *c = NULL;
	assert_int_equal(ks_cache_open(path, &c), 0);

	ks_cache_account a = { .principal = "/p/", .calendar_home = "/c/",
			       .addressbook_home = NULL, .discovered_at = 42 };
	assert_int_equal(ks_cache_put_account(c, "acc", &a), 0);
	ks_cache_account b = {};
	assert_int_equal(ks_cache_get_account(c, "acc", &b), 0);
	assert_string_equal(b.principal, "/p/");
	assert_null(b.addressbook_home);
	assert_int_equal(b.discovered_at, 42);
	ks_cache_account_done(&b);
	assert_int_equal(ks_cache_get_account(c, "nope", &b), -ENOENT);

	ks_collection col = make_col("/c/work/", "work");
	assert_int_equal(ks_cache_save_collection(c, &col), 0);
	assert_true(col.id > 0);
	ks_collection dup = make_col("/c/other/", "work");
	assert_int_equal(ks_cache_save_collection(c, &dup), -EEXIST);
	ks_collection_done(&dup);
	assert_int_equal(ks_cache_set_collection_state(c, col.id, "tok-1", NULL), 0);

	ks_item_info info = { .kind = KS_ITEM_VEVENT, .uid = "u1", .summary = "Meet",
			      .dtstart = "2026-01-01T10:00:00Z", .has_rrule = true };
	ks_item_row row = { .href = "/c/work/u1.ics", .etag = "\"e1\"", .filename = "u1.ics",
			    .data = "BEGIN:VCALENDAR", .len = 15, .info = &info, .hash = "00" };
	assert_int_equal(ks_cache_begin(c), 0);
	assert_int_equal(ks_cache_put_item(c, col.id, &row), 0);
	assert_int_equal(ks_cache_commit(c), 0);
	row.etag = "\"e2\"";
	assert_int_equal(ks_cache_put_item(c, col.id, &row), 0);
	assert_int_equal(ks_cache_count_items(c, col.id), 1);

	ks_cache_item it = {};
	assert_int_equal(ks_cache_get_item(c, col.id, "/c/work/u1.ics", &it), 0);
	assert_string_equal(it.etag, "\"e2\"");
	assert_string_equal(it.uid, "u1");
	assert_string_equal(it.filename, "u1.ics");
	ks_cache_item_done(&it);
	assert_int_equal(ks_cache_filename_taken(c, col.id, "u1.ics", "/c/work/u1.ics"), 0);
	assert_int_equal(ks_cache_filename_taken(c, col.id, "u1.ics", "/c/work/other.ics"), 1);

	ks_collection *list = NULL;
	size_t n = 0;
	assert_int_equal(ks_cache_list_collections(c, "acc", &list, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].sync_token, "tok-1");
	assert_string_equal(list[0].name, "work");
	assert_int_equal(list[0].components, 3);
	ks_collection_free_array(list, n);

	/* Deleting the collection deletes its items. */
	assert_int_equal(ks_cache_delete_collection(c, col.id), 0);
	assert_int_equal(ks_cache_count_items(c, col.id), 0);
	ks_collection_done(&col);
	ks_cache_free(c);

	/* Reopening keeps the schema and data. */
	assert_int_equal(ks_cache_open(path, &c), 0);
	assert_int_equal(ks_cache_get_account(c, "acc", &b), 0);
	ks_cache_account_done(&b);
	ks_cache_free(c);
}

static void test_rollback(void **state)
{
	ks_cache *c = NULL;
	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_collection col = make_col("/c/x/", "x");
	assert_int_equal(ks_cache_save_collection(c, &col), 0);
	ks_item_row row = { .href = "/c/x/a.ics", .filename = "a.ics", .data = "x", .len = 1 };
	assert_int_equal(ks_cache_begin(c), 0);
	assert_int_equal(ks_cache_put_item(c, col.id, &row), 0);
	ks_cache_rollback(c);
	assert_int_equal(ks_cache_count_items(c, col.id), 0);
	ks_collection_done(&col);
	ks_cache_free(c);
}

static void test_corrupt_and_newer(void **state)
{
	ks_cache *c = NULL;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char junk[4096];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t) sizeof(junk));
	close(fd);
	assert_int_equal(ks_cache_open(path, &c), -EUCLEAN);
	unlink(path);

	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_cache_free(c);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'PRAGMA user_version = 99'", path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(ks_cache_open(path, &c), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_and_newer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
