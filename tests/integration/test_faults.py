"""Hostile servers: faults injected per request by a proxy (tlsfront.Front) in front of a real
Radicale or Xandikos.

Every scenario starts from a synced account (an address book and a calendar) with changes
pending on both sides: items added, changed and deleted on the server, a file edited, files
added and one removed locally. One run of `ksyncd --once` meets the fault: it must exit
non-zero with a line naming the collection, the request and the cause (or, for faults ksync
works around, succeed), sync the collection the fault did not touch, and lose nothing: no
item deleted on the server that should stay, no local file lost, no duplicate, no temp file.
A clean run then converges (server == files == cache) and a further run changes nothing.
"""

import re
import time
import urllib.parse

import pytest

from ksynctest import checks, servers
from ksynctest.daemon import Daemon, wait_until
from ksynctest.faults import (Faults, card, decoded, describe, event, kind_of, local_uids, on,
                              omit_first_response, rewrite, server_uids, status_reply, uid_of,
                              write_file)
from ksynctest.tlsfront import Drop, Front, Reply, Stall, Transform

ACCOUNT = "acct"
BOOK = "people"
CAL = "work"
TIMEOUT = 2		# the account's `timeout`, seconds
STALL = 12		# a stalled answer lasts this long unless ksyncd gives up first
RUN_TIMEOUT = 120


# -- the scenario --------------------------------------------------------------------------------

class Scene:
    def __init__(self, server, ks, front, faults):
        self.server, self.ks, self.front, self.faults = server, ks, front, faults
        self.book = server.make_addressbook(BOOK, "People")
        self.cal = server.make_calendar(CAL, "Work")
        self.book_dir = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        self.cal_dir = ks.collection_dir(ACCOUNT, "calendar", CAL)

    def href(self, coll, uid, ext):
        return coll + uid + ext

    def setup(self):
        s = self.server
        for i in range(6):
            s.put(self.href(self.book, "c%d" % i, ".vcf"), card("c%d" % i, "Person %d" % i))
        for i in range(4):
            s.put(self.href(self.cal, "e%d" % i, ".ics"), event("e%d" % i, "Meeting %d" % i))
        self.ks.sync(timeout=RUN_TIMEOUT)
        checks.check_mirror(self.ks, s, ACCOUNT)

    def pend(self):
        """Changes on both sides; what the end state must hold."""
        s = self.server
        # server: two added, one changed, one deleted in the book; one event added
        s.put(self.href(self.book, "r1", ".vcf"), card("r1", "Remote One"))
        s.put(self.href(self.book, "r2", ".vcf"), card("r2", "Remote Two"))
        h = self.href(self.book, "c1", ".vcf")
        s.put(h, card("c1", "Person 1", note="changed on the server"), if_match=s.etag(h))
        h = self.href(self.book, "c2", ".vcf")
        s.delete(h, if_match=s.etag(h))
        s.put(self.href(self.cal, "re1", ".ics"), event("re1", "Remote event"))
        # local: one edited, one added, one removed in the book; one event added
        write_file(self.book_dir / "c3.vcf", card("c3", "Person 3", note="edited here"))
        write_file(self.book_dir / "l1.vcf", card("l1", "Local One"))
        (self.book_dir / "c4.vcf").unlink()
        write_file(self.cal_dir / "le1.ics", event("le1", "Local event"))
        self.want_book = {"c0", "c1", "c3", "c5", "r1", "r2", "l1"}
        self.want_cal = {"e0", "e1", "e2", "e3", "re1", "le1"}
        self.notes = {"c1": b"changed on the server", "c3": b"edited here"}

    def check_nothing_lost(self):
        """After a faulted run: no duplicate, nothing the end state needs is gone from the
        server or from the files (changes not sent yet may be missing on the other side),
        the local edit is still in its file, no temp file."""
        srv = server_uids(self.server, self.book)
        loc = local_uids(self.book_dir, ".vcf")
        srv_cal = server_uids(self.server, self.cal)
        loc_cal = local_uids(self.cal_dir, ".ics")
        kept = {"c0", "c1", "c3", "c5"}
        assert kept | {"r1", "r2"} <= set(srv), sorted(srv)
        assert kept | {"l1"} <= set(loc), sorted(loc)
        assert {"e0", "e1", "e2", "e3", "re1"} <= set(srv_cal), sorted(srv_cal)
        assert {"e0", "e1", "e2", "e3", "le1"} <= set(loc_cal), sorted(loc_cal)
        assert b"edited here" in loc["c3"], loc["c3"]
        assert "c4" not in loc
        checks.check_tree_hygiene(self.ks)

    def check_other_synced(self):
        """The calendar, which no fault touched, synced in the faulted run."""
        assert set(server_uids(self.server, self.cal)) == self.want_cal
        assert set(local_uids(self.cal_dir, ".ics")) == self.want_cal

    def converge(self):
        """Faults off: a clean run converges, a further one changes nothing."""
        self.faults.clear()
        r = self.ks.sync(timeout=RUN_TIMEOUT)
        assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
        for coll, d, ext, want in ((self.book, self.book_dir, ".vcf", self.want_book),
                                   (self.cal, self.cal_dir, ".ics", self.want_cal)):
            srv = server_uids(self.server, coll)
            loc = local_uids(d, ext)
            assert set(srv) == want, "server %s, want %s" % (sorted(srv), sorted(want))
            assert set(loc) == want, "files %s, want %s" % (sorted(loc), sorted(want))
        loc = local_uids(self.book_dir, ".vcf")
        for uid, note in self.notes.items():
            assert note in loc[uid], (uid, loc[uid])
        checks.check_mirror(self.ks, self.server, ACCOUNT)
        checks.check_tree_hygiene(self.ks)
        before = checks.snapshot(self.ks)
        r = self.ks.sync(timeout=RUN_TIMEOUT)
        assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
        checks.check_unchanged(before, checks.snapshot(self.ks))


@pytest.fixture
def scene(server, ks):
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        ks.accounts[ACCOUNT]["timeout"] = str(TIMEOUT)
        ks.write_config()
        sc = Scene(server, ks, front, faults)
        sc.setup()
        sc.pend()
        yield sc
    finally:
        front.stop()


def failure_text(r):
    return "\n".join(checks.failure_lines(r.stderr, ACCOUNT))


def check_mirror_by_href(ks, server, coll, d, ext):
    """Server items == cache rows == files, by href, whatever the files are called (a file
    keeps its name when its item's UID changes; two items with one UID need two names)."""
    want = {servers.href_path(h): v for h, v in server.contents(coll).items()}
    rows = {servers.href_path(it["href"]): it for it in ks.items(ACCOUNT)
            if servers.href_path(it["coll_href"]) == coll}
    assert set(rows) == set(want), (sorted(rows), sorted(want))
    used = set()
    for href, (etag, data) in want.items():
        row = rows[href]
        assert row["etag"] == etag and checks.as_bytes(row["data"]) == data, href
        assert (d / row["filename"]).read_bytes() == data, (href, row["filename"])
        used.add(row["filename"])
    assert {p.name for p in d.iterdir() if p.name.endswith(ext)} == used


def truncate_half(body):
    return body[:len(body) // 2]


def garbage(body):
    i = body.find(b"<", len(body) // 2)
    return body[:i] + b"\x00\xff<<garbage&&" + body[i:]


def mismatched(body):
    i = body.rfind(b"</")
    return body[:i] + b"</d:wrong></x:multistatus>"


PLAIN_FAULTS = {
    "drop-mid-body": (lambda: Drop(after=120), r"connection closed after 120 of \d+ bytes"),
    "drop-before-answer": (lambda: Stall(0), r"connection closed by the server before any "
                                             r"answer"),
    "stall": (lambda: Stall(STALL), r"timed out: the server sent no data for %d s" % TIMEOUT),
    "500": (lambda: status_reply(500), r"HTTP 500 Internal Server Error"),
    "502": (lambda: status_reply(502), r"HTTP 502 Bad Gateway"),
    "503": (lambda: status_reply(503), r"HTTP 503 Service Unavailable"),
    "503-retry-after": (lambda: status_reply(503, 7),
                        r"HTTP 503 Service Unavailable, retry after 7 s"),
    "429-retry-after": (lambda: status_reply(429, 7), r"HTTP 429 Too Many Requests, retry "
                                                      r"after 7 s"),
    "xml-truncated": (lambda: rewrite(truncate_half), r"malformed XML in the REPORT"),
    "xml-garbage": (lambda: rewrite(garbage), r"malformed XML in the REPORT"),
    "xml-mismatched": (lambda: rewrite(mismatched), r"malformed XML in the REPORT"),
}

# Failures that stop the whole account (the server asked to wait, or it is overloaded).
STOPS_ACCOUNT = {"503", "503-retry-after", "429-retry-after"}


@pytest.mark.parametrize("fault", sorted(PLAIN_FAULTS))
def test_listing_fault(scene, fault):
    """The address book's sync-collection REPORT fails."""
    make, pattern = PLAIN_FAULTS[fault]
    # Every one: a 500 to a token is also how Xandikos refuses one, which a full listing
    # follows.
    scene.faults.add(on("listing", scene.book), make(), which="every")
    t = time.monotonic()
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - t
    assert r.rc != 0, describe(r)
    msg = failure_text(r)
    assert re.search(r"^%s/contacts/%s: .*REPORT \S*%s" % (ACCOUNT, BOOK, scene.book),
                     msg, re.M) or fault.startswith("xml"), describe(r)
    assert re.search(pattern, msg), describe(r)
    if fault.startswith("xml"):
        assert scene.book in msg, describe(r)
    if fault == "stall":
        assert elapsed < STALL, "the stalled request was not cut: %.1f s" % elapsed
    scene.check_nothing_lost()
    if fault not in STOPS_ACCOUNT:
        scene.check_other_synced()
    scene.converge()


MULTIGET_FAULTS = ["drop-mid-body", "drop-before-answer", "stall", "500", "503-retry-after",
                   "xml-truncated", "xml-garbage", "xml-mismatched"]


@pytest.mark.parametrize("fault", MULTIGET_FAULTS)
def test_multiget_fault(scene, fault):
    """The address book's multiget fails. A damaged answer is worked around (what it
    delivered is used, the rest is fetched with GET) and reported as a warning."""
    make, pattern = PLAIN_FAULTS[fault]
    # Every one, but for damaged XML: libcurl itself sends a request again when the reused
    # connection it went out on closes before any answer.
    scene.faults.add(on("multiget", scene.book), make(),
                     which="first" if fault.startswith("xml") else "every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    if fault.startswith("xml"):
        assert r.rc == 0, describe(r)
        assert re.search(r"^%s/contacts/%s: malformed XML in the REPORT response from \S+: "
                         r".*\d+ of the \d+ item\(s\) asked for had arrived, the rest are "
                         r"fetched one by one"
                         % (ACCOUNT, BOOK), r.stderr, re.M), describe(r)
        if fault == "xml-truncated":
            assert any(s.method == "GET" for s in scene.front.seen())
    else:
        assert r.rc != 0, describe(r)
        assert re.search(pattern, failure_text(r)), describe(r)
        assert "contacts/%s" % BOOK in failure_text(r), describe(r)
    scene.check_nothing_lost()
    if fault not in STOPS_ACCOUNT:
        scene.check_other_synced()
    scene.converge()


@pytest.mark.parametrize("fault", ["500", "drop-mid-body", "stall"])
def test_propfind_fault(scene, fault):
    """Discovery (--force): every PROPFIND fails (one failing alone is worked around: the
    discovery goes on with the well-known URLs); the account reports it and the next run
    converges."""
    make, pattern = PLAIN_FAULTS[fault]
    scene.faults.add(on("propfind"), make(), which="every")
    r = scene.ks.run("--force", timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    msg = failure_text(r)
    assert re.search(pattern, msg) and "PROPFIND" in msg, describe(r)
    scene.check_nothing_lost()
    scene.converge()


PUT_FAULTS = {
    # not forwarded: the server never saw it
    "500": (lambda: status_reply(500), r"HTTP 500 Internal Server Error"),
    "503-retry-after": (lambda: status_reply(503, 7), r"HTTP 503 Service Unavailable"),
    # forwarded: the server did it, the answer is lost
    "stored-then-dropped": (lambda: Stall(0, forward=True), r"connection closed by the server "
                                                            r"before any answer"),
    "stored-then-500": (lambda: Transform(lambda seen, reply: status_reply(500)),
                        r"HTTP 500 Internal Server Error"),
    "stored-then-stall": (lambda: Stall(STALL, forward=True), r"timed out: the server sent "
                          r"no data for %d s" % TIMEOUT),
}


@pytest.mark.parametrize("method", ["put-new", "put-edit", "delete"])
@pytest.mark.parametrize("fault", sorted(PUT_FAULTS))
def test_upload_fault(scene, method, fault):
    """An upload fails, possibly after the server carried it out; the intent recorded before
    it lets the next run finish it without a duplicate or a lost edit."""
    make, pattern = PUT_FAULTS[fault]
    if method == "put-new":
        pred = lambda s: s.method == "PUT" and s.header("If-None-Match") == "*" and (  # noqa
            s.path.endswith("/l1.vcf"))
    elif method == "put-edit":
        pred = lambda s: s.method == "PUT" and s.header("If-Match") and (  # noqa
            s.path.endswith("/c3.vcf"))
    else:
        pred = lambda s: s.method == "DELETE" and s.path.endswith("/c4.vcf")  # noqa
    scene.faults.add(pred, make())
    t = time.monotonic()
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert time.monotonic() - t < STALL + 30
    assert scene.faults.hits, "the fault never hit: %s" % describe(r)
    if r.rc == 0:
        # Only where the server did it: libcurl sends a request again at once when the reused
        # connection it went out on closes before any answer; the condition of the second
        # one fails (412) and the merge that follows finds the server holds the same.
        assert fault == "stored-then-dropped", describe(r)
        assert len([s for s in scene.front.seen() if pred(s)]) >= 2, describe(r)
    else:
        msg = failure_text(r) + "\n" + r.stderr
        assert re.search(pattern, msg), describe(r)
        assert re.search(r"could not upload '(l1|c3|c4)\.vcf'", r.stderr), describe(r)
        assert "could not be fetched" not in r.stderr, describe(r)
    scene.check_nothing_lost()
    if fault != "503-retry-after":
        scene.check_other_synced()
    scene.converge()


# -- faults ksync works around -------------------------------------------------------------------

GET_FAULTS = {
    "500": (lambda: status_reply(500), r"HTTP 500 Internal Server Error"),
    "drop-mid-body": (lambda: Drop(after=10), r"connection closed after 10 of \d+ bytes"),
}


@pytest.mark.parametrize("get_fault", [None, "500", "drop-mid-body"])
def test_multiget_omits_an_href(scene, get_fault):
    """A multiget answer leaves an asked-for item out: it is fetched with GET, never taken as
    deleted; when that GET fails too, the collection reports it and the token stays."""
    scene.faults.add(on("multiget", scene.book), rewrite(omit_first_response))
    if get_fault:
        scene.faults.add(on("get"), GET_FAULTS[get_fault][0](), which="every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    gets = [s for s in scene.front.seen() if s.method == "GET"]
    assert gets, describe(r)
    if get_fault:
        assert r.rc != 0, describe(r)
        msg = failure_text(r)
        assert re.search(r"1 item\(s\) could not be fetched; they will be retried", msg), (
            describe(r))
        assert re.search(r"could not fetch '\S+': GET \S+: %s" % GET_FAULTS[get_fault][1],
                         r.stderr), describe(r)
    else:
        assert r.rc == 0, describe(r)
    scene.check_nothing_lost()
    scene.check_other_synced()
    scene.converge()


def _valid_sync_token_error(status):
    body = (b'<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:">'
            b'<d:valid-sync-token/></d:error>')
    return Reply(status, [("Content-Type", "application/xml; charset=utf-8")], body)


@pytest.mark.parametrize("status", [403, 409])
def test_sync_token_rejected(scene, status):
    """The stored token is refused: a full listing follows, without duplicates and without
    losing the local changes."""
    scene.faults.add(lambda s: kind_of(s) == "listing" and b"<d:sync-token></d:sync-token>"
                     not in s.body, _valid_sync_token_error(status), which="every")
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    full = [s for s in scene.front.seen() if kind_of(s) == "listing"
            and b"<d:sync-token></d:sync-token>" in s.body]
    assert full, "no full listing after the token was refused"
    scene.check_nothing_lost()
    scene.faults.clear()
    scene.converge()


def _sync_token(server, coll):
    body = ('<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:">'
            '<d:sync-token></d:sync-token><d:sync-level>1</d:sync-level>'
            '<d:prop><d:getetag/></d:prop></d:sync-collection>').encode()
    resp = server.request("REPORT", coll, body, {"Depth": "0", "Content-Type":
                                                 "application/xml; charset=utf-8"},
                          expect=(207,))
    m = re.search(rb"<(?:\w+:)?sync-token>([^<]+)</", resp.content)
    return m.group(1).decode()


@pytest.mark.parametrize("href_form", ["path", "empty", "blank"])
def test_sync_collection_truncated_507(server, ks, href_form):
    """RFC 6578 3.6: the server answers part of the changes, a 507 for the request-URI and a
    token for that part; ksync applies the part and goes on from that token until done.
    The 507's href may be the collection's path, or empty (a reference to the request-URI)."""
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        sc = Scene(server, ks, front, faults)
        sc.setup()
        # part A, then the token for it, then part B
        server.put(sc.href(sc.book, "a1", ".vcf"), card("a1", "Part A1"))
        server.put(sc.href(sc.book, "a2", ".vcf"), card("a2", "Part A2"))
        token_a = _sync_token(server, sc.book)
        server.put(sc.href(sc.book, "b1", ".vcf"), card("b1", "Part B1"))
        h = sc.href(sc.book, "c0", ".vcf")
        server.delete(h, if_match=server.etag(h))
        a_hrefs = {sc.href(sc.book, u, ".vcf") for u in ("a1", "a2")}
        href = {"path": sc.book, "empty": "", "blank": "  "}[href_form]

        def truncate(seen, reply):
            headers, body = decoded(reply)
            out = []
            for m in re.finditer(rb"<(\w+:)?response[ >].*?</(\w+:)?response>", body, re.S):
                h = re.search(rb"<(?:\w+:)?href>([^<]*)</", m.group(0)).group(1).decode()
                if urllib.parse.unquote(urllib.parse.urlsplit(h).path) in a_hrefs:
                    out.append(m.group(0))
            start = body.index(b">", body.index(b"multistatus")) + 1
            head = body[:start]
            ns = re.search(rb"<(\w+:)?multistatus", body).group(1) or b""
            tail = (b"<%sresponse><%shref>%s</%shref><%sstatus>HTTP/1.1 507 Insufficient "
                    b"Storage</%sstatus></%sresponse><%ssync-token>%s</%ssync-token>"
                    b"</%smultistatus>") % (ns, ns, href.encode(), ns, ns, ns, ns, ns,
                                             token_a.encode(), ns, ns)
            assert len(out) == 2, body
            return Reply(207, headers, head + b"".join(out) + tail)

        faults.add(on("listing", sc.book), Transform(truncate))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        listings = [s for s in front.seen() if kind_of(s) == "listing"
                    and s.path.startswith(sc.book)]
        assert len(listings) >= 2, "no second round after the 507"
        assert token_a.encode() in listings[-1].body or any(
            token_a.encode() in s.body for s in listings[1:]), "did not continue from the token"
        want = {"c1", "c2", "c3", "c4", "c5", "a1", "a2", "b1"}
        assert set(local_uids(sc.book_dir, ".vcf")) == want
        sc.want_book = want
        sc.want_cal = {"e0", "e1", "e2", "e3"}
        sc.notes = {}
        sc.converge()
    finally:
        front.stop()


def test_truncated_full_listing_cut_between_rounds(server, ks):
    """The stored token is refused, the full listing that follows is truncated (507 and a
    token), and the next round is cut off. An item the server deleted while the old token was
    stale is only known to be gone once the full listing is complete: the next run must not
    go on from the partial listing's token as if it were, or that item stays here forever."""
    faults = Faults()
    front = Front(backend=server, route=faults)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
        sc = Scene(server, ks, front, faults)
        sc.setup()
        h = sc.href(sc.book, "c0", ".vcf")
        server.delete(h, if_match=server.etag(h))
        server.put(sc.href(sc.book, "a1", ".vcf"), card("a1", "Part A1"))
        token_a = _sync_token(server, sc.book)
        server.put(sc.href(sc.book, "b1", ".vcf"), card("b1", "Part B1"))
        first = {sc.href(sc.book, u, ".vcf") for u in ("c1", "c2", "a1")}

        def truncate(seen, reply):
            headers, body = decoded(reply)
            out = [m.group(0) for m in re.finditer(
                rb"<(\w+:)?response[ >].*?</(\w+:)?response>", body, re.S)
                if urllib.parse.unquote(urllib.parse.urlsplit(re.search(
                    rb"<(?:\w+:)?href>([^<]*)</", m.group(0)).group(1).decode()).path) in first]
            ns = re.search(rb"<(\w+:)?multistatus", body).group(1) or b""
            head = body[:body.index(b">", body.index(b"multistatus")) + 1]
            tail = (b"<%sresponse><%shref>%s</%shref><%sstatus>HTTP/1.1 507 Insufficient "
                    b"Storage</%sstatus></%sresponse><%ssync-token>%s</%ssync-token>"
                    b"</%smultistatus>") % (ns, ns, sc.book.encode(), ns, ns, ns, ns, ns,
                                             token_a.encode(), ns, ns)
            return Reply(207, headers, head + b"".join(out) + tail)

        book_listing = on("listing", sc.book)
        faults.add(lambda s: book_listing(s) and b"<d:sync-token></d:sync-token>" not in s.body
                   and token_a.encode() not in s.body, _valid_sync_token_error(403))
        faults.add(lambda s: book_listing(s) and b"<d:sync-token></d:sync-token>" in s.body,
                   Transform(truncate))
        faults.add(lambda s: book_listing(s) and token_a.encode() in s.body, Drop(after=50))
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc != 0, describe(r)
        assert re.search(r"contacts/%s: REPORT \S+: connection closed after 50 of" % BOOK,
                         failure_text(r)), describe(r)
        assert len(faults.hits) == 3, faults.hits
        sc.want_book = {"c1", "c2", "c3", "c4", "c5", "a1", "b1"}
        sc.want_cal = {"e0", "e1", "e2", "e3"}
        sc.notes = {}
        sc.converge()
    finally:
        front.stop()


def test_sync_collection_507_without_token_fails_safely(scene):
    """A truncated initial-style answer with no token to continue from is reported, and
    nothing the answer left out is deleted."""
    def truncate(seen, reply):
        headers, body = decoded(reply)
        body = re.sub(rb"<(\w+:)?sync-token>[^<]*</(\w+:)?sync-token>", b"", body)
        body = omit_first_response(body)
        i = body.rfind(b"</")
        ns = re.search(rb"<(\w+:)?multistatus", body).group(1) or b""
        return Reply(207, headers, body[:i] + (
            b"<%sresponse><%shref></%shref><%sstatus>HTTP/1.1 507 Insufficient Storage"
            b"</%sstatus></%sresponse>" % (ns, ns, ns, ns, ns, ns)) + body[i:])

    # The stored token is refused, and the full listing that follows is truncated.
    scene.faults.add(on("listing", scene.book), _valid_sync_token_error(403))
    scene.faults.add(on("listing", scene.book), Transform(truncate))
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    assert re.search(r"contacts/%s: the server truncated the listing .*507.* without a "
                     r"sync-token" % BOOK, failure_text(r)), describe(r)
    scene.check_nothing_lost()
    scene.converge()


def test_item_changes_uid(scene):
    """The server's item at an href now has another UID, while the same item was edited
    here: neither version is lost."""
    s = scene.server
    href = scene.href(scene.book, "c5", ".vcf")
    try:
        s.put(href, card("c5-renamed", "Person 5 renamed"), if_match=s.etag(href))
    except servers.ServerError as e:
        pytest.skip("%s refuses a UID change at the same href: %s" % (s.kind, e))
    write_file(scene.book_dir / "c5.vcf", card("c5", "Person 5", note="edited c5 here"))
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    everything = b"".join(p.read_bytes() for p in scene.ks.data_dir.rglob("*")
                          if p.is_file() and p.suffix == ".vcf")
    srv = b"".join(server_uids(s, scene.book).values())
    assert b"edited c5 here" in everything + srv, describe(r)
    assert b"Person 5 renamed" in everything + srv, describe(r)
    scene.faults.clear()
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    before = checks.snapshot(scene.ks)
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_unchanged(before, checks.snapshot(scene.ks))
    check_mirror_by_href(scene.ks, s, scene.book, scene.book_dir, ".vcf")


def test_same_uid_under_two_hrefs(scene):
    """Two server items share a UID: both are kept (two files), nothing loops."""
    s = scene.server
    try:
        s.put(scene.book + "other-c0.vcf", card("c0", "Person 0 again"))
    except servers.ServerError as e:
        pytest.skip("%s refuses a second item with the same UID: %s" % (s.kind, e))
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    names = [p.name for p in scene.book_dir.iterdir() if p.suffix == ".vcf"]
    datas = [(scene.book_dir / n).read_bytes() for n in names]
    assert sum(1 for d in datas if uid_of(d) == "c0") == 2, names
    check_mirror_by_href(scene.ks, s, scene.book, scene.book_dir, ".vcf")
    before = checks.snapshot(scene.ks)
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_unchanged(before, checks.snapshot(scene.ks))


# -- redirects in the middle of a sync -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["listing", "multiget", "put"])
@pytest.mark.parametrize("where", ["same-host", "other-host"])
def test_redirect_mid_sync(scene, kind, where):
    """test_tls.py covers redirects during discovery; here a REPORT or PUT of a sync is
    redirected. ksync does not follow redirects there (a sync request is only sent to the
    collection's own URL): it reports the collection, and the next run converges."""
    def location(seen):
        base = scene.front.url_for(seen.path) if where == "same-host" else (
            "http://127.0.0.2:%d%s" % (scene.front.port, seen.path))
        return Reply(307, [("Location", base + "?moved")], b"moved\n")

    pred = on(kind, scene.book) if kind != "put" else (
        lambda s: s.method == "PUT" and "/%s/" % BOOK in s.path)
    scene.faults.add(pred, location)
    r = scene.ks.run(timeout=RUN_TIMEOUT)
    assert scene.faults.hits, describe(r)
    assert r.rc != 0, describe(r)
    assert re.search(r"HTTP 307", r.stderr), describe(r)
    assert not any(s.path.endswith("?moved") for s in scene.front.seen())
    scene.check_nothing_lost()
    scene.check_other_synced()
    scene.converge()


# -- the daemon: Retry-After and backoff ---------------------------------------------------------

def _account_status(d):
    import json
    r = d.ctl("status", "--json")
    assert r.rc == 0, r
    return json.loads(r.stdout)["accounts"][0]


@pytest.mark.parametrize("retry_after", [1, 999999])
def test_daemon_retry_after(radicale, ks, retry_after):
    """ksyncd honours a 503's Retry-After: 1 s means the next run about 1 s later (not the
    30 s first backoff step), a second failure in a row waits the 30 s backoff step, and a
    huge Retry-After is capped at an hour."""
    faults = Faults()
    front = Front(backend=radicale, route=faults)
    d = Daemon(ks)
    times = []
    try:
        book = radicale.make_addressbook(BOOK, "People")
        radicale.put(book + "c0.vcf", card("c0", "Person 0"))
        ks.add_account(ACCOUNT, radicale, url=front.url)
        faults.add(lambda s: times.append(time.monotonic()) or True,
                   status_reply(503, retry_after), which="every")
        d.start()
        if retry_after == 1:
            def second_run():
                gaps = [b - a for a, b in zip(times, times[1:])]
                return [g for g in gaps if g > 0.5]
            gaps = wait_until(second_run, 30, "a second run")
            assert 0.9 <= gaps[0] <= 5, gaps
            a = wait_until(lambda: (lambda s: s["last_result"] == "failed" and s["retry_in"]
                               and s["retry_in"] > 1 and s)(_account_status(d)), 30,
                      "the backoff after the second failure")
            assert 25 <= a["retry_in"] <= 30, a
        else:
            a = wait_until(lambda: (lambda s: s["last_result"] == "failed" and s)(
                _account_status(d)), 60, "the failed first run")
            assert a["state"] == "backoff", a
            assert 3590 <= a["retry_in"] <= 3600, a
            assert re.search(r"HTTP 503 Service Unavailable, retry after 3600 s",
                             d.log_text()), d.log_text()
    finally:
        d.stop()
        front.stop()
