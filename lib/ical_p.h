/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "item_p.h"

/* Fills *ret from one calendar object resource (RFC 4791 4.1: one UID, with its recurrence
 * exceptions, plus VTIMEZONEs). The kind is that of the first VEVENT/VTODO/VJOURNAL; the
 * fields come from the master component (the one without RECURRENCE-ID), or the first one.
 * Same errors as ks_item_parse_info(). */
int ks_ical_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg);

/* Checks the times of every event and task of a calendar object: DTEND (DUE) with DURATION, an
 * end before the start, or a start and an end of different value types (DATE and DATE-TIME)
 * give -EDOM with the reason in *reterr_msg (if not NULL; malloc'd). -EBADMSG when the object
 * does not parse, -EFBIG past KS_CARD_MAX, -ENOMEM. */
int ks_ical_check_times(const char *data, size_t len, char **reterr_msg);
