/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "buf_p.h"

/* Three-way merge of one vCard or one iCalendar object (RFC 6350 / RFC 5545), done in memory
 * without any I/O: base is what both sides had at the last sync, local and remote are the two
 * edited versions. The merge works on content lines, so that every line of the result is a line
 * of local or of remote, as it was written.
 *
 * What is compared is a canonical form of each content line: name and group upper-cased,
 * parameters sorted with upper-cased names (TYPE values upper-cased, split and sorted too),
 * value as written after unfolding. A line written twice means the same as once. Properties are
 * matched by [group.]name; iCalendar components by (type, UID, RECURRENCE-ID), VTIMEZONEs by
 * TZID (the union is kept, remote's preferred), components without a UID (VALARM) by their whole
 * content.
 *
 * For each property name: a side equal to base takes the other side; equal sides take either.
 * Otherwise:
 * - a multi-valued property (EMAIL, TEL, ATTENDEE, EXDATE, VALARM..., or any name with two
 *   different instances in one version) is merged as a set: additions and deletions from both
 *   sides are kept. A replacement is a removal and an addition with the same value or the same
 *   parameters, when there is only one such pair; it wins over a deletion on the other side,
 *   and two different replacements of one instance are a conflict, decided by the policy;
 * - a single-valued property is a conflict, decided by the policy;
 * - REV, DTSTAMP and LAST-MODIFIED take the later value, SEQUENCE the larger, PRODID the policy
 *   side's, without a conflict;
 * - a VTODO's STATUS, COMPLETED and PERCENT-COMPLETE are one value;
 * - UID, VERSION and RECURRENCE-ID, which name the object, are never merged as sets.
 * A component deleted on one side is kept when the other side modified it (timestamps and
 * SEQUENCE aside), and deleted otherwise. Different VERSIONs on the two sides cannot be merged
 * line by line: the policy side is taken whole. */

typedef enum ks_conflict_policy {
	KS_CONFLICT_SERVER_WINS,
	KS_CONFLICT_LOCAL_WINS,
	_KS_CONFLICT_MAX,
	_KS_CONFLICT_INVALID = -22,
} ks_conflict_policy;

/* Most content lines one object may have for ks_merge(). Each line costs a node with its
 * digests in each of the three versions (about 0.5 KiB all told); real objects, a recurring
 * event with all its exceptions or a large contact group, stay far below. */
#define KS_MERGE_MAX_LINES 100000

typedef struct ks_merge_result {
	char *data;		/* the merged object, NUL-terminated, owned by the struct */
	size_t len;		/* its length, without the NUL */
	bool conflict;		/* both sides changed something differently: the policy decided */
	bool same_as_local;	/* data is byte for byte local's */
	bool same_as_remote;	/* data is byte for byte remote's */
	/* What conflicted, NULL when nothing did: the object's own property names, then one
	 * "COMPONENT[ RECURRENCE-ID]: NAMES" part per iCalendar component, parts separated by
	 * "; ", e.g. "EMAIL, TEL" or "VEVENT: SUMMARY; VEVENT 20240115T100000: LOCATION".
	 * Owned by the struct. */
	char *summary;
} ks_merge_result;

/* Merges local and remote against base (NULL when there is none: both sides created the same
 * UID independently; then everything that differs is a conflict, except multi-valued
 * properties, whose union is taken) and fills *ret. When the result is semantically remote (or
 * else local) its bytes are exactly remote's (local's); otherwise the object is written anew:
 * in the line order of the policy side when there was a conflict and of remote otherwise, kept
 * lines as they were written, CRLF line endings, lines folded at 75 octets on a UTF-8 boundary
 * (vCard 2.1 quoted-printable lines excepted). Local and remote with the same content are never
 * a conflict. *ret is written only on success and is freed with ks_merge_result_done().
 * -EBADMSG: an input is not one vCard or one VCALENDAR, does not parse, or the inputs are of
 * different kinds; -ENOTUNIQ: the inputs carry different UIDs (or one of them several);
 * -EFBIG: an input or the result is larger than KS_CARD_MAX, or an input has more than
 * KS_MERGE_MAX_LINES lines; -EINVAL: policy is not a ks_conflict_policy; -ENOMEM. */
int ks_merge(const char *base, size_t base_len, const char *local, size_t local_len,
	     const char *remote, size_t remote_len, ks_conflict_policy policy,
	     ks_merge_result *ret);

/* Frees what r holds and clears it; r may be NULL or already cleared. */
void ks_merge_result_done(ks_merge_result *r);

/* "server-wins" or "local-wins" (the config file's words), NULL for an invalid value.
 * Static strings. */
const char *ks_conflict_policy_to_string(ks_conflict_policy p);
/* The policy named s (ASCII case ignored), or _KS_CONFLICT_INVALID for NULL or another word. */
ks_conflict_policy ks_conflict_policy_from_string(const char *s);

/* Helpers shared with the other content-line writers (lib/dup_merge.c). */

/* Appends one logical line s[0..n) and CRLF to b, folded at 75 octets and never inside a
 * UTF-8 sequence. Errors of ks_buf. */
int ks_merge_fold_line(ks_buf *b, const char *s, size_t n);
/* Whether the vCard property name (upper-case) may hold several values that the merge treats
 * as a set (EMAIL, TEL, ADR, URL, CATEGORIES, IMPP, MEMBER, ...). */
bool ks_merge_vcard_multi(const char *name);
