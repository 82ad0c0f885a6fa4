/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus2.h"
#include "log.h"
#include "util/macro.h"

/* io.ksync.Sync2: the typed interface, for desktop front ends (a GNOME Shell extension, a
 * Plasma applet) that bind to properties instead of parsing JSON. The root object lists the
 * accounts and syncs; each account is an object of its own under ACCOUNT_PREFIX whose
 * properties (state, last and next sync, error, pending files, conflicts, collections)
 * announce their changes with PropertiesChanged when a run starts and when it ends.
 * io.ksync.Sync1, with its JSON answers, stays for ksyncctl. */

#define SYNC2_PATH "/io/ksync/Sync2"
#define SYNC2_INTERFACE "io.ksync.Sync2"
#define ACCOUNT_PREFIX SYNC2_PATH "/account"
#define ACCOUNT_INTERFACE "io.ksync.Sync2.Account"
#define ERROR_NO_ACCOUNT "io.ksync.Sync2.Error.NoSuchAccount"

static int account_path(const Account *a, char **ret)
{
	return sd_bus_path_encode(ACCOUNT_PREFIX, a->cfg.name, ret);
}

/* ---- the root object ---------------------------------------------------------------------- */

static int property_accounts(sd_bus *bus, const char *path, const char *interface,
			     const char *property, sd_bus_message *reply, void *userdata,
			     sd_bus_error *error)
{
	Manager *m = userdata;
	int r = sd_bus_message_open_container(reply, 'a', "o");

	for (size_t i = 0; r >= 0 && i < m->n_accounts; i++) {
		_cleanup_free_ char *p = NULL;

		if (m->accounts[i]->removed)
			continue;
		r = account_path(m->accounts[i], &p);
		if (r >= 0)
			r = sd_bus_message_append(reply, "o", p);
	}
	return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int property_config_path(sd_bus *bus, const char *path, const char *interface,
				const char *property, sd_bus_message *reply, void *userdata,
				sd_bus_error *error)
{
	return sd_bus_message_append(reply, "s", ((Manager *) userdata)->config_path);
}

static int sync_target(sd_bus_message *msg, Manager *m, const char *target, bool force,
		       sd_bus_error *error)
{
	uint32_t id = 0;
	int r;

	if (strlen(target) > 1024)
		return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "The target is too long.");
	r = manager_sync(m, target, force, false, false, force, &id);
	if (r == -ENOENT)
		return sd_bus_error_setf(error, ERROR_NO_ACCOUNT, "No account '%.*s'.",
					 (int) strcspn(target, "/"), target);
	if (r == -ENXIO)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No collection '%s'.",
					 target);
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(msg, "u", id);
}

static int method_sync(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	const char *target;
	int force, r = sd_bus_message_read(msg, "sb", &target, &force);

	if (r < 0)
		return r;
	return sync_target(msg, userdata, target, force, error);
}

static const sd_bus_vtable root_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Accounts", "ao", property_accounts, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("ConfigPath", "s", property_config_path, 0,
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_METHOD_WITH_ARGS("Sync", SD_BUS_ARGS("s", target, "b", force),
				SD_BUS_RESULT("u", run_id), method_sync,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_VTABLE_END
};

/* ---- the accounts ------------------------------------------------------------------------- */

static int find_account(sd_bus *bus, const char *path, const char *interface, void *userdata,
			void **found, sd_bus_error *error)
{
	Manager *m = userdata;
	_cleanup_free_ char *name = NULL;
	Account *a;
	int r = sd_bus_path_decode(path, ACCOUNT_PREFIX, &name);

	if (r <= 0)
		return r;
	a = manager_find_account(m, name);
	if (!a || a->removed)
		return 0;
	*found = a;
	return 1;
}

static int enumerate_accounts(sd_bus *bus, const char *path, void *userdata, char ***nodes,
			      sd_bus_error *error)
{
	Manager *m = userdata;
	char **v = calloc(m->n_accounts + 1, sizeof(*v));
	size_t n = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_accounts; i++) {
		if (m->accounts[i]->removed)
			continue;
		int r = account_path(m->accounts[i], &v[n]);
		if (r < 0) {
			for (size_t k = 0; k < n; k++)
				free(v[k]);
			free(v);
			return r;
		}
		n++;
	}
	*nodes = v;
	return 0;
}

static const char *state_of(const Account *a)
{
	return a->job ? "syncing" : a->refused_credentials ? "stopped" : a->retry_in ? "backoff"
												     : "idle";
}

static int property_string(sd_bus *bus, const char *path, const char *interface,
			   const char *property, sd_bus_message *reply, void *userdata,
			   sd_bus_error *error)
{
	Account *a = userdata;
	const char *v = "";

	if (strcmp(property, "Name") == 0)
		v = a->cfg.name;
	else if (strcmp(property, "Url") == 0)
		v = a->cfg.url;
	else if (strcmp(property, "State") == 0)
		v = state_of(a);
	else if (strcmp(property, "LastResult") == 0)
		v = !a->last_sync ? "never" : a->last_result ? "failed" : "ok";
	else if (strcmp(property, "LastError") == 0)
		v = a->last_error ? a->last_error : "";
	return sd_bus_message_append(reply, "s", v);
}

static int property_time(sd_bus *bus, const char *path, const char *interface,
			 const char *property, sd_bus_message *reply, void *userdata,
			 sd_bus_error *error)
{
	Account *a = userdata;
	uint64_t v = strcmp(property, "LastSync") == 0 ? a->last_sync
		     : a->job ? 0 : a->next_sync;

	return sd_bus_message_append(reply, "t", v);
}

static int property_subscription(sd_bus *bus, const char *path, const char *interface,
				 const char *property, sd_bus_message *reply, void *userdata,
				 sd_bus_error *error)
{
	return sd_bus_message_append(reply, "b", ((Account *) userdata)->cfg.feed != NULL);
}

/* Pending, Conflicts and Collections come from the cache, read when asked. */
static int property_details(sd_bus *bus, const char *path, const char *interface,
			    const char *property, sd_bus_message *reply, void *userdata,
			    sd_bus_error *error)
{
	Account *a = userdata;
	_cleanup_(ks_json_freep) ks_json *cols = NULL;
	size_t conflicts = 0;
	int r = manager_account_details(a->m, a, &cols, &conflicts);

	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Failed to read the cache: %m");
	if (strcmp(property, "Conflicts") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t) conflicts);
	if (strcmp(property, "Pending") == 0) {
		int64_t pending = 0;
		for (size_t i = 0; i < ks_json_count(cols); i++)
			pending += ks_json_get_int(ks_json_at(cols, i), "pending", 0);
		return sd_bus_message_append(reply, "u", (uint32_t) pending);
	}
	r = sd_bus_message_open_container(reply, 'a', "(ssbbuu)");
	for (size_t i = 0; r >= 0 && i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *p = ks_json_get_string(c, "path");
		const char *d = ks_json_get_string(c, "displayname");

		r = sd_bus_message_append(reply, "(ssbbuu)", p ? p : "", d ? d : "",
					  ks_json_get_bool(c, "enabled", true),
					  ks_json_get_bool(c, "readonly", false),
					  (uint32_t) ks_json_get_int(c, "items", 0),
					  (uint32_t) ks_json_get_int(c, "pending", 0));
	}
	return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int method_account_sync(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Account *a = userdata;
	int force, r = sd_bus_message_read(msg, "b", &force);

	if (r < 0)
		return r;
	return sync_target(msg, a->m, a->cfg.name, force, error);
}

static const sd_bus_vtable account_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", property_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Url", "s", property_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Subscription", "b", property_subscription, 0,
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("State", "s", property_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("LastSync", "t", property_time, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("LastResult", "s", property_string, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("LastError", "s", property_string, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("NextSync", "t", property_time, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Pending", "u", property_details, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("Conflicts", "u", property_details, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("Collections", "a(ssbbuu)", property_details, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_METHOD_WITH_ARGS("Sync", SD_BUS_ARGS("b", force), SD_BUS_RESULT("u", run_id),
				method_account_sync, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_VTABLE_END
};

/* ---- what changes ------------------------------------------------------------------------- */

static void emit_account(Manager *m, Account *a, bool ended)
{
	_cleanup_free_ char *p = NULL;

	if (!m->bus || account_path(a, &p) < 0)
		return;
	if (ended)
		(void) sd_bus_emit_properties_changed(m->bus, p, ACCOUNT_INTERFACE, "State",
						      "LastSync", "LastResult", "LastError",
						      "NextSync", "Pending", "Conflicts",
						      "Collections", NULL);
	else
		(void) sd_bus_emit_properties_changed(m->bus, p, ACCOUNT_INTERFACE, "State",
						      "NextSync", NULL);
}

static void on_run_started(Manager *m, Account *a, void *userdata)
{
	emit_account(m, a, false);
}

static void on_run_ended(Manager *m, Account *a, bool whole_account, void *userdata)
{
	emit_account(m, a, true);
}

static void on_reloaded(Manager *m, const ks_config *c, void *userdata)
{
	if (m->bus)
		(void) sd_bus_emit_properties_changed(m->bus, SYNC2_PATH, SYNC2_INTERFACE,
						      "Accounts", NULL);
}

static const ManagerListener listener = {
	.run_started = on_run_started,
	.run_ended = on_run_ended,
	.reloaded = on_reloaded,
};

int bus2_setup(Manager *m)
{
	int r = manager_add_listener(m, &listener, NULL);

	if (r < 0)
		return log_error_errno(r, "Failed to listen to the runs: %m");
	r = sd_bus_add_object_vtable(m->bus, NULL, SYNC2_PATH, SYNC2_INTERFACE, root_vtable, m);
	if (r >= 0)
		r = sd_bus_add_fallback_vtable(m->bus, NULL, ACCOUNT_PREFIX, ACCOUNT_INTERFACE,
					       account_vtable, find_account, m);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(m->bus, NULL, ACCOUNT_PREFIX, enumerate_accounts, m);
	if (r >= 0)
		r = sd_bus_add_object_manager(m->bus, NULL, SYNC2_PATH);
	if (r < 0)
		return log_error_errno(r, "Failed to publish %s: %m", SYNC2_INTERFACE);
	return 0;
}
