/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf_p.h"
#include "config_p.h"
#include "fsutil_p.h"
#include "ksync.h"
#include "macro.h"
#include "manage_p.h"
#include "text_p.h"

/* Changing ksync.conf: an [account] section added or removed, every other byte kept, the new
 * file parsed before it atomically replaces the old one. */

static bool is_blank(char ch)
{
	return ch && strchr(" \t\r\f\v", ch);
}

/* "key = value", the value in quotes when strip() or conf_unquote() would change it. */
static int conf_put_value(ks_buf *b, const char *key, const char *value, const char *eol)
{
	size_t n = strlen(value);
	int r;

	r = ks_buf_printf(b, "%s = ", key);
	if (r < 0)
		return r;
	if (value[0] != '"' && !is_blank(value[0]) && !is_blank(value[n - 1]))
		r = ks_buf_puts(b, value);
	else {
		r = ks_buf_puts(b, "\"");
		for (const char *p = value; r >= 0 && *p; p++) {
			if (*p == '"' || *p == '\\')
				r = ks_buf_puts(b, "\\");
			if (r >= 0)
				r = ks_buf_append(b, p, 1);
		}
		if (r >= 0)
			r = ks_buf_puts(b, "\"");
	}
	return r < 0 ? r : ks_buf_puts(b, eol);
}

static void format_duration(unsigned secs, char *buf, size_t size)
{
	if (secs % 86400 == 0)
		snprintf(buf, size, "%ud", secs / 86400);
	else if (secs % 3600 == 0)
		snprintf(buf, size, "%uh", secs / 3600);
	else if (secs % 60 == 0)
		snprintf(buf, size, "%umin", secs / 60);
	else
		snprintf(buf, size, "%u", secs);
}

/* Appends the [account NAME] section of a to b, lines ending in eol. */
static int conf_put_account(ks_buf *b, const ks_account_config *a, const char *eol,
			    char **reterr_msg)
{
	const char *provider_url = ks_config_provider_url(a->provider);
	char interval[32] = "";
	int r;

	if (!a->name || !ks_config_account_name_is_valid(a->name))
		return ks_set_error(reterr_msg, -EINVAL, "invalid account name '%s'; use 1 to %u "
				   "of A-Z a-z 0-9 . _ -, not starting with '.'",
				   a->name ? a->name : "", KS_ACCOUNT_NAME_MAX);
	if (a->interval)
		format_duration(a->interval, interval, sizeof(interval));

	const struct {
		const char *key, *value;
	} kv[] = {
		{ "provider", a->provider },
		{ "feed", a->feed },
		{ "url", a->feed || (provider_url && a->url && strcmp(a->url, provider_url) == 0)
			 ? NULL : a->url },
		{ "username", a->username },
		{ "password_command", a->password_command },
		{ "password_file", a->password_file },
		{ "password_secret", a->password_secret },
		{ "ca_file", a->ca_file },
		{ "allow_insecure_http", a->allow_insecure_http ? "true" : NULL },
		{ "interval", interval },
		{ "conflict", a->conflict == KS_CONFLICT_MODE_SERVER_WINS ? "server-wins" :
			      a->conflict == KS_CONFLICT_MODE_LOCAL_WINS ? "local-wins" : NULL },
		{ "collections", a->collections == KS_NEW_COLLECTIONS_ALL ? "all" :
				 a->collections == KS_NEW_COLLECTIONS_NONE ? "none" : NULL },
		{ "calendars_path", a->calendars_path },
		{ "contacts_path", a->contacts_path },
	};

	r = ks_buf_printf(b, "[account %s]%s", a->name, eol);
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(kv); i++) {
		if (!kv[i].value || !*kv[i].value)
			continue;
		/* A line break would end the value early and start a line of its own. */
		if (strpbrk(kv[i].value, "\r\n"))
			return ks_set_error(reterr_msg, -EINVAL, "the value of %s contains a line "
					   "break, which ksync.conf cannot hold", kv[i].key);
		r = conf_put_value(b, kv[i].key, kv[i].value, eol);
	}
	/* path = lines: "KIND/NAME\nDIR\n" each. */
	for (const char *p = a->paths; r >= 0 && p && *p;) {
		const char *nl = strchr(p, '\n'), *end = nl ? strchr(nl + 1, '\n') : NULL;
		_cleanup_free_ char *v = NULL;
		if (!end || strchr(nl + 1, '\r'))
			return ks_set_error(reterr_msg, -EINVAL, "invalid path list");
		if (asprintf(&v, "%.*s %.*s", (int) (nl - p), p, (int) (end - nl - 1), nl + 1) < 0)
			return -ENOMEM;
		r = conf_put_value(b, "path", v, eol);
		p = end + 1;
	}
	if (r == -EFBIG)
		return ks_set_error(reterr_msg, -EINVAL, "the settings of account '%s' are too "
				   "long", a->name);
	return r;
}

/* Removes "label:N: " from the start of every line of msg. */
static void strip_locations(char *msg, const char *label)
{
	size_t n = strlen(label);
	char *out = msg;

	for (const char *p = msg; *p;) {
		const char *eol = strchrnul(p, '\n');

		if (strncmp(p, label, n) == 0 && p[n] == ':') {
			const char *q = p + n + 1;

			q += strspn(q, "0123456789");
			if (*q == ':')
				q++;
			p = q + strspn(q, " ");
		}
		memmove(out, p, (size_t) (eol - p));
		out += eol - p;
		if (*eol)
			*out++ = '\n';
		p = *eol ? eol + 1 : eol;
	}
	*out = 0;
}

int ks_config_check_account(const ks_account_config *a, ks_config **ret, char **reterr_msg)
{
	static const char label[] = "ksync.conf";
	_cleanup_(ks_buf_done) ks_buf text = { .max = KS_CONFIG_MAX_SIZE };
	char *msg = NULL;
	int r;

	assert(a && ret);
	r = conf_put_account(&text, a, "\n", reterr_msg);
	if (r < 0)
		return r;
	r = ks_config_parse_text(label, &text, false, ret, &msg);
	if (r < 0 && msg)
		strip_locations(msg, label);
	if (r < 0 && reterr_msg) {
		free(*reterr_msg);
		*reterr_msg = msg;
	} else
		free(msg);
	return r;
}

/* The config file being changed: its directory locked, its old contents read. */
typedef struct conf_file {
	const char *path;	/* as given, for messages and relative paths */
	char *target;		/* the file written: path, or what a symbolic link there names */
	char *dir, *base;
	int dirfd;
	bool existed;
	mode_t mode;
	ks_buf old;
	const char *eol;	/* the file's own line ending */
} conf_file;

static void conf_file_done(conf_file *f)
{
	/* Closing the directory drops the lock. */
	if (f->dirfd >= 0)
		(void) close(f->dirfd);
	free(f->target);
	free(f->dir);
	free(f->base);
	ks_buf_done(&f->old);
}

static int conf_file_open(const char *path, bool create, conf_file *f, char **reterr_msg)
{
	struct stat st;
	int r;

	f->path = path;
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		f->target = realpath(path, NULL);
		if (!f->target) {
			r = -errno;
			return ks_set_error(reterr_msg, r, "cannot follow the symbolic link '%s': %s",
					   path, strerror(-r));
		}
	} else
		f->target = strdup(path);
	if (!f->target)
		return -ENOMEM;

	const char *slash = strrchr(f->target, '/');
	f->dir = slash ? strndup(f->target, slash == f->target ? 1 : (size_t) (slash - f->target))
		       : strdup(".");
	f->base = strdup(slash ? slash + 1 : f->target);
	if (!f->dir || !f->base)
		return -ENOMEM;
	if (!*f->base)
		return ks_set_error(reterr_msg, -EISDIR, "'%s' names a directory", path);
	if (create) {
		r = ks_fs_mkdir_p(f->dir);
		if (r < 0)
			return ks_set_error(reterr_msg, r, "cannot create the directory '%s': %s",
					   f->dir, strerror(-r));
	}
	f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->dirfd < 0) {
		r = -errno;
		return ks_set_error(reterr_msg, r, "cannot open the directory '%s': %s", f->dir,
				   strerror(-r));
	}
	/* Two writers reading the same old file would each drop the other's change. */
	if (flock(f->dirfd, LOCK_EX) < 0) {
		r = -errno;
		return ks_set_error(reterr_msg, r, "cannot lock the directory '%s': %s", f->dir,
				   strerror(-r));
	}

	if (fstatat(f->dirfd, f->base, &st, 0) < 0) {
		r = -errno;
		if (r != -ENOENT || !create)
			return ks_set_error(reterr_msg, r, "%s: %s", path, strerror(-r));
		f->mode = 0600;
		f->eol = "\n";
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return ks_set_error(reterr_msg, -EINVAL, "%s: not a regular file", path);
	f->existed = true;
	f->mode = st.st_mode & 07777;
	r = ks_config_read_file(f->target, &f->old);
	if (r == -EFBIG)
		return ks_set_error(reterr_msg, -EINVAL, "%s: file is larger than %d bytes", path,
				   KS_CONFIG_MAX_SIZE);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "%s: %s", path, strerror(-r));
	const char *nl = f->old.len ? memchr(f->old.data, '\n', f->old.len) : NULL;
	f->eol = nl && nl > f->old.data && nl[-1] == '\r' ? "\r\n" : "\n";
	return 0;
}

/* Parses a copy of text as the file; on success *ret (if not NULL) gets the result. */
static int conf_file_parse(const conf_file *f, const char *text, size_t len, ks_config **ret,
			   char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf copy = {};
	ks_config *c = NULL;
	int r;

	r = ks_buf_append(&copy, text, len);
	if (r < 0)
		return r;
	if (reterr_msg) {
		free(*reterr_msg);
		*reterr_msg = NULL;
	}
	r = ks_config_parse_text(f->path, &copy, false, &c, reterr_msg);
	if (r < 0)
		return r;
	if (ret)
		*ret = c;
	else
		ks_config_free(c);
	return 0;
}

/* Replaces the file with data: a reader of path sees the old file or the new one, whole. */
static int conf_file_replace(conf_file *f, const char *data, size_t len, char **reterr_msg)
{
	_cleanup_free_ char *tmp = NULL;
	int fd, r = 0;

	if (asprintf(&tmp, "%s/.%s.XXXXXX", f->dir, f->base) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return ks_set_error(reterr_msg, r, "cannot create a temporary file in '%s': %s",
				   f->dir, strerror(-r));
	}
	if (fchmod(fd, f->mode) < 0)
		r = -errno;
	for (size_t done = 0; r == 0 && done < len;) {
		ssize_t n = write(fd, data + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = -errno;
		else
			done += (size_t) n;
	}
	/* Without the flush, a crash after the rename could leave an empty file behind. */
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, f->target) < 0)
		r = -errno;
	if (r < 0) {
		(void) unlink(tmp);
		return ks_set_error(reterr_msg, r, "cannot write '%s': %s", f->path, strerror(-r));
	}
	r = ks_fs_fsync_dir(f->dirfd);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot flush the directory '%s': %s", f->dir,
				   strerror(-r));
	return 0;
}

/* The helpers below take a line [p, end) with its '\n', if any. */

/* Whether the line holds only blanks. */
static bool line_is_blank(const char *p, const char *end)
{
	for (; p < end; p++)
		if (!is_blank(*p) && *p != '\n')
			return false;
	return true;
}

/* The first non-blank character of the line, or 0. */
static char line_first(const char *p, const char *end)
{
	for (; p < end; p++)
		if (!is_blank(*p) && *p != '\n')
			return *p;
	return 0;
}

/* Whether the line is the header [account name], as the parser reads headers. */
static bool line_is_account_header(const char *p, const char *end, const char *name)
{
	if (end > p && end[-1] == '\n')
		end--;
	while (p < end && is_blank(*p))
		p++;
	while (end > p && is_blank(end[-1]))
		end--;
	if (end - p < 2 || *p != '[' || end[-1] != ']')
		return false;
	p++;
	end--;
	while (p < end && is_blank(*p))
		p++;
	while (end > p && is_blank(end[-1]))
		end--;
	if (end - p < 8 || strncmp(p, "account", 7) != 0 || (p[7] != ' ' && p[7] != '\t'))
		return false;
	p += 7;
	while (p < end && is_blank(*p))
		p++;
	size_t n = strlen(name);
	return (size_t) (end - p) == n && memcmp(p, name, n) == 0;
}

static const char *line_end(const char *p, const char *end)
{
	const char *nl = memchr(p, '\n', (size_t) (end - p));
	return nl ? nl + 1 : end;
}

int ks_config_add_account(const char *path, const ks_account_config *a, char **reterr_msg)
{
	_cleanup_(conf_file_done) conf_file f = { .dirfd = -1 };
	_cleanup_(ks_buf_done) ks_buf text = { .max = KS_CONFIG_MAX_SIZE };
	int r;

	assert(path && a);
	r = conf_file_open(path, true, &f, reterr_msg);
	if (r < 0)
		return r;
	if (f.old.len > 0) {
		ks_config *c = NULL;

		r = conf_file_parse(&f, f.old.data, f.old.len, &c, reterr_msg);
		if (r < 0)
			return r;
		const ks_account_config *old = a->name ? ks_config_find_account(c, a->name) : NULL;
		unsigned line = old ? old->line : 0;
		ks_config_free(c);
		if (line)
			return ks_set_error(reterr_msg, -EEXIST, "%s:%u: account '%s' already exists",
					   path, line, a->name);
	}

	r = ks_buf_append(&text, f.old.data, f.old.len);
	if (r >= 0 && f.old.len > 0) {
		/* A blank line between the last section and the new one. */
		const char *end = f.old.data + f.old.len, *last = end;

		if (end[-1] != '\n')
			r = ks_buf_puts(&text, f.eol);
		else {
			last = end - 1;
			while (last > f.old.data && last[-1] != '\n')
				last--;
		}
		if (r >= 0 && (last == end || !line_is_blank(last, end)))
			r = ks_buf_puts(&text, f.eol);
	}
	if (r == -EFBIG)
		return ks_set_error(reterr_msg, -EINVAL, "%s: file would be larger than %d bytes",
				   path, KS_CONFIG_MAX_SIZE);
	if (r < 0)
		return r;
	r = conf_put_account(&text, a, f.eol, reterr_msg);
	if (r == -EFBIG)
		return ks_set_error(reterr_msg, -EINVAL, "%s: file would be larger than %d bytes",
				   path, KS_CONFIG_MAX_SIZE);
	if (r < 0)
		return r;
	r = conf_file_parse(&f, text.data, text.len, NULL, reterr_msg);
	if (r < 0)
		return r;
	return conf_file_replace(&f, text.data, text.len, reterr_msg);
}

int ks_config_remove_account(const char *path, const char *name, char **reterr_msg)
{
	_cleanup_(conf_file_done) conf_file f = { .dirfd = -1 };
	_cleanup_(ks_buf_done) ks_buf text = {};
	const char *start = NULL, *stop, *p, *end;
	int r;

	assert(path && name);
	r = conf_file_open(path, false, &f, reterr_msg);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "%s: no such file, so no account '%s'", path,
				   name);
	if (r < 0)
		return r;
	if (f.old.len == 0)
		return ks_set_error(reterr_msg, -ENOENT, "%s: no account '%s'", path, name);

	p = f.old.data;
	end = f.old.data + f.old.len;
	for (; p < end && !start; p = line_end(p, end))
		if (line_is_account_header(p, line_end(p, end), name))
			start = p;
	if (!start)
		return ks_set_error(reterr_msg, -ENOENT, "%s: no account '%s'", path, name);

	/* The section ends at the next header (any line starting with '['). */
	for (stop = p; stop < end; stop = line_end(stop, end))
		if (line_first(stop, line_end(stop, end)) == '[')
			break;
	if (stop == end) {
		/* The last section: the blank lines that separated it go with it. */
		while (start > f.old.data) {
			const char *prev = start - 1;

			while (prev > f.old.data && prev[-1] != '\n')
				prev--;
			if (!line_is_blank(prev, start))
				break;
			start = prev;
		}
	} else {
		/* Comments after the last setting belong to the next section. */
		const char *keep = stop;

		for (const char *q = p; q < stop; q = line_end(q, end)) {
			char first = line_first(q, line_end(q, end));

			if (first == '#' || first == ';') {
				if (keep == stop)
					keep = q;
			} else if (first)
				keep = stop;
		}
		stop = keep;
	}

	r = ks_buf_append(&text, f.old.data, (size_t) (start - f.old.data));
	if (r >= 0)
		r = ks_buf_append(&text, stop, (size_t) (end - stop));
	if (r < 0)
		return r;
	r = conf_file_parse(&f, text.data ? text.data : "", text.len, NULL, reterr_msg);
	if (r < 0)
		return r;
	return conf_file_replace(&f, text.data ? text.data : "", text.len, reterr_msg);
}

/* Whether the line is a "key = value" setting of key. */
static bool line_is_key(const char *p, const char *end, const char *key)
{
	size_t n = strlen(key);

	while (p < end && is_blank(*p))
		p++;
	if ((size_t) (end - p) < n || memcmp(p, key, n) != 0)
		return false;
	for (p += n; p < end && is_blank(*p);)
		p++;
	return p < end && *p == '=';
}

/* The patterns of list (NULL: none) without those equal to path or to its NAME, joined by
 * ", " into *ret (NULL when none are left); *ret_removed tells whether any was. */
static int patterns_without(const char *list, const char *path, char **ret, bool *ret_removed)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	const char *slash = strchr(path, '/');
	char **v = NULL;
	size_t n = 0;
	int r = 0;

	*ret = NULL;
	*ret_removed = false;
	if (!list)
		return 0;
	r = ks_config_split_patterns(list, &v, &n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		if (strcmp(v[i], path) == 0 || (slash && strcmp(v[i], slash + 1) == 0)) {
			*ret_removed = true;
			continue;
		}
		r = ks_buf_printf(&b, "%s%s", b.len ? ", " : "", v[i]);
	}
	ks_config_patterns_free(v);
	if (r < 0)
		return r;
	if (b.len)
		*ret = ks_buf_steal(&b);
	return *ret || !b.len ? 0 : -ENOMEM;
}

/* "list, path", or path. */
static char *patterns_with(const char *list, const char *path)
{
	char *s = NULL;

	if (asprintf(&s, "%s%s%s", list ? list : "", list ? ", " : "", path) < 0)
		return NULL;
	return s;
}

int ks_config_set_collection(const char *path, const char *name, const char *coll_path,
			     const char *displayname, bool enabled, char **reterr_msg)
{
	_cleanup_(conf_file_done) conf_file f = { .dirfd = -1 };
	_cleanup_(ks_buf_done) ks_buf text = { .max = KS_CONFIG_MAX_SIZE };
	_cleanup_free_ char *own = NULL, *other = NULL;
	const char *own_key = enabled ? "include" : "exclude";
	const char *other_key = enabled ? "exclude" : "include";
	const char *start = NULL, *stop, *p, *end, *own_line = NULL, *other_line = NULL;
	const char *last_setting;
	ks_config *c = NULL;
	bool removed = false, add = false;
	unsigned header_line = 0, other_no = 0, no;
	int r;

	assert(path && name && coll_path);
	r = conf_file_open(path, false, &f, reterr_msg);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "%s: no such file, so no account '%s'", path,
				   name);
	if (r < 0)
		return r;
	r = conf_file_parse(&f, f.old.data ? f.old.data : "", f.old.len, &c, reterr_msg);
	if (r < 0)
		return r;
	const ks_account_config *a = ks_config_find_account(c, name);
	if (a) {
		header_line = a->line;
		r = patterns_without(enabled ? a->exclude : a->include, coll_path, &other,
				     &removed);
		if (r >= 0) {
			/* What include = and exclude = say once coll_path has left the other
			 * list, and what the collection's own list says already. */
			ks_account_config rest = { .include = enabled ? a->include : other,
						   .exclude = enabled ? other : a->exclude };
			ks_account_config in = { .include = rest.include };
			bool included = ks_account_collection_rule(&in, coll_path, displayname) == 1;
			bool none = a->collections == KS_NEW_COLLECTIONS_NONE;

			if (enabled && ks_account_collection_rule(&rest, coll_path, displayname) == 0)
				r = -EPERM;
			/* Enabled: named by include = unless new collections sync anyway.
			 * Disabled: named by exclude = unless nothing would sync it. */
			if (enabled)
				add = !included && none;
			else
				add = ks_account_collection_rule(&rest, coll_path, displayname) != 0 &&
				      (included || !none);
			if (r >= 0 && add) {
				own = patterns_with(enabled ? a->include : a->exclude, coll_path);
				if (!own)
					r = -ENOMEM;
			}
		}
	}
	ks_config_free(c);
	if (!a)
		return ks_set_error(reterr_msg, -ENOENT, "%s: no account '%s'", path, name);
	if (r == -ENOMEM)
		return r;

	/* The account's section, and its include = and exclude = lines. */
	p = f.old.data;
	end = f.old.data + f.old.len;
	for (no = 1; p < end && !start; p = line_end(p, end), no++)
		if (line_is_account_header(p, line_end(p, end), name))
			start = p;
	last_setting = p;
	for (stop = p; stop < end; stop = line_end(stop, end), no++) {
		const char *le = line_end(stop, end);
		char first = line_first(stop, le);

		if (first == '[')
			break;
		if (!first || first == '#' || first == ';')
			continue;
		last_setting = le;
		if (line_is_key(stop, le, own_key))
			own_line = stop;
		else if (line_is_key(stop, le, other_key)) {
			other_line = stop;
			other_no = no;
		}
	}
	if (r == -EPERM)
		return ks_set_error(reterr_msg, r, "%s:%u: exclude = still names '%s' through a "
				   "pattern: change that line to sync it", path, other_no,
				   coll_path);
	if (!start || r < 0)
		return ks_set_error(reterr_msg, -EINVAL, "%s:%u: cannot change account '%s'",
				   path, header_line, name);
	if (!own && !removed)
		return 0;

	/* Copied line by line: the two lines change, a new one follows the last setting. */
	for (p = f.old.data; r >= 0 && p < end; p = line_end(p, end)) {
		const char *le = line_end(p, end);

		if (p == last_setting && own && !own_line)
			r = conf_put_value(&text, own_key, own, f.eol);
		if (r < 0)
			break;
		if (p == own_line && own)
			r = conf_put_value(&text, own_key, own, f.eol);
		else if (p == other_line && removed)
			r = other ? conf_put_value(&text, other_key, other, f.eol) : 0;
		else {
			r = ks_buf_append(&text, p, (size_t) (le - p));
			if (r >= 0 && le == end && le > p && le[-1] != '\n' && last_setting == end &&
			    own && !own_line)
				r = ks_buf_puts(&text, f.eol);
		}
	}
	if (r >= 0 && last_setting == end && own && !own_line)
		r = conf_put_value(&text, own_key, own, f.eol);
	if (r == -EFBIG)
		return ks_set_error(reterr_msg, -EINVAL, "%s: file would be larger than %d bytes",
				   path, KS_CONFIG_MAX_SIZE);
	if (r < 0)
		return r;
	r = conf_file_parse(&f, text.data ? text.data : "", text.len, NULL, reterr_msg);
	if (r < 0)
		return r;
	r = conf_file_replace(&f, text.data ? text.data : "", text.len, reterr_msg);
	return r < 0 ? r : 1;
}
