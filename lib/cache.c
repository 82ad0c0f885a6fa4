/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_p.h"
#include "log_p.h"
#include "xml_p.h"
#include "macro.h"

enum {
	ST_GET_ITEM,
	ST_PUT_ITEM,
	ST_DEL_ITEM,
	ST_NAME_TAKEN,
	_ST_MAX,
};

struct ks_cache {
	sqlite3 *db;
	sqlite3_stmt *st[_ST_MAX];
	int in_tx;
	unsigned unsettled;	/* stats stored untrusted since ks_cache_take_unsettled() */
};

static const char *const stmt_sql[_ST_MAX] = {
	[ST_GET_ITEM] = "SELECT id, href, etag, uid, filename, hash, mtime_ns, ino, size "
			"FROM item WHERE collection = ?1 AND href = ?2",
	[ST_PUT_ITEM] = "INSERT INTO item (collection, href, etag, uid, filename, data, kind, "
			"summary, email, dtstart, dtend, has_rrule, due, status, priority, "
			"hash, mtime_ns, ino, size) "
			"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
			"?16, ?17, ?18, ?19) "
			"ON CONFLICT (collection, href) DO UPDATE SET etag = excluded.etag, "
			"uid = excluded.uid, filename = excluded.filename, data = excluded.data, "
			"kind = excluded.kind, summary = excluded.summary, email = excluded.email, "
			"dtstart = excluded.dtstart, dtend = excluded.dtend, "
			"has_rrule = excluded.has_rrule, due = excluded.due, "
			"status = excluded.status, priority = excluded.priority, "
			"hash = excluded.hash, mtime_ns = excluded.mtime_ns, ino = excluded.ino, "
			"size = excluded.size",
	[ST_DEL_ITEM] = "DELETE FROM item WHERE collection = ?1 AND href = ?2",
	[ST_NAME_TAKEN] = "SELECT 1 FROM item WHERE collection = ?1 AND filename = ?2 "
			  "AND href != ?3",
};

static const char schema_v1[] =
	"CREATE TABLE account ("
	"  name TEXT PRIMARY KEY,"
	"  principal TEXT,"
	"  calendar_home TEXT,"
	"  addressbook_home TEXT,"
	"  discovered_at INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE collection ("
	"  id INTEGER PRIMARY KEY,"
	"  account TEXT NOT NULL,"
	"  href TEXT NOT NULL,"
	"  kind TEXT NOT NULL CHECK (kind IN ('addressbook', 'calendar')),"
	"  name TEXT NOT NULL,"
	"  displayname TEXT,"
	"  color TEXT,"
	"  description TEXT,"
	"  components TEXT NOT NULL DEFAULT '',"
	"  readonly INTEGER NOT NULL DEFAULT 0,"
	"  supports_sync INTEGER NOT NULL DEFAULT 1,"
	"  enabled INTEGER NOT NULL DEFAULT 1,"
	"  sync_token TEXT,"
	"  ctag TEXT,"
	"  UNIQUE (account, href),"
	"  UNIQUE (account, kind, name)"
	");"
	"CREATE TABLE item ("
	"  id INTEGER PRIMARY KEY,"
	"  collection INTEGER NOT NULL REFERENCES collection(id) ON DELETE CASCADE,"
	"  href TEXT NOT NULL,"
	"  etag TEXT,"
	"  uid TEXT,"
	"  filename TEXT NOT NULL,"
	"  data BLOB NOT NULL,"
	"  kind TEXT,"
	"  summary TEXT,"
	"  email TEXT,"
	"  dtstart TEXT,"
	"  dtend TEXT,"
	"  has_rrule INTEGER NOT NULL DEFAULT 0,"
	"  due TEXT,"
	"  status TEXT,"
	"  priority INTEGER NOT NULL DEFAULT 0,"
	"  hash TEXT,"
	"  mtime_ns INTEGER NOT NULL DEFAULT 0,"
	"  ino INTEGER NOT NULL DEFAULT 0,"
	"  size INTEGER NOT NULL DEFAULT 0,"
	"  UNIQUE (collection, href),"
	"  UNIQUE (collection, filename)"
	");"
	"CREATE INDEX item_uid ON item (collection, uid);";

/* Version 2: when the home sets were last listed, write-ahead intents of uploads, and the
 * record of conflicts and the copies kept of their losing sides. */
static const char schema_v2[] =
	"ALTER TABLE account ADD COLUMN listed_at INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE intent ("
	"  id INTEGER PRIMARY KEY,"
	"  collection INTEGER NOT NULL REFERENCES collection(id) ON DELETE CASCADE,"
	"  href TEXT NOT NULL,"
	"  op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),"
	"  filename TEXT,"
	"  hash TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (collection, href)"
	");"
	"CREATE TABLE conflict ("
	"  id INTEGER PRIMARY KEY,"
	"  account TEXT NOT NULL,"
	"  collection TEXT NOT NULL,"
	"  uid TEXT,"
	"  filename TEXT,"
	"  kept_path TEXT NOT NULL,"
	"  winner TEXT NOT NULL,"
	"  summary TEXT,"
	"  created_at INTEGER NOT NULL"
	");";

/* Version 3: the local scan of every run reads filename and stat of every item; an index
 * holding them answers it without reading the rows (a page read per item otherwise). */
static const char schema_v3[] =
	"CREATE INDEX item_scan ON item (collection, filename, mtime_ns, ino, size);";

/* Version 4: the mass-deletion guard's window (when it started, the items then and the
 * deletions since; NULL before the first deletion), when each collection last completed a
 * sync, whether an address book offers vCard 4.0 (supported-address-data), and the local
 * changes a server refused (so that a file that stays refused is sent again only when it
 * changes, and status can say why it is pending). */
static const char schema_v4[] =
	"ALTER TABLE collection ADD COLUMN guard_at INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE collection ADD COLUMN guard_base INTEGER;"
	"ALTER TABLE collection ADD COLUMN guard_deleted INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE collection ADD COLUMN synced_at INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE collection ADD COLUMN vcard4 INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE refusal ("
	"  id INTEGER PRIMARY KEY,"
	"  collection INTEGER NOT NULL REFERENCES collection(id) ON DELETE CASCADE,"
	"  filename TEXT NOT NULL,"
	"  href TEXT,"
	"  op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),"
	"  hash TEXT,"
	"  status INTEGER NOT NULL,"
	"  reason TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (collection, filename)"
	");";

/* Version 5: whether the home listings carry every collection's token, which lets one
 * listing per home set replace a request per collection on a run without changes. */
static const char schema_v5[] =
	"ALTER TABLE account ADD COLUMN home_tokens INTEGER NOT NULL DEFAULT 0;";

/* Version 6: whether include = or exclude = of ksync.conf set the collection's state, which
 * goes back to collections = once no pattern names it. */
static const char schema_v6[] =
	"ALTER TABLE collection ADD COLUMN ruled INTEGER NOT NULL DEFAULT 0;";

/* Version 7: the directory of a collection that ksync.conf places outside the data directory
 * (calendars_path, contacts_path, path), NULL for one in its default place. */
static const char schema_v7[] =
	"ALTER TABLE collection ADD COLUMN dir TEXT;";

/* Version 8: time windows of events. The calendar events a window leaves out, with the ETag
 * they had when found outside (so that they are not fetched again until they change) and the
 * earliest time one could enter the window; filename and hash name a file being removed
 * because its event left the window, until it is gone. And per collection the window the
 * rows were sorted by, and the day they were last looked at. */
static const char schema_v8[] =
	"CREATE TABLE outside ("
	"  id INTEGER PRIMARY KEY,"
	"  collection INTEGER NOT NULL REFERENCES collection(id) ON DELETE CASCADE,"
	"  href TEXT NOT NULL,"
	"  etag TEXT,"
	"  filename TEXT,"
	"  hash TEXT,"
	"  next_at INTEGER NOT NULL DEFAULT 0,"
	"  UNIQUE (collection, href)"
	");"
	"CREATE INDEX outside_file ON outside (collection, filename);"
	"CREATE TABLE time_window ("
	"  collection INTEGER PRIMARY KEY REFERENCES collection(id) ON DELETE CASCADE,"
	"  past_days INTEGER NOT NULL,"
	"  future_days INTEGER NOT NULL,"
	"  checked_day INTEGER NOT NULL DEFAULT 0"
	");";

static int sqlite_to_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EUCLEAN;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_READONLY:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	default:
		return -EIO;
	}
}

static int exec(ks_cache *c, const char *sql)
{
	int r = sqlite_to_errno(sqlite3_exec(c->db, sql, NULL, NULL, NULL));

	/* SQLite's I/O error says little; the system's errno (a full disk, a read-only
	 * directory) says what to do. */
	if (r == -EIO && sqlite3_system_errno(c->db) > 0)
		r = -sqlite3_system_errno(c->db);
	return r;
}

static int user_version(ks_cache *c, int *ret)
{
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &s, NULL);

	if (rc != SQLITE_OK)
		return sqlite_to_errno(rc);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : sqlite_to_errno(rc);
}

int ks_cache_check(ks_cache *c)
{
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA quick_check(1)", -1, &s, NULL);

	if (rc != SQLITE_OK)
		return sqlite_to_errno(rc);
	rc = sqlite3_step(s);
	const unsigned char *t = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
	bool ok = t && strcmp((const char *) t, "ok") == 0;
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sqlite_to_errno(rc);
	return ok ? 0 : -EUCLEAN;
}

static int migrate(ks_cache *c)
{
	int v = 0, r;

	r = user_version(c, &v);
	if (r < 0)
		return r;
	if (v > KS_CACHE_SCHEMA_VERSION)
		return -EPROTO;
	if (v == KS_CACHE_SCHEMA_VERSION)
		return 0;
	r = exec(c, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	/* Another connection (a second sync thread opening a new cache) may have migrated it
	 * while this one waited for the lock: look again under the lock. */
	r = user_version(c, &v);
	if (r < 0 || v >= KS_CACHE_SCHEMA_VERSION) {
		(void) exec(c, r < 0 ? "ROLLBACK" : "COMMIT");
		return r < 0 ? r : v > KS_CACHE_SCHEMA_VERSION ? -EPROTO : 0;
	}
	/* Migrations only go forward, each in the same transaction as the version bump. */
	if (v < 1)
		r = exec(c, schema_v1);
	if (r >= 0 && v < 2)
		r = exec(c, schema_v2);
	if (r >= 0 && v < 3)
		r = exec(c, schema_v3);
	if (r >= 0 && v < 4)
		r = exec(c, schema_v4);
	if (r >= 0 && v < 5)
		r = exec(c, schema_v5);
	if (r >= 0 && v < 6)
		r = exec(c, schema_v6);
	if (r >= 0 && v < 7)
		r = exec(c, schema_v7);
	if (r >= 0 && v < 8)
		r = exec(c, schema_v8);
	if (r >= 0)
		r = exec(c, "PRAGMA user_version = " STRINGIFY(KS_CACHE_SCHEMA_VERSION));
	if (r >= 0)
		r = exec(c, "COMMIT");
	if (r < 0)
		(void) exec(c, "ROLLBACK");
	return r;
}

int ks_cache_open(const char *path, ks_cache **ret)
{
	ks_cache *c = calloc(1, sizeof(*c));
	int rc, r;

	if (!c)
		return -ENOMEM;
	/* SQLite gives its -wal and -shm files the mode of the database file: create it 0600
	 * so that none of them is readable by others, whatever the umask. */
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		free(c);
		return r;
	}
	close(fd);
	rc = sqlite3_open_v2(path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK) {
		r = sqlite_to_errno(rc);
		ks_cache_free(c);
		return r;
	}
	(void) sqlite3_busy_timeout(c->db, 5000);
	r = exec(c, "PRAGMA journal_mode = WAL");
	if (r >= 0)
		r = exec(c, "PRAGMA synchronous = FULL");
	if (r >= 0)
		r = exec(c, "PRAGMA foreign_keys = ON");
	if (r >= 0)
		r = migrate(c);
	for (int i = 0; r >= 0 && i < _ST_MAX; i++) {
		rc = sqlite3_prepare_v3(c->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					&c->st[i], NULL);
		if (rc != SQLITE_OK)
			r = sqlite_to_errno(rc);
	}
	if (r < 0) {
		ks_cache_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

ks_cache *ks_cache_free(ks_cache *c)
{
	if (!c)
		return NULL;
	for (int i = 0; i < _ST_MAX; i++)
		sqlite3_finalize(c->st[i]);
	sqlite3_close(c->db);
	free(c);
	return NULL;
}

int ks_cache_begin(ks_cache *c)
{
	int r = exec(c, "BEGIN IMMEDIATE");
	if (r >= 0)
		c->in_tx = 1;
	return r;
}

int ks_cache_begin_read(ks_cache *c)
{
	return exec(c, "BEGIN DEFERRED");
}

void ks_cache_end_read(ks_cache *c)
{
	(void) exec(c, "COMMIT");
}

int ks_cache_commit(ks_cache *c)
{
	int r = exec(c, "COMMIT");
	if (r >= 0) {
		c->in_tx = 0;
		ks_step("cache commit");
	}
	return r;
}

void ks_cache_rollback(ks_cache *c)
{
	if (c->in_tx)
		(void) exec(c, "ROLLBACK");
	c->in_tx = 0;
}

int64_t ks_cache_total_changes(ks_cache *c)
{
	return sqlite3_total_changes64(c->db);
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? strdup((const char *) t) : NULL;
}

static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
	int rc = v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
	return sqlite_to_errno(rc);
}

/* A file's stat says it is unchanged only if no write can give it the same one: the kernel
 * stamps files from a coarse clock (one tick, 4 ms, on Linux before 6.13), so a stat taken
 * while the clock is still in the tick of the file's mtime may be followed by a write within
 * that tick that leaves mtime, inode and size as they were. Such a stat is stored with mtime
 * 0, which no file has: the next scan reads the file, and ks_local_settle() stores the real
 * stat once the tick is over. */
static int64_t trusted_mtime(ks_cache *c, int64_t mtime_ns)
{
	struct timespec now;

	if (mtime_ns == 0 || clock_gettime(CLOCK_REALTIME_COARSE, &now) < 0)
		return mtime_ns;
	if (mtime_ns < (int64_t) now.tv_sec * 1000000000 + now.tv_nsec)
		return mtime_ns;
	c->unsettled++;
	return 0;
}

unsigned ks_cache_take_unsettled(ks_cache *c)
{
	unsigned n = c->unsettled;

	c->unsettled = 0;
	return n;
}

static int prepare(ks_cache *c, const char *sql, sqlite3_stmt **ret)
{
	return sqlite_to_errno(sqlite3_prepare_v2(c->db, sql, -1, ret, NULL));
}

static int step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_to_errno(rc);
}

void ks_cache_account_done(ks_cache_account *a)
{
	free(a->principal);
	free(a->calendar_home);
	free(a->addressbook_home);
	*a = (ks_cache_account) {};
}

int ks_cache_get_account(ks_cache *c, const char *name, ks_cache_account *ret)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT principal, calendar_home, addressbook_home, discovered_at, "
			   "listed_at, home_tokens "
			   "FROM account WHERE name = ?1", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, name);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ret->principal = col_strdup(s, 0);
		ret->calendar_home = col_strdup(s, 1);
		ret->addressbook_home = col_strdup(s, 2);
		ret->discovered_at = sqlite3_column_int64(s, 3);
		ret->listed_at = sqlite3_column_int64(s, 4);
		ret->home_tokens = sqlite3_column_int(s, 5);
		r = 0;
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_put_account(ks_cache *c, const char *name, const ks_cache_account *a)
{
	sqlite3_stmt *s;
	int r = prepare(c, "INSERT OR REPLACE INTO account (name, principal, calendar_home, "
			   "addressbook_home, discovered_at, listed_at, home_tokens) "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, name);
	(void) bind_text(s, 2, a->principal);
	(void) bind_text(s, 3, a->calendar_home);
	(void) bind_text(s, 4, a->addressbook_home);
	(void) sqlite3_bind_int64(s, 5, a->discovered_at);
	(void) sqlite3_bind_int64(s, 6, a->listed_at);
	(void) sqlite3_bind_int(s, 7, a->home_tokens);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

/* Components are stored as text ("VEVENT,VTODO") so that scripts reading the cache need not
 * know the bit values. */
static void components_to_text(unsigned comps, char out[32])
{
	snprintf(out, 32, "%s%s%s", comps & KS_COMP_VEVENT ? "VEVENT," : "",
		 comps & KS_COMP_VTODO ? "VTODO," : "", comps & KS_COMP_VJOURNAL ? "VJOURNAL," : "");
	size_t n = strlen(out);
	if (n)
		out[n - 1] = 0;
}

static unsigned components_from_text(const char *s)
{
	unsigned c = 0;

	if (!s)
		return 0;
	if (strstr(s, "VEVENT"))
		c |= KS_COMP_VEVENT;
	if (strstr(s, "VTODO"))
		c |= KS_COMP_VTODO;
	if (strstr(s, "VJOURNAL"))
		c |= KS_COMP_VJOURNAL;
	return c;
}

int ks_cache_forget_account(ks_cache *c, const char *name)
{
	static const char *const sql[] = { "DELETE FROM account WHERE name = ?1",
					   "DELETE FROM conflict WHERE account = ?1" };
	int r = 0;

	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(sql); i++) {
		sqlite3_stmt *s;
		r = prepare(c, sql[i], &s);
		if (r < 0)
			break;
		(void) bind_text(s, 1, name);
		r = step_done(s);
		sqlite3_finalize(s);
	}
	return r;
}

/* Grows *a (of element size sz) to hold one more element; returns the new element zeroed. */
static void *grow(void **a, size_t *n, size_t *cap, size_t sz)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		void *na = realloc(*a, ncap * sz);
		if (!na)
			return NULL;
		*a = na;
		*cap = ncap;
	}
	void *e = (char *) *a + (*n)++ * sz;
	memset(e, 0, sz);
	return e;
}

/* Steps a prepared, bound statement to the end and turns each row into an element of size sz
 * with fill(), which returns -ENOMEM when a copy failed. The statement is finalized; on
 * failure the elements made so far are released with free_array() and *ret is untouched. */
static int collect(sqlite3_stmt *s, size_t sz, int (*fill)(sqlite3_stmt *s, void *e),
		   void (*free_array)(void *a, size_t n), void **ret, size_t *ret_n)
{
	void *a = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	for (;;) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sqlite_to_errno(rc);
			break;
		}
		void *e = grow(&a, &n, &cap, sz);
		if (!e) {
			r = -ENOMEM;
			break;
		}
		r = fill(s, e);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	if (r < 0) {
		free_array(a, n);
		return r;
	}
	*ret = a;
	*ret_n = n;
	return 0;
}

const char *ks_collection_kind_to_string(ks_collection_kind k)
{
	return k == KS_COLLECTION_ADDRESSBOOK ? "addressbook" : "calendar";
}

void ks_collection_done(ks_collection *col)
{
	free(col->account);
	free(col->href);
	free(col->name);
	free(col->displayname);
	free(col->color);
	free(col->description);
	free(col->sync_token);
	free(col->ctag);
	free(col->dir);
	*col = (ks_collection) {};
}

void ks_collection_free_array(ks_collection *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++)
		ks_collection_done(&a[i]);
	free(a);
}

int ks_collection_append_array(ks_collection **a, size_t *n, ks_collection *more, size_t n_more)
{
	ks_collection *na = reallocarray(*a, *n + n_more + 1, sizeof(*na));

	if (!na) {
		ks_collection_free_array(more, n_more);
		return -ENOMEM;
	}
	*a = na;
	if (n_more)
		memcpy(na + *n, more, n_more * sizeof(*more));
	*n += n_more;
	free(more);
	return 0;
}

size_t ks_cache_account_homes(const ks_cache_account *acc, const char *homes[static 2])
{
	size_t n = 0;

	if (acc->addressbook_home)
		homes[n++] = acc->addressbook_home;
	if (acc->calendar_home &&
	    !(acc->addressbook_home && strcmp(acc->addressbook_home, acc->calendar_home) == 0))
		homes[n++] = acc->calendar_home;
	return n;
}

static int fill_collection(sqlite3_stmt *s, void *e)
{
	ks_collection *col = e;

	*col = (ks_collection) {
		.id = sqlite3_column_int64(s, 0),
		.account = col_strdup(s, 1),
		.href = col_strdup(s, 2),
		.kind = strcmp((const char *) sqlite3_column_text(s, 3), "addressbook") == 0
				? KS_COLLECTION_ADDRESSBOOK
				: KS_COLLECTION_CALENDAR,
		.name = col_strdup(s, 4),
		.displayname = col_strdup(s, 5),
		.color = col_strdup(s, 6),
		.description = col_strdup(s, 7),
		.components = components_from_text((const char *) sqlite3_column_text(s, 8)),
		.readonly = sqlite3_column_int(s, 9),
		.supports_sync = sqlite3_column_int(s, 10),
		.enabled = sqlite3_column_int(s, 11),
		.sync_token = col_strdup(s, 12),
		.ctag = col_strdup(s, 13),
		.guard_at = sqlite3_column_int64(s, 14),
		.guard_base = sqlite3_column_type(s, 15) == SQLITE_NULL ? -1
								      : sqlite3_column_int64(s, 15),
		.guard_deleted = sqlite3_column_int64(s, 16),
		.vcard4 = sqlite3_column_int(s, 17),
		.synced_at = sqlite3_column_int64(s, 18),
		.ruled = sqlite3_column_int(s, 19),
		.dir = col_strdup(s, 20),
	};
	return col->account && col->href && col->name &&
	       (col->dir || sqlite3_column_type(s, 20) == SQLITE_NULL) ? 0 : -ENOMEM;
}

static void free_collections(void *a, size_t n)
{
	ks_collection_free_array(a, n);
}

int ks_cache_list_collections(ks_cache *c, const char *account, ks_collection **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id, account, href, kind, name, displayname, color, description, "
			   "components, readonly, supports_sync, enabled, sync_token, ctag, "
			   "guard_at, guard_base, guard_deleted, vcard4, synced_at, ruled, dir "
			   "FROM collection WHERE account = ?1 ORDER BY kind, name", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, account);
	return collect(s, sizeof(**ret), fill_collection, free_collections, (void **) ret, ret_n);
}

int ks_cache_save_collection(ks_cache *c, ks_collection *col)
{
	sqlite3_stmt *s;
	int r;

	if (col->id == 0)
		r = prepare(c, "INSERT INTO collection (account, href, kind, name, displayname, "
			       "color, description, components, readonly, supports_sync, enabled, "
			       "vcard4, ruled, dir) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
			       "?11, ?13, ?14, ?15)",
			&s);
	else
		r = prepare(c, "UPDATE collection SET account = ?1, href = ?2, kind = ?3, "
			       "name = ?4, displayname = ?5, color = ?6, description = ?7, "
			       "components = ?8, readonly = ?9, supports_sync = ?10, enabled = ?11, "
			       "vcard4 = ?13, ruled = ?14, dir = ?15 WHERE id = ?12", &s);
	if (r < 0)
		return r;
	(void) bind_text(s, 1, col->account);
	(void) bind_text(s, 2, col->href);
	(void) bind_text(s, 3, ks_collection_kind_to_string(col->kind));
	(void) bind_text(s, 4, col->name);
	(void) bind_text(s, 5, col->displayname);
	(void) bind_text(s, 6, col->color);
	(void) bind_text(s, 7, col->description);
	char comps[32];
	components_to_text(col->components, comps);
	(void) bind_text(s, 8, comps);
	(void) sqlite3_bind_int(s, 9, col->readonly);
	(void) sqlite3_bind_int(s, 10, col->supports_sync);
	(void) sqlite3_bind_int(s, 11, col->enabled);
	(void) sqlite3_bind_int(s, 13, col->vcard4);
	(void) sqlite3_bind_int(s, 14, col->ruled);
	(void) bind_text(s, 15, col->dir);
	if (col->id)
		(void) sqlite3_bind_int64(s, 12, col->id);
	r = step_done(s);
	sqlite3_finalize(s);
	if (r >= 0 && col->id == 0)
		col->id = sqlite3_last_insert_rowid(c->db);
	return r;
}

int ks_cache_set_collection_state(ks_cache *c, int64_t id, const char *sync_token, const char *ctag)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE collection SET sync_token = ?1, ctag = ?2 WHERE id = ?3", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, sync_token);
	(void) bind_text(s, 2, ctag);
	(void) sqlite3_bind_int64(s, 3, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_set_collection_guard(ks_cache *c, int64_t id, int64_t at, int64_t base,
				  int64_t deleted)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE collection SET guard_at = ?1, guard_base = ?2, "
			   "guard_deleted = ?3 WHERE id = ?4", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, at);
	if (base >= 0)
		(void) sqlite3_bind_int64(s, 2, base);
	else
		(void) sqlite3_bind_null(s, 2);
	(void) sqlite3_bind_int64(s, 3, deleted);
	(void) sqlite3_bind_int64(s, 4, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_set_collection_synced(ks_cache *c, int64_t id, int64_t at)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE collection SET synced_at = ?1 WHERE id = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, at);
	(void) sqlite3_bind_int64(s, 2, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_delete_collection(ks_cache *c, int64_t id)
{
	sqlite3_stmt *s;
	int r = prepare(c, "DELETE FROM collection WHERE id = ?1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

void ks_cache_item_done(ks_cache_item *i)
{
	free(i->hash);
	free(i->href);
	free(i->etag);
	free(i->uid);
	free(i->filename);
	*i = (ks_cache_item) {};
}

int ks_cache_get_item(ks_cache *c, int64_t coll, const char *href, ks_cache_item *ret)
{
	sqlite3_stmt *s = c->st[ST_GET_ITEM];
	int r;

	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ret->id = sqlite3_column_int64(s, 0);
		ret->href = col_strdup(s, 1);
		ret->etag = col_strdup(s, 2);
		ret->uid = col_strdup(s, 3);
		ret->filename = col_strdup(s, 4);
		ret->hash = col_strdup(s, 5);
		ret->mtime_ns = sqlite3_column_int64(s, 6);
		ret->ino = sqlite3_column_int64(s, 7);
		ret->size = sqlite3_column_int64(s, 8);
		r = ret->href && ret->filename ? 0 : -ENOMEM;
		if (r < 0)
			ks_cache_item_done(ret);
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int ks_cache_item_is_vcard4(ks_cache *c, int64_t coll, const char *href)
{
	sqlite3_stmt *s;
	/* The VERSION line comes first in a card (RFC 6350 6.7.9); a few hundred bytes hold it
	 * whatever comes before, and only they are read. */
	int r = prepare(c, "SELECT instr(substr(data, 1, 512), 'VERSION:4.0') > 0 FROM item "
			   "WHERE collection = ?1 AND href = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	int rc = sqlite3_step(s);
	r = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) != 0 : rc == SQLITE_DONE ? -ENOENT
										   : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_filename_taken(ks_cache *c, int64_t coll, const char *filename, const char *href)
{
	sqlite3_stmt *s = c->st[ST_NAME_TAKEN];

	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, filename);
	(void) bind_text(s, 3, href ? href : "");
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sqlite_to_errno(rc);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int ks_cache_put_item(ks_cache *c, int64_t coll, const ks_item_row *row)
{
	sqlite3_stmt *s = c->st[ST_PUT_ITEM];
	const ks_item_info *i = row->info;

	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, row->href);
	(void) bind_text(s, 3, row->etag);
	(void) bind_text(s, 4, i ? i->uid : NULL);
	(void) bind_text(s, 5, row->filename);
	(void) sqlite3_bind_blob64(s, 6, row->data, row->len, SQLITE_STATIC);
	(void) bind_text(s, 7, i ? ks_item_kind_to_string(i->kind) : NULL);
	(void) bind_text(s, 8, i ? i->summary : NULL);
	(void) bind_text(s, 9, i ? i->email : NULL);
	(void) bind_text(s, 10, i ? i->dtstart : NULL);
	(void) bind_text(s, 11, i ? i->dtend : NULL);
	(void) sqlite3_bind_int(s, 12, i ? i->has_rrule : 0);
	(void) bind_text(s, 13, i ? i->due : NULL);
	(void) bind_text(s, 14, i ? i->status : NULL);
	(void) sqlite3_bind_int(s, 15, i ? i->priority : 0);
	(void) bind_text(s, 16, row->hash);
	(void) sqlite3_bind_int64(s, 17, trusted_mtime(c, row->mtime_ns));
	(void) sqlite3_bind_int64(s, 18, row->ino);
	(void) sqlite3_bind_int64(s, 19, row->size);
	int r = step_done(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int ks_cache_delete_item(ks_cache *c, int64_t coll, const char *href)
{
	sqlite3_stmt *s = c->st[ST_DEL_ITEM];

	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	int r = step_done(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int ks_cache_foreach_item(ks_cache *c, int64_t coll, ks_cache_item_fn fn, void *userdata)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT href, etag, filename FROM item WHERE collection = ?1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	for (;;) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sqlite_to_errno(rc);
			break;
		}
		r = fn((const char *) sqlite3_column_text(s, 0),
		       (const char *) sqlite3_column_text(s, 1),
		       (const char *) sqlite3_column_text(s, 2), userdata);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

int ks_cache_foreach_item_data(ks_cache *c, int64_t coll, ks_cache_data_fn fn, void *userdata)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT href, etag, uid, filename, data FROM item "
			   "WHERE collection = ?1 ORDER BY id", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	for (;;) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sqlite_to_errno(rc);
			break;
		}
		/* The blob pointer is valid until the next step: fn copies what it keeps. */
		const char *data = sqlite3_column_blob(s, 4);
		size_t len = (size_t) sqlite3_column_bytes(s, 4);
		r = fn((const char *) sqlite3_column_text(s, 0),
		       (const char *) sqlite3_column_text(s, 1),
		       (const char *) sqlite3_column_text(s, 2),
		       (const char *) sqlite3_column_text(s, 3), data ? data : "", len, userdata);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

/* The one integer sql (with ?1 = coll) answers. */
static int count_of(ks_cache *c, const char *sql, int64_t coll)
{
	sqlite3_stmt *s;
	int r = prepare(c, sql, &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	int rc = sqlite3_step(s);
	r = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_count_items(ks_cache *c, int64_t coll)
{
	return count_of(c, "SELECT count(*) FROM item WHERE collection = ?1", coll);
}

int ks_cache_find_collection_dir(ks_cache *c, const char *dir, int64_t *ret_id)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id FROM collection WHERE dir = ?1 LIMIT 1", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, dir);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*ret_id = sqlite3_column_int64(s, 0);
	r = rc == SQLITE_ROW ? 1 : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

void ks_local_rows_free(ks_local_row *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++) {
		free(a[i].href);
		free(a[i].etag);
		free(a[i].uid);
		free(a[i].filename);
		free(a[i].hash);
	}
	free(a);
}

static int fill_local(sqlite3_stmt *s, void *p)
{
	ks_local_row *e = p;

	e->id = sqlite3_column_int64(s, 0);
	e->filename = col_strdup(s, 1);
	e->mtime_ns = sqlite3_column_int64(s, 2);
	e->ino = sqlite3_column_int64(s, 3);
	e->size = sqlite3_column_int64(s, 4);
	return e->filename ? 0 : -ENOMEM;
}

static void free_local(void *a, size_t n)
{
	ks_local_rows_free(a, n);
}

int ks_cache_list_local(ks_cache *c, int64_t coll, ks_local_row **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id, filename, mtime_ns, ino, size "
			   "FROM item WHERE collection = ?1 ORDER BY filename", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	return collect(s, sizeof(**ret), fill_local, free_local, (void **) ret, ret_n);
}

static int fill_unsettled(sqlite3_stmt *s, void *p)
{
	ks_local_row *e = p;

	e->id = sqlite3_column_int64(s, 0);
	e->filename = col_strdup(s, 1);
	e->hash = col_strdup(s, 2);
	return e->filename && e->hash ? 0 : -ENOMEM;
}

int ks_cache_list_unsettled(ks_cache *c, int64_t coll, ks_local_row **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id, filename, hash FROM item WHERE collection = ?1 AND "
			   "mtime_ns = 0 AND hash IS NOT NULL AND filename IS NOT NULL", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	return collect(s, sizeof(**ret), fill_unsettled, free_local, (void **) ret, ret_n);
}

int ks_cache_fill_local_row(ks_cache *c, ks_local_row *row)
{
	sqlite3_stmt *s;
	int r;

	if (row->href)
		return 0;
	r = prepare(c, "SELECT href, etag, uid, hash FROM item WHERE id = ?1", &s);
	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, row->id);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		row->href = col_strdup(s, 0);
		row->etag = col_strdup(s, 1);
		row->uid = col_strdup(s, 2);
		row->hash = col_strdup(s, 3);
		r = row->href ? 0 : -ENOMEM;
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_get_item_data(ks_cache *c, int64_t coll, const char *href, char **ret, size_t *ret_len)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT data FROM item WHERE collection = ?1 AND href = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		size_t len = (size_t) sqlite3_column_bytes(s, 0);
		const void *d = sqlite3_column_blob(s, 0);
		char *out = malloc(len + 1);
		if (!out)
			r = -ENOMEM;
		else {
			if (len)
				memcpy(out, d, len);
			out[len] = 0;
			*ret = out;
			if (ret_len)
				*ret_len = len;
			r = 0;
		}
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_get_item_by_uid(ks_cache *c, int64_t coll, const char *uid, ks_cache_item *ret)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id, href, etag, uid, filename FROM item "
			   "WHERE collection = ?1 AND uid = ?2 LIMIT 1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, uid);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ret->id = sqlite3_column_int64(s, 0);
		ret->href = col_strdup(s, 1);
		ret->etag = col_strdup(s, 2);
		ret->uid = col_strdup(s, 3);
		ret->filename = col_strdup(s, 4);
		r = ret->href && ret->filename ? 0 : -ENOMEM;
		if (r < 0)
			ks_cache_item_done(ret);
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_set_item_file(ks_cache *c, int64_t id, const char *filename, int64_t mtime_ns,
			   int64_t ino, int64_t size)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE item SET filename = ?1, mtime_ns = ?2, ino = ?3, size = ?4 "
			   "WHERE id = ?5", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, filename);
	(void) sqlite3_bind_int64(s, 2, trusted_mtime(c, mtime_ns));
	(void) sqlite3_bind_int64(s, 3, ino);
	(void) sqlite3_bind_int64(s, 4, size);
	(void) sqlite3_bind_int64(s, 5, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_set_item_stat(ks_cache *c, int64_t id, int64_t mtime_ns, int64_t ino, int64_t size)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE item SET mtime_ns = ?1, ino = ?2, size = ?3 WHERE id = ?4", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, trusted_mtime(c, mtime_ns));
	(void) sqlite3_bind_int64(s, 2, ino);
	(void) sqlite3_bind_int64(s, 3, size);
	(void) sqlite3_bind_int64(s, 4, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

static const char *const intent_ops[_KS_INTENT_MAX] = {
	[KS_INTENT_CREATE] = "create",
	[KS_INTENT_UPDATE] = "update",
	[KS_INTENT_DELETE] = "delete",
};

int ks_cache_add_intent(ks_cache *c, int64_t coll, const char *href, ks_intent_op op,
			const char *filename, const char *hash)
{
	sqlite3_stmt *s;
	int r;

	if (op < 0 || op >= _KS_INTENT_MAX)
		return -EINVAL;
	r = prepare(c, "INSERT OR REPLACE INTO intent (collection, href, op, filename, hash, "
		       "created_at) VALUES (?1, ?2, ?3, ?4, ?5, strftime('%s', 'now'))", &s);
	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	(void) bind_text(s, 3, intent_ops[op]);
	(void) bind_text(s, 4, filename);
	(void) bind_text(s, 5, hash);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_clear_intent(ks_cache *c, int64_t coll, const char *href)
{
	sqlite3_stmt *s;
	int r = prepare(c, "DELETE FROM intent WHERE collection = ?1 AND href = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

void ks_intents_free(ks_intent *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++) {
		free(a[i].href);
		free(a[i].filename);
		free(a[i].hash);
	}
	free(a);
}

static int fill_intent(sqlite3_stmt *s, void *p)
{
	ks_intent *e = p;

	e->href = col_strdup(s, 0);
	const char *op = (const char *) sqlite3_column_text(s, 1);
	e->op = _KS_INTENT_INVALID;
	for (int i = 0; op && i < _KS_INTENT_MAX; i++)
		if (strcmp(op, intent_ops[i]) == 0)
			e->op = (ks_intent_op) i;
	e->filename = col_strdup(s, 2);
	e->hash = col_strdup(s, 3);
	e->created_at = sqlite3_column_int64(s, 4);
	return e->href ? 0 : -ENOMEM;
}

static void free_intents(void *a, size_t n)
{
	ks_intents_free(a, n);
}

int ks_cache_list_intents(ks_cache *c, int64_t coll, ks_intent **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT href, op, filename, hash, created_at FROM intent "
			   "WHERE collection = ?1 ORDER BY id", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	return collect(s, sizeof(**ret), fill_intent, free_intents, (void **) ret, ret_n);
}

int ks_cache_add_refusal(ks_cache *c, int64_t coll, const ks_refusal *rf)
{
	sqlite3_stmt *s;
	int r;

	if (rf->op < 0 || rf->op >= _KS_INTENT_MAX || !rf->filename || !rf->reason)
		return -EINVAL;
	r = prepare(c, "INSERT OR REPLACE INTO refusal (collection, filename, href, op, hash, "
		       "status, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
		       "strftime('%s', 'now'))", &s);
	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, rf->filename);
	(void) bind_text(s, 3, rf->href);
	(void) bind_text(s, 4, intent_ops[rf->op]);
	(void) bind_text(s, 5, rf->hash);
	(void) sqlite3_bind_int(s, 6, rf->status);
	(void) bind_text(s, 7, rf->reason);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_clear_refusal(ks_cache *c, int64_t coll, const char *filename)
{
	sqlite3_stmt *s;
	int r = prepare(c, "DELETE FROM refusal WHERE collection = ?1 AND filename = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, filename);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

void ks_refusals_free(ks_refusal *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++) {
		free(a[i].filename);
		free(a[i].href);
		free(a[i].hash);
		free(a[i].reason);
	}
	free(a);
}

static int fill_refusal(sqlite3_stmt *s, void *p)
{
	ks_refusal *e = p;

	e->filename = col_strdup(s, 0);
	e->href = col_strdup(s, 1);
	const char *op = (const char *) sqlite3_column_text(s, 2);
	e->op = _KS_INTENT_INVALID;
	for (int i = 0; op && i < _KS_INTENT_MAX; i++)
		if (strcmp(op, intent_ops[i]) == 0)
			e->op = (ks_intent_op) i;
	e->hash = col_strdup(s, 3);
	e->status = sqlite3_column_int(s, 4);
	e->reason = col_strdup(s, 5);
	e->created_at = sqlite3_column_int64(s, 6);
	return e->filename && e->reason ? 0 : -ENOMEM;
}

static void free_refusals(void *a, size_t n)
{
	ks_refusals_free(a, n);
}

int ks_cache_list_refusals(ks_cache *c, int64_t coll, ks_refusal **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT filename, href, op, hash, status, reason, created_at "
			   "FROM refusal WHERE collection = ?1 ORDER BY filename", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	return collect(s, sizeof(**ret), fill_refusal, free_refusals, (void **) ret, ret_n);
}

int ks_cache_add_conflict(ks_cache *c, const char *account, const char *collection,
			  const char *uid, const char *filename, const char *kept_path,
			  const char *winner, const char *summary)
{
	sqlite3_stmt *s;
	/* One row per kept copy: recording the same copy again (a run that was cut off between
	 * the two) adds nothing. */
	int r = prepare(c, "INSERT INTO conflict (account, collection, uid, filename, kept_path, "
			   "winner, summary, created_at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, "
			   "strftime('%s', 'now') WHERE NOT EXISTS "
			   "(SELECT 1 FROM conflict WHERE kept_path = ?5)", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, account);
	(void) bind_text(s, 2, collection);
	(void) bind_text(s, 3, uid);
	(void) bind_text(s, 4, filename);
	(void) bind_text(s, 5, kept_path);
	(void) bind_text(s, 6, winner);
	(void) bind_text(s, 7, summary);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_delete_conflict(ks_cache *c, int64_t id)
{
	sqlite3_stmt *s;
	int r = prepare(c, "DELETE FROM conflict WHERE id = ?1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, id);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

void ks_conflict_rows_free(ks_conflict_row *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++) {
		free(a[i].account);
		free(a[i].collection);
		free(a[i].uid);
		free(a[i].filename);
		free(a[i].kept_path);
		free(a[i].winner);
		free(a[i].summary);
	}
	free(a);
}

static int fill_conflict(sqlite3_stmt *s, void *p)
{
	ks_conflict_row *e = p;

	e->id = sqlite3_column_int64(s, 0);
	e->account = col_strdup(s, 1);
	e->collection = col_strdup(s, 2);
	e->uid = col_strdup(s, 3);
	e->filename = col_strdup(s, 4);
	e->kept_path = col_strdup(s, 5);
	e->winner = col_strdup(s, 6);
	e->summary = col_strdup(s, 7);
	e->created_at = sqlite3_column_int64(s, 8);
	return 0;
}

static void free_conflicts(void *a, size_t n)
{
	ks_conflict_rows_free(a, n);
}

int ks_cache_list_conflicts(ks_cache *c, const char *account, ks_conflict_row **ret, size_t *ret_n)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT id, account, collection, uid, filename, kept_path, winner, "
			   "summary, created_at FROM conflict WHERE ?1 IS NULL OR account = ?1 "
			   "ORDER BY created_at DESC, id DESC", &s);

	if (r < 0)
		return r;
	(void) bind_text(s, 1, account);
	return collect(s, sizeof(**ret), fill_conflict, free_conflicts, (void **) ret, ret_n);
}

/* ---- time windows ------------------------------------------------------------------------ */

int ks_cache_get_outside(ks_cache *c, int64_t coll, const char *href, char **ret_etag)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT etag FROM outside WHERE collection = ?1 AND href = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		char *etag = col_strdup(s, 0);
		r = etag || sqlite3_column_type(s, 0) == SQLITE_NULL ? 0 : -ENOMEM;
		if (r >= 0 && ret_etag)
			*ret_etag = etag;
		else
			free(etag);
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_put_outside(ks_cache *c, int64_t coll, const char *href, const char *etag,
			 const char *filename, const char *hash, int64_t next_at)
{
	sqlite3_stmt *s;
	int r = prepare(c, "INSERT INTO outside (collection, href, etag, filename, hash, next_at) "
			   "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (collection, href) DO "
			   "UPDATE SET etag = excluded.etag, filename = excluded.filename, "
			   "hash = excluded.hash, next_at = excluded.next_at", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	(void) bind_text(s, 3, etag);
	(void) bind_text(s, 4, filename);
	(void) bind_text(s, 5, hash);
	(void) sqlite3_bind_int64(s, 6, next_at);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_delete_outside(ks_cache *c, int64_t coll, const char *href)
{
	sqlite3_stmt *s;
	int r = prepare(c, href ? "DELETE FROM outside WHERE collection = ?1 AND href = ?2"
				: "DELETE FROM outside WHERE collection = ?1 AND filename IS NULL",
			&s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	if (href)
		(void) bind_text(s, 2, href);
	r = step_done(s);
	sqlite3_finalize(s);
	if (r < 0 || href)
		return r;
	/* A file whose removal a crash cut short stays known by its name, so that it is not
	 * taken for a new item; its event is fetched again all the same. */
	r = prepare(c, "UPDATE outside SET etag = NULL, next_at = 0 WHERE collection = ?1", &s);
	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_outside_by_filename(ks_cache *c, int64_t coll, const char *filename,
				 char **ret_href, char **ret_hash)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT href, hash FROM outside WHERE collection = ?1 AND "
			   "filename = ?2 LIMIT 1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, filename);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		char *href = col_strdup(s, 0), *hash = col_strdup(s, 1);
		r = href ? 0 : -ENOMEM;
		if (r >= 0) {
			*ret_href = href;
			*ret_hash = hash;
		} else {
			free(href);
			free(hash);
		}
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_outside_forget_file(ks_cache *c, int64_t coll, const char *href)
{
	sqlite3_stmt *s;
	int r = prepare(c, "UPDATE outside SET filename = NULL, hash = NULL WHERE collection = ?1 "
			   "AND href = ?2", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	(void) bind_text(s, 2, href);
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_foreach_outside(ks_cache *c, int64_t coll, int64_t due_before,
			     ks_cache_outside_fn fn, void *userdata)
{
	sqlite3_stmt *s;
	int r = prepare(c, due_before ? "SELECT href, next_at FROM outside WHERE collection = ?1 "
					"AND next_at != 0 AND next_at <= ?2"
				      : "SELECT href, next_at FROM outside WHERE collection = ?1",
			&s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	if (due_before)
		(void) sqlite3_bind_int64(s, 2, due_before);
	for (;;) {
		int rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sqlite_to_errno(rc);
			break;
		}
		r = fn((const char *) sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1),
		       userdata);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

int ks_cache_count_outside(ks_cache *c, int64_t coll)
{
	return count_of(c, "SELECT count(*) FROM outside WHERE collection = ?1", coll);
}

int ks_cache_get_window(ks_cache *c, int64_t coll, ks_cache_window *ret)
{
	sqlite3_stmt *s;
	int r = prepare(c, "SELECT past_days, future_days, checked_day FROM time_window "
			   "WHERE collection = ?1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret = (ks_cache_window) {
			.past_days = sqlite3_column_int(s, 0),
			.future_days = sqlite3_column_int(s, 1),
			.checked_day = sqlite3_column_int64(s, 2),
		};
		r = 0;
	} else
		r = rc == SQLITE_DONE ? -ENOENT : sqlite_to_errno(rc);
	sqlite3_finalize(s);
	return r;
}

int ks_cache_set_window(ks_cache *c, int64_t coll, const ks_cache_window *w)
{
	sqlite3_stmt *s;
	int r = prepare(c, w ? "INSERT OR REPLACE INTO time_window (collection, past_days, "
			       "future_days, checked_day) VALUES (?1, ?2, ?3, ?4)"
			     : "DELETE FROM time_window WHERE collection = ?1", &s);

	if (r < 0)
		return r;
	(void) sqlite3_bind_int64(s, 1, coll);
	if (w) {
		(void) sqlite3_bind_int(s, 2, w->past_days);
		(void) sqlite3_bind_int(s, 3, w->future_days);
		(void) sqlite3_bind_int64(s, 4, w->checked_day);
	}
	r = step_done(s);
	sqlite3_finalize(s);
	return r;
}
