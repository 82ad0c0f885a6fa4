/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

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

/* Whether the calendar object data[0..len) is in the time window [start, end] (Unix seconds;
 * 0 for an open side): 1 when one of its events has an instance that overlaps it (RRULE and
 * RDATE expanded, up to 20,000 instances of a rule, past which it counts as in), and also
 * when in doubt: an object holding a task or a journal entry, no event, an event without a
 * usable DTSTART or DTEND, data that does not parse. Dates and floating times are taken in any
 * time zone. 0 when every event lies outside; *ret_next (if not NULL) is then the earliest
 * time past end an instance could start at, 0 when none does. -ENOMEM. */
int ks_ical_in_window(const char *data, size_t len, int64_t start, int64_t end,
		      int64_t *ret_next);
