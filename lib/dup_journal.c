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

/* The journal of a merge of duplicates and the copies of the cards it changes: see
 * dup_journal_p.h. */

#define JOURNAL "journal.json"

static int jentry_of(const dup_book_item *it, dup_jentry *ret);
static void write_jentry(ks_json_writer *w, const dup_jentry *e);
static int journal_load(const char *dir, dup_journal *ret);
static int read_jentries(const ks_json *arr, dup_jentry **ret, size_t *ret_n);
static int read_jentry(const ks_json *j, dup_jentry *e);
static char *json_dup(const ks_json *j, const char *key);
static void jentry_done(dup_jentry *e);

/* Keeps a copy of every card the merge overwrites or removes, and the journal, before any
 * request: a crash or a failure at any later point leaves them to restore from. */
int ks_dup_journal_begin(ks_engine *e, const dup_plan *p, dup_journal *J)
{
	const dup_book *b = &p->b;
	struct timespec ts;
	char stamp[32];
	struct tm tm;
	int fd, r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	J->time_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
	if (asprintf(&J->dir, "%s/conflicts/%s/contacts/%s/merge-%s-%s", e->data_dir, b->account,
		     b->col.name, stamp, strchr(p->id, ':') + 1) < 0) {
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
	r = ks_fs_mkdir_p(J->dir);
	if (r < 0)
		return r;
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
	fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; r >= 0 && i < p->n_members; i++) {
		const dup_book_item *it = &b->items[p->members[i]];
		r = ks_fs_write_atomic(fd, it->filename, it->data, it->len, true);
	}
	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		const dup_book_item *it = &b->items[p->groups[i]];
		r = ks_fs_write_atomic(fd, it->filename, it->data, it->len, true);
	}
	if (r >= 0)
		r = ks_fs_fsync_dir(fd);
	close(fd);
	if (r >= 0)
		r = ks_dup_journal_save(J);
	return r;
}

/* Writes the journal (atomically, flushed): the undo of a merge must survive a crash. */
int ks_dup_journal_save(const dup_journal *J)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	ks_json_writer w;
	int fd, r;

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
	fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = ks_fs_write_atomic(fd, JOURNAL, b.data, b.len, true);
	if (r >= 0)
		r = ks_fs_fsync_dir(fd);
	close(fd);
	return r;
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
	int fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return;
	(void) unlinkat(fd, JOURNAL, 0);
	(void) unlinkat(fd, J->kept.file, 0);
	for (size_t i = 0; i < J->n_removed; i++)
		(void) unlinkat(fd, J->removed[i].file, 0);
	for (size_t i = 0; i < J->n_groups; i++)
		(void) unlinkat(fd, J->groups[i].file, 0);
	close(fd);
	(void) rmdir(J->dir);
}

int ks_dup_journal_read_copy(const dup_journal *J, const dup_jentry *en, char **ret,
			     size_t *ret_len)
{
	int fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	r = ks_fs_read_file(fd, en->file, KS_CARD_MAX, ret, ret_len);
	close(fd);
	return r;
}

/* The newest merge of account (any for NULL) that can be undone, by its journal. */
int ks_dup_journal_find_last(ks_engine *e, const ks_config *c, const char *account,
			     dup_journal *ret)
{
	dup_journal best = {};
	int r = 0;

	for (size_t a = 0; r >= 0 && a < c->n_accounts; a++) {
		const char *name = c->accounts[a].name;
		_cleanup_free_ char *root = NULL;
		DIR *books;
		struct dirent *be;

		if (account && *account && strcmp(account, name) != 0)
			continue;
		if (asprintf(&root, "%s/conflicts/%s/contacts", e->data_dir, name) < 0)
			return -ENOMEM;
		books = opendir(root);
		if (!books)
			continue;
		while (r >= 0 && (be = readdir(books))) {
			_cleanup_free_ char *bdir = NULL;
			DIR *merges;
			struct dirent *me;

			if (be->d_name[0] == '.')
				continue;
			if (asprintf(&bdir, "%s/%s", root, be->d_name) < 0) {
				r = -ENOMEM;
				break;
			}
			merges = opendir(bdir);
			if (!merges)
				continue;
			while (r >= 0 && (me = readdir(merges))) {
				_cleanup_free_ char *mdir = NULL;
				dup_journal J = {};

				if (strncmp(me->d_name, "merge-", 6) != 0)
					continue;
				if (asprintf(&mdir, "%s/%s", bdir, me->d_name) < 0) {
					r = -ENOMEM;
					break;
				}
				/* A journal that cannot be read is not a merge to undo. */
				if (journal_load(mdir, &J) < 0)
					continue;
				if ((strcmp(J.state, "done") == 0 || strcmp(J.state, "partial") == 0 ||
				     strcmp(J.state, "undoing") == 0) &&
				    strcmp(J.account, name) == 0 &&
				    (!best.dir || J.time_ns > best.time_ns)) {
					ks_dup_journal_done(&best);
					best = J;
				} else
					ks_dup_journal_done(&J);
			}
			closedir(merges);
		}
		closedir(books);
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
	*J = (dup_journal) {};
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

static int journal_load(const char *dir, dup_journal *ret)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	dup_journal J = {};
	size_t len = 0;
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = ks_fs_read_file(fd, JOURNAL, KS_JSON_MAX_TEXT, &text, &len);
	close(fd);
	if (r < 0)
		return r;
	r = ks_json_parse(text, len, &j, NULL);
	if (r < 0)
		return r;
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
