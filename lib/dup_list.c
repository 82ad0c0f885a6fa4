/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dup_p.h"
#include "dup_plan_p.h"
#include "engine_p.h"
#include "json_p.h"
#include "ksync.h"
#include "macro.h"
#include "text_p.h"
#include "vcard_p.h"

/* Duplicate contacts in the synced address books: their groups listed, one group's merge
 * worked out (the plan lib/dup_apply.c carries out) and shown. The cards are read from the
 * cache, which holds the server's bytes. */

typedef int (*book_fn)(dup_book *b, void *userdata);

typedef struct list_ctx {
	ks_json_writer *w;
	size_t cards;
} list_ctx;

typedef struct find_ctx {
	const char *id;
	dup_plan *p;
	bool found;
} find_ctx;

static int list_book(dup_book *b, void *userdata);
static int write_group(ks_json_writer *w, const dup_book *b, size_t g);
static void write_strings(ks_json_writer *w, const char *key, char *const *v, size_t n);
static void write_why(ks_json_writer *w, unsigned why);
static void write_book_fields(ks_json_writer *w, const dup_book *b, const char *id);
static int find_book(dup_book *b, void *userdata);
static int foreach_book(ks_engine *e, const ks_config *c, const char *account,
			const char *collection, book_fn fn, void *userdata, char **reterr_msg);
static bool collection_named(const ks_collection *col, const char *name);
static int book_load(ks_engine *e, const char *account, const ks_collection *col,
		     dup_book *ret);
static int on_item(const char *href, const char *etag, const char *uid, const char *filename,
		   const char *data, size_t len, void *userdata);
static size_t book_reference(const dup_book *b, size_t g);
static int book_group_id(const dup_book *b, size_t g, char **ret);

int ks_dup_list_json(ks_engine *e, const ks_config *c, const char *account,
		     const char *collection, char **ret_json, char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;
	list_ctx L = { .w = &w };
	int r;

	assert(e && c && ret_json);
	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "groups");
	ks_json_write_array_begin(&w);
	r = foreach_book(e, c, account, collection, list_book, &L, reterr_msg);
	if (r < 0)
		return r;
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "addressbooks");
	ks_json_write_int(&w, r);
	ks_json_write_key(&w, "cards");
	ks_json_write_uint(&w, L.cards);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0)
		return r;
	*ret_json = ks_buf_steal(&buf);
	return *ret_json ? 0 : -ENOMEM;
}

int ks_dup_show_json(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     char **ret_json, char **reterr_msg)
{
	_cleanup_(ks_dup_plan_done) dup_plan p = {};
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;
	int r;

	assert(e && c && ret_json);
	r = ks_dup_plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r < 0)
		return r;
	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	ks_dup_write_plan(&w, &p);
	ks_json_write_object_end(&w);
	return ks_dup_finish_json(&w, &buf, ret_json);
}

/* ---- one group ---------------------------------------------------------------------------- */

int ks_dup_plan_make(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     dup_plan *ret, char **reterr_msg)
{
	_cleanup_(ks_dup_plan_done) dup_plan p = {};
	_cleanup_free_ char *coll = NULL;
	const char *colon = id ? strrchr(id, ':') : NULL;
	find_ctx F = { .id = id, .p = &p };
	int r;

	if (!colon || colon == id || strlen(colon + 1) != 8)
		return ks_set_error(reterr_msg, -EINVAL, "'%s' is not a group id (ADDRESSBOOK:XXXXXXXX, "
			       "as 'ksyncctl duplicates' lists them)", id ? id : "");
	coll = strndup(id, (size_t) (colon - id));
	if (!coll)
		return -ENOMEM;
	r = foreach_book(e, c, NULL, coll, find_book, &F, reterr_msg);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "no group '%s': no address book '%s' is synced", id,
			       coll);
	if (r < 0)
		return r;
	if (!F.found)
		return ks_set_error(reterr_msg, -ENOENT, "no group '%s': its cards changed since it was "
			       "listed, or it was merged; list the duplicates again", id);

	dup_book *b = &p.b;
	size_t n = b->g.start[p.g + 1] - b->g.start[p.g];
	p.ref = book_reference(b, p.g);
	if (keep_uid && *keep_uid) {
		bool in = false;
		for (size_t k = b->g.start[p.g]; k < b->g.start[p.g + 1]; k++)
			if (strcmp(b->items[b->g.members[k]].uid, keep_uid) == 0) {
				p.ref = b->g.members[k];
				in = true;
			}
		if (!in)
			return ks_set_error(reterr_msg, -EINVAL, "no card with UID '%s' in group %s",
				       keep_uid, id);
	}
	p.members = calloc(n, sizeof(size_t));
	_cleanup_free_ const char **data = calloc(n, sizeof(char *));
	_cleanup_free_ size_t *len = calloc(n, sizeof(size_t));
	_cleanup_free_ const char **old = calloc(n, sizeof(char *));
	if (!p.members || !data || !len || !old)
		return -ENOMEM;
	p.members[p.n_members++] = p.ref;
	for (size_t k = b->g.start[p.g]; k < b->g.start[p.g + 1]; k++)
		if (b->g.members[k] != p.ref)
			p.members[p.n_members++] = b->g.members[k];
	for (size_t i = 0; i < n; i++) {
		data[i] = b->items[p.members[i]].data;
		len[i] = b->items[p.members[i]].len;
		if (i > 0)
			old[i - 1] = b->items[p.members[i]].uid;
	}
	r = ks_dup_merge_cards(data, len, n, 0, &p.merged);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot merge the cards of %s: %s", id, strerror(-r));

	/* Group cards that name a card going away name the kept one instead. */
	for (size_t i = 0; i < b->n; i++) {
		char *nd = NULL;
		size_t nl = 0;
		if (!b->cards[i].is_group)
			continue;
		r = ks_dup_rewrite_members(b->items[i].data, b->items[i].len, old, n - 1,
					   b->items[p.ref].uid, &nd, &nl);
		if (r == -ENOMEM)
			return r;
		if (r <= 0)
			continue;
		size_t k = p.n_groups;
		size_t *ng = realloc(p.groups, (k + 1) * sizeof(size_t));
		if (ng)
			p.groups = ng;
		char **nda = realloc(p.group_data, (k + 1) * sizeof(char *));
		if (nda)
			p.group_data = nda;
		size_t *nla = realloc(p.group_len, (k + 1) * sizeof(size_t));
		if (nla)
			p.group_len = nla;
		if (!ng || !nda || !nla) {
			free(nd);
			return -ENOMEM;
		}
		p.groups[k] = i;
		p.group_data[k] = nd;
		p.group_len[k] = nl;
		p.n_groups++;
	}
	*ret = p;
	p = (dup_plan) {};
	return 0;
}

void ks_dup_plan_done(dup_plan *p)
{
	for (size_t i = 0; i < p->n_groups; i++)
		free(p->group_data[i]);
	free(p->groups);
	free(p->group_data);
	free(p->group_len);
	free(p->members);
	free(p->id);
	ks_dup_merged_done(&p->merged);
	ks_dup_book_done(&p->b);
	*p = (dup_plan) {};
}

void ks_dup_write_plan(ks_json_writer *w, const dup_plan *p)
{
	const dup_book *b = &p->b;

	write_book_fields(w, b, p->id);
	write_why(w, b->g.why[p->g]);
	ks_json_write_key(w, "reference");
	ks_json_write_string(w, b->items[p->ref].uid);
	ks_json_write_key(w, "cards");
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < p->n_members; i++) {
		const dup_book_item *it = &b->items[p->members[i]];
		unsigned adds = 0;
		for (size_t l = 0; l < p->merged.n_lines; l++)
			if (p->merged.lines[l].added && p->merged.lines[l].from == i)
				adds++;
		ks_json_write_object_begin(w);
		ks_json_write_key(w, "uid");
		ks_json_write_string(w, it->uid);
		ks_json_write_key(w, "name");
		ks_json_write_string(w, b->cards[p->members[i]].name);
		ks_json_write_key(w, "file");
		ks_json_write_string(w, it->filename);
		ks_json_write_key(w, "reference");
		ks_json_write_bool(w, i == 0);
		ks_json_write_key(w, "adds");
		ks_json_write_uint(w, adds);
		ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	ks_json_write_key(w, "lines");
	ks_json_write_array_begin(w);
	for (size_t l = 0; l < p->merged.n_lines; l++) {
		const ks_dup_line *ln = &p->merged.lines[l];
		ks_json_write_object_begin(w);
		ks_json_write_key(w, "text");
		ks_json_write_string(w, ln->text);
		ks_json_write_key(w, "from");
		if (ln->from == SIZE_MAX)
			ks_json_write_null(w);
		else
			ks_json_write_string(w, b->items[p->members[ln->from]].uid);
		ks_json_write_key(w, "added");
		ks_json_write_bool(w, ln->added);
		ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	ks_json_write_key(w, "merged");
	ks_json_write_string_len(w, p->merged.data, p->merged.len);
	ks_json_write_key(w, "group_cards");
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < p->n_groups; i++)
		ks_json_write_string(w, b->items[p->groups[i]].uid);
	ks_json_write_array_end(w);
}

int ks_dup_finish_json(ks_json_writer *w, ks_buf *buf, char **ret)
{
	int r = ks_json_writer_finish(w);

	if (r < 0)
		return r;
	*ret = ks_buf_steal(buf);
	return *ret ? 0 : -ENOMEM;
}

char *ks_dup_label(const dup_book *b, size_t i)
{
	char *s;

	if (asprintf(&s, "the card '%s' (UID %s)", b->cards[i].name ? b->cards[i].name : "",
		     b->items[i].uid) < 0)
		return NULL;
	return s;
}

static int find_book(dup_book *b, void *userdata)
{
	find_ctx *F = userdata;

	if (F->found)
		return 0;
	for (size_t g = 0; g < b->g.n_groups; g++) {
		_cleanup_free_ char *id = NULL;
		int r = book_group_id(b, g, &id);
		if (r < 0)
			return r;
		if (strcmp(id, F->id) != 0)
			continue;
		F->found = true;
		F->p->b = *b;
		*b = (dup_book) {};
		F->p->g = g;
		F->p->id = TAKE_PTR(id);
		return 0;
	}
	return 0;
}

/* ---- listing ------------------------------------------------------------------------------ */

static int list_book(dup_book *b, void *userdata)
{
	list_ctx *L = userdata;
	int r = 0;

	L->cards += b->n;
	for (size_t g = 0; r >= 0 && g < b->g.n_groups; g++)
		r = write_group(L->w, b, g);
	return r;
}

static int write_group(ks_json_writer *w, const dup_book *b, size_t g)
{
	_cleanup_free_ char *id = NULL;
	size_t n = b->g.start[g + 1] - b->g.start[g], ref = book_reference(b, g);
	_cleanup_free_ ks_vcard **parsed = calloc(n + 1, sizeof(ks_vcard *));
	_cleanup_free_ size_t *n_parsed = calloc(n + 1, sizeof(size_t));
	char **differs = NULL;
	size_t n_differs = 0;
	int r;

	if (!parsed || !n_parsed)
		return -ENOMEM;
	r = book_group_id(b, g, &id);
	if (r < 0)
		return r;
	for (size_t k = 0; r >= 0 && k < n; k++) {
		const dup_book_item *it = &b->items[b->g.members[b->g.start[g] + k]];
		r = ks_vcard_parse(it->data, it->len, &parsed[k], &n_parsed[k], NULL);
		if (r == -ENOMEM)
			break;
		r = 0;
	}
	if (r < 0)
		goto out;
	ks_json_write_object_begin(w);
	write_book_fields(w, b, id);
	write_why(w, b->g.why[g]);
	ks_json_write_key(w, "reference");
	ks_json_write_string(w, b->items[ref].uid);
	r = ks_dup_differing_props(parsed, n, &differs, &n_differs);
	if (r < 0)
		goto out;
	write_strings(w, "differs", differs, n_differs);
	ks_json_write_key(w, "cards");
	ks_json_write_array_begin(w);
	for (size_t k = 0; r >= 0 && k < n; k++) {
		size_t idx = b->g.members[b->g.start[g] + k];
		const dup_book_item *it = &b->items[idx];
		const ks_dup_card *card = &b->cards[idx];

		ks_json_write_object_begin(w);
		ks_json_write_key(w, "uid");
		ks_json_write_string(w, it->uid);
		ks_json_write_key(w, "href");
		ks_json_write_string(w, it->href);
		ks_json_write_key(w, "file");
		ks_json_write_string(w, it->filename);
		ks_json_write_key(w, "name");
		ks_json_write_string(w, card->name);
		ks_json_write_key(w, "org");
		ks_json_write_string(w, card->org);
		write_strings(w, "emails", card->emails, card->n_emails);
		write_strings(w, "phones", card->phones, card->n_phones);
		ks_json_write_key(w, "properties");
		ks_json_write_uint(w, card->n_props);
		ks_json_write_key(w, "reference");
		ks_json_write_bool(w, idx == ref);
		ks_json_write_key(w, "fields");
		ks_json_write_object_begin(w);
		for (size_t d = 0; parsed[k] && d < n_differs; d++) {
			ks_json_write_key(w, differs[d]);
			ks_json_write_array_begin(w);
			for (size_t i = 0; i < parsed[k]->n_props; i++) {
				const ks_vcard_prop *p = &parsed[k]->props[i];
				if (strcmp(p->name, differs[d]) != 0)
					continue;
				_cleanup_free_ char *t = ks_dup_display_value(p);
				if (!t) {
					r = -ENOMEM;
					break;
				}
				ks_json_write_string(w, t);
			}
			ks_json_write_array_end(w);
		}
		ks_json_write_object_end(w);
		r = r < 0 ? r : ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	r = r < 0 ? r : ks_json_write_object_end(w);
out:
	for (size_t k = 0; k < n; k++)
		ks_vcard_free_array(parsed[k], n_parsed[k]);
	for (size_t d = 0; d < n_differs; d++)
		free(differs[d]);
	free(differs);
	return r;
}

static void write_strings(ks_json_writer *w, const char *key, char *const *v, size_t n)
{
	ks_json_write_key(w, key);
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < n; i++)
		ks_json_write_string(w, v[i]);
	ks_json_write_array_end(w);
}

static void write_why(ks_json_writer *w, unsigned why)
{
	ks_json_write_key(w, "why");
	ks_json_write_array_begin(w);
	if (why & KS_DUP_BY_NAME)
		ks_json_write_string(w, "name");
	if (why & KS_DUP_BY_EMAIL)
		ks_json_write_string(w, "email");
	if (why & KS_DUP_BY_PHONE)
		ks_json_write_string(w, "phone");
	ks_json_write_array_end(w);
}

static void write_book_fields(ks_json_writer *w, const dup_book *b, const char *id)
{
	ks_json_write_key(w, "id");
	ks_json_write_string(w, id);
	ks_json_write_key(w, "account");
	ks_json_write_string(w, b->account);
	ks_json_write_key(w, "collection");
	ks_json_write_string(w, b->col.name);
	ks_json_write_key(w, "displayname");
	ks_json_write_string(w, b->col.displayname);
	ks_json_write_key(w, "readonly");
	ks_json_write_bool(w, b->col.readonly);
}

/* ---- address books in the cache ----------------------------------------------------------- */

/* Calls fn for every enabled address book of account (all of c's for NULL or "") named
 * collection (all for NULL or ""). Returns how many were visited, or fn's negative value. */
static int foreach_book(ks_engine *e, const ks_config *c, const char *account,
			const char *collection, book_fn fn, void *userdata, char **reterr_msg)
{
	int visited = 0, r = 0;

	if (account && *account && !ks_config_find_account(c, account))
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	for (size_t a = 0; r >= 0 && a < c->n_accounts; a++) {
		const char *name = c->accounts[a].name;
		ks_collection *cols = NULL;
		size_t n_cols = 0;

		if (account && *account && strcmp(account, name) != 0)
			continue;
		r = ks_cache_list_collections(e->cache, name, &cols, &n_cols);
		for (size_t i = 0; r >= 0 && i < n_cols; i++) {
			dup_book b = {};
			if (cols[i].kind != KS_COLLECTION_ADDRESSBOOK || !cols[i].enabled ||
			    !collection_named(&cols[i], collection))
				continue;
			r = book_load(e, name, &cols[i], &b);
			if (r >= 0) {
				visited++;
				r = fn(&b, userdata);
			}
			ks_dup_book_done(&b);
		}
		ks_collection_free_array(cols, n_cols);
	}
	if (r < 0)
		return r;
	if (visited == 0 && collection && *collection)
		return ks_set_error(reterr_msg, -ENOENT, "no address book '%s'%s%s", collection,
			       account && *account ? " in account " : "",
			       account && *account ? account : "");
	return visited;
}

static bool collection_named(const ks_collection *col, const char *name)
{
	if (!name || !*name)
		return true;
	if (strncmp(name, "contacts/", 9) == 0)
		name += 9;
	return strcmp(col->name, name) == 0;
}

static int book_load(ks_engine *e, const char *account, const ks_collection *col, dup_book *ret)
{
	dup_book b = { .account = account };
	int r;

	b.col = *col;
	b.col.account = col->account ? strdup(col->account) : NULL;
	b.col.href = strdup(col->href);
	b.col.name = strdup(col->name);
	b.col.displayname = col->displayname ? strdup(col->displayname) : NULL;
	b.col.color = b.col.description = b.col.sync_token = b.col.ctag = NULL;
	if (!b.col.href || !b.col.name) {
		ks_dup_book_done(&b);
		return -ENOMEM;
	}
	r = ks_cache_begin_read(e->cache);
	if (r >= 0) {
		r = ks_cache_foreach_item_data(e->cache, col->id, on_item, &b);
		ks_cache_end_read(e->cache);
	}
	if (r >= 0) {
		b.cards = calloc(b.n + 1, sizeof(*b.cards));
		b.uids = calloc(b.n + 1, sizeof(*b.uids));
		b.lens = calloc(b.n + 1, sizeof(*b.lens));
		if (!b.cards || !b.uids || !b.lens)
			r = -ENOMEM;
	}
	for (size_t i = 0; r >= 0 && i < b.n; i++) {
		b.uids[i] = b.items[i].uid;
		b.lens[i] = b.items[i].len;
		r = ks_dup_card_parse(b.items[i].data, b.items[i].len, &b.cards[i]);
		if (r != -ENOMEM && r < 0) {
			/* What cannot be read is never offered for a merge. */
			b.cards[i] = (ks_dup_card) { .is_group = true };
			r = 0;
		}
	}
	if (r >= 0)
		r = ks_dup_find_groups(b.cards, b.n, &b.g);
	if (r < 0) {
		ks_dup_book_done(&b);
		return r;
	}
	*ret = b;
	return 0;
}

static int on_item(const char *href, const char *etag, const char *uid, const char *filename,
		   const char *data, size_t len, void *userdata)
{
	dup_book *b = userdata;
	dup_book_item *ni = ks_array_grow(b->items, &b->cap, b->n, sizeof(*ni));

	if (!ni)
		return -ENOMEM;
	b->items = ni;
	dup_book_item *it = &b->items[b->n];
	*it = (dup_book_item) {
		.href = strdup(href ? href : ""), .etag = etag ? strdup(etag) : NULL,
		.uid = strdup(uid ? uid : href ? href : ""), .filename = strdup(filename ? filename : ""),
		.data = malloc(len + 1), .len = len,
	};
	b->n++;
	if (!it->href || (etag && !it->etag) || !it->uid || !it->filename || !it->data)
		return -ENOMEM;
	memcpy(it->data, data, len);
	it->data[len] = 0;
	return 0;
}

void ks_dup_book_done(dup_book *b)
{
	for (size_t i = 0; i < b->n; i++) {
		dup_book_item *it = &b->items[i];
		free(it->href);
		free(it->etag);
		free(it->uid);
		free(it->filename);
		free(it->data);
		if (b->cards)
			ks_dup_card_done(&b->cards[i]);
	}
	free(b->items);
	free(b->cards);
	free(b->uids);
	free(b->lens);
	ks_dup_groups_done(&b->g);
	ks_collection_done(&b->col);
	*b = (dup_book) {};
}

static size_t book_reference(const dup_book *b, size_t g)
{
	return ks_dup_default_reference(&b->g, g, b->cards, b->lens, b->uids);
}

/* "<book>:<8 hex>" of group g. */
static int book_group_id(const dup_book *b, size_t g, char **ret)
{
	return ks_dup_group_id(&b->g, g, b->uids, b->account, b->col.href, b->col.name, ret);
}
