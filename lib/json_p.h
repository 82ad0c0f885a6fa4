/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "buf_p.h"
#include "ksync.h"
#include "macro.h"

/* JSON: the reader and the writer are declared in ksync.h. Inside lib/, a writer may also
 * live on the stack and append to a ks_buf of the caller's (ks_json_writer_init()). */

struct ks_json_writer {
	ks_buf *buf;		/* where the text goes: own, or the caller's */
	ks_buf own;		/* the buffer of a writer from ks_json_writer_new() */
	unsigned depth;
	uint64_t in_object;	/* bit d: level d+1 is an object */
	uint64_t has_items;	/* bit d: level d+1 has an element already */
	bool want_value;	/* a key was written; its value comes next */
	bool done;		/* the top-level value is complete */
	bool pretty;		/* newlines and two-space indentation */
	int error;
};

/* Starts writing into buf (appending to what it holds); the writer needs no freeing. buf is
 * borrowed. pretty as for ks_json_writer_new(). */
void ks_json_writer_init(ks_json_writer *w, ks_buf *buf, bool pretty);
