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
			       .addressbook_home = NULL, .discovered_at = 42, .home_tokens = -1 };
	assert_int_equal(ks_cache_put_account(c, "acc", &a), 0);
	ks_cache_account b = {};
	assert_int_equal(ks_cache_get_account(c, "acc", &b), 0);
	assert_string_equal(b.principal, "/p/");
	assert_null(b.addressbook_home);
	assert_int_equal(b.discovered_at, 42);
	assert_int_equal(b.home_tokens, -1);
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

typedef struct seen_items {
	char text[256];
	int calls;
} seen_items;

static int on_item_data(const char *href, const char *etag, const char *uid, const char *filename,
			const char *data, size_t len, void *userdata)
{
	seen_items *s = userdata;
	size_t at = strlen(s->text);

	snprintf(s->text + at, sizeof(s->text) - at, "%s|%s|%s|%s|%.*s;", href, etag ? etag : "-",
		 uid ? uid : "-", filename, (int) len, data);
	return ++s->calls == 2 ? -ECANCELED : 0;
}

static void test_foreach_item_data(void **state)
{
	ks_cache *c = NULL;
	seen_items s = {};

	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_collection col = make_col("/c/work/", "work");
	assert_int_equal(ks_cache_save_collection(c, &col), 0);
	ks_item_info info = { .kind = KS_ITEM_VCARD, .uid = "u1" };
	/* The bytes are not NUL-terminated in the walk: len says where they end. */
	ks_item_row a = { .href = "/c/work/a.vcf", .etag = "\"1\"", .filename = "a.vcf",
			  .data = "AAAA", .len = 2, .info = &info, .hash = "00" };
	ks_item_row b = { .href = "/c/work/b.vcf", .filename = "b.vcf", .data = "BB", .len = 2,
			  .hash = "00" };
	ks_item_row z = { .href = "/c/work/z.vcf", .filename = "z.vcf", .data = "ZZ", .len = 2,
			  .hash = "00" };
	assert_int_equal(ks_cache_put_item(c, col.id, &a), 0);
	assert_int_equal(ks_cache_put_item(c, col.id, &b), 0);
	assert_int_equal(ks_cache_put_item(c, col.id, &z), 0);
	/* In the order they were stored; a negative return stops the walk and is returned. */
	assert_int_equal(ks_cache_foreach_item_data(c, col.id, on_item_data, &s), -ECANCELED);
	assert_string_equal(s.text, "/c/work/a.vcf|\"1\"|u1|a.vcf|AA;/c/work/b.vcf|-|-|b.vcf|BB;");
	ks_collection_done(&col);
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

/* A file overwritten in the middle still opens (the schema is on its first pages); the check
 * finds the damage without a read of the damaged rows. */
static void test_damaged_pages(void **state)
{
	ks_cache *c = NULL;
	char data[2048], href[64], name[64];
	struct stat st;

	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_collection col = make_col("/c/work/", "work");
	assert_int_equal(ks_cache_save_collection(c, &col), 0);
	memset(data, 'v', sizeof(data));
	ks_item_info info = { .kind = KS_ITEM_VEVENT, .uid = "u" };
	assert_int_equal(ks_cache_begin(c), 0);
	for (int i = 0; i < 200; i++) {
		snprintf(href, sizeof(href), "/c/work/%d.ics", i);
		snprintf(name, sizeof(name), "%d.ics", i);
		ks_item_row row = { .href = href, .etag = "\"e\"", .filename = name,
				    .data = data, .len = sizeof(data), .info = &info, .hash = "00" };
		assert_int_equal(ks_cache_put_item(c, col.id, &row), 0);
	}
	assert_int_equal(ks_cache_commit(c), 0);
	assert_int_equal(ks_cache_check(c), 0);
	ks_collection_done(&col);
	ks_cache_free(c);
	assert_int_equal(stat(path, &st), 0);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	memset(data, 0xa5, sizeof(data));
	for (off_t at = st.st_size / 2; at < st.st_size / 2 + 16384; at += sizeof(data))
		assert_int_equal(pwrite(fd, data, sizeof(data), at), (ssize_t) sizeof(data));
	close(fd);
	assert_int_equal(ks_cache_open(path, &c), 0);
	assert_int_equal(ks_cache_check(c), -EUCLEAN);
	ks_cache_free(c);
}

static void test_intents_conflicts_local(void **state)
{
	ks_cache *c = NULL;
	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_collection col = make_col("/c/x/", "x");
	assert_int_equal(ks_cache_save_collection(c, &col), 0);

	assert_int_equal(ks_cache_add_intent(c, col.id, "/c/x/a.ics", KS_INTENT_CREATE, "a.ics",
					     "h1"), 0);
	assert_int_equal(ks_cache_add_intent(c, col.id, "/c/x/a.ics", KS_INTENT_UPDATE, "a.ics",
					     "h2"), 0);
	assert_int_equal(ks_cache_add_intent(c, col.id, "/c/x/b.ics", KS_INTENT_DELETE, NULL,
					     NULL), 0);
	ks_intent *in = NULL;
	size_t n = 0;
	assert_int_equal(ks_cache_list_intents(c, col.id, &in, &n), 0);
	assert_int_equal(n, 2);
	/* One intent per href: the newer replaced the older. */
	for (size_t i = 0; i < n; i++)
		if (strcmp(in[i].href, "/c/x/a.ics") == 0) {
			assert_int_equal(in[i].op, KS_INTENT_UPDATE);
			assert_string_equal(in[i].hash, "h2");
		} else
			assert_int_equal(in[i].op, KS_INTENT_DELETE);
	ks_intents_free(in, n);
	assert_int_equal(ks_cache_clear_intent(c, col.id, "/c/x/a.ics"), 0);
	assert_int_equal(ks_cache_list_intents(c, col.id, &in, &n), 0);
	assert_int_equal(n, 1);
	ks_intents_free(in, n);

	assert_int_equal(ks_cache_add_conflict(c, "acc", "calendars/x", "u", "u.ics", "/k/u.ics",
					       "server", "SUMMARY"), 0);
	ks_conflict_row *rows = NULL;
	assert_int_equal(ks_cache_list_conflicts(c, "acc", &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].summary, "SUMMARY");
	ks_conflict_rows_free(rows, n);
	assert_int_equal(ks_cache_list_conflicts(c, "other", &rows, &n), 0);
	assert_int_equal(n, 0);
	ks_conflict_rows_free(rows, n);

	ks_item_info info = { .kind = KS_ITEM_VTODO, .uid = "t1" };
	ks_item_row b = { .href = "/c/x/b.ics", .filename = "b.ics", .data = "B", .len = 1,
			  .info = &info, .mtime_ns = 5, .ino = 6, .size = 1 };
	ks_item_row a = { .href = "/c/x/a.ics", .filename = "a.ics", .data = "AA", .len = 2 };
	assert_int_equal(ks_cache_put_item(c, col.id, &b), 0);
	assert_int_equal(ks_cache_put_item(c, col.id, &a), 0);
	ks_local_row *lr = NULL;
	assert_int_equal(ks_cache_list_local(c, col.id, &lr, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(lr[0].filename, "a.ics");
	assert_string_equal(lr[1].filename, "b.ics");
	assert_int_equal(lr[1].ino, 6);
	assert_int_equal(ks_cache_set_item_stat(c, lr[1].id, 7, 8, 9), 0);
	ks_local_rows_free(lr, n);
	assert_int_equal(ks_cache_list_local(c, col.id, &lr, &n), 0);
	assert_int_equal(lr[1].mtime_ns, 7);
	ks_local_rows_free(lr, n);

	char *data = NULL;
	size_t len = 0;
	assert_int_equal(ks_cache_get_item_data(c, col.id, "/c/x/a.ics", &data, &len), 0);
	assert_int_equal(len, 2);
	assert_string_equal(data, "AA");
	free(data);
	assert_int_equal(ks_cache_get_item_data(c, col.id, "/c/x/zz.ics", &data, &len), -ENOENT);
	ks_cache_item it = {};
	assert_int_equal(ks_cache_get_item_by_uid(c, col.id, "t1", &it), 0);
	assert_string_equal(it.filename, "b.ics");
	ks_cache_item_done(&it);

	/* Intents go with their collection. */
	assert_int_equal(ks_cache_delete_collection(c, col.id), 0);
	assert_int_equal(ks_cache_list_intents(c, col.id, &in, &n), 0);
	assert_int_equal(n, 0);
	ks_intents_free(in, n);
	ks_collection_done(&col);
	ks_cache_free(c);
}

static void test_migrate_from_v1(void **state)
{
	char cmd[2048];
	ks_cache *c = NULL;

	/* A version 1 cache: today's schema without what versions 2 to 8 added. */
	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_cache_account a0 = { .principal = "/p/", .discovered_at = 7, .listed_at = 9 };
	assert_int_equal(ks_cache_put_account(c, "a", &a0), 0);
	ks_cache_free(c);
	snprintf(cmd, sizeof(cmd),
		 "sqlite3 '%s' 'ALTER TABLE account DROP COLUMN listed_at; "
		 "ALTER TABLE account DROP COLUMN home_tokens; DROP TABLE intent; "
		 "DROP TABLE conflict; DROP INDEX item_scan; DROP TABLE refusal; "
		 "ALTER TABLE collection DROP COLUMN guard_at; "
		 "ALTER TABLE collection DROP COLUMN guard_base; "
		 "ALTER TABLE collection DROP COLUMN guard_deleted; "
		 "ALTER TABLE collection DROP COLUMN synced_at; "
		 "ALTER TABLE collection DROP COLUMN vcard4; "
		 "ALTER TABLE collection DROP COLUMN ruled; "
		 "ALTER TABLE collection DROP COLUMN dir; DROP TABLE outside; "
		 "DROP TABLE time_window; PRAGMA user_version = 1;'", path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(ks_cache_open(path, &c), 0);
	ks_cache_account a = {};
	assert_int_equal(ks_cache_get_account(c, "a", &a), 0);
	assert_int_equal(a.discovered_at, 7);
	assert_int_equal(a.listed_at, 0);
	assert_int_equal(a.home_tokens, 0);
	ks_cache_account_done(&a);
	ks_cache_free(c);
	/* Every later version's additions are there. */
	snprintf(cmd, sizeof(cmd),
		 "test \"$(sqlite3 '%s' \"SELECT count(*) FROM sqlite_master WHERE name IN "
		 "('intent', 'conflict', 'item_scan', 'refusal', 'outside', 'outside_file', "
		 "'time_window')\")\" = 7 && "
		 "test \"$(sqlite3 '%s' \"SELECT count(*) FROM pragma_table_info('collection') "
		 "WHERE name IN ('guard_at', 'guard_base', 'guard_deleted', 'synced_at', "
		 "'vcard4', 'ruled', 'dir')\")\" = 7 && "
		 "test \"$(sqlite3 '%s' \"SELECT count(*) FROM pragma_table_info('account') "
		 "WHERE name IN ('listed_at', 'home_tokens')\")\" = 2 && "
		 "test \"$(sqlite3 '%s' 'PRAGMA user_version')\" = 8", path, path, path, path);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreach_item_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_and_newer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intents_conflicts_local, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
