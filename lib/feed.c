/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libical/ical.h>

#include "feed_p.h"
#include "hash_p.h"
#include "limits.h"
#include "macro.h"
#include "text_p.h"

/* A calendar subscription's iCalendar file split into items: one VCALENDAR per UID with the
 * VEVENT, VTODO and VJOURNAL components of that UID (a recurring event with its exceptions)
 * and the VTIMEZONEs they name; a component without a UID gets one made from its bytes. */

typedef struct part {
	const char *uid;
	size_t at;		/* order in the file, so that a master stays before its exceptions */
	icalcomponent *c;
} part;

static int cmp_part(const void *a, const void *b)
{
	const part *x = a, *y = b;
	int k = strcmp(x->uid, y->uid);

	return k ? k : x->at < y->at ? -1 : x->at > y->at;
}

static int cmp_item(const void *a, const void *b)
{
	return strcmp(((const ks_feed_item *) a)->href, ((const ks_feed_item *) b)->href);
}

static bool is_item(icalcomponent_kind k)
{
	return k == ICAL_VEVENT_COMPONENT || k == ICAL_VTODO_COMPONENT ||
	       k == ICAL_VJOURNAL_COMPONENT;
}

/* Adds to cal a copy of each VTIMEZONE of root that a property of c names. */
static void add_zones(icalcomponent *cal, icalcomponent *root, icalcomponent *c)
{
	for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_ANY_PROPERTY); p;
	     p = icalcomponent_get_next_property(c, ICAL_ANY_PROPERTY)) {
		icalparameter *tz = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
		const char *tzid = tz ? icalparameter_get_tzid(tz) : NULL;

		if (!tzid)
			continue;
		bool have = false;
		for (icalcomponent *z = icalcomponent_get_first_component(cal,
									 ICAL_VTIMEZONE_COMPONENT);
		     z && !have; z = icalcomponent_get_next_component(cal, ICAL_VTIMEZONE_COMPONENT)) {
			const char *id = icalproperty_get_tzid(
				icalcomponent_get_first_property(z, ICAL_TZID_PROPERTY));
			have = id && strcmp(id, tzid) == 0;
		}
		for (icalcomponent *z = icalcomponent_get_first_component(root,
									 ICAL_VTIMEZONE_COMPONENT);
		     z && !have; z = icalcomponent_get_next_component(root, ICAL_VTIMEZONE_COMPONENT)) {
			icalproperty *idp = icalcomponent_get_first_property(z, ICAL_TZID_PROPERTY);
			const char *id = idp ? icalproperty_get_tzid(idp) : NULL;

			if (id && strcmp(id, tzid) == 0) {
				icalcomponent_add_component(cal, icalcomponent_new_clone(z));
				have = true;
			}
		}
	}
}

/* The item's href: its UID when that is a plain name, else a hash of it. */
static int item_href(const char *coll, const char *uid, char **ret)
{
	size_t n = strlen(uid);
	bool plain = n > 0 && n <= KS_NAME_MAX && uid[0] != '.';
	char hex[65];

	for (size_t i = 0; plain && i < n; i++)
		plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-",
			       uid[i]) != NULL;
	if (plain)
		return asprintf(ret, "%s%s.ics", coll, uid) < 0 ? -ENOMEM : 0;
	ks_sha256_hex(uid, n, hex);
	return asprintf(ret, "%s%.32s.ics", coll, hex) < 0 ? -ENOMEM : 0;
}

/* One VCALENDAR for the n parts (one UID) of root's items. */
static int make_item(const char *coll, icalcomponent *root, const part *parts, size_t n,
		     ks_feed_item *ret)
{
	icalcomponent *cal = icalcomponent_new(ICAL_VCALENDAR_COMPONENT);
	icalproperty *prodid = icalcomponent_get_first_property(root, ICAL_PRODID_PROPERTY);
	char hex[65];
	int r = 0;

	if (!cal)
		return -ENOMEM;
	icalcomponent_add_property(cal, icalproperty_new_version("2.0"));
	icalcomponent_add_property(cal, prodid ? icalproperty_new_clone(prodid)
					       : icalproperty_new_prodid("-//ksync//feed//EN"));
	for (size_t i = 0; i < n; i++)
		add_zones(cal, root, parts[i].c);
	for (size_t i = 0; i < n; i++)
		icalcomponent_add_component(cal, icalcomponent_new_clone(parts[i].c));
	char *text = icalcomponent_as_ical_string_r(cal);
	icalcomponent_free(cal);
	if (!text)
		return -ENOMEM;
	*ret = (ks_feed_item) { .uid = strdup(parts[0].uid), .data = text, .len = strlen(text) };
	if (!ret->uid)
		r = -ENOMEM;
	if (r >= 0)
		r = item_href(coll, parts[0].uid, &ret->href);
	ks_sha256_hex(text, ret->len, hex);
	snprintf(ret->etag, sizeof(ret->etag), "\"%.40s\"", hex);
	return r;
}

/* Gives an item without a UID one made from its bytes, so that it keeps it, and one whose UID
 * no file could hold as it is (a control character, a line break, a UID longer than
 * KS_NAME_MAX * 8) one made from that UID, so that its exceptions stay with it. */
static int name_uidless(icalcomponent *c)
{
	const char *old = icalcomponent_get_uid(c);
	char hex[65], uid[64];
	bool bad = false;

	for (const unsigned char *p = (const unsigned char *) old; p && *p && !bad; p++)
		bad = *p < 0x20 || *p == 0x7f;
	if (old && *old && !bad && strlen(old) <= KS_NAME_MAX * 8)
		return 0;
	if (old && *old)
		ks_sha256_hex(old, strlen(old), hex);
	else {
		char *text = icalcomponent_as_ical_string_r(c);
		if (!text)
			return -ENOMEM;
		ks_sha256_hex(text, strlen(text), hex);
		free(text);
	}
	snprintf(uid, sizeof(uid), "ksync-feed-%.32s", hex);
	icalcomponent_set_uid(c, uid);
	return 0;
}

void ks_feed_items_free(ks_feed_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(items[i].uid);
		free(items[i].href);
		free(items[i].data);
	}
	free(items);
}

int ks_feed_split(const char *coll, const char *data, size_t len, ks_feed_item **ret,
		  size_t *ret_n, char **reterr_msg)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_free_ part *parts = NULL;
	ks_feed_item *items = NULL;
	icalcomponent *root;
	size_t n = 0, cap = 0, n_items = 0;
	int r = 0;

	if (memchr(data, '\0', len))
		return ks_set_error(reterr_msg, -EBADMSG, "not an iCalendar file (it holds a NUL "
				    "byte)");
	text = strndup(data, len);
	if (!text)
		return -ENOMEM;
	root = icalparser_parse_string(text);
	if (root && icalcomponent_isa(root) == ICAL_XROOT_COMPONENT) {
		/* Several VCALENDARs: only the first is read. */
		icalcomponent *first = icalcomponent_get_first_component(root,
									 ICAL_VCALENDAR_COMPONENT);
		if (first) {
			icalcomponent_remove_component(root, first);
			icalcomponent_free(root);
			root = first;
		}
	}
	if (!root || icalcomponent_isa(root) != ICAL_VCALENDAR_COMPONENT) {
		if (root)
			icalcomponent_free(root);
		return ks_set_error(reterr_msg, -EBADMSG, "not an iCalendar file");
	}
	for (icalcomponent *c = icalcomponent_get_first_component(root, ICAL_ANY_COMPONENT);
	     c && r >= 0; c = icalcomponent_get_next_component(root, ICAL_ANY_COMPONENT)) {
		if (!is_item(icalcomponent_isa(c)))
			continue;
		if (n == KS_COLLECTION_MAX_ITEMS) {
			r = ks_set_error(reterr_msg, -EFBIG, "more items than a collection may hold");
			break;
		}
		r = name_uidless(c);
		if (r >= 0 && n == cap) {
			part *grown = realloc(parts, (cap = cap ? cap * 2 : 64) * sizeof(*parts));
			if (!grown)
				r = -ENOMEM;
			else
				parts = grown;
		}
		if (r >= 0)
			parts[n] = (part) { .uid = icalcomponent_get_uid(c), .at = n, .c = c }, n++;
	}
	if (r >= 0 && n)
		qsort(parts, n, sizeof(*parts), cmp_part);
	for (size_t i = 0; r >= 0 && i < n;) {
		size_t j = i + 1;

		while (j < n && strcmp(parts[j].uid, parts[i].uid) == 0)
			j++;
		ks_feed_item *grown = realloc(items, (n_items + 1) * sizeof(*grown));
		if (!grown) {
			r = -ENOMEM;
			break;
		}
		items = grown;
		r = make_item(coll, root, parts + i, j - i, &items[n_items]);
		n_items++;
		if (r >= 0 && items[n_items - 1].len > KS_CARD_MAX)
			r = ks_set_error(reterr_msg, -EFBIG, "an item is larger than 8 MB");
		i = j;
	}
	icalcomponent_free(root);
	if (r >= 0 && n_items)
		qsort(items, n_items, sizeof(*items), cmp_item);
	/* Two UIDs that hash alike, or a UID equal to another's hash, would share an href. */
	for (size_t i = 1; r >= 0 && i < n_items; i++)
		if (strcmp(items[i - 1].href, items[i].href) == 0)
			r = ks_set_error(reterr_msg, -EBADMSG, "two items would have the same name "
					 "(%s)", items[i].href);
	if (r < 0) {
		ks_feed_items_free(items, n_items);
		return r;
	}
	*ret = items;
	*ret_n = n_items;
	return 0;
}
