/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "dup_p.h"
#include "limits.h"
#include "macro.h"
#include "merge_p.h"
#include "text_p.h"
#include "vcard_p.h"

/* Duplicate contacts, the pure part: the card a group's members merge into, group cards that
 * name a removed member, and what differs between the members. No I/O. */

/* A small set of strings (open addressing), for what the merged card holds already. */
typedef struct strset {
	char **slot;
	size_t cap;
	size_t n;
} strset;

typedef struct out_line {
	const ks_vcard_prop *p;
	char *group;		/* owned; replaces p->group when set */
	char *value;		/* owned; replaces p->value when set */
	size_t from;
	bool added;
} out_line;

typedef struct merge_state {
	out_line *lines;
	size_t n, cap;
	strset multi;		/* keys of the multi-valued lines */
	strset single;		/* names of the single-valued properties */
	strset groups;		/* group names in use, upper-case */
	unsigned next_group;
	/* NOTE and the comma lists: where their line is, and what it holds. */
	size_t note_at, cats_at, nick_at;
	ks_buf note;
	strset note_texts;
	ks_buf cats, nick;
	strset cats_items, nick_items;
} merge_state;

typedef struct parsed_card {
	ks_vcard *v;
	size_t n;
} parsed_card;

static void strset_done(strset *s);
static bool strset_has(const strset *s, const char *k);
static int strset_add(strset *s, char *k);
static int loose_value(const char *raw, char **ret);
static int multi_key(const ks_vcard_prop *p, char **ret);
static bool is_meta(const char *name);
static bool is_list_prop(const char *name);
static bool is_companion(const ks_vcard_prop *p);
static bool is_multi(const char *name);
static bool has_encoding(const ks_vcard_prop *p);
static void merge_state_done(merge_state *m);
static int add_line(merge_state *m, const ks_vcard_prop *p, size_t from, bool added,
		    char *group);
static char *upper_dup(const char *s);
static int add_list_items(ks_buf *list, strset *seen, const char *raw);
static int add_note(merge_state *m, const char *raw);
static int merge_prop(merge_state *m, const ks_vcard_prop *p, size_t from, strset *group_map,
		      char ***map_to, size_t *n_map);
static void parsed_free_all(parsed_card *p, size_t n);
static int write_card(const merge_state *m, const char *version, ks_dup_merged *ret);
static const char *after_urn_uuid(const char *s);

int ks_dup_merge_cards(const char *const *data, const size_t *len, size_t n, size_t ref,
		       ks_dup_merged *ret)
{
	_cleanup_(merge_state_done) merge_state m = { .note_at = SIZE_MAX, .cats_at = SIZE_MAX,
						      .nick_at = SIZE_MAX };
	parsed_card *cards = NULL;
	int r = 0;

	assert(data && len && ret);
	if (ref >= n)
		return -EINVAL;
	cards = calloc(n, sizeof(*cards));
	if (!cards)
		return -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ks_vcard_parse(data[i], len[i], &cards[i].v, &cards[i].n, NULL);
	if (r < 0)
		goto out;

	/* The reference as it is, the NOTE and comma lists gathered into their first line. */
	const ks_vcard *rc = &cards[ref].v[0];
	for (size_t i = 0; r >= 0 && i < rc->n_props; i++)
		if (rc->props[i].group) {
			r = strset_add(&m.groups, upper_dup(rc->props[i].group));
			if (r > 0 && strncmp(rc->props[i].group, "item", 4) == 0) {
				unsigned k = (unsigned) strtoul(rc->props[i].group + 4, NULL, 10);
				if (k > m.next_group && k < 100000)
					m.next_group = k;
			}
		}
	for (size_t i = 0; r >= 0 && i < rc->n_props; i++) {
		const ks_vcard_prop *p = &rc->props[i];
		if (strcmp(p->name, "NOTE") == 0 && !has_encoding(p)) {
			r = add_note(&m, p->value);
			if (r >= 0 && m.note_at == SIZE_MAX) {
				r = add_line(&m, p, ref, false, NULL);
				m.note_at = m.n - 1;
			}
			continue;
		}
		if (is_list_prop(p->name) && !has_encoding(p)) {
			bool cats = p->name[0] == 'C';
			size_t *at = cats ? &m.cats_at : &m.nick_at;
			r = add_list_items(cats ? &m.cats : &m.nick,
					   cats ? &m.cats_items : &m.nick_items, p->value);
			if (r >= 0 && *at == SIZE_MAX) {
				r = add_line(&m, p, ref, false, NULL);
				*at = m.n - 1;
			}
			continue;
		}
		if (!is_meta(p->name) && !is_companion(p)) {
			_cleanup_free_ char *k = NULL;
			if (is_multi(p->name)) {
				r = multi_key(p, &k);
				if (r >= 0)
					r = strset_add(&m.multi, TAKE_PTR(k));
			} else
				r = strset_add(&m.single, strdup(p->name));
			if (r < 0)
				break;
		}
		r = add_line(&m, p, ref, false, NULL);
	}

	for (size_t c = 0; r >= 0 && c < n; c++) {
		if (c == ref)
			continue;
		const ks_vcard *v = &cards[c].v[0];
		_cleanup_(strset_done) strset group_map = {};
		char **map = NULL;
		size_t n_map = 0;

		for (size_t i = 0; r >= 0 && i < v->n_props; i++)
			r = merge_prop(&m, &v->props[i], c, &group_map, &map, &n_map);
		/* Companions of the grouped properties that were added. */
		for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
			const ks_vcard_prop *p = &v->props[i];
			if (!is_companion(p))
				continue;
			for (size_t k = 0; r >= 0 && k < n_map; k += 2)
				if (ks_streq_nocase(map[k], p->group))
					r = add_line(&m, p, c, true, strdup(map[k + 1]));
		}
		for (size_t k = 0; k < n_map; k++)
			free(map[k]);
		free(map);
	}
	if (r < 0)
		goto out;

	/* The gathered values replace those of the lines that hold them. */
	struct {
		size_t at;
		ks_buf *b;
	} gathered[] = { { m.note_at, &m.note }, { m.cats_at, &m.cats }, { m.nick_at, &m.nick } };
	for (size_t i = 0; i < ELEMENTSOF(gathered); i++) {
		if (gathered[i].at == SIZE_MAX)
			continue;
		out_line *l = &m.lines[gathered[i].at];
		l->value = ks_buf_steal(gathered[i].b);
		if (!l->value) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = write_card(&m, cards[ref].v[0].version, ret);
out:
	parsed_free_all(cards, n);
	return r < 0 ? r : 0;
}

void ks_dup_merged_done(ks_dup_merged *m)
{
	if (!m)
		return;
	free(m->data);
	for (size_t i = 0; i < m->n_lines; i++)
		free(m->lines[i].text);
	free(m->lines);
	*m = (ks_dup_merged) {};
}

int ks_dup_rewrite_members(const char *data, size_t len, const char *const *old, size_t n_old,
			   const char *keep, char **ret, size_t *ret_len)
{
	_cleanup_(merge_state_done) merge_state m = {};
	ks_vcard *cards = NULL;
	size_t n_cards = 0;
	bool changed = false;
	int r;

	r = ks_vcard_parse(data, len, &cards, &n_cards, NULL);
	if (r < 0)
		return r;
	const ks_vcard *v = &cards[0];
	for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
		const ks_vcard_prop *p = &v->props[i];
		bool member = strcmp(p->name, "MEMBER") == 0 ||
			      strcmp(p->name, "X-ADDRESSBOOKSERVER-MEMBER") == 0;
		_cleanup_free_ char *nv = NULL;

		if (member) {
			const char *val = p->value;
			while (ks_is_trim(*val))
				val++;
			const char *uid = after_urn_uuid(val);
			size_t ul = strlen(uid);
			while (ul > 0 && ks_is_trim(uid[ul - 1]))
				ul--;
			for (size_t k = 0; k < n_old; k++)
				if (strlen(old[k]) == ul && strncmp(old[k], uid, ul) == 0) {
					if (asprintf(&nv, "%.*s%s", (int) (uid - val), val, keep) < 0)
						r = -ENOMEM;
					changed = true;
					break;
				}
			if (r < 0)
				break;
			_cleanup_free_ char *k = NULL;
			if (asprintf(&k, "%s\x1f%s", p->name, after_urn_uuid(nv ? nv : val)) < 0) {
				r = -ENOMEM;
				break;
			}
			r = strset_add(&m.multi, TAKE_PTR(k));
			if (r < 0)
				break;
			if (r == 0) {
				changed = true;
				continue;	/* named twice now */
			}
		}
		r = add_line(&m, p, 0, false, NULL);
		if (r >= 0 && nv)
			m.lines[m.n - 1].value = TAKE_PTR(nv);
	}
	if (r >= 0 && changed) {
		ks_dup_merged out = {};
		r = write_card(&m, v->version, &out);
		if (r >= 0) {
			*ret = TAKE_PTR(out.data);
			*ret_len = out.len;
			ks_dup_merged_done(&out);
			r = 1;
		}
	} else if (r >= 0)
		r = 0;
	ks_vcard_free_array(cards, n_cards);
	return r;
}

typedef struct name_key {
	char *key;		/* "NAME\x1fvalue key" */
	size_t card;
} name_key;

static int name_key_cmp(const void *a, const void *b)
{
	const name_key *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->card < y->card ? -1 : x->card > y->card);
}

static bool listed_prop(const ks_vcard_prop *p)
{
	return !is_meta(p->name) && strncmp(p->name, "X-", 2) != 0;
}

int ks_dup_differing_props(ks_vcard *const *parsed, size_t n, char ***ret, size_t *ret_n)
{
	name_key *keys = NULL;
	size_t n_keys = 0, cap = 0;
	char **names = NULL;
	size_t n_names = 0;
	int r = 0;

	for (size_t c = 0; r >= 0 && c < n; c++) {
		if (!parsed[c])
			continue;
		for (size_t i = 0; r >= 0 && i < parsed[c]->n_props; i++) {
			const ks_vcard_prop *p = &parsed[c]->props[i];
			char *k = NULL;
			if (!listed_prop(p))
				continue;
			r = multi_key(p, &k);
			if (r < 0)
				break;
			name_key *nk = ks_array_grow(keys, &cap, n_keys, sizeof(*nk));
			if (!nk) {
				free(k);
				r = -ENOMEM;
				break;
			}
			keys = nk;
			keys[n_keys++] = (name_key) { k, c };
		}
	}
	if (r >= 0 && n_keys > 1)
		qsort(keys, n_keys, sizeof(*keys), name_key_cmp);
	/* A name differs when one of its values is not on every card. */
	for (size_t i = 0; r >= 0 && i < n_keys;) {
		size_t j = i, cards = 0;
		while (j < n_keys && strcmp(keys[j].key, keys[i].key) == 0) {
			if (j == i || keys[j].card != keys[j - 1].card)
				cards++;
			j++;
		}
		if (cards < n) {
			size_t nl = strcspn(keys[i].key, "\x1f");
			if (!n_names || strlen(names[n_names - 1]) != nl ||
			    strncmp(names[n_names - 1], keys[i].key, nl) != 0) {
				char **nn = realloc(names, (n_names + 1) * sizeof(char *));
				if (!nn || !(nn[n_names] = strndup(keys[i].key, nl))) {
					names = nn ? nn : names;
					r = -ENOMEM;
					break;
				}
				names = nn;
				n_names++;
			}
		}
		i = j;
	}
	for (size_t i = 0; i < n_keys; i++)
		free(keys[i].key);
	free(keys);
	*ret = names;
	*ret_n = n_names;
	return r;
}

static void strset_done(strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slot[i]);
	free(s->slot);
	*s = (strset) {};
}

static uint64_t str_hash(const char *s)
{
	uint64_t h = UINT64_C(1469598103934665603);

	for (; *s; s++)
		h = (h ^ (uint8_t) *s) * UINT64_C(1099511628211);
	return h;
}

static bool strset_has(const strset *s, const char *k)
{
	if (!s->cap)
		return false;
	for (size_t i = str_hash(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slot[i])
			return false;
		if (strcmp(s->slot[i], k) == 0)
			return true;
	}
}

/* Adds k (taking it). Returns 1 when added, 0 when it was there (k freed). */
static int strset_add(strset *s, char *k)
{
	if (!k)
		return -ENOMEM;
	if (strset_has(s, k)) {
		free(k);
		return 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		char **ns = calloc(ncap, sizeof(char *));
		if (!ns) {
			free(k);
			return -ENOMEM;
		}
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->slot[i])
				continue;
			size_t j = str_hash(s->slot[i]) & (ncap - 1);
			while (ns[j])
				j = (j + 1) & (ncap - 1);
			ns[j] = s->slot[i];
		}
		free(s->slot);
		s->slot = ns;
		s->cap = ncap;
	}
	size_t j = str_hash(k) & (s->cap - 1);
	while (s->slot[j])
		j = (j + 1) & (s->cap - 1);
	s->slot[j] = k;
	s->n++;
	return 1;
}

/* A value compared case-insensitively with its blanks collapsed. */
static int loose_value(const char *raw, char **ret)
{
	_cleanup_free_ char *t = NULL;
	int r = ks_dup_text_value(raw, &t);

	if (r < 0)
		return r;
	if (!t)
		return (*ret = strdup("")) ? 0 : -ENOMEM;
	char *o = t;
	bool blank = false;
	for (const char *s = t; *s; s++) {
		if (ks_is_trim(*s)) {
			blank = true;
			continue;
		}
		if (blank && o != t)
			*o++ = ' ';
		blank = false;
		*o++ = ks_ascii_lower(*s);
	}
	*o = 0;
	*ret = TAKE_PTR(t);
	return 0;
}

/* "NAME\x1fvalue key" for a multi-valued property. */
static int multi_key(const ks_vcard_prop *p, char **ret)
{
	_cleanup_free_ char *t = NULL, *k = NULL;
	int r = ks_dup_text_value(p->value, &t);

	if (r < 0)
		return r;
	if (t && strcmp(p->name, "EMAIL") == 0)
		r = ks_dup_email_key(t, &k);
	else if (t && strcmp(p->name, "TEL") == 0)
		r = ks_dup_phone_key(t, &k);
	if (r >= 0 && !k)
		r = loose_value(p->value, &k);
	if (r < 0)
		return r;
	return asprintf(ret, "%s\x1f%s", p->name, k) < 0 ? -ENOMEM : 0;
}

static bool is_meta(const char *name)
{
	return strcmp(name, "UID") == 0 || strcmp(name, "VERSION") == 0 ||
	       strcmp(name, "PRODID") == 0 || strcmp(name, "REV") == 0;
}

static bool is_list_prop(const char *name)
{
	return strcmp(name, "CATEGORIES") == 0 || strcmp(name, "NICKNAME") == 0;
}

/* Apple's labels and the like belong to the grouped property they label. */
static bool is_companion(const ks_vcard_prop *p)
{
	return p->group && strncmp(p->name, "X-AB", 4) == 0;
}

static bool is_multi(const char *name)
{
	return ks_merge_vcard_multi(name) || strncmp(name, "X-", 2) == 0;
}

static bool has_encoding(const ks_vcard_prop *p)
{
	return ks_vcard_param_get(p, "ENCODING") != NULL;
}

static void merge_state_done(merge_state *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->lines[i].group);
		free(m->lines[i].value);
	}
	free(m->lines);
	strset_done(&m->multi);
	strset_done(&m->single);
	strset_done(&m->groups);
	ks_buf_done(&m->note);
	strset_done(&m->note_texts);
	ks_buf_done(&m->cats);
	ks_buf_done(&m->nick);
	strset_done(&m->cats_items);
	strset_done(&m->nick_items);
}

static int add_line(merge_state *m, const ks_vcard_prop *p, size_t from, bool added,
		    char *group)
{
	out_line *nl = ks_array_grow(m->lines, &m->cap, m->n, sizeof(*nl));

	if (!nl) {
		free(group);
		return -ENOMEM;
	}
	m->lines = nl;
	m->lines[m->n++] = (out_line) { .p = p, .from = from, .added = added, .group = group };
	return 0;
}

static char *upper_dup(const char *s)
{
	char *u = strdup(s);

	if (u)
		for (char *p = u; *p; p++)
			*p = ks_ascii_upper(*p);
	return u;
}

/* A group name not used in the merged card. */
static int fresh_group(merge_state *m, char **ret)
{
	for (;;) {
		char name[32];
		snprintf(name, sizeof(name), "item%u", ++m->next_group);
		_cleanup_free_ char *u = upper_dup(name);
		if (!u)
			return -ENOMEM;
		if (strset_has(&m->groups, u))
			continue;
		int r = strset_add(&m->groups, TAKE_PTR(u));
		if (r < 0)
			return r;
		return (*ret = strdup(name)) ? 0 : -ENOMEM;
	}
}

/* Adds the comma-separated items of p's value to list not seen yet; returns how many. */
static int add_list_items(ks_buf *list, strset *seen, const char *raw)
{
	int added = 0, r;

	for (const char *s = raw, *start = raw;; s++) {
		if (s[0] == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s && *s != ',')
			continue;
		_cleanup_free_ char *item = strndup(start, (size_t) (s - start)), *k = NULL;
		if (!item)
			return -ENOMEM;
		r = loose_value(item, &k);
		if (r < 0)
			return r;
		if (*k) {
			r = strset_add(seen, TAKE_PTR(k));
			if (r < 0)
				return r;
			if (r > 0) {
				size_t a = 0, b = strlen(item);
				while (a < b && ks_is_trim(item[a]))
					a++;
				while (b > a && ks_is_trim(item[b - 1]))
					b--;
				r = ks_buf_printf(list, "%s%.*s", list->len ? "," : "", (int) (b - a),
						  item + a);
				if (r < 0)
					return r;
				added++;
			}
		}
		if (!*s)
			break;
		start = s + 1;
	}
	return added;
}

static int add_note(merge_state *m, const char *raw)
{
	_cleanup_free_ char *k = NULL;
	int r = loose_value(raw, &k);

	if (r < 0)
		return r;
	if (!*k)
		return 0;
	r = strset_add(&m->note_texts, TAKE_PTR(k));
	if (r <= 0)
		return r;
	/* An empty line between the texts: "\n\n" escaped. */
	r = ks_buf_printf(&m->note, "%s%s", m->note.len ? "\\n\\n" : "", raw);
	return r < 0 ? r : 1;
}

/* A gathered line (NOTE, CATEGORIES, NICKNAME) got text from card from too. */
static void mark_added(out_line *l, size_t from)
{
	l->added = true;
	if (l->from != from)
		l->from = SIZE_MAX;
}

/* One property of a card other than the reference. */
static int merge_prop(merge_state *m, const ks_vcard_prop *p, size_t from, strset *group_map,
		      char ***map_to, size_t *n_map)
{
	int r;

	if (is_meta(p->name) || is_companion(p))
		return 0;
	if (strcmp(p->name, "NOTE") == 0 && !has_encoding(p)) {
		r = add_note(m, p->value);
		if (r > 0 && m->note_at == SIZE_MAX) {
			r = add_line(m, p, from, true, NULL);
			m->note_at = m->n - 1;
		} else if (r > 0)
			mark_added(&m->lines[m->note_at], from);
		return r < 0 ? r : 0;
	}
	if (is_list_prop(p->name) && !has_encoding(p)) {
		bool cats = p->name[0] == 'C';
		size_t *at = cats ? &m->cats_at : &m->nick_at;
		r = add_list_items(cats ? &m->cats : &m->nick, cats ? &m->cats_items : &m->nick_items,
				   p->value);
		if (r > 0 && *at == SIZE_MAX) {
			r = add_line(m, p, from, true, NULL);
			*at = m->n - 1;
		} else if (r > 0)
			mark_added(&m->lines[*at], from);
		return r < 0 ? r : 0;
	}

	if (is_multi(p->name)) {
		_cleanup_free_ char *k = NULL;
		r = multi_key(p, &k);
		if (r < 0)
			return r;
		r = strset_add(&m->multi, TAKE_PTR(k));
		if (r <= 0)
			return r;
	} else {
		r = strset_add(&m->single, strdup(p->name));
		if (r <= 0)
			return r;
	}
	_cleanup_free_ char *g = NULL;
	if (p->group) {
		/* The group gets a new name; its companions follow under it. */
		r = fresh_group(m, &g);
		if (r < 0)
			return r;
		_cleanup_free_ char *old = upper_dup(p->group);
		if (!old)
			return -ENOMEM;
		if (!strset_has(group_map, old)) {
			char **nm = realloc(*map_to, (*n_map + 2) * sizeof(char *));
			if (!nm)
				return -ENOMEM;
			*map_to = nm;
			nm[(*n_map)++] = strdup(old);
			nm[(*n_map)++] = strdup(g);
			if (!nm[*n_map - 1] || !nm[*n_map - 2])
				return -ENOMEM;
			r = strset_add(group_map, TAKE_PTR(old));
			if (r < 0)
				return r;
		} else {
			for (size_t i = 0; i < *n_map; i += 2)
				if (strcmp((*map_to)[i], old) == 0) {
					free(g);
					g = strdup((*map_to)[i + 1]);
					if (!g)
						return -ENOMEM;
				}
		}
	}
	return add_line(m, p, from, true, TAKE_PTR(g));
}

static int write_line(ks_buf *b, const out_line *l, ks_buf *text)
{
	const ks_vcard_prop *p = l->p;
	const char *group = l->group ? l->group : p->group;
	int r;

	ks_buf_reset(text);
	/* A name holding a dot (the reader splits the group off at the first one) keeps an
	 * empty group in front, or it would be read back as a group and another name. */
	r = ks_buf_printf(text, "%s%s%s", group ? group : "",
			  group || strchr(p->name, '.') ? "." : "", p->name);
	for (size_t i = 0; r >= 0 && i < p->n_params; i++) {
		const char *v = p->params[i].value;
		bool quote = v[strcspn(v, ":;")] != 0;
		r = ks_buf_printf(text, ";%s=%s", p->params[i].name, quote ? "\"" : "");
		/* A DQUOTE cannot be written inside a parameter value (vCard 2.1 bare values
		 * may hold one): it would open a quoted string when the card is read again. */
		for (const char *c = v; r >= 0 && *c; c += strcspn(c, "\"")) {
			while (*c == '"')
				c++;
			r = ks_buf_append(text, c, strcspn(c, "\""));
		}
		if (r >= 0 && quote)
			r = ks_buf_puts(text, "\"");
	}
	if (r >= 0)
		r = ks_buf_printf(text, ":%s", l->value ? l->value : p->value);
	if (r < 0)
		return r;
	/* vCard 2.1 quoted-printable values may not be folded. */
	if (has_encoding(p) && ks_streq_nocase(ks_vcard_param_get(p, "ENCODING"),
					       "QUOTED-PRINTABLE")) {
		r = ks_buf_append(b, text->data, text->len);
		return r < 0 ? r : ks_buf_append(b, "\r\n", 2);
	}
	return ks_merge_fold_line(b, text->data, text->len);
}

static void parsed_free_all(parsed_card *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++)
		ks_vcard_free_array(p[i].v, p[i].n);
	free(p);
}

/* Writes the lines of m as a card of that version into *ret. */
static int write_card(const merge_state *m, const char *version, ks_dup_merged *ret)
{
	_cleanup_(ks_buf_done) ks_buf b = { .max = KS_CARD_MAX }, text = {};
	_cleanup_(ks_dup_merged_done) ks_dup_merged out = {};
	int r;

	out.lines = calloc(m->n + 1, sizeof(*out.lines));
	if (!out.lines)
		return -ENOMEM;
	r = ks_buf_printf(&b, "BEGIN:VCARD\r\nVERSION:%s\r\n", version ? version : "3.0");
	for (size_t i = 0; r >= 0 && i < m->n; i++) {
		r = write_line(&b, &m->lines[i], &text);
		if (r < 0)
			break;
		out.lines[i] = (ks_dup_line) { .text = strdup(text.data), .from = m->lines[i].from,
					       .added = m->lines[i].added };
		out.n_lines++;
		if (!out.lines[i].text)
			r = -ENOMEM;
		if (m->lines[i].added)
			out.n_added++;
	}
	if (r >= 0)
		r = ks_buf_puts(&b, "END:VCARD\r\n");
	if (r < 0)
		return r;
	out.len = b.len;
	out.data = ks_buf_steal(&b);
	if (!out.data)
		return -ENOMEM;
	*ret = out;
	out = (ks_dup_merged) {};
	return 0;
}

/* A MEMBER value without its "urn:uuid:", in any case. */
static const char *after_urn_uuid(const char *s)
{
	return ks_has_prefix_nocase(s, strlen(s), "URN:UUID:") ? s + 9 : s;
}
