"""Self-tests of the harness: servers, direct seeding, request counting, generators, readers.

These need no ksync binary; they prove that what the ksync tests rely on is itself right.
"""

import os
import re
import subprocess
import time
import urllib.parse
from collections import Counter

import icalendar
import pytest
import requests
import vobject

from ksynctest import gen, ksync, servers

SAFE_NAME = re.compile(r"^[A-Za-z0-9@._+-]+$")
EXPECTED_HOME_SETS = {"radicale": 1, "xandikos": 2, "davical": 1, "sabredav": 2}


# -- generators --------------------------------------------------------------------------------


def _check_wire_format(items):
    for name, data in items.items():
        assert SAFE_NAME.match(name), name
        assert b"\n" not in data.replace(b"\r\n", b""), "bare LF in %s" % name
        assert data.endswith(b"\r\n")
        for line in data.split(b"\r\n"):
            assert len(line) <= 75, "%s: unfolded line of %d octets" % (name, len(line))
            line.decode("utf-8")
        assert gen.unescape(gen.prop(data, "UID")) == name


def test_generators_are_deterministic_and_distinct():
    assert gen.contacts(40) == gen.contacts(40)
    assert gen.events(40) == gen.events(40)
    assert gen.tasks(40) == gen.tasks(40)
    assert list(gen.contacts(10)) == list(gen.contacts(40))[:10]
    names = [set(gen.contacts(50)), set(gen.contacts(50, seed=2)), set(gen.events(50)),
             set(gen.events(50, seed=2)), set(gen.tasks(50)), set(gen.tasks(50, seed=2))]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 300


def test_contacts_are_valid_vcards():
    items = gen.contacts(60)
    _check_wire_format(items)
    versions = Counter()
    for name, data in items.items():
        card = vobject.readOne(data.decode("utf-8"))
        versions[card.version.value] += 1
        assert card.uid.value == name
        assert card.fn.value and card.n.value.family and card.n.value.given
        assert hasattr(card, "tel")
    assert versions == {"3.0": 30, "4.0": 30}
    fns = [vobject.readOne(d.decode()).fn.value for d in items.values()]
    assert any(not fn.isascii() for fn in fns)
    with_email = [d for d in items.values() if gen.prop(d, "EMAIL")]
    assert 0 < len(with_email) < len(items)
    assert any(b"\r\n " in d for d in items.values()), "no folded line"


def test_events_cover_the_hard_cases():
    items = gen.events(50)
    _check_wire_format(items)
    seen = Counter()
    for name, data in items.items():
        cal = icalendar.Calendar.from_ical(data)
        evs = [c for c in cal.walk("VEVENT")]
        assert evs and all(str(e["UID"]) == name for e in evs)
        master = [e for e in evs if "RECURRENCE-ID" not in e]
        assert len(master) == 1
        tzids = {str(t["TZID"]) for t in cal.walk("VTIMEZONE")}
        start = master[0]["DTSTART"]
        if "RRULE" in master[0]:
            seen["rrule"] += 1
            if len(evs) > 1:
                seen["rrule+exception"] += 1
        if start.params.get("VALUE") == "DATE":
            seen["allday"] += 1
        elif "TZID" in start.params:
            assert start.params["TZID"] in tzids, "TZID without VTIMEZONE in %s" % name
            seen[start.params["TZID"]] += 1
        elif not data.split(b"DTSTART:")[1][:16].endswith(b"Z"):
            seen["floating"] += 1
    for key in ("rrule", "rrule+exception", "allday", "America/New_York", "Asia/Tokyo",
                "floating"):
        assert seen[key] > 0, key
    assert seen["rrule+exception"] == seen["rrule"]


def test_tasks_cover_status_due_priority():
    items = gen.tasks(40)
    _check_wire_format(items)
    statuses = Counter()
    for name, data in items.items():
        todo = icalendar.Calendar.from_ical(data).walk("VTODO")
        assert len(todo) == 1 and str(todo[0]["UID"]) == name
        statuses[str(todo[0]["STATUS"])] += 1
        assert 0 <= int(todo[0]["PRIORITY"]) <= 9
        if str(todo[0]["STATUS"]) == "COMPLETED":
            assert "COMPLETED" in todo[0]
    assert statuses["COMPLETED"] and statuses["NEEDS-ACTION"] and statuses["IN-PROCESS"]
    assert 0 < sum(1 for d in items.values() if gen.prop(d, "DUE", "VTODO")) < len(items)


# -- servers -----------------------------------------------------------------------------------


@pytest.mark.all_servers
def test_server_layout(server):
    principal, cal_home, book_home = server.discover()
    assert (principal, cal_home, book_home) == (server.principal, server.calendar_home,
                                                server.addressbook_home)
    assert len(server.home_sets) == EXPECTED_HOME_SETS[server.kind]
    if server.kind == "xandikos":
        assert server.password is None
    else:
        assert server.password is not None
        anon = requests.request("PROPFIND", urllib.parse.urljoin(server.url, server.principal),
                                timeout=10, headers={"Depth": "0"})
        assert anon.status_code == 401


@pytest.mark.all_servers
def test_collections_and_properties(server):
    book = server.make_addressbook("people", "Kontakte Öffentlich")
    cal = server.make_calendar("work", "Arbeit & Büro", color="#ff8800")
    todo = server.make_calendar("todo", "Tâches", components=("VTODO",), color="#00aa33ff")
    cols = server.collections()
    assert cols[book]["kind"] == "addressbook"
    assert cols[book]["displayname"] == "Kontakte Öffentlich"
    # DAViCal 1.1 stores a displayname given in MKCALENDAR with its XML escaping and serves
    # that text escaped once more.
    want = "Arbeit &amp; Büro" if server.kind == "davical" else "Arbeit & Büro"
    assert cols[cal] == dict(cols[cal], kind="calendar", displayname=want, color="#ff8800")
    assert cols[todo]["color"] == "#00aa33ff"
    if server.kind == "xandikos":
        assert "VTODO" in cols[todo]["components"]
        assert set(cols) == {book, cal, todo, server.calendar_home + "calendar/",
                             server.addressbook_home + "addressbook/"}
    else:
        assert cols[todo]["components"] == ["VTODO"]
        assert set(cols) == {book, cal, todo}
    if server.kind == "sabredav":
        # SabreDAV 1.8 has no sync-collection (RFC 6578), only CalendarServer's getctag.
        assert not any(c["sync_token"] for c in cols.values())
        assert all(c["ctag"] for c in cols.values())
    else:
        assert all(c["sync_token"] for c in cols.values())


def sabredav_mangled(text):
    """`text` as SabreDAV 1.8 stores it on PHP 8 when it misjudges the encoding of an item:
    StringUtil::ensureUTF8() asks mb_detect_encoding() to choose between UTF-8 and ISO-8859-1,
    PHP 8.1+ picks ISO-8859-1 for some valid UTF-8 (an item holding 'ı', U+0131, for one), and
    the whole item is encoded to UTF-8 a second time."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.all_servers
def test_seed_then_http_roundtrip(server):
    book = server.make_addressbook("people")
    cal = server.make_calendar("work")
    contacts = gen.contacts(40)
    caldata = {**gen.events(30), **gen.tasks(15)}
    state = "ctag" if server.kind == "sabredav" else "sync_token"
    before = server.collections()[book][state]
    hrefs = server.seed(book, contacts)
    assert server.collections()[book][state] != before
    chrefs = server.seed(cal, caldata)
    listed = server.list(book)
    assert set(listed) == set(hrefs.values())
    assert set(server.list(cal)) == set(chrefs.values())

    got = server.contents(book)
    assert set(got) == set(listed)
    mangled = 0
    for name, href in hrefs.items():
        body = server.get(href)
        assert got[href][1] == body
        if server.kind == "xandikos":
            assert body == contacts[name]
            continue
        assert gen.unescape(gen.prop(body, "UID")) == name
        want = gen.prop(contacts[name], "FN")
        if server.kind == "sabredav" and gen.prop(body, "FN") != want:
            want = sabredav_mangled(want)
            mangled += 1
        assert gen.prop(body, "FN") == want
    if server.kind == "sabredav":
        assert mangled == sum(1 for d in contacts.values() if "ı" in d.decode("utf-8")), \
            "SabreDAV no longer re-encodes items holding an 'ı'"
    ccal = server.contents(cal)
    for name, href in list(chrefs.items())[:10]:
        assert ccal[href][1] == server.get(href)
    if server.kind == "sabredav":
        # SabreDAV 1.8 drops every CR from calendar-data in a REPORT or PROPFIND answer ("to not
        # screw up the xml output"); GET serves the stored CRLF. Address data keeps its CRs.
        some = sorted(chrefs.values())[:5]
        got = server._multiget_raw(cal, some)
        assert {h: d for h, (_, d) in got.items()} == {
            h: ccal[h][1].replace(b"\r\n", b"\n") for h in some}
        some = sorted(hrefs.values())[:5]
        got = server._multiget_raw(book, some)
        assert {h: d for h, (_, d) in got.items()} == {h: server.get(h) for h in some}

    # A second seed adds to the collection and leaves the rest alone.
    more = gen.contacts(5, seed=9)
    server.seed(book, more)
    assert len(server.list(book)) == 45
    assert server.list(book)[hrefs[next(iter(contacts))]] == listed[hrefs[next(iter(contacts))]]

    # put / if-match / delete.
    new = gen.contacts(1, seed=3)
    name, data = next(iter(new.items()))
    href = book + name + ".vcf"
    etag = server.put(href, data, if_none_match="*")
    assert server.list(book)[href] == etag
    with pytest.raises(servers.ServerError, match="412"):
        server.put(href, data.replace(b"FN:", b"FN:X"), if_match='"not-the-etag"')
    etag2 = server.put(href, data.replace(b"FN:", b"FN:Changed "), if_match=etag)
    assert etag2 != etag and server.list(book)[href] == etag2
    assert b"FN:Changed " in server.get(href)
    server.delete(href, if_match=etag2)
    assert href not in server.list(book)
    with pytest.raises(servers.ServerError, match="404"):
        server.get(href)


@pytest.mark.all_servers
def test_request_count(server):
    book = server.make_addressbook("people")
    hrefs = server.seed(book, gen.contacts(3))
    c0 = server.request_count()
    assert server.request_count() == c0, "marker requests must not be counted"
    server.get(next(iter(hrefs.values())))
    server.list(book)
    with pytest.raises(servers.ServerError):
        server.get(book + "missing.vcf")
    assert server.request_count() == c0 + 3
    # Another process, one keep-alive connection, five requests: every one is counted.
    argv = ["/usr/bin/curl", "-s", "-o", "/dev/null", "--noproxy", "*"]
    if server.password is not None:
        argv += ["-u", "%s:%s" % (server.username, server.password)]
    wanted = (list(hrefs.values()) * 2)[:5]
    argv += [urllib.parse.urljoin(server.url, urllib.parse.quote(h))
             for h in wanted]
    subprocess.run(argv, check=True, timeout=30)
    assert server.request_count() == c0 + 8
    logged = [urllib.parse.unquote(p) for p in server.requests_logged()[-5:]]
    assert logged == wanted


@pytest.mark.all_servers
def test_seed_timing(server):
    book = server.make_addressbook("people")
    items = gen.contacts(300)
    t = time.monotonic()
    server.seed(book, items)
    elapsed = time.monotonic() - t
    assert len(server.list(book)) == 300
    # DAViCal and SabreDAV are seeded with PUTs, which DAViCal serves at 20 to 40 ms each on
    # this 2-core machine when it is busy.
    limit = 30 if server.kind in ("davical", "sabredav") else 15
    assert elapsed < limit, "seeding 300 contacts took %.1fs" % elapsed


def test_server_stops(tmp_path):
    for kind in ("radicale", "xandikos", "davical", "sabredav"):
        srv = servers.start(kind, tmp_path / kind)
        pg_pid = srv.postgres.proc.pid if srv.postgres is not None else None
        try:
            assert srv.alive()
        finally:
            srv.stop()
        assert not srv.alive()
        with pytest.raises(requests.ConnectionError):
            requests.get(srv.url, timeout=5)
        # No process of the server is left running: `php -S` workers, PostgreSQL's backends.
        assert not servers._group_running(srv.proc.pid), "%s left processes" % kind
        if pg_pid is not None:
            assert not servers._group_running(pg_pid), "PostgreSQL left processes"
            assert not os.path.exists(srv.postgres.base)


# -- readers -----------------------------------------------------------------------------------


def test_readers_on_a_plain_vdir(tmp_path):
    """khard, khal and todoman, configured by the harness, read a vdir written without ksync."""
    home = ksync.KsyncHome(tmp_path / "user")
    base = tmp_path / "vdir"
    book, cal, todo = base / "contacts/a/people", base / "calendars/a/work", \
        base / "calendars/a/todo"
    contacts, events = gen.contacts(80), gen.events(60)
    tasks, tasks2 = gen.tasks(20), gen.tasks(12, seed=2)
    for d, items in ((book, contacts), (cal, {**events, **tasks}), (todo, tasks2)):
        d.mkdir(parents=True)
        for name, data in items.items():
            (d / (name + (".vcf" if d == book else ".ics"))).write_bytes(data)
    (cal / "displayname").write_text("Arbeit & Büro\n")
    (todo / "displayname").write_text("Tâches\n")
    (cal / "color").write_text("#ff8800\n")
    home.configure_readers(books=[book], calendars=[cal, todo])

    cards, _ = home.khard_list()
    assert sorted(u for u, _, _ in cards) == sorted(contacts)
    fn = {u: n for u, n, _ in cards}
    for name, data in contacts.items():
        assert fn[name] == gen.unescape(gen.prop(data, "FN"))

    occ, _ = home.khal_list()
    assert {u for u, _, _ in occ} == set(events)
    titles = {t for _, t, _ in occ}
    for name, data in events.items():
        assert gen.unescape(gen.prop(data, "SUMMARY", "VEVENT")) in titles
    moved = [t for t in titles if t.endswith("(déplacé)") or t.endswith("(verschoben)")]
    assert len(moved) == sum(1 for d in events.values() if d.count(b"RECURRENCE-ID") > 0)
    per_uid = Counter(u for u, _, _ in occ)
    expected = {"timed": 1, "allday": 1, "allday_multi": 3, "recurring": 7}
    for i, name in enumerate(events):
        kind = gen.event_kind(i)
        if kind in expected:
            assert per_uid[name] == expected[kind], (kind, name)
        else:
            assert per_uid[name] >= (5 if kind == "recurring_tz" else 1), (kind, name)

    todos, _ = home.todoman_list()
    assert Counter(t["list"] for t in todos) == {"Arbeit & Büro": 20, "Tâches": 12}
    assert Counter(t["summary"] for t in todos) == Counter(
        gen.unescape(gen.prop(d, "SUMMARY", "VTODO")) for d in {**tasks, **tasks2}.values())
    done = sum(1 for d in {**tasks, **tasks2}.values()
               if gen.prop(d, "STATUS") in ("COMPLETED", "CANCELLED"))
    assert sum(1 for t in todos if t["completed"]) == done
