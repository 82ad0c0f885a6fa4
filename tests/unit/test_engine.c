/* SPDX-License-Identifier: MIT */
/* The sync engine, whole (ks_sync_account(), as ksyncd and ksyncctl run it), against a server
 * held in memory (memremote.c) and real files and a real cache in a temporary directory:
 * scenarios written out one by one, then a randomized runner that drives both sides with
 * seeded random steps and checks after every sync that nothing written on either side was
 * lost, and after quiet syncs that both sides agree and a second sync changes nothing.
 *
 * KSYNC_ENGINE_SEED sets the first scenario's seed (scenario i uses seed + i),
 * KSYNC_ENGINE_RUNS the number of scenarios, KSYNC_ENGINE_STEPS the steps in each;
 * KSYNC_ENGINE_LOG=1 prints the report of every sync; KSYNC_ENGINE_SHRINK the most scenarios
 * run to shrink a failing one (0: none), KSYNC_ENGINE_MAX_FAILURES the failed scenarios after
 * which the runner stops; KSYNC_ENGINE_KNOWN_BUGS=1 runs what meets known engine bugs too;
 * KSYNC_ENGINE_TMPDIR where the temporary directories go (default: /dev/shm when it can be
 * written, else $TMPDIR or /tmp). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
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
#include "fsutil_p.h"
#include "hash_p.h"
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

/* The time windows of events move with the clock: tests let days pass by shifting it. */
static time_t clock_shift;

time_t time(time_t *ret)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	time_t now = ts.tv_sec + clock_shift;
	if (ret)
		*ret = now;
	return now;
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

/* A test of a known engine bug, reported with what it is and skipped, unless
 * KSYNC_ENGINE_KNOWN_BUGS is set (then it runs, and fails until the bug is fixed). */
#define KNOWN_BUG(what)                                                         \
	do {                                                                    \
		if (!getenv("KSYNC_ENGINE_KNOWN_BUGS")) {                       \
			fprintf(stderr, "known engine bug: %s\n", what);        \
			skip();                                                 \
		}                                                               \
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
	unsigned failed, account_failed, conflicts, skipped, guard, credentials_refused;
	unsigned added, updated, deleted, uploaded, removed;
	ks_buf log;
	struct env_left *left;	/* what to free if the test fails half way */
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

/* What the environments of the running test hold, so that a test that fails half way (cmocka
 * leaves it by a long jump) leaves no directory behind: its teardown frees what is left. */
typedef struct env_left {
	char root[256];
	ks_engine *e;
	mem_remote *m;
} env_left;
static env_left envs_left[8];

static int env_teardown(void **state)
{
	clock_shift = 0;	/* a test that failed half way leaves the clock as it was */
	for (size_t i = 0; i < ELEMENTSOF(envs_left); i++) {
		env_left *l = &envs_left[i];
		if (!l->root[0])
			continue;
		ks_engine_free(l->e);
		mem_remote_free(l->m);
		rm_tree(l->root);
		*l = (env_left) {};
	}
	return 0;
}

/* Makes the server (a calendar "events" and an address book "book") and an engine on a new
 * data directory. */
static void env_init(env *v)
{
	size_t k = 0;

	*v = (env) {};
	snprintf(v->root, sizeof(v->root), "%s/ksync-engine-XXXXXX", tmp_base());
	assert_non_null(mkdtemp(v->root));
	while (k < ELEMENTSOF(envs_left) - 1 && envs_left[k].root[0])
		k++;
	env_left *l = &envs_left[k];
	assert_true(!l->root[0]);
	/* The engine and the server live on the heap: after a long jump out of the test they
	 * are still there to free. */
	v->left = l;
	snprintf(l->root, sizeof(l->root), "%s", v->root);
	snprintf(v->data, sizeof(v->data), "%s/data", v->root);
	assert_int_equal(ks_engine_new(v->data, &v->e), 0);
	l->e = v->e;
	assert_int_equal(mem_remote_new(&v->m), 0);
	l->m = v->m;
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
	if (v->left)
		*v->left = (env_left) {};
	*v = (env) {};
}

static const char *const event_names[] = {
	[KS_SYNC_COLLECTION_DONE] = "done", [KS_SYNC_COLLECTION_FAILED] = "FAILED",
	[KS_SYNC_ACCOUNT_FAILED] = "ACCOUNT FAILED", [KS_SYNC_ITEM_SKIPPED] = "skipped",
	[KS_SYNC_PROGRESS] = "progress", [KS_SYNC_CONFLICT] = "conflict",
	[KS_SYNC_NOTICE] = "notice", [KS_SYNC_CREDENTIALS_REFUSED] = "credentials refused",
	[KS_SYNC_COLLECTION_SKIPPED] = "not synced",
};

static const char *event_name(ks_sync_event_type t)
{
	return (size_t) t < ELEMENTSOF(event_names) && event_names[t] ? event_names[t] : "?";
}

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
	case KS_SYNC_CREDENTIALS_REFUSED:
		v->credentials_refused++;
		break;
	default:
		break;
	}
	if (ev->type != KS_SYNC_PROGRESS)
		(void) ks_buf_printf(&v->log, "  %s %s%s%s%s\n", event_name(ev->type),
				     ev->collection ? ev->collection : "",
				     ev->error ? " (" : "", ev->error ? strerror(-ev->error) : "",
				     ev->error ? ")" : "");
	if (ev->type != KS_SYNC_PROGRESS && ev->message)
		(void) ks_buf_printf(&v->log, "    %s\n", ev->message);
}

typedef struct sync_flags {
	bool force, allow_mass_delete, list_collections;
	const char *only;	/* ks_sync_opts.only_collection */
} sync_flags;

/* One run of the account; its report in v. */
static int env_sync_with(env *v, sync_flags fl)
{
	ks_sync_opts o = {
		.force = fl.force, .allow_mass_delete = fl.allow_mass_delete, .wait_lock = true,
		.list_collections = fl.list_collections, .only_collection = fl.only,
		.remote = mem_remote_store(v->m), .on_event = on_event, .userdata = v,
	};
	unsigned reentries = mem_reentries(v->m);

	v->failed = v->account_failed = v->conflicts = v->skipped = v->guard = 0;
	v->credentials_refused = 0;
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

/* Writes a file in place, as some programs do: the same inode. */
static void write_in_place(const char *dir, const char *name, const char *data)
{
	_cleanup_free_ char *p = path_of(dir, name);
	FILE *f = fopen(p, "r+b");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
	assert_int_equal(ftruncate(fileno(f), (off_t) strlen(data)), 0);
	assert_int_equal(fclose(f), 0);
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
/* Removes dir (and what it holds) when it holds no file ending in ext. */
static void rm_if_no_items(const char *dir, const char *ext)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool items = false;

	if (!d)
		return;
	while (!items && (de = readdir(d))) {
		size_t n = strlen(de->d_name);
		items = de->d_name[0] != '.' && n > strlen(ext) &&
			strcmp(de->d_name + n - strlen(ext), ext) == 0;
	}
	closedir(d);
	if (!items)
		rm_tree(dir);
}

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
	_cleanup_free_ char *alt = path_of(v->root, "alt");
	gather_tree(alt, &b);
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

/* With more collections than home sets, a run learns which ones changed from one listing per
 * home set; a run of one collection asks it directly, and so does every run once a listing
 * left out a token a collection is compared by. */
static void test_listing_each_run(void **state)
{
	env v;
	const char *work = NULL, *other = NULL;

	env_init(&v);
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "work", "Work", &work), 0);
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "other", "Other", &other),
			 0);
	seed_and_sync(&v, 2, 2);
	mem_reset_counters(v.m);
	sync_quiet(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 2);
	assert_int_equal(mem_requests_total(v.m), 2);

	/* A change in one collection: its own listing and fetch besides. */
	_cleanup_free_ char *e1 = event("e1", "Moved", NULL);
	server_put(&v, v.cal, "e1.ics", e1);
	mem_reset_counters(v.m);
	sync_ok(&v);
	assert_int_equal(v.updated, 1);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 2);
	assert_int_equal(mem_requests(v.m, MEM_REQ_LIST), 1);
	assert_int_equal(mem_requests(v.m, MEM_REQ_MULTIGET), 1);
	assert_int_equal(mem_requests_total(v.m), 4);

	/* One collection alone: one request. */
	mem_reset_counters(v.m);
	assert_int_equal(env_sync_with(&v, (sync_flags) { .only = "work" }), 0);
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 0);
	assert_int_equal(mem_requests_total(v.m), 1);

	/* A new calendar without sync-collection or ctag: nothing in a listing tells whether
	 * it changed, so from the listing that finds it on, each collection is asked
	 * directly. */
	const char *plain = NULL;
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "plain", "Plain",
					    &plain), 0);
	assert_int_equal(mem_collection_set(v.m, plain, false, false, false,
					    KS_COMP_VEVENT | KS_COMP_VTODO, 0), 0);
	assert_int_equal(env_sync_with(&v, (sync_flags) { .list_collections = true }), 0);
	mem_reset_counters(v.m);
	sync_quiet(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 0);
	assert_int_equal(mem_requests(v.m, MEM_REQ_LIST), 5);
	env_done(&v);
}

/* Collections of more than 1,000 items on average are asked one by one: a server that
 * computes a token from all the items (Radicale) would compute it twice for each collection
 * that changed. */
static void test_listing_each_run_not_for_large_collections(void **state)
{
	env v;

	env_init(&v);
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "work", "Work", NULL), 0);
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "other", "Other", NULL),
			 0);
	seed_and_sync(&v, 4001, 2);
	mem_reset_counters(v.m);
	sync_quiet(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 0);
	assert_int_equal(mem_requests(v.m, MEM_REQ_LIST), 4);
	/* With fewer items, one listing per home set again. */
	for (unsigned i = 1; i <= 10; i++) {
		char name[24];
		snprintf(name, sizeof(name), "e%u.ics", i);
		_cleanup_free_ char *h = href_in(v.cal, name);
		assert_int_equal(mem_delete(v.m, h), 0);
	}
	assert_int_equal(env_sync_with(&v, (sync_flags) { .allow_mass_delete = true }), 0);
	mem_reset_counters(v.m);
	sync_quiet(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_HOMES), 2);
	assert_int_equal(mem_requests_total(v.m), 2);
	env_done(&v);
}

/* exclude = stops a collection at the next run (its files and its local edits stay, nothing
 * is sent or fetched) and include = under collections = none starts one; a collection no
 * pattern names any more goes back to collections =, while one that never was named keeps
 * the state it was found with. */
static void test_include_exclude(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 2, 2);
	v.acc.exclude = (char *) "calendars/events";
	_cleanup_free_ char *e1 = event("e1", "Server side", NULL);
	server_put(&v, v.cal, "e1.ics", e1);
	_cleanup_free_ char *mine = event("e3", "Local side", NULL);
	write_file(v.cal_dir, "e3.ics", mine);
	sync_ok(&v);
	assert_int_equal(v.updated + v.uploaded, 0);
	assert_int_equal(count_files(v.cal_dir), 3);
	_cleanup_free_ char *kept = read_file(v.cal_dir, "e3.ics");
	assert_string_equal(kept, mine);
	assert_int_equal(mem_changes(v.m), 0);

	/* Taken out of exclude =: back to collections = all, both changes go through. */
	v.acc.exclude = NULL;
	sync_ok(&v);
	assert_int_equal(v.updated, 1);
	assert_int_equal(v.uploaded, 1);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	assert_same(&v, v.cal_dir, "e3.ics", v.cal, "e3.ics");

	/* collections = none: a new calendar syncs only when include = names it. */
	const char *a = NULL, *b = NULL;
	v.acc.collections = KS_NEW_COLLECTIONS_NONE;
	v.acc.include = (char *) "Work*";
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "w1", "Work One", &a), 0);
	assert_int_equal(mem_add_collection(v.m, KS_COLLECTION_CALENDAR, "p1", "Private", &b), 0);
	_cleanup_free_ char *e5 = event("e5", "Work", NULL), *e6 = event("e6", "Private", NULL);
	server_put(&v, a, "e5.ics", e5);
	server_put(&v, b, "e6.ics", e6);
	assert_int_equal(env_sync_with(&v, (sync_flags) { .list_collections = true }), 0);
	_cleanup_free_ char *w1 = NULL, *p1 = NULL;
	assert_true(asprintf(&w1, "%s/calendars/" ACCOUNT "/w1", v.data) > 0);
	assert_true(asprintf(&p1, "%s/calendars/" ACCOUNT "/p1", v.data) > 0);
	assert_int_equal(count_files(w1), 1);
	assert_int_equal(access(p1, F_OK), -1);
	/* The calendars found before keep their state: collections = none is for new ones. */
	assert_int_equal(count_files(v.cal_dir), 3);
	_cleanup_free_ char *again = event("e1", "Again", NULL);
	server_put(&v, v.cal, "e1.ics", again);
	sync_ok(&v);
	assert_int_equal(v.updated, 1);
	/* Work One no longer named: collections = none stops it. */
	v.acc.include = NULL;
	server_put(&v, a, "e7.ics", e6);
	sync_ok(&v);
	assert_int_equal(count_files(w1), 1);
	env_done(&v);
}

/* calendars_path and path =: the files live there, a change of place with files left behind
 * stops the collection until they are moved, and a collection removed on the server takes
 * only ksync's files with it. */
static void test_own_dirs(void **state)
{
	env v;
	_cleanup_free_ char *cals = NULL, *cals2 = NULL, *dir = NULL, *dir2 = NULL, *own = NULL;

	env_init(&v);
	assert_true(asprintf(&cals, "%s/home/.calendars", v.root) > 0);
	assert_true(asprintf(&cals2, "%s/home/cal2", v.root) > 0);
	assert_true(asprintf(&dir, "%s/events", cals) > 0);
	assert_true(asprintf(&dir2, "%s/events", cals2) > 0);
	assert_true(asprintf(&own, "%s/home/Book", v.root) > 0);
	v.acc.calendars_path = cals;
	_cleanup_free_ char *paths = NULL;
	assert_true(asprintf(&paths, "contacts/book\n%s\n", own) > 0);
	v.acc.paths = paths;
	seed_and_sync(&v, 2, 2);
	assert_int_equal(count_files(dir), 2);
	assert_int_equal(count_files(own), 2);
	assert_int_equal(access(v.cal_dir, F_OK), -1);
	assert_int_equal(access(v.book_dir, F_OK), -1);
	assert_same(&v, dir, "e1.ics", v.cal, "e1.ics");

	/* Edits there go up as anywhere. */
	_cleanup_free_ char *e3 = event("e3", "Made there", NULL);
	write_file(dir, "e3.ics", e3);
	sync_ok(&v);
	assert_int_equal(v.uploaded, 1);
	assert_int_equal(mem_count(v.m, v.cal), 3);

	/* Moved in ksync.conf: the directory follows, with the same files, and nothing is
	 * sent or fetched. */
	v.acc.calendars_path = cals2;
	unsigned changes = mem_changes(v.m);
	_cleanup_free_ char *snap = snapshot(dir);
	sync_ok(&v);
	assert_non_null(strstr(v.log.data, "moved its directory from"));
	assert_int_equal(access(dir, F_OK), -1);
	_cleanup_free_ char *snap2 = snapshot(dir2);
	assert_string_equal(snap, snap2);
	assert_int_equal(v.added + v.updated + v.deleted + v.uploaded + v.removed, 0);
	assert_int_equal(mem_changes(v.m), changes);

	/* Back, where a directory with a file of the user's is in the way: neither is taken,
	 * and nothing is touched. */
	v.acc.calendars_path = cals;
	assert_int_equal(mkdir(dir, 0700), 0);
	write_file(dir, "x.ics", e3);
	(void) env_sync(&v);
	assert_int_equal(v.failed, 1);
	assert_non_null(strstr(v.log.data, "holds files already"));
	assert_int_equal(mem_changes(v.m), changes);
	assert_int_equal(count_files(dir2), 3);
	assert_int_equal(count_files(dir), 1);

	/* Moved by the user (the old place gone): taken as it is. */
	v.acc.calendars_path = cals2;
	sync_ok(&v);
	rm_tree(cals);
	v.acc.calendars_path = cals;
	assert_int_equal(rename(cals2, cals), 0);
	sync_ok(&v);
	assert_int_equal(v.added + v.updated + v.deleted + v.uploaded + v.removed, 0);
	assert_int_equal(mem_changes(v.m), changes);
	assert_int_equal(count_files(dir), 3);
	/* An empty directory in the way is no obstacle, nor one holding only ksync's own
	 * displayname and color files. */
	assert_int_equal(mkdir(cals2, 0700), 0);
	assert_int_equal(mkdir(dir2, 0700), 0);
	v.acc.calendars_path = cals2;
	sync_ok(&v);
	assert_int_equal(count_files(dir2), 3);
	assert_int_equal(mem_changes(v.m), changes);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_file(dir, "displayname", "Events\n");
	write_file(dir, "color", "#112233\n");
	v.acc.calendars_path = cals;
	sync_ok(&v);
	assert_int_equal(count_files(dir), 3);
	_cleanup_free_ char *dn = read_file(dir, "displayname");
	assert_string_equal(dn, "Events\n");
	assert_int_equal(mem_changes(v.m), changes);
	v.acc.calendars_path = cals2;
	sync_ok(&v);

	/* Removed on the server: ksync's files go, a new one is kept under conflicts/. */
	_cleanup_free_ char *n1 = event("n1", "Not sent yet", NULL);
	write_file(dir2, "n1.ics", n1);
	assert_int_equal(mem_remove_collection(v.m, v.cal), 0);
	assert_int_equal(env_sync_with(&v, (sync_flags) { .allow_mass_delete = true }), 0);
	assert_int_equal(access(dir2, F_OK), -1);
	assert_int_equal(access(cals2, F_OK), 0);
	_cleanup_free_ char *kept = conflict_copies(&v, "calendars/events");
	assert_non_null(strstr(kept, "SUMMARY:Not sent yet"));
	env_done(&v);
}

/* A tree another client wrote, given as calendars_path before the first sync: files that
 * are the server's items are taken as they are, an edited one is merged, a new one goes up
 * once, and nothing is doubled on either side. */
static void test_adopt_tree(void **state)
{
	env v;
	_cleanup_free_ char *cals = NULL, *dir = NULL, *home = NULL;

	env_init(&v);
	assert_true(asprintf(&cals, "%s/home/.calendars", v.root) > 0);
	assert_true(asprintf(&dir, "%s/events", cals) > 0);
	_cleanup_free_ char *e1 = event("e1", "One", NULL), *e2 = event("e2", "Two", NULL);
	server_put(&v, v.cal, "e1.ics", e1);
	server_put(&v, v.cal, "e2.ics", e2);
	assert_true(asprintf(&home, "%s/home", v.root) > 0);
	assert_int_equal(mkdir(home, 0700) == 0 && mkdir(cals, 0700) == 0 && mkdir(dir, 0700) == 0, 1);
	_cleanup_free_ char *s1 = strdup(server_item(&v, v.cal, "e1.ics")->data);
	write_file(dir, "e1-other-name.ics", s1);
	_cleanup_free_ char *e2b = event("e2", "Two, edited before the move", NULL);
	write_file(dir, "e2.ics", e2b);
	_cleanup_free_ char *e9 = event("e9", "Only here", NULL);
	write_file(dir, "e9.ics", e9);
	v.acc.calendars_path = cals;
	sync_ok(&v);
	assert_int_equal(mem_count(v.m, v.cal), 3);
	assert_int_equal(count_files(dir), 3);
	_cleanup_free_ char *still = read_file(dir, "e1-other-name.ics");
	assert_string_equal(still, s1);
	/* Without a common base, the edit is a conflict: server-wins keeps it aside. */
	_cleanup_free_ char *kept = conflict_copies(&v, "calendars/events");
	if (!strstr(kept, "Two, edited before the move"))
		FAIL("the edited file is lost:\n%s", v.log.data);
	assert_int_equal(v.conflicts, 1);
	sync_ok(&v);
	assert_int_equal(v.added + v.updated + v.deleted + v.uploaded + v.removed, 0);
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

/* A file only renamed here while the server deleted its item, or moved it to another href:
 * the rename is no change, so the deletion takes the renamed file, and the moved item keeps
 * one file, whatever the listing's order (a full listing deletes after it fetches). */
static void test_renamed_file_and_server_deletion_or_move(void **state)
{
	env v;

	for (int force = 0; force < 2; force++) {
		env_init(&v);
		seed_and_sync(&v, 3, 0);
		/* The moved item comes first in the listing's order, the deleted one after. */
		rename_file(v.cal_dir, "e2.ics", "lunch.ics");
		_cleanup_free_ char *h2 = href_in(v.cal, "e2.ics"), *to = href_in(v.cal, "x2.ics");
		assert_int_equal(mem_move(v.m, h2, to), 0);
		rename_file(v.cal_dir, "e3.ics", "dinner.ics");
		_cleanup_free_ char *h3 = href_in(v.cal, "e3.ics");
		assert_int_equal(mem_delete(v.m, h3), 0);
		if (env_sync_with(&v, (sync_flags) { .force = force }) != 0 || v.failed)
			FAIL("the sync failed:\n%s", v.log.data ? v.log.data : "");
		assert_null(file_by_uid(v.cal_dir, "e3"));
		assert_null(server_by_uid(&v, v.cal, "e3"));
		_cleanup_free_ char *name = file_by_uid(v.cal_dir, "e2");
		assert_non_null(name);
		assert_int_equal(count_files(v.cal_dir), 2);
		assert_same(&v, v.cal_dir, name, v.cal, "x2.ics");
		assert_int_equal(mem_count(v.m, v.cal), 2);
		sync_quiet(&v);
		env_done(&v);
	}
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
/* A new file whose upload landed but whose answer was lost, then overwritten with junk before
 * the next run: the server's version must not replace the junk, which is the user's. */
static void test_answer_lost_then_junk(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 1, 0);
	_cleanup_free_ char *n1 = event("n1", "New", NULL);
	write_file(v.cal_dir, "n1.ics", n1);
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_PUT, .count = 1,
							     .err = -ECONNRESET, .applied = true }),
			 0);
	assert_true(env_sync(&v) != 0);
	assert_int_equal(mem_count(v.m, v.cal), 2);
	static const char junk[] = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:n1\r\nSUMM\r\n"
				   "my half-saved notes\r\n";
	write_in_place(v.cal_dir, "n1.ics", junk);
	(void) env_sync_with(&v, (sync_flags) { .force = true });
	_cleanup_free_ char *kept = read_file(v.cal_dir, "n1.ics");
	assert_non_null(kept);
	assert_string_equal(kept, junk);
	/* The server's item is there once, under another name. */
	_cleanup_free_ char *srv = file_by_uid(v.cal_dir, "n1");
	assert_non_null(srv);
	assert_string_not_equal(srv, "n1.ics");
	assert_int_equal(mem_count(v.m, v.cal), 2);
	env_done(&v);
}

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

/* A 401 on a collection's listing: one more request confirms that the credentials are
 * refused, and the run says so (the daemon then stops trying them). A 403 saying why
 * (need-privileges) is no refusal of the credentials. */
static void test_credentials_refused(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 1, 1);
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_LIST, .href = v.cal,
							     .count = 1, .status = 401 }), 0);
	mem_refuse_auth(v.m, true);
	mem_reset_counters(v.m);
	assert_int_equal(env_sync(&v), -EACCES);
	assert_int_equal(v.credentials_refused, 1);
	assert_int_equal(mem_requests(v.m, MEM_REQ_AUTH), 1);

	mem_refuse_auth(v.m, false);
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) {
		.kind = MEM_REQ_LIST, .href = v.cal, .count = 1, .status = 403,
		.body = "<d:error xmlns:d=\"DAV:\"><d:need-privileges/></d:error>" }), 0);
	assert_int_equal(env_sync(&v), -EPERM);
	assert_int_equal(v.credentials_refused, 0);
	sync_quiet(&v);
	env_done(&v);
}

/* A server change left to the push's merge (the file was edited here), the merge cut off (its
 * fetch fails), then the edit taken back so that the file is again what was last synced: the
 * server's change must still reach the file. */
static void test_deferred_change_reverted(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 1, 0);
	_cleanup_free_ char *base = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *loc = prop_set(base, "DESCRIPTION", "Mine");
	_cleanup_free_ char *srv = prop_set(base, "LOCATION", "Room 2");
	write_file(v.cal_dir, "e1.ics", loc);
	server_put(&v, v.cal, "e1.ics", srv);
	/* The pull's multiget goes through, the merge's fails. */
	assert_int_equal(mem_add_fault(v.m, &(mem_fault) { .kind = MEM_REQ_MULTIGET, .skip = 1,
							     .count = 1, .status = 500 }), 0);
	assert_int_equal(env_sync(&v), 1);
	assert_int_equal(mem_pending_faults(v.m), 0);
	write_file(v.cal_dir, "e1.ics", base);
	sync_ok(&v);
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	env_done(&v);
}

/* An edit in place, same size, that leaves the file's mtime as it was: on a kernel that
 * stamps files from a coarse clock, an edit within the tick of the last write. Here the mtime
 * is ahead of the clock, which makes every stat of it one taken within its tick: the stat is
 * not trusted, the edit is found and merged with the server's change. */
static void test_edit_in_place(void **state)
{
	env v;

	env_init(&v);
	seed_and_sync(&v, 1, 0);
	_cleanup_free_ char *path = path_of(v.cal_dir, "e1.ics");
	struct timespec ahead[2] = { { 0, UTIME_OMIT }, { time(NULL) + 3600, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ahead, 0), 0);
	sync_ok(&v);	/* the scan records the touched file's stat */
	_cleanup_free_ char *d = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *x = prop_set(d, "SUMMARY", "Event X");
	assert_int_equal(strlen(x), strlen(d));
	write_in_place(v.cal_dir, "e1.ics", x);
	assert_int_equal(utimensat(AT_FDCWD, path, ahead, 0), 0);
	_cleanup_free_ char *srv = prop_set(d, "DESCRIPTION", "From the phone");
	server_put(&v, v.cal, "e1.ics", srv);
	sync_ok(&v);
	_cleanup_free_ char *now = read_file(v.cal_dir, "e1.ics");
	_cleanup_free_ char *sum = prop_get(now, "SUMMARY"), *desc = prop_get(now, "DESCRIPTION");
	assert_string_equal(sum, "Event X");
	assert_string_equal(desc, "From the phone");
	assert_same(&v, v.cal_dir, "e1.ics", v.cal, "e1.ics");
	env_done(&v);
}

/* ---- the randomized runner ------------------------------------------------------------- */

/* Each scenario: a server with its own behaviour (drawn from the seed), a few items, then
 * steps drawn from the seed: another client's changes on the server, the user's on the files,
 * faults armed for the next sync, syncs. Every value a step writes is unique ("V000042Q"); a
 * value is live until the side that shows it replaces it or deletes its item. After every
 * sync, each live value must be on the server, in a file or in a conflict copy. A quiet step
 * (and the end of a scenario) syncs without faults: then both sides hold the same items, byte
 * for byte, one per UID, the cache agrees, and a second sync changes nothing. */

enum {
	OP_SYNC,		/* variant 1: --force, 2: the home sets listed */
	OP_QUIET,
	OP_SRV_CREATE,		/* variant 1: a resource name not made from the UID */
	OP_SRV_EDIT,		/* variant 1: the property removed */
	OP_SRV_DELETE,
	OP_SRV_MOVE,
	OP_LOC_CREATE,		/* variant 1: a file name not made from the UID */
	OP_LOC_EDIT,		/* variant 1: the property removed, 2: written in place */
	OP_LOC_DELETE,
	OP_LOC_RENAME,
	OP_LOC_COPY,		/* a second file with the same UID */
	OP_FAULT,		/* variant: a fault of faults[] */
	OP_EXPIRE,		/* the server forgets the changes its tokens name */
	OP_SRV_DROP,		/* the collection deleted on the server */
	OP_SRV_READD,		/* a collection of that name made again (empty) */
	OP_LOC_AWAY,		/* the directory renamed away (variant 1: back) */
	OP_EXCLUDE,		/* the collection named by exclude = (variant 1: taken out) */
	OP_PLACE,		/* path = moves the collection (back), and the user moves its
				 * directory there (variant 1: only after the next sync) */
	_OP_MAX,
};

static const char *const op_names[_OP_MAX] = {
	"OP_SYNC", "OP_QUIET", "OP_SRV_CREATE", "OP_SRV_EDIT", "OP_SRV_DELETE", "OP_SRV_MOVE",
	"OP_LOC_CREATE", "OP_LOC_EDIT", "OP_LOC_DELETE", "OP_LOC_RENAME", "OP_LOC_COPY",
	"OP_FAULT", "OP_EXPIRE", "OP_SRV_DROP", "OP_SRV_READD", "OP_LOC_AWAY", "OP_EXCLUDE",
	"OP_PLACE",
};

/* How often each step is drawn. */
static const unsigned op_weights[_OP_MAX] = {
	[OP_SYNC] = 16, [OP_QUIET] = 3, [OP_SRV_CREATE] = 7, [OP_SRV_EDIT] = 14,
	[OP_SRV_DELETE] = 4, [OP_SRV_MOVE] = 2, [OP_LOC_CREATE] = 7, [OP_LOC_EDIT] = 16,
	[OP_LOC_DELETE] = 4, [OP_LOC_RENAME] = 3, [OP_LOC_COPY] = 2, [OP_FAULT] = 8,
	[OP_EXPIRE] = 1, [OP_SRV_DROP] = 1, [OP_SRV_READD] = 1, [OP_LOC_AWAY] = 2,
	[OP_EXCLUDE] = 2, [OP_PLACE] = 2,
};

/* The faults a step arms for the next sync: a kind of request, which one of its kind (skip is
 * the step's pick modulo 3), and what happens to it. */
static const mem_fault faults[] = {
	{ .kind = MEM_REQ_PUT, .err = -ECONNRESET },
	{ .kind = MEM_REQ_PUT, .err = -ECONNRESET, .applied = true },
	{ .kind = MEM_REQ_DELETE, .err = -ETIMEDOUT, .applied = true },
	{ .kind = MEM_REQ_PUT, .status = 403,
	  .body = "<d:error xmlns:d=\"DAV:\"><d:need-privileges/></d:error>" },
	{ .kind = MEM_REQ_PUT, .status = 207,
	  .body = "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/x</d:href><d:status>"
		  "HTTP/1.1 412 Precondition Failed</d:status></d:response></d:multistatus>" },
	{ .kind = MEM_REQ_PUT, .status = 412 },
	{ .kind = MEM_REQ_DELETE, .status = 403 },
	{ .kind = MEM_REQ_LIST, .err = -ECONNRESET },
	{ .kind = MEM_REQ_LIST, .status = 503, .retry_after = 1 },
	{ .kind = MEM_REQ_MULTIGET, .status = 500 },
	{ .kind = MEM_REQ_MULTIGET, .err = -EBADMSG },
	{ .kind = MEM_REQ_MULTIGET, .err = -ETIMEDOUT },
	{ .kind = MEM_REQ_MULTIGET, .omit = true },	/* an href of the collection left out */
	{ .kind = MEM_REQ_GET, .status = 503, .retry_after = 1 },
	{ .kind = MEM_REQ_HOMES, .status = 500 },
	{ .kind = MEM_REQ_HOMES, .omit = true },	/* a listing without the collection */
	{ .kind = MEM_REQ_PROBE, .err = -ETIMEDOUT },
	{ .kind = MEM_REQ_CTAG, .err = -ECONNRESET },
};

typedef struct step {
	uint8_t op, coll, prop, variant;
	uint32_t pick;
} step;

typedef struct scenario {
	uint64_t seed;
	mem_behaviour b;
	bool sync[2];
	unsigned page[2];
	bool spare;		/* a third, empty calendar: runs then list the home sets */
	bool window;		/* a time window (past_days, future_days) that holds every
				 * event: its listings, lookups and looks at the rows run */
	int conflict;
	unsigned server_items[2], local_items[2], shared_uids;
	step *steps;
	size_t n_steps;
} scenario;

/* What a failed scenario failed at: shrinking keeps a shorter sequence only when it fails
 * the same way. */
enum {
	FAILED_NONE,
	FAILED_LOST,		/* a live value is nowhere */
	FAILED_QUIET_SYNC,	/* a sync without faults failed */
	FAILED_DIFFER,		/* after a quiet sync the sides differ */
	FAILED_SECOND,		/* a second quiet sync changed something */
	FAILED_CACHE,		/* the cache does not hold what the server does */
};

static const char *const failure_names[] = {
	"none", "a value was lost", "a sync without faults failed",
	"the two sides differ after a quiet sync", "a second quiet sync changed something",
	"the cache does not match the server",
};

typedef struct model {
	env v;
	const scenario *sc;
	unsigned counter;
	char **live;
	size_t n_live, cap_live;
	int failed;
	ks_buf why;
	size_t at;		/* the step being run */
	bool log_syncs;		/* KSYNC_ENGINE_LOG: every sync's report to stderr */
	bool known_bugs;	/* KSYNC_ENGINE_KNOWN_BUGS: steps that meet known bugs too */
	bool excluded[2];	/* the collections exclude = names */
	char exclude[64];
	/* path =: whether it places collection c in alt[c] (else in the data directory),
	 * where c's files are (the directory local steps work in), and whether the user moves
	 * them there after the next sync */
	bool placed[2];
	char alt[2][400], dirs[2][400];
	char paths[1024];
	bool move_later[2];
	/* statistics */
	unsigned syncs, guards, conflicts, refusals, order_only, places;
} model;

static const char *coll_href(const model *md, unsigned c)
{
	return c ? md->v.book : md->v.cal;
}

static const char *coll_dir(const model *md, unsigned c)
{
	return md->dirs[c];
}

static const char *coll_label(unsigned c)
{
	return c ? "contacts/book" : "calendars/events";
}

static const char *const props[2][3] = {
	{ "SUMMARY", "LOCATION", "DESCRIPTION" },
	{ "FN", "NOTE", "TITLE" },
};

static char *new_value(model *md)
{
	char *val = NULL;

	assert_true(asprintf(&val, "V%06uQ", ++md->counter) > 0);
	if (md->n_live == md->cap_live) {
		md->cap_live = md->cap_live ? md->cap_live * 2 : 64;
		md->live = realloc(md->live, md->cap_live * sizeof(char *));
		assert_non_null(md->live);
	}
	md->live[md->n_live++] = strdup(val);
	return val;
}

/* Every value found in data is no longer live: whoever saw it replaced it or deleted it. */
static void kill_values(model *md, const char *data)
{
	for (const char *p = data; p && (p = strchr(p, 'V')); p++) {
		size_t n = strspn(p + 1, "0123456789");
		if (n != 6 || p[7] != 'Q')
			continue;
		for (size_t i = 0; i < md->n_live; i++)
			if (strncmp(md->live[i], p, 8) == 0) {
				free(md->live[i]);
				md->live[i] = md->live[--md->n_live];
				break;
			}
	}
}

/* A new item of collection c with uid, each property a new value. */
static char *new_item(model *md, unsigned c, const char *uid)
{
	_cleanup_free_ char *a = new_value(md), *b = new_value(md), *x = NULL;

	if (c == 0) {
		_cleanup_free_ char *line = NULL;
		assert_true(asprintf(&line, "LOCATION:%s\r\n", b) > 0);
		x = event(uid, a, line);
	} else {
		_cleanup_free_ char *line = NULL;
		assert_true(asprintf(&line, "NOTE:%s\r\n", b) > 0);
		x = card(uid, a, line);
	}
	return TAKE_PTR(x);
}

/* data with the property prop of collection c set to a new value, or removed. */
static char *edit_item(model *md, unsigned c, const char *data, unsigned prop, bool remove)
{
	const char *name = props[c][prop % 3];
	_cleanup_free_ char *old = prop_get(data, name), *val = NULL;

	if (prop % 3 == 0)
		remove = false;	/* SUMMARY and FN stay */
	if (old)
		kill_values(md, old);
	if (!remove)
		val = new_value(md);
	return prop_set(data, name, val);
}

static void run_step(model *md, const step *s);
static void fail_model(model *md, int kind, const char *fmt, ...) _printf_(3, 4);
static void fail_model(model *md, int kind, const char *fmt, ...)
{
	va_list ap;

	if (md->failed)
		return;
	md->failed = kind;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) >= 0) {
		(void) ks_buf_puts(&md->why, s);
		free(s);
	}
	va_end(ap);
	char *all = describe(&md->v);
	(void) ks_buf_printf(&md->why, "\nreport of the last sync:\n%s\nstate:\n%s",
			     md->v.log.data ? md->v.log.data : "", all ? all : "");
	free(all);
}

/* Every live value is on the server, in a file or in a conflict copy. */
static void check_nothing_lost(model *md)
{
	ks_buf hay = {};
	const char *trees[] = { "calendars", "contacts", "conflicts" };

	for (unsigned c = 0; c < 2; c++)
		for (size_t i = 0; i < mem_count(md->v.m, coll_href(md, c)); i++)
			(void) ks_buf_puts(&hay, mem_item_at(md->v.m, coll_href(md, c), i)->data);
	for (size_t t = 0; t < 3; t++) {
		_cleanup_free_ char *dir = path_of(md->v.data, trees[t]);
		gather_tree(dir, &hay);
	}
	_cleanup_free_ char *alt = path_of(md->v.root, "alt");
	gather_tree(alt, &hay);
	for (size_t i = 0; i < md->n_live; i++)
		if (!hay.data || !strstr(hay.data, md->live[i])) {
			fail_model(md, FAILED_LOST, "%s is on neither side nor in a conflict copy",
				   md->live[i]);
			break;
		}
	ks_buf_done(&hay);
}

/* The UIDs of the items of collection c that the engine holds back for a standing refusal
 * (a change the server refused is not sent again until the file changes): left out of the
 * comparison. NULL-terminated. */
static char **refused_uids(model *md, unsigned c)
{
	ks_collection *cols = NULL;
	size_t n_cols = 0, n = 0;
	char **uids = calloc(1, sizeof(char *));

	assert_non_null(uids);
	assert_int_equal(ks_cache_list_collections(md->v.e->cache, ACCOUNT, &cols, &n_cols), 0);
	for (size_t i = 0; i < n_cols; i++) {
		if (strcmp(cols[i].href, coll_href(md, c)) != 0)
			continue;
		ks_refusal *rf = NULL;
		size_t n_rf = 0;
		assert_int_equal(ks_cache_list_refusals(md->v.e->cache, cols[i].id, &rf, &n_rf), 0);
		for (size_t k = 0; k < n_rf; k++) {
			_cleanup_free_ char *data = read_file(coll_dir(md, c), rf[k].filename);
			const mem_item *it = rf[k].href ? mem_find(md->v.m, rf[k].href) : NULL;
			char *u[2] = { data ? prop_get(data, "UID") : NULL,
				       it && it->uid ? strdup(it->uid) : NULL };
			for (size_t j = 0; j < 2; j++) {
				if (!u[j])
					continue;
				uids = realloc(uids, (n + 2) * sizeof(char *));
				assert_non_null(uids);
				uids[n++] = u[j];
				uids[n] = NULL;
			}
		}
		ks_refusals_free(rf, n_rf);
	}
	ks_collection_free_array(cols, n_cols);
	return uids;
}

static bool in_list(char **v, const char *s)
{
	for (size_t i = 0; s && v[i]; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* Whether the file data differs from the server's bytes only in the order of properties, with
 * a server that reorders them: an upload whose read-back failed, or a file the server got by
 * an upload whose answer was lost, merged with the server's version as equal. The engine
 * leaves such a file as it is: the same item, in other bytes (a difference noted, not a
 * failure). */
static bool order_only(model *md, const char *data, const char *server)
{
	_cleanup_free_ char *stored = NULL;

	if (md->sc->b.rewrite != MEM_REWRITE_SORT)
		return false;
	assert_int_equal(mem_stored_form(md->v.m, data, strlen(data), &stored), 0);
	return strcmp(stored, server) == 0;
}

typedef struct stale {
	model *md;
	char *href;	/* the first row whose item the server does not have */
} stale;

static int find_stale(const char *href, const char *etag, const char *filename, void *userdata)
{
	stale *st = userdata;

	if (!st->href && !mem_find(st->md->v.m, href))
		st->href = strdup(href);
	return 0;
}

/* After a quiet sync: the same items on both sides, byte for byte, one per UID, and the
 * cache row of each holding the server's etag and the file's name. */
static void check_converged(model *md)
{
	ks_collection *cols = NULL;
	size_t n_cols = 0;

	assert_int_equal(ks_cache_list_collections(md->v.e->cache, ACCOUNT, &cols, &n_cols), 0);
	for (unsigned c = 0; c < 2 && !md->failed; c++) {
		const char *href = coll_href(md, c), *dir = coll_dir(md, c);
		/* Gone from the server: what is left here is the user's (no-loss checks it). */
		if (!mem_has_collection(md->v.m, href))
			continue;
		char **skip = refused_uids(md, c);
		char **names = list_files(dir, NULL);
		char **seen = calloc(1, sizeof(char *));
		size_t n_seen = 0;
		int64_t id = -1;
		for (size_t i = 0; i < n_cols; i++)
			if (strcmp(cols[i].href, href) == 0)
				id = cols[i].id;
		for (size_t i = 0; names[i] && !md->failed; i++) {
			_cleanup_free_ char *data = read_file(dir, names[i]);
			_cleanup_free_ char *uid = data ? prop_get(data, "UID") : NULL;
			if (in_list(skip, uid))
				continue;
			if (!uid || in_list(seen, uid)) {
				fail_model(md, FAILED_DIFFER, "%s/%s: %s", coll_label(c), names[i],
					   uid ? "a second file with this UID" : "no UID");
				break;
			}
			seen = realloc(seen, (n_seen + 2) * sizeof(char *));
			seen[n_seen++] = strdup(uid);
			seen[n_seen] = NULL;
			const mem_item *it = server_by_uid(&md->v, href, uid);
			if (it && strcmp(it->data, data) != 0 && order_only(md, data, it->data)) {
				md->order_only++;
			} else if (!it || strcmp(it->data, data) != 0) {
				fail_model(md, FAILED_DIFFER, "%s/%s (UID %s): %s", coll_label(c),
					   names[i], uid, it ? "the server's item differs"
							     : "not on the server");
				break;
			}
			ks_cache_item row = {};
			int r = id >= 0 ? ks_cache_get_item(md->v.e->cache, id, it->href, &row)
					: -ENOENT;
			if (r < 0 || !ks_str_eq(row.etag, it->etag) ||
			    !ks_str_eq(row.filename, names[i]))
				fail_model(md, FAILED_CACHE, "%s: the cache row of %s holds etag "
					   "%s and file %s; the server has etag %s, the file is %s",
					   coll_label(c), it->href, r < 0 ? "(no row)" : row.etag,
					   r < 0 ? "(no row)" : row.filename, it->etag, names[i]);
			ks_cache_item_done(&row);
		}
		for (size_t i = 0; i < mem_count(md->v.m, href) && !md->failed; i++) {
			const mem_item *it = mem_item_at(md->v.m, href, i);
			if (in_list(skip, it->uid))
				continue;
			if (!it->uid || !in_list(seen, it->uid))
				fail_model(md, FAILED_DIFFER, "%s: the server's %s (UID %s) has no "
					   "file", coll_label(c), it->href,
					   it->uid ? it->uid : "none");
		}
		if (!md->failed && id >= 0) {
			stale st = { .md = md };
			assert_true(ks_cache_foreach_item(md->v.e->cache, id, find_stale,
							  &st) >= 0);
			if (st.href)
				fail_model(md, FAILED_CACHE, "%s: the cache has a row for %s, "
					   "which the server does not have", coll_label(c),
					   st.href);
			free(st.href);
		}
		free_names(names);
		free_names(skip);
		free_names(seen);
	}
	ks_collection_free_array(cols, n_cols);
}

/* The directory the cache places collection c in (false: no row). */
static bool placed_dir(model *md, unsigned c, char *buf, size_t size)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	bool found = false;

	assert_int_equal(ks_cache_list_collections(md->v.e->cache, ACCOUNT, &cols, &n), 0);
	for (size_t i = 0; i < n && !found; i++)
		if (strcmp(cols[i].href, coll_href(md, c)) == 0) {
			found = true;
			snprintf(buf, size, "%s", cols[i].dir ? cols[i].dir :
				 c ? md->v.book_dir : md->v.cal_dir);
		}
	ks_collection_free_array(cols, n);
	return found;
}

/* Where path = puts collection c now. */
static const char *config_dir(const model *md, unsigned c)
{
	return md->placed[c] ? md->alt[c] : c ? md->v.book_dir : md->v.cal_dir;
}

static void rm_if_no_items(const char *dir, const char *ext);

static const char *ext_of(unsigned c)
{
	return c ? ".vcf" : ".ics";
}

/* The user moves c's directory where path = says, as the message of a refused place says
 * (a directory without items there is removed first). */
static void move_to_config(model *md, unsigned c)
{
	const char *to = config_dir(md, c);

	md->move_later[c] = false;
	if (strcmp(md->dirs[c], to) == 0 || access(md->dirs[c], F_OK) < 0)
		return;
	rm_if_no_items(to, ext_of(c));
	if (access(to, F_OK) == 0) {
		/* The engine made it there meanwhile (with nothing of the collection's where the
		 * files went): the user puts the files together, as the refusal says. */
		char **names = list_files(md->dirs[c], NULL);
		for (size_t i = 0; names[i]; i++) {
			_cleanup_free_ char *from = path_of(md->dirs[c], names[i]);
			_cleanup_free_ char *dest = path_of(to, names[i]);
			if (access(dest, F_OK) == 0) {
				free(dest);
				assert_true(asprintf(&dest, "%s/moved-%s", to, names[i]) > 0);
			}
			assert_int_equal(rename(from, dest), 0);
		}
		free_names(names);
		rm_tree(md->dirs[c]);
		snprintf(md->dirs[c], sizeof(md->dirs[c]), "%s", to);
		return;
	}
	_cleanup_free_ char *parent = strdup(to);
	*strrchr(parent, '/') = 0;
	assert_int_equal(ks_fs_mkdir_p(parent), 0);
	assert_int_equal(rename(md->dirs[c], to), 0);
	snprintf(md->dirs[c], sizeof(md->dirs[c]), "%s", to);
}

static void model_sync(model *md, sync_flags fl)
{
	char before[2][400] = { "", "" };

	for (unsigned c = 0; c < 2; c++)
		if (!placed_dir(md, c, before[c], sizeof(before[c])))
			before[c][0] = 0;
	int r = env_sync_with(&md->v, fl);

	/* A place the engine took holds the files from now on (it takes one only when the
	 * old one held no item file). */
	for (unsigned c = 0; c < 2; c++) {
		char now[400];
		if (placed_dir(md, c, now, sizeof(now)) && before[c][0] &&
		    strcmp(now, before[c]) != 0) {
			snprintf(md->dirs[c], sizeof(md->dirs[c]), "%s", now);
			md->places++;
		} else if (placed_dir(md, c, now, sizeof(now)) && strcmp(now, before[c]) != 0)
			snprintf(md->dirs[c], sizeof(md->dirs[c]), "%s", now);
		if (md->move_later[c])
			move_to_config(md, c);
	}

	/* Faults make runs fail: how is for the quiet syncs to judge. */
	if (md->log_syncs)
		fprintf(stderr, "sync at step %zu: %d\n%s", md->at, r,
			md->v.log.data ? md->v.log.data : "");
	md->syncs++;
	md->guards += md->v.guard;
	md->conflicts += md->v.conflicts;
	mem_clear_faults(md->v.m);
	check_nothing_lost(md);
}

/* Syncs without faults until the mass-deletion guard, when it stopped a deletion, is told to
 * let it through; then the sides must agree, and one more sync must change nothing. */
static void model_quiet(model *md)
{
	sync_flags fl = { .list_collections = true };

	mem_clear_faults(md->v.m);
	/* The user puts a directory moved away back, takes exclude = away, and moves a
	 * directory where path = says. */
	for (unsigned c = 0; c < 2; c++) {
		run_step(md, &(step) { .op = OP_LOC_AWAY, .coll = (uint8_t) c, .variant = 1 });
		run_step(md, &(step) { .op = OP_EXCLUDE, .coll = (uint8_t) c, .variant = 1 });
		move_to_config(md, c);
	}
	model_sync(md, fl);
	fl.list_collections = false;
	if (!md->failed && md->v.guard) {
		fl.allow_mass_delete = true;
		model_sync(md, fl);
	}
	if (md->failed)
		return;
	if (md->v.r != 0 || md->v.failed || md->v.account_failed) {
		fail_model(md, FAILED_QUIET_SYNC, "a sync without faults failed (%d)", md->v.r);
		return;
	}
	check_converged(md);
	if (md->failed)
		return;
	_cleanup_free_ char *cal0 = snapshot(coll_dir(md, 0)), *book0 = snapshot(coll_dir(md, 1));
	unsigned changes = mem_changes(md->v.m);
	model_sync(md, fl);
	_cleanup_free_ char *cal1 = snapshot(coll_dir(md, 0)), *book1 = snapshot(coll_dir(md, 1));
	if (!md->failed && (md->v.r != 0 || mem_changes(md->v.m) != changes ||
			    strcmp(cal0, cal1) || strcmp(book0, book1) || md->v.added ||
			    md->v.updated || md->v.deleted || md->v.uploaded || md->v.removed ||
			    md->v.conflicts))
		fail_model(md, FAILED_SECOND, "a second quiet sync changed something (%u server "
			   "changes; files before:\n%s%safter:\n%s%s)",
			   mem_changes(md->v.m) - changes, cal0, book0, cal1, book1);
}

/* The i-th item file of collection c (modulo their number), or NULL when there is none. */
static char *pick_file(model *md, unsigned c, uint32_t pick)
{
	size_t n = 0;
	char **names = list_files(coll_dir(md, c), &n);
	char *name = n ? strdup(names[pick % n]) : NULL;

	free_names(names);
	return name;
}

static const mem_item *pick_item(model *md, unsigned c, uint32_t pick)
{
	size_t n = mem_count(md->v.m, coll_href(md, c));

	return n ? mem_item_at(md->v.m, coll_href(md, c), pick % n) : NULL;
}

/* Makes collection c on the server, as the scenario has it. */
static void add_collection(model *md, unsigned c)
{
	const scenario *sc = md->sc;

	assert_int_equal(mem_add_collection(md->v.m, c ? KS_COLLECTION_ADDRESSBOOK
						       : KS_COLLECTION_CALENDAR,
					    c ? "book" : "events", c ? "Book" : "Events", NULL), 0);
	assert_int_equal(mem_collection_set(md->v.m, coll_href(md, c), sc->sync[c], true, false,
					    c ? 0 : KS_COMP_VEVENT | KS_COMP_VTODO, sc->page[c]),
			 0);
}

static void run_step(model *md, const step *s)
{
	unsigned c = s->coll;
	const char *dir = coll_dir(md, c);

	switch (s->op) {
	case OP_SYNC:
		model_sync(md, (sync_flags) { .force = s->variant == 1,
					      .list_collections = s->variant == 2 });
		break;
	case OP_QUIET:
		model_quiet(md);
		break;
	case OP_SRV_CREATE: {
		char uid[16], name[32];
		snprintf(uid, sizeof(uid), "s%05u", ++md->counter);
		snprintf(name, sizeof(name), "%s%s", s->variant ? uid + 1 : uid, ext_of(c));
		_cleanup_free_ char *h = href_in(coll_href(md, c), name);
		if (!mem_has_collection(md->v.m, coll_href(md, c)) || mem_find(md->v.m, h))
			break;
		_cleanup_free_ char *data = new_item(md, c, uid);
		assert_int_equal(mem_put(md->v.m, h, data, strlen(data)), 0);
		break;
	}
	case OP_SRV_EDIT: {
		const mem_item *it = pick_item(md, c, s->pick);
		if (!it)
			break;
		_cleanup_free_ char *h = strdup(it->href);
		_cleanup_free_ char *data = edit_item(md, c, it->data, s->prop, s->variant == 1);
		assert_int_equal(mem_put(md->v.m, h, data, strlen(data)), 0);
		break;
	}
	case OP_SRV_DELETE: {
		const mem_item *it = pick_item(md, c, s->pick);
		if (!it)
			break;
		_cleanup_free_ char *h = strdup(it->href);
		kill_values(md, it->data);
		assert_int_equal(mem_delete(md->v.m, h), 0);
		break;
	}
	case OP_SRV_MOVE: {
		const mem_item *it = pick_item(md, c, s->pick);
		if (!it)
			break;
		char name[32];
		snprintf(name, sizeof(name), "m%05u%s", ++md->counter, ext_of(c));
		_cleanup_free_ char *from = strdup(it->href), *to = href_in(coll_href(md, c), name);
		assert_int_equal(mem_move(md->v.m, from, to), 0);
		break;
	}
	case OP_LOC_CREATE: {
		char uid[16], name[32];
		if (access(dir, F_OK) < 0)
			break;	/* made by the first sync */
		snprintf(uid, sizeof(uid), "l%05u", ++md->counter);
		snprintf(name, sizeof(name), "%s%s", s->variant ? uid + 1 : uid, ext_of(c));
		_cleanup_free_ char *old = read_file(dir, name);
		if (old)
			break;
		_cleanup_free_ char *data = new_item(md, c, uid);
		write_file(dir, name, data);
		break;
	}
	case OP_LOC_EDIT: {
		_cleanup_free_ char *name = pick_file(md, c, s->pick);
		_cleanup_free_ char *data = name ? read_file(dir, name) : NULL;
		if (!data)
			break;
		_cleanup_free_ char *x = edit_item(md, c, data, s->prop, s->variant == 1);
		if (s->variant != 2) {
			write_file(dir, name, x);
			break;
		}
		write_in_place(dir, name, x);
		break;
	}
	case OP_LOC_DELETE: {
		_cleanup_free_ char *name = pick_file(md, c, s->pick);
		_cleanup_free_ char *data = name ? read_file(dir, name) : NULL;
		if (!data)
			break;
		kill_values(md, data);
		remove_file(dir, name);
		break;
	}
	case OP_LOC_RENAME:
	case OP_LOC_COPY: {
		_cleanup_free_ char *name = pick_file(md, c, s->pick);
		_cleanup_free_ char *data = name ? read_file(dir, name) : NULL;
		if (!data)
			break;
		char to[32];
		snprintf(to, sizeof(to), "%s%05u%s", s->op == OP_LOC_COPY ? "copy" : "r",
			 ++md->counter, ext_of(c));
		if (s->op == OP_LOC_COPY)
			write_file(dir, to, data);
		else
			rename_file(dir, name, to);
		break;
	}
	case OP_FAULT: {
		mem_fault f = faults[s->variant % ELEMENTSOF(faults)];
		_cleanup_free_ char *h = NULL;
		f.count = 1;
		f.skip = s->pick % 3;
		if (f.omit && f.kind == MEM_REQ_HOMES) {
			f.href = coll_href(md, c);
			f.skip = 0;
		} else if (f.omit) {
			const mem_item *it = pick_item(md, c, s->pick);
			if (!it)
				break;
			h = strdup(it->href);
			f.href = h;
			f.skip = 0;
		}
		md->refusals += f.status == 403 || f.status == 207;
		assert_int_equal(mem_add_fault(md->v.m, &f), 0);
		break;
	}
	case OP_EXPIRE:
		(void) mem_expire_tokens(md->v.m, coll_href(md, c));
		break;
	case OP_SRV_DROP:
		/* Deleted by someone who saw what it held. */
		for (size_t i = 0; i < mem_count(md->v.m, coll_href(md, c)); i++)
			kill_values(md, mem_item_at(md->v.m, coll_href(md, c), i)->data);
		(void) mem_remove_collection(md->v.m, coll_href(md, c));
		break;
	case OP_SRV_READD:
		if (!mem_has_collection(md->v.m, coll_href(md, c)))
			add_collection(md, c);
		break;
	case OP_EXCLUDE:
		md->excluded[c] = s->variant == 0;
		snprintf(md->exclude, sizeof(md->exclude), "%s%s%s",
			 md->excluded[0] ? coll_label(0) : "",
			 md->excluded[0] && md->excluded[1] ? ", " : "",
			 md->excluded[1] ? coll_label(1) : "");
		md->v.acc.exclude = *md->exclude ? md->exclude : NULL;
		break;
	case OP_PLACE: {
		_cleanup_free_ char *away = NULL;
		assert_true(asprintf(&away, "%s.away", dir) > 0);
		if (md->move_later[c] || access(away, F_OK) == 0)
			break;
		md->placed[c] = !md->placed[c];
		md->paths[0] = 0;
		for (unsigned k = 0; k < 2; k++)
			if (md->placed[k])
				snprintf(md->paths + strlen(md->paths),
					 sizeof(md->paths) - strlen(md->paths), "%s\n%s\n",
					 coll_label(k), md->alt[k]);
		md->v.acc.paths = *md->paths ? md->paths : NULL;
		if (s->variant == 0)
			move_to_config(md, c);
		else
			md->move_later[c] = true;
		break;
	}
	case OP_LOC_AWAY: {
		_cleanup_free_ char *away = NULL;
		assert_true(asprintf(&away, "%s.away", dir) > 0);
		if (md->move_later[c])
			break;
		if (s->variant == 0 && access(dir, F_OK) == 0 && access(away, F_OK) < 0)
			assert_int_equal(rename(dir, away), 0);
		else if (s->variant == 1 && access(dir, F_OK) < 0 && access(away, F_OK) == 0)
			assert_int_equal(rename(away, dir), 0);
		break;
	}
	}
}

/* The server and the files a scenario starts from. */
static void model_init(model *md, const scenario *sc)
{
	*md = (model) { .sc = sc, .log_syncs = getenv("KSYNC_ENGINE_LOG") != NULL,
			.known_bugs = getenv("KSYNC_ENGINE_KNOWN_BUGS") != NULL };
	env_init(&md->v);
	for (unsigned c = 0; c < 2; c++) {
		snprintf(md->alt[c], sizeof(md->alt[c]), "%s/alt/%s", md->v.root,
			 c ? "book" : "events");
		snprintf(md->dirs[c], sizeof(md->dirs[c]), "%s", c ? md->v.book_dir : md->v.cal_dir);
	}
	*mem_remote_behaviour(md->v.m) = sc->b;
	md->v.acc.conflict = sc->conflict;
	if (sc->window)
		md->v.acc.past_days = md->v.acc.future_days = 36500;
	random_state = sc->seed;
	if (sc->spare)
		assert_int_equal(mem_add_collection(md->v.m, KS_COLLECTION_CALENDAR, "spare",
						    "Spare", NULL), 0);
	for (unsigned c = 0; c < 2; c++) {
		const char *href = coll_href(md, c);
		assert_int_equal(mem_collection_set(md->v.m, href, sc->sync[c], true, false,
						    c ? 0 : KS_COMP_VEVENT | KS_COMP_VTODO,
						    sc->page[c]), 0);
		for (unsigned i = 0; i < sc->server_items[c]; i++) {
			char uid[16], name[32];
			snprintf(uid, sizeof(uid), "i%u", i);
			snprintf(name, sizeof(name), "%s%s", uid, ext_of(c));
			_cleanup_free_ char *data = new_item(md, c, uid);
			_cleanup_free_ char *h = href_in(href, name);
			assert_int_equal(mem_put(md->v.m, h, data, strlen(data)), 0);
		}
		/* Files made before the first sync; the first shared_uids of them with a UID of
		 * the server's items, as when an account is set up over an old copy. */
		if (sc->local_items[c]) {
			_cleanup_free_ char *mk = strdup(coll_dir(md, c));
			for (char *p = mk + strlen(md->v.data) + 1; (p = strchr(p, '/')); p++) {
				*p = 0;
				(void) mkdir(mk, 0700);
				*p = '/';
			}
			(void) mkdir(mk, 0700);
		}
		for (unsigned i = 0; i < sc->local_items[c]; i++) {
			char uid[16], name[32];
			snprintf(uid, sizeof(uid), i < sc->shared_uids ? "i%u" : "p%u", i);
			snprintf(name, sizeof(name), "%s%s", uid, ext_of(c));
			_cleanup_free_ char *data = new_item(md, c, uid);
			write_file(coll_dir(md, c), name, data);
		}
	}
}

static void model_done(model *md)
{
	env_done(&md->v);
	for (size_t i = 0; i < md->n_live; i++)
		free(md->live[i]);
	free(md->live);
	ks_buf_done(&md->why);
}

/* What the scenarios that ran did. */
typedef struct stats {
	uint64_t scenarios, steps, syncs, guards, conflicts, refusals, order_only, listings, places;
} stats;

/* Runs steps on the scenario's server, then a quiet sync. The failure kind (0: none); with
 * ret_why, its description; with st, what it did added up. */
static int run_steps(const scenario *sc, const step *steps, size_t n, char **ret_why,
		     size_t *ret_at, stats *st)
{
	model md;

	model_init(&md, sc);
	for (md.at = 0; md.at < n && !md.failed; md.at++)
		run_step(&md, &steps[md.at]);
	if (!md.failed)
		model_quiet(&md);
	int failed = md.failed;
	if (ret_why)
		*ret_why = failed ? ks_buf_steal(&md.why) : NULL;
	if (ret_at)
		*ret_at = md.at;
	if (st) {
		st->scenarios++;
		st->steps += md.at;
		st->syncs += md.syncs;
		st->guards += md.guards;
		st->conflicts += md.conflicts;
		st->refusals += md.refusals;
		st->order_only += md.order_only;
		st->places += md.places;
		st->listings += mem_requests(md.v.m, MEM_REQ_HOMES);
	}
	model_done(&md);
	return failed;
}

static uint32_t draw(uint64_t *s, uint32_t n)
{
	return (uint32_t) (next_random(s) % n);
}

/* The scenario of a seed: the server's behaviour, its items, and the steps. */
static void make_scenario(uint64_t seed, size_t n_steps, scenario *sc)
{
	uint64_t s = seed;
	unsigned total = 0;

	*sc = (scenario) { .seed = seed };
	sc->b.missing = draw(&s, 3);
	sc->b.uid_clash = draw(&s, 3);
	sc->b.rewrite = draw(&s, 3);
	sc->b.hrefs = draw(&s, 3);
	sc->b.token_refused = (const long[]) { 403, 409, 400, 500 }[draw(&s, 4)];
	sc->b.missing_if_match_404 = draw(&s, 2);
	sc->b.shuffle_seed = draw(&s, 2) ? next_random(&s) | 1 : 0;
	for (unsigned c = 0; c < 2; c++) {
		/* A server that rewrites with an ETag in its answer offers sync-collection
		 * (Radicale), see test_server_rewrites(). */
		sc->sync[c] = sc->b.rewrite == MEM_REWRITE_SORT || draw(&s, 4) != 0;
		sc->page[c] = draw(&s, 3) == 0 ? 1 + draw(&s, 3) : 0;
		sc->server_items[c] = draw(&s, 6);
		sc->local_items[c] = draw(&s, 3) == 0 ? draw(&s, 4) : 0;
	}
	sc->shared_uids = draw(&s, 3);
	sc->conflict = draw(&s, 3) == 0 ? KS_CONFLICT_MODE_LOCAL_WINS
					: KS_CONFLICT_MODE_SERVER_WINS;
	/* From the seed alone, so that the draws above and the steps below stay those an
	 * earlier seed gave. */
	sc->spare = (seed * UINT64_C(0x9E3779B97F4A7C15)) >> 63;
	sc->window = ((seed * UINT64_C(0xBF58476D1CE4E5B9)) >> 62) == 0;
	for (size_t i = 0; i < _OP_MAX; i++)
		total += op_weights[i];
	sc->steps = calloc(n_steps ? n_steps : 1, sizeof(step));
	assert_non_null(sc->steps);
	sc->n_steps = n_steps;
	for (size_t i = 0; i < n_steps; i++) {
		uint32_t w = draw(&s, total);
		uint8_t op = 0;
		while (w >= op_weights[op])
			w -= op_weights[op++];
		step *st = &sc->steps[i];
		st->op = op;
		st->coll = (uint8_t) draw(&s, 2);
		st->prop = (uint8_t) draw(&s, 3);
		st->pick = (uint32_t) next_random(&s);
		switch (op) {
		case OP_SYNC:
			st->variant = (uint8_t) (draw(&s, 10) == 0 ? 1 : draw(&s, 10) == 0 ? 2 : 0);
			break;
		case OP_LOC_AWAY:
		case OP_EXCLUDE:
		case OP_PLACE:
			st->variant = (uint8_t) draw(&s, 2);
			break;
		case OP_SRV_CREATE:
		case OP_LOC_CREATE:
			st->variant = draw(&s, 4) == 0;
			break;
		case OP_SRV_EDIT:
			st->variant = draw(&s, 5) == 0;
			break;
		case OP_LOC_EDIT:
			st->variant = (uint8_t) (draw(&s, 5) == 0 ? 1 : draw(&s, 4) == 0 ? 2 : 0);
			break;
		case OP_FAULT:
			st->variant = (uint8_t) draw(&s, ELEMENTSOF(faults));
			break;
		}
	}
}

/* The steps of KSYNC_ENGINE_REPLAY ("OP_SYNC 0 1 0 42, OP_LOC_EDIT 1 2 0 7, ...", as
 * print_scenario() writes them) into sc, in place of those drawn from its seed. */
static void parse_replay(const char *text, scenario *sc)
{
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL;
	size_t n = 0;

	free(sc->steps);
	sc->steps = calloc(strlen(text) / 8 + 1, sizeof(step));
	assert_non_null(sc->steps);
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char name[32];
		unsigned coll, prop, variant;
		uint32_t pick;
		if (sscanf(tok, " %31[A-Z_] %u %u %u %" SCNu32, name, &coll, &prop, &variant,
			   &pick) != 5)
			continue;
		for (uint8_t op = 0; op < _OP_MAX; op++)
			if (strcmp(op_names[op], name) == 0)
				sc->steps[n++] = (step) {
					.op = op, .coll = (uint8_t) coll, .prop = (uint8_t) prop,
					.variant = (uint8_t) variant, .pick = pick,
				};
	}
	sc->n_steps = n;
}

static void print_scenario(const scenario *sc, const step *steps, size_t n)
{
	static const char *const missing[] = { "404", "omit", "fail" };
	static const char *const clash[] = { "allow", "409", "207" };
	static const char *const rewrite[] = { "none", "sort", "stamp" };
	static const char *const hrefs[] = { "path", "absolute", "encoded" };

	fprintf(stderr, "  server: missing=%s uid_clash=%s rewrite=%s hrefs=%s token_refused=%ld "
		"if_match_404=%d shuffle=%" PRIu64 " sync=%d/%d page=%u/%u items=%u/%u "
		"local=%u/%u shared=%u conflict=%s spare=%d window=%d\n",
		missing[sc->b.missing], clash[sc->b.uid_clash], rewrite[sc->b.rewrite],
		hrefs[sc->b.hrefs], sc->b.token_refused, sc->b.missing_if_match_404,
		sc->b.shuffle_seed, sc->sync[0], sc->sync[1], sc->page[0], sc->page[1],
		sc->server_items[0], sc->server_items[1], sc->local_items[0], sc->local_items[1],
		sc->shared_uids, sc->conflict == KS_CONFLICT_MODE_LOCAL_WINS ? "local" : "server",
		sc->spare, sc->window);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "  { %s, %u, %u, %u, %" PRIu32 " },\n", op_names[steps[i].op],
			steps[i].coll, steps[i].prop, steps[i].variant, steps[i].pick);
	fprintf(stderr, "  (KSYNC_ENGINE_SEED=%" PRIu64 " KSYNC_ENGINE_REPLAY='", sc->seed);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%s%s %u %u %u %" PRIu32, i ? ", " : "", op_names[steps[i].op],
			steps[i].coll, steps[i].prop, steps[i].variant, steps[i].pick);
	fprintf(stderr, "')\n");
}

/* A shorter sequence of steps that fails the same way: chunks of steps are left out while
 * the failure stays (at most max_runs scenarios run). */
static step *shrink(const scenario *sc, int kind, size_t *n, unsigned max_runs)
{
	step *cur = malloc((*n ? *n : 1) * sizeof(step));
	unsigned runs = 0;

	assert_non_null(cur);
	memcpy(cur, sc->steps, *n * sizeof(step));
	for (size_t chunk = *n / 2 ? *n / 2 : 1; chunk >= 1 && runs < max_runs;) {
		bool progress = false;
		for (size_t at = 0; at < *n && runs < max_runs;) {
			size_t len = KS_MIN(chunk, *n - at);
			step *cand = malloc((*n - len ? *n - len : 1) * sizeof(step));
			assert_non_null(cand);
			memcpy(cand, cur, at * sizeof(step));
			memcpy(cand + at, cur + at + len, (*n - at - len) * sizeof(step));
			runs++;
			if (run_steps(sc, cand, *n - len, NULL, NULL, NULL) == kind) {
				free(cur);
				cur = cand;
				*n -= len;
				progress = true;
			} else {
				free(cand);
				at += len;
			}
		}
		if (!progress)
			chunk /= 2;
	}
	return cur;
}

static volatile uint64_t current_seed;
static volatile int current_running;

static void report_crash(void)
{
	if (current_running)
		fprintf(stderr, "\nthe randomized runner died in the scenario of seed %" PRIu64
			"; replay it with KSYNC_ENGINE_SEED=%" PRIu64 " KSYNC_ENGINE_RUNS=1\n",
			current_seed, current_seed);
}

static void on_crash(int sig)
{
	report_crash();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Set by ASan and UBSan when they end the process; absent otherwise. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	char *end;

	if (!s || !*s)
		return dflt;
	uint64_t v = strtoull(s, &end, 0);
	if (*end)
		FAIL("%s=%s is not a number", name, s);
	return v;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* ---- time windows ----------------------------------------------------------------------- */

/* An event of an hour starting days from now (negative: in the past), with extra lines. */
static char *dated_event(const char *uid, const char *summary, int days, const char *extra)
{
	time_t t = time(NULL) + (time_t) days * 86400;
	struct tm tm;
	char when[32], end[32], *s = NULL;

	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	t += 3600;
	gmtime_r(&t, &tm);
	strftime(end, sizeof(end), "%Y%m%dT%H%M%SZ", &tm);
	assert_true(asprintf(&s, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
			     "PRODID:-//ksync//engine test//EN\r\nBEGIN:VEVENT\r\nUID:%s\r\n"
			     "DTSTAMP:20240101T000000Z\r\nDTSTART:%s\r\nDTEND:%s\r\n"
			     "SUMMARY:%s\r\n%sEND:VEVENT\r\nEND:VCALENDAR\r\n", uid, when, end,
			     summary, extra ? extra : "") > 0);
	return s;
}

static bool file_exists(const char *dir, const char *name)
{
	_cleanup_free_ char *p = path_of(dir, name);

	return access(p, F_OK) == 0;
}

static void assert_logged(env *v, const char *what)
{
	if (!v->log.data || !strstr(v->log.data, what))
		FAIL("the report does not say '%s':\n%s", what, v->log.data ? v->log.data : "");
}

/* Old, current, future and recurring events, a task and a card on the server. */
static void seed_window(env *v)
{
	_cleanup_free_ char *old = dated_event("old", "Old", -100, NULL);
	_cleanup_free_ char *now = dated_event("now", "Now", -2, NULL);
	_cleanup_free_ char *later = dated_event("later", "Later", 40, NULL);
	_cleanup_free_ char *weekly = dated_event("weekly", "Weekly", -400, "RRULE:FREQ=WEEKLY\r\n");
	_cleanup_free_ char *ended = dated_event("ended", "Ended", -400,
						 "RRULE:FREQ=WEEKLY;COUNT=4\r\n");
	_cleanup_free_ char *c1 = card("c1", "Card 1", NULL);
	const char *task = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
			   "BEGIN:VTODO\r\nUID:task\r\nDTSTAMP:20200101T000000Z\r\n"
			   "DTSTART:20200101T000000Z\r\nDUE:20200102T000000Z\r\nSUMMARY:Task\r\n"
			   "END:VTODO\r\nEND:VCALENDAR\r\n";

	server_put(v, v->cal, "old.ics", old);
	server_put(v, v->cal, "now.ics", now);
	server_put(v, v->cal, "later.ics", later);
	server_put(v, v->cal, "weekly.ics", weekly);
	server_put(v, v->cal, "ended.ics", ended);
	server_put(v, v->cal, "task.ics", task);
	server_put(v, v->book, "c1.vcf", c1);
}

static int64_t cal_id(env *v);

/* Events outside the window get no file, and are not fetched again while unchanged; tasks,
 * cards and recurring events with an instance inside are kept. */
static void test_window_first_sync(void **state)
{
	static const struct {
		bool sync;
		bool query;	/* the server answers calendar-queries */
	} cases[] = { { true, true }, { false, true }, { true, false }, { false, false } };

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		env v;

		env_init(&v);
		assert_int_equal(mem_collection_set(v.m, v.cal, cases[i].sync, true, false, 0, 0), 0);
		seed_window(&v);
		v.acc.past_days = 30;
		_cleanup_free_ char *h_old = href_in(v.cal, "old.ics");
		_cleanup_free_ char *h_ended = href_in(v.cal, "ended.ics");
		mem_fault f = { .kind = MEM_REQ_MULTIGET, .href = h_old, .count = 1, .status = 500 };
		if (cases[i].query) {
			/* The first listing asks which single events are outside: they are
			 * never fetched (a multiget naming one would fail). A recurring one
			 * (ended) is fetched and judged here. */
			assert_int_equal(mem_add_fault(v.m, &f), 0);
		} else {
			/* A server that cannot answer: every event is fetched, and sorted. */
			mem_fault q = { .kind = MEM_REQ_QUERY, .count = 1, .status = 400 };
			assert_int_equal(mem_add_fault(v.m, &q), 0);
		}
		mem_reset_counters(v.m);
		sync_ok(&v);
		assert_int_equal(mem_pending_faults(v.m), cases[i].query ? 1 : 0);
		assert_int_equal(mem_requests(v.m, MEM_REQ_QUERY), cases[i].query ? 2 : 1);
		mem_clear_faults(v.m);
		assert_false(file_exists(v.cal_dir, "old.ics"));
		assert_false(file_exists(v.cal_dir, "ended.ics"));
		assert_same(&v, v.cal_dir, "now.ics", v.cal, "now.ics");
		assert_same(&v, v.cal_dir, "later.ics", v.cal, "later.ics");
		assert_same(&v, v.cal_dir, "weekly.ics", v.cal, "weekly.ics");
		assert_same(&v, v.cal_dir, "task.ics", v.cal, "task.ics");
		assert_same(&v, v.book_dir, "c1.vcf", v.book, "c1.vcf");
		assert_int_equal(v.added, 5);
		sync_quiet(&v);

		/* A change elsewhere lists the collection again: the events left out are not
		 * fetched again (a multiget naming one would fail). */
		_cleanup_free_ char *now2 = dated_event("now", "Now again", -1, NULL);
		server_put(&v, v.cal, "now.ics", now2);
		f.href = h_old;
		assert_int_equal(mem_add_fault(v.m, &f), 0);
		f.href = h_ended;
		assert_int_equal(mem_add_fault(v.m, &f), 0);
		sync_ok(&v);
		assert_int_equal(mem_pending_faults(v.m), 2);
		mem_clear_faults(v.m);
		assert_int_equal(v.updated, 1);
		assert_same(&v, v.cal_dir, "now.ics", v.cal, "now.ics");
		assert_false(file_exists(v.cal_dir, "old.ics"));

		/* An event moved into the window on the server comes in. */
		_cleanup_free_ char *old2 = dated_event("old", "Old, moved", -3, NULL);
		server_put(&v, v.cal, "old.ics", old2);
		sync_ok(&v);
		assert_same(&v, v.cal_dir, "old.ics", v.cal, "old.ics");
		/* A new event outside, alone in its batch: recorded, and not fetched again
		 * when the collection is listed again. */
		_cleanup_free_ char *old3 = dated_event("old3", "Old 3", -200, NULL);
		server_put(&v, v.cal, "old3.ics", old3);
		sync_ok(&v);
		assert_false(file_exists(v.cal_dir, "old3.ics"));
		_cleanup_free_ char *h_old3 = href_in(v.cal, "old3.ics");
		assert_int_equal(ks_cache_get_outside(v.e->cache, cal_id(&v), h_old3, NULL), 0);
		_cleanup_free_ char *now3 = dated_event("now", "Now 3", -1, NULL);
		server_put(&v, v.cal, "now.ics", now3);
		f.href = h_old3;
		assert_int_equal(mem_add_fault(v.m, &f), 0);
		sync_ok(&v);
		assert_int_equal(mem_pending_faults(v.m), 1);
		mem_clear_faults(v.m);
		/* And one deleted there while outside is forgotten without a word. */
		assert_int_equal(mem_delete(v.m, h_ended), 0);
		sync_ok(&v);
		assert_int_equal(v.deleted, 0);
		sync_quiet(&v);
		env_done(&v);
	}
}

/* Events that leave the window lose their file only when it is as ksync wrote it: nothing is
 * deleted on the server, an edited file is kept and sent, and a window that grows brings the
 * events back. */
static void test_window_leaving(void **state)
{
	env v;

	env_init(&v);
	_cleanup_free_ char *a = dated_event("a", "A", -2, NULL);
	_cleanup_free_ char *b = dated_event("b", "B", -20, NULL);
	_cleanup_free_ char *c = dated_event("c", "C", -20, NULL);
	_cleanup_free_ char *d = dated_event("d", "D", -25, NULL);
	server_put(&v, v.cal, "a.ics", a);
	server_put(&v, v.cal, "b.ics", b);
	server_put(&v, v.cal, "c.ics", c);
	server_put(&v, v.cal, "d.ics", d);
	v.acc.past_days = 30;
	sync_ok(&v);
	assert_int_equal(count_files(v.cal_dir), 4);
	_cleanup_free_ char *b0 = strdup(server_item(&v, v.cal, "b.ics")->data);
	_cleanup_free_ char *b_etag = strdup(server_item(&v, v.cal, "b.ics")->etag);

	/* c is edited here; d's file is deleted here. Then the window shrinks past b, c, d. */
	_cleanup_free_ char *c2 = prop_set(c, "SUMMARY", "C edited here");
	write_file(v.cal_dir, "c.ics", c2);
	remove_file(v.cal_dir, "d.ics");
	v.acc.past_days = 5;
	mem_reset_counters(v.m);
	sync_ok(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
	assert_int_equal(v.deleted, 0);
	assert_int_equal(v.removed, 0);
	assert_false(file_exists(v.cal_dir, "b.ics"));
	assert_true(file_exists(v.cal_dir, "a.ics"));
	/* Kept on the server, untouched. */
	assert_non_null(server_item(&v, v.cal, "b.ics"));
	assert_string_equal(server_item(&v, v.cal, "b.ics")->data, b0);
	assert_string_equal(server_item(&v, v.cal, "b.ics")->etag, b_etag);
	assert_non_null(server_item(&v, v.cal, "d.ics"));
	/* The edit went up, and its file stays. */
	assert_int_equal(v.uploaded, 1);
	assert_same(&v, v.cal_dir, "c.ics", v.cal, "c.ics");
	assert_non_null(strstr(server_item(&v, v.cal, "c.ics")->data, "C edited here"));
	assert_logged(&v, "1 event(s) outside the window removed locally (kept on the server)");
	assert_logged(&v, "not deleted on the server");
	sync_quiet(&v);

	/* A new event in the past, written here, goes up. */
	_cleanup_free_ char *e = dated_event("e", "E", -50, NULL);
	write_file(v.cal_dir, "e.ics", e);
	sync_ok(&v);
	assert_int_equal(v.uploaded, 1);
	assert_non_null(server_by_uid(&v, v.cal, "e"));
	/* Its file, kept until the window is looked at again, is deleted here: that deletion
	 * is not sent either. */
	remove_file(v.cal_dir, "e.ics");
	mem_reset_counters(v.m);
	sync_ok(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
	assert_non_null(server_by_uid(&v, v.cal, "e"));
	sync_quiet(&v);

	/* The window grows: the events come back, as the server has them. */
	v.acc.past_days = 60;
	sync_ok(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
	assert_same(&v, v.cal_dir, "b.ics", v.cal, "b.ics");
	assert_same(&v, v.cal_dir, "c.ics", v.cal, "c.ics");
	assert_same(&v, v.cal_dir, "d.ics", v.cal, "d.ics");
	_cleanup_free_ char *e_file = file_by_uid(v.cal_dir, "e");
	assert_non_null(e_file);
	sync_quiet(&v);

	/* No window at all: nothing is left out. */
	v.acc.past_days = 5;
	sync_ok(&v);
	assert_false(file_exists(v.cal_dir, "b.ics"));
	v.acc.past_days = 0;
	sync_ok(&v);
	assert_same(&v, v.cal_dir, "b.ics", v.cal, "b.ics");
	assert_int_equal(count_files(v.cal_dir), 5);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
	sync_quiet(&v);
	env_done(&v);
}

/* As days pass, events leave the window (their files go, when as ksync wrote them) and,
 * with future_days, enter it (fetched on the first sync of the day). */
static void test_window_days_pass(void **state)
{
	env v;

	env_init(&v);
	_cleanup_free_ char *soon = dated_event("soon", "Soon", -3, NULL);
	_cleanup_free_ char *later = dated_event("later", "Later", 14, NULL);
	_cleanup_free_ char *far = dated_event("far", "Far", 400, NULL);
	server_put(&v, v.cal, "soon.ics", soon);
	server_put(&v, v.cal, "later.ics", later);
	server_put(&v, v.cal, "far.ics", far);
	v.acc.past_days = 5;
	v.acc.future_days = 10;
	sync_ok(&v);
	assert_true(file_exists(v.cal_dir, "soon.ics"));
	assert_false(file_exists(v.cal_dir, "later.ics"));
	assert_false(file_exists(v.cal_dir, "far.ics"));
	sync_quiet(&v);

	/* Six days on: soon has left, later has come in. far, which only the server had
	 * judged, is fetched once and judged here. */
	clock_shift = 6 * 86400;
	mem_reset_counters(v.m);
	sync_ok(&v);
	assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
	assert_false(file_exists(v.cal_dir, "soon.ics"));
	assert_same(&v, v.cal_dir, "later.ics", v.cal, "later.ics");
	assert_false(file_exists(v.cal_dir, "far.ics"));
	assert_int_equal(mem_count(v.m, v.cal), 3);
	assert_logged(&v, "1 event(s) outside the window removed locally (kept on the server)");
	sync_quiet(&v);

	/* A day later: far knows its time now, and is not fetched again. */
	clock_shift = 7 * 86400;
	_cleanup_free_ char *h_far = href_in(v.cal, "far.ics");
	mem_fault f = { .kind = MEM_REQ_MULTIGET, .href = h_far, .count = 1, .status = 500 };
	assert_int_equal(mem_add_fault(v.m, &f), 0);
	sync_ok(&v);
	assert_int_equal(mem_pending_faults(v.m), 1);
	mem_clear_faults(v.m);
	clock_shift = 0;
	env_done(&v);
}

/* sync --dry-run does not count the events the window leaves out as to fetch. */
static void test_window_preview(void **state)
{
	env v;

	env_init(&v);
	assert_int_equal(mem_collection_set(v.m, v.cal, false, true, false, 0, 0), 0);
	seed_window(&v);
	v.acc.past_days = 30;
	sync_ok(&v);
	_cleanup_free_ char *now2 = dated_event("now", "Now again", -1, NULL);
	server_put(&v, v.cal, "now.ics", now2);
	ks_sync_opts o = { .remote = mem_remote_store(v.m) };
	_cleanup_free_ char *json = NULL, *err = NULL;
	assert_int_equal(ks_sync_preview(v.e, &v.acc, &o, &json, &err), 0);
	ks_json *j = NULL;
	assert_int_equal(ks_json_parse(json, strlen(json), &j, NULL), 0);
	const ks_json *cols = ks_json_get(j, "collections");
	bool seen = false;
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		if (strcmp(ks_json_get_string(c, "path"), "calendars/events") != 0)
			continue;
		seen = true;
		if (ks_json_get_int(c, "fetch_new", -1) != 0 ||
		    ks_json_get_int(c, "fetch_changed", -1) != 1)
			FAIL("the preview counts events outside the window: %s", json);
	}
	assert_true(seen);
	ks_json_free(j);
	env_done(&v);
}

/* The id of the calendar's collection row. */
static int64_t cal_id(env *v)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	int64_t id = 0;

	assert_int_equal(ks_cache_list_collections(v->e->cache, ACCOUNT, &cols, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(cols[i].href, v->cal) == 0)
			id = cols[i].id;
	ks_collection_free_array(cols, n);
	assert_true(id > 0);
	return id;
}

/* A crash after an event's row became an outside row and before its file was removed: the
 * file, as ksync wrote it, is removed by the next run and never uploaded; edited, it is the
 * user's and goes up. */
static void test_window_crash_before_unlink(void **state)
{
	static const bool edited[] = { false, true };

	for (size_t i = 0; i < ELEMENTSOF(edited); i++) {
		env v;

		env_init(&v);
		_cleanup_free_ char *b = dated_event("b", "B", -20, NULL);
		server_put(&v, v.cal, "b.ics", b);
		v.acc.past_days = 30;
		sync_ok(&v);
		v.acc.past_days = 5;
		sync_ok(&v);
		assert_false(file_exists(v.cal_dir, "b.ics"));
		/* The state the crash left: the outside row still names the file, which is
		 * there. */
		const mem_item *it = server_item(&v, v.cal, "b.ics");
		char hash[65];
		ks_sha256_hex(it->data, it->len, hash);
		_cleanup_free_ char *h = href_in(v.cal, "b.ics");
		assert_int_equal(ks_cache_put_outside(v.e->cache, cal_id(&v), h, it->etag, "b.ics",
						      hash, 0), 0);
		_cleanup_free_ char *b2 = prop_set(b, "SUMMARY", "B edited");
		write_file(v.cal_dir, "b.ics", edited[i] ? b2 : it->data);
		mem_reset_counters(v.m);
		sync_ok(&v);
		assert_int_equal(mem_requests(v.m, MEM_REQ_DELETE), 0);
		if (!edited[i]) {
			assert_int_equal(mem_requests(v.m, MEM_REQ_PUT), 0);
			assert_false(file_exists(v.cal_dir, "b.ics"));
			assert_string_equal(server_item(&v, v.cal, "b.ics")->data, b);
		} else {
			/* Sent as a new item, which meets the server's under the same name: with
			 * no base to merge on, the server's version wins and the edit is kept as
			 * a conflict copy. Nothing is lost, nothing doubled. */
			_cleanup_free_ char *all = describe(&v);
			assert_non_null(strstr(all, "SUMMARY:B edited"));
			assert_int_equal(count_conflict_copies(&v, "calendars/events"), 1);
			assert_int_equal(mem_count(v.m, v.cal), 1);
			assert_same(&v, v.cal_dir, "b.ics", v.cal, "b.ics");
		}
		sync_quiet(&v);
		env_done(&v);
	}
}

static void test_random(void **state)
{
	uint64_t seed = env_u64("KSYNC_ENGINE_SEED", 1);
	uint64_t runs = env_u64("KSYNC_ENGINE_RUNS", 150);
	size_t n_steps = (size_t) env_u64("KSYNC_ENGINE_STEPS", 30);
	unsigned shrink_runs = (unsigned) env_u64("KSYNC_ENGINE_SHRINK", 400);
	uint64_t max_failures = env_u64("KSYNC_ENGINE_MAX_FAILURES", 3);
	const char *replay = getenv("KSYNC_ENGINE_REPLAY");
	unsigned failures = 0;
	stats st = {};
	double t0 = now_s();

	signal(SIGSEGV, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGABRT, on_crash);
	signal(SIGFPE, on_crash);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(report_crash);
	skipped_sleep_ns = 0;
	for (uint64_t i = 0; i < runs && failures < max_failures; i++) {
		scenario sc;
		_cleanup_free_ char *why = NULL;
		size_t at = 0;
		make_scenario(seed + i, n_steps, &sc);
		if (replay)
			parse_replay(replay, &sc);
		current_seed = sc.seed;
		current_running = 1;
		int kind = run_steps(&sc, sc.steps, sc.n_steps, &why, &at, &st);
		current_running = 0;
		if (kind) {
			failures++;
			/* The state goes with the shrunk sequence, when there is one. */
			char *dump = shrink_runs ? strstr(why, "\nstate:\n") : NULL;
			if (dump)
				*dump = 0;
			fprintf(stderr, "\nscenario of seed %" PRIu64 " failed at step %zu of %zu: "
				"%s\n%s\nreplay: KSYNC_ENGINE_SEED=%" PRIu64 " KSYNC_ENGINE_RUNS=1 "
				"KSYNC_ENGINE_STEPS=%zu\n", sc.seed, at, sc.n_steps,
				failure_names[kind], why, sc.seed, n_steps);
			size_t n = KS_MIN(at + 1, sc.n_steps);
			print_scenario(&sc, sc.steps, n);
			if (shrink_runs) {
				_cleanup_free_ step *small = shrink(&sc, kind, &n, shrink_runs);
				_cleanup_free_ char *why2 = NULL;
				run_steps(&sc, small, n, &why2, NULL, NULL);
				fprintf(stderr, "shrunk to %zu steps that fail the same way:\n%s\n",
					n, why2 ? why2 : "");
				print_scenario(&sc, small, n);
			}
		}
		free(sc.steps);
	}
	double dt = now_s() - t0;
	fprintf(stderr, "randomized runner: %" PRIu64 " scenarios from seed %" PRIu64 ", %" PRIu64
		" steps, %" PRIu64 " syncs in %.2f s: %.0f scenarios/s, %.0f steps/s, %.0f "
		"syncs/s; %" PRIu64 " conflicts kept, %" PRIu64 " refusals, %" PRIu64 " guard "
		"stops, %" PRIu64 " files left in another property order, %" PRIu64 " home "
		"listings, %" PRIu64 " collections placed anew; %.1f s of waits skipped\n",
		st.scenarios, seed, st.steps, st.syncs, dt, (double) st.scenarios / dt,
		(double) st.steps / dt, (double) st.syncs / dt, st.conflicts, st.refusals,
		st.guards, st.order_only, st.listings, st.places,
		(double) skipped_sleep_ns / 1e9);
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	signal(SIGABRT, SIG_DFL);
	signal(SIGFPE, SIG_DFL);
	if (failures)
		FAIL("%u scenario(s) failed", failures);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_first_sync, env_teardown),
		cmocka_unit_test_teardown(test_listing_each_run, env_teardown),
		cmocka_unit_test_teardown(test_listing_each_run_not_for_large_collections,
					  env_teardown),
		cmocka_unit_test_teardown(test_include_exclude, env_teardown),
		cmocka_unit_test_teardown(test_own_dirs, env_teardown),
		cmocka_unit_test_teardown(test_adopt_tree, env_teardown),
		cmocka_unit_test_teardown(test_server_changes, env_teardown),
		cmocka_unit_test_teardown(test_local_changes, env_teardown),
		cmocka_unit_test_teardown(test_both_edit, env_teardown),
		cmocka_unit_test_teardown(test_server_deletes_local_edit, env_teardown),
		cmocka_unit_test_teardown(test_local_delete_server_change, env_teardown),
		cmocka_unit_test_teardown(test_renamed_file, env_teardown),
		cmocka_unit_test_teardown(test_renamed_file_and_server_deletion_or_move,
					  env_teardown),
		cmocka_unit_test_teardown(test_uid_clash, env_teardown),
		cmocka_unit_test_teardown(test_multiget_leaves_out, env_teardown),
		cmocka_unit_test_teardown(test_put_refused, env_teardown),
		cmocka_unit_test_teardown(test_token_refused, env_teardown),
		cmocka_unit_test_teardown(test_truncated_listing, env_teardown),
		cmocka_unit_test_teardown(test_mass_deletion_guard, env_teardown),
		cmocka_unit_test_teardown(test_server_rewrites, env_teardown),
		cmocka_unit_test_teardown(test_answer_lost, env_teardown),
		cmocka_unit_test_teardown(test_answer_lost_then_junk, env_teardown),
		cmocka_unit_test_teardown(test_refused_deletion_counted_once, env_teardown),
		cmocka_unit_test_teardown(test_collection_removed_with_a_new_file, env_teardown),
		cmocka_unit_test_teardown(test_href_forms, env_teardown),
		cmocka_unit_test_teardown(test_credentials_refused, env_teardown),
		cmocka_unit_test_teardown(test_deferred_change_reverted, env_teardown),
		cmocka_unit_test_teardown(test_edit_in_place, env_teardown),
		cmocka_unit_test_teardown(test_window_first_sync, env_teardown),
		cmocka_unit_test_teardown(test_window_leaving, env_teardown),
		cmocka_unit_test_teardown(test_window_crash_before_unlink, env_teardown),
		cmocka_unit_test_teardown(test_window_days_pass, env_teardown),
		cmocka_unit_test_teardown(test_window_preview, env_teardown),
		cmocka_unit_test_teardown(test_random, env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
