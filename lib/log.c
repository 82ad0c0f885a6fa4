/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>

#include "log_p.h"

/* The globals of the library: where its messages go, and the durable-step hook. */
static ks_log_fn log_sink;
static void *log_userdata;

void ks_log_set_sink(ks_log_fn fn, void *userdata)
{
	log_sink = fn;
	log_userdata = userdata;
}

void ks_log(int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!log_sink)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_sink(level, msg, log_userdata);
}

static ks_step_fn step_hook;
static void *step_userdata;

void ks_set_step_hook(ks_step_fn fn, void *userdata)
{
	step_hook = fn;
	step_userdata = userdata;
}

void ks_step(const char *what)
{
	if (step_hook)
		step_hook(what, step_userdata);
}
