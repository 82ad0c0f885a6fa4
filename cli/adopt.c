/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "ksync.h"
#include "util/macro.h"

/* One collection directory of the tree being adopted. */
typedef struct local_dir {
	char *name;
	char *displayname;	/* the first line of its displayname file, or NULL */
	size_t n_ics, n_vcf;
	const ks_json *match;	/* the server's collection it is, once found */
} local_dir;

typedef struct tree {
	char *path;		/* absolute */
	local_dir *dirs;
	size_t n;
	bool card;		/* address books (else calendars) */
} tree;

static void tree_done(tree *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->dirs[i].name);
		free(t->dirs[i].displayname);
	}
	free(t->dirs);
	free(t->path);
	*t = (tree) {};
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n > k && strcmp(s + n - k, suffix) == 0;
}

/* Counts the .ics and .vcf files of the directory fd (taken). */
static void count_items(int fd, size_t *ret_ics, size_t *ret_vcf)
{
	DIR *d = fdopendir(fd);
	struct dirent *de;

	if (!d) {
		(void) close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		*ret_ics += has_suffix(de->d_name, ".ics");
		*ret_vcf += has_suffix(de->d_name, ".vcf");
	}
	closedir(d);
}

static char *read_first_line(int dirfd, const char *name)
{
	char buf[512];
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	(void) close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	return buf[0] ? strdup(buf) : NULL;
}

/* Reads the tree at path: its collection directories, and which kind they hold. */
static int tree_read(const char *path, tree *t)
{
	size_t top_ics = 0, top_vcf = 0, ics = 0, vcf = 0;
	struct dirent *de;
	DIR *d;
	int r = 0;

	t->path = realpath(path, NULL);
	if (!t->path)
		return ctl_error(-errno, "Cannot adopt '%s': %m.", path);
	d = opendir(t->path);
	if (!d)
		return ctl_error(-errno, "Cannot adopt '%s': %m.", t->path);
	while (r >= 0 && (de = readdir(d))) {
		struct stat st;
		if (de->d_name[0] == '.')
			continue;
		top_ics += has_suffix(de->d_name, ".ics");
		top_vcf += has_suffix(de->d_name, ".vcf");
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		local_dir *nd = realloc(t->dirs, (t->n + 1) * sizeof(*nd));
		if (!nd) {
			r = -ENOMEM;
			break;
		}
		t->dirs = nd;
		local_dir *l = &t->dirs[t->n];
		*l = (local_dir) { .name = strdup(de->d_name) };
		if (!l->name) {
			r = -ENOMEM;
			break;
		}
		t->n++;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				O_CLOEXEC);
		if (fd < 0)
			continue;
		l->displayname = read_first_line(fd, "displayname");
		count_items(fd, &l->n_ics, &l->n_vcf);
		ics += l->n_ics;
		vcf += l->n_vcf;
	}
	closedir(d);
	if (r < 0)
		return ctl_error(r, "Out of memory.");
	if (top_ics || top_vcf)
		return ctl_error(-EINVAL, "'%s' holds items itself: it is one collection. --adopt "
				 "takes the directory that holds the collections (as vdirsyncer's "
				 "path = \"~/.calendars/\"); for one collection, write a path = line "
				 "into ksync.conf (see ksync.conf(5)).", t->path);
	if (ics && vcf)
		return ctl_error(-EINVAL, "'%s' holds calendars (%zu .ics files) and address books "
				 "(%zu .vcf files); adopt a directory of one kind at a time.",
				 t->path, ics, vcf);
	if (!ics && !vcf)
		return ctl_error(-EINVAL, "'%s' holds no .ics or .vcf file in a collection "
				 "directory: nothing to adopt.", t->path);
	t->card = vcf > 0;
	return 0;
}

static bool is_kind(const ks_json *c, bool card)
{
	const char *kind = ks_json_get_string(c, "kind");
	return kind && strcmp(kind, card ? "addressbook" : "calendar") == 0;
}

static bool taken(const tree *t, const ks_json *c)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->dirs[i].match == c)
			return true;
	return false;
}

/* Appends "KIND/NAME\nDIR\n" to *paths. */
static int add_path(char **paths, bool card, const char *name, const char *dir)
{
	char *n = NULL;

	if (asprintf(&n, "%s%s/%s\n%s\n", *paths ? *paths : "", card ? "contacts" : "calendars",
		     name, dir) < 0)
		return -ENOMEM;
	free(*paths);
	*paths = n;
	return 0;
}

int ctl_adopt(ks_account_config *a, const char *path, const ks_json *probe)
{
	const ks_json *cols = ks_json_get(probe, "collections");
	_cleanup_(tree_done) tree t = {};
	size_t n_cols = ks_json_count(cols), n_kept = 0;
	int r = tree_read(path, &t);

	if (r < 0)
		return r;
	char **root = t.card ? &a->contacts_path : &a->calendars_path;
	if (*root)
		return ctl_error(-EINVAL, "Two directories of %s to adopt: '%s' and '%s'.",
				 t.card ? "address books" : "calendars", *root, t.path);
	/* By name first: the directory the first sync would make is there already. */
	for (size_t i = 0; i < t.n; i++)
		for (size_t k = 0; k < n_cols && !t.dirs[i].match; k++) {
			const ks_json *c = ks_json_at(cols, k);
			const char *dir = ks_json_get_string(c, "dir");
			if (is_kind(c, t.card) && dir && strcmp(dir, t.dirs[i].name) == 0)
				t.dirs[i].match = c;
		}
	/* Then by display name, for a directory another client named otherwise: it gets a
	 * path = line. One match only; two collections of the same name are left to the user. */
	for (size_t i = 0; i < t.n; i++) {
		const char *want = t.dirs[i].displayname ? t.dirs[i].displayname : t.dirs[i].name;
		const ks_json *found = NULL;
		size_t n_found = 0;
		if (t.dirs[i].match)
			continue;
		for (size_t k = 0; k < n_cols; k++) {
			const ks_json *c = ks_json_at(cols, k);
			const char *dn = ks_json_get_string(c, "displayname");
			if (is_kind(c, t.card) && !taken(&t, c) && dn && strcmp(dn, want) == 0) {
				found = c;
				n_found++;
			}
		}
		if (n_found == 1)
			t.dirs[i].match = found;
	}
	printf("Adopting %s as the account's %s:\n", t.path,
	       t.card ? "address books" : "calendars");
	for (size_t i = 0; i < t.n; i++) {
		local_dir *l = &t.dirs[i];
		size_t items = t.card ? l->n_vcf : l->n_ics;
		if (!l->match) {
			n_kept++;
			printf("  %s/%s (%zu items): no collection of the server is named so; left "
			       "as it is, not synced\n", t.path, l->name, items);
			continue;
		}
		const char *dir = ks_json_get_string(l->match, "dir");
		const char *href = ks_json_get_string(l->match, "href");
		if (strcmp(dir, l->name) != 0) {
			_cleanup_free_ char *full = NULL;
			if (asprintf(&full, "%s/%s", t.path, l->name) < 0 ||
			    add_path(&a->paths, t.card, dir, full) < 0)
				return ctl_error(-ENOMEM, "Out of memory.");
		}
		printf("  %s/%s (%zu items) is %s\n", t.path, l->name, items, href ? href : "?");
	}
	for (size_t k = 0; k < n_cols; k++) {
		const ks_json *c = ks_json_at(cols, k);
		if (is_kind(c, t.card) && !taken(&t, c))
			printf("  %s/%s: new, for %s\n", t.path, ks_json_get_string(c, "dir"),
			       ks_json_get_string(c, "href"));
	}
	if (n_kept)
		printf("A collection of the server that gets one of the names left alone later "
		       "would take that directory: move those elsewhere if they belong to another "
		       "account.\n");
	printf("The first sync reads the server's items and matches them to these files by "
	       "UID: each stays one file and one item. Stop any other program syncing these "
	       "directories (vdirsyncer) first.\n");
	*root = strdup(t.path);
	return *root ? 0 : ctl_error(-ENOMEM, "Out of memory.");
}
