"""Calendar subscriptions (feed = in an account, `ksyncctl subscribe`): a published iCalendar
file split into one read-only file per UID that khal reads, fetched again only when it
changed (If-None-Match, If-Modified-Since), local changes refused and kept."""

import hashlib
import http.server
import threading

import pytest

from ksynctest.daemon import synced_ok, wait_until
from ksynctest.faults import describe
from ksynctest.servers import free_port

NAME = "hol"
ZONE = """BEGIN:VTIMEZONE\r
TZID:Europe/Zurich\r
BEGIN:STANDARD\r
DTSTART:19701025T030000\r
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:19700329T020000\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
END:DAYLIGHT\r
END:VTIMEZONE\r
"""
UNUSED_ZONE = ZONE.replace("Europe/Zurich", "America/Unused")


def event(uid, summary, start="20240801T100000", extra=""):
    uid_line = "UID:%s\r\n" % uid if uid else ""
    return ("BEGIN:VEVENT\r\n%sDTSTAMP:20240101T000000Z\r\nDTSTART;TZID=Europe/Zurich:%s\r\n"
            "DURATION:PT1H\r\nSUMMARY:%s\r\n%sEND:VEVENT\r\n" % (uid_line, start, summary,
                                                                 extra))


def feed(*parts):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example//Holidays//EN\r\n"
            "X-WR-CALNAME:Holidays\r\n" + ZONE + UNUSED_ZONE + "".join(parts) +
            "END:VCALENDAR\r\n").encode()


BASE = [
    event("national-day", "National day"),
    event("weekly", "Weekly market", "20240805T080000", "RRULE:FREQ=WEEKLY;COUNT=4\r\n"),
    event("weekly", "Market moved", "20240813T090000",
          "RECURRENCE-ID;TZID=Europe/Zurich:20240812T080000\r\n"),
    "BEGIN:VTODO\r\nUID:task-1\r\nDTSTAMP:20240101T000000Z\r\nSUMMARY:Buy flags\r\n"
    "END:VTODO\r\n",
    event(None, "Event without a UID", "20240820T120000"),
]


class FeedServer:
    """An HTTP server on loopback that serves one iCalendar file at /cal/holidays.ics, with an
    ETag (or only a Last-Modified date) and conditional GETs, and logs what it was asked.
    etag="control": an ETag holding a control character, and a Last-Modified date."""

    def __init__(self, body, etag=True):
        self.body = body
        self.etag = etag
        self.modified = "Thu, 01 Aug 2024 10:00:00 GMT"
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                tag = '"%s"' % hashlib.sha256(outer.body).hexdigest()[:16]
                outer.seen.append((self.command, self.path,
                                   self.headers.get("If-None-Match"),
                                   self.headers.get("If-Modified-Since")))
                if self.path != "/cal/holidays.ics":
                    self.send_error(404)
                    return
                if outer.etag == "control":
                    tag = '"bad\x01tag"'
                if outer.etag is True and self.headers.get("If-None-Match") == tag or \
                        outer.etag is not True and self.headers.get("If-Modified-Since") == \
                        outer.modified:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/calendar; charset=utf-8")
                self.send_header("Content-Length", str(len(outer.body)))
                if outer.etag:
                    self.send_header("ETag", tag)
                if outer.etag is not True:
                    self.send_header("Last-Modified", outer.modified)
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/cal/holidays.ics" % self.httpd.server_address[1]

    def statuses(self):
        return [s for s in self.seen]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed_server():
    s = FeedServer(feed(*BASE))
    yield s
    s.stop()


def subscribe(ks, url):
    ks.accounts[NAME] = {"feed": url}
    ks.write_config()


def files(ks):
    d = ks.collection_dir(NAME, "calendar", "holidays")
    return {p.name: p.read_bytes().decode() for p in d.iterdir() if p.name.endswith(".ics")}


def by_uid(fs):
    out = {}
    for name, text in fs.items():
        uids = {ln[4:] for ln in text.splitlines() if ln.startswith("UID:")}
        assert len(uids) == 1, (name, text)
        out[uids.pop()] = (name, text)
    return out


def test_feed_is_split_and_fetched_again_only_when_changed(ks, feed_server):
    subscribe(ks, feed_server.url)
    r = ks.run()
    assert r.rc == 0, describe(r)
    items = by_uid(files(ks))
    assert sorted(u for u in items if not u.startswith("ksync-feed-")) == \
        ["national-day", "task-1", "weekly"]
    assert len(items) == 4, sorted(items)
    name, text = items["weekly"]
    # The master and its exception together, with the time zone they name and no other.
    assert text.count("BEGIN:VEVENT") == 2 and "RECURRENCE-ID" in text, text
    assert "TZID:Europe/Zurich" in text and "America/Unused" not in text, text
    assert "BEGIN:VTIMEZONE" not in items["task-1"][1]
    assert (ks.collection_dir(NAME, "calendar", "holidays") / "displayname").read_text() \
        .strip() == NAME

    ks.configure_readers(NAME)
    listed, _ = ks.khal_list()
    titles = sorted({t for _, t, _ in listed})
    assert titles == ["Event without a UID", "Market moved", "National day",
                      "Weekly market"], listed

    # Unchanged: one conditional GET, answered 304, nothing written.
    before = files(ks)
    feed_server.seen.clear()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert [(m, inm is not None) for m, _, inm, _ in feed_server.seen] == [("GET", True)]
    assert files(ks) == before

    # Changed: an event edited, the task gone, a new event; the UID-less one keeps its UID.
    feed_server.body = feed(event("national-day", "National day (fireworks)"), BASE[1],
                            BASE[2], BASE[4], event("new-year", "New year", "20250101T000000"))
    r = ks.run()
    assert r.rc == 0, describe(r)
    after = by_uid(files(ks))
    assert sorted(after) == sorted(set(items) - {"task-1"} | {"new-year"})
    assert "National day (fireworks)" in after["national-day"][1]
    assert after["weekly"] == items["weekly"]


def test_feed_with_only_last_modified(ks):
    s = FeedServer(feed(*BASE), etag=False)
    try:
        subscribe(ks, s.url)
        r = ks.run()
        assert r.rc == 0, describe(r)
        s.seen.clear()
        r = ks.run()
        assert r.rc == 0, describe(r)
        assert [(m, ims) for m, _, _, ims in s.seen] == [("GET", s.modified)]
        assert len(files(ks)) == 4
    finally:
        s.stop()


def test_feed_with_an_etag_holding_a_control_character(ks):
    """An ETag that could not be sent back in a header (a control character in it) is not
    kept: the next run asks with the Last-Modified date instead of failing for good."""
    s = FeedServer(feed(*BASE), etag="control")
    try:
        subscribe(ks, s.url)
        r = ks.run()
        assert r.rc == 0, describe(r)
        s.seen.clear()
        r = ks.run()
        assert r.rc == 0, describe(r)
        assert [(m, inm, ims) for m, _, inm, ims in s.seen] == [("GET", None, s.modified)]
        assert len(files(ks)) == 4
    finally:
        s.stop()


def test_feed_is_read_only(ks, feed_server):
    """A local edit, a new file and a deletion in a subscription are not sent anywhere: the
    feed's version comes back, and what the user wrote is kept under conflicts/."""
    subscribe(ks, feed_server.url)
    r = ks.run()
    assert r.rc == 0, describe(r)
    d = ks.collection_dir(NAME, "calendar", "holidays")
    name, text = by_uid(files(ks))["national-day"]
    (d / name).write_text(text.replace("National day", "My own note"))
    task, _ = by_uid(files(ks))["task-1"]
    (d / task).unlink()
    (d / "mine.ics").write_bytes(feed(event("mine", "Mine")))
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert "read-only" in r.stderr, describe(r)
    now = by_uid(files(ks))
    assert "National day" in now["national-day"][1] and "task-1" in now and "mine" not in now
    kept = "".join(p.read_text() for p in (ks.data_dir / "conflicts").rglob("*.ics"))
    assert "My own note" in kept and "SUMMARY:Mine" in kept
    assert all(m == "GET" for m, _, _, _ in feed_server.seen)


def test_subscribe_command(ks, daemon, feed_server):
    """`ksyncctl subscribe` writes the account, ksyncd fetches it, status shows it."""
    ks.write_config("")
    daemon.start()
    r = daemon.ctl("subscribe", NAME, feed_server.url, "--interval", "1h")
    assert r.rc == 0, r.stdout + r.stderr
    text = ks.config_path.read_text()
    assert "[account %s]\nfeed = %s\ninterval = 1h\n" % (NAME, feed_server.url) in text, text
    wait_until(lambda: synced_ok(daemon, NAME), 60, "the subscription's first fetch")
    assert len(files(ks)) == 4
    r = daemon.ctl("status")
    assert "Subscription %s  %s\n" % (NAME, feed_server.url) in r.stdout, r.stdout
    assert "hol (read-only)" in r.stdout, r.stdout
    r = daemon.ctl("subscribe", NAME, feed_server.url)
    assert r.rc != 0 and "exists already" in r.stderr, r.stdout + r.stderr
    r = daemon.ctl("subscribe", "other", "webcal://")
    assert r.rc != 0, r.stdout + r.stderr


def test_feed_that_breaks_keeps_the_files(ks, feed_server):
    """An HTML page instead of the file, or a file emptied: nothing is removed, and the
    user is told why."""
    subscribe(ks, feed_server.url)
    r = ks.run()
    assert r.rc == 0, describe(r)
    before = files(ks)
    feed_server.body = b"<html><body>Maintenance</body></html>"
    r = ks.run()
    assert r.rc != 0 and "not an iCalendar file" in r.stderr, describe(r)
    assert files(ks) == before
    feed_server.body = feed()
    r = ks.run()
    assert r.rc != 0 and "refusing to delete 4 of 4 items" in r.stderr, describe(r)
    assert files(ks) == before
