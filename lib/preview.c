/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf_p.h"
#include "engine_p.h"
#include "json_p.h"
#include "limits.h"
#include "macro.h"
#include "scan_p.h"
#include "secret_p.h"
#include "text_p.h"

/* What a sync would do, found without doing it: the local side by the same scan a run makes
 * (read-only), the server's by the listing a run would ask for (a sync-collection REPORT
 * from the stored token, or a PROPFIND of every etag), compared with the cache. Nothing is
 * written anywhere and nothing is sent but those two requests per collection. */

/* Names shown per list; the counts are complete. */
#define PREVIEW_NAMES_MAX 50

typedef struct name_list {
	char **v;
	size_t n;
} name_list;

typedef struct preview {
	ks_engine *e;
	ks_remote *remote;
	const ks_collection *col;
	bool full;		/* a listing of everything: what it leaves out is gone */
	bool truncated;
	name_list fetch_new, fetch_changed, gone, seen;
	name_list send, remove, merge, refused;
	char **modified_hrefs;	/* hrefs of items edited here, for the merges */
	size_t n_modified;
	int error;
} preview;

static void list_done(name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	*l = (name_list) {};
}

static int list_add(name_list *l, const char *s)
{
	char **n = realloc(l->v, (l->n + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	l->v = n;
	if (!(l->v[l->n] = strdup(s)))
		return -ENOMEM;
	l->n++;
	return 0;
}

static bool list_has(const name_list *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return true;
	return false;
}

static void preview_done(preview *p)
{
	list_done(&p->fetch_new);
	list_done(&p->fetch_changed);
	list_done(&p->gone);
	list_done(&p->seen);
	list_done(&p->send);
	list_done(&p->remove);
	list_done(&p->merge);
	list_done(&p->refused);
	for (size_t i = 0; i < p->n_modified; i++)
		free(p->modified_hrefs[i]);
	free(p->modified_hrefs);
}

/* The name a user knows an item by: its file, or for one new to ksync the href's last
 * segment. */
static int item_name(preview *p, const char *href, const ks_cache_item *it, char **ret)
{
	if (it && it->filename)
		return (*ret = strdup(it->filename)) ? 0 : -ENOMEM;
	return ks_href_basename(href, ret);
}

static bool edited_here(const preview *p, const char *href)
{
	for (size_t i = 0; i < p->n_modified; i++)
		if (strcmp(p->modified_hrefs[i], href) == 0)
			return true;
	return false;
}

static int on_member(const ks_remote_member *r, void *userdata)
{
	preview *p = userdata;
	_cleanup_free_ char *href = NULL, *name = NULL;
	ks_cache_item it = {};
	int k;

	if (!r->href[0]) {
		p->truncated |= r->status == 507;
		return 0;
	}
	k = ks_href_normalize(ks_remote_base_url(p->remote), r->href, &href);
	if (k == -ENOMEM)
		return k;
	size_t n = strlen(p->col->href);
	if (k < 0 || strncmp(href, p->col->href, n) != 0 || !href[n] || strchr(href + n, '/')) {
		if (k >= 0 && strcmp(href, p->col->href) == 0)
			p->truncated |= r->status == 507;
		return 0;
	}
	k = ks_cache_get_item(p->e->cache, p->col->id, href, &it);
	if (k < 0 && k != -ENOENT)
		return k;
	bool known = k >= 0;
	if (r->status == 404 || r->status == 410) {
		if (known && (k = item_name(p, href, &it, &name)) >= 0)
			k = list_add(&p->gone, name);
		ks_cache_item_done(&it);
		return k < 0 ? k : 0;
	}
	if (r->status && (r->status < 200 || r->status >= 300)) {
		ks_cache_item_done(&it);
		return 0;
	}
	if (p->full && (k = list_add(&p->seen, href)) < 0) {
		ks_cache_item_done(&it);
		return k;
	}
	bool same = known && r->etag && it.etag && strcmp(it.etag, r->etag) == 0;
	if (!known && r->etag) {
		/* An event the time window left out, unchanged: the sync leaves it be. */
		_cleanup_free_ char *etag = NULL;
		k = ks_cache_get_outside(p->e->cache, p->col->id, href, &etag);
		if (k < 0 && k != -ENOENT)
			return k;
		if (k >= 0 && etag && strcmp(etag, r->etag) == 0)
			return 0;
	}
	k = same ? 0 : item_name(p, href, known ? &it : NULL, &name);
	if (k >= 0 && !same)
		k = list_add(!known ? &p->fetch_new : edited_here(p, href) ? &p->merge
								    : &p->fetch_changed, name);
	ks_cache_item_done(&it);
	return k < 0 ? k : 0;
}

/* Cache items a full listing did not name: they are gone from the server. */
static int on_cached(const char *href, const char *etag, const char *filename, void *userdata)
{
	preview *p = userdata;

	if (list_has(&p->seen, href))
		return 0;
	return list_add(&p->gone, filename);
}

/* The listing the run would make: sync-collection from the stored token, or (no token, a
 * token the server no longer knows, no sync-collection) every member with its etag. */
static int list_server(preview *p, bool force, char **reterr_msg)
{
	const ks_collection *col = p->col;
	ks_remote_reply reply = {};
	int r;

	if (col->supports_sync && col->sync_token && !force) {
		r = ks_remote_list(p->remote, col->href, true, col->sync_token, on_member, p, &reply);
		if (r >= 0 || !ks_pull_token_rejected(&reply)) {
			if (r < 0)
				ks_set_error(reterr_msg, r, "%s", reply.errmsg[0] ? reply.errmsg
										 : strerror(-r));
			ks_remote_reply_done(&reply);
			return r;
		}
		ks_remote_reply_done(&reply);
		list_done(&p->fetch_new);
		list_done(&p->fetch_changed);
		list_done(&p->gone);
		list_done(&p->merge);
	}
	p->full = true;
	r = ks_remote_list(p->remote, col->href, false, NULL, on_member, p, &reply);
	if (r < 0)
		ks_set_error(reterr_msg, r, "%s", reply.errmsg[0] ? reply.errmsg : strerror(-r));
	ks_remote_reply_done(&reply);
	if (r >= 0)
		r = ks_cache_foreach_item(p->e->cache, col->id, on_cached, p);
	return r;
}

/* The local side: the run's scan, read-only. Changes a refusal still covers are not sent. */
static int scan_local(preview *p, const ks_account_config *a)
{
	ks_scan_result sr = {};
	ks_refusal *rf = NULL;
	size_t n_rf = 0;
	int fd, r;

	r = ks_engine_open_collection_dir(p->e, a->name, p->col, false, &fd, NULL);
	if (r == -ENOENT)
		return 0;	/* the run makes it, or stops at a missing directory */
	if (r < 0)
		return r;
	r = ks_scan_collection(p->e->cache, p->col->id, fd,
			       p->col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics", true,
			       &sr);
	close(fd);
	if (r < 0)
		return r;
	(void) ks_cache_list_refusals(p->e->cache, p->col->id, &rf, &n_rf);
	for (size_t i = 0; r >= 0 && i < sr.n_changes; i++) {
		const ks_local_change *ch = &sr.changes[i];
		if (ch->kind == KS_LOCAL_IGNORED)
			continue;
		bool refused = false;
		for (size_t k = 0; k < n_rf && !refused; k++)
			refused = strcmp(rf[k].filename, ch->filename) == 0 &&
				  (ch->kind == KS_LOCAL_DELETED ? rf[k].op == KS_INTENT_DELETE
				   : rf[k].hash && strcmp(rf[k].hash, ch->hash) == 0);
		if (refused)
			r = list_add(&p->refused, ch->filename);
		else if (ch->kind == KS_LOCAL_DELETED)
			r = list_add(&p->remove, ch->filename);
		else
			r = list_add(&p->send, ch->filename);
		if (r >= 0 && ch->kind == KS_LOCAL_MODIFIED && ch->href) {
			char **n = realloc(p->modified_hrefs, (p->n_modified + 1) * sizeof(*n));
			if (!n || !(n[p->n_modified] = strdup(ch->href)))
				r = -ENOMEM;
			if (n)
				p->modified_hrefs = n;
			if (r >= 0)
				p->n_modified++;
		}
	}
	ks_refusals_free(rf, n_rf);
	ks_scan_result_done(&sr);
	return r;
}

static void write_list(ks_json_writer *w, const char *key, const name_list *l)
{
	ks_json_write_key(w, key);
	ks_json_write_int(w, (int64_t) l->n);
	char names[64];
	snprintf(names, sizeof(names), "%s_names", key);
	ks_json_write_key(w, names);
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < l->n && i < PREVIEW_NAMES_MAX; i++)
		ks_json_write_string(w, l->v[i]);
	ks_json_write_array_end(w);
}

static bool in_scope(const ks_collection *col, const char *only)
{
	const char *kind = col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts/" : "calendars/";

	if (!only)
		return true;
	if (strncmp(only, kind, strlen(kind)) == 0)
		only += strlen(kind);
	return strcmp(only, col->name) == 0;
}

int ks_sync_preview(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o,
		    char **ret_json, char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	_cleanup_free_ char *why = NULL;
	ks_collection *cols = NULL;
	ks_remote *remote = o ? o->remote : NULL;
	char *password = NULL;
	size_t n = 0;
	ks_json_writer w;
	int r;

	r = ks_cache_list_collections(e->cache, a->name, &cols, &n);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot read the cache: %s", strerror(-r));
	r = remote ? 0 : ks_secret_get(a, o ? o->cancel : NULL, &password, &why);
	if (r < 0 && r != -ENOKEY) {
		r = ks_set_error(reterr_msg, r, "cannot get the password: %s",
				 why ? why : strerror(-r));
		goto out;
	}
	free(why);
	why = NULL;
	r = remote ? 0 : ks_remote_dav_new(a, password, &remote, &why);
	password = ks_secret_free(password);
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));
		goto out;
	}
	ks_json_writer_init(&w, &b, false);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "account");
	ks_json_write_string(&w, a->name);
	/* A first sync lists the server's collections, which the cache does not know yet. */
	ks_json_write_key(&w, "first_sync");
	ks_json_write_bool(&w, n == 0);
	ks_json_write_key(&w, "collections");
	ks_json_write_array_begin(&w);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const ks_collection *col = &cols[i];
		_cleanup_free_ char *err = NULL;
		preview p = { .e = e, .remote = remote, .col = col };
		char path[KS_NAME_MAX + 16];

		if (!col->enabled || !in_scope(col, o ? o->only_collection : NULL))
			continue;
		snprintf(path, sizeof(path), "%s/%s",
			 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
			 col->name);
		r = scan_local(&p, a);
		if (r >= 0) {
			int k = list_server(&p, o && o->force, &err);
			if (k == -ENOMEM)
				r = k;
			else if (k < 0 && !err)
				err = strdup(strerror(-k));
		}
		if (r < 0) {
			preview_done(&p);
			break;
		}
		ks_json_write_object_begin(&w);
		ks_json_write_key(&w, "path");
		ks_json_write_string(&w, path);
		ks_json_write_key(&w, "readonly");
		ks_json_write_bool(&w, col->readonly);
		write_list(&w, "fetch_new", &p.fetch_new);
		write_list(&w, "fetch_changed", &p.fetch_changed);
		write_list(&w, "delete_here", &p.gone);
		write_list(&w, "send", &p.send);
		write_list(&w, "delete_on_server", &p.remove);
		write_list(&w, "merge", &p.merge);
		write_list(&w, "refused", &p.refused);
		/* The guard's rule, against the collection as it is (the run also counts what
		 * the last hour deleted). */
		int items = ks_cache_count_items(e->cache, col->id);
		size_t del = KS_MAX(p.gone.n, p.remove.n);
		ks_json_write_key(&w, "mass_deletion");
		ks_json_write_bool(&w, items >= 2 && ((items > 10 && del * 2 > (size_t) items) ||
						      del >= (size_t) items));
		ks_json_write_key(&w, "truncated");
		ks_json_write_bool(&w, p.truncated);
		ks_json_write_key(&w, "error");
		ks_json_write_string(&w, err);
		ks_json_write_object_end(&w);
		preview_done(&p);
	}
	ks_json_write_array_end(&w);
	ks_json_write_object_end(&w);
	if (r >= 0)
		r = ks_json_writer_finish(&w);
	if (r >= 0) {
		*ret_json = ks_buf_steal(&b);
		r = *ret_json ? 0 : -ENOMEM;
	}
out:
	if (!o || remote != o->remote)
		ks_remote_free(remote);
	ks_collection_free_array(cols, n);
	return r;
}

/* "a.vcf, b.vcf and 3 more" */
static int put_names(ks_buf *b, const char *label, const ks_json *c, const char *key)
{
	char names_key[64];
	int64_t n = ks_json_get_int(c, key, 0);
	int r = 0;

	snprintf(names_key, sizeof(names_key), "%s_names", key);
	const ks_json *names = ks_json_get(c, names_key);
	if (n <= 0)
		return 0;
	r = ks_buf_printf(b, "    %s: ", label);
	for (size_t i = 0; r >= 0 && i < ks_json_count(names); i++)
		r = ks_buf_printf(b, "%s%s", i ? ", " : "", ks_json_string(ks_json_at(names, i)));
	if (r >= 0 && (size_t) n > ks_json_count(names))
		r = ks_buf_printf(b, " and %lld more", (long long) n - (long long) ks_json_count(names));
	if (r >= 0)
		r = ks_buf_puts(b, "\n");
	return r;
}

int ks_sync_preview_describe(const char *json, bool names, char **ret)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_(ks_buf_done) ks_buf b = {};
	int r = ks_json_parse(json, strlen(json), &j, NULL);

	if (r < 0)
		return r;
	const char *account = ks_json_get_string(j, "account");
	const ks_json *cols = ks_json_get(j, "collections");
	if (ks_json_get_bool(j, "first_sync", false))
		r = ks_buf_printf(&b, "%s: a first sync: every collection of the server would be "
				  "listed and fetched\n", account);
	for (size_t i = 0; r >= 0 && i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *err = ks_json_get_string(c, "error");
		int64_t fn = ks_json_get_int(c, "fetch_new", 0), fc = ks_json_get_int(c, "fetch_changed", 0);
		int64_t dh = ks_json_get_int(c, "delete_here", 0), sn = ks_json_get_int(c, "send", 0);
		int64_t ds = ks_json_get_int(c, "delete_on_server", 0);
		int64_t mg = ks_json_get_int(c, "merge", 0), rf = ks_json_get_int(c, "refused", 0);
		bool any = false;

		r = ks_buf_printf(&b, "%s/%s: ", account, ks_json_get_string(c, "path"));
		if (r >= 0 && err) {
			r = ks_buf_printf(&b, "cannot tell: %s\n", err);
			continue;
		}
		if (r >= 0 && (fn || fc || dh)) {
			r = ks_buf_printf(&b, "would fetch %lld new, %lld changed, delete %lld here",
					  (long long) fn, (long long) fc, (long long) dh);
			any = true;
		}
		if (r >= 0 && (sn || ds)) {
			r = ks_buf_printf(&b, "%swould send %lld, delete %lld on the server",
					  any ? "; " : "", (long long) sn, (long long) ds);
			any = true;
		}
		if (r >= 0 && mg) {
			r = ks_buf_printf(&b, "%swould merge %lld changed on both sides", any ? "; " : "",
					  (long long) mg);
			any = true;
		}
		if (r >= 0 && rf) {
			r = ks_buf_printf(&b, "%s%lld refused before, not sent again", any ? "; " : "",
					  (long long) rf);
			any = true;
		}
		if (r >= 0 && !any)
			r = ks_buf_puts(&b, "nothing to do");
		if (r >= 0 && ks_json_get_bool(c, "readonly", false) && (sn || ds))
			r = ks_buf_puts(&b, " (read-only: local changes are kept as conflict copies "
					"instead)");
		if (r >= 0 && ks_json_get_bool(c, "mass_deletion", false))
			r = ks_buf_puts(&b, "; the mass-deletion guard would stop it "
					"(--allow-mass-delete)");
		if (r >= 0 && ks_json_get_bool(c, "truncated", false))
			r = ks_buf_puts(&b, "; the server listed only part of it");
		if (r >= 0)
			r = ks_buf_puts(&b, "\n");
		if (r >= 0 && names) {
			static const struct {
				const char *label, *key;
			} lists[] = {
				{ "new", "fetch_new" }, { "changed", "fetch_changed" },
				{ "delete here", "delete_here" }, { "send", "send" },
				{ "delete on the server", "delete_on_server" }, { "merge", "merge" },
				{ "refused", "refused" },
			};
			for (size_t k = 0; r >= 0 && k < ELEMENTSOF(lists); k++)
				r = put_names(&b, lists[k].label, c, lists[k].key);
		}
	}
	if (r < 0)
		return r;
	*ret = b.data ? ks_buf_steal(&b) : strdup("");
	return *ret ? 0 : -ENOMEM;
}
