/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "table.h"
#include "util/macro.h"

/* Columns of differing fields shown per group; the JSON has them all. */
#define FIELD_COLS 5

static bool arg_dry_run, arg_all, arg_yes;
static const char *arg_keep;

static void help(void)
{
	printf("Usage: ksyncctl duplicates [--json] [ACCOUNT[/ADDRESSBOOK]]\n"
	       "       ksyncctl duplicates show [--json] [--keep UID] GROUP\n"
	       "       ksyncctl duplicates merge [--json] [--keep UID] [--dry-run] GROUP\n"
	       "       ksyncctl duplicates merge --all [--yes] [--dry-run] [ACCOUNT[/ADDRESSBOOK]]\n"
	       "       ksyncctl duplicates undo [--json] [ACCOUNT]\n"
	       "\n"
	       "Find contacts that are likely the same person: the same name (case, accents,\n"
	       "word order and spacing aside), a shared e-mail address or a shared phone number.\n"
	       "Each group has an id; 'show' prints the card a merge would give, 'merge' writes\n"
	       "it to the server and removes the other cards, 'undo' restores the last merge.\n"
	       "\n"
	       "  --keep UID   keep this card as the reference (default: the most complete)\n"
	       "  --dry-run    show what merge would do, change nothing\n"
	       "  --all        merge every group listed (asks first, unless --yes)\n"
	       "  -y, --yes    do not ask\n"
	       "  --json       print ksyncd's answer as JSON\n"
	       "  -h, --help   show this help\n");
}

static void print_why(const ks_json *why, FILE *f)
{
	for (size_t i = 0; i < ks_json_count(why); i++)
		fprintf(f, "%ssame %s", i ? ", " : "",
			strcmp(ks_json_string(ks_json_at(why, i)) ?: "", "email") == 0 ? "e-mail"
			: ks_json_string(ks_json_at(why, i)) ?: "?");
}

static char *join_values(const ks_json *arr)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	if (!f)
		return NULL;
	for (size_t i = 0; i < ks_json_count(arr); i++)
		fprintf(f, "%s%s", i ? ", " : "", ks_json_string(ks_json_at(arr, i)) ?: "");
	fclose(f);
	return s;
}

static int print_group(const ks_json *g)
{
	_cleanup_(table_freep) table *t = NULL;
	const ks_json *cards = ks_json_get(g, "cards"), *differs = ks_json_get(g, "differs");
	const char *fields[FIELD_COLS];
	size_t n_fields = 0;
	int r;

	/* FN is the NAME column already. */
	for (size_t d = 0; d < ks_json_count(differs) && n_fields < FIELD_COLS; d++) {
		const char *name = ks_json_string(ks_json_at(differs, d));
		if (name && strcmp(name, "FN") != 0)
			fields[n_fields++] = name;
	}

	printf("%s  (%s/%s, %zu cards; ", ks_json_get_string(g, "id") ?: "?",
	       ks_json_get_string(g, "account") ?: "?", ks_json_get_string(g, "collection") ?: "?",
	       ks_json_count(cards));
	print_why(ks_json_get(g, "why"), stdout);
	printf("%s)\n", ks_json_get_bool(g, "readonly", false) ? "; read-only" : "");

	r = table_new(3 + n_fields, &t, NULL);
	if (r < 0)
		return r;
	r = table_add(t, " ");
	if (r >= 0)
		r = table_add(t, "UID");
	if (r >= 0)
		r = table_add(t, "NAME");
	for (size_t d = 0; r >= 0 && d < n_fields; d++)
		r = table_add(t, fields[d]);
	for (size_t i = 0; r >= 0 && i < ks_json_count(cards); i++) {
		const ks_json *c = ks_json_at(cards, i);
		r = table_add(t, ks_json_get_bool(c, "reference", false) ? "*" : " ");
		if (r >= 0)
			r = table_add(t, ks_json_get_string(c, "uid"));
		if (r >= 0)
			r = table_add(t, ks_json_get_string(c, "name"));
		for (size_t d = 0; r >= 0 && d < n_fields; d++) {
			_cleanup_free_ char *v = join_values(ks_json_get(ks_json_get(c, "fields"),
									 fields[d]));
			r = v ? table_add(t, v) : -ENOMEM;
		}
	}
	if (r < 0)
		return r;
	table_print(t, stdout, "  ");
	return 0;
}

static int call_json(sd_bus *bus, const char *method, uint64_t timeout, ks_json **ret,
		     char **ret_text, const char *types, ...)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	sd_bus_message *reply = NULL;
	va_list ap;
	int r;

	r = ctl_new_call(bus, method, &m);
	if (r < 0)
		return r;
	va_start(ap, types);
	r = sd_bus_message_appendv(m, types, ap);
	va_end(ap);
	if (r < 0)
		return ctl_error(r, "Failed to build the %s call: %m", method);
	r = ctl_send(bus, m, timeout, NULL, &reply);
	if (r < 0)
		return r;
	/* The text belongs to the reply, which goes now: the caller gets a copy. */
	const char *text = NULL;
	r = ctl_reply_json(reply, ret, &text);
	if (r >= 0)
		*ret_text = strdup(text);
	sd_bus_message_unref(reply);
	if (r >= 0 && !*ret_text)
		return ctl_error(-ENOMEM, "Out of memory.");
	return r;
}

static int do_list(sd_bus *bus, const char *target)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_free_ char *text = NULL;
	int r = call_json(bus, "Duplicates", CTL_TIMEOUT_USEC, &j, &text, "s",
			  target);

	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);
	const ks_json *groups = ks_json_get(j, "groups");
	for (size_t i = 0; i < ks_json_count(groups); i++) {
		if (i)
			putchar('\n');
		r = print_group(ks_json_at(groups, i));
		if (r < 0)
			return ctl_error(r, "Out of memory.");
	}
	if (ks_json_count(groups))
		putchar('\n');
	printf("%zu group%s of duplicates among %lld cards in %lld address book%s.\n",
	       ks_json_count(groups), ks_json_count(groups) == 1 ? "" : "s",
	       (long long) ks_json_get_int(j, "cards", 0),
	       (long long) ks_json_get_int(j, "addressbooks", 0),
	       ks_json_get_int(j, "addressbooks", 0) == 1 ? "" : "s");
	if (ks_json_count(groups))
		printf("'ksyncctl duplicates show GROUP' shows the merged card, "
		       "'ksyncctl duplicates merge GROUP' merges it (* marks the reference).\n");
	return 0;
}

static const char *name_of(const ks_json *cards, const char *uid)
{
	for (size_t i = 0; uid && i < ks_json_count(cards); i++)
		if (strcmp(ks_json_get_string(ks_json_at(cards, i), "uid") ?: "", uid) == 0)
			return ks_json_get_string(ks_json_at(cards, i), "name");
	return NULL;
}

static void print_plan(const ks_json *j)
{
	const ks_json *cards = ks_json_get(j, "cards"), *lines = ks_json_get(j, "lines");
	const char *ref = ks_json_get_string(j, "reference");
	bool color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");

	printf("Group %s in %s/%s: %zu cards (", ks_json_get_string(j, "id") ?: "?",
	       ks_json_get_string(j, "account") ?: "?", ks_json_get_string(j, "collection") ?: "?",
	       ks_json_count(cards));
	print_why(ks_json_get(j, "why"), stdout);
	printf(")\n");
	for (size_t i = 0; i < ks_json_count(cards); i++) {
		const ks_json *c = ks_json_at(cards, i);
		bool is_ref = ks_json_get_bool(c, "reference", false);
		printf("  %s ", is_ref ? "*" : " ");
		ctl_fputs(ks_json_get_string(c, "uid"), stdout);
		fputs("  ", stdout);
		ctl_fputs(ks_json_get_string(c, "name"), stdout);
		if (is_ref)
			printf("  (reference, kept)\n");
		else
			printf("  (removed; adds %lld line%s)\n",
			       (long long) ks_json_get_int(c, "adds", 0),
			       ks_json_get_int(c, "adds", 0) == 1 ? "" : "s");
	}
	printf("\nMerged card (+ marks what the other cards add):\n");
	for (size_t i = 0; i < ks_json_count(lines); i++) {
		const ks_json *l = ks_json_at(lines, i);
		bool added = ks_json_get_bool(l, "added", false);
		const char *from = ks_json_get_string(l, "from");
		printf("%s%s ", added && color ? "\033[32m" : "", added ? "+" : " ");
		ctl_fputs(ks_json_get_string(l, "text"), stdout);
		if (added && (!from || strcmp(from, ref ?: "") != 0)) {
			printf("   [from ");
			ctl_fputs(from ? from : "several cards", stdout);
			printf("]");
		}
		printf("%s\n", added && color ? "\033[0m" : "");
	}
	const ks_json *gc = ks_json_get(j, "group_cards");
	if (ks_json_count(gc)) {
		printf("\nGroup cards whose members move to ");
		ctl_fputs(ref, stdout);
		printf(":");
		for (size_t i = 0; i < ks_json_count(gc); i++) {
			printf(" ");
			ctl_fputs(ks_json_string(ks_json_at(gc, i)), stdout);
		}
		printf("\n");
	}
}

static int do_show(sd_bus *bus, const char *group)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_free_ char *text = NULL;
	int r = call_json(bus, "DuplicateGroup", CTL_TIMEOUT_USEC, &j, &text, "ss",
			  group, arg_keep ?: "");

	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);
	print_plan(j);
	return 0;
}

static void print_merged(const ks_json *j)
{
	const ks_json *removed = ks_json_get(j, "removed");
	const char *kept = ks_json_get_string(j, "kept");

	printf("Merged %s into ", ks_json_get_string(j, "id") ?: "?");
	ctl_fputs(kept, stdout);
	printf(" (");
	ctl_fputs(name_of(ks_json_get(j, "cards"), kept), stdout);
	printf("); removed");
	for (size_t i = 0; i < ks_json_count(removed); i++) {
		printf(" ");
		ctl_fputs(ks_json_string(ks_json_at(removed, i)), stdout);
	}
	printf(".\nThe old cards are kept in ");
	ctl_fputs(ks_json_get_string(j, "backup"), stdout);
	printf("; 'ksyncctl duplicates undo' restores them.\n");
}

static int merge_one(sd_bus *bus, const char *group, const char *keep, bool quiet_json)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_free_ char *text = NULL;
	int r = call_json(bus, "MergeDuplicates", CTL_TIMEOUT_NETWORK_USEC, &j,
			  &text, "ssb", group, keep ?: "", arg_dry_run);

	if (r < 0)
		return r;
	if (arg_json && !quiet_json)
		return ctl_print_json(text);
	if (arg_dry_run) {
		print_plan(j);
		printf("\nDry run: nothing was changed.\n");
	} else
		print_merged(j);
	return 0;
}

static bool ask(const char *question)
{
	char line[32];

	printf("%s [y/N] ", question);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return line[0] == 'y' || line[0] == 'Y';
}

static int do_merge_all(sd_bus *bus, const char *target)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_free_ char *text = NULL;
	int r = call_json(bus, "Duplicates", CTL_TIMEOUT_USEC, &j, &text, "s",
			  target);
	size_t failed = 0, merged = 0, n;

	if (r < 0)
		return r;
	const ks_json *groups = ks_json_get(j, "groups");
	n = ks_json_count(groups);
	if (n == 0) {
		printf("No duplicates.\n");
		return 0;
	}
	printf("The plan:\n");
	for (size_t i = 0; i < n; i++) {
		const ks_json *g = ks_json_at(groups, i);
		const char *ref = ks_json_get_string(g, "reference");
		printf("  %s: keep ", ks_json_get_string(g, "id") ?: "?");
		ctl_fputs(ref, stdout);
		printf(" (");
		ctl_fputs(name_of(ks_json_get(g, "cards"), ref), stdout);
		printf("), remove %zu card%s%s\n", ks_json_count(ks_json_get(g, "cards")) - 1,
		       ks_json_count(ks_json_get(g, "cards")) == 2 ? "" : "s",
		       ks_json_get_bool(g, "readonly", false) ? " (read-only: refused)" : "");
	}
	if (arg_dry_run) {
		printf("Dry run: nothing was changed.\n");
		return 0;
	}
	if (!arg_yes) {
		if (!isatty(STDIN_FILENO))
			return ctl_error(-EINVAL, "Not asking without a terminal: give --yes to merge "
					 "all %zu groups.", n);
		char q[64];
		snprintf(q, sizeof(q), "Merge these %zu group%s?", n, n == 1 ? "" : "s");
		if (!ask(q)) {
			printf("Nothing merged.\n");
			return 0;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const ks_json *g = ks_json_at(groups, i);
		r = merge_one(bus, ks_json_get_string(g, "id"), NULL, true);
		if (r < 0)
			failed++;
		else
			merged++;
	}
	printf("%zu group%s merged, %zu failed.\n", merged, merged == 1 ? "" : "s", failed);
	return failed ? -EIO : 0;
}

static int do_undo(sd_bus *bus, const char *account)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_free_ char *text = NULL;
	int r = call_json(bus, "UndoMerge", CTL_TIMEOUT_NETWORK_USEC, &j, &text,
			  "s", account);

	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);
	const ks_json *restored = ks_json_get(j, "restored");
	printf("Undid the merge of %s: ", ks_json_get_string(j, "id") ?: "?");
	ctl_fputs(ks_json_get_string(j, "kept"), stdout);
	printf(" has its old content back; restored %zu card%s", ks_json_count(restored),
	       ks_json_count(restored) == 1 ? "" : "s");
	for (size_t i = 0; i < ks_json_count(restored); i++) {
		printf("%s", i ? " " : ": ");
		ctl_fputs(ks_json_string(ks_json_at(restored, i)), stdout);
	}
	printf(".\n");
	if (ks_json_get_string(j, "notice")) {
		printf("Note: ");
		ctl_fputs(ks_json_get_string(j, "notice"), stdout);
		printf("\n");
	}
	return 0;
}

int cmd_duplicates(int argc, char **argv)
{
	enum { ARG_JSON = 0x100, ARG_KEEP, ARG_DRY_RUN, ARG_ALL };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "keep", required_argument, NULL, ARG_KEEP },
		{ "dry-run", no_argument, NULL, ARG_DRY_RUN },
		{ "all", no_argument, NULL, ARG_ALL },
		{ "yes", no_argument, NULL, 'y' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	const char *sub = "list", *arg = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "hy", options, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			arg_json = true;
			break;
		case ARG_KEEP:
			arg_keep = optarg;
			break;
		case ARG_DRY_RUN:
			arg_dry_run = true;
			break;
		case ARG_ALL:
			arg_all = true;
			break;
		case 'y':
			arg_yes = true;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind < argc && (strcmp(argv[optind], "list") == 0 || strcmp(argv[optind], "show") == 0 ||
			      strcmp(argv[optind], "merge") == 0 || strcmp(argv[optind], "undo") == 0))
		sub = argv[optind++];
	if (optind < argc)
		arg = argv[optind++];
	if (optind < argc)
		return ctl_error(-EINVAL, "Too many arguments; see 'ksyncctl duplicates --help'.");
	bool merge = strcmp(sub, "merge") == 0;
	if ((arg_dry_run || arg_all || arg_yes) && !merge)
		return ctl_error(-EINVAL, "--dry-run, --all and --yes go with 'merge'.");
	if (arg_keep && strcmp(sub, "show") != 0 && !merge)
		return ctl_error(-EINVAL, "--keep goes with 'show' and 'merge'.");
	if (arg_all && arg_keep)
		return ctl_error(-EINVAL, "--keep names a card of one group, not of all of them.");
	if (arg_all && arg_json)
		return ctl_error(-EINVAL, "--all prints no JSON; merge the groups one by one.");
	if ((strcmp(sub, "show") == 0 || (merge && !arg_all)) && !arg)
		return ctl_error(-EINVAL, "Give the GROUP, as 'ksyncctl duplicates' lists it.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	if (strcmp(sub, "list") == 0)
		return do_list(bus, arg ?: "");
	if (strcmp(sub, "show") == 0)
		return do_show(bus, arg);
	if (strcmp(sub, "undo") == 0)
		return do_undo(bus, arg ?: "");
	if (arg_all)
		return do_merge_all(bus, arg ?: "");
	return merge_one(bus, arg, arg_keep, false);
}
