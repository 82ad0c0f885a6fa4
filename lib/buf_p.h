/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* A growable byte buffer with a hard cap. data is always NUL-terminated once non-empty. */
typedef struct ks_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;	/* 0 = no cap of its own; the caller sets one for anything from outside */
} ks_buf;

/* Appends n bytes. -ENOMEM on allocation failure, -EFBIG when max would be exceeded. */
int ks_buf_append(ks_buf *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
int ks_buf_puts(ks_buf *b, const char *s);
/* Appends formatted text. */
int ks_buf_printf(ks_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forgets the contents, keeps the allocation. */
void ks_buf_reset(ks_buf *b);
/* Frees the contents; the struct may be reused. */
void ks_buf_done(ks_buf *b);
/* Returns the contents (an empty string if nothing was appended; NULL on OOM), owned by the caller;
 * the buffer is left empty. */
char *ks_buf_steal(ks_buf *b);
