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

/* ---- normalization ------------------------------------------------------------------------ */

/* Base letters of U+00C0..U+017F, lower case; 0 for what is not a letter (×, ÷). */
static const char latin_base[] =
	"aaaaaaaceeeeiiii" "dnooooo\0ouuuuyts"	/* C0..DF: Æ→a, Ð→d, Þ→t, ß→s */
	"aaaaaaaceeeeiiii" "dnooooo\0ouuuuyty"	/* E0..FF */
	"aaaaaaccccccccdd" "ddeeeeeeeeeegggg"	/* 100..11F */
	"gggghhhhiiiiiiii" "iiiijjkkklllllll"	/* 120..13F */
	"lllnnnnnnnnnoooo" "oooorrrrrrssssss"	/* 140..15F */
	"ssttttttuuuuuuuu" "uuuuwwyyyzzzzzzs";	/* 160..17F */

/* Decodes one UTF-8 sequence at s (valid UTF-8 assumed; a bad byte counts as itself). */
static uint32_t utf8_next(const char **ps)
{
	const uint8_t *s = (const uint8_t *) *ps;
	uint32_t c = s[0];
	size_t n = 1;

	if (c >= 0xc0 && c < 0xe0 && (s[1] & 0xc0) == 0x80) {
		c = (c & 0x1f) << 6 | (s[1] & 0x3f);
		n = 2;
	} else if (c >= 0xe0 && c < 0xf0 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
		c = (c & 0x0f) << 12 | (uint32_t) (s[1] & 0x3f) << 6 | (s[2] & 0x3f);
		n = 3;
	} else if (c >= 0xf0 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 &&
		   (s[3] & 0xc0) == 0x80) {
		c = (c & 0x07) << 18 | (uint32_t) (s[1] & 0x3f) << 12 |
		    (uint32_t) (s[2] & 0x3f) << 6 | (s[3] & 0x3f);
		n = 4;
	}
	*ps += n;
	return c;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int ks_dup_name_key(const char *name, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf w = {};
	_cleanup_free_ char **words = NULL;
	size_t n_words = 0, cap = 0;
	int r = 0;

	assert(ret);
	if (!name) {
		*ret = NULL;
		return 0;
	}
	/* The folded text, words separated by NULs. */
	for (const char *s = name; *s && r >= 0;) {
		const char *at = s;
		uint32_t c = utf8_next(&s);
		char base = 0;

		if (c < 0x80) {
			char a = ks_ascii_lower((char) c);
			if ((a >= 'a' && a <= 'z') || (a >= '0' && a <= '9'))
				base = a;
		} else if (c >= 0xc0 && c <= 0x17f)
			base = latin_base[c - 0xc0];
		else if (c >= 0x300 && c <= 0x36f)
			continue;	/* a combining mark: "e\u0301" is "é" */
		else if (c >= 0x80 && c <= 0xbf)
			base = 0;	/* Latin-1 punctuation */
		else {
			/* Other scripts stay as written (a word character). */
			r = ks_buf_append(&w, at, (size_t) (s - at));
			continue;
		}
		if (base)
			r = ks_buf_append(&w, &base, 1);
		else if (w.len > 0 && w.data[w.len - 1] != 0)
			r = ks_buf_append(&w, "", 1);
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < w.len; i += strlen(w.data + i) + 1) {
		if (!w.data[i])
			continue;
		char **nw = ks_array_grow(words, &cap, n_words, sizeof(*nw));
		if (!nw)
			return -ENOMEM;
		words = nw;
		words[n_words++] = w.data + i;
	}
	if (n_words == 0) {
		*ret = NULL;
		return 0;
	}
	qsort(words, n_words, sizeof(*words), str_cmp);
	ks_buf k = {};
	for (size_t i = 0; i < n_words && r >= 0; i++)
		r = ks_buf_printf(&k, "%s%s", i ? " " : "", words[i]);
	if (r < 0) {
		ks_buf_done(&k);
		return r;
	}
	*ret = ks_buf_steal(&k);
	return *ret ? 0 : -ENOMEM;
}

static const char *skip_prefix_nocase(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);

	for (size_t i = 0; i < n; i++)
		if (!s[i] || ks_ascii_lower(s[i]) != prefix[i])
			return s;
	return s + n;
}

int ks_dup_email_key(const char *email, char **ret)
{
	assert(ret);
	*ret = NULL;
	if (!email)
		return 0;
	while (ks_is_trim(*email))
		email++;
	email = skip_prefix_nocase(email, "mailto:");
	size_t n = strlen(email);
	while (n > 0 && ks_is_trim(email[n - 1]))
		n--;
	char *k = strndup(email, n);
	if (!k)
		return -ENOMEM;
	for (char *p = k; *p; p++)
		*p = ks_ascii_lower(*p);
	if (!strchr(k, '@') || k[0] == '@') {
		free(k);
		return 0;
	}
	*ret = k;
	return 0;
}

int ks_dup_phone_key(const char *tel, char **ret)
{
	char digits[64];
	size_t n = 0;

	assert(ret);
	*ret = NULL;
	if (!tel)
		return 0;
	for (const char *s = tel; *s; s++) {
		/* ";ext=12" of a tel: URI and anything after it is not the number. */
		if (*s == ';')
			break;
		if (*s >= '0' && *s <= '9' && n < sizeof(digits) - 1)
			digits[n++] = *s;
	}
	digits[n] = 0;
	if (n < 6)
		return 0;
	*ret = strdup(n >= 9 ? digits + n - 9 : digits);
	return *ret ? 0 : -ENOMEM;
}

/* ---- reading cards ------------------------------------------------------------------------ */

/* The unescaped, trimmed text of a property value; NULL (and 0) when empty. */
static int text_value(const char *raw, char **ret)
{
	_cleanup_free_ char *u = ks_vcard_unescape(raw);

	if (!u)
		return -ENOMEM;
	const char *s = u;
	while (ks_is_trim(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && ks_is_trim(s[n - 1]))
		n--;
	*ret = n ? strndup(s, n) : NULL;
	return n && !*ret ? -ENOMEM : 0;
}

/* "Given Family" of an N value (Family;Given;Additional;Prefix;Suffix). */
static int name_of_n(const char *raw, char **ret)
{
	_cleanup_free_ char *fam = NULL, *giv = NULL;
	const char *part[2] = {};
	size_t plen[2] = {}, k = 0;
	int r;

	for (const char *s = raw, *start = raw; k < 2; s++) {
		if (s[0] == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == ';' || !*s) {
			part[k] = start;
			plen[k++] = (size_t) (s - start);
			if (!*s)
				break;
			start = s + 1;
		}
	}
	for (size_t i = 0; i < k; i++) {
		_cleanup_free_ char *p = strndup(part[i], plen[i]);
		if (!p)
			return -ENOMEM;
		r = text_value(p, i == 0 ? &fam : &giv);
		if (r < 0)
			return r;
	}
	if (fam && giv)
		return asprintf(ret, "%s %s", giv, fam) < 0 ? -ENOMEM : 0;
	*ret = giv ? TAKE_PTR(giv) : TAKE_PTR(fam);
	return 0;
}

static int strv_add(char ***v, size_t n, char *s)
{
	char **nv = realloc(*v, (n + 1) * sizeof(char *));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[n] = s;
	return 0;
}

static bool value_is_group(const char *raw)
{
	_cleanup_free_ char *t = NULL;

	return text_value(raw, &t) >= 0 && t && ks_streq_nocase(t, "group");
}

void ks_dup_card_done(ks_dup_card *c)
{
	if (!c)
		return;
	free(c->name);
	free(c->name_key);
	for (size_t i = 0; i < c->n_emails; i++) {
		free(c->emails[i]);
		free(c->email_keys[i]);
	}
	free(c->emails);
	free(c->email_keys);
	for (size_t i = 0; i < c->n_phones; i++) {
		free(c->phones[i]);
		free(c->phone_keys[i]);
	}
	free(c->phones);
	free(c->phone_keys);
	free(c->org);
	*c = (ks_dup_card) {};
}

int ks_dup_card_parse(const char *data, size_t len, ks_dup_card *ret)
{
	_cleanup_(ks_dup_card_done) ks_dup_card c = {};
	ks_vcard *cards = NULL;
	size_t n_cards = 0;
	int r;

	r = ks_vcard_parse(data, len, &cards, &n_cards, NULL);
	if (r < 0)
		return r;
	const ks_vcard *v = &cards[0];
	const char *n_raw = NULL;

	for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
		const ks_vcard_prop *p = &v->props[i];
		_cleanup_free_ char *t = NULL, *k = NULL;

		if (strcmp(p->name, "UID") != 0 && strcmp(p->name, "REV") != 0 &&
		    strcmp(p->name, "PRODID") != 0)
			c.n_props++;
		if (strcmp(p->name, "FN") == 0 && !c.name)
			r = text_value(p->value, &c.name);
		else if (strcmp(p->name, "N") == 0 && !n_raw)
			n_raw = p->value;
		else if (strcmp(p->name, "ORG") == 0 && !c.org) {
			r = text_value(p->value, &c.org);
			/* "Company;Department": the company is enough to tell cards apart. */
			if (r >= 0 && c.org)
				c.org[strcspn(c.org, ";")] = 0;
		} else if ((strcmp(p->name, "KIND") == 0 ||
			    strcmp(p->name, "X-ADDRESSBOOKSERVER-KIND") == 0) &&
			   value_is_group(p->value))
			c.is_group = true;
		else if (strcmp(p->name, "EMAIL") == 0 || strcmp(p->name, "TEL") == 0) {
			bool email = p->name[0] == 'E';
			r = text_value(p->value, &t);
			if (r < 0 || !t)
				continue;
			r = email ? ks_dup_email_key(t, &k) : ks_dup_phone_key(t, &k);
			if (r < 0)
				break;
			char ***vals = email ? &c.emails : &c.phones;
			char ***keys = email ? &c.email_keys : &c.phone_keys;
			size_t *cnt = email ? &c.n_emails : &c.n_phones;
			r = strv_add(vals, *cnt, t);
			if (r >= 0) {
				t = NULL;
				r = strv_add(keys, *cnt, k);
				if (r < 0) {
					free((*vals)[*cnt]);
					break;
				}
				k = NULL;
				(*cnt)++;
			}
		}
	}
	if (r >= 0 && !c.name && n_raw)
		r = name_of_n(n_raw, &c.name);
	if (r >= 0)
		r = ks_dup_name_key(c.name, &c.name_key);
	ks_vcard_free_array(cards, n_cards);
	if (r < 0)
		return r;
	*ret = c;
	c = (ks_dup_card) {};
	return 0;
}

/* ---- grouping ----------------------------------------------------------------------------- */

typedef struct key_ref {
	const char *key;
	size_t card;
	unsigned kind;
} key_ref;

static int key_ref_cmp(const void *a, const void *b)
{
	const key_ref *x = a, *y = b;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	return x->card < y->card ? -1 : x->card > y->card;
}

static size_t uf_find(size_t *parent, size_t i)
{
	while (parent[i] != i) {
		parent[i] = parent[parent[i]];
		i = parent[i];
	}
	return i;
}

static void uf_union(size_t *parent, size_t a, size_t b)
{
	a = uf_find(parent, a);
	b = uf_find(parent, b);
	/* The smaller index is the root: a group is named by its first member. */
	if (a < b)
		parent[b] = a;
	else if (b < a)
		parent[a] = b;
}

void ks_dup_groups_done(ks_dup_groups *g)
{
	if (!g)
		return;
	free(g->members);
	free(g->start);
	free(g->why);
	*g = (ks_dup_groups) {};
}

int ks_dup_find_groups(const ks_dup_card *cards, size_t n, ks_dup_groups *ret)
{
	_cleanup_free_ key_ref *keys = NULL;
	_cleanup_free_ size_t *parent = NULL, *size = NULL, *gid = NULL;
	_cleanup_free_ unsigned *why_of_root = NULL;
	_cleanup_(ks_dup_groups_done) ks_dup_groups g = {};
	size_t n_keys = 0, cap = 0;

	assert(cards || n == 0);
	parent = malloc((n + 1) * sizeof(size_t));
	size = calloc(n + 1, sizeof(size_t));
	gid = malloc((n + 1) * sizeof(size_t));
	why_of_root = calloc(n + 1, sizeof(unsigned));
	if (!parent || !size || !gid || !why_of_root)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ks_dup_card *c = &cards[i];

		parent[i] = i;
		if (c->is_group)
			continue;
		size_t want = n_keys + 1 + c->n_emails + c->n_phones;
		while (cap < want) {
			size_t ncap = cap ? cap * 2 : 64;
			key_ref *nk = realloc(keys, ncap * sizeof(*nk));
			if (!nk)
				return -ENOMEM;
			keys = nk;
			cap = ncap;
		}
		if (c->name_key)
			keys[n_keys++] = (key_ref) { c->name_key, i, KS_DUP_BY_NAME };
		for (size_t k = 0; k < c->n_emails; k++)
			if (c->email_keys[k])
				keys[n_keys++] = (key_ref) { c->email_keys[k], i, KS_DUP_BY_EMAIL };
		for (size_t k = 0; k < c->n_phones; k++)
			if (c->phone_keys[k])
				keys[n_keys++] = (key_ref) { c->phone_keys[k], i, KS_DUP_BY_PHONE };
	}
	if (n_keys > 1)
		qsort(keys, n_keys, sizeof(*keys), key_ref_cmp);
	for (size_t i = 1; i < n_keys; i++)
		if (keys[i].kind == keys[i - 1].kind && keys[i].card != keys[i - 1].card &&
		    strcmp(keys[i].key, keys[i - 1].key) == 0)
			uf_union(parent, keys[i].card, keys[i - 1].card);
	/* Why: after every union, so that the bits land on the final roots. */
	for (size_t i = 1; i < n_keys; i++)
		if (keys[i].kind == keys[i - 1].kind && keys[i].card != keys[i - 1].card &&
		    strcmp(keys[i].key, keys[i - 1].key) == 0)
			why_of_root[uf_find(parent, keys[i].card)] |= keys[i].kind;

	for (size_t i = 0; i < n; i++)
		size[uf_find(parent, i)]++;
	size_t n_members = 0;
	for (size_t i = 0; i < n; i++) {
		gid[i] = SIZE_MAX;
		if (parent[i] == i && size[i] >= 2) {
			gid[i] = g.n_groups++;
			n_members += size[i];
		}
	}
	g.members = malloc((n_members + 1) * sizeof(size_t));
	g.start = calloc(g.n_groups + 1, sizeof(size_t));
	g.why = calloc(g.n_groups + 1, sizeof(unsigned));
	if (!g.members || !g.start || !g.why)
		return -ENOMEM;
	/* Counting sort by group: members come out ascending within each group. */
	for (size_t i = 0; i < n; i++) {
		size_t root = uf_find(parent, i);
		if (gid[root] != SIZE_MAX)
			g.start[gid[root] + 1]++;
	}
	for (size_t k = 0; k < g.n_groups; k++)
		g.start[k + 1] += g.start[k];
	_cleanup_free_ size_t *fill = malloc((g.n_groups + 1) * sizeof(size_t));
	if (!fill)
		return -ENOMEM;
	memcpy(fill, g.start, (g.n_groups + 1) * sizeof(size_t));
	for (size_t i = 0; i < n; i++) {
		size_t root = uf_find(parent, i);
		if (gid[root] == SIZE_MAX)
			continue;
		g.members[fill[gid[root]]++] = i;
		g.why[gid[root]] = why_of_root[root];
	}
	*ret = g;
	g = (ks_dup_groups) {};
	return 0;
}

/* ---- merging ------------------------------------------------------------------------------ */

/* A small set of strings (open addressing), for what the merged card holds already. */
typedef struct strset {
	char **slot;
	size_t cap;
	size_t n;
} strset;

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
	int r = text_value(raw, &t);

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
	int r = text_value(p->value, &t);

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
	r = ks_buf_printf(text, "%s%s%s", group ? group : "", group ? "." : "", p->name);
	for (size_t i = 0; r >= 0 && i < p->n_params; i++) {
		const char *v = p->params[i].value;
		bool quote = v[strcspn(v, ":;")] != 0;
		r = ks_buf_printf(text, ";%s=%s%s%s", p->params[i].name, quote ? "\"" : "", v,
				  quote ? "\"" : "");
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

typedef struct parsed {
	ks_vcard *v;
	size_t n;
} parsed;

static void parsed_free_all(parsed *p, size_t n)
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

int ks_dup_merge_cards(const char *const *data, const size_t *len, size_t n, size_t ref,
		       ks_dup_merged *ret)
{
	_cleanup_(merge_state_done) merge_state m = { .note_at = SIZE_MAX, .cats_at = SIZE_MAX,
						      .nick_at = SIZE_MAX };
	parsed *cards = NULL;
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
			const char *uid = skip_prefix_nocase(val, "urn:uuid:");
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
			if (asprintf(&k, "%s\x1f%s", p->name, skip_prefix_nocase(nv ? nv : val,
										  "urn:uuid:")) < 0) {
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
