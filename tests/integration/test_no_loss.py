"""Nothing a person writes is lost: ordinary situations that used to lose local work or stop
ksyncd, each against a real Radicale and Xandikos (with a fault-injecting front where the
situation needs a server or proxy glitch).

The rules checked here: nothing ksync did not write is deleted; a file ksync deletes is one
whose bytes match its cache row; local-only work that must go is moved under conflicts/ first
and reported; a collection that vanishes from a listing, or a directory that is gone, passes the
mass-deletion guard whatever its size; the guard counts against the size at the last complete
sync, across runs and pages.
"""

import re
import sqlite3
import subprocess
import threading
import urllib.parse

import pytest

from ksynctest import checks, gen
from ksynctest.faults import (Faults, card, describe, event, local_uids, on, omit_first_response,
                              rewrite, server_uids, write_file)
from ksynctest.tlsfront import Front, Reply, Transform

ACCOUNT = "acct"
BOOK = "people"
CAL = "work"
RUN_TIMEOUT = 180


def failure_text(r):
    return "\n".join(checks.failure_lines(r.stderr, ACCOUNT))


def fronted(server, ks, faults):
    """An account whose requests pass through a front applying `faults`."""
    front = Front(backend=server, route=faults)
    ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
    return front


def converges(ks, server):
    """A clean run leaves server = files = cache (files the user made keep their names); a
    second one changes nothing."""
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_mirror(ks, server, ACCOUNT, user_names=True)
    before = checks.snapshot(ks)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_unchanged(before, checks.snapshot(ks))


# -- a multiget that leaves out an item while others are in flight ---------------------------------

@pytest.mark.parametrize("gone", [False, True])
def test_multiget_omission_with_others_in_flight(server, ks, gone):
    """A first sync of 350 cards runs four multigets at once; one answer leaves out an item
    (SabreDAV omits hrefs deleted since the listing). The missing item is fetched by GET
    after the multigets, never from inside the request loop; when the server has deleted it
    meanwhile, it is simply not there. ksyncd exits normally either way."""
    book = server.make_addressbook(BOOK, "People")
    cards = {"c%03d" % i: card("c%03d" % i, "Person %d" % i) for i in range(350)}
    server.seed(book, cards)
    faults = Faults()
    omitted = []

    def omit_and_maybe_delete(body):
        m = re.search(rb"<(?:\w+:)?href>([^<]*)</", body)
        if m:
            omitted.append(urllib.parse.unquote(m.group(1).decode()))
            if gone:
                server.delete(omitted[-1])
        return omit_first_response(body)

    # The second multiget to arrive is cut while the first, third and fourth are in flight.
    faults.add(on("multiget", book), rewrite(omit_and_maybe_delete), which=2)
    front = fronted(server, ks, faults)
    try:
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert omitted, faults.hits
        d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        got = local_uids(d, ".vcf")
        want = set(cards) - ({omitted[0].rsplit("/", 1)[1][:-4]} if gone else set())
        assert set(got) == want, sorted(set(want) ^ set(got))
        gets = [s for s in front.seen() if s.method == "GET"]
        assert len(gets) == 1, [s.path for s in gets]
        converges(ks, server)
    finally:
        front.stop()


# -- new items whose UID or resource name is taken -------------------------------------------------

def synced_book(server, ks, cards=None):
    book = server.make_addressbook(BOOK, "People")
    for uid, data in (cards or {}).items():
        server.put(book + uid + ".vcf", data)
    ks.add_account(ACCOUNT, server)
    ks.sync(timeout=RUN_TIMEOUT)
    return book, ks.collection_dir(ACCOUNT, "addressbook", BOOK)


def everything_of(ks, server, coll):
    """Every byte the server, the files and conflicts/ hold, to look for a version in."""
    data = b"".join(data for _, data in server.contents(coll).values())
    for p in ks.data_dir.rglob("*"):
        if p.is_file() and p.suffix in (".vcf", ".ics"):
            data += p.read_bytes()
    return data


def test_two_new_files_with_one_uid(server, ks):
    """A file copied with its UID and then edited, both new: each becomes an item of its own
    (the second gets a new UID), nothing is merged across them and ksyncd does not abort."""
    book, d = synced_book(server, ks, {"c0": card("c0", "Person 0")})
    write_file(d / "a.vcf", card("twin", "Twin Alpha", note="alpha text"))
    write_file(d / "b.vcf", card("twin", "Twin Beta", note="beta text"))
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert re.search(r"'b\.vcf' had the UID of 'a\.vcf'; it got a new UID", r.stderr), describe(r)
    srv = server_uids(server, book)
    assert len(srv) == 3, sorted(srv)
    assert b"alpha text" in srv["twin"] and b"Twin Alpha" in srv["twin"], srv["twin"]
    beta = [v for k, v in srv.items() if k not in ("twin", "c0")][0]
    assert b"beta text" in beta and b"Twin Beta" in beta, beta
    assert (d / "b.vcf").read_bytes() == beta
    converges(ks, server)


def test_copy_of_a_synced_file(server, ks):
    """A copy of a synced file, edited, is a new item with a new UID; the original stays."""
    book, d = synced_book(server, ks, {"c0": card("c0", "Person 0")})
    data = (d / "c0.vcf").read_bytes()
    write_file(d / "copy.vcf", data.replace(b"FN:Person 0", b"FN:Person Zero"))
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    srv = server_uids(server, book)
    assert len(srv) == 2 and b"FN:Person 0\r\n" in srv["c0"], srv
    assert any(b"FN:Person Zero" in v for k, v in srv.items() if k != "c0"), srv
    converges(ks, server)


def test_new_item_href_held_by_another_uid(server, ks):
    """The resource a new file's UID names is held on the server by an item with another UID:
    the file goes to another resource; neither item overwrites the other, and every run
    ends normally (no abort, no restart loop)."""
    book, d = synced_book(server, ks)
    server.put(book + "mine.vcf", card("theirs", "Their Card", note="their text"))
    write_file(d / "new.vcf", card("mine", "My Card", note="my text"))
    for _ in range(2):
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
    srv = server_uids(server, book)
    assert set(srv) == {"mine", "theirs"}, sorted(srv)
    assert b"my text" in srv["mine"] and b"their text" in srv["theirs"], srv
    loc = local_uids(d, ".vcf")
    assert b"my text" in loc["mine"] and b"their text" in loc["theirs"], loc
    assert b"their text" not in loc["mine"]
    converges(ks, server)


# -- a missing directory, and deletions in small steps ---------------------------------------------

def synced_calendar(server, ks, n):
    cal = server.make_calendar(CAL, "Work")
    for i in range(n):
        server.put(cal + "e%02d.ics" % i, event("e%02d" % i, "Meeting %d" % i))
    ks.add_account(ACCOUNT, server)
    ks.sync(timeout=RUN_TIMEOUT)
    return cal, ks.collection_dir(ACCOUNT, "calendar", CAL)


@pytest.mark.parametrize("n", [3, 10, 12])
def test_renamed_directory_deletes_nothing(server, ks, n):
    """A collection directory renamed by the user (or gone with an unmounted file system)
    is not taken for a deletion of every item, whatever the collection's size: the run
    stops the collection with a message; put back, everything syncs again."""
    cal, d = synced_calendar(server, ks, n)
    before = server.list(cal)
    moved = d.with_name("work-renamed")
    d.rename(moved)
    for _ in range(2):
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc != 0, describe(r)
        assert re.search(r"calendars/%s: the directory '[^']*' is missing .*nothing was deleted "
                         r"on the server.*--force.*--allow-mass-delete" % CAL,
                         failure_text(r)), describe(r)
        assert server.list(cal) == before
        assert not d.exists(), "the directory was made again"
    moved.rename(d)
    converges(ks, server)
    assert server.list(cal) == before


def test_missing_directory_restored_with_force(server, ks):
    """--force makes the missing directory again and fetches every item into it."""
    cal, d = synced_calendar(server, ks, 4)
    before = server.list(cal)
    d.rename(d.with_name("elsewhere"))
    r = ks.run("--force", timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert set(local_uids(d, ".ics")) == {"e00", "e01", "e02", "e03"}
    assert server.list(cal) == before
    assert set(local_uids(d.with_name("elsewhere"), ".ics")) == {"e00", "e01", "e02", "e03"}
    converges(ks, server)


def test_emptied_small_directory_deletes_nothing(server, ks):
    """Every file of a small collection gone at once is a mass deletion too."""
    cal, d = synced_calendar(server, ks, 3)
    before = server.list(cal)
    for p in d.glob("*.ics"):
        p.unlink()
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0 and "refusing to delete 3 of 3 items on the server" in r.stderr, describe(r)
    assert "--force" in r.stderr, describe(r)
    assert server.list(cal) == before
    r = ks.run("--allow-mass-delete", timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert server.list(cal) == {}


@pytest.mark.parametrize("side", ["local", "server"])
def test_deletions_in_steps_are_counted_together(server, ks, side):
    """Half of 12 items deleted in one run, the other half in the next: the second run stops,
    as deleting all 12 at once would."""
    cal, d = synced_calendar(server, ks, 12)
    names = sorted(p.name for p in d.glob("*.ics"))

    def delete(batch):
        for name in batch:
            if side == "local":
                (d / name).unlink()
            else:
                server.delete(cal + name)

    delete(names[:6])
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert len(server.list(cal)) == 6 and len(list(d.glob("*.ics"))) == 6
    delete(names[6:])
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0 and "refusing to delete 6 of 12 items" in r.stderr, describe(r)
    assert "after 6 deleted within the hour; nothing was deleted" in r.stderr, describe(r)
    if side == "local":
        assert len(server.list(cal)) == 6
    else:
        assert len(list(d.glob("*.ics"))) == 6


def test_deletions_an_hour_apart_are_counted_apart(server, ks):
    """The guard's window lasts an hour from its first deletion: deletions after that count
    against the collection as it is then."""
    cal, d = synced_calendar(server, ks, 12)
    names = sorted(p.name for p in d.glob("*.ics"))
    for name in names[:6]:
        (d / name).unlink()
    ks.sync(timeout=RUN_TIMEOUT)
    db = sqlite3.connect(str(ks.db_path), timeout=10)
    with db:
        db.execute("UPDATE collection SET guard_at = guard_at - 3601")
    db.close()
    for name in names[6:9]:
        (d / name).unlink()
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert len(server.list(cal)) == 3


# -- a collection that vanishes from a listing -----------------------------------------------------

def test_collection_deleted_on_server_keeps_local_work(server, ks):
    """Another client deletes an address book with local work pending here: nothing is
    removed until the user says so, the other collections sync; then only what ksync wrote
    is deleted, and the rest (an edit, a new card, a file that is no item) is under
    conflicts/."""
    book, d = synced_book(server, ks, {"c%d" % i: card("c%d" % i, "Person %d" % i)
                                       for i in range(3)})
    cal = server.make_calendar(CAL, "Work")
    ks.sync("--force", timeout=RUN_TIMEOUT)
    cal_dir = ks.collection_dir(ACCOUNT, "calendar", CAL)
    edited = card("c1", "Person 1", note="edited here")
    write_file(d / "c1.vcf", edited)
    new = card("n1", "New Here")
    write_file(d / "n1.vcf", new)
    (d / "notes.txt").write_bytes(b"my notes\n")
    server.request("DELETE", book, expect=(200, 204))
    server.put(cal + "e1.ics", event("e1", "Meeting"))

    for args in ((), ("--force",)):
        r = ks.run(*args, timeout=RUN_TIMEOUT)
        assert r.rc != 0, describe(r)
        assert re.search(r"contacts/%s: the server no longer has this collection .*its 3 items "
                         r"are kept .*nothing was deleted.*--allow-mass-delete" % BOOK,
                         failure_text(r)), describe(r)
        assert (d / "c1.vcf").read_bytes() == edited and (d / "n1.vcf").read_bytes() == new
        assert (d / "notes.txt").read_bytes() == b"my notes\n"
        assert set(local_uids(d, ".vcf")) == {"c0", "c1", "c2", "n1"}
        assert set(local_uids(cal_dir, ".ics")) == {"e1"}

    r = ks.run("--allow-mass-delete", timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert not d.exists()
    kept = ks.data_dir / "conflicts" / ACCOUNT / "contacts" / BOOK
    assert sorted(p.name for p in kept.iterdir()) == ["c1.vcf", "n1.vcf", "notes.txt"]
    assert (kept / "c1.vcf").read_bytes() == edited and (kept / "n1.vcf").read_bytes() == new
    assert (kept / "notes.txt").read_bytes() == b"my notes\n"
    for name in ("c1.vcf", "n1.vcf", "notes.txt"):
        assert re.search(r"'%s' was not sent to the server before the collection was removed "
                         r"there; it is kept in \S+" % re.escape(name), r.stderr), describe(r)
    converges(ks, server)


def test_empty_collection_deleted_on_server_goes(server, ks):
    """A collection without items deleted on the server is removed here too, at once."""
    server.make_calendar(CAL, "Work")
    book, d = synced_book(server, ks)
    server.request("DELETE", book, expect=(200, 204))
    r = ks.run("--force", timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert not d.exists()
    converges(ks, server)


def test_listing_that_names_no_collection(server, ks):
    """A home listing that comes back as a 207 naming no collection (a server or proxy
    glitch) removes nothing: each collection is asked, and they are all still there."""
    faults = Faults()
    front = fronted(server, ks, faults)
    try:
        book = server.make_addressbook(BOOK, "People")
        for i in range(3):
            server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
        cal = server.make_calendar(CAL, "Work")
        server.put(cal + "e1.ics", event("e1", "Meeting"))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        write_file(d / "c1.vcf", card("c1", "Person 1", note="edited here"))
        homes = {urllib.parse.urlsplit(h).path for h in server.home_sets}

        def empty_listing(seen):
            home = urllib.parse.unquote(urllib.parse.urlsplit(seen.path).path)
            body = ('<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus xmlns:d="DAV:">'
                    '<d:response><d:href>%s</d:href><d:propstat><d:prop><d:resourcetype>'
                    '<d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK'
                    '</d:status></d:propstat></d:response></d:multistatus>' % home)
            return Reply(207, [("Content-Type", "application/xml; charset=utf-8")],
                         body.encode())

        faults.add(lambda s: s.method == "PROPFIND" and s.header("Depth") == "1" and
                   urllib.parse.unquote(urllib.parse.urlsplit(s.path).path) in homes,
                   empty_listing, which="every")
        r = ks.run("--force", timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert "the listing of the collections did not name" in r.stderr, describe(r)
        assert set(local_uids(d, ".vcf")) == {"c0", "c1", "c2"}
        assert b"edited here" in server.get(book + "c1.vcf")
        faults.clear()
        converges(ks, server)
    finally:
        front.stop()


# -- a rename here while the server changed the item -----------------------------------------------

def test_rename_with_server_edit(server, ks):
    """The user renames e01.ics to dentist.ics and adds a LOCATION while the server changes
    the SUMMARY: one item comes out, in dentist.ics, with both changes; nothing is left
    under the old name and nothing is refused."""
    cal, d = synced_calendar(server, ks, 3)
    data = (d / "e01.ics").read_bytes()
    (d / "e01.ics").unlink()
    write_file(d / "dentist.ics", data.replace(b"SUMMARY:Meeting 1", b"SUMMARY:Meeting 1\r\n"
                                               b"LOCATION:Dentist's office"))
    href = cal + "e01.ics"
    srv = server.get(href)
    server.put(href, srv.replace(b"SUMMARY:Meeting 1", b"SUMMARY:Checkup"),
               if_match=server.etag(href))
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert "not uploading" not in r.stderr, describe(r)
    assert not (d / "e01.ics").exists()
    mine = (d / "dentist.ics").read_bytes()
    assert b"LOCATION:Dentist's office" in mine and b"SUMMARY:Checkup" in mine, mine
    srv = server.get(href)
    assert b"LOCATION:Dentist's office" in srv and b"SUMMARY:Checkup" in srv, srv
    assert set(local_uids(d, ".ics")) == {"e00", "e01", "e02"}
    converges(ks, server)


# -- merges that would make an invalid event -------------------------------------------------------

def timed_event(uid, start, end=None, duration=None, summary="Meeting"):
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//tests//EN", "BEGIN:VEVENT",
             "UID:" + uid, "DTSTAMP:20240101T000000Z", "DTSTART:" + start]
    if end:
        lines.append("DTEND:" + end)
    if duration:
        lines.append("DURATION:" + duration)
    return gen.serialize(lines + ["SUMMARY:" + summary, "END:VEVENT", "END:VCALENDAR"])


@pytest.mark.parametrize("case", ["shortened-and-moved", "duration-and-dtend"])
def test_merged_times_stay_valid(server, ks, case):
    """Local shortens a meeting while the server moves its start (or local gives it a
    DURATION while the server moves its end): start and end are merged as one, so the
    result is one side's valid times, reported as a conflict with the other side kept, and
    the next run has nothing left to do."""
    cal = server.make_calendar(CAL, "Work")
    server.put(cal + "m.ics", timed_event("m", "20240610T090000Z", "20240610T100000Z"))
    ks.add_account(ACCOUNT, server)
    ks.sync(timeout=RUN_TIMEOUT)
    d = ks.collection_dir(ACCOUNT, "calendar", CAL)
    if case == "shortened-and-moved":
        local = timed_event("m", "20240610T090000Z", "20240610T091500Z", summary="Meeting")
        remote = timed_event("m", "20240610T093000Z", "20240610T100000Z", summary="Meeting")
    else:
        local = timed_event("m", "20240610T090000Z", duration="PT30M", summary="Meeting")
        remote = timed_event("m", "20240610T090000Z", "20240610T110000Z", summary="Meeting")
    write_file(d / "m.ics", local)
    server.put(cal + "m.ics", remote, if_match=server.etag(cal + "m.ics"))
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert re.search(r"conflict in 'm\.ics'", r.stderr), describe(r)

    def times(data):
        return [gen.prop(data, n, "VEVENT") for n in ("DTSTART", "DTEND", "DURATION")]
    srv = server.get(cal + "m.ics")
    assert times(srv) == times(remote), srv
    assert (d / "m.ics").read_bytes() == srv
    kept = list((ks.data_dir / "conflicts").rglob("m.*.local.ics"))
    assert len(kept) == 1 and times(kept[0].read_bytes()) == times(local), kept
    converges(ks, server)


# -- a file away for a moment ----------------------------------------------------------------------

def test_file_away_for_a_moment_is_not_deleted(server, ks, tmp_path):
    """A file moved out of its directory and back a moment later (between ksync's first look
    and its second, a second later) is not deleted on the server."""
    faults = Faults()
    front = fronted(server, ks, faults)
    try:
        cal = server.make_calendar(CAL, "Work")
        for i in range(3):
            server.put(cal + "e%02d.ics" % i, event("e%02d" % i, "Meeting %d" % i))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "calendar", CAL)
        away = tmp_path / "e01.ics"
        (d / "e01.ics").rename(away)

        started = []

        def bring_back_soon(seen, reply):
            if not started:
                started.append(seen)
                threading.Timer(0.4, lambda: away.rename(d / "e01.ics")).start()
            return reply

        # The run's first look at the server: the listing of the calendar, or of its home
        # set where that tells which collections changed.
        def first_look(seen):
            return on("listing", cal)(seen) or (
                on("propfind", server.calendar_home)(seen) and seen.header("Depth") == "1")

        faults.add(first_look, Transform(bring_back_soon))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert faults.hits, "the listing was not seen"
        assert not [s for s in front.seen() if s.method == "DELETE"], describe(r)
        assert "e01.ics" in {p.rsplit("/", 1)[-1] for p in server.list(cal)}
        faults.clear()
        converges(ks, server)
    finally:
        front.stop()


# -- after an interrupted upload ---------------------------------------------------------------------

def crashing_run(ks, after, *args):
    """ksyncd --once ending itself (as kill -9 would) after its Nth durable step."""
    p = subprocess.run([str(ks.ksyncd), "--once"] + list(args),
                       env=ks.env(KSYNC_TEST_CRASH_AFTER=str(after)), cwd=ks.home,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    return p.returncode


def test_upload_cut_off_is_no_addition(server, ks):
    """A new file uploaded by a run that died before writing its row: the next run finds it on
    the server and takes it for the user's file, not for an item added there."""
    book, d = synced_book(server, ks, {"c0": card("c0", "Person 0")})
    write_file(d / "n1.vcf", card("n1", "New One"))
    # Step 1 records the intent, step 2 is the PUT the server carried out.
    assert crashing_run(ks, 2) == 100
    assert "n1" in server_uids(server, book)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert not re.search(r"[1-9][0-9]* added", r.stdout), describe(r)
    assert set(local_uids(d, ".vcf")) == {"c0", "n1"}
    converges(ks, server)


def test_interrupted_upload_of_a_file_deleted_since(server, ks):
    """An upload a crash cut off before it was sent, of a file the user then deleted: the
    next run resumes nothing more after it, and nothing of it is left pending."""
    book, d = synced_book(server, ks, {"c0": card("c0", "Person 0")})
    write_file(d / "n1.vcf", card("n1", "New One"))
    assert crashing_run(ks, 1) == 100
    assert "n1" not in server_uids(server, book)
    (d / "n1.vcf").unlink()
    ks.sync("--log-level", "info", timeout=RUN_TIMEOUT)
    assert ks.query("SELECT * FROM intent") == []
    r = ks.sync("--log-level", "info", timeout=RUN_TIMEOUT)
    assert "resuming" not in r.stderr, describe(r)
    assert set(server_uids(server, book)) == {"c0"}


# -- an item the server moved -------------------------------------------------------------------------

def test_server_move_keeps_the_file_name(server, ks):
    """Another client moves an item to another href (MOVE, or a delete and a create with one
    UID): the file keeps its name, without a suffix."""
    book, d = synced_book(server, ks, {"c%d" % i: card("c%d" % i, "Person %d" % i)
                                       for i in range(3)})
    r = server.request("MOVE", book + "c1.vcf",
                       headers={"Destination": urllib.parse.urljoin(server.url,
                                                                    book + "moved-c1.vcf")})
    if r.status_code == 405:
        # Xandikos has no MOVE: a create and a delete with one UID, as a client would.
        server.put(book + "moved-c1.vcf", server.get(book + "c1.vcf"))
        server.delete(book + "c1.vcf")
    else:
        assert r.status_code in (201, 204), r.status_code
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert sorted(p.name for p in d.glob("*.vcf")) == ["c0.vcf", "c1.vcf", "c2.vcf"]
    converges(ks, server)
