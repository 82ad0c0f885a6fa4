/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ksync.h"
#include "util/macro.h"

static void help(void)
{
	printf("Usage: ksyncctl config check [FILE]\n"
	       "\n"
	       "Parse and validate ksync.conf (or FILE) without syncing and without ksyncd:\n"
	       "print every error and warning as FILE:LINE: message, and the accounts that\n"
	       "would run. Exits with 1 when the file has errors.\n"
	       "\n"
	       "  -h, --help   show this help\n");
}

/* Prints each line of text to f, prefixed. */
static void print_lines(FILE *f, const char *prefix, const char *text)
{
	_cleanup_free_ char *safe = ctl_sanitize(text, true);

	for (const char *p = safe; p && *p;) {
		size_t n = strcspn(p, "\n");

		fprintf(f, "%s%.*s\n", prefix, (int) n, p);
		p += n + (p[n] == '\n');
	}
}

int ctl_config_report(const char *path, bool quiet_when_clean)
{
	_cleanup_free_ char *why = NULL;
	ks_config *c = NULL;
	int r = ks_config_load_partial(path, &c, &why);

	if (r < 0) {
		_cleanup_free_ char *safe = ctl_sanitize(why, false);
		return ctl_error(r, "%s", safe ? safe : strerror(-r));
	}
	if (c->warnings)
		print_lines(stderr, "warning: ", c->warnings);
	if (r > 0) {
		print_lines(stderr, "", c->errors);
		fprintf(stderr, "%s: %d error(s).", path, r);
		if (c->invalid_accounts) {
			fputs(" Left out until fixed:", stderr);
			for (size_t i = 0; c->invalid_accounts[i]; i++) {
				fputs(i ? ", " : " ", stderr);
				ctl_fputs(c->invalid_accounts[i], stderr);
			}
			fputc('.', stderr);
		}
		fputc('\n', stderr);
	}
	if (r == 0 || !quiet_when_clean) {
		printf("%s: %zu account(s) %s", path, c->n_accounts, r ? "without errors" : "ready");
		for (size_t i = 0; i < c->n_accounts; i++) {
			fputs(i ? ", " : ": ", stdout);
			ctl_fputs(c->accounts[i].name, stdout);
		}
		fputs(".\n", stdout);
	}
	ks_config_free(c);
	if (r > 0)
		ctl_exit_status = CTL_EXIT_CONFIG;
	return r > 0 ? -EINVAL : 0;
}

static int config_check(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_free_ char *def = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (argc - optind > 1)
		return ctl_error(-EINVAL, "config check takes at most one FILE.");
	const char *path = optind < argc ? argv[optind] : NULL;
	if (!path) {
		r = ks_config_default_path(&def);
		if (r < 0)
			return ctl_error(r, "Failed to find ksync.conf (set HOME or XDG_CONFIG_HOME).");
		path = def;
	}
	return ctl_config_report(path, false);
}

int cmd_config(int argc, char **argv)
{
	int r = ctl_no_json("config");

	if (r < 0)
		return r;
	if (argc < 2)
		return ctl_error(-EINVAL, "config needs check (see 'ksyncctl config --help').");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		help();
		return 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return config_check(argc - 1, argv + 1);
	return ctl_error(-EINVAL, "Unknown config command '%s'; use check.", argv[1]);
}
