/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "hash_p.h"
#include "ical_p.h"
#include "item_p.h"
#include "limits.h"
#include "macro.h"
#include "merge_p.h"
#include "text_p.h"

/* Real objects nest three deep (VCALENDAR, VEVENT, VALARM); the node tree is freed
 * recursively. */
#define MERGE_MAX_DEPTH 16
/* RFC 5545 3.1, RFC 6350 3.2: lines SHOULD NOT be longer than 75 octets. */
#define FOLD_OCTETS 75
/* The summary is for a human: a few names are enough. */
#define SUMMARY_MAX 1024

#define NONE SIZE_MAX
#define TAKEN (SIZE_MAX - 1)

typedef enum merge_side {
	SIDE_BASE,
	SIDE_LOCAL,
	SIDE_REMOTE,
	_SIDE_MAX,
} merge_side;

typedef enum node_kind {
	NODE_PROP,
	NODE_COMP_ID,		/* matched by (type, UID, RECURRENCE-ID) */
	NODE_COMP_TZ,		/* a VTIMEZONE, matched by TZID */
	NODE_COMP_CONTENT,	/* matched by its whole content (VALARM, a vCard 2.1 AGENT) */
} node_kind;

typedef enum prop_rule {
	RULE_SINGLE,
	RULE_MULTI,
	RULE_UNIT,		/* several names that change together, compared as one value */
	RULE_IDENTITY,		/* what names the object: one value, however many lines hold it */
	RULE_LATEST,		/* a timestamp: the later one is kept */
	RULE_MAX_NUMBER,	/* a counter: the larger one is kept */
	RULE_WINNER,		/* changed on both sides: the policy side's, without a conflict */
} prop_rule;

typedef struct node node;
struct node {
	node_kind kind;
	prop_rule rule;
	merge_side sd;
	size_t index;		/* among the parent's children */
	const char *raw;	/* property: its lines as written; component: its BEGIN line */
	size_t raw_len;
	const char *end_raw;	/* component: its END line */
	size_t end_raw_len;
	bool qp;		/* vCard 2.1 quoted-printable soft line breaks: never refolded */
	char *name;		/* upper-case */
	char *key;		/* what identifies it among its siblings */
	char *label;		/* components: the name, and the RECURRENCE-ID when there is one */
	char *value;		/* trimmed; only for the properties the merge reads */
	uint8_t d_full[32];	/* the canonical form */
	uint8_t d_a[32];	/* property: value; component: content without timestamps */
	uint8_t d_b[32];	/* property: group, name, parameters; component: name */
	node **children;
	size_t n_children;
	size_t cap_children;
};

static node *node_free(node *n)
{
	if (!n)
		return NULL;
	for (size_t i = 0; i < n->n_children; i++)
		node_free(n->children[i]);
	free(n->children);
	free(n->name);
	free(n->key);
	free(n->label);
	free(n->value);
	free(n);
	return NULL;
}
KS_DEFINE_CLEANUP(node, node_free);

/* ---- small helpers ------------------------------------------------------------------------ */

static bool streq_null(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static char *strdup_printf(const char *fmt, ...) _printf_(1, 2);
static char *strdup_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* Copies s[0..n) without the blanks around it (possibly ""), or NULL on OOM. */
static char *strndup_trim(const char *s, size_t n, bool upper)
{
	while (n > 0 && ks_is_space(*s)) {
		s++;
		n--;
	}
	while (n > 0 && ks_is_space(s[n - 1]))
		n--;
	char *t = strndup(s, n);
	if (t && upper)
		for (char *p = t; *p; p++)
			*p = ks_ascii_upper(*p);
	return t;
}

static int digest_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* Compares two timestamps or counters by their digits alone, so that "2024-01-15T09:12:44Z"
 * and "20240115T091244Z" are the same time; more significant digits make the larger number. */
static int digits_cmp(const char *a, const char *b)
{
	size_t na = 0, nb = 0;
	const char *pa, *pb;
	int first = 0;

	while (*a && (*a < '1' || *a > '9'))
		a++;
	while (*b && (*b < '1' || *b > '9'))
		b++;
	for (pa = a; *pa; pa++)
		if (*pa >= '0' && *pa <= '9')
			na++;
	for (pb = b; *pb; pb++)
		if (*pb >= '0' && *pb <= '9')
			nb++;
	if (na != nb)
		return na < nb ? -1 : 1;
	for (;;) {
		while (*a && (*a < '0' || *a > '9'))
			a++;
		while (*b && (*b < '0' || *b > '9'))
			b++;
		if (!*a || !*b)
			return first;
		if (*a != *b && first == 0)
			first = *a < *b ? -1 : 1;
		a++;
		b++;
	}
}

/* ---- content lines into a tree ------------------------------------------------------------ */

typedef struct line_reader {
	const char *data;
	size_t len;
	size_t pos;
} line_reader;

/* Appends the next logical line to b, unfolded and without its line break. Returns 1, or 0 at
 * the end of the input, or a negative errno. */
static int read_logical(line_reader *rd, ks_buf *b)
{
	bool first = true;
	int r;

	if (rd->pos >= rd->len)
		return 0;
	for (;;) {
		const char *s = rd->data + rd->pos;
		size_t rest = rd->len - rd->pos;
		const char *nl = memchr(s, '\n', rest);
		size_t n = nl ? (size_t) (nl - s) : rest, keep = n, skip = first ? 0 : 1;

		while (keep > skip && s[keep - 1] == '\r')
			keep--;
		r = ks_buf_append(b, s + skip, keep - skip);
		if (r < 0)
			return r;
		rd->pos += n + (nl ? 1 : 0);
		first = false;
		if (nl && rd->pos < rd->len && ks_is_blank(rd->data[rd->pos]))
			continue;
		return 1;
	}
}

static bool is_encoding_value(const char *v)
{
	static const char *const encodings[] = { "QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT" };

	for (size_t i = 0; i < ELEMENTSOF(encodings); i++)
		if (ks_streq_nocase(v, encodings[i]))
			return true;
	return false;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

typedef struct strv {
	char **v;
	size_t n;
	size_t cap;
} strv;

static void strv_done(strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	*s = (strv) {};
}

static int strv_push(strv *s, char *str)
{
	if (!str)
		return -ENOMEM;
	char **nv = ks_array_grow(s->v, &s->cap, s->n, sizeof(*nv));
	if (!nv) {
		free(str);
		return -ENOMEM;
	}
	s->v = nv;
	s->v[s->n++] = str;
	return 0;
}

/* A parameter value in the canonical form: quoted when it holds a delimiter, so that different
 * parameter lists never read the same. */
static char *param_value_canon(const char *v)
{
	char *s;

	if (!v[strcspn(v, ";:,")])
		return strdup(v);
	if (asprintf(&s, "\"%s\"", v) < 0)
		return NULL;
	return s;
}

/* The parsed head of a content line: "[group.]name *(;param)" up to the ':' before the value. */
typedef struct line_head {
	char *group;		/* upper-case, NULL when none */
	char *name;		/* upper-case */
	strv params;		/* canonical "NAME=value", sorted, TYPE values merged into one */
	bool qp;
	size_t voff;		/* offset of the value */
} line_head;

static void line_head_done(line_head *h)
{
	free(h->group);
	free(h->name);
	strv_done(&h->params);
	*h = (line_head) {};
}

/* Parses one parameter at *pq (just past its ';'), adding it to h->params or its TYPE values
 * to types, and leaves *pq on the ';' or ':' after it, or on the NUL. */
static int parse_param(const char **pq, line_head *h, strv *types)
{
	const char *q = *pq;
	size_t n = strcspn(q, "=;:");
	_cleanup_free_ char *name = NULL, *value = NULL;
	int r;

	if (q[n] == '=') {
		const char *e;
		bool quoted = false;
		size_t vlen = 0;

		/* Quotes may wrap the value or each of its comma-separated parts; ';', ':' and ','
		 * inside them are text. */
		for (e = q + n + 1; *e; e++) {
			if (*e == '"') {
				quoted = !quoted;
				continue;
			}
			if (!quoted && (*e == ';' || *e == ':'))
				break;
			vlen++;
		}
		if (quoted)
			return -EBADMSG;
		value = malloc(vlen + 1);
		if (!value)
			return -ENOMEM;
		char *o = value;
		for (const char *c = q + n + 1; c < e; c++)
			if (*c != '"')
				*o++ = *c;
		*o = 0;
		*pq = e;
		name = strndup_trim(q, n, true);
		if (!name)
			return -ENOMEM;
		if (!*name)
			return 0;
	} else {
		/* vCard 2.1: a bare value is a TYPE, or the ENCODING for an encoding's name. */
		*pq = q + n;
		value = strndup_trim(q, n, false);
		if (!value)
			return -ENOMEM;
		if (!*value)
			return 0;
		name = strdup(is_encoding_value(value) ? "ENCODING" : "TYPE");
		if (!name)
			return -ENOMEM;
	}

	if (strcmp(name, "ENCODING") == 0 && ks_streq_nocase(value, "QUOTED-PRINTABLE"))
		h->qp = true;

	if (strcmp(name, "TYPE") == 0) {
		/* TYPE=work,voice, TYPE=VOICE;TYPE=WORK and 2.1's ";WORK;VOICE" are one set. */
		for (const char *s = value; *s;) {
			size_t k = strcspn(s, ",");
			_cleanup_free_ char *t = strndup_trim(s, k, true);

			if (!t)
				return -ENOMEM;
			if (*t) {
				r = strv_push(types, TAKE_PTR(t));
				if (r < 0)
					return r;
			}
			s += k;
			if (*s)
				s++;
		}
		return 0;
	}

	_cleanup_free_ char *canon = param_value_canon(value);
	char *p;

	if (!canon || asprintf(&p, "%s=%s", name, canon) < 0)
		return -ENOMEM;
	return strv_push(&h->params, p);
}

static int parse_head(const char *s, line_head *ret)
{
	_cleanup_(line_head_done) line_head h = {};
	_cleanup_(strv_done) strv types = {};
	const char *q = s;
	size_t n = strcspn(q, ".;:");
	int r;

	if (q[n] == '.') {
		h.group = strndup_trim(q, n, true);
		if (!h.group)
			return -ENOMEM;
		if (!*h.group) {
			free(h.group);
			h.group = NULL;
		}
		q += n + 1;
		n = strcspn(q, ";:");
	}
	if (!q[n])
		return -EBADMSG;
	h.name = strndup_trim(q, n, true);
	if (!h.name)
		return -ENOMEM;
	if (!*h.name)
		return -EBADMSG;
	q += n;
	while (*q == ';') {
		q++;
		r = parse_param(&q, &h, &types);
		if (r < 0)
			return r;
	}
	if (*q != ':')
		return -EBADMSG;
	h.voff = (size_t) (q + 1 - s);

	if (types.n > 0) {
		ks_buf t = {};

		qsort(types.v, types.n, sizeof(*types.v), str_cmp);
		r = ks_buf_puts(&t, "TYPE=");
		for (size_t i = 0; i < types.n && r >= 0; i++) {
			_cleanup_free_ char *c = NULL;

			if (i > 0 && strcmp(types.v[i], types.v[i - 1]) == 0)
				continue;
			c = param_value_canon(types.v[i]);
			if (!c) {
				r = -ENOMEM;
				break;
			}
			if (t.len > 5)
				r = ks_buf_puts(&t, ",");
			if (r >= 0)
				r = ks_buf_puts(&t, c);
		}
		if (r < 0) {
			ks_buf_done(&t);
			return r;
		}
		r = strv_push(&h.params, ks_buf_steal(&t));
		if (r < 0)
			return r;
	}
	if (h.params.n > 1)
		qsort(h.params.v, h.params.n, sizeof(*h.params.v), str_cmp);

	*ret = h;
	h = (line_head) {};
	return 0;
}

static const char *const vcard_multi[] = {
	"ADR", "CALADRURI", "CALURI", "CATEGORIES", "CLIENTPIDMAP", "EMAIL", "EXPERTISE", "FBURL",
	"HOBBY", "IMPP", "INTEREST", "KEY", "LABEL", "LANG", "LOGO", "MEMBER", "NICKNAME",
	"ORG-DIRECTORY", "RELATED", "SOUND", "SOURCE", "TEL", "URL", "XML",
};

static const char *const ical_multi[] = {
	"ATTACH", "ATTENDEE", "CATEGORIES", "COMMENT", "CONFERENCE", "CONTACT", "EXDATE",
	"FREEBUSY", "IMAGE", "RDATE", "RELATED-TO", "REQUEST-STATUS", "RESOURCES",
};

/* Properties that change together and are merged as one value, each unit under the key of
 * its first name. RFC 5545 3.8.1.11-12, 3.8.2.4: a task's state is STATUS, COMPLETED and
 * PERCENT-COMPLETE together; taking STATUS from one side and COMPLETED from the other would
 * describe a task neither side has. 3.6.1, 3.6.2: an event's time is DTSTART with DTEND or
 * DURATION, a task's DTSTART with DUE or DURATION; a start from one side and an end from the
 * other may end before they start, and DTEND from one side with DURATION from the other is
 * no event at all. */
static const char *const vtodo_unit[] = { "STATUS", "COMPLETED", "PERCENT-COMPLETE" };
static const char *const vevent_time_unit[] = { "DTSTART", "DTEND", "DURATION" };
static const char *const vtodo_time_unit[] = { "DTSTART", "DUE", "DURATION" };

/* The unit name belongs to in component comp, NULL when none. */
static const char *const *unit_of(const char *comp, const char *name, size_t *ret_n)
{
	static const struct {
		const char *comp;
		const char *const *names;
		size_t n;
	} units[] = {
		{ "VTODO", vtodo_unit, ELEMENTSOF(vtodo_unit) },
		{ "VTODO", vtodo_time_unit, ELEMENTSOF(vtodo_time_unit) },
		{ "VEVENT", vevent_time_unit, ELEMENTSOF(vevent_time_unit) },
	};

	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (strcmp(comp, units[i].comp) == 0 && in_list(name, units[i].names, units[i].n)) {
			*ret_n = units[i].n;
			return units[i].names;
		}
	return NULL;
}

/* The properties whose value the merge reads. */
static const char *const kept_values[] = {
	"UID", "RECURRENCE-ID", "TZID", "VERSION", "REV", "DTSTAMP", "LAST-MODIFIED", "SEQUENCE",
};

bool ks_merge_vcard_multi(const char *name)
{
	return in_list(name, vcard_multi, ELEMENTSOF(vcard_multi));
}

static prop_rule rule_of(bool vcard, const char *comp, const char *name)
{
	/* A set merge could put another UID first, and the result would be another object. */
	if (strcmp(name, "UID") == 0 || strcmp(name, "VERSION") == 0 ||
	    strcmp(name, "RECURRENCE-ID") == 0)
		return RULE_IDENTITY;
	if (strcmp(name, "PRODID") == 0)
		return RULE_WINNER;
	if (vcard) {
		if (strcmp(name, "REV") == 0)
			return RULE_LATEST;
		if (in_list(name, vcard_multi, ELEMENTSOF(vcard_multi)))
			return RULE_MULTI;
		return RULE_SINGLE;
	}
	if (strcmp(name, "DTSTAMP") == 0 || strcmp(name, "LAST-MODIFIED") == 0)
		return RULE_LATEST;
	if (strcmp(name, "SEQUENCE") == 0)
		return RULE_MAX_NUMBER;
	size_t n_unit;
	if (unit_of(comp, name, &n_unit))
		return RULE_UNIT;
	if (in_list(name, ical_multi, ELEMENTSOF(ical_multi)))
		return RULE_MULTI;
	return RULE_SINGLE;
}

static bool rule_is_meta(prop_rule r)
{
	return r == RULE_LATEST || r == RULE_MAX_NUMBER || r == RULE_WINNER;
}

typedef struct tree {
	node *root;
	bool vcard;
	size_t lines;
} tree;

static void tree_done(tree *t)
{
	node_free(t->root);
	*t = (tree) {};
}

static int node_add_child(node *parent, node *child)
{
	node **nc = ks_array_grow(parent->children, &parent->cap_children, parent->n_children,
			       sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	parent->children = nc;
	child->index = parent->n_children;
	parent->children[parent->n_children++] = child;
	return 0;
}

static int prop_new(const tree *t, const node *parent, merge_side sd, const char *line,
		    const line_head *h, const char *raw, size_t raw_len, node **ret)
{
	_cleanup_(node_freep) node *n = calloc(1, sizeof(node));
	const char *value = line + h->voff;
	ks_sha256 c;

	if (!n)
		return -ENOMEM;
	n->kind = NODE_PROP;
	n->sd = sd;
	n->raw = raw;
	n->raw_len = raw_len;
	n->qp = t->vcard && h->qp;
	n->name = strdup(h->name);
	if (!n->name)
		return -ENOMEM;
	n->rule = rule_of(t->vcard, parent->name, n->name);
	size_t n_unit;
	if (n->rule == RULE_UNIT)
		/* One key for the unit, so that its names are merged together. */
		n->key = strdup(unit_of(parent->name, n->name, &n_unit)[0]);
	else if (h->group)
		n->key = strdup_printf("%s.%s", h->group, h->name);
	else
		n->key = strdup(h->name);
	if (!n->key)
		return -ENOMEM;
	if (!h->group && in_list(n->name, kept_values, ELEMENTSOF(kept_values))) {
		n->value = strndup_trim(value, strlen(value), false);
		if (!n->value)
			return -ENOMEM;
	}

	ks_sha256_init(&c);
	ks_sha256_update(&c, "P", 1);
	if (h->group) {
		ks_sha256_update(&c, h->group, strlen(h->group));
		ks_sha256_update(&c, ".", 1);
	}
	ks_sha256_update(&c, h->name, strlen(h->name));
	for (size_t i = 0; i < h->params.n; i++) {
		ks_sha256_update(&c, ";", 1);
		ks_sha256_update(&c, h->params.v[i], strlen(h->params.v[i]));
	}
	ks_sha256 full = c;
	ks_sha256_final(&c, n->d_b);
	ks_sha256_update(&full, ":", 1);
	ks_sha256_update(&full, value, strlen(value));
	ks_sha256_final(&full, n->d_full);
	ks_sha256_init(&c);
	ks_sha256_update(&c, value, strlen(value));
	ks_sha256_final(&c, n->d_a);

	*ret = TAKE_PTR(n);
	return 0;
}

static int comp_new(merge_side sd, const char *name, const char *raw, size_t raw_len,
		    node **ret)
{
	node *n = calloc(1, sizeof(node));

	if (!n)
		return -ENOMEM;
	n->sd = sd;
	n->kind = NODE_COMP_CONTENT;
	n->raw = raw;
	n->raw_len = raw_len;
	n->name = strdup(name);
	if (!n->name) {
		node_free(n);
		return -ENOMEM;
	}
	*ret = n;
	return 0;
}

/* Hashes "C" name and the set of digests: a component's content in any order, a line written
 * twice counting once, as it means nothing more. */
static void comp_digest(const char *name, uint8_t (*ds)[32], size_t n, uint8_t out[32])
{
	ks_sha256 c;

	if (n > 1)
		qsort(ds, n, 32, digest_cmp);
	ks_sha256_init(&c);
	ks_sha256_update(&c, "C", 1);
	ks_sha256_update(&c, name, strlen(name));
	ks_sha256_update(&c, "\n", 1);
	for (size_t i = 0; i < n; i++)
		if (i == 0 || memcmp(ds[i], ds[i - 1], 32) != 0)
			ks_sha256_update(&c, ds[i], 32);
	ks_sha256_final(&c, out);
}

static const node *child_prop(const node *c, const char *name)
{
	for (size_t i = 0; i < c->n_children; i++)
		if (c->children[i]->kind == NODE_PROP && c->children[i]->value &&
		    strcmp(c->children[i]->name, name) == 0)
			return c->children[i];
	return NULL;
}

static void hex(const uint8_t d[32], char out[65])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < 32; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[64] = 0;
}

/* Works out what identifies a closed component among its siblings, and its digests. */
static int comp_finish(const tree *t, node *n, bool root)
{
	_cleanup_free_ uint8_t (*ds)[32] = NULL;
	const node *uid = NULL, *rid = NULL, *tzid = NULL;
	size_t nd = 0;

	/* In a vCard and at the top every component is matched by its content. */
	if (!root && !t->vcard) {
		uid = child_prop(n, "UID");
		rid = child_prop(n, "RECURRENCE-ID");
		tzid = child_prop(n, "TZID");
	}
	if (strcmp(n->name, "VTIMEZONE") == 0 && tzid) {
		n->kind = NODE_COMP_TZ;
		n->key = strdup_printf("\x03%s", tzid->value);
		n->label = strdup_printf("%s %s", n->name, tzid->value);
	} else if (uid) {
		char h[65] = "";

		n->kind = NODE_COMP_ID;
		if (rid)
			hex(rid->d_full, h);
		n->key = strdup_printf("\x02%s\n%s\n%s", n->name, uid->value, h);
		if (rid)
			n->label = strdup_printf("%s %s", n->name, rid->value);
		else
			n->label = strdup(n->name);
	} else {
		n->kind = NODE_COMP_CONTENT;
		n->key = strdup_printf("\x04%s", n->name);
		n->label = strdup(n->name);
	}
	if (!n->key || !n->label)
		return -ENOMEM;

	ds = calloc(n->n_children + 1, 32);
	if (!ds)
		return -ENOMEM;
	for (size_t i = 0; i < n->n_children; i++)
		memcpy(ds[i], n->children[i]->d_full, 32);
	comp_digest(n->name, ds, n->n_children, n->d_full);
	for (size_t i = 0; i < n->n_children; i++) {
		const node *c = n->children[i];

		if (c->kind == NODE_PROP && rule_is_meta(c->rule))
			continue;
		memcpy(ds[nd++], c->kind == NODE_PROP ? c->d_full : c->d_a, 32);
	}
	comp_digest(n->name, ds, nd, n->d_a);
	comp_digest(n->name, ds, 0, n->d_b);
	return 0;
}

/* Builds the tree of one vCard or one VCALENDAR. Nodes point into data, which must outlive
 * the tree. */
static int tree_parse(const char *data, size_t len, merge_side sd, tree *ret)
{
	_cleanup_(ks_buf_done) ks_buf line = { .max = KS_CARD_MAX };
	_cleanup_(tree_done) tree t = {};
	line_reader rd = { .data = data, .len = len };
	node *stack[MERGE_MAX_DEPTH];
	size_t depth = 0;
	bool closed = false;
	int r;

	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		rd.pos = 3;

	for (;;) {
		_cleanup_(line_head_done) line_head h = {};
		size_t start = rd.pos, off = 0;

		ks_buf_reset(&line);
		r = read_logical(&rd, &line);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		while (off < line.len && ks_is_space(line.data[off]))
			off++;
		if (off == line.len)
			continue;
		if (closed)
			return -EBADMSG;
		if (++t.lines > KS_MERGE_MAX_LINES)
			return -EFBIG;

		r = parse_head(line.data + off, &h);
		if (r < 0)
			return r;

		/* vCard 2.1 quoted-printable: a value ending in '=' goes on on the next line, which
		 * is not folded. */
		if (h.qp && t.vcard)
			while (line.len > off + h.voff && line.data[line.len - 1] == '=') {
				line.data[--line.len] = 0;
				r = read_logical(&rd, &line);
				if (r < 0)
					return r;
				if (r == 0)
					break;
			}

		const char *text = line.data + off, *value = text + h.voff;
		const char *raw = data + start;
		size_t raw_len = rd.pos - start;
		bool begin = !h.group && strcmp(h.name, "BEGIN") == 0;
		bool end = !h.group && strcmp(h.name, "END") == 0;
		_cleanup_free_ char *cname = NULL;

		if (begin || end) {
			cname = strndup_trim(value, strlen(value), true);
			if (!cname)
				return -ENOMEM;
			/* In a vCard only VCARD is a component (a 2.1 AGENT may embed one);
			 * any other BEGIN is a property. */
			if (t.root && t.vcard && strcmp(cname, "VCARD") != 0)
				begin = end = false;
		}

		if (!t.root) {
			node *root;

			if (!begin)
				return -EBADMSG;
			if (strcmp(cname, "VCARD") == 0)
				t.vcard = true;
			else if (strcmp(cname, "VCALENDAR") != 0)
				return -EBADMSG;
			r = comp_new(sd, cname, raw, raw_len, &root);
			if (r < 0)
				return r;
			t.root = root;
			stack[depth++] = root;
			continue;
		}

		node *top = stack[depth - 1];

		if (begin) {
			_cleanup_(node_freep) node *c = NULL;

			if (!*cname || depth >= MERGE_MAX_DEPTH)
				return -EBADMSG;
			r = comp_new(sd, cname, raw, raw_len, &c);
			if (r < 0)
				return r;
			r = node_add_child(top, c);
			if (r < 0)
				return r;
			stack[depth++] = TAKE_PTR(c);
			continue;
		}
		if (end) {
			if (strcmp(cname, top->name) != 0)
				return -EBADMSG;
			top->end_raw = raw;
			top->end_raw_len = raw_len;
			r = comp_finish(&t, top, depth == 1);
			if (r < 0)
				return r;
			if (--depth == 0)
				closed = true;
			continue;
		}

		_cleanup_(node_freep) node *p = NULL;
		r = prop_new(&t, top, sd, text, &h, raw, raw_len, &p);
		if (r < 0)
			return r;
		r = node_add_child(top, p);
		if (r < 0)
			return r;
		TAKE_PTR(p);
	}
	if (!closed)
		return -EBADMSG;
	*ret = t;
	t = (tree) {};
	return 0;
}

/* ---- merge -------------------------------------------------------------------------------- */

typedef struct merge_ctx {
	merge_side win;		/* the side the policy favours */
	bool conflict;
	ks_buf parts;		/* the summary's component parts */
	char *root_labels;
} merge_ctx;

static void merge_ctx_done(merge_ctx *ctx)
{
	ks_buf_done(&ctx->parts);
	free(ctx->root_labels);
	*ctx = (merge_ctx) {};
}

typedef struct out_comp out_comp;

typedef struct out_item {
	const node *node;	/* taken as it is, or */
	out_comp *sub;		/* merged from both sides */
	merge_side sd;
	size_t index;
	uint64_t rank;		/* the order within its group, set when writing */
} out_item;

/* A merged component: for each key (a group), the children chosen for it. */
struct out_comp {
	const node *in[_SIDE_MAX];
	const char *name;
	out_item *items;
	size_t n_items;
	size_t *group_end;	/* group g's items end at group_end[g] and start where g-1's end */
	size_t n_groups;
	size_t *grp[_SIDE_MAX];	/* the group of each child of in[SIDE_LOCAL] and in[SIDE_REMOTE] */
	uint8_t digest[32];
};

static out_comp *out_comp_free(out_comp *o)
{
	if (!o)
		return NULL;
	for (size_t i = 0; i < o->n_items; i++)
		out_comp_free(o->items[i].sub);
	free(o->items);
	free(o->group_end);
	for (size_t s = 0; s < _SIDE_MAX; s++)
		free(o->grp[s]);
	free(o);
	return NULL;
}
KS_DEFINE_CLEANUP(out_comp, out_comp_free);

static void out_add(out_comp *o, const node *n)
{
	o->items[o->n_items++] = (out_item) { .node = n, .sd = n->sd, .index = n->index };
}

static void out_add_list(out_comp *o, const node *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out_add(o, v[i]);
}

/* Adds a conflict on label to labels, the list of the component being merged. */
static int conflict_add(merge_ctx *ctx, ks_buf *labels, const char *label)
{
	ctx->conflict = true;
	if (labels->len > SUMMARY_MAX)
		return 0;
	if (labels->len > 0 && ks_buf_puts(labels, ", ") < 0)
		return -ENOMEM;
	if (ks_buf_puts(labels, label) < 0)
		return -ENOMEM;
	if (labels->len > SUMMARY_MAX)
		return ks_buf_puts(labels, ", ...");
	return 0;
}

typedef struct keyed {
	const uint8_t *d;
	size_t i;
} keyed;

static int keyed_cmp(const void *a, const void *b)
{
	const keyed *x = a, *y = b;
	int c = memcmp(x->d, y->d, 32);

	if (c != 0)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

static const uint8_t *node_digest(const node *n, int which)
{
	return which == 0 ? n->d_full : which == 1 ? n->d_a : n->d_b;
}

/* Collects the elements of v whose entry in map is NONE, keyed by digest which, sorted. */
static keyed *unpaired_sorted(const node *const *v, size_t n, const size_t *map, int which,
			      size_t *ret_n)
{
	keyed *k = calloc(n + 1, sizeof(keyed));
	size_t m = 0;

	if (!k)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (map[i] == NONE)
			k[m++] = (keyed) { node_digest(v[i], which), i };
	qsort(k, m, sizeof(keyed), keyed_cmp);
	*ret_n = m;
	return k;
}

/* Pairs the elements of a and b whose a_to_b / b_to_a entry is NONE and which are identical,
 * in list order as far as the shorter run of copies goes. Sorting keeps this O(n log n). */
static int pair_equal(const node *const *a, size_t na, size_t *a_to_b, const node *const *b,
		      size_t nb, size_t *b_to_a)
{
	size_t ma, mb;
	_cleanup_free_ keyed *ka = unpaired_sorted(a, na, a_to_b, 0, &ma);
	_cleanup_free_ keyed *kb = unpaired_sorted(b, nb, b_to_a, 0, &mb);

	if (!ka || !kb)
		return -ENOMEM;
	for (size_t x = 0, y = 0; x < ma && y < mb;) {
		int c = memcmp(ka[x].d, kb[y].d, 32);

		if (c < 0)
			x++;
		else if (c > 0)
			y++;
		else {
			a_to_b[ka[x].i] = kb[y].i;
			b_to_a[kb[y].i] = ka[x].i;
			x++;
			y++;
		}
	}
	return 0;
}

/* One pass over the runs of equal digests (which: 1 value, 2 parameters) among the unpaired
 * elements of a and b: counting, for each element, its candidates on the other side; or
 * pairing the elements that are each other's only candidate. */
static int edit_pass(const node *const *a, size_t na, size_t *a_to_b, size_t *cand_a,
		     const node *const *b, size_t nb, size_t *b_to_a, size_t *cand_b, int which,
		     bool pair)
{
	size_t ma, mb;
	_cleanup_free_ keyed *ka = unpaired_sorted(a, na, a_to_b, which, &ma);
	_cleanup_free_ keyed *kb = unpaired_sorted(b, nb, b_to_a, which, &mb);

	if (!ka || !kb)
		return -ENOMEM;
	for (size_t x = 0, y = 0; x < ma && y < mb;) {
		int c = memcmp(ka[x].d, kb[y].d, 32);
		size_t ex = x, ey = y;

		if (c < 0) {
			x++;
			continue;
		}
		if (c > 0) {
			y++;
			continue;
		}
		while (ex < ma && memcmp(ka[ex].d, ka[x].d, 32) == 0)
			ex++;
		while (ey < mb && memcmp(kb[ey].d, kb[y].d, 32) == 0)
			ey++;
		if (!pair) {
			for (size_t i = x; i < ex; i++)
				cand_a[ka[i].i] += ey - y;
			for (size_t j = y; j < ey; j++)
				cand_b[kb[j].i] += ex - x;
		} else if (cand_a[ka[x].i] == 1 && cand_b[kb[y].i] == 1) {
			a_to_b[ka[x].i] = kb[y].i;
			b_to_a[kb[y].i] = ka[x].i;
		}
		x = ex;
		y = ey;
	}
	return 0;
}

/* Pairs the removed base instances a with the added instances b that replace them: same value
 * (parameters changed) or same parameters (value changed). Only a pair where each is the
 * other's one candidate counts; any choice among several would be a guess that depends on
 * line order, and merging the result again could guess differently. */
static int pair_edits(const node *const *a, size_t na, size_t *a_to_b, const node *const *b,
		      size_t nb, size_t *b_to_a)
{
	_cleanup_free_ size_t *cand_a = calloc(na + 1, sizeof(size_t));
	_cleanup_free_ size_t *cand_b = calloc(nb + 1, sizeof(size_t));
	int r;

	if (!cand_a || !cand_b)
		return -ENOMEM;
	for (int pair = 0; pair <= 1; pair++)
		for (int which = 1; which <= 2; which++) {
			r = edit_pass(a, na, a_to_b, cand_a, b, nb, b_to_a, cand_b, which, pair);
			if (r < 0)
				return r;
		}
	return 0;
}

/* Whether a and b hold the same instances, in any order, copies aside. */
static int same_set(const node *const *a, size_t na, const node *const *b, size_t nb)
{
	_cleanup_free_ keyed *ka = NULL, *kb = NULL;
	size_t x = 0, y = 0;

	if (na == 1 && nb == 1)
		return memcmp(a[0]->d_full, b[0]->d_full, 32) == 0;
	if ((na == 0) != (nb == 0))
		return 0;
	ka = calloc(na + 1, sizeof(keyed));
	kb = calloc(nb + 1, sizeof(keyed));
	if (!ka || !kb)
		return -ENOMEM;
	for (size_t i = 0; i < na; i++)
		ka[i] = (keyed) { a[i]->d_full, i };
	for (size_t i = 0; i < nb; i++)
		kb[i] = (keyed) { b[i]->d_full, i };
	qsort(ka, na, sizeof(keyed), keyed_cmp);
	qsort(kb, nb, sizeof(keyed), keyed_cmp);
	while (x < na && y < nb) {
		if (memcmp(ka[x].d, kb[y].d, 32) != 0)
			return 0;
		const uint8_t *d = ka[x].d;
		while (x < na && memcmp(ka[x].d, d, 32) == 0)
			x++;
		while (y < nb && memcmp(kb[y].d, d, 32) == 0)
			y++;
	}
	return x == na && y == nb;
}

typedef struct side_diff {
	size_t *b_to_s;		/* base instance -> the same instance on the side, or NONE */
	size_t *s_to_b;
	size_t *edit_b;		/* base instance -> its replacement on the side, NONE or TAKEN */
	size_t *edit_s;
} side_diff;

static void side_diff_done(side_diff *d)
{
	free(d->b_to_s);
	free(d->s_to_b);
	free(d->edit_b);
	free(d->edit_s);
	*d = (side_diff) {};
}

/* What one side did to the base instances: kept them, deleted them, or replaced them (an
 * instance gone and one added with the same value or the same parameters). */
static int side_diff_compute(const node *const *b, size_t nb, const node *const *s, size_t ns,
			     side_diff *d)
{
	int r;

	d->b_to_s = malloc((nb + 1) * sizeof(size_t));
	d->edit_b = malloc((nb + 1) * sizeof(size_t));
	d->s_to_b = malloc((ns + 1) * sizeof(size_t));
	d->edit_s = malloc((ns + 1) * sizeof(size_t));
	if (!d->b_to_s || !d->edit_b || !d->s_to_b || !d->edit_s)
		return -ENOMEM;
	for (size_t i = 0; i < nb; i++)
		d->b_to_s[i] = NONE;
	for (size_t i = 0; i < ns; i++)
		d->s_to_b[i] = NONE;
	r = pair_equal(b, nb, d->b_to_s, s, ns, d->s_to_b);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nb; i++)
		d->edit_b[i] = d->b_to_s[i] == NONE ? NONE : TAKEN;
	for (size_t i = 0; i < ns; i++)
		d->edit_s[i] = d->s_to_b[i] == NONE ? NONE : TAKEN;
	return pair_edits(b, nb, d->edit_b, s, ns, d->edit_s);
}

typedef enum inst_state {
	INST_KEPT,
	INST_DELETED,
	INST_EDITED,
} inst_state;

static inst_state inst_state_of(const side_diff *d, size_t i)
{
	if (d->b_to_s[i] != NONE)
		return INST_KEPT;
	return d->edit_b[i] == NONE ? INST_DELETED : INST_EDITED;
}

static const uint8_t *item_digest(const out_item *it)
{
	return it->sub ? it->sub->digest : it->node->d_full;
}

/* Marks in dup[] every element of keys[0..n) whose digest an earlier element has. */
static int mark_copies(keyed *keys, size_t n, bool *dup)
{
	qsort(keys, n, sizeof(keyed), keyed_cmp);
	for (size_t i = 1; i < n; i++)
		if (memcmp(keys[i].d, keys[i - 1].d, 32) == 0)
			dup[keys[i].i] = true;
	return 0;
}

/* v without the instances identical to an earlier one, in v's order, into *ret (owned). */
static int unique_nodes(const node *const *v, size_t n, const node ***ret, size_t *ret_n)
{
	_cleanup_free_ keyed *k = calloc(n + 1, sizeof(keyed));
	_cleanup_free_ bool *dup = calloc(n + 1, sizeof(bool));
	const node **u = calloc(n + 1, sizeof(node *));
	size_t m = 0;

	if (!k || !dup || !u) {
		free(u);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		k[i] = (keyed) { v[i]->d_full, i };
	mark_copies(k, n, dup);
	for (size_t i = 0; i < n; i++)
		if (!dup[i])
			u[m++] = v[i];
	*ret = u;
	*ret_n = m;
	return 0;
}

/* Drops the items from start on that are identical to an earlier one: an instance one side
 * changed into what the other side added is one instance, not two. */
static int drop_copies(out_comp *o, size_t start)
{
	size_t n = o->n_items - start, w = start;
	_cleanup_free_ keyed *k = calloc(n + 1, sizeof(keyed));
	_cleanup_free_ bool *dup = calloc(n + 1, sizeof(bool));

	if (!k || !dup)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		k[i] = (keyed) { item_digest(&o->items[start + i]), i };
	mark_copies(k, n, dup);
	for (size_t i = 0; i < n; i++)
		if (!dup[i])
			o->items[w++] = o->items[start + i];
	o->n_items = w;
	return 0;
}

/* A multi-valued property, or components matched by content: a set merge. Each version is
 * taken as a set: a line written twice says nothing more than once, and copies would make
 * "which one was deleted" a guess. */
static int merge_multi(merge_ctx *ctx, out_comp *o, ks_buf *labels, const char *label,
		       const node *const *b_all, size_t nb_all, const node *const *l_all,
		       size_t nl_all, const node *const *r_all, size_t nr_all)
{
	_cleanup_(side_diff_done) side_diff dl = {}, dr = {};
	_cleanup_free_ size_t *al = NULL, *ar = NULL;
	_cleanup_free_ const node **b = NULL, **l = NULL, **rv = NULL;
	size_t start = o->n_items, nb, nl, nr;
	bool conflict = false;
	int r;

	r = unique_nodes(b_all, nb_all, &b, &nb);
	if (r < 0)
		return r;
	r = unique_nodes(l_all, nl_all, &l, &nl);
	if (r < 0)
		return r;
	r = unique_nodes(r_all, nr_all, &rv, &nr);
	if (r < 0)
		return r;

	r = side_diff_compute(b, nb, l, nl, &dl);
	if (r < 0)
		return r;
	r = side_diff_compute(b, nb, rv, nr, &dr);
	if (r < 0)
		return r;

	for (size_t i = 0; i < nb; i++) {
		inst_state sl = inst_state_of(&dl, i), sr = inst_state_of(&dr, i);
		const node *el = sl == INST_EDITED ? l[dl.edit_b[i]] : NULL;
		const node *er = sr == INST_EDITED ? rv[dr.edit_b[i]] : NULL;

		if (sl == INST_KEPT && sr == INST_KEPT)
			out_add(o, ctx->win == SIDE_LOCAL ? l[dl.b_to_s[i]] : rv[dr.b_to_s[i]]);
		else if (el && er) {
			if (memcmp(el->d_full, er->d_full, 32) != 0)
				conflict = true;
			out_add(o, ctx->win == SIDE_LOCAL ? el : er);
		} else if (el)
			/* Kept or deleted on the other side: an edit is never lost. */
			out_add(o, el);
		else if (er)
			out_add(o, er);
		/* Deleted on one side and kept or deleted on the other: gone. */
	}

	/* What both sides added alike goes in once. */
	al = malloc((nl + 1) * sizeof(size_t));
	ar = malloc((nr + 1) * sizeof(size_t));
	if (!al || !ar)
		return -ENOMEM;
	for (size_t i = 0; i < nl; i++)
		al[i] = dl.s_to_b[i] == NONE && dl.edit_s[i] == NONE ? NONE : TAKEN;
	for (size_t i = 0; i < nr; i++)
		ar[i] = dr.s_to_b[i] == NONE && dr.edit_s[i] == NONE ? NONE : TAKEN;
	r = pair_equal(l, nl, al, rv, nr, ar);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nl; i++) {
		if (al[i] == TAKEN)
			continue;
		if (al[i] != NONE && ctx->win == SIDE_REMOTE)
			out_add(o, rv[al[i]]);
		else
			out_add(o, l[i]);
	}
	for (size_t i = 0; i < nr; i++)
		if (ar[i] == NONE)
			out_add(o, rv[i]);

	r = drop_copies(o, start);
	if (r < 0)
		return r;
	if (conflict)
		return conflict_add(ctx, labels, label);
	return 0;
}

static int merge_comp(merge_ctx *ctx, const node *b, const node *l, const node *r,
		      const char *label, out_comp **ret);

/* Whether v holds two different instances; copies of one line do not make a property
 * multi-valued. */
static bool distinct(const node *const *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (memcmp(v[i]->d_full, v[0]->d_full, 32) != 0)
			return true;
	return false;
}

/* Merges one group: the instances b, l and rv that share a key in the three versions of a
 * component. */
static int merge_group(merge_ctx *ctx, out_comp *o, ks_buf *labels, const node *const *b,
		       size_t nb, const node *const *l, size_t nl, const node *const *rv,
		       size_t nr)
{
	const node *first = nb ? b[0] : nl ? l[0] : rv[0];
	const char *label = first->label ? first->label : first->key;
	int r;

	/* A property whose name looks like a component's key: nothing but a set merge fits. */
	for (size_t k = 0; k < nb + nl + nr; k++) {
		const node *x = k < nb ? b[k] : k < nb + nl ? l[k - nb] : rv[k - nb - nl];

		if (x->kind != first->kind)
			return merge_multi(ctx, o, labels, label, b, nb, l, nl, rv, nr);
	}

	/* A time zone is the same zone on both sides: keeping one never hurts, dropping one
	 * that is still used breaks every time given in it. */
	if (first->kind == NODE_COMP_TZ) {
		if (nr > 0)
			out_add_list(o, rv, nr);
		else
			out_add_list(o, l, nl);
		return 0;
	}

	r = same_set(l, nl, rv, nr);
	if (r < 0)
		return r;
	if (r > 0) {
		if (ctx->win == SIDE_LOCAL)
			out_add_list(o, l, nl);
		else
			out_add_list(o, rv, nr);
		return 0;
	}
	r = same_set(l, nl, b, nb);
	if (r < 0)
		return r;
	if (r > 0) {
		out_add_list(o, rv, nr);
		return 0;
	}
	r = same_set(rv, nr, b, nb);
	if (r < 0)
		return r;
	if (r > 0) {
		out_add_list(o, l, nl);
		return 0;
	}

	bool several = distinct(b, nb) || distinct(l, nl) || distinct(rv, nr);

	if (first->kind == NODE_COMP_ID && !several) {
		if (nl > 0 && nr > 0) {
			_cleanup_(out_comp_freep) out_comp *sub = NULL;

			r = merge_comp(ctx, nb ? b[0] : NULL, l[0], rv[0], label, &sub);
			if (r < 0)
				return r;
			o->items[o->n_items++] = (out_item) {
				.sub = TAKE_PTR(sub),
				.sd = l[0]->sd,
				.index = l[0]->index,
			};
			return 0;
		}
		/* Deleted on one side (nb is 1 here, or a side would equal base): kept when the
		 * other side modified it. */
		const node *kept = nl ? l[0] : rv[0];
		if (memcmp(kept->d_a, b[0]->d_a, 32) != 0)
			out_add(o, kept);
		return 0;
	}
	if (first->kind != NODE_PROP)
		return merge_multi(ctx, o, labels, label, b, nb, l, nl, rv, nr);

	prop_rule rule = first->rule;
	if (several && rule != RULE_UNIT && rule != RULE_IDENTITY)
		rule = RULE_MULTI;

	switch (rule) {
	case RULE_MULTI:
		return merge_multi(ctx, o, labels, label, b, nb, l, nl, rv, nr);
	case RULE_WINNER:
		if (ctx->win == SIDE_LOCAL)
			out_add_list(o, l, nl);
		else
			out_add_list(o, rv, nr);
		return 0;
	case RULE_LATEST:
	case RULE_MAX_NUMBER: {
		const node *x = nl ? l[0] : NULL, *y = nr ? rv[0] : NULL;
		int c;

		if (!x || !y) {
			out_add(o, x ? x : y);
			return 0;
		}
		c = digits_cmp(x->value ? x->value : "", y->value ? y->value : "");
		if (c == 0)
			c = ctx->win == SIDE_LOCAL ? 1 : -1;
		out_add(o, c > 0 ? x : y);
		return 0;
	}
	case RULE_SINGLE:
	case RULE_UNIT:
	case RULE_IDENTITY:
		break;
	}
	if (ctx->win == SIDE_LOCAL)
		out_add_list(o, l, nl);
	else
		out_add_list(o, rv, nr);
	return conflict_add(ctx, labels, label);
}

typedef struct entry {
	const char *key;
	merge_side sd;
	size_t index;
	const node *node;
} entry;

static int entry_cmp(const void *a, const void *b)
{
	const entry *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	if (x->sd != y->sd)
		return x->sd < y->sd ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Merges the children of l and r against those of b (NULL when the component is new on both
 * sides) into *ret. label names the component in the summary, NULL for the object itself. */
static int merge_comp(merge_ctx *ctx, const node *b, const node *l, const node *r,
		      const char *label, out_comp **ret)
{
	_cleanup_(out_comp_freep) out_comp *o = NULL;
	_cleanup_(ks_buf_done) ks_buf labels = {};
	_cleanup_free_ entry *e = NULL;
	_cleanup_free_ const node **np = NULL;
	_cleanup_free_ uint8_t (*ds)[32] = NULL;
	const node *in[_SIDE_MAX] = { b, l, r };
	size_t n = 0, total = 0;
	int q;

	for (size_t s = 0; s < _SIDE_MAX; s++)
		if (in[s])
			total += in[s]->n_children;

	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	memcpy(o->in, in, sizeof(in));
	o->name = l->name;
	o->items = calloc(l->n_children + r->n_children + 1, sizeof(out_item));
	o->group_end = calloc(total + 1, sizeof(size_t));
	o->grp[SIDE_LOCAL] = calloc(l->n_children + 1, sizeof(size_t));
	o->grp[SIDE_REMOTE] = calloc(r->n_children + 1, sizeof(size_t));
	e = calloc(total + 1, sizeof(entry));
	np = calloc(total + 1, sizeof(node *));
	if (!o->items || !o->group_end || !o->grp[SIDE_LOCAL] || !o->grp[SIDE_REMOTE] || !e ||
	    !np)
		return -ENOMEM;

	for (size_t s = 0; s < _SIDE_MAX; s++)
		for (size_t i = 0; in[s] && i < in[s]->n_children; i++)
			e[n++] = (entry) {
				.key = in[s]->children[i]->key,
				.sd = (merge_side) s,
				.index = i,
				.node = in[s]->children[i],
			};
	qsort(e, n, sizeof(entry), entry_cmp);
	for (size_t i = 0; i < n; i++)
		np[i] = e[i].node;

	for (size_t i = 0; i < n;) {
		size_t j = i, ib, il;

		while (j < n && strcmp(e[j].key, e[i].key) == 0)
			j++;
		for (ib = i; ib < j && e[ib].sd == SIDE_BASE; ib++)
			;
		for (il = ib; il < j && e[il].sd == SIDE_LOCAL; il++)
			;
		for (size_t k = ib; k < j; k++)
			o->grp[e[k].sd][e[k].index] = o->n_groups;

		q = merge_group(ctx, o, &labels, np + i, ib - i, np + ib, il - ib, np + il, j - il);
		if (q < 0)
			return q;
		o->group_end[o->n_groups++] = o->n_items;
		i = j;
	}

	ds = calloc(o->n_items + 1, 32);
	if (!ds)
		return -ENOMEM;
	for (size_t i = 0; i < o->n_items; i++)
		memcpy(ds[i], item_digest(&o->items[i]), 32);
	comp_digest(o->name, ds, o->n_items, o->digest);

	if (labels.len > 0) {
		if (!label) {
			ctx->root_labels = ks_buf_steal(&labels);
			if (!ctx->root_labels)
				return -ENOMEM;
		} else if (ctx->parts.len <= SUMMARY_MAX) {
			if (ctx->parts.len > 0 && ks_buf_puts(&ctx->parts, "; ") < 0)
				return -ENOMEM;
			if (ks_buf_printf(&ctx->parts, "%s: %s", label, labels.data) < 0)
				return -ENOMEM;
		}
	}

	*ret = TAKE_PTR(o);
	return 0;
}

/* ---- output ------------------------------------------------------------------------------- */

int ks_merge_fold_line(ks_buf *b, const char *s, size_t n)
{
	size_t room = FOLD_OCTETS;
	int r;

	while (n > room) {
		size_t cut = room;

		while (cut > 0 && ((uint8_t) s[cut] & 0xc0) == 0x80)
			cut--;
		if (cut == 0)
			cut = room;
		r = ks_buf_append(b, s, cut);
		if (r >= 0)
			r = ks_buf_append(b, "\r\n ", 3);
		if (r < 0)
			return r;
		s += cut;
		n -= cut;
		room = FOLD_OCTETS - 1;
	}
	r = ks_buf_append(b, s, n);
	if (r >= 0)
		r = ks_buf_append(b, "\r\n", 2);
	return r;
}

/* Writes the lines raw[0..len) of one content line with CRLF endings: as they were written
 * when that is a proper folding, else unfolded and folded again. */
static int emit_span(ks_buf *b, const char *raw, size_t len, bool qp)
{
	const char *end = raw + len;
	bool verbatim = true;
	int r;

	for (const char *p = raw; p < end;) {
		const char *nl = memchr(p, '\n', (size_t) (end - p));
		size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);

		while (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > FOLD_OCTETS || (p == raw && (n == 0 || ks_is_blank(*p))))
			verbatim = false;
		p = nl ? nl + 1 : end;
	}

	if (verbatim || qp) {
		for (const char *p = raw; p < end;) {
			const char *nl = memchr(p, '\n', (size_t) (end - p));
			size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);

			while (n > 0 && p[n - 1] == '\r')
				n--;
			r = ks_buf_append(b, p, n);
			if (r >= 0)
				r = ks_buf_append(b, "\r\n", 2);
			if (r < 0)
				return r;
			p = nl ? nl + 1 : end;
		}
		return 0;
	}

	_cleanup_(ks_buf_done) ks_buf u = {};
	for (const char *p = raw; p < end;) {
		const char *nl = memchr(p, '\n', (size_t) (end - p));
		size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p), skip = p == raw ? 0 : 1;

		while (n > skip && p[n - 1] == '\r')
			n--;
		if (n > skip) {
			r = ks_buf_append(&u, p + skip, n - skip);
			if (r < 0)
				return r;
		}
		p = nl ? nl + 1 : end;
	}
	size_t off = 0;
	while (off < u.len && ks_is_space(u.data[off]))
		off++;
	return ks_merge_fold_line(b, u.data ? u.data + off : "", u.len - off);
}

static int emit_node(ks_buf *b, const node *n)
{
	int r;

	if (n->kind == NODE_PROP)
		return emit_span(b, n->raw, n->raw_len, n->qp);
	r = emit_span(b, n->raw, n->raw_len, false);
	for (size_t i = 0; i < n->n_children && r >= 0; i++)
		r = emit_node(b, n->children[i]);
	if (r >= 0)
		r = emit_span(b, n->end_raw, n->end_raw_len, false);
	return r;
}

static int rank_cmp(const void *a, const void *b)
{
	const out_item *x = a, *y = b;

	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Writes a merged component in the line order of primary: its groups where primary has them,
 * the groups only the other side has after the group that precedes them there. */
static int emit_out(ks_buf *b, out_comp *o, merge_side primary)
{
	merge_side secondary = primary == SIDE_LOCAL ? SIDE_REMOTE : SIDE_LOCAL;
	const node *p = o->in[primary], *s = o->in[secondary];
	size_t head = o->n_groups, last = head;
	_cleanup_free_ size_t *next = calloc(o->n_groups + 1, sizeof(size_t));
	_cleanup_free_ bool *placed = calloc(o->n_groups + 1, sizeof(bool));
	int r;

	if (!next || !placed)
		return -ENOMEM;
	next[head] = NONE;
	for (size_t i = 0; i < p->n_children; i++) {
		size_t g = o->grp[primary][i];

		if (placed[g])
			continue;
		placed[g] = true;
		next[g] = next[last];
		next[last] = g;
		last = g;
	}
	size_t prev = head;
	for (size_t i = 0; i < s->n_children; i++) {
		size_t g = o->grp[secondary][i];

		if (!placed[g]) {
			placed[g] = true;
			next[g] = next[prev];
			next[prev] = g;
		}
		prev = g;
	}

	r = emit_span(b, p->raw, p->raw_len, false);
	if (r < 0)
		return r;
	for (size_t g = next[head]; g != NONE; g = next[g]) {
		size_t from = g > 0 ? o->group_end[g - 1] : 0, to = o->group_end[g];

		for (size_t i = from; i < to; i++)
			o->items[i].rank = (uint64_t) (o->items[i].sd != primary) << 63 |
					   (uint64_t) o->items[i].index;
		qsort(o->items + from, to - from, sizeof(out_item), rank_cmp);
		for (size_t i = from; i < to; i++) {
			if (o->items[i].sub)
				r = emit_out(b, o->items[i].sub, primary);
			else
				r = emit_node(b, o->items[i].node);
			if (r < 0)
				return r;
		}
	}
	return emit_span(b, p->end_raw, p->end_raw_len, false);
}

/* ---- API ---------------------------------------------------------------------------------- */

typedef struct input {
	const char *data;
	size_t len;
	char *uid;
	tree tree;
} input;

static void input_done(input *in)
{
	free(in->uid);
	tree_done(&in->tree);
	*in = (input) {};
}

static void inputs_done(input (*in)[_SIDE_MAX])
{
	for (size_t s = 0; s < _SIDE_MAX; s++)
		input_done(&(*in)[s]);
}

static int input_load(input *in, const char *data, size_t len, merge_side sd)
{
	_cleanup_(ks_item_info_done) ks_item_info info = {};
	int r;

	in->data = data;
	in->len = len;
	/* The rest of ksync must be able to read whatever is merged: the same checks first. */
	r = ks_item_parse_info(data, len, &info, NULL);
	if (r == -ENODATA)
		r = 0;
	if (r < 0)
		return r;
	in->uid = TAKE_PTR(info.uid);
	return tree_parse(data, len, sd, &in->tree);
}

static const node *root_version(const node *root)
{
	return child_prop(root, "VERSION");
}

static int result_set(ks_merge_result *ret, const char *data, size_t len, bool conflict,
		      bool same_as_local, bool same_as_remote, char *summary)
{
	char *d = malloc(len + 1);

	if (!d) {
		free(summary);
		return -ENOMEM;
	}
	memcpy(d, data, len);
	d[len] = 0;
	*ret = (ks_merge_result) {
		.data = d,
		.len = len,
		.conflict = conflict,
		.same_as_local = same_as_local,
		.same_as_remote = same_as_remote,
		.summary = summary,
	};
	return 0;
}

static bool bytes_equal(const input *a, const input *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int ks_merge(const char *base, size_t base_len, const char *local, size_t local_len,
	     const char *remote, size_t remote_len, ks_conflict_policy policy,
	     ks_merge_result *ret)
{
	_cleanup_(inputs_done) input in[_SIDE_MAX] = {};
	_cleanup_(merge_ctx_done) merge_ctx ctx = {};
	_cleanup_(out_comp_freep) out_comp *o = NULL;
	_cleanup_(ks_buf_done) ks_buf out = { .max = KS_CARD_MAX };
	_cleanup_free_ char *summary = NULL;
	int r;

	assert(base || base_len == 0);
	assert(local || local_len == 0);
	assert(remote || remote_len == 0);
	assert(ret);

	if ((int) policy < 0 || policy >= _KS_CONFLICT_MAX)
		return -EINVAL;
	ctx.win = policy == KS_CONFLICT_LOCAL_WINS ? SIDE_LOCAL : SIDE_REMOTE;

	r = input_load(&in[SIDE_LOCAL], local, local_len, SIDE_LOCAL);
	if (r < 0)
		return r;
	r = input_load(&in[SIDE_REMOTE], remote, remote_len, SIDE_REMOTE);
	if (r < 0)
		return r;
	if (base) {
		r = input_load(&in[SIDE_BASE], base, base_len, SIDE_BASE);
		if (r < 0)
			return r;
	}
	for (size_t s = 0; s < _SIDE_MAX; s++) {
		if (!in[s].tree.root)
			continue;
		if (in[s].tree.vcard != in[SIDE_LOCAL].tree.vcard)
			return -EBADMSG;
		if (!streq_null(in[s].uid, in[SIDE_LOCAL].uid))
			return -ENOTUNIQ;
	}

	const input *il = &in[SIDE_LOCAL], *ir = &in[SIDE_REMOTE];
	const node *lroot = il->tree.root, *rroot = ir->tree.root;
	bool same_bytes = bytes_equal(il, ir);

	if (same_bytes || memcmp(lroot->d_full, rroot->d_full, 32) == 0)
		return result_set(ret, ir->data, ir->len, false, same_bytes, true, NULL);

	/* Content lines of different versions do not mean the same (TYPE, escaping, N and ADR
	 * parts): the two cannot be combined line by line. */
	const node *lv = root_version(lroot), *rv = root_version(rroot);
	if (!streq_null(lv ? lv->value : NULL, rv ? rv->value : NULL)) {
		const input *w = &in[ctx.win];

		summary = strdup("VERSION");
		if (!summary)
			return -ENOMEM;
		return result_set(ret, w->data, w->len, true, w == il, w == ir, TAKE_PTR(summary));
	}

	r = merge_comp(&ctx, in[SIDE_BASE].tree.root, lroot, rroot, NULL, &o);
	if (r < 0)
		return r;

	if (ctx.conflict) {
		if (ctx.root_labels && ctx.parts.len > 0)
			summary = strdup_printf("%s; %s", ctx.root_labels, ctx.parts.data);
		else if (ctx.root_labels)
			summary = strdup(ctx.root_labels);
		else
			summary = strdup(ctx.parts.data ? ctx.parts.data : "");
		if (!summary)
			return -ENOMEM;
	}

	if (memcmp(o->digest, rroot->d_full, 32) == 0)
		return result_set(ret, ir->data, ir->len, ctx.conflict, false, true,
				  TAKE_PTR(summary));
	if (memcmp(o->digest, lroot->d_full, 32) == 0)
		return result_set(ret, il->data, il->len, ctx.conflict, true, false,
				  TAKE_PTR(summary));

	r = emit_out(&out, o, ctx.conflict ? ctx.win : SIDE_REMOTE);
	if (r < 0)
		return r;
	if (!il->tree.vcard) {
		/* Each side's times may be right and their mix wrong (the end from one side, a
		 * new start from the other): what no server takes is not a merge. The policy
		 * side is taken whole then, as a conflict, unless a side was wrong already. */
		_cleanup_free_ char *why = NULL;
		r = ks_ical_check_times(out.data, out.len, &why);
		if (r == -ENOMEM)
			return r;
		if (r == -EDOM && ks_ical_check_times(il->data, il->len, NULL) >= 0 &&
		    ks_ical_check_times(ir->data, ir->len, NULL) >= 0) {
			const input *w = &in[ctx.win];
			free(summary);
			summary = strdup_printf("the times merged would not fit together: %s", why);
			if (!summary)
				return -ENOMEM;
			return result_set(ret, w->data, w->len, true, w == il, w == ir,
					  TAKE_PTR(summary));
		}
	}
	size_t len = out.len;
	char *data = ks_buf_steal(&out);
	if (!data)
		return -ENOMEM;
	*ret = (ks_merge_result) {
		.data = data,
		.len = len,
		.conflict = ctx.conflict,
		.summary = TAKE_PTR(summary),
	};
	return 0;
}

void ks_merge_result_done(ks_merge_result *r)
{
	if (!r)
		return;
	free(r->data);
	free(r->summary);
	*r = (ks_merge_result) {};
}

static const char *const policy_table[_KS_CONFLICT_MAX] = {
	[KS_CONFLICT_SERVER_WINS] = "server-wins",
	[KS_CONFLICT_LOCAL_WINS] = "local-wins",
};

const char *ks_conflict_policy_to_string(ks_conflict_policy p)
{
	if ((int) p < 0 || p >= _KS_CONFLICT_MAX)
		return NULL;
	return policy_table[p];
}

ks_conflict_policy ks_conflict_policy_from_string(const char *s)
{
	if (!s)
		return _KS_CONFLICT_INVALID;
	for (size_t i = 0; i < _KS_CONFLICT_MAX; i++)
		if (ks_streq_nocase(s, policy_table[i]))
			return (ks_conflict_policy) i;
	return _KS_CONFLICT_INVALID;
}
