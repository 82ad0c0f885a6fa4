/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "util/macro.h"

static void help(void)
{
	printf("Usage: ksyncctl log [-f] [-n LINES] [--since TIME]\n"
	       "\n"
	       "Show the log of ksyncd: 'journalctl --user -u ksyncd', which is where the\n"
	       "service writes (what each sync pulled and pushed, failures, warnings).\n"
	       "'log_level = debug' in ksync.conf, or 'ksyncd --log-level debug', adds a line\n"
	       "per HTTP request.\n"
	       "\n"
	       "  -f, --follow       show new lines as they come\n"
	       "  -n, --lines LINES  show the last LINES lines\n"
	       "  --since TIME       show lines since TIME ('1h ago', 'today', a date)\n"
	       "  -h, --help         show this help\n");
}

int cmd_log(int argc, char **argv)
{
	enum { ARG_SINCE = 0x100 };
	static const struct option options[] = {
		{ "follow", no_argument, NULL, 'f' },
		{ "lines", required_argument, NULL, 'n' },
		{ "since", required_argument, NULL, ARG_SINCE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	char *lines = NULL, *since = NULL;
	bool follow = false;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "fn:h", options, NULL)) >= 0) {
		switch (c) {
		case 'f':
			follow = true;
			break;
		case 'n':
			lines = optarg;
			break;
		case ARG_SINCE:
			since = optarg;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json("log");
	if (r < 0)
		return r;
	if (optind < argc)
		return ctl_error(-EINVAL, "log takes no arguments; see 'ksyncctl log --help'.");
	if (lines && strspn(lines, "0123456789") != strlen(lines))
		return ctl_error(-EINVAL, "--lines takes a number, not '%s'.", lines);

	char *args[12];
	size_t n = 0;
	static char journalctl[] = "journalctl", user[] = "--user",
		    unit[] = "--unit=ksyncd.service", follow_opt[] = "--follow",
		    lines_opt[] = "--lines", since_opt[] = "--since";
	args[n++] = journalctl;
	args[n++] = user;
	args[n++] = unit;
	if (follow)
		args[n++] = follow_opt;
	if (lines) {
		args[n++] = lines_opt;
		args[n++] = lines;
	}
	if (since) {
		args[n++] = since_opt;
		args[n++] = since;
	}
	args[n] = NULL;
	fflush(stdout);
	execvp(args[0], args);
	r = -errno;
	ctl_error(r, "Failed to run journalctl: %m");
	fputs("ksyncctl: ksyncd writes its log to its standard error: run as the systemd user\n"
	      "ksyncctl: service, that is the user journal ('journalctl --user -u ksyncd');\n"
	      "ksyncctl: started by D-Bus without systemd, the log of the session bus; and\n"
	      "ksyncctl: 'ksyncd --once' writes on the terminal.\n", stderr);
	return r;
}
