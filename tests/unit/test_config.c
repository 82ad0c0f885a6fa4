/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf_p.h"
#include "ksync.h"
#include "macro.h"

/* Every test runs in a fresh directory that also serves as $HOME and $XDG_CONFIG_HOME's
 * parent, so nothing outside it is ever read or written. */
static char tmpdir[] = "/tmp/ksync-test-config-XXXXXX";
static char home[sizeof(tmpdir) + 8];
static char old_cwd[4096];

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
	/* A read-only file from an earlier case must not stop the rewrite. */
	(void) unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t) len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static void write_conf(const char *text)
{
	write_file("ksync.conf", text, strlen(text), 0644);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	char xdg[sizeof(tmpdir) + 8];

	if (!getcwd(old_cwd, sizeof(old_cwd)) || !mkdtemp(tmpdir))
		return -1;
	snprintf(home, sizeof(home), "%s/home", tmpdir);
	snprintf(xdg, sizeof(xdg), "%s/xdg", tmpdir);
	if (mkdir(home, 0700) < 0 || mkdir(xdg, 0700) < 0)
		return -1;
	if (setenv("HOME", home, 1) < 0 || setenv("XDG_CONFIG_HOME", xdg, 1) < 0)
		return -1;
	return chdir(tmpdir);
}

static int teardown(void **state)
{
	if (chdir(old_cwd) < 0)
		return -1;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Replaces @DIR@ with the test directory and @HOME@ with $HOME. */
static char *subst(const char *s)
{
	ks_buf b = {};

	while (*s) {
		if (strncmp(s, "@DIR@", 5) == 0) {
			assert_int_equal(ks_buf_puts(&b, tmpdir), 0);
			s += 5;
		} else if (strncmp(s, "@HOME@", 6) == 0) {
			assert_int_equal(ks_buf_puts(&b, home), 0);
			s += 6;
		} else
			assert_int_equal(ks_buf_append(&b, s++, 1), 0);
	}
	return ks_buf_steal(&b);
}

static void check_str(const char *name, const char *field, const char *got, const char *want)
{
	_cleanup_free_ char *w = want ? subst(want) : NULL;

	if (!got && !w)
		return;
	if (!got || !w || strcmp(got, w) != 0)
		fail_msg("case '%s', %s: got '%s', want '%s'", name, field, got ? got : "(null)",
			 w ? w : "(null)");
}

/* ---- valid files -------------------------------------------------------------------------- */

#define NAME64 "abcdefghij" "abcdefghij" "abcdefghij" "abcdefghij" "abcdefghij" "abcdefghij" "abcd"

static const struct valid_case {
	const char *name;
	const char *text;
	unsigned interval;
	size_t n_accounts;
	const char *account;	/* the account whose fields follow; NULL when there is none */
	const char *provider, *url, *username, *password_command, *password_file, *ca_file;
	bool allow_insecure_http;
	unsigned account_interval;
} valid_cases[] = {
	{ .name = "empty file", .text = "", .interval = 900 },
	{ .name = "only comments", .text = "# nothing\n; here\n\n   \n", .interval = 900 },
	{ .name = "full",
	  .text = "# ksync configuration\n"
		  "[general]\n"
		  "interval = 20min\n"
		  "\n"
		  "[account work]\n"
		  "url = https://dav.example.com/remote.php/dav/\n"
		  "username = jdoe\n"
		  "password_command = pass show dav/work\n"
		  "ca_file = /etc/ssl/private-ca.pem\n"
		  "allow_insecure_http = false\n"
		  "interval = 1h\n"
		  "\n"
		  "[account ik]\n"
		  "provider = infomaniak\n"
		  "username = AB12345\n"
		  "password_file = ~/.ksync-pw\n",
	  .interval = 1200, .n_accounts = 2, .account = "work",
	  .url = "https://dav.example.com/remote.php/dav/", .username = "jdoe",
	  .password_command = "pass show dav/work", .ca_file = "/etc/ssl/private-ca.pem",
	  .account_interval = 3600 },
	{ .name = "full, second account",
	  .text = "[general]\ninterval = 20min\n[account work]\nurl = https://dav.example.com/\n"
		  "[account ik]\nprovider = infomaniak\nusername = AB12345\n"
		  "password_file = ~/.ksync-pw\nallow_insecure_http = true\ninterval = 90s\n",
	  .interval = 1200, .n_accounts = 2, .account = "ik", .provider = "infomaniak",
	  .url = "https://sync.infomaniak.com/", .username = "AB12345",
	  .password_file = "@HOME@/.ksync-pw", .allow_insecure_http = true,
	  .account_interval = 90 },
	{ .name = "infomaniak provider fills url",
	  .text = "[account ik]\nprovider = infomaniak\nusername = AB12345\n"
		  "password_command = secret-tool lookup ksync infomaniak\n",
	  .interval = 900, .n_accounts = 1, .account = "ik", .provider = "infomaniak",
	  .url = "https://sync.infomaniak.com/", .username = "AB12345",
	  .password_command = "secret-tool lookup ksync infomaniak" },
	{ .name = "url wins over provider",
	  .text = "[account ik]\nprovider = infomaniak\nurl = https://other.example/dav/\n",
	  .interval = 900, .n_accounts = 1, .account = "ik", .provider = "infomaniak",
	  .url = "https://other.example/dav/" },
	{ .name = "comments, indentation, CRLF, no final newline",
	  .text = "; leading comment\r\n"
		  "  [ general ]  \r\n"
		  "\t# indented comment\r\n"
		  "\tinterval=120   \r\n"
		  "[account   a.b_c-1  ]\r\n"
		  "  url   =   https://h.example/   \r\n"
		  "username = u # not a comment",
	  .interval = 120, .n_accounts = 1, .account = "a.b_c-1", .url = "https://h.example/",
	  .username = "u # not a comment" },
	{ .name = "quoted values",
	  .text = "[account q]\n"
		  "url = \"https://h.example/\"\n"
		  "username = \"  spaced user  \"\n"
		  "password_command = \"printf '%s' \\\"a\\\\b\\\"\"\n",
	  .interval = 900, .n_accounts = 1, .account = "q", .url = "https://h.example/",
	  .username = "  spaced user  ", .password_command = "printf '%s' \"a\\b\"" },
	{ .name = "quotes inside an unquoted value are literal",
	  .text = "[account q]\nurl = https://h.example/\n"
		  "password_command = secret-tool lookup \"ksync\" 'x\\y'\n",
	  .interval = 900, .n_accounts = 1, .account = "q", .url = "https://h.example/",
	  .password_command = "secret-tool lookup \"ksync\" 'x\\y'" },
	{ .name = "http to 127.0.0.1 with port",
	  .text = "[account t]\nurl = http://127.0.0.1:5232/\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "http://127.0.0.1:5232/" },
	{ .name = "http to elsewhere in 127/8",
	  .text = "[account t]\nurl = http://127.200.1.9/dav\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "http://127.200.1.9/dav" },
	{ .name = "http to localhost",
	  .text = "[account t]\nurl = HTTP://LocalHost:8000\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "HTTP://LocalHost:8000" },
	{ .name = "http to [::1]",
	  .text = "[account t]\nurl = http://[::1]:8080/dav/\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "http://[::1]:8080/dav/" },
	{ .name = "http to 127.0.0.1 written as IPv6",
	  .text = "[account t]\nurl = http://[::ffff:127.0.0.1]:5232/\n",
	  .interval = 900, .n_accounts = 1, .account = "t",
	  .url = "http://[::ffff:127.0.0.1]:5232/" },
	{ .name = "http elsewhere allowed with the flag",
	  .text = "[account t]\nurl = http://dav.lan/\nallow_insecure_http = yes\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "http://dav.lan/",
	  .allow_insecure_http = true },
	{ .name = "https IPv6 host",
	  .text = "[account t]\nurl = https://[2001:db8::1]/\n",
	  .interval = 900, .n_accounts = 1, .account = "t", .url = "https://[2001:db8::1]/" },
	{ .name = "tilde expansion",
	  .text = "[account p]\nurl = https://h.example/\npassword_file = ~/secrets/pw\n"
		  "ca_file = ~/ca.pem\n",
	  .interval = 900, .n_accounts = 1, .account = "p", .url = "https://h.example/",
	  .password_file = "@HOME@/secrets/pw", .ca_file = "@HOME@/ca.pem" },
	{ .name = "relative paths are relative to the file",
	  .text = "[account p]\nurl = https://h.example/\npassword_file = pw\n"
		  "ca_file = certs/ca.pem\n",
	  .interval = 900, .n_accounts = 1, .account = "p", .url = "https://h.example/",
	  .password_file = "@DIR@/pw", .ca_file = "@DIR@/certs/ca.pem" },
	{ .name = "account interval 0 inherits",
	  .text = "[general]\ninterval = 60\n[account z]\nurl = https://h.example/\n"
		  "interval = 0\n",
	  .interval = 60, .n_accounts = 1, .account = "z", .url = "https://h.example/" },
	{ .name = "longest account name",
	  .text = "[account " NAME64 "]\nurl = https://h.example/\n",
	  .interval = 900, .n_accounts = 1, .account = NAME64, .url = "https://h.example/" },
	{ .name = "both password keys in different accounts",
	  .text = "[account a]\nurl = https://h.example/\npassword_command = x\n"
		  "[account b]\nurl = https://h.example/\npassword_file = /pw\n",
	  .interval = 900, .n_accounts = 2, .account = "b", .url = "https://h.example/",
	  .password_file = "/pw" },
};

static void test_valid(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(valid_cases); i++) {
		const struct valid_case *t = &valid_cases[i];
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;
		int r;

		write_conf(t->text);
		r = ks_config_load("ksync.conf", &c, &err);
		if (r < 0)
			fail_msg("case '%s': %d: %s", t->name, r, err ? err : "(no message)");
		assert_null(err);
		assert_non_null(c);
		check_str(t->name, "path", c->path, "ksync.conf");
		if (c->interval != t->interval)
			fail_msg("case '%s': interval %u, want %u", t->name, c->interval,
				 t->interval);
		if (c->n_accounts != t->n_accounts)
			fail_msg("case '%s': %zu accounts, want %zu", t->name, c->n_accounts,
				 t->n_accounts);
		if (t->account) {
			const ks_account_config *a = ks_config_find_account(c, t->account);

			if (!a)
				fail_msg("case '%s': no account '%s'", t->name, t->account);
			check_str(t->name, "provider", a->provider, t->provider);
			check_str(t->name, "url", a->url, t->url);
			check_str(t->name, "username", a->username, t->username);
			check_str(t->name, "password_command", a->password_command,
				  t->password_command);
			check_str(t->name, "password_file", a->password_file, t->password_file);
			check_str(t->name, "ca_file", a->ca_file, t->ca_file);
			if (a->allow_insecure_http != t->allow_insecure_http)
				fail_msg("case '%s': allow_insecure_http", t->name);
			if (a->interval != t->account_interval)
				fail_msg("case '%s': account interval %u, want %u", t->name,
					 a->interval, t->account_interval);
		}
		assert_null(ks_config_free(c));
	}
}

static const struct {
	const char *text;
	unsigned seconds;
} durations[] = {
	{ "60", 60 }, { "90s", 90 }, { "90 s", 90 }, { "15min", 900 }, { "2 min", 120 },
	{ "1h", 3600 }, { "24h", 86400 }, { "0900", 900 }, { "\"5min\"", 300 },
	{ "4294967295", 4294967295u }, { "1193046h", 1193046u * 3600u },
};

static void test_durations(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(durations); i++) {
		char text[128];
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		snprintf(text, sizeof(text), "[general]\ninterval = %s\n[account a]\n"
			 "url = https://h.example/\ninterval = %s\n", durations[i].text,
			 durations[i].text);
		write_conf(text);
		if (ks_config_load("ksync.conf", &c, &err) < 0)
			fail_msg("duration '%s': %s", durations[i].text, err);
		assert_int_equal(c->interval, durations[i].seconds);
		assert_int_equal(c->accounts[0].interval, durations[i].seconds);
		ks_config_free(c);
	}
}

static const struct {
	const char *text;
	bool value;
} booleans[] = {
	{ "true", true }, { "yes", true }, { "on", true }, { "1", true }, { "TRUE", true },
	{ "Yes", true }, { "false", false }, { "no", false }, { "off", false }, { "0", false },
	{ "Off", false }, { "\"on\"", true },
};

static void test_booleans(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(booleans); i++) {
		char text[128];
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		/* A loopback URL, so that false is valid too. */
		snprintf(text, sizeof(text), "[account a]\nurl = http://127.0.0.1/\n"
			 "allow_insecure_http = %s\n", booleans[i].text);
		write_conf(text);
		if (ks_config_load("ksync.conf", &c, &err) < 0)
			fail_msg("boolean '%s': %s", booleans[i].text, err);
		assert_int_equal(c->accounts[0].allow_insecure_http, booleans[i].value);
		ks_config_free(c);
	}
}

/* ---- errors ------------------------------------------------------------------------------- */

#define URL "url = https://h.example/\n"

static const struct {
	const char *name;
	const char *text;
	const char *errors;
} error_cases[] = {
	{ "unknown key",
	  "[general]\ninterval = 60\n\n[account work]\n" URL "username = u\n"
	  "pasword_command = pass\n",
	  "ksync.conf:7: unknown key 'pasword_command' in [account work]" },
	{ "unknown key in general",
	  "[general]\nintervall = 60\n",
	  "ksync.conf:2: unknown key 'intervall' in [general]" },
	{ "account key in general",
	  "[general]\nurl = https://h.example/\n",
	  "ksync.conf:2: unknown key 'url' in [general]" },
	{ "keys are lowercase",
	  "[account a]\nURL = https://h.example/\n",
	  "ksync.conf:2: unknown key 'URL' in [account a]" },
	{ "unknown section, its keys are not checked",
	  "# x\n\n[genral]\ninterval = 60\nnonsense = 1\n",
	  "ksync.conf:3: unknown section [genral]" },
	{ "unknown section prefixed with account",
	  "[accounts a]\n",
	  "ksync.conf:1: unknown section [accounts a]" },
	{ "section names are lowercase",
	  "[General]\n",
	  "ksync.conf:1: unknown section [General]" },
	{ "empty section",
	  "[]\n",
	  "ksync.conf:1: unknown section []" },
	{ "unclosed section header",
	  "[general\ninterval = 60\n",
	  "ksync.conf:1: invalid section header; expected [general] or [account NAME]" },
	{ "line outside any section",
	  "interval = 60\n[general]\n",
	  "ksync.conf:1: line outside any section; expected [general] or [account NAME] first" },
	{ "not an assignment",
	  "[general]\ninterval 60\n",
	  "ksync.conf:2: expected 'key = value', a [section] or a comment" },
	{ "missing key",
	  "[general]\n = 60\n",
	  "ksync.conf:2: missing key before '='" },
	{ "empty value",
	  "[account a]\n" URL "username =\n",
	  "ksync.conf:3: empty value for username" },
	{ "empty quoted value",
	  "[account a]\n" URL "username = \"\"\n",
	  "ksync.conf:3: empty value for username" },
	{ "unterminated quote",
	  "[account a]\n" URL "username = \"abc\n",
	  "ksync.conf:3: unterminated quoted value for username" },
	{ "quote escaped at the end",
	  "[account a]\n" URL "username = \"abc\\\"\n",
	  "ksync.conf:3: unterminated quoted value for username" },
	{ "backslash at the end",
	  "[account a]\n" URL "username = \"abc\\\n",
	  "ksync.conf:3: unterminated quoted value for username" },
	{ "invalid escape",
	  "[account a]\n" URL "username = \"a\\nb\"\n",
	  "ksync.conf:3: invalid escape sequence in the value of username; "
	  "only \\\" and \\\\ are allowed" },
	{ "text after the closing quote",
	  "[account a]\n" URL "username = \"a\" b\n",
	  "ksync.conf:3: unexpected text after the closing quote of username" },
	{ "duplicate key",
	  "[account a]\n" URL "username = x\n\nusername = y\n",
	  "ksync.conf:5: duplicate key 'username' in [account a] (first on line 3)" },
	{ "duplicate key in general",
	  "[general]\ninterval = 60\ninterval = 120\n",
	  "ksync.conf:3: duplicate key 'interval' in [general] (first on line 2)" },
	{ "same key in two accounts is fine, twice in one is not",
	  "[account a]\n" URL "[account b]\n" URL URL,
	  "ksync.conf:5: duplicate key 'url' in [account b] (first on line 4)" },
	{ "duplicate general",
	  "[general]\n[general]\ninterval = 60\n",
	  "ksync.conf:2: duplicate section [general] (first on line 1)" },
	{ "duplicate account",
	  "[account a]\n" URL "[account a]\n" URL,
	  "ksync.conf:3: duplicate account 'a' (first on line 1)" },
	{ "missing account name",
	  "[account]\n[account   ]\n",
	  "ksync.conf:1: missing account name in [account]\n"
	  "ksync.conf:2: missing account name in [account]" },
	{ "invalid account names",
	  "[account a b]\n[account .hidden]\n[account a/b]\n[account é]\n"
	  "[account " NAME64 "x]\n",
	  "ksync.conf:1: invalid account name 'a b'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
	  "not starting with '.'\n"
	  "ksync.conf:2: invalid account name '.hidden'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
	  "not starting with '.'\n"
	  "ksync.conf:3: invalid account name 'a/b'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
	  "not starting with '.'\n"
	  "ksync.conf:4: invalid account name 'é'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
	  "not starting with '.'\n"
	  "ksync.conf:5: invalid account name '" NAME64 "x'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
	  "not starting with '.'" },
	{ "invalid boolean",
	  "[account a]\n" URL "allow_insecure_http = maybe\n",
	  "ksync.conf:3: invalid boolean 'maybe' for allow_insecure_http" },
	{ "unknown provider",
	  "[account a]\nprovider = fastmail\n",
	  "ksync.conf:2: unknown provider 'fastmail'; known providers: infomaniak" },
	{ "invalid urls",
	  "[account a]\nurl = ftp://h.example/\n"
	  "[account b]\nurl = https:///path\n"
	  "[account c]\nurl = https://h.example/a b\n"
	  "[account d]\nurl = https://h.example:0/\n"
	  "[account e]\nurl = https://h.example:http/\n"
	  "[account f]\nurl = https://[::1/\n"
	  "[account g]\nurl = https://[not-ipv6]/\n"
	  "[account h]\nurl = h.example\n"
	  "[account i]\nurl = https://h.example:65536/\n"
	  "[account j]\nurl = https://h.example:/\n",
	  "ksync.conf:2: invalid URL 'ftp://h.example/' for url; it must start with http:// "
	  "or https://\n"
	  "ksync.conf:4: invalid URL 'https:///path' for url; the host is missing or malformed\n"
	  "ksync.conf:6: invalid URL 'https://h.example/a b' for url; it contains spaces or "
	  "control characters\n"
	  "ksync.conf:8: invalid URL 'https://h.example:0/' for url; the port is malformed\n"
	  "ksync.conf:10: invalid URL 'https://h.example:http/' for url; the port is malformed\n"
	  "ksync.conf:12: invalid URL 'https://[::1/' for url; the host is missing or malformed\n"
	  "ksync.conf:14: invalid URL 'https://[not-ipv6]/' for url; the host is missing or "
	  "malformed\n"
	  "ksync.conf:16: invalid URL 'h.example' for url; it must start with http:// or "
	  "https://\n"
	  "ksync.conf:18: invalid URL 'https://h.example:65536/' for url; the port is malformed\n"
	  "ksync.conf:20: invalid URL 'https://h.example:/' for url; the port is malformed" },
	{ "credentials in the url are refused and not echoed",
	  "[account a]\nurl = https://me:hunter2@h.example/\n",
	  "ksync.conf:2: url must not contain a user name or password; "
	  "use username and password_command" },
	{ "username with a colon",
	  "[account a]\n" URL "username = a:b\n",
	  "ksync.conf:3: username must not contain ':'" },
	{ "invalid durations",
	  "[account a]\ninterval = abc\n[account b]\ninterval = 15m\n[account c]\ninterval = -5\n"
	  "[account d]\ninterval = 1.5h\n[account e]\ninterval = 4294967296\n"
	  "[account f]\ninterval = 1193047h\n[account g]\ninterval = min\n",
	  "ksync.conf:2: invalid duration 'abc' for interval; use seconds, or a number followed "
	  "by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:4: invalid duration '15m' for interval; use seconds, or a number followed "
	  "by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:6: invalid duration '-5' for interval; use seconds, or a number followed "
	  "by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:8: invalid duration '1.5h' for interval; use seconds, or a number followed "
	  "by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:10: invalid duration '4294967296' for interval; use seconds, or a number "
	  "followed by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:12: invalid duration '1193047h' for interval; use seconds, or a number "
	  "followed by s, min, h or d (e.g. 15min)\n"
	  "ksync.conf:14: invalid duration 'min' for interval; use seconds, or a number followed "
	  "by s, min, h or d (e.g. 15min)" },
	{ "interval too short",
	  "[general]\ninterval = 30s\n[account a]\n" URL "interval = 59\n",
	  "ksync.conf:2: interval '30s' is too short; the minimum is 60s\n"
	  "ksync.conf:5: interval '59' is too short; the minimum is 60s" },
	{ "general interval 0",
	  "[general]\ninterval = 0\n",
	  "ksync.conf:2: interval '0' is too short; the minimum is 60s" },
	{ "tilde of another user",
	  "[account a]\n" URL "password_file = ~root/pw\nca_file = ~\n",
	  "ksync.conf:3: invalid path '~root/pw' for password_file; only '~/' is expanded\n"
	  "ksync.conf:4: invalid path '~' for ca_file; only '~/' is expanded" },
	{ "neither url nor provider",
	  "[general]\ninterval = 1h\n\n[account empty]\nusername = u\n",
	  "ksync.conf:4: account 'empty' needs url, provider or feed" },
	{ "both password keys",
	  "[account a]\n" URL "password_command = x\npassword_file = /pw\n",
	  "ksync.conf:1: account 'a': password_command, password_file and "
	  "password_secret are mutually exclusive" },
	{ "password_command and password_secret",
	  "[account a]\n" URL "password_secret = service=ksync account=a\npassword_command = x\n",
	  "ksync.conf:1: account 'a': password_command, password_file and password_secret are "
	  "mutually exclusive" },
	{ "password_secret not key=value",
	  "[account a]\n" URL "password_secret = ksync work\n",
	  "ksync.conf:3: invalid password_secret 'ksync work': 'ksync' is not key=value" },
	{ "password_secret with a key twice",
	  "[account a]\n" URL "password_secret = a=1 b=2 a=3\n",
	  "ksync.conf:3: invalid password_secret 'a=1 b=2 a=3': attribute 'a' is given twice" },
	{ "password_timeout out of range",
	  "[general]\npassword_timeout = 0\n[account a]\n" URL "password_timeout = 2h\n",
	  "ksync.conf:2: password_timeout '0' is out of range; use 1s to 3600s\n"
	  "ksync.conf:5: password_timeout '2h' is out of range; use 1s to 3600s" },
	{ "past_days not a number",
	  "[general]\npast_days = 1w\n[account a]\n" URL "future_days = -3\npast_days = 36501\n",
	  "ksync.conf:2: invalid past_days '1w'; use a number of days from 0 (no limit) to 36500\n"
	  "ksync.conf:5: invalid future_days '-3'; use a number of days from 0 (no limit) to "
	  "36500\n"
	  "ksync.conf:6: invalid past_days '36501'; use a number of days from 0 (no limit) to "
	  "36500" },
	{ "http to another host",
	  "[account lan]\nurl = http://dav.lan:5232/\n",
	  "ksync.conf:1: account 'lan': plain http:// to 'dav.lan' would send the password "
	  "unencrypted; use https:// or set allow_insecure_http = true" },
	{ "http to another host, flag off",
	  "[account lan]\nurl = http://10.0.0.1/\nallow_insecure_http = off\n",
	  "ksync.conf:1: account 'lan': plain http:// to '10.0.0.1' would send the password "
	  "unencrypted; use https:// or set allow_insecure_http = true" },
	{ "not quite loopback",
	  "[account a]\nurl = http://localhost.example/\n[account b]\nurl = http://[::2]/\n"
	  "[account c]\nurl = http://128.0.0.1/\n[account d]\nurl = http://[::ffff:10.0.0.1]/\n",
	  "ksync.conf:1: account 'a': plain http:// to 'localhost.example' would send the "
	  "password unencrypted; use https:// or set allow_insecure_http = true\n"
	  "ksync.conf:3: account 'b': plain http:// to '::2' would send the "
	  "password unencrypted; use https:// or set allow_insecure_http = true\n"
	  "ksync.conf:5: account 'c': plain http:// to '128.0.0.1' would send the "
	  "password unencrypted; use https:// or set allow_insecure_http = true\n"
	  "ksync.conf:7: account 'd': plain http:// to '::ffff:10.0.0.1' would send the "
	  "password unencrypted; use https:// or set allow_insecure_http = true" },
	{ "several validation errors, all reported",
	  "[account a]\nusername = u\n[account b]\n" URL
	  "password_command = x\npassword_file = y\n",
	  "ksync.conf:1: account 'a' needs url, provider or feed\n"
	  "ksync.conf:3: account 'b': password_command, password_file and "
	  "password_secret are mutually exclusive" },
	{ "several errors collected",
	  "stray = 1\n"
	  "[general]\n"
	  "interval = 10\n"
	  "[account a]\n"
	  "url = https://h.example/\n"
	  "allow_insecure_http = maybe\n"
	  "colour = red\n"
	  "[account a]\n"
	  "url = not checked\n"
	  "[oops]\n"
	  "[account b]\n"
	  "provider = nope\n",
	  "ksync.conf:1: line outside any section; expected [general] or [account NAME] first\n"
	  "ksync.conf:3: interval '10' is too short; the minimum is 60s\n"
	  "ksync.conf:6: invalid boolean 'maybe' for allow_insecure_http\n"
	  "ksync.conf:7: unknown key 'colour' in [account a]\n"
	  "ksync.conf:8: duplicate account 'a' (first on line 4)\n"
	  "ksync.conf:10: unknown section [oops]\n"
	  "ksync.conf:12: unknown provider 'nope'; known providers: infomaniak" },
	{ "validation waits for a clean parse",
	  "[account a]\nusername = u\nfoo = bar\n",
	  "ksync.conf:3: unknown key 'foo' in [account a]" },
};

static void test_errors(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
		ks_config *c = (ks_config *) &c;	/* must be left alone on failure */
		_cleanup_free_ char *err = NULL;
		int r;

		write_conf(error_cases[i].text);
		r = ks_config_load("ksync.conf", &c, &err);
		if (r != -EINVAL)
			fail_msg("case '%s': returned %d", error_cases[i].name, r);
		assert_ptr_equal(c, &c);
		check_str(error_cases[i].name, "errors", err, error_cases[i].errors);

		/* The message is optional. */
		assert_int_equal(ks_config_load("ksync.conf", &c, NULL), -EINVAL);
	}
}

static void test_nul_byte(void **state)
{
	static const char text[] = "[general]\ninter\0val = 60\n[account a]\n" URL;
	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;

	write_file("ksync.conf", text, sizeof(text) - 1, 0644);
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	assert_string_equal(err, "ksync.conf:2: line contains a NUL byte");
}

static void test_too_many_errors(void **state)
{
	ks_buf b = {};
	_cleanup_free_ char *text = NULL, *err = NULL;
	ks_config *c = NULL;

	for (int i = 0; i < 150; i++)
		assert_int_equal(ks_buf_puts(&b, "junk\n"), 0);
	text = ks_buf_steal(&b);
	write_conf(text);
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);

	size_t lines = 1;
	for (const char *p = err; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 101);
	assert_non_null(strstr(err, "ksync.conf:100: line outside any section"));
	assert_null(strstr(err, "ksync.conf:101:"));
	assert_non_null(strstr(err, "\nksync.conf: 150 errors; only the first 100 are shown"));
}

static void test_file_errors(void **state)
{
	_cleanup_free_ char *err1 = NULL, *err2 = NULL, *err3 = NULL;
	_cleanup_free_ char *big = malloc(1024 * 1024 + 1);
	ks_config *c = NULL;

	assert_int_equal(ks_config_load("missing.conf", &c, &err1), -ENOENT);
	assert_string_equal(err1, "missing.conf: No such file or directory");
	assert_null(c);

	assert_int_equal(mkdir("confdir", 0700), 0);
	assert_int_equal(ks_config_load("confdir", &c, &err2), -EISDIR);
	assert_string_equal(err2, "confdir: Is a directory");

	assert_non_null(big);
	memset(big, '#', 1024 * 1024 + 1);
	write_file("ksync.conf", big, 1024 * 1024 + 1, 0644);
	assert_int_equal(ks_config_load("ksync.conf", &c, &err3), -EINVAL);
	assert_string_equal(err3, "ksync.conf: file is larger than 1048576 bytes");
	assert_null(c);
}

/* Relative paths follow the file, wherever it is named from. */
static void test_relative_to_file(void **state)
{
	static const char text[] = "[account a]\n" URL "password_file = pw\nca_file = ../ca\n";
	_cleanup_free_ char *abs = NULL, *want_pw = NULL, *want_ca = NULL;
	const char *paths[2];
	char *err = NULL;

	assert_int_equal(mkdir("sub", 0700), 0);
	write_file("sub/ksync.conf", text, strlen(text), 0644);
	assert_true(asprintf(&abs, "%s/sub/ksync.conf", tmpdir) > 0);
	assert_true(asprintf(&want_pw, "%s/sub/pw", tmpdir) > 0);
	assert_true(asprintf(&want_ca, "%s/sub/../ca", tmpdir) > 0);
	paths[0] = "sub/ksync.conf";
	paths[1] = abs;
	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		ks_config *c = NULL;

		assert_int_equal(ks_config_load(paths[i], &c, &err), 0);
		assert_string_equal(c->path, paths[i]);
		assert_string_equal(c->accounts[0].password_file, want_pw);
		assert_string_equal(c->accounts[0].ca_file, want_ca);
		ks_config_free(c);
	}
}

static void test_tilde_without_home(void **state)
{
	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;

	write_conf("[account a]\n" URL "password_file = ~/pw\n");
	assert_int_equal(unsetenv("HOME"), 0);
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	assert_int_equal(setenv("HOME", home, 1), 0);
	assert_string_equal(err, "ksync.conf:3: cannot expand '~/pw' for password_file: "
			    "$HOME is not set");
}

static void test_find_account(void **state)
{
	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;

	write_conf("[account work]\n" URL "[account home]\n" URL "[account work2]\n" URL);
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	assert_int_equal(c->n_accounts, 3);

	static const char *const names[] = { "work", "home", "work2" };
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		const ks_account_config *a = ks_config_find_account(c, names[i]);

		assert_ptr_equal(a, &c->accounts[i]);
		assert_string_equal(a->name, names[i]);
		assert_int_equal(a->line, 2 * i + 1);
	}
	assert_null(ks_config_find_account(c, "wor"));
	assert_null(ks_config_find_account(c, "Work"));
	assert_null(ks_config_find_account(c, ""));
	ks_config_free(c);
	assert_null(ks_config_free(NULL));
}

static void test_conflict_policy(void **state)
{
	static const struct {
		const char *text;
		int want[2];	/* accounts a and b */
	} cases[] = {
		{ "[account a]\n" URL "[account b]\n" URL,
		  { KS_CONFLICT_MODE_SERVER_WINS, KS_CONFLICT_MODE_SERVER_WINS } },
		{ "[general]\nconflict = local-wins\n[account a]\n" URL "[account b]\n" URL
		  "conflict = server-wins\n",
		  { KS_CONFLICT_MODE_LOCAL_WINS, KS_CONFLICT_MODE_SERVER_WINS } },
		{ "[account a]\n" URL "conflict = local-wins\n[account b]\n" URL,
		  { KS_CONFLICT_MODE_LOCAL_WINS, KS_CONFLICT_MODE_SERVER_WINS } },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf(cases[i].text);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		assert_int_equal(c->accounts[0].conflict, cases[i].want[0]);
		assert_int_equal(c->accounts[1].conflict, cases[i].want[1]);
		ks_config_free(c);
	}

	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;
	write_conf("[account a]\n" URL "conflict = newest\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	assert_string_equal(err, "ksync.conf:3: invalid value 'newest' for conflict "
				 "(server-wins or local-wins)");
}

static void test_timeout(void **state)
{
	static const struct {
		const char *text;
		unsigned want[2];	/* accounts a and b */
	} cases[] = {
		{ "[account a]\n" URL "[account b]\n" URL, { 60, 60 } },
		{ "[general]\ntimeout = 2min\n[account a]\n" URL "[account b]\n" URL
		  "timeout = 2\n",
		  { 120, 2 } },
		{ "[account a]\n" URL "timeout = 1h\n[account b]\n" URL, { 3600, 60 } },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf(cases[i].text);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		assert_int_equal(c->accounts[0].timeout, cases[i].want[0]);
		assert_int_equal(c->accounts[1].timeout, cases[i].want[1]);
		ks_config_free(c);
	}

	/* password_timeout: [general]'s for accounts that do not set one, 60 s by default. */
	static const struct {
		const char *text;
		unsigned want[2];
	} pw_cases[] = {
		{ "[account a]\n" URL "[account b]\n" URL, { 60, 60 } },
		{ "[general]\npassword_timeout = 2min\n[account a]\n" URL "[account b]\n" URL
		  "password_timeout = 5s\n", { 120, 5 } },
	};
	for (size_t i = 0; i < ELEMENTSOF(pw_cases); i++) {
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf(pw_cases[i].text);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		assert_int_equal(c->accounts[0].password_timeout, pw_cases[i].want[0]);
		assert_int_equal(c->accounts[1].password_timeout, pw_cases[i].want[1]);
		ks_config_free(c);
	}

	/* past_days and future_days: [general]'s for accounts that do not set them; 0 in an
	 * account lifts [general]'s window. */
	static const struct {
		const char *text;
		int want[4];
	} day_cases[] = {
		{ "[account a]\n" URL "[account b]\n" URL, { 0, 0, 0, 0 } },
		{ "[general]\npast_days = 30\n[account a]\n" URL "[account b]\n" URL
		  "past_days = 0\nfuture_days = 365\n", { 30, 0, 0, 365 } },
		{ "[account a]\n" URL "past_days = 7\nfuture_days = 14\n[account b]\n" URL,
		  { 7, 14, 0, 0 } },
	};
	for (size_t i = 0; i < ELEMENTSOF(day_cases); i++) {
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf(day_cases[i].text);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		assert_int_equal(c->accounts[0].past_days, day_cases[i].want[0]);
		assert_int_equal(c->accounts[0].future_days, day_cases[i].want[1]);
		assert_int_equal(c->accounts[1].past_days, day_cases[i].want[2]);
		assert_int_equal(c->accounts[1].future_days, day_cases[i].want[3]);
		ks_config_free(c);
	}

	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;
	write_conf("[general]\ntimeout = 0\n[account a]\n" URL "timeout = 2h\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	assert_string_equal(err, "ksync.conf:2: timeout '0' is out of range; use 1s to 3600s\n"
				 "ksync.conf:5: timeout '2h' is out of range; use 1s to 3600s");
}

static void test_default_path(void **state)
{
	static const struct {
		const char *xdg, *home;
		int r;
		const char *want;
	} cases[] = {
		{ "/x/cfg", "/home/u", 0, "/x/cfg/ksync/ksync.conf" },
		{ NULL, "/home/u", 0, "/home/u/.config/ksync/ksync.conf" },
		{ "", "/home/u", 0, "/home/u/.config/ksync/ksync.conf" },
		{ "relative/cfg", "/home/u", 0, "/home/u/.config/ksync/ksync.conf" },
		{ "/x/cfg", NULL, 0, "/x/cfg/ksync/ksync.conf" },
		{ NULL, NULL, -ENOENT, NULL },
		{ "rel", "", -ENOENT, NULL },
	};
	_cleanup_free_ char *saved_xdg = strdup(getenv("XDG_CONFIG_HOME"));

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *p = (char *) &p;

		if (cases[i].xdg)
			assert_int_equal(setenv("XDG_CONFIG_HOME", cases[i].xdg, 1), 0);
		else
			assert_int_equal(unsetenv("XDG_CONFIG_HOME"), 0);
		if (cases[i].home)
			assert_int_equal(setenv("HOME", cases[i].home, 1), 0);
		else
			assert_int_equal(unsetenv("HOME"), 0);
		assert_int_equal(ks_config_default_path(&p), cases[i].r);
		if (cases[i].r == 0) {
			assert_string_equal(p, cases[i].want);
			free(p);
		} else
			assert_ptr_equal(p, &p);
	}
	assert_int_equal(setenv("HOME", home, 1), 0);
	assert_int_equal(setenv("XDG_CONFIG_HOME", saved_xdg, 1), 0);
}

/* The whole path a daemon takes: load, find the account, read its password. */
static void test_load_then_password(void **state)
{
	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;
	char *pw = NULL;

	write_file("secret", "from-file\n", 10, 0600);
	write_conf("[account ik]\nprovider = infomaniak\nusername = AB12345\n"
		   "password_file = secret\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	assert_int_equal(ks_account_get_password(ks_config_find_account(c, "ik"), &pw, &err), 0);
	assert_string_equal(pw, "from-file");
	ks_secret_free(pw);
	ks_config_free(c);
}

/* ---- new collections ---------------------------------------------------------------------- */

static void test_collections_policy(void **state)
{
	static const struct {
		const char *text;
		int general, want[2];	/* accounts a and b */
	} cases[] = {
		{ "[account a]\n" URL "[account b]\n" URL, KS_NEW_COLLECTIONS_ALL,
		  { KS_NEW_COLLECTIONS_ALL, KS_NEW_COLLECTIONS_ALL } },
		{ "[general]\ncollections = none\n[account a]\n" URL "[account b]\n" URL
		  "collections = all\n", KS_NEW_COLLECTIONS_NONE,
		  { KS_NEW_COLLECTIONS_NONE, KS_NEW_COLLECTIONS_ALL } },
		{ "[account a]\n" URL "collections = \"none\"\n[account b]\n" URL,
		  KS_NEW_COLLECTIONS_ALL, { KS_NEW_COLLECTIONS_NONE, KS_NEW_COLLECTIONS_ALL } },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf(cases[i].text);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		assert_int_equal(c->collections, cases[i].general);
		assert_int_equal(c->accounts[0].collections, cases[i].want[0]);
		assert_int_equal(c->accounts[1].collections, cases[i].want[1]);
		ks_config_free(c);
	}

	_cleanup_free_ char *err = NULL;
	ks_config *c = NULL;
	write_conf("[general]\ncollections = some\n[account a]\n" URL "collections = All\n"
		   "collections = none\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	assert_string_equal(err, "ksync.conf:2: invalid value 'some' for collections (all or none)\n"
			    "ksync.conf:5: invalid value 'All' for collections (all or none)\n"
			    "ksync.conf:6: duplicate key 'collections' in [account a] "
			    "(first on line 5)");
}

/* ---- writing ------------------------------------------------------------------------------ */

static char *read_text(const char *path)
{
	ks_buf b = {};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char chunk[4096];
	ssize_t n;

	assert_true(fd >= 0);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		assert_int_equal(ks_buf_append(&b, chunk, (size_t) n), 0);
	assert_int_equal(n, 0);
	close(fd);
	return b.data ? ks_buf_steal(&b) : strdup("");
}

/* No temporary file of ks_config_add_account() or _remove_account() left behind. */
static void check_no_temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strncmp(de->d_name, ".ksync.conf.", 12) == 0)
			fail_msg("temporary file '%s' left in %s", de->d_name, dir);
	closedir(d);
}

static void test_add_account_creates(void **state)
{
	ks_account_config a = {
		.name = (char *) "ik",
		.provider = (char *) "infomaniak",
		.url = (char *) "https://sync.infomaniak.com/",
		.username = (char *) "AB12345",
		.password_command = (char *) "secret-tool lookup ksync infomaniak",
	};
	_cleanup_free_ char *text = NULL, *err = NULL;
	struct stat st;

	assert_int_equal(ks_config_add_account("new/sub/ksync.conf", &a, &err), 0);
	assert_null(err);
	text = read_text("new/sub/ksync.conf");
	assert_string_equal(text, "[account ik]\n"
			    "provider = infomaniak\n"
			    "username = AB12345\n"
			    "password_command = secret-tool lookup ksync infomaniak\n");
	assert_int_equal(stat("new/sub/ksync.conf", &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat("new/sub", &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat("new", &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	check_no_temp_files("new/sub");
}

static const char commented[] =
	"# ksync configuration\n"
	"; written by hand\n"
	"[general]\n"
	"interval = 20min   \n"
	"\n"
	"# the work account\n"
	"[account work]\n"
	"url = https://dav.example.com/\n"
	"username = jdoe\n";

static void test_add_account_preserves(void **state)
{
	ks_account_config a = {
		.name = (char *) "home",
		.url = (char *) "http://127.0.0.1:5232/",
		.password_file = (char *) "/run/pw",
		.interval = 3600,
		.conflict = KS_CONFLICT_MODE_LOCAL_WINS,
		.collections = KS_NEW_COLLECTIONS_NONE,
		.allow_insecure_http = true,
		.ca_file = (char *) "",
	};
	_cleanup_free_ char *text = NULL, *err = NULL;
	ks_config *c = NULL;
	struct stat st;

	write_file("ksync.conf", commented, strlen(commented), 0640);
	assert_int_equal(ks_config_add_account("ksync.conf", &a, &err), 0);
	text = read_text("ksync.conf");
	assert_memory_equal(text, commented, strlen(commented));
	assert_string_equal(text + strlen(commented),
			    "\n"
			    "[account home]\n"
			    "url = http://127.0.0.1:5232/\n"
			    "password_file = /run/pw\n"
			    "allow_insecure_http = true\n"
			    "interval = 1h\n"
			    "conflict = local-wins\n"
			    "collections = none\n");
	assert_int_equal(stat("ksync.conf", &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	const ks_account_config *b = ks_config_find_account(c, "home");
	assert_non_null(b);
	assert_int_equal(b->interval, 3600);
	assert_int_equal(b->conflict, KS_CONFLICT_MODE_LOCAL_WINS);
	assert_int_equal(b->collections, KS_NEW_COLLECTIONS_NONE);
	assert_true(b->allow_insecure_http);
	assert_null(b->ca_file);
	ks_config_free(c);
}

static void test_add_account_separators(void **state)
{
	static const struct {
		const char *old, *want;
	} cases[] = {
		{ "", "[account x]\nurl = https://h.example/\n" },
		{ "[general]\ninterval = 60",
		  "[general]\ninterval = 60\n\n[account x]\nurl = https://h.example/\n" },
		{ "[general]\ninterval = 60\n\n",
		  "[general]\ninterval = 60\n\n[account x]\nurl = https://h.example/\n" },
		{ "[general]\ninterval = 60\n  \t\n",
		  "[general]\ninterval = 60\n  \t\n[account x]\nurl = https://h.example/\n" },
		{ "# only a comment\n",
		  "# only a comment\n\n[account x]\nurl = https://h.example/\n" },
		{ "[general]\r\ninterval = 60\r\n",
		  "[general]\r\ninterval = 60\r\n\r\n[account x]\r\nurl = https://h.example/\r\n" },
	};
	ks_account_config a = { .name = (char *) "x", .url = (char *) "https://h.example/" };

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL, *err = NULL;

		write_conf(cases[i].old);
		if (ks_config_add_account("ksync.conf", &a, &err) < 0)
			fail_msg("case %zu: %s", i, err);
		text = read_text("ksync.conf");
		if (strcmp(text, cases[i].want) != 0)
			fail_msg("case %zu: got '%s'", i, text);
	}
}

static void test_add_account_quoting(void **state)
{
	static char values[][32] = {
		" leading space", "trailing tab\t", "\"starts with a quote", "back\\slash",
		"ends with \"quote\"", "# not a comment", "a = b ; c", "  \"\\\"  ",
	};

	for (size_t i = 0; i < ELEMENTSOF(values); i++) {
		ks_account_config a = { .name = (char *) "q", .url = (char *) "https://h.example/",
					.password_command = values[i] };
		_cleanup_free_ char *err = NULL;
		ks_config *c = NULL;

		write_conf("");
		assert_int_equal(ks_config_add_account("ksync.conf", &a, &err), 0);
		assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
		check_str(values[i], "password_command", c->accounts[0].password_command, values[i]);
		ks_config_free(c);
	}
}

static void test_add_account_refused(void **state)
{
	static const struct {
		ks_account_config a;
		int r;
		const char *msg;
	} cases[] = {
		{ { .name = (char *) "work", .url = (char *) "https://h.example/" }, -EEXIST,
		  "ksync.conf:7: account 'work' already exists" },
		{ { .name = (char *) "new", .url = (char *) "ftp://h.example/" }, -EINVAL,
		  "ksync.conf:12: invalid URL 'ftp://h.example/' for url; it must start with "
		  "http:// or https://" },
		{ { .name = (char *) "new" }, -EINVAL,
		  "ksync.conf:11: account 'new' needs url, provider or feed" },
		{ { .name = (char *) "new", .provider = (char *) "fastmail" }, -EINVAL,
		  "ksync.conf:12: unknown provider 'fastmail'; known providers: infomaniak" },
		{ { .name = (char *) "new", .url = (char *) "https://h.example/",
		    .username = (char *) "line\nbreak" }, -EINVAL,
		  "the value of username contains a line break, which ksync.conf cannot hold" },
		{ { .name = (char *) "../x", .url = (char *) "https://h.example/" }, -EINVAL,
		  "invalid account name '../x'" },
		{ { .name = (char *) "new", .url = (char *) "https://h.example/",
		    .password_command = (char *) "x", .password_file = (char *) "/y" }, -EINVAL,
		  "ksync.conf:11: account 'new': password_command, password_file "
		  "and password_secret are mutually exclusive" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL, *err = NULL;

		write_file("ksync.conf", commented, strlen(commented), 0600);
		if (ks_config_add_account("ksync.conf", &cases[i].a, &err) != cases[i].r)
			fail_msg("case %zu: not %d: %s", i, cases[i].r, err ? err : "");
		if (!err || !strstr(err, cases[i].msg))
			fail_msg("case %zu: message '%s'", i, err ? err : "");
		text = read_text("ksync.conf");
		assert_string_equal(text, commented);
	}

	/* A broken file is left alone. */
	static const char broken[] = "[account a]\n" URL "colour = red\n";
	ks_account_config a = { .name = (char *) "b", .url = (char *) "https://h.example/" };
	_cleanup_free_ char *err = NULL, *text = NULL;
	write_conf(broken);
	assert_int_equal(ks_config_add_account("ksync.conf", &a, &err), -EINVAL);
	assert_string_equal(err, "ksync.conf:3: unknown key 'colour' in [account a]");
	text = read_text("ksync.conf");
	assert_string_equal(text, broken);
	check_no_temp_files(".");
}

static void test_add_account_symlink(void **state)
{
	ks_account_config a = { .name = (char *) "x", .url = (char *) "https://h.example/" };
	_cleanup_free_ char *text = NULL, *err = NULL;
	struct stat st;

	assert_int_equal(mkdir("dotfiles", 0700), 0);
	write_file("dotfiles/ksync.conf", "[general]\n", 10, 0600);
	assert_int_equal(symlink("dotfiles/ksync.conf", "link.conf"), 0);
	assert_int_equal(ks_config_add_account("link.conf", &a, &err), 0);
	assert_int_equal(lstat("link.conf", &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	text = read_text("dotfiles/ksync.conf");
	assert_string_equal(text, "[general]\n\n[account x]\nurl = https://h.example/\n");
}

static void test_remove_account(void **state)
{
	static const struct {
		const char *old, *name, *want;
	} cases[] = {
		{ "[general]\ninterval = 60\n\n[account a]\n" URL "\n[account b]\n" URL, "a",
		  "[general]\ninterval = 60\n\n[account b]\n" URL },
		{ "[general]\ninterval = 60\n\n[account a]\n" URL "\n\n[account b]\n" URL, "b",
		  "[general]\ninterval = 60\n\n[account a]\n" URL },
		/* Comments after the last setting belong to the next section. */
		{ "[account a]\n" URL "# password_file = old\n\n# the b account\n[account b]\n" URL,
		  "a", "# password_file = old\n\n# the b account\n[account b]\n" URL },
		{ "# top\n[account a]\n" URL "; about b\n[account b]\n" URL, "a",
		  "# top\n; about b\n[account b]\n" URL },
		/* Headers as the parser reads them; a commented header is not one. */
		{ "#[account a]\n  [ account \t a ]  \r\n" URL "[general]\n", "a",
		  "#[account a]\n[general]\n" },
		{ "[account a]\n" URL, "a", "" },
		{ "[account a]\n" URL "[account ab]\n" URL, "a", "[account ab]\n" URL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL, *err = NULL;

		write_conf(cases[i].old);
		if (ks_config_remove_account("ksync.conf", cases[i].name, &err) < 0)
			fail_msg("case %zu: %s", i, err);
		text = read_text("ksync.conf");
		if (strcmp(text, cases[i].want) != 0)
			fail_msg("case %zu: got '%s'", i, text);
	}
	check_no_temp_files(".");
}

static void test_add_then_remove(void **state)
{
	ks_account_config a = { .name = (char *) "new", .url = (char *) "https://h.example/",
				.username = (char *) "u" };
	_cleanup_free_ char *text = NULL, *err = NULL;

	write_file("ksync.conf", commented, strlen(commented), 0600);
	assert_int_equal(ks_config_add_account("ksync.conf", &a, &err), 0);
	assert_int_equal(ks_config_remove_account("ksync.conf", "new", &err), 0);
	text = read_text("ksync.conf");
	assert_string_equal(text, commented);
}

static void test_collection_rules(void **state)
{
	static const struct {
		char *include, *exclude;
		const char *path, *displayname;
		int want;
	} cases[] = {
		{ NULL, NULL, "calendars/work", "Work", -1 },
		{ "calendars/work", NULL, "calendars/work", NULL, 1 },
		{ "work", NULL, "calendars/work", NULL, 1 },
		{ "Work", NULL, "calendars/work", "Work", 1 },
		{ "calendars/*", NULL, "contacts/work", NULL, -1 },
		{ " team ,  calendars/w* ", NULL, "calendars/work", NULL, 1 },
		{ "calendars/*", "*holidays*", "calendars/holidays-ch", NULL, 0 },
		{ "*", "Feiertage", "calendars/x1", "Feiertage", 0 },
		{ NULL, "contacts/family", "calendars/family", NULL, -1 },
		{ NULL, "family", "contacts/family", NULL, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		ks_account_config a = { .include = cases[i].include, .exclude = cases[i].exclude };
		int got = ks_account_collection_rule(&a, cases[i].path, cases[i].displayname);

		if (got != cases[i].want)
			fail_msg("case %zu: %d, not %d", i, got, cases[i].want);
	}

	_cleanup_free_ char *err = NULL, *err2 = NULL;
	ks_config *c = NULL;
	write_conf("[account a]\n" URL "include = \"calendars/work,contacts/x y \"\n"
		   "exclude = *old*\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	assert_string_equal(c->accounts[0].include, "calendars/work,contacts/x y ");
	assert_int_equal(ks_account_collection_rule(&c->accounts[0], "contacts/x y", NULL), 1);
	assert_string_equal(c->accounts[0].exclude, "*old*");
	ks_account_config copy = {};
	assert_int_equal(ks_account_config_copy(&c->accounts[0], &copy), 0);
	assert_string_equal(copy.include, c->accounts[0].include);
	assert_string_equal(copy.exclude, c->accounts[0].exclude);
	ks_account_config_done(&copy);
	ks_config_free(c);
	c = NULL;
	write_conf("[account a]\n" URL "include = work,,team\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err2), -EINVAL);
	assert_non_null(strstr(err2, "ksync.conf:3: include has an empty pattern"));
}

static void test_set_collection(void **state)
{
	static const struct {
		const char *old, *path;
		bool enabled;
		int ret;
		const char *want;
	} cases[] = {
		/* Disabled: exclude = gets a line after the last setting, comments stay. */
		{ "[account a]\n" URL "# my note\n\n[account b]\n" URL, "calendars/work", false, 1,
		  "[account a]\n" URL "exclude = calendars/work\n# my note\n\n[account b]\n" URL },
		{ "[account a]\n" URL "exclude = x\n", "calendars/work", false, 1,
		  "[account a]\n" URL "exclude = x, calendars/work\n" },
		{ "[account a]\n" URL "exclude = calendars/w*\n", "calendars/work", false, 0,
		  "[account a]\n" URL "exclude = calendars/w*\n" },
		/* A last line without its line break. */
		{ "[account a]\r\n" "url = https://h.example/", "contacts/team", false, 1,
		  "[account a]\r\nurl = https://h.example/\r\nexclude = contacts/team\r\n" },
		/* Leaves include =, and under collections = none needs no exclude =. */
		{ "[account a]\n" URL "collections = none\ninclude = work, team\n",
		  "calendars/work", false, 1,
		  "[account a]\n" URL "collections = none\ninclude = team\n" },
		{ "[account a]\n" URL "collections = none\ninclude = calendars/work\n",
		  "calendars/work", false, 1, "[account a]\n" URL "collections = none\n" },
		/* Still named by a pattern of include =: exclude = wins. */
		{ "[account a]\n" URL "include = calendars/*\n", "calendars/work", false, 1,
		  "[account a]\n" URL "include = calendars/*\nexclude = calendars/work\n" },
		/* Enabled: leaves exclude =; under collections = none joins include =. */
		{ "[account a]\n" URL "exclude = calendars/work, old\n", "calendars/work", true, 1,
		  "[account a]\n" URL "exclude = old\n" },
		{ "[account a]\n" URL "exclude = work\n", "calendars/work", true, 1,
		  "[account a]\n" URL },
		{ "[account a]\n" URL "collections = none\n\n[general]\n", "contacts/team", true, 1,
		  "[account a]\n" URL "collections = none\ninclude = contacts/team\n\n[general]\n" },
		{ "[general]\ncollections = none\n[account a]\n" URL "include = x\n", "contacts/t",
		  true, 1, "[general]\ncollections = none\n[account a]\n" URL "include = x, contacts/t\n" },
		{ "[account a]\n" URL, "calendars/work", true, 0, "[account a]\n" URL },
		/* Only the account's own section changes. */
		{ "[account b]\n" URL "exclude = calendars/work\n[account a]\n" URL, "calendars/work",
		  true, 0, "[account b]\n" URL "exclude = calendars/work\n[account a]\n" URL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL, *err = NULL;
		int r;

		write_conf(cases[i].old);
		r = ks_config_set_collection("ksync.conf", "a", cases[i].path, NULL,
					     cases[i].enabled, &err);
		if (r != cases[i].ret)
			fail_msg("case %zu: %d (%s)", i, r, err ? err : "");
		text = read_text("ksync.conf");
		if (strcmp(text, cases[i].want) != 0)
			fail_msg("case %zu: got '%s'", i, text);
	}
	check_no_temp_files(".");
}

static void test_set_collection_refused(void **state)
{
	_cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL, *text = NULL;
	static const char globbed[] = "[account a]\n" URL "exclude = work, *old*\n";

	write_conf(globbed);
	assert_int_equal(ks_config_set_collection("ksync.conf", "a", "calendars/old-work", NULL,
						  true, &e1), -EPERM);
	assert_string_equal(e1, "ksync.conf:3: exclude = still names 'calendars/old-work' "
			    "through a pattern: change that line to sync it");
	text = read_text("ksync.conf");
	assert_string_equal(text, globbed);
	assert_int_equal(ks_config_set_collection("ksync.conf", "b", "calendars/x", NULL, true,
						  &e2), -ENOENT);
	assert_string_equal(e2, "ksync.conf: no account 'b'");
	assert_int_equal(ks_config_set_collection("missing.conf", "a", "calendars/x", NULL, true,
						  &e3), -ENOENT);
}

static void test_feed(void **state)
{
	_cleanup_free_ char *err = NULL, *err2 = NULL, *err3 = NULL, *text = NULL, *why = NULL;
	ks_config *c = NULL;

	write_conf("[account hol]\nfeed = webcal://h.example/cal/holidays.ics\ninterval = 1d\n"
		   "[account local]\nfeed = http://127.0.0.1:8080/x.ics\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	assert_string_equal(c->accounts[0].feed, "https://h.example/cal/holidays.ics");
	assert_string_equal(c->accounts[0].url, "https://h.example/cal/holidays.ics");
	assert_int_equal(c->accounts[0].interval, 86400);
	assert_string_equal(c->accounts[1].url, "http://127.0.0.1:8080/x.ics");
	ks_config_free(c);
	c = NULL;

	write_conf("[account hol]\nfeed = https://h.example/x.ics\nurl = https://h.example/\n"
		   "[account far]\nfeed = http://h.example/x.ics\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err2), -EINVAL);
	assert_non_null(strstr(err2, "account 'hol': feed (a calendar subscription) and url "
				     "exclude each other"));
	assert_non_null(strstr(err2, "account 'far': plain http://"));

	/* The section ksyncctl subscribe writes. */
	ks_account_config a = { .name = (char *) "hol", .feed = (char *) "webcal://h.example/x",
				.interval = 3600 };
	write_conf("");
	assert_int_equal(ks_config_add_account("ksync.conf", &a, &err3), 0);
	text = read_text("ksync.conf");
	assert_string_equal(text, "[account hol]\nfeed = webcal://h.example/x\ninterval = 1h\n");
}

static void test_collection_dirs(void **state)
{
	_cleanup_free_ char *err = NULL, *err2 = NULL, *err3 = NULL;
	ks_config *c = NULL;
	char *d = NULL;

	setenv("HOME", "/home/u", 1);
	write_conf("[account a]\n" URL "calendars_path = ~/.calendars/\n"
		   "contacts_path = /srv//books\n"
		   "path = calendars/x1 ~/.calendars/work\n"
		   "path = contacts/family   /home/u/Family Book\n"
		   "[account b]\n" URL "calendars_path = rel/cals\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), 0);
	ks_account_config *a = &c->accounts[0];
	assert_string_equal(a->calendars_path, "/home/u/.calendars");
	assert_string_equal(a->contacts_path, "/srv/books");
	assert_int_equal(ks_account_collection_dir(a, "calendars/x1", &d), 0);
	assert_string_equal(d, "/home/u/.calendars/work");
	free(d);
	assert_int_equal(ks_account_collection_dir(a, "calendars/home", &d), 0);
	assert_string_equal(d, "/home/u/.calendars/home");
	free(d);
	assert_int_equal(ks_account_collection_dir(a, "contacts/family", &d), 0);
	assert_string_equal(d, "/home/u/Family Book");
	free(d);
	assert_int_equal(ks_account_collection_dir(a, "contacts/x1", &d), 0);
	assert_string_equal(d, "/srv/books/x1");
	free(d);
	assert_int_equal(ks_account_collection_dir(a, "tasks/x1", &d), -EINVAL);
	assert_int_equal(ks_account_collection_dir(&c->accounts[1], "contacts/x1", &d), 0);
	assert_null(d);
	assert_non_null(strstr(c->accounts[1].calendars_path, "/rel/cals"));
	assert_int_equal(c->accounts[1].calendars_path[0], '/');
	ks_account_config copy = {};
	assert_int_equal(ks_account_config_copy(a, &copy), 0);
	assert_string_equal(copy.paths, a->paths);
	assert_string_equal(copy.calendars_path, a->calendars_path);
	ks_account_config_done(&copy);
	ks_config_free(c);
	c = NULL;

	/* Places that overlap, across accounts and kinds, or with a collection's own. */
	write_conf("[account a]\n" URL "calendars_path = /d/cal\ncontacts_path = /d/cal/books\n"
		   "[account b]\n" URL "calendars_path = /d/cal\n"
		   "[account c]\n" URL "path = calendars/w /d/cal/w\n"
		   "path = contacts/w /e/w\npath = calendars/v /e/w/v\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err2), -EINVAL);
	assert_non_null(strstr(err2, "ksync.conf:1: account 'a': the directory '/d/cal/books' of "
				     "contacts lies inside '/d/cal' of calendars in account 'a'"));
	assert_non_null(strstr(err2, "ksync.conf:5: account 'b': the directory '/d/cal' of "
				     "calendars is also '/d/cal' of calendars in account 'a'"));
	assert_non_null(strstr(err2, "account 'c': the directory '/d/cal/w' of calendars/w lies "
				     "inside '/d/cal' of calendars in account 'a'"));
	assert_non_null(strstr(err2, "account 'c': the directory '/e/w/v' of calendars/v lies "
				     "inside '/e/w' of contacts/w in account 'c'"));
	write_conf("[account a]\n" URL "path = calendars/w\npath = notes/w /x\n"
		   "path = calendars/a/b /x\ncalendars_path = /\npath = calendars/v /a/../b\n"
		   "[account b]\n" URL "path = calendars/w /x\npath = calendars/w /y\n");
	assert_int_equal(ks_config_load("ksync.conf", &c, &err3), -EINVAL);
	assert_non_null(strstr(err3, "ksync.conf:3: path takes a collection and its directory"));
	assert_non_null(strstr(err3, "ksync.conf:4: path takes a collection and its directory"));
	assert_non_null(strstr(err3, "ksync.conf:5: path takes a collection and its directory"));
	assert_non_null(strstr(err3, "ksync.conf:6: calendars_path may not be the root"));
	assert_non_null(strstr(err3, "ksync.conf:7: path '/a/../b' has a '.' or '..' component"));
	assert_non_null(strstr(err3, "ksync.conf:11: path: calendars/w has a directory already"));
}

static void test_remove_account_refused(void **state)
{
	_cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL, *text = NULL;
	static const char broken[] = "[account a]\n" URL "[account b]\n" URL "colour = red\n";

	assert_int_equal(ks_config_remove_account("missing.conf", "a", &e1), -ENOENT);
	assert_string_equal(e1, "missing.conf: no such file, so no account 'a'");
	write_conf("[account a]\n" URL);
	assert_int_equal(ks_config_remove_account("ksync.conf", "b", &e2), -ENOENT);
	assert_string_equal(e2, "ksync.conf: no account 'b'");
	write_conf("");
	assert_int_equal(ks_config_remove_account("ksync.conf", "b", &e3), -ENOENT);

	write_conf(broken);
	assert_int_equal(ks_config_remove_account("ksync.conf", "a", &e4), -EINVAL);
	assert_string_equal(e4, "ksync.conf:3: unknown key 'colour' in [account b]");
	text = read_text("ksync.conf");
	assert_string_equal(text, broken);
}

static void test_provider_url(void **state)
{
	assert_string_equal(ks_config_provider_url("infomaniak"), "https://sync.infomaniak.com/");
	assert_null(ks_config_provider_url("Infomaniak"));
	assert_null(ks_config_provider_url(NULL));
}

/* One bad line leaves out what it concerns, and the rest is usable. */
static void test_partial(void **state)
{
	ks_config *c = NULL;
	char *err = NULL;

	write_conf("[general]\ninterval = 5\ntimeout = 30s\n"
		   "[account good]\n" URL "username = bob  # work\n"
		   "[account typo]\n" URL "usrname = x\n"
		   "[account bad name]\n" URL
		   "[account insecure]\nurl = http://dav.lan/\n"
		   "[account quoted]\n" URL "username = \"a # b\"\n");
	assert_int_equal(ks_config_load_partial("ksync.conf", &c, &err), 4);
	assert_null(err);
	assert_int_equal(c->n_accounts, 2);
	assert_string_equal(c->accounts[0].name, "good");
	assert_string_equal(c->accounts[0].username, "bob  # work");
	assert_string_equal(c->accounts[1].name, "quoted");
	assert_int_equal(c->interval, 900);
	assert_int_equal(c->timeout, 30);
	assert_int_equal(c->accounts[0].timeout, 30);
	assert_non_null(c->invalid_accounts);
	assert_string_equal(c->invalid_accounts[0], "typo");
	assert_string_equal(c->invalid_accounts[1], "insecure");
	assert_null(c->invalid_accounts[2]);
	assert_string_equal(c->errors,
		"ksync.conf:2: interval '5' is too short; the minimum is 60s\n"
		"ksync.conf:9: unknown key 'usrname' in [account typo]\n"
		"ksync.conf:10: invalid account name 'bad name'; use 1 to 64 of A-Z a-z 0-9 . _ -, "
		"not starting with '.'\n"
		"ksync.conf:12: account 'insecure': plain http:// to 'dav.lan' would send the "
		"password unencrypted; use https:// or set allow_insecure_http = true");
	assert_string_equal(c->warnings,
		"ksync.conf:6: the value of username holds ' #': ksync.conf has no comments after "
		"a value, so it is part of the value; put the comment on a line of its own, or "
		"the value in double quotes if it belongs there");
	ks_config_free(c);

	/* The strict loader refuses the same file, and a clean one gives 0 both ways. */
	assert_int_equal(ks_config_load("ksync.conf", &c, &err), -EINVAL);
	free(err);
	err = NULL;
	write_conf("[account a]\n" URL);
	assert_int_equal(ks_config_load_partial("ksync.conf", &c, &err), 0);
	assert_null(c->errors);
	assert_null(c->invalid_accounts);
	assert_null(c->warnings);
	ks_config_free(c);
	assert_int_equal(ks_config_load_partial("missing.conf", &c, &err), -ENOENT);
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_partial),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_booleans),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_too_many_errors),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_relative_to_file),
		cmocka_unit_test(test_tilde_without_home),
		cmocka_unit_test(test_find_account),
		cmocka_unit_test(test_conflict_policy),
		cmocka_unit_test(test_default_path),
		cmocka_unit_test(test_load_then_password),
		cmocka_unit_test(test_collections_policy),
		cmocka_unit_test(test_add_account_creates),
		cmocka_unit_test(test_add_account_preserves),
		cmocka_unit_test(test_add_account_separators),
		cmocka_unit_test(test_add_account_quoting),
		cmocka_unit_test(test_add_account_refused),
		cmocka_unit_test(test_add_account_symlink),
		cmocka_unit_test(test_remove_account),
		cmocka_unit_test(test_add_then_remove),
		cmocka_unit_test(test_remove_account_refused),
		cmocka_unit_test(test_collection_rules),
		cmocka_unit_test(test_collection_dirs),
		cmocka_unit_test(test_feed),
		cmocka_unit_test(test_set_collection),
		cmocka_unit_test(test_set_collection_refused),
		cmocka_unit_test(test_provider_url),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
