"""Refusals and answers made by the real servers themselves, through ksyncd: SabreDAV 1.8 refuses
a property name with '_' (415) and an event and a task in one object (400), Radicale refuses
the latter too, and a calendar that takes only events gets no task from ksync; SabreDAV answers
a multiget naming an item deleted since the listing 404 as a whole. Each refusal fails only its
file, says the server's reason, and is not sent again while the file stays as it is
(test_server_behaviour.py records which server answers what; test_refusals.py makes the same
answers with a front)."""

import re
import urllib.parse

import pytest

from ksynctest import checks, gen
from ksynctest.faults import card, describe, local_uids, server_uids, write_file
from ksynctest.tlsfront import Front

ACCOUNT = "acct"
RUN_TIMEOUT = 180


def ical(*lines):
    return gen.serialize(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//refusals//EN"] +
                         list(lines) + ["END:VCALENDAR"])


def vevent(uid, *extra):
    return ["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20240101T000000Z",
            "DTSTART:20240610T090000Z", "DTEND:20240610T100000Z", "SUMMARY:Event " + uid] + \
        list(extra) + ["END:VEVENT"]


def vtodo(uid):
    return ["BEGIN:VTODO", "UID:" + uid, "DTSTAMP:20240101T000000Z", "SUMMARY:Task " + uid,
            "END:VTODO"]


SABRE_415 = r"HTTP 415 Unsupported Media Type: This resource only supports valid %s data\. " \
    r"Parse error: Invalid VObject, line \d+ did not follow the icalendar/vcard format"
MIXED = r"it holds an event and a task: one object holds one kind of item"

# File -> {server kind: what stderr says about it}; kinds not named take the file.
REFUSED = {
    "both/underscore.ics": {"sabredav": SABRE_415 % r"iCalendar 2\.0"},
    "book/underscore.vcf": {"sabredav": SABRE_415 % "vcard"},
    "both/mixed.ics": {"sabredav": MIXED + r": A calendar object must only contain 1 "
                       r"component\. We found a VTODO as well as a VEVENT",
                       "radicale": MIXED + r" \(HTTP 400\)"},
}
# Xandikos offers every component in every calendar, so ksync sends it the task.
NOT_SENT = {"events/task.ics": {k: r"it is a task and the calendar 'Events' takes only events"
                                for k in ("radicale", "davical", "sabredav")}}


@pytest.mark.all_servers
def test_real_refusals_fail_only_their_file(server, ks):
    colls = {"both": server.make_calendar("both", "Both", components=("VEVENT", "VTODO")),
             "events": server.make_calendar("events", "Events", components=("VEVENT",)),
             "book": server.make_addressbook("book", "Book")}
    ks.add_account(ACCOUNT, server)
    ks.sync(timeout=RUN_TIMEOUT)
    dirs = {"both": ks.collection_dir(ACCOUNT, "calendar", "both"),
            "events": ks.collection_dir(ACCOUNT, "calendar", "events"),
            "book": ks.collection_dir(ACCOUNT, "addressbook", "book")}
    files = {
        "both/underscore.ics": ical(*vevent("underscore", "X-MOZ_LASTACK:20240101T000000Z")),
        "both/mixed.ics": ical(*vevent("mixed"), *vtodo("mixed")),
        "both/good.ics": ical(*vevent("good")),
        "events/task.ics": ical(*vtodo("task")),
        "events/event.ics": ical(*vevent("event")),
        "book/underscore.vcf": gen.serialize(["BEGIN:VCARD", "VERSION:3.0", "UID:underscore",
                                              "FN:Under Score", "N:Score;Under;;;",
                                              "X-ABC_DEF:value", "END:VCARD"]),
        "book/good.vcf": card("good", "Good Card"),
    }
    for rel, data in files.items():
        coll, name = rel.split("/")
        write_file(dirs[coll] / name, data)
    refused = {rel: why[server.kind] for rel, why in REFUSED.items() if server.kind in why}
    held = {rel: why[server.kind] for rel, why in NOT_SENT.items() if server.kind in why}

    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    kind = {"book": "contacts"}
    for rel, why in refused.items():
        coll, name = rel.split("/")
        assert re.search(r"(?m)^%s/%s/%s: the server refused '%s': %s; the file is kept and "
                         r"sent again once it changes$" % (
                             ACCOUNT, kind.get(coll, "calendars"), coll, re.escape(name), why),
                         r.stderr), describe(r)
    for rel, why in held.items():
        coll, name = rel.split("/")
        assert re.search(r"(?m)^%s/calendars/%s: not sending '%s': %s" % (
            ACCOUNT, coll, re.escape(name), why), r.stderr), describe(r)
    for rel, data in files.items():
        coll, name = rel.split("/")
        on_server = servers_names(server, colls[coll])
        if rel in refused or rel in held:
            assert name not in on_server, (rel, on_server)
            assert (dirs[coll] / name).read_bytes() == data, "%s was changed" % rel
        else:
            assert name in on_server, (rel, on_server, describe(r))

    # Not sent again while the files stay as they are.
    c0 = server.request_count()
    r = ks.run(timeout=RUN_TIMEOUT)
    c1 = server.request_count()
    assert r.rc == 0, describe(r)
    sent = [p for p in server.requests_logged()[c0:c1]
            if urllib.parse.unquote(p).rsplit("/", 1)[-1] in {
                rel.split("/")[1] for rel in list(refused) + list(held)}]
    assert not sent, sent
    for rel in refused:
        assert "not sending '%s': the server refused it" % rel.split("/")[1] in r.stderr, \
            describe(r)


def servers_names(server, coll):
    return {urllib.parse.unquote(h).rsplit("/", 1)[-1] for h in server.list(coll)}


@pytest.mark.all_servers
def test_item_deleted_between_listing_and_multiget(server, ks):
    """Another client deletes an item after ksync's listing named it changed and before the
    multiget: SabreDAV answers the multiget 404 as a whole, DAViCal leaves the item out, Radicale
    and Xandikos answer 404 for it. The other changes arrive; the deleted item is gone here too
    (at the latest on the next run)."""
    book = server.make_addressbook("book", "Book")
    for i in range(5):
        server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
    deleted = []

    def route(front, seen):
        if (seen.method == "REPORT" and b"multiget" in seen.body and not deleted):
            deleted.append(book + "c3.vcf")
            server.delete(book + "c3.vcf")
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server,
                       url=front.url_for(urllib.parse.urlsplit(server.url).path))
        ks.sync(timeout=RUN_TIMEOUT)
        d = ks.collection_dir(ACCOUNT, "addressbook", "book")
        assert deleted, "no multiget in the first sync"
        assert set(local_uids(d, ".vcf")) == {"c0", "c1", "c2", "c4"}

        deleted.clear()
        for i in range(5):
            if i != 3:
                h = book + "c%d.vcf" % i
                server.put(h, card("c%d" % i, "Person %d" % i, note="changed %d" % i),
                           if_match=server.etag(h))
        server.put(book + "c3.vcf", card("c3", "Person 3", note="back"))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert deleted, "no multiget in the second sync"
        if server.kind == "sabredav":
            assert "fetching its" in r.stderr, describe(r)
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        loc = local_uids(d, ".vcf")
        assert set(loc) == {"c0", "c1", "c2", "c4"}, sorted(loc)
        assert all(b"changed" in v for v in loc.values()), loc
        assert set(server_uids(server, book)) == set(loc)
        checks.check_mirror(ks, server, ACCOUNT)
    finally:
        front.stop()
