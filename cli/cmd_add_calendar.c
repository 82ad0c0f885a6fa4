/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"
#include "util/macro.h"

/* The components a calendar collection can be made for (RFC 4791 section 5.2.3). */
static const char *const known_components[] = { "VEVENT", "VTODO", "VJOURNAL" };

static void help(void)
{
	printf("Usage: ksyncctl add-calendar ACCOUNT NAME [--tasks | --events |\n"
	       "                             --components LIST] [--color '#RRGGBB']\n"
	       "\n"
	       "Create a calendar or task list called NAME on the account's server, sync it,\n"
	       "and print the directory that holds its items. Without an option, the\n"
	       "collection holds events and tasks.\n"
	       "\n"
	       "  --tasks             a task list (VTODO)\n"
	       "  --events            a calendar of events only (VEVENT)\n"
	       "  --components LIST   comma-separated components: VEVENT, VTODO, VJOURNAL\n"
	       "  --color #RRGGBB     the colour clients show it in (quote the '#' in a shell)\n"
	       "  -h, --help          show this help\n");
}

/* Splits LIST into known component names, upper-cased, each at most once. */
static int parse_components(const char *list, const char *ret[static 3], size_t *ret_n)
{
	_cleanup_free_ char *copy = strdup(list);
	const char *found[ELEMENTSOF(known_components)];
	size_t n = 0;
	char *save = NULL;

	if (!copy)
		return ctl_error(-ENOMEM, "Out of memory.");
	for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char) *w))
			w++;
		for (size_t k = strlen(w); k > 0 && isspace((unsigned char) w[k - 1]); k--)
			w[k - 1] = 0;
		if (!*w)
			continue;

		const char *known = NULL;
		for (size_t i = 0; i < ELEMENTSOF(known_components); i++)
			if (strcasecmp(w, known_components[i]) == 0)
				known = known_components[i];
		if (!known)
			return ctl_error(-EINVAL, "Unknown component '%s': use VEVENT, VTODO or "
					 "VJOURNAL.", w);
		for (size_t i = 0; i < n; i++)
			if (found[i] == known)
				return ctl_error(-EINVAL, "Component %s is given twice.", known);
		found[n++] = known;
	}
	if (n == 0)
		return ctl_error(-EINVAL, "--components needs at least one of VEVENT, VTODO and "
				 "VJOURNAL.");
	memcpy(ret, found, n * sizeof(*found));
	*ret_n = n;
	return 0;
}

/* Accepts #RRGGBB, and RRGGBB for a shell that took the '#' for a comment's start. */
static int parse_color(const char *s, char ret[static 8])
{
	const char *hex = s[0] == '#' ? s + 1 : s;

	if (strlen(hex) != 6 || strspn(hex, "0123456789abcdefABCDEF") != 6)
		return ctl_error(-EINVAL, "Invalid color '%s': use #RRGGBB, like '#3A7BD5'.", s);
	ret[0] = '#';
	for (size_t i = 0; i < 6; i++)
		ret[i + 1] = (char) toupper((unsigned char) hex[i]);
	ret[7] = 0;
	return 0;
}

int cmd_add_calendar(int argc, char **argv)
{
	enum { ARG_TASKS = 0x100, ARG_EVENTS, ARG_COMPONENTS, ARG_COLOR };
	static const struct option options[] = {
		{ "tasks", no_argument, NULL, ARG_TASKS },
		{ "events", no_argument, NULL, ARG_EVENTS },
		{ "components", required_argument, NULL, ARG_COMPONENTS },
		{ "color", required_argument, NULL, ARG_COLOR },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *comps[ELEMENTSOF(known_components)] = { "VEVENT", "VTODO" };
	size_t n_comps = 2;
	unsigned kinds = 0;
	char color[8] = "";
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_TASKS:
			comps[0] = "VTODO";
			n_comps = 1;
			kinds++;
			break;
		case ARG_EVENTS:
			comps[0] = "VEVENT";
			n_comps = 1;
			kinds++;
			break;
		case ARG_COMPONENTS:
			r = parse_components(optarg, comps, &n_comps);
			if (r < 0)
				return r;
			kinds++;
			break;
		case ARG_COLOR:
			r = parse_color(optarg, color);
			if (r < 0)
				return r;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json("add-calendar");
	if (r < 0)
		return r;
	if (kinds > 1)
		return ctl_error(-EINVAL, "Give only one of --tasks, --events and --components.");
	if (optind + 2 != argc)
		return ctl_error(-EINVAL, "add-calendar needs ACCOUNT and NAME.");
	const char *account = argv[optind], *name = argv[optind + 1];
	if (!*account || !*name)
		return ctl_error(-EINVAL, "ACCOUNT and NAME may not be empty.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_new_call(bus, "CreateCalendar", &m);
	if (r < 0)
		return r;
	r = sd_bus_message_append(m, "ss", account, name);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "s");
	for (size_t i = 0; r >= 0 && i < n_comps; i++)
		r = sd_bus_message_append(m, "s", comps[i]);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_append(m, "s", color);
	if (r < 0)
		return ctl_error(r, "Failed to build the CreateCalendar call: %m");
	r = ctl_send(bus, m, CTL_TIMEOUT_NETWORK_USEC, NULL, &reply);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0)
		return r;

	bool tasks_only = n_comps == 1 && strcmp(comps[0], "VTODO") == 0;
	printf("Created %s ", tasks_only ? "task list" : "calendar");
	fputc('\'', stdout);
	ctl_fputs(ks_json_get_string(j, "displayname") ?: name, stdout);
	fputs("' (", stdout);
	ctl_fputs(account, stdout);
	fputc('/', stdout);
	ctl_fputs(ks_json_get_string(j, "path"), stdout);
	fputs(").\nDirectory: ", stdout);
	ctl_fputs(ks_json_get_string(j, "dir"), stdout);
	fputc('\n', stdout);
	return 0;
}
