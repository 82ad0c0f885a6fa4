/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "ksync.h"

#define CTL_VERSION "0.1"

/* How long a method call may take: the quick ones (this includes starting ksyncd through
 * D-Bus activation), and those that talk to the server first (discovery, creating a
 * collection and syncing it). */
#define CTL_TIMEOUT_USEC (60 * UINT64_C(1000000))
#define CTL_TIMEOUT_NETWORK_USEC (300 * UINT64_C(1000000))

/* Longest text ctl_format_time() and ctl_format_ago() produce, NUL included. */
#define CTL_TIME_MAX 64

/* --json given before the verb. */
extern bool arg_json;
/* -v, --verbose: more detail. */
extern bool arg_verbose;

/* The exit status of ksyncctl (ksyncctl(1), EXIT STATUS). */
enum {
	CTL_EXIT_FAILURE = 1,	/* something else failed: a collection, ksyncd, the bus */
	CTL_EXIT_USAGE = 2,	/* an unknown option or verb, arguments missing or wrong */
	CTL_EXIT_CONFIG = 3,	/* ksync.conf: errors, or an account it does not have */
	CTL_EXIT_AUTH = 4,	/* the server refused the credentials, or no password */
	CTL_EXIT_NETWORK = 5,	/* the server could not be reached, timed out, or TLS failed */
};
/* Set by a verb that knows what kind of failure it met (CTL_EXIT_*); 0 otherwise, and the
 * exit status follows the error: -EINVAL is a usage error, anything else a failure. */
extern int ctl_exit_status;

int cmd_status(int argc, char **argv);
int cmd_sync(int argc, char **argv);
int cmd_account(int argc, char **argv);
int cmd_collections(int argc, char **argv);
int cmd_enable(int argc, char **argv);
int cmd_subscribe(int argc, char **argv);
int cmd_disable(int argc, char **argv);
int cmd_add_addressbook(int argc, char **argv);
int cmd_add_calendar(int argc, char **argv);
int cmd_clients(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_duplicates(int argc, char **argv);
int cmd_conflicts(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_rename_collection(int argc, char **argv);
int cmd_delete_collection(int argc, char **argv);

/* Parses the config file at path as ksyncd would, printing its warnings and errors to
 * stderr and (unless quiet_when_clean and there are errors) the accounts ready to run to
 * stdout. -EINVAL when it has errors, the errno of reading it otherwise. */
int ctl_config_report(const char *path, bool quiet_when_clean);

/* The verb being run ("sync"), NULL before one is chosen. */
extern const char *ctl_verb;

/* After getopt reported a bad option: points at the verb's --help; returns -EINVAL. */
int ctl_usage_error(void);

/* Prints "ksyncctl: " and the message to stderr (%m is the error r) and returns r. */
int ctl_error(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Rejects --json for verbs that print no JSON; logs. */
int ctl_no_json(const char *verb);

/* Connects to the user bus; logs a failure with the way to sync without a bus. */
int ctl_bus_open(sd_bus **ret);

/* A method call to ksyncd with KS_IPC_VERSION as its first argument; the caller appends
 * the rest. */
int ctl_new_call(sd_bus *bus, const char *method, sd_bus_message **ret);

/* Sends a call built by ctl_new_call() and waits at most timeout_usec for the answer.
 * Logs every failure, in words that say what to do (not running, cannot be started,
 * different versions, no answer); reterr (if not NULL) receives the D-Bus error. */
int ctl_send(sd_bus *bus, sd_bus_message *m, uint64_t timeout_usec, sd_bus_error *reterr,
	     sd_bus_message **ret_reply);

/* ctl_new_call(), the arguments described by types (as sd_bus_message_append()), then
 * ctl_send(). ret_reply may be NULL. */
int ctl_call(sd_bus *bus, const char *method, uint64_t timeout_usec, sd_bus_error *reterr,
	     sd_bus_message **ret_reply, const char *types, ...);

/* Reads the single JSON string of a reply into a tree (and, if ret_text is not NULL, the
 * text itself, borrowed from the reply). Logs. */
int ctl_reply_json(sd_bus_message *reply, ks_json **ret, const char **ret_text);

/* Prints a JSON text indented, to stdout. Logs a text that is not JSON. */
int ctl_print_json(const char *text);

/* A copy of s fit for a terminal: control characters (C0, DEL, C1) become '?', except
 * newlines and tabs when multiline (tabs become spaces otherwise). NULL for NULL or out of
 * memory. */
char *ctl_sanitize(const char *s, bool multiline);

/* Prints s sanitized (single line); "-" for NULL. */
void ctl_fputs(const char *s, FILE *f);

/* Columns s takes on a terminal. */
size_t ctl_width(const char *s);

/* "2026-11-26 09:14" in local time, or "-" for t <= 0. */
const char *ctl_format_time(int64_t t, char buf[static CTL_TIME_MAX]);

/* "5 min ago", "in 2 h", "just now", "3 days ago"; "-" for t <= 0. */
const char *ctl_format_ago(int64_t t, char buf[static CTL_TIME_MAX]);

/* What a collection holds, in words: "contacts", or for a calendar the kinds of its
 * components ("events", "tasks", "events,tasks", "journal"), "calendar" when unknown. */
const char *ctl_kind(const ks_json *collection, char *buf, size_t size);

/* Checks that s is "ACCOUNT/COLLECTION" with both parts non-empty; logs. */
int ctl_check_collection_target(const char *s);

/* Takes the tree of collection directories at path, written by another client, for the
 * account a: matched to the collections of probe (the ProbeAccount answer) by directory
 * name, else by display name; sets a's calendars_path or contacts_path to it, and adds a
 * path = line for each directory named otherwise than ksync would. Prints what it found.
 * Errors are printed. */
int ctl_adopt(ks_account_config *a, const char *path, const ks_json *probe);
