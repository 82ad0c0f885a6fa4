/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cache_p.h"
#include "ksync.h"

/* Account and collection management: creating collections on the server, probing a new
 * account, the khal/khard/todoman configuration. The pieces below do no I/O, so that the
 * unit tests can check them without a server. */

/* Longest slug taken from a name, before any suffix. */
#define KS_MANAGE_SLUG_MAX 48

/* The last path segment of a new collection: name's ASCII letters and digits lowercased,
 * common Latin-1 letters folded to ASCII (é → e, ß → ss), everything else a '-' (runs merged,
 * none at either end), cut to KS_MANAGE_SLUG_MAX; then "-" and suffix when suffix is not
 * NULL. A name without any such character gives suffix alone, or "" without a suffix.
 * *ret is owned by the caller. -ENOMEM. */
int ks_manage_slug(const char *name, const char *suffix, char **ret);

/* A random version 4 UUID in lowercase, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx". -errno of
 * getrandom(). */
int ks_manage_uuid(char ret[37]);

/* The body of an extended MKCOL (RFC 5689) for an address book named name, with an
 * addressbook-description when description is neither NULL nor empty. -EINVAL when a text
 * is not valid UTF-8 or holds a character XML cannot carry. *ret is owned by the caller. */
int ks_manage_mkcol_body(const char *name, const char *description, char **ret);

/* The body of a MKCALENDAR (RFC 4791 5.3.1): displayname, supported-calendar-component-set
 * when components (KS_COMP_*) is not 0, and Apple's calendar-color when color is not NULL.
 * -EINVAL as for ks_manage_mkcol_body(), or for a color that is not "#RRGGBB". */
int ks_manage_mkcalendar_body(const char *name, unsigned components, const char *color,
			      char **ret);

/* The body of a PROPPATCH setting the given properties (each NULL to leave it out):
 * displayname, the description of an address book or calendar, calendar-color.
 * -EINVAL as above, -ENODATA when there is nothing to set. */
int ks_manage_proppatch_body(bool calendar, const char *displayname, const char *description,
			     const char *color, char **ret);

/* What a server's answer to MKCOL / MKCALENDAR at href means. 0: created. -EEXIST: something
 * is already there (405, 409, or a resource-must-be-null precondition in any answer).
 * Otherwise a negative errno and *ret_msg (owned by the caller) saying why, for the user:
 * -EACCES for 401 and 403, -EOPNOTSUPP for 415 and 501, -ENOSPC for 507, -EAGAIN for 429 and
 * 503, -EPROTO for a 207 without a known precondition and other statuses, -EIO for other
 * 5xx. -ENOMEM. */
int ks_manage_create_result(bool calendar, long status, const char *body, const char *href,
			    char **ret_msg);

/* The message for credentials the server refused: check the username, and with two-factor
 * authentication, an application password (Infomaniak: created in the Manager). Static. */
const char *ks_manage_auth_message(void);

/* Writes the KS_COMP_* bits as a JSON array of "VEVENT", "VTODO", "VJOURNAL". Returns the
 * writer's first error. */
struct ks_json_writer;
int ks_manage_json_components(struct ks_json_writer *w, unsigned components);

/* The JSON object of ks_probe_account() for the listed collections. *ret owned by caller. */
int ks_manage_probe_json(const char *name, const char *url, const char *principal,
			 const ks_collection *cols, size_t n, char **ret);

/* The {"khal", "khard", "todoman"} object for cols, whose directories are under data_dir.
 * When every calendar directory of data_dir is among cols (all_calendars), todoman gets one
 * glob for all of them. *ret owned by the caller. */
int ks_manage_clients_json(const char *data_dir, const ks_client_collection *cols, size_t n,
			   bool all_calendars, char **ret);

