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
from ksynctest.daemon import IPC_VERSION, wait_until
from ksynctest.keyring import Keyring
from ksynctest.ksync import DEFAULT_BUILD

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


# ---- ksyncctl account add --------------------------------------------------------------------

def run_on_tty(argv, env, answers, cwd, timeout=120):
    """Runs argv with a pseudo-terminal as its controlling terminal (so /dev/tty is there)
    and, each time the output ends with one of the prompts in answers ({prompt: text}),
    types that text and a newline. Returns (exit status, everything the terminal showed)."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    answered = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                out += data
            for prompt, text in answers.items():
                if prompt not in answered and out.rstrip().endswith(prompt.encode()):
                    answered.add(prompt)
                    os.write(fd, text.encode() + b"\n")
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def ctl_path(ks):
    return str(ks.ksyncd.parent / "ksyncctl")


def account_state(daemon, name):
    import json
    r = daemon.ctl("status", "--json")
    assert r.rc == 0, r.stderr
    st = json.loads(r.stdout)
    for a in st["accounts"]:
        if a["name"] == name:
            return a
    return None


def synced(daemon, name):
    a = account_state(daemon, name)
    return a and a["last_result"] == "ok" and a


def test_ask_password_stores_it_in_the_keyring(radicale, ks, daemon, keyring):
    """One prompt, no echo; the password lands in the keyring, ksync.conf names it, and
    ksyncd reads it from there for every sync."""
    seed(radicale)
    daemon.start()
    secret = radicale.password
    rc, shown = run_on_tty(
        [ctl_path(ks), "account", "add", "work", "--url", radicale.url, "--username",
         radicale.username, "--ask-password"],
        daemon.env(), {"(not shown):": secret}, ks.home)
    assert rc == 0, shown
    assert shown.count("(not shown):") == 1, shown
    assert secret not in shown, "the password was echoed:\n" + shown
    assert "People" in shown and "the password to the keyring" in shown, shown
    conf = ks.config_path.read_text()
    assert "password_secret = service=ksync account=work" in conf, conf
    assert secret not in conf
    assert keyring.lookup("service", "ksync", "account", "work") == secret
    a = wait_until(lambda: synced(daemon, "work"), 60, "the first sync of the new account")
    assert [c["items"] for c in a["collections"]] == [3], a


def test_ask_password_reads_stdin_without_a_terminal(radicale, ks, daemon, keyring):
    seed(radicale)
    daemon.start()
    p = subprocess.run([ctl_path(ks), "account", "add", "work", "--url", radicale.url,
                        "--username", radicale.username, "--ask-password"],
                       input=radicale.password + "\n", env=daemon.env(), cwd=ks.home,
                       capture_output=True, text=True, start_new_session=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert keyring.lookup("service", "ksync", "account", "work") == radicale.password


def test_ask_password_without_secret_service_offers_a_file(radicale, ks, daemon):
    seed(radicale)
    daemon.start()
    argv = [ctl_path(ks), "account", "add", "work", "--url", radicale.url, "--username",
            radicale.username, "--ask-password"]
    rc, shown = run_on_tty(argv, daemon.env(), {"(not shown):": radicale.password,
                                                "[y/N]": "n"}, ks.home)
    assert rc == 1, shown
    assert "no Secret Service" in shown and "--password-file" in shown, shown
    assert not ks.config_path.exists() or "[account work]" not in ks.config_path.read_text()

    rc, shown = run_on_tty(argv, daemon.env(), {"(not shown):": radicale.password,
                                                "[y/N]": "y"}, ks.home)
    assert rc == 0, shown
    pwfile = ks.config_path.parent / "work.password"
    assert pwfile.read_text() == radicale.password + "\n"
    assert pwfile.stat().st_mode & 0o777 == 0o600
    assert "password_file = %s" % pwfile in ks.config_path.read_text()
    wait_until(lambda: synced(daemon, "work"), 60, "the first sync of the new account")


def test_account_add_options(radicale, start_server, ks, daemon):
    """--provider with --url (the URL wins), --interval, --no-password, a warning for a
    principal that is already an account."""
    seed(radicale)
    daemon.start()
    pw = ks.secrets / "pw"
    pw.write_text(radicale.password + "\n")
    os.chmod(pw, 0o600)
    r = daemon.ctl("account", "add", "work", "--provider", "infomaniak", "--url", radicale.url,
                   "--username", radicale.username, "--password-file", pw,
                   "--interval", "5min")
    assert r.rc == 0, r.stdout + r.stderr
    conf = ks.config_path.read_text()
    assert "provider = infomaniak" in conf and "url = %s" % radicale.url in conf, conf
    assert "interval = 5min" in conf, conf
    wait_until(lambda: synced(daemon, "work"), 60, "the first sync")

    r = daemon.ctl("account", "add", "again", "--url", radicale.url, "--username",
                   radicale.username, "--password-file", pw)
    assert r.rc == 0, r.stdout + r.stderr
    assert "warning: account work already syncs this principal" in r.stderr, r.stderr

    xan = start_server("xandikos")
    xan.make_addressbook("open", "Open")
    r = daemon.ctl("account", "add", "open", "--url", xan.url, "--no-password")
    assert r.rc == 0, r.stdout + r.stderr
    section = ks.config_path.read_text().split("[account open]")[1]
    assert "username" not in section and "password" not in section, section
    wait_until(lambda: synced(daemon, "open"), 60, "the first sync of the open account")

    r = daemon.ctl("account", "add", "bad", "--url", radicale.url, "--no-password",
                   "--interval", "10s")
    assert r.rc == 2 and "--interval" in r.stderr, r.stderr
    r = daemon.ctl("account", "add", "work", "--url", radicale.url, "--no-password")
    assert r.rc == 1 and "exists already" in r.stderr, r.stderr


def test_account_add_insecure_http_and_ca_file(radicale, ks, daemon, tmp_path):
    from ksynctest import tlsfront

    seed(radicale)
    daemon.start()
    pw = ks.secrets / "pw"
    pw.write_text(radicale.password + "\n")
    os.chmod(pw, 0o600)
    # A name of this machine that ksync.conf does not know to be loopback: the host name
    # where it resolves to 127.0.0.1, else the IPv4-mapped IPv6 form of 127.0.0.1.
    import socket
    try:
        host = socket.gethostname()
        if socket.gethostbyname(host) != "127.0.0.1" or host == "localhost":
            host = "[::ffff:127.0.0.1]"
    except OSError:
        host = "[::ffff:127.0.0.1]"
    url = "http://%s:%d/" % (host, radicale.port)
    r = daemon.ctl("account", "add", "plain", "--url", url, "--username", radicale.username,
                   "--password-file", pw)
    assert r.rc == 2 and "allow_insecure_http" in r.stderr, r.stderr
    r = daemon.ctl("account", "add", "plain", "--url", url, "--username", radicale.username,
                   "--password-file", pw, "--allow-insecure-http")
    assert r.rc == 0, r.stdout + r.stderr
    assert "allow_insecure_http = true" in ks.config_path.read_text()

    cert = tlsfront.make_cert(tmp_path / "certs", "front")
    front = tlsfront.Front(radicale, cert=cert)
    try:
        r = daemon.ctl("account", "add", "tls", "--url", front.url, "--username",
                       radicale.username, "--password-file", pw)
        assert r.rc == 5 and "ca_file" in r.stderr, r.stderr    # the network (TLS)
        os.symlink(cert.cert, ks.home / "ca.pem")
        r = daemon.ctl("account", "add", "tls", "--url", front.url, "--username",
                       radicale.username, "--password-file", pw, "--ca-file", "ca.pem")
        assert r.rc == 0, r.stdout + r.stderr
        assert "ca_file = %s" % (ks.home / "ca.pem") in ks.config_path.read_text()
        wait_until(lambda: synced(daemon, "tls"), 60, "the first sync over TLS")
    finally:
        front.stop()


# ---- the bus: nothing a caller names is run or read -------------------------------------------

def test_bus_refuses_what_it_must_not_run_or_read(ks, daemon, tmp_path):
    daemon.start()
    marker = tmp_path / "ran"
    v = IPC_VERSION
    url = "http://127.0.0.1:9/"
    r = daemon.busctl("AddAccount", "ussssss", v, "x", "", url, "u", "touch %s" % marker, "")
    assert r.rc != 0 and "Unknown method" in r.stderr, r.stderr
    r = daemon.busctl("ProbeAccount", "ussssa{sv}", v, "x", url, "u", "",
                      1, "password_command", "s", "touch %s" % marker)
    assert r.rc != 0 and "Unknown option 'password_command'" in r.stderr, r.stderr
    r = daemon.busctl("ProbeAccount", "ussssa{sv}", v, "x", url, "u", "",
                      1, "password_file", "s", str(ks.config_path))
    assert r.rc != 0 and "Unknown option 'password_file'" in r.stderr, r.stderr
    r = daemon.busctl("ProbeAccount", "ussssa{sv}", v, "../x", url, "u", "", 0)
    assert r.rc != 0 and "invalid account name" in r.stderr, r.stderr
    r = daemon.busctl("ProbeAccount", "ussssa{sv}", v, "x", "http://dav.example.org/", "u",
                      "pw", 0)
    assert r.rc != 0 and "allow_insecure_http" in r.stderr, r.stderr
    r = daemon.busctl("ProbeAccount", "ussssa{sv}", v, "x", "https://127.0.0.1:9/", "u", "",
                      1, "ca_file", "s", "relative.pem")
    assert r.rc != 0 and "ca_file must be the absolute path" in r.stderr, r.stderr
    r = daemon.busctl("Sync", "usbb", v, "a\x1bb", False, False)
    assert r.rc != 0 and "control character" in r.stderr, r.stderr
    r = daemon.busctl("CreateAddressBook", "usss", v, "acct", "x" * 5000, "")
    assert r.rc != 0 and "longer than" in r.stderr, r.stderr
    r = daemon.busctl("Status", "u", v - 1)
    assert r.rc != 0 and "version" in r.stderr, r.stderr
    assert not marker.exists()


# ---- a config error never bricks the daemon ---------------------------------------------------

def status_json(daemon):
    import json
    r = daemon.ctl("status", "--json")
    assert r.rc == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def good_and_broken(ks, server):
    """Accounts "good" and "broken", the same but for a misspelt key in the second."""
    keys = ks.add_account("good", server)
    text = ks.config_text() + ("[account broken]\nurl = %s\nusrname = %s\n"
                               "password_file = %s\n" % (server.url, server.username,
                                                         keys["password_file"]))
    ks.write_config(text)
    return text


def test_broken_account_next_to_a_good_one(radicale, ks, daemon):
    seed(radicale)
    text = good_and_broken(ks, radicale)
    daemon.start()
    a = wait_until(lambda: synced(daemon, "good"), 60, "the good account's sync")
    assert a["collections"][0]["items"] == 3
    st = status_json(daemon)
    assert [x["name"] for x in st["accounts"]] == ["good"]
    assert st["config"]["invalid_accounts"] == ["broken"], st["config"]
    assert any(":8: unknown key 'usrname' in [account broken]" in e
               for e in st["config"]["errors"]), st["config"]
    r = daemon.ctl("status")
    assert r.rc == 0
    assert "has errors; left out until it is fixed: broken" in r.stdout, r.stdout
    assert "unknown key 'usrname'" in r.stdout, r.stdout
    r = daemon.ctl("sync", "broken")
    assert r.rc == 3    # a configuration error
    assert "Account 'broken' in %s has errors" % ks.config_path in r.stderr, r.stderr
    assert "unknown key 'usrname'" in r.stderr and "?" not in r.stderr, r.stderr

    # Fixed in the file: ksyncd notices by itself and syncs the account.
    ks.write_config(text.replace("usrname", "username"))
    wait_until(lambda: synced(daemon, "broken"), 60, "the fixed account's sync")
    st = status_json(daemon)
    assert st["config"]["errors"] == [] and st["config"]["invalid_accounts"] == []


def test_only_broken_accounts_exit_with_ex_config(radicale, ks, daemon):
    ks.write_config("[account broken]\nurl = %s\nusrname = bob\n" % radicale.url)
    daemon.start(wait_ready=False)
    assert daemon.wait_exit(30) == 78, daemon.log_text()
    assert "unknown key 'usrname'" in daemon.log_text()

    # Started by D-Bus activation, as ksyncctl would: ksyncctl says why it cannot start.
    daemon.make_activatable()
    r = daemon.ctl("status")
    assert r.rc == 3
    assert "ksyncd cannot start: no account of %s is free of errors" % ks.config_path \
        in r.stderr, r.stderr
    assert "ksync.conf:3: unknown key 'usrname' in [account broken]" in r.stderr, r.stderr
    assert "config check" in r.stderr


def test_unit_keeps_a_broken_config_from_restarting_forever():
    src = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "ksyncd.service.in")
    unit = open(src).read()
    assert "RestartPreventExitStatus=78" in unit
    assert "network-online.target" not in unit


def test_config_check(ks, tmp_path):
    ctl = ctl_path(ks)
    ks.write_config("[general]\ninterval = 5\n\n[account a]\nurl = https://a.example/\n"
                    "username = bob  # work\n\n[account b]\nurl = ftp://b.example/\n")
    p = subprocess.run([ctl, "config", "check"], env=ks.env(), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 3, p.stdout + p.stderr
    lines = p.stderr.splitlines()
    assert "%s:2: interval '5' is too short; the minimum is 60s" % ks.config_path in lines, \
        p.stderr
    assert any(l.startswith("%s:9: invalid URL 'ftp://b.example/'" % ks.config_path)
               for l in lines), p.stderr
    assert any(l.startswith("warning: %s:6: the value of username holds ' #'"
                            % ks.config_path) for l in lines), p.stderr
    assert "Left out until fixed: b." in p.stderr, p.stderr
    assert "1 account(s) without errors: a." in p.stdout, p.stdout

    other = tmp_path / "other.conf"
    other.write_text("[account x]\nurl = https://x.example/\n[account y]\n"
                     "url = https://y.example/\n")
    p = subprocess.run([ctl, "config", "check", str(other)], env=ks.env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "%s: 2 account(s) ready: x, y.\n" % other and p.stderr == ""


def test_reload_errors_keep_their_line_breaks(radicale, ks, daemon):
    seed(radicale)
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    wait_until(lambda: synced(daemon, ACCOUNT), 60, "the first sync")
    ks.write_config(ks.config_text() + "[account x]\nbogus = 1\nother = 2\n")
    r = daemon.ctl("reload")
    assert r.rc == 3
    lines = r.stderr.splitlines()
    assert "ksyncctl: %s:7: unknown key 'bogus' in [account x]" % ks.config_path in lines, \
        r.stderr
    assert "ksyncctl: %s:8: unknown key 'other' in [account x]" % ks.config_path in lines, \
        r.stderr
    assert [a["name"] for a in status_json(daemon)["accounts"]] == [ACCOUNT]


def test_once_syncs_the_good_accounts(radicale, ks):
    seed(radicale)
    good_and_broken(ks, radicale)
    r = ks.run(timeout=120)
    assert r.rc == 1
    assert "unknown key 'usrname' in [account broken]" in r.stderr, r.stderr
    assert len(ks.item_files("good", "addressbook", "people")) == 3
    r = ks.run("broken", timeout=60)
    assert r.rc == 78, r.stderr


# ---- discovery messages name the real cause ---------------------------------------------------

def once_with_url(ks, server, url):
    ks.add_account(ACCOUNT, server, url=url)
    return ks.run(timeout=120)


def test_wrong_path_answered_403_is_not_blamed_on_credentials(radicale, ks, daemon):
    from ksynctest import tlsfront
    from ksynctest.tlsfront import Reply

    def route(front, seen):
        if seen.path.startswith("/alic401/"):
            return Reply(403, [("Content-Type", "text/plain")], b"Forbidden")
        if seen.path.startswith("/.well-known/"):
            return Reply(404)
        return None

    seed(radicale)
    front = tlsfront.Front(radicale, route=route)
    try:
        # The digits 401 in the path (or the port) are no HTTP status 401.
        url = front.url_for("/alic401/")
        r = once_with_url(ks, radicale, url)
        assert r.rc == 1
        assert "%s refused access (HTTP 403): is the path right?" % url in r.stderr, r.stderr
        assert "password" not in r.stderr and "credentials" not in r.stderr, r.stderr

        daemon.start()
        pw = ks.secrets / ("%s.password" % ACCOUNT)
        r = daemon.ctl("account", "add", "other", "--url", url, "--username",
                       radicale.username, "--password-file", pw)
        assert r.rc == 1
        assert "refused access (HTTP 403): is the path right?" in r.stderr, r.stderr
        assert "application password" not in r.stderr, r.stderr
    finally:
        front.stop()


def test_web_server_that_is_not_dav(ks, radicale, tmp_path):
    import http.server
    import threading
    from functools import partial
    from ksynctest import servers

    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<html>hello</html>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", servers.free_port()), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d/" % httpd.server_address[1]
        r = once_with_url(ks, radicale, url)
        assert r.rc == 1
        assert "%s does not speak CalDAV/CardDAV (PROPFIND answered 501)" % url in r.stderr, \
            r.stderr
        assert "username" not in r.stderr, r.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_to_a_plain_http_port(radicale, ks):
    url = "https://127.0.0.1:%d/" % radicale.port
    r = once_with_url(ks, radicale, url)
    assert r.rc == 1
    assert "%s: this port speaks plain http, not https" % url in r.stderr, r.stderr
    assert "SSL" not in r.stderr and "ssl" not in r.stderr, r.stderr


# ---- a 401 during a sync stops the account ----------------------------------------------------

def failed_logins(radicale):
    return radicale.log_text().count("Failed login attempt")


def add_vcard(ks, account, uid):
    d = ks.collection_dir(account, "addressbook", "people")
    (d / (uid + ".vcf")).write_bytes(
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + uid.encode() + b"\r\nFN:" + uid.encode() +
        b"\r\nN:" + uid.encode() + b";;;;\r\nEND:VCARD\r\n")


def test_401_during_sync_stops_the_account(radicale, ks, daemon):
    book = seed(radicale)
    keys = ks.add_account(ACCOUNT, radicale)
    pwfile = keys["password_file"]
    daemon.start()
    wait_until(lambda: synced(daemon, ACCOUNT), 60, "the first sync")

    # The password changed on the server's side: the next run gets a 401.
    with open(pwfile, "w") as f:
        f.write("no-longer-the-password\n")
    add_vcard(ks, ACCOUNT, "edit-1")
    a = wait_until(lambda: (lambda x: x["state"] == "stopped" and x)(
        account_state(daemon, ACCOUNT)), 60, "the account to stop")
    assert "application password" in a["last_error"], a
    assert "stopped trying" in a["last_error"], a
    assert a["retry_in"] is None, a
    refused = failed_logins(radicale)
    assert 1 <= refused <= 2, radicale.log_text()[-3000:]

    # Local edits do not try the same password again.
    for i in range(2):
        add_vcard(ks, ACCOUNT, "edit-more-%d" % i)
        time.sleep(4)
    assert failed_logins(radicale) == refused
    assert account_state(daemon, ACCOUNT)["state"] == "stopped"
    r = daemon.ctl("status")
    assert "stopped" in r.stdout and "application password" in r.stdout, r.stdout

    # ksyncctl sync tries once more (and stops again).
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 4    # the credentials
    assert "application password" in r.stdout + r.stderr, r.stdout + r.stderr
    assert account_state(daemon, ACCOUNT)["state"] == "stopped"
    refused = failed_logins(radicale)

    # A new password: the next edit finds it and everything goes up.
    with open(pwfile, "w") as f:
        f.write(radicale.password + "\n")
    add_vcard(ks, ACCOUNT, "edit-2")
    href = "%sedit-2.vcf" % book
    wait_until(lambda: any(h.endswith("edit-2.vcf") for h in radicale.list(book)), 60,
               "the edits on the server")
    assert any(h.endswith("edit-1.vcf") for h in radicale.list(book)), href
    wait_until(lambda: synced(daemon, ACCOUNT), 60, "an ok sync")
    assert failed_logins(radicale) == refused


def test_401_stop_ends_with_a_config_change(radicale, ks, daemon):
    seed(radicale)
    keys = ks.add_account(ACCOUNT, radicale)
    keys["username"] = "nobody"
    ks.write_config()
    daemon.start()
    wait_until(lambda: (lambda x: x["state"] == "stopped" and x)(
        account_state(daemon, ACCOUNT)), 60, "the account to stop")
    keys["username"] = radicale.username
    ks.write_config()
    wait_until(lambda: synced(daemon, ACCOUNT), 60, "the sync after the fix")


# ---- the network coming back -------------------------------------------------------------------

def test_network_back_syncs_at_once(radicale, ks, daemon, tmp_path):
    """NetworkManager (a stand-in owning its name on a private system bus) says the network
    is back: an account waiting in backoff syncs at once, not after the backoff."""
    import dbus
    import dbus.lowlevel
    from ksynctest import servers, tlsfront
    from ksynctest.daemon import SESSION_CONF

    seed(radicale)
    port = servers.free_port()
    ks.add_account(ACCOUNT, radicale, url="http://127.0.0.1:%d/" % port)
    sock = tmp_path / "system_bus"
    conf = tmp_path / "system-bus.conf"
    (tmp_path / "no-services").mkdir()
    conf.write_text(SESSION_CONF % {"services": tmp_path / "no-services", "socket": sock})
    bus = subprocess.Popen(["dbus-daemon", "--config-file=%s" % conf, "--nofork",
                            "--nopidfile", "--print-address"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=ks.env())
    front = None
    try:
        address = bus.stdout.readline().decode().strip()
        assert address
        nm = dbus.bus.BusConnection(address)
        nm.request_name("org.freedesktop.NetworkManager")
        daemon.system_bus_address = address
        daemon.start()
        a = wait_until(lambda: (lambda x: x["state"] == "backoff" and x)(
            account_state(daemon, ACCOUNT)), 60, "the failed first run")
        assert a["retry_in"] >= 25, a
        assert "Watching NetworkManager" in daemon.log_text()

        front = tlsfront.Front(radicale, port=port)
        t0 = time.monotonic()
        for state in (20, 70):      # NM_STATE_DISCONNECTED, then NM_STATE_CONNECTED_GLOBAL
            msg = dbus.lowlevel.SignalMessage("/org/freedesktop/NetworkManager",
                                              "org.freedesktop.NetworkManager",
                                              "StateChanged")
            msg.append(dbus.UInt32(state))
            nm.send_message(msg)
        nm.flush()
        wait_until(lambda: synced(daemon, ACCOUNT), 20, "the sync once the network is back")
        took = time.monotonic() - t0
        print("synced %.1f s after NetworkManager said the network is back" % took)
        assert took < 10, took
        assert "the network is back" in daemon.log_text()
        nm.close()
    finally:
        if front:
            front.stop()
        bus.terminate()
        bus.wait(timeout=10)


def test_without_networkmanager_offline_retries_are_capped(ks, daemon):
    ks.accounts[ACCOUNT] = {"url": "http://127.0.0.1:9/", "username": "u"}
    ks.write_config()
    daemon.start()
    wait_until(lambda: (lambda x: x["state"] == "backoff" and x)(
        account_state(daemon, ACCOUNT)), 60, "the failed first run")
    assert "no NetworkManager: runs that find no network are retried every minute" in \
        daemon.log_text()


# ---- make install ------------------------------------------------------------------------------

def test_make_install_paths(tmp_path):
    """PREFIX=~/.local puts the user unit where systemd looks for it, and /usr/local keeps
    lib/systemd/user."""
    src = os.path.join(os.path.dirname(__file__), "..", "..")
    build = os.environ.get("KSYNC_BUILD", DEFAULT_BUILD)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path),
           "LANG": "C.UTF-8"}
    prefix = home / ".local"
    b = os.path.relpath(build, os.path.abspath(src))
    # The flags the build was made with (SANITIZE=1), so that install, which depends on
    # all, finds it up to date rather than rebuilding it otherwise.
    flags = os.environ.get("KSYNC_MAKEFLAGS", "").split()
    p = subprocess.run(["make", "-s", "-C", src, "install", "PREFIX=%s" % prefix, "B=%s" % b]
                       + flags, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    unit = prefix / "share" / "systemd" / "user" / "ksyncd.service"
    assert unit.is_file(), p.stdout
    assert "ExecStart=%s/bin/ksyncd" % prefix in unit.read_text()
    assert "Note: systemd does not look" not in p.stdout, p.stdout
    paths = subprocess.run(["systemd-analyze", "--user", "unit-paths"], env=env,
                           capture_output=True, text=True, timeout=60).stdout.split()
    assert str(unit.parent) in paths, paths
    svc = prefix / "share" / "dbus-1" / "services" / "io.ksync.Sync1.service"
    assert "Exec=%s/bin/ksyncd" % prefix in svc.read_text()
    for f in ("bin/ksyncd", "bin/ksyncctl", "share/man/man1/ksyncctl.1",
              "share/man/man5/ksync.conf.5", "share/man/man8/ksyncd.8",
              "share/bash-completion/completions/ksyncctl",
              "share/zsh/site-functions/_ksyncctl",
              "share/fish/vendor_completions.d/ksyncctl.fish"):
        assert (prefix / f).is_file(), f

    dest = tmp_path / "dest"
    p = subprocess.run(["make", "-s", "-C", src, "install", "PREFIX=/usr/local",
                        "DESTDIR=%s" % dest, "B=%s" % b] + flags, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (dest / "usr/local/lib/systemd/user/ksyncd.service").is_file()


def test_make_says_run_make_deps(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "..", "..")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PKG_CONFIG_LIBDIR": str(tmp_path / "no-pc"), "PKG_CONFIG_PATH": ""}
    p = subprocess.run(["make", "-C", src, "all", "B=%s" % (tmp_path / "build")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "pkg-config cannot find: libcurl" in out and "make deps" in out, out
    assert "error:" not in out and "fatal" not in out, out
    assert not (tmp_path / "build").exists()


# ---- make demo ---------------------------------------------------------------------------------

def test_demo_runs_end_to_end():
    """What `make demo` runs: --once, the readers, then ksyncd started by D-Bus activation
    sending an event made with khal to the server within seconds."""
    demo = os.path.join(os.path.dirname(__file__), "..", "demo.py")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC",
           "KSYNC_BUILD": os.environ.get("KSYNC_BUILD", DEFAULT_BUILD)}
    p = subprocess.run(["/usr/bin/python3", demo], env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    out = p.stdout
    assert "5. The service" in out
    assert "$ ksyncctl status" in out and "Account demo" in out, out[-3000:]
    import re
    m = re.search(r"On the server ([0-9.]+) s later", out)
    assert m and float(m.group(1)) < 15, out[-3000:]
    assert "state      idle" in out and "Done\n" in out, out[-3000:]
