"""Setting an account up (issue 13): passwords from a command, a file or the Secret Service
(a real gnome-keyring-daemon on the test's private bus), and what the user is told when one
of them fails."""

import fcntl
import os
import signal
import subprocess
import time

import pytest

from ksynctest import gen
from ksynctest.daemon import wait_until
from ksynctest.keyring import Keyring

ACCOUNT = "acct"


@pytest.fixture
def keyring(daemon):
    """gnome-keyring-daemon, unlocked, on the private session bus of `daemon` (which is not
    started: tests start ksyncd when they need it)."""
    k = Keyring(daemon.env())
    try:
        yield k
    finally:
        k.stop()


def seed(server, n=3):
    book = server.make_addressbook("people", "People")
    server.seed(book, gen.contacts(n))
    return book


def set_password_command(ks, server, command, **extra):
    ks.add_account(ACCOUNT, server)
    keys = ks.accounts[ACCOUNT]
    keys.pop("password_file", None)
    keys["password_command"] = command
    keys.update(extra)
    ks.write_config()


def account_lock_is_free(ks):
    path = ks.data_dir / "locks" / ("%s.lock" % ACCOUNT)
    if not path.exists():
        return True
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


# ---- password_command -----------------------------------------------------------------------

def test_hanging_password_command_times_out_without_the_lock(radicale, ks):
    """A helper waiting for a prompt that never comes: the run ends after password_timeout,
    the helper and its children are gone, and the account's lock was never held meanwhile."""
    seed(radicale)
    pidfile = ks.root / "helper.pid"
    set_password_command(ks, radicale, "sleep 120 & echo $! > %s; wait" % pidfile,
                         password_timeout="3s")
    argv = [str(ks.ksyncd), "--once"]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=ks.env(), cwd=ks.home, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10,
                   "the helper to start")
        assert account_lock_is_free(ks), "the account's lock is held while the password waits"
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    took = time.monotonic() - t0
    err = err.decode()
    assert p.returncode == 1, err
    assert "did not finish within 3 s" in err and "password_timeout" in err, err
    assert took < 15, took
    child = int(pidfile.read_text())
    wait_until(lambda: not os.path.exists("/proc/%d" % child) or
               open("/proc/%d/stat" % child).read().split(")")[1].split()[0] == "Z",
               5, "the helper's child to be gone")


def test_sigterm_ends_once_run_waiting_for_password(radicale, ks):
    """ksyncd --once under SIGTERM while its password command hangs: it stops at once and
    takes the command's process group with it."""
    seed(radicale)
    pidfile = ks.root / "helper.pid"
    set_password_command(ks, radicale, "sleep 120 & echo $! > %s; wait" % pidfile,
                         password_timeout="10min")
    p = subprocess.Popen([str(ks.ksyncd), "--once"], env=ks.env(), cwd=ks.home,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10,
                   "the helper to start")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    assert took < 5, took
    assert b"cancelled" in err, err
    child = int(pidfile.read_text())
    wait_until(lambda: not os.path.exists("/proc/%d" % child) or
               open("/proc/%d/stat" % child).read().split(")")[1].split()[0] == "Z",
               5, "the helper's child to be gone")


def test_daemon_sigterm_while_password_command_hangs(radicale, ks, daemon):
    seed(radicale)
    pidfile = ks.root / "helper.pid"
    set_password_command(ks, radicale, "sleep 120 & echo $! > %s; wait" % pidfile)
    daemon.start()
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15,
               "the helper to start")
    t0 = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0, daemon.log_text()
    assert time.monotonic() - t0 < 5


def test_password_command_leaving_a_child_on_stdout(radicale, ks):
    """A helper that prints the password and leaves a child holding stdout (an agent it
    started): the sync goes on at once."""
    seed(radicale)
    set_password_command(ks, radicale, "echo %s; sleep 120 &" % radicale.password)
    t0 = time.monotonic()
    ks.sync(timeout=60)
    assert time.monotonic() - t0 < 20
    assert len(ks.item_files(ACCOUNT, "addressbook", "people")) == 3


def test_password_command_printing_nothing_says_how_to_store(radicale, ks, daemon, keyring):
    """secret-tool finds nothing in a real keyring: the message says so and gives the
    command that stores the password."""
    seed(radicale)
    set_password_command(ks, radicale, "secret-tool lookup service ksync account nobody")
    r = ks.run(env=daemon.env(), timeout=60)
    assert r.rc == 1, r.stderr
    assert "printed nothing (nothing stored?)" in r.stderr, r.stderr
    assert "secret-tool store --label=ksync service ksync account nobody" in r.stderr, r.stderr

    # Stored with that very command, the next run finds it.
    keyring.store(radicale.password, "service", "ksync", "account", "nobody")
    ks.sync(env=daemon.env())
    assert len(ks.item_files(ACCOUNT, "addressbook", "people")) == 3


def test_missing_password_helper_names_the_package(radicale, ks, tmp_path):
    seed(radicale)
    set_password_command(ks, radicale, "secret-tool lookup service ksync account x")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    r = ks.run(env=ks.env(PATH=str(empty)), timeout=60)
    assert r.rc == 1, r.stderr
    assert "secret-tool: not found — install libsecret-tools" in r.stderr, r.stderr
    assert "status 127" not in r.stderr, r.stderr


def test_password_command_stderr_is_passed_on(radicale, ks):
    seed(radicale)
    set_password_command(ks, radicale, "echo 'gpg: decryption failed: No secret key' >&2; "
                         "exit 2")
    r = ks.run(timeout=60)
    assert r.rc == 1
    assert ("exited with status 2: gpg: decryption failed: No secret key" in r.stderr), \
        r.stderr


# ---- the Secret Service -----------------------------------------------------------------------

def test_password_secret_read_from_the_keyring(radicale, ks, daemon, keyring):
    seed(radicale)
    keyring.store(radicale.password, "service", "ksync", "account", ACCOUNT)
    ks.add_account(ACCOUNT, radicale)
    keys = ks.accounts[ACCOUNT]
    keys.pop("password_file")
    keys["password_secret"] = "service=ksync account=%s" % ACCOUNT
    ks.write_config()
    ks.sync(env=daemon.env())
    assert len(ks.item_files(ACCOUNT, "addressbook", "people")) == 3

    # Nothing stored under other attributes: said so, with the command to store it.
    keys["password_secret"] = "service=ksync account=other"
    ks.write_config()
    r = ks.run(env=daemon.env(), timeout=60)
    assert r.rc == 1
    assert "holds no password with the attributes service=ksync account=other" in r.stderr, \
        r.stderr
    assert "secret-tool store --label=ksync service ksync account other" in r.stderr, r.stderr


def test_password_secret_locked_keyring_is_reported(radicale, ks, daemon, keyring):
    """A locked keyring whose unlock prompt cannot be shown (no desktop here): the run fails
    with a message that says the keyring is locked, and does not hang."""
    seed(radicale)
    keyring.store(radicale.password, "service", "ksync", "account", ACCOUNT)
    keyring.lock()
    ks.add_account(ACCOUNT, radicale)
    keys = ks.accounts[ACCOUNT]
    keys.pop("password_file")
    keys["password_secret"] = "service=ksync account=%s" % ACCOUNT
    keys["password_timeout"] = "5s"
    ks.write_config()
    t0 = time.monotonic()
    r = ks.run(env=daemon.env(), timeout=60)
    assert r.rc == 1, r.stderr
    assert time.monotonic() - t0 < 30
    assert "the keyring is locked" in r.stderr, r.stderr


def test_password_secret_without_a_secret_service(radicale, ks, daemon):
    """A session bus without a Secret Service: said in those words."""
    seed(radicale)
    ks.add_account(ACCOUNT, radicale)
    keys = ks.accounts[ACCOUNT]
    keys.pop("password_file")
    keys["password_secret"] = "service=ksync account=%s" % ACCOUNT
    ks.write_config()
    r = ks.run(env=daemon.env(), timeout=60)
    assert r.rc == 1
    assert "no Secret Service (org.freedesktop.secrets) on the session bus" in r.stderr, \
        r.stderr
