"""Real DAV servers on free loopback ports, with fresh storage: Radicale, Xandikos, DAViCal and
SabreDAV, all from Debian packages.

Each server runs as a child process in its own session, logs to a file in its directory, and is
stopped by DavServer.stop(). Requests are counted from the server's own log: Radicale logs
"<METHOD> request for '<path>' received from ..." at info level when a request arrives; Xandikos
(aiohttp) writes one "aiohttp.access" line per request once the response is sent. DAViCal and
SabreDAV run under PHP's built-in web server (`php -S`), whose router scripts (ours, in
tests/fixtures/) append "<METHOD> <uri>" to an access log when a request arrives.

DAViCal keeps everything in PostgreSQL: each server gets its own cluster, a copy of a template
made once per test session (initdb, DAViCal's create-database.sh, the test user), listening only
on a unix socket in a temporary directory. SabreDAV 1.8 keeps its data in a fresh SQLite file.
"""

import atexit
import fcntl
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import requests

RADICALE = "/usr/bin/radicale"
XANDIKOS = "/usr/bin/xandikos"
PHP = "/usr/bin/php"
DAVICAL_HTDOCS = "/usr/share/davical/htdocs"
DAVICAL_CREATE_DB = "/usr/share/davical/dba/create-database.sh"
SABRE_AUTOLOAD = "/usr/share/php/Sabre/autoload.php"
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "fixtures")
DAVICAL_ROUTER = os.path.join(FIXTURES, "davical", "router.php")
SABRE_SERVER = os.path.join(FIXTURES, "sabredav", "server.php")
# `php -S` answers one request at a time per process; ksync keeps several in flight.
PHP_WORKERS = 4
# Parallel uploads when seeding a server that has no storage the tests can write directly.
SEED_THREADS = 4
USERNAME = "user"
PASSWORD = "s3cr3t-Pässword"

START_TIMEOUT = 20.0
HTTP_TIMEOUT = 60.0
LOG_SETTLE_TIMEOUT = 10.0

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
APPLE = "http://apple.com/ns/ical/"
CS = "http://calendarserver.org/ns/"

MARKER_PREFIX = "/.ksynctest-log-marker-"


class ServerError(RuntimeError):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _q(tag):
    ns, _, name = tag.partition(":")
    return "{%s}%s" % ({"D": DAV, "C": CALDAV, "A": CARDDAV, "I": APPLE, "CS": CS}[ns], name)


def _xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def href_path(href):
    """Decoded path of an href (absolute URL or path)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(href).path)


def parse_multistatus(body):
    """{decoded href path: {prop tag '{ns}name': Element}} for the 200 propstats of a 207 body."""
    root = ET.fromstring(body)
    out = {}
    for resp in root.findall(_q("D:response")):
        href = href_path(resp.findtext(_q("D:href")))
        props = {}
        for ps in resp.findall(_q("D:propstat")):
            status = ps.findtext(_q("D:status")) or ""
            if " 200 " not in status:
                continue
            for prop in ps.find(_q("D:prop")):
                props[prop.tag] = prop
        out[href] = props
    return out


class DavServer:
    """A running DAV server. See start_radicale(), start_xandikos(), start_davical() and
    start_sabredav()."""

    def __init__(self, kind, port, root, storage, log_path, proc, username, password,
                 principal, calendar_home, addressbook_home):
        self.kind = kind
        self.port = port
        self.url = "http://127.0.0.1:%d/" % port
        self.root = root
        self.storage = storage
        self.log_path = log_path
        self.proc = proc
        self.username = username
        self.password = password
        self.principal = principal
        self.calendar_home = calendar_home
        self.addressbook_home = addressbook_home
        self.session = requests.Session()
        self.session.trust_env = False
        if password is not None:
            # UTF-8, as ksync (libcurl) sends it; requests would encode a str as Latin-1.
            self.session.auth = (username.encode("utf-8"), password.encode("utf-8"))
        self._markers = 0
        self.prefix = ""
        self.rights_path = None
        # DAViCal and SabreDAV: the router's access log (one "METHOD URI" line per request).
        self.access_log = None
        # DAViCal: its PostgreSQL cluster, stopped and removed with the server.
        self.postgres = None
        self._stopped = False

    def __repr__(self):
        return "<DavServer %s %s>" % (self.kind, self.url)

    def discover(self):
        """(principal, calendar home, address book home) as the server reports them, starting
        from current-user-principal on the root."""
        root = self.propfind(urllib.parse.urlsplit(self.url).path,
                             ["D:current-user-principal"])
        principal = None
        for props in root.values():
            el = props.get(_q("D:current-user-principal"))
            if el is not None and el.findtext(_q("D:href")):
                principal = href_path(el.findtext(_q("D:href")))
        if principal is None:
            raise ServerError("%s reports no current-user-principal on /" % self.kind)
        got = self.propfind(principal, ["C:calendar-home-set", "A:addressbook-home-set"])
        props = got[principal]
        homes = []
        for tag in ("C:calendar-home-set", "A:addressbook-home-set"):
            el = props.get(_q(tag))
            if el is None or not el.findtext(_q("D:href")):
                raise ServerError("%s reports no %s on %s" % (self.kind, tag, principal))
            homes.append(href_path(el.findtext(_q("D:href"))))
        return principal, homes[0], homes[1]

    @property
    def home_sets(self):
        """Distinct home-set paths (calendar and address book)."""
        return sorted({self.calendar_home, self.addressbook_home})

    # -- HTTP ---------------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, expect=None):
        resp = self.session.request(method, urllib.parse.urljoin(self.url, path), data=body,
                                    headers=headers or {}, timeout=HTTP_TIMEOUT,
                                    allow_redirects=False)
        if expect is not None and resp.status_code not in expect:
            raise ServerError("%s %s on %s: HTTP %d: %s" % (method, path, self.kind,
                                                             resp.status_code, resp.text[:500]))
        return resp

    def propfind(self, path, props, depth="0"):
        """PROPFIND with the given prop tags ('D:displayname', ...); parsed multistatus."""
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                '<D:propfind xmlns:D="DAV:" xmlns:C="%s" xmlns:A="%s" xmlns:I="%s" xmlns:CS="%s">'
                '<D:prop>%s</D:prop></D:propfind>') % (
                    CALDAV, CARDDAV, APPLE, CS, "".join("<%s/>" % p for p in props))
        resp = self.request("PROPFIND", path, body.encode(),
                            {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
                            expect=(207,))
        return parse_multistatus(resp.content)

    def make_addressbook(self, name, displayname=None):
        href = self.addressbook_home + name + "/"
        props = ("<D:resourcetype><D:collection/><A:addressbook/></D:resourcetype>")
        if displayname is not None:
            props += "<D:displayname>%s</D:displayname>" % _xml_escape(displayname)
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                '<D:mkcol xmlns:D="DAV:" xmlns:A="%s"><D:set><D:prop>%s</D:prop></D:set>'
                '</D:mkcol>') % (CARDDAV, props)
        self.request("MKCOL", href, body.encode(),
                     {"Content-Type": "application/xml; charset=utf-8"}, expect=(201,))
        return href

    def make_calendar(self, name, displayname=None, components=("VEVENT", "VTODO"), color=None):
        """MKCALENDAR. Xandikos has a fixed component set, so `components` is sent to every
        server but Xandikos."""
        href = self.calendar_home + name + "/"
        props = ""
        if displayname is not None:
            props += "<D:displayname>%s</D:displayname>" % _xml_escape(displayname)
        if color is not None:
            props += "<I:calendar-color>%s</I:calendar-color>" % _xml_escape(color)
        if components and self.kind != "xandikos":
            props += ("<C:supported-calendar-component-set>%s"
                      "</C:supported-calendar-component-set>") % "".join(
                          '<C:comp name="%s"/>' % c for c in components)
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                '<C:mkcalendar xmlns:D="DAV:" xmlns:C="%s" xmlns:I="%s"><D:set><D:prop>%s'
                '</D:prop></D:set></C:mkcalendar>') % (CALDAV, APPLE, props)
        self.request("MKCALENDAR", href, body.encode(),
                     {"Content-Type": "application/xml; charset=utf-8"}, expect=(201,))
        if self.kind == "xandikos" and color is not None:
            got = self.propfind(href, ["I:calendar-color"]).get(href, {})
            if _q("I:calendar-color") not in got:
                self.proppatch(href, {"I:calendar-color": color})
        return href

    def proppatch(self, href, props):
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                '<D:propertyupdate xmlns:D="DAV:" xmlns:I="%s" xmlns:C="%s"><D:set><D:prop>%s'
                '</D:prop></D:set></D:propertyupdate>') % (
                    APPLE, CALDAV, "".join("<%s>%s</%s>" % (k, _xml_escape(v), k)
                                           for k, v in props.items()))
        resp = self.request("PROPPATCH", href, body.encode(),
                            {"Content-Type": "application/xml; charset=utf-8"},
                            expect=(200, 207))
        if resp.status_code == 207:
            for ps in ET.fromstring(resp.content).iter(_q("D:propstat")):
                status = ps.findtext(_q("D:status")) or ""
                if " 200 " not in status:
                    raise ServerError("PROPPATCH %s on %s: %s" % (href, self.kind, status))

    def put(self, item_href, data, if_match=None, if_none_match=None):
        """PUT an item; returns its ETag (asked for with PROPFIND when the reply has none)."""
        headers = {"Content-Type": _content_type(item_href, data)}
        if if_match is not None:
            headers["If-Match"] = if_match
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        resp = self.request("PUT", item_href, data, headers, expect=(200, 201, 204))
        etag = resp.headers.get("ETag")
        if etag:
            return etag
        return self.etag(item_href)

    def etag(self, item_href):
        got = self.propfind(item_href, ["D:getetag"])
        return got[href_path(item_href)][_q("D:getetag")].text

    def delete(self, item_href, if_match=None):
        headers = {"If-Match": if_match} if if_match else {}
        self.request("DELETE", item_href, headers=headers, expect=(200, 204))

    def get(self, item_href):
        return self.request("GET", item_href, expect=(200,)).content

    def list(self, collection_href):
        """{decoded item href path: etag} of a collection (PROPFIND Depth 1)."""
        coll = href_path(collection_href)
        got = self.propfind(collection_href, ["D:getetag", "D:resourcetype"], depth="1")
        out = {}
        for href, props in got.items():
            if href.rstrip("/") == coll.rstrip("/"):
                continue
            rt = props.get(_q("D:resourcetype"))
            if rt is not None and rt.find(_q("D:collection")) is not None:
                continue
            etag = props.get(_q("D:getetag"))
            out[href] = etag.text if etag is not None else None
        return out

    def collections(self):
        """{href: {'kind', 'displayname', 'color', 'components', 'sync_token', 'ctag'}} of every
        calendar and address book in the home sets, as the server reports them."""
        out = {}
        props = ["D:resourcetype", "D:displayname", "I:calendar-color",
                 "C:supported-calendar-component-set", "D:sync-token", "CS:getctag"]
        for home in self.home_sets:
            for href, p in self.propfind(home, props, depth="1").items():
                rt = p.get(_q("D:resourcetype"))
                if rt is None:
                    continue
                if rt.find(_q("C:calendar")) is not None:
                    kind = "calendar"
                elif rt.find(_q("A:addressbook")) is not None:
                    kind = "addressbook"
                else:
                    continue
                comps = p.get(_q("C:supported-calendar-component-set"))
                text = lambda tag: p[tag].text if tag in p else None  # noqa: E731
                out[href] = {
                    "kind": kind,
                    "displayname": text(_q("D:displayname")),
                    "color": text(_q("I:calendar-color")),
                    "components": (sorted(c.get("name") for c in comps)
                                   if comps is not None and kind == "calendar" else None),
                    "sync_token": text(_q("D:sync-token")),
                    "ctag": text(_q("CS:getctag")),
                }
        return out

    def contents(self, collection_href):
        """{decoded item href path: (etag, bytes)} of every item of a collection, with the bytes
        exactly as the server sends them (CRLF kept).

        Radicale, DAViCal: one multiget REPORT whose raw body is cut without an XML parser (a
        parser would turn CRLF into LF). Xandikos: read from its git storage, which it serves
        verbatim (its per-item cost over HTTP grows with the collection). SabreDAV: read from its
        SQLite database, which GET serves verbatim; its REPORT answers drop every CR from
        calendar-data. The hrefs and etags are checked against a PROPFIND listing, read again
        when a client (ksyncd running in the background) changed the collection in between."""
        for attempt in range(5):
            listed = self.list(collection_href)
            if self.kind == "xandikos":
                out = self._xandikos_contents(collection_href)
            elif self.kind == "sabredav":
                out = self._sabredav_contents(collection_href)
            else:
                out = self._multiget_raw(collection_href, sorted(listed))
            if {h: e for h, (e, _) in out.items()} == listed:
                return out
            time.sleep(0.2)
        raise ServerError("%s: contents of %s disagree with its PROPFIND listing" % (
            self.kind, collection_href))

    def _multiget_raw(self, collection_href, hrefs):
        if not hrefs:
            return {}
        is_book = hrefs[0].endswith(".vcf")
        ns, report, data = ((CARDDAV, "addressbook-multiget", "address-data") if is_book
                            else (CALDAV, "calendar-multiget", "calendar-data"))
        body = ('<?xml version="1.0" encoding="utf-8"?><X:%s xmlns:D="DAV:" xmlns:X="%s">'
                '<D:prop><D:getetag/><X:%s/></D:prop>%s</X:%s>') % (
                    report, ns, data,
                    "".join("<D:href>%s</D:href>" % _xml_escape(urllib.parse.quote(h))
                            for h in hrefs), report)
        resp = self.request("REPORT", collection_href, body.encode(),
                            {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                            expect=(207,))
        raw = resp.content
        out = {}
        for block in re.findall(rb"<(?:[\w-]+:)?response\b.*?</(?:[\w-]+:)?response>", raw,
                                re.S):
            href = re.search(rb"<(?:[\w-]+:)?href>(.*?)</", block, re.S)
            etag = re.search(rb"<(?:[\w-]+:)?getetag>(.*?)</", block, re.S)
            content = re.search(rb"<(?:[\w-]+:)?%s[^>]*>(.*?)</(?:[\w-]+:)?%s>" % (
                data.encode(), data.encode()), block, re.S)
            if not (href and etag and content):
                raise ServerError("%s: incomplete multiget response %r" % (self.kind,
                                                                          block[:300]))
            out[href_path(_xml_unescape(href.group(1)).decode())] = (
                _xml_unescape(etag.group(1)).decode(), _xml_unescape(content.group(1)))
        return out

    def _xandikos_contents(self, collection_href):
        from dulwich.index import Index
        from dulwich.repo import Repo

        folder = self._collection_dir(collection_href)
        repo = Repo(folder)
        base = href_path(collection_href)
        out = {}
        for name, entry in Index(repo.index_path()).items():
            fname = name.decode("utf-8")
            if fname == ".xandikos":
                continue
            out[base + fname] = ('"%s"' % entry.sha.decode(),
                                 repo.object_store[entry.sha].as_raw_string())
        return out

    def _sabredav_contents(self, collection_href):
        import hashlib
        import sqlite3

        base = href_path(collection_href)
        m = re.match(r"^/(calendars|addressbooks)/([^/]+)/([^/]+)/$", base)
        if not m:
            raise ServerError("%s is no SabreDAV collection path" % base)
        kind, user, uri = m.groups()
        conn = sqlite3.connect("file:%s?mode=ro" % self.storage, uri=True, timeout=30)
        conn.text_factory = bytes
        try:
            if kind == "calendars":
                rows = conn.execute(
                    "SELECT o.uri, o.calendardata, o.etag FROM calendarobjects o JOIN calendars c"
                    " ON o.calendarid = c.id WHERE c.principaluri = ? AND c.uri = ?",
                    ("principals/" + user, uri)).fetchall()
                return {base + u.decode("utf-8"): ('"%s"' % e.decode("ascii"), bytes(data))
                        for u, data, e in rows}
            # A card's ETag is the MD5 of its data (Sabre\CardDAV\Card::getETag).
            rows = conn.execute(
                "SELECT k.uri, k.carddata FROM cards k JOIN addressbooks a"
                " ON k.addressbookid = a.id WHERE a.principaluri = ? AND a.uri = ?",
                ("principals/" + user, uri)).fetchall()
            return {base + u.decode("utf-8"): ('"%s"' % hashlib.md5(bytes(data)).hexdigest(),
                                               bytes(data))
                    for u, data in rows}
        finally:
            conn.close()

    # -- direct storage writes ------------------------------------------------------------------

    def seed(self, href, items):
        """Write items {name: bytes} straight into the collection's storage (file name = name plus
        .vcf/.ics), then check over HTTP that the server serves all of them.
        Returns {name: item href}.

        DAViCal and SabreDAV derive tables from every item they store (DAViCal's calendar_item
        and addressbook_resource, SabreDAV's occurrence range and component type), so they are
        seeded with PUTs, several in parallel, which run exactly their own code."""
        if not items:
            return {}
        files = {name + _extension(data): data for name, data in items.items()}
        if self.kind == "radicale":
            self._seed_radicale(href, files)
        elif self.kind == "xandikos":
            self._seed_xandikos(href, files)
        else:
            self._seed_put(href, files)
        hrefs = {name: href + name + _extension(data) for name, data in items.items()}
        listed = self.list(href)
        missing = [h for h in hrefs.values() if href_path(h) not in listed]
        if missing:
            raise ServerError("%s does not serve %d of %d seeded items in %s, e.g. %s" % (
                self.kind, len(missing), len(hrefs), href, missing[:3]))
        return hrefs

    def _seed_put(self, href, files):
        from concurrent.futures import ThreadPoolExecutor

        names = sorted(files)
        chunks = [names[i::SEED_THREADS] for i in range(SEED_THREADS)]

        def put_chunk(chunk):
            with requests.Session() as s:
                s.trust_env = False
                s.auth = self.session.auth
                for fname in chunk:
                    data = files[fname]
                    # DAViCal answers 500 to one of two PUTs that bring the same new VTIMEZONE
                    # at once (both insert it into its timezones table: unique violation); the
                    # retry finds the zone stored.
                    for attempt in range(3):
                        resp = s.put(urllib.parse.urljoin(self.url, href + fname), data=data,
                                     headers={"Content-Type": _content_type(fname, data)},
                                     timeout=HTTP_TIMEOUT, allow_redirects=False)
                        if resp.status_code != 500 or self.kind != "davical":
                            break
                    if resp.status_code not in (200, 201, 204):
                        raise ServerError("seeding %s%s on %s: HTTP %d: %s" % (
                            href, fname, self.kind, resp.status_code, resp.text[:500]))

        with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
            for f in [pool.submit(put_chunk, c) for c in chunks if c]:
                f.result()

    def _collection_dir(self, href):
        path = href_path(href)
        if self.prefix and path.startswith(self.prefix + "/"):
            path = path[len(self.prefix):]
        rel = path.strip("/")
        if self.kind == "radicale":
            return os.path.join(self.storage, "collection-root", rel)
        return os.path.join(self.storage, rel)

    def _seed_radicale(self, href, files):
        folder = self._collection_dir(href)
        if not os.path.isfile(os.path.join(folder, ".Radicale.props")):
            raise ServerError("%s is not a Radicale collection" % folder)
        with open(os.path.join(self.storage, ".Radicale.lock"), "w+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            for fname, data in files.items():
                tmp = os.path.join(folder, ".ksynctest-%s.tmp" % uuid.uuid4().hex)
                with open(tmp, "wb") as f:
                    f.write(data)
                os.rename(tmp, os.path.join(folder, fname))

    def _seed_xandikos(self, href, files):
        from dulwich.file import FileLocked, GitFile
        from dulwich.index import Index, index_entry_from_stat, write_index_dict
        from dulwich.objects import Blob
        from dulwich.pack import SHA1Writer
        from dulwich.repo import Repo

        folder = self._collection_dir(href)
        repo = Repo(folder)
        index_path = repo.index_path()
        deadline = time.monotonic() + 10
        while True:
            try:
                lock = GitFile(index_path, "wb")
                break
            except FileLocked:
                if time.monotonic() > deadline:
                    raise ServerError("index of %s stays locked" % folder)
                time.sleep(0.05)
        try:
            index = Index(index_path)
            blobs = []
            for fname, data in files.items():
                path = os.path.join(folder, fname)
                with open(path, "wb") as f:
                    f.write(data)
                blob = Blob.from_string(data)
                blobs.append((blob, None))
                index[fname.encode("utf-8")] = index_entry_from_stat(os.lstat(path), blob.id, 0)
            repo.object_store.add_objects(blobs)
            tree = index.commit(repo.object_store)
            repo.do_commit(("Seed %d items" % len(files)).encode(),
                           committer=b"ksync tests <tests@ksync.example>", tree=tree)
            writer = SHA1Writer(lock)
            write_index_dict(writer, dict(index.items()))
            writer.close()
        except BaseException:
            lock.abort()
            raise

    # -- request counting ------------------------------------------------------------------------

    def _log_requests(self):
        if self.access_log is not None:
            with open(self.access_log, "r", encoding="utf-8", errors="replace") as f:
                return re.findall(r"^\S+ (\S+)$", f.read(), re.M)
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            text = f.read()
        if self.kind == "radicale":
            return re.findall(r"\] (?:\[\w+\] )?(?:INFO: )?\w+ request for '([^']*)'", text)
        return re.findall(r'aiohttp\.access:\S+ \[[^\]]*\] "\S+ (\S+) [^"]*"', text)

    def request_count(self):
        """HTTP requests this server received so far, from its log.

        A marker request is sent first and waited for in the log, so every request whose response
        a client has already received is counted; marker requests are left out of the count."""
        self._markers += 1
        marker = "%s%d-%s" % (MARKER_PREFIX, self._markers, uuid.uuid4().hex[:8])
        with requests.Session() as s:
            s.trust_env = False
            s.get(urllib.parse.urljoin(self.url, marker), timeout=HTTP_TIMEOUT,
                  allow_redirects=False)
        deadline = time.monotonic() + LOG_SETTLE_TIMEOUT
        while True:
            paths = self._log_requests()
            if any(urllib.parse.unquote(p) == marker for p in paths):
                return sum(1 for p in paths if not p.startswith(MARKER_PREFIX))
            if time.monotonic() > deadline:
                raise ServerError("marker request %s never showed up in %s" % (marker,
                                                                              self.log_path))
            time.sleep(0.02)

    def requests_logged(self):
        """Request paths from the log, markers left out, in order."""
        return [p for p in self._log_requests() if not p.startswith(MARKER_PREFIX)]

    def log_text(self):
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    # -- lifetime --------------------------------------------------------------------------------

    def alive(self):
        return self.proc.poll() is None and (self.postgres is None or self.postgres.alive())

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        # The whole process group: `php -S` workers outlive their parent.
        _stop_group(self.proc)
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres.remove()
        self.session.close()


class WebFront:
    """A web site on a free loopback port with the DAV server below `prefix` and RFC 6764
    redirects: /.well-known/caldav and /.well-known/carddav answer 301 to `prefix`/, everything
    else outside `prefix` is a plain web page (PROPFIND there gets 405), so a client can only find
    the DAV tree through the well-known URIs.

    Requests below `prefix` are forwarded to `backend` (a DavServer). With strip=True the prefix
    is removed and sent as X-Script-Name (Radicale); otherwise the path is forwarded as is
    (Xandikos started with route_prefix=prefix)."""

    METHODS = ("GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PROPFIND", "PROPPATCH",
               "REPORT", "MKCOL", "MKCALENDAR", "MOVE", "COPY")

    def __init__(self, backend, prefix="/dav", strip=False):
        import http.client
        import http.server
        import threading

        self.prefix = prefix.rstrip("/")
        self.backend = backend
        self.requests = []
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _reply(self, status, headers=(), body=b""):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _any(self):
                front.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = urllib.parse.urlsplit(self.path).path
                if path.rstrip("/") in ("/.well-known/caldav", "/.well-known/carddav"):
                    return self._reply(301, [("Location", front.prefix + "/")])
                if path != front.prefix and not path.startswith(front.prefix + "/"):
                    if self.command in ("GET", "HEAD"):
                        return self._reply(200, [("Content-Type", "text/html; charset=utf-8")],
                                           b"<html><body>Welcome</body></html>")
                    return self._reply(405, [("Allow", "GET, HEAD")])
                target = self.path
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "keep-alive",
                                                "transfer-encoding")}
                if strip:
                    target = self.path[len(front.prefix):] or "/"
                    headers["X-Script-Name"] = front.prefix
                conn = http.client.HTTPConnection("127.0.0.1", front.backend.port,
                                                  timeout=HTTP_TIMEOUT)
                try:
                    conn.request(self.command, target, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = [(k, v) for k, v in resp.getheaders()
                           if k.lower() not in ("content-length", "connection",
                                                "transfer-encoding", "keep-alive", "server",
                                                "date")]
                    if strip and resp.getheader("Location", "").startswith("/"):
                        out = [(k, front.prefix + v if k.lower() == "location" else v)
                               for k, v in out]
                finally:
                    conn.close()
                self._reply(resp.status, out, data)

        for m in self.METHODS:
            setattr(Handler, "do_" + m, Handler._any)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _xml_unescape(raw):
    def sub(m):
        ent = m.group(1)
        if ent.startswith(b"#x"):
            return chr(int(ent[2:], 16)).encode("utf-8")
        if ent.startswith(b"#"):
            return chr(int(ent[1:])).encode("utf-8")
        return {b"amp": b"&", b"lt": b"<", b"gt": b">", b"quot": b'"', b"apos": b"'"}[ent]
    return re.sub(rb"&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);", sub, raw)


def _extension(data):
    return ".vcf" if data.lstrip().upper().startswith(b"BEGIN:VCARD") else ".ics"


def _content_type(href, data):
    if href.endswith(".vcf") or data.lstrip().upper().startswith(b"BEGIN:VCARD"):
        return "text/vcard; charset=utf-8"
    return "text/calendar; charset=utf-8"


def _server_env(home):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TZ": "UTC",
           "PYTHONUNBUFFERED": "1"}
    return env


def _spawn(argv, log_path, home, port, extra_env=None):
    env = _server_env(home)
    env.update(extra_env or {})
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True, cwd=home)
    finally:
        log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            r = requests.get("http://127.0.0.1:%d/.ksynctest-startup" % port, timeout=2,
                             allow_redirects=False)
            if r.status_code:
                return proc, True
        except (OSError, requests.RequestException):
            time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    raise ServerError("%s did not answer on port %d within %.0fs; log %s" % (
        argv[0], port, START_TIMEOUT, log_path))


# What each kind of server needs installed (Debian packages named in the Makefile).
REQUIRED_FILES = {
    "radicale": [RADICALE],
    "xandikos": [XANDIKOS],
    "davical": [PHP, DAVICAL_HTDOCS + "/caldav.php", DAVICAL_CREATE_DB, DAVICAL_ROUTER],
    "sabredav": [PHP, SABRE_AUTOLOAD, SABRE_SERVER],
}


def _check_installed(kind):
    missing = [p for p in REQUIRED_FILES[kind] if not os.path.exists(p)]
    if missing:
        raise ServerError("%s is not installed: %s missing (run make deps)" % (
            kind, ", ".join(missing)))


def _stop_group(proc, timeout=5):
    """SIGTERM to the process group of `proc` (a session leader), SIGKILL to what is left after
    `timeout` seconds; waits for `proc` itself."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline:
        if not _group_running(proc.pid):
            break
        time.sleep(0.02)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=timeout)


def _group_running(pgid):
    """Whether a process of group `pgid` still runs. Zombies do not count: children that
    outlived the leader are reaped by init, sometimes seconds after they exited."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _start(kind, tmpdir, build_argv):
    """Start with retries: a free port can be taken between free_port() and the bind.
    build_argv(root, port) returns (argv, storage) or (argv, storage, extra environment)."""
    _check_installed(kind)
    last = None
    for attempt in range(3):
        root = os.path.join(str(tmpdir), "%s-%d" % (kind, attempt))
        os.makedirs(root, mode=0o700)
        port = free_port()
        built = build_argv(root, port)
        argv, storage = built[:2]
        extra_env = built[2] if len(built) > 2 else None
        log_path = os.path.join(root, "server.log")
        proc, ok = _spawn(argv, log_path, root, port, extra_env)
        if ok:
            return root, port, storage, log_path, proc
        with open(log_path, "r", errors="replace") as f:
            last = f.read()[-3000:]
    raise ServerError("%s failed to start:\n%s" % (kind, last))


def start_radicale(tmpdir, rights=None):
    """Radicale with htpasswd (plain) auth for USERNAME/PASSWORD, fresh storage.

    rights: text of a Radicale rights file; when given, `[rights] type = from_file` uses it
    instead of owner_only. Its path is srv.rights_path; Radicale reads the file on every request,
    so a test may rewrite it while the server runs."""
    rights_file = []

    def build(root, port):
        storage = os.path.join(root, "storage")
        os.makedirs(storage)
        htpasswd = os.path.join(root, "htpasswd")
        with open(htpasswd, "w", encoding="utf-8") as f:
            f.write("%s:%s\n" % (USERNAME, PASSWORD))
        config = os.path.join(root, "radicale.conf")
        with open(config, "w", encoding="utf-8") as f:
            f.write("[server]\nhosts = 127.0.0.1:%d\nmax_connections = 20\n\n"
                    "[auth]\ntype = htpasswd\nhtpasswd_filename = %s\n"
                    "htpasswd_encryption = plain\ndelay = 0\n\n"
                    "%s"
                    "[storage]\nfilesystem_folder = %s\n\n"
                    "[web]\ntype = none\n\n"
                    "[logging]\nlevel = info\nmask_passwords = True\n" % (
                        port, htpasswd, _radicale_rights(root, rights, rights_file), storage))
        return [RADICALE, "--config", config], storage

    root, port, storage, log_path, proc = _start("radicale", tmpdir, build)
    srv = DavServer("radicale", port, root, storage, log_path, proc, USERNAME, PASSWORD,
                    principal=None, calendar_home=None, addressbook_home=None)
    srv.rights_path = rights_file[-1] if rights_file else None
    return _check_layout(srv, "/%s/" % USERNAME, "/%s/" % USERNAME, "/%s/" % USERNAME)


def _radicale_rights(root, rights, rights_file):
    """The [rights] section of radicale.conf; writes the rights file when `rights` is given."""
    if rights is None:
        return "[rights]\ntype = owner_only\n\n"
    path = os.path.join(root, "rights")
    with open(path, "w", encoding="utf-8") as f:
        f.write(rights)
    rights_file.append(path)
    return "[rights]\ntype = from_file\nfile = %s\n\n" % path


def start_xandikos(tmpdir, create_principal=True, principal="/%s/" % USERNAME,
                   route_prefix=None):
    """Xandikos without authentication. By default the principal /user/ is created with
    --defaults (home sets /user/calendars/ and /user/contacts/, a default 'calendar' and
    'addressbook'). create_principal=False serves an empty directory where the principal does not
    exist; route_prefix puts the DAV tree under that path (for example "/dav/")."""

    def build(root, port):
        storage = os.path.join(root, "storage")
        argv = [XANDIKOS, "-d", storage, "-p", str(port), "-l", "127.0.0.1",
                "--current-user-principal", principal]
        if create_principal:
            argv.append("--defaults")
        else:
            os.makedirs(storage)
        if route_prefix:
            argv += ["--route-prefix", route_prefix]
        return argv, storage

    root, port, storage, log_path, proc = _start("xandikos", tmpdir, build)
    srv = DavServer("xandikos", port, root, storage, log_path, proc, USERNAME, None,
                    principal=None, calendar_home=None, addressbook_home=None)
    prefix = ""
    if route_prefix:
        prefix = route_prefix.rstrip("/")
        srv.url = "http://127.0.0.1:%d%s/" % (port, prefix)
        srv.prefix = prefix
    if not create_principal:
        srv.principal = prefix + principal
        return srv
    return _check_layout(srv, prefix + principal, prefix + principal + "calendars/",
                         prefix + principal + "contacts/")


# -- DAViCal -------------------------------------------------------------------------------------

def _pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if not found:
        raise ServerError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; "
                          "run make deps)")
    return os.path.dirname(found[-1])


def _pg_identity():
    """subprocess options that run PostgreSQL's programs as the 'postgres' system user when the
    tests run as root (PostgreSQL refuses to run as root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    import pwd
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("the tests run as root and there is no 'postgres' user to run "
                          "PostgreSQL as (package postgresql-common)") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _pg_dir(prefix):
    """A fresh directory that PostgreSQL's user owns, in /dev/shm when there is one (a cluster
    is ~1,000 files copied at the start of a test and removed at its end, which takes seconds on
    a busy disk), else in the system temp dir. The test's own temp dirs are private to the
    test's user, and PostgreSQL must reach its data dir."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    ident = _pg_identity()
    if ident:
        os.chown(path, ident["user"], ident["group"])
    return path


def _pg_env(home):
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
            "HOME": home}


class Postgres:
    """A PostgreSQL cluster in `base` (data in base/data), listening only on the unix socket
    base/.s.PGSQL.5432. Durability is switched off: a crash loses a test's server anyway."""

    def __init__(self, base):
        self.base = base
        self.data = os.path.join(base, "data")
        self.bindir = _pg_bindir()
        self.proc = None
        self.log_path = None

    def run(self, argv, **kw):
        """A PostgreSQL program as the cluster's owner; CompletedProcess, ServerError on
        failure."""
        p = subprocess.run([os.path.join(self.bindir, argv[0])] + argv[1:],
                           env=_pg_env(self.base), cwd=self.base, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120, **_pg_identity(), **kw)
        if p.returncode != 0:
            raise ServerError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                     (p.stdout + p.stderr)[-3000:].decode(
                                                         "utf-8", "replace")))
        return p

    def initdb(self):
        # 1 MB WAL segments instead of 16: every test copies the data dir.
        self.run(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--wal-segsize=1"])

    def start(self, log_path):
        self.log_path = log_path
        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [os.path.join(self.bindir, "postgres"), "-D", self.data, "-k", self.base,
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=40"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_pg_env(self.base),
                cwd=self.base, start_new_session=True, **_pg_identity())
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-q", "-h",
                                    self.base, "-U", "postgres", "-d", "template1"],
                                   env=_pg_env(self.base),
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        with open(log_path, "r", errors="replace") as f:
            tail = f.read()[-3000:]
        self.stop()
        raise ServerError("PostgreSQL in %s did not start:\n%s" % (self.base, tail))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, clean=False):
        """Immediate shutdown (SIGQUIT), for a cluster that is thrown away; clean=True makes a
        fast shutdown (SIGINT) with a checkpoint, for one that is copied and started again."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if clean else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        _stop_group(self.proc)
        self.proc = None

    def remove(self):
        shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, dbname, sql):
        return self.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.base, "-U",
                         "postgres", "-d", dbname, "-c", sql])


def _sql_literal(text):
    return "'%s'" % text.replace("'", "''")


_davical_template = {}


def davical_template():
    """Data dir of a stopped cluster holding the DAViCal database, made once per process by
    DAViCal's own create-database.sh, with USERNAME/PASSWORD as a user and principal. Removed
    when the process exits."""
    if "data" in _davical_template:
        return _davical_template["data"]
    t = time.monotonic()
    pg = Postgres(_pg_dir("ksynctest-davical-template-"))
    atexit.register(pg.remove)
    try:
        pg.initdb()
        pg.start(os.path.join(pg.base, "postgres.log"))
        env = dict(_pg_env(pg.base), PGHOST=pg.base, PGUSER="postgres")
        p = subprocess.run(["/bin/sh", DAVICAL_CREATE_DB, "davical", uuid.uuid4().hex],
                           env=env, cwd=pg.base, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=300)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        if p.returncode != 0 or "ERROR" in out:
            raise ServerError("DAViCal's create-database.sh failed (%d):\n%s" % (
                p.returncode, out[-3000:]))
        # A user as DAViCal's admin pages make one; '**' marks a plain-text password. Its
        # home collections are only made by those pages, so the user starts with none, as on
        # Radicale.
        pg.psql("davical", (
            "BEGIN; "
            "INSERT INTO usr (user_no, active, email_ok, updated, username, password, fullname,"
            " email) VALUES (2, TRUE, current_date, current_date, %s, %s, 'Test User',"
            " 'user@ksync.example'); "
            "INSERT INTO principal (type_id, user_no, displayname, default_privileges)"
            " VALUES (1, 2, 'Test User', 0::BIT(24)); "
            "SELECT setval('usr_user_no_seq', 2); COMMIT;") % (
                _sql_literal(USERNAME), _sql_literal("**" + PASSWORD)))
        pg.psql("davical", "DROP DATABASE postgres")
        pg.stop(clean=True)
    finally:
        pg.stop()
    _davical_template["data"] = pg.data
    _davical_template["seconds"] = time.monotonic() - t
    return pg.data


DAVICAL_CONFIG = """<?php
/* Written by ksynctest/servers.py for one test's DAViCal; see tests/fixtures/davical/router.php
   for how it is found. */
$_SERVER['SERVER_NAME'] = '127.0.0.1';
$c->domain_name = '127.0.0.1';
$c->pg_connect[] = %s;
$c->admin_email = 'admin@ksync.example';
/* Collections exist only once made with MKCOL/MKCALENDAR, as on the other servers. */
$c->collections_always_exist = false;
"""


def _php_string(text):
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "\\'")


def _php_argv(port, router, docroot=None):
    argv = [PHP, "-d", "display_errors=0", "-d", "log_errors=1", "-d", "date.timezone=UTC",
            "-d", "memory_limit=512M", "-S", "127.0.0.1:%d" % port]
    if docroot:
        argv += ["-t", docroot]
    return argv + [router]


def start_davical(tmpdir):
    """DAViCal 1.1 (Debian's davical) under `php -S`, on its own PostgreSQL cluster (a copy of
    davical_template()), with Basic auth for USERNAME/PASSWORD. The DAV tree is below
    /caldav.php/: principal, calendar home and address book home are all /caldav.php/user/."""
    _check_installed("davical")
    template = davical_template()
    tmpdir = str(tmpdir)
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    pg = Postgres(_pg_dir("ksynctest-davical-"))
    try:
        subprocess.run(["cp", "-a", template, pg.data], check=True, timeout=120,
                       stdin=subprocess.DEVNULL)
        pg.start(os.path.join(tmpdir, "postgres.log"))
        config = os.path.join(tmpdir, "davical-conf.php")
        with open(config, "w", encoding="utf-8") as f:
            f.write(DAVICAL_CONFIG % _php_string("host=%s dbname=davical user=davical_app" %
                                                 pg.base))

        def build(root, port):
            access = os.path.join(root, "access.log")
            env = {"PHP_CLI_SERVER_WORKERS": str(PHP_WORKERS),
                   "KSYNCTEST_DAVICAL_CONFIG": config, "KSYNCTEST_ACCESS_LOG": access}
            return _php_argv(port, DAVICAL_ROUTER, DAVICAL_HTDOCS), pg.base, env

        root, port, storage, log_path, proc = _start("davical", tmpdir, build)
    except BaseException:
        pg.stop()
        pg.remove()
        raise
    srv = DavServer("davical", port, root, storage, log_path, proc, USERNAME, PASSWORD,
                    principal=None, calendar_home=None, addressbook_home=None)
    srv.postgres = pg
    srv.access_log = os.path.join(root, "access.log")
    srv.url = "http://127.0.0.1:%d/caldav.php/" % port
    return _check_layout(srv, "/caldav.php/user/", "/caldav.php/user/", "/caldav.php/user/")


# -- SabreDAV -------------------------------------------------------------------------------------

def start_sabredav(tmpdir):
    """SabreDAV 1.8 (Debian's php-sabre-dav) under `php -S` with tests/fixtures/sabredav/
    server.php: PDO SQLite backends on a fresh database, Basic auth for USERNAME/PASSWORD.
    Principal /principals/user/, calendar home /calendars/user/, address book home
    /addressbooks/user/."""

    def build(root, port):
        db = os.path.join(root, "sabredav.sqlite")
        env = {"KSYNCTEST_SABRE_DB": db, "KSYNCTEST_ACCESS_LOG": os.path.join(root, "access.log"),
               "PHP_CLI_SERVER_WORKERS": str(PHP_WORKERS)}
        init_env = dict(_server_env(root), KSYNCTEST_USERNAME=USERNAME,
                        KSYNCTEST_PASSWORD=PASSWORD, **env)
        p = subprocess.run([PHP, SABRE_SERVER, "init"], env=init_env, cwd=root,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if p.returncode != 0:
            raise ServerError("php server.php init failed (%d): %s" % (
                p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")[-3000:]))
        return _php_argv(port, SABRE_SERVER), db, env

    root, port, storage, log_path, proc = _start("sabredav", tmpdir, build)
    srv = DavServer("sabredav", port, root, storage, log_path, proc, USERNAME, PASSWORD,
                    principal=None, calendar_home=None, addressbook_home=None)
    srv.access_log = os.path.join(root, "access.log")
    return _check_layout(srv, "/principals/user/", "/calendars/user/", "/addressbooks/user/")


def _check_layout(srv, principal, calendar_home, addressbook_home):
    """Fill in the server's principal and home sets from discovery; stop it and raise when they
    are not the expected ones."""
    try:
        got = srv.discover()
        if got != (principal, calendar_home, addressbook_home):
            raise ServerError("%s layout: principal, calendar home, address book home = %r, "
                              "expected %r" % (srv.kind, got,
                                               (principal, calendar_home, addressbook_home)))
    except BaseException:
        srv.stop()
        raise
    srv.principal, srv.calendar_home, srv.addressbook_home = got
    return srv


def start(kind, tmpdir):
    if kind == "radicale":
        return start_radicale(tmpdir)
    if kind == "xandikos":
        return start_xandikos(tmpdir)
    if kind == "davical":
        return start_davical(tmpdir)
    if kind == "sabredav":
        return start_sabredav(tmpdir)
    raise ValueError(kind)
