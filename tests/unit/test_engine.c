/* SPDX-License-Identifier: MIT */
/* The sync engine, whole (ks_sync_account(), as ksyncd and ksyncctl run it), against a server
 * held in memory (memremote.c) and real files and a real cache in a temporary directory: each
 * scenario sets both sides up, syncs, and checks the server, the files, the conflict copies
 * and what the run reported; most end with a second sync that must change nothing.
 *
 * KSYNC_ENGINE_TMPDIR is where the temporary directories go (default: /dev/shm when it can be
 * written, else $TMPDIR or /tmp). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "buf_p.h"
#include "cache_p.h"
#include "engine_p.h"
#include "ksync.h"
#include "memremote.h"

/* ---- the process's clock and random bytes ----------------------------------------------- */

/* The engine waits before taking a missing file for deleted, in case another program is
 * moving it (lib/push.c, confirm_deletions()); nothing else touches the files of a test run,
 * so the wait is skipped, and counted. Random bytes (new UIDs, hrefs picked for a UID held by
 * another item) come from a seeded generator, so that a scenario replays the same. Both
 * replace the libc functions for the engine linked into this program. */
static uint64_t skipped_sleep_ns;
static uint64_t random_state = 1;

int nanosleep(const struct timespec *req, struct timespec *rem)
{
	skipped_sleep_ns += (uint64_t) req->tv_sec * 1000000000 + (uint64_t) req->tv_nsec;
	if (rem)
		*rem = (struct timespec) {};
	return 0;
}

static uint64_t next_random(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t) next_random(&random_state);
	return (ssize_t) n;
}

/* cmocka cuts long failure messages: the whole text goes to stderr first. */
#define FAIL(...)                                                               \
	do {                                                                    \
		fprintf(stderr, __VA_ARGS__);                                   \
		fprintf(stderr, "\n");                                          \
		fail();                                                         \
	} while (0)

/* ---- a test environment: the server, the data directory, the engine --------------------- */

#define ACCOUNT "acc"

typedef struct env {
	char root[256];
	char data[300];
	ks_engine *e;
	mem_remote *m;
	ks_account_config acc;
	char cal[64], book[64];		/* the hrefs of a calendar and an address book */
	char cal_dir[400], book_dir[400];
	/* what the last run reported */
	int r;
	unsigned failed, account_failed, conflicts, skipped, guard;
	unsigned added, updated, deleted, uploaded, removed;
	ks_buf log;
} env;

static const char *tmp_base(void)
{
	const char *d = getenv("KSYNC_ENGINE_TMPDIR");

	if (d && *d)
		return d;
	/* Memory-backed: the engine flushes every file and transaction it writes, which on a
	 * disk would cost more than everything else a scenario does. */
	if (access("/dev/shm", W_OK | X_OK) == 0)
		return "/dev/shm";
	d = getenv("TMPDIR");
	return d && *d ? d : "/tmp";
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *path)
{
	(void) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes the server (a calendar "events" and an address book "book") and an engine on a new
 * data directory. */
static void env_init(env *v)
{
	*v = (env) {};
	snprintf(v->root, sizeof(v->root), "%s/ksync-engine-XXXXXX", tmp_base());
	assert_non_null(mkdtemp(v->root));
	snprintf(v->data, sizeof(v->data), "%s/data", v->root);
	assert_int_equal(ks_engine_new(v->data, &v->e), 0);
	assert_int_equal(mem_remote_new(&v->m), 0);
	assert_int_equal(mem_add_collection(v->m, KS_COLLECTION_CALENDAR, "events", "Events",
					    NULL), 0);
	assert_int_equal(mem_add_collection(v->m, KS_COLLECTION_ADDRESSBOOK, "book", "Book",
					    NULL), 0);
	snprintf(v->cal, sizeof(v->cal), "%sevents/", MEM_CALENDAR_HOME);
	snprintf(v->book, sizeof(v->book), "%sbook/", MEM_ADDRESSBOOK_HOME);
	snprintf(v->cal_dir, sizeof(v->cal_dir), "%s/calendars/" ACCOUNT "/events", v->data);
	snprintf(v->book_dir, sizeof(v->book_dir), "%s/contacts/" ACCOUNT "/book", v->data);
	v->acc = (ks_account_config) {
		.name = (char *) ACCOUNT, .url = (char *) MEM_BASE_URL,
		.conflict = KS_CONFLICT_MODE_SERVER_WINS,
		.collections = KS_NEW_COLLECTIONS_ALL,
	};
}

static void env_done(env *v)
{
	ks_engine_free(v->e);
	mem_remote_free(v->m);
	ks_buf_done(&v->log);
	rm_tree(v->root);
	*v = (env) {};
}

static const char *const event_names[] = {
	[KS_SYNC_COLLECTION_DONE] = "done", [KS_SYNC_COLLECTION_FAILED] = "FAILED",
	[KS_SYNC_ACCOUNT_FAILED] = "ACCOUNT FAILED", [KS_SYNC_ITEM_SKIPPED] = "skipped",
	[KS_SYNC_PROGRESS] = "progress", [KS_SYNC_CONFLICT] = "conflict",
	[KS_SYNC_NOTICE] = "notice", [KS_SYNC_CREDENTIALS_REFUSED] = "credentials refused",
};

static void on_event(const ks_sync_event *ev, void *userdata)
{
	env *v = userdata;

	switch (ev->type) {
	case KS_SYNC_COLLECTION_DONE:
		v->added += ev->added;
		v->updated += ev->updated;
		v->deleted += ev->deleted;
		v->uploaded += ev->uploaded;
		v->removed += ev->removed;
		break;
	case KS_SYNC_COLLECTION_FAILED:
		v->failed++;
		v->guard += ev->error == -EDQUOT;
		break;
	case KS_SYNC_ACCOUNT_FAILED:
		v->account_failed++;
		break;
	case KS_SYNC_ITEM_SKIPPED:
		v->skipped++;
		break;
	case KS_SYNC_CONFLICT:
		v->conflicts++;
		break;
	default:
		break;
	}
	if (ev->type != KS_SYNC_PROGRESS)
		(void) ks_buf_printf(&v->log, "  %s %s%s%s%s\n", event_names[ev->type],
				     ev->collection ? ev->collection : "",
				     ev->error ? " (" : "", ev->error ? strerror(-ev->error) : "",
				     ev->error ? ")" : "");
	if (ev->type != KS_SYNC_PROGRESS && ev->message)
		(void) ks_buf_printf(&v->log, "    %s\n", ev->message);
}

typedef struct sync_flags {
	bool force, allow_mass_delete, list_collections;
} sync_flags;

/* One run of the account; its report in v. */
static int env_sync_with(env *v, sync_flags fl)
{
	ks_sync_opts o = {
		.force = fl.force, .allow_mass_delete = fl.allow_mass_delete, .wait_lock = true,
		.list_collections = fl.list_collections,
		.remote = mem_remote_store(v->m), .on_event = on_event, .userdata = v,
	};
	unsigned reentries = mem_reentries(v->m);

	v->failed = v->account_failed = v->conflicts = v->skipped = v->guard = 0;
	v->added = v->updated = v->deleted = v->uploaded = v->removed = 0;
	ks_buf_reset(&v->log);
	v->r = ks_sync_account(v->e, &v->acc, &o);
	/* A request started from a callback of a running one would re-enter a real
	 * transport's request loop (the crash of the no-loss issue, item 0). */
	if (mem_reentries(v->m) != reentries)
		FAIL("the engine started a request from inside a callback:\n%s",
		     v->log.data ? v->log.data : "");
	return v->r;
}

static int env_sync(env *v)
{
	return env_sync_with(v, (sync_flags) {});
}

/* A run that must go through without a failure. */
static void sync_ok(env *v)
{
	int r = env_sync(v);

	if (r != 0 || v->failed || v->account_failed)
		FAIL("the sync failed (%d):\n%s", r, v->log.data ? v->log.data : "");
}

/* ---- items ------------------------------------------------------------------------------ */

static char *event(const char *uid, const char *summary, const char *extra)
{
	char *s = NULL;

	assert_true(asprintf(&s, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
			     "PRODID:-//ksync//engine test//EN\r\nBEGIN:VEVENT\r\nUID:%s\r\n"
			     "DTSTAMP:20240101T000000Z\r\nDTSTART:20240610T090000Z\r\n"
			     "DTEND:20240610T100000Z\r\nSUMMARY:%s\r\n%sEND:VEVENT\r\n"
			     "END:VCALENDAR\r\n", uid, summary, extra ? extra : "") > 0);
	return s;
}

static char *card(const char *uid, const char *fn, const char *extra)
{
	char *s = NULL;

	assert_true(asprintf(&s, "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:%s\r\nFN:%s\r\n"
			     "N:Family-%s;Given;;;\r\n%sEND:VCARD\r\n", uid, fn, uid,
			     extra ? extra : "") > 0);
	return s;
}

/* The value of the first property name (an exact name, no parameters) of data, or NULL.
 * Owned by the caller. */
static char *prop_get(const char *data, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = data; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ':') {
			size_t len = strcspn(p + n + 1, "\r\n");
			return strndup(p + n + 1, len);
		}
	return NULL;
}

/* data with the property name set to value (NULL: removed), added before the end of the
 * first component when missing. Owned by the caller. */
static char *prop_set(const char *data, const char *name, const char *value)
{
	ks_buf b = {};
	size_t n = strlen(name);
	bool done = false;

	for (const char *p = data; *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t) (e - p) + 1 : strlen(p);
		bool is = strncmp(p, name, n) == 0 && p[n] == ':';
		bool end = strncmp(p, "END:VEVENT", 10) == 0 || strncmp(p, "END:VTODO", 9) == 0 ||
			   strncmp(p, "END:VCARD", 9) == 0;
		if (!done && (is || end) && value)
			assert_true(ks_buf_printf(&b, "%s:%s\r\n", name, value) >= 0);
		if (is || end)
			done = true;
		if (!is)
			assert_true(ks_buf_append(&b, p, len) >= 0);
		p += len;
	}
	return ks_buf_steal(&b);
}

/* ---- files ------------------------------------------------------------------------------ */

static char *path_of(const char *dir, const char *name)
{
	char *p = NULL;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* The file's bytes, or NULL when it does not exist. */
static char *read_file(const char *dir, const char *name)
{
	_cleanup_free_ char *p = path_of(dir, name);
	FILE *f = fopen(p, "rb");
	ks_buf b = {};
	char chunk[4096];
	size_t n;

	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_true(ks_buf_append(&b, chunk, n) >= 0);
	fclose(f);
	return ks_buf_steal(&b);
}

/* Writes a file as an editor does: a new file renamed over the old one. */
static void write_file(const char *dir, const char *name, const char *data)
{
	_cleanup_free_ char *p = path_of(dir, name), *tmp = NULL;
	assert_true(asprintf(&tmp, "%s/.%s.edit", dir, name) > 0);
	FILE *f = fopen(tmp, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, p), 0);
}

static void remove_file(const char *dir, const char *name)
{
	_cleanup_free_ char *p = path_of(dir, name);

	assert_int_equal(unlink(p), 0);
}

static void rename_file(const char *dir, const char *from, const char *to)
{
	_cleanup_free_ char *a = path_of(dir, from), *b = path_of(dir, to);

	assert_int_equal(rename(a, b), 0);
}

static bool is_item_name(const char *name)
{
	size_t n = strlen(name);
	return name[0] != '.' && n > 4 && (strcmp(name + n - 4, ".ics") == 0 ||
					   strcmp(name + n - 4, ".vcf") == 0);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The item files of dir, sorted; *ret_n of them. NULL-terminated, freed with free_names(). */
static char **list_files(const char *dir, size_t *ret_n)
{
	DIR *d = opendir(dir);
	char **v = calloc(1, sizeof(char *));
	size_t n = 0;
	struct dirent *de;

	assert_non_null(v);
	while (d && (de = readdir(d))) {
		if (!is_item_name(de->d_name))
			continue;
		v = realloc(v, (n + 2) * sizeof(char *));
		assert_non_null(v);
		v[n++] = strdup(de->d_name);
		v[n] = NULL;
	}
	if (d)
		closedir(d);
	qsort(v, n, sizeof(char *), cmp_str);
	if (ret_n)
		*ret_n = n;
	return v;
}

static void free_names(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static size_t count_files(const char *dir)
{
	size_t n = 0;
	free_names(list_files(dir, &n));
	return n;
}

/* Every regular file below dir (not the hidden ones) appended to b, with its path. */
static void gather_tree(const char *dir, ks_buf *b)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = path_of(dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			gather_tree(p, b);
		else if (S_ISREG(st.st_mode)) {
			_cleanup_free_ char *data = read_file(dir, de->d_name);
			assert_true(ks_buf_printf(b, "== %s\n%s\n", p, data ? data : "") >= 0);
		}
	}
	if (d)
		closedir(d);
}

/* The conflict copies of a collection ("calendars/events"), as one text. */
static char *conflict_copies(const env *v, const char *label)
{
	_cleanup_free_ char *dir = NULL;
	ks_buf b = {};

	assert_true(asprintf(&dir, "%s/conflicts/" ACCOUNT "/%s", v->data, label) > 0);
	gather_tree(dir, &b);
	return ks_buf_steal(&b);
}

static size_t count_conflict_copies(const env *v, const char *label)
{
	_cleanup_free_ char *dir = NULL;

	assert_true(asprintf(&dir, "%s/conflicts/" ACCOUNT "/%s", v->data, label) > 0);
	return count_files(dir);
}

/* ---- the server ------------------------------------------------------------------------- */

static char *href_in(const char *coll, const char *name)
{
	char *h = NULL;

	assert_true(asprintf(&h, "%s%s", coll, name) > 0);
	return h;
}

static void server_put(env *v, const char *coll, const char *name, const char *data)
{
	_cleanup_free_ char *h = href_in(coll, name);

	assert_int_equal(mem_put(v->m, h, data, strlen(data)), 0);
}

static const mem_item *server_item(env *v, const char *coll, const char *name)
{
	_cleanup_free_ char *h = href_in(coll, name);

	return mem_find(v->m, h);
}

/* The server's item with uid in coll, or NULL. */
static const mem_item *server_by_uid(env *v, const char *coll, const char *uid)
{
	for (size_t i = 0; i < mem_count(v->m, coll); i++) {
		const mem_item *it = mem_item_at(v->m, coll, i);
		if (it->uid && strcmp(it->uid, uid) == 0)
			return it;
	}
	return NULL;
}

/* The file with uid in dir: its name, or NULL. Owned by the caller. */
static char *file_by_uid(const char *dir, const char *uid)
{
	char **names = list_files(dir, NULL);
	char *found = NULL;

	for (size_t i = 0; names[i] && !found; i++) {
		_cleanup_free_ char *data = read_file(dir, names[i]), *u = NULL;
		u = data ? prop_get(data, "UID") : NULL;
		if (u && strcmp(u, uid) == 0)
			found = strdup(names[i]);
	}
	free_names(names);
	return found;
}

/* Every item on the server, every file and every conflict copy, as one text. */
static char *describe(env *v)
{
	ks_buf b = {};
	const char *colls[] = { v->cal, v->book };
	const char *trees[] = { "calendars", "contacts", "conflicts" };

	for (size_t c = 0; c < 2; c++)
		for (size_t i = 0; i < mem_count(v->m, colls[c]); i++) {
			const mem_item *it = mem_item_at(v->m, colls[c], i);
			(void) ks_buf_printf(&b, "== server %s %s\n%s", it->href, it->etag,
					     it->data);
		}
	for (size_t t = 0; t < 3; t++) {
		_cleanup_free_ char *dir = path_of(v->data, trees[t]);
		gather_tree(dir, &b);
	}
	return ks_buf_steal(&b);
}

/* Name, inode, mtime and size of every file of dir: equal snapshots, untouched files. */
static char *snapshot(const char *dir)
{
	char **names = list_files(dir, NULL);
	ks_buf b = {};

	for (size_t i = 0; names[i]; i++) {
		_cleanup_free_ char *p = path_of(dir, names[i]);
		struct stat st;
		assert_int_equal(lstat(p, &st), 0);
		assert_true(ks_buf_printf(&b, "%s %ju %jd.%09ld %jd\n", names[i],
					  (uintmax_t) st.st_ino, (intmax_t) st.st_mtim.tv_sec,
					  st.st_mtim.tv_nsec, (intmax_t) st.st_size) >= 0);
	}
	free_names(names);
	return ks_buf_steal(&b);
}

/* A run after which nothing is to do: it changes nothing on either side. */
static void sync_quiet(env *v)
{
	_cleanup_free_ char *cal0 = snapshot(v->cal_dir), *book0 = snapshot(v->book_dir);
	unsigned changes = mem_changes(v->m);

	sync_ok(v);
	_cleanup_free_ char *cal1 = snapshot(v->cal_dir), *book1 = snapshot(v->book_dir);
	if (mem_changes(v->m) != changes || strcmp(cal0, cal1) || strcmp(book0, book1) ||
	    v->added || v->updated || v->deleted || v->uploaded || v->removed || v->conflicts)
		FAIL("a second sync changed something: %u server changes, files before:\n%s%s"
		     "after:\n%s%s; report:\n%s", mem_changes(v->m) - changes, cal0, book0, cal1,
		     book1, v->log.data ? v->log.data : "");
}

/* The file name holds exactly what the server holds at href. */
static void assert_same(env *v, const char *dir, const char *name, const char *coll,
			const char *item)
{
	_cleanup_free_ char *data = read_file(dir, name);
	const mem_item *it = server_item(v, coll, item);

	if (!data || !it || strcmp(data, it->data) != 0) {
		_cleanup_free_ char *all = describe(v);
		FAIL("'%s' and the server's '%s' differ:\n%s", name, item, all);
	}
}

/* ---- scenarios, one by one -------------------------------------------------------------- */

/* A calendar with events e1..en and an address book with cards c1..cn on the server, synced
 * once. */
static void seed_and_sync(env *v, unsigned n_events, unsigned n_cards)
{
	for (unsigned i = 1; i <= n_events; i++) {
		char uid[16], name[24], summary[32];
		snprintf(uid, sizeof(uid), "e%u", i);
		snprintf(name, sizeof(name), "e%u.ics", i);
		snprintf(summary, sizeof(summary), "Event %u", i);
		_cleanup_free_ char *d = event(uid, summary, NULL);
		server_put(v, v->cal, name, d);
	}
	for (unsigned i = 1; i <= n_cards; i++) {
		char uid[16], name[24], fn[32];
		snprintf(uid, sizeof(uid), "c%u", i);
		snprintf(name, sizeof(name), "c%u.vcf", i);
		snprintf(fn, sizeof(fn), "Card %u", i);
		_cleanup_free_ char *d = card(uid, fn, NULL);
		server_put(v, v->book, name, d);
	}
	sync_ok(v);
}

static void test_first_sync(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 2);
	assert_int_equal(v.added, 5);
	assert_int_equal(count_files(v.cal_dir), 3);
	assert_int_equal(count_files(v.book_dir), 2);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_same(&v, v.cal_dir, "e3.ics", v.cal, "e3.ics");
	assert_same(&v, v.book_dir, "c2.vcf", v.book, "c2.vcf");
	/* Nothing changed since: one sync-collection per collection, nothing fetched. */
	mem_reset_counters(v.m);
	sync_quiet(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_LIST), 2);
	assert_int_equal(mem_requests(v.m, MEM_REQ_MULTIGET), 0);
	assert_int_equal(mem_requests_total(v.m), 2);
	env_done(&v);
}

static void test_server_changes(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 1);
	_cleanup_free_ char *e1 = event("e1", "Moved", NULL), *e4 = event("e4", "New", NULL);
	server_put(&v, v.cal, "e1.ics", e1);
	server_put(&v, v.cal, "e4.ics", e4);
	_cleanup_free_ char *e2 = href_in(v.cal, "e2.ics");
	assert_int_equal(mem_delete(v.m, e2), 0);
	sync_ok(&v);
	assert_int_equal(v.added, 1);
	assert_int_equal(v.updated, 1);
	assert_int_equal(v.deleted, 1);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_same(&v, v.cal_dir, "e4.ics", v.cal, "e4.ics");
	_cleanup_free_ char *gone = read_file(v.cal_dir, "e2.ics");
	assert_null(gone);
	assert_int_equal(mem_changes(v.m), 0);
	sync_quiet(&v);
	env_done(&v);
}

static void test_local_changes(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 1);
	_cleanup_free_ char *n1 = event("n1", "Made here", NULL);
	_cleanup_free_ char *e1 = event("e1", "Edited here", NULL);
	_cleanup_free_ char *c1 = card("c1", "Card One", "EMAIL:one@example.org\r\n");
	write_file(v.cal_dir, "n1.ics", n1);
	write_file(v.cal_dir, "e1.ics", e1);
	write_file(v.book_dir, "c1.vcf", c1);
	remove_file(v.cal_dir, "e2.ics");
	sync_ok(&v);
	assert_int_equal(v.uploaded, 3);
	assert_int_equal(v.removed, 1);
	assert_int_equal(mem_requests(v.m, MEM_REQ_PUT), 3);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 1);
	assert_null(server_item(&v, v.cal, "e2.ics"));
	assert_same(&v, v.cal_dir, "n1.ics", v.cal, "n1.ics");
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_same(&v, v.book_dir, "c1.vcf", v.book, "c1.vcf");
	sync_quiet(&v);
	env_done(&v);
}

/* Both sides edited one event: different properties merge; the same property is decided by
 * the policy, and the losing value is kept in a conflict copy. */
static void test_both_edit(void **state)
{
	static const int policies[] = { KS_CONFLICT_MODE_SERVER_WINS, KS_CONFLICT_MODE_LOCAL_WINS };

	for (size_t p = 0; p < ELEMENTSOF(policies); p++) {
		env v;
		env_init(&v);
		v.acc.conflict = policies[p];
		seed_and_sync(&v, 2, 0);
		/* e1: other properties on each side */
		_cleanup_free_ char *base1 = read_file(v.cal_dir, "e1.ics");
		_cleanup_free_ char *loc1 = prop_set(base1, "LOCATION", "Room 4");
		_cleanup_free_ char *srv1 = prop_set(base1, "SUMMARY", "Renamed on the phone");
		write_file(v.cal_dir, "e1.ics", loc1);
		server_put(&v, v.cal, "e1.ics", srv1);
		/* e2: the same property */
		_cleanup_free_ char *base2 = read_file(v.cal_dir, "e2.ics");
		_cleanup_free_ char *loc2 = prop_set(base2, "SUMMARY", "Local title");
		_cleanup_free_ char *srv2 = prop_set(base2, "SUMMARY", "Server title");
		write_file(v.cal_dir, "e2.ics", loc2);
		server_put(&v, v.cal, "e2.ics", srv2);
		sync_ok(&v);

		_cleanup_free_ char *now1 = read_file(v.cal_dir, "e1.ics");
		_cleanup_free_ char *loc = prop_get(now1, "LOCATION");
		_cleanup_free_ char *sum = prop_get(now1, "SUMMARY");
		assert_string_equal(loc, "Room 4");
		assert_string_equal(sum, "Renamed on the phone");
		assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");

		bool server_wins = policies[p] == KS_CONFLICT_MODE_SERVER_WINS;
		_cleanup_free_ char *now2 = read_file(v.cal_dir, "e2.ics");
		_cleanup_free_ char *sum2 = prop_get(now2, "SUMMARY");
		assert_string_equal(sum2, server_wins ? "Server title" : "Local title");
		assert_same(&v, v.cal_dir, "e2.ics", v.cal, "e2.ics");
		assert_int_equal(v.conflicts, 1);
		assert_int_equal(count_conflict_copies(&v, "calendars/events"), 1);
		_cleanup_free_ char *kept = conflict_copies(&v, "calendars/events");
		assert_non_null(strstr(kept, server_wins ? "SUMMARY:Local title"
							 : "SUMMARY:Server title"));
		sync_quiet(&v);
		env_done(&v);
	}
}

/* The server deleted an event edited here: the edit wins and goes back up. */
static void test_server_deletes_local_edit(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 0);
	_cleanup_free_ char *base = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *edit = prop_set(base, "DESCRIPTION", "Bring the slides");
	write_file(v.cal_dir, "e1.ics", edit);
	_cleanup_free_ char *h = href_in(v.cal, "e1.ics");
	assert_int_equal(mem_delete(v.m, h), 0);
	sync_ok(&v);
	_cleanup_free_ char *now = read_file(v.cal_dir, "e1.ics");
	assert_string_equal(now, edit);
	const mem_item *it = server_by_uid(&v, v.cal, "e1");
	assert_non_null(it);
	assert_string_equal(it->data, edit);
	sync_quiet(&v);
	env_done(&v);
}

/* A file deleted here whose event the server changed: the change comes back. */
static void test_local_delete_server_change(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 0);
	remove_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *srv = event("e1", "Moved to Friday", NULL);
	server_put(&v, v.cal, "e1.ics", srv);
	sync_ok(&v);
	_cleanup_free_ char *now = read_file(v.cal_dir, "e1.ics");
	assert_non_null(now);
	assert_string_equal(now, srv);
	assert_non_null(server_item(&v, v.cal, "e1.ics"));
	sync_quiet(&v);
	env_done(&v);
}

/* A file renamed here: the same item, no upload; renamed and edited while the server changed
 * it: one item with both changes, no duplicate (the no-loss issue, item 5). */
static void test_renamed_file(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 0);
	rename_file(v.cal_dir, "e2.ics", "lunch.ics");
	sync_ok(&v);
	assert_int_equal(mem_changes(v.m), 0);
	assert_int_equal(count_files(v.cal_dir), 3);
	sync_quiet(&v);

	/* Renamed here, changed on the server: the change goes into the renamed file. */
	rename_file(v.cal_dir, "e3.ics", "dinner.ics");
	_cleanup_free_ char *e3 = event("e3", "Dinner at eight", NULL);
	server_put(&v, v.cal, "e3.ics", e3);
	sync_ok(&v);
	_cleanup_free_ char *dinner = read_file(v.cal_dir, "dinner.ics");
	assert_string_equal(dinner, e3);
	assert_int_equal(count_files(v.cal_dir), 3);
	sync_quiet(&v);

	_cleanup_free_ char *base = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *loc = prop_set(base, "LOCATION", "Dr. Smith");
	_cleanup_free_ char *srv = prop_set(base, "SUMMARY", "Dentist (moved)");
	remove_file(v.cal_dir, "e1.ics");
	write_file(v.cal_dir, "dentist.ics", loc);
	server_put(&v, v.cal, "e1.ics", srv);
	sync_ok(&v);
	assert_int_equal(count_files(v.cal_dir), 3);
	_cleanup_free_ char *name = file_by_uid(v.cal_dir, "e1");
	assert_string_equal(name, "dentist.ics");
	_cleanup_free_ char *now = read_file(v.cal_dir, "dentist.ics");
	_cleanup_free_ char *l = prop_get(now, "LOCATION"), *s = prop_get(now, "SUMMARY");
	assert_string_equal(l, "Dr. Smith");
	assert_string_equal(s, "Dentist (moved)");
	assert_same(&v, v.cal_dir, "dentist.ics", v.cal, "e1.ics");
	assert_int_equal(mem_count(v.m, v.cal), 3);
	sync_quiet(&v);
	env_done(&v);
}

/* Two new files with one UID are two items; a new file whose UID's resource holds another
 * item goes to a resource of its own (the no-loss issue, item 3). */
static void test_uid_clash(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 1, 0);
	_cleanup_free_ char *a = event("twin", "First", NULL), *b = event("twin", "Second", NULL);
	write_file(v.cal_dir, "a.ics", a);
	write_file(v.cal_dir, "b.ics", b);
	/* The resource "held.ics" holds an item whose UID is another. */
	_cleanup_free_ char *other = event("someone-else", "Not mine", NULL);
	server_put(&v, v.cal, "held.ics", other);
	_cleanup_free_ char *mine = event("held", "Mine", NULL);
	write_file(v.cal_dir, "held.ics", mine);
	sync_ok(&v);

	assert_int_equal(mem_count(v.m, v.cal), 5);
	_cleanup_free_ char *a1 = read_file(v.cal_dir, "a.ics");
	_cleanup_free_ char *b1 = read_file(v.cal_dir, "b.ics");
	_cleanup_free_ char *ua = prop_get(a1, "UID"), *ub = prop_get(b1, "UID");
	assert_string_not_equal(ua, ub);
	assert_non_null(server_by_uid(&v, v.cal, ua));
	assert_non_null(server_by_uid(&v, v.cal, ub));
	const mem_item *held = server_by_uid(&v, v.cal, "held");
	assert_non_null(held);
	assert_string_not_equal(held->href, "/calendars/user/events/held.ics");
	assert_string_equal(server_item(&v, v.cal, "held.ics")->data, other);
	_cleanup_free_ char *mine_now = read_file(v.cal_dir, "held.ics");
	assert_string_equal(mine_now, mine);
	_cleanup_free_ char *theirs = file_by_uid(v.cal_dir, "someone-else");
	assert_non_null(theirs);
	assert_int_equal(count_files(v.cal_dir), 5);
	sync_quiet(&v);
	env_done(&v);
}

/* A multiget answer that leaves an item out (DAViCal, or an item deleted since the listing):
 * no crash, no request from inside the multiget's callback, the item fetched on its own; a
 * multiget answered 404 as a whole (SabreDAV 1.8): each item on its own. */
static void test_multiget_leaves_out(void **state)
{
	env v;

	env_init(&v);
	for (unsigned i = 1; i <= 5; i++) {
		char uid[8], name[16];
		snprintf(uid, sizeof(uid), "e%u", i);
		snprintf(name, sizeof(name), "e%u.ics", i);
		_cleanup_free_ char *d = event(uid, "Event", NULL);
		server_put(&v, v.cal, name, d);
	}
	_cleanup_free_ char *e3 = href_in(v.cal, "e3.ics");
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_MULTIGET, .href = e3,
							     .count = 1, .omit = true }), 0);
	sync_ok(&v);
	assert_int_equal(mem_pending_faults(v.m), 0);
	assert_int_equal(mem_requests(v.m, MEM_REQ_GET), 1);
	assert_int_equal(count_files(v.cal_dir), 5);
	assert_same(&v, v.cal_dir, "e3.ics", v.cal, "e3.ics");

	for (unsigned i = 1; i <= 5; i++) {
		char uid[8], name[16];
		snprintf(uid, sizeof(uid), "e%u", i);
		snprintf(name, sizeof(name), "e%u.ics", i);
		_cleanup_free_ char *d = event(uid, "Changed", NULL);
		server_put(&v, v.cal, name, d);
	}
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_MULTIGET, .count = 1,
							     .status = 404 }), 0);
	mem_reset_counters(v.m);
	sync_ok(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_GET), 5);
	assert_int_equal(v.updated, 5);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_same(&v, v.cal_dir, "e5.ics", v.cal, "e5.ics");
	sync_quiet(&v);
	env_done(&v);
}

/* A PUT the server refuses (403, or a 207 holding the refusal as Xandikos answers): only that
 * item fails; the rest syncs; it is not sent again until the file changes. */
static void test_put_refused(void **state)
{
	static const struct {
		long status;
		const char *body;
	} refusals[] = {
		{ 403, "<?xml version=\"1.0\"?>\n<d:error xmlns:d=\"DAV:\"><d:need-privileges/>"
		       "</d:error>\n" },
		{ 207, "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\"><d:response>"
		       "<d:href>/calendars/user/events/n2.ics</d:href><d:status>HTTP/1.1 412 "
		       "Precondition Failed</d:status><d:error><C:no-uid-conflict xmlns:C=\""
		       "urn:ietf:params:xml:ns:caldav\"/></d:error></d:response>"
		       "</d:multistatus>\n" },
	};

	for (size_t k = 0; k < ELEMENTSOF(refusals); k++) {
		env v;
		env_init(&v);
		seed_and_sync(&v, 1, 0);
		const char *uids[] = { "n1", "n2", "n3" };
		for (size_t i = 0; i < 3; i++) {
			char name[16];
			snprintf(name, sizeof(name), "%s.ics", uids[i]);
			_cleanup_free_ char *d = event(uids[i], "New", NULL);
			write_file(v.cal_dir, name, d);
		}
		_cleanup_free_ char *n2 = href_in(v.cal, "n2.ics");
		assert_int_equal(mem_add_fault(v.m, &(mem_fault) {
			.kind = MEM_REQ_PUT, .href = n2, .count = 1, .status = refusals[k].status,
			.body = refusals[k].body }), 0);
		assert_int_equal(env_sync(&v), 0);
		assert_int_equal(v.failed, 0);
		assert_int_equal(v.skipped, 1);
		assert_non_null(strstr(v.log.data, "n2.ics"));
		assert_non_null(server_item(&v, v.cal, "n1.ics"));
		assert_non_null(server_item(&v, v.cal, "n3.ics"));
		assert_null(server_item(&v, v.cal, "n2.ics"));
		_cleanup_free_ char *kept = read_file(v.cal_dir, "n2.ics");
		assert_non_null(kept);

		/* Not sent again as it is; sent once it changes. */
		mem_reset_counters(v.m);
		assert_int_equal(env_sync(&v), 0);
		assert_int_equal(mem_requests(v.m, MEM_REQ_PUT), 0);
		_cleanup_free_ char *edit = prop_set(kept, "SUMMARY", "New, fixed");
		write_file(v.cal_dir, "n2.ics", edit);
		sync_ok(&v);
		assert_same(&v, v.cal_dir, "n2.ics", v.cal, "n2.ics");
		sync_quiet(&v);
		env_done(&v);
	}
}

/* A sync-token the server no longer knows (403 or 409 valid-sync-token, 400, Xandikos's 500):
 * the whole collection is listed, and what it no longer holds goes here too. */
static void test_token_refused(void **state)
{
	static const long statuses[] = { 403, 409, 400, 500 };

	for (size_t k = 0; k < ELEMENTSOF(statuses); k++) {
		env v;
		env_init(&v);
		mem_remote_behaviour(v.m)->token_refused = statuses[k];
		seed_and_sync(&v, 3, 0);
		_cleanup_free_ char *e1 = href_in(v.cal, "e1.ics");
		assert_int_equal(mem_delete(v.m, e1), 0);
		_cleanup_free_ char *e4 = event("e4", "Added", NULL);
		server_put(&v, v.cal, "e4.ics", e4);
		assert_int_equal(mem_expire_tokens(v.m, v.cal), 0);
		sync_ok(&v);
		assert_non_null(strstr(v.log.data, "sync-token was refused"));
		assert_int_equal(v.deleted, 1);
		assert_int_equal(v.added, 1);
		_cleanup_free_ char *gone = read_file(v.cal_dir, "e1.ics");
		assert_null(gone);
		assert_same(&v, v.cal_dir, "e4.ics", v.cal, "e4.ics");
		sync_quiet(&v);
		env_done(&v);
	}
}

/* A server that truncates sync-collection answers (507 with a token to go on from): the
 * listing goes on round after round, and deletions spread over rounds are all applied. */
static void test_truncated_listing(void **state)
{
	env v;

	env_init(&v);
	assert_int_equal(mem_collection_set(v.m, v.cal, true, true, false,
					    KS_COMP_VEVENT | KS_COMP_VTODO, 2), 0);
	seed_and_sync(&v, 7, 0);
	assert_int_equal(count_files(v.cal_dir), 7);
	assert_true(mem_requests(v.m, MEM_REQ_LIST) >= 4);
	for (unsigned i = 1; i <= 3; i++) {
		char uid[8], name[16];
		snprintf(uid, sizeof(uid), "e%u", i);
		snprintf(name, sizeof(name), "e%u.ics", i);
		_cleanup_free_ char *d = event(uid, "Changed", NULL);
		server_put(&v, v.cal, name, d);
	}
	_cleanup_free_ char *e6 = href_in(v.cal, "e6.ics"), *e7 = href_in(v.cal, "e7.ics");
	assert_int_equal(mem_delete(v.m, e6), 0);
	assert_int_equal(mem_delete(v.m, e7), 0);
	_cleanup_free_ char *e8 = event("e8", "Added", NULL);
	server_put(&v, v.cal, "e8.ics", e8);
	sync_ok(&v);
	assert_int_equal(v.updated, 3);
	assert_int_equal(v.deleted, 2);
	assert_int_equal(v.added, 1);
	assert_int_equal(count_files(v.cal_dir), 6);
	assert_same(&v, v.cal_dir, "e2.ics", v.cal, "e2.ics");
	sync_quiet(&v);
	env_done(&v);
}

/* A server emptied, or a directory emptied here: the run deletes nothing on the other side
 * and says so, until the deletion is allowed. */
static void test_mass_deletion_guard(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 4, 3);
	for (unsigned i = 1; i <= 4; i++) {
		char name[16];
		snprintf(name, sizeof(name), "e%u.ics", i);
		_cleanup_free_ char *h = href_in(v.cal, name);
		assert_int_equal(mem_delete(v.m, h), 0);
	}
	assert_int_equal(env_sync(&v), 1);
	assert_int_equal(v.guard, 1);
	assert_non_null(strstr(v.log.data, "refusing to delete 4 of 4 items locally"));
	assert_int_equal(count_files(v.cal_dir), 4);
	assert_int_equal(env_sync_with(&v, (sync_flags) { .allow_mass_delete = true }), 0);
	assert_int_equal(v.deleted, 4);
	assert_int_equal(count_files(v.cal_dir), 0);

	/* Here: the address book's files are gone. */
	char **names = list_files(v.book_dir, NULL);
	for (size_t i = 0; names[i]; i++)
		remove_file(v.book_dir, names[i]);
	free_names(names);
	assert_int_equal(env_sync(&v), 1);
	assert_int_equal(v.guard, 1);
	assert_non_null(strstr(v.log.data, "refusing to delete 3 of 3 items on the server"));
	assert_int_equal(mem_count(v.m, v.book), 3);
	assert_int_equal(mem_changes(v.m), 0);
	env_done(&v);
}

/* Servers that store something else than what was sent: Radicale's re-serialization (with an
 * ETag), DAViCal's stamp (without), with and without sync-collection. The files end as the
 * server stores the items, and a second run has nothing to do. */
static void test_server_rewrites(void **state)
{
	static const mem_rewrite rewrites[] = { MEM_REWRITE_SORT, MEM_REWRITE_STAMP };

	for (size_t k = 0; k < ELEMENTSOF(rewrites); k++)
		for (int sync = 0; sync < 2; sync++) {
			/* A server without sync-collection that changes what it stores answers
			 * without an ETag (RFC 4791 5.3.4); one that sends the ETag of what it
			 * made of the data (Radicale) offers sync-collection, whose listing after
			 * the uploads reads them back. */
			if (rewrites[k] == MEM_REWRITE_SORT && !sync)
				continue;
			env v;
			env_init(&v);
			mem_remote_behaviour(v.m)->rewrite = rewrites[k];
			assert_int_equal(mem_collection_set(v.m, v.cal, sync, true, false,
							    KS_COMP_VEVENT, 0), 0);
			assert_int_equal(mem_collection_set(v.m, v.book, sync, true, false, 0, 0),
					 0);
			seed_and_sync(&v, 2, 1);
			_cleanup_free_ char *n1 = event("n1", "New", "CATEGORIES:work\r\n");
			_cleanup_free_ char *c2 = card("c2", "Card Two", "NOTE:new\r\n");
			write_file(v.cal_dir, "n1.ics", n1);
			write_file(v.book_dir, "c2.vcf", c2);
			_cleanup_free_ char *e1 = read_file(v.cal_dir, "e1.ics");
			_cleanup_free_ char *e1x = prop_set(e1, "LOCATION", "Here");
			write_file(v.cal_dir, "e1.ics", e1x);
			sync_ok(&v);
			assert_same(&v, v.cal_dir, "n1.ics", v.cal, "n1.ics");
			assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
			assert_same(&v, v.book_dir, "c2.vcf", v.book, "c2.vcf");
			if (rewrites[k] == MEM_REWRITE_STAMP) {
				_cleanup_free_ char *c2now = read_file(v.book_dir, "c2.vcf");
				assert_non_null(strstr(c2now, "REV:"));
			}
			sync_quiet(&v);
			env_done(&v);
		}
}

/* The answer to an upload lost after the server carried it out (a cut connection): the next
 * run finds the item on the server and makes no second one. */
static void test_answer_lost(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 2, 0);
	_cleanup_free_ char *n1 = event("n1", "New", NULL);
	write_file(v.cal_dir, "n1.ics", n1);
	_cleanup_free_ char *e1 = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *e1x = prop_set(e1, "SUMMARY", "Edited");
	write_file(v.cal_dir, "e1.ics", e1x);
	remove_file(v.cal_dir, "e2.ics");
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_PUT, .count = 2,
							     .err = -ECONNRESET, .applied = true }),
			 0);
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_DELETE, .count = 1,
							     .err = -ECONNRESET, .applied = true }),
			 0);
	assert_true(env_sync(&v) != 0);
	assert_int_equal(mem_count(v.m, v.cal), 2);
	sync_ok(&v);
	assert_int_equal(mem_count(v.m, v.cal), 2);
	assert_int_equal(count_files(v.cal_dir), 2);
	assert_same(&v, v.cal_dir, "n1.ics", v.cal, "n1.ics");
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	sync_quiet(&v);
	env_done(&v);
}

/* A deletion the server refuses stays refused (its file is not sent again), run after run:
 * the mass-deletion guard counts it once, not on every run until it adds up to "every item
 * of the collection". */
static void test_refused_deletion_counted_once(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 3, 0);
	remove_file(v.cal_dir, "e1.ics");
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) {
		.kind = MEM_REQ_DELETE, .count = 1, .status = 403,
		.body = "<d:error xmlns:d=\"DAV:\"><d:need-privileges/></d:error>" }), 0);
	for (unsigned i = 0; i < 4; i++) {
		sync_ok(&v);
		assert_non_null(server_item(&v, v.cal, "e1.ics"));
	}
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 1);
	env_done(&v);
}

/* A collection the server no longer has, whose directory holds only a file not yet sent (the
 * collection has no rows): the file is kept under conflicts/, the directory goes. */
static void test_collection_removed_with_a_new_file(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 0, 1);
	_cleanup_free_ char *n1 = event("n1", "Not sent yet", NULL);
	write_file(v.cal_dir, "n1.ics", n1);
	assert_int_equal(mem_remove_collection(v.m, v.cal), 0);
	sync_ok(&v);
	assert_int_equal(access(v.cal_dir, F_OK), -1);
	_cleanup_free_ char *kept = conflict_copies(&v, "calendars/events");
	assert_non_null(strstr(kept, "SUMMARY:Not sent yet"));
	env_done(&v);
}

/* Hrefs written as absolute URLs, or percent-encoded where they need not be: the same items. */
static void test_href_forms(void **state)
{
	static const mem_hrefs forms[] = { MEM_HREFS_ABSOLUTE, MEM_HREFS_ENCODED };

	for (size_t k = 0; k < ELEMENTSOF(forms); k++) {
		env v;
		env_init(&v);
		mem_remote_behaviour(v.m)->hrefs = forms[k];
		_cleanup_free_ char *d = event("a@b+c", "Odd name", NULL);
		server_put(&v, v.cal, "a@b+c.ics", d);
		seed_and_sync(&v, 2, 1);
		assert_int_equal(count_files(v.cal_dir), 3);
		assert_same(&v, v.cal_dir, "a@b+c.ics", v.cal, "a@b+c.ics");
		_cleanup_free_ char *x = prop_set(d, "SUMMARY", "Odder");
		write_file(v.cal_dir, "a@b+c.ics", x);
		_cleanup_free_ char *e2 = href_in(v.cal, "e2.ics");
		assert_int_equal(mem_delete(v.m, e2), 0);
		sync_ok(&v);
		assert_same(&v, v.cal_dir, "a@b+c.ics", v.cal, "a@b+c.ics");
		assert_int_equal(count_files(v.cal_dir), 2);
		sync_quiet(&v);
		env_done(&v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_sync),
		cmocka_unit_test(test_server_changes),
		cmocka_unit_test(test_local_changes),
		cmocka_unit_test(test_both_edit),
		cmocka_unit_test(test_server_deletes_local_edit),
		cmocka_unit_test(test_local_delete_server_change),
		cmocka_unit_test(test_renamed_file),
		cmocka_unit_test(test_uid_clash),
		cmocka_unit_test(test_multiget_leaves_out),
		cmocka_unit_test(test_put_refused),
		cmocka_unit_test(test_token_refused),
		cmocka_unit_test(test_truncated_listing),
		cmocka_unit_test(test_mass_deletion_guard),
		cmocka_unit_test(test_server_rewrites),
		cmocka_unit_test(test_answer_lost),
		cmocka_unit_test(test_refused_deletion_counted_once),
		cmocka_unit_test(test_collection_removed_with_a_new_file),
		cmocka_unit_test(test_href_forms),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
