/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "item_p.h"

/* Fills *ret from one calendar object resource (RFC 4791 4.1: one UID, with its recurrence
 * exceptions, plus VTIMEZONEs). The kind is that of the first VEVENT/VTODO/VJOURNAL; the
 * fields come from the master component (the one without RECURRENCE-ID), or the first one.
 * Same errors as ks_item_parse_info(). */
int ks_ical_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg);
