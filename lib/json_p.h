/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf_p.h"
#include "macro.h"

/* JSON (RFC 8259): a parser building a read-only tree, and a writer appending to a ks_buf.
 * Used for the structured answers of the D-Bus interface (lib/util/ipc.h). */

/* Largest text ks_json_parse() accepts. */
#define KS_JSON_MAX_TEXT (16 * 1024 * 1024)
/* Deepest nesting of arrays and objects, for the parser and the writer. */
#define KS_JSON_MAX_DEPTH 64
/* Most values (of any type, members included) in one parsed text. */
#define KS_JSON_MAX_VALUES (1024 * 1024)

typedef enum ks_json_type {
	KS_JSON_NULL,
	KS_JSON_BOOL,
	KS_JSON_NUMBER,
	KS_JSON_STRING,
	KS_JSON_ARRAY,
	KS_JSON_OBJECT,
	_KS_JSON_TYPE_MAX,
	_KS_JSON_TYPE_INVALID = -EINVAL,
} ks_json_type;

/* One value of a parsed text; the root owns the whole tree. */
typedef struct ks_json ks_json;

/* Parses len bytes of text (one JSON value, surrounded by optional whitespace; no BOM).
 * Strings must be valid UTF-8 and are returned as UTF-8; \u escapes are decoded, surrogate
 * pairs included. On success *ret is the root, owned by the caller (ks_json_free()).
 * -EBADMSG: not JSON (syntax, bad UTF-8, a lone surrogate, a U+0000 character, trailing data);
 * -ERANGE: a number beyond the range of a double; -E2BIG: more than KS_JSON_MAX_TEXT bytes,
 * KS_JSON_MAX_DEPTH levels or KS_JSON_MAX_VALUES values; -ENOMEM.
 * On failure *reterr_offset (if not NULL) is the byte offset where parsing stopped. */
int ks_json_parse(const char *text, size_t len, ks_json **ret, size_t *reterr_offset);

/* Frees a tree returned by ks_json_parse(). Accepts NULL; returns NULL. Never pass a value
 * borrowed from inside a tree. */
ks_json *ks_json_free(ks_json *j);
KS_DEFINE_CLEANUP(ks_json, ks_json_free)

/* The type of j; KS_JSON_NULL for a NULL pointer, so that a missing member reads as null. */
ks_json_type ks_json_get_type(const ks_json *j);

/* Number of elements of an array or members of an object; 0 for anything else. */
size_t ks_json_count(const ks_json *j);

/* Element i of an array or value of member i of an object, or NULL when out of range.
 * Borrowed from the tree. */
const ks_json *ks_json_at(const ks_json *j, size_t i);

/* Name of member i of an object, or NULL. Borrowed from the tree. */
const char *ks_json_key_at(const ks_json *j, size_t i);

/* Value of member key of an object (the last one when a key is repeated), or NULL when j
 * is not an object or has no such member. Borrowed from the tree. */
const ks_json *ks_json_get(const ks_json *j, const char *key);

/* The string of a string value, or NULL for any other type. Borrowed from the tree. */
const char *ks_json_string(const ks_json *j);

/* True for the JSON literal true; false for anything else. */
bool ks_json_is_true(const ks_json *j);

/* The value of a number, stored in *ret when it is integral and fits in int64_t (exactly,
 * when written without fraction or exponent). -EINVAL for any other type; -ERANGE for a
 * number with a non-zero fraction or out of range. */
int ks_json_int(const ks_json *j, int64_t *ret);

/* The value of any number, stored in *ret. -EINVAL for any other type. */
int ks_json_double(const ks_json *j, double *ret);

/* Shorthands for a member of an object, for front ends reading known shapes: the string, or
 * NULL when missing or not a string; the boolean, or def; the integer, or def. */
const char *ks_json_get_string(const ks_json *j, const char *key);
bool ks_json_get_bool(const ks_json *j, const char *key, bool def);
int64_t ks_json_get_int(const ks_json *j, const char *key, int64_t def);

/* The writer. Every call appends to buf, or records the first error and does nothing from
 * then on; each call returns that first error (or 0), so a sequence of calls can be checked
 * once, with ks_json_writer_finish(). Misuse (a value where a key is due, a key outside an
 * object, unbalanced ends, nesting deeper than KS_JSON_MAX_DEPTH) is -EINVAL. Errors of
 * ks_buf (-ENOMEM, -EFBIG) pass through. */
typedef struct ks_json_writer {
	ks_buf *buf;
	unsigned depth;
	uint64_t in_object;	/* bit d: level d+1 is an object */
	uint64_t has_items;	/* bit d: level d+1 has an element already */
	bool want_value;	/* a key was written; its value comes next */
	bool done;		/* the top-level value is complete */
	bool pretty;		/* newlines and two-space indentation */
	int error;
} ks_json_writer;

/* Starts writing into buf (appending to what it holds). pretty: one element per line,
 * indented by two spaces; otherwise no whitespace at all. buf is borrowed. */
void ks_json_writer_init(ks_json_writer *w, ks_buf *buf, bool pretty);

/* 0 when exactly one complete value was written, the first error otherwise (-EINVAL for an
 * incomplete value). */
int ks_json_writer_finish(const ks_json_writer *w);

int ks_json_write_object_begin(ks_json_writer *w);
int ks_json_write_object_end(ks_json_writer *w);
int ks_json_write_array_begin(ks_json_writer *w);
int ks_json_write_array_end(ks_json_writer *w);

/* A member name; the member's value follows with any of the calls below. */
int ks_json_write_key(ks_json_writer *w, const char *key);

/* A string, escaped as needed. NULL writes null. Bytes that are not valid UTF-8 are written
 * as U+FFFD, so that the result is always valid UTF-8 (D-Bus refuses anything else). */
int ks_json_write_string(ks_json_writer *w, const char *s);
int ks_json_write_string_len(ks_json_writer *w, const char *s, size_t len);

int ks_json_write_int(ks_json_writer *w, int64_t v);
int ks_json_write_uint(ks_json_writer *w, uint64_t v);
/* A finite double, written so that it reads back as the same value; -EINVAL for NaN and
 * infinities, which JSON cannot express. */
int ks_json_write_double(ks_json_writer *w, double v);
int ks_json_write_bool(ks_json_writer *w, bool v);
int ks_json_write_null(ks_json_writer *w);

/* Writes a parsed value (and everything inside it). Numbers keep the text they were parsed
 * from. */
int ks_json_write_value(ks_json_writer *w, const ks_json *j);
