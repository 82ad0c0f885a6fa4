/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dup_journal_p.h"
#include "dup_plan_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "json_p.h"
#include "limits.h"
#include "macro.h"
#include "text_p.h"

/* The journal of a merge of duplicates and the copies of the cards it changes: see
 * dup_journal_p.h. */

#define JOURNAL "journal.json"

static int jentry_of(const dup_book_item *it, dup_jentry *ret);
static void write_jentry(ks_json_writer *w, const dup_jentry *e);
static int find_in_books(int fd, const char *data_dir, const char *root, const char *account,
			 dup_journal *best);
static int journal_load(int fd, const char *dir, dup_journal *ret);
static int read_jentries(const ks_json *arr, dup_jentry **ret, size_t *ret_n);
static int read_jentry(const ks_json *j, dup_jentry *e);
static char *json_dup(const ks_json *j, const char *key);
static void jentry_done(dup_jentry *e);

/* Keeps a copy of every card the merge overwrites or removes, and the journal, before any
 * request: a crash or a failure at any later point leaves them to restore from. */
int ks_dup_journal_begin(ks_local *l, const dup_plan *p, dup_journal *J, char **reterr_msg)
{
	const dup_book *b = &p->b;
	_cleanup_free_ char *name = NULL, *where = NULL;
	struct timespec ts;
	char stamp[32];
	struct tm tm;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	J->time_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
	if (asprintf(&name, "merge-%s-%s", stamp, strchr(p->id, ':') + 1) < 0) {
		name = NULL;
		return -ENOMEM;
	}
	if (asprintf(&J->dir, "%s/conflicts/%s/%s/%s", l->e->data_dir, l->account, l->label,
		     name) < 0) {
		J->dir = NULL;
		return -ENOMEM;
	}
	J->id = strdup(p->id);
	J->account = strdup(b->account);
	J->collection = strdup(b->col.name);
	J->state = strdup("started");
	J->removed = calloc(p->n_members, sizeof(dup_jentry));
	J->groups = calloc(p->n_groups + 1, sizeof(dup_jentry));
	if (!J->id || !J->account || !J->collection || !J->state || !J->removed || !J->groups)
		return -ENOMEM;
	r = jentry_of(&b->items[p->ref], &J->kept);
	for (size_t i = 1; r >= 0 && i < p->n_members; i++) {
		r = jentry_of(&b->items[p->members[i]], &J->removed[J->n_removed]);
		J->n_removed++;
	}
	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		r = jentry_of(&b->items[p->groups[i]], &J->groups[J->n_groups]);
		J->n_groups++;
	}
	if (r < 0)
		return r;
	/* The user's cards go nowhere a symbolic link in ksync's tree points to. */
	r = ks_local_open_conflicts(l, name, true, &J->dirfd, &where);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot keep copies of the cards in '%s': %s; "
				    "nothing was merged", where ? where : J->dir,
				    r == -ELOOP ? "a symbolic link is on the way, which ksync does "
						  "not follow" : strerror(-r));
	for (size_t i = 0; r >= 0 && i < p->n_members; i++) {
		const dup_book_item *it = &b->items[p->members[i]];
		r = ks_fs_write_atomic(J->dirfd, it->filename, it->data, it->len);
	}
	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		const dup_book_item *it = &b->items[p->groups[i]];
		r = ks_fs_write_atomic(J->dirfd, it->filename, it->data, it->len);
	}
	if (r >= 0)
		r = ks_dup_journal_save(J);
	return r;
}

/* Writes the journal (atomically, flushed): the undo of a merge must survive a crash. */
int ks_dup_journal_save(const dup_journal *J)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	ks_json_writer w;
	int r;

	ks_json_writer_init(&w, &b, true);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "version");
	ks_json_write_int(&w, 1);
	ks_json_write_key(&w, "state");
	ks_json_write_string(&w, J->state);
	ks_json_write_key(&w, "id");
	ks_json_write_string(&w, J->id);
	ks_json_write_key(&w, "account");
	ks_json_write_string(&w, J->account);
	ks_json_write_key(&w, "collection");
	ks_json_write_string(&w, J->collection);
	ks_json_write_key(&w, "time_ns");
	ks_json_write_int(&w, J->time_ns);
	ks_json_write_key(&w, "kept");
	write_jentry(&w, &J->kept);
	ks_json_write_key(&w, "removed");
	ks_json_write_array_begin(&w);
	for (size_t i = 0; i < J->n_removed; i++)
		write_jentry(&w, &J->removed[i]);
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "groups");
	ks_json_write_array_begin(&w);
	for (size_t i = 0; i < J->n_groups; i++)
		write_jentry(&w, &J->groups[i]);
	ks_json_write_array_end(&w);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0)
		return r;
	return ks_fs_write_atomic(J->dirfd, JOURNAL, b.data, b.len);
}

int ks_dup_journal_set_state(dup_journal *J, const char *state)
{
	free(J->state);
	J->state = strdup(state);
	return J->state ? ks_dup_journal_save(J) : -ENOMEM;
}

/* Records in the journal that the undo of step en went through, leaving etag (or nothing, when
 * the step was left as it was found). */
int ks_dup_journal_mark_undone(dup_journal *J, dup_jentry *en, const char *etag)
{
	char *e = etag ? strdup(etag) : NULL;

	if (etag && !e)
		return -ENOMEM;
	free(en->etag_undone);
	en->etag_undone = e;
	en->undone = true;
	return ks_dup_journal_save(J);
}

void ks_dup_journal_remove(const dup_journal *J)
{
	const char *name = strrchr(J->dir, '/');

	if (J->dirfd < 0 || !name)
		return;
	(void) unlinkat(J->dirfd, JOURNAL, 0);
	(void) unlinkat(J->dirfd, J->kept.file, 0);
	for (size_t i = 0; i < J->n_removed; i++)
		(void) unlinkat(J->dirfd, J->removed[i].file, 0);
	for (size_t i = 0; i < J->n_groups; i++)
		(void) unlinkat(J->dirfd, J->groups[i].file, 0);
	/* The directory's own parent, whatever links came to be on the path since. */
	int parent = openat(J->dirfd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (parent >= 0) {
		(void) unlinkat(parent, name + 1, AT_REMOVEDIR);
		close(parent);
	}
}

int ks_dup_journal_read_copy(const dup_journal *J, const dup_jentry *en, char **ret,
			     size_t *ret_len)
{
	return ks_fs_read_file(J->dirfd, en->file, KS_CARD_MAX, ret, ret_len);
}

int ks_dup_journal_find_last(ks_engine *e, const ks_config *c, const char *account,
			     dup_journal *ret, char **reterr_msg)
{
	dup_journal best = { .dirfd = -1 };
	int r = 0;

	for (size_t a = 0; r >= 0 && a < c->n_accounts; a++) {
		const char *name = c->accounts[a].name;
		_cleanup_free_ char *root = NULL;
		size_t at = 0;
		int fd = -1;

		if (account && *account && strcmp(account, name) != 0)
			continue;
		if (asprintf(&root, "conflicts/%s/contacts", name) < 0)
			return -ENOMEM;
		r = ks_fs_open_beneath(e->data_dir, root, false, &fd, &at);
		if (r == -ELOOP) {
			r = ks_set_error(reterr_msg, r, "cannot look for merges to undo in '%s/%.*s': a "
				    "symbolic link is on the way, which ksync does not follow",
				    e->data_dir, (int) at, root);
			break;
		}
		if (r < 0) {
			r = 0;	/* no merge was kept there */
			continue;
		}
		r = find_in_books(fd, e->data_dir, root, name, &best);
	}
	if (r < 0) {
		ks_dup_journal_done(&best);
		return r;
	}
	if (!best.dir)
		return -ENOENT;
	*ret = best;
	return 0;
}

void ks_dup_journal_done(dup_journal *J)
{
	if (J->dirfd >= 0)
		close(J->dirfd);
	free(J->dir);
	free(J->id);
	free(J->account);
	free(J->collection);
	free(J->state);
	jentry_done(&J->kept);
	for (size_t i = 0; i < J->n_removed; i++)
		jentry_done(&J->removed[i]);
	free(J->removed);
	for (size_t i = 0; i < J->n_groups; i++)
		jentry_done(&J->groups[i]);
	free(J->groups);
	*J = (dup_journal) { .dirfd = -1 };
}

/* Looks through the address books' directories in fd (data_dir/root, taken) for the newest
 * merge of account that can be undone, newer than *best. Directories that are symbolic links
 * are not ksync's and are passed over. */
static int find_in_books(int fd, const char *data_dir, const char *root, const char *account,
			 dup_journal *best)
{
	DIR *books = fdopendir(fd);
	struct dirent *be;
	int r = 0;

	if (!books) {
		close(fd);
		return 0;
	}
	while (r >= 0 && (be = readdir(books))) {
		DIR *merges;
		struct dirent *me;

		if (be->d_name[0] == '.')
			continue;
		int bfd = openat(dirfd(books), be->d_name,
				 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (bfd < 0)
			continue;
		merges = fdopendir(bfd);
		if (!merges) {
			close(bfd);
			continue;
		}
		while (r >= 0 && (me = readdir(merges))) {
			_cleanup_free_ char *mdir = NULL;
			dup_journal J = { .dirfd = -1 };

			if (strncmp(me->d_name, "merge-", 6) != 0)
				continue;
			int mfd = openat(bfd, me->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					 O_CLOEXEC);
			if (mfd < 0)
				continue;
			if (asprintf(&mdir, "%s/%s/%s/%s", data_dir, root, be->d_name,
				     me->d_name) < 0) {
				close(mfd);
				r = -ENOMEM;
				break;
			}
			/* A journal that cannot be read is not a merge to undo. */
			if (journal_load(mfd, mdir, &J) < 0)
				continue;
			if ((strcmp(J.state, "done") == 0 || strcmp(J.state, "partial") == 0 ||
			     strcmp(J.state, "undoing") == 0) &&
			    strcmp(J.account, account) == 0 &&
			    (!best->dir || J.time_ns > best->time_ns)) {
				ks_dup_journal_done(best);
				*best = J;
			} else
				ks_dup_journal_done(&J);
		}
		closedir(merges);
	}
	closedir(books);
	return r;
}

static int jentry_of(const dup_book_item *it, dup_jentry *ret)
{
	*ret = (dup_jentry) {
		.uid = strdup(it->uid), .href = strdup(it->href), .filename = strdup(it->filename),
		.etag = it->etag ? strdup(it->etag) : NULL, .file = strdup(it->filename),
	};
	return ret->uid && ret->href && ret->filename && ret->file &&
	       (!it->etag || ret->etag) ? 0 : -ENOMEM;
}

static void write_jentry(ks_json_writer *w, const dup_jentry *e)
{
	ks_json_write_object_begin(w);
	ks_json_write_key(w, "uid");
	ks_json_write_string(w, e->uid);
	ks_json_write_key(w, "href");
	ks_json_write_string(w, e->href);
	ks_json_write_key(w, "filename");
	ks_json_write_string(w, e->filename);
	ks_json_write_key(w, "etag");
	ks_json_write_string(w, e->etag);
	ks_json_write_key(w, "etag_after");
	ks_json_write_string(w, e->etag_after);
	ks_json_write_key(w, "file");
	ks_json_write_string(w, e->file);
	ks_json_write_key(w, "done");
	ks_json_write_bool(w, e->done);
	ks_json_write_key(w, "undone");
	ks_json_write_bool(w, e->undone);
	ks_json_write_key(w, "etag_undone");
	ks_json_write_string(w, e->etag_undone);
	ks_json_write_object_end(w);
}

/* Reads the journal of the merge directory fd (which it takes), whose path is dir. */
static int journal_load(int fd, const char *dir, dup_journal *ret)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	dup_journal J = { .dirfd = fd };
	size_t len = 0;
	int r;

	r = ks_fs_read_file(fd, JOURNAL, KS_JSON_MAX_TEXT, &text, &len);
	if (r >= 0)
		r = ks_json_parse(text, len, &j, NULL);
	if (r < 0) {
		ks_dup_journal_done(&J);
		return r;
	}
	J.dir = strdup(dir);
	J.id = json_dup(j, "id");
	J.account = json_dup(j, "account");
	J.collection = json_dup(j, "collection");
	J.state = json_dup(j, "state");
	J.time_ns = ks_json_get_int(j, "time_ns", 0);
	r = J.dir && J.id && J.account && J.collection && J.state ? 0 : -EBADMSG;
	if (r >= 0)
		r = read_jentry(ks_json_get(j, "kept"), &J.kept);
	if (r >= 0)
		r = read_jentries(ks_json_get(j, "removed"), &J.removed, &J.n_removed);
	if (r >= 0)
		r = read_jentries(ks_json_get(j, "groups"), &J.groups, &J.n_groups);
	if (r < 0) {
		ks_dup_journal_done(&J);
		return r;
	}
	*ret = J;
	return 0;
}

static int read_jentries(const ks_json *arr, dup_jentry **ret, size_t *ret_n)
{
	size_t n = ks_json_count(arr);
	dup_jentry *v = calloc(n + 1, sizeof(*v));
	int r = 0;

	if (!v)
		return -ENOMEM;
	*ret = v;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = read_jentry(ks_json_at(arr, i), &v[i]);
		*ret_n = i + 1;
	}
	return r;
}

static int read_jentry(const ks_json *j, dup_jentry *e)
{
	*e = (dup_jentry) {
		.uid = json_dup(j, "uid"), .href = json_dup(j, "href"),
		.filename = json_dup(j, "filename"), .etag = json_dup(j, "etag"),
		.etag_after = json_dup(j, "etag_after"), .file = json_dup(j, "file"),
		.done = ks_json_get_bool(j, "done", false),
		.undone = ks_json_get_bool(j, "undone", false),
		.etag_undone = json_dup(j, "etag_undone"),
	};
	return e->uid && e->href && e->filename && e->file ? 0 : -EBADMSG;
}

static char *json_dup(const ks_json *j, const char *key)
{
	const char *s = ks_json_get_string(j, key);

	return s ? strdup(s) : NULL;
}

static void jentry_done(dup_jentry *e)
{
	free(e->uid);
	free(e->href);
	free(e->filename);
	free(e->etag);
	free(e->etag_after);
	free(e->file);
	free(e->etag_undone);
	*e = (dup_jentry) {};
}
