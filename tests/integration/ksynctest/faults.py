"""Fault injection shared by the tests: the rules a tlsfront.Front applies per request, the
answers it makes up, simple items with a UID, and views of a collection by UID on the server and
in a directory.
"""

import gzip
import os
import re
import threading
import time
import urllib.parse
import zlib

from ksynctest import checks, gen, servers
from ksynctest.tlsfront import Reply, Transform


def omit_first_response(body):
    """A multistatus body without its first <response>."""
    m = re.search(rb"<(\w+:)?response[ >].*?</(\w+:)?response>", body, re.S)
    return body[:m.start()] + body[m.end():] if m else body


def card(uid, fn, note=None):
    lines = ["BEGIN:VCARD", "VERSION:3.0", "UID:" + uid, "FN:" + fn, "N:%s;;;;" % fn]
    if note:
        lines.append("NOTE:" + note)
    return gen.serialize(lines + ["END:VCARD"])


def event(uid, summary):
    return gen.serialize(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//faults//EN",
                          "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20240101T000000Z",
                          "DTSTART:20240610T090000Z", "DTEND:20240610T100000Z",
                          "SUMMARY:" + summary, "END:VEVENT", "END:VCALENDAR"])


def uid_of(data):
    m = re.search(rb"^UID:(.*?)\r?$", data, re.M)
    return m.group(1).decode() if m else None


def server_uids(server, coll):
    """{UID: bytes} of a server collection; a UID twice is a duplicate. A request ksyncd
    abandoned when it stopped (an upload in flight when the server said 503) may still be
    under way in the server: a listing and a multiget that disagree are read again."""
    for attempt in range(20):
        try:
            contents = server.contents(coll)
            break
        except servers.ServerError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    out = {}
    for href, (_, data) in contents.items():
        uid = uid_of(data)
        assert uid not in out, "UID %s twice on the server (%s)" % (uid, href)
        out[uid] = data
    return out


def local_uids(d, ext):
    """{UID: bytes} of a collection directory; a UID in two files is a duplicate."""
    out = {}
    for p in sorted(d.iterdir()):
        if not p.name.endswith(ext) or p.name.startswith("."):
            continue
        data = p.read_bytes()
        uid = uid_of(data)
        assert uid not in out, "UID %s in two files of %s" % (uid, d)
        out[uid] = data
    return out

class Faults:
    """The front's route: rules (predicate, action, which) applied to matching requests.
    which: "first" (only the first match), "every", or an int N (only the Nth match)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.hits = []

    def add(self, pred, action, which="first"):
        with self.lock:
            self.rules.append([pred, action, which, 0])

    def clear(self):
        with self.lock:
            self.rules = []

    def __call__(self, front, seen):
        with self.lock:
            for rule in self.rules:
                pred, action, which, n = rule
                if not pred(seen):
                    continue
                rule[3] = n = n + 1
                if which == "every" or (which == "first" and n == 1) or which == n:
                    self.hits.append((seen.method, seen.path))
                    return action(seen) if callable(action) else action
        return None


def kind_of(seen):
    if seen.method == "REPORT":
        if b"sync-collection" in seen.body:
            return "listing"
        if b"multiget" in seen.body:
            return "multiget"
        return "report"
    return seen.method.lower()


def on(kind, coll=None):
    """Predicate: requests of a kind (listing, multiget, propfind, put, delete, get), in the
    collection whose href starts with coll when given."""
    def pred(seen):
        return kind_of(seen) == kind and (coll is None or urllib.parse.unquote(
            urllib.parse.urlsplit(seen.path).path).startswith(coll))
    return pred

def describe(r):
    return "rc %d\nstdout:\n%s\nstderr:\n%s" % (r.rc, r.stdout[-3000:], r.stderr[-3000:])


def failure_text(r, account):
    return "\n".join(checks.failure_lines(r.stderr, account))


# -- answers made by the front ------------------------------------------------------------------

def status_reply(status, retry_after=None):
    headers = [("Content-Type", "text/plain")]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return Reply(status, headers, b"fault injected\n")


def decoded(reply):
    """(headers, body) of a backend reply with its Content-Encoding undone."""
    enc = next((v for k, v in reply.headers if k.lower() == "content-encoding"), None)
    headers = [(k, v) for k, v in reply.headers if k.lower() != "content-encoding"]
    body = reply.body
    if enc == "gzip":
        body = gzip.decompress(body)
    elif enc == "deflate":
        body = zlib.decompress(body)
    return headers, body


def rewrite(fn):
    """Transform the backend's (decoded) body with fn(bytes) -> bytes."""
    def t(seen, reply):
        headers, body = decoded(reply)
        return Reply(reply.status, headers, fn(body))
    return Transform(t)


def to_v3(body):
    """What SabreDAV 4 or Cyrus serve a 4.0 card as when asked for no version: 3.0, KIND and
    ANNIVERSARY gone (the converters keep them as X- properties; gone is enough here)."""
    body = body.replace(b"VERSION:4.0", b"VERSION:3.0")
    return re.sub(rb"(?m)^(KIND|ANNIVERSARY)[;:][^\r\n]*\r?\n", b"", body)


class Converting:
    """Front rules for an address book on a server that converts cards to 3.0 unless asked
    for 4.0, and says it offers 4.0 (supported-address-data)."""

    def __init__(self, faults, book, homes):
        self.asked = []
        faults.add(lambda s: s.method == "PROPFIND" and s.header("Depth") == "1" and
                   urllib.parse.unquote(urllib.parse.urlsplit(s.path).path) in homes,
                   Transform(self.offer), which="every")
        faults.add(on("multiget", book), Transform(self.multiget), which="every")
        faults.add(on("get", book), Transform(self.get), which="every")

    def offer(self, seen, reply):
        headers, body = decoded(reply)
        prop = (b'<supported-address-data xmlns="urn:ietf:params:xml:ns:carddav">'
                b'<address-data-type content-type="text/vcard" version="3.0"/>'
                b'<address-data-type content-type="text/vcard" version="4.0"/>'
                b'</supported-address-data>')
        body = re.sub(rb"(<(?:\w+:)?prop>)(?=(?:(?!</(?:\w+:)?prop>).)*addressbook)",
                      lambda m: m.group(1) + prop, body, flags=re.S)
        return Reply(reply.status, headers, body)

    def multiget(self, seen, reply):
        v4 = b'version="4.0"' in seen.body
        self.asked.append(v4)
        headers, body = decoded(reply)
        return Reply(reply.status, headers, body if v4 else to_v3(body))

    def get(self, seen, reply):
        v4 = "version=4.0" in (seen.header("Accept") or "")
        self.asked.append(v4)
        headers, body = decoded(reply)
        return Reply(reply.status, headers, body if v4 else to_v3(body))


def write_file(path, data):
    """A file as the user's programs write it (umask 077)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
