/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "session_p.h"
#include "text_p.h"

int ks_session_new(const ks_account_config *a, ks_dav **ret, char **reterr_msg)
{
	_cleanup_free_ char *why = NULL;
	char *password = NULL;
	int r;

	r = ks_account_get_password(a, &password, &why);
	if (r < 0 && r != -ENOKEY)
		return ks_set_error(reterr_msg, r, "cannot get the password of account '%s': %s",
				    a->name, why ? why : strerror(-r));
	r = ks_session_new_with(a, password, ret, reterr_msg);
	password = ks_secret_free(password);
	return r;
}

int ks_session_new_with(const ks_account_config *a, const char *password, ks_dav **ret,
			char **reterr_msg)
{
	int r;

	ks_dav_opts o = {
		.base_url = a->url,
		.username = a->username,
		.password = password,
		.ca_file = a->ca_file,
		.allow_insecure_http = a->allow_insecure_http,
		/* Connecting takes at most the timeout, and never more than 30 s. */
		.connect_timeout_s = a->timeout && a->timeout < 30 ? (long) a->timeout : 0,
		.low_speed_time_s = (long) a->timeout,
	};
	r = ks_dav_new(&o, ret);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot set up HTTP for %s: %s", a->url,
				    strerror(-r));
	return 0;
}
