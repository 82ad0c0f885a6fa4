/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf_p.h"
#include "ksync.h"
#include "macro.h"
#include "secret_p.h"

/* Every test runs in a fresh directory; nothing outside it is read or written. The Secret
 * Service itself is tested against a real gnome-keyring-daemon in
 * tests/integration/test_setup.py. */
static char tmpdir[] = "/tmp/ksync-test-secret-XXXXXX";
static char old_cwd[4096];

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
	(void) unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t) len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	if (!getcwd(old_cwd, sizeof(old_cwd)) || !mkdtemp(tmpdir))
		return -1;
	/* No session bus: a Secret Service lookup must fail cleanly, not find the caller's. */
	if (setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus", 1) < 0)
		return -1;
	return chdir(tmpdir);
}

static int teardown(void **state)
{
	if (chdir(old_cwd) < 0)
		return -1;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Replaces @DIR@ with the test directory. */
static char *subst(const char *s)
{
	ks_buf b = {};

	while (*s) {
		if (strncmp(s, "@DIR@", 5) == 0) {
			assert_int_equal(ks_buf_puts(&b, tmpdir), 0);
			s += 5;
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- passwords ---------------------------------------------------------------------------- */

enum pw_setup {
	PW_COMMAND,
	PW_FILE,
	PW_SYMLINK,	/* "pw.link" pointing at a 0600 file */
	PW_DIRECTORY,
	PW_MISSING,
	PW_NONE,
};

static const struct pw_case {
	const char *name;
	enum pw_setup setup;
	const char *data;	/* the command, or the file's contents */
	mode_t mode;
	int r;
	const char *want;	/* the password, or the message */
} pw_cases[] = {
	{ "command, first line", PW_COMMAND, "printf 'hunter2\\nsecond line\\n'", 0, 0,
	  "hunter2" },
	{ "command, CRLF", PW_COMMAND, "printf 'pw\\r\\n'", 0, 0, "pw" },
	{ "command, no newline", PW_COMMAND, "printf 'no newline'", 0, 0, "no newline" },
	{ "command, spaces kept", PW_COMMAND, "printf '  sp ace  \\n'", 0, 0, "  sp ace  " },
	{ "command, environment passed", PW_COMMAND, "printf '%s\\n' \"$KSYNC_TEST_PW\"", 0, 0,
	  "from-env" },
	{ "command, shell syntax", PW_COMMAND, "x=abc; echo \"$x\" | tr a-z A-Z", 0, 0, "ABC" },
	{ "command fails, output not shown", PW_COMMAND, "echo s3cret; exit 3", 0, -EIO,
	  "password_command exited with status 3" },
	{ "command fails, stderr passed on", PW_COMMAND,
	  "echo 'gpg: decryption failed: No secret key' >&2; echo more >&2; exit 2", 0, -EIO,
	  "password_command exited with status 2: gpg: decryption failed: No secret key; more" },
	{ "command not found, stderr dropped", PW_COMMAND, "/nonexistent/ksync-test 2>/dev/null",
	  0, -EIO, "password_command exited with status 127" },
	{ "secret-tool not installed", PW_COMMAND, "PATH=/nonexistent; secret-tool lookup a b",
	  0, -EIO, "password_command failed: secret-tool: not found — install libsecret-tools" },
	{ "pass not installed", PW_COMMAND, "PATH=/nonexistent pass show dav", 0, -EIO,
	  "password_command failed: pass: not found — install pass" },
	{ "command prints nothing", PW_COMMAND, "true", 0, -EIO,
	  "password_command printed nothing (nothing stored?)" },
	{ "command prints an empty first line", PW_COMMAND, "printf '\\nsecond\\n'", 0, -EIO,
	  "password_command printed nothing (nothing stored?)" },
	{ "command prints nothing, says why", PW_COMMAND, "echo 'no such entry' >&2", 0, -EIO,
	  "password_command printed nothing (nothing stored?): no such entry" },
	{ "command prints a NUL byte", PW_COMMAND, "printf 'a\\000b\\n'", 0, -EIO,
	  "password_command printed a NUL byte on its first line" },
	{ "command stdin is /dev/null", PW_COMMAND, "cat", 0, -EIO,
	  "password_command printed nothing (nothing stored?)" },
	{ "command killed", PW_COMMAND, "kill -9 $$", 0, -EIO,
	  "password_command was killed by signal 9" },
	{ "command prints too much", PW_COMMAND, "head -c 70000 /dev/zero | tr '\\000' x", 0,
	  -EIO, "password_command printed more than 65536 bytes" },
	{ "command never stops", PW_COMMAND, "yes", 0, -EIO,
	  "password_command printed more than 65536 bytes" },
	{ "command, long line just fits", PW_COMMAND, "head -c 65535 /dev/zero | tr '\\000' y; "
	  "echo", 0, 0, NULL },
	{ "command, stderr flood is no trouble", PW_COMMAND,
	  "head -c 200000 /dev/zero >&2; echo pw", 0, 0, "pw" },
	{ "file 0600", PW_FILE, "filepw\nignored\n", 0600, 0, "filepw" },
	{ "file 0400, CRLF", PW_FILE, "filepw\r\n", 0400, 0, "filepw" },
	{ "file without newline", PW_FILE, "filepw", 0600, 0, "filepw" },
	{ "file 0644", PW_FILE, "filepw\n", 0644, -EPERM,
	  "password file '@DIR@/pw' has mode 0644; it must not be readable by others "
	  "(chmod 600)" },
	{ "file 0640", PW_FILE, "filepw\n", 0640, -EPERM,
	  "password file '@DIR@/pw' has mode 0640; it must not be readable by others "
	  "(chmod 600)" },
	{ "file 0604", PW_FILE, "filepw\n", 0604, -EPERM,
	  "password file '@DIR@/pw' has mode 0604; it must not be readable by others "
	  "(chmod 600)" },
	{ "file empty", PW_FILE, "", 0600, -EIO,
	  "password file '@DIR@/pw' has nothing on its first line" },
	{ "file symlink", PW_SYMLINK, "filepw\n", 0600, -EPERM,
	  "password file '@DIR@/pw.link' is a symbolic link; point password_file at the file "
	  "itself" },
	{ "file is a directory", PW_DIRECTORY, NULL, 0700, -EPERM,
	  "password file '@DIR@/pw.d' is not a regular file" },
	{ "file missing", PW_MISSING, NULL, 0, -ENOENT,
	  "cannot open password file '@DIR@/pw.missing': No such file or directory" },
	{ "neither", PW_NONE, NULL, 0, -ENOKEY,
	  "neither password_command, password_file nor password_secret is set" },
};

static void run_pw_case(const struct pw_case *t)
{
	_cleanup_free_ char *file = NULL, *cmd = NULL;
	ks_account_config a = { .name = (char *) "test" };
	char *pw = (char *) &pw, *err = NULL;
	int r;

	switch (t->setup) {
	case PW_COMMAND:
		cmd = strdup(t->data);
		assert_non_null(cmd);
		a.password_command = cmd;
		break;
	case PW_FILE:
		file = subst("@DIR@/pw");
		write_file(file, t->data, strlen(t->data), t->mode);
		break;
	case PW_SYMLINK:
		file = subst("@DIR@/pw.link");
		write_file("pw.target", t->data, strlen(t->data), t->mode);
		(void) unlink(file);
		assert_int_equal(symlink("pw.target", file), 0);
		break;
	case PW_DIRECTORY:
		file = subst("@DIR@/pw.d");
		(void) rmdir(file);
		assert_int_equal(mkdir(file, t->mode), 0);
		break;
	case PW_MISSING:
		file = subst("@DIR@/pw.missing");
		break;
	case PW_NONE:
		break;
	}
	a.password_file = file;

	r = ks_account_get_password(&a, &pw, &err);
	if (r != t->r)
		fail_msg("case '%s': returned %d, want %d (%s)", t->name, r, t->r,
			 err ? err : "no message");
	if (r == 0) {
		assert_null(err);
		if (t->want)
			check_str(t->name, "password", pw, t->want);
		else
			assert_int_equal(strlen(pw), 65535);
		assert_null(ks_secret_free(pw));
	} else {
		assert_ptr_equal(pw, &pw);
		check_str(t->name, "message", err, t->want);
		free(err);
	}
}

static void test_passwords(void **state)
{
	assert_int_equal(setenv("KSYNC_TEST_PW", "from-env", 1), 0);
	for (size_t i = 0; i < ELEMENTSOF(pw_cases); i++)
		run_pw_case(&pw_cases[i]);
	assert_null(ks_secret_free(NULL));
}

/* A daemon blocks the signals it reads through signalfd; the command must not inherit that. */
static void test_password_command_signals(void **state)
{
	ks_account_config a = { .name = (char *) "test", .password_command = (char *) "kill $$" };
	sigset_t set, old;
	char *pw = NULL, *err = NULL;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	assert_int_equal(sigprocmask(SIG_BLOCK, &set, &old), 0);
	assert_int_equal(ks_account_get_password(&a, &pw, &err), -EIO);
	assert_int_equal(sigprocmask(SIG_SETMASK, &old, NULL), 0);
	assert_string_equal(err, "password_command was killed by signal 15");
	free(err);
}

static void test_password_file_other_owner(void **state)
{
	ks_account_config a = { .name = (char *) "test" };
	_cleanup_free_ char *want = NULL;
	char *pw = NULL, *err = NULL;

	if (geteuid() != 0)
		skip();
	a.password_file = subst("@DIR@/pw.other");
	write_file(a.password_file, "x\n", 2, 0600);
	assert_int_equal(chown(a.password_file, 1, 1), 0);
	assert_int_equal(ks_account_get_password(&a, &pw, &err), -EPERM);
	assert_true(asprintf(&want, "password file '%s' is owned by uid 1, not by uid 0",
			     a.password_file) > 0);
	assert_string_equal(err, want);
	free(err);
	free(a.password_file);
}

/* Whether pid is gone (or a zombie nobody reaps, which holds nothing). */
static bool process_gone(pid_t pid)
{
	char path[64], buf[256];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'Z';
}

static pid_t read_pid(const char *file)
{
	char buf[32] = "";
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	return (pid_t) strtol(buf, NULL, 10);
}

/* A command that hangs is stopped with everything it started, and says what to do. */
static void test_password_command_timeout(void **state)
{
	char *pw = NULL, *err = NULL;
	double t0 = now();
	int r = ks_secret_run_command("sleep 60 & echo $! > child.pid; wait", 1, NULL, &pw,
				      &err);
	double took = now() - t0;

	assert_int_equal(r, -ETIMEDOUT);
	assert_null(pw);
	assert_string_equal(err, "password_command did not finish within 1 s (a locked keyring, "
			    "or a prompt waiting for input?); it was stopped. Set "
			    "password_timeout to give it longer");
	free(err);
	err = NULL;
	assert_true(took >= 0.9 && took < 4.0);
	pid_t child = read_pid("child.pid");
	for (int i = 0; i < 50 && !process_gone(child); i++)
		usleep(20000);
	assert_true(process_gone(child));

	/* A command that ignores SIGTERM is killed all the same. */
	t0 = now();
	r = ks_secret_run_command("trap '' TERM; sleep 60 & wait; sleep 60", 1, NULL, &pw, &err);
	took = now() - t0;
	assert_int_equal(r, -ETIMEDOUT);
	free(err);
	assert_true(took < 5.0);
}

/* A command that ends but leaves a child holding stdout does not hold the caller. */
static void test_password_command_leftover_child(void **state)
{
	char *pw = NULL, *err = NULL;
	double t0 = now();

	assert_int_equal(ks_secret_run_command("echo pw; sleep 30 &", 20, NULL, &pw, &err), 0);
	assert_string_equal(pw, "pw");
	assert_true(now() - t0 < 2.0);
	ks_secret_free(pw);

	/* Without a line end, the rest is waited for a moment only. */
	t0 = now();
	assert_int_equal(ks_secret_run_command("printf pw2; (sleep 30 &)", 20, NULL, &pw, &err),
			 0);
	assert_string_equal(pw, "pw2");
	assert_true(now() - t0 < 3.0);
	ks_secret_free(pw);
}

static volatile int cancel_flag;

static void *set_cancel(void *p)
{
	usleep(300 * 1000);
	cancel_flag = 1;
	return NULL;
}

static void test_password_command_cancel(void **state)
{
	ks_account_config a = { .name = (char *) "test", .password_command = (char *) "sleep 60",
				.password_timeout = 30 };
	char *pw = NULL, *err = NULL;
	pthread_t t;
	double t0 = now();

	cancel_flag = 0;
	assert_int_equal(pthread_create(&t, NULL, set_cancel, NULL), 0);
	assert_int_equal(ks_secret_get(&a, &cancel_flag, &pw, &err), -ECANCELED);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(now() - t0 < 3.0);
	assert_string_equal(err, "password_command was stopped: the run was cancelled");
	free(err);
}

/* A lookup that finds nothing says so and how to store the password. */
static void test_password_command_store_hint(void **state)
{
	char *pw = NULL, *err = NULL;
	_cleanup_free_ char *cmd = NULL;

	assert_int_equal(mkdir("bin", 0700), 0);
	write_file("bin/secret-tool", "#!/bin/sh\nexit 1\n", 17, 0700);
	assert_true(asprintf(&cmd, "PATH=%s/bin:/usr/bin:/bin; secret-tool lookup service ksync "
			     "account work", tmpdir) > 0);
	/* Not the same words as the lookup: no hint. */
	assert_int_equal(ks_secret_run_command(cmd, 10, NULL, &pw, &err), -EIO);
	assert_string_equal(err, "password_command exited with status 1");
	free(err);
	err = NULL;

	assert_int_equal(setenv("PATH", "bin:/usr/bin:/bin", 1), 0);
	assert_int_equal(ks_secret_run_command("secret-tool lookup service ksync account work", 10,
					       NULL, &pw, &err), -EIO);
	assert_int_equal(setenv("PATH", "/usr/bin:/bin", 1), 0);
	assert_string_equal(err, "password_command printed nothing (nothing stored?) and exited "
			    "with status 1; store the password with: secret-tool store "
			    "--label=ksync service ksync account work");
	free(err);
}

static void test_store_hints(void **state)
{
	static const struct {
		const char *cmd, *want;
	} cases[] = {
		{ "secret-tool lookup service ksync account work",
		  "secret-tool store --label=ksync service ksync account work" },
		{ "  secret-tool   lookup a  b ", "secret-tool store --label=ksync a b" },
		{ "pass show dav/work", "pass insert dav/work" },
		{ "pass dav/work", "pass insert dav/work" },
		{ "secret-tool lookup a", NULL },
		{ "secret-tool lookup a b | head -1", NULL },
		{ "secret-tool lookup 'a b' c", NULL },
		{ "pass -c x", NULL },
		{ "gpg -d pw.gpg", NULL },
		{ "", NULL },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *hint = (char *) &hint;

		assert_int_equal(ks_secret_store_hint(cases[i].cmd, &hint), 0);
		check_str(cases[i].cmd, "hint", hint, cases[i].want);
		free(hint);
	}
	assert_string_equal(ks_secret_package_of("secret-tool"), "libsecret-tools");
	assert_string_equal(ks_secret_package_of("gpg"), "gnupg");
	assert_null(ks_secret_package_of("ksync-unknown"));
	assert_null(ks_secret_package_of(NULL));
}

static void test_attrs(void **state)
{
	static const struct {
		const char *text;
		const char *want;	/* "k=v|k=v", or the message */
		int r;
	} cases[] = {
		{ "service=ksync account=work", "service=ksync|account=work", 0 },
		{ "  a=1\tb=x=y ", "a=1|b=x=y", 0 },
		{ "", "no attributes; write them as key=value pairs, e.g. service=ksync "
		  "account=work", -EINVAL },
		{ "ksync", "'ksync' is not key=value", -EINVAL },
		{ "=v", "'=v' is not key=value", -EINVAL },
		{ "k=", "'k=' is not key=value", -EINVAL },
		{ "k=1 k=2", "attribute 'k' is given twice", -EINVAL },
		{ "a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1 j=1 k=1 l=1 m=1 n=1 o=1 p=1 q=1",
		  "more than 16 attributes", -EINVAL },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char **kv = NULL, *err = NULL;
		int r = ks_secret_attrs_parse(cases[i].text, &kv, &err);

		if (r != cases[i].r)
			fail_msg("'%s': %d (%s)", cases[i].text, r, err ? err : "");
		if (r < 0) {
			check_str(cases[i].text, "message", err, cases[i].want);
			free(err);
			continue;
		}
		ks_buf b = {};
		for (size_t k = 0; kv[k]; k += 2)
			assert_int_equal(ks_buf_printf(&b, "%s%s=%s", k ? "|" : "", kv[k],
						       kv[k + 1]), 0);
		check_str(cases[i].text, "attributes", b.data, cases[i].want);
		ks_buf_done(&b);
		ks_secret_attrs_free(kv);
	}

	char *ref = NULL;
	assert_int_equal(ks_secret_ref_for_account("work", &ref), 0);
	assert_string_equal(ref, "service=ksync account=work");
	free(ref);
}

/* Without a session bus, the Secret Service is reported missing, not a crash or a hang. */
static void test_no_secret_service(void **state)
{
	ks_account_config a = { .name = (char *) "t",
				.password_secret = (char *) "service=ksync account=t" };
	char *pw = NULL, *err = NULL;

	assert_int_equal(ks_secret_get(&a, NULL, &pw, &err), -EHOSTDOWN);
	assert_non_null(strstr(err, "no Secret Service"));
	free(err);
	err = NULL;
	assert_int_equal(ks_secret_service_store("service=ksync account=t", "x", "pw", 5, &err),
			 -EHOSTDOWN);
	free(err);
	err = NULL;
	assert_int_equal(ks_secret_service_store("bad", "x", "pw", 5, &err), -EINVAL);
	assert_string_equal(err, "password_secret 'bad': 'bad' is not key=value");
	free(err);
}

/* The fingerprint tells changed credentials apart without holding the password. */
static void test_fingerprint(void **state)
{
	ks_account_config a = { .url = (char *) "https://h.example/", .username = (char *) "u" };
	ks_account_config b = a;
	char f1[65], f2[65], f3[65], f4[65], f5[65];

	ks_secret_fingerprint(&a, "pw", f1);
	ks_secret_fingerprint(&b, "pw", f2);
	assert_string_equal(f1, f2);
	assert_int_equal(strlen(f1), 64);
	assert_int_equal(strspn(f1, "0123456789abcdef"), 64);
	assert_null(strstr(f1, "pw"));
	ks_secret_fingerprint(&a, "pw2", f3);
	b.username = (char *) "v";
	ks_secret_fingerprint(&b, "pw", f4);
	/* The parts are separated: "u" + "pw" is not "up" + "w". */
	b.username = (char *) "up";
	ks_secret_fingerprint(&b, "w", f5);
	assert_string_not_equal(f1, f3);
	assert_string_not_equal(f1, f4);
	assert_string_not_equal(f1, f5);
	ks_secret_fingerprint(&a, NULL, f5);
	assert_string_not_equal(f1, f5);
}

/* The run's events tell a password that could not be had from other failures of the
 * account by a field, not by their words. */
typedef struct failures {
	unsigned n;
	bool no_password;
	char message[256];
} failures;

static void on_account_event(const ks_sync_event *ev, void *userdata)
{
	failures *f = userdata;

	if (ev->type != KS_SYNC_ACCOUNT_FAILED)
		return;
	f->n++;
	f->no_password = ev->no_password;
	snprintf(f->message, sizeof(f->message), "%s", ev->message);
}

static void test_run_without_password(void **state)
{
	static const struct {
		char *command;
		bool no_password;
	} c[] = {
		{ "echo no keyring >&2; exit 3", true },
		/* The password is had; nothing listens on the port: a failure of another kind. */
		{ "echo secret", false },
	};
	ks_engine *e = NULL;

	assert_int_equal(ks_engine_new("data", &e), 0);
	for (size_t i = 0; i < ELEMENTSOF(c); i++) {
		ks_account_config a = {
			.name = (char *) "acct", .url = (char *) "http://127.0.0.1:1/",
			.username = (char *) "u", .password_command = c[i].command,
			.allow_insecure_http = true, .timeout = 5,
		};
		failures f = {};
		ks_sync_opts o = { .on_event = on_account_event, .userdata = &f };

		assert_true(ks_sync_account(e, &a, &o) < 0);
		if (f.n != 1 || f.no_password != c[i].no_password)
			fail_msg("case %zu: %u failures, no_password %d: %s", i, f.n, f.no_password,
				 f.message);
	}
	ks_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_passwords),
		cmocka_unit_test(test_password_command_signals),
		cmocka_unit_test(test_password_file_other_owner),
		cmocka_unit_test(test_password_command_timeout),
		cmocka_unit_test(test_password_command_leftover_child),
		cmocka_unit_test(test_password_command_cancel),
		cmocka_unit_test(test_password_command_store_hint),
		cmocka_unit_test(test_store_hints),
		cmocka_unit_test(test_attrs),
		cmocka_unit_test(test_no_secret_service),
		cmocka_unit_test(test_fingerprint),
		cmocka_unit_test(test_run_without_password),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
