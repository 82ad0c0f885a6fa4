/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "item_p.h"

/* A small, total RFC 6350 / RFC 2426 content-line parser. It never fails on odd but
 * readable input; it fails with -EBADMSG on input that is not a vCard at all. */

typedef struct ks_vcard_param {
	char *name;	/* upper-cased */
	char *value;	/* as written, quotes removed; several values stay comma-separated */
} ks_vcard_param;

typedef struct ks_vcard_prop {
	char *group;	/* "item1" in "item1.EMAIL", or NULL */
	char *name;	/* upper-cased */
	ks_vcard_param *params;
	size_t n_params;
	char *value;	/* raw value as written, after unfolding, still escaped */
} ks_vcard_prop;

typedef struct ks_vcard {
	char *version;	/* "3.0", "4.0", "2.1" or NULL */
	ks_vcard_prop *props;	/* BEGIN/END/VERSION not included */
	size_t n_props;
} ks_vcard;

/* Parses exactly the cards in data (one or more BEGIN:VCARD..END:VCARD blocks).
 * *ret is an array of *ret_n cards, freed with ks_vcard_free_array().
 * -EBADMSG when no card is found, a card is not closed, a line has no ':' or the
 * text is not valid UTF-8; -EFBIG past KS_CARD_MAX; -ENOMEM. */
int ks_vcard_parse(const char *data, size_t len, ks_vcard **ret, size_t *ret_n, char **reterr_msg);
void ks_vcard_free_array(ks_vcard *cards, size_t n);

/* First property of that name (case-insensitive), or NULL. Borrowed from card. */
const ks_vcard_prop *ks_vcard_get(const ks_vcard *card, const char *name);
/* Value of a parameter of prop (case-insensitive name), or NULL. Borrowed. */
const char *ks_vcard_param_get(const ks_vcard_prop *prop, const char *name);
/* Unescapes a text value (\n \N \, \; \\) into a new string owned by the caller. */
char *ks_vcard_unescape(const char *value);

/* Fills *ret (kind KS_ITEM_VCARD, uid, summary = FN, email = first EMAIL). Same errors as
 * ks_item_parse_info(). */
int ks_vcard_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg);
