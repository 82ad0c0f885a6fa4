"""Hostile local state: what the user's own machine does to ksync's files.

A collection directory or an item file replaced by a symlink or a FIFO, read-only directories, a
full file system, a damaged or locked cache, file names with control characters. For each: ksyncd
names the path and the cause, the other collections sync in the same run, nothing is written
outside ksync's directories (a sentinel directory stays byte for byte the same), nothing is lost
on the server or here, and once the condition is fixed the next run converges and a further run
changes nothing.

Tests run as root, where permissions are not enforced: read-only directories are tested with
ksyncd stripped of CAP_DAC_OVERRIDE (setpriv); the full disk is a small tmpfs mounted in a private
mount namespace (unshare -m, else unshare -rm) over one collection directory or the whole data
directory. Every test runs against Radicale and Xandikos.
"""

import copy
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ksynctest import checks, gen, ksync

ACCOUNT = "acct"
BOOK = "people"
OTHER = "friends"
CAL = "work"
UNSHARE = "/usr/bin/unshare"
NSENTER = "/usr/bin/nsenter"
SETPRIV = "/usr/bin/setpriv"


# -- test data -----------------------------------------------------------------------------------

def card(uid, fn, note="plain"):
    first, _, last = fn.partition(" ")
    return gen.serialize(["BEGIN:VCARD", "VERSION:3.0", "UID:" + uid, "FN:" + fn,
                          "N:%s;%s;;;" % (last, first), "NOTE:" + note, "END:VCARD"])


def event(uid, summary):
    return gen.serialize(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//local tests//EN",
                          "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20240101T000000Z",
                          "DTSTART:20240610T090000Z", "DTEND:20240610T100000Z",
                          "SUMMARY:" + summary, "END:VEVENT", "END:VCALENDAR"])


def uid_of(name):
    return "%s@ksync.example" % name


class Env:
    """Address books 'people' and 'friends' and a calendar 'work', seeded and synced once."""

    def __init__(self, server, ks, tmp_path):
        self.server = server
        self.ks = ks
        self.tmp = tmp_path
        self.book = server.make_addressbook(BOOK, "People")
        self.other = server.make_addressbook(OTHER, "Friends")
        self.cal = server.make_calendar(CAL, "Work", components=("VEVENT", "VTODO"))
        server.seed(self.book, {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize())
                                for n in ("alice", "bob", "carol")})
        server.seed(self.other, {uid_of(n): card(uid_of(n), "%s Friend" % n.capitalize())
                                 for n in ("dora", "emil")})
        server.seed(self.cal, {uid_of("ev1"): event(uid_of("ev1"), "Planning")})
        ks.add_account(ACCOUNT, server)
        r = ks.sync()
        assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
        self.book_dir = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        self.other_dir = ks.collection_dir(ACCOUNT, "addressbook", OTHER)
        self.cal_dir = ks.collection_dir(ACCOUNT, "calendar", CAL)
        assert sorted(p.name for p in self.book_dir.glob("*.vcf")) == sorted(
            uid_of(n) + ".vcf" for n in ("alice", "bob", "carol"))
        self.sentinel = tmp_path / "sentinel"
        self.sentinel.mkdir()
        (self.sentinel / "thesis.txt").write_bytes(b"years of work\n")
        (self.sentinel / "stranger.vcf").write_bytes(card(uid_of("stranger"), "Not Synced"))
        (self.sentinel / "sub").mkdir()
        (self.sentinel / "sub" / "notes.ics").write_bytes(event(uid_of("private"), "Private"))
        (self.sentinel / "sub" / "someone.vcf").write_bytes(card(uid_of("someone"), "Some One"))
        self.sentinel_before = tree(self.sentinel)

    def remote_add(self, tag):
        """One new item on the server in each collection; {collection href: item href}."""
        out = {}
        for coll, data in ((self.book, card(uid_of("new-" + tag), "New %s" % tag)),
                           (self.other, card(uid_of("friend-" + tag), "Friend %s" % tag)),
                           (self.cal, event(uid_of("ev-" + tag), "Event %s" % tag))):
            ext = ".vcf" if coll != self.cal else ".ics"
            href = coll + uid_of(tag + "-" + coll.strip("/").rsplit("/", 1)[-1]) + ext
            self.server.put(href, data, if_none_match="*")
            out[coll] = href
        return out

    def server_state(self):
        return {c: self.server.contents(c) for c in (self.book, self.other, self.cal)}

    def check_sentinel(self):
        assert tree(self.sentinel) == self.sentinel_before, "the sentinel directory changed"

    def check_others_synced(self, added, colls=None):
        """The items added by remote_add() reached the files of the unaffected collections."""
        for coll, d in ((self.other, self.other_dir), (self.cal, self.cal_dir)):
            if colls is not None and coll not in colls:
                continue
            name = added[coll].rsplit("/", 1)[-1]
            want = self.server.get(added[coll])
            got = [p.read_bytes() for p in d.iterdir() if p.is_file()]
            assert want in got, "%s was not fetched into %s in the same run" % (name, d)


def tree(base):
    """{relative path: (type, mode, bytes or link target)} of everything under base."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                val = ("l", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                val = ("d", stat.S_IMODE(st.st_mode), None)
            else:
                val = ("f", stat.S_IMODE(st.st_mode), p.read_bytes())
            out[str(p.relative_to(base))] = val
    return out


def no_server_loss(env, before):
    """Every item the server had before is still there with the same bytes."""
    now = env.server_state()
    for coll, items in before.items():
        for href, (etag, data) in items.items():
            assert href in now[coll], "%s was deleted on the server" % href
            assert now[coll][href][1] == data, "%s changed on the server" % href


def fail_lines(r, label):
    prefix = "%s/%s: " % (ACCOUNT, label)
    return [ln for ln in r.stderr.splitlines() if ln.startswith(prefix)]


def converge(env, view=None):
    """A run that succeeds and leaves files, cache and server equal, then a run that changes
    nothing."""
    ks = env.ks
    r = ks.sync() if view is None else view.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    look = view.home if view is not None else ks
    checks.check_mirror(look, env.server, ACCOUNT)
    before = checks.snapshot(look)
    r2 = ks.sync() if view is None else view.sync()
    assert r2.stdout == "", r2.stdout
    assert not checks.failure_lines(r2.stderr, ACCOUNT), r2.stderr
    checks.check_unchanged(before, checks.snapshot(look))
    return r


def run_argv(ks, prefix, timeout=ksync.RUN_TIMEOUT):
    p = subprocess.run(list(prefix) + [str(ks.ksyncd), "--once"], env=ks.env(), cwd=ks.home,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return ksync.Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                        p.stderr.decode("utf-8", "replace"))


@pytest.fixture
def env(server, ks, tmp_path):
    return Env(server, ks, tmp_path)


# -- 1. a collection directory replaced by a symlink ---------------------------------------------

@pytest.mark.parametrize("target", ["stranger", "cared", "dangling", "account"])
def test_collection_dir_symlink(env, target):
    ks = env.ks
    moved = env.tmp / "people.moved"
    if target == "account":
        # The account directory above the collections: the whole subtree is elsewhere.
        acc_dir = ks.contacts_dir(ACCOUNT)
        moved = env.tmp / "acct.moved"
        shutil.move(str(acc_dir), str(moved))
        shutil.copytree(str(moved), str(env.sentinel / "copy"), symlinks=True)
        env.sentinel_before = tree(env.sentinel)
        acc_dir.symlink_to(env.sentinel / "copy")
    else:
        shutil.move(str(env.book_dir), str(moved))
        if target == "stranger":
            link = env.sentinel / "sub"
        elif target == "cared":
            link = env.sentinel
        else:
            link = env.tmp / "does-not-exist"
        env.book_dir.symlink_to(link)
    before = env.server_state()
    added = env.remote_add("a")

    for attempt in range(2):
        r = ks.run()
        lines = fail_lines(r, "contacts/" + BOOK)
        assert r.rc == 1, "attempt %d: rc %d\n%s" % (attempt, r.rc, r.stderr)
        path = str(ks.contacts_dir(ACCOUNT) if target == "account" else env.book_dir)
        assert any(path in ln and "symbolic link" in ln for ln in lines), r.stderr
        env.check_sentinel()
        no_server_loss(env, before)
        assert not (env.tmp / "does-not-exist").exists()
        if target == "account":
            # Both address books live below the link: only the calendar syncs.
            assert any(str(ks.contacts_dir(ACCOUNT)) in ln
                       for ln in fail_lines(r, "contacts/" + OTHER)), r.stderr
            env.check_others_synced(added, colls=[env.cal])
        else:
            env.check_others_synced(added)

    # Fixed: the link goes, the directory comes back.
    if target == "account":
        ks.contacts_dir(ACCOUNT).unlink()
        shutil.move(str(moved), str(ks.contacts_dir(ACCOUNT)))
    else:
        env.book_dir.unlink()
        shutil.move(str(moved), str(env.book_dir))
    converge(env)
    env.check_sentinel()
    assert env.server.get(added[env.book]) in [p.read_bytes() for p in env.book_dir.iterdir()]


def test_collection_removed_on_server_through_symlink(env):
    """A collection deleted on the server has its directory removed, but never through a
    link: with the account directory linked elsewhere, the files there stay."""
    ks = env.ks
    acc_dir = ks.contacts_dir(ACCOUNT)
    moved = env.tmp / "acct.moved"
    shutil.move(str(acc_dir), str(moved))
    shutil.copytree(str(moved), str(env.sentinel / "copy"), symlinks=True)
    env.sentinel_before = tree(env.sentinel)
    acc_dir.symlink_to(env.sentinel / "copy")
    env.server.delete(env.other)

    # Removing a collection with items needs the user's word (the mass-deletion guard).
    r = ks.run("--force", "--allow-mass-delete")
    assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
    env.check_sentinel()
    assert any(str(acc_dir) in ln and "symbolic link" in ln for ln in r.stderr.splitlines()), \
        r.stderr

    acc_dir.unlink()
    shutil.move(str(moved), str(acc_dir))
    r = ks.run("--force", "--allow-mass-delete")
    assert r.rc == 0 and "deleted on the server; it was removed here" in r.stderr, r.stderr
    assert not env.other_dir.exists()
    assert (env.sentinel / "copy" / OTHER).is_dir()
    converge(env)


def test_directory_restored_from_a_copy(env):
    """The usual way back from a link or a lost directory: a copy (a backup, cp -a) with
    the same files under new inodes. New server items must then arrive, and the files be
    recognised as unchanged, not sent again."""
    ks = env.ks
    acc_dir = ks.contacts_dir(ACCOUNT)
    shutil.move(str(acc_dir), str(env.tmp / "acct.backup"))
    shutil.copytree(str(env.tmp / "acct.backup"), str(acc_dir))
    before = env.server_state()
    added = env.remote_add("r")
    r = ks.run()
    assert r.rc == 0, "rc %d\n%s" % (r.rc, r.stderr)
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert "sent" not in r.stdout, r.stdout
    no_server_loss(env, before)
    assert env.server.get(added[env.book]) in [p.read_bytes() for p in env.book_dir.iterdir()]
    env.check_others_synced(added)
    converge(env)


def test_conflicts_dir_symlink(env):
    """The losing side of a conflict is kept under conflicts/, never through a link: with
    conflicts/ linked elsewhere the merge waits, and both versions stay where they are."""
    ks = env.ks
    conflicts = ks.data_dir / "conflicts"
    conflicts.symlink_to(env.sentinel)
    bob = env.book_dir / (uid_of("bob") + ".vcf")
    mine = card(uid_of("bob"), "Bob Example", "NOTE:edited here")
    bob.write_bytes(mine)
    href = env.book + uid_of("bob") + ".vcf"
    theirs = card(uid_of("bob"), "Bob Example", "NOTE:edited on the server")
    env.server.put(href, theirs)
    added = env.remote_add("k")

    r = ks.run()
    assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
    assert any(str(conflicts) in ln and "symbolic link" in ln
               for ln in fail_lines(r, "contacts/" + BOOK)), r.stderr
    env.check_sentinel()
    assert bob.read_bytes() == mine
    assert env.server.get(href) == theirs
    env.check_others_synced(added)

    conflicts.unlink()
    r = ks.run()
    assert r.rc == 0, r.stderr
    kept = [p for p in conflicts.rglob("*.vcf")]
    assert [p.read_bytes() for p in kept] == [mine], kept
    converge(env)
    env.check_sentinel()


@pytest.mark.parametrize("runtime_dir", [True, False])
def test_lock_dir_symlink(env, runtime_dir):
    """The account's lock file is written too: never through a link, whether XDG_RUNTIME_DIR
    is set or not (the lock lives in the data directory either way)."""
    ks = env.ks
    lock_dir = ks.data_dir / "locks"
    shutil.rmtree(str(lock_dir), ignore_errors=True)
    lock_dir.symlink_to(env.sentinel)

    def run():
        env_vars = ks.env()
        if not runtime_dir:
            del env_vars["XDG_RUNTIME_DIR"]
        p = subprocess.run([str(ks.ksyncd), "--once"], env=env_vars, cwd=ks.home,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        return ksync.Result(p.returncode, p.stdout.decode(), p.stderr.decode())
    added = env.remote_add("l")
    r = run()
    assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
    assert str(lock_dir) in r.stderr and "symbolic link" in r.stderr, r.stderr
    env.check_sentinel()
    lock_dir.unlink()
    r = run()
    assert r.rc == 0, r.stderr
    env.check_others_synced(added)
    env.check_sentinel()


# -- 2. an item file replaced by a symlink or a FIFO ---------------------------------------------

@pytest.mark.parametrize("kind", ["outside", "inside", "fifo"])
def test_item_file_symlink_or_fifo(env, kind):
    ks = env.ks
    alice = env.book_dir / (uid_of("alice") + ".vcf")
    original = alice.read_bytes()
    secret = card(uid_of("alice"), "Alice Secret", "NOTE:target content that must stay here")
    outside = env.sentinel / "alice-elsewhere.vcf"
    outside.write_bytes(secret)
    env.sentinel_before = tree(env.sentinel)
    alice.unlink()
    if kind == "outside":
        alice.symlink_to(outside)
    elif kind == "inside":
        alice.symlink_to(uid_of("bob") + ".vcf")
    else:
        os.mkfifo(alice, 0o600)
    # A new file that is a link to an item outside must not be uploaded either.
    (env.book_dir / "linked-new.vcf").symlink_to(outside)
    bob_before = (env.book_dir / (uid_of("bob") + ".vcf")).read_bytes()
    before = env.server_state()
    added = env.remote_add("b")
    # The server changes the linked item too: its new version must not go through the link.
    alice_href = env.book + uid_of("alice") + ".vcf"
    changed = card(uid_of("alice"), "Alice Example", "NOTE:changed on the server")
    env.server.put(alice_href, changed, if_match=before[env.book][alice_href][0])
    before[env.book][alice_href] = (None, changed)

    for attempt in range(2):
        t0 = time.monotonic()
        r = ks.run(timeout=60)
        assert time.monotonic() - t0 < 50
        assert r.rc == 0, "rc %d\n%s" % (r.rc, r.stderr)
        lines = fail_lines(r, "contacts/" + BOOK)
        what = "FIFO" if kind == "fifo" else "symbolic link"
        assert any("'%s'" % alice in ln and what in ln for ln in lines), r.stderr
        assert any("'%s'" % (env.book_dir / "linked-new.vcf") in ln and "symbolic link" in ln
                   for ln in lines), r.stderr
        env.check_sentinel()
        no_server_loss(env, before)
        assert set(env.server.list(env.book)) == set(before[env.book]) | {added[env.book]}
        assert secret not in [d for _, d in env.server.contents(env.book).values()]
        assert (env.book_dir / (uid_of("bob") + ".vcf")).read_bytes() == bob_before
        assert alice.is_symlink() or stat.S_ISFIFO(alice.lstat().st_mode)
        env.check_others_synced(added)
        assert env.server.get(added[env.book]) in [
            p.read_bytes() for p in env.book_dir.iterdir() if p.is_file() and not p.is_symlink()]

    # Fixed: the user puts the file back as it was; the server's change then arrives.
    alice.unlink()
    alice.write_bytes(original)
    (env.book_dir / "linked-new.vcf").unlink()
    converge(env)
    env.check_sentinel()
    assert alice.read_bytes() == changed


# -- 3. read-only directories --------------------------------------------------------------------

def no_dac_prefix():
    """Run ksyncd so that permissions apply: as root, without the capabilities that bypass
    them."""
    if os.geteuid() != 0:
        return []
    return [SETPRIV, "--bounding-set=-dac_override,-dac_read_search,-fowner",
            "--inh-caps=-all"]


def test_readonly_collection_dir(env):
    ks = env.ks
    before = env.server_state()
    added = env.remote_add("c")
    names_before = sorted(p.name for p in env.book_dir.iterdir())
    env.book_dir.chmod(0o555)
    try:
        r = run_argv(ks, no_dac_prefix())
        assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
        lines = fail_lines(r, "contacts/" + BOOK)
        assert any(str(env.book_dir) in ln and "Permission denied" in ln for ln in lines), \
            r.stderr
        assert sorted(p.name for p in env.book_dir.iterdir()) == names_before
        env.check_others_synced(added)
        no_server_loss(env, before)
        rows = [it["href"] for it in ks.items(ACCOUNT) if it["coll_name"] == BOOK]
        assert added[env.book] not in rows, "the cache claims an item it could not write"
    finally:
        env.book_dir.chmod(0o700)
    converge(env)
    env.check_sentinel()


def test_readonly_data_dir(env):
    ks = env.ks
    before = env.server_state()
    added = env.remote_add("d")
    files_before = ks.files()
    ks.data_dir.chmod(0o555)
    try:
        r = run_argv(ks, no_dac_prefix())
        assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
        assert str(ks.data_dir) in r.stderr and "Permission denied" in r.stderr, r.stderr
        assert "\n" not in r.stderr.strip() or len(r.stderr.splitlines()) < 5, r.stderr
        no_server_loss(env, before)
        after = ks.files()
        assert {k: v for k, v in after.items() if not k.startswith("ksync.db")} == \
            {k: v for k, v in files_before.items() if not k.startswith("ksync.db")}
    finally:
        ks.data_dir.chmod(0o700)
    converge(env)
    assert env.server.get(added[env.book]) in [p.read_bytes() for p in env.book_dir.iterdir()]
    env.check_others_synced(added)


# -- 4. a full file system -----------------------------------------------------------------------

class MountNs:
    """A small tmpfs mounted over `target` in a private mount namespace, held by a sleeping
    process. ksyncd runs inside it (nsenter); the test sees it through /proc/PID/root.

    As root, `unshare -m` is tried first, then a user namespace (`unshare -rm`), which also
    works for an unprivileged user; a container without either fails the test, saying so.
    KSYNC_TEST_MOUNTNS=mount or =user picks one."""

    def __init__(self, target, size):
        self.proc = None
        self.user = False
        errors = []
        ways = {"mount": ["-m"], "user": ["-r", "-m"]}
        only = os.environ.get("KSYNC_TEST_MOUNTNS")
        for flags in ([ways[only]] if only else ways.values()):
            script = ("mount -t tmpfs -o size=%s,mode=0700 ksync-test '%s' && echo mounted && "
                      "exec sleep 600" % (size, target))
            p = subprocess.Popen([UNSHARE] + flags + ["--propagation", "private", "sh", "-c",
                                                      script],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL)
            line = p.stdout.readline()
            if line.strip() == b"mounted":
                self.proc = p
                self.user = "-r" in flags
                break
            p.kill()
            _, err = p.communicate(timeout=10)
            errors.append("unshare %s: %s" % (" ".join(flags), err.decode(errors="replace")
                                               .strip()))
        if self.proc is None:
            pytest.fail("cannot mount a small tmpfs for the full-disk test: neither a private "
                        "mount namespace (unshare -m) nor a user namespace (unshare -rm) is "
                        "allowed here: " + "; ".join(errors))

    def path(self, p):
        return Path("/proc/%d/root%s" % (self.proc.pid, os.path.abspath(p)))

    def prefix(self):
        argv = [NSENTER, "-t", str(self.proc.pid), "-m"]
        if self.user:
            argv += ["-U", "--preserve-credentials"]
        return argv + ["--wd=%s" % os.getcwd()]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class InNs:
    """ksyncd runs and file views through a MountNs. SQLite resolves the /proc/PID/root link
    to /, so `home` reads the cache as the test's own namespace sees it."""

    def __init__(self, ks, ns):
        self.ks = ks
        self.ns = ns
        self.home = copy.copy(ks)
        self.home.data_home = ns.path(ks.data_home)

    def run(self):
        return run_argv(self.ks, self.ns.prefix())

    def sync(self):
        r = self.run()
        assert r.rc == 0, "rc %d\nstdout:\n%s\nstderr:\n%s" % (r.rc, r.stdout, r.stderr)
        return r


def test_full_disk(env):
    ks = env.ks
    saved = env.tmp / "people.saved"
    shutil.copytree(str(env.book_dir), str(saved))
    ns = MountNs(env.book_dir, "256k")
    try:
        inside = ns.path(env.book_dir)
        for p in saved.iterdir():
            shutil.copy2(str(p), str(inside / p.name))
        view = InNs(ks, ns)
        r = view.sync()     # the copies have new inodes: only their stat is recorded again
        assert r.stdout == "", r.stdout
        filler = inside / ".filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28, e
        finally:
            os.close(fd)
        before = env.server_state()
        added = env.remote_add("e")
        rows_before = sorted(it["href"] for it in view.home.items(ACCOUNT)
                             if it["coll_name"] == BOOK)
        names_before = sorted(p.name for p in inside.iterdir())

        r = view.run()
        assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
        lines = fail_lines(r, "contacts/" + BOOK)
        assert any(str(env.book_dir) in ln and "No space left on device" in ln
                   for ln in lines), r.stderr
        assert sorted(p.name for p in inside.iterdir()) == names_before, \
            "files were left behind in the full directory"
        rows = sorted(it["href"] for it in view.home.items(ACCOUNT) if it["coll_name"] == BOOK)
        assert rows == rows_before, "the cache claims items it did not write"
        no_server_loss(env, before)
        for coll, d in ((env.other, env.other_dir), (env.cal, env.cal_dir)):
            assert env.server.get(added[coll]) in [p.read_bytes() for p in d.iterdir()]

        filler.unlink()
        converge(env, view)
        assert env.server.get(added[env.book]) in [p.read_bytes() for p in inside.iterdir()]
        env.check_sentinel()
    finally:
        ns.stop()


def test_full_disk_under_the_cache(env):
    """The whole data directory, cache included, on a full file system: the run cannot even
    open the cache; it says so, names the directory and touches nothing."""
    ks = env.ks
    saved = env.tmp / "data.saved"
    shutil.copytree(str(ks.data_dir), str(saved))
    ns = MountNs(ks.data_dir, "1m")
    try:
        inside = ns.path(ks.data_dir)
        shutil.copytree(str(saved), str(inside), dirs_exist_ok=True)
        view = InNs(ks, ns)
        view.sync()
        filler = inside / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28, e
        finally:
            os.close(fd)
        before = env.server_state()
        added = env.remote_add("s")
        items_before = {p: p.read_bytes() for p in inside.rglob("*.vcf")}

        r = view.run()
        assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
        assert str(ks.data_dir) in r.stderr and "No space left on device" in r.stderr, r.stderr
        assert {p: p.read_bytes() for p in inside.rglob("*.vcf")} == items_before
        assert not [p for p in inside.rglob("*") if p.name.startswith(".")], "temp files left"
        no_server_loss(env, before)

        filler.unlink()
        r = view.sync()
        assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
        # The cache is read on the test's side: bring the tree back out, then check there.
        shutil.rmtree(str(saved))
        shutil.copytree(str(inside), str(saved))
    finally:
        ns.stop()
    shutil.rmtree(str(ks.data_dir))
    shutil.copytree(str(saved), str(ks.data_dir))
    converge(env)
    assert env.server.get(added[env.book]) in [p.read_bytes() for p in env.book_dir.iterdir()]
    env.check_others_synced(added)


# -- 5. a damaged cache --------------------------------------------------------------------------

def damage(path, how):
    if how == "garbage":
        with open(path, "r+b") as f:
            f.write(os.urandom(8192))
    elif how == "pages":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(size // 2 // 4096 * 4096)
            f.write(b"\xa5" * 8192)
    elif how == "truncated":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(max(4096, size // 3))
    elif how == "empty":
        with open(path, "wb"):
            pass
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["garbage", "pages", "truncated", "empty"])
def test_damaged_cache(env, how):
    ks = env.ks
    # Pending local work the cache knew about: an edit and a new file.
    carol = env.book_dir / (uid_of("carol") + ".vcf")
    carol_edit = card(uid_of("carol"), "Carol Example", "NOTE:edited here")
    carol.write_bytes(carol_edit)
    fresh = env.book_dir / (uid_of("fresh") + ".vcf")
    fresh.write_bytes(card(uid_of("fresh"), "Fresh Local"))
    before = env.server_state()
    added = env.remote_add("f")
    files_before = {p: p.read_bytes() for d in (env.book_dir, env.other_dir, env.cal_dir)
                    for p in d.iterdir() if p.is_file()}
    damage(ks.db_path, how)

    r = ks.run()
    out = r.stdout + r.stderr
    assert r.rc == 0, "rc %d\n%s" % (r.rc, out)
    if how != "empty":
        assert str(ks.db_path) in out and "damaged" in out, out
        kept = list(ks.data_dir.glob("ksync.db.corrupt-*"))
        assert len(kept) == 1, sorted(os.listdir(ks.data_dir))
        assert str(kept[0]) in out, out
    else:
        assert str(ks.db_path) in out and "is empty" in out, out
    for p, data in files_before.items():
        if p != carol:
            assert p.exists(), "%s was deleted" % p
    no_server_loss_except(env, before, {env.book + uid_of("carol") + ".vcf"})
    # Nothing lost: the local edit is on the server, or kept as a conflict copy.
    kept_edit = [p for p in (ks.data_dir / "conflicts").rglob("*") if p.is_file()] \
        if (ks.data_dir / "conflicts").exists() else []
    srv_carol = env.server.get(env.book + uid_of("carol") + ".vcf")
    assert b"edited here" in srv_carol or any(b"edited here" in p.read_bytes()
                                              for p in kept_edit), r.stderr
    assert uid_of("fresh").encode() in b"".join(
        d for _, d in env.server.contents(env.book).values())
    converge(env)
    env.check_others_synced(added)


def no_server_loss_except(env, before, changed):
    now = env.server_state()
    for coll, items in before.items():
        for href, (etag, data) in items.items():
            assert href in now[coll], "%s was deleted on the server" % href
            if href not in changed:
                assert now[coll][href][1] == data, "%s changed on the server" % href


# -- 6. a locked cache ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["transaction", "exclusive"])
def test_locked_cache(env, mode):
    ks = env.ks
    before = env.server_state()
    added = env.remote_add("g")
    conn = sqlite3.connect(str(ks.db_path), isolation_level=None, timeout=1)
    if mode == "exclusive":
        # No other connection may even read.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    if mode == "exclusive":
        conn.execute("UPDATE account SET discovered_at = discovered_at")
    try:
        t0 = time.monotonic()
        r = ks.run(timeout=120)
        took = time.monotonic() - t0
        assert r.rc == 1, "rc %d\n%s" % (r.rc, r.stderr)
        assert str(ks.db_path) in r.stderr and "locked" in r.stderr, r.stderr
        assert took < 40, "waited %.1f s for the lock" % took
        no_server_loss(env, before)
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    check = sqlite3.connect(str(ks.db_path))
    try:
        integrity = check.execute("PRAGMA integrity_check").fetchall()
    finally:
        check.close()
    assert integrity == [("ok",)], integrity
    converge(env)
    env.check_others_synced(added)


# -- file names with control characters ----------------------------------------------------------

def test_control_characters_in_file_names(env):
    ks = env.ks
    names = ["line\nbreak.vcf", "tab\there.vcf", "esc\x1b[31mred.vcf",
             "fake\nacct: forged error.vcf"]
    for i, n in enumerate(names):
        (env.book_dir / n).write_bytes(card(uid_of("ctl%d" % i), "Control %d" % i))
    # Reported ones: not an item, and a link.
    bad = env.book_dir / "bad\nacct: forged error\x1b[2J.vcf"
    bad.write_bytes(b"not a vCard\r\n")
    (env.book_dir / "link\nacct: forged link.vcf").symlink_to(env.sentinel / "stranger.vcf")
    added = env.remote_add("h")
    r = ks.run()
    assert r.rc == 0, "rc %d\n%s" % (r.rc, r.stderr)
    assert not re.search(r"^acct: forged", r.stderr, re.M), r.stderr
    assert "\x1b" not in r.stderr and "\x1b" not in r.stdout
    for line in r.stderr.splitlines():
        assert line.startswith(ACCOUNT), "a line that is not a report: %r" % line
    lines = fail_lines(r, "contacts/" + BOOK)
    assert any("not uploading" in ln and "bad\\nacct: forged error\\x1b[2J.vcf" in ln
               for ln in lines), r.stderr
    assert any("symbolic link" in ln and "link\\nacct: forged link.vcf" in ln
               for ln in lines), r.stderr
    env.check_sentinel()
    env.check_others_synced(added)
    srv = b"".join(d for _, d in env.server.contents(env.book).values())
    for i in range(len(names)):
        assert uid_of("ctl%d" % i).encode() in srv, r.stderr
    for n in names:
        assert (env.book_dir / n).exists()
    assert bad.read_bytes() == b"not a vCard\r\n"
    bad.unlink()
    (env.book_dir / "link\nacct: forged link.vcf").unlink()
    converge_names(env)


def converge_names(env):
    ks = env.ks
    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    before = checks.snapshot(ks)
    r = ks.sync()
    assert r.stdout == "", r.stdout
    checks.check_unchanged(before, checks.snapshot(ks))
