/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "bus.h"
#include "log.h"
#include "manager.h"
#include "notify.h"
#include "util/macro.h"

/* Problems the user should hear of without asking: a conflict that kept a copy, credentials
 * the server refused, a collection the mass-deletion guard stopped, an item the server
 * refuses. Each cause is said once per account until it changes (or goes away and comes
 * back): as the Alert signal on ksyncd's own interface, and as a desktop notification
 * (org.freedesktop.Notifications) unless [general] notifications is off. What the runs meet
 * comes from the manager, as one of its listeners. */

/* The causes of a desktop notification and of the Alert signal. */
typedef enum AlertKind {
	ALERT_CONFLICT,		/* a conflict kept a copy */
	ALERT_CREDENTIALS,	/* the server refused the credentials */
	ALERT_MASS_DELETION,	/* the mass-deletion guard stopped a collection */
	ALERT_REFUSED,		/* the server refuses an item */
	_ALERT_MAX,
} AlertKind;

/* What has been said of one cause: its instances (one a line, sorted), and the
 * notification that said it last, for the next one to replace. */
typedef struct AlertState {
	char *keys;
	uint32_t notification_id;
	sd_bus_slot *slot;	/* the Notify call under way */
} AlertState;

/* The instances of one cause a run met. */
typedef struct AlertRun {
	char **keys, **messages, **collections;
	size_t n;
} AlertRun;

/* One account's alerts. Allocated one by one: the Notify calls under way point into them. */
typedef struct Alerts {
	Account *account;
	AlertState alert[_ALERT_MAX];
	AlertRun run[_ALERT_MAX];
	bool reached;		/* the run under way reached a collection or failed as a whole */
} Alerts;

struct Notifier {
	Alerts **accounts;
	size_t n_accounts;
};

static const char *const alert_names[_ALERT_MAX] = {
	[ALERT_CONFLICT] = "conflict",
	[ALERT_CREDENTIALS] = "credentials",
	[ALERT_MASS_DELETION] = "mass-deletion",
	[ALERT_REFUSED] = "refused",
};

static void alert_run_reset(Alerts *al)
{
	for (size_t k = 0; k < _ALERT_MAX; k++) {
		AlertRun *ar = &al->run[k];
		for (size_t i = 0; i < ar->n; i++) {
			free(ar->keys[i]);
			free(ar->messages[i]);
			free(ar->collections[i]);
		}
		free(ar->keys);
		free(ar->messages);
		free(ar->collections);
		*ar = (AlertRun) {};
	}
	al->reached = false;
}

static Alerts *alerts_free(Alerts *al)
{
	if (!al)
		return NULL;
	alert_run_reset(al);
	for (size_t k = 0; k < _ALERT_MAX; k++) {
		free(al->alert[k].keys);
		/* Cancels the reply's callback, which would write into al. */
		sd_bus_slot_unref(al->alert[k].slot);
	}
	free(al);
	return NULL;
}

/* The alerts of account a; with create, new ones when it has none yet. NULL otherwise. */
static Alerts *alerts_of(Notifier *n, Account *a, bool create)
{
	for (size_t i = 0; i < n->n_accounts; i++)
		if (n->accounts[i]->account == a)
			return n->accounts[i];
	if (!create)
		return NULL;
	Alerts **na = realloc(n->accounts, (n->n_accounts + 1) * sizeof(*na));
	if (!na)
		return NULL;
	n->accounts = na;
	Alerts *al = calloc(1, sizeof(*al));
	if (!al)
		return NULL;
	al->account = a;
	n->accounts[n->n_accounts++] = al;
	return al;
}

/* What identifies one instance of a cause, so that the same thing said again in the next
 * run is not news: the collection, and for a refusal the file the event names; every
 * conflict is news. The instances are kept as lines: a backslash and a newline (which a file
 * name may hold) are written as \\ and \n. */
static char *alert_key(AlertKind kind, const ks_sync_event *ev)
{
	const char *coll = ev->collection;
	_cleanup_free_ char *raw = NULL;
	int r;

	if (kind == ALERT_REFUSED && ev->file)
		r = asprintf(&raw, "%s/%s", coll ? coll : "", ev->file);
	else if (kind == ALERT_CONFLICT)
		r = asprintf(&raw, "%s", ev->message && *ev->message ? ev->message : "(conflict)");
	else
		r = asprintf(&raw, "%s", coll && *coll ? coll : "(account)");
	if (r < 0)
		return NULL;
	char *key = malloc(2 * strlen(raw) + 1), *k = key;
	if (!key)
		return NULL;
	for (const char *p = raw; *p; p++) {
		if (*p == '\\' || *p == '\n')
			*k++ = '\\';
		*k++ = *p == '\n' ? 'n' : *p;
	}
	*k = 0;
	return key;
}

/* Notes that the run under way met an instance of a cause. */
static void alert_note(Alerts *al, AlertKind kind, const ks_sync_event *ev)
{
	const char *collection = ev->collection, *message = ev->message;
	AlertRun *ar = &al->run[kind];
	char *key = alert_key(kind, ev);

	if (!key)
		return;
	for (size_t i = 0; i < ar->n; i++)
		if (strcmp(ar->keys[i], key) == 0) {
			free(key);
			return;
		}
	char **k = realloc(ar->keys, (ar->n + 1) * sizeof(*k));
	if (k)
		ar->keys = k;
	char **m = realloc(ar->messages, (ar->n + 1) * sizeof(*m));
	if (m)
		ar->messages = m;
	char **c = realloc(ar->collections, (ar->n + 1) * sizeof(*c));
	if (c)
		ar->collections = c;
	if (!k || !m || !c) {
		free(key);
		return;
	}
	ar->keys[ar->n] = key;
	ar->messages[ar->n] = message ? strdup(message) : NULL;
	ar->collections[ar->n] = collection ? strdup(collection) : NULL;
	ar->n++;
}

/* Whether key is one of the lines of keys. */
static bool has_line(const char *keys, const char *key)
{
	size_t n = strlen(key);

	for (const char *p = keys; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t) (nl - p) : strlen(p);
		if (l == n && strncmp(p, key, n) == 0)
			return true;
		p += l + (nl != NULL);
	}
	return false;
}

static int on_notify_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	AlertState *st = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	uint32_t id;

	st->slot = sd_bus_slot_unref(st->slot);
	if (e) {
		/* No notification service (a session without a desktop): the signal is there. */
		log_at(KS_LOG_DEBUG, "No desktop notification: %s", e->message ? e->message : e->name);
		return 0;
	}
	if (sd_bus_message_read(reply, "u", &id) >= 0)
		st->notification_id = id;
	return 0;
}

static void notify_desktop(Manager *m, AlertState *st, const char *summary, const char *body,
			   bool urgent)
{
	if (!m->bus || !m->config->notifications)
		return;
	st->slot = sd_bus_slot_unref(st->slot);
	/* Replaces the account's last notification of this cause, if it is still shown. */
	int r = sd_bus_call_method_async(m->bus, &st->slot, "org.freedesktop.Notifications",
					 "/org/freedesktop/Notifications",
					 "org.freedesktop.Notifications", "Notify", on_notify_reply,
					 st, "susssasa{sv}i", "ksync", st->notification_id,
					 "dialog-warning", summary, body, 0, 2, "urgency", "y",
					 (uint8_t) (urgent ? 2 : 1), "desktop-entry", "s", "ksyncd",
					 (int32_t) -1);
	if (r < 0)
		log_at(KS_LOG_DEBUG, "Failed to send a desktop notification: %s", strerror(-r));
}

/* Tells of the instances of a cause that are new: the first one's message, and how many
 * more there are. */
static void say(Manager *m, Alerts *al, AlertKind kind, const char *known)
{
	static const char *const what[_ALERT_MAX] = {
		[ALERT_CONFLICT] = "conflict",
		[ALERT_CREDENTIALS] = "credentials refused",
		[ALERT_MASS_DELETION] = "stopped before deleting",
		[ALERT_REFUSED] = "refused by the server",
	};
	static const char *const hint[_ALERT_MAX] = {
		[ALERT_CONFLICT] = "'ksyncctl conflicts' lists them and resolves them.",
		[ALERT_CREDENTIALS] = "ksync tries again when ksync.conf or the password changes.",
		[ALERT_MASS_DELETION] = "'ksyncctl status' says how to go on.",
		[ALERT_REFUSED] = "'ksyncctl status' lists what is not sent, and why.",
	};
	const Account *a = al->account;
	const AlertRun *ar = &al->run[kind];
	_cleanup_free_ char *summary = NULL, *body = NULL;
	size_t first = ar->n, fresh = 0;

	for (size_t i = 0; i < ar->n; i++)
		if (!has_line(known, ar->keys[i])) {
			fresh++;
			if (first == ar->n)
				first = i;
		}
	if (fresh == 0)
		return;
	const char *coll = ar->collections[first];
	const char *msg = ar->messages[first] ? ar->messages[first]
			  : a->last_error ? a->last_error : "";
	if (asprintf(&summary, "ksync: %s%s%s: %s", a->cfg.name, coll ? "/" : "", coll ? coll : "",
		     what[kind]) < 0)
		return;
	if (fresh > 1 ? asprintf(&body, "%s (and %zu more)\n%s", msg, fresh - 1, hint[kind]) < 0
		      : asprintf(&body, "%s\n%s", msg, hint[kind]) < 0)
		return;
	log_at(KS_LOG_NOTICE, "%s: %s", summary, msg);
	bus_emit_alert(m, a->cfg.name, alert_names[kind], coll ? coll : "", summary, body);
	notify_desktop(m, &al->alert[kind], summary, body,
		       kind == ALERT_CREDENTIALS || kind == ALERT_MASS_DELETION);
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *) x, *(char *const *) y);
}

static bool has_line_in(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* The run's instances of a cause as sorted lines, with those known before when keep_known;
 * NULL when none. */
static char *merged_keys(const AlertRun *ar, const char *known, bool keep_known)
{
	size_t n = ar->n, len = 0;
	char *out = NULL;
	FILE *f;

	char **all = calloc(n + 1, sizeof(char *));
	if (!all)
		return NULL;
	if (n)
		memcpy(all, ar->keys, n * sizeof(char *));
	_cleanup_free_ char *copy = keep_known && known ? strdup(known) : NULL;
	size_t total = n;
	for (char *p = copy, *save = NULL, *tok; p && (tok = strtok_r(p, "\n", &save)); p = NULL) {
		if (has_line_in(all, total, tok))
			continue;
		char **na = realloc(all, (total + 2) * sizeof(char *));
		if (!na)
			break;
		all = na;
		all[total++] = tok;
	}
	if (total == 0) {
		free(all);
		return NULL;
	}
	qsort(all, total, sizeof(char *), cmp_str);
	f = open_memstream(&out, &len);
	if (f) {
		for (size_t i = 0; i < total; i++)
			fprintf(f, "%s%s", i ? "\n" : "", all[i]);
		if (fclose(f) != 0) {
			free(out);
			out = NULL;
		}
	}
	free(all);
	return out;
}

/* ---- the runs, as the manager tells them ----------------------------------------------- */

static void on_run_started(Manager *m, Account *a, void *userdata)
{
	Alerts *al = alerts_of(userdata, a, false);

	if (al)
		alert_run_reset(al);
}

static void on_run_event(Manager *m, Account *a, const ks_sync_event *ev, void *userdata)
{
	Alerts *al = alerts_of(userdata, a, true);

	if (!al)
		return;
	switch (ev->type) {
	case KS_SYNC_COLLECTION_DONE:
	case KS_SYNC_COLLECTION_SKIPPED:
	case KS_SYNC_ACCOUNT_FAILED:
		al->reached = true;
		break;
	case KS_SYNC_COLLECTION_FAILED:
		al->reached = true;
		if (ev->error == -EDQUOT)
			alert_note(al, ALERT_MASS_DELETION, ev);
		break;
	case KS_SYNC_CREDENTIALS_REFUSED:
		al->reached = true;
		alert_note(al, ALERT_CREDENTIALS, ev);
		break;
	case KS_SYNC_ITEM_SKIPPED:
		if (ev->error == -EPERM)
			alert_note(al, ALERT_REFUSED, ev);
		break;
	case KS_SYNC_CONFLICT:
		alert_note(al, ALERT_CONFLICT, ev);
		break;
	case KS_SYNC_PROGRESS:
	case KS_SYNC_NOTICE:
		break;
	}
}

/* At the end of a run: says what is new (Alert signal, desktop notification), forgets what
 * a run over the whole account no longer met. */
static void on_run_ended(Manager *m, Account *a, bool whole_account, void *userdata)
{
	Alerts *al = alerts_of(userdata, a, true);

	if (!al)
		return;
	/* A run that did not look at everything cannot tell that a cause went away: it adds
	 * what it found to what was known. */
	bool complete = whole_account && al->reached;

	for (size_t k = 0; k < _ALERT_MAX; k++) {
		AlertRun *ar = &al->run[k];
		AlertState *st = &al->alert[k];

		say(m, al, (AlertKind) k, st->keys);
		_cleanup_free_ char *keys = merged_keys(ar, st->keys, !complete);
		if (!keys && st->keys && complete)
			bus_emit_alert_cleared(m, a->cfg.name, alert_names[k]);
		if (keys || complete) {
			free(st->keys);
			st->keys = TAKE_PTR(keys);
		}
	}
	alert_run_reset(al);
}

static void on_account_freed(Manager *m, Account *a, void *userdata)
{
	Notifier *n = userdata;

	for (size_t i = 0; i < n->n_accounts; i++)
		if (n->accounts[i]->account == a) {
			alerts_free(n->accounts[i]);
			n->accounts[i] = n->accounts[--n->n_accounts];
			return;
		}
}

static const ManagerListener listener = {
	.run_started = on_run_started,
	.run_event = on_run_event,
	.run_ended = on_run_ended,
	.account_freed = on_account_freed,
};

int notify_new(Manager *m, Notifier **ret)
{
	Notifier *n = calloc(1, sizeof(*n));
	int r;

	if (!n)
		return -ENOMEM;
	r = manager_add_listener(m, &listener, n);
	if (r < 0) {
		free(n);
		return r;
	}
	*ret = n;
	return 0;
}

Notifier *notify_free(Notifier *n)
{
	if (!n)
		return NULL;
	for (size_t i = 0; i < n->n_accounts; i++)
		alerts_free(n->accounts[i]);
	free(n->accounts);
	free(n);
	return NULL;
}
