/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "engine_p.h"
#include "fsutil_p.h"
#include "log_p.h"
#include "macro.h"
#include "text_p.h"

static int set_aside(const char *db, const struct stat *seen);

int ks_engine_collection_dir(const ks_engine *e, const char *account, const ks_collection *col,
			     char **ret)
{
	if (col->dir)
		return (*ret = strdup(col->dir)) ? 0 : -ENOMEM;
	return asprintf(ret, "%s/%s/%s/%s", e->data_dir,
			col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars", account,
			col->name) < 0 ? -ENOMEM : 0;
}

int ks_engine_open_collection_dir(const ks_engine *e, const char *account,
				  const ks_collection *col, bool create, int *ret_fd,
				  char **reterr_path)
{
	_cleanup_free_ char *rel = NULL, *parent = NULL;
	const char *base = e->data_dir;
	size_t at = 0;
	int r;

	if (col->dir) {
		/* A directory of ksync.conf's: the path up to it is the user's (it may go
		 * through a link of theirs), what ksync opens in it is not followed. */
		const char *slash = strrchr(col->dir, '/');
		if (!slash || !slash[1])
			return -EINVAL;
		parent = slash == col->dir ? strdup("/") : strndup(col->dir,
								   (size_t) (slash - col->dir));
		rel = strdup(slash + 1);
		if (!parent || !rel)
			return -ENOMEM;
		if (create) {
			r = ks_fs_mkdir_p(parent);
			if (r < 0) {
				if (reterr_path)
					*reterr_path = TAKE_PTR(parent);
				return r;
			}
		}
		base = parent;
	} else if (asprintf(&rel, "%s/%s/%s",
			    col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
			    account, col->name) < 0)
		return -ENOMEM;
	r = ks_fs_open_beneath(base, rel, create, ret_fd, &at);
	if (r < 0 && reterr_path &&
	    asprintf(reterr_path, "%s%s%.*s", base, at ? "/" : "", (int) at, rel) < 0)
		*reterr_path = NULL;
	return r;
}

int ks_data_dir_default(char **ret)
{
	const char *x = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	char *p;

	if (x && x[0] == '/')
		return asprintf(&p, "%s/ksync", x) < 0 ? -ENOMEM : (*ret = p, 0);
	if (!home || home[0] != '/')
		return -ENOENT;
	return asprintf(&p, "%s/.local/share/ksync", home) < 0 ? -ENOMEM : (*ret = p, 0);
}

/* A damaged cache is moved aside (with its WAL, which belongs to it) rather than deleted, and
 * a new one is built: the run that follows lists every collection in full and matches the
 * files to the server's items by UID, so nothing is taken as deleted on either side. The
 * inode check keeps a second process that found the same damage from moving the new one. */
static int set_aside(const char *db, const struct stat *seen)
{
	_cleanup_free_ char *kept = NULL, *wal = NULL, *kept_wal = NULL, *shm = NULL;
	char when[32];
	struct stat st;
	time_t now = time(NULL);

	if (stat(db, &st) < 0 || st.st_ino != seen->st_ino || st.st_dev != seen->st_dev)
		return 0;
	strftime(when, sizeof(when), "%Y%m%dT%H%M%S", gmtime(&now));
	if (asprintf(&kept, "%s.corrupt-%s", db, when) < 0 ||
	    asprintf(&wal, "%s-wal", db) < 0 || asprintf(&kept_wal, "%s-wal", kept) < 0 ||
	    asprintf(&shm, "%s-shm", db) < 0)
		return -ENOMEM;
	if (rename(wal, kept_wal) < 0 && errno != ENOENT)
		return -errno;
	(void) unlink(shm);
	if (rename(db, kept) < 0)
		return -errno;
	ks_log(KS_LOG_WARNING,
	       "The cache '%s' is damaged: it was moved to '%s' and a new one is built from the "
	       "server and the files; nothing is deleted on either side, and files that differ "
	       "from the server's items are merged with them", db, kept);
	return 1;
}

int ks_engine_new(const char *data_dir, ks_engine **ret)
{
	struct stat seen = {};
	_cleanup_free_ char *db = NULL;
	ks_engine *e;
	int r;

	r = ks_fs_mkdir_p(data_dir);
	if (r < 0)
		return r;
	if (asprintf(&db, "%s/ksync.db", data_dir) < 0)
		return -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->data_dir = strdup(data_dir);
	if (!e->data_dir) {
		free(e);
		return -ENOMEM;
	}
	if (stat(db, &seen) == 0 && seen.st_size == 0)
		/* SQLite takes an empty file for an empty database: say why everything is
		 * listed and matched again. */
		ks_log(KS_LOG_WARNING,
		       "The cache '%s' is empty: a new one is built from the server and the files; "
		       "nothing is deleted on either side", db);
	r = ks_cache_open(db, &e->cache);
	if (r == -EUCLEAN) {
		r = set_aside(db, &seen);
		if (r >= 0)
			r = ks_cache_open(db, &e->cache);
	}
	if (r < 0) {
		ks_engine_free(e);
		return r;
	}
	*ret = e;
	return 0;
}

ks_engine *ks_engine_free(ks_engine *e)
{
	if (!e)
		return NULL;
	ks_cache_free(e->cache);
	free(e->data_dir);
	free(e);
	return NULL;
}

ks_error_scope ks_error_scope_of(int r)
{
	switch (r) {
	case -EBADMSG:
	case -ENODATA:
	case -ENOTUNIQ:
	case -EFBIG:
		return KS_SCOPE_ITEM;
	case -EACCES:
	case -ECONNREFUSED:
	case -ETIMEDOUT:
	case -EHOSTUNREACH:
	case -ECONNRESET:
	case -EAGAIN:
	case -ENOMEM:
	case -EPROTO:
	case -EKEYREJECTED:
		return KS_SCOPE_ACCOUNT;
	default:
		return KS_SCOPE_COLLECTION;
	}
}

/* A cache damaged in the middle opens fine and fails where a damaged page is read. Checking
 * every page at each open would cost a no-change run more than the run itself, so the check
 * is made when the cache answered -EUCLEAN: a damaged file is then set aside and the account
 * synced again from a new cache, which matches files and server items by UID and so
 * deletes nothing on either side. */
int ks_engine_recover_cache(ks_engine *e)
{
	_cleanup_free_ char *db = NULL;
	struct stat seen;
	int r = ks_cache_check(e->cache);

	if (r != -EUCLEAN)
		return r;
	if (asprintf(&db, "%s/ksync.db", e->data_dir) < 0)
		return -ENOMEM;
	if (stat(db, &seen) < 0)
		return -errno;
	e->cache = ks_cache_free(e->cache);
	r = set_aside(db, &seen);
	if (r >= 0)
		r = ks_cache_open(db, &e->cache);
	return r < 0 ? r : 1;
}

/* One writer per account: a second process syncing it would race the first one's intents
 * and files. The lock lives in the data directory it protects (locks/<account>.lock), so
 * that every process writing there, the service and a cron job without XDG_RUNTIME_DIR
 * alike, takes the same one; it names the holder's pid. */
int ks_engine_lock_account(const ks_engine *e, const char *account, bool wait, int *ret_fd,
			   char **reterr_msg)
{
	const char *base = e->data_dir, *sub = "locks";
	_cleanup_free_ char *path = NULL;
	int dfd, fd, r;

	if (asprintf(&path, "%s/%s/%s.lock", base, sub, account) < 0)
		return -ENOMEM;
	/* Not through a symlink either: the lock file is written. */
	r = ks_fs_open_beneath(base, sub, true, &dfd, NULL);
	if (r < 0)
		goto failed;
	fd = openat(dfd, strrchr(path, '/') + 1, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	r = -errno;
	close(dfd);
	if (fd < 0)
		goto failed;
	if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		r = -errno;
		char buf[32] = "";
		ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
		buf[k > 0 ? k : 0] = 0;
		buf[strcspn(buf, "\n")] = 0;
		close(fd);
		if (r == -EWOULDBLOCK)
			return ks_set_error(reterr_msg, -EBUSY,
					    "another ksync process%s%s is syncing this account "
					    "(lock %s); try again later, or wait for it with "
					    "--wait",
					    buf[0] ? " with pid " : "", buf, path);
		goto failed;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n) {
		r = -errno;
		close(fd);
		goto failed;
	}
	*ret_fd = fd;
	return 0;
failed:
	return ks_set_error(reterr_msg, r, "cannot lock the account with '%s': %s", path,
			    r == -ELOOP ? "a symbolic link is on the way, which ksync does not "
					  "follow"
					: strerror(-r));
}
