"""Two-way sync (issue 3): local changes reach Radicale and Xandikos, both-sides changes merge
without loss, the mass-deletion guard and the account lock. Every outcome is checked on the
server itself (GET/PROPFIND), in the files and in ksync.db."""

import fcntl
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ksynctest import checks, gen, servers
from ksynctest.ksync import KHARD, TODOMAN

ACCOUNT = "acct"
BOOK = "people"
CAL = "work"


# -- test data -----------------------------------------------------------------------------------

def crlf(data):
    return re.sub(rb"\r?\n", b"\r\n", data)


def card(uid, fn, *extra):
    first, _, last = fn.partition(" ")
    lines = ["BEGIN:VCARD", "VERSION:3.0"]
    if uid:
        lines.append("UID:" + uid)
    lines += ["FN:" + fn, "N:%s;%s;;;" % (last, first)]
    lines += list(extra)
    lines.append("END:VCARD")
    return gen.serialize(lines)


def calendar(*components):
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//ksync//push tests//EN"]
    for comp in components:
        lines += comp
    lines.append("END:VCALENDAR")
    return gen.serialize(lines)


def vevent(uid, summary, *extra, start="20240610T090000Z", end="20240610T100000Z"):
    lines = ["BEGIN:VEVENT"]
    if uid:
        lines.append("UID:" + uid)
    lines += ["DTSTAMP:20240101T000000Z", "DTSTART:" + start, "DTEND:" + end,
              "SUMMARY:" + summary]
    return lines + list(extra) + ["END:VEVENT"]


def vtodo(uid, summary, *extra):
    lines = ["BEGIN:VTODO"]
    if uid:
        lines.append("UID:" + uid)
    lines += ["DTSTAMP:20240101T000000Z", "SUMMARY:" + summary, "STATUS:NEEDS-ACTION"]
    return lines + list(extra) + ["END:VTODO"]


def event(uid, summary, *extra, **kw):
    return calendar(vevent(uid, summary, *extra, **kw))


def todo(uid, summary, *extra):
    return calendar(vtodo(uid, summary, *extra))


# -- reading and editing items -------------------------------------------------------------------

def _unfold(data):
    text = crlf(data).decode("utf-8")
    return text.replace("\r\n ", "").replace("\r\n\t", "").split("\r\n")[:-1]


def _blocks(lines, comp):
    """[(begin, end)] line indexes of the components named `comp` (VCARD, VEVENT, VTODO)."""
    out = []
    begin = None
    for i, line in enumerate(lines):
        if line.upper() == "BEGIN:" + comp:
            begin = i
        elif line.upper() == "END:" + comp and begin is not None:
            out.append((begin, i))
            begin = None
    return out


def _name(line):
    return re.split(r"[;:]", line, 1)[0].upper()


def _pick(lines, comp, rid):
    for begin, end in _blocks(lines, comp):
        rids = [ln.partition(":")[2] for ln in lines[begin:end] if _name(ln) == "RECURRENCE-ID"]
        if (rid is None and not rids) or (rid is not None and rid in rids):
            return begin, end
    raise AssertionError("no %s (RECURRENCE-ID %r) in %r" % (comp, rid, lines))


def set_prop(data, comp, name, value, rid=None):
    """`data` with property NAME of component `comp` replaced by (or set to) NAME:value;
    value None removes it. rid picks a recurrence exception by its RECURRENCE-ID value."""
    lines = _unfold(data)
    begin, end = _pick(lines, comp, rid)
    body = [ln for ln in lines[begin + 1:end] if _name(ln) != name]
    if value is not None:
        body.append("%s:%s" % (name, value))
    lines[begin + 1:end] = body
    return gen.serialize(lines)


def get_prop(data, comp, name, rid=None):
    lines = _unfold(data)
    begin, end = _pick(lines, comp, rid)
    vals = [ln.split(":", 1)[1] for ln in lines[begin + 1:end] if _name(ln) == name]
    return vals[0] if vals else None


def uids(data):
    return [ln.split(":", 1)[1] for ln in _unfold(data) if _name(ln) == "UID"]


def norm(data):
    """Content of an item independent of property order, folding, line endings and parameter
    case: what a server may change when it stores an item."""
    comps = []
    for comp, props in gen.components(crlf(data)):
        items = []
        for name, params, value in props:
            ps = tuple(sorted(p.upper() for p in params.split(";") if p))
            items.append((name, ps, value))
        comps.append((comp, tuple(sorted(items))))
    return sorted(comps)


def _server_stamps(got, want):
    """`got` without what a server adds to every item it stores: DAViCal sets REV to the time
    of the PUT in a vCard that has none."""
    if b"BEGIN:VCARD" in want.upper() and get_prop(want, "VCARD", "REV") is None:
        return set_prop(got, "VCARD", "REV", None)
    return got


def assert_same_item(got, want, what):
    assert norm(_server_stamps(got, want)) == norm(want), \
        "%s differ:\n--- got\n%s\n--- want\n%s" % (
            what, crlf(got).decode("utf-8", "replace"), crlf(want).decode("utf-8", "replace"))


def server_items(server, coll):
    """{UID: (href, etag, bytes)} of a server collection."""
    out = {}
    for href, (etag, data) in server.contents(coll).items():
        found = uids(data)
        assert found, "server item %s has no UID" % href
        assert found[0] not in out, "UID %s twice on the server" % found[0]
        out[found[0]] = (href, etag, data)
    return out


def ignored_name(name, ext):
    return (name.startswith(".") or name.endswith(".tmp") or name.endswith("~")
            or not name.endswith(ext))


def local_items(d, ext):
    """{UID: (file name, bytes)} of the item files of a collection dir (editor leftovers left
    out)."""
    out = {}
    for p in sorted(Path(d).iterdir()):
        if not p.is_file() or p.is_symlink() or ignored_name(p.name, ext):
            continue
        data = p.read_bytes()
        found = set(uids(data))
        assert len(found) == 1, "%s holds UIDs %r" % (p, found)
        uid = found.pop()
        assert uid not in out, "UID %s in %s and %s" % (uid, out.get(uid, ("?",))[0], p.name)
        out[uid] = (p.name, data)
    return out


def check_converged(server, coll, d, ext):
    """Server collection and local dir hold the same items (same UIDs, same content)."""
    srv = server_items(server, coll)
    loc = local_items(d, ext)
    assert sorted(srv) == sorted(loc), "server UIDs %s, local UIDs %s" % (sorted(srv),
                                                                           sorted(loc))
    for uid in srv:
        assert_same_item(loc[uid][1], srv[uid][2], "file %s and server item %s" % (
            loc[uid][0], srv[uid][0]))
    return srv, loc


def write_rename(path, data):
    """Write as most editors and programs do: a temp file in the same dir, renamed over."""
    path = Path(path)
    tmp = path.parent / (".%s.%d.tmp" % (path.name, os.getpid()))
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def write_in_place(path, data):
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def conflict_rows(ks):
    return ks.query("SELECT * FROM conflict ORDER BY id")


def conflict_files(ks):
    base = ks.data_dir / "conflicts"
    if not base.exists():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file())


def stdout_line(r, kind, coll=None):
    coll = coll or (BOOK if kind == "contacts" else CAL)
    prefix = "%s/%s/%s: " % (ACCOUNT, kind, coll)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, "want one stdout line for %s, got:\n%s" % (prefix, r.stdout)
    return lines[0]


def requests_between(server, c0, c1):
    return server.requests_logged()[c0:c1]


def check_quiet_rerun(server, ks):
    """A run right after must make one request per home set (or collection) and write
    nothing."""
    before = checks.snapshot(ks)
    c0 = server.request_count()
    r = ks.sync()
    c1 = server.request_count()
    after = checks.snapshot(ks)
    want = checks.quiet_requests(server)
    assert sorted(requests_between(server, c0, c1)) == want, \
        "re-run made %d requests, want %s" % (c1 - c0, want)
    checks.check_unchanged(before, after)
    assert r.stdout == "", r.stdout
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    return r



def ctag_only(server):
    """SabreDAV 1.8 has no sync-collection: ksync compares the collection's getctag, which its
    own uploads move too. The run after one that wrote to a collection can only tell by listing
    it (PROPFIND Depth 1) that nobody else changed it: one request more per such collection."""
    return server.kind == "sabredav"


def check_settled(server, ks):
    """Two more runs after a sync that changed things: the first makes one request per home
    set (or collection), plus on a server with only a ctag one per collection written to, and
    changes no file and no item (only the collections' stored sync state may move); the second
    changes nothing at all."""
    before = checks.snapshot(ks)
    c0 = server.request_count()
    r = ks.sync()
    c1 = server.request_count()
    after = checks.snapshot(ks)
    cols = sorted(server.collections())
    want = checks.quiet_requests(server)
    made = requests_between(server, c0, c1)
    if ctag_only(server):
        extra = sorted(made)
        for path in want:
            assert path in extra, "re-run did not ask %s: %s" % (path, made)
            extra.remove(path)
        assert set(extra) <= set(cols) and len(extra) == len(set(extra)), \
            "re-run made %d requests, want %s and collections written to: %s" % (
                c1 - c0, want, made)
    else:
        assert sorted(made) == want, "re-run made %d requests, want %s: %s" % (
            c1 - c0, want, made)
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr

    def items_only(snap):
        return {"files": {k: v for k, v in snap["files"].items()
                          if not k.startswith("ksync.db")},
                "db": [line for line in snap["db"] if not line.startswith("collection ")]}

    checks.check_unchanged(items_only(before), items_only(after))
    return check_quiet_rerun(server, ks)

# -- set-up --------------------------------------------------------------------------------------

class Env:
    def __init__(self, server, ks, book, cal):
        self.server = server
        self.ks = ks
        self.book = book
        self.cal = cal
        self.book_dir = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        self.cal_dir = ks.collection_dir(ACCOUNT, "calendar", CAL)

    def card_path(self, name):
        return self.book_dir / (name + ".vcf")

    def cal_path(self, name):
        return self.cal_dir / (name + ".ics")

    def sitem(self, coll, uid):
        return server_items(self.server, coll)[uid]


def make_env(server, ks, cards=None, cal_items=None, conflict=None):
    """An address book 'people' and a calendar 'work' (events and tasks) seeded with
    {UID: bytes}, one initial sync."""
    book = server.make_addressbook(BOOK, "People")
    cal = server.make_calendar(CAL, "Work", components=("VEVENT", "VTODO"))
    if cards:
        server.seed(book, cards)
    if cal_items:
        server.seed(cal, cal_items)
    ks.add_account(ACCOUNT, server)
    if conflict:
        ks.accounts[ACCOUNT]["conflict"] = conflict
        ks.write_config()
    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    env = Env(server, ks, book, cal)
    if cards:
        assert sorted(local_items(env.book_dir, ".vcf")) == sorted(cards)
    if cal_items:
        assert sorted(local_items(env.cal_dir, ".ics")) == sorted(cal_items)
    return env


def uid_of(name):
    return "%s@ksync.example" % name


# -- every kind of local change ------------------------------------------------------------------

@pytest.mark.all_servers
def test_local_create_edit_delete(server, ks):
    names = ["alice", "bob", "carol", "gina", "hank"]
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize(), "TEL:+41 21 000 00 0%d"
                             % i) for i, n in enumerate(names)}
    cal_items = {uid_of("ev1"): event(uid_of("ev1"), "Planning"),
                 uid_of("ev2"): event(uid_of("ev2"), "Review"),
                 uid_of("t1"): todo(uid_of("t1"), "Buy paper"),
                 uid_of("t2"): todo(uid_of("t2"), "Call Bob")}
    env = make_env(server, ks, cards, cal_items)

    # Creations: file named after the UID, file named otherwise, file without UID.
    new_card = card(uid_of("ivan"), "Ivan New", "EMAIL:ivan@example.org")
    env.card_path(uid_of("ivan")).write_bytes(new_card)
    frank = card("frank-7f3a@ksync.example", "Frank Other", "NOTE:named freely")
    (env.book_dir / "Frank Other.vcf").write_bytes(frank)
    nouid = card(None, "Nora Nouid", "EMAIL:nora@example.org")
    (env.book_dir / "nora.vcf").write_bytes(nouid)
    weird_uid = "Ünïcode uid/with spaces:and..%2F"
    weird = card(weird_uid, "Wendy Weird")
    (env.book_dir / "wendy.vcf").write_bytes(weird)
    new_ev = event(uid_of("ev3"), "Workshop", "LOCATION:Room 1", start="20240611T130000Z",
                   end="20240611T150000Z")
    env.cal_path(uid_of("ev3")).write_bytes(new_ev)
    new_task = todo(None, "Water the plants", "PRIORITY:5")
    (env.cal_dir / "plants.ics").write_bytes(new_task)

    # Edits: in place with the same size (only mtime tells), in place, by rename.
    alice = cards[uid_of("alice")].replace(b"TEL:+41 21 000 00 00", b"TEL:+41 21 999 99 99")
    assert len(alice) == len(cards[uid_of("alice")])
    write_in_place(env.card_path(uid_of("alice")), alice)
    bob = set_prop(cards[uid_of("bob")], "VCARD", "EMAIL", "bob@new.example")
    write_in_place(env.card_path(uid_of("bob")), bob)
    carol = set_prop(cards[uid_of("carol")], "VCARD", "FN", "Carol Renamed")
    write_rename(env.card_path(uid_of("carol")), carol)
    ev1 = set_prop(cal_items[uid_of("ev1")], "VEVENT", "SUMMARY", "Planning (moved)")
    ev1 = set_prop(ev1, "VEVENT", "DTSTART", "20240612T090000Z")
    ev1 = set_prop(ev1, "VEVENT", "DTEND", "20240612T100000Z")
    write_rename(env.cal_path(uid_of("ev1")), ev1)
    t2 = set_prop(cal_items[uid_of("t2")], "VTODO", "STATUS", "COMPLETED")
    t2 = set_prop(t2, "VTODO", "COMPLETED", "20240105T100000Z")
    write_in_place(env.cal_path(uid_of("t2")), t2)

    # Deletions.
    env.card_path(uid_of("gina")).unlink()
    env.cal_path(uid_of("t1")).unlink()

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert r.stderr == "", r.stderr
    line = stdout_line(r, "contacts")
    assert re.search(r"; sent 7, deleted 1 on the server", line), line
    line = stdout_line(r, "calendars")
    assert re.search(r"; sent 4, deleted 1 on the server", line), line

    # Contacts on the server.
    srv = server_items(server, env.book)
    want = {uid_of("alice"), uid_of("bob"), uid_of("carol"), uid_of("hank"), uid_of("ivan"),
            "frank-7f3a@ksync.example", weird_uid}
    nora_file = (env.book_dir / "nora.vcf").read_bytes()
    nora_uids = uids(nora_file)
    assert len(nora_uids) == 1, "nora.vcf after the run:\n%s" % nora_file.decode()
    nora_uid = nora_uids[0]
    assert re.match(r"^\S+$", nora_uid) and nora_uid not in want
    want.add(nora_uid)
    assert set(srv) == want, "server UIDs %s, want %s" % (sorted(srv), sorted(want))
    assert servers.href_path(srv[uid_of("ivan")][0]) == \
        servers.href_path(env.book) + uid_of("ivan") + ".vcf"
    assert servers.href_path(srv["frank-7f3a@ksync.example"][0]) == \
        servers.href_path(env.book) + "frank-7f3a@ksync.example.vcf"
    assert_same_item(srv[uid_of("ivan")][2], new_card, "new card")
    assert_same_item(srv[weird_uid][2], weird, "card with a UID unsafe as a resource name")
    weird_href = servers.href_path(srv[weird_uid][0])
    assert weird_href.startswith(servers.href_path(env.book)) and weird_href.endswith(".vcf")
    assert re.match(r"^[A-Za-z0-9@._+-]+\.vcf$", weird_href[len(servers.href_path(env.book)):]), \
        weird_href
    assert_same_item(srv["frank-7f3a@ksync.example"][2], frank, "card with a free file name")
    assert_same_item(srv[nora_uid][2], set_prop(nouid, "VCARD", "UID", nora_uid),
                     "card created without UID")
    assert_same_item(nora_file, set_prop(nouid, "VCARD", "UID", nora_uid),
                     "nora.vcf with its UID written back")
    assert_same_item(srv[uid_of("alice")][2], alice, "alice (same-size edit in place)")
    assert_same_item(srv[uid_of("bob")][2], bob, "bob (edit in place)")
    assert_same_item(srv[uid_of("carol")][2], carol, "carol (edit by rename)")
    assert_same_item(srv[uid_of("hank")][2], cards[uid_of("hank")], "hank (untouched)")
    assert (env.book_dir / "Frank Other.vcf").exists() and (env.book_dir / "nora.vcf").exists()

    # Calendar on the server.
    srv = server_items(server, env.cal)
    task_uids = uids((env.cal_dir / "plants.ics").read_bytes())
    assert len(task_uids) == 1, (env.cal_dir / "plants.ics").read_bytes().decode()
    task_uid = task_uids[0]
    assert get_prop((env.cal_dir / "plants.ics").read_bytes(), "VTODO", "UID") == task_uid, \
        "the UID must be written into the VTODO"
    assert set(srv) == {uid_of("ev1"), uid_of("ev2"), uid_of("ev3"), uid_of("t2"), task_uid}
    assert_same_item(srv[uid_of("ev3")][2], new_ev, "new event")
    assert_same_item(srv[task_uid][2], set_prop(new_task, "VTODO", "UID", task_uid),
                     "task created without UID")
    assert_same_item(srv[uid_of("ev1")][2], ev1, "ev1 (edit by rename)")
    assert_same_item(srv[uid_of("t2")][2], t2, "t2 (completed, edit in place)")
    assert servers.href_path(srv[uid_of("ev3")][0]) == \
        servers.href_path(env.cal) + uid_of("ev3") + ".ics"

    # The cache knows every item by its server href and file.
    rows = {(it["coll_name"], it["uid"]): it for it in ks.items(ACCOUNT)}
    for uid, fname in ((nora_uid, "nora.vcf"), ("frank-7f3a@ksync.example", "Frank Other.vcf")):
        assert rows[(BOOK, uid)]["filename"].rsplit("/", 1)[-1] == fname
    assert (BOOK, uid_of("gina")) not in rows and (CAL, uid_of("t1")) not in rows

    check_converged(server, env.book, env.book_dir, ".vcf")
    check_converged(server, env.cal, env.cal_dir, ".ics")
    # Nothing else in the dirs: no temp file left by the UID write-back.
    assert sorted(p.name for p in env.book_dir.iterdir()) == sorted(
        ["displayname", "Frank Other.vcf", "nora.vcf", "wendy.vcf"] +
        [uid_of(n) + ".vcf" for n in ("alice", "bob", "carol", "hank", "ivan")])
    assert sorted(p.name for p in env.cal_dir.iterdir()) == sorted(
        ["displayname", "plants.ics"] + [uid_of(n) + ".ics" for n in ("ev1", "ev2", "ev3", "t2")])
    assert (env.book_dir / "nora.vcf").stat().st_mode & 0o077 == 0
    check_settled(server, ks)


@pytest.mark.all_servers
def test_uploads_end_as_the_server_stores_them(server, ks):
    """A server may store what it is sent otherwise (Radicale reorders properties, DAViCal
    folds long lines, both still answering with an ETag): after the run, the file and the
    cache hold the server's bytes, new items and edits alike."""
    long_note = "NOTE:" + " ".join(["long line"] * 20)
    env = make_env(server, ks, {uid_of("olga"): card(uid_of("olga"), "Olga Old")})
    env.card_path(uid_of("pia")).write_bytes(card(uid_of("pia"), "Pia New", long_note))
    olga = card(uid_of("olga"), "Olga Old", long_note, "TEL:+41 21 000 00 01")
    write_in_place(env.card_path(uid_of("olga")), olga)
    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    checks.check_mirror(ks, server, ACCOUNT)


@pytest.mark.all_servers
def test_run_after_push_writes_nothing(server, ks):
    """The run after one that sent changes makes one request per collection and writes
    nothing: no file, no row, not even the collection's sync state."""
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize()) for n in ("ann", "ben")}
    env = make_env(server, ks, cards, {uid_of("ev1"): event(uid_of("ev1"), "Planning")})
    env.card_path(uid_of("cid")).write_bytes(card(uid_of("cid"), "Cid New"))
    write_rename(env.card_path(uid_of("ann")),
                 set_prop(cards[uid_of("ann")], "VCARD", "NOTE", "edited"))
    env.card_path(uid_of("ben")).unlink()
    env.cal_path(uid_of("ev2")).write_bytes(event(uid_of("ev2"), "Retro"))
    r = ks.sync()
    assert "; sent 2, deleted 1 on the server" in stdout_line(r, "contacts"), r.stdout
    assert "; sent 1, deleted 0 on the server" in stdout_line(r, "calendars"), r.stdout
    check_converged(server, env.book, env.book_dir, ".vcf")
    check_converged(server, env.cal, env.cal_dir, ".ics")
    if ctag_only(server):
        check_settled(server, ks)
    else:
        check_quiet_rerun(server, ks)

@pytest.mark.all_servers
def test_editor_writes_and_leftovers_are_not_uploaded(server, ks):
    names = ["dave", "erin", "fred", "gus"]
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize()) for n in names}
    cal_items = {uid_of("ev1"): event(uid_of("ev1"), "Standup")}
    env = make_env(server, ks, cards, cal_items)
    c0 = server.request_count()

    junk = {}

    def leave(d, name, data):
        (d / name).write_bytes(data)
        junk[d / name] = data

    # vim: the original renamed to a backup, the new text written, backup and swap left.
    dave_path = env.card_path(uid_of("dave"))
    # The synced file: the server's version (DAViCal stamps a REV on every card it stores).
    junk[env.book_dir / (dave_path.name + "~")] = dave_path.read_bytes()
    os.rename(dave_path, env.book_dir / (dave_path.name + "~"))
    dave = set_prop(cards[uid_of("dave")], "VCARD", "NOTE", "edited in vim")
    dave_path.write_bytes(dave)
    leave(env.book_dir, "." + dave_path.name + ".swp",
          b"b0VIM 9.0\x00\x00\x10\x00" + card("swap-uid@ksync.example", "Swap File"))
    # emacs: a dangling symlink as lock while editing in place, a backup file after.
    erin_path = env.card_path(uid_of("erin"))
    lock = env.book_dir / (".#" + erin_path.name)
    os.symlink("user@host.12345:1700000000", lock)
    erin = set_prop(cards[uid_of("erin")], "VCARD", "NOTE", "edited in emacs")
    write_in_place(erin_path, erin)
    leave(env.book_dir, "erin-backup.vcf~", card("emacs-backup-uid@ksync.example", "Erin Old"))
    # A program's temp file, and a file without the extension, both with complete vCards.
    leave(env.book_dir, "fred.vcf.tmp", card("tmp-uid@ksync.example", "Fred Temp"))
    leave(env.book_dir, "notes.tmp", card("tmp2-uid@ksync.example", "Notes Temp"))
    leave(env.book_dir, "README", card("noext-uid@ksync.example", "No Extension"))
    leave(env.book_dir, "gus.vcf.orig", card("orig-uid@ksync.example", "Gus Orig"))
    # A hidden .vcf file (khard/atomicwrites temp names start with a dot).
    leave(env.book_dir, ".hidden.vcf", card("hidden-uid@ksync.example", "Hidden File"))
    # The same in the calendar.
    ev1 = set_prop(cal_items[uid_of("ev1")], "VEVENT", "SUMMARY", "Standup (longer)")
    write_rename(env.cal_path(uid_of("ev1")), ev1)
    leave(env.cal_dir, uid_of("ev1") + ".ics~", event("cal-backup-uid@ksync.example", "Old"))
    leave(env.cal_dir, "draft.ics.tmp", event("cal-tmp-uid@ksync.example", "Draft"))
    leave(env.cal_dir, ".#draft.ics", event("cal-lock-uid@ksync.example", "Lock"))
    leave(env.cal_dir, "agenda", event("cal-noext-uid@ksync.example", "No Extension"))

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    c1 = server.request_count()

    srv = server_items(server, env.book)
    assert set(srv) == set(cards), "server UIDs %s" % sorted(srv)
    assert_same_item(srv[uid_of("dave")][2], dave, "dave (vim-style write)")
    assert_same_item(srv[uid_of("erin")][2], erin, "erin (emacs-style write)")
    assert_same_item(srv[uid_of("fred")][2], cards[uid_of("fred")], "fred (untouched)")
    srv = server_items(server, env.cal)
    assert set(srv) == {uid_of("ev1")}, "server UIDs %s" % sorted(srv)
    assert_same_item(srv[uid_of("ev1")][2], ev1, "ev1 (written by rename)")
    line = stdout_line(r, "contacts")
    assert "; sent 2, deleted 0 on the server" in line, line
    line = stdout_line(r, "calendars")
    assert "; sent 1, deleted 0 on the server" in line, line
    puts = [p for p in requests_between(server, c0, c1) if "uid" in p.lower()]
    assert not puts, "requests for leftover files: %s" % puts

    # The leftovers are the user's: neither uploaded nor touched.
    for path, data in junk.items():
        assert path.read_bytes() == data, "%s was changed" % path
    assert os.path.islink(lock) and os.readlink(lock) == "user@host.12345:1700000000"
    lock.unlink()
    check_settled(server, ks)



@pytest.mark.all_servers
def test_local_rename_keeps_the_item(server, ks):
    """`mv a.vcf b.vcf`: the same UID under a new file name is neither lost nor doubled on the
    server."""
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize(), "NOTE:%s" % n)
             for n in ("alice", "bob")}
    env = make_env(server, ks, cards)
    os.rename(env.card_path(uid_of("alice")), env.book_dir / "Alice Example.vcf")
    renamed_edited = set_prop(cards[uid_of("bob")], "VCARD", "NOTE", "moved and edited")
    env.card_path(uid_of("bob")).unlink()
    (env.book_dir / "bob-new-name.vcf").write_bytes(renamed_edited)

    r = ks.run()
    assert r.rc == 0, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    srv, loc = check_converged(server, env.book, env.book_dir, ".vcf")
    assert set(srv) == set(cards), "server UIDs %s\nstderr:\n%s" % (sorted(srv), r.stderr)
    assert_same_item(srv[uid_of("alice")][2], cards[uid_of("alice")], "alice after mv")
    assert_same_item(srv[uid_of("bob")][2], renamed_edited, "bob after mv and edit")
    assert loc[uid_of("alice")][0] == "Alice Example.vcf"
    assert loc[uid_of("bob")][0] == "bob-new-name.vcf"
    check_settled(server, ks)


@pytest.mark.all_servers
def test_same_new_uid_on_both_sides(server, ks):
    """A new item with the same UID and file name created on the server and locally between
    two runs: one item on each side, neither version lost."""
    env = make_env(server, ks, {uid_of("alice"): card(uid_of("alice"), "Alice Example")})
    server.put(env.book + uid_of("dup") + ".vcf",
               card(uid_of("dup"), "Dup Example", "NOTE:from the server", "TEL:+41 1"),
               if_none_match="*")
    local = card(uid_of("dup"), "Dup Example", "NOTE:from here", "EMAIL:dup@example.org")
    env.card_path(uid_of("dup")).write_bytes(local)

    r = ks.run()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    srv, loc = check_converged(server, env.book, env.book_dir, ".vcf")
    assert set(srv) == {uid_of("alice"), uid_of("dup")}
    data = srv[uid_of("dup")][2]
    assert get_prop(data, "VCARD", "TEL") == "+41 1", data.decode()
    assert get_prop(data, "VCARD", "EMAIL") == "dup@example.org", data.decode()
    kept = [p.read_bytes() for p in conflict_files(ks)]
    notes = [get_prop(data, "VCARD", "NOTE")] + [get_prop(k, "VCARD", "NOTE") for k in kept]
    assert "from the server" in notes and "from here" in notes, (notes, r.stderr)
    check_settled(server, ks)

# -- real programs -------------------------------------------------------------------------------

def run_program(ks, argv, stdin=b""):
    p = subprocess.run(argv, env=ks.env(), cwd=ks.home, input=stdin, capture_output=True,
                       timeout=120)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(argv), p.returncode, out[-3000:], err[-3000:])
    return out


def reader_name(ks, kind, coll):
    books, cals = ks.reader_dirs(ACCOUNT)
    dirs = books if kind == "addressbook" else cals
    for i, d in enumerate(dirs):
        if d.name == coll:
            return "%s_%d" % (coll, i)
    raise AssertionError("%s not among %s" % (coll, dirs))


@pytest.mark.all_servers
def test_khard_new_and_modify(server, ks):
    cards = {uid_of("alice"): card(uid_of("alice"), "Alice Example",
                                   "TEL;TYPE=cell:+41 79 000 00 00", "NOTE:from the server")}
    env = make_env(server, ks, cards)
    ks.configure_readers(ACCOUNT)
    book = reader_name(ks, "addressbook", BOOK)

    new_yaml = ks.root / "new.yaml"
    new_yaml.write_text("First name : Ada\nLast name : Lovelace\nEmail :\n"
                        "    home : ada@example.org\nNote : analytical engine\n",
                        encoding="utf-8")
    run_program(ks, [KHARD, "new", "-a", book, "-i", str(new_yaml)])
    mod_yaml = ks.root / "modify.yaml"
    mod_yaml.write_text("First name : Alice\nLast name : Example\nPhone :\n"
                        "    cell : +41 79 000 00 00\nEmail :\n    work : alice@work.example\n"
                        "Note : changed in khard\n", encoding="utf-8")
    run_program(ks, [KHARD, "modify", "-a", book, "-i", str(mod_yaml), "Alice"], stdin=b"y\n")
    local = local_items(env.book_dir, ".vcf")
    ada = [u for u, (_, data) in local.items() if b"Lovelace" in data]
    assert len(ada) == 1, "khard did not write the new contact: %s" % sorted(local)
    assert b"changed in khard" in local[uid_of("alice")][1], "khard did not modify alice"

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    srv = server_items(server, env.book)
    assert set(srv) == {uid_of("alice"), ada[0]}
    data = srv[ada[0]][2]
    assert gen.unescape(get_prop(data, "VCARD", "FN")) == "Ada Lovelace"
    assert "ada@example.org" in [ln.split(":", 1)[1] for ln in _unfold(data)
                                 if _name(ln) == "EMAIL"]
    data = srv[uid_of("alice")][2]
    assert gen.unescape(get_prop(data, "VCARD", "NOTE")) == "changed in khard"
    assert "alice@work.example" in data.decode()
    check_converged(server, env.book, env.book_dir, ".vcf")

    listed, _ = ks.khard_list()
    assert sorted(n for _, n, _ in listed) == ["Ada Lovelace", "Alice Example"]
    check_settled(server, ks)


def todoman_tasks(ks):
    tasks, _ = ks.todoman_list()
    return {t["summary"]: t for t in tasks}


@pytest.mark.all_servers
def test_todoman_new_and_done(server, ks):
    env = make_env(server, ks, cal_items={uid_of("t1"): todo(uid_of("t1"), "Pay rent"),
                                       uid_of("t2"): todo(uid_of("t2"), "Book train")})
    ks.configure_readers(ACCOUNT)

    # todoman 4.1 rejects its own empty default priority, hence --priority.
    out = run_program(ks, [TODOMAN, "--porcelain", "new", "-l", "Work", "--priority", "0",
                           "Buy milk"])
    assert "Buy milk" in out
    tasks = todoman_tasks(ks)
    run_program(ks, [TODOMAN, "done", str(tasks["Pay rent"]["id"])])

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    srv = server_items(server, env.cal)
    by_summary = {gen.unescape(get_prop(d, "VTODO", "SUMMARY")): (u, d)
                  for u, (_, _, d) in srv.items()}
    assert set(by_summary) == {"Pay rent", "Book train", "Buy milk"}, sorted(by_summary)
    assert get_prop(by_summary["Pay rent"][1], "VTODO", "STATUS") == "COMPLETED"
    assert get_prop(by_summary["Book train"][1], "VTODO", "STATUS") == "NEEDS-ACTION"
    assert get_prop(by_summary["Buy milk"][1], "VTODO", "STATUS") == "NEEDS-ACTION"
    check_converged(server, env.cal, env.cal_dir, ".ics")
    check_settled(server, ks)
    tasks = todoman_tasks(ks)
    assert tasks["Pay rent"]["completed"] and not tasks["Buy milk"]["completed"]


# -- merges and conflicts ------------------------------------------------------------------------

def server_edit(env, coll, uid, fn):
    """Change a server item with fn(bytes) -> bytes, If-Match its etag."""
    href, etag, data = env.sitem(coll, uid)
    new = fn(data)
    env.server.put(href, new, if_match=etag)
    return new


@pytest.mark.all_servers
def test_merge_different_properties(server, ks):
    base = card(uid_of("alice"), "Alice Example", "TEL:+41 21 000 00 00", "NOTE:base note",
                "ORG:Old Org")
    env = make_env(server, ks, {uid_of("alice"): base})
    server_edit(env, env.book, uid_of("alice"),
                lambda d: set_prop(d, "VCARD", "TEL", "+41 21 111 11 11"))
    local = set_prop(base, "VCARD", "NOTE", "local note")
    local = set_prop(local, "VCARD", "EMAIL", "alice@local.example")
    write_rename(env.card_path(uid_of("alice")), local)

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert "conflict" not in r.stderr.lower(), r.stderr
    srv, loc = check_converged(server, env.book, env.book_dir, ".vcf")
    data = srv[uid_of("alice")][2]
    assert get_prop(data, "VCARD", "TEL") == "+41 21 111 11 11", data.decode()
    assert get_prop(data, "VCARD", "NOTE") == "local note", data.decode()
    assert get_prop(data, "VCARD", "EMAIL") == "alice@local.example", data.decode()
    assert get_prop(data, "VCARD", "ORG") == "Old Org", data.decode()
    assert loc[uid_of("alice")][0] == uid_of("alice") + ".vcf"
    assert conflict_rows(ks) == [] and conflict_files(ks) == []
    check_settled(server, ks)


def _same_property_edits(server, ks, conflict=None):
    base = card(uid_of("alice"), "Alice Example", "TEL:+41 21 000 00 00", "NOTE:base note")
    env = make_env(server, ks, {uid_of("alice"): base}, conflict=conflict)
    remote = server_edit(env, env.book, uid_of("alice"),
                         lambda d: set_prop(d, "VCARD", "NOTE", "server note"))
    local = set_prop(base, "VCARD", "NOTE", "local note")
    write_rename(env.card_path(uid_of("alice")), local)
    r = ks.run()
    return env, r, remote, local


def _check_conflict(ks, env, r, winner, loser, loser_data, winner_note):
    assert r.rc == 0, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    srv, loc = check_converged(env.server, env.book, env.book_dir, ".vcf")
    data = srv[uid_of("alice")][2]
    assert get_prop(data, "VCARD", "NOTE") == winner_note, data.decode()
    assert get_prop(data, "VCARD", "TEL") == "+41 21 000 00 00"

    files = conflict_files(ks)
    assert len(files) == 1, "conflict copies: %s" % files
    kept = files[0]
    rel = kept.relative_to(ks.data_dir / "conflicts")
    assert rel.parts[:-1] == (ACCOUNT, "contacts", BOOK), rel
    assert re.match(r"^%s\.[0-9TZ]+\.%s\.vcf$" % (re.escape(uid_of("alice")), loser),
                    kept.name), kept.name
    assert_same_item(kept.read_bytes(), loser_data, "kept %s version" % loser)
    assert (kept.stat().st_mode & 0o777) == 0o600

    rows = conflict_rows(ks)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["account"] == ACCOUNT
    assert row["collection"] in (BOOK, "contacts/" + BOOK, servers.href_path(env.book)), row
    assert row["uid"] == uid_of("alice")
    assert (row["filename"] or "").rsplit("/", 1)[-1] == uid_of("alice") + ".vcf", row
    assert Path(row["kept_path"]) == kept, row
    assert row["winner"] == winner, row
    assert "NOTE" in (row["summary"] or "").upper(), row

    msg = [ln for ln in r.stderr.splitlines() if "conflict in" in ln]
    assert len(msg) == 1, r.stderr
    assert msg[0].startswith("%s/contacts/%s: conflict in '%s.vcf' (" % (
        ACCOUNT, BOOK, uid_of("alice"))), msg[0]
    assert "NOTE" in msg[0].upper()
    assert "the %s version won; the %s version is kept in %s" % (winner, loser, kept) in msg[0], \
        msg[0]
    assert "1 conflict" in stdout_line(r, "contacts"), r.stdout


@pytest.mark.all_servers
def test_same_property_server_wins_by_default(server, ks):
    env, r, remote, local = _same_property_edits(server, ks)
    _check_conflict(ks, env, r, "server", "local", local, "server note")
    check_settled(server, ks)


@pytest.mark.parametrize("where", ["general", "account"])
def test_same_property_local_wins(server, ks, where):
    if where == "general":
        ks.extra_config = "[general]\nconflict = local-wins\n"
        env, r, remote, local = _same_property_edits(server, ks)
    else:
        env, r, remote, local = _same_property_edits(server, ks, conflict="local-wins")
    _check_conflict(ks, env, r, "local", "server", remote, "local note")
    check_settled(server, ks)


@pytest.mark.all_servers
def test_event_same_property_conflict(server, ks):
    ev = event(uid_of("ev1"), "Planning", "LOCATION:Room 1")
    env = make_env(server, ks, cal_items={uid_of("ev1"): ev})
    server_edit(env, env.cal, uid_of("ev1"),
                lambda d: set_prop(d, "VEVENT", "SUMMARY", "Planning (server)"))
    local = set_prop(ev, "VEVENT", "SUMMARY", "Planning (local)")
    local = set_prop(local, "VEVENT", "LOCATION", "Room 2")
    write_rename(env.cal_path(uid_of("ev1")), local)

    r = ks.run()
    assert r.rc == 0, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    srv, _ = check_converged(server, env.cal, env.cal_dir, ".ics")
    data = srv[uid_of("ev1")][2]
    assert get_prop(data, "VEVENT", "SUMMARY") == "Planning (server)", data.decode()
    assert get_prop(data, "VEVENT", "LOCATION") == "Room 2", data.decode()
    files = conflict_files(ks)
    assert len(files) == 1, files
    assert files[0].relative_to(ks.data_dir / "conflicts").parts[:-1] == (ACCOUNT, "calendars",
                                                                           CAL)
    assert re.match(r"^%s\.[0-9TZ]+\.local\.ics$" % re.escape(uid_of("ev1")), files[0].name), \
        files[0].name
    assert_same_item(files[0].read_bytes(), local, "kept local version")
    rows = conflict_rows(ks)
    assert len(rows) == 1 and rows[0]["winner"] == "server", rows
    assert "SUMMARY" in (rows[0]["summary"] or "").upper(), rows
    msg = [ln for ln in r.stderr.splitlines() if "conflict in" in ln]
    assert len(msg) == 1 and msg[0].startswith(
        "%s/calendars/%s: conflict in '%s.ics' (" % (ACCOUNT, CAL, uid_of("ev1"))), r.stderr
    check_settled(server, ks)

@pytest.mark.all_servers
def test_deleted_locally_modified_on_server(server, ks):
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize()) for n in ("alice", "bob")}
    env = make_env(server, ks, cards)
    remote = server_edit(env, env.book, uid_of("alice"),
                         lambda d: set_prop(d, "VCARD", "NOTE", "edited on the phone"))
    env.card_path(uid_of("alice")).unlink()

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    path = env.card_path(uid_of("alice"))
    assert path.exists(), "the locally deleted, remotely edited contact was not restored"
    srv, loc = check_converged(server, env.book, env.book_dir, ".vcf")
    assert set(srv) == set(cards)
    assert_same_item(srv[uid_of("alice")][2], remote, "server version")
    assert path.read_bytes() == srv[uid_of("alice")][2], "restored file is not the server's bytes"
    check_settled(server, ks)


@pytest.mark.all_servers
def test_modified_locally_deleted_on_server(server, ks):
    cards = {uid_of(n): card(uid_of(n), "%s Example" % n.capitalize()) for n in ("alice", "bob")}
    cal_items = {uid_of("ev1"): event(uid_of("ev1"), "Planning")}
    env = make_env(server, ks, cards, cal_items)
    href, etag, _ = env.sitem(env.book, uid_of("alice"))
    server.delete(href, if_match=etag)
    href, etag, _ = env.sitem(env.cal, uid_of("ev1"))
    server.delete(href, if_match=etag)
    local = set_prop(cards[uid_of("alice")], "VCARD", "NOTE", "edited locally")
    write_rename(env.card_path(uid_of("alice")), local)
    local_ev = set_prop(cal_items[uid_of("ev1")], "VEVENT", "LOCATION", "Room 7")
    write_in_place(env.cal_path(uid_of("ev1")), local_ev)

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    srv, loc = check_converged(server, env.book, env.book_dir, ".vcf")
    assert set(srv) == set(cards), "server UIDs %s" % sorted(srv)
    assert_same_item(srv[uid_of("alice")][2], local, "re-created contact")
    srv, loc = check_converged(server, env.cal, env.cal_dir, ".ics")
    assert set(srv) == {uid_of("ev1")}, "server UIDs %s" % sorted(srv)
    assert_same_item(srv[uid_of("ev1")][2], local_ev, "re-created event")
    check_settled(server, ks)


def test_identical_edits_are_no_conflict(server, ks):
    base = card(uid_of("alice"), "Alice Example", "NOTE:base")
    env = make_env(server, ks, {uid_of("alice"): base})
    server_edit(env, env.book, uid_of("alice"), lambda d: set_prop(d, "VCARD", "NOTE", "same"))
    local = set_prop(base, "VCARD", "NOTE", "same")
    write_rename(env.card_path(uid_of("alice")), local)

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert "conflict" not in (r.stderr + r.stdout).lower(), r.stdout + r.stderr
    srv, _ = check_converged(server, env.book, env.book_dir, ".vcf")
    assert get_prop(srv[uid_of("alice")][2], "VCARD", "NOTE") == "same"
    assert conflict_rows(ks) == [] and conflict_files(ks) == []
    check_settled(server, ks)


@pytest.mark.all_servers
def test_event_merge_summary_on_server_location_locally(server, ks):
    ev = event(uid_of("ev1"), "Planning", "LOCATION:Room 1", "DESCRIPTION:agenda")
    rec = calendar(vevent(uid_of("rec"), "Weekly", "RRULE:FREQ=WEEKLY;COUNT=4"),
                   vevent(uid_of("rec"), "Weekly (moved)", "RECURRENCE-ID:20240617T090000Z",
                          start="20240618T090000Z", end="20240618T100000Z"))
    env = make_env(server, ks, cal_items={uid_of("ev1"): ev, uid_of("rec"): rec})
    server_edit(env, env.cal, uid_of("ev1"),
                lambda d: set_prop(d, "VEVENT", "SUMMARY", "Planning 2025"))
    write_rename(env.cal_path(uid_of("ev1")), set_prop(ev, "VEVENT", "LOCATION", "Room 2"))
    # The moved occurrence renamed on the server, the series' location set locally.
    server_edit(env, env.cal, uid_of("rec"),
                lambda d: set_prop(d, "VEVENT", "SUMMARY", "Weekly (moved on the server)",
                                   rid="20240617T090000Z"))
    write_rename(env.cal_path(uid_of("rec")), set_prop(rec, "VEVENT", "LOCATION", "Room 9"))

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert "conflict" not in r.stderr.lower(), r.stderr
    srv, _ = check_converged(server, env.cal, env.cal_dir, ".ics")
    data = srv[uid_of("ev1")][2]
    assert get_prop(data, "VEVENT", "SUMMARY") == "Planning 2025", data.decode()
    assert get_prop(data, "VEVENT", "LOCATION") == "Room 2", data.decode()
    assert get_prop(data, "VEVENT", "DESCRIPTION") == "agenda", data.decode()
    data = srv[uid_of("rec")][2]
    assert get_prop(data, "VEVENT", "LOCATION") == "Room 9", data.decode()
    assert get_prop(data, "VEVENT", "SUMMARY") == "Weekly", data.decode()
    assert get_prop(data, "VEVENT", "SUMMARY", rid="20240617T090000Z") == \
        "Weekly (moved on the server)", data.decode()
    assert get_prop(data, "VEVENT", "LOCATION", rid="20240617T090000Z") is None, data.decode()
    assert conflict_rows(ks) == [] and conflict_files(ks) == []
    check_settled(server, ks)


def test_todo_done_in_todoman_merges_with_server_summary(server, ks):
    t1 = todo(uid_of("t1"), "Pay rent", "DESCRIPTION:before the 5th")
    env = make_env(server, ks, cal_items={uid_of("t1"): t1})
    ks.configure_readers(ACCOUNT)
    server_edit(env, env.cal, uid_of("t1"),
                lambda d: set_prop(d, "VTODO", "SUMMARY", "Pay rent and bills"))
    tasks = todoman_tasks(ks)
    run_program(ks, [TODOMAN, "done", str(tasks["Pay rent"]["id"])])
    assert get_prop(env.cal_path(uid_of("t1")).read_bytes(), "VTODO", "STATUS") == "COMPLETED"

    r = ks.sync()
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert "conflict" not in r.stderr.lower(), r.stderr
    srv, _ = check_converged(server, env.cal, env.cal_dir, ".ics")
    data = srv[uid_of("t1")][2]
    assert get_prop(data, "VTODO", "SUMMARY") == "Pay rent and bills", data.decode()
    assert get_prop(data, "VTODO", "STATUS") == "COMPLETED", data.decode()
    assert get_prop(data, "VTODO", "COMPLETED") is not None, data.decode()
    assert get_prop(data, "VTODO", "DESCRIPTION") == "before the 5th", data.decode()
    assert conflict_rows(ks) == [] and conflict_files(ks) == []
    tasks = todoman_tasks(ks)
    assert set(tasks) == {"Pay rent and bills"} and tasks["Pay rent and bills"]["completed"]
    check_settled(server, ks)


# -- files that must not be uploaded -------------------------------------------------------------

@pytest.mark.all_servers
def test_bad_local_files_are_reported_not_uploaded(server, ks):
    cards = {uid_of("alice"): card(uid_of("alice"), "Alice Example", "NOTE:original")}
    env = make_env(server, ks, cards, {uid_of("ev1"): event(uid_of("ev1"), "Planning")})
    before_book = server.list(env.book)
    before_cal = server.list(env.cal)
    bad = {
        env.book_dir / "broken.vcf": b"this is not a vCard\r\nat all\r\n",
        env.book_dir / "truncated.vcf": b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:trunc@ksync.example"
                                        b"\r\nFN:Trunc\r\n",
        env.book_dir / "two.vcf": card(uid_of("two-a"), "Two A") + card(uid_of("two-b"), "Two B"),
        env.cal_dir / "two.ics": calendar(vevent(uid_of("two-c"), "First"),
                                          vevent(uid_of("two-d"), "Second")),
    }
    for path, data in bad.items():
        path.write_bytes(data)
    # A synced file broken by an edit is neither sent nor taken for a deletion.
    broken_alice = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + uid_of("alice").encode() + \
        b"\r\nFN:Alice\r\nNOTE:half-written\r\n"
    bad[env.card_path(uid_of("alice"))] = broken_alice
    write_in_place(env.card_path(uid_of("alice")), broken_alice)

    r = ks.run()
    reported = {m.group(1) for m in re.finditer(r"not uploading '([^']+)'", r.stderr)}
    assert reported == {p.name for p in bad}, "reported %s\nstderr:\n%s" % (sorted(reported),
                                                                          r.stderr)
    for line in r.stderr.splitlines():
        if "not uploading" in line:
            assert re.match(r"^%s/(contacts/%s|calendars/%s): not uploading '" % (
                ACCOUNT, BOOK, CAL), line), line
    assert r.rc == 0, "rc %d\nstdout:\n%s\nstderr:\n%s" % (r.rc, r.stdout, r.stderr)
    assert server.list(env.book) == before_book, "the address book changed on the server"
    assert server.list(env.cal) == before_cal, "the calendar changed on the server"
    assert get_prop(env.sitem(env.book, uid_of("alice"))[2], "VCARD", "NOTE") == "original"
    for path, data in bad.items():
        assert path.read_bytes() == data, "%s was changed" % path.name

    # Still not uploaded on the next run; fixed files are sent.
    r = ks.run()
    assert server.list(env.book) == before_book and server.list(env.cal) == before_cal
    for path, data in bad.items():
        assert path.read_bytes() == data, "%s was changed" % path.name
    (env.book_dir / "broken.vcf").write_bytes(card(uid_of("fixed"), "Fixed Now"))
    fixed_alice = set_prop(cards[uid_of("alice")], "VCARD", "NOTE", "repaired")
    write_rename(env.card_path(uid_of("alice")), fixed_alice)
    r = ks.run()
    reported = {m.group(1) for m in re.finditer(r"not uploading '([^']+)'", r.stderr)}
    assert reported == {"truncated.vcf", "two.vcf", "two.ics"}, r.stderr
    srv = server_items(server, env.book)
    assert set(srv) == {uid_of("alice"), uid_of("fixed")}, sorted(srv)
    assert_same_item(srv[uid_of("alice")][2], fixed_alice, "alice after the repair")


# -- read-only collections -----------------------------------------------------------------------

RIGHTS_RW = """\
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[collections]
user: .+
collection: {user}/[^/]+(/.*)?
permissions: rw
"""

RIGHTS_SHARED_RO = """\
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[shared]
user: .+
collection: {user}/shared(/.*)?
permissions: r

[collections]
user: .+
collection: {user}/[^/]+(/.*)?
permissions: rw
"""


def test_readonly_collection(start_server, ks):
    # Xandikos has no access control: every collection is writable there, so only Radicale
    # (rights file) can serve a read-only collection.
    server = start_server("radicale", rights=RIGHTS_RW)
    shared = server.make_addressbook("shared", "Shared")
    cards = {uid_of(n): card(uid_of(n), "%s Shared" % n.capitalize(), "NOTE:server")
             for n in ("alice", "bob", "carol")}
    server.seed(shared, cards)
    own = server.make_addressbook(BOOK, "People")
    with open(server.rights_path, "w", encoding="utf-8") as f:
        f.write(RIGHTS_SHARED_RO)
    ks.add_account(ACCOUNT, server)
    ks.sync()
    rows = {c["name"]: c for c in ks.collections(ACCOUNT)}
    assert rows["shared"]["readonly"] == 1 and rows[BOOK]["readonly"] == 0, rows
    d = ks.collection_dir(ACCOUNT, "addressbook", "shared")
    before = server.contents(shared)

    local = set_prop(cards[uid_of("alice")], "VCARD", "NOTE", "my local edit")
    write_rename(d / (uid_of("alice") + ".vcf"), local)
    (d / (uid_of("bob") + ".vcf")).unlink()
    created = card(uid_of("dan"), "Dan Local", "NOTE:made in a read-only book")
    (d / "dan.vcf").write_bytes(created)
    own_card = card(uid_of("own"), "Own Card")
    (ks.collection_dir(ACCOUNT, "addressbook", BOOK) / "own.vcf").write_bytes(own_card)

    r = ks.run()
    assert server.contents(shared) == before, "the read-only collection changed on the server"
    assert server.list(own), "the writable collection did not get its new card"
    alice_file = (d / (uid_of("alice") + ".vcf")).read_bytes()
    assert alice_file == before[servers.href_path(shared) + uid_of("alice") + ".vcf"][1], \
        "alice.vcf was not restored to the server version"
    assert (d / (uid_of("bob") + ".vcf")).exists(), "the deleted file was not restored"
    kept = conflict_files(ks)
    assert any(norm(p.read_bytes()) == norm(local) for p in kept), \
        "no conflict copy holds the local edit: %s" % kept
    assert (d / "dan.vcf").exists() or any(norm(p.read_bytes()) == norm(created)
                                           for p in kept), \
        "the card created in the read-only book is gone: %s" % kept
    for p in kept:
        assert p.relative_to(ks.data_dir / "conflicts").parts[:3] == (ACCOUNT, "contacts",
                                                                        "shared"), p
    msgs = [ln for ln in r.stderr.splitlines() if ln.startswith("%s/contacts/shared:" % ACCOUNT)]
    assert any("read-only" in ln and uid_of("alice") in ln for ln in msgs), r.stderr
    assert r.rc == 0, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    check_converged(server, shared, d, ".vcf")
    rows = conflict_rows(ks)
    assert any(row["uid"] == uid_of("alice") for row in rows), rows
    check_settled(server, ks)


# -- mass-deletion guard -------------------------------------------------------------------------

def _twenty(server, ks):
    cards = {uid_of("p%02d" % i): card(uid_of("p%02d" % i), "Person%02d Example" % i)
             for i in range(20)}
    return make_env(server, ks, cards), cards


def test_mass_delete_local_files(server, ks):
    env, cards = _twenty(server, ks)
    before = server.list(env.book)
    for p in env.book_dir.glob("*.vcf"):
        p.unlink()

    for attempt in range(2):
        r = ks.run()
        assert r.rc != 0, "attempt %d: rc 0\nstdout:\n%s\nstderr:\n%s" % (attempt, r.stdout,
                                                                        r.stderr)
        lines = [ln for ln in checks.failure_lines(r.stderr, ACCOUNT)
                 if "refusing to delete" in ln]
        assert lines and lines[0].startswith("%s/contacts/%s: " % (ACCOUNT, BOOK)), r.stderr
        assert "--allow-mass-delete" in lines[0], lines[0]
        assert server.list(env.book) == before, "items were deleted on the server"

    r = ks.sync("--allow-mass-delete")
    assert server.list(env.book) == {}, "the server kept %s" % sorted(server.list(env.book))
    assert "deleted 20 on the server" in stdout_line(r, "contacts"), r.stdout
    assert list(env.book_dir.glob("*.vcf")) == []
    assert [it for it in ks.items(ACCOUNT) if it["coll_name"] == BOOK] == []
    check_settled(server, ks)


def test_mass_delete_local_directory_removed(server, ks):
    env, cards = _twenty(server, ks)
    before = server.list(env.book)
    for p in env.book_dir.iterdir():
        p.unlink()
    env.book_dir.rmdir()
    for attempt in range(2):
        r = ks.run()
        assert server.list(env.book) == before, "items were deleted on the server (rc %d)\n%s" % (
            r.rc, r.stderr)
        assert r.rc != 0, "attempt %d: rc 0\nstdout:\n%s\nstderr:\n%s" % (attempt, r.stdout,
                                                                        r.stderr)
        assert any(ln.startswith("%s/contacts/%s: " % (ACCOUNT, BOOK)) and
                   "is missing" in ln and "nothing was deleted" in ln
                   for ln in checks.failure_lines(r.stderr, ACCOUNT)), r.stderr


@pytest.mark.all_servers
def test_mass_delete_on_server(server, ks):
    env, cards = _twenty(server, ks)
    files_before = {p.name: p.read_bytes() for p in env.book_dir.glob("*.vcf")}
    assert len(files_before) == 20
    listed = sorted(server.list(env.book).items())
    for href, etag in listed[:15]:
        server.delete(href, if_match=etag)
    remaining = dict(listed[15:])

    for attempt in range(2):
        r = ks.run()
        assert r.rc != 0, "attempt %d: rc 0\nstdout:\n%s\nstderr:\n%s" % (attempt, r.stdout,
                                                                        r.stderr)
        lines = [ln for ln in checks.failure_lines(r.stderr, ACCOUNT)
                 if "refusing to delete" in ln]
        assert lines and lines[0].startswith("%s/contacts/%s: " % (ACCOUNT, BOOK)), r.stderr
        files = {p.name: p.read_bytes() for p in env.book_dir.glob("*.vcf")}
        assert files == files_before, "local files changed: %d left" % len(files)
        assert server.list(env.book) == remaining, "the deleted items were re-created"

    r = ks.sync("--allow-mass-delete")
    assert "15 deleted" in stdout_line(r, "contacts"), r.stdout
    assert len(list(env.book_dir.glob("*.vcf"))) == 5
    check_converged(server, env.book, env.book_dir, ".vcf")
    checks.check_mirror(ks, server, ACCOUNT)
    check_settled(server, ks)


def test_small_deletions_pass_the_guard(server, ks):
    env, cards = _twenty(server, ks)
    victims = sorted(env.book_dir.glob("*.vcf"))[:10]
    for p in victims:
        p.unlink()
    r = ks.sync()
    assert "deleted 10 on the server" in stdout_line(r, "contacts"), r.stdout
    assert len(server.list(env.book)) == 10


# -- one writer per account ----------------------------------------------------------------------

def hold_lock(ks):
    d = ks.data_dir / "locks"
    d.mkdir(mode=0o700, exist_ok=True)
    f = open(d / ("%s.lock" % ACCOUNT), "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    f.truncate(0)
    f.write("%d\n" % os.getpid())
    f.flush()
    return f


def test_lock(server, ks):
    env = make_env(server, ks, {uid_of("alice"): card(uid_of("alice"), "Alice Example")})
    new = card(uid_of("bob"), "Bob Example")
    env.card_path(uid_of("bob")).write_bytes(new)

    f = hold_lock(ks)
    try:
        c0 = server.request_count()
        r = ks.run()
        c1 = server.request_count()
        assert r.rc != 0, "rc 0 while the lock is held\nstderr:\n%s" % r.stderr
        assert "another ksync process with pid %d is syncing this account" % os.getpid() \
            in r.stderr, r.stderr
        assert checks.failure_lines(r.stderr, ACCOUNT), r.stderr
        assert c1 == c0, "requests while locked: %s" % requests_between(server, c0, c1)
        assert uid_of("bob") not in server_items(server, env.book)

        # A cron job has no XDG_RUNTIME_DIR: it takes the same lock all the same.
        cron_env = ks.env()
        del cron_env["XDG_RUNTIME_DIR"]
        p = subprocess.run([str(ks.ksyncd), "--once"], env=cron_env, cwd=ks.home,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert p.returncode != 0 and b"is syncing this account" in p.stderr, p.stderr

        release = threading.Timer(1.0, lambda: fcntl.flock(f.fileno(), fcntl.LOCK_UN))
        release.start()
        t = time.monotonic()
        r = ks.run("--wait")
        elapsed = time.monotonic() - t
        release.join()
    finally:
        f.close()
    assert r.rc == 0, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    assert elapsed >= 0.9, "--wait returned after %.2fs, before the lock was released" % elapsed
    assert uid_of("bob") in server_items(server, env.book)
    check_settled(server, ks)
