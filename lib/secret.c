/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "buf_p.h"
#include "hash_p.h"
#include "macro.h"
#include "secret_p.h"
#include "text_p.h"

/* The Secret Service is the one service of the session bus the library talks to: it is
 * where the desktop keeps passwords, and a daemon that syncs must read them there. */
#define SS_NAME "org.freedesktop.secrets"
#define SS_PATH "/org/freedesktop/secrets"
#define SS_SERVICE "org.freedesktop.Secret.Service"
#define SS_COLLECTION "org.freedesktop.Secret.Collection"
#define SS_ITEM "org.freedesktop.Secret.Item"
#define SS_PROMPT "org.freedesktop.Secret.Prompt"
#define SS_SESSION "org.freedesktop.Secret.Session"

/* After the command has exited, how long a child it left behind may keep stdout open. */
#define LINGER_USEC (1000 * 1000ULL)
/* How often a wait looks at the cancel flag. */
#define POLL_MSEC 200
/* After SIGTERM, how long the group has before SIGKILL. */
#define TERM_GRACE_USEC (1000 * 1000ULL)

extern char **environ;

char *ks_secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
	return NULL;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static unsigned timeout_or_default(unsigned t)
{
	return t ? t : KS_SECRET_DEFAULT_TIMEOUT;
}

static void secret_buf_free(char *buf, size_t size)
{
	if (buf) {
		explicit_bzero(buf, size);
		free(buf);
	}
}

/* The first line without its line ending. -ENODATA when it is empty, -EBADMSG for a NUL. */
static int first_line(const char *buf, size_t len, char **ret)
{
	size_t n = 0;

	while (n < len && buf[n] != '\n')
		n++;
	while (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0)
		return -ENODATA;
	/* strndup would silently cut the password short at a NUL. */
	if (memchr(buf, 0, n))
		return -EBADMSG;
	char *s = strndup(buf, n);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* ---- hints -------------------------------------------------------------------------------- */

const char *ks_secret_package_of(const char *program)
{
	static const struct {
		const char *program, *package;
	} known[] = {
		{ "secret-tool", "libsecret-tools" },
		{ "pass", "pass" },
		{ "gpg", "gnupg" },
		{ "keepassxc-cli", "keepassxc" },
	};

	if (!program)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(known); i++)
		if (strcmp(program, known[i].program) == 0)
			return known[i].package;
	return NULL;
}

/* The words of cmd split at blanks (no quoting understood); NULL-terminated, *ret_n words. */
static char **split_words(const char *cmd, size_t *ret_n)
{
	size_t cap = 8, n = 0;
	char **w = calloc(cap, sizeof(char *));

	if (!w)
		return NULL;
	for (const char *p = cmd; *p;) {
		p += strspn(p, " \t");
		size_t len = strcspn(p, " \t");
		if (!len)
			break;
		if (n + 2 > cap) {
			char **nw = reallocarray(w, cap * 2, sizeof(char *));
			if (!nw)
				goto fail;
			w = nw;
			cap *= 2;
		}
		w[n] = strndup(p, len);
		if (!w[n])
			goto fail;
		w[++n] = NULL;
		p += len;
	}
	*ret_n = n;
	return w;
fail:
	for (size_t i = 0; i < n; i++)
		free(w[i]);
	free(w);
	return NULL;
}

static void words_free(char **w)
{
	for (size_t i = 0; w && w[i]; i++)
		free(w[i]);
	free(w);
}

int ks_secret_store_hint(const char *cmd, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	size_t n = 0;
	char **w;
	int r = 0;

	assert(cmd && ret);
	*ret = NULL;
	/* Anything the shell would interpret makes the words above meaningless. */
	if (strpbrk(cmd, "|;&<>$`\\\"'()"))
		return 0;
	w = split_words(cmd, &n);
	if (!w)
		return -ENOMEM;
	if (n >= 4 && n % 2 == 0 && strcmp(w[0], "secret-tool") == 0 &&
	    strcmp(w[1], "lookup") == 0) {
		r = ks_buf_puts(&b, "secret-tool store --label=ksync");
		for (size_t i = 2; r >= 0 && i < n; i++)
			r = ks_buf_printf(&b, " %s", w[i]);
	} else if (n == 3 && strcmp(w[0], "pass") == 0 && strcmp(w[1], "show") == 0)
		r = ks_buf_printf(&b, "pass insert %s", w[2]);
	else if (n == 2 && strcmp(w[0], "pass") == 0 && w[1][0] != '-')
		r = ks_buf_printf(&b, "pass insert %s", w[1]);
	words_free(w);
	if (r < 0)
		return r;
	if (b.len == 0)
		return 0;
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

/* stderr as one line for a message: trimmed, lines joined with "; ", control characters as
 * '?', at most 300 bytes. NULL when there is nothing to say. */
static char *stderr_text(const char *buf, size_t len)
{
	_cleanup_(ks_buf_done) ks_buf b = { .max = 512 };
	bool sep = false;

	for (size_t i = 0; i < len && b.len < 300; i++) {
		unsigned char c = (unsigned char) buf[i];

		if (c == '\n' || c == '\r') {
			sep = b.len > 0;
			continue;
		}
		if (sep && ks_buf_puts(&b, "; ") < 0)
			return NULL;
		sep = false;
		if (b.len == 0 && (c == ' ' || c == '\t'))
			continue;
		char ch = c < 0x20 || c == 0x7f ? '?' : (char) c;
		if (ks_buf_append(&b, &ch, 1) < 0)
			return NULL;
	}
	while (b.len > 0 && (b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '\t'))
		b.data[--b.len] = 0;
	if (b.len == 0)
		return NULL;
	return ks_buf_steal(&b);
}

/* The program a shell said it could not find ("sh: 1: secret-tool: not found"). */
static char *not_found_program(const char *err)
{
	const char *p = err ? strstr(err, ": not found") : NULL;

	if (!p)
		return NULL;
	const char *start = p;
	while (start > err && start[-1] != ' ' && start[-1] != ':')
		start--;
	if (start == p)
		return NULL;
	return strndup(start, (size_t) (p - start));
}

/* ---- password_command --------------------------------------------------------------------- */

typedef struct command_run {
	pid_t pid;
	int out, err;		/* read ends, -1 once at EOF */
	char *buf;		/* KS_SECRET_MAX + 1 bytes */
	size_t len;
	char errbuf[KS_SECRET_STDERR_MAX];
	size_t errlen;
	bool exited;
	int status;
} command_run;

static int spawn_command(const char *cmd, command_run *c)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	char sh[] = "sh", dash_c[] = "-c";
	_cleanup_free_ char *cmd_copy = strdup(cmd);
	char *argv[] = { sh, dash_c, cmd_copy, NULL };
	int out[2] = { -1, -1 }, err[2] = { -1, -1 }, r;

	if (!cmd_copy)
		return -ENOMEM;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(err, O_CLOEXEC) < 0) {
		r = -errno;
		(void) close(out[0]);
		(void) close(out[1]);
		return r;
	}

	/* The child must not inherit the caller's blocked signals or handlers: a daemon blocks
	 * the signals it reads through signalfd, and the command would then ignore SIGTERM. */
	sigemptyset(&none);
	sigfillset(&all);
	r = posix_spawn_file_actions_init(&fa);
	if (r == 0) {
		r = posix_spawnattr_init(&attr);
		if (r == 0) {
			/* dup2 first: should a pipe have got fd 0, opening /dev/null there would
			 * close it before it reached stdout. */
			r = posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
			if (r == 0)
				r = posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
			if (r == 0)
				r = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
								     O_RDONLY, 0);
			if (r == 0)
				r = posix_spawnattr_setsigmask(&attr, &none);
			if (r == 0)
				r = posix_spawnattr_setsigdefault(&attr, &all);
			/* A group of its own, so that a timeout ends whatever it started too. */
			if (r == 0)
				r = posix_spawnattr_setpgroup(&attr, 0);
			if (r == 0)
				r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
							     POSIX_SPAWN_SETSIGDEF |
							     POSIX_SPAWN_SETPGROUP);
			if (r == 0)
				r = posix_spawn(&c->pid, "/bin/sh", &fa, &attr, argv, environ);
			posix_spawnattr_destroy(&attr);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	(void) close(out[1]);
	(void) close(err[1]);
	if (r != 0) {
		(void) close(out[0]);
		(void) close(err[0]);
		return -r;
	}
	c->out = out[0];
	c->err = err[0];
	return 0;
}

static void reap(command_run *c, bool block)
{
	int st;
	pid_t p;

	if (c->exited)
		return;
	do
		p = waitpid(c->pid, &st, block ? 0 : WNOHANG);
	while (p < 0 && errno == EINTR);
	if (p == c->pid) {
		c->exited = true;
		c->status = st;
	} else if (p < 0) {
		/* Someone else reaped it (a SIGCHLD handler set to ignore): nothing to wait for. */
		c->exited = true;
		c->status = 0;
	}
}

/* Ends the command's process group: SIGTERM, a second to go, then SIGKILL. */
static void kill_group(command_run *c)
{
	(void) kill(-c->pid, SIGTERM);
	uint64_t until = now_usec() + TERM_GRACE_USEC;
	while (!c->exited && now_usec() < until) {
		reap(c, false);
		if (!c->exited)
			(void) poll(NULL, 0, 20);
	}
	/* The leader may have gone and left others of its group. */
	(void) kill(-c->pid, SIGKILL);
	reap(c, true);
}

/* Reads what is there on fd into buf (up to cap); -1 fd at EOF. Returns -EFBIG when full. */
static int drain(int *fd, char *buf, size_t *len, size_t cap, bool keep_reading)
{
	for (;;) {
		char dummy[512];
		bool full = *len >= cap;
		ssize_t n = read(*fd, full ? dummy : buf + *len, full ? sizeof(dummy) : cap - *len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0) {
			(void) close(*fd);
			*fd = -1;
			return 0;
		}
		if (full) {
			if (!keep_reading)
				return -EFBIG;
			continue;
		}
		*len += (size_t) n;
		if (*len >= cap && !keep_reading)
			return -EFBIG;
	}
}

static void command_run_done(command_run *c)
{
	if (c->out >= 0)
		(void) close(c->out);
	if (c->err >= 0)
		(void) close(c->err);
	secret_buf_free(c->buf, KS_SECRET_MAX + 1);
	explicit_bzero(c->errbuf, sizeof(c->errbuf));
}

/* The message for a command that failed or printed nothing: what it said on stderr, and what
 * to do. */
static int command_failure(const char *cmd, const command_run *c, int r, const char *what,
			   char **reterr_msg)
{
	_cleanup_free_ char *err = stderr_text(c->errbuf, c->errlen);
	_cleanup_free_ char *missing = NULL, *hint = NULL;
	const char *pkg = NULL;
	bool nothing = r == -ENODATA;

	if (!reterr_msg)
		return -EIO;
	if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 127) {
		missing = not_found_program(err);
		pkg = ks_secret_package_of(missing);
	}
	if (nothing || (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 1 && c->len == 0))
		(void) ks_secret_store_hint(cmd, &hint);

	if (missing && pkg)
		return ks_set_error(reterr_msg, -EIO, "password_command failed: %s: not found — "
				    "install %s", missing, pkg);
	if (missing)
		return ks_set_error(reterr_msg, -EIO, "password_command failed: %s: not found — "
				    "install it, or give its full path (PATH is %s)", missing,
				    getenv("PATH") ? getenv("PATH") : "not set");
	if (nothing || (hint && c->len == 0))
		return ks_set_error(reterr_msg, -EIO, "password_command printed nothing (nothing "
				    "stored?)%s%s%s%s%s%s", what ? " and " : "", what ? what : "",
				    err ? ": " : "", err ? err : "",
				    hint ? "; store the password with: " : "",
				    hint ? hint : "");
	return ks_set_error(reterr_msg, -EIO, "password_command %s%s%s", what, err ? ": " : "",
			    err ? err : "");
}

int ks_secret_run_command(const char *cmd, unsigned timeout_s, const volatile int *cancel,
			  char **ret, char **reterr_msg)
{
	command_run c = { .out = -1, .err = -1 };
	unsigned limit = timeout_or_default(timeout_s);
	uint64_t start = now_usec(), exited_at = 0;
	char what[64] = "";
	int r;

	assert(cmd && ret);
	c.buf = malloc(KS_SECRET_MAX + 1);
	if (!c.buf)
		return -ENOMEM;
	r = spawn_command(cmd, &c);
	if (r < 0) {
		command_run_done(&c);
		if (r == -ENOMEM)
			return r;
		return ks_set_error(reterr_msg, r, "cannot run password_command: %s", strerror(-r));
	}
	(void) fcntl(c.out, F_SETFL, O_NONBLOCK);
	(void) fcntl(c.err, F_SETFL, O_NONBLOCK);

	for (;;) {
		struct pollfd p[2] = { { .fd = c.out, .events = POLLIN },
				       { .fd = c.err, .events = POLLIN } };
		uint64_t now = now_usec();

		if (cancel && *cancel) {
			kill_group(&c);
			command_run_done(&c);
			return ks_set_error(reterr_msg, -ECANCELED, "password_command was stopped: "
					    "the run was cancelled");
		}
		if (now - start >= (uint64_t) limit * 1000000ULL) {
			kill_group(&c);
			command_run_done(&c);
			return ks_set_error(reterr_msg, -ETIMEDOUT, "password_command did not finish "
					    "within %u s (a locked keyring, or a prompt waiting for "
					    "input?); it was stopped. Set password_timeout to give it "
					    "longer", limit);
		}
		(void) poll(p, 2, POLL_MSEC);
		if (c.out >= 0) {
			r = drain(&c.out, c.buf, &c.len, KS_SECRET_MAX + 1, false);
			if (r == -EFBIG) {
				kill_group(&c);
				command_run_done(&c);
				return ks_set_error(reterr_msg, -EIO, "password_command printed more "
						    "than %d bytes", KS_SECRET_MAX);
			}
		}
		if (c.err >= 0)
			(void) drain(&c.err, c.errbuf, &c.errlen, sizeof(c.errbuf), true);
		reap(&c, false);
		if (!c.exited)
			continue;
		if (!exited_at)
			exited_at = now_usec();
		/* Done at the end of stdout; or, since the command itself has ended, as soon as
		 * its first line is complete, or after a short wait for a child it left. */
		if (c.out < 0 || memchr(c.buf, '\n', c.len) || now_usec() - exited_at > LINGER_USEC)
			break;
	}
	/* What a child left behind writes from now on, nobody reads. */
	if (c.err >= 0)
		(void) drain(&c.err, c.errbuf, &c.errlen, sizeof(c.errbuf), true);

	if (WIFSIGNALED(c.status))
		snprintf(what, sizeof(what), "was killed by signal %d", WTERMSIG(c.status));
	else if (WEXITSTATUS(c.status) != 0)
		snprintf(what, sizeof(what), "exited with status %d", WEXITSTATUS(c.status));
	if (what[0])
		r = command_failure(cmd, &c, -EIO, what, reterr_msg);
	else {
		r = first_line(c.buf, c.len, ret);
		if (r == -ENODATA)
			r = command_failure(cmd, &c, r, NULL, reterr_msg);
		else if (r == -EBADMSG)
			r = ks_set_error(reterr_msg, -EIO, "password_command printed a NUL byte on "
					 "its first line");
	}
	command_run_done(&c);
	return r;
}

/* ---- password_file ------------------------------------------------------------------------ */

/* Reads fd to its end into buf (KS_SECRET_MAX + 1 bytes). -EFBIG when there is more. */
static int read_all(int fd, char *buf, size_t *ret_len)
{
	size_t len = 0;

	while (len <= KS_SECRET_MAX) {
		ssize_t n = read(fd, buf + len, KS_SECRET_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			*ret_len = len;
			return 0;
		}
		len += (size_t) n;
	}
	return -EFBIG;
}

int ks_secret_read_file(const char *path, char **ret, char **reterr_msg)
{
	struct stat st;
	size_t len = 0;
	char *buf;
	int fd, r;

	assert(path && ret);
	/* O_NONBLOCK: a FIFO planted in place of the file must not hang the open. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP)
			return ks_set_error(reterr_msg, -EPERM, "password file '%s' is a symbolic "
					    "link; point password_file at the file itself", path);
		return ks_set_error(reterr_msg, r, "cannot open password file '%s': %s", path,
				    strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		(void) close(fd);
		return ks_set_error(reterr_msg, r, "cannot stat password file '%s': %s", path,
				    strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		r = ks_set_error(reterr_msg, -EPERM, "password file '%s' is not a regular file",
				 path);
	else if (st.st_uid != geteuid())
		r = ks_set_error(reterr_msg, -EPERM, "password file '%s' is owned by uid %u, not "
				 "by uid %u", path, (unsigned) st.st_uid, (unsigned) geteuid());
	else if (st.st_mode & 077)
		r = ks_set_error(reterr_msg, -EPERM, "password file '%s' has mode %04o; it must "
				 "not be readable by others (chmod 600)", path,
				 (unsigned) (st.st_mode & 07777));
	else
		r = 0;
	if (r < 0) {
		(void) close(fd);
		return r;
	}

	buf = malloc(KS_SECRET_MAX + 1);
	if (!buf) {
		(void) close(fd);
		return -ENOMEM;
	}
	r = read_all(fd, buf, &len);
	(void) close(fd);
	/* Only the first line counts, so a long file is fine as long as that line fits. */
	if (r == -EFBIG) {
		len = KS_SECRET_MAX + 1;
		r = memchr(buf, '\n', len) ? 0 :
		    ks_set_error(reterr_msg, -EIO, "password file '%s' has a first line longer "
				 "than %d bytes", path, KS_SECRET_MAX);
	} else if (r < 0)
		r = ks_set_error(reterr_msg, r, "cannot read password file '%s': %s", path,
				 strerror(-r));
	if (r == 0) {
		r = first_line(buf, len, ret);
		if (r == -ENODATA || r == -EBADMSG)
			r = ks_set_error(reterr_msg, -EIO, "password file '%s' has %s on its first "
					 "line", path, r == -ENODATA ? "nothing" : "a NUL byte");
	}
	secret_buf_free(buf, KS_SECRET_MAX + 1);
	return r;
}

/* ---- Secret Service attributes ------------------------------------------------------------ */

void ks_secret_attrs_free(char **kv)
{
	words_free(kv);
}

static void attrs_freep(char ***kv)
{
	words_free(*kv);
}

int ks_secret_attrs_parse(const char *s, char ***ret, char **reterr_msg)
{
	size_t n = 0;
	char **w;

	assert(s && ret);
	w = split_words(s, &n);
	if (!w)
		return -ENOMEM;
	if (n == 0) {
		words_free(w);
		return ks_set_error(reterr_msg, -EINVAL, "no attributes; write them as key=value "
				    "pairs, e.g. service=ksync account=work");
	}
	if (n > KS_SECRET_MAX_ATTRS) {
		words_free(w);
		return ks_set_error(reterr_msg, -EINVAL, "more than %d attributes",
				    KS_SECRET_MAX_ATTRS);
	}
	char **kv = calloc(2 * n + 1, sizeof(char *));
	if (!kv) {
		words_free(w);
		return -ENOMEM;
	}
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		char *eq = strchr(w[i], '=');

		if (!eq || eq == w[i] || !eq[1]) {
			r = ks_set_error(reterr_msg, -EINVAL, "'%s' is not key=value", w[i]);
			break;
		}
		for (size_t j = 0; j < i; j++)
			if (strncmp(kv[2 * j], w[i], (size_t) (eq - w[i])) == 0 &&
			    kv[2 * j][eq - w[i]] == 0)
				r = ks_set_error(reterr_msg, -EINVAL, "attribute '%.*s' is given "
						 "twice", (int) (eq - w[i]), w[i]);
		if (r < 0)
			break;
		kv[2 * i] = strndup(w[i], (size_t) (eq - w[i]));
		kv[2 * i + 1] = strdup(eq + 1);
		if (!kv[2 * i] || !kv[2 * i + 1])
			r = -ENOMEM;
	}
	words_free(w);
	if (r < 0) {
		words_free(kv);
		return r;
	}
	*ret = kv;
	return 0;
}

int ks_secret_ref_for_account(const char *account, char **ret)
{
	assert(account && ret);
	if (asprintf(ret, "service=ksync account=%s", account) < 0)
		return -ENOMEM;
	return 0;
}

/* ---- the Secret Service over D-Bus -------------------------------------------------------- */

typedef struct ss {
	sd_bus *bus;
	char *session;
	uint64_t deadline;
	const volatile int *cancel;
} ss;

static void ss_done(ss *s)
{
	if (s->bus && s->session)
		(void) sd_bus_call_method(s->bus, SS_NAME, s->session, SS_SESSION, "Close", NULL,
					  NULL, "");
	free(s->session);
	sd_bus_flush_close_unref(s->bus);
	*s = (ss) {};
}

static bool bus_error_is(const sd_bus_error *e, const char *name)
{
	return e && e->name && strcmp(e->name, name) == 0;
}

/* A failed call as errno and message: -EHOSTDOWN when nobody owns the service's name. */
static int ss_error(const sd_bus_error *e, int r, const char *what, char **reterr_msg)
{
	if (bus_error_is(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
	    bus_error_is(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
	    bus_error_is(e, "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"))
		return ks_set_error(reterr_msg, -EHOSTDOWN, "no Secret Service (%s) on the session "
				    "bus: no keyring program (GNOME Keyring, KWallet, KeePassXC) "
				    "offers one", SS_NAME);
	if (r == -ETIMEDOUT || bus_error_is(e, SD_BUS_ERROR_TIMEOUT) ||
	    bus_error_is(e, SD_BUS_ERROR_NO_REPLY))
		return ks_set_error(reterr_msg, -ETIMEDOUT, "the Secret Service did not answer %s",
				    what);
	return ks_set_error(reterr_msg, -EIO, "the Secret Service failed to %s: %s", what,
			    e && e->message ? e->message : strerror(-r));
}

static int ss_open(ss *s, unsigned timeout_s, const volatile int *cancel, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *path;
	int r;

	s->deadline = now_usec() + (uint64_t) timeout_or_default(timeout_s) * 1000000ULL;
	s->cancel = cancel;
	r = sd_bus_open_user(&s->bus);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return ks_set_error(reterr_msg, -EHOSTDOWN, "no Secret Service: cannot connect to "
				    "the session bus (%s)", r == -ENOMEDIUM ? "neither "
				    "DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set" :
				    strerror(-r));
	(void) sd_bus_set_method_call_timeout(s->bus, KS_MIN(timeout_or_default(timeout_s), 25U)
					      * 1000000ULL);
	/* "plain": the secret crosses the session bus, which only this user can connect to, as
	 * it would with the other algorithm once decrypted by the same process. */
	r = sd_bus_call_method(s->bus, SS_NAME, SS_PATH, SS_SERVICE, "OpenSession", &e, &reply,
			       "sv", "plain", "s", "");
	if (r < 0)
		return ss_error(&e, r, "open a session", reterr_msg);
	r = sd_bus_message_skip(reply, "v");
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered OpenSession "
				    "with something unexpected: %s", strerror(-r));
	s->session = strdup(path);
	return s->session ? 0 : -ENOMEM;
}

typedef struct prompt_wait {
	bool done, dismissed;
	char *result;	/* the object path of the result, or the first of an array */
} prompt_wait;

static int on_completed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	prompt_wait *w = userdata;
	int dismissed = 0;
	const char *contents = NULL;
	char type;

	w->done = true;
	if (sd_bus_message_read(m, "b", &dismissed) < 0)
		return 0;
	w->dismissed = dismissed;
	if (sd_bus_message_peek_type(m, &type, &contents) <= 0 || type != 'v' || !contents)
		return 0;
	if (sd_bus_message_enter_container(m, 'v', contents) < 0)
		return 0;
	const char *path = NULL;
	if (strcmp(contents, "o") == 0)
		(void) sd_bus_message_read(m, "o", &path);
	else if (strcmp(contents, "ao") == 0 && sd_bus_message_enter_container(m, 'a', "o") > 0)
		(void) sd_bus_message_read(m, "o", &path);
	if (path && strcmp(path, "/") != 0)
		w->result = strdup(path);
	return 0;
}

/* Shows the prompt at path (an unlock or confirmation dialog of the keyring) and waits for
 * the user's answer. *ret_result (if not NULL) gets the object path the prompt produced. */
static int ss_prompt(ss *s, const char *path, const char *what, char **ret_result,
		     char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
	prompt_wait w = {};
	int r;

	r = sd_bus_match_signal(s->bus, &slot, NULL, path, SS_PROMPT, "Completed", on_completed,
				&w);
	if (r < 0)
		return ks_set_error(reterr_msg, r == -ENOMEM ? r : -EIO, "cannot wait for the "
				    "Secret Service's prompt: %s", strerror(-r));
	r = sd_bus_call_method(s->bus, SS_NAME, path, SS_PROMPT, "Prompt", &e, NULL, "s", "");
	if (r < 0)
		return ss_error(&e, r, what, reterr_msg);
	while (!w.done) {
		uint64_t now = now_usec();

		if ((s->cancel && *s->cancel) || now >= s->deadline) {
			(void) sd_bus_call_method(s->bus, SS_NAME, path, SS_PROMPT, "Dismiss", NULL,
						  NULL, "");
			free(w.result);
			if (s->cancel && *s->cancel)
				return ks_set_error(reterr_msg, -ECANCELED, "stopped waiting for the "
						    "keyring to %s: the run was cancelled", what);
			return ks_set_error(reterr_msg, -ETIMEDOUT, "the keyring asked for its "
					    "password to %s and got no answer in time (unlock it, e.g. "
					    "by logging in to the desktop, and try again)", what);
		}
		r = sd_bus_process(s->bus, NULL);
		if (r < 0) {
			free(w.result);
			return ks_set_error(reterr_msg, -EIO, "lost the session bus while the "
					    "keyring asked for its password: %s", strerror(-r));
		}
		if (r > 0)
			continue;
		(void) sd_bus_wait(s->bus, KS_MIN(s->deadline - now, POLL_MSEC * 1000ULL));
	}
	if (w.dismissed) {
		free(w.result);
		return ks_set_error(reterr_msg, -EACCES, "the keyring is locked and its unlock "
				    "prompt was dismissed or could not be shown, so ksync cannot %s; "
				    "unlock the keyring (log in to the desktop, or use Seahorse) and "
				    "try again", what);
	}
	if (ret_result)
		*ret_result = w.result;
	else
		free(w.result);
	return 0;
}

/* Unlocks the objects at paths (items or collections) through the service's prompt. */
static int ss_unlock(ss *s, char **paths, const char *what, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
	const char *prompt;
	int r;

	r = sd_bus_message_new_method_call(s->bus, &call, SS_NAME, SS_PATH, SS_SERVICE, "Unlock");
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "o");
	for (size_t i = 0; r >= 0 && paths[i]; i++)
		r = sd_bus_message_append(call, "o", paths[i]);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	r = sd_bus_call(s->bus, call, 0, &e, &reply);
	if (r < 0)
		return ss_error(&e, r, what, reterr_msg);
	r = sd_bus_message_skip(reply, "ao");
	if (r >= 0)
		r = sd_bus_message_read(reply, "o", &prompt);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered Unlock with "
				    "something unexpected");
	if (strcmp(prompt, "/") == 0)
		return 0;
	return ss_prompt(s, prompt, what, NULL, reterr_msg);
}

static int append_attrs(sd_bus_message *m, char **kv)
{
	int r = sd_bus_message_open_container(m, 'a', "{ss}");

	for (size_t i = 0; r >= 0 && kv[i]; i += 2)
		r = sd_bus_message_append(m, "{ss}", kv[i], kv[i + 1]);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static int ss_get_secret(ss *s, const char *item, char **ret, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const void *value = NULL;
	size_t size = 0;
	int r;

	r = sd_bus_call_method(s->bus, SS_NAME, item, SS_ITEM, "GetSecret", &e, &reply, "o",
			       s->session);
	if (r < 0)
		return ss_error(&e, r, "read the password", reterr_msg);
	/* The reply holds the secret: wiped when freed. */
	(void) sd_bus_message_sensitive(reply);
	r = sd_bus_message_enter_container(reply, 'r', "oayays");
	if (r >= 0)
		r = sd_bus_message_skip(reply, "o");
	if (r >= 0)
		r = sd_bus_message_skip(reply, "ay");
	if (r >= 0)
		r = sd_bus_message_read_array(reply, 'y', &value, &size);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered GetSecret with "
				    "something unexpected");
	if (size > KS_SECRET_MAX)
		return ks_set_error(reterr_msg, -EIO, "the stored password is longer than %d bytes",
				    KS_SECRET_MAX);
	r = first_line(value ? value : "", size, ret);
	if (r == -ENODATA || r == -EBADMSG)
		return ks_set_error(reterr_msg, -EIO, "the stored password %s",
				    r == -ENODATA ? "is empty" : "holds a NUL byte");
	return r;
}

int ks_secret_service_lookup(const char *attrs, unsigned timeout_s, const volatile int *cancel,
			     char **ret, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
	_cleanup_(ss_done) ss s = {};
	_cleanup_(attrs_freep) char **kv = NULL;
	_cleanup_free_ char *why = NULL;
	char **unlocked = NULL, **locked = NULL;
	int r;

	assert(attrs && ret);
	r = ks_secret_attrs_parse(attrs, &kv, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "password_secret '%s': %s", attrs,
				    why ? why : strerror(-r));
	r = ss_open(&s, timeout_s, cancel, reterr_msg);
	if (r < 0)
		return r;
	r = sd_bus_message_new_method_call(s.bus, &call, SS_NAME, SS_PATH, SS_SERVICE,
					   "SearchItems");
	if (r >= 0)
		r = append_attrs(call, kv);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	r = sd_bus_call(s.bus, call, 0, &e, &reply);
	if (r < 0)
		return ss_error(&e, r, "search for the password", reterr_msg);
	r = sd_bus_message_read_strv(reply, &unlocked);
	if (r >= 0)
		r = sd_bus_message_read_strv(reply, &locked);
	if (r < 0) {
		words_free(unlocked);
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered SearchItems "
				    "with something unexpected");
	}
	if ((!unlocked || !unlocked[0]) && (!locked || !locked[0])) {
		words_free(unlocked);
		words_free(locked);
		_cleanup_(ks_buf_done) ks_buf hint = {};
		for (size_t i = 0; kv[i]; i += 2)
			if (ks_buf_printf(&hint, " %s %s", kv[i], kv[i + 1]) < 0)
				return -ENOMEM;
		return ks_set_error(reterr_msg, -ENOENT, "the Secret Service holds no password "
				    "with the attributes %s (nothing stored? store one with: "
				    "secret-tool store --label=ksync%s)", attrs, hint.data);
	}
	_cleanup_free_ char *item = NULL;
	if (unlocked && unlocked[0])
		item = strdup(unlocked[0]);
	else {
		r = ss_unlock(&s, (char *[]) { locked[0], NULL }, "read the password", reterr_msg);
		if (r >= 0)
			item = strdup(locked[0]);
	}
	words_free(unlocked);
	words_free(locked);
	if (r < 0)
		return r;
	if (!item)
		return -ENOMEM;
	return ss_get_secret(&s, item, ret, reterr_msg);
}

/* The collection new items go to: the "default" alias, made when there is none. */
static int ss_default_collection(ss *s, char **ret, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *path;
	int r;

	r = sd_bus_call_method(s->bus, SS_NAME, SS_PATH, SS_SERVICE, "ReadAlias", &e, &reply, "s",
			       "default");
	if (r < 0)
		return ss_error(&e, r, "find the default keyring", reterr_msg);
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered ReadAlias with "
				    "something unexpected");
	if (strcmp(path, "/") != 0) {
		*ret = strdup(path);
		return *ret ? 0 : -ENOMEM;
	}

	/* No default keyring yet: the service asks the user for the new keyring's password. */
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *created = NULL;
	const char *prompt;
	sd_bus_error_free(&e);
	r = sd_bus_call_method(s->bus, SS_NAME, SS_PATH, SS_SERVICE, "CreateCollection", &e,
			       &created, "a{sv}s", 1, SS_COLLECTION ".Label", "s", "Login",
			       "default");
	if (r < 0)
		return ss_error(&e, r, "create a keyring", reterr_msg);
	r = sd_bus_message_read(created, "oo", &path, &prompt);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered "
				    "CreateCollection with something unexpected");
	if (strcmp(path, "/") != 0) {
		*ret = strdup(path);
		return *ret ? 0 : -ENOMEM;
	}
	r = ss_prompt(s, prompt, "create a keyring", ret, reterr_msg);
	if (r >= 0 && !*ret)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service created no keyring");
	return r;
}

int ks_secret_service_store(const char *attrs, const char *label, const char *secret,
			    unsigned timeout_s, char **reterr_msg)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
	_cleanup_(ss_done) ss s = {};
	_cleanup_(attrs_freep) char **kv = NULL;
	_cleanup_free_ char *why = NULL, *coll = NULL;
	const char *item, *prompt;
	int locked = 0, r;

	assert(attrs && label && secret);
	r = ks_secret_attrs_parse(attrs, &kv, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "password_secret '%s': %s", attrs,
				    why ? why : strerror(-r));
	if (!*secret || strpbrk(secret, "\r\n"))
		return ks_set_error(reterr_msg, -EINVAL, "the password is empty or holds a line "
				    "break");
	r = ss_open(&s, timeout_s, NULL, reterr_msg);
	if (r < 0)
		return r;
	r = ss_default_collection(&s, &coll, reterr_msg);
	if (r < 0)
		return r;
	r = sd_bus_get_property_trivial(s.bus, SS_NAME, coll, SS_COLLECTION, "Locked", &e, 'b',
					&locked);
	if (r < 0)
		return ss_error(&e, r, "look at the keyring", reterr_msg);
	if (locked) {
		r = ss_unlock(&s, (char *[]) { coll, NULL }, "store the password", reterr_msg);
		if (r < 0)
			return r;
	}

	r = sd_bus_message_new_method_call(s.bus, &call, SS_NAME, coll, SS_COLLECTION,
					   "CreateItem");
	if (r >= 0)
		(void) sd_bus_message_sensitive(call);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(call, "{sv}", SS_ITEM ".Label", "s", label);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append(call, "s", SS_ITEM ".Attributes");
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'v', "a{ss}");
	if (r >= 0)
		r = append_attrs(call, kv);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'r', "oayays");
	if (r >= 0)
		r = sd_bus_message_append(call, "o", s.session);
	if (r >= 0)
		r = sd_bus_message_append_array(call, 'y', NULL, 0);
	if (r >= 0)
		r = sd_bus_message_append_array(call, 'y', secret, strlen(secret));
	if (r >= 0)
		r = sd_bus_message_append(call, "s", "text/plain");
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	/* Replace: storing again for the same account updates its password. */
	if (r >= 0)
		r = sd_bus_message_append(call, "b", 1);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	sd_bus_error_free(&e);
	r = sd_bus_call(s.bus, call, 0, &e, &reply);
	if (r < 0)
		return ss_error(&e, r, "store the password", reterr_msg);
	r = sd_bus_message_read(reply, "oo", &item, &prompt);
	if (r < 0)
		return ks_set_error(reterr_msg, -EIO, "the Secret Service answered CreateItem "
				    "with something unexpected");
	if (strcmp(item, "/") == 0)
		return ss_prompt(&s, prompt, "store the password", NULL, reterr_msg);
	return 0;
}

/* ---- the account's password --------------------------------------------------------------- */

int ks_secret_get(const ks_account_config *a, const volatile int *cancel, char **ret,
		  char **reterr_msg)
{
	assert(a && ret);
	if (a->password_command)
		return ks_secret_run_command(a->password_command, a->password_timeout, cancel,
					     ret, reterr_msg);
	if (a->password_file)
		return ks_secret_read_file(a->password_file, ret, reterr_msg);
	if (a->password_secret)
		return ks_secret_service_lookup(a->password_secret, a->password_timeout, cancel,
						ret, reterr_msg);
	return ks_set_error(reterr_msg, -ENOKEY, "neither password_command, password_file nor "
			    "password_secret is set");
}

int ks_account_get_password(const ks_account_config *a, char **ret, char **reterr_msg)
{
	return ks_secret_get(a, NULL, ret, reterr_msg);
}

void ks_secret_fingerprint(const ks_account_config *a, const char *password, char ret[65])
{
	static const char tag[] = "ksync credentials";
	const char *parts[] = { a->url ? a->url : "", a->username ? a->username : "",
				password ? password : "" };
	uint8_t digest[32];
	ks_sha256 h;

	ks_sha256_init(&h);
	ks_sha256_update(&h, tag, sizeof(tag));
	for (size_t i = 0; i < ELEMENTSOF(parts); i++)
		ks_sha256_update(&h, parts[i], strlen(parts[i]) + 1);
	ks_sha256_final(&h, digest);
	explicit_bzero(&h, sizeof(h));
	for (size_t i = 0; i < 32; i++)
		snprintf(ret + 2 * i, 3, "%02x", digest[i]);
}
