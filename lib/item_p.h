/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

typedef enum ks_item_kind {
	KS_ITEM_VCARD,
	KS_ITEM_VEVENT,
	KS_ITEM_VTODO,
	KS_ITEM_VJOURNAL,
	_KS_ITEM_MAX,
	_KS_ITEM_INVALID = -22,
} ks_item_kind;

/* What the cache keeps of an item so that readers can list it without parsing it.
 * Every string is owned by the struct (ks_item_info_done() frees them) and may be NULL. */
typedef struct ks_item_info {
	ks_item_kind kind;
	char *uid;
	char *summary;	/* vCard FN, iCalendar SUMMARY (unescaped) */
	char *email;	/* vCard: first EMAIL */
	/* iCalendar times, normalised: "YYYY-MM-DD" for a DATE, "YYYY-MM-DDTHH:MM:SSZ" for UTC or a
	 * time with a known TZID (converted to UTC), "YYYY-MM-DDTHH:MM:SS" for floating time. */
	char *dtstart;
	char *dtend;	/* DTEND, or DTSTART + DURATION when only that is given */
	char *due;
	char *status;
	int priority;	/* 0 when absent */
	bool has_rrule;
} ks_item_info;

void ks_item_info_done(ks_item_info *i);
const char *ks_item_kind_to_string(ks_item_kind k);
ks_item_kind ks_item_kind_from_string(const char *s);

/* Parses a vCard or iCalendar object by looking at its first line, filling *ret.
 * -EBADMSG: not parseable; -ENODATA: no UID; -ENOTUNIQ: more than one UID;
 * -EFBIG: larger than KS_CARD_MAX.
 * On failure, *reterr_msg (if not NULL) gets a malloc'd human-readable reason. */
int ks_item_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg);

/* The object data[0..len) with another UID: every UID line whose value is old_uid (the object's
 * own UID; a VALARM's UID is another value) says uid instead, or, with old_uid NULL, a UID line
 * is inserted after the line opening each event, task or journal entry, and in a card after
 * its VERSION line (before END:VCARD when it has none). Every other byte stays as it was. *ret (NUL-terminated) is owned by the caller. -EFBIG past
 * KS_CARD_MAX, -ENOMEM. */
int ks_item_set_uid(const char *data, size_t len, const char *old_uid, const char *uid,
		    char **ret, size_t *ret_len);

/* Checks that s[0..len) is UTF-8 text: no NUL byte, no overlong form, no surrogate, nothing past
 * U+10FFFF. With folded, line folds (CRLF or LF, then one space or tab) inside a multi-byte
 * sequence are skipped, since RFC 5545 and RFC 6350 allow folding there; pass it for raw
 * content lines, not for decoded text. Returns true when valid; otherwise false and *ret_bad
 * (if not NULL) is the offset of the first bad sequence. */
bool ks_item_utf8_valid(const char *s, size_t len, bool folded, size_t *ret_bad);
