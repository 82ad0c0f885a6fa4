/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "util/ipc.h"
#include "util/macro.h"

int cmd_reload(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			printf("Usage: ksyncctl reload\n"
			       "\n"
			       "Make ksyncd read ksync.conf again. A configuration with errors is\n"
			       "reported and the old one stays in use.\n"
			       "\n"
			       "  -h, --help   show this help\n");
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json("reload");
	if (r < 0)
		return r;
	if (optind < argc)
		return ctl_error(-EINVAL, "reload takes no arguments.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	r = ctl_call(bus, "Reload", CTL_TIMEOUT_USEC, &e, NULL, NULL);
	/* ksyncd refuses a reload only for the errors of the file. */
	if (r < 0 && sd_bus_error_has_name(&e, KS_IPC_ERROR_FAILED))
		ctl_exit_status = CTL_EXIT_CONFIG;
	return r;
}
