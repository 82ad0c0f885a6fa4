"""Servers that refuse an item: the refusal fails that item only, says the server's reason in
words, and lets every other upload, collection and account go on; a file that stays refused is
sent again only once it changes. Refusals come from the real servers where they make them
(Radicale refuses DTEND with DURATION, and a UID changed at an href) and from a front in front
of Radicale and Xandikos that answers as strict servers do (Cyrus, SabreDAV, DAViCal). Also
here: multigets answered 404 as a whole, and servers that convert vCard versions.
"""

import re
import urllib.parse

import pytest

from ksynctest import checks, gen
from ksynctest.faults import (Converting, Faults, card, describe, event, local_uids, on,
                              server_uids, write_file)
from ksynctest.tlsfront import Front, Reply

ACCOUNT = "acct"
BOOK = "people"
CAL = "work"
RUN_TIMEOUT = 180

XML = [("Content-Type", "application/xml; charset=utf-8")]


def dav_error(condition, ns="urn:ietf:params:xml:ns:carddav", text=None):
    desc = "<d:responsedescription>%s</d:responsedescription>" % text if text else ""
    return ('<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:" xmlns:x="%s">'
            '<x:%s/>%s</d:error>' % (ns, condition, desc)).encode()


def multistatus_refusal(href, status, condition):
    """Xandikos's way of refusing a PUT: a 207 whose one response holds the failure."""
    return ('<?xml version="1.0" encoding="utf-8"?>\n<ns0:multistatus xmlns:ns0="DAV:">'
            '<ns0:response><ns0:href>%s</ns0:href><ns0:status>HTTP/1.1 %s</ns0:status>'
            '<ns0:error><ns1:%s xmlns:ns1="urn:ietf:params:xml:ns:carddav"/></ns0:error>'
            '</ns0:response></ns0:multistatus>' % (href, status, condition)).encode()


def sabre_error(exception, message):
    return ('<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:" '
            'xmlns:s="http://sabredav.org/ns"><s:sabredav-version>1.8.12</s:sabredav-version>'
            '<s:exception>%s</s:exception><s:message>%s</s:message></d:error>'
            % (exception, message)).encode()


def failure_text(r):
    return "\n".join(checks.failure_lines(r.stderr, ACCOUNT))


class Scene:
    """An address book of five cards and a calendar of three events, synced through a front;
    then edits and new items on the local side."""

    def __init__(self, server, ks):
        self.server, self.ks = server, ks
        self.faults = Faults()
        self.front = Front(backend=server, route=self.faults)
        ks.add_account(ACCOUNT, server,
                       url=self.front.url_for(urllib.parse.urlsplit(server.url).path))
        self.book = server.make_addressbook(BOOK, "People")
        self.cal = server.make_calendar(CAL, "Work", components=("VEVENT",))
        for i in range(5):
            server.put(self.book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
        for i in range(3):
            server.put(self.cal + "e%d.ics" % i, event("e%d" % i, "Meeting %d" % i))
        ks.sync(timeout=RUN_TIMEOUT)
        self.book_dir = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        self.cal_dir = ks.collection_dir(ACCOUNT, "calendar", CAL)

    def edit_locally(self, c2=None):
        for i in (1, 3):
            write_file(self.book_dir / ("c%d.vcf" % i),
                       card("c%d" % i, "Person %d" % i, note="edited %d" % i))
        self.c2 = c2 or card("c2", "Person 2", note="edited 2")
        write_file(self.book_dir / "c2.vcf", self.c2)
        write_file(self.book_dir / "n1.vcf", card("n1", "New One"))
        write_file(self.cal_dir / "e1.ics", event("e1", "Meeting moved"))
        write_file(self.cal_dir / "le1.ics", event("le1", "Local event"))

    def puts_to(self, name):
        return [s for s in self.front.seen() if s.method == "PUT" and s.path.endswith(name)]

    def check_rest_went_through(self):
        srv = server_uids(self.server, self.book)
        assert b"edited 1" in srv["c1"] and b"edited 3" in srv["c3"], srv
        assert "n1" in srv
        assert b"edited 2" not in srv["c2"]
        cal = server_uids(self.server, self.cal)
        assert b"Meeting moved" in cal["e1"] and "le1" in cal, cal
        assert (self.book_dir / "c2.vcf").read_bytes() == self.c2

    def stop(self):
        self.front.stop()


@pytest.fixture
def scene(server, ks):
    sc = Scene(server, ks)
    try:
        yield sc
    finally:
        sc.stop()


REFUSALS = {
    # Cyrus: a vCard 3.0 without N.
    "valid-address-data": (
        lambda: Reply(403, XML, dav_error("valid-address-data")),
        card("c2", "Person 2", note="edited 2").replace(b"N:Person 2;;;;\r\n", b""),
        r"a vCard 3\.0 needs an N property \(CARDDAV:valid-address-data\)"),
    # SabreDAV: a property name with '_'.
    "sabre-415": (
        lambda: Reply(415, XML, sabre_error("Sabre\\DAV\\Exception\\UnsupportedMediaType",
                                            "Property name X_FOO is not valid")),
        None, r"HTTP 415 Unsupported Media Type: Property name X_FOO is not valid"),
    "sabre-400": (
        lambda: Reply(400, XML, sabre_error("Sabre\\DAV\\Exception\\BadRequest",
                                            "Invalid vCard: broken line")),
        None, r"HTTP 400 Bad Request: Invalid vCard: broken line"),
    "no-uid-conflict": (
        lambda: Reply(409, XML, dav_error("no-uid-conflict")),
        None, r"another card on the server has this UID \(CARDDAV:no-uid-conflict\)"),
    "multistatus-412": (
        lambda: Reply(207, XML, multistatus_refusal("/c2.vcf", "412 Precondition Failed",
                                                    "no-uid-conflict")),
        None, r"another card on the server has this UID \(CARDDAV:no-uid-conflict\)"),
    "need-privileges": (
        lambda: Reply(403, XML, dav_error("need-privileges", ns="DAV:")),
        None, r"no permission to write here \(DAV:need-privileges\)"),
    "plain-403": (lambda: Reply(403, [("Content-Type", "text/html")], b"<h1>Forbidden</h1>"),
                  None, r"HTTP 403 Forbidden"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_refused_upload_fails_only_its_item(scene, kind):
    reply, c2, reason = REFUSALS[kind]
    scene.edit_locally(c2)
    scene.faults.add(on("put", scene.book + "c2.vcf"), reply(), which="every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert re.search(r"contacts/%s: the server refused 'c2\.vcf': %s; the file is kept and sent "
                     r"again once it changes" % (BOOK, reason), r.stderr), describe(r)
    assert not failure_text(r).count("could not"), describe(r)
    scene.check_rest_went_through()
    assert len(scene.puts_to("/c2.vcf")) == 1

    # Not sent again while the file stays as it is; said again.
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert len(scene.puts_to("/c2.vcf")) == 1, describe(r)
    assert re.search(r"not sending 'c2\.vcf': the server refused it: %s; it is sent once the "
                     r"file changes" % reason, r.stderr), describe(r)
    assert "resuming" not in r.stderr

    # Changed, it is sent again; with the server taking it, all is well.
    scene.faults.clear()
    fixed = card("c2", "Person 2", note="fixed 2")
    write_file(scene.book_dir / "c2.vcf", fixed)
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0 and "refused" not in r.stderr, describe(r)
    assert b"fixed 2" in server_uids(scene.server, scene.book)["c2"]
    assert scene.ks.query("SELECT * FROM refusal") == []
    checks.check_mirror(scene.ks, scene.server, ACCOUNT)


@pytest.mark.all_servers
def test_refused_deletion(scene):
    scene.faults.add(on("delete", scene.book + "c4.vcf"), Reply(403, [], b""), which="every")
    (scene.book_dir / "c4.vcf").unlink()
    write_file(scene.book_dir / "c1.vcf", card("c1", "Person 1", note="edited 1"))
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert "the server refused the deletion of 'c4.vcf': HTTP 403 Forbidden" in r.stderr, (
        describe(r))
    assert "c4" in server_uids(scene.server, scene.book)
    assert b"edited 1" in server_uids(scene.server, scene.book)["c1"]
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert "not sending the deletion of 'c4.vcf'" in r.stderr and "--force" in r.stderr, (
        describe(r))
    assert len([s for s in scene.front.seen() if s.method == "DELETE"]) == 1
    # --force brings the file back, as the server keeps the item.
    r = scene.ks.run("--force", timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert "c4" in local_uids(scene.book_dir, ".vcf")
    assert scene.ks.query("SELECT * FROM refusal") == []
    checks.check_mirror(scene.ks, scene.server, ACCOUNT)


def test_refused_new_file_deleted_by_the_user(scene):
    """A new file the server refused, then deleted by the user: nothing is left pending."""
    scene.faults.add(on("put", scene.book + "n9.vcf"), Reply(403, [], b""), which="every")
    write_file(scene.book_dir / "n9.vcf", card("n9", "Refused"))
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert "the server refused 'n9.vcf'" in r.stderr, describe(r)
    (scene.book_dir / "n9.vcf").unlink()
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0 and "n9" not in r.stderr and "resuming" not in r.stderr, describe(r)
    assert scene.ks.query("SELECT * FROM refusal") == []
    assert scene.ks.query("SELECT * FROM intent") == []


@pytest.mark.all_servers
def test_refused_with_other_collections_in_flight(scene):
    """Every upload of a collection gets its answer even when the first ones are refused:
    nothing stops the requests still to start (SabreDAV refused all but 3 before)."""
    for i in range(10):
        write_file(scene.book_dir / ("m%d.vcf" % i), card("m%d" % i, "Many %d" % i))
    scene.faults.add(lambda s: s.method == "PUT" and re.search(r"/m[0-4]\.vcf$", s.path),
                     Reply(400, [], b""), which="every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert len(re.findall(r"the server refused 'm[0-4]\.vcf'", r.stderr)) == 5, describe(r)
    srv = server_uids(scene.server, scene.book)
    assert {"m5", "m6", "m7", "m8", "m9"} <= set(srv) and not {"m0", "m4"} & set(srv)


# -- refusals of the real servers, and the ones ksync makes before sending -------------------------

def test_dtend_with_duration_refused_by_radicale(radicale, ks):
    cal = radicale.make_calendar(CAL, "Work")
    ks.add_account(ACCOUNT, radicale)
    ks.sync(timeout=RUN_TIMEOUT)
    d = ks.collection_dir(ACCOUNT, "calendar", CAL)
    bad = event("bad", "Both").replace(b"DTEND:20240610T100000Z\r\n",
                                       b"DTEND:20240610T100000Z\r\nDURATION:PT1H\r\n")
    write_file(d / "bad.ics", bad)
    write_file(d / "good.ics", event("good", "Good"))
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert "the server refused 'bad.ics': DTEND and DURATION together (HTTP 400)" in r.stderr, (
        describe(r))
    assert set(server_uids(radicale, cal)) == {"good"}


def test_task_in_an_events_calendar_is_not_sent(radicale, ks):
    """The calendar says it takes events only (supported-calendar-component-set; Radicale
    keeps what MKCALENDAR set, Xandikos offers every kind): a task is refused here, before
    any request, with a message that says so; the events go."""
    server = radicale
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        cal = server.make_calendar(CAL, "Work", components=("VEVENT",))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "calendar", CAL)
        write_file(d / "t.ics", gen.serialize([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//tests//EN", "BEGIN:VTODO",
            "UID:t", "DTSTAMP:20240101T000000Z", "SUMMARY:Task", "END:VTODO", "END:VCALENDAR"]))
        write_file(d / "e.ics", event("e", "Event"))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert "not sending 't.ics': it is a task and the calendar 'Work' takes only events" in (
            r.stderr), describe(r)
        assert not [s for s in front.seen() if s.method == "PUT" and s.path.endswith("/t.ics")]
        assert set(server_uids(server, cal)) == {"e"}
    finally:
        front.stop()


@pytest.mark.all_servers
def test_uid_changed_in_an_edit_is_not_sent(server, ks):
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        book = server.make_addressbook(BOOK, "People")
        server.put(book + "c0.vcf", card("c0", "Person 0"))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        write_file(d / "c0.vcf", card("other", "Person 0"))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert re.search(r"not sending 'c0\.vcf': its UID changed from 'c0' to 'other'.*move the "
                         r"file to a new name", r.stderr), describe(r)
        assert not [s for s in front.seen() if s.method == "PUT"]
        # Moved to a new name, as the message says: the old item goes, the new one comes.
        (d / "c0.vcf").rename(d / "other.vcf")
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert set(server_uids(server, book)) == {"other"}
        assert set(local_uids(d, ".vcf")) == {"other"}
    finally:
        front.stop()


# -- multigets answered 404 as a whole ----------------------------------------------------------------

@pytest.mark.all_servers
def test_multiget_answered_404(scene):
    """SabreDAV 1.8 answers a multiget 404 as a whole when one of its items is gone: the
    items are fetched one by one, the gone one is simply not there."""
    for i in range(5):
        h = scene.book + "c%d.vcf" % i
        scene.server.put(h, card("c%d" % i, "Person %d" % i, note="changed %d" % i),
                         if_match=scene.server.etag(h))
    scene.server.delete(scene.book + "c3.vcf")
    scene.faults.add(on("multiget", scene.book), Reply(404, [], b"Not Found"), which="every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    assert "fetching its" in r.stderr, describe(r)
    loc = local_uids(scene.book_dir, ".vcf")
    assert set(loc) == {"c0", "c1", "c2", "c4"}, sorted(loc)
    assert all(b"changed" in v for v in loc.values())


# -- servers that convert vCard versions -------------------------------------------------------------

def card4(uid, fn, *extra):
    return gen.serialize(["BEGIN:VCARD", "VERSION:4.0", "UID:" + uid, "FN:" + fn, "N:;%s;;;" % fn]
                         + list(extra) + ["END:VCARD"])


@pytest.mark.all_servers
def test_vcard_4_stays_4_on_a_converting_server(server, ks):
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        book = server.make_addressbook(BOOK, "People")
        conv = Converting(faults, book, {urllib.parse.urlsplit(h).path
                                         for h in server.home_sets})
        theirs = card4("theirs", "Their Card", "KIND:individual", "ANNIVERSARY:20100601")
        server.put(book + "theirs.vcf", theirs)
        server.put(book + "old.vcf", card("old", "Old Card"))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        got = (d / "theirs.vcf").read_bytes()
        assert b"VERSION:4.0" in got and b"KIND:individual" in got, got
        assert conv.asked and all(conv.asked), conv.asked

        # A 4.0 card made here is uploaded and read back as 4.0: the file is not rewritten.
        mine = card4("mine", "My Card", "KIND:individual")
        write_file(d / "mine.vcf", mine)
        ks.sync(timeout=RUN_TIMEOUT)
        assert (d / "mine.vcf").read_bytes() == mine or b"VERSION:4.0" in (
            d / "mine.vcf").read_bytes()
        assert b"KIND:individual" in server.get(book + "mine.vcf")

        # A 3.0 card edited here stays 3.0 through its upload and read-back.
        write_file(d / "old.vcf", card("old", "Old Card", note="edited here"))
        ks.sync(timeout=RUN_TIMEOUT)
        assert b"VERSION:3.0" in (d / "old.vcf").read_bytes()
        assert b"VERSION:3.0" in server.get(book + "old.vcf")
        faults.clear()
    finally:
        front.stop()
