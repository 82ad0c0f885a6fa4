/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "ksync.h"
#include "log.h"

static int max_level = KS_LOG_NOTICE;
static bool max_level_set;	/* --log-level given: the config's log_level does not count */
static bool journal;		/* stderr goes to the journal: use <N> priority prefixes */

static void __attribute__((format(printf, 2, 0))) logv(int level, const char *fmt, va_list ap)
{
	if (level > max_level)
		return;
	if (journal)
		fprintf(stderr, "<%d>", level);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void log_at(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	logv(level, fmt, ap);
	va_end(ap);
}

int log_error_errno(int r, const char *fmt, ...)
{
	va_list ap;

	errno = r < 0 ? -r : r;
	va_start(ap, fmt);
	logv(KS_LOG_ERR, fmt, ap);
	va_end(ap);
	return r;
}

static void lib_log(int level, const char *msg, void *userdata)
{
	log_at(level, "%s", msg);
}

void log_open(void)
{
	journal = getenv("JOURNAL_STREAM") != NULL;
	ks_log_set_sink(lib_log, NULL);
}

bool log_to_journal(void)
{
	return journal;
}

void log_set_max_level(int level)
{
	max_level = level;
	max_level_set = true;
}

void log_use_config_level(int level, bool service)
{
	if (max_level_set)
		return;
	/* The service says at info what each run pulled and pushed; --once prints that on
	 * its standard output already. */
	max_level = level > 0 ? level : service ? KS_LOG_INFO : KS_LOG_NOTICE;
}

int log_get_max_level(void)
{
	return max_level;
}
