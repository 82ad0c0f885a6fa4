"""What ksyncd tells the user (issue 14): reports of what a run did and nothing else, last
sync times across restarts, pending files with their reasons."""

import os
import re

from ksynctest import gen
from ksynctest.daemon import account_status, synced_ok, wait_until

ACCOUNT = "acct"


def collection(a, path):
    got = [c for c in a["collections"] if c["path"] == path]
    assert len(got) == 1, (path, a["collections"])
    return got[0]


def result_lines(out):
    """{"contacts/people": "up to date", ...} from the lines `ksyncctl sync` prints."""
    lines = {}
    for ln in out.splitlines():
        m = re.match(r"^%s/(\S+):\s+(.*)$" % ACCOUNT, ln)
        if m:
            lines[m.group(1)] = m.group(2)
    return lines


def vcard(uid, fn):
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:%s\r\nFN:%s\r\nN:%s;;;;\r\nEND:VCARD\r\n"
            % (uid, fn, fn)).encode()


def setup_two(server, ks, daemon, n=3):
    """An address book and a calendar, synced once by a running ksyncd."""
    book = server.make_addressbook("people", "People")
    server.seed(book, gen.contacts(n))
    cal = server.make_calendar("work", "Work", components=("VEVENT",))
    server.seed(cal, gen.events(n))
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    return book, cal


def test_sync_of_one_collection_reports_only_it(server, ks, daemon):
    """`ksyncctl sync acct/contacts/people` names that collection alone: the calendar,
    which has a server change waiting, is not called "up to date"."""
    book, cal = setup_two(server, ks, daemon)
    ev = gen.events(1, seed=7)
    name, data = next(iter(ev.items()))
    server.put(cal + name, data)
    r = daemon.ctl("sync", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stdout + r.stderr
    lines = result_lines(r.stdout)
    assert lines == {"contacts/people": "up to date"}, r.stdout
    # The calendar's change was not fetched, and the next sync of it says so.
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    lines = result_lines(r.stdout)
    assert lines["contacts/people"] == "up to date", r.stdout
    assert lines["calendars/work"] == "1 new", r.stdout


def test_failed_password_fetch_syncs_nothing_and_says_why(radicale, ks, daemon):
    """A password that cannot be read: every collection says it was not synced and why,
    none is "up to date", and an earlier count is not shown again."""
    book, cal = setup_two(radicale, ks, daemon)
    radicale.put(book + "new-one.vcf", vcard("new-one", "New One"))
    r = daemon.ctl("sync", ACCOUNT)
    assert result_lines(r.stdout)["contacts/people"] == "1 new", r.stdout
    os.chmod(ks.accounts[ACCOUNT]["password_file"], 0o644)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc != 0
    lines = result_lines(r.stdout)
    for path in ("contacts/people", "calendars/work"):
        assert path in lines, r.stdout
        assert lines[path].startswith("not synced: the account failed: cannot get the "
                                      "password"), r.stdout
    assert "up to date" not in r.stdout and "new" not in r.stdout.replace(
        "not synced", ""), r.stdout
    a = account_status(daemon)
    c = collection(a, "contacts/people")
    assert c["last_result"] == "skipped", c
    assert c["last_error"].startswith("not synced"), c
    assert c["last_sync"] and c["last_sync"] <= c["last_run"], c


def test_server_down_reports_every_collection_not_synced(server, ks, daemon):
    book, cal = setup_two(server, ks, daemon)
    server.put(book + "new-one.vcf", vcard("new-one", "New One"))
    r = daemon.ctl("sync", ACCOUNT)
    assert result_lines(r.stdout)["contacts/people"] == "1 new", r.stdout
    server.stop()
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc != 0
    lines = result_lines(r.stdout)
    assert {"contacts/people", "calendars/work"} <= set(lines), r.stdout
    # The listing of the home sets meets the refused connection: no collection was tried.
    for text in lines.values():
        assert text.startswith("not synced: the account failed: ") and \
            "Couldn't connect" in text, r.stdout
    assert "1 new" not in r.stdout and "up to date" not in r.stdout, r.stdout
    # A collection synced on its own is asked directly, and says so itself.
    r = daemon.ctl("sync", ACCOUNT + "/contacts/people")
    assert r.rc != 0
    lines = result_lines(r.stdout)
    assert lines["contacts/people"].startswith("failed: ") and \
        "Couldn't connect" in lines["contacts/people"], r.stdout
    assert "1 new" not in r.stdout and "up to date" not in r.stdout, r.stdout


def test_collection_deleted_on_server_is_reported_once(server, ks, daemon):
    book, cal = setup_two(server, ks, daemon, n=2)
    server.request("DELETE", cal, expect=(200, 204))
    r = daemon.ctl("sync", "--allow-mass-delete", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert "the collection was deleted on the server" in r.stdout, r.stdout
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert result_lines(r.stdout)["contacts/people"] == "up to date", r.stdout
    assert "calendars/work" not in r.stdout, r.stdout


def test_last_sync_survives_a_restart(radicale, ks, daemon):
    setup_two(radicale, ks, daemon)
    before = {c["path"]: c["last_sync"] for c in account_status(daemon)["collections"]}
    assert all(before.values()), before
    daemon.stop_service()
    # With the server gone, the restarted service cannot sync: the times it shows are the
    # ones in ksync.db.
    radicale.stop()
    daemon.start()
    a = wait_until(lambda: (lambda x: x["last_result"] == "failed" and x)(
        account_status(daemon)), 60, "the failed run after the restart")
    for c in a["collections"]:
        assert c["last_sync"] == before[c["path"]], (c, before)
        assert c["last_result"] in ("failed", "skipped"), c
    r = daemon.ctl("status")
    assert "never" not in r.stdout, r.stdout


def test_counters_are_what_the_run_changed(server, ks, daemon):
    """A file sent is "sent", not also "new"; a merge that took the server's change is
    "changed" here as well as "sent"."""
    book, cal = setup_two(server, ks, daemon, n=2)
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    (d / "mine@ksync.example.vcf").write_bytes(vcard("mine@ksync.example", "Mine Here"))
    r = daemon.ctl("sync", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stdout + r.stderr
    assert result_lines(r.stdout)["contacts/people"] == "1 sent", r.stdout

    # Both sides change different properties of one card.
    href = [h for h in server.list(book) if "mine" in h][0]
    remote = server.get(href).replace(b"FN:Mine Here", b"FN:Mine Here\r\nTEL:+41 79 000 00 00")
    server.put(href, remote)
    path = d / "mine@ksync.example.vcf"
    path.write_bytes(path.read_bytes().replace(b"FN:Mine Here",
                                               b"FN:Mine Here\r\nEMAIL:mine@example.org"))
    r = daemon.ctl("sync", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stdout + r.stderr
    assert result_lines(r.stdout)["contacts/people"] == "1 changed; 1 sent", r.stdout
    data = path.read_bytes()
    assert b"TEL:+41 79 000 00 00" in data and b"EMAIL:mine@example.org" in data, data


# ---- what is pending, and why --------------------------------------------------------------------

def test_status_lists_pending_files_and_why(radicale, ks, daemon):
    """A file the server refuses stays "pending 1": status names it and gives the server's
    reason (in the text and in --json), and a file of a collection that does not sync says
    that."""
    from ksynctest.faults import event, write_file

    book, cal = setup_two(radicale, ks, daemon, n=2)
    d = ks.collection_dir(ACCOUNT, "calendar", "work")
    bad = event("bad", "Both").replace(b"DTEND:20240610T100000Z\r\n",
                                       b"DTEND:20240610T100000Z\r\nDURATION:PT1H\r\n")
    write_file(d / "bad.ics", bad)
    write_file(d / "good.ics", event("good", "Good"))
    wait_until(lambda: any(h.endswith("good.ics") for h in radicale.list(cal)), 30,
               "the good event on the server")

    def refused():
        c = collection(account_status(daemon), "calendars/work")
        return c["pending"] == 1 and c["pending_files"] and c["pending_files"][0]["refused"] \
            and c
    c = wait_until(refused, 30, "the refusal in status")
    f = c["pending_files"][0]
    assert f["file"] == "bad.ics" and f["change"] == "new" and f["status"] == 400, f
    assert "DTEND and DURATION together" in f["reason"], f
    r = daemon.ctl("status")
    assert re.search(r"calendars/work/bad\.ics \(new\): the server refused it \(HTTP 400\): "
                     r"DTEND and DURATION together", r.stdout), r.stdout

    r = daemon.ctl("disable", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stdout + r.stderr
    pd = ks.collection_dir(ACCOUNT, "addressbook", "people")
    (pd / "later.vcf").write_bytes(vcard("later", "Later"))
    c = wait_until(lambda: (lambda x: x["pending"] == 1 and x)(
        collection(account_status(daemon), "contacts/people")), 30, "the file in status")
    assert c["pending_files"] == [{
        "file": "later.vcf", "change": "new", "refused": False, "status": None,
        "since": None,
        "reason": "the collection does not sync ('ksyncctl enable' turns it on)"}], c


# ---- logs ----------------------------------------------------------------------------------------

def test_debug_traces_every_request_without_secrets(radicale, ks):
    """log_level = debug in ksync.conf: discovery and each request (method, URL, status,
    bytes, time), and never the password or an item's content."""
    book = radicale.make_addressbook("people", "People")
    radicale.seed(book, gen.contacts(3))
    ks.extra_config = "[general]\nlog_level = debug\n"
    ks.add_account(ACCOUNT, radicale)
    r = ks.sync()
    err = r.stderr
    assert re.search(r"^discovery at %s: principal /user/" % re.escape(radicale.url), err,
                     re.M), err[:3000]
    assert re.search(r"^HTTP PROPFIND http://127\.0\.0\.1:\d+/\S*: 207, \d+ bytes sent, "
                     r"\d+ received, \d+ ms$", err, re.M), err[:3000]
    assert re.search(r"^HTTP REPORT http://127\.0\.0\.1:\d+/user/people/: 207, ", err, re.M)
    assert radicale.password not in err and radicale.password not in r.stdout
    assert "BEGIN:VCARD" not in err and "FN:" not in err, err[:3000]
    # --log-level given wins over the file.
    r = ks.sync("--log-level", "notice")
    assert "HTTP " not in r.stderr, r.stderr


def test_service_logs_what_each_run_changed(radicale, ks, daemon):
    """With no --log-level, the service logs at info one line per collection that changed."""
    book = radicale.make_addressbook("people", "People")
    radicale.seed(book, gen.contacts(3))
    ks.add_account(ACCOUNT, radicale)
    daemon.log_level = None
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    assert re.search(r"^<?\d?>?%s/contacts/people: 3 added, 0 updated, 0 deleted" % ACCOUNT,
                     daemon.log_text(), re.M), daemon.log_text()
    assert "HTTP PROPFIND" not in daemon.log_text()


def test_ksyncctl_log_runs_journalctl(ks, daemon):
    r = daemon.ctl("log", "-n", "5")
    assert r.rc == 0, r.stdout + r.stderr
    # journalctl itself answered: there is no journal in the test's fresh HOME.
    assert "-- No entries --" in r.stdout or "journal" in r.stderr.lower(), r
    r = daemon.ctl("log", "-n", "many")
    assert r.rc != 0 and "--lines takes a number" in r.stderr, r.stderr
