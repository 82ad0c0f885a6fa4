/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Why a server refused one item, in words a user can act on. */

/* Whether an HTTP status answering one item's PUT or DELETE refuses that item alone: a 4xx but
 * 401 and 407 (credentials), 404 and 412 (the item changed or went: a merge), 408 and 429
 * (try later). */
bool ks_refusal_is_item_status(long status);

/* The reason for a refusal of the item data[0..len) (NULL for a DELETE) answered with status
 * and the error body body[0..body_len) (may be NULL): the server's precondition in words, with
 * its name, then the server's own text, e.g. "a vCard 3.0 needs an N property
 * (CARDDAV:valid-address-data)", "the calendar takes no tasks
 * (CALDAV:supported-calendar-component)", "HTTP 415 Unsupported Media Type: <the server's
 * message>". What the precondition leaves open is looked for in the item itself. *ret is
 * owned by the caller. -ENOMEM. */
int ks_refusal_reason(long status, const char *body, size_t body_len, const char *data,
		      size_t len, char **ret);
