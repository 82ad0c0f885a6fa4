"""Assertions shared by the ksync tests: the local tree and cache mirror a server."""

import re
import stat
from pathlib import Path

from . import gen
from .servers import href_path

SAFE_UID = re.compile(r"^[A-Za-z0-9@._+-]+$")
SAFE_FILE = re.compile(r"^[A-Za-z0-9@._+-]+\.(vcf|ics)$")
DB_FILES = {"ksync.db", "ksync.db-wal", "ksync.db-shm", "ksync.db-journal"}
META_FILES = {"displayname", "color"}
# Longest UID that ksync may use as a file name as is; longer safe UIDs may be hashed too.
MAX_PLAIN_UID = 64


def normalize_color(color):
    """'#RRGGBB' (lower case) from '#RRGGBB' or '#RRGGBBAA'; None otherwise."""
    if not color:
        return None
    m = re.match(r"^\s*(#[0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?\s*$", color)
    return m.group(1).lower() if m else None


def as_bytes(value):
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def item_kind(data):
    comps = [c for c, _ in gen.components(data) if c != "VTIMEZONE"]
    return comps[0] if comps else None


# The components ksync tracks, and their bits when the cache stores them as a number.
COMPONENT_BITS = {"VEVENT": 1, "VTODO": 2, "VJOURNAL": 4}


def components_of(value):
    """Sorted tracked component names from a cache value ('VEVENT,VTODO', or a bit mask) or
    from a list of names; VFREEBUSY and the like are left out."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        names = set(value)
    elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        mask = int(value)
        names = {n for n, bit in COMPONENT_BITS.items() if mask & bit}
    else:
        names = set(re.findall(r"V[A-Z]+", value))
    return sorted(names & set(COMPONENT_BITS))


def last_segment(href):
    return href_path(href).rstrip("/").rsplit("/", 1)[-1]


def expected_file_name(uid, ext):
    """The file name ksync must use when the UID is safe, else None (any safe name will do)."""
    if uid and SAFE_UID.match(uid) and len(uid) <= MAX_PLAIN_UID and uid not in (".", ".."):
        return uid + ext
    return None


def _diff_hint(got, want):
    if got is None:
        return "missing"
    if got.replace(b"\r\n", b"\n") == want.replace(b"\r\n", b"\n"):
        return "differs only in line endings (CRLF from the server, %s stored)" % (
            "LF" if b"\r\n" not in got else "mixed")
    return "differs (%d bytes stored, %d from the server)" % (len(got), len(want))


def check_tree_hygiene(ks):
    """Modes (files 0600, dirs 0700), no temp or stray files in the ksync data dir."""
    problems = []
    data_dir = Path(ks.data_dir)
    for rel, info in ks.files().items():
        name = rel.rstrip("/").rsplit("/", 1)[-1]
        if rel.endswith("/"):
            if info.mode != 0o700:
                problems.append("dir %s has mode %o, want 700" % (rel, info.mode))
            continue
        if info.mode != 0o600:
            problems.append("file %s has mode %o, want 600" % (rel, info.mode))
        if name.startswith(".") or name.endswith(".tmp") or "~" in name:
            problems.append("temporary or hidden file left: %s" % rel)
        parts = rel.split("/")
        if len(parts) == 1:
            if name not in DB_FILES:
                problems.append("stray file at the top of the data dir: %s" % rel)
        elif parts[0] == "locks" and len(parts) == 2 and name.endswith(".lock"):
            pass
        elif parts[0] in ("contacts", "calendars") and len(parts) == 4:
            ext = ".vcf" if parts[0] == "contacts" else ".ics"
            if name not in META_FILES and not name.endswith(ext):
                problems.append("stray file in a collection dir: %s" % rel)
        else:
            problems.append("file outside the vdir layout: %s" % rel)
    st = data_dir.stat()
    if stat.S_IMODE(st.st_mode) != 0o700:
        problems.append("data dir %s has mode %o" % (data_dir, stat.S_IMODE(st.st_mode)))
    assert not problems, "\n".join(problems[:40])


def check_mirror(ks, server, account, contents=None, user_names=False):
    """The cache rows and vdir files of `account` hold exactly what `server` serves: every
    collection, every item with its bytes, etag, UID, file name and reader fields; displayname and
    color files. Returns {collection href: row} for further checks.

    `contents` may hold {collection href: server.contents(href)} already fetched. With
    user_names, files the user created keep the names the user gave them: any safe name is
    right, not only the one ksync derives from the UID."""
    problems = []
    server_cols = server.collections()
    rows = {href_path(r["href"]): r for r in ks.collections(account)}
    if set(rows) != set(server_cols):
        problems.append("collections in the cache %s, on the server %s" % (
            sorted(rows), sorted(server_cols)))
    items_by_col = {}
    for it in ks.items(account):
        items_by_col.setdefault(href_path(it["coll_href"]), []).append(it)

    for href, col in sorted(server_cols.items()):
        row = rows.get(href)
        if row is None:
            continue
        if row["kind"] != col["kind"]:
            problems.append("%s: kind %r, server says %r" % (href, row["kind"], col["kind"]))
            continue
        ext = ".vcf" if col["kind"] == "addressbook" else ".ics"
        seg = last_segment(href)
        if SAFE_UID.match(seg) and row["name"] != seg:
            problems.append("%s: dir name %r, want %r" % (href, row["name"], seg))
        if not row["name"] or "/" in row["name"] or row["name"] in (".", ".."):
            problems.append("%s: unsafe dir name %r" % (href, row["name"]))
            continue
        d = ks.row_dir(account, row)
        if not d.is_dir():
            problems.append("%s: no directory %s" % (href, d))
            continue
        want = contents[href] if contents and href in contents else server.contents(href)
        got_rows = {href_path(it["href"]): it for it in items_by_col.get(href, [])}
        if set(got_rows) != set(want):
            extra = sorted(set(got_rows) - set(want))
            missing = sorted(set(want) - set(got_rows))
            problems.append("%s: %d rows, server has %d items; missing %s; extra %s" % (
                href, len(got_rows), len(want), missing[:3], extra[:3]))
        files = {p.name: p for p in d.iterdir()}
        item_files = {n for n in files if n.endswith(ext)}
        used_files = set()
        for ihref, (etag, data) in sorted(want.items()):
            it = got_rows.get(ihref)
            if it is None:
                continue
            uid = gen.unescape(gen.prop(data, "UID") or "")
            where = "%s (%s)" % (ihref, uid)
            if it["etag"] != etag:
                problems.append("%s: etag %r, server %r" % (where, it["etag"], etag))
            stored = as_bytes(it["data"])
            if stored != data:
                problems.append("%s: db data %s" % (where, _diff_hint(stored, data)))
            if it["uid"] != uid:
                problems.append("%s: uid %r" % (where, it["uid"]))
            fname = it["filename"]
            fname = fname.rsplit("/", 1)[-1] if fname else fname
            plain = expected_file_name(uid, ext)
            if user_names:
                if not fname or not SAFE_FILE.match(fname):
                    problems.append("%s: unsafe file name %r" % (where, fname))
            elif plain is not None and fname != plain:
                problems.append("%s: file name %r, want %r" % (where, fname, plain))
            elif plain is None and (not fname or not SAFE_FILE.match(fname)
                                    or fname == uid + ext):
                problems.append("%s: unsafe UID stored as file %r" % (where, fname))
            if fname not in files:
                problems.append("%s: file %s missing in %s" % (where, fname, d))
            else:
                used_files.add(fname)
                on_disk = files[fname].read_bytes()
                if on_disk != data:
                    problems.append("%s: file %s %s" % (where, fname, _diff_hint(on_disk, data)))
            problems += _check_fields(where, it, data, col["kind"])
        stray = item_files - used_files
        if stray:
            problems.append("%s: files with no server item: %s" % (href, sorted(stray)[:5]))
        problems += _check_meta(href, d, col, row)
        if len(problems) > 60:
            break
    assert not problems, "%d problems:\n%s" % (len(problems), "\n".join(problems[:60]))
    return {h: rows[h] for h in server_cols if h in rows}


def _check_fields(where, it, data, col_kind):
    out = []
    kind = "VCARD" if col_kind == "addressbook" else item_kind(data)
    if it["kind"] != kind:
        out.append("%s: kind %r, want %r" % (where, it["kind"], kind))
        return out
    if kind == "VCARD":
        fn = gen.unescape(gen.prop(data, "FN") or "")
        if it["summary"] != fn:
            out.append("%s: summary %r, want FN %r" % (where, it["summary"], fn))
        email = gen.prop(data, "EMAIL")
        if (it["email"] or None) != email:
            out.append("%s: email %r, want %r" % (where, it["email"], email))
        return out
    summary = gen.prop(data, "SUMMARY", kind)
    summary = gen.unescape(summary) if summary is not None else None
    if (it["summary"] or None) != (summary or None):
        out.append("%s: summary %r, want %r" % (where, it["summary"], summary))
    if kind == "VEVENT":
        if not it["dtstart"]:
            out.append("%s: no dtstart" % where)
        if gen.prop(data, "DTEND", kind) and not it["dtend"]:
            out.append("%s: no dtend" % where)
        rrule = gen.prop(data, "RRULE", kind) is not None
        if bool(it["has_rrule"]) != rrule:
            out.append("%s: has_rrule %r, want %r" % (where, it["has_rrule"], rrule))
    elif kind == "VTODO":
        due = gen.prop(data, "DUE", kind)
        if bool(it["due"]) != (due is not None):
            out.append("%s: due %r, source DUE %r" % (where, it["due"], due))
        status = gen.prop(data, "STATUS", kind)
        if (it["status"] or None) != status:
            out.append("%s: status %r, want %r" % (where, it["status"], status))
        prio = gen.prop(data, "PRIORITY", kind)
        want = int(prio) if prio is not None else None
        got = it["priority"]
        got = int(got) if got not in (None, "") else None
        if got != want and not (want == 0 and got is None):
            out.append("%s: priority %r, want %r" % (where, it["priority"], want))
    return out


def _check_meta(href, d, col, row):
    out = []
    if col["displayname"]:
        p = d / "displayname"
        if not p.is_file():
            out.append("%s: no displayname file" % href)
        elif p.read_text(encoding="utf-8").strip() != col["displayname"]:
            out.append("%s: displayname file %r, server %r" % (
                href, p.read_text(encoding="utf-8"), col["displayname"]))
        if row["displayname"] != col["displayname"]:
            out.append("%s: db displayname %r, server %r" % (href, row["displayname"],
                                                              col["displayname"]))
    color = normalize_color(col["color"])
    if color:
        p = d / "color"
        if not p.is_file():
            out.append("%s: no color file (server color %s)" % (href, col["color"]))
        elif p.read_text(encoding="utf-8").strip().lower() != color:
            out.append("%s: color file %r, want %r" % (href, p.read_text(encoding="utf-8"),
                                                       color))
        if normalize_color(row["color"]) != color:
            out.append("%s: db color %r, want %r" % (href, row["color"], color))
    if col["kind"] == "calendar" and col["components"]:
        if components_of(row["components"]) != components_of(col["components"]):
            out.append("%s: db components %r, server %r" % (href, row["components"],
                                                             col["components"]))
    if row["readonly"] not in (0, False):
        out.append("%s: readonly %r, want 0" % (href, row["readonly"]))
    return out


def failure_lines(stderr, account):
    """Lines of ksyncd's stderr that report a failure of `account`:
    'account/collection: what failed', or 'account: what failed' when the account
    failed before any collection (credentials, discovery, network). Reports of a conflict
    that was decided (and its losing side kept) are not failures."""
    return [line for line in stderr.splitlines()
            if re.match(r"^%s(/[^:\s]*)?: \S" % re.escape(account), line)
            and not re.match(r"^%s/\S+: conflict in " % re.escape(account), line)]


def quiet_requests(server):
    """The paths a run with nothing to do asks, in order: with more collections than home
    sets, one listing of each home set (its tokens tell which collections changed);
    otherwise each collection."""
    cols = sorted(server.collections())
    homes = server.home_sets
    return homes if len(cols) > len(homes) else cols


def snapshot(ks):
    """State to compare before and after a run that must change nothing."""
    return {
        "files": ks.files(),
        "db": ks.db_dump(),
    }


def check_unchanged(before, after):
    problems = []
    # -wal and -shm come and go with connections, the test's readers included; a write by
    # ksyncd shows in ksync.db itself (checkpointed at close: mtime) and in the rows. An
    # account's lock file names the pid of each run that takes it.
    def kept(rel):
        return rel not in ("ksync.db-wal", "ksync.db-shm") and not rel.startswith("locks/")
    fb = {k: v for k, v in before["files"].items() if kept(k)}
    fa = {k: v for k, v in after["files"].items() if kept(k)}
    for rel in sorted(set(fb) | set(fa)):
        if rel not in fa:
            problems.append("removed: %s" % rel)
        elif rel not in fb:
            problems.append("created: %s" % rel)
        elif fb[rel] != fa[rel]:
            what = [f for f in fb[rel]._fields if getattr(fb[rel], f) != getattr(fa[rel], f)]
            problems.append("changed %s: %s" % (rel, ", ".join(what)))
    db_b, db_a = set(before["db"]), set(after["db"])
    for line in sorted(db_b - db_a)[:10]:
        problems.append("db row gone or changed: %s" % line[:200])
    for line in sorted(db_a - db_b)[:10]:
        problems.append("db row new or changed: %s" % line[:200])
    assert not problems, "a no-change re-sync changed things:\n" + "\n".join(problems[:40])
