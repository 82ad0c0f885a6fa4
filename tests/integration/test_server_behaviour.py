"""What Radicale, Xandikos, DAViCal and SabreDAV answer to the uploads and reports ksync has to
live with: which server refuses what (status and precondition), how a multiget naming a missing
href is answered, what a vCard 4.0 comes back as, what a server adds to what it stores.

These need no ksync binary. The tests of ksync's handling of refusals rely on these answers to
produce each case on a real server; a server package that answers differently shows up here
first, by name, instead of as a ksync test that silently stopped testing anything."""

import re
import xml.etree.ElementTree as ET

import pytest

from ksynctest import gen, servers


def ical(*lines):
    return gen.serialize(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//behaviour//EN"] +
                         list(lines) + ["END:VCALENDAR"])


def vevent(uid, *extra, end=True):
    lines = ["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20240101T000000Z",
             "DTSTART:20240610T090000Z"]
    if end:
        lines.append("DTEND:20240610T100000Z")
    return lines + ["SUMMARY:Event " + uid] + list(extra) + ["END:VEVENT"]


def vtodo(uid):
    return ["BEGIN:VTODO", "UID:" + uid, "DTSTAMP:20240101T000000Z", "SUMMARY:Task " + uid,
            "END:VTODO"]


def vcard(uid, *extra, version="3.0", n=True):
    lines = ["BEGIN:VCARD", "VERSION:" + version, "UID:" + uid, "FN:Card " + uid]
    if n:
        lines.append("N:%s;Card;;;" % uid)
    return gen.serialize(lines + list(extra) + ["END:VCARD"])


def put(server, href, data, **headers):
    headers["Content-Type"] = servers._content_type(href, data)
    return server.request("PUT", href, data, headers)


def refusal(resp):
    """(status, marker): the status and what names the reason in the body: a precondition
    element of a DAV:error (its local name) or SabreDAV's s:message; None for a 2xx."""
    if resp.status_code < 300:
        return resp.status_code, None
    text = resp.text
    try:
        root = ET.fromstring(resp.content)
    except ET.ParseError:
        return resp.status_code, text.strip() or None
    for el in root.iter():
        if el.tag == "{http://sabredav.org/ns}message":
            return resp.status_code, el.text
    names = [el.tag.rsplit("}", 1)[-1] for el in root if el.tag != "{DAV:}responsedescription"]
    return resp.status_code, names[0] if names else None


@pytest.fixture
def colls(server):
    book = server.make_addressbook("book", "Book")
    events = server.make_calendar("events", "Events", components=("VEVENT",))
    both = server.make_calendar("both", "Both", components=("VEVENT", "VTODO"))
    return book, events, both


ACCEPTED = (201, None)

# (uploaded to, data) -> {server kind: (status, marker or a regex the marker matches)}
UPLOADS = {
    # Cyrus refuses both (CARDDAV:valid-address-data, CALDAV:valid-calendar-data); none of
    # these four does.
    "vcard_without_n": ("book", vcard("no-n", n=False), {
        "radicale": ACCEPTED, "xandikos": ACCEPTED, "davical": ACCEPTED, "sabredav": ACCEPTED}),
    "timed_event_without_dtend": ("both", ical(*vevent("no-dtend", end=False)), {
        "radicale": ACCEPTED, "xandikos": ACCEPTED, "davical": ACCEPTED, "sabredav": ACCEPTED}),
    # Only SabreDAV holds a calendar to its supported-calendar-component-set.
    "task_in_events_only_calendar": ("events", ical(*vtodo("task")), {
        "radicale": ACCEPTED, "xandikos": ACCEPTED, "davical": ACCEPTED,
        "sabredav": (403, r"^This calendar only supports VEVENT\. We found a VTODO$")}),
    "event_and_task_in_one_object": ("both", ical(*vevent("mixed"), *vtodo("mixed")), {
        "radicale": (400, "Bad Request"), "xandikos": ACCEPTED, "davical": ACCEPTED,
        "sabredav": (400, r"^A calendar object must only contain 1 component")}),
    # SabreDAV 1.8's parser takes only [A-Z0-9-] in property names (X-MOZ_LASTACK is common).
    "underscore_in_event_property": ("both", ical(*vevent("underscore",
                                                          "X-MOZ_LASTACK:20240101T000000Z")), {
        "radicale": ACCEPTED, "xandikos": ACCEPTED, "davical": ACCEPTED,
        "sabredav": (415, r"only supports valid iCalendar 2\.0 data\. Parse error")}),
    "underscore_in_vcard_property": ("book", vcard("underscore", "X-ABC_DEF:value"), {
        "radicale": ACCEPTED, "xandikos": ACCEPTED, "davical": ACCEPTED,
        "sabredav": (415, r"only supports valid vcard data\. Parse error")}),
}


@pytest.mark.all_servers
@pytest.mark.parametrize("case", sorted(UPLOADS))
def test_upload_refused_or_accepted(server, colls, case):
    where, data, want = UPLOADS[case]
    coll = dict(zip(("book", "events", "both"), colls))[where]
    href = coll + case + (".vcf" if where == "book" else ".ics")
    status, marker = refusal(put(server, href, data, **{"If-None-Match": "*"}))
    want_status, want_marker = want[server.kind]
    assert status == want_status, (status, marker)
    if want_marker is None:
        assert href in {h for h in server.list(coll)}
    else:
        assert marker and re.search(want_marker, marker), marker
        assert href not in server.list(coll)


@pytest.mark.all_servers
def test_uid_changed_by_an_edit(server, colls):
    """A PUT to an existing href with another UID: only Radicale refuses it (409
    no-uid-conflict); the others replace the item."""
    book, _, both = colls
    for coll, first, second in ((both, ical(*vevent("uid-1")), ical(*vevent("uid-2"))),
                                (book, vcard("uid-1"), vcard("uid-2"))):
        href = coll + "edited" + (".vcf" if coll == book else ".ics")
        etag = server.put(href, first, if_none_match="*")
        status, marker = refusal(put(server, href, second, **{"If-Match": etag}))
        if server.kind == "radicale":
            assert (status, marker) == (409, "no-uid-conflict")
            assert b"UID:uid-1" in server.get(href)
        else:
            assert status == 204 and b"UID:uid-2" in server.get(href)


@pytest.mark.all_servers
def test_uid_used_at_a_second_href(server, colls):
    """A new href with a UID the collection already holds: Radicale refuses it (409
    no-uid-conflict), Xandikos answers the PUT with a 207 multistatus holding 412
    no-uid-conflict (no 4xx status at all), DAViCal and SabreDAV store a second item."""
    _, _, both = colls
    server.put(both + "one.ics", ical(*vevent("same-uid")), if_none_match="*")
    resp = put(server, both + "two.ics", ical(*vevent("same-uid")), **{"If-None-Match": "*"})
    if server.kind == "radicale":
        assert refusal(resp) == (409, "no-uid-conflict")
        assert sorted(server.list(both)) == [both + "one.ics"]
    elif server.kind == "xandikos":
        assert resp.status_code == 207
        assert re.search(rb"412 Precondition Failed.*no-uid-conflict", resp.content, re.S)
        assert sorted(server.list(both)) == [both + "one.ics"]
    else:
        assert resp.status_code == 201
        assert sorted(server.list(both)) == [both + "one.ics", both + "two.ics"]


def multiget(server, coll, hrefs, book, version=None):
    if book:
        data = ('<A:address-data content-type="text/vcard" version="%s"/>' % version
                if version else "<A:address-data/>")
        body = ('<A:addressbook-multiget xmlns:D="DAV:" xmlns:A="%s"><D:prop><D:getetag/>%s'
                '</D:prop>%s</A:addressbook-multiget>') % (
                    servers.CARDDAV, data, "".join("<D:href>%s</D:href>" % h for h in hrefs))
    else:
        body = ('<C:calendar-multiget xmlns:D="DAV:" xmlns:C="%s"><D:prop><D:getetag/>'
                '<C:calendar-data/></D:prop>%s</C:calendar-multiget>') % (
                    servers.CALDAV, "".join("<D:href>%s</D:href>" % h for h in hrefs))
    return server.request("REPORT", coll, body.encode(),
                          {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})


def statuses(resp):
    """{href path: status code} of the responses of a 207 body."""
    out = {}
    for r in ET.fromstring(resp.content).findall("{DAV:}response"):
        href = servers.href_path(r.findtext("{DAV:}href"))
        st = r.findtext("{DAV:}status") or r.findtext("{DAV:}propstat/{DAV:}status")
        out[href] = int(st.split()[1])
    return out


@pytest.mark.all_servers
def test_multiget_naming_a_missing_href(server, colls):
    """Radicale and Xandikos answer 404 for the missing href inside the 207; DAViCal leaves it
    out of the 207; SabreDAV 1.8 answers the whole REPORT 404 (Sabre\\DAV\\Exception\\NotFound),
    with none of the items that exist."""
    book, _, both = colls
    server.put(book + "here.vcf", vcard("here"))
    server.put(both + "here.ics", ical(*vevent("here")))
    for coll, ext, is_book in ((book, ".vcf", True), (both, ".ics", False)):
        resp = multiget(server, coll, [coll + "here" + ext, coll + "gone" + ext], is_book)
        if server.kind == "sabredav":
            status, marker = refusal(resp)
            assert status == 404 and marker in ("Card not found", "Calendar object not found")
            continue
        assert resp.status_code == 207
        want = {coll + "here" + ext: 200}
        if server.kind != "davical":
            want[coll + "gone" + ext] = 404
        assert statuses(resp) == want


@pytest.mark.all_servers
def test_vcard_4_is_kept_as_uploaded(server, colls):
    """None of these servers converts a vCard 4.0: GET and multigets with and without
    version="4.0" (or "3.0") return it as 4.0 with KIND and ANNIVERSARY. Each announces 3.0
    only, under a different element: DAViCal address-data, SabreDAV address-data-type (RFC 6352),
    Xandikos content-type; Radicale none."""
    book = colls[0]
    href = book + "v4.vcf"
    server.put(href, vcard("v4", "KIND:individual", "ANNIVERSARY:20100612", version="4.0"))
    bodies = [server.get(href)]
    for version in (None, "4.0", "3.0"):
        resp = multiget(server, book, [href], True, version)
        assert resp.status_code == 207
        m = re.search(rb"address-data[^>]*>(.*?)</", resp.content, re.S)
        bodies.append(servers._xml_unescape(m.group(1)))
    for body in bodies:
        assert b"VERSION:4.0" in body and b"KIND:individual" in body
        assert b"ANNIVERSARY:20100612" in body
    got = server.propfind(book, ["A:supported-address-data"])[servers.href_path(book)]
    sad = got.get("{%s}supported-address-data" % servers.CARDDAV)
    if server.kind == "radicale":
        assert sad is None
        return
    offered = [(el.tag.rsplit("}", 1)[-1], el.get("version")) for el in sad]
    element = {"davical": "address-data", "sabredav": "address-data-type",
               "xandikos": "content-type"}[server.kind]
    assert offered == [(element, "3.0")]


@pytest.mark.all_servers
def test_what_a_server_adds_to_a_stored_vcard(server, colls):
    """DAViCal stamps REV with the time of the PUT on a card that has none, and then sends no
    ETag (the stored card is not the one sent); the others store the card as sent (Radicale
    re-serializes it) and send its ETag."""
    book = colls[0]
    resp = put(server, book + "plain.vcf", vcard("plain"), **{"If-None-Match": "*"})
    assert resp.status_code == 201
    body = server.get(book + "plain.vcf")
    if server.kind == "davical":
        assert re.search(rb"\r\nREV:\d{8}T\d{6}Z\r\n", body), body
        assert resp.headers.get("ETag") is None
    else:
        assert b"REV:" not in body
        assert resp.headers.get("ETag") == server.list(book)[book + "plain.vcf"]
