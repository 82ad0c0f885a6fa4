/* SPDX-License-Identifier: MIT */
#pragma once

/* Hard caps on everything filled from the network or the disk. */

/* Largest non-streamed response body kept in memory (error bodies, small replies). */
#define KS_DAV_MAX_BODY (1024 * 1024)
/* Largest multistatus body read: it is parsed as it streams in, so this bounds time, not
 * memory (a server sending without end would hold its account's run forever). */
#define KS_DAV_MAX_STREAM ((size_t) 1 << 30)
/* Largest iCalendar file of a calendar subscription. */
#define KS_FEED_MAX (64 * 1024 * 1024)
/* Largest single vCard or iCalendar object accepted from the server or the disk. */
#define KS_CARD_MAX (8 * 1024 * 1024)
/* Most content lines (after unfolding; for vCards, lines plus parameters) in one vCard or
 * iCalendar object: the parsers' memory and time follow their number, and 8 MB of four-byte
 * lines would be two million. An 8 MB object of ordinary lines has fewer. */
#define KS_CARD_MAX_LINES 300000
/* Largest text of any other XML property (href, displayname, token...). */
#define KS_XML_MAX_TEXT (64 * 1024)
/* Deepest XML nesting accepted in a multistatus. */
#define KS_XML_MAX_DEPTH 64
/* Most items one collection may hold. */
#define KS_COLLECTION_MAX_ITEMS 1000000
/* Most hrefs asked for in one multiget. */
#define KS_MULTIGET_BATCH 100
/* Most requests in flight to one server. */
#define KS_DAV_MAX_PARALLEL 4
/* A Retry-After longer than this is taken as this: a server's mistake must not stop an
 * account for days. */
#define KS_RETRY_AFTER_MAX 3600
/* Longest vdir file or directory name we create (without extension). */
#define KS_NAME_MAX 128
/* Collections larger than this are protected by the mass-deletion guard. */
#define KS_MASS_DELETE_MIN 10
