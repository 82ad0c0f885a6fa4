"""Randomized sync testing: random operations on both sides, sync runs, invariants after
every step (in the spirit of Dropbox's CanopyCheck and Trinity).

A *sequence* is plain JSON (see Sequence): the server kind, the conflict policy, the enabled
operation families, the starting collections and items, and a list of operations. Every random
choice (which item, which properties, the new values, the fault, the kill delay) is drawn when
an operation is generated and stored in it, so a sequence replays from its JSON alone, and a
shortened sequence replays each remaining operation with the same content. An operation whose
target does not exist when it is replayed (its creation was dropped by the shrinker) is
skipped. Operations name items by UID and collections by the last segment of their href, never
by a transport detail, so that a runner with in-memory stores could replay the same JSON; only
`run` operations carry a `fault` described in HTTP terms (a status, a kind of request).

Operations
  server  srv.create, srv.edit (one or several properties, sometimes the ones the local side
          edited since the last run, sometimes DTSTART/DTEND/DURATION), srv.delete, srv.move
          (MOVE, or PUT and DELETE where the server has no MOVE), srv.mkcol, srv.rmcol
  local   loc.create, loc.edit (in place or editor-style through a temp file and a rename),
          loc.rename, loc.away / loc.back (a file moved out of the tree and back), loc.delete,
          loc.copy (a second file with the same UID), loc.empty (every item file of a
          directory removed), loc.mvdir / loc.dirback (a collection directory renamed and
          renamed back), loc.garbage (a file overwritten with junk), loc.notes (a file that is
          no item, notes.txt)
  config  cfg.exclude / cfg.unexclude (a collection named in, or taken out of, the account's
          exclude = in ksync.conf), cfg.place (calendars_path or contacts_path set to a
          directory outside the data directory, or taken away: ksync moves the collections)
  runs    run: `ksyncd --once`, with --force, killed with SIGKILL after a delay, or stopped by
          KSYNC_TEST_CRASH_AFTER=N; optionally with a fault in the front between ksyncd and the
          server: an upload refused (400/403/409/412/415), a connection dropped (with or without
          the server having carried out the request) or stalled, a home-set listing that leaves
          out collections, a multiget answer that leaves out an href
  settle  the user puts back what is away and takes every collection out of exclude =, then
          quiet runs (see invariant 2)

Invariant 1, nothing written is lost. Every value an operation writes holds a unique token
(kt00042) in one property (FN, NOTE, TITLE, ROLE; SUMMARY, DESCRIPTION, LOCATION), or in the
junk or notes file it writes. A token is *owed* from the moment it is written until an
operation *observes* it and removes it on purpose: an edit that overwrites the property it
reads the token in, a deletion of the file or server item (or server collection) it reads the
token in, a file overwritten with junk. An operation only observes what its own side shows at
that moment (the server's item, the local file), so a token the other side has not seen yet
stays owed whatever happens on this side. Every owed token must be found in the server's
items, in the files under the data directory (collection directories, conflicts/, directories
the user renamed; hidden temp files and the cache left out) or in the files the user moved
away. This holds for a correct sync: a merge keeps the properties each side changed; the same
property changed on both sides keeps one value in the item and the other in the copy under
conflicts/; an edit against a deletion wins on both sides. Conflict copies are never removed
by an operation, so a losing value stays owed and must stay there.

Invariant 2, a quiet run converges. `settle` moves back the files and directories the user
moved away (where the name is still free; what cannot go back stays where it is), then runs
`ksyncd --once` without faults (--force when the settle says so, or when a file was
overwritten with junk since the last settle: --force is how the user repairs such a file). A
run that the mass-deletion guard stopped is answered as a user would: --force (the files come
back) or --allow-mass-delete, as the settle says, and --allow-mass-delete when --force does
not help (a collection the server deleted); a run that still holds back a change the server
refused earlier is followed by --force, which sends it again. The run must exit 0; then the
server, the cache rows and the files agree item by item (by href, whatever the file names: a
renamed file keeps its name), each UID is in one item per collection on the server and in one file, no
intent is left, every event is valid (DTEND after DTSTART, not both DTEND and DURATION), and
a second quiet run exits 0, sends no request that writes, and changes no file and no row.
Collections created on the server since the last home listing may be missing from the cache
(ksync lists the home sets at most hourly, on a first run and with --force).

Invariant 3, nothing outside ksync's directories is touched: sentinel directories around the
data directory keep their names, bytes and times; every path under the test root is one
ksync, the test's servers or the operations may create; files under the data directory are
0600 and directories 0700; no symlink is made; no temp file outlives a run that completed.

Invariant 4, ksyncd ends normally: never by a signal but our SIGKILL, never with a
sanitizer's report (ASan, UBSan, LeakSanitizer), never later than RUN_TIMEOUT.

Invariant 5, no server item is deleted that the user did not delete: a DELETE ksyncd sends
names an item whose file an operation removed (deleted, emptied, moved away, renamed) since
the last settle.

On a failure the operation list is shrunk (delta debugging: chunks, then single operations,
each candidate replayed from scratch on a fresh server) to a short sequence that fails the
same invariant, printed and saved as JSON (random_cases/, replayed by test_random.py).
"""

import datetime as _dt
import json
import math
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from . import checks, gen, servers
from .ksync import SANITIZER_RE, KsyncHome
from .tlsfront import Drop, Front, Reply, Stall

ACCOUNT = "acct"
FORMAT = 1
PRODID = "-//ksync//randomized tests//EN"
RUN_TIMEOUT = 90		# a run that takes longer is a hang
ACCOUNT_TIMEOUT = 2		# the account's `timeout`, so that a stall costs a few seconds
STALL_SECONDS = 6
CRASH_RC = 100
TOKEN_RE = re.compile(r"kt\d{5}")
GUARD_RE = re.compile(r"allow-mass-delete")
REFUSED_RE = re.compile(r"the server refused|not sending '")
WRITE_METHODS = {"PUT", "DELETE", "MKCOL", "MKCALENDAR", "PROPPATCH", "MOVE", "COPY", "POST"}
BASE_TIME = _dt.datetime(2024, 6, 1, 0, 0)

FIELDS = {
    "VCARD": ("FN", "NOTE", "TITLE", "ROLE"),
    "VEVENT": ("SUMMARY", "DESCRIPTION", "LOCATION"),
    "VTODO": ("SUMMARY", "DESCRIPTION", "LOCATION"),
}
LABELS = {"FN": "Person", "NOTE": "note", "TITLE": "title", "ROLE": "role",
          "SUMMARY": "Meeting", "DESCRIPTION": "about", "LOCATION": "room"}

# Operation families, each switched on or off as a whole (KSYNC_RANDOM_DISABLE, ..._ONLY).
FAMILIES = {
    "server-items": "create, edit and delete items on the server",
    "server-move": "MOVE an item to another href (or collection) on the server",
    "server-mkcol": "create collections on the server",
    "server-rmcol": "delete collections on the server",
    "local-items": "create, edit and delete files",
    "local-rename": "rename a file in its directory",
    "local-away": "move a file out of the tree and back later",
    "local-copy": "copy a file with its UID",
    "local-empty": "remove every item file of a collection directory",
    "local-rename-dir": "rename a collection directory, and back later",
    "local-garbage": "overwrite a file with junk",
    "local-notes": "create a file that is no item (notes.txt) in a collection directory",
    "conflicts": "edit the properties the other side edited since the last run",
    "times": "change DTSTART/DTEND/DURATION of events on either side",
    "uid-clash": "create on one side the UID (or the UID's href) of an item of the other",
    "force": "ksyncd --once --force",
    "daemon": "ksyncd as a service on a private bus, stopped with SIGTERM at a random moment",
    "kill": "SIGKILL at a random moment of a run",
    "crash": "KSYNC_TEST_CRASH_AFTER=N",
    "fault-refuse": "an upload refused with 400/403/409/412/415",
    "fault-drop": "a connection dropped, before or after the server did the request",
    "fault-stall": "an answer that never comes (the account's timeout cuts it)",
    "fault-home-omit": "a home-set listing that leaves out collections",
    "fault-multiget-omit": "a multiget answer that leaves out an href",
    "bulk": "an address book of 120 cards (several multigets in flight)",
    "config-exclude": "exclude = a collection in ksync.conf, and take it out again",
    "config-path": "calendars_path / contacts_path set and taken away (collections moved)",
}

# (operation, family, weight)
OPS = [
    ("srv.create", "server-items", 5),
    ("srv.edit", "server-items", 9),
    ("srv.delete", "server-items", 3),
    ("srv.move", "server-move", 1.5),
    ("srv.mkcol", "server-mkcol", 0.6),
    ("srv.rmcol", "server-rmcol", 0.5),
    ("loc.create", "local-items", 5),
    ("loc.edit", "local-items", 9),
    ("loc.delete", "local-items", 3),
    ("loc.rename", "local-rename", 2),
    ("loc.away", "local-away", 1.2),
    ("loc.back", "local-away", 1.5),
    ("loc.copy", "local-copy", 1),
    ("loc.empty", "local-empty", 0.4),
    ("loc.mvdir", "local-rename-dir", 0.5),
    ("loc.dirback", "local-rename-dir", 1.5),
    ("loc.garbage", "local-garbage", 0.8),
    ("loc.notes", "local-notes", 0.6),
    ("cfg.exclude", "config-exclude", 0.6),
    ("cfg.unexclude", "config-exclude", 0.9),
    ("cfg.place", "config-path", 0.6),
    ("run", None, 15),
    ("settle", None, 1.6),
]

# (mode, family, weight) of a run, and (fault kind, family, weight) of the fault it meets
RUN_MODES = [("plain", None, 8), ("force", "force", 1.5), ("kill", "kill", 3),
             ("crash", "crash", 3), ("daemon", "daemon", 0.8)]
FAULTS = [(None, None, 9), ("refuse", "fault-refuse", 3), ("drop", "fault-drop", 2.5),
          ("stall", "fault-stall", 0.4), ("home-omit", "fault-home-omit", 1),
          ("multiget-omit", "fault-multiget-omit", 1)]


class Finding(Exception):
    """An invariant that does not hold. kind: lost, signal, sanitizer, hang, quiet-run,
    mirror, unchanged, hygiene, unjustified-delete; key: what makes two findings the same."""

    def __init__(self, kind, message, key=None):
        super().__init__("%s: %s" % (kind, message))
        self.kind = kind
        self.message = message
        self.key = key or kind
        self.step = None

    def as_dict(self):
        return {"kind": self.kind, "key": self.key, "step": self.step,
                "message": self.message[:4000]}


# -- items -------------------------------------------------------------------------------------

def unfold(data):
    """Text of an item with its folded lines joined and line ends made LF."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    return re.sub(r"\r?\n[ \t]", "", text).replace("\r\n", "\n")


def uid_of(data):
    m = re.search(r"^UID(?:;[^:\n]*)?:(.*)$", unfold(data), re.M | re.I)
    return m.group(1).strip() if m else None


def tokens_in(text):
    return set(TOKEN_RE.findall(text))


def render(spec):
    """The bytes of an item from its spec {uid, kind, fields, start}."""
    uid, f, kind = spec.get("uid"), spec["fields"], spec["kind"]
    if kind == "VCARD":
        lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:" + PRODID]
        if uid:
            lines.append("UID:" + uid)
        lines += ["FN:" + f.get("FN", "Person"), "N:Doe;Jane;;;"]
        lines += ["%s:%s" % (k, f[k]) for k in FIELDS["VCARD"][1:] if k in f]
        lines.append("END:VCARD")
        return gen.serialize(lines)
    start = BASE_TIME + _dt.timedelta(minutes=spec.get("start", 0))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:" + PRODID, "BEGIN:" + kind]
    if uid:
        lines.append("UID:" + uid)
    lines.append("DTSTAMP:20240101T000000Z")
    if kind == "VEVENT":
        lines += ["DTSTART:" + _fmt(start), "DTEND:" + _fmt(start + _dt.timedelta(hours=1))]
    else:
        lines += ["DUE:" + _fmt(start)]
    lines += ["%s:%s" % (k, f[k]) for k in FIELDS[kind] if k in f]
    lines += ["END:" + kind, "END:VCALENDAR"]
    return gen.serialize(lines)


def _fmt(t):
    return t.strftime("%Y%m%dT%H%M%SZ")


def _parse_utc(v):
    try:
        return _dt.datetime.strptime(v, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None


def _lines(data):
    text = unfold(data)
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _name(line):
    return re.split(r"[;:]", line, maxsplit=1)[0].upper()


def _value(line):
    """The value of a content line (after the first colon outside quotes)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            return line[i + 1:]
    return ""


def _component(lines, comp):
    """(begin, end) line indexes of the first `comp` without RECURRENCE-ID, or None."""
    i = 0
    while i < len(lines):
        if lines[i].upper() == "BEGIN:" + comp:
            depth = 0
            for j in range(i + 1, len(lines)):
                u = lines[j].upper()
                if u.startswith("BEGIN:"):
                    depth += 1
                elif u.startswith("END:"):
                    if depth == 0:
                        if u == "END:" + comp:
                            props = [_name(x) for x in lines[i + 1:j]]
                            if "RECURRENCE-ID" not in props:
                                return i, j
                        break
                    depth -= 1
            i = j if j > i else i + 1
        i += 1
    return None


def item_kind(data):
    text = unfold(data).upper()
    if "BEGIN:VCARD" in text:
        return "VCARD"
    for k in ("VEVENT", "VTODO"):
        if "BEGIN:" + k in text:
            return k
    return None


def edit_item(data, fields, times=None):
    """(new bytes, {property: [old values]}) with each property of `fields` set, or None when
    the data holds no object to edit. Other lines are kept (re-folded, CRLF)."""
    kind = item_kind(data)
    if kind is None:
        return None
    lines = _lines(data)
    span = _component(lines, kind)
    if span is None:
        return None
    b0, b1 = span
    body = lines[b0 + 1:b1]
    old = {}
    for name, value in fields.items():
        idx = [k for k, ln in enumerate(body) if _depth_zero(body, k) and _name(ln) == name]
        old[name] = [_value(body[k]) for k in idx]
        new = "%s:%s" % (name, value)
        if idx:
            body[idx[0]] = new
            for k in reversed(idx[1:]):
                del body[k]
        else:
            body.append(new)
    if times and kind == "VEVENT":
        body = _edit_times(body, times)
    lines = lines[:b0 + 1] + body + lines[b1:]
    return gen.serialize(lines), old


def _depth_zero(body, k):
    depth = 0
    for ln in body[:k]:
        u = ln.upper()
        if u.startswith("BEGIN:"):
            depth += 1
        elif u.startswith("END:"):
            depth -= 1
    return depth == 0


def _edit_times(body, times):
    def find(name):
        for k, ln in enumerate(body):
            if _depth_zero(body, k) and _name(ln) == name:
                return k
        return None

    ks, ke, kd = find("DTSTART"), find("DTEND"), find("DURATION")
    start = _parse_utc(_value(body[ks])) if ks is not None else None
    if start is None:
        return body
    end = _parse_utc(_value(body[ke])) if ke is not None else None
    if "shift" in times:
        d = _dt.timedelta(minutes=times["shift"])
        body[ks] = "DTSTART:" + _fmt(start + d)
        if end is not None:
            body[ke] = "DTEND:" + _fmt(end + d)
    elif "dur" in times:
        if kd is not None:
            body[kd] = "DURATION:PT%dM" % times["dur"]
        elif ke is not None:
            body[ke] = "DTEND:" + _fmt(start + _dt.timedelta(minutes=times["dur"]))
    elif times.get("to_duration") and ke is not None and end is not None and kd is None:
        minutes = max(1, int((end - start).total_seconds() // 60))
        body[ke] = "DURATION:PT%dM" % minutes
    return body


def is_item(data):
    """Whether a file holds a whole vCard or iCalendar object (junk a user wrote does not):
    BEGIN and END lines, a UID, and a colon on every content line."""
    lines = _lines(data)
    if not lines or lines[0].upper() not in ("BEGIN:VCARD", "BEGIN:VCALENDAR"):
        return False
    if lines[-1].upper() != "END:" + lines[0].split(":", 1)[1].upper():
        return False
    return uid_of(data) is not None and all(":" in ln for ln in lines if ln)


def event_problems(data):
    """What makes an event invalid (RFC 5545 3.6.1): DTEND not after DTSTART, DTEND with
    DURATION. Only UTC date-times are compared."""
    out = []
    lines = _lines(data)
    span = _component(lines, "VEVENT")
    if span is None:
        return out
    body = lines[span[0] + 1:span[1]]
    props = {}
    for k, ln in enumerate(body):
        if _depth_zero(body, k):
            props.setdefault(_name(ln), []).append(_value(ln))
    if "DTEND" in props and "DURATION" in props:
        out.append("both DTEND and DURATION")
    if "DTSTART" in props and "DTEND" in props:
        s, e = _parse_utc(props["DTSTART"][0]), _parse_utc(props["DTEND"][0])
        if s and e and e <= s:
            out.append("DTEND %s is not after DTSTART %s" % (props["DTEND"][0],
                                                              props["DTSTART"][0]))
    return out


def ext_of(kind):
    return ".vcf" if kind == "addressbook" else ".ics"


def write_file(path, data, style="inplace"):
    """A file as the user's programs write it (mode 0600): in place, or editor-style through a
    hidden temp file and a rename."""
    path = Path(path)
    if style == "rename":
        tmp = path.with_name("." + path.name + ".swp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- sequences ---------------------------------------------------------------------------------

class Sequence:
    """A replayable sequence (the JSON form is what random_cases/ holds)."""

    def __init__(self, seed, server, conflict, families, setup, ops=None, finding=None,
                 note=None):
        self.seed = seed
        self.server = server
        self.conflict = conflict
        self.families = sorted(families)
        self.setup = setup
        self.ops = list(ops or [])
        self.finding = finding
        self.note = note

    def to_json(self):
        d = {"format": FORMAT, "seed": self.seed, "server": self.server,
             "conflict": self.conflict, "families": self.families, "setup": self.setup,
             "ops": self.ops}
        if self.finding:
            d["finding"] = self.finding
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_json(cls, d):
        if d.get("format") != FORMAT:
            raise ValueError("unknown sequence format %r" % d.get("format"))
        return cls(d["seed"], d["server"], d["conflict"], d["families"], d["setup"], d["ops"],
                   d.get("finding"), d.get("note"))

    def with_ops(self, ops):
        return Sequence(self.seed, self.server, self.conflict, self.families, self.setup, ops)


def describe_op(op):
    """One readable line for an operation."""
    o = op["op"]
    a = dict(op)
    del a["op"]
    if o == "run":
        s = "ksyncd --once"
        if a.get("mode") == "force":
            s += " --force"
        if a.get("mode") == "kill":
            s += " (SIGKILL after %.3fs)" % a["delay"]
        if a.get("mode") == "crash":
            s += " (KSYNC_TEST_CRASH_AFTER=%d)" % a["crash_after"]
        if a.get("mode") == "daemon":
            s = "ksyncd (service), SIGTERM %s" % (
                "after %.3fs" % a["term_after"] if a.get("term_after") is not None
                else "once its first run ended")
        if a.get("fault"):
            s += " with fault %s" % json.dumps(a["fault"], sort_keys=True)
        return "run: " + s
    if o == "settle":
        return "settle (quiet runs%s)" % (", --force" if a.get("force") else "")
    parts = []
    for k in ("coll", "uid", "file", "kind", "name", "to", "to_coll", "slot", "style"):
        if k in a and a[k] is not None:
            parts.append("%s=%s" % (k, a[k]))
    if a.get("fields"):
        parts.append(" ".join("%s=%s" % kv for kv in sorted(a["fields"].items())))
    if a.get("times"):
        parts.append("times=%s" % json.dumps(a["times"], sort_keys=True))
    if a.get("token"):
        parts.append("token=%s" % a["token"])
    return "%s %s" % (o, " ".join(parts))


def format_sequence(seq):
    out = ["sequence: seed %s, server %s, conflict %s" % (seq.seed, seq.server, seq.conflict),
           "setup: " + ", ".join("%s (%s, %d items)" % (
               c["name"], c["kind"], len(c.get("items", [])) + c.get("bulk", 0))
               for c in seq.setup["collections"])]
    for i, op in enumerate(seq.ops):
        out.append("%3d. %s" % (i + 1, describe_op(op)))
    out.append("  +. settle (final)")
    return "\n".join(out)


# -- the world as it is now --------------------------------------------------------------------

class World:
    """What the server serves and what the collection directories hold, read after each step.
    srv: {collection name: {"href", "kind", "items": {href path: (etag, bytes)}}};
    rows: {name: cache collection row}; loc: {name: {"kind", "dir", "files": {file: bytes}}}
    for the directories of the collections in the cache."""

    def __init__(self, runner):
        self.r = runner
        self.srv = {}
        self.rows = {}
        self.loc = {}

    def refresh(self):
        srv = {}
        for href, col in _retry(self.r.server.collections).items():
            name = checks.last_segment(href)
            items = _retry(lambda: self.r.server.contents(href))
            srv[name] = {"href": href, "kind": col["kind"], "items": items}
        self.srv = srv
        self.rows = {}
        if self.r.ks.db_path.exists():
            self.rows = {row["name"]: row for row in self.r.ks.collections(ACCOUNT)}
        self.loc = {}
        for name, row in self.rows.items():
            d = self.r.ks.row_dir(ACCOUNT, row)
            if not d.is_dir() or d.is_symlink():
                continue
            ext = ext_of(row["kind"])
            files = {}
            for p in d.iterdir():
                if p.name.endswith(ext) and not p.name.startswith(".") and p.is_file():
                    files[p.name] = p.read_bytes()
            self.loc[name] = {"kind": row["kind"], "dir": d, "files": files}

    def server_item(self, coll, uid):
        """(href, etag, bytes) of the item with `uid` in server collection `coll`, or None."""
        c = self.srv.get(coll)
        if not c:
            return None
        for href in sorted(c["items"]):
            etag, data = c["items"][href]
            if uid_of(data) == uid:
                return href, etag, data
        return None

    def local_file(self, coll, uid, name=None):
        """The file name in `coll` holding `uid` (`name` first when it does), or None."""
        c = self.loc.get(coll)
        if not c:
            return None
        if name and name in c["files"] and uid_of(c["files"][name]) == uid:
            return name
        for n in sorted(c["files"]):
            if uid_of(c["files"][n]) == uid:
                return n
        return None


def _retry(fn, attempts=20):
    """Reads of a server that a killed ksyncd's request may still be changing."""
    for i in range(attempts):
        try:
            return fn()
        except servers.ServerError:
            if i == attempts - 1:
                raise
            time.sleep(0.2)


# -- the model ---------------------------------------------------------------------------------

class Model:
    """The bookkeeping of the invariants (see the module docstring)."""

    def __init__(self):
        self.owed = {}          # token -> {"uid", "field", "side", "step", "coll"}
        self.removed = set()    # UIDs whose file an operation removed since the last settle
        self.away = {}          # slot -> {"coll", "kind", "file", "path"}
        self.renamed = {}       # new dir name -> {"coll", "kind"}
        self.garbage = False    # a file was overwritten with junk since the last settle
        self.new_cols = set()   # server collections made since the last home listing
        self.recent = {}        # (coll, uid) -> {"server": set, "local": set} since the last run
        self.excluded = set()   # collections ksync.conf's exclude = names
        self.placed = set()     # kinds ("calendar", "addressbook") given a *_path

    def owe(self, tokens, **info):
        for t in tokens:
            self.owed[t] = dict(info)

    def release(self, text):
        for t in tokens_in(text):
            self.owed.pop(t, None)

    def note_edit(self, side, coll, uid, fields):
        self.recent.setdefault((coll, uid), {"server": set(), "local": set()})[side] |= \
            set(fields)


# -- the front's faults ------------------------------------------------------------------------

def request_kind(seen):
    if seen.method == "REPORT":
        if b"sync-collection" in seen.body:
            return "listing"
        if b"multiget" in seen.body:
            return "multiget"
        return "report"
    return seen.method.lower()


def _path(seen):
    return urllib.parse.unquote(urllib.parse.urlsplit(seen.path).path)


RESPONSE_RE = re.compile(rb"<(?:[\w-]+:)?response[ >].*?</(?:[\w-]+:)?response>", re.S)
HREF_RE = re.compile(rb"<(?:[\w-]+:)?href>([^<]*)</")


class Faults:
    """The front's route: at most one armed fault (a dict as in a `run` operation)."""

    def __init__(self, runner):
        self.runner = runner
        self.lock = threading.Lock()
        self.fault = None
        self.count = 0
        self.hits = 0

    def arm(self, fault):
        with self.lock:
            self.fault = fault
            self.count = 0
            self.hits = 0

    def __call__(self, front, seen):
        with self.lock:
            f = self.fault
            if f is None or not self._matches(f, seen):
                return None
            self.count += 1
            if f.get("which", "first") == "first" and self.count > 1:
                return None
            self.hits += 1
        return self._action(f, front, seen)

    def _matches(self, f, seen):
        kind = request_kind(seen)
        coll = f.get("coll")
        srv = self.runner.world.srv
        if coll and coll in srv and not _path(seen).startswith(srv[coll]["href"]):
            return False
        k = f["kind"]
        if k == "refuse":
            if seen.method != f["method"]:
                return False
            cond = f.get("cond")
            if cond == "create":
                return seen.header("If-None-Match") == "*"
            if cond == "update":
                return bool(seen.header("If-Match"))
            return True
        if k in ("drop", "stall"):
            return kind == f["target"]
        if k == "home-omit":
            s = self.runner.server
            return (seen.method == "PROPFIND" and seen.header("Depth") == "1" and
                    _path(seen) in (s.calendar_home, s.addressbook_home))
        if k == "multiget-omit":
            return kind == "multiget"
        return False

    def _action(self, f, front, seen):
        k = f["kind"]
        if k == "refuse":
            return Reply(f["status"], [("Content-Type", "text/plain")], b"refused\n")
        if k == "drop":
            if f.get("forward"):
                return Stall(0, forward=True)
            if f.get("after") is None:
                return Stall(0)
            return Drop(after=f["after"])
        if k == "stall":
            return Stall(STALL_SECONDS, forward=bool(f.get("forward")))
        plain = seen._replace(headers=[(h, v) for h, v in seen.headers
                                       if h.lower() != "accept-encoding"])
        reply = front.forward(plain)
        if reply.status != 207:
            return reply
        body = reply.body
        if k == "home-omit":
            omit = set(f.get("colls") or [])
            home = _path(seen)

            def keep(m):
                h = HREF_RE.search(m.group(0))
                p = urllib.parse.unquote(urllib.parse.urlsplit(
                    h.group(1).decode("utf-8", "replace")).path) if h else ""
                if p.rstrip("/") == home.rstrip("/"):
                    return m.group(0)
                name = p.rstrip("/").rsplit("/", 1)[-1]
                return b"" if (not omit or name in omit) else m.group(0)
            body = RESPONSE_RE.sub(keep, body)
        else:
            blocks = list(RESPONSE_RE.finditer(body))
            if blocks:
                m = blocks[f.get("index", 0) % len(blocks)]
                body = body[:m.start()] + body[m.end():]
        headers = [(h, v) for h, v in reply.headers if h.lower() != "content-encoding"]
        return Reply(reply.status, headers, body)


# -- generating operations ---------------------------------------------------------------------

class Generator:
    """Draws the next operation from the seeded RNG and the world as it is."""

    def __init__(self, seq, rng, world, model):
        self.seq = seq
        self.rng = rng
        self.world = world
        self.model = model
        self.fam = set(seq.families)
        self.n_tok = 0
        self.n_uid = 0
        self.n_misc = 0
        self.since_settle = 0
        for c in seq.setup["collections"]:
            for it in c.get("items", []):
                self._bump(it)
        self.n_tok = max(self.n_tok, seq.setup.get("tokens", 0))
        for op in seq.ops:
            self._bump(op)

    def _bump(self, d):
        for t in tokens_in(json.dumps(d)):
            self.n_tok = max(self.n_tok, int(t[2:]) + 1)
        for m in re.findall(r'"[cet](\d+)"', json.dumps(d)):
            self.n_uid = max(self.n_uid, int(m) + 1)

    def token(self):
        t = "kt%05d" % self.n_tok
        self.n_tok += 1
        return t

    def new_uid(self, kind):
        u = {"VCARD": "c", "VEVENT": "e", "VTODO": "t"}[kind] + str(self.n_uid)
        self.n_uid += 1
        return u

    def misc(self):
        self.n_misc += 1
        return self.n_misc

    def fields_for(self, kind, names=None):
        names = names or FIELDS[kind]
        return {n: "%s %s" % (LABELS[n], self.token()) for n in names}

    # -- choosing ---------------------------------------------------------------------------

    def next_op(self):
        for _ in range(50):
            choices = [(name, w) for name, fam, w in OPS if fam is None or fam in self.fam]
            if self.since_settle < 4:
                choices = [(n, w) for n, w in choices if n != "settle"]
            name = _weighted(self.rng, choices)
            op = getattr(self, "gen_" + name.replace(".", "_"))()
            if op is not None:
                op = dict({"op": name}, **op)
                self.since_settle = 0 if name == "settle" else self.since_settle + 1
                return op
        self.since_settle += 1
        return {"op": "run", "mode": "plain"}

    def _coll(self, side, kinds=("addressbook", "calendar"), need_items=False):
        pool = self.world.srv if side == "server" else self.world.loc
        names = []
        weights = []
        for name, c in sorted(pool.items()):
            if c["kind"] not in kinds:
                continue
            n = len(c["items"] if side == "server" else c["files"])
            if need_items and n == 0:
                continue
            names.append(name)
            weights.append(0.15 if name.startswith("bulk") else 1.0)
        if not names:
            return None
        return self.rng.choices(names, weights)[0]

    def _kind_for(self, ckind):
        if ckind == "addressbook":
            return "VCARD"
        return self.rng.choice(["VEVENT", "VEVENT", "VTODO"])

    def _edit_fields(self, side, coll, uid, kind):
        other = "local" if side == "server" else "server"
        recent = self.model.recent.get((coll, uid), {}).get(other, set())
        recent = [f for f in FIELDS[kind] if f in recent]
        if recent and "conflicts" in self.fam and self.rng.random() < 0.6:
            names = self.rng.sample(recent, self.rng.randint(1, len(recent)))
        else:
            k = self.rng.choice([1, 1, 1, 2, 3])
            names = self.rng.sample(FIELDS[kind], min(k, len(FIELDS[kind])))
        return self.fields_for(kind, sorted(names))

    def _times(self, kind, other_recent=()):
        if kind != "VEVENT" or "times" not in self.fam:
            return None
        p = 0.75 if "TIMES" in other_recent and "conflicts" in self.fam else 0.3
        if self.rng.random() > p:
            return None
        r = self.rng.random()
        if r < 0.4:
            return {"shift": self.rng.choice([-180, -90, -30, 30, 60, 120, 1440])}
        if r < 0.8:
            return {"dur": self.rng.choice([15, 30, 45, 90, 150])}
        return {"to_duration": True}

    # -- server ------------------------------------------------------------------------------

    def gen_srv_create(self):
        coll = self._coll("server")
        if coll is None:
            return None
        ckind = self.world.srv[coll]["kind"]
        kind = self._kind_for(ckind)
        uid = self.new_uid(kind)
        name = uid if self.rng.random() < 0.75 else "x%06x" % self.rng.getrandbits(24)
        if "uid-clash" in self.fam and self.rng.random() < 0.2:
            # the href a local item not yet sent would take, held by another UID
            loc = self.world.loc.get(coll)
            srv_uids = {uid_of(d) for _, d in self.world.srv[coll]["items"].values()}
            cands = sorted(u for u in (uid_of(d) for d in (loc or {"files": {}})["files"].values())
                           if u and u not in srv_uids and re.match(r"^[A-Za-z0-9@._+-]+$", u))
            if cands:
                name = self.rng.choice(cands)
        return {"coll": coll, "uid": uid, "kind": kind, "name": name,
                "start": self.rng.randrange(0, 60 * 96) * 15,
                "fields": self.fields_for(kind)}

    def _contested(self, side):
        """(coll, uid) of an item the other side edited since the last run, now and then."""
        if "conflicts" not in self.fam or self.rng.random() > 0.5:
            return None
        other = "local" if side == "server" else "server"
        cands = sorted(k for k, v in self.model.recent.items() if v[other])
        if not cands:
            return None
        weights = [3 if "TIMES" in self.model.recent[k][other] else 1 for k in cands]
        return self.rng.choices(cands, weights)[0]

    def _recent(self, side, coll, uid):
        other = "local" if side == "server" else "server"
        return self.model.recent.get((coll, uid), {}).get(other, set())

    def gen_srv_edit(self):
        got = self._contested("server")
        if got and self.world.server_item(*got):
            coll = got[0]
            data = self.world.server_item(*got)[2]
        else:
            coll = self._coll("server", need_items=True)
            if coll is None:
                return None
            href = self.rng.choice(sorted(self.world.srv[coll]["items"]))
            data = self.world.srv[coll]["items"][href][1]
        uid, kind = uid_of(data), item_kind(data)
        if not uid or not kind:
            return None
        return {"coll": coll, "uid": uid, "fields": self._edit_fields("server", coll, uid, kind),
                "times": self._times(kind, self._recent("server", coll, uid))}

    def gen_srv_delete(self):
        coll = self._coll("server", need_items=True)
        if coll is None:
            return None
        href = self.rng.choice(sorted(self.world.srv[coll]["items"]))
        uid = uid_of(self.world.srv[coll]["items"][href][1])
        return {"coll": coll, "uid": uid} if uid else None

    def gen_srv_move(self):
        coll = self._coll("server", need_items=True)
        if coll is None:
            return None
        href = self.rng.choice(sorted(self.world.srv[coll]["items"]))
        uid = uid_of(self.world.srv[coll]["items"][href][1])
        kind = self.world.srv[coll]["kind"]
        others = [n for n, c in sorted(self.world.srv.items()) if c["kind"] == kind and n != coll]
        to_coll = coll
        if others and self.rng.random() < 0.4:
            to_coll = self.rng.choice(others)
        name = "m%06x" % self.rng.getrandbits(24)
        return {"coll": coll, "uid": uid, "to_coll": to_coll, "name": name} if uid else None

    def gen_srv_mkcol(self):
        if len(self.world.srv) >= 7:
            return None
        kind = self.rng.choice(["addressbook", "calendar"])
        name = ("book" if kind == "addressbook" else "cal") + "n%d" % self.misc()
        return {"name": name, "kind": kind}

    def gen_srv_rmcol(self):
        coll = self._coll("server")
        if coll is None:
            return None
        kind = self.world.srv[coll]["kind"]
        if sum(1 for c in self.world.srv.values() if c["kind"] == kind) < 2:
            return None
        return {"coll": coll}

    # -- local -------------------------------------------------------------------------------

    def _local_item(self):
        coll = self._coll("local", need_items=True)
        if coll is None:
            return None
        files = self.world.loc[coll]["files"]
        name = self.rng.choice(sorted(files))
        return coll, name, uid_of(files[name]), files[name]

    def gen_loc_create(self):
        coll = self._coll("local")
        if coll is None:
            return None
        ckind = self.world.loc[coll]["kind"]
        kind = self._kind_for(ckind)
        uid = self.new_uid(kind)
        op = {"coll": coll, "uid": uid, "kind": kind, "start": self.rng.randrange(0, 60 * 96) * 15,
              "fields": self.fields_for(kind), "name": uid + ext_of(ckind),
              "style": self.rng.choice(["inplace", "rename"])}
        r = self.rng.random()
        if r < 0.1:
            op["no_uid"] = True
            op["name"] = "new-%d%s" % (self.misc(), ext_of(ckind))
        elif r < 0.2:
            op["name"] = "n%06x%s" % (self.rng.getrandbits(24), ext_of(ckind))
        elif r < 0.35 and "uid-clash" in self.fam:
            # the UID of a server item not here yet (made on both sides at once)
            srv = self.world.srv.get(coll)
            local_uids = {uid_of(d) for d in self.world.loc[coll]["files"].values()}
            cands = sorted(u for u in (uid_of(d) for _, d in (srv or {"items": {}})["items"]
                                       .values()) if u and u not in local_uids)
            if cands:
                u = self.rng.choice(cands)
                op["uid"] = u
                op["name"] = (u if re.match(r"^[A-Za-z0-9@._+-]+$", u) else
                              "n%06x" % self.rng.getrandbits(24)) + ext_of(ckind)
                op["kind"] = {"c": "VCARD", "e": "VEVENT", "t": "VTODO"}.get(u[:1], kind)
                if (op["kind"] == "VCARD") != (ckind == "addressbook"):
                    op["kind"] = kind
                op["fields"] = self.fields_for(op["kind"])
        return op

    def gen_loc_edit(self):
        got = None
        c = self._contested("local")
        if c:
            name = self.world.local_file(*c)
            if name:
                got = (c[0], name, c[1], self.world.loc[c[0]]["files"][name])
        if got is None:
            got = self._local_item()
        if got is None:
            return None
        coll, name, uid, data = got
        kind = item_kind(data)
        if not uid or not kind:
            return None
        return {"coll": coll, "uid": uid, "file": name,
                "fields": self._edit_fields("local", coll, uid, kind),
                "times": self._times(kind, self._recent("local", coll, uid)),
                "style": self.rng.choice(["inplace", "rename"])}

    def gen_loc_delete(self):
        got = self._local_item()
        if got is None:
            return None
        coll, name, uid, _ = got
        return {"coll": coll, "uid": uid, "file": name}

    def gen_loc_rename(self):
        got = self._local_item()
        if got is None:
            return None
        coll, name, uid, _ = got
        ext = ext_of(self.world.loc[coll]["kind"])
        return {"coll": coll, "uid": uid, "file": name,
                "to": "r%06x%s" % (self.rng.getrandbits(24), ext)}

    def gen_loc_away(self):
        got = self._local_item()
        if got is None:
            return None
        coll, name, uid, _ = got
        return {"coll": coll, "uid": uid, "file": name, "slot": "a%d" % self.misc()}

    def gen_loc_back(self):
        if not self.model.away:
            return None
        return {"slot": self.rng.choice(sorted(self.model.away))}

    def gen_loc_copy(self):
        got = self._local_item()
        if got is None:
            return None
        coll, name, uid, _ = got
        ext = ext_of(self.world.loc[coll]["kind"])
        return {"coll": coll, "uid": uid, "file": name,
                "to": "%s-copy%d%s" % (name[:-len(ext)][:40], self.misc(), ext)}

    def gen_loc_empty(self):
        coll = self._coll("local", need_items=True)
        return {"coll": coll} if coll else None

    def gen_loc_mvdir(self):
        coll = self._coll("local")
        if coll is None:
            return None
        return {"coll": coll, "to": "%s.moved%d" % (coll, self.misc())}

    def gen_loc_dirback(self):
        if not self.model.renamed:
            return None
        return {"to": self.rng.choice(sorted(self.model.renamed))}

    def gen_loc_garbage(self):
        got = self._local_item()
        if got is None:
            return None
        coll, name, uid, _ = got
        return {"coll": coll, "uid": uid, "file": name, "token": self.token(),
                "style": self.rng.choice(["binary", "truncate"])}

    def gen_cfg_exclude(self):
        coll = self._coll("server")
        if coll is None or coll in self.model.excluded:
            return None
        return {"coll": coll}

    def gen_cfg_place(self):
        return {"kind": self.rng.choice(["calendar", "addressbook"])}

    def gen_cfg_unexclude(self):
        if not self.model.excluded:
            return None
        return {"coll": self.rng.choice(sorted(self.model.excluded))}

    def gen_loc_notes(self):
        coll = self._coll("local")
        if coll is None:
            return None
        return {"coll": coll, "name": "notes-%d.txt" % self.misc(), "token": self.token()}

    # -- runs --------------------------------------------------------------------------------

    def gen_run(self):
        mode = _weighted(self.rng, [(m, w) for m, fam, w in RUN_MODES
                                    if fam is None or fam in self.fam])
        op = {"mode": mode}
        if mode == "kill":
            op["delay"] = round(self.rng.uniform(0.0, 0.6), 3)
        elif mode == "crash":
            op["crash_after"] = self.rng.randint(1, 40)
        elif mode == "daemon" and self.rng.random() < 0.5:
            op["term_after"] = round(self.rng.uniform(0.0, 0.8), 3)
        kind = _weighted(self.rng, [(k, w) for k, fam, w in FAULTS
                                    if fam is None or fam in self.fam])
        if kind is not None:
            op["fault"] = self.fault(kind)
            if kind == "home-omit" and mode in ("plain", "crash"):
                op["mode"] = "force"
        return op

    def fault(self, kind):
        rng = self.rng
        f = {"kind": kind}
        if kind == "refuse":
            f["method"] = rng.choice(["PUT", "PUT", "PUT", "DELETE"])
            f["status"] = rng.choice([400, 403, 409, 412, 415])
            f["cond"] = rng.choice([None, "create", "update"]) if f["method"] == "PUT" else None
            f["which"] = rng.choice(["first", "first", "every"])
        elif kind in ("drop", "stall"):
            f["target"] = rng.choice(["listing", "multiget", "put", "put", "delete", "propfind",
                                      "get"])
            f["which"] = rng.choice(["first", "first", "every"])
            if f["target"] in ("put", "delete"):
                f["forward"] = rng.random() < 0.5
            elif kind == "drop":
                f["after"] = rng.choice([None, 0, 40, 200])
        elif kind == "home-omit":
            names = sorted(self.world.srv)
            f["colls"] = (rng.sample(names, rng.randint(1, len(names)))
                          if names and rng.random() < 0.7 else [])
            f["which"] = rng.choice(["first", "every"])
        elif kind == "multiget-omit":
            bulk = [n for n in self.world.srv if n.startswith("bulk")]
            f["coll"] = bulk[0] if bulk and rng.random() < 0.6 else None
            f["index"] = rng.randrange(0, 100)
            f["which"] = "first"
        return f

    def gen_settle(self):
        return {"force": self.rng.random() < 0.25,
                "guard": self.rng.choice(["force", "allow"])}


def _weighted(rng, choices):
    names = [c[0] for c in choices]
    weights = [c[1] for c in choices]
    return rng.choices(names, weights)[0]


def make_setup(rng, families, n_tok=0):
    """The starting collections: an address book and a calendar with a few items (plus the
    bulk address book). Returns (setup dict)."""
    counter = {"tok": n_tok, "uid": 0}

    def token():
        t = "kt%05d" % counter["tok"]
        counter["tok"] += 1
        return t

    def item(kind):
        uid = {"VCARD": "c", "VEVENT": "e", "VTODO": "t"}[kind] + str(counter["uid"])
        counter["uid"] += 1
        return {"uid": uid, "kind": kind, "name": uid, "start": rng.randrange(0, 60 * 96) * 15,
                "fields": {n: "%s %s" % (LABELS[n], token()) for n in FIELDS[kind]}}

    cols = [{"name": "book0", "kind": "addressbook",
             "items": [item("VCARD") for _ in range(rng.randint(2, 5))]},
            {"name": "cal0", "kind": "calendar",
             "items": [item(rng.choice(["VEVENT", "VEVENT", "VTODO"]))
                       for _ in range(rng.randint(2, 5))]}]
    if "bulk" in families:
        cols.append({"name": "bulk0", "kind": "addressbook", "items": [], "bulk": 120,
                     "bulk_token": token()})
    return {"collections": cols, "tokens": counter["tok"], "uids": counter["uid"]}


def bulk_items(c):
    """{uid: bytes} of a bulk collection: cards whose NOTE holds the collection's token and
    its number."""
    out = {}
    for i in range(c["bulk"]):
        uid = "b%d" % i
        out[uid] = render({"uid": uid, "kind": "VCARD",
                           "fields": {"FN": "Bulk %d" % i, "NOTE": "bulk %s" % c["bulk_token"]}})
    return out


# -- running a sequence ------------------------------------------------------------------------

class Runner:
    """Runs one sequence against a fresh server of its kind, a front and a fresh ksync home,
    checking the invariants after every step."""

    def __init__(self, seq, root, build=None, log=None, verbose=False):
        self.seq = seq
        self.root = Path(root)
        self.build = build
        self.verbose = verbose
        self.log = log if log is not None else []
        self.server = None
        self.front = None
        self.model = Model()
        self.world = World(self)
        self.faults = Faults(self)
        self.steps = 0
        self.skipped = 0
        self.runs = 0
        self.kills = 0
        self.sentinels = {}
        # UIDs ksync makes (for a file without one, for a copy of another item) differ from
        # run to run: an exploring run records with each operation the UIDs that first
        # appeared after it, and where ("made"); a replay maps those to the UIDs it sees
        # appear in the same places (alias), so that later operations find the same items.
        self.recording = False
        self.uids_seen = set()
        self.pending = {}
        self.alias = {}

    # -- lifetime ----------------------------------------------------------------------------

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.server = servers.start(self.seq.server, self.root / "server")
        try:
            self.front = Front(backend=self.server, route=self.faults)
            self.ks = KsyncHome(self.root / "user", build=self.build)
            path = urllib.parse.urlsplit(self.server.url).path
            self.ks.add_account(ACCOUNT, self.server, url=self.front.url_for(path))
            self.ks.accounts[ACCOUNT]["timeout"] = str(ACCOUNT_TIMEOUT)
            self.ks.accounts[ACCOUNT]["conflict"] = self.seq.conflict
            self.ks.write_config()
            self.away_dir = self.ks.home / "away"
            self.away_dir.mkdir(mode=0o700)
            for d in (self.ks.root / "sentinel", self.ks.home / "sentinel",
                      self.ks.data_home / "sentinel", self.ks.home / ".local" / "sentinel"):
                d.mkdir(parents=True, mode=0o700)
                (d / "keep.txt").write_text("keep\n")
                self.sentinels[d] = self._sentinel_state(d)
            self._setup()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.server is not None:
            self.server.stop()

    def _setup(self):
        s = self.server
        for c in self.seq.setup["collections"]:
            if c["kind"] == "addressbook":
                href = s.make_addressbook(c["name"], c["name"].capitalize())
            else:
                href = s.make_calendar(c["name"], c["name"].capitalize(), color="#3366cc")
            for it in c.get("items", []):
                s.put(href + it["name"] + ext_of(c["kind"]), render(it), if_none_match="*")
                for f, v in it["fields"].items():
                    self.model.owe(tokens_in(v), uid=it["uid"], field=f, side="server",
                                   step=0, coll=c["name"])
            if c.get("bulk"):
                s.seed(href, bulk_items(c))
                self.model.owe({c["bulk_token"]}, uid="b*", field="NOTE", side="server",
                               step=0, coll=c["name"])
        self.world.refresh()
        self.note("setup: %s" % ", ".join(sorted(self.world.srv)))
        r = self.ksyncd([])
        self.check_run(r, "plain")
        if r.rc != 0:
            raise Finding("quiet-run", "the first sync exited %d:\n%s" % (r.rc, r.tail()))
        self.after_step()
        self.uids_seen = set(self.uid_places())

    # -- stepping ----------------------------------------------------------------------------

    def note(self, text):
        self.log.append(text)
        if self.verbose:
            sys.stderr.write(text + "\n")

    def step(self, op):
        """Applies one operation and checks the invariants; raises Finding."""
        self.steps += 1
        self.note("%4d. %s" % (self.steps, describe_op(op)))
        fn = getattr(self, "do_" + op["op"].replace(".", "_"))
        run = op
        if op.get("uid") in self.alias:
            run = dict(op, uid=self.alias[op["uid"]])
        if fn(run) is False:
            self.skipped += 1
            self.note("      (not done: its target is not there, or the server refused it)")
        self.after_step()
        self.learn_uids(op)

    def uid_places(self):
        """{UID: [where it is: "local COLL/FILE" or "server COLL/NAME", ...]}."""
        places = {}
        for coll, c in self.world.loc.items():
            for n, data in c["files"].items():
                places.setdefault(uid_of(data), []).append("local %s/%s" % (coll, n))
        for coll, c in self.world.srv.items():
            for href, (_, data) in c["items"].items():
                places.setdefault(uid_of(data), []).append(
                    "server %s/%s" % (coll, checks.last_segment(href)))
        places.pop(None, None)
        return places

    def learn_uids(self, op):
        new = {u: p for u, p in self.uid_places().items() if u not in self.uids_seen}
        self.uids_seen.update(new)
        if self.recording:
            if new:
                op["made"] = {place: u for u, ps in new.items() for place in ps}
            return
        self.pending.update(op.get("made") or {})
        for u, ps in new.items():
            for place in ps:
                old = self.pending.pop(place, None)
                if old is not None and old != u:
                    self.alias[old] = u
                    self.note("      %s is here %s" % (old, u))

    def after_step(self):
        self.world.refresh()
        self.check_tokens()
        self.check_contained()

    # -- invariant checks --------------------------------------------------------------------

    def places_dir(self, kind):
        """Where calendars_path / contacts_path put the collections of kind."""
        return self.ks.home / "places" / ("cal" if kind == "calendar" else "card")

    def corpus(self):
        parts = []
        for c in self.world.srv.values():
            for _, data in c["items"].values():
                parts.append(unfold(data))
        for base in (self.ks.data_dir, self.away_dir, self.ks.home / "places"):
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                for n in filenames:
                    if n.startswith(".") or n.startswith("ksync.db"):
                        continue
                    p = Path(dirpath) / n
                    if p.is_file() and not p.is_symlink():
                        parts.append(unfold(p.read_bytes()))
        return "\n".join(parts)

    def check_tokens(self):
        text = self.corpus()
        lost = sorted(t for t in self.model.owed if t not in text)
        if not lost:
            return
        lines = []
        for t in lost[:20]:
            info = self.model.owed[t]
            lines.append("%s (written by the %s side at step %s into %s of %s in %s)" % (
                t, info["side"], info["step"], info["field"], info["uid"], info["coll"]))
            where = self._where_is(info["uid"])
            if where:
                lines.append("    %s is now: %s" % (info["uid"], where))
        raise Finding("lost", "%d owed value(s) are in no server item, no file and no "
                      "conflict copy:\n  %s" % (len(lost), "\n  ".join(lines)),
                      key="lost:%s" % self.model.owed[lost[0]]["side"])

    def _where_is(self, uid):
        out = []
        for name, c in sorted(self.world.srv.items()):
            for href, (_, data) in sorted(c["items"].items()):
                if uid_of(data) == uid:
                    out.append("server %s" % href)
        for name, c in sorted(self.world.loc.items()):
            for fn, data in sorted(c["files"].items()):
                if uid_of(data) == uid:
                    out.append("file %s/%s" % (name, fn))
        return ", ".join(out) or "nowhere"

    def _sentinel_state(self, d):
        out = {}
        for p in sorted(d.iterdir()):
            st = p.lstat()
            out[p.name] = (st.st_mtime_ns, st.st_size, p.read_bytes() if p.is_file() else b"")
        return out

    def allowed_path(self, rel):
        parts = rel.split("/")
        if parts[0] in ("sentinel", "secrets", "server", "run", "dbus-services",
                        "session-bus.conf"):
            return True     # the test's own, and its private bus's
        if parts[0] != "home":
            return False
        if len(parts) == 1:
            return True
        p = parts[1:]
        if p[0] in ("sentinel", "away", "places", ".config", ".cache", "ksyncd.log"):
            return True
        if p[0] != ".local":
            return False
        if len(p) == 1 or p[1] == "sentinel":
            return True
        if p[1] != "share":
            return False
        if len(p) == 2 or p[2] == "sentinel":
            return True
        if p[2] != "ksync":
            return False
        q = p[3:]
        if not q:
            return True
        if len(q) == 1:
            return q[0] in ("contacts", "calendars", "conflicts", "locks") or \
                re.match(r"^ksync\.db(-wal|-shm|-journal)?$", q[0]) is not None
        if q[0] in ("contacts", "calendars"):
            return q[1] == ACCOUNT and len(q) <= 4
        if q[0] == "conflicts":
            return q[1] == ACCOUNT
        if q[0] == "locks":
            return len(q) == 2
        return False

    def check_contained(self, after_quiet_run=False):
        problems = []
        for d, state in self.sentinels.items():
            if not d.is_dir() or self._sentinel_state(d) != state:
                problems.append("sentinel %s changed" % d)
        for dirpath, dirnames, filenames in os.walk(self.ks.root):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                rel = str(p.relative_to(self.ks.root))
                if not self.allowed_path(rel):
                    problems.append("unexpected path %s" % rel)
        for dirpath, dirnames, filenames in os.walk(self.ks.data_dir):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                st = p.lstat()
                rel = str(p.relative_to(self.ks.data_dir))
                if stat.S_ISLNK(st.st_mode):
                    problems.append("symlink %s" % rel)
                elif stat.S_ISDIR(st.st_mode):
                    if stat.S_IMODE(st.st_mode) != 0o700:
                        problems.append("dir %s has mode %o" % (rel, stat.S_IMODE(st.st_mode)))
                elif stat.S_IMODE(st.st_mode) != 0o600:
                    problems.append("file %s has mode %o" % (rel, stat.S_IMODE(st.st_mode)))
                if after_quiet_run and n.startswith(".") and n.endswith(".tmp"):
                    problems.append("temp file left: %s" % rel)
        if problems:
            raise Finding("hygiene", "\n  ".join(problems[:30]), key="hygiene")

    # -- ksyncd ------------------------------------------------------------------------------

    def ksyncd(self, args, kill_after=None, crash_after=None):
        argv = [str(self.ks.ksyncd), "--once"] + list(args)
        extra = {}
        if crash_after:
            extra["KSYNC_TEST_CRASH_AFTER"] = str(crash_after)
        start = len(self.front.seen())
        t = time.monotonic()
        p = subprocess.Popen(argv, env=self.ks.env(**extra), cwd=self.ks.home,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        killed = hung = False
        try:
            out, err = p.communicate(timeout=kill_after if kill_after is not None
                                     else RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            if kill_after is not None:
                killed = True
            else:
                hung = True
        self.runs += 1
        self.kills += killed
        res = RunResult(argv, p.returncode, out.decode("utf-8", "replace"),
                        err.decode("utf-8", "replace"), killed, hung,
                        time.monotonic() - t, self.front.seen()[start:])
        self.note("      rc %s%s in %.2fs%s" % (res.rc, " (killed)" if killed else "",
                                                 res.elapsed, res.short()))
        return res

    def check_run(self, r, mode):
        if r.hung:
            raise Finding("hang", "%s did not end within %ds:\n%s" % (
                " ".join(r.argv[1:]), RUN_TIMEOUT, r.tail()), key="hang")
        m = SANITIZER_RE.search(r.stderr)
        frame = re.search(r"#\d+ 0x[0-9a-f]+ in (\w+)", r.stderr)
        if r.rc < 0 and not (r.killed and r.rc == -signal.SIGKILL):
            name = signal.Signals(-r.rc).name
            why = re.search(r"Assertion `(.*)' failed", r.stderr)
            raise Finding("signal", "ksyncd ended by signal %d (%s):\n%s" % (
                -r.rc, name, r.tail()), key="signal:%s%s" % (
                    name, ":" + why.group(1) if why else ""))
        if m:
            raise Finding("sanitizer", "ksyncd reported:\n%s" % r.stderr[-6000:],
                          key="sanitizer:%s:%s" % (m.group(0).strip(),
                                                  frame.group(1) if frame else "?"))
        if r.rc == CRASH_RC and mode != "crash":
            raise Finding("signal", "ksyncd exited 100 without KSYNC_TEST_CRASH_AFTER",
                          key="rc100")

    def check_deletes(self, r, before):
        """Invariant 5 for the DELETEs of a run."""
        bad = []
        for s in r.seen:
            if s.method != "DELETE":
                continue
            p = _path(s)
            uid = before.get(p)
            if uid is None and p.endswith("/"):
                bad.append("DELETE of the collection %s" % p)
            elif uid is None or uid not in self.model.removed:
                bad.append("DELETE %s (UID %s), whose file no operation removed" % (p, uid))
        if bad:
            raise Finding("unjustified-delete", "\n  ".join(bad) + "\n" + r.tail(),
                          key="unjustified-delete")

    def uid_map(self):
        out = {}
        for c in self.world.srv.values():
            for href, (_, data) in c["items"].items():
                out[href] = uid_of(data)
        if self.ks.db_path.exists():
            for it in self.ks.items(ACCOUNT):
                out.setdefault(servers.href_path(it["href"]), it["uid"])
        return out

    def run_ksyncd(self, args, mode="plain", fault=None, kill_after=None, crash_after=None):
        before = self.uid_map()
        self.faults.arm(fault)
        try:
            r = self.ksyncd(args, kill_after=kill_after, crash_after=crash_after)
        finally:
            self.faults.arm(None)
        self.check_run(r, mode)
        self.check_deletes(r, before)
        listed = any(s.method == "PROPFIND" and s.header("Depth") == "1" and
                     _path(s) in (self.server.calendar_home, self.server.addressbook_home)
                     for s in r.seen)
        if listed and r.rc == 0 and not r.killed and not (fault and fault["kind"] ==
                                                          "home-omit"):
            self.model.new_cols.clear()
        self.model.recent.clear()
        return r

    # -- operations: runs --------------------------------------------------------------------

    def do_run(self, op):
        mode = op.get("mode", "plain")
        if mode == "daemon":
            return self.run_daemon(op)
        args = ["--force"] if mode == "force" else []
        self.run_ksyncd(args, mode, op.get("fault"),
                        kill_after=op.get("delay") if mode == "kill" else None,
                        crash_after=op.get("crash_after") if mode == "crash" else None)

    def run_daemon(self, op):
        """ksyncd as a service on a private bus: its first run, then SIGTERM (after
        `term_after` seconds when given, whether the run ended or not)."""
        from .daemon import Daemon
        for n in ("notify.sock", "bus"):
            try:
                os.unlink(self.ks.runtime_dir / n)
            except FileNotFoundError:
                pass
        before = self.uid_map()
        self.faults.arm(op.get("fault"))
        start = len(self.front.seen())
        d = Daemon(self.ks)
        t = time.monotonic()
        rc = None
        status = None
        try:
            d.start(wait_ready=False)
            deadline = t + RUN_TIMEOUT
            term_at = t + op["term_after"] if op.get("term_after") is not None else None
            while time.monotonic() < deadline and d.proc.poll() is None:
                if term_at is not None:
                    if time.monotonic() >= term_at:
                        break
                else:
                    status = self._daemon_status(d)
                    if status and status.get("last_result") in ("ok", "failed") and \
                            status.get("state") != "syncing":
                        break
                time.sleep(0.1)
            hung = time.monotonic() >= deadline
            if d.proc.poll() is None:
                d.signal(signal.SIGTERM)
                try:
                    rc = d.wait_exit(timeout=30)
                except subprocess.TimeoutExpired:
                    hung = True
            else:
                rc = d.proc.returncode
            log = d.log_text()
        finally:
            d.stop()
            self.faults.arm(None)
        res = RunResult(["ksyncd", "(service)"], rc if rc is not None else -signal.SIGKILL,
                        "", log, False, hung, time.monotonic() - t, self.front.seen()[start:])
        self.runs += 1
        self.note("      service: rc %s in %.2fs, last result %s%s" % (
            res.rc, res.elapsed, (status or {}).get("last_result"), res.short()))
        self.check_run(res, "daemon")
        if res.rc != 0:
            raise Finding("signal", "ksyncd (service) exited %s after SIGTERM:\n%s" % (
                res.rc, res.tail()), key="service-exit")
        self.check_deletes(res, before)
        self.model.recent.clear()

    def _daemon_status(self, d):
        r = d.ctl("status", "--json", timeout=10)
        if r.rc != 0:
            return None
        try:
            accts = json.loads(r.stdout)["accounts"]
        except (ValueError, KeyError):
            return None
        for a in accts:
            if a.get("name") == ACCOUNT:
                return a
        return None

    def do_settle(self, op):
        self.restore_all()
        self.world.refresh()
        self.check_tokens()
        args = ["--force"] if (op.get("force") or self.model.garbage) else []
        r = self.run_ksyncd(args)
        if r.rc != 0 and (GUARD_RE.search(r.stderr) or self.model.garbage):
            answer = "--allow-mass-delete" if (op.get("guard") == "allow" and
                                               GUARD_RE.search(r.stderr)) else "--force"
            # What the user asked for in the first place (--force) still holds.
            again = sorted(set(args) | {answer})
            self.note("      the user answers with %s" % " ".join(again))
            r = self.run_ksyncd(again)
            if r.rc != 0 and answer == "--force" and GUARD_RE.search(r.stderr):
                # --force brings files back, but not a collection the server deleted:
                # the message then names --allow-mass-delete, and the user adds it.
                self.note("      the user answers with --force --allow-mass-delete")
                r = self.run_ksyncd(["--force", "--allow-mass-delete"])
        if r.rc == 0 and REFUSED_RE.search(r.stderr):
            # A refused change waits for its file to change; with the faults gone, the
            # user sends it again as the message says.
            self.note("      the user answers with --force")
            r = self.run_ksyncd(["--force"])
        if r.rc != 0:
            raise Finding("quiet-run", "a quiet run exited %d:\n%s" % (r.rc, r.tail()),
                          key=_quiet_key(r))
        self.world.refresh()
        self.check_tokens()
        self.check_mirror()
        self.check_contained(after_quiet_run=True)
        before = checks.snapshot(self.ks)
        r2 = self.run_ksyncd([])
        if r2.rc != 0:
            raise Finding("quiet-run", "the second quiet run exited %d:\n%s" % (
                r2.rc, r2.tail()), key=_quiet_key(r2))
        writes = ["%s %s" % (s.method, s.path) for s in r2.seen if s.method in WRITE_METHODS]
        problems = []
        if writes:
            problems.append("it sent %s" % ", ".join(writes[:10]))
        try:
            checks.check_unchanged(before, checks.snapshot(self.ks))
        except AssertionError as e:
            problems.append(str(e))
        if problems:
            raise Finding("unchanged", "the second quiet run changed things:\n  %s\n%s" % (
                "\n  ".join(problems), r2.tail()), key="unchanged")
        self.model.removed.clear()
        self.model.garbage = False
        if args:
            self.model.new_cols.clear()

    def check_mirror(self):
        """Invariant 2: server == cache rows == files, item by item."""
        problems = []
        srv, rows = self.world.srv, self.world.rows
        missing = set(srv) - set(rows) - self.model.new_cols
        if missing:
            problems.append("server collections not in the cache: %s" % sorted(missing))
        extra = set(rows) - set(srv)
        if extra:
            problems.append("cache collections the server does not have: %s" % sorted(extra))
        items = {}
        for it in self.ks.items(ACCOUNT):
            items.setdefault(it["coll_name"], {})[servers.href_path(it["href"])] = it
        for name in sorted(set(srv) & set(rows)):
            c = srv[name]
            if rows[name]["kind"] != c["kind"]:
                problems.append("%s: kind %s in the cache, %s on the server" % (
                    name, rows[name]["kind"], c["kind"]))
                continue
            loc = self.world.loc.get(name)
            if loc is None:
                problems.append("%s: no directory" % name)
                continue
            got = items.get(name, {})
            if set(got) != set(c["items"]):
                problems.append("%s: cache rows %s, server items %s" % (
                    name, sorted(set(got) - set(c["items"]))[:5],
                    sorted(set(c["items"]) - set(got))[:5]))
            used = set()
            for href, (etag, data) in sorted(c["items"].items()):
                row = got.get(href)
                if row is None:
                    continue
                if row["etag"] != etag:
                    problems.append("%s: etag %s in the cache, %s on the server" % (
                        href, row["etag"], etag))
                if checks.as_bytes(row["data"]) != data:
                    problems.append("%s: the cache's bytes differ from the server's" % href)
                fn = (row["filename"] or "").rsplit("/", 1)[-1]
                if fn not in loc["files"]:
                    problems.append("%s: its file %s is missing" % (href, fn))
                elif loc["files"][fn] != data:
                    problems.append("%s: file %s differs from the server's item:\n%s" % (
                        href, fn, _diff(data, loc["files"][fn])))
                used.add(fn)
                for p in event_problems(data):
                    problems.append("%s: invalid event: %s" % (href, p))
            # Junk the user wrote where no item was is theirs: ksync leaves it alone.
            stray = sorted(n for n in set(loc["files"]) - used if is_item(loc["files"][n]))
            if stray:
                problems.append("%s: files that are no server item: %s" % (name, stray[:8]))
            uids = [uid_of(d) for _, d in c["items"].values()]
            dup = sorted({u for u in uids if uids.count(u) > 1})
            if dup:
                problems.append("%s: UIDs in more than one server item: %s" % (name, dup[:8]))
            fu = [uid_of(d) for d in loc["files"].values() if is_item(d)]
            dup = sorted({str(u) for u in fu if fu.count(u) > 1})
            if dup:
                problems.append("%s: UIDs in more than one file: %s" % (name, dup[:8]))
        intents = self.ks.query("SELECT href, op FROM intent")
        if intents:
            problems.append("intents left: %s" % intents[:5])
        if problems:
            raise Finding("mirror", "after a quiet run:\n  " + "\n  ".join(problems[:30]),
                          key="mirror:" + _mirror_category(problems[0]))

    # -- operations: server ------------------------------------------------------------------

    def _srv_href(self, coll):
        c = self.world.srv.get(coll)
        return c["href"] if c else None

    def do_srv_create(self, op):
        coll = self._srv_href(op["coll"])
        if coll is None:
            return False
        ckind = self.world.srv[op["coll"]]["kind"]
        if (op["kind"] == "VCARD") != (ckind == "addressbook"):
            return False
        data = render(op)
        href = coll + op["name"] + ext_of(ckind)
        r = self.server.request("PUT", href, data, {"Content-Type": _ctype(ckind),
                                                    "If-None-Match": "*"})
        if r.status_code not in (200, 201, 204):
            self.note("      the server refused: HTTP %d" % r.status_code)
            return False
        for f, v in op["fields"].items():
            self.model.owe(tokens_in(v), uid=op["uid"], field=f, side="server",
                           step=self.steps, coll=op["coll"])
        self.model.note_edit("server", op["coll"], op["uid"], op["fields"])

    def do_srv_edit(self, op):
        for attempt in range(5):
            got = self._fresh_server_item(op["coll"], op["uid"])
            if got is None:
                return False
            href, etag, data = got
            res = edit_item(data, op["fields"], op.get("times"))
            if res is None:
                return False
            new, old = res
            ckind = self.world.srv[op["coll"]]["kind"]
            r = self.server.request("PUT", href, new, {"Content-Type": _ctype(ckind),
                                                       "If-Match": etag})
            if r.status_code == 412:
                time.sleep(0.1)
                continue
            if r.status_code not in (200, 201, 204):
                self.note("      the server refused: HTTP %d" % r.status_code)
                return False
            for vals in old.values():
                for v in vals:
                    self.model.release(v)
            for f, v in op["fields"].items():
                self.model.owe(tokens_in(v), uid=op["uid"], field=f, side="server",
                               step=self.steps, coll=op["coll"])
            self.model.note_edit("server", op["coll"], op["uid"],
                                 list(op["fields"]) + (["TIMES"] if op.get("times") else []))
            return True
        return False

    def _fresh_server_item(self, coll, uid):
        c = self.world.srv.get(coll)
        if not c:
            return None
        items = _retry(lambda: self.server.contents(c["href"]))
        for href in sorted(items):
            etag, data = items[href]
            if uid_of(data) == uid:
                return href, etag, data
        return None

    def do_srv_delete(self, op):
        got = self._fresh_server_item(op["coll"], op["uid"])
        if got is None:
            return False
        href, etag, data = got
        r = self.server.request("DELETE", href, headers={"If-Match": etag})
        if r.status_code not in (200, 204):
            return False
        self.model.release(unfold(data))

    def do_srv_move(self, op):
        got = self._fresh_server_item(op["coll"], op["uid"])
        to = self.world.srv.get(op["to_coll"])
        if got is None or to is None or to["kind"] != self.world.srv[op["coll"]]["kind"]:
            return False
        href, etag, data = got
        dest = to["href"] + op["name"] + ext_of(to["kind"])
        r = self.server.request("MOVE", href, headers={
            "Destination": self.server.url.rstrip("/") + urllib.parse.quote(dest),
            "Overwrite": "F"})
        if r.status_code in (201, 204):
            return True
        if r.status_code not in (405, 501, 403):
            return False
        r = self.server.request("PUT", dest, data, {"Content-Type": _ctype(to["kind"]),
                                                    "If-None-Match": "*"})
        if r.status_code not in (200, 201, 204):
            return False
        self.server.request("DELETE", href, headers={"If-Match": etag})
        return True

    def do_srv_mkcol(self, op):
        if op["name"] in self.world.srv:
            return False
        try:
            if op["kind"] == "addressbook":
                self.server.make_addressbook(op["name"], op["name"].capitalize())
            else:
                self.server.make_calendar(op["name"], op["name"].capitalize())
        except servers.ServerError as e:
            self.note("      %s" % e)
            return False
        self.model.new_cols.add(op["name"])

    def do_srv_rmcol(self, op):
        c = self.world.srv.get(op["coll"])
        if c is None:
            return False
        items = _retry(lambda: self.server.contents(c["href"]))
        r = self.server.request("DELETE", c["href"])
        if r.status_code not in (200, 204):
            return False
        for _, data in items.values():
            self.model.release(unfold(data))
        self.model.new_cols.discard(op["coll"])

    # -- operations: local -------------------------------------------------------------------

    def _loc(self, coll):
        return self.world.loc.get(coll)

    def _file(self, op):
        c = self._loc(op["coll"])
        if c is None:
            return None, None
        name = self.world.local_file(op["coll"], op["uid"], op.get("file"))
        if name is None:
            return None, None
        return c, name

    def do_loc_create(self, op):
        c = self._loc(op["coll"])
        if c is None or (op["kind"] == "VCARD") != (c["kind"] == "addressbook"):
            return False
        path = c["dir"] / op["name"]
        if path.exists():
            return False
        spec = dict(op)
        if op.get("no_uid"):
            spec["uid"] = None
        write_file(path, render(spec), op.get("style", "inplace"))
        for f, v in op["fields"].items():
            self.model.owe(tokens_in(v), uid=op["uid"] if not op.get("no_uid") else
                           "(none: %s)" % op["name"], field=f, side="local", step=self.steps,
                           coll=op["coll"])
        self.model.note_edit("local", op["coll"], op["uid"], op["fields"])

    def do_loc_edit(self, op):
        c, name = self._file(op)
        if c is None:
            return False
        path = c["dir"] / name
        res = edit_item(path.read_bytes(), op["fields"], op.get("times"))
        if res is None:
            return False
        new, old = res
        write_file(path, new, op.get("style", "inplace"))
        for vals in old.values():
            for v in vals:
                self.model.release(v)
        for f, v in op["fields"].items():
            self.model.owe(tokens_in(v), uid=op["uid"], field=f, side="local", step=self.steps,
                           coll=op["coll"])
        self.model.note_edit("local", op["coll"], op["uid"],
                             list(op["fields"]) + (["TIMES"] if op.get("times") else []))

    def _removed(self, coll, name, data):
        """Notes that the file `name` of `coll` left: its UID, or, for junk that holds none,
        the UID the cache knows for the file."""
        uids = {uid_of(data)}
        if self.ks.db_path.exists():
            uids |= {it["uid"] for it in self.ks.items(ACCOUNT)
                     if it["coll_name"] == coll and it["filename"] == name}
        self.model.removed |= {u for u in uids if u}

    def do_loc_delete(self, op):
        c, name = self._file(op)
        if c is None:
            return False
        path = c["dir"] / name
        data = path.read_bytes()
        self.model.release(unfold(data))
        path.unlink()
        self._removed(op["coll"], name, data)

    def do_loc_rename(self, op):
        c, name = self._file(op)
        if c is None or (c["dir"] / op["to"]).exists():
            return False
        self._removed(op["coll"], name, (c["dir"] / name).read_bytes())
        os.rename(c["dir"] / name, c["dir"] / op["to"])

    def do_loc_away(self, op):
        c, name = self._file(op)
        if c is None or op["slot"] in self.model.away:
            return False
        dest = self.away_dir / ("%s-%s" % (op["slot"], name))
        self._removed(op["coll"], name, (c["dir"] / name).read_bytes())
        os.rename(c["dir"] / name, dest)
        self.model.away[op["slot"]] = {"coll": op["coll"], "kind": c["kind"], "file": name,
                                       "path": str(dest)}

    def do_loc_back(self, op):
        a = self.model.away.get(op["slot"])
        if a is None:
            return False
        return self._bring_back(op["slot"], a)

    def _bring_back(self, slot, a):
        row = self.world.rows.get(a["coll"])
        d = (self.ks.row_dir(ACCOUNT, row) if row and row["kind"] == a["kind"]
             else self.ks.collection_dir(ACCOUNT, a["kind"], a["coll"]))
        target = d / a["file"]
        if not d.is_dir() or target.exists():
            self.note("      %s cannot go back to %s: it stays away" % (a["path"], target))
            return False
        os.rename(a["path"], target)
        del self.model.away[slot]
        return True

    def do_loc_copy(self, op):
        c, name = self._file(op)
        if c is None or (c["dir"] / op["to"]).exists():
            return False
        write_file(c["dir"] / op["to"], (c["dir"] / name).read_bytes())

    def do_loc_empty(self, op):
        c = self._loc(op["coll"])
        if c is None or not c["files"]:
            return False
        for name, data in sorted(c["files"].items()):
            self.model.release(unfold(data))
            self._removed(op["coll"], name, data)
            (c["dir"] / name).unlink()

    def do_loc_mvdir(self, op):
        c = self._loc(op["coll"])
        if c is None:
            return False
        dest = c["dir"].parent / op["to"]
        if dest.exists():
            return False
        os.rename(c["dir"], dest)
        self.model.renamed[op["to"]] = {"coll": op["coll"], "kind": c["kind"],
                                        "from": str(c["dir"].parent)}

    def do_loc_dirback(self, op):
        r = self.model.renamed.get(op["to"])
        if r is None:
            return False
        return self._dir_back(op["to"], r)

    def _dir_back(self, to, r):
        row = self.world.rows.get(r["coll"])
        dest = (self.ks.row_dir(ACCOUNT, row) if row and row["kind"] == r["kind"]
                else self.ks.collection_dir(ACCOUNT, r["kind"], r["coll"]))
        src = Path(r["from"]) / to if r.get("from") else dest.parent / to
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dest)
            del self.model.renamed[to]
            return True
        left = []
        for p in sorted(src.iterdir()):
            if not (dest / p.name).exists():
                os.rename(p, dest / p.name)
            elif p.name in checks.META_FILES:
                p.unlink()	# ksync's own displayname and color, written again there
            else:
                left.append(p.name)
        if left:
            self.note("      %s stay in %s: their names are taken in %s" % (left, src, dest))
            del self.model.renamed[to]
            return True
        src.rmdir()
        del self.model.renamed[to]
        return True

    def do_loc_garbage(self, op):
        c, name = self._file(op)
        if c is None:
            return False
        path = c["dir"] / name
        old = path.read_bytes()
        if op.get("style") == "truncate":
            data = old[:len(old) // 2] + b"\r\ngarbage " + op["token"].encode() + b"\r\n"
        else:
            data = b"\x00\xffjunk " + op["token"].encode() + b" \x01\x02\xfe" * 7
        self.model.release(unfold(old))
        write_file(path, data)
        self.model.owe({op["token"]}, uid=op["uid"], field="(junk)", side="local",
                       step=self.steps, coll=op["coll"])
        self.model.garbage = True

    def do_loc_notes(self, op):
        c = self._loc(op["coll"])
        if c is None or (c["dir"] / op["name"]).exists():
            return False
        write_file(c["dir"] / op["name"], ("my notes %s\n" % op["token"]).encode())
        self.model.owe({op["token"]}, uid="(%s)" % op["name"], field="(file)", side="local",
                       step=self.steps, coll=op["coll"])

    def do_cfg_exclude(self, op):
        if op["coll"] in self.model.excluded:
            return False
        self.model.excluded.add(op["coll"])
        self._write_rules()

    def do_cfg_unexclude(self, op):
        if op["coll"] not in self.model.excluded:
            return False
        self.model.excluded.discard(op["coll"])
        self._write_rules()

    def do_cfg_place(self, op):
        self.model.placed ^= {op["kind"]}
        self._write_rules()

    def _write_rules(self):
        keys = self.ks.accounts[ACCOUNT]
        for kind, key in (("calendar", "calendars_path"), ("addressbook", "contacts_path")):
            if kind in self.model.placed:
                keys[key] = str(self.places_dir(kind))
            else:
                keys.pop(key, None)
        if self.model.excluded:
            keys["exclude"] = ", ".join(sorted(self.model.excluded))
        else:
            keys.pop("exclude", None)
        self.ks.write_config()

    def restore_all(self):
        if self.model.excluded:
            # The user takes the collections back before the quiet runs.
            self.model.excluded.clear()
            self._write_rules()
        for slot in sorted(self.model.away):
            self._bring_back(slot, self.model.away[slot])
        for to in sorted(self.model.renamed):
            self._dir_back(to, self.model.renamed[to])


MIRROR_CATEGORIES = [
    ("collections", r"collections (not in the cache|the server does not have)"),
    ("no-directory", r": no directory$"),
    ("kind", r": kind \S+ in the cache"),
    ("rows", r": cache rows "),
    ("etag", r": etag \S+ in the cache"),
    ("bytes", r"the cache's bytes differ"),
    ("file-missing", r": its file \S+ is missing"),
    ("file-differs", r"differs from the server's item"),
    ("invalid-event", r"invalid event"),
    ("stray-files", r"files that are no server item"),
    ("server-duplicate-uid", r"UIDs in more than one server item"),
    ("duplicate-uid", r"UIDs in more than one file"),
    ("intents", r"^intents left"),
]


def _quiet_key(r):
    m = re.search(r"HTTP \d{3}|refusing to delete|cannot \w+|could not \w+", r.stderr)
    return "quiet-run:" + (m.group(0) if m else "other")


def _mirror_category(problem):
    """A name for the first thing a mirror check found, so that findings can be told apart."""
    for name, pattern in MIRROR_CATEGORIES:
        if re.search(pattern, problem):
            return name
    return "other"


def _ctype(kind):
    return "text/vcard; charset=utf-8" if kind == "addressbook" else \
        "text/calendar; charset=utf-8"


def _diff(want, got):
    import difflib
    a = unfold(want).split("\n")
    b = unfold(got).split("\n") if isinstance(got, bytes) else []
    return "\n".join("      " + ln for ln in list(difflib.unified_diff(a, b, "server", "file",
                                                                       lineterm=""))[2:14])


class RunResult:
    def __init__(self, argv, rc, stdout, stderr, killed, hung, elapsed, seen):
        self.argv, self.rc, self.stdout, self.stderr = argv, rc, stdout, stderr
        self.killed, self.hung, self.elapsed, self.seen = killed, hung, elapsed, seen

    def short(self):
        """The run's messages for the log: the first 8 (KSYNC_RANDOM_LOG_LINES) lines."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if not lines:
            return ""
        most = int(os.environ.get("KSYNC_RANDOM_LOG_LINES", "8"))
        return "\n        " + "\n        ".join(ln[:300] for ln in lines[:most]) + (
            "\n        ... %d more line(s)" % (len(lines) - most) if len(lines) > most
            else "")

    def tail(self):
        return "    %s: rc %s\n    stdout: %s\n    stderr: %s" % (
            " ".join(self.argv[1:]), self.rc, self.stdout[-1500:].replace("\n", "\n      "),
            self.stderr[-4000:].replace("\n", "\n      "))


# -- sequences: explore, replay, shrink --------------------------------------------------------

class Outcome:
    def __init__(self, seq, finding, steps, runs, kills, skipped, elapsed, log):
        self.seq, self.finding, self.steps, self.runs = seq, finding, steps, runs
        self.kills, self.skipped, self.elapsed, self.log = kills, skipped, elapsed, log


def new_sequence(seed, server, families):
    rng = random.Random("%s:%s:setup" % (seed, server))
    conflict = rng.choice(["server-wins", "server-wins", "local-wins"])
    return Sequence(seed, server, conflict, families, make_setup(rng, families))


def _execute(seq, root, steps=None, gen_seed=None, build=None, verbose=False, final=True):
    """Runs a sequence: its operations (replay), or `steps` new ones drawn from gen_seed
    (explore, appended to seq.ops as they are made). Ends with a settle."""
    t = time.monotonic()
    log = []
    runner = Runner(seq, root, build=build, log=log, verbose=verbose)
    runner.recording = steps is not None
    finding = None
    try:
        try:
            runner.start()
            if steps is None:
                for i, op in enumerate(seq.ops):
                    _run_step(runner, op, i)
            else:
                rng = random.Random("%s:%s:ops" % (gen_seed, seq.server))
                g = Generator(seq, rng, runner.world, runner.model)
                for i in range(steps):
                    op = g.next_op()
                    seq.ops.append(op)
                    _run_step(runner, op, i)
            if final:
                _run_step(runner, {"op": "settle", "force": False, "guard": "force"},
                          len(seq.ops))
        except Finding as f:
            finding = f
    finally:
        runner.stop()
    return Outcome(seq, finding, runner.steps, runner.runs, runner.kills, runner.skipped,
                   time.monotonic() - t, log)


def _run_step(runner, op, index):
    try:
        runner.step(op)
    except Finding as f:
        f.step = index + 1
        raise


def explore(seed, server, families, steps, root, build=None, verbose=False):
    seq = new_sequence(seed, server, families)
    return _execute(seq, root, steps=steps, gen_seed=seed, build=build, verbose=verbose)


def replay(seq, root, build=None, verbose=False):
    return _execute(seq, root, build=build, verbose=verbose)


def _same(a, b):
    return a is not None and b is not None and a.key == b.key


def shrink(seq, finding, root, budget, build=None, progress=None):
    """Delta debugging over the operations up to the failing step: the shortest sequence found
    within `budget` seconds that fails with the same key. Returns (Sequence, replays)."""
    deadline = time.monotonic() + budget
    ops = list(seq.ops[:finding.step] if finding.step else seq.ops)
    replays = [0]

    def fails(candidate, base=None):
        replays[0] += 1
        d = Path(root) / ("shrink-%d" % replays[0])
        try:
            out = replay((base or seq).with_ops(candidate), d, build=build)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        ok = _same(out.finding, finding)
        if progress:
            progress("shrink: %d ops -> %s" % (len(candidate), "fails" if ok else "passes"))
        return ok

    # Without the bulk address book, every replay is faster.
    cols = seq.setup["collections"]
    if any(c.get("bulk") for c in cols):
        lean = Sequence(seq.seed, seq.server, seq.conflict, seq.families,
                        dict(seq.setup, collections=[c for c in cols if not c.get("bulk")]))
        if fails(ops, lean):
            seq = lean

    n = 2
    while len(ops) >= 2 and time.monotonic() < deadline:
        size = int(math.ceil(len(ops) / n))
        reduced = False
        for i in range(0, len(ops), size):
            if time.monotonic() >= deadline:
                break
            candidate = ops[:i] + ops[i + size:]
            if candidate != ops and fails(candidate):
                ops = candidate
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            n = min(len(ops), n * 2)
    if len(ops) == 1 and time.monotonic() < deadline and fails([]):
        ops = []
    return seq.with_ops(ops), replays[0]


def save_case(seq, finding, directory, original_len, reproduced=None):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = "%s-%s-%s.json" % (seq.server, re.sub(r"[^a-z0-9]+", "-", finding.key.lower())
                              .strip("-")[:40], seq.seed)
    d = seq.to_json()
    d["finding"] = finding.as_dict()
    d["note"] = "shrunk from %d operations%s" % (original_len, "; reproduced %s" % reproduced
                                                 if reproduced else "")
    path = directory / name
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def load_case(path):
    with open(path, encoding="utf-8") as f:
        return Sequence.from_json(json.load(f))


# -- configuration from the environment --------------------------------------------------------

def families_from_env(default_disabled=()):
    """The enabled families: KSYNC_RANDOM_ONLY (a comma list) or all of them minus
    KSYNC_RANDOM_DISABLE (a comma list; default: default_disabled)."""
    only = os.environ.get("KSYNC_RANDOM_ONLY", "").strip()
    if only:
        fams = {f.strip() for f in only.split(",") if f.strip()}
    else:
        dis = os.environ.get("KSYNC_RANDOM_DISABLE")
        disabled = set(default_disabled) if dis is None else {
            f.strip() for f in dis.split(",") if f.strip()}
        fams = set(FAMILIES) - disabled
    unknown = fams - set(FAMILIES)
    if unknown:
        raise ValueError("unknown operation families %s (known: %s)" % (
            sorted(unknown), ", ".join(sorted(FAMILIES))))
    return sorted(fams)


def seed_from_env(default):
    """KSYNC_RANDOM_SEED: a number, or 'random' (a new one, printed)."""
    v = os.environ.get("KSYNC_RANDOM_SEED", "").strip()
    if not v:
        return default
    if v == "random":
        return random.SystemRandom().randrange(1, 10 ** 9)
    return int(v)


def default_cases_dir():
    return Path(os.environ.get("KSYNC_RANDOM_CASES") or
                Path(__file__).resolve().parent.parent / "random_cases")


def op_signature(op):
    """What kind of operation this is: its name, and for a run its mode and fault."""
    if op["op"] != "run":
        return op["op"]
    f = op.get("fault") or {}
    return ":".join(x for x in ("run", op.get("mode", "plain"), f.get("kind"),
                                f.get("method") or f.get("target")) if x)


def report_finding(out, root, shrink_budget, build=None, progress=None, save=True,
                   ret_shrunk=None):
    """Shrinks a failed outcome's sequence, saves the case; returns a readable report."""
    f = out.finding
    seq = out.seq
    text = ["FINDING %s at step %s (seed %s, %s, replay: KSYNC_RANDOM_SEED=%s)" % (
        f.kind, f.step, seq.seed, seq.server, seq.seed), f.message]
    original = len(seq.ops[:f.step]) if f.step else len(seq.ops)
    shrunk, replays = seq.with_ops(seq.ops[:f.step] if f.step else seq.ops), 0
    # A finding that hangs on the moment of a SIGKILL may not come back: shrinking needs one
    # that does.
    again = 0
    for i in range(3 if shrink_budget > 0 else 0):
        d = Path(root) / ("again-%d" % i)
        o = replay(shrunk, d, build=build)
        shutil.rmtree(d, ignore_errors=True)
        if _same(o.finding, f):
            again += 1
            break
    if shrink_budget > 0 and not again:
        text.append("the sequence did not fail again in 3 replays (the moment of a kill or a "
                    "stall decides it): not shrunk")
    elif shrink_budget > 0:
        shrunk, replays = shrink(seq, f, root, shrink_budget, build=build, progress=progress)
    shrunk.finding = f.as_dict()
    hits = 0
    last = None
    for i in range(2):
        d = Path(root) / ("confirm-%d" % i)
        o = replay(shrunk, d, build=build)
        shutil.rmtree(d, ignore_errors=True)
        if _same(o.finding, f):
            hits += 1
            last = o
    text.append("shrunk from %d to %d operations in %d replays; the shrunk sequence fails "
                "the same way in %d of 2 replays" % (original, len(shrunk.ops), replays, hits))
    text.append(format_sequence(shrunk))
    if last is not None:
        text.append("the shrunk sequence's failure:\n" + last.finding.message)
        text.append("its log:\n" + "\n".join(last.log[-60:]))
    if save:
        path = save_case(shrunk, f, default_cases_dir(), original, "%d/2" % hits)
        text.append("saved as %s" % path)
    if ret_shrunk is not None:
        ret_shrunk.append(shrunk)
    return "\n".join(text)


# -- soak --------------------------------------------------------------------------------------

def soak(seconds, server_kinds, base_seed, families, steps, root, shrink_budget, build=None):
    """Sequences of `steps` operations, seeds base_seed, base_seed+1, ..., on each server in
    turn, until `seconds` have passed. Prints a summary; returns the number of findings."""
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    total_steps = total_runs = total_kills = 0
    seeds = []
    findings = {}
    seen_quick = {}
    seed = base_seed
    print("soak: %ds on %s, %d operations per sequence, seeds from %d, families: %s" % (
        seconds, ",".join(server_kinds), steps, base_seed, ",".join(families)), flush=True)
    while time.monotonic() < deadline:
        for kind in server_kinds:
            if time.monotonic() >= deadline:
                break
            d = Path(root) / ("%s-%d" % (kind, seed))
            out = explore(seed, kind, families, steps, d, build=build)
            total_steps += out.steps
            total_runs += out.runs
            total_kills += out.kills
            seeds.append("%s:%d" % (kind, seed))
            status = "ok"
            if out.finding:
                f = out.finding
                status = "FINDING %s at step %s" % (f.kind, f.step)
                # Findings are told apart by their invariant and the kind of the operation
                # that broke it, and after shrinking by the kinds of operations left.
                last = op_signature(out.seq.ops[f.step - 1]) if f.step and \
                    f.step <= len(out.seq.ops) else "settle"
                quick = (kind, f.key, last)
                if quick in seen_quick:
                    findings[seen_quick[quick]] += "\nseen again with seed %d (%s)" % (
                        seed, kind)
                else:
                    shrunk = []
                    rep = report_finding(out, d / "shrink", shrink_budget, build=build,
                                         progress=lambda s: print("  " + s, flush=True),
                                         ret_shrunk=shrunk)
                    ops = tuple(sorted({op_signature(o) for o in shrunk[0].ops}))
                    key = (kind, f.key, ops)
                    seen_quick[quick] = key
                    if key in findings:
                        findings[key] += "\nseen again with seed %d (%s)" % (seed, kind)
                    else:
                        findings[key] = rep
                        print(rep, flush=True)
            print("soak: %s seed %d: %d steps, %d runs in %.0fs: %s" % (
                kind, seed, out.steps, out.runs, out.elapsed, status), flush=True)
            shutil.rmtree(d, ignore_errors=True)
        seed += 1
    print("\nsoak summary: %d steps, %d ksyncd runs (%d killed) in %.0fs; %d sequences, seeds "
          "%s" % (total_steps, total_runs, total_kills, time.monotonic() - t0, len(seeds),
                  " ".join(seeds)))
    print("%d distinct finding(s)%s" % (len(findings), ":" if findings else ""))
    for (kind, key, ops), rep in sorted(findings.items()):
        print("\n== %s / %s / %s\n%s" % (kind, key, " ".join(ops), rep.splitlines()[0]))
        case = [ln for ln in rep.splitlines() if ln.startswith("saved as ")]
        if case:
            print("   " + case[0])
        extra = [ln for ln in rep.splitlines() if ln.startswith("seen again")]
        for ln in extra:
            print("   " + ln)
    return len(findings)


def main(argv=None):
    import argparse
    import tempfile
    p = argparse.ArgumentParser(description="ksync's randomized sync tester")
    p.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    p.add_argument("--servers", default=os.environ.get("SOAK_SERVERS", "radicale,xandikos"))
    p.add_argument("--steps", type=int, default=int(os.environ.get("KSYNC_RANDOM_STEPS",
                                                                   "150")))
    p.add_argument("--shrink-seconds", type=int,
                   default=int(os.environ.get("KSYNC_RANDOM_SHRINK_SECONDS", "900")))
    p.add_argument("--replay", metavar="CASE.json", help="replay one saved case, verbosely")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ksync-random-"))
    try:
        if args.replay:
            seq = load_case(args.replay)
            print(format_sequence(seq))
            out = replay(seq, root / "replay", verbose=True)
            if out.finding:
                print("FAILS: %s" % out.finding)
                return 1
            print("passes (%d steps)" % out.steps)
            return 0
        seed = seed_from_env(random.SystemRandom().randrange(1, 10 ** 9))
        n = soak(args.seconds, [s.strip() for s in args.servers.split(",") if s.strip()], seed,
                 families_from_env(), args.steps, root, args.shrink_seconds)
        return 1 if n else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
