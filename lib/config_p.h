/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "buf_p.h"
#include "ksync.h"

/* Shared by the parser (config.c) and the writer of the file (conffile.c). */

/* A config file is a few hundred bytes; anything near this is not one. */
#define KS_CONFIG_MAX_SIZE (1024 * 1024)
/* Account names become directory names. */
#define KS_ACCOUNT_NAME_MAX 64

/* Whether name is 1 to KS_ACCOUNT_NAME_MAX of A-Z a-z 0-9 . _ -, not starting with '.'. */
bool ks_config_account_name_is_valid(const char *name);

/* Reads the file at path into b (capped at KS_CONFIG_MAX_SIZE: -EFBIG). -errno of open and
 * read. */
int ks_config_read_file(const char *path, ks_buf *b);

/* Parses text (changed in place) as the contents of the file path. Without partial, any
 * error fails with -EINVAL and every problem in *reterr_msg; with partial, errors leave out
 * what they concern and the rest is returned with the number of errors (see
 * ks_config_load_partial()). */
int ks_config_parse_text(const char *path, ks_buf *text, bool partial, ks_config **ret,
			 char **reterr_msg);
