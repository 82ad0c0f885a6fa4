/* SPDX-License-Identifier: MIT */
#pragma once

#include "manager.h"

/* Problems told once per account and cause: the Alert signal, and a desktop notification. */
typedef struct Notifier Notifier;

/* Listens to m's runs until notify_free(). Free it after the manager: the manager tells it
 * of each account it frees, which ends the notifications under way. */
int notify_new(Manager *m, Notifier **ret);
Notifier *notify_free(Notifier *n);
