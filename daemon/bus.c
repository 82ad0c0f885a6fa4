/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>


#include "bus.h"
#include "bus2.h"
#include "log.h"
#include "manager.h"
#include "util/ipc.h"
#include "util/macro.h"

/* A method call answered when a sync run it started has ended. */
typedef struct PendingReply {
	struct PendingReply *next;
	uint32_t run_id;
	sd_bus_message *call;
	char *account;
	char *collection_href;	/* created collections: answer with their object */
	char *json;		/* otherwise this object, with "synced": whether the run was ok */
} PendingReply;

static PendingReply *pending_replies;

static void pending_reply_add(PendingReply *p)
{
	p->next = pending_replies;
	pending_replies = p;
}

/* The error name of a failure that talked to the server: the credentials and the network
 * have their own, so that a caller (ksyncctl's exit status) can tell them apart. */
static const char *failure_name(int r)
{
	switch (r) {
	case -EACCES:
		return KS_IPC_ERROR_AUTH;
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -ENETDOWN:
	case -ETIMEDOUT:
	case -ECONNRESET:
	case -EKEYREJECTED:
		return KS_IPC_ERROR_NETWORK;
	default:
		return KS_IPC_ERROR_FAILED;
	}
}

static int check_version(sd_bus_message *m, sd_bus_error *error)
{
	uint32_t v = 0;
	int r = sd_bus_message_read(m, "u", &v);

	if (r < 0)
		return r;
	if (v != KS_IPC_VERSION)
		return sd_bus_error_setf(error, KS_IPC_ERROR_VERSION,
					 "ksyncd speaks version %u of the interface, the caller %u: "
					 "restart ksyncd after an upgrade", KS_IPC_VERSION, v);
	return 0;
}

/* The longest text any method takes: a URL, a name, a description. */
#define ARG_MAX_LEN 4096

/* Checks a text argument: at most max bytes, no control characters (sd-bus has already
 * checked that it is UTF-8), and not empty unless empty_ok. */
static int check_text(sd_bus_error *error, const char *what, const char *s, size_t max,
		      bool empty_ok)
{
	size_t n = strlen(s);

	if (n == 0 && !empty_ok)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The %s is empty.", what);
	if (n > max)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "The %s is longer than %zu bytes.", what, max);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "The %s holds a control character.", what);
	return 0;
}

static int method_version(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	uint32_t v;
	/* Any caller may ask, so that a mismatch can be told apart from other failures. */
	int r = sd_bus_message_read(m, "u", &v);
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(m, "s", "0.1");
}

static int method_sync(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *target;
	int force, mass;
	uint32_t id = 0;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "sbb", &target, &force, &mass);
	if (r < 0)
		return r;
	r = check_text(error, "target", target, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	r = manager_sync(man, target, force, mass, false, force, &id);
	if (r == -ENOENT) {
		_cleanup_free_ char *name = strndup(target, strcspn(target, "/"));
		_cleanup_free_ char *why = name ? manager_explain_unknown_account(man, name) : NULL;

		if (why)
			return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "%s", why);
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%.*s' in %s.",
					 (int) strcspn(target, "/"), target, man->config_path);
	}
	if (r == -ENXIO)
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_COLLECTION, "No collection '%s'.",
					 target);
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(m, "u", id);
}

static int method_status(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	_cleanup_free_ char *json = NULL;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = manager_status_json(userdata, &json);
	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Failed to read the status: %m");
	return sd_bus_reply_method_return(m, "s", json);
}

static int method_collections(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	_cleanup_free_ char *json = NULL;
	const char *account;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "s", &account);
	if (r < 0)
		return r;
	r = check_text(error, "account name", account, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	if (*account && !manager_find_account(man, account))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", account);
	r = manager_collections_json(man, account, &json);
	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Failed to list the collections: %m");
	return sd_bus_reply_method_return(m, "s", json);
}

static int method_set_enabled(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *target;
	int enabled;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "sb", &target, &enabled);
	if (r < 0)
		return r;
	r = check_text(error, "collection", target, ARG_MAX_LEN, false);
	if (r < 0)
		return r;
	const char *slash = strchr(target, '/');
	if (!slash)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Give the collection as ACCOUNT/COLLECTION.");
	_cleanup_free_ char *account = strndup(target, (size_t) (slash - target));
	if (!account)
		return -ENOMEM;
	if (!manager_find_account(man, account))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", account);
	_cleanup_free_ char *why = NULL;
	ks_engine *e = NULL;
	r = ks_engine_new(man->data_dir, &e);
	if (r >= 0)
		r = ks_engine_set_enabled(e, man->config_path, account, slash + 1, enabled, &why);
	ks_engine_free(e);
	if (r == -ENOENT && !why)
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_COLLECTION,
					 "Account '%s' has no collection '%s'.", account, slash + 1);
	if (r < 0 && why)
		return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "%s", why);
	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Failed to change the collection: %m");
	/* The run below reads the config: it must see the line just written. */
	if (r > 0 && manager_reload(man, &why) < 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "%s",
					 why ? why : "Failed to reload the configuration.");
	if (enabled)
		(void) manager_sync(man, account, false, false, false, false, NULL);
	return sd_bus_reply_method_return(m, "");
}

/* ---- creating collections and accounts: network work off the main loop -------------------- */

typedef struct CreateJob {
	sd_bus_message *call;
	ks_account_config *account;	/* borrowed from the config; the job copies what it needs */
	char *account_name;
	char *name;
	char *description;
	char *color;
	unsigned components;
	bool calendar;
	char *href;
	char *error;
} CreateJob;

static void create_job_free(CreateJob *j)
{
	sd_bus_message_unref(j->call);
	free(j->account_name);
	free(j->name);
	free(j->description);
	free(j->color);
	free(j->href);
	free(j->error);
	free(j);
}

static int create_run(Manager *m, void *data)
{
	CreateJob *j = data;
	const ks_account_config *a = ks_config_find_account(m->config, j->account_name);

	if (!a)
		return -ENOENT;
	if (j->calendar)
		return ks_create_calendar(a, j->name, j->components, j->color, &j->href, &j->error);
	return ks_create_addressbook(a, j->name, j->description, &j->href, &j->error);
}

static void create_done(Manager *m, void *data, int r)
{
	CreateJob *j = data;
	uint32_t id = 0;

	if (r < 0) {
		(void) sd_bus_reply_method_errorf(j->call, failure_name(r),
						  "Failed to create '%s' in account '%s': %s",
						  j->name, j->account_name,
						  j->error ? j->error : strerror(-r));
		create_job_free(j);
		return;
	}
	/* The new collection is listed, synced, and its directory made before the answer. */
	r = manager_sync_created(m, j->account_name, j->href, &id);
	PendingReply *p = calloc(1, sizeof(*p));
	if (r < 0 || !p) {
		free(p);
		(void) sd_bus_reply_method_errorf(j->call, KS_IPC_ERROR_FAILED,
						  "Created '%s', but failed to sync it: %s", j->name,
						  strerror(r < 0 ? -r : ENOMEM));
		create_job_free(j);
		return;
	}
	*p = (PendingReply) { .run_id = id, .call = sd_bus_message_ref(j->call),
			      .account = strdup(j->account_name), .collection_href = TAKE_PTR(j->href) };
	pending_reply_add(p);
	create_job_free(j);
}

static int parse_components(sd_bus_message *m, unsigned *ret, sd_bus_error *error)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = { { "VEVENT", KS_CALENDAR_EVENTS }, { "VTODO", KS_CALENDAR_TASKS },
		      { "VJOURNAL", KS_CALENDAR_JOURNALS } };
	const char *c;
	unsigned bits = 0;
	int r = sd_bus_message_enter_container(m, 'a', "s");

	if (r < 0)
		return r;
	while ((r = sd_bus_message_read(m, "s", &c)) > 0) {
		bool ok = false;
		for (size_t i = 0; i < ELEMENTSOF(names); i++)
			if (strcasecmp(c, names[i].name) == 0) {
				bits |= names[i].bit;
				ok = true;
			}
		if (!ok)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Unknown component '%s' (VEVENT, VTODO, VJOURNAL).", c);
	}
	if (r < 0)
		return r;
	r = sd_bus_message_exit_container(m);
	if (r < 0)
		return r;
	*ret = bits ? bits : KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS;
	return 0;
}

static int method_create(sd_bus_message *m, void *userdata, sd_bus_error *error, bool calendar)
{
	Manager *man = userdata;
	const char *account, *name, *text = "";
	unsigned comps = 0;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "ss", &account, &name);
	if (r < 0)
		return r;
	if (calendar) {
		r = parse_components(m, &comps, error);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_read(m, "s", &text);
	if (r < 0)
		return r;
	r = check_text(error, "account name", account, ARG_MAX_LEN, false);
	if (r >= 0)
		r = check_text(error, "name", name, 1024, false);
	if (r >= 0)
		r = check_text(error, calendar ? "color" : "description", text, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	if (!manager_find_account(man, account))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", account);
	if (!*name)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The name is empty.");
	CreateJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->call = sd_bus_message_ref(m);
	j->account_name = strdup(account);
	j->name = strdup(name);
	j->calendar = calendar;
	j->components = comps;
	if (calendar && *text)
		j->color = strdup(text);
	else if (!calendar && *text)
		j->description = strdup(text);
	if (!j->account_name || !j->name) {
		create_job_free(j);
		return -ENOMEM;
	}
	r = manager_run_job(man, create_run, create_done, j);
	if (r < 0) {
		create_job_free(j);
		return r;
	}
	return 1;	/* answered later */
}

static int method_create_addressbook(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_create(m, userdata, error, false);
}

static int method_create_calendar(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_create(m, userdata, error, true);
}

/* ---- renaming and deleting collections: on the server, then a sync ------------------------ */

typedef struct CollJob {
	sd_bus_message *call;
	char *account;
	char *name;		/* rename: the new name */
	bool delete;
	ks_collection_info info;
	char *error;
} CollJob;

static void coll_job_free(CollJob *j)
{
	sd_bus_message_unref(j->call);
	free(j->account);
	free(j->name);
	ks_collection_info_done(&j->info);
	free(j->error);
	free(j);
}

static int coll_run(Manager *m, void *data)
{
	CollJob *j = data;
	const ks_account_config *a = ks_config_find_account(m->config, j->account);

	if (!a)
		return -ENOENT;
	if (j->delete)
		return ks_delete_collection(a, j->info.href, &j->error);
	return ks_rename_collection(a, j->info.href, j->info.calendar, j->name, &j->error);
}

static void coll_done(Manager *m, void *data, int r)
{
	CollJob *j = data;
	PendingReply *p = NULL;
	uint32_t id = 0;

	if (r < 0) {
		(void) sd_bus_reply_method_errorf(j->call, failure_name(r), "Failed to %s %s/%s: %s",
						  j->delete ? "delete" : "rename", j->account,
						  j->info.path, j->error ? j->error : strerror(-r));
		coll_job_free(j);
		return;
	}
	log_at(KS_LOG_INFO, "%s/%s: %s on the server%s%s.", j->account, j->info.path,
	       j->delete ? "deleted" : "renamed", j->delete ? "" : " to ", j->delete ? "" : j->name);
	/* The run lists the home sets: it takes the new name, or removes the deleted
	 * collection here through the same path as any collection gone from the server. */
	r = j->delete ? manager_sync_deleted(m, j->account, j->info.href, &id)
		      : manager_sync(m, j->account, false, false, false, true, &id);
	if (r > 0)
		p = calloc(1, sizeof(*p));
	if (p && !j->delete)
		*p = (PendingReply) { .run_id = id, .call = sd_bus_message_ref(j->call),
				      .account = strdup(j->account),
				      .collection_href = strdup(j->info.href) };
	else if (p) {
		_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
		char *json = NULL;
		if (ks_json_writer_new(false, &w) >= 0) {
			(void) ks_json_write_object_begin(w);
			(void) ks_json_write_key(w, "account");
			(void) ks_json_write_string(w, j->account);
			(void) ks_json_write_key(w, "path");
			(void) ks_json_write_string(w, j->info.path);
			(void) ks_json_write_key(w, "href");
			(void) ks_json_write_string(w, j->info.href);
			(void) ks_json_write_key(w, "items");
			(void) ks_json_write_int(w, j->info.items);
			(void) ks_json_write_object_end(w);
			(void) ks_json_writer_steal(w, &json);
		}
		*p = (PendingReply) { .run_id = id, .call = sd_bus_message_ref(j->call), .json = json };
	}
	if (!p || (!j->delete && (!p->account || !p->collection_href)) || (j->delete && !p->json)) {
		if (p) {
			sd_bus_message_unref(p->call);
			free(p->account);
			free(p->collection_href);
			free(p->json);
			free(p);
		}
		(void) sd_bus_reply_method_errorf(j->call, KS_IPC_ERROR_FAILED,
						  "%s on the server, but failed to sync it: %s",
						  j->delete ? "Deleted" : "Renamed",
						  strerror(r < 0 ? -r : ENOMEM));
		coll_job_free(j);
		return;
	}
	pending_reply_add(p);
	coll_job_free(j);
}

static int method_coll(sd_bus_message *m, Manager *man, sd_bus_error *error, bool delete)
{
	const char *target, *name = NULL;
	int allow = false;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "s", &target);
	if (r >= 0)
		r = delete ? sd_bus_message_read(m, "b", &allow) : sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	r = check_text(error, "collection", target, ARG_MAX_LEN, false);
	if (r >= 0 && name)
		r = check_text(error, "name", name, 1024, false);
	if (r < 0)
		return r;
	const char *slash = strchr(target, '/');
	if (!slash || !slash[1])
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Give the collection as ACCOUNT/COLLECTION.");
	CollJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->delete = delete;
	j->account = strndup(target, (size_t) (slash - target));
	j->name = name ? strdup(name) : NULL;
	if (!j->account || (name && !j->name)) {
		coll_job_free(j);
		return -ENOMEM;
	}
	if (!manager_find_account(man, j->account)) {
		r = sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", j->account);
		coll_job_free(j);
		return r;
	}
	ks_engine *e = NULL;
	r = ks_engine_new(man->data_dir, &e);
	if (r >= 0)
		r = ks_engine_find_collection(e, j->account, slash + 1, &j->info);
	ks_engine_free(e);
	if (r == -ENOENT || r == -EINVAL) {
		r = sd_bus_error_setf(error, KS_IPC_ERROR_NO_COLLECTION, r == -ENOENT ?
				      "Account '%s' has no collection '%s'." :
				      "Account '%s' has an address book and a calendar called '%s': "
				      "say contacts/NAME or calendars/NAME.", j->account, slash + 1);
		coll_job_free(j);
		return r;
	}
	if (r < 0) {
		coll_job_free(j);
		return sd_bus_error_set_errnof(error, -r, "Failed to read the cache: %m");
	}
	/* Deleting a collection deletes its items on both sides: the mass-deletion guard's
	 * rule, with the same way to say yes. */
	if (delete && j->info.items >= 2 && !allow) {
		r = sd_bus_error_setf(error, KS_IPC_ERROR_FAILED, "%s/%s holds %d items; deleting it "
				      "deletes them on the server and here. Confirm with "
				      "--allow-mass-delete.", j->account, j->info.path,
				      j->info.items);
		coll_job_free(j);
		return r;
	}
	j->call = sd_bus_message_ref(m);
	r = manager_run_job(man, coll_run, coll_done, j);
	if (r < 0) {
		coll_job_free(j);
		return r;
	}
	return 1;	/* answered once the sync that follows has ended */
}

static int method_rename_collection(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_coll(m, userdata, error, false);
}

static int method_delete_collection(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_coll(m, userdata, error, true);
}

/* ---- probing an account: discovery with settings the caller gives ------------------------ */

typedef struct ProbeJob {
	sd_bus_message *call;
	ks_account_config cfg;
	char *password;
	char *json;
	char *error;
} ProbeJob;

static void probe_job_free(ProbeJob *j)
{
	sd_bus_message_unref(j->call);
	ks_account_config_done(&j->cfg);
	ks_secret_free(j->password);
	free(j->json);
	free(j->error);
	free(j);
}

static int add_same_as(Manager *m, ProbeJob *j)
{
	ks_engine *e = NULL;
	int r = ks_engine_new(m->data_dir, &e);

	/* Without the cache nothing is known about the other accounts: nothing to add. */
	if (r < 0)
		return 0;
	r = ks_probe_json_add_same_as(e, m->config, j->cfg.url, &j->json);
	ks_engine_free(e);
	return r;
}

static int probe_run(Manager *m, void *data)
{
	ProbeJob *j = data;
	int r = ks_probe_account_with(&j->cfg, j->password, &j->json, &j->error);

	j->password = ks_secret_free(j->password);
	if (r < 0)
		return r;
	return add_same_as(m, j);
}

static void probe_done(Manager *m, void *data, int r)
{
	ProbeJob *j = data;

	if (r < 0)
		(void) sd_bus_reply_method_errorf(j->call, failure_name(r), "%s",
						  j->error ? j->error : strerror(-r));
	else
		(void) sd_bus_reply_method_return(j->call, "s", j->json ? j->json : "{}");
	probe_job_free(j);
}

/* Reads the a{sv} options of ProbeAccount into j->cfg; anything unknown is refused, so that
 * no caller can make ksyncd run a command or read a file it names. */
static int read_probe_options(sd_bus_message *m, ProbeJob *j, sd_bus_error *error)
{
	int r = sd_bus_message_enter_container(m, 'a', "{sv}");

	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		if (strcmp(key, "ca_file") == 0) {
			const char *v;
			struct stat st;

			r = sd_bus_message_read(m, "v", "s", &v);
			if (r < 0)
				return r;
			r = check_text(error, "ca_file", v, ARG_MAX_LEN, false);
			if (r < 0)
				return r;
			/* Only read as the certificates TLS verifies the server with. */
			if (v[0] != '/' || stat(v, &st) < 0 || !S_ISREG(st.st_mode))
				return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
							 "ca_file must be the absolute path of a "
							 "regular file.");
			free(j->cfg.ca_file);
			if (!(j->cfg.ca_file = strdup(v)))
				return -ENOMEM;
		} else if (strcmp(key, "allow_insecure_http") == 0) {
			int b;

			r = sd_bus_message_read(m, "v", "b", &b);
			if (r < 0)
				return r;
			j->cfg.allow_insecure_http = b;
		} else if (strcmp(key, "timeout") == 0) {
			uint32_t t;

			r = sd_bus_message_read(m, "v", "u", &t);
			if (r < 0)
				return r;
			if (t < 1 || t > 3600)
				return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
							 "timeout must be 1 to 3600 seconds.");
			j->cfg.timeout = t;
		} else
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Unknown option '%s' (ca_file, allow_insecure_http, "
						 "timeout).", key);
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

static int method_probe_account(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *name, *url, *username, *password;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "ssss", &name, &url, &username, &password);
	if (r < 0)
		return r;
	r = check_text(error, "account name", name, 64, false);
	if (r >= 0)
		r = check_text(error, "URL", url, ARG_MAX_LEN, false);
	if (r >= 0)
		r = check_text(error, "user name", username, 1024, true);
	if (r < 0)
		return r;
	if (strlen(password) > 64 * 1024 || strpbrk(password, "\r\n"))
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "The password is too long or holds a line break.");
	ProbeJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->cfg.name = strdup(name);
	j->cfg.url = strdup(url);
	j->cfg.username = *username ? strdup(username) : NULL;
	j->password = *password ? strdup(password) : NULL;
	if (!j->cfg.name || !j->cfg.url || (*username && !j->cfg.username) ||
	    (*password && !j->password)) {
		probe_job_free(j);
		return -ENOMEM;
	}
	r = read_probe_options(m, j, error);
	if (r < 0) {
		probe_job_free(j);
		return r;
	}
	/* The same rules as in ksync.conf (a name that makes a directory, a URL, no plain http
	 * to another host unless allowed), checked before anything is sent. */
	_cleanup_free_ char *why = NULL;
	ks_config *checked = NULL;
	r = ks_config_check_account(&j->cfg, &checked, &why);
	ks_config_free(checked);
	if (r < 0) {
		probe_job_free(j);
		if (r == -ENOMEM)
			return r;
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s",
					 why ? why : strerror(-r));
	}
	j->call = sd_bus_message_ref(m);
	r = manager_run_job(man, probe_run, probe_done, j);
	if (r < 0) {
		probe_job_free(j);
		return r;
	}
	return 1;	/* answered later */
}

static int method_remove_account(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	_cleanup_free_ char *why = NULL;
	const char *name;
	int delete_data;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "sb", &name, &delete_data);
	if (r < 0)
		return r;
	r = check_text(error, "account name", name, ARG_MAX_LEN, false);
	if (r < 0)
		return r;
	if (!manager_find_account(man, name))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", name);
	r = ks_config_remove_account(man->config_path, name, &why);
	if (r < 0)
		return sd_bus_error_setf(error, KS_IPC_ERROR_FAILED, "Failed to remove '%s': %s", name,
					 why ? why : strerror(-r));
	(void) manager_reload(man, NULL);
	ks_engine *e = NULL;
	r = ks_engine_new(man->data_dir, &e);
	if (r >= 0)
		r = ks_engine_forget_account(e, name, delete_data);
	ks_engine_free(e);
	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Removed '%s' from the configuration, but "
					       "failed to forget its data: %m", name);
	return sd_bus_reply_method_return(m, "");
}

/* ---- duplicate contacts: read the cache (and write to the server) off the main loop ------ */

typedef enum DupKind {
	DUP_LIST,
	DUP_SHOW,
	DUP_MERGE,
	DUP_UNDO,
} DupKind;

typedef struct DupJob {
	sd_bus_message *call;
	DupKind kind;
	char *account;		/* list, undo */
	char *collection;	/* list */
	char *group;		/* show, merge */
	char *keep;
	bool dry_run;
	char *json;
	char *error;
} DupJob;

static void dup_job_free(DupJob *j)
{
	sd_bus_message_unref(j->call);
	free(j->account);
	free(j->collection);
	free(j->group);
	free(j->keep);
	free(j->json);
	free(j->error);
	free(j);
}

static int dup_run(Manager *m, void *data)
{
	DupJob *j = data;
	ks_engine *e = NULL;
	int r = ks_engine_new(m->data_dir, &e);

	if (r < 0)
		return r;
	switch (j->kind) {
	case DUP_LIST:
		r = ks_dup_list_json(e, m->config, j->account, j->collection, &j->json, &j->error);
		break;
	case DUP_SHOW:
		r = ks_dup_show_json(e, m->config, j->group, j->keep, &j->json, &j->error);
		break;
	case DUP_MERGE:
		r = ks_dup_merge(e, m->config, j->group, j->keep, j->dry_run, &j->json, &j->error);
		break;
	case DUP_UNDO:
		r = ks_dup_undo(e, m->config, j->account, &j->json, &j->error);
		break;
	}
	ks_engine_free(e);
	return r;
}

static void dup_done(Manager *m, void *data, int r)
{
	DupJob *j = data;

	if (r < 0) {
		const char *name = r == -ENOENT && j->kind == DUP_LIST ? KS_IPC_ERROR_NO_COLLECTION
								      : failure_name(r);
		(void) sd_bus_reply_method_errorf(j->call, name, "%s",
						  j->error ? j->error : strerror(-r));
	} else
		(void) sd_bus_reply_method_return(j->call, "s", j->json ? j->json : "{}");
	if (r >= 0 && j->kind == DUP_MERGE && !j->dry_run)
		log_at(KS_LOG_INFO, "Merged the duplicates of group %s.", j->group);
	else if (r >= 0 && j->kind == DUP_UNDO)
		log_at(KS_LOG_INFO, "Undid the last merge of duplicates%s%s.",
		       *j->account ? " of account " : "", j->account);
	dup_job_free(j);
}

static int dup_start(Manager *man, sd_bus_message *m, DupJob *j)
{
	int r;

	j->call = sd_bus_message_ref(m);
	r = manager_run_job(man, dup_run, dup_done, j);
	if (r < 0) {
		dup_job_free(j);
		return r;
	}
	return 1;	/* answered later */
}

static int method_duplicates(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *target;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "s", &target);
	if (r < 0)
		return r;
	r = check_text(error, "target", target, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	size_t n = strcspn(target, "/");
	DupJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->kind = DUP_LIST;
	j->account = strndup(target, n);
	j->collection = strdup(target[n] ? target + n + 1 : "");
	if (!j->account || !j->collection) {
		dup_job_free(j);
		return -ENOMEM;
	}
	if (*j->account && !manager_find_account(man, j->account)) {
		r = sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", j->account);
		dup_job_free(j);
		return r;
	}
	return dup_start(man, m, j);
}

static int method_dup_group(sd_bus_message *m, void *userdata, sd_bus_error *error, bool merge)
{
	const char *group, *keep;
	int dry = false;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "ss", &group, &keep);
	if (r >= 0 && merge)
		r = sd_bus_message_read(m, "b", &dry);
	if (r < 0)
		return r;
	if (!*group)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No group given.");
	r = check_text(error, "group", group, ARG_MAX_LEN, false);
	if (r >= 0)
		r = check_text(error, "UID", keep, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	DupJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->kind = merge ? DUP_MERGE : DUP_SHOW;
	j->group = strdup(group);
	j->keep = strdup(keep);
	j->dry_run = dry;
	if (!j->group || !j->keep) {
		dup_job_free(j);
		return -ENOMEM;
	}
	return dup_start(userdata, m, j);
}

static int method_duplicate_group(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_dup_group(m, userdata, error, false);
}

static int method_merge_duplicates(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	return method_dup_group(m, userdata, error, true);
}

static int method_undo_merge(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *account;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "s", &account);
	if (r < 0)
		return r;
	r = check_text(error, "account name", account, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	if (*account && !manager_find_account(man, account))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", account);
	DupJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->kind = DUP_UNDO;
	j->account = strdup(account);
	if (!j->account) {
		dup_job_free(j);
		return -ENOMEM;
	}
	return dup_start(man, m, j);
}

/* ---- what a sync would do ---------------------------------------------------------------- */

typedef struct PreviewJob {
	sd_bus_message *call;
	char *account;		/* NULL: every account */
	char *collection;	/* NULL: every collection */
	bool force;
	char *json;
} PreviewJob;

static void preview_job_free(PreviewJob *j)
{
	sd_bus_message_unref(j->call);
	free(j->account);
	free(j->collection);
	free(j->json);
	free(j);
}

static int preview_run(Manager *m, void *data)
{
	PreviewJob *j = data;
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	ks_engine *e = NULL;
	int r;

	r = ks_json_writer_new(false, &w);
	if (r < 0)
		return r;
	r = ks_engine_new(m->data_dir, &e);
	if (r < 0)
		return r;
	(void) ks_json_write_object_begin(w);
	(void) ks_json_write_key(w, "accounts");
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; i < m->config->n_accounts; i++) {
		const ks_account_config *a = &m->config->accounts[i];
		_cleanup_free_ char *json = NULL, *why = NULL;
		if (j->account && strcmp(j->account, a->name) != 0)
			continue;
		ks_sync_opts o = { .force = j->force, .only_collection = j->collection,
				   .cancel = &m->cancel };
		r = ks_sync_preview(e, a, &o, &json, &why);
		if (r >= 0) {
			(void) ks_json_write_text(w, json);
			continue;
		}
		(void) ks_json_write_object_begin(w);
		(void) ks_json_write_key(w, "account");
		(void) ks_json_write_string(w, a->name);
		(void) ks_json_write_key(w, "error");
		(void) ks_json_write_string(w, why ? why : strerror(-r));
		(void) ks_json_write_object_end(w);
	}
	ks_engine_free(e);
	(void) ks_json_write_array_end(w);
	(void) ks_json_write_object_end(w);
	return ks_json_writer_steal(w, &j->json);
}

static void preview_done(Manager *m, void *data, int r)
{
	PreviewJob *j = data;

	if (r < 0)
		(void) sd_bus_reply_method_errorf(j->call, KS_IPC_ERROR_FAILED,
						  "Failed to look at what a sync would do: %s",
						  strerror(-r));
	else
		(void) sd_bus_reply_method_return(j->call, "s", j->json);
	preview_job_free(j);
}

static int method_preview(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *target;
	int force;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "sb", &target, &force);
	if (r < 0)
		return r;
	r = check_text(error, "target", target, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	PreviewJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->force = force;
	size_t n = strcspn(target, "/");
	if (*target && !(j->account = strndup(target, n))) {
		preview_job_free(j);
		return -ENOMEM;
	}
	if (target[n] == '/' && target[n + 1] && !(j->collection = strdup(target + n + 1))) {
		preview_job_free(j);
		return -ENOMEM;
	}
	if (j->account && !manager_find_account(man, j->account)) {
		_cleanup_free_ char *why = manager_explain_unknown_account(man, j->account);
		r = why ? sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "%s", why)
			: sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s' in %s.",
					    j->account, man->config_path);
		preview_job_free(j);
		return r;
	}
	j->call = sd_bus_message_ref(m);
	r = manager_run_job(man, preview_run, preview_done, j);
	if (r < 0) {
		preview_job_free(j);
		return r;
	}
	return 1;	/* answered later */
}

/* ---- conflicts ---------------------------------------------------------------------------- */

static int method_conflicts(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	_cleanup_free_ char *json = NULL;
	const char *account;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "s", &account);
	if (r < 0)
		return r;
	r = check_text(error, "account name", account, ARG_MAX_LEN, true);
	if (r < 0)
		return r;
	if (*account && !manager_find_account(man, account))
		return sd_bus_error_setf(error, KS_IPC_ERROR_NO_ACCOUNT, "No account '%s'.", account);
	r = manager_conflicts_json(man, account, &json);
	if (r < 0)
		return sd_bus_error_set_errnof(error, -r, "Failed to list the conflicts: %m");
	return sd_bus_reply_method_return(m, "s", json);
}

typedef struct ResolveJob {
	sd_bus_message *call;
	char *item;
	char *keep;
	char *json;
	char *target;		/* ACCOUNT/COLLECTION to sync, when a file was written */
	char *error;
} ResolveJob;

static void resolve_job_free(ResolveJob *j)
{
	sd_bus_message_unref(j->call);
	free(j->item);
	free(j->keep);
	free(j->json);
	free(j->target);
	free(j->error);
	free(j);
}

static int resolve_run(Manager *m, void *data)
{
	ResolveJob *j = data;
	ks_engine *e = NULL;
	int r = ks_engine_new(m->data_dir, &e);

	if (r < 0)
		return r;
	r = ks_conflict_resolve(e, NULL, j->item, j->keep, &j->json, &j->target, &j->error);
	ks_engine_free(e);
	return r;
}

static void resolve_done(Manager *m, void *data, int r)
{
	ResolveJob *j = data;
	uint32_t id = 0;

	if (r < 0) {
		(void) sd_bus_reply_method_errorf(j->call, KS_IPC_ERROR_FAILED, "%s",
						  j->error ? j->error : strerror(-r));
		resolve_job_free(j);
		return;
	}
	log_at(KS_LOG_INFO, "Resolved conflict %s, keeping %s.", j->item, j->keep);
	/* The version kept is an edit like any other: a sync of its collection sends it, and
	 * the answer waits for that. */
	if (j->target && manager_sync(m, j->target, false, false, false, false, &id) > 0) {
		PendingReply *p = calloc(1, sizeof(*p));
		if (p) {
			*p = (PendingReply) { .run_id = id, .call = sd_bus_message_ref(j->call),
					      .json = TAKE_PTR(j->json) };
			pending_reply_add(p);
			resolve_job_free(j);
			return;
		}
	}
	(void) sd_bus_reply_method_return(j->call, "s", j->json);
	resolve_job_free(j);
}

static int method_resolve_conflict(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	const char *item, *keep;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	r = sd_bus_message_read(m, "ss", &item, &keep);
	if (r < 0)
		return r;
	r = check_text(error, "conflict", item, ARG_MAX_LEN, false);
	if (r >= 0)
		r = check_text(error, "version to keep", keep, 16, false);
	if (r < 0)
		return r;
	if (strcmp(keep, "local") != 0 && strcmp(keep, "server") != 0 && strcmp(keep, "both") != 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Keep 'local', 'server' or 'both', not '%s'.", keep);
	ResolveJob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->item = strdup(item);
	j->keep = strdup(keep);
	if (!j->item || !j->keep) {
		resolve_job_free(j);
		return -ENOMEM;
	}
	j->call = sd_bus_message_ref(m);
	r = manager_run_job(man, resolve_run, resolve_done, j);
	if (r < 0) {
		resolve_job_free(j);
		return r;
	}
	return 1;	/* answered later */
}

static int method_clients(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	Manager *man = userdata;
	_cleanup_free_ char *json = NULL;
	int r = check_version(m, error);

	if (r < 0)
		return r;
	_cleanup_free_ char *why = NULL;
	ks_engine *e = NULL;
	r = ks_engine_new(man->data_dir, &e);
	if (r >= 0)
		r = ks_engine_clients_config(e, man->config, &json, &why);
	ks_engine_free(e);
	if (r < 0)
		return sd_bus_error_setf(error, KS_IPC_ERROR_FAILED,
					 "Failed to write the readers' configuration: %s",
					 why ? why : strerror(-r));
	return sd_bus_reply_method_return(m, "s", json);
}

static int method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	int r = check_version(m, error);

	if (r < 0)
		return r;
	_cleanup_free_ char *why = NULL;
	r = manager_reload(userdata, &why);
	if (r < 0)
		return sd_bus_error_setf(error, KS_IPC_ERROR_FAILED,
					 "%s\nThe configuration has errors; the previous one stays in "
					 "use.", why ? why : strerror(-r));
	return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Version", "u", "s", method_version, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Sync", "usbb", "u", method_sync, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Status", "u", "s", method_status, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Collections", "us", "s", method_collections, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("SetEnabled", "usb", "", method_set_enabled, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("CreateAddressBook", "usss", "s", method_create_addressbook,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("CreateCalendar", "ussass", "s", method_create_calendar,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("ProbeAccount", "ussssa{sv}", "s", method_probe_account,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("RemoveAccount", "usb", "", method_remove_account, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Clients", "u", "s", method_clients, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Reload", "u", "", method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Duplicates", "us", "s", method_duplicates, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("DuplicateGroup", "uss", "s", method_duplicate_group,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("MergeDuplicates", "ussb", "s", method_merge_duplicates,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("UndoMerge", "us", "s", method_undo_merge, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("RenameCollection", "uss", "s", method_rename_collection,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("DeleteCollection", "usb", "s", method_delete_collection,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Preview", "usb", "s", method_preview, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Conflicts", "us", "s", method_conflicts, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("ResolveConflict", "uss", "s", method_resolve_conflict,
		      SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL("SyncStarted", "us", 0),
	SD_BUS_SIGNAL("SyncProgress", "ussuu", 0),
	SD_BUS_SIGNAL("SyncFinished", "usbs", 0),
	SD_BUS_SIGNAL("Alert", "sssss", 0),
	SD_BUS_SIGNAL("AlertCleared", "ss", 0),
	SD_BUS_VTABLE_END
};

void bus_emit_alert(Manager *m, const char *account, const char *kind, const char *collection,
		    const char *summary, const char *body)
{
	if (m->bus)
		(void) sd_bus_emit_signal(m->bus, KS_IPC_PATH, KS_IPC_INTERFACE, "Alert", "sssss",
					  account, kind, collection, summary, body);
}

void bus_emit_alert_cleared(Manager *m, const char *account, const char *kind)
{
	if (m->bus)
		(void) sd_bus_emit_signal(m->bus, KS_IPC_PATH, KS_IPC_INTERFACE, "AlertCleared", "ss",
					  account, kind);
}

/* ---- the runs, as the manager tells them ----------------------------------------------- */

static void on_run_started(Manager *m, Account *a, void *userdata)
{
	for (size_t i = 0; m->bus && i < a->n_running; i++)
		(void) sd_bus_emit_signal(m->bus, KS_IPC_PATH, KS_IPC_INTERFACE, "SyncStarted", "us",
					  a->running_runs[i], a->cfg.name);
}

static void on_run_event(Manager *m, Account *a, const ks_sync_event *ev, void *userdata)
{
	if (ev->type != KS_SYNC_PROGRESS)
		return;
	for (size_t i = 0; m->bus && i < a->n_running; i++)
		(void) sd_bus_emit_signal(m->bus, KS_IPC_PATH, KS_IPC_INTERFACE, "SyncProgress",
					  "ussuu", a->running_runs[i], a->cfg.name,
					  ev->collection ? ev->collection : "", ev->done, ev->total);
}

static void emit_finished(Manager *m, uint32_t run_id, const char *account, bool ok,
			  const char *json)
{
	if (m->bus)
		(void) sd_bus_emit_signal(m->bus, KS_IPC_PATH, KS_IPC_INTERFACE, "SyncFinished", "usbs",
					  run_id, account, ok, json);
}

static void on_run_reported(Manager *m, Account *a, uint32_t run_id, bool ok, const char *json,
			    void *userdata)
{
	emit_finished(m, run_id, a->cfg.name, ok, json);
}

/* The JSON object text with "synced": ok added after its members. -EBADMSG when it is no
 * object. */
static int with_synced(const char *object, bool ok, char **ret)
{
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	int r;

	r = ks_json_parse(object, strlen(object), &j, NULL);
	if (r < 0)
		return r;
	if (ks_json_get_type(j) != KS_JSON_OBJECT)
		return -EBADMSG;
	r = ks_json_writer_new(false, &w);
	if (r < 0)
		return r;
	(void) ks_json_write_object_begin(w);
	for (size_t i = 0; i < ks_json_count(j); i++) {
		(void) ks_json_write_key(w, ks_json_key_at(j, i));
		(void) ks_json_write_value(w, ks_json_at(j, i));
	}
	(void) ks_json_write_key(w, "synced");
	(void) ks_json_write_bool(w, ok);
	(void) ks_json_write_object_end(w);
	return ks_json_writer_steal(w, ret);
}

/* The end of a run id: its last SyncFinished (account ""), and the answers of the method
 * calls that waited for it. */
static void on_run_complete(Manager *m, uint32_t run_id, bool ok, void *userdata)
{
	emit_finished(m, run_id, "", ok, "{}");
	for (PendingReply **pp = &pending_replies; *pp;) {
		PendingReply *p = *pp;
		if (p->run_id != run_id) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		_cleanup_free_ char *json = NULL;
		if (p->json) {
			/* The object with the run's outcome added. */
			if (with_synced(p->json, ok, &json) >= 0)
				(void) sd_bus_reply_method_return(p->call, "s", json);
			else
				(void) sd_bus_reply_method_return(p->call, "s", p->json);
		} else {
			/* Answer with the new collection's own object. */
			int r = manager_collection_json(m, p->account, p->collection_href, &json);
			if (r < 0)
				(void) sd_bus_reply_method_errorf(p->call, KS_IPC_ERROR_FAILED,
								  "Created, but failed to read it "
								  "back: %s", strerror(-r));
			else
				(void) sd_bus_reply_method_return(p->call, "s", json);
		}
		sd_bus_message_unref(p->call);
		free(p->account);
		free(p->collection_href);
		free(p->json);
		free(p);
	}
}

/* NetworkManager's states (NMState): 70 is NM_STATE_CONNECTED_GLOBAL. */
#define NM_STATE_CONNECTED_GLOBAL 70

static int on_nm_state(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	uint32_t state;

	if (sd_bus_message_read(msg, "u", &state) < 0)
		return 0;
	bool was_up = m->network_state >= NM_STATE_CONNECTED_GLOBAL;
	m->network_state = state;
	if (state >= NM_STATE_CONNECTED_GLOBAL && !was_up)
		manager_network_up(m);
	return 0;
}

void bus_watch_network(Manager *m)
{
	int has = 0, r;

	if (sd_bus_open_system(&m->system_bus) < 0) {
		m->system_bus = NULL;
		log_at(KS_LOG_INFO, "No system bus, so no NetworkManager: runs that find no network "
		       "are retried every minute.");
		return;
	}
	/* Any sender: a forged signal can only make a run start early. */
	r = sd_bus_match_signal(m->system_bus, NULL, NULL, "/org/freedesktop/NetworkManager",
				"org.freedesktop.NetworkManager", "StateChanged", on_nm_state, m);
	if (r >= 0)
		r = sd_bus_attach_event(m->system_bus, m->event, 0);
	if (r >= 0) {
		_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
		if (sd_bus_call_method(m->system_bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				       "org.freedesktop.DBus", "NameHasOwner", NULL, &reply, "s",
				       "org.freedesktop.NetworkManager") >= 0)
			(void) sd_bus_message_read(reply, "b", &has);
	}
	if (r < 0) {
		m->system_bus = sd_bus_flush_close_unref(m->system_bus);
		return;
	}
	m->network_watched = has;
	/* Until NetworkManager says otherwise, the network is taken as up. */
	m->network_state = NM_STATE_CONNECTED_GLOBAL;
	log_at(KS_LOG_INFO, "%s.", has ? "Watching NetworkManager for the network coming back"
	       : "No NetworkManager on the system bus: runs that find no network are retried "
	       "every minute");
}

static int on_name_lost(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	log_at(KS_LOG_ERR, "Lost the bus name %s; another ksyncd runs.", KS_IPC_BUS_NAME);
	manager_stop(userdata);
	return 0;
}

static const ManagerListener listener = {
	.run_started = on_run_started,
	.run_event = on_run_event,
	.run_reported = on_run_reported,
	.run_complete = on_run_complete,
};

int bus_setup(Manager *m)
{
	int r;

	r = manager_add_listener(m, &listener, NULL);
	if (r < 0)
		return log_error_errno(r, "Failed to listen to the runs: %m");
	r = sd_bus_open_user(&m->bus);
	if (r < 0)
		return log_error_errno(r, "Failed to connect to the user bus: %m");
	r = sd_bus_add_object_vtable(m->bus, NULL, KS_IPC_PATH, KS_IPC_INTERFACE, vtable, m);
	if (r < 0)
		return log_error_errno(r, "Failed to publish the bus object: %m");
	/* The typed interface is there before the name: a caller activating ksyncd finds both. */
	r = bus2_setup(m);
	if (r < 0)
		return r;
	r = sd_bus_match_signal(m->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				"org.freedesktop.DBus", "NameLost", on_name_lost, m);
	if (r < 0)
		return log_error_errno(r, "Failed to watch the bus name: %m");
	r = sd_bus_request_name(m->bus, KS_IPC_BUS_NAME, 0);
	if (r == -EEXIST)
		return log_error_errno(r, "Another ksyncd already owns %s on this bus.",
				       KS_IPC_BUS_NAME);
	if (r < 0)
		return log_error_errno(r, "Failed to acquire the bus name %s: %m", KS_IPC_BUS_NAME);
	/* Without its bus the service has no one to answer: it ends with it. */
	(void) sd_bus_set_exit_on_disconnect(m->bus, true);
	r = sd_bus_attach_event(m->bus, m->event, 0);
	if (r < 0)
		return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
	return 0;
}
