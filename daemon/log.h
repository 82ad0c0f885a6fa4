/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/* ksyncd's log: lines on stderr, with <N> priority prefixes when stderr is the journal. The
 * library's messages come here too, through the sink log_open() installs. Every file of
 * daemon/ logs here; this file calls none of theirs. */

/* Looks where stderr goes and installs the library's log sink. First thing in main(). */
void log_open(void);
/* Whether stderr is the journal (and lines carry <N> prefixes). */
bool log_to_journal(void);

/* The level --log-level gave (a KS_LOG_*): it stays, whatever ksync.conf says. */
void log_set_max_level(int level);
/* The level of ksync.conf (0: none given), unless --log-level gave one: without either,
 * info for the service and notice for --once. */
void log_use_config_level(int level, bool service);
int log_get_max_level(void);

void log_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs at KS_LOG_ERR, with %m standing for r; returns r. */
int log_error_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
