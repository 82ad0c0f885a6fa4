/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "ctl.h"
#include "ksync.h"
#include "util/ipc.h"
#include "util/macro.h"

bool arg_json;
bool arg_verbose;
const char *ctl_verb;
int ctl_exit_status;

static const char no_bus_hint[] =
	"ksyncctl: 'ksyncd --once' syncs every account once without a bus (for cron and "
	"scripts).\n";

int ctl_error(int r, const char *fmt, ...)
{
	va_list ap;

	errno = r < 0 ? -r : r;
	fputs("ksyncctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return r;
}

int ctl_usage_error(void)
{
	if (ctl_verb)
		fprintf(stderr, "ksyncctl: see 'ksyncctl %s --help'.\n", ctl_verb);
	else
		fputs("ksyncctl: see 'ksyncctl --help'.\n", stderr);
	return -EINVAL;
}

int ctl_no_json(const char *verb)
{
	if (!arg_json)
		return 0;
	return ctl_error(-EINVAL, "%s prints no JSON; --json goes with status, sync, collections, "
			 "account list, clients, conflicts and duplicates.", verb);
}

int ctl_bus_open(sd_bus **ret)
{
	sd_bus *bus = NULL;
	int r;

	r = sd_bus_open_user(&bus);
	if (r == -ENOMEDIUM)
		ctl_error(r, "Failed to connect to the user bus: neither DBUS_SESSION_BUS_ADDRESS "
			  "nor XDG_RUNTIME_DIR is set.");
	else if (r < 0)
		ctl_error(r, "Failed to connect to the user bus: %m");
	if (r < 0) {
		fputs("ksyncctl: ksyncctl talks to ksyncd on the D-Bus session bus of a login "
		      "session.\n", stderr);
		fputs(no_bus_hint, stderr);
		return r;
	}
	(void) sd_bus_set_description(bus, "ksyncctl");
	*ret = bus;
	return 0;
}

int ctl_new_call(sd_bus *bus, const char *method, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, KS_IPC_BUS_NAME, KS_IPC_PATH,
					   KS_IPC_INTERFACE, method);
	if (r >= 0)
		r = sd_bus_message_append(m, "u", KS_IPC_VERSION);
	if (r < 0)
		return ctl_error(r, "Failed to build the %s call: %m", method);
	*ret = TAKE_PTR(m);
	return 0;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ksyncd's message, each of its lines as a line of ours. */
static int log_lines(int r, const char *msg)
{
	_cleanup_free_ char *safe = ctl_sanitize(msg, true);

	errno = r < 0 ? -r : r;
	for (const char *p = safe; p && *p;) {
		size_t n = strcspn(p, "\n");

		fprintf(stderr, "ksyncctl: %.*s\n", (int) n, p);
		p += n + (p[n] == '\n');
	}
	return r;
}

/* After D-Bus failed to start ksyncd: when the reason is a config file with no account
 * free of errors, say so here, since the journal is not where anyone looks first. */
static bool explain_start_failure(void)
{
	_cleanup_free_ char *path = NULL, *why = NULL;
	ks_config *c = NULL;
	bool explained = false;

	if (ks_config_default_path(&path) < 0)
		return false;
	int r = ks_config_load_partial(path, &c, &why);
	if (r > 0 && c->n_accounts == 0) {
		fprintf(stderr, "ksyncctl: ksyncd cannot start: no account of %s is free of "
			"errors:\n", path);
		log_lines(-EINVAL, c->errors);
		fputs("ksyncctl: Fix them ('ksyncctl config check' checks the file), then try "
		      "again.\n", stderr);
		explained = true;
	}
	ks_config_free(c);
	return explained;
}

/* Says why a call failed, and what to do about it. */
static int log_call_error(const char *method, int r, const sd_bus_error *e)
{
	const char *name = e->name, *msg = e->message && *e->message ? e->message : NULL;
	_cleanup_free_ char *safe = ctl_sanitize(msg ? msg : name, false);

	if (!name && r == -ETIMEDOUT)
		name = SD_BUS_ERROR_TIMEOUT;
	/* No name, or one sd-bus made up from an errno: the bus itself failed. */
	if (!name || has_prefix(name, "System.Error.")) {
		ctl_error(r, "Failed to call %s on the user bus: %m", method);
		fputs(no_bus_hint, stderr);
		return r;
	}
	if (strcmp(name, KS_IPC_ERROR_VERSION) == 0) {
		ctl_error(r, "ksyncd and ksyncctl are from different versions of ksync "
			  "(ksyncctl %s, interface %u): restart ksyncd, e.g. with "
			  "'systemctl --user restart ksyncd'.", CTL_VERSION, KS_IPC_VERSION);
		if (msg)
			ctl_error(r, "ksyncd said: %s", safe);
		return r;
	}
	if (strcmp(name, SD_BUS_ERROR_SERVICE_UNKNOWN) == 0 ||
	    strcmp(name, SD_BUS_ERROR_NAME_HAS_NO_OWNER) == 0) {
		ctl_error(r, "ksyncd is not running, and D-Bus cannot start it: no D-Bus service "
			  "file for %s is installed.", KS_IPC_BUS_NAME);
		fputs("ksyncctl: Install ksync ('make install'), or start ksyncd with "
		      "'systemctl --user start ksyncd'.\n", stderr);
		fputs(no_bus_hint, stderr);
		return r;
	}
	if (has_prefix(name, "org.freedesktop.DBus.Error.Spawn.") ||
	    has_prefix(name, "org.freedesktop.systemd1.")) {
		ctl_error(r, "D-Bus failed to start ksyncd: %s", safe);
		if (explain_start_failure()) {
			ctl_exit_status = CTL_EXIT_CONFIG;
			return r;
		}
		fputs("ksyncctl: See 'journalctl --user -u ksyncd' for why.\n", stderr);
		fputs(no_bus_hint, stderr);
		return r;
	}
	if (strcmp(name, SD_BUS_ERROR_NO_REPLY) == 0 || strcmp(name, SD_BUS_ERROR_TIMEOUT) == 0) {
		ctl_error(r, "ksyncd did not answer %s: %s; see 'journalctl --user -u ksyncd'.",
			  method, safe ? safe : name);
		return r;
	}
	if (strcmp(name, SD_BUS_ERROR_UNKNOWN_METHOD) == 0 ||
	    strcmp(name, SD_BUS_ERROR_UNKNOWN_OBJECT) == 0 ||
	    strcmp(name, SD_BUS_ERROR_UNKNOWN_INTERFACE) == 0) {
		ctl_error(r, "ksyncd does not know %s: it is from another version of ksync; "
			  "restart it ('systemctl --user restart ksyncd').", method);
		return r;
	}
	/* An account ksync.conf does not have, or has with errors. */
	if (strcmp(name, KS_IPC_ERROR_NO_ACCOUNT) == 0)
		ctl_exit_status = CTL_EXIT_CONFIG;
	else if (strcmp(name, KS_IPC_ERROR_AUTH) == 0)
		ctl_exit_status = CTL_EXIT_AUTH;
	else if (strcmp(name, KS_IPC_ERROR_NETWORK) == 0)
		ctl_exit_status = CTL_EXIT_NETWORK;
	if (!msg)
		return ctl_error(r, "%s failed: %s", method, safe);
	return log_lines(r, msg);
}

int ctl_send(sd_bus *bus, sd_bus_message *m, uint64_t timeout_usec, sd_bus_error *reterr,
	     sd_bus_message **ret_reply)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_call(bus, m, timeout_usec, &e, &reply);
	if (r < 0) {
		log_call_error(sd_bus_message_get_member(m), r, &e);
		if (reterr)
			sd_bus_error_move(reterr, &e);
		return r;
	}
	if (ret_reply)
		*ret_reply = TAKE_PTR(reply);
	return 0;
}

int ctl_call(sd_bus *bus, const char *method, uint64_t timeout_usec, sd_bus_error *reterr,
	     sd_bus_message **ret_reply, const char *types, ...)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	va_list ap;
	int r;

	r = ctl_new_call(bus, method, &m);
	if (r < 0)
		return r;
	if (types && *types) {
		va_start(ap, types);
		r = sd_bus_message_appendv(m, types, ap);
		va_end(ap);
		if (r < 0)
			return ctl_error(r, "Failed to build the %s call: %m", method);
	}
	return ctl_send(bus, m, timeout_usec, reterr, ret_reply);
}

int ctl_reply_json(sd_bus_message *reply, ks_json **ret, const char **ret_text)
{
	const char *text;
	size_t off = 0;
	int r;

	r = sd_bus_message_read(reply, "s", &text);
	if (r < 0)
		return ctl_error(r, "Failed to read ksyncd's answer: %m");
	r = ks_json_parse(text, strlen(text), ret, &off);
	if (r < 0)
		return ctl_error(r, "ksyncd answered with invalid JSON (at byte %zu): %m", off);
	if (ret_text)
		*ret_text = text;
	return 0;
}

int ctl_print_json(const char *text)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	_cleanup_free_ char *out = NULL;
	size_t off = 0;
	int r;

	r = ks_json_parse(text, strlen(text), &j, &off);
	if (r < 0)
		return ctl_error(r, "ksyncd answered with invalid JSON (at byte %zu): %m", off);
	r = ks_json_writer_new(true, &w);
	if (r >= 0)
		(void) ks_json_write_value(w, j);
	if (r >= 0)
		r = ks_json_writer_steal(w, &out);
	if (r < 0)
		return ctl_error(r, "Failed to format JSON: %m");
	fputs(out, stdout);
	fputc('\n', stdout);
	return 0;
}

char *ctl_sanitize(const char *s, bool multiline)
{
	if (!s)
		return NULL;

	size_t n = strlen(s);
	char *out = malloc(n + 1);
	if (!out)
		return NULL;
	for (size_t i = 0, o = 0; i <= n; i++) {
		unsigned char c = (unsigned char) s[i];

		if (c == 0xc2 && i + 1 < n && (unsigned char) s[i + 1] >= 0x80 &&
		    (unsigned char) s[i + 1] <= 0x9f) {
			/* A C1 control (U+0080..U+009F), which terminals obey like ESC. */
			out[o++] = '?';
			i++;
		} else if (c == '\t' && !multiline)
			out[o++] = ' ';
		else if (c && (c < 0x20 || c == 0x7f) && !(multiline && (c == '\n' || c == '\t')))
			out[o++] = '?';
		else
			out[o++] = (char) c;
	}
	return out;
}

void ctl_fputs(const char *s, FILE *f)
{
	_cleanup_free_ char *safe = ctl_sanitize(s, false);

	fputs(safe ? safe : "-", f);
}

size_t ctl_width(const char *s)
{
	mbstate_t st = {};
	size_t w = 0, n = strlen(s);

	while (n > 0) {
		wchar_t wc;
		size_t k = mbrtowc(&wc, s, n, &st);

		if (k == (size_t) -1 || k == (size_t) -2 || k == 0) {
			/* Not in this locale's charset: count the UTF-8 characters. */
			if (((unsigned char) *s & 0xc0) != 0x80)
				w++;
			s++;
			n--;
			st = (mbstate_t) {};
			continue;
		}
		int cw = wcwidth(wc);
		w += cw > 0 ? (size_t) cw : 0;
		s += k;
		n -= k;
	}
	return w;
}

const char *ctl_format_time(int64_t t, char buf[static CTL_TIME_MAX])
{
	time_t tt = (time_t) t;
	struct tm tm;

	if (t <= 0 || !localtime_r(&tt, &tm) ||
	    strftime(buf, CTL_TIME_MAX, "%Y-%m-%d %H:%M", &tm) == 0)
		return "-";
	return buf;
}

const char *ctl_format_ago(int64_t t, char buf[static CTL_TIME_MAX])
{
	static const struct {
		int64_t secs;
		const char *unit;
	} units[] = {
		{ 86400, "days" },
		{ 3600, "h" },
		{ 60, "min" },
	};

	if (t <= 0)
		return "-";

	int64_t now = (int64_t) time(NULL), d = t - now, a = d < 0 ? -d : d;
	if (a < 60)
		return d <= 0 ? "just now" : "in less than a minute";
	if (a >= 7 * 86400)
		return ctl_format_time(t, buf);
	for (size_t i = 0; i < ELEMENTSOF(units); i++) {
		if (a < units[i].secs && i + 1 < ELEMENTSOF(units))
			continue;
		int64_t v = a / units[i].secs;
		const char *unit = v == 1 && i == 0 ? "day" : units[i].unit;
		if (d < 0)
			snprintf(buf, CTL_TIME_MAX, "%lld %s ago", (long long) v, unit);
		else
			snprintf(buf, CTL_TIME_MAX, "in %lld %s", (long long) v, unit);
		break;
	}
	return buf;
}

const char *ctl_kind(const ks_json *collection, char *buf, size_t size)
{
	static const struct {
		const char *component, *word;
	} words[] = {
		{ "VEVENT", "events" },
		{ "VTODO", "tasks" },
		{ "VJOURNAL", "journal" },
	};
	const char *kind = ks_json_get_string(collection, "kind");
	const ks_json *comps = ks_json_get(collection, "components");
	size_t n = 0;

	if (kind && strcmp(kind, "addressbook") == 0)
		return "contacts";
	buf[0] = 0;
	for (size_t i = 0; i < ELEMENTSOF(words); i++)
		for (size_t k = 0; k < ks_json_count(comps); k++) {
			const char *c = ks_json_string(ks_json_at(comps, k));
			if (!c || strcasecmp(c, words[i].component) != 0)
				continue;
			int m = snprintf(buf + n, size - n, "%s%s", n ? "," : "", words[i].word);
			if (m < 0 || (size_t) m >= size - n)
				return "calendar";
			n += (size_t) m;
			break;
		}
	return n ? buf : "calendar";
}

int ctl_check_collection_target(const char *s)
{
	const char *slash = strchr(s, '/');

	if (!slash || slash == s || !slash[1])
		return ctl_error(-EINVAL, "Expected ACCOUNT/COLLECTION, not '%s' (see 'ksyncctl "
				 "collections').", s);
	return 0;
}
