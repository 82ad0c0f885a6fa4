/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Naming rules of the vdir tree that khard, khal and todoman read. */

/* Whether s may be used as a file or directory name as it is: 1..KS_NAME_MAX characters of
 * [A-Za-z0-9@._+-], not starting with '.'. */
bool ks_vdir_name_is_safe(const char *s);

/* The base name (without extension) of an item's file: the UID when it is safe, else the
 * href's last segment without a .vcf/.ics extension when that is safe, else "h" followed by
 * 32 hex digits of SHA-256 of the UID (or of the href when there is no UID). Never derived
 * from anything but uid and href. *ret is owned by the caller. */
int ks_vdir_item_name(const char *uid, const char *href, char **ret);

/* A collection's directory name from its canonical href: the last segment, with every
 * character outside [A-Za-z0-9@._+-] replaced by '_', a leading '.' replaced by '_', cut to
 * KS_NAME_MAX; "collection" when nothing is left. *ret is owned by the caller. */
int ks_vdir_collection_name(const char *href, char **ret);

/* Normalises a server color to "#RRGGBB" (from #RGB, #RRGGBB, #RRGGBBAA, any case).
 * Returns NULL for anything else. Owned by the caller. */
char *ks_vdir_color(const char *s);

/* Copies a display name with control characters (newlines included) turned into spaces and
 * surrounding space trimmed; NULL for NULL. Owned by the caller. */
char *ks_vdir_displayname(const char *s);
