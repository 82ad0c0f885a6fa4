/* SPDX-License-Identifier: MIT */
#pragma once

#include "manager.h"

/* io.ksync.Sync2 on the user bus (bus2.c): typed properties of the daemon and of each
 * account, with PropertiesChanged as runs start and end, for desktop front ends. */

/* Publishes the objects on m->bus (bus_setup() opened it). Logs its failures. */
int bus2_setup(Manager *m);
