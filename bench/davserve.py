#!/usr/bin/python3
"""A minimal streaming CalDAV/CardDAV responder: the fixture of the scale bench.

This is a benchmark fixture, not a test double: it answers exactly what a sync client asks
for when it has nothing to be careful about (no authentication, no locking, no quotas, no
validation of what is PUT), so that the client's own cost can be measured at sizes no real
server here can serve in bench time. Correctness is tested against real servers, never
against this.

One principal /user/ with the home sets /user/contacts/ and /user/calendars/, holding one
address book 'addressbook' of --contacts vCards and one calendar 'calendar' of --events
events (each left out when its count is 0). Items are generated on demand from a small pool
of templates made by tests/integration/ksynctest/gen.py (each template's UID replaced by the
item's own), so memory does not grow with the collection: an item exists as its index until
someone PUTs or DELETEs it, and only those changes are held (with one line per change in the
sync log).

Answers:
  PROPFIND   current-user-principal, home sets, home listings (resourcetype, displayname,
             sync-token, getctag, supported-report-set, current-user-privilege-set,
             supported-calendar-component-set), a collection's members at Depth 1
             (getetag), one item at Depth 0;
  REPORT     sync-collection (RFC 6578) with tokens; an empty or unknown-but-well-formed
             token gets the full listing, never truncated (no 507); a token from the future
             or of another collection gets valid-sync-token;
             addressbook-multiget / calendar-multiget;
  GET, HEAD, PUT (If-Match, If-None-Match: *), DELETE, OPTIONS.
Listings and multiget answers are written as they are generated, with chunked encoding.

GET /.bench/stats answers {"requests": N, "methods": {...}} (this request not counted).

    /usr/bin/python3 bench/davserve.py --port 8080 --contacts 100000 --events 0
"""

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from ksynctest import gen  # noqa: E402

PRINCIPAL = "/user/"
HOMES = {"contacts": "/user/contacts/", "events": "/user/calendars/"}
COLLECTION_NAMES = {"contacts": "addressbook", "events": "calendar"}
TEMPLATES = 1000
CHUNK = 64 * 1024
TOKEN_PREFIX = "http://ksync.bench/sync/"

NS = {"DAV:": "d", "urn:ietf:params:xml:ns:caldav": "c",
      "urn:ietf:params:xml:ns:carddav": "a", "http://calendarserver.org/ns/": "cs",
      "http://apple.com/ns/ical/": "i"}
XMLNS = " ".join(f'xmlns:{p}="{u}"' for u, p in NS.items())
STATUS_200 = "<d:status>HTTP/1.1 200 OK</d:status>"
STATUS_404 = "<d:status>HTTP/1.1 404 Not Found</d:status>"


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_escape_bytes(b):
    return b.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")


def uid_for(kind, i):
    """The UID (and file name) of item i: a third look like gen's readable UIDs, the rest like
    UUIDs whose last group is the index, so that a name maps back to its index without a
    table."""
    k = "contact" if kind == "contacts" else "event"
    if i % 3 == 0:
        return f"scale-{k}-{i:07d}@ksync.example"
    h = hashlib.md5(f"{k}:{i}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{i:012x}"


READABLE = re.compile(r"scale-(contact|event)-(\d{7})@ksync\.example")
UUIDLIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-([0-9a-f]{12})")


def index_for(kind, name):
    """The index of the generated item named name, or None."""
    m = READABLE.fullmatch(name) or UUIDLIKE.fullmatch(name)
    if not m:
        return None
    i = int(m.group(m.lastindex), 10 if m.re is READABLE else 16)
    return i if uid_for(kind, i) == name else None


class Collection:
    """One collection of n generated items plus the changes made to it since."""

    def __init__(self, kind, n):
        self.kind = kind
        self.n = n
        self.name = COLLECTION_NAMES[kind]
        self.href = HOMES[kind] + self.name + "/"
        self.ext = ".vcf" if kind == "contacts" else ".ics"
        self.ctype = ("text/vcard" if kind == "contacts" else "text/calendar") + \
            "; charset=utf-8"
        items = gen.contacts(TEMPLATES) if kind == "contacts" else gen.events(TEMPLATES)
        self.templates = list(items.items())
        self.state = 0
        self.log = []          # [(state, name)], one per change
        self.changed = {}      # name -> (etag, bytes) of items PUT since the start
        self.deleted = set()   # names of generated items deleted
        self.lock = threading.Lock()

    @property
    def token(self):
        return f"{TOKEN_PREFIX}{self.name}/{self.state}"

    def base(self, i):
        tuid, data = self.templates[i % len(self.templates)]
        return data.replace(tuid.encode(), uid_for(self.kind, i).encode())

    def get(self, name):
        """(etag, bytes) of the item with that file name, or None."""
        got = self.changed.get(name)
        if got is not None:
            return got
        if name in self.deleted or not name.endswith(self.ext):
            return None
        i = index_for(self.kind, name[:-len(self.ext)])
        if i is None or i >= self.n:
            return None
        return f'"g{i:x}"', self.base(i)

    def etag(self, name):
        got = self.changed.get(name)
        if got is not None:
            return got[0]
        return self.get(name)[0]

    def names(self):
        """File names of every member, in a fixed order; generated ones without generating
        them."""
        for i in range(self.n):
            name = uid_for(self.kind, i) + self.ext
            if name not in self.deleted:
                yield name
        for name in list(self.changed):
            if index_for(self.kind, name[:-len(self.ext)]) is None or \
                    index_for(self.kind, name[:-len(self.ext)]) >= self.n:
                yield name

    def member_etag(self, name):
        """The etag of a member listed by names() (generated ones computed cheaply)."""
        got = self.changed.get(name)
        if got is not None:
            return got[0]
        return f'"g{index_for(self.kind, name[:-len(self.ext)]):x}"'

    def since(self, state):
        """Names changed or deleted after state."""
        return sorted({name for s, name in self.log if s > state})

    def put(self, name, data, if_match, if_none_match):
        """(status, etag) of a PUT."""
        with self.lock:
            cur = self.get(name)
            if if_none_match == "*" and cur is not None:
                return 412, None
            if if_match is not None and (cur is None or
                                         (if_match != "*" and if_match != cur[0])):
                return 412, None
            self.state += 1
            etag = f'"p{self.state}-{hashlib.md5(data).hexdigest()[:12]}"'
            self.changed[name] = (etag, data)
            self.deleted.discard(name)
            self.log.append((self.state, name))
            return (201 if cur is None else 204), etag

    def delete(self, name, if_match):
        with self.lock:
            cur = self.get(name)
            if cur is None:
                return 404
            if if_match is not None and if_match != "*" and if_match != cur[0]:
                return 412
            self.state += 1
            self.changed.pop(name, None)
            self.deleted.add(name)
            self.log.append((self.state, name))
            return 204


class Store:
    def __init__(self, contacts, events):
        self.colls = {}
        for kind, n in (("contacts", contacts), ("events", events)):
            if n > 0:
                c = Collection(kind, n)
                self.colls[c.href] = c
        self.requests = 0
        self.methods = {}
        self.lock = threading.Lock()

    def count(self, method):
        with self.lock:
            self.requests += 1
            self.methods[method] = self.methods.get(method, 0) + 1

    def locate(self, path):
        """(collection, item name or None) for a path inside a collection, else (None, None)."""
        for href, c in self.colls.items():
            if path == href or path == href[:-1]:
                return c, None
            if path.startswith(href) and "/" not in path[len(href):]:
                return c, path[len(href):]
        return None, None


PROP_RE = re.compile(r"<(?:([\w.-]+):)?([\w.-]+)\s*/?>")


def requested_props(body):
    """[(namespace, name)] inside <prop> of a PROPFIND body; None for allprop or no body."""
    m = re.search(r"<(?:[\w.-]+:)?prop\s*>(.*?)</(?:[\w.-]+:)?prop\s*>", body, re.S)
    if not m:
        return None
    prefixes = dict(re.findall(r'xmlns:([\w.-]+)="([^"]*)"', body))
    default = re.search(r'xmlns="([^"]*)"', body)
    out = []
    for prefix, name in PROP_RE.findall(m.group(1)):
        ns = prefixes.get(prefix) if prefix else (default.group(1) if default else "DAV:")
        out.append((ns, name))
    return out


def propstats(known, asked):
    """<propstat> elements: the asked properties found in known {(ns, name): inner xml} with
    200, the others with 404."""
    if asked is None:
        asked = list(known)
    found, missing = [], []
    for ns, name in asked:
        p = NS.get(ns)
        if (ns, name) in known:
            found.append(f"<{p}:{name}>{known[(ns, name)]}</{p}:{name}>")
        elif p:
            missing.append(f"<{p}:{name}/>")
        else:
            missing.append(f'<x:{name} xmlns:x="{xml_escape(ns or "")}"/>')
    out = ""
    if found:
        out += f"<d:propstat><d:prop>{''.join(found)}</d:prop>{STATUS_200}</d:propstat>"
    if missing:
        out += f"<d:propstat><d:prop>{''.join(missing)}</d:prop>{STATUS_404}</d:propstat>"
    return out


D, C, A, CS, I = ("DAV:", "urn:ietf:params:xml:ns:caldav", "urn:ietf:params:xml:ns:carddav",
                  "http://calendarserver.org/ns/", "http://apple.com/ns/ical/")
PRIVS = ("<d:privilege><d:read/></d:privilege><d:privilege><d:write/></d:privilege>"
         "<d:privilege><d:write-content/></d:privilege><d:privilege><d:bind/></d:privilege>"
         "<d:privilege><d:unbind/></d:privilege>")


def plain_props(rt=""):
    return {(D, "resourcetype"): rt, (D, "current-user-principal"):
            f"<d:href>{PRINCIPAL}</d:href>"}


def principal_props():
    p = plain_props("<d:collection/><d:principal/>")
    p[(C, "calendar-home-set")] = f"<d:href>{HOMES['events']}</d:href>"
    p[(A, "addressbook-home-set")] = f"<d:href>{HOMES['contacts']}</d:href>"
    p[(D, "displayname")] = "user"
    return p


def collection_props(c):
    rt = "<d:collection/>" + ("<a:addressbook/>" if c.kind == "contacts" else "<c:calendar/>")
    reports = ["d:sync-collection", "a:addressbook-multiget" if c.kind == "contacts"
               else "c:calendar-multiget"]
    p = plain_props(rt)
    p.update({
        (D, "displayname"): c.name.capitalize(),
        (D, "sync-token"): c.token,
        (CS, "getctag"): c.token,
        (D, "supported-report-set"): "".join(f"<d:supported-report><d:report><{r}/></d:report>"
                                             f"</d:supported-report>" for r in reports),
        (D, "current-user-privilege-set"): PRIVS,
    })
    if c.kind == "events":
        p[(C, "supported-calendar-component-set")] = '<c:comp name="VEVENT"/>'
        p[(I, "calendar-color")] = "#3a87adff"
    return p


def response(href, props):
    return f"<d:response><d:href>{xml_escape(href)}</d:href>{props}</d:response>"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ksync-bench-davserve"
    store = None

    def log_message(self, fmt, *args):
        pass

    # -- plumbing --------------------------------------------------------------------------------

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def stream(self, status, pieces, headers=()):
        """Send the str pieces with chunked encoding, in chunks of about CHUNK bytes."""
        self.send_response(status)
        self.send_header("Content-Type", "application/xml; charset=utf-8")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        buf, size = [], 0
        w = self.wfile.write
        for p in pieces:
            b = p.encode() if isinstance(p, str) else p
            buf.append(b)
            size += len(b)
            if size >= CHUNK:
                data = b"".join(buf)
                w(b"%x\r\n%s\r\n" % (len(data), data))
                buf, size = [], 0
        if buf:
            data = b"".join(buf)
            w(b"%x\r\n%s\r\n" % (len(data), data))
        w(b"0\r\n\r\n")

    def multistatus(self, pieces, token=None):
        yield f'<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus {XMLNS}>'
        yield from pieces
        if token is not None:
            yield f"<d:sync-token>{xml_escape(token)}</d:sync-token>"
        yield "</d:multistatus>\n"

    def dav_path(self):
        return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True

    # -- methods ---------------------------------------------------------------------------------

    def do_GET(self):
        path = self.dav_path()
        if path == "/.bench/stats":
            s = self.store
            with s.lock:
                data = json.dumps({"requests": s.requests, "methods": s.methods}).encode()
            return self.reply(200, data, [("Content-Type", "application/json")])
        self.store.count(self.command)
        c, name = self.store.locate(path)
        got = c.get(name) if c and name else None
        if got is None:
            return self.reply(404)
        self.reply(200, got[1], [("ETag", got[0]), ("Content-Type", c.ctype)])

    do_HEAD = do_GET

    def do_OPTIONS(self):
        self.store.count(self.command)
        self.reply(200, headers=[("DAV", "1, 3, calendar-access, addressbook"),
                                 ("Allow", "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, "
                                           "REPORT")])

    def do_PUT(self):
        self.store.count(self.command)
        data = self.body()
        c, name = self.store.locate(self.dav_path())
        if not c or not name:
            return self.reply(409)
        status, etag = c.put(name, data, self.headers.get("If-Match"),
                             self.headers.get("If-None-Match"))
        self.reply(status, headers=[("ETag", etag)] if etag else ())

    def do_DELETE(self):
        self.store.count(self.command)
        c, name = self.store.locate(self.dav_path())
        if not c or not name:
            return self.reply(403)
        self.reply(c.delete(name, self.headers.get("If-Match")))

    def do_PROPFIND(self):
        self.store.count(self.command)
        body = self.body().decode("utf-8", "replace")
        asked = requested_props(body)
        depth = self.headers.get("Depth", "1")
        path = self.dav_path()
        if not path.endswith("/") and self.store.locate(path)[1] is None:
            path += "/"
        s = self.store
        if path == "/":
            return self.stream(207, self.multistatus([response("/", propstats(
                plain_props("<d:collection/>"), asked))]))
        if path == PRINCIPAL:
            out = [response(PRINCIPAL, propstats(principal_props(), asked))]
            if depth != "0":
                out += [response(h, propstats(plain_props("<d:collection/>"), asked))
                        for h in sorted(set(HOMES.values()))]
            return self.stream(207, self.multistatus(out))
        if path in HOMES.values():
            out = [response(path, propstats(plain_props("<d:collection/>"), asked))]
            if depth != "0":
                out += [response(c.href, propstats(collection_props(c), asked))
                        for c in s.colls.values() if c.href.startswith(path)]
            return self.stream(207, self.multistatus(out))
        c, name = s.locate(path)
        if c is None:
            return self.reply(404)
        if name:
            got = c.get(name)
            if got is None:
                return self.reply(404)
            return self.stream(207, self.multistatus([response(c.href + name, propstats(
                {(D, "getetag"): got[0], (D, "resourcetype"): "",
                 (D, "getcontenttype"): c.ctype}, asked))]))

        def members():
            yield response(c.href, propstats(collection_props(c), asked))
            if depth == "0":
                return
            wanted = asked if asked is not None else [(D, "getetag"), (D, "resourcetype")]
            simple = all(p in ((D, "getetag"), (D, "resourcetype")) for p in wanted)
            for n in c.names():
                etag = c.member_etag(n)
                if simple:
                    inner = "".join("<d:getetag>%s</d:getetag>" % etag if p[1] == "getetag"
                                    else "<d:resourcetype/>" for p in wanted)
                    yield (f"<d:response><d:href>{c.href}{n}</d:href><d:propstat><d:prop>"
                           f"{inner}</d:prop>{STATUS_200}</d:propstat></d:response>")
                else:
                    yield response(c.href + n, propstats(
                        {(D, "getetag"): etag, (D, "resourcetype"): "",
                         (D, "getcontenttype"): c.ctype}, wanted))
        self.stream(207, self.multistatus(members()))

    def do_REPORT(self):
        self.store.count(self.command)
        body = self.body().decode("utf-8", "replace")
        c, name = self.store.locate(self.dav_path())
        if c is None or name:
            return self.reply(404)
        root = re.search(r"<(?:[\w.-]+:)?([\w-]+)[\s>]", body[body.find("?>") + 2
                                                               if "?>" in body else 0:])
        kind = root.group(1) if root else ""
        if kind == "sync-collection":
            return self.sync_collection(c, body)
        if kind in ("addressbook-multiget", "calendar-multiget"):
            return self.multiget(c, body)
        self.reply(403, b"<?xml version='1.0'?><d:error xmlns:d='DAV:'>"
                        b"<d:supported-report/></d:error>", [("Content-Type", "application/xml")])

    def sync_collection(self, c, body):
        m = re.search(r"<(?:[\w.-]+:)?sync-token\s*>([^<]*)<", body)
        token = (m.group(1).strip() if m else "").replace("&amp;", "&")
        with c.lock:
            state, now = None, c.state
            if token:
                prefix = f"{TOKEN_PREFIX}{c.name}/"
                tail = token[len(prefix):] if token.startswith(prefix) else ""
                if not tail.isdigit() or int(tail) > now:
                    return self.reply(403, b'<?xml version="1.0" encoding="utf-8"?>\n'
                                           b'<d:error xmlns:d="DAV:"><d:valid-sync-token/>'
                                           b'</d:error>\n',
                                      [("Content-Type", "application/xml; charset=utf-8")])
                state = int(tail)
            changed = c.since(state) if state is not None else None
            token = c.token

        def pieces():
            if changed is None:
                for n in c.names():
                    yield (f"<d:response><d:href>{c.href}{n}</d:href><d:propstat><d:prop>"
                           f"<d:getetag>{c.member_etag(n)}</d:getetag></d:prop>{STATUS_200}"
                           f"</d:propstat></d:response>")
                return
            for n in changed:
                got = c.get(n)
                if got is None:
                    yield f"<d:response><d:href>{c.href}{n}</d:href>{STATUS_404}</d:response>"
                else:
                    yield (f"<d:response><d:href>{c.href}{n}</d:href><d:propstat><d:prop>"
                           f"<d:getetag>{got[0]}</d:getetag></d:prop>{STATUS_200}"
                           f"</d:propstat></d:response>")
        self.stream(207, self.multistatus(pieces(), token))

    def multiget(self, c, body):
        hrefs = [urllib.parse.unquote(urllib.parse.urlsplit(h.strip()).path)
                 for h in re.findall(r"<(?:[\w.-]+:)?href\s*>([^<]*)<", body)]
        tag = "a:address-data" if c.kind == "contacts" else "c:calendar-data"

        def pieces():
            for h in hrefs:
                got = None
                if h.startswith(c.href) and "/" not in h[len(c.href):]:
                    got = c.get(h[len(c.href):])
                if got is None:
                    yield f"<d:response><d:href>{xml_escape(h)}</d:href>{STATUS_404}</d:response>"
                    continue
                yield (f"<d:response><d:href>{xml_escape(h)}</d:href><d:propstat><d:prop>"
                       f"<d:getetag>{got[0]}</d:getetag><{tag}>").encode()
                yield xml_escape_bytes(got[1])
                yield f"</{tag}></d:prop>{STATUS_200}</d:propstat></d:response>".encode()
        self.stream(207, self.multistatus(pieces()))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    p.add_argument("--contacts", type=int, default=10000)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--port-file", help="write the port here once listening")
    a = p.parse_args(argv)
    Handler.store = Store(a.contacts, a.events)
    srv = Server(("127.0.0.1", a.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{srv.server_address[1]}\n")
        os.replace(tmp, a.port_file)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
