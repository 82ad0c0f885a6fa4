/* SPDX-License-Identifier: MIT */
#pragma once

#include "ksync.h"

/* Sends a message to the sink installed with ks_log_set_sink(), if any. */
void ks_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ks_log_debug(...) ks_log(KS_LOG_DEBUG, __VA_ARGS__)

/* Reports a durable step to the hook installed with ks_set_step_hook(), if any. */
void ks_step(const char *what);
