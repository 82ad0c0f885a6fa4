/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "item_p.h"
#include "json_p.h"
#include "limits.h"
#include "macro.h"
#include "text_p.h"
#include "vdir_p.h"

/* A conflict is resolved the way any edit is made: the chosen version is written into the
 * item's file (and, for "both", the local version into a new file with a new UID), and the
 * next sync sends it; nothing here talks to the server. */

/* Whether the conflict's copy still exists: a copy the user deleted is a conflict dealt
 * with. */
static bool copy_exists(const ks_conflict_row *row)
{
	return row->kept_path && access(row->kept_path, F_OK) == 0;
}

/* The newest open conflict that item names: its id (as `ksyncctl conflicts` shows it), or
 * ACCOUNT/COLLECTION/FILE where COLLECTION is contacts/NAME, calendars/NAME or NAME. */
static const ks_conflict_row *find_conflict(const ks_conflict_row *rows, size_t n,
					    const char *item)
{
	char *end = NULL;
	long long id = strtoll(item, &end, 10);
	bool numeric = *item && end && *end == 0;

	for (size_t i = 0; i < n; i++) {
		const ks_conflict_row *c = &rows[i];
		if (!copy_exists(c))
			continue;
		if (numeric) {
			if (c->id == id)
				return c;
			continue;
		}
		if (!c->account || !c->collection || !c->filename)
			continue;
		size_t al = strlen(c->account);
		if (strncmp(item, c->account, al) != 0 || item[al] != '/')
			continue;
		const char *rest = item + al + 1;
		const char *bare = strchr(c->collection, '/');
		const char *coll = NULL;
		if (strncmp(rest, c->collection, strlen(c->collection)) == 0)
			coll = c->collection;
		else if (bare && strncmp(rest, bare + 1, strlen(bare + 1)) == 0)
			coll = bare + 1;
		if (!coll || rest[strlen(coll)] != '/')
			continue;
		if (strcmp(rest + strlen(coll) + 1, c->filename) == 0)
			return c;	/* newest first */
	}
	return NULL;
}

/* The cached collection a conflict is in (-ENOENT: gone). */
static int conflict_collection(ks_engine *e, const ks_conflict_row *c, ks_collection *ret)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	int r = ks_cache_list_collections(e->cache, c->account, &cols, &n);

	if (r < 0)
		return r;
	r = -ENOENT;
	for (size_t i = 0; i < n; i++) {
		char label[KS_NAME_MAX + 16];
		snprintf(label, sizeof(label), "%s/%s",
			 cols[i].kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
			 cols[i].name);
		if (strcmp(label, c->collection) != 0)
			continue;
		*ret = cols[i];
		cols[i] = (ks_collection) {};
		r = 0;
		break;
	}
	ks_collection_free_array(cols, n);
	return r;
}

/* Reads the copy at an absolute path below the data directory, following no symbolic
 * link. */
static int read_copy(ks_engine *e, const char *path, char **ret, size_t *ret_len)
{
	size_t dl = strlen(e->data_dir);
	const char *slash = strrchr(path, '/');
	int fd, r;

	if (strncmp(path, e->data_dir, dl) != 0 || path[dl] != '/' || !slash || slash <= path + dl)
		return -EINVAL;
	_cleanup_free_ char *rel = strndup(path + dl + 1, (size_t) (slash - path - dl - 1));
	if (!rel)
		return -ENOMEM;
	r = ks_fs_open_beneath(e->data_dir, rel, false, &fd, NULL);
	if (r < 0)
		return r;
	r = ks_fs_read_file(fd, slash + 1, KS_CARD_MAX, ret, ret_len);
	close(fd);
	return r;
}

static int remove_copy(ks_engine *e, const ks_conflict_row *c)
{
	const char *slash = strrchr(c->kept_path, '/');
	size_t dl = strlen(e->data_dir);
	int fd, r;

	if (!slash || slash <= c->kept_path + dl)
		return -EINVAL;
	_cleanup_free_ char *rel = strndup(c->kept_path + dl + 1,
					   (size_t) (slash - c->kept_path - dl - 1));
	if (!rel)
		return -ENOMEM;
	r = ks_fs_open_beneath(e->data_dir, rel, false, &fd, NULL);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	r = ks_neg_errno(unlinkat(fd, slash + 1, 0));
	if (r == -ENOENT)
		r = 0;
	if (r >= 0)
		r = ks_fs_fsync_dir(fd);
	close(fd);
	return r;
}

/* data with a UID of its own, derived from the copy's path so that resolving again after
 * an interruption writes the same new item rather than a second one. */
static int with_new_uid(const char *data, size_t len, const char *kept_path, char **ret,
			size_t *ret_len, char **ret_uid, char **reterr_msg)
{
	ks_item_info info = {};
	_cleanup_free_ char *why = NULL, *uid = NULL;
	char hex[65];
	int r = ks_item_parse_info(data, len, &info, &why);

	if (r < 0)
		return ks_set_error(reterr_msg, r, "the version to keep as a new item cannot be "
				    "read: %s", why ? why : strerror(-r));
	ks_sha256_hex(kept_path, strlen(kept_path), hex);
	/* A UID of the same shape as the old one when that is short, a fresh one otherwise. */
	if (strlen(info.uid) <= 64)
		r = asprintf(&uid, "%s-%.8s", info.uid, hex);
	else
		r = asprintf(&uid, "ksync-%.32s", hex);
	if (r < 0) {
		ks_item_info_done(&info);
		return -ENOMEM;
	}
	r = ks_item_set_uid(data, len, info.uid, uid, ret, ret_len);
	ks_item_info_done(&info);
	if (r < 0)
		return r;
	*ret_uid = TAKE_PTR(uid);
	return 0;
}

static int answer(const ks_conflict_row *c, const char *keep, const char *new_file,
		  bool changed, char **ret_json)
{
	ks_buf b = {};
	ks_json_writer w;
	int r;

	ks_json_writer_init(&w, &b, false);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "id");
	ks_json_write_int(&w, c->id);
	ks_json_write_key(&w, "account");
	ks_json_write_string(&w, c->account);
	ks_json_write_key(&w, "collection");
	ks_json_write_string(&w, c->collection);
	ks_json_write_key(&w, "file");
	ks_json_write_string(&w, c->filename);
	ks_json_write_key(&w, "kept");
	ks_json_write_string(&w, keep);
	ks_json_write_key(&w, "new_file");
	ks_json_write_string(&w, new_file);
	ks_json_write_key(&w, "changed");
	ks_json_write_bool(&w, changed);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	*ret_json = ks_buf_steal(&b);
	return *ret_json ? 0 : -ENOMEM;
}

static int resolve_locked(ks_engine *e, const ks_conflict_row *c, const char *keep,
			  char **ret_json, char **reterr_msg)
{
	/* The copy holds the side that lost; the file the side that won (or what the user
	 * made of it since). */
	const char *copy_side = c->winner && strcmp(c->winner, "local") == 0 ? "server" : "local";
	const char *file_side = strcmp(copy_side, "local") == 0 ? "server" : "local";
	ks_collection col = {};
	_cleanup_free_ char *copy = NULL, *current = NULL, *fresh = NULL, *uid = NULL,
			    *new_name = NULL;
	size_t copy_len = 0, current_len = 0, fresh_len = 0;
	int dfd = -1, r;

	if (strcmp(keep, file_side) == 0) {
		/* The file holds that version already: only the copy goes. */
		r = remove_copy(e, c);
		if (r >= 0)
			r = ks_cache_delete_conflict(e->cache, c->id);
		if (r < 0)
			return ks_set_error(reterr_msg, r, "cannot remove the copy '%s': %s",
					    c->kept_path, strerror(-r));
		return answer(c, keep, NULL, false, ret_json);
	}
	r = conflict_collection(e, c, &col);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, -ENOENT, "the collection %s of '%s' is gone; copy "
				    "%s into another collection to keep it", c->collection,
				    c->filename, c->kept_path);
	if (r < 0)
		return r;
	if (col.readonly) {
		ks_collection_done(&col);
		return ks_set_error(reterr_msg, -EROFS, "%s is read-only: the server takes no "
				    "version from here; only --keep server resolves this conflict",
				    c->collection);
	}
	r = read_copy(e, c->kept_path, &copy, &copy_len);
	if (r < 0) {
		ks_collection_done(&col);
		return ks_set_error(reterr_msg, r, "cannot read the copy '%s': %s", c->kept_path,
				    strerror(-r));
	}
	r = ks_engine_open_collection_dir(e, c->account, &col, false, &dfd, NULL);
	ks_collection_done(&col);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot open the directory of %s: %s",
				    c->collection, strerror(-r));
	const char *ext = strncmp(c->collection, "contacts/", 9) == 0 ? ".vcf" : ".ics";
	if (strcmp(keep, "both") == 0) {
		/* The local version becomes an item of its own; the item keeps the server's. */
		const char *local = copy;
		size_t local_len = copy_len;
		if (strcmp(copy_side, "server") == 0) {
			r = ks_fs_read_file(dfd, c->filename, KS_CARD_MAX, &current, &current_len);
			if (r < 0) {
				r = ks_set_error(reterr_msg, r, "cannot read '%s': %s", c->filename,
						 strerror(-r));
				goto out;
			}
			local = current;
			local_len = current_len;
		}
		r = with_new_uid(local, local_len, c->kept_path, &fresh, &fresh_len, &uid,
				 reterr_msg);
		if (r < 0)
			goto out;
		_cleanup_free_ char *base = NULL;
		r = ks_vdir_item_name(uid, NULL, &base);
		if (r >= 0 && asprintf(&new_name, "%s%s", base, ext) < 0)
			r = -ENOMEM;
		/* The new file first: were the run cut off after the item's file was written,
		 * the local version would be left only in the copy. */
		if (r >= 0)
			r = ks_fs_write_atomic(dfd, new_name, fresh, fresh_len);
		if (r >= 0 && strcmp(copy_side, "server") == 0)
			r = ks_fs_write_atomic(dfd, c->filename, copy, copy_len);
	} else
		r = ks_fs_write_atomic(dfd, c->filename, copy, copy_len);
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "cannot write into %s: %s", c->collection,
				 strerror(-r));
		goto out;
	}
	/* The version is in the collection now: the copy and the record go. */
	r = remove_copy(e, c);
	if (r >= 0)
		r = ks_cache_delete_conflict(e->cache, c->id);
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "cannot remove the copy '%s': %s", c->kept_path,
				 strerror(-r));
		goto out;
	}
	r = answer(c, keep, new_name, true, ret_json);
out:
	close(dfd);
	return r;
}

int ks_conflict_resolve(ks_engine *e, const char *account, const char *item, const char *keep,
			char **ret_json, char **ret_target, char **reterr_msg)
{
	ks_conflict_row *rows = NULL;
	_cleanup_free_ char *why = NULL, *json = NULL;
	size_t n = 0;
	int lock_fd = -1, r;

	if (strcmp(keep, "local") != 0 && strcmp(keep, "server") != 0 &&
	    strcmp(keep, "both") != 0)
		return ks_set_error(reterr_msg, -EINVAL, "keep 'local', 'server' or 'both', not "
				    "'%s'", keep);
	r = ks_cache_list_conflicts(e->cache, account && *account ? account : NULL, &rows, &n);
	if (r < 0)
		return r;
	const ks_conflict_row *c = find_conflict(rows, n, item);
	if (!c) {
		r = ks_set_error(reterr_msg, -ENOENT, "no open conflict '%s' ('ksyncctl conflicts' "
				 "lists them)", item);
		goto out;
	}
	/* The account's lock keeps a sync from writing the same files meanwhile. */
	r = ks_engine_lock_account(e, c->account, true, &lock_fd, &why);
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));
		goto out;
	}
	r = resolve_locked(e, c, keep, &json, reterr_msg);
	close(lock_fd);
	if (r >= 0 && ret_target) {
		*ret_target = NULL;
		if (strstr(json, "\"changed\":true") &&
		    asprintf(ret_target, "%s/%s", c->account, c->collection) < 0)
			r = -ENOMEM;
	}
	if (r >= 0)
		*ret_json = TAKE_PTR(json);
out:
	ks_conflict_rows_free(rows, n);
	return r;
}
