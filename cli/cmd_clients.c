/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util/macro.h"

int cmd_clients(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const struct {
		const char *key, *title, *file;
	} clients[] = {
		{ "khal", "khal (events)", "~/.config/khal/config" },
		{ "khard", "khard (contacts)", "~/.config/khard/khard.conf" },
		{ "todoman", "todoman (tasks)", "~/.config/todoman/config.py" },
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			arg_json = true;
			break;
		case 'h':
			printf("Usage: ksyncctl clients [--json]\n"
			       "\n"
			       "Print configuration for khal, khard and todoman that reads the\n"
			       "synced collections, ready to paste into their configuration\n"
			       "files.\n"
			       "\n"
			       "  --json       print them as a JSON object, one string per reader\n"
			       "  -h, --help   show this help\n");
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind < argc)
		return ctl_error(-EINVAL, "clients takes no arguments.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "Clients", CTL_TIMEOUT_USEC, NULL, &reply, NULL);
	if (r < 0)
		return r;
	const char *answer;
	r = ctl_reply_json(reply, &j, &answer);
	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(answer);

	for (size_t i = 0; i < ELEMENTSOF(clients); i++) {
		const char *text = ks_json_get_string(j, clients[i].key);
		_cleanup_free_ char *safe = ctl_sanitize(text, true);

		_cleanup_free_ char *own = NULL;
		/* A text that starts with its own heading gets no second one. */
		bool headed = safe && asprintf(&own, "# %s:", clients[i].key) >= 0 &&
			      strncmp(safe, own, strlen(own)) == 0;

		if (i > 0)
			fputc('\n', stdout);
		if (!headed)
			printf("# %s: %s\n", clients[i].title, clients[i].file);
		if (!safe || !*safe) {
			fputs("# nothing to configure: no collection of this kind syncs\n", stdout);
			continue;
		}
		fputs(safe, stdout);
		if (safe[strlen(safe) - 1] != '\n')
			fputc('\n', stdout);
	}
	return 0;
}
