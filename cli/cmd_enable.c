/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util/macro.h"

/* enable and disable: one call, SetEnabled, with a different flag; ksyncd writes the
 * choice into ksync.conf and the cache. */
static int set_enabled(int argc, char **argv, bool enable)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	const char *verb = enable ? "enable" : "disable";
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			printf("Usage: ksyncctl %s ACCOUNT/COLLECTION\n"
			       "\n"
			       "%s\n"
			       "COLLECTION is the directory name, or contacts/NAME or\n"
			       "calendars/NAME, as 'ksyncctl collections' shows it.\n"
			       "\n"
			       "  -h, --help   show this help\n",
			       verb,
			       enable ? "Sync this collection from the next run on. ksync.conf\n"
					"keeps the choice: the collection leaves the account's\n"
					"exclude = list, and joins include = under collections = none."
				      : "Stop syncing this collection. ksync.conf keeps the choice:\n"
					"the collection leaves the account's include = list, and\n"
					"joins exclude = unless nothing would sync it anyway.");
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json(verb);
	if (r < 0)
		return r;
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "%s needs exactly one ACCOUNT/COLLECTION.", verb);
	r = ctl_check_collection_target(argv[optind]);
	if (r < 0)
		return r;

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	return ctl_call(bus, "SetEnabled", CTL_TIMEOUT_USEC, NULL, NULL, "sb", argv[optind],
			enable);
}

int cmd_enable(int argc, char **argv)
{
	return set_enabled(argc, argv, true);
}

int cmd_disable(int argc, char **argv)
{
	return set_enabled(argc, argv, false);
}
