/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf_p.h"
#include "config_p.h"
#include "ksync.h"
#include "macro.h"
#include "secret_p.h"
#include "text_p.h"

/* Beyond this many, more messages only bury the first ones. */
#define CONFIG_MAX_ERRORS 100
#define CONFIG_DEFAULT_INTERVAL 900
#define CONFIG_MIN_INTERVAL 60
#define CONFIG_MAX_DAYS 36500
#define CONFIG_DEFAULT_TIMEOUT 60
#define CONFIG_MAX_TIMEOUT 3600

typedef enum conf_section {
	CONF_NONE,	/* before the first section header */
	CONF_SKIP,	/* after a rejected header: its keys would only repeat that error */
	CONF_GENERAL,
	CONF_ACCOUNT,
} conf_section;

typedef struct conf_ctx conf_ctx;

/* Stores value (non-empty, unquoted) into field. Returns 0, -EINVAL after reporting the
 * problem with conf_error(), or -ENOMEM. */
typedef int (*conf_parse_fn)(conf_ctx *ctx, const char *key, const char *value, void *field);

typedef struct conf_key {
	conf_section section;
	const char *key;
	conf_parse_fn parse;
	size_t offset;	/* into ks_config for [general], into ks_account_config for [account] */
} conf_key;

static int conf_parse_interval(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_interval_or_zero(conf_ctx *ctx, const char *key, const char *value,
				       void *field);
static int conf_parse_timeout(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_provider(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_url(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_username(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_string(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_path(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_bool(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_conflict(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_collections(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_secret_ref(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_log_level(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_patterns(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_feed(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_dir(conf_ctx *ctx, const char *key, const char *value, void *field);
static int conf_parse_collection_dir(conf_ctx *ctx, const char *key, const char *value,
				     void *field);
static int conf_parse_days(conf_ctx *ctx, const char *key, const char *value, void *field);

static const conf_key conf_keys[] = {
	{ CONF_GENERAL, "interval", conf_parse_interval, offsetof(ks_config, interval) },
	{ CONF_GENERAL, "conflict", conf_parse_conflict, offsetof(ks_config, conflict) },
	{ CONF_GENERAL, "collections", conf_parse_collections, offsetof(ks_config, collections) },
	{ CONF_GENERAL, "timeout", conf_parse_timeout, offsetof(ks_config, timeout) },
	{ CONF_GENERAL, "password_timeout", conf_parse_timeout,
	  offsetof(ks_config, password_timeout) },
	{ CONF_GENERAL, "notifications", conf_parse_bool, offsetof(ks_config, notifications) },
	{ CONF_GENERAL, "log_level", conf_parse_log_level, offsetof(ks_config, log_level) },
	{ CONF_GENERAL, "past_days", conf_parse_days, offsetof(ks_config, past_days) },
	{ CONF_GENERAL, "future_days", conf_parse_days, offsetof(ks_config, future_days) },
	{ CONF_ACCOUNT, "provider", conf_parse_provider, offsetof(ks_account_config, provider) },
	{ CONF_ACCOUNT, "url", conf_parse_url, offsetof(ks_account_config, url) },
	{ CONF_ACCOUNT, "feed", conf_parse_feed, offsetof(ks_account_config, feed) },
	{ CONF_ACCOUNT, "username", conf_parse_username, offsetof(ks_account_config, username) },
	{ CONF_ACCOUNT, "password_command", conf_parse_string,
	  offsetof(ks_account_config, password_command) },
	{ CONF_ACCOUNT, "password_file", conf_parse_path,
	  offsetof(ks_account_config, password_file) },
	{ CONF_ACCOUNT, "ca_file", conf_parse_path, offsetof(ks_account_config, ca_file) },
	{ CONF_ACCOUNT, "allow_insecure_http", conf_parse_bool,
	  offsetof(ks_account_config, allow_insecure_http) },
	{ CONF_ACCOUNT, "interval", conf_parse_interval_or_zero,
	  offsetof(ks_account_config, interval) },
	{ CONF_ACCOUNT, "conflict", conf_parse_conflict, offsetof(ks_account_config, conflict) },
	{ CONF_ACCOUNT, "collections", conf_parse_collections,
	  offsetof(ks_account_config, collections) },
	{ CONF_ACCOUNT, "include", conf_parse_patterns, offsetof(ks_account_config, include) },
	{ CONF_ACCOUNT, "exclude", conf_parse_patterns, offsetof(ks_account_config, exclude) },
	{ CONF_ACCOUNT, "timeout", conf_parse_timeout, offsetof(ks_account_config, timeout) },
	{ CONF_ACCOUNT, "password_secret", conf_parse_secret_ref,
	  offsetof(ks_account_config, password_secret) },
	{ CONF_ACCOUNT, "password_timeout", conf_parse_timeout,
	  offsetof(ks_account_config, password_timeout) },
	{ CONF_ACCOUNT, "calendars_path", conf_parse_dir,
	  offsetof(ks_account_config, calendars_path) },
	{ CONF_ACCOUNT, "contacts_path", conf_parse_dir,
	  offsetof(ks_account_config, contacts_path) },
	/* The one key that may be given more than once: one line per collection. */
	{ CONF_ACCOUNT, "path", conf_parse_collection_dir, offsetof(ks_account_config, paths) },
	{ CONF_ACCOUNT, "past_days", conf_parse_days, offsetof(ks_account_config, past_days) },
	{ CONF_ACCOUNT, "future_days", conf_parse_days,
	  offsetof(ks_account_config, future_days) },
};

static const struct {
	const char *name;
	const char *url;
} providers[] = {
	{ "infomaniak", "https://sync.infomaniak.com/" },
};

struct conf_ctx {
	const char *path;
	char *dir;		/* absolute directory of path, computed when first needed */
	unsigned line;
	ks_buf errors;
	unsigned n_errors;
	conf_section section;
	char label[16 + KS_ACCOUNT_NAME_MAX];	/* "general" or "account NAME", for messages */
	size_t account;		/* index of the current account */
	size_t accounts_cap;
	unsigned general_line;
	unsigned seen[ELEMENTSOF(conf_keys)];	/* line of each key in the current section */
	bool *broken;		/* per account: an error was found in it */
	ks_buf warnings;
};

KS_DEFINE_CLEANUP(ks_config, ks_config_free)

static void conf_ctx_done(conf_ctx *ctx)
{
	free(ctx->dir);
	free(ctx->broken);
	ks_buf_done(&ctx->errors);
	ks_buf_done(&ctx->warnings);
}

_printf_(4, 0)
static int vformat_error(ks_buf *b, const char *path, unsigned line, const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = NULL;
	int r;

	if (vasprintf(&msg, fmt, ap) < 0)
		return -ENOMEM;
	if (b->len > 0) {
		r = ks_buf_puts(b, "\n");
		if (r < 0)
			return r;
	}
	if (line > 0)
		return ks_buf_printf(b, "%s:%u: %s", path, line, msg);
	return ks_buf_printf(b, "%s: %s", path, msg);
}

/* Records a problem on the current line. Returns -EINVAL, or -ENOMEM when it could not. */
_printf_(2, 3)
static int conf_error(conf_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	int r;

	/* The account the line belongs to does not run; the others may. */
	if (ctx->section == CONF_ACCOUNT && ctx->broken)
		ctx->broken[ctx->account] = true;
	if (++ctx->n_errors > CONFIG_MAX_ERRORS)
		return -EINVAL;
	va_start(ap, fmt);
	r = vformat_error(&ctx->errors, ctx->path, ctx->line, fmt, ap);
	va_end(ap);
	return r == -ENOMEM ? r : -EINVAL;
}

/* Records something that works but is likely not what was meant. 0 or -ENOMEM. */
_printf_(2, 3)
static int conf_warning(conf_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vformat_error(&ctx->warnings, ctx->path, ctx->line, fmt, ap);
	va_end(ap);
	return r;
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);
	char *p;

	if (asprintf(&p, "%s%s%s", dir, n > 0 && dir[n - 1] == '/' ? "" : "/", name) < 0)
		return NULL;
	return p;
}

static char *strip(char *s)
{
	static const char ws[] = " \t\r\f\v";

	s += strspn(s, ws);
	size_t n = strlen(s);
	while (n > 0 && strchr(ws, s[n - 1]))
		n--;
	s[n] = 0;
	return s;
}

int ks_duration_parse(const char *s, unsigned *ret)
{
	static const struct {
		const char *suffix;
		unsigned long long mult;
	} units[] = { { "", 1 }, { "s", 1 }, { "min", 60 }, { "h", 3600 }, { "d", 86400 } };
	unsigned long long v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned) (*p - '0');
		if (v > UINT_MAX)
			return -ERANGE;
	}
	p += strspn(p, " \t");
	for (size_t i = 0; i < ELEMENTSOF(units); i++) {
		if (strcmp(p, units[i].suffix) != 0)
			continue;
		if (v * units[i].mult > UINT_MAX)
			return -ERANGE;
		*ret = (unsigned) (v * units[i].mult);
		return 0;
	}
	return -EINVAL;
}

static int conf_parse_interval_full(conf_ctx *ctx, const char *key, const char *value,
				    unsigned *field, bool zero_ok)
{
	unsigned v;

	if (ks_duration_parse(value, &v) < 0)
		return conf_error(ctx, "invalid duration '%s' for %s; use seconds, or a number "
				  "followed by s, min, h or d (e.g. 15min)", value, key);
	if (v < CONFIG_MIN_INTERVAL && !(zero_ok && v == 0))
		return conf_error(ctx, "%s '%s' is too short; the minimum is %us", key, value,
				  CONFIG_MIN_INTERVAL);
	*field = v;
	return 0;
}

static int conf_parse_interval(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	return conf_parse_interval_full(ctx, key, value, field, false);
}

/* 0 in an [account] means "the [general] interval". */
static int conf_parse_interval_or_zero(conf_ctx *ctx, const char *key, const char *value,
				       void *field)
{
	return conf_parse_interval_full(ctx, key, value, field, true);
}

/* A number of days for a time window: 0 (no limit) to a hundred years. */
static int conf_parse_days(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	int *days = field;
	unsigned v = 0;
	size_t i = 0;

	for (; value[i] >= '0' && value[i] <= '9' && v <= CONFIG_MAX_DAYS; i++)
		v = v * 10 + (unsigned) (value[i] - '0');
	if (i == 0 || value[i] || v > CONFIG_MAX_DAYS)
		return conf_error(ctx, "invalid %s '%s'; use a number of days from 0 (no limit) "
				  "to %d", key, value, CONFIG_MAX_DAYS);
	*days = (int) v;
	return 0;
}

/* How long a request may go without receiving data; at least a second, at most an hour. */
static int conf_parse_timeout(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	unsigned v;

	if (ks_duration_parse(value, &v) < 0)
		return conf_error(ctx, "invalid duration '%s' for %s; use seconds, or a number "
				  "followed by s, min, h or d (e.g. 30s)", value, key);
	if (v < 1 || v > CONFIG_MAX_TIMEOUT)
		return conf_error(ctx, "%s '%s' is out of range; use 1s to %us", key, value,
				  CONFIG_MAX_TIMEOUT);
	*(unsigned *) field = v;
	return 0;
}

int ks_log_level_parse(const char *s)
{
	static const char *const names[] = { [KS_LOG_ERR] = "err", [KS_LOG_WARNING] = "warning",
					     [KS_LOG_NOTICE] = "notice", [KS_LOG_INFO] = "info",
					     [KS_LOG_DEBUG] = "debug" };

	for (size_t i = 0; s && i < ELEMENTSOF(names); i++)
		if (names[i] && strcmp(s, names[i]) == 0)
			return (int) i;
	return -EINVAL;
}

static int conf_parse_log_level(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	int *level = field;
	int l = ks_log_level_parse(value);

	if (l < 0)
		return conf_error(ctx, "invalid %s '%s' (err, warning, notice, info or debug)", key,
				  value);
	*level = l;
	return 0;
}

static int conf_parse_conflict(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	int *c = field;

	if (strcmp(value, "server-wins") == 0)
		*c = KS_CONFLICT_MODE_SERVER_WINS;
	else if (strcmp(value, "local-wins") == 0)
		*c = KS_CONFLICT_MODE_LOCAL_WINS;
	else
		return conf_error(ctx, "invalid value '%s' for %s (server-wins or local-wins)",
				  value, key);
	return 0;
}

static int conf_parse_collections(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	int *c = field;

	if (strcmp(value, "all") == 0)
		*c = KS_NEW_COLLECTIONS_ALL;
	else if (strcmp(value, "none") == 0)
		*c = KS_NEW_COLLECTIONS_NONE;
	else
		return conf_error(ctx, "invalid value '%s' for %s (all or none)", value, key);
	return 0;
}

static int conf_parse_bool(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	bool *b = field;

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*b = true;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*b = false;
			return 0;
		}
	}
	return conf_error(ctx, "invalid boolean '%s' for %s", value, key);
}

static int conf_parse_string(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	char **s = field;

	*s = strdup(value);
	return *s ? 0 : -ENOMEM;
}

/* include = and exclude =: patterns separated by commas, none of them empty. */
static int conf_parse_patterns(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	size_t n = 0;
	int r = ks_config_split_patterns(value, NULL, &n);

	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return conf_error(ctx, "%s has an empty pattern in '%s' (give patterns separated "
				  "by commas)", key, value);
	return conf_parse_string(ctx, key, value, field);
}

/* Secret Service attributes: checked here so that a typo shows at load, not at the first
 * sync. */
static int conf_parse_secret_ref(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	_cleanup_free_ char *why = NULL;
	char **kv = NULL;
	int r = ks_secret_attrs_parse(value, &kv, &why);

	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return conf_error(ctx, "invalid %s '%s': %s", key, value, why ? why : "");
	ks_secret_attrs_free(kv);
	return conf_parse_string(ctx, key, value, field);
}

static int conf_parse_username(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	/* HTTP Basic authentication cannot carry a user name with a colon (RFC 7617). */
	if (strchr(value, ':'))
		return conf_error(ctx, "%s must not contain ':'", key);
	return conf_parse_string(ctx, key, value, field);
}

static int conf_parse_provider(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	for (size_t i = 0; i < ELEMENTSOF(providers); i++)
		if (strcmp(value, providers[i].name) == 0)
			return conf_parse_string(ctx, key, value, field);
	return conf_error(ctx, "unknown provider '%s'; known providers: infomaniak", value);
}

typedef enum url_problem {
	URL_OK,
	URL_SCHEME,
	URL_SPACE,
	URL_USERINFO,
	URL_HOST,
	URL_PORT,
} url_problem;

static const char *const url_problem_text[] = {
	[URL_SCHEME] = "it must start with http:// or https://",
	[URL_SPACE] = "it contains spaces or control characters",
	[URL_HOST] = "the host is missing or malformed",
	[URL_PORT] = "the port is malformed",
};

/* Checks an http(s) URL and finds its host (without IPv6 brackets). */
static url_problem url_split(const char *url, bool *ret_plain_http, const char **ret_host,
			     size_t *ret_host_len)
{
	const char *p, *host, *rest;
	size_t host_len;
	bool plain;

	if (strncasecmp(url, "https://", 8) == 0) {
		p = url + 8;
		plain = false;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		p = url + 7;
		plain = true;
	} else
		return URL_SCHEME;
	for (const char *q = url; *q; q++)
		if ((unsigned char) *q <= ' ' || *q == 0x7f)
			return URL_SPACE;

	const char *end = p + strcspn(p, "/?#");
	if (memchr(p, '@', (size_t) (end - p)))
		return URL_USERINFO;
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t) (end - p));
		if (!close)
			return URL_HOST;
		host = p + 1;
		host_len = (size_t) (close - host);
		rest = close + 1;

		char a[INET6_ADDRSTRLEN];
		struct in6_addr a6;
		if (host_len >= sizeof(a))
			return URL_HOST;
		memcpy(a, host, host_len);
		a[host_len] = 0;
		if (inet_pton(AF_INET6, a, &a6) != 1)
			return URL_HOST;
	} else {
		host = p;
		host_len = strcspn(p, ":/?#");
		rest = p + host_len;
	}
	if (host_len == 0)
		return URL_HOST;
	if (rest < end) {
		if (*rest != ':' || end - rest < 2 || end - rest > 6)
			return URL_PORT;
		unsigned port = 0;
		for (const char *q = rest + 1; q < end; q++) {
			if (*q < '0' || *q > '9')
				return URL_PORT;
			port = port * 10 + (unsigned) (*q - '0');
		}
		if (port == 0 || port > 65535)
			return URL_PORT;
	}
	*ret_plain_http = plain;
	*ret_host = host;
	*ret_host_len = host_len;
	return URL_OK;
}

static bool host_is_loopback(const char *host, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	struct in_addr a4;
	struct in6_addr a6;

	if (len >= sizeof(a))
		return false;
	memcpy(a, host, len);
	a[len] = 0;
	if (strcasecmp(a, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, a, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, a, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

static int conf_parse_url(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	const char *host;
	size_t host_len;
	bool plain;

	url_problem p = url_split(value, &plain, &host, &host_len);
	/* The URL is not echoed when it holds an '@' anywhere: what precedes it may be a
	 * password, whatever else is wrong with the URL. */
	if (p == URL_USERINFO)
		return conf_error(ctx, "%s must not contain a user name or password; "
				  "use username and password_command", key);
	if (p != URL_OK && strchr(value, '@'))
		return conf_error(ctx, "invalid URL for %s (not shown: it contains '@'); %s", key,
				  url_problem_text[p]);
	if (p != URL_OK)
		return conf_error(ctx, "invalid URL '%s' for %s; %s", value, key,
				  url_problem_text[p]);
	return conf_parse_string(ctx, key, value, field);
}

/* feed =: an http(s) URL, or a webcal(s) one, which is fetched over https. */
static int conf_parse_feed(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	_cleanup_free_ char *https = NULL;

	if (strncasecmp(value, "webcal://", 9) == 0 || strncasecmp(value, "webcals://", 10) == 0) {
		if (asprintf(&https, "https://%s", strstr(value, "://") + 3) < 0)
			return -ENOMEM;
		value = https;
	}
	return conf_parse_url(ctx, key, value, field);
}

/* Sets ctx->dir to the absolute directory of the file. */
static int conf_dir(conf_ctx *ctx)
{
	const char *slash = strrchr(ctx->path, '/');

	if (ctx->dir)
		return 0;
	if (ctx->path[0] == '/') {
		size_t n = slash == ctx->path ? 1 : (size_t) (slash - ctx->path);

		ctx->dir = strndup(ctx->path, n);
		return ctx->dir ? 0 : -ENOMEM;
	}

	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	if (!cwd)
		return -errno;
	if (!slash) {
		ctx->dir = TAKE_PTR(cwd);
		return 0;
	}
	if (asprintf(&ctx->dir, "%s/%.*s", cwd, (int) (slash - ctx->path), ctx->path) < 0) {
		ctx->dir = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int conf_parse_path(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	char **s = field;
	char *p;

	if (value[0] == '~') {
		if (value[1] != '/')
			return conf_error(ctx, "invalid path '%s' for %s; only '~/' is expanded",
					  value, key);
		const char *home = getenv("HOME");
		if (!home || home[0] != '/')
			return conf_error(ctx, "cannot expand '%s' for %s: $HOME is not set",
					  value, key);
		p = path_join(home, value + 2);
	} else if (value[0] == '/')
		p = strdup(value);
	else {
		int r = conf_dir(ctx);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return conf_error(ctx, "cannot resolve '%s' for %s: %s", value, key,
					  strerror(-r));
		p = path_join(ctx->dir, value);
	}
	if (!p)
		return -ENOMEM;
	*s = p;
	return 0;
}

/* A directory of collections: a path as conf_parse_path() takes it, made plain (no "." or
 * ".." component, no repeated or trailing slash) so that directories compare as strings. */
static int conf_parse_dir(conf_ctx *ctx, const char *key, const char *value, void *field)
{
	_cleanup_free_ char *p = NULL;
	char **s = field;
	size_t w = 0;
	int r = conf_parse_path(ctx, key, value, &p);

	if (r < 0 || !p)
		return r;
	for (size_t i = 0; p[i]; i++) {
		if (p[i] == '/' && w > 0 && p[w - 1] == '/')
			continue;
		p[w++] = p[i];
	}
	if (w > 1 && p[w - 1] == '/')
		w--;
	p[w] = 0;
	if (strstr(p, "/./") || strstr(p, "/../") || (w >= 2 && strcmp(p + w - 2, "/.") == 0) ||
	    (w >= 3 && strcmp(p + w - 3, "/..") == 0))
		return conf_error(ctx, "%s '%s' has a '.' or '..' component; give the directory "
				  "plainly", key, value);
	if (strcmp(p, "/") == 0)
		return conf_error(ctx, "%s may not be the root directory", key);
	*s = TAKE_PTR(p);
	return 0;
}

/* path = KIND/NAME DIR: the directory of one collection. Appended to the account's list. */
static int conf_parse_collection_dir(conf_ctx *ctx, const char *key, const char *value,
				     void *field)
{
	char **list = field;
	size_t n = strcspn(value, " \t");
	const char *dir = value + n + strspn(value + n, " \t");
	_cleanup_free_ char *col = strndup(value, n), *d = NULL, *line = NULL;
	int r;

	if (!col)
		return -ENOMEM;
	if ((strncmp(col, "calendars/", 10) != 0 && strncmp(col, "contacts/", 9) != 0) ||
	    !strchr(col, '/')[1] || strchr(strchr(col, '/') + 1, '/') || !*dir)
		return conf_error(ctx, "%s takes a collection and its directory, such as "
				  "'path = calendars/work ~/.calendars/work'; got '%s'", key,
				  value);
	for (const char *p = *list; p; ) {
		const char *nl = strchr(p, '\n');
		if (!nl)
			break;
		if ((size_t) (nl - p) == n && strncmp(p, col, n) == 0)
			return conf_error(ctx, "%s: %s has a directory already", key, col);
		p = strchr(nl + 1, '\n');
		p = p ? p + 1 : NULL;
	}
	r = conf_parse_dir(ctx, key, dir, &d);
	if (r < 0 || !d)
		return r;
	if (asprintf(&line, "%s%s\n%s\n", *list ? *list : "", col, d) < 0)
		return -ENOMEM;
	free(*list);
	*list = TAKE_PTR(line);
	return 0;
}

/* Decodes a value written in double quotes; anything else is taken literally. */
static int conf_unquote(conf_ctx *ctx, const char *key, const char *v, char **ret)
{
	if (v[0] != '"') {
		*ret = strdup(v);
		return *ret ? 0 : -ENOMEM;
	}

	/* The opening quote alone leaves room for the terminating NUL. */
	_cleanup_free_ char *out = malloc(strlen(v));
	const char *p;
	size_t n = 0;

	if (!out)
		return -ENOMEM;
	for (p = v + 1; *p != '"'; p++) {
		if (*p == '\\') {
			p++;
			if (*p && *p != '"' && *p != '\\')
				return conf_error(ctx, "invalid escape sequence in the value "
						  "of %s; only \\\" and \\\\ are allowed", key);
		}
		if (!*p)
			return conf_error(ctx, "unterminated quoted value for %s", key);
		out[n++] = *p;
	}
	if (p[1])
		return conf_error(ctx, "unexpected text after the closing quote of %s", key);
	out[n] = 0;
	*ret = TAKE_PTR(out);
	return 0;
}

bool ks_config_account_name_is_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > KS_ACCOUNT_NAME_MAX || name[0] == '.')
		return false;
	return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
	       == n;
}

static int config_add_account(ks_config *c, conf_ctx *ctx, const char *name)
{
	if (c->n_accounts == ctx->accounts_cap) {
		size_t ncap = ctx->accounts_cap ? ctx->accounts_cap * 2 : 4;
		ks_account_config *a = reallocarray(c->accounts, ncap, sizeof(*a));
		if (!a)
			return -ENOMEM;
		c->accounts = a;
		bool *b = reallocarray(ctx->broken, ncap, sizeof(*b));
		if (!b)
			return -ENOMEM;
		ctx->broken = b;
		ctx->accounts_cap = ncap;
	}
	ctx->broken[c->n_accounts] = false;

	ks_account_config *a = &c->accounts[c->n_accounts];
	/* past_days and future_days are -1 until set: [general]'s then apply. */
	*a = (ks_account_config) { .name = strdup(name), .line = ctx->line, .past_days = -1,
				   .future_days = -1 };
	if (!a->name)
		return -ENOMEM;
	ctx->account = c->n_accounts++;
	return 0;
}

static int conf_section_header(ks_config *c, conf_ctx *ctx, char *line)
{
	size_t n = strlen(line);

	ctx->section = CONF_SKIP;
	memset(ctx->seen, 0, sizeof(ctx->seen));
	if (line[n - 1] != ']')
		return conf_error(ctx, "invalid section header; expected [general] or "
				  "[account NAME]");
	line[n - 1] = 0;
	char *inner = strip(line + 1);

	if (strcmp(inner, "general") == 0) {
		if (ctx->general_line > 0)
			return conf_error(ctx, "duplicate section [general] (first on line %u)",
					  ctx->general_line);
		ctx->general_line = ctx->line;
		ctx->section = CONF_GENERAL;
		snprintf(ctx->label, sizeof(ctx->label), "general");
		return 0;
	}
	if (strncmp(inner, "account", 7) != 0 || (inner[7] && !strchr(" \t", inner[7])))
		return conf_error(ctx, "unknown section [%s]", inner);

	const char *name = strip(inner + 7);
	if (!*name)
		return conf_error(ctx, "missing account name in [account]");
	if (!ks_config_account_name_is_valid(name))
		return conf_error(ctx, "invalid account name '%s'; use 1 to %u of "
				  "A-Z a-z 0-9 . _ -, not starting with '.'", name,
				  KS_ACCOUNT_NAME_MAX);
	const ks_account_config *old = ks_config_find_account(c, name);
	if (old)
		return conf_error(ctx, "duplicate account '%s' (first on line %u)", name,
				  old->line);

	int r = config_add_account(c, ctx, name);
	if (r < 0)
		return r;
	ctx->section = CONF_ACCOUNT;
	snprintf(ctx->label, sizeof(ctx->label), "account %s", name);
	return 0;
}

static int conf_assignment(ks_config *c, conf_ctx *ctx, char *line)
{
	_cleanup_free_ char *value = NULL;
	int r;

	if (ctx->section == CONF_NONE)
		return conf_error(ctx, "line outside any section; expected [general] or "
				  "[account NAME] first");
	if (ctx->section == CONF_SKIP)
		return 0;

	char *eq = strchr(line, '=');
	if (!eq)
		return conf_error(ctx, "expected 'key = value', a [section] or a comment");
	*eq = 0;
	const char *key = strip(line);
	if (!*key)
		return conf_error(ctx, "missing key before '='");

	size_t i;
	for (i = 0; i < ELEMENTSOF(conf_keys); i++)
		if (conf_keys[i].section == ctx->section && strcmp(conf_keys[i].key, key) == 0)
			break;
	if (i == ELEMENTSOF(conf_keys))
		return conf_error(ctx, "unknown key '%s' in [%s]", key, ctx->label);
	if (ctx->seen[i] > 0 && conf_keys[i].parse != conf_parse_collection_dir)
		return conf_error(ctx, "duplicate key '%s' in [%s] (first on line %u)", key,
				  ctx->label, ctx->seen[i]);
	ctx->seen[i] = ctx->line;

	char *raw = strip(eq + 1);
	/* "username = bob  # work" is the user name "bob  # work": nothing but a 401 would
	 * tell, so it is said here. */
	if (raw[0] != '"' && (strstr(raw, " #") || strstr(raw, "\t#") || strstr(raw, " ;"))) {
		r = conf_warning(ctx, "the value of %s holds '%s': ksync.conf has no comments "
				 "after a value, so it is part of the value; put the comment on a "
				 "line of its own, or the value in double quotes if it belongs there",
				 key, strstr(raw, " ;") && !strstr(raw, " #") ? " ;" : " #");
		if (r < 0)
			return r;
	}
	r = conf_unquote(ctx, key, raw, &value);
	if (r < 0)
		return r;
	if (!*value)
		return conf_error(ctx, "empty value for %s", key);

	char *base = ctx->section == CONF_GENERAL ? (char *) c :
		     (char *) &c->accounts[ctx->account];
	return conf_keys[i].parse(ctx, key, value, base + conf_keys[i].offset);
}

static int conf_parse_text(ks_config *c, conf_ctx *ctx, char *text, size_t size)
{
	char *end = text + size;
	int r;

	for (char *p = text; p < end; ctx->line++) {
		char *nl = memchr(p, '\n', (size_t) (end - p));
		char *eol = nl ? nl : end;
		bool has_nul = memchr(p, 0, (size_t) (eol - p)) != NULL;

		*eol = 0;
		char *line = strip(p);
		p = eol + 1;

		if (has_nul)
			r = conf_error(ctx, "line contains a NUL byte");
		else if (!*line || *line == '#' || *line == ';')
			r = 0;
		else if (*line == '[')
			r = conf_section_header(c, ctx, line);
		else
			r = conf_assignment(c, ctx, line);
		if (r == -ENOMEM)
			return r;
	}
	return 0;
}

static int validate_dirs(ks_config *c, conf_ctx *ctx);

/* The rules that involve more than one key; messages point at the [account] header. */
static int config_validate(ks_config *c, conf_ctx *ctx)
{
	if (!c->conflict)
		c->conflict = KS_CONFLICT_MODE_SERVER_WINS;
	if (!c->collections)
		c->collections = KS_NEW_COLLECTIONS_ALL;
	for (size_t i = 0; i < c->n_accounts; i++) {
		ks_account_config *a = &c->accounts[i];
		const char *host;
		size_t host_len;
		bool plain;
		int r = 0;

		if (ctx->broken && ctx->broken[i])
			continue;
		ctx->line = a->line;
		ctx->section = CONF_ACCOUNT;
		ctx->account = i;
		if (!a->conflict)
			a->conflict = c->conflict;
		if (!a->collections)
			a->collections = c->collections;
		if (!a->timeout)
			a->timeout = c->timeout;
		if (!a->password_timeout)
			a->password_timeout = c->password_timeout;
		if (a->past_days < 0)
			a->past_days = c->past_days;
		if (a->future_days < 0)
			a->future_days = c->future_days;
		if (a->feed && (a->url || a->provider))
			r = conf_error(ctx, "account '%s': feed (a calendar subscription) and %s "
				       "exclude each other", a->name, a->url ? "url" : "provider");
		else if (a->feed && !(a->url = strdup(a->feed)))
			return -ENOMEM;
		if (r == -ENOMEM)
			return r;
		if (!a->url && a->provider)
			for (size_t j = 0; j < ELEMENTSOF(providers); j++)
				if (strcmp(a->provider, providers[j].name) == 0) {
					a->url = strdup(providers[j].url);
					if (!a->url)
						return -ENOMEM;
				}
		if (!a->url && r >= 0)
			r = conf_error(ctx, "account '%s' needs url, provider or feed", a->name);
		else if (url_split(a->url, &plain, &host, &host_len) == URL_OK && plain &&
			 !a->allow_insecure_http && !host_is_loopback(host, host_len))
			r = conf_error(ctx, "account '%s': plain http:// to '%.*s' would send the "
				       "password unencrypted; use https:// or set "
				       "allow_insecure_http = true", a->name, (int) host_len, host);
		if (r == -ENOMEM)
			return r;

		if (!!a->password_command + !!a->password_file + !!a->password_secret > 1)
			r = conf_error(ctx, "account '%s': password_command, password_file and "
				       "password_secret are mutually exclusive", a->name);
		if (r == -ENOMEM)
			return r;
	}
	return validate_dirs(c, ctx);
}

/* Whether directory a is b or lies below it. */
static bool dir_within(const char *a, const char *b)
{
	size_t n = strlen(b);
	return strncmp(a, b, n) == 0 && (a[n] == 0 || a[n] == '/');
}

typedef struct place {
	size_t account;
	const char *kind;	/* "calendars" or "contacts" */
	const char *col;	/* "KIND/NAME" of a path = line (not terminated), or NULL */
	size_t col_len;
	const char *dir;
	size_t dir_len;
} place;

/* Two places for files may not overlap, or one collection's files would be another's: the
 * directories of accounts and kinds are apart, and a collection's own directory is apart
 * from every other, or inside its own account's directory of its kind. */
static int validate_dirs(ks_config *c, conf_ctx *ctx)
{
	_cleanup_free_ place *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	for (size_t i = 0; i < c->n_accounts; i++) {
		ks_account_config *a = &c->accounts[i];
		if (ctx->broken && ctx->broken[i])
			continue;
		const char *roots[2] = { a->calendars_path, a->contacts_path };
		for (size_t k = 0; k < 2; k++) {
			if (!roots[k])
				continue;
			place *nv = ks_array_grow(v, &cap, n, sizeof(*v));
			if (!nv)
				return -ENOMEM;
			v = nv;
			v[n++] = (place) { .account = i, .kind = k ? "contacts" : "calendars",
					      .dir = roots[k], .dir_len = strlen(roots[k]) };
		}
		for (const char *p = a->paths; p && *p; ) {
			const char *nl = strchr(p, '\n'), *d = nl + 1, *end = strchr(d, '\n');
			place *nv = ks_array_grow(v, &cap, n, sizeof(*v));
			if (!nv)
				return -ENOMEM;
			v = nv;
			v[n++] = (place) { .account = i, .kind = p[1] == 'a' ? "calendars" :
					      "contacts", .col = p, .col_len = (size_t) (nl - p),
					      .dir = d, .dir_len = (size_t) (end - d) };
			p = end + 1;
		}
	}
	for (size_t i = 0; i < n && r != -ENOMEM; i++)
		for (size_t j = 0; j < n && r != -ENOMEM; j++) {
			_cleanup_free_ char *a = strndup(v[i].dir, v[i].dir_len);
			_cleanup_free_ char *b = strndup(v[j].dir, v[j].dir_len);
			if (!a || !b)
				return -ENOMEM;
			if (i == j || !dir_within(a, b) || (i < j && strcmp(a, b) == 0))
				continue;
			/* A collection's directory inside its own account's directory of its
			 * kind: the name it takes there is checked when it is used. */
			if (v[i].col && !v[j].col && v[i].account == v[j].account &&
			    strcmp(v[i].kind, v[j].kind) == 0 && strcmp(a, b) != 0)
				continue;
			ctx->line = c->accounts[v[i].account].line;
			ctx->section = CONF_ACCOUNT;
			ctx->account = v[i].account;
			r = conf_error(ctx, "account '%s': the directory '%s' of %s%.*s %s '%s' "
				       "of %s%.*s in account '%s'; the files of two collections would "
				       "mix. Give each its own directory",
				       c->accounts[v[i].account].name, a,
				       v[i].col ? "" : v[i].kind, (int) v[i].col_len,
				       v[i].col ? v[i].col : "",
				       strcmp(a, b) == 0 ? "is also" : "lies inside", b,
				       v[j].col ? "" : v[j].kind, (int) v[j].col_len,
				       v[j].col ? v[j].col : "", c->accounts[v[j].account].name);
		}
	return r == -ENOMEM ? r : 0;
}

int ks_config_read_file(const char *path, ks_buf *b)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	int r = 0;

	if (fd < 0)
		return -errno;
	b->max = KS_CONFIG_MAX_SIZE;
	for (;;) {
		char chunk[4096];
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		r = ks_buf_append(b, chunk, (size_t) n);
		if (r < 0)
			break;
	}
	(void) close(fd);
	return r;
}

static int config_fail(conf_ctx *ctx, int r, char **reterr_msg)
{
	if (reterr_msg)
		*reterr_msg = r == -ENOMEM ? NULL : ks_buf_steal(&ctx->errors);
	return r;
}

/* Leaves the accounts with errors out of c, naming them in c->invalid_accounts. */
static int config_drop_broken(ks_config *c, const conf_ctx *ctx)
{
	size_t n = 0, kept = 0;

	for (size_t i = 0; i < c->n_accounts; i++)
		n += ctx->broken[i];
	if (n == 0)
		return 0;
	c->invalid_accounts = calloc(n + 1, sizeof(char *));
	if (!c->invalid_accounts)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < c->n_accounts; i++) {
		if (!ctx->broken[i]) {
			c->accounts[kept++] = c->accounts[i];
			continue;
		}
		c->invalid_accounts[n++] = TAKE_PTR(c->accounts[i].name);
		ks_account_config_done(&c->accounts[i]);
	}
	c->n_accounts = kept;
	return 0;
}

int ks_config_parse_text(const char *path, ks_buf *text, bool partial, ks_config **ret,
			 char **reterr_msg)
{
	_cleanup_(conf_ctx_done) conf_ctx ctx = { .path = path, .line = 1 };
	_cleanup_(ks_config_freep) ks_config *c = NULL;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return config_fail(&ctx, -ENOMEM, reterr_msg);
	c->interval = CONFIG_DEFAULT_INTERVAL;
	c->timeout = CONFIG_DEFAULT_TIMEOUT;
	c->password_timeout = KS_SECRET_DEFAULT_TIMEOUT;
	c->notifications = true;
	c->path = strdup(path);
	if (!c->path)
		return config_fail(&ctx, -ENOMEM, reterr_msg);
	if (text->len > 0) {
		r = conf_parse_text(c, &ctx, text->data, text->len);
		if (r < 0)
			return config_fail(&ctx, r, reterr_msg);
	}

	/* Accounts with errors are not validated: combinations of half-parsed settings would
	 * mostly report the same typos again. */
	r = config_validate(c, &ctx);
	if (r < 0)
		return config_fail(&ctx, r, reterr_msg);

	unsigned n = ctx.n_errors;
	if (n > 0) {
		if (n > CONFIG_MAX_ERRORS) {
			ctx.n_errors = 0;
			ctx.line = 0;
			ctx.section = CONF_NONE;
			if (conf_error(&ctx, "%u errors; only the first %d are shown", n,
				       CONFIG_MAX_ERRORS) == -ENOMEM)
				return config_fail(&ctx, -ENOMEM, reterr_msg);
		}
		if (!partial)
			return config_fail(&ctx, -EINVAL, reterr_msg);
		r = config_drop_broken(c, &ctx);
		if (r < 0)
			return config_fail(&ctx, r, reterr_msg);
		c->errors = ks_buf_steal(&ctx.errors);
		if (!c->errors)
			return config_fail(&ctx, -ENOMEM, reterr_msg);
	}
	if (ctx.warnings.len > 0 && !(c->warnings = ks_buf_steal(&ctx.warnings)))
		return config_fail(&ctx, -ENOMEM, reterr_msg);

	*ret = TAKE_PTR(c);
	return (int) KS_MIN(n, (unsigned) INT_MAX);
}

static int config_load(const char *path, bool partial, ks_config **ret, char **reterr_msg)
{
	_cleanup_(conf_ctx_done) conf_ctx ctx = { .path = path, .line = 1 };
	_cleanup_(ks_buf_done) ks_buf text = {};
	int r;

	assert(path && ret);

	r = ks_config_read_file(path, &text);
	if (r < 0) {
		int k;

		ctx.line = 0;
		if (r == -EFBIG) {
			k = conf_error(&ctx, "file is larger than %d bytes", KS_CONFIG_MAX_SIZE);
			r = -EINVAL;
		} else
			k = conf_error(&ctx, "%s", strerror(-r));
		return config_fail(&ctx, k == -ENOMEM ? k : r, reterr_msg);
	}
	return ks_config_parse_text(path, &text, partial, ret, reterr_msg);
}

int ks_config_load(const char *path, ks_config **ret, char **reterr_msg)
{
	return config_load(path, false, ret, reterr_msg);
}

int ks_config_load_partial(const char *path, ks_config **ret, char **reterr_msg)
{
	return config_load(path, true, ret, reterr_msg);
}

void ks_account_config_done(ks_account_config *a)
{
	free(a->name);
	free(a->provider);
	free(a->url);
	free(a->username);
	free(a->password_command);
	free(a->password_file);
	free(a->password_secret);
	free(a->ca_file);
	free(a->include);
	free(a->exclude);
	free(a->feed);
	free(a->calendars_path);
	free(a->contacts_path);
	free(a->paths);
	*a = (ks_account_config) {};
}

int ks_account_config_copy(const ks_account_config *a, ks_account_config *ret)
{
	ks_account_config c = *a;
	char **fields[] = { &c.name, &c.provider, &c.url, &c.username, &c.password_command,
			    &c.password_file, &c.password_secret, &c.ca_file, &c.include,
			    &c.exclude, &c.feed, &c.calendars_path, &c.contacts_path, &c.paths };

	for (size_t i = 0; i < ELEMENTSOF(fields); i++)
		*fields[i] = NULL;
	const char *const src[] = { a->name, a->provider, a->url, a->username,
				    a->password_command, a->password_file, a->password_secret,
				    a->ca_file, a->include, a->exclude, a->feed, a->calendars_path,
				    a->contacts_path, a->paths };
	for (size_t i = 0; i < ELEMENTSOF(fields); i++)
		if (src[i] && !(*fields[i] = strdup(src[i]))) {
			ks_account_config_done(&c);
			return -ENOMEM;
		}
	*ret = c;
	return 0;
}

ks_config *ks_config_free(ks_config *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_accounts; i++)
		ks_account_config_done(&c->accounts[i]);
	free(c->accounts);
	free(c->path);
	free(c->errors);
	free(c->warnings);
	for (size_t i = 0; c->invalid_accounts && c->invalid_accounts[i]; i++)
		free(c->invalid_accounts[i]);
	free(c->invalid_accounts);
	free(c);
	return NULL;
}

const ks_account_config *ks_config_find_account(const ks_config *c, const char *name)
{
	assert(c && name);
	for (size_t i = 0; i < c->n_accounts; i++)
		if (strcmp(c->accounts[i].name, name) == 0)
			return &c->accounts[i];
	return NULL;
}

int ks_config_default_path(char **ret)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *p;
	int r;

	assert(ret);
	/* The XDG base directory spec says relative values are to be ignored. */
	if (xdg && xdg[0] == '/')
		r = asprintf(&p, "%s/ksync/ksync.conf", xdg);
	else if (home && home[0] == '/')
		r = asprintf(&p, "%s/.config/ksync/ksync.conf", home);
	else
		return -ENOENT;
	if (r < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* ---- providers ---------------------------------------------------------------------------- */

const char *ks_config_provider_url(const char *provider)
{
	if (!provider)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(providers); i++)
		if (strcmp(provider, providers[i].name) == 0)
			return providers[i].url;
	return NULL;
}


int ks_config_split_patterns(const char *list, char ***ret, size_t *ret_n)
{
	char **out = NULL;
	size_t n = 0;
	int r = 0;

	for (const char *p = list; r == 0;) {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		const char *b = p;

		while (b < end && strchr(" \t", *b))
			b++;
		while (end > b && strchr(" \t", end[-1]))
			end--;
		if (end == b)
			r = -EINVAL;
		else if (ret) {
			char **grown = realloc(out, (n + 2) * sizeof(*out));
			if (!grown || !(grown[n] = strndup(b, (size_t) (end - b)))) {
				out = grown ? grown : out;
				r = -ENOMEM;
				break;
			}
			out = grown;
			out[++n] = NULL;
		} else
			n++;
		if (!comma)
			break;
		p = comma + 1;
	}
	if (r < 0) {
		ks_config_patterns_free(out);
		return r;
	}
	if (ret)
		*ret = out;
	*ret_n = n;
	return 0;
}

void ks_config_patterns_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* Whether one of the patterns of list matches path ("calendars/NAME"), NAME or displayname. */
static bool patterns_match(const char *list, const char *path, const char *displayname)
{
	_cleanup_free_ char *copy = strdup(list);
	const char *slash = strchr(path, '/');
	const char *names[] = { path, slash ? slash + 1 : path, displayname };
	char *save = NULL;

	if (!copy)
		return false;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end = tok + strlen(tok);

		while (*tok == ' ' || *tok == '\t')
			tok++;
		while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		for (size_t i = 0; i < ELEMENTSOF(names); i++)
			if (names[i] && fnmatch(tok, names[i], 0) == 0)
				return true;
	}
	return false;
}

int ks_account_collection_rule(const ks_account_config *a, const char *path,
			       const char *displayname)
{
	if (a->exclude && patterns_match(a->exclude, path, displayname))
		return 0;
	if (a->include && patterns_match(a->include, path, displayname))
		return 1;
	return -1;
}

int ks_account_collection_dir(const ks_account_config *a, const char *path, char **ret)
{
	const char *slash = strchr(path, '/');
	size_t n = strlen(path);
	bool card;

	*ret = NULL;
	if (!slash || !slash[1] || strchr(slash + 1, '/'))
		return -EINVAL;
	if ((size_t) (slash - path) == 9 && strncmp(path, "calendars", 9) == 0)
		card = false;
	else if ((size_t) (slash - path) == 8 && strncmp(path, "contacts", 8) == 0)
		card = true;
	else
		return -EINVAL;
	for (const char *p = a->paths; p && *p; ) {
		const char *nl = strchr(p, '\n'), *d = nl + 1, *end = strchr(d, '\n');
		if ((size_t) (nl - p) == n && strncmp(p, path, n) == 0) {
			*ret = strndup(d, (size_t) (end - d));
			return *ret ? 0 : -ENOMEM;
		}
		p = end + 1;
	}
	const char *root = card ? a->contacts_path : a->calendars_path;
	if (root && !(*ret = path_join(root, slash + 1)))
		return -ENOMEM;
	return 0;
}
