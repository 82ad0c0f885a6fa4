/* SPDX-License-Identifier: MIT */
#pragma once

#include "dav_p.h"
#include "ksync.h"

/* An HTTP session with an account's server: the password fetched as the account says
 * (password_command, password_file; none when neither is set), libcurl set up with the
 * account's URL, user name, CA file, http policy and timeouts. Every part of ksync that talks
 * to an account's server starts here, so that they all honour the same settings. *ret is
 * freed with ks_dav_free(). Failures: the errors of ks_account_get_password() with
 * *reterr_msg (if not NULL; malloc'd) saying "cannot get the password of account 'NAME':
 * ...", or those of ks_dav_new() with "cannot set up HTTP for URL: ...". */
int ks_session_new(const ks_account_config *a, ks_dav **ret, char **reterr_msg);

/* ks_session_new() with the password already fetched (NULL: none is sent), for callers
 * that fetch it before taking the account's lock or were given it. The password is copied;
 * the caller still wipes its own. */
int ks_session_new_with(const ks_account_config *a, const char *password, ks_dav **ret,
			char **reterr_msg);
