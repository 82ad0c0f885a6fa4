/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* One item of a calendar subscription (lib/feed.c). */
typedef struct ks_feed_item {
	char *uid;
	char *href;		/* coll + the UID (or a hash of it) + ".ics" */
	char etag[44];		/* a quoted hash of data */
	char *data;		/* NUL-terminated VCALENDAR */
	size_t len;
} ks_feed_item;

/* Splits the iCalendar file data[0..len) into items under the collection href coll, sorted by
 * href, into *ret (ks_feed_items_free()) and *ret_n. -EBADMSG when it is no iCalendar file
 * or two items would share an href, -EFBIG past KS_COLLECTION_MAX_ITEMS items or an item
 * over KS_CARD_MAX, each with *reterr_msg. */
int ks_feed_split(const char *coll, const char *data, size_t len, ks_feed_item **ret,
		  size_t *ret_n, char **reterr_msg);
void ks_feed_items_free(ks_feed_item *items, size_t n);
