"""Crash safety of two-way sync (issue 3, point 5): ksyncd stopped after its Nth durable step
(KSYNC_TEST_CRASH_AFTER=N, every N of a scenario), and killed with SIGKILL at random moments,
must be followed by a run that ends where an uninterrupted run ends; one more run then changes
nothing.

A scenario starts from a fresh server and a fresh ksync home: a first sync, then changes on both
sides (creations, edits, deletions, a file without UID, a merge on different properties, a
conflict on the same property, delete against edit). Its "state" is what the server serves,
what the collection directories hold and which conflict copies were kept, with the random UID
ksyncd gives the file without one replaced by a placeholder, and the time stamps of conflict
copies left out.

Environment:
  KSYNC_CRASH_TRIALS   kill -9 trials per server (default 25, so 50 in all)
  KSYNC_CRASH_SEED     run only the kill -9 trial with this seed (replay of a failure: the seed
                       fixes the kill moments as fractions of the measured run time)
"""

import difflib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ksynctest import checks, gen, servers
from ksynctest.ksync import KsyncHome, Result

ACCOUNT = "acct"
# Each start of a scenario gets a fresh server of the kind under test.
SERVER_KINDS = ["radicale", "xandikos"]
CRASH_RC = 100
# Far more steps than any scenario here takes: a run that never stops is a failure.
MAX_STEPS = 400
RUN_TIMEOUT = 120
TRIALS_PER_SERVER = int(os.environ.get("KSYNC_CRASH_TRIALS", "25"))
TRIAL_SEED_BASE = 7100
# Resumed runs after a kill: each may itself be killed (per the trial's seed); this many at most.
MAX_RESUMES = 6

PLACEHOLDER_UID = b"<NEW-UID>"
STAMP = re.compile(r"\.\d{8}T\d{6}Z\.")
EOL = b"\r\n"


# -- editing items ---------------------------------------------------------------------------


def _logical_lines(data):
    """[(first physical line index, last index + 1)] of the content lines of data, which is
    split on its line ending; continuation lines (leading space or tab) join the line above."""
    eol = EOL if EOL in data else b"\n"
    phys = data.split(eol)
    out = []
    for i, line in enumerate(phys):
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return eol, phys, out


def set_prop(data, name, value, comp):
    """data with property `name` of the first `comp` block without RECURRENCE-ID set to
    `value` (str, escaped as given): the first such line is replaced, or one is added before
    END:comp. Every other byte stays as it was."""
    eol, phys, logical = _logical_lines(data)
    head = lambda ln: b"".join(  # noqa: E731
        [phys[ln[0]]] + [p[1:] for p in phys[ln[0] + 1:ln[1]]])
    begin = b"BEGIN:" + comp.encode()
    end = b"END:" + comp.encode()
    blocks = []
    start = None
    depth = 0
    for k, ln in enumerate(logical):
        h = head(ln).upper()
        if start is None:
            if h == begin:
                start, depth = k, 0
            continue
        if h.startswith(b"BEGIN:"):
            depth += 1
        elif h.startswith(b"END:") and depth:
            depth -= 1
        elif h == end:
            blocks.append((start, k))
            start = None
    for b0, b1 in blocks:
        names = [re.split(rb"[;:]", head(ln), maxsplit=1)[0].upper()
                 for ln in logical[b0 + 1:b1]]
        if b"RECURRENCE-ID" in names:
            continue
        new = gen.fold("%s:%s" % (name, value)).rstrip(b"\r\n").split(b"\r\n")
        depth = 0
        target = None
        for k in range(b0 + 1, b1):
            h = head(logical[k]).upper()
            if h.startswith(b"BEGIN:"):
                depth += 1
            elif h.startswith(b"END:"):
                depth -= 1
            elif depth == 0 and re.split(rb"[;:]", h, maxsplit=1)[0] == name.encode():
                target = k
                break
        if target is not None:
            i0, i1 = logical[target]
        else:
            i0 = i1 = logical[b1][0]
        return eol.join(phys[:i0] + new + phys[i1:])
    raise AssertionError("no %s block to set %s in %r" % (comp, name, data[:200]))


def drop_uid(data):
    out = re.sub(rb"\r\nUID:[^\r]*(\r\n[ \t][^\r]*)*", b"", data)
    assert b"UID:" not in out
    return out


def uid_of(data):
    v = gen.prop(data, "UID")
    return gen.unescape(v) if v is not None else None


def text_of(data):
    """Unfolded text of an item, for looking for the markers the scenario put in."""
    try:
        return "\n".join(gen.unfold(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


# -- the scenario ----------------------------------------------------------------------------


class Plan:
    """What a scenario changed and what any converged end state must therefore show."""

    def __init__(self):
        self.known_uids = set()
        self.present = {}          # uid -> markers that must be in the server item and file
        self.absent = set()        # uids that must be gone from both sides
        self.conflict_copy = {}    # uid -> marker that a kept conflict copy must hold
        self.uidless = {}          # marker (FN) of a file created without UID -> collection
        self.collections = {}      # role -> collection href

    def must_have(self, uid, marker):
        self.present.setdefault(uid, []).append(marker)


class Scenario:
    def __init__(self, server, ks, plan, tmpdir):
        self.server = server
        self.ks = ks
        self.plan = plan
        self.tmpdir = tmpdir

    def close(self):
        self.server.stop()


SMALL = dict(contacts=30, events=12, tasks=8, k=2)
LARGE = dict(contacts=200, events=60, tasks=40, k=8)


def _write_file(path, data, rename=False):
    if rename:
        tmp = path.with_name("." + path.name + ".swp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    else:
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)


def start_scenario(kind, tmpdir, size):
    """A fresh server with the scenario's collections seeded and a fresh ksync home with the
    account (not synced yet)."""
    tmpdir = Path(tmpdir)
    server = servers.start(kind, tmpdir / "server")
    try:
        plan = Plan()
        book = server.make_addressbook("people", "Kontakte")
        work = server.make_calendar("work", "Arbeit", components=("VEVENT", "VTODO"))
        plan.collections = {"people": book, "work": work}
        people = gen.contacts(size["contacts"])
        cal = {**gen.events(size["events"]), **gen.tasks(size["tasks"])}
        server.seed(book, people)
        server.seed(work, cal)
        plan.known_uids |= set(people) | set(cal)
        ks = KsyncHome(tmpdir / "user")
        ks.add_account(ACCOUNT, server)
        return Scenario(server, ks, plan, tmpdir)
    except BaseException:
        server.stop()
        raise


def apply_changes(sc, size):
    """The changes both sides make after the first sync. Deterministic for a given size."""
    server, ks, plan = sc.server, sc.ks, sc.plan
    k = size["k"]
    book, work = plan.collections["people"], plan.collections["work"]
    bdir = ks.collection_dir(ACCOUNT, "addressbook", "people")
    wdir = ks.collection_dir(ACCOUNT, "calendar", "work")
    cbook = server.contents(book)
    cwork = server.contents(work)
    by_uid = {}
    for contents in (cbook, cwork):
        for href, (etag, data) in contents.items():
            by_uid[uid_of(data)] = (href, etag, data)
    contacts = sorted(uid_of(d) for _, d in cbook.values())
    events = sorted(uid_of(d) for _, d in cwork.values() if b"BEGIN:VEVENT" in d)
    tasks = sorted(uid_of(d) for _, d in cwork.values() if b"BEGIN:VTODO" in d)
    local_file = {}
    for d in (bdir, wdir):
        for p in d.iterdir():
            if p.suffix in (".vcf", ".ics"):
                local_file[uid_of(p.read_bytes())] = p

    def take(pool, n):
        got = pool[:n]
        del pool[:n]
        assert len(got) == n, "scenario needs more items"
        return got

    def remote_set(uid, name, value, comp):
        href, etag, data = by_uid[uid]
        server.put(href, set_prop(data, name, value, comp), if_match=etag)

    def local_set(uid, name, value, comp, rename=False):
        p = local_file[uid]
        _write_file(p, set_prop(p.read_bytes(), name, value, comp), rename)

    # Remote edits, creations and deletions.
    for i, uid in enumerate(take(contacts, k)):
        marker = "Remote Édité %d" % i
        remote_set(uid, "FN", marker, "VCARD")
        plan.must_have(uid, marker)
    for i, uid in enumerate(take(events, max(1, k // 2))):
        marker = "Remote summary %d" % i
        remote_set(uid, "SUMMARY", marker, "VEVENT")
        plan.must_have(uid, marker)
    for i, uid in enumerate(take(tasks, max(1, k // 2))):
        marker = "Remote task %d" % i
        href, etag, data = by_uid[uid]
        server.put(href, set_prop(set_prop(data, "STATUS", "COMPLETED", "VTODO"), "SUMMARY",
                                  marker, "VTODO"), if_match=etag)
        plan.must_have(uid, marker)
        plan.must_have(uid, "STATUS:COMPLETED")
    for uid, data in gen.contacts(k, seed=5).items():
        server.put(book + uid + ".vcf", data, if_none_match="*")
        plan.known_uids.add(uid)
        plan.must_have(uid, "FN:" + gen.unescape(gen.prop(data, "FN")))
    for uid, data in gen.events(max(1, k // 2), seed=5).items():
        server.put(work + uid + ".ics", data, if_none_match="*")
        plan.known_uids.add(uid)
        plan.must_have(uid, "SUMMARY:" + gen.unescape(gen.prop(data, "SUMMARY", "VEVENT")))
    for uid in take(contacts, k) + take(events, max(1, k // 2)):
        server.delete(by_uid[uid][0])
        plan.absent.add(uid)

    # Local edits (in place and editor-style renames), creations and deletions.
    for i, uid in enumerate(take(contacts, k)):
        marker = "Local Édité %d" % i
        local_set(uid, "FN", marker, "VCARD", rename=i % 2 == 1)
        plan.must_have(uid, marker)
    for i, uid in enumerate(take(events, max(1, k // 2))):
        marker = "Local summary %d" % i
        local_set(uid, "SUMMARY", marker, "VEVENT", rename=i % 2 == 0)
        plan.must_have(uid, marker)
    for i, uid in enumerate(take(tasks, max(1, k // 2))):
        marker = "Local task %d" % i
        local_set(uid, "SUMMARY", marker, "VTODO")
        plan.must_have(uid, marker)
    for i, (uid, data) in enumerate(gen.contacts(k, seed=6).items()):
        _write_file(bdir / (uid + ".vcf"), data, rename=i % 2 == 0)
        plan.known_uids.add(uid)
        plan.must_have(uid, "FN:" + gen.unescape(gen.prop(data, "FN")))
    for uid, data in gen.tasks(max(1, k // 2), seed=6).items():
        _write_file(wdir / (uid + ".ics"), data)
        plan.known_uids.add(uid)
        plan.must_have(uid, "SUMMARY:" + gen.unescape(gen.prop(data, "SUMMARY", "VTODO")))
    _, card = next(iter(gen.contacts(1, seed=8).items()))
    card = set_prop(drop_uid(card), "FN", "Sans Identifiant", "VCARD")
    _write_file(bdir / "sans-uid.vcf", card)
    plan.uidless["FN:Sans Identifiant"] = "people"
    for uid in take(contacts, k) + take(tasks, max(1, k // 2)):
        local_file[uid].unlink()
        plan.absent.add(uid)

    # Both sides: different properties (merged), the same property (server wins, the local
    # version is kept), deleted here and edited there (the edit wins) and the reverse.
    uid = take(contacts, 1)[0]
    remote_set(uid, "FN", "Merge Remote FN", "VCARD")
    local_set(uid, "NOTE", "Merge local note", "VCARD")
    plan.must_have(uid, "FN:Merge Remote FN")
    plan.must_have(uid, "NOTE:Merge local note")
    uid = take(events, 1)[0]
    remote_set(uid, "SUMMARY", "Merge remote summary", "VEVENT")
    local_set(uid, "LOCATION", "Merge local location", "VEVENT")
    plan.must_have(uid, "SUMMARY:Merge remote summary")
    plan.must_have(uid, "LOCATION:Merge local location")
    uid = take(contacts, 1)[0]
    remote_set(uid, "FN", "Conflict Server Side", "VCARD")
    local_set(uid, "FN", "Conflict Local Side", "VCARD")
    plan.must_have(uid, "FN:Conflict Server Side")
    plan.conflict_copy[uid] = "FN:Conflict Local Side"
    uid = take(contacts, 1)[0]
    remote_set(uid, "FN", "Edited There Deleted Here", "VCARD")
    local_file[uid].unlink()
    plan.must_have(uid, "FN:Edited There Deleted Here")
    uid = take(tasks, 1)[0]
    server.delete(by_uid[uid][0])
    local_set(uid, "SUMMARY", "Deleted There Edited Here", "VTODO")
    plan.must_have(uid, "SUMMARY:Deleted There Edited Here")


# -- running ksyncd --------------------------------------------------------------------------


def _argv(ks):
    if not os.access(ks.ksyncd, os.X_OK):
        raise FileNotFoundError("ksyncd is not built: %s (set KSYNC_BUILD or run make)"
                                % ks.ksyncd)
    return [str(ks.ksyncd), "--once"]


def run_ksyncd(ks, crash_after=None):
    extra = {"KSYNC_TEST_CRASH_AFTER": str(crash_after)} if crash_after else {}
    p = subprocess.run(_argv(ks), env=ks.env(**extra), cwd=ks.home, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=RUN_TIMEOUT)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                  p.stderr.decode("utf-8", "replace"))


def run_killed(ks, delay):
    """ksyncd --once, sent SIGKILL after `delay` seconds unless it ended before.
    Returns (Result, killed)."""
    p = subprocess.Popen(_argv(ks), env=ks.env(), cwd=ks.home, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        killed = True
    out, err = p.communicate(timeout=RUN_TIMEOUT)
    if killed and p.returncode != -signal.SIGKILL:
        killed = False
    return Result(p.returncode, out.decode("utf-8", "replace"),
                  err.decode("utf-8", "replace")), killed


def timed_run(ks):
    t = time.monotonic()
    r = run_ksyncd(ks)
    return r, time.monotonic() - t


def recovery_note(ks):
    """After a run that failed: whether the runs after it recover (for the report only)."""
    rcs = []
    for _ in range(2):
        rcs.append(run_ksyncd(ks).rc)
        if rcs[-1] == 0:
            break
    return "the next run%s exit%s %s" % ("s" if len(rcs) > 1 else "",
                                         "" if len(rcs) > 1 else "s",
                                         ", ".join(map(str, rcs)))


def must_succeed(r, what):
    assert r.rc == 0, "%s: ksyncd --once exited %d\nstderr:\n%s" % (what, r.rc, r.stderr[-4000:])


# -- the state of one run's end --------------------------------------------------------------


def _norm(data, unknown):
    for u in unknown:
        data = data.replace(u.encode("utf-8"), PLACEHOLDER_UID)
    return data


def _role(href):
    return checks.last_segment(href)


def capture(sc):
    """Server, files, conflict copies and conflict rows, normalized; and what is inconsistent
    among server, cache and files (a list of problems)."""
    server, ks, plan = sc.server, sc.ks, sc.plan
    problems = []
    raw_server = {}
    for href, col in server.collections().items():
        raw_server[_role(href)] = (col["kind"], server.contents(href))
    raw_files = {}
    stray = []
    for role, (kind, _) in raw_server.items():
        d = ks.collection_dir(ACCOUNT, kind, role)
        ext = ".vcf" if kind == "addressbook" else ".ics"
        files = {}
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and p.name.endswith(ext) and not p.name.startswith("."):
                    files[p.name] = p.read_bytes()
                elif p.name not in checks.META_FILES:
                    stray.append("%s/%s" % (role, p.name))
        else:
            problems.append("no directory %s" % d)
        raw_files[role] = files
    conflict_root = ks.data_dir / "conflicts"
    raw_copies = []
    if conflict_root.is_dir():
        for p in sorted(conflict_root.rglob("*")):
            if not p.is_file():
                continue
            rel = str(p.relative_to(conflict_root))
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue  # an interrupted write of a copy: hidden from every reader
            if p.name.startswith(".") or p.name.endswith(".tmp") or "~" in p.name:
                stray.append("conflicts/" + rel)
                continue
            raw_copies.append((rel, p.read_bytes()))

    uids = set()
    for kind, contents in raw_server.values():
        uids |= {uid_of(d) for _, d in contents.values()}
    for files in raw_files.values():
        uids |= {uid_of(d) for d in files.values()}
    unknown = sorted((u for u in uids if u and u not in plan.known_uids), key=len,
                     reverse=True)

    state = {"server": {}, "files": {}, "stray": sorted(stray)}
    for role, (kind, contents) in raw_server.items():
        state["server"][role] = sorted(
            (_norm(checks.last_segment(h).encode(), unknown).decode(), _norm(d, unknown))
            for h, (_, d) in contents.items())
        dup = [u for u, n in Counter(uid_of(d) for _, d in contents.values()).items() if n > 1]
        if dup:
            problems.append("%s: UIDs more than once on the server: %s" % (role, dup[:5]))
    for role, files in raw_files.items():
        state["files"][role] = sorted((_norm(n.encode(), unknown).decode(), _norm(d, unknown))
                                      for n, d in files.items())
        dup = [u for u, n in Counter(uid_of(d) for d in files.values()).items() if n > 1]
        if dup:
            problems.append("%s: UIDs in more than one file: %s" % (role, dup[:5]))
        none = [n for n, d in files.items() if not uid_of(d)]
        if none:
            problems.append("%s: files without UID after the run: %s" % (role, none))
    state["copies"] = sorted((STAMP.sub(".<STAMP>.", rel), _norm(d, unknown))
                             for rel, d in raw_copies)
    rows = ks.query("SELECT collection, uid, filename, kept_path, winner, summary FROM conflict")
    state["conflict_rows"] = sorted(
        (r["collection"], r["uid"], r["filename"], r["winner"], r["summary"],
         STAMP.sub(".<STAMP>.", os.path.basename(r["kept_path"]))) for r in rows)
    kept = {os.path.realpath(r["kept_path"]) for r in rows}
    for rel, _ in raw_copies:
        if os.path.realpath(conflict_root / rel) not in kept:
            problems.append("conflict copy %s is not listed in the cache" % rel)
    for r in rows:
        if not os.path.isfile(r["kept_path"]):
            problems.append("conflict row points to a missing file: %s" % r["kept_path"])
    intents = ks.query("SELECT href, op, filename FROM intent")
    if intents:
        problems.append("intents left after a successful run: %s" % intents[:5])
    problems += _cache_problems(ks, raw_server, raw_files)
    problems += _plan_problems(plan, raw_server, raw_files, raw_copies)
    state["problems"] = problems
    return state


def _cache_problems(ks, raw_server, raw_files):
    """The cache rows agree with the server (hrefs, etags) and the files (bytes)."""
    out = []
    cols = {r["name"]: r for r in ks.collections(ACCOUNT)}
    rows_by = {}
    for it in ks.items(ACCOUNT):
        rows_by.setdefault(it["coll_name"], {})[servers.href_path(it["href"])] = it
    for role, (kind, contents) in raw_server.items():
        if role not in cols:
            out.append("%s: no collection row" % role)
            continue
        rows = rows_by.get(role, {})
        if set(rows) != set(contents):
            out.append("%s: cache rows and server differ: only in the cache %s, only on the "
                       "server %s" % (role, sorted(set(rows) - set(contents))[:5],
                                      sorted(set(contents) - set(rows))[:5]))
        used = set()
        for href, (etag, data) in contents.items():
            it = rows.get(href)
            if it is None:
                continue
            if it["etag"] != etag:
                out.append("%s: etag in the cache %r, server %r" % (href, it["etag"], etag))
            # Servers may store an upload re-serialized (Radicale sorts properties and
            # parameters, Xandikos rewrites iCalendar) and still answer with the ETag of what
            # they stored: the ETag is what ties the cache to the server's version.
            cached = checks.as_bytes(it["data"])
            fname = it["filename"].rsplit("/", 1)[-1]
            used.add(fname)
            got = raw_files[role].get(fname)
            if got is None:
                out.append("%s: file %s missing" % (href, fname))
            elif got != cached:
                out.append("%s: file %s differs from the cached bytes:\n      %s" % (
                    href, fname, _short_diff(cached, got)))
        extra = set(raw_files[role]) - used
        if extra:
            out.append("%s: files no cache row points to: %s" % (role, sorted(extra)[:5]))
    return out


def _plan_problems(plan, raw_server, raw_files, raw_copies):
    """Nothing lost: every change either side made is where it must be."""
    out = []
    server_by_uid = {}
    files_by_uid = {}
    for role, (kind, contents) in raw_server.items():
        for href, (_, d) in contents.items():
            server_by_uid.setdefault(uid_of(d), []).append(text_of(d))
    for role, files in raw_files.items():
        for n, d in files.items():
            files_by_uid.setdefault(uid_of(d), []).append(text_of(d))
    for uid, markers in sorted(plan.present.items()):
        for side, where in (("server", server_by_uid), ("files", files_by_uid)):
            got = where.get(uid)
            if not got:
                out.append("%s: %s missing (expected %s)" % (side, uid, markers))
                continue
            for m in markers:
                if m not in got[0]:
                    out.append("%s: %s lacks %r" % (side, uid, m))
    for uid in sorted(plan.absent):
        for side, where in (("server", server_by_uid), ("files", files_by_uid)):
            if uid in where:
                out.append("%s: %s was deleted but is still there" % (side, uid))
    for uid, marker in sorted(plan.conflict_copy.items()):
        if not any(marker in text_of(d) for _, d in raw_copies):
            out.append("no conflict copy holds the losing %r of %s" % (marker, uid))
    for marker in plan.uidless:
        for side, where in (("server", server_by_uid), ("files", files_by_uid)):
            n = sum(1 for texts in where.values() for t in texts if marker in t)
            if n != 1:
                out.append("%s: the file created without UID (%s) is there %d times" % (
                    side, marker, n))
    return out


def _short_diff(a, b):
    lines = list(difflib.unified_diff(
        a.decode("utf-8", "replace").splitlines(), b.decode("utf-8", "replace").splitlines(),
        "reference", "this run", n=0, lineterm=""))
    return "\n      ".join(lines[2:14])


def _split_unquoted(text, sep):
    parts, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def canonical(data):
    """The content lines of an item as a multiset of (name, sorted parameters, value), RRULE
    parts sorted: what stays the same when a server stores an item re-serialized (Radicale
    sorts properties and parameters, Xandikos rewrites iCalendar)."""
    out = []
    for line in text_of(data).split("\n"):
        head, sep, value = "", "", line
        quoted = False
        for i, ch in enumerate(line):
            if ch == '"':
                quoted = not quoted
            elif ch == ":" and not quoted:
                head, sep, value = line[:i], ":", line[i + 1:]
                break
        if not sep:
            out.append((line,))
            continue
        name, *params = _split_unquoted(head, ";")
        name = name.upper()
        if name in ("RRULE", "EXRULE"):
            value = ";".join(sorted(value.split(";")))
        out.append((name, tuple(sorted(params)), value))
    return Counter(out)


def _list_diff(what, ref, got, notes=None):
    """Differences between two sorted [(name, bytes)]. With `notes`, items whose bytes differ
    but whose canonical() content is the same go there instead."""
    out = []
    rc, gc = Counter(ref), Counter(got)
    missing = list((rc - gc).elements())
    extra = list((gc - rc).elements())
    ref_names = {n: d for n, d in missing}
    for n, d in extra:
        if n in ref_names:
            r = ref_names.pop(n)
            if notes is not None and canonical(r) == canonical(d):
                notes.append("%s: %s holds the same item serialized differently" % (what, n))
                continue
            out.append("%s: %s differs from the reference:\n      %s" % (
                what, n, _short_diff(r, d)))
        else:
            out.append("%s: %s is extra (not in the reference)" % (what, n))
    for n in ref_names:
        out.append("%s: %s is missing (in the reference)" % (what, n))
    return out


def compare(ref, got, notes=None):
    """Differences between a reference state and another, as readable lines. Files that hold
    the reference's item serialized otherwise (the server's re-serialized bytes where the
    uninterrupted run kept the uploaded ones) are listed in `notes` when given, else they are
    differences too."""
    out = list(got["problems"])
    for part in ("server", "files"):
        for role in sorted(set(ref[part]) | set(got[part])):
            out += _list_diff("%s %s" % (part, role), ref[part].get(role, []),
                              got[part].get(role, []), notes if part == "files" else None)
    out += _list_diff("conflict copies", ref["copies"], got["copies"])
    if ref["conflict_rows"] != got["conflict_rows"]:
        out.append("conflict rows: reference %s, this run %s" % (ref["conflict_rows"],
                                                                 got["conflict_rows"]))
    if got["stray"]:
        out.append("temporary or stray files: %s" % got["stray"])
    return out


TOKEN_COLUMNS = ("sync_token", "ctag")


def _collections_without_tokens(ks):
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in TOKEN_COLUMNS))
                  for r in ks.collections())


def _rows_outside_collections(ks):
    return [line for line in ks.db_dump() if not line.startswith("collection ")]


def further_run(ks):
    """One more run, which must succeed, report nothing and change no file and no row.
    Returns (problems, only_tokens, Result); only_tokens tells that all it changed is the
    stored sync tokens or ctags of collections."""
    before = checks.snapshot(ks)
    cols, rows = _collections_without_tokens(ks), _rows_outside_collections(ks)
    r = run_ksyncd(ks)
    if r.rc != 0:
        return ["further run exited %d" % r.rc], False, r
    out = []
    lines = checks.failure_lines(r.stderr, ACCOUNT)
    if lines:
        out.append("further run reported: %s" % lines[:5])
    after = checks.snapshot(ks)
    try:
        checks.check_unchanged(before, after)
        return out, False, r
    except AssertionError as e:
        out.append(str(e))
    transient = ("ksync.db", "ksync.db-wal", "ksync.db-shm")
    files_same = ({k: v for k, v in before["files"].items() if k not in transient} ==
                  {k: v for k, v in after["files"].items() if k not in transient})
    only_tokens = (len(out) == 1 and files_same and cols == _collections_without_tokens(ks)
                   and rows == _rows_outside_collections(ks))
    return out, only_tokens, r


def settle_problems(ks, ref_only_tokens):
    """The further run after a resumed one. When the uninterrupted run is followed by a run
    that stores new sync tokens (reported on its own), the same is accepted here, and the run
    after that must change nothing."""
    problems, only_tokens, r = further_run(ks)
    if problems and only_tokens and ref_only_tokens:
        problems, _, r = further_run(ks)
    return problems, r


# -- a crash after every durable step ----------------------------------------------------------


def build(kind, tmpdir, size):
    """The starting state: fresh server, first sync, then the changes of both sides."""
    sc = start_scenario(kind, tmpdir, size)
    try:
        r = run_ksyncd(sc.ks)
        must_succeed(r, "first sync")
        apply_changes(sc, size)
        return sc
    except BaseException:
        sc.close()
        raise


def reference(kind, tmpdir, size):
    """An uninterrupted run of the scenario: its end state, the run's duration, and a message
    when the run after it (which must change nothing) stored new sync tokens."""
    sc = build(kind, tmpdir, size)
    try:
        r, elapsed = timed_run(sc.ks)
        must_succeed(r, "uninterrupted run")
        state = capture(sc)
        assert not state["problems"], "uninterrupted run:\n%s\nstderr:\n%s" % (
            "\n".join(state["problems"]), r.stderr[-3000:])
        assert not state["stray"], state["stray"]
        assert len(state["copies"]) == len(sc.plan.conflict_copy), state["copies"]
        assert len(state["conflict_rows"]) == len(sc.plan.conflict_copy)
        problems, only_tokens, r2 = further_run(sc.ks)
        token_issue = None
        if problems and only_tokens:
            token_issue = ("%s: the run after an uninterrupted run with changes stores new "
                           "sync tokens:\n%s" % (kind, "\n".join(problems)))
            problems, _, r2 = further_run(sc.ks)
        assert not problems, "\n".join(problems) + "\nstderr:\n" + r2.stderr[-3000:]
        assert compare(state, capture(sc)) == []
        return state, elapsed, token_issue
    finally:
        sc.close()


def _rm(path):
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_run_after_changes_changes_nothing(kind, tmp_path):
    """Stage 3 for the uninterrupted run: after a run that sent and received changes, one more
    run changes no file and no row (the crash tests below compare with this run, and accept
    from a resumed run what this run does)."""
    sc = build(kind, tmp_path, SMALL)
    try:
        must_succeed(run_ksyncd(sc.ks), "run with changes")
        problems, only_tokens, r = further_run(sc.ks)
        assert not problems, "%s%s\nstderr:\n%s" % (
            "only the stored sync tokens changed:\n" if only_tokens else "",
            "\n".join(problems), r.stderr[-3000:])
    finally:
        sc.close()


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_crash_after_every_step(kind, tmp_path):
    """KSYNC_TEST_CRASH_AFTER=N for N = 1, 2, ... until a run completes: each interrupted run
    plus one resumed run ends where the uninterrupted run ended, and one more run changes
    nothing."""
    t0 = time.monotonic()
    ref, _, token_issue = reference(kind, tmp_path / "reference", SMALL)
    failures = []
    reserialized = {}
    n = 0
    last = None
    while True:
        n += 1
        assert n <= MAX_STEPS, "ksyncd still stops after %d steps" % MAX_STEPS
        d = tmp_path / ("n%04d" % n)
        sc = build(kind, d, SMALL)
        failed = len(failures)
        try:
            crashed = run_ksyncd(sc.ks, crash_after=n)
            if crashed.rc != CRASH_RC:
                # The run took fewer than n steps: it is an uninterrupted run.
                last = n - 1
                if crashed.rc != 0:
                    failures.append("N=%d: the run exited %d\nstderr:\n%s" % (
                        n, crashed.rc, crashed.stderr[-2000:]))
                    break
            resumed = None
            if crashed.rc == CRASH_RC:
                resumed = run_ksyncd(sc.ks)
                if resumed.rc != 0:
                    failures.append("N=%d: the resumed run exited %d (%s)\nstderr:\n%s" % (
                        n, resumed.rc, recovery_note(sc.ks), resumed.stderr[-2000:]))
                    continue
            notes = []
            diff = compare(ref, capture(sc), notes)
            if notes:
                reserialized[n] = notes
            quiet, qr = settle_problems(sc.ks, token_issue is not None)
            if diff or quiet:
                failures.append("N=%d%s:\n  %s\n  crashed run stderr:\n%s\n  resumed run "
                                "stderr:\n%s\n  further run stderr:\n%s" % (
                                    n, " (run completed)" if crashed.rc == 0 else "",
                                    "\n  ".join(diff + quiet), crashed.stderr[-1500:],
                                    resumed.stderr[-1500:] if resumed else "-",
                                    qr.stderr[-1000:]))
            if crashed.rc != CRASH_RC:
                break
        finally:
            sc.close()
            if len(failures) == failed:
                _rm(d)
    elapsed = time.monotonic() - t0
    print("\n%s: crash after every step, N = 1..%d (%d failed) in %.1fs" % (
        kind, last, len(failures), elapsed))
    if reserialized:
        print("%s: after a crash at N = %s, files hold the server's re-serialized bytes of an "
              "upload where the uninterrupted run kept the uploaded bytes" % (
                  kind, ",".join(map(str, sorted(reserialized)))))
    assert last and last >= 10, "the scenario has only %s durable steps" % last
    assert not failures, "%s: %d of %d crash points fail:\n%s" % (
        kind, len(failures), last, "\n\n".join(failures))


# -- kill -9 at random moments --------------------------------------------------------------


def _trial_seeds():
    one = os.environ.get("KSYNC_CRASH_SEED")
    if one:
        return [int(one)]
    return [TRIAL_SEED_BASE + i for i in range(TRIALS_PER_SERVER)]


def _killed_then_resumed(ks, rng, duration, log, stats):
    """Runs ksyncd --once, killing it after a random fraction of `duration`; then resumed runs
    (each killed again with probability 1/3) until one completes. The seed of rng fixes the
    fractions; how far ksyncd got at that moment still varies from one replay to the next."""
    for attempt in range(MAX_RESUMES + 1):
        if attempt == 0 or (attempt < MAX_RESUMES and rng.random() < 1 / 3):
            delay = rng.uniform(0.0, duration)
            r, killed = run_killed(ks, delay)
            log.append("run %d: kill after %.3fs: %s (rc %d)" % (
                attempt, delay, "killed" if killed else "had ended", r.rc))
            stats["kills"] += killed
        else:
            r = run_ksyncd(ks)
            killed = False
            log.append("run %d: rc %d" % (attempt, r.rc))
        if r.stderr.strip():
            log.append("  stderr: " + r.stderr.strip()[-1500:].replace("\n", "\n  "))
        if not killed:
            if r.rc != 0:
                raise AssertionError("run %d exited %d (%s)" % (attempt, r.rc,
                                                                recovery_note(ks)))
            return
    raise AssertionError("no run completed")


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_kill9_random(kind, tmp_path):
    """SIGKILL at random moments of a first sync and of a run with changes on both sides;
    resumed runs converge on the uninterrupted run's end state, with nothing lost or
    duplicated, and one more run changes nothing."""
    t0 = time.monotonic()
    ref_dir = tmp_path / "reference"
    sc = start_scenario(kind, ref_dir, LARGE)
    try:
        r, first_duration = timed_run(sc.ks)
        must_succeed(r, "first sync")
        first_state = capture(sc)
        assert not first_state["problems"], first_state["problems"]
    finally:
        sc.close()
    _rm(ref_dir)
    ref, change_duration, token_issue = reference(kind, ref_dir, LARGE)
    _rm(ref_dir)

    seeds = _trial_seeds()
    failures = []
    stats = Counter()
    for seed in seeds:
        rng = random.Random(seed)
        d = tmp_path / ("trial-%d" % seed)
        log = []
        sc = start_scenario(kind, d, LARGE)
        try:
            if rng.random() < 0.5:
                log.append("first sync:")
                stats["first_sync_trials"] += 1
                _killed_then_resumed(sc.ks, rng, first_duration, log, stats)
                diff = compare(first_state, capture(sc))
                if diff:
                    raise AssertionError("after the first sync:\n  " + "\n  ".join(diff))
            else:
                must_succeed(run_ksyncd(sc.ks), "first sync")
            apply_changes(sc, LARGE)
            log.append("changes:")
            _killed_then_resumed(sc.ks, rng, change_duration, log, stats)
            notes = []
            diff = compare(ref, capture(sc), notes)
            stats["reserialized"] += bool(notes)
            quiet, qr = settle_problems(sc.ks, token_issue is not None)
            if quiet:
                log.append("further run stderr: " + qr.stderr[-1000:])
            if diff or quiet:
                raise AssertionError("after the run with changes:\n  " +
                                     "\n  ".join(diff + quiet))
            _rm(d)
        except AssertionError as e:
            failures.append("seed %d (replay: KSYNC_CRASH_SEED=%d): %s\n  %s" % (
                seed, seed, e, "\n  ".join(log)))
        finally:
            sc.close()
    elapsed = time.monotonic() - t0
    print("\n%s: %d kill -9 trials (%d kills, %d during a first sync), first sync %.2fs, "
          "run with changes %.2fs; %d failed; %d with re-serialized uploads in the files; "
          "%.1fs" % (kind, len(seeds), stats["kills"], stats["first_sync_trials"],
                     first_duration, change_duration, len(failures), stats["reserialized"],
                     elapsed))
    assert not failures, "%s: %d of %d kill -9 trials fail:\n%s" % (
        kind, len(failures), len(seeds), "\n\n".join(failures))
