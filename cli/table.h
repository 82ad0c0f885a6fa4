/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/macro.h"

/* A table of text printed in aligned columns, cells sanitized for the terminal. */
typedef struct table table;

/* A table of n_cols columns whose first row is the headers given (n_cols strings), or
 * without a header row when the first header is NULL. */
int table_new(size_t n_cols, table **ret, ...);
table *table_free(table *t);
KS_DEFINE_CLEANUP(table, table_free)

/* Right-aligns column col (for numbers). */
void table_align_right(table *t, size_t col);

/* Appends the next cell, row by row; NULL and "" show as "-". */
int table_add(table *t, const char *cell);
int table_addf(table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Number of rows added, the header row not counted. */
size_t table_rows(const table *t);

/* Prints the table, each line starting with indent; the last column is not padded. */
int table_print(const table *t, FILE *f, const char *indent);
