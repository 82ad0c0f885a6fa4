/* SPDX-License-Identifier: MIT */
#pragma once

#include "manager.h"

/* ksyncd's object on the user bus (lib/util/ipc.h): its methods, which ask the manager, and
 * its signals, which tell what the manager's runs do (bus.c listens to them). */

/* Listens to m's runs, connects to the user bus, publishes the object and takes the name.
 * Logs its failures. */
int bus_setup(Manager *m);
/* Watches NetworkManager's state on the system bus, when both are there (never fatal). */
void bus_watch_network(Manager *m);

/* The Alert and AlertCleared signals, for notify.c. */
void bus_emit_alert(Manager *m, const char *account, const char *kind, const char *collection,
		    const char *summary, const char *body);
void bus_emit_alert_cleared(Manager *m, const char *account, const char *kind);
