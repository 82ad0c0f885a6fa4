"""Time windows of events (past_days, future_days): events outside get no file, those that
leave the window lose their file only when ksync wrote it as it is, nothing is ever deleted
on the server because of the window, and a window that grows brings the events back."""

import datetime
import json
import shutil
import subprocess

from ksynctest.daemon import synced_ok, wait_until
from ksynctest.faults import describe
from ksynctest.ksync import KsyncHome

ACCOUNT = "acct"
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def stamp(days, hours=0):
    t = NOW + datetime.timedelta(days=days, hours=hours)
    return t.strftime("%Y%m%dT%H%M%SZ")


def event(uid, summary, days, extra=""):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ksync//window test//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:%s\r\n"
            "DTEND:%s\r\nSUMMARY:%s\r\n%sEND:VEVENT\r\nEND:VCALENDAR\r\n"
            % (uid, stamp(days), stamp(days, 1), summary, extra)).encode()


TASK = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ksync//window test//EN\r\n"
        "BEGIN:VTODO\r\nUID:task\r\nDTSTAMP:20200101T000000Z\r\nDTSTART:%s\r\n"
        "SUMMARY:Old task\r\nEND:VTODO\r\nEND:VCALENDAR\r\n" % stamp(-300)).encode()

SEED = {
    "old": event("old", "Old", -100),
    "recent": event("recent", "Recent", -3),
    "future": event("future", "Future", 20),
    "weekly": event("weekly", "Weekly", -400, "RRULE:FREQ=WEEKLY\r\n"),
    "ended": event("ended", "Ended", -400, "RRULE:FREQ=WEEKLY;COUNT=3\r\n"),
    "mid": event("mid", "Mid", -20),
    "edited": event("edited", "Edited", -20),
    "task": TASK,
}


def uids(ks):
    out = set()
    for data in ks.item_files(ACCOUNT, "calendar", "cal").values():
        for line in data.decode().splitlines():
            if line.startswith("UID:"):
                out.add(line[4:])
    return out


def file_of(ks, uid):
    for name, data in ks.item_files(ACCOUNT, "calendar", "cal").items():
        if ("UID:%s\r\n" % uid).encode() in data:
            return ks.collection_dir(ACCOUNT, "calendar", "cal") / name
    return None


def set_window(ks, past=None, future=None):
    for key, value in (("past_days", past), ("future_days", future)):
        if value is None:
            ks.accounts[ACCOUNT].pop(key, None)
        else:
            ks.accounts[ACCOUNT][key] = str(value)
    ks.write_config()


def test_window(server, ks):
    cal = server.make_calendar("cal", "Cal", components=("VEVENT", "VTODO"))
    for uid, data in SEED.items():
        server.put(cal + uid + ".ics", data)
    ks.add_account(ACCOUNT, server)
    set_window(ks, past=30)

    r = ks.run()
    assert r.rc == 0, describe(r)
    assert uids(ks) == {"recent", "future", "weekly", "mid", "edited", "task"}
    on_server = server.list(cal)
    assert len(on_server) == len(SEED)
    for uid in ("recent", "mid"):
        assert file_of(ks, uid).read_bytes() == server.get(cal + uid + ".ics")
    mid = server.get(cal + "mid.ics")

    # khal reads the events of the window.
    ks.configure_readers(ACCOUNT)
    start = (NOW - datetime.timedelta(days=40)).strftime("%Y-%m-%d")
    listed, _ = ks.khal_list(start=start, span="80d")
    seen = {u for u, _, _ in listed}
    assert {"recent", "future", "weekly", "mid", "edited"} <= seen, listed
    assert "old" not in seen and "ended" not in seen, listed

    # An edit of an event that then leaves the window is sent and its file kept; the others
    # that leave it lose their files, and the server keeps them all, untouched.
    path = file_of(ks, "edited")
    path.write_bytes(path.read_bytes().replace(b"SUMMARY:Edited", b"SUMMARY:Edited here"))
    set_window(ks, past=10)
    r = ks.run()
    assert r.rc == 0, describe(r)
    out = r.stdout + r.stderr
    assert "outside the window removed locally (kept on the server)" in out, out
    assert uids(ks) == {"recent", "future", "weekly", "edited", "task"}
    after = server.list(cal)
    assert set(after) == set(on_server), (on_server, after)
    changed = {h for h in after if after[h] != on_server[h]}
    assert changed == {h for h in after if h.endswith("/edited.ics")}, changed
    assert b"SUMMARY:Edited here" in server.get(cal + "edited.ics")
    assert server.get(cal + "mid.ics") == mid
    assert file_of(ks, "edited").read_bytes() == server.get(cal + "edited.ics")

    # A new event in the past, written here, goes up.
    new_path = ks.collection_dir(ACCOUNT, "calendar", "cal") / "new-old.ics"
    new_path.write_bytes(event("new-old", "New old", -60))
    r = ks.run()
    assert r.rc == 0, describe(r)
    after = server.list(cal)
    assert len(after) == len(SEED) + 1
    assert any(b"UID:new-old\r\n" in server.get(h) for h in after if h not in on_server)

    # A quiet run changes nothing.
    before = ks.files(ks.calendars_dir(ACCOUNT))
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert ks.files(ks.calendars_dir(ACCOUNT)) == before
    assert server.list(cal) == after

    # The window grows: the events come back as the server has them.
    set_window(ks, past=200)
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert uids(ks) == {"recent", "future", "weekly", "mid", "edited", "task", "old",
                        "new-old"}
    assert file_of(ks, "mid").read_bytes() == server.get(cal + "mid.ics")
    assert file_of(ks, "old").read_bytes() == server.get(cal + "old.ics")
    assert server.list(cal) == after

    # future_days too: the event 20 days ahead is left out.
    set_window(ks, past=200, future=10)
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert "future" not in uids(ks)
    assert server.list(cal) == after
    # No window: everything.
    set_window(ks)
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert uids(ks) == {"recent", "future", "weekly", "mid", "edited", "task", "old",
                        "new-old", "ended"}
    assert server.list(cal) == after


def test_first_listing_asks_the_server(server, ks, daemon):
    """The first listing asks the server which single events lie outside the window
    (calendar-query with a time-range) and fetches none of them; recurring events are
    fetched and judged by ksync. The cache tells them apart: an event the server's answer
    left out waits for a later day's look, one ksync judged knows its times."""
    cal = server.make_calendar("cal", "Cal", components=("VEVENT", "VTODO"))
    for uid, data in SEED.items():
        server.put(cal + uid + ".ics", data)
    ks.add_account(ACCOUNT, server)
    set_window(ks, past=30, future=10)
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert uids(ks) == {"recent", "weekly", "mid", "edited", "task"}
    rows = {row["href"].rsplit("/", 1)[1]: row["next_at"]
            for row in ks.query("SELECT href, next_at FROM outside")}
    assert set(rows) == {"old.ics", "future.ics", "ended.ics"}, rows
    # The server's answer: to be looked at once the window's end has moved past today's.
    end = NOW.timestamp() + 10 * 86400
    assert end < rows["old.ics"] < end + 3600, rows
    assert end < rows["future.ics"] < end + 3600, rows
    assert rows["ended.ics"] == 0, rows
    # Nothing is fetched again while nothing changed.
    before = ks.files(ks.calendars_dir(ACCOUNT))
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert ks.files(ks.calendars_dir(ACCOUNT)) == before

    # ksyncctl status shows the window and what it leaves on the server.
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    r = daemon.ctl("status", "--json")
    assert r.rc == 0, r.stdout + r.stderr
    cols = [c for a in json.loads(r.stdout)["accounts"] for c in a["collections"]]
    windows = {c["path"]: c["window"] for c in cols}
    assert windows["calendars/cal"] == {"past_days": 30, "future_days": 10, "outside": 3}, \
        windows
    # Address books have none (Xandikos has a calendar of its own besides, with one).
    assert all(w is None for p, w in windows.items() if p.startswith("contacts/")), windows
    r = daemon.ctl("status")
    assert r.rc == 0, r.stdout + r.stderr
    assert "calendars/cal: events of the last 30 day(s) and the next 10 day(s) only; " \
        "3 more on the server" in r.stdout, r.stdout


def test_crash_while_events_leave(server, tmp_path):
    """ksyncd stopped after each durable step (KSYNC_TEST_CRASH_AFTER) of the run in which a
    smaller window removes files: the resumed run ends where an uninterrupted one ends, no
    request changes the server, and one more run changes nothing."""

    cal = server.make_calendar("cal", "Cal", components=("VEVENT", "VTODO"))
    seed = {"recent": event("recent", "Recent", -2)}
    for i in range(4):
        seed["old%d" % i] = event("old%d" % i, "Old %d" % i, -20 - i)
    for uid, data in seed.items():
        server.put(cal + uid + ".ics", data)
    on_server = server.list(cal)

    def fresh(d):
        home = KsyncHome(d)
        home.add_account(ACCOUNT, server)
        home.accounts[ACCOUNT]["past_days"] = "30"
        home.write_config()
        home.sync()
        assert len(home.item_files(ACCOUNT, "calendar", "cal")) == 5
        home.accounts[ACCOUNT]["past_days"] = "10"
        home.write_config()
        return home

    def run(home, crash_after=None):
        extra = {"KSYNC_TEST_CRASH_AFTER": str(crash_after)} if crash_after else {}
        p = subprocess.run([str(home.ksyncd), "--once"], env=home.env(**extra), cwd=home.home,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        return p.returncode, p.stderr.decode("utf-8", "replace")

    ref = fresh(tmp_path / "reference")
    rc, err = run(ref)
    assert rc == 0, err
    want = ref.item_files(ACCOUNT, "calendar", "cal")
    assert set(want) == {"recent.ics"}, sorted(want)
    n = 0
    while True:
        n += 1
        assert n < 100, "ksyncd still stops after %d steps" % n
        d = tmp_path / ("n%03d" % n)
        home = fresh(d)
        rc, err = run(home, crash_after=n)
        assert rc in (0, 100), "N=%d: %d\n%s" % (n, rc, err)
        completed = rc == 0
        if not completed:
            rc, err = run(home)
            assert rc == 0, "N=%d: the resumed run exited %d\n%s" % (n, rc, err)
        assert home.item_files(ACCOUNT, "calendar", "cal") == want, "N=%d" % n
        assert server.list(cal) == on_server, "N=%d" % n
        before = home.files(home.calendars_dir(ACCOUNT))
        rc, err = run(home)
        assert rc == 0, err
        assert home.files(home.calendars_dir(ACCOUNT)) == before, "N=%d" % n
        assert server.list(cal) == on_server, "N=%d" % n
        shutil.rmtree(d)
        if completed:
            break
    print("%s: crash after each of %d steps" % (server.kind, n - 1))
    assert n >= 6, "the run has only %d durable steps" % (n - 1)
