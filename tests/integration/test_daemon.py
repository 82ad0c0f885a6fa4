"""ksyncd as a service on a private session bus, driven by ksyncctl (issue 4)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from ksynctest import checks, gen, servers
from ksynctest.daemon import IPC_VERSION, account_status, status, synced_ok, wait_until
from ksynctest.ksync import DEFAULT_BUILD

ACCOUNT = "acct"


def seed(server, n=8):
    book = server.make_addressbook("people", "People")
    server.seed(book, gen.contacts(n))
    return book


def test_ready_status_and_first_sync(server, ks, daemon):
    book = seed(server)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    a = wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    books = [c for c in a["collections"] if c["href"] == servers.href_path(book)]
    assert books and books[0]["items"] == 8 and books[0]["pending"] == 0, a
    assert a["next_sync"] and a["next_sync"] > time.time() + 800, a
    assert len(ks.item_files(ACCOUNT, "addressbook", "people")) == 8
    notes = daemon.read_notifications()
    assert any(n.startswith("STATUS=") for n in notes), notes


def test_local_edit_reaches_server_within_seconds(server, ks, daemon):
    book = seed(server, 3)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    uid = "notified@ksync.example"
    t0 = time.monotonic()
    (d / (uid + ".vcf")).write_bytes(
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + uid.encode() +
        b"\r\nFN:Noti Fied\r\nN:Fied;Noti;;;\r\nEND:VCARD\r\n")
    href = servers.href_path(book) + uid + ".vcf"
    wait_until(lambda: href in server.list(book), 30, "the new contact on the server")
    elapsed = time.monotonic() - t0
    print("local edit on the server after %.2f s" % elapsed)
    assert elapsed < 15, elapsed


def test_status_answers_during_large_sync(radicale, ks, daemon):
    book = radicale.make_addressbook("big", "Big")
    radicale.seed(book, gen.contacts(1500))
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    saw_syncing = False
    worst = 0.0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        t = time.monotonic()
        r = daemon.busctl("Status", "u", IPC_VERSION, timeout=5)
        worst = max(worst, time.monotonic() - t)
        assert r.rc == 0, r.stderr
        st = json.loads(json.loads(r.stdout)["data"][0])
        state = st["accounts"][0]["state"]
        saw_syncing |= state == "syncing"
        if state == "idle" and st["accounts"][0]["last_result"]:
            break
    print("slowest Status answer during the sync: %.3f s" % worst)
    assert saw_syncing
    assert worst < 2.0, worst


def test_force_sync_repairs_deleted_and_damaged_files(server, ks, daemon):
    seed(server, 5)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    files = sorted(ks.item_files(ACCOUNT, "addressbook", "people"))
    gone, broken = d / files[0], d / files[1]
    good = broken.read_bytes()
    gone_bytes = gone.read_bytes()
    gone.unlink()
    broken.write_bytes(b"this is no vCard\n")
    r = daemon.ctl("sync", "--force", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert gone.read_bytes() == gone_bytes
    assert broken.read_bytes() == good
    assert len(server.list(servers.href_path(
        [c for c in server.collections() if "people" in c][0]))) == 5


@pytest.mark.all_servers
def test_add_addressbook_and_task_list(server, ks, daemon):
    seed(server, 2)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    before = set(server.collections())
    r = daemon.ctl("add-addressbook", ACCOUNT, "Family", "--description", "Close ones")
    assert r.rc == 0, r.stdout + r.stderr
    r2 = daemon.ctl("add-calendar", ACCOUNT, "Chores", "--tasks", "--color", "#336699")
    assert r2.rc == 0, r2.stdout + r2.stderr
    new = {h: c for h, c in server.collections().items() if h not in before}
    kinds = sorted(c["kind"] for c in new.values())
    assert kinds == ["addressbook", "calendar"], new
    names = {c["displayname"] for c in new.values()}
    assert names == {"Family", "Chores"}, new
    cal = [c for c in new.values() if c["kind"] == "calendar"][0]
    if server.kind != "xandikos":
        assert "VTODO" in cal["components"] and "VEVENT" not in cal["components"], cal
    # The directories exist when the commands return.
    cols = {c["displayname"]: c for c in account_status(daemon)["collections"]}
    for name in ("Family", "Chores"):
        assert name in cols, cols
        assert os.path.isdir(cols[name]["dir"]), cols[name]


def test_sighup_with_broken_config_keeps_the_old_one(server, ks, daemon):
    book = seed(server, 2)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    good = ks.config_path.read_text()
    ks.config_path.write_text(good + "\n[account broken]\nurl = ftp://nope\nbogus = 1\n")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "keeping the configuration in use" in daemon.log_text(), 15,
               "the reload error in the log")
    assert [a["name"] for a in status(daemon)["accounts"]] == [ACCOUNT]
    # Still syncing with the old configuration.
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    uid = "after-hup@ksync.example"
    (d / (uid + ".vcf")).write_bytes(b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + uid.encode() +
                                     b"\r\nFN:After Hup\r\nN:Hup;After;;;\r\nEND:VCARD\r\n")
    href = servers.href_path(book) + uid + ".vcf"
    wait_until(lambda: href in server.list(book), 30, "the edit on the server")


def test_sigterm_mid_sync_loses_nothing(radicale, ks, daemon):
    book = radicale.make_addressbook("big", "Big")
    radicale.seed(book, gen.contacts(1500))
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    wait_until(lambda: account_status(daemon)["state"] == "syncing", 30, "the sync to start")
    time.sleep(0.5)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(60) == 0, daemon.log_text()
    assert any(n.startswith("STOPPING=1") for n in daemon.read_notifications())
    # Whatever the interrupted run did not finish, the next one does.
    ks.sync()
    checks.check_mirror(ks, radicale, ACCOUNT)
    checks.check_tree_hygiene(ks)


def test_account_add_reports_wrong_password_and_username(radicale, start_server, ks, daemon):
    daemon.start()
    pw = ks.secrets / "wrong.pw"
    pw.write_text("not-the-password\n")
    os.chmod(pw, 0o600)
    r = daemon.ctl("account", "add", "work", "--url", radicale.url, "--username", "user",
                   "--password-file", pw)
    assert r.rc != 0
    assert re.search(r"authentication|401", r.stderr, re.I), r.stderr
    assert re.search(r"application password", r.stderr + r.stdout, re.I), r.stderr
    assert not ks.config_path.exists() or "[account work]" not in ks.config_path.read_text()

    srv = start_server("xandikos", create_principal=False, principal="/nobody/")
    r = daemon.ctl("account", "add", "other", "--url", srv.url, "--username", "AB12345@mail",
                   "--password-file", pw)
    assert r.rc != 0
    assert re.search(r"principal", r.stderr, re.I), r.stderr

    good = ks.secrets / "good.pw"
    good.write_text(radicale.password + "\n")
    os.chmod(good, 0o600)
    radicale.make_addressbook("people", "People")
    r = daemon.ctl("account", "add", "work", "--url", radicale.url, "--username", "user",
                   "--password-file", good)
    assert r.rc == 0, r.stdout + r.stderr
    assert "People" in r.stdout, r.stdout
    assert "[account work]" in ks.config_path.read_text()
    assert ks.config_path.stat().st_mode & 0o077 == 0


def test_unit_file_verifies(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "ksyncd.service.in")
    unit = tmp_path / "ksyncd.service"
    build = os.environ.get("KSYNC_BUILD", DEFAULT_BUILD)
    unit.write_text(open(src).read().replace("@BINDIR@", os.path.abspath(build)))
    p = subprocess.run(["systemd-analyze", "--user", "--man=no", "verify", str(unit)],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "XDG_RUNTIME_DIR": str(tmp_path)})
    problems = [ln for ln in (p.stdout + p.stderr).splitlines()
                if "ksyncd.service" in ln and "Unknown key" in ln or "Failed" in ln]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def test_unit_exposure(tmp_path):
    """The unit's sandboxing as systemd-analyze rates it: 6.0 (MEDIUM) before PrivateUsers=
    and the settings it enables were added."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "ksyncd.service.in")
    unit = tmp_path / "ksyncd.service"
    unit.write_text(open(src).read().replace("@BINDIR@", "/usr/bin"))
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--user",
                        "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "XDG_RUNTIME_DIR": str(tmp_path), "LANG": "C.UTF-8"})
    m = re.search(r"Overall exposure level for ksyncd.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 2.0, p.stdout
    for setting in ("PrivateUsers=", "ProtectSystem=", "CapabilityBoundingSet=",
                    "SystemCallFilter=", "PrivateDevices=", "ProtectKernelModules="):
        line = [ln for ln in p.stdout.splitlines() if setting in ln]
        assert line and all(ln.lstrip().startswith("\u2713") for ln in line), line


def test_retry_after_is_honoured(ks, daemon):
    """A server answering 503 with Retry-After: the next run waits that long, not the
    30 s of the first backoff step."""
    import http.server
    import threading

    class Busy(http.server.BaseHTTPRequestHandler):
        def handle_one(self):
            self.send_response(503)
            self.send_header("Retry-After", "300")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PROPFIND = do_GET = do_REPORT = handle_one

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", servers.free_port()), Busy)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        ks.accounts[ACCOUNT] = {"url": "http://127.0.0.1:%d/" % httpd.server_address[1],
                                "username": "user"}
        ks.write_config()
        daemon.start()
        a = wait_until(lambda: (lambda s: s["last_result"] == "failed" and s)(
            account_status(daemon)), 60, "the failed first run")
        assert a["state"] == "backoff", a
        assert 290 <= a["retry_in"] <= 300, a
        assert a["next_sync"] >= time.time() + 280, a
    finally:
        httpd.shutdown()


def test_file_name_that_is_not_utf8_reaches_the_bus(radicale, ks, daemon):
    """A run's message naming a file whose name is not UTF-8 goes out as valid JSON, the bad
    byte as U+FFFD: D-Bus refuses a string that is not UTF-8, and the account's SyncFinished
    would be lost with it."""
    seed(radicale, 2)
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    (d / os.fsdecode(b"bad\xff.vcf")).write_bytes(b"not a vCard\r\n")
    r = daemon.ctl("--json", "sync", ACCOUNT)
    got = json.loads(r.stdout)
    accounts = [a for a in got["accounts"] if a["account"] == ACCOUNT]
    assert len(accounts) == 1, got
    notices = accounts[0]["result"]["notices"]
    assert any("'bad\ufffd.vcf'" in n for n in notices), notices
    a = account_status(daemon)
    assert a["state"] == "idle", a
