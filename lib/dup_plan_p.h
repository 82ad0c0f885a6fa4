/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "buf_p.h"
#include "dup_p.h"
#include "engine_p.h"
#include "json_p.h"
#include "ksync.h"

/* Duplicate contacts as lib/dup_list.c reads them from the cache: an address book's cards and
 * their groups, and the plan of one group's merge, which lib/dup_apply.c carries out. */

/* One card of an address book, as the cache holds it (the server's bytes). */
typedef struct dup_book_item {
	char *href, *etag, *uid, *filename;
	char *data;		/* NUL-terminated */
	size_t len;
} dup_book_item;

/* An address book of an account: its cards (items[i], read as cards[i]) and their groups.
 * uids[i] and lens[i] repeat items[i].uid and .len for the grouping functions. */
typedef struct dup_book {
	const char *account;	/* borrowed from the config */
	ks_collection col;
	dup_book_item *items;
	ks_dup_card *cards;
	const char **uids;
	size_t *lens;
	size_t n, cap;
	ks_dup_groups g;
} dup_book;

void ks_dup_book_done(dup_book *b);

/* The merge of one group: the reference card, the others, the merged card, and the group cards
 * whose members name a card going away, with their new text. */
typedef struct dup_plan {
	dup_book b;
	size_t g;
	char *id;
	size_t ref;		/* item index of the reference */
	size_t *members;	/* item indexes, the reference first */
	size_t n_members;
	ks_dup_merged merged;
	size_t *groups;		/* item indexes of the group cards to rewrite */
	char **group_data;
	size_t *group_len;
	size_t n_groups;
} dup_plan;

/* Finds group id (as listed) among the synced address books of c, with the card of UID
 * keep_uid as its reference (NULL or "": the most complete), and works out its merge.
 * -EINVAL for an id or a UID that is not one, -ENOENT when no such group is there now
 * (*reterr_msg says which); -ENOMEM; the cache's errors. */
int ks_dup_plan_make(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     dup_plan *ret, char **reterr_msg);
void ks_dup_plan_done(dup_plan *p);

/* Writes the fields of p (its book, the cards, the lines of the merged card and where they
 * come from, the group cards) into the object w is in. */
void ks_dup_write_plan(ks_json_writer *w, const dup_plan *p);
/* Ends the text of w (whose buffer is buf) and hands it over in *ret. */
int ks_dup_finish_json(ks_json_writer *w, ks_buf *buf, char **ret);
/* "the card 'NAME' (UID x)" for messages, of item i of b. NULL when out of memory. */
char *ks_dup_label(const dup_book *b, size_t i);
