#!/usr/bin/python3
"""ksync benchmark: ksync, vdirsyncer and the raw server cost, side by side.

Run by `make bench` (which sets KSYNC_BUILD); extra arguments go in BENCH_ARGS:

    make bench BENCH_ARGS=--quick
    /usr/bin/python3 bench/bench.py --contacts 10000 --events 5000 --xandikos-items 1000

Servers (on 127.0.0.1, in a temporary directory, stopped at the end):
  * Radicale with one address book of --contacts contacts and one calendar of --events events;
  * Xandikos with one address book of --xandikos-items contacts.

Clients, each with its own fresh state:
  * ksync       `ksyncd --once --config FILE` in a fresh HOME/XDG tree;
  * vdirsyncer  `vdirsyncer sync` (Debian package), caldav/carddav -> filesystem pairs;
                `vdirsyncer discover` runs once before and is reported apart, not counted;
  * raw         curl: one sync-collection REPORT per collection, then addressbook-/calendar-
                multiget REPORTs for every href in batches of 100; the multistatus bodies go to
                files. All requests for one step of one collection run in a single curl process,
                one after the other over one reused connection (--raw-parallel N lets curl keep
                N in flight instead). Only the curl processes are measured: the bench's own XML
                parsing between the two steps is not counted. Its uploads are PUTs with
                If-Match, see 'upload' below.

Scenarios, each for every client, in this order (the same server state for all three):
  initial   first sync into empty directories;
  nochange  re-sync with nothing changed on the server;
  changed   re-sync after --changes items of every collection were modified by PUT.
            raw: sync-collection with the token from the previous run + one multiget.
  upload    sync after local edits: --uploads (100) contacts of every address book and
            --upload-events (50) events of every non-empty calendar, the same seeded items for
            every client, spread over the collection and away from those 'changed' modified.
            Each client in turn first re-syncs (not counted: it picks up the previous clients'
            uploads), then its own copies get NOTE (vCard) / DESCRIPTION (the first VEVENT)
            set to a marker naming the client, written to a temp file renamed over the
            original, line endings kept; then its sync is measured. ksync: `ksyncd --once`;
            vdirsyncer: `vdirsyncer sync`; raw: one PUT with If-Match per edit, all in one
            curl process one after the other over one connection, with the etags and bodies
            of raw's own last sync-collection/multiget (the re-sync before). Right after each
            client's upload the edited hrefs are read back with one multiget per collection
            and the items carrying that client's marker are counted. ksync then syncs once
            more, outside the table, to show what its next run costs.

Per run: wall time, client CPU time (user+sys of the client's process tree) and peak RSS, both
from wait4 in bench/rusage.c (compiled on the fly; a child spawned straight from this Python
process would inherit its peak RSS); requests (the server's own log, before/after, with the
list of what ksync asked for); server CPU (/proc/PID/stat, before/after); files changed in the
client's output tree ((path, mtime_ns, inode, size) snapshots before/after); for ksync on
re-syncs also whether any row of ksync.db changed. Every table ends with the ratios and the
issue's targets for ksync, and the item counts of each client's output against the server's.
Results also go to bench/results/<timestamp>.json (bench/results/ is not tracked).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

try:
    from ksynctest import servers as kservers, gen as kgen
    from ksynctest.ksync import KsyncHome
except ImportError as e:
    sys.exit(f"bench: cannot import tests/integration/ksynctest ({e})")

# The first listing of a freshly seeded Radicale collection parses every item: with 15,000 items
# that takes minutes, more than the helpers' default HTTP timeout.
kservers.HTTP_TIMEOUT = max(kservers.HTTP_TIMEOUT, 900)

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CALDAV = "urn:ietf:params:xml:ns:caldav"
MULTIGET_BATCH = 100
ACCOUNT = "bench"

SCENARIOS = ("initial", "nochange", "changed", "upload")
SCENARIO_TITLES = {
    "initial": "initial sync (empty directories)",
    "nochange": "no-change re-sync",
    "changed": "re-sync after {n} remote changes per collection",
    "upload": "upload of {u} local edits ({detail})",
}

# Targets from the issue; they apply to ksync.
TARGET_INITIAL_WALL_VS_RAW = 1.3
TARGET_CPU_VS_VDIRSYNCER = 0.1
TARGET_NOCHANGE_CPU = 0.050
TARGET_RSS_MB = 25.0
TARGET_RSS_MIN_CONTACTS = 10000


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------- measuring

@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    maxrss_kb: int = 0
    procs: int = 0
    ok: bool = True
    error: str = ""
    requests: int | None = None
    server_cpu: float | None = None
    files_changed: int | None = None
    extra: dict = field(default_factory=dict)

    def add(self, other):
        self.wall += other.wall
        self.cpu += other.cpu
        self.user += other.user
        self.sys += other.sys
        self.maxrss_kb = max(self.maxrss_kb, other.maxrss_kb)
        self.procs += other.procs
        if not other.ok:
            self.ok = False
            self.error = self.error or other.error


RUSAGE_HELPER = None     # compiled bench/rusage.c, see build_rusage_helper()


def build_rusage_helper(tmp):
    """Compile bench/rusage.c into tmp; None (and a warning) when that fails."""
    global RUSAGE_HELPER
    out = Path(tmp) / "rusage"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        r = subprocess.run([cc, "-O2", "-o", str(out), str(ROOT / "bench" / "rusage.c")],
                           capture_output=True, text=True)
        if r.returncode == 0:
            RUSAGE_HELPER = str(out)
            return
        log(r.stderr)
    log("bench: cannot build bench/rusage.c; peak RSS figures will include the bench's own "
        "size (a child's ru_maxrss keeps its parent's)")


def run_measured(argv, *, env=None, cwd=None, stdin_path=None, log_path, timeout,
                 stderr_path=None):
    """Run argv (argv[0] an absolute path) in its own session; return a Measure.

    The figures come from wait4 on the client, which covers the client and every descendant it
    waited for, so CPU time and peak RSS are those of the client's whole process tree. On
    timeout the process group is killed.
    """
    argv = [str(a) for a in argv]
    stats = Path(str(log_path) + ".rusage")
    if RUSAGE_HELPER:
        stats.unlink(missing_ok=True)
        argv = [RUSAGE_HELPER, str(stats)] + argv
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    with open(log_path, "ab") as out, open(stderr_path or os.devnull, "ab") as err:
        if not stderr_path:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=out,
                             stderr=err if stderr_path else subprocess.STDOUT,
                             start_new_session=True)
    if stdin_path:
        stdin.close()
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    except BaseException:
        # The client runs in its own session, so a ^C on the terminal did not reach it.
        kill()
        os.waitpid(p.pid, 0)
        p.returncode = -signal.SIGKILL
        raise
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = rc = os.waitstatus_to_exitcode(status)
    m = Measure(wall=wall, user=ru.ru_utime, sys=ru.ru_stime, cpu=ru.ru_utime + ru.ru_stime,
                maxrss_kb=ru.ru_maxrss, procs=1)
    if RUSAGE_HELPER and stats.exists():
        w, u, sy, rss, st = stats.read_text().split()
        m.wall, m.user, m.sys, m.maxrss_kb = float(w), float(u), float(sy), int(rss)
        m.cpu = m.user + m.sys
        rc = os.waitstatus_to_exitcode(int(st))
    if timed_out.is_set():
        m.ok, m.error = False, f"timed out after {timeout:.0f} s"
    elif rc != 0:
        prog = Path(argv[2 if RUSAGE_HELPER else 0]).name
        m.ok, m.error = False, f"{prog} exited with {rc} (see {log_path})"
    return m


def process_cpu(pid):
    """CPU seconds (user+sys, all threads, waited-for children) of a running process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def logged_requests(server):
    """[(method, path, depth)] of the requests in the server's log, in order, markers left out."""
    text = server.log_text()
    if server.kind == "radicale":
        got = re.findall(r"\] (?:\[\w+\] )?(?:INFO: )?(\w+) request for '([^']*)'"
                         r"(?: with depth '(\w+)')?", text)
    else:
        got = [(m, p, "") for m, p in
               re.findall(r'aiohttp\.access:\S+ \[[^\]]*\] "(\S+) (\S+) [^"]*"', text)]
    return [g for g in got if not g[1].startswith(kservers.MARKER_PREFIX)]


def summarize_requests(reqs):
    """'PROPFIND /user/ (depth 1), 2x REPORT /user/contacts/, 3x PUT /user/contacts/*.vcf' for a
    list of requests."""
    counts = {}
    for method, path, depth in reqs:
        path = urllib.parse.unquote(path)
        if method in ("GET", "PUT", "DELETE") and not path.endswith("/"):
            # One line per collection and method, not per item.
            base, name = path.rsplit("/", 1)
            path = f"{base}/*" + (os.path.splitext(name)[1] or "")
        key = f"{method} {path}" + (f" (depth {depth})" if depth else "")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join((f"{n}x " if n > 1 else "") + k for k, n in counts.items()) or "none"


def snapshot(root):
    """(mtime_ns, inode, size) of every file under root."""
    snap = {}
    root = Path(root)
    if not root.exists():
        return snap
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            snap[p] = (st.st_mtime_ns, st.st_ino, st.st_size)
    return snap


def snapshot_diff(before, after):
    changed = [p for p in after if before.get(p) != after[p]]
    removed = [p for p in before if p not in after]
    return len(changed) + len(removed)


def count_items(root, ext):
    """Files ending in ext per directory under root, keyed by the path relative to root."""
    counts = {}
    root = Path(root)
    if not root.exists():
        return counts
    for dirpath, _, files in os.walk(root):
        n = sum(1 for f in files if f.endswith(ext))
        if n:
            counts[os.path.relpath(dirpath, root)] = n
    return counts


def count_marked(root, ext, marker):
    """Files ending in ext under root whose bytes contain marker."""
    n = 0
    m = marker.encode()
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(ext):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    if m in fh.read():
                        n += 1
    return n


# --------------------------------------------------------------------------- collections

@dataclass
class Collection:
    kind: str          # "contacts" | "events"
    name: str
    href: str
    url: str
    count: int
    changed_hrefs: list = field(default_factory=list)
    uids: dict = field(default_factory=dict)      # seeded item href -> UID

    @property
    def ext(self):
        return ".vcf" if self.kind == "contacts" else ".ics"

    @property
    def multiget(self):
        if self.kind == "contacts":
            return "addressbook-multiget", CARDDAV, "address-data"
        return "calendar-multiget", CALDAV, "calendar-data"


def marker_for(rev):
    return f"X-KSYNC-BENCH:rev{rev}"


def with_marker(data, rev):
    """data with an X-KSYNC-BENCH property (replacing an older one) in its first component."""
    nl = b"\r\n" if b"\r\n" in data else b"\n"
    lines = [ln for ln in data.split(nl) if not ln.startswith(b"X-KSYNC-BENCH:")]
    for i, ln in enumerate(lines):
        if ln in (b"END:VCARD", b"END:VEVENT", b"END:VTODO", b"END:VJOURNAL"):
            lines.insert(i, marker_for(rev).encode())
            break
    else:
        raise ValueError("no component end found")
    return nl.join(lines)


def body_of(got):
    if isinstance(got, (tuple, list)):
        got = got[0]
    if isinstance(got, str):
        got = got.encode()
    return got


def modify_items(server, coll, n, rev):
    """Modify n items of coll by PUT, spread over the collection; remember their hrefs."""
    hrefs = sorted(server.list(coll.href))
    if not hrefs:
        return
    step = max(1, len(hrefs) // n)
    chosen = hrefs[::step][:n]
    for h in chosen:
        server.put(h, with_marker(body_of(server.get(h)), rev))
    coll.changed_hrefs = chosen


# --------------------------------------------------------------------------- local edits (upload)

def upload_marker(client_name):
    """The text each client's local edits put in NOTE/DESCRIPTION; distinct per client."""
    return f"ksync-bench-upload-by-{client_name}-end"


def choose_upload_hrefs(coll, n):
    """n seeded items of coll spread over it, away from the ones the 'changed' scenario PUT."""
    hrefs = sorted(coll.uids)
    if n <= 0 or not hrefs:
        return []
    step = max(1, len(hrefs) // n)
    avoid = set(coll.changed_hrefs)
    chosen = [h for h in hrefs[step // 2::step] if h not in avoid][:n]
    if len(chosen) < n:
        taken = set(chosen)
        chosen += [h for h in hrefs if h not in taken and h not in avoid][:n - len(chosen)]
    return chosen[:n]


def with_note(data, kind, marker):
    """data with the NOTE (vCard) or DESCRIPTION (first VEVENT, not its VALARMs) property set to
    marker: existing ones (folded lines included) are removed and one is added before the
    component's first sub-component or its END. The file's line endings are kept."""
    comp, prop = (b"VCARD", b"NOTE") if kind == "contacts" else (b"VEVENT", b"DESCRIPTION")
    nl = b"\r\n" if b"\r\n" in data else b"\n"
    out = []
    state = "before"      # before the component, in it, after it
    depth = 0             # sub-component nesting inside the component
    inserted = skipping = False
    for ln in data.split(nl):
        cont = ln[:1] in (b" ", b"\t")
        if skipping and cont:
            continue
        skipping = False
        up = ln.upper().rstrip()
        if state == "before":
            if up == b"BEGIN:" + comp:
                state = "in"
        elif state == "in" and not cont:
            if depth == 0 and (up.startswith(b"BEGIN:") or up == b"END:" + comp) \
                    and not inserted:
                out.append(prop + b":" + marker.encode())
                inserted = True
            if up.startswith(b"BEGIN:"):
                depth += 1
            elif up.startswith(b"END:"):
                if depth == 0:
                    state = "after"
                depth -= 1
            elif depth == 0 and re.split(rb"[;:]", up, maxsplit=1)[0].split(b".")[-1] == prop:
                skipping = True
                continue
        out.append(ln)
    if not inserted:
        raise ValueError(f"no {comp.decode()} component found")
    return nl.join(out)


def uid_of(data):
    m = re.search(rb"(?m)^UID:([^\r\n]*)", data)
    return m.group(1).decode("utf-8", "replace").strip() if m else None


def files_by_uid(root, ext):
    """{UID: path} of the item files ending in ext under root."""
    got = {}
    root = Path(root)
    if not root.exists():
        return got
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(ext) and not f.startswith("."):
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    u = uid_of(fh.read())
                if u:
                    got.setdefault(u, p)
    return got


def edit_file(path, kind, marker):
    """Rewrite path with the marker, as editors do: a temp file in the same directory renamed
    over the original."""
    with open(path, "rb") as f:
        data = f.read()
    new = with_note(data, kind, marker)
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.bench-edit")
    with open(tmp, "wb") as f:
        f.write(new)
    os.replace(tmp, path)


def edit_local_items(roots, plan, marker):
    """Edit the local files of the items in plan ([(Collection, [hrefs])]) found by UID under
    roots ({kind: directory}); returns the number edited. Missing files raise."""
    n = 0
    index = {}
    for coll, hrefs in plan:
        if not hrefs:
            continue
        if coll.kind not in index:
            index[coll.kind] = files_by_uid(roots[coll.kind], coll.ext)
        byuid = index[coll.kind]
        missing = [coll.uids[h] for h in hrefs if coll.uids[h] not in byuid]
        if missing:
            raise RuntimeError(f"{len(missing)} of the items to edit in '{coll.name}' have no "
                               f"local file, e.g. UID {missing[0]}")
        for h in hrefs:
            edit_file(byuid[coll.uids[h]], coll.kind, marker)
            n += 1
    return n


def count_on_server(server, coll, hrefs, marker):
    """(items among hrefs whose server copy holds marker, items missing) by one multiget."""
    if not hrefs:
        return 0, 0
    report, ns, data = coll.multiget
    body = ('<?xml version="1.0" encoding="utf-8"?>'
            f'<X:{report} xmlns:D="DAV:" xmlns:X="{ns}"><D:prop><D:getetag/><X:{data}/></D:prop>'
            + "".join(f"<D:href>{xml_escape(urllib.parse.quote(h))}</D:href>" for h in hrefs)
            + f"</X:{report}>")
    resp = server.request("REPORT", coll.href, body.encode(),
                          {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                          expect=(207,))
    root = ET.fromstring(resp.content)
    found, marked = set(), 0
    for r in root.findall(f"{{{DAV}}}response"):
        href = urllib.parse.unquote(r.findtext(f"{{{DAV}}}href") or "")
        d = r.find(f".//{{{ns}}}{data}")
        if d is not None and d.text:
            found.add(urllib.parse.urlsplit(href).path)
            marked += marker in d.text
    missing = sum(1 for h in hrefs if urllib.parse.urlsplit(h).path not in found)
    return marked, missing


# --------------------------------------------------------------------------- clients

class Client:
    """One client under test, with its own state in workdir."""
    name = "?"
    label = "?"

    def __init__(self, bench, server, colls, workdir):
        self.bench = bench
        self.server = server
        self.colls = colls
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "client.log"
        self.notes = {}

    def setup(self):
        pass

    def run(self, scenario):
        raise NotImplementedError

    def item_counts(self):
        """{collection kind: items the client holds}"""
        return {}

    def marked(self, coll, rev):
        """Items of coll on disk that carry the marker of revision rev (None: not tracked)."""
        return None

    def resync(self):
        """One sync run with nothing to measure (the caller counts requests if it wants);
        raises when it fails."""
        raise NotImplementedError

    def prepare_upload(self, plan, marker):
        """Before the measured 'upload' run: catch up with the server (the other clients' edits),
        then edit the items of plan ([(Collection, [hrefs])]) locally with marker."""
        raise NotImplementedError


def clean_env(home):
    home = Path(home)
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LC_ALL", "TZ", "TERM", "KSYNC_BUILD")}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    })
    for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    return env


class KsyncClient(Client):
    name = "ksync"
    label = "ksync"

    def setup(self):
        self.home = KsyncHome(self.workdir / "ksync", build=self.bench.ksync_build)
        self.home.add_account(ACCOUNT, self.server)
        self.data = self.home.data_dir

    def run(self, scenario):
        tree = [self.data / "contacts", self.data / "calendars"]
        db = self.home.db_path
        dbfiles = [db, Path(str(db) + "-wal"), Path(str(db) + "-shm")]
        dump0 = self.home.db_dump() if scenario != "initial" else None
        before = {}
        for t in tree:
            before.update(snapshot(t))
        db_before = {str(p): file_state(p) for p in dbfiles}
        m = run_measured([self.home.ksyncd, "--once", "--config", self.home.config_path, ACCOUNT],
                         env=self.home.env(), cwd=self.home.home, log_path=self.log_path,
                         timeout=self.bench.timeout)
        after = {}
        for t in tree:
            after.update(snapshot(t))
        m.files_changed = snapshot_diff(before, after)
        if scenario != "initial":
            m.extra["db_files_touched"] = [p.name for p in dbfiles
                                           if db_before[str(p)] != file_state(p)]
            try:
                m.extra["db_rows_changed"] = dump0 != self.home.db_dump()
            except Exception as e:
                m.extra["db_rows_changed"] = None
                m.extra["db_error"] = str(e)
        return m

    def item_counts(self):
        return {
            "contacts": sum(count_items(self.data / "contacts", ".vcf").values()),
            "events": sum(count_items(self.data / "calendars", ".ics").values()),
        }

    def marked(self, coll, rev):
        sub = "contacts" if coll.kind == "contacts" else "calendars"
        return count_marked(self.data / sub, coll.ext, marker_for(rev))

    def resync(self):
        before = {}
        tree = [self.data / "contacts", self.data / "calendars"]
        for t in tree:
            before.update(snapshot(t))
        m = run_measured([self.home.ksyncd, "--once", "--config", self.home.config_path, ACCOUNT],
                         env=self.home.env(), cwd=self.home.home, log_path=self.log_path,
                         timeout=self.bench.timeout)
        after = {}
        for t in tree:
            after.update(snapshot(t))
        m.files_changed = snapshot_diff(before, after)
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        self.resync()
        edit_local_items({"contacts": self.data / "contacts" / ACCOUNT,
                          "events": self.data / "calendars" / ACCOUNT}, plan, marker)


def file_state(p):
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class VdirsyncerClient(Client):
    name = "vdirsyncer"
    label = "vdirsyncer"
    exe = "/usr/bin/vdirsyncer"

    def setup(self):
        self._env = clean_env(self.workdir / "home")
        self.local = self.workdir / "vdir"
        status = self.workdir / "status"
        self.local.mkdir(exist_ok=True)
        status.mkdir(exist_ok=True)
        cfg = [f'[general]\nstatus_path = "{status}/"\n']
        kinds = sorted({c.kind for c in self.colls})
        for kind in kinds:
            dav = "carddav" if kind == "contacts" else "caldav"
            ext = ".vcf" if kind == "contacts" else ".ics"
            cfg.append(f'[pair {kind}]\na = "{kind}_remote"\nb = "{kind}_local"\n'
                       f'collections = ["from a"]\n')
            remote = [f'[storage {kind}_remote]', f'type = "{dav}"',
                      f'url = "{self.server.url}"']
            if self.server.username:
                remote.append(f'username = "{self.server.username}"')
            if self.server.password is not None:
                remote.append(f'password = "{self.server.password}"')
            cfg.append("\n".join(remote) + "\n")
            cfg.append(f'[storage {kind}_local]\ntype = "filesystem"\n'
                       f'path = "{self.local / kind}/"\nfileext = "{ext}"\n')
        self.config = self.workdir / "config"
        self.config.write_text("\n".join(cfg))
        # `discover` asks before creating each local collection: answer yes.
        yes = self.workdir / "yes"
        yes.write_text("y\n" * 1000)
        r0 = self.server.request_count()
        m = run_measured([self.exe, "-c", self.config, "discover"], env=self._env,
                         stdin_path=yes, log_path=self.log_path, timeout=self.bench.timeout)
        m.requests = self.server.request_count() - r0
        self.notes["discover"] = asdict(m)
        if not m.ok:
            raise RuntimeError(f"vdirsyncer discover failed: {m.error}")

    def run(self, scenario):
        before = snapshot(self.local)
        m = run_measured([self.exe, "-c", self.config, "sync"], env=self._env,
                         log_path=self.log_path, timeout=self.bench.timeout)
        m.files_changed = snapshot_diff(before, snapshot(self.local))
        return m

    def item_counts(self):
        return {
            "contacts": sum(count_items(self.local / "contacts", ".vcf").values()),
            "events": sum(count_items(self.local / "events", ".ics").values()),
        }

    def marked(self, coll, rev):
        return count_marked(self.local / coll.kind, coll.ext, marker_for(rev))

    def resync(self):
        m = self.run("resync")
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        self.resync()
        edit_local_items({"contacts": self.local / "contacts", "events": self.local / "events"},
                         plan, marker)


class RawClient(Client):
    name = "raw"
    label = "raw (curl)"
    exe = "/usr/bin/curl"

    def setup(self):
        self.tokens = {}
        self.items = {}      # collection href -> {item href: etag} seen with data
        self.bodies = {}     # item href -> its data from the last multiget (CRLF restored)
        self.puts = []       # the 'upload' requests: (url, body file, content type, etag, href)
        self.resyncs = 0
        self.out = self.workdir / "out"
        self.out.mkdir(exist_ok=True)
        self.seq = 0

    def _curl_config(self, requests):
        """A curl -K config for a list of (url, body_path, out_path, depth) requests."""
        lines = ["silent", "show-error", "no-progress-meter"]
        if self.bench.raw_parallel > 1 and len(requests) > 1:
            lines += ["parallel", f"parallel-max = {self.bench.raw_parallel}"]
        for i, (url, body, out, depth) in enumerate(requests):
            if i:
                lines.append("next")
            lines += [
                f'url = "{url}"',
                'request = "REPORT"',
                f'header = "Depth: {depth}"',
                'header = "Content-Type: application/xml; charset=utf-8"',
                # Without this curl waits for a 100-continue that Radicale never sends.
                'header = "Expect:"',
                f'data-binary = "@{body}"',
                f'output = "{out}"',
                'write-out = "%{http_code}\\n"',
            ]
            if self.server.username:
                lines.append(f'user = "{self.server.username}:{self.server.password or ""}"')
        self.seq += 1
        path = self.workdir / f"curl-{self.seq:04d}.cfg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _put_config(self, puts):
        """A curl -K config for sequential PUTs [(url, body, content type, etag, href)] over one
        connection; each request writes its status and the reply's ETag."""
        lines = ["silent", "show-error", "no-progress-meter"]
        for i, (url, body, ctype, etag, _) in enumerate(puts):
            if i:
                lines.append("next")
            lines += [
                f"url = {cfg_quote(url)}",
                'request = "PUT"',
                f"header = {cfg_quote('Content-Type: ' + ctype)}",
                f"header = {cfg_quote('If-Match: ' + etag)}",
                'header = "Expect:"',
                f'data-binary = "@{body}"',
                'output = "/dev/null"',
                'write-out = "%{http_code} %header{etag}\\n"',
            ]
            if self.server.username:
                cred = f"{self.server.username}:{self.server.password or ''}"
                lines.append(f"user = {cfg_quote(cred)}")
        self.seq += 1
        path = self.workdir / f"curl-{self.seq:04d}.cfg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _curl(self, requests, cfg=None, ok_codes=("207",)):
        """Run one curl process; returns (Measure, [status lines])."""
        cfg = cfg or self._curl_config(requests)
        status_path = self.workdir / f"curl-{self.seq:04d}.status"
        with open(status_path, "wb"):
            pass
        m = run_measured([self.exe, "-K", cfg], log_path=status_path,
                         stderr_path=self.log_path, timeout=self.bench.timeout)
        codes = [ln for ln in status_path.read_text().split("\n") if ln.strip()]
        bad = [c.split()[0] for c in codes if c.split()[0] not in ok_codes]
        if m.ok and (bad or len(codes) != len(requests)):
            m.ok = False
            m.error = f"curl: HTTP status {','.join(sorted(set(bad))) or '?'} (see {status_path})"
        return m, codes

    def _file(self, stem, suffix):
        return self.out / f"{stem}{suffix}"

    def run(self, scenario):
        if scenario == "upload":
            return self._upload()
        total = Measure()
        for ci, coll in enumerate(self.colls):
            stem = f"{scenario}-c{ci}"
            token = self.tokens.get(coll.href, "") if scenario != "initial" else ""
            body = self._file(stem + "-sync", ".req.xml")
            body.write_text(sync_collection_body(token))
            out = self._file(stem + "-sync", ".xml")
            m, _ = self._curl([(coll.url, body, out, 0)])
            total.add(m)
            if not m.ok:
                continue
            new_token, changed, removed = parse_sync_response(out)
            if new_token:
                self.tokens[coll.href] = new_token
            seen = self.items.setdefault(coll.href, {})
            for h in removed:
                seen.pop(h, None)
            if not changed:
                continue
            reqs = []
            for bi in range(0, len(changed), MULTIGET_BATCH):
                batch = changed[bi:bi + MULTIGET_BATCH]
                b = self._file(f"{stem}-mg{bi // MULTIGET_BATCH:04d}", ".req.xml")
                b.write_text(multiget_body(coll, batch))
                reqs.append((coll.url, b, self._file(f"{stem}-mg{bi // MULTIGET_BATCH:04d}",
                                                     ".xml"), 1))
            m, _ = self._curl(reqs)
            total.add(m)
            if m.ok:
                for _, _, o, _ in reqs:
                    for href, (etag, data) in parse_multiget_response(o, coll).items():
                        seen[href] = etag
                        self.bodies[href] = data
        total.files_changed = None
        return total

    def resync(self):
        self.resyncs += 1
        m = self.run(f"resync{self.resyncs}")
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        """Catch up (sync-collection + multiget, not measured), then write the edited bodies to
        files; the etags are those of this client's last sync."""
        self.resync()
        self.puts = []
        for coll, hrefs in plan:
            known = {norm_href(h): h for h in self.items.get(coll.href, {})}
            ctype = ("text/vcard" if coll.kind == "contacts" else "text/calendar") \
                + "; charset=utf-8"
            for i, h in enumerate(hrefs):
                sent = known.get(norm_href(h))
                if sent is None or sent not in self.bodies:
                    raise RuntimeError(f"raw has no copy of {h}")
                etag = self.items[coll.href][sent]
                if not etag:
                    raise RuntimeError(f"raw has no etag for {h}")
                body = self._file(f"upload-{coll.name}-{i:05d}", coll.ext)
                body.write_bytes(with_note(self.bodies[sent], coll.kind, marker))
                self.puts.append((urllib.parse.urljoin(self.server.url, sent), body, ctype, etag,
                                  (coll.href, sent)))

    def _upload(self):
        if not self.puts:
            return Measure(ok=False, error="nothing prepared to upload")
        m, codes = self._curl(self.puts, cfg=self._put_config(self.puts),
                              ok_codes=("200", "201", "204"))
        for (_, body, _, _, (ch, h)), line in zip(self.puts, codes):
            parts = line.split(None, 1)
            if parts[0] in ("200", "201", "204"):
                self.bodies[h] = body.read_bytes()
                self.items[ch][h] = parts[1].strip() if len(parts) > 1 else None
        m.files_changed = None
        return m

    def item_counts(self):
        out = {"contacts": 0, "events": 0}
        for c in self.colls:
            out[c.kind] += len(self.items.get(c.href, {}))
        return out


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def sync_collection_body(token):
    tok = f"<D:sync-token>{xml_escape(token)}</D:sync-token>" if token else "<D:sync-token/>"
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<D:sync-collection xmlns:D="DAV:">'
            f'{tok}<D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>\n')


def multiget_body(coll, hrefs):
    report, ns, data = coll.multiget
    hs = "".join(f"<D:href>{xml_escape(h)}</D:href>" for h in hrefs)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            f'<C:{report} xmlns:D="DAV:" xmlns:C="{ns}">'
            f'<D:prop><D:getetag/><C:{data}/></D:prop>{hs}</C:{report}>\n')


def _status_ok(resp):
    st = resp.find(f"{{{DAV}}}status")
    if st is not None and st.text and " 404" in st.text:
        return False
    return True


def parse_sync_response(path):
    """(new sync token, changed hrefs, removed hrefs) from a sync-collection multistatus."""
    root = ET.parse(path).getroot()
    tok = root.find(f"{{{DAV}}}sync-token")
    changed, removed = [], []
    for resp in root.findall(f"{{{DAV}}}response"):
        href = resp.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        if not _status_ok(resp):
            removed.append(href)
            continue
        if href.endswith("/") and resp.find(f".//{{{DAV}}}getetag") is None:
            continue   # the collection itself
        changed.append(href)
    return (tok.text if tok is not None else None), changed, removed


def parse_multiget_response(path, coll):
    """{href: (etag, data bytes)} of a multiget multistatus. The XML parser turned the items'
    CRLF into LF; CRLF is put back."""
    _, ns, data = coll.multiget
    got = {}
    root = ET.parse(path).getroot()
    for resp in root.findall(f"{{{DAV}}}response"):
        href = resp.findtext(f"{{{DAV}}}href")
        d = resp.find(f".//{{{ns}}}{data}")
        if href and d is not None and d.text:
            text = d.text.replace("\r\n", "\n").replace("\n", "\r\n")
            got[href] = (resp.findtext(f".//{{{DAV}}}getetag"), text.encode())
    return got


def norm_href(href):
    """The decoded path of an href (servers differ in what they percent-encode)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(href).path)


def cfg_quote(s):
    """s as a double-quoted curl config string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


CLIENT_CLASSES = {"ksync": KsyncClient, "vdirsyncer": VdirsyncerClient, "raw": RawClient}


# --------------------------------------------------------------------------- reporting

def fmt_s(x):
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mb(kb):
    return f"{kb / 1024:.1f} MB" if kb else "-"


def verdict(ok):
    return "PASS" if ok else "MISS"


def print_table(title, rows, checks):
    log("")
    log(title)
    log("-" * len(title))
    hdr = (f"{'client':<12} {'wall':>9} {'CPU':>9} {'of it sys':>9} {'peak RSS':>9} "
           f"{'requests':>8} {'files':>6} {'server CPU':>10}  status")
    log(hdr)
    for label, m in rows:
        if m is None:
            continue
        files = "-" if m.files_changed is None else str(m.files_changed)
        req = "-" if m.requests is None else str(m.requests)
        status = "ok" if m.ok else f"FAILED: {m.error}"
        log(f"{label:<12} {fmt_s(m.wall):>9} {fmt_s(m.cpu):>9} {fmt_s(m.sys):>9} "
            f"{fmt_mb(m.maxrss_kb):>9} {req:>8} {files:>6} {fmt_s(m.server_cpu):>10}  {status}")
    for text in checks:
        log("  " + text)


def check_line(what, value, target=None, ok=None):
    line = f"{what:<24}{value:>10}"
    if target:
        line += f"   target {target}"
    if ok is not None:
        line += f"   {verdict(ok)}"
    return line


def scenario_checks(scenario, res, ncoll, nchanged_coll, contacts_n, nedits=0):
    """Ratio and target lines for ksync in one scenario, and the same as a dict for JSON."""
    k, v, r = res.get("ksync"), res.get("vdirsyncer"), res.get("raw")
    lines, out = [], {}
    if k is not None and r is not None and r.wall > 0:
        ratio = out["ksync_raw_wall"] = k.wall / r.wall
        if scenario == "initial":
            ok = out["target_initial_wall"] = k.ok and ratio <= TARGET_INITIAL_WALL_VS_RAW
            lines.append(check_line("ksync/raw wall", f"{ratio:.2f}",
                                    f"<= {TARGET_INITIAL_WALL_VS_RAW}", ok))
        else:
            lines.append(check_line("ksync/raw wall", f"{ratio:.2f}"))
    if k is not None and v is not None and v.cpu > 0:
        ratio = out["ksync_vdirsyncer_cpu"] = k.cpu / v.cpu
        if scenario == "initial":
            ok = out["target_cpu"] = k.ok and ratio <= TARGET_CPU_VS_VDIRSYNCER
            lines.append(check_line("ksync/vdirsyncer CPU", f"{ratio:.3f}",
                                    f"<= {TARGET_CPU_VS_VDIRSYNCER}", ok))
        else:
            lines.append(check_line("ksync/vdirsyncer CPU", f"{ratio:.3f}"))
    if k is not None and v is not None and v.wall > 0:
        out["ksync_vdirsyncer_wall"] = k.wall / v.wall
        lines.append(check_line("ksync/vdirsyncer wall", f"{k.wall / v.wall:.3f}"))
    if scenario == "upload":
        for other, name in ((v, "vdirsyncer"), (r, "raw")):
            if k is not None and other is not None and k.requests is not None \
                    and other.requests:
                ratio = out[f"ksync_{name}_requests"] = k.requests / other.requests
                lines.append(check_line(f"ksync/{name} requests", f"{ratio:.3f}")
                             + f"   ({k.requests} vs {other.requests})")
    if k is None:
        return lines, out
    rss = f"{k.maxrss_kb / 1024:.1f} MB"
    if scenario == "initial" and contacts_n >= TARGET_RSS_MIN_CONTACTS:
        ok = out["target_rss"] = k.ok and k.maxrss_kb / 1024 < TARGET_RSS_MB
        lines.append(check_line("ksync peak RSS", rss,
                                f"< {TARGET_RSS_MB:.0f} MB ({contacts_n} contacts in the run)", ok))
    elif scenario == "initial":
        lines.append(check_line("ksync peak RSS", rss, f"< {TARGET_RSS_MB:.0f} MB applies from "
                                f"{TARGET_RSS_MIN_CONTACTS} contacts"))
    if scenario == "nochange":
        ok = out["target_requests"] = k.requests is not None and k.requests <= ncoll
        lines.append(check_line("ksync requests", str(k.requests),
                                f"<= {ncoll} (1 per collection)", ok))
        ok = out["target_no_file"] = k.files_changed == 0
        lines.append(check_line("ksync files written", str(k.files_changed), "0", ok))
        rows = k.extra.get("db_rows_changed")
        if rows is not None:
            out["target_no_row"] = not rows
            touched = ", ".join(k.extra.get("db_files_touched") or []) or "none"
            lines.append(check_line("ksync.db rows changed", "yes" if rows else "no", "no",
                                    not rows) + f"   (files touched, for information: {touched})")
        ok = out["target_cpu_50ms"] = k.cpu < TARGET_NOCHANGE_CPU
        lines.append(check_line("ksync CPU", fmt_s(k.cpu), "< 50 ms", ok))
    if scenario == "changed":
        want = ncoll + nchanged_coll
        ok = out["target_requests"] = k.requests is not None and k.requests <= want
        lines.append(check_line("ksync requests", str(k.requests),
                                f"<= {want} (1 per collection + 1 multiget per changed "
                                f"collection)", ok))
    if scenario == "upload":
        least = ncoll + nedits
        lines.append(check_line("ksync requests", str(k.requests))
                     + f"   (for reference: 1 per collection + 1 per edit = {least})")
    if k.extra.get("requests_made"):
        lines.append("ksync asked for:        " + k.extra["requests_made"])
    return lines, out


# --------------------------------------------------------------------------- bench

class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.timeout = args.timeout
        self.raw_parallel = args.raw_parallel
        self.ksync_build = os.environ.get("KSYNC_BUILD", str(ROOT / "build" / "plain"))
        self.results = {"servers": []}

    def run_server(self, kind):
        a = self.args
        sdir = self.tmp / kind
        sdir.mkdir()
        if kind == "radicale":
            plan = [("contacts", a.contacts), ("events", a.events)]
            start = kservers.start_radicale
        else:
            plan = [("contacts", a.xandikos_items)]
            start = kservers.start_xandikos
        plan = [(k, n) for k, n in plan if n > 0]
        log(f"\n=== {kind}: starting, seeding "
            + " and ".join(f"{n} {k}" for k, n in plan))
        server = start(sdir / "server")
        result = {"server": kind, "version": server_version(kind),
                  "items": dict(plan), "scenarios": {}, "sanity": {}}
        try:
            t0 = time.perf_counter()
            existing = server.collections()
            seeded, uids = {}, {}
            for k, n in plan:
                if k == "contacts":
                    # Xandikos starts with a default address book: fill that one.
                    href = next((h for h, c in existing.items() if c["kind"] == "addressbook"),
                                None) or server.make_addressbook("contacts", "Contacts")
                    items = kgen.contacts(n, seed=1)
                else:
                    href = next((h for h, c in existing.items() if c["kind"] == "calendar"),
                                None) or server.make_calendar("calendar", "Calendar",
                                                             components=("VEVENT",))
                    items = kgen.events(n, seed=1)
                # seed() checks by listing the collection that the server serves every item;
                # that first listing is also where the server parses and caches each item, so
                # the first client measured does not pay for it.
                got = server.seed(href, items)
                seeded[href] = len(got)
                # gen names its items by UID.
                uids[href] = {kservers.href_path(h): name for name, h in got.items()}
            # Every collection on the server is benchmarked, empty ones included: ksync syncs
            # them all, so vdirsyncer and raw do too.
            colls = []
            found = server.collections()
            for href, c in sorted(found.items(), key=lambda hc: (hc[1]["kind"] != "addressbook",
                                                                 hc[0])):
                count = seeded[href] if href in seeded else len(server.list(href))
                colls.append(Collection(kind="contacts" if c["kind"] == "addressbook" else "events",
                                        name=href.rstrip("/").rsplit("/", 1)[-1], href=href,
                                        url=urllib.parse.urljoin(server.url, href), count=count,
                                        uids=uids.get(href, {})))
            log(f"seeded in {time.perf_counter() - t0:.1f} s")
            self.bench_clients(server, kind, colls, result)
        finally:
            server.stop()
        self.results["servers"].append(result)

    def bench_clients(self, server, kind, colls, result):
        a = self.args
        clients = []
        for name in a.clients:
            c = CLIENT_CLASSES[name](self, server, colls, self.tmp / kind / name)
            try:
                c.setup()
            except Exception as e:  # one client failing must not stop the others
                log(f"{name}: setup failed: {e}")
                result.setdefault("errors", {})[name] = str(e)
                continue
            clients.append(c)
        contacts_n = sum(c.count for c in colls if c.kind == "contacts")
        rev = 0
        plan = []
        for scenario in SCENARIOS:
            if scenario == "changed":
                rev += 1
                for c in colls:
                    modify_items(server, c, a.changes, rev)
            if scenario == "upload":
                # The same items for every client; each client edits them with its own marker
                # after catching up with the server.
                plan = [(c, choose_upload_hrefs(c, a.uploads if c.kind == "contacts"
                                                else a.upload_events)) for c in colls]
                plan = [(c, h) for c, h in plan if h]
                result["upload_plan"] = {c.name: len(h) for c, h in plan}
            res = {}
            arrived = {}
            for c in clients:
                if scenario == "upload":
                    try:
                        c.prepare_upload(plan, upload_marker(c.name))
                    except Exception as e:
                        res[c.name] = Measure(ok=False, error=f"before the upload: "
                                                               f"{type(e).__name__}: {e}")
                        continue
                r0 = server.request_count()
                log0 = len(logged_requests(server))
                cpu0 = process_cpu(server.proc.pid)
                try:
                    m = c.run(scenario)
                except Exception as e:
                    m = Measure(ok=False, error=f"{type(e).__name__}: {e}")
                cpu1 = process_cpu(server.proc.pid)
                m.requests = server.request_count() - r0
                made = logged_requests(server)[log0:]
                m.extra["requests_made"] = summarize_requests(made)
                if cpu0 is not None and cpu1 is not None:
                    m.server_cpu = cpu1 - cpu0
                res[c.name] = m
                if scenario == "upload":
                    arrived[c.name] = self.check_upload(server, plan, c, m)
            nchanged = sum(1 for c in colls if c.changed_hrefs) if scenario == "changed" else 0
            nedits = sum(len(h) for _, h in plan) if scenario == "upload" else 0
            detail = ", ".join(f"{len(h)} in '{c.name}'" for c, h in plan)
            title = (f"{kind.capitalize()} {result['version']}: "
                     + ", ".join(f"{c.count} {c.kind} in '{c.name}'" for c in colls)
                     + " - " + SCENARIO_TITLES[scenario].format(n=a.changes, u=nedits,
                                                                 detail=detail))
            rows = [(cl.label, res.get(cl.name)) for cl in clients]
            checks, verdicts = scenario_checks(scenario, res, len(colls), nchanged, contacts_n,
                                               nedits)
            print_table(title, rows, checks)
            result["scenarios"][scenario] = {
                "clients": {n: asdict(m) for n, m in res.items()},
                "checks": verdicts,
            }
            if scenario == "upload":
                self.report_upload(plan, clients, res, arrived, result)
            if scenario in ("initial", "changed", "upload"):
                self.sanity(server, kind, colls, clients, scenario, rev, result)
        for c in clients:
            if c.notes:
                result.setdefault("notes", {})[c.name] = c.notes
            d = c.notes.get("discover")
            if d:
                log(f"  (vdirsyncer discover, not counted above: {fmt_s(d['wall'])} wall, "
                    f"{fmt_s(d['cpu'])} CPU, {d['requests']} requests)")

    def check_upload(self, server, plan, client, m):
        """Right after a client's upload (before the next client edits the same items): how
        many of the planned items carry its marker on the server; for ksync, also what the next
        sync does (not counted in the table)."""
        marker = upload_marker(client.name)
        got = {}
        for coll, hrefs in plan:
            try:
                marked, missing = count_on_server(server, coll, hrefs, marker)
                got[coll.name] = {"want": len(hrefs), "marked": marked, "missing": missing}
            except Exception as e:
                got[coll.name] = {"want": len(hrefs), "error": f"{type(e).__name__}: {e}"}
        m.extra["upload_on_server"] = got
        if client.name == "ksync" and m.ok:
            r0 = server.request_count()
            log0 = len(logged_requests(server))
            try:
                f = client.resync()
                m.extra["next_sync"] = {
                    "wall": f.wall, "cpu": f.cpu, "files_changed": f.files_changed,
                    "requests": server.request_count() - r0,
                    "requests_made": summarize_requests(logged_requests(server)[log0:])}
            except Exception as e:
                m.extra["next_sync"] = {"error": f"{type(e).__name__}: {e}"}
        return got

    def report_upload(self, plan, clients, res, arrived, result):
        want = "/".join(f"{len(h)} in '{c.name}'" for c, h in plan)
        parts = []
        for cl in clients:
            got = arrived.get(cl.name)
            if got is None:
                parts.append(f"{cl.name} not run")
                continue
            cells, bad = [], False
            for c, h in plan:
                g = got[c.name]
                if "error" in g:
                    cells.append("?")
                    bad = True
                    continue
                cells.append(str(g["marked"]) + (f" ({g['missing']} missing)"
                                                  if g["missing"] else ""))
                bad = bad or g["marked"] != len(h)
            parts.append(f"{cl.name} {'/'.join(cells)}" + (" MISMATCH" if bad else ""))
        log(f"  edits found on the server right after each upload (want {want}): "
            + ", ".join(parts))
        for cl in clients:
            g = arrived.get(cl.name) or {}
            for cname, x in g.items():
                if "error" in x:
                    log(f"  {cl.name}: checking '{cname}' failed: {x['error']}")
        k = res.get("ksync")
        nxt = k.extra.get("next_sync") if k is not None else None
        if nxt:
            if "error" in nxt:
                log(f"  ksync's next sync (not counted above) failed: {nxt['error']}")
            else:
                log(f"  ksync's next sync (not counted above): {nxt['requests']} requests, "
                    f"{nxt['files_changed']} files changed, {fmt_s(nxt['wall'])} wall: "
                    + nxt["requests_made"])
        result.setdefault("sanity", {})["upload_on_server"] = arrived

    def sanity(self, server, kind, colls, clients, scenario, rev, result):
        on_server = {"contacts": 0, "events": 0}
        for c in colls:
            on_server[c.kind] += len(server.list(c.href))
        parts, data = [], {"server": on_server}
        ok = True
        for cl in clients:
            counts = cl.item_counts()
            data[cl.name] = counts
            for k in on_server:
                if any(c.kind == k for c in colls) and counts.get(k) != on_server[k]:
                    ok = False
            parts.append(f"{cl.name} " + "/".join(str(counts.get(k, 0)) for k in on_server
                                                  if any(c.kind == k for c in colls)))
        kinds = "/".join(k for k in on_server if any(c.kind == k for c in colls))
        line = (f"  items ({kinds}): server "
                + "/".join(str(on_server[k]) for k in on_server if any(c.kind == k for c in colls))
                + ", " + ", ".join(parts) + f"   {'same' if ok else 'MISMATCH'}")
        if scenario == "changed":
            marks = []
            for cl in clients:
                changed = [c for c in colls if c.changed_hrefs]
                got = [cl.marked(c, rev) for c in changed]
                if any(g is None for g in got):
                    continue
                want = [len(c.changed_hrefs) for c in changed]
                data.setdefault("changed_on_disk", {})[cl.name] = got
                marks.append(f"{cl.name} {'/'.join(map(str, got))}"
                             + ("" if got == want else " MISMATCH"))
            if marks:
                line += ("\n  changed items on disk (want "
                         + "/".join(f"{len(c.changed_hrefs)} in '{c.name}'"
                                    for c in colls if c.changed_hrefs) + "): "
                         + ", ".join(marks))
        log(line)
        result["sanity"][scenario] = data


def server_version(kind):
    try:
        if kind == "radicale":
            import radicale
            return radicale.VERSION
        import xandikos
        return ".".join(map(str, xandikos.__version__))
    except Exception:
        return "?"


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=None, help="contacts on Radicale (10000)")
    p.add_argument("--events", type=int, default=None, help="events on Radicale (5000)")
    p.add_argument("--xandikos-items", type=int, default=None,
                   help="contacts on Xandikos (1000)")
    p.add_argument("--quick", action="store_true",
                   help="1000 contacts, 500 events, 200 Xandikos items (explicit sizes win)")
    p.add_argument("--changes", type=int, default=10,
                   help="items modified per collection before the 'changed' re-sync (10)")
    p.add_argument("--uploads", type=int, default=100,
                   help="contacts edited locally per address book before the 'upload' run "
                        "(100)")
    p.add_argument("--upload-events", type=int, default=50,
                   help="events edited locally per non-empty calendar before the 'upload' run "
                        "(50)")
    p.add_argument("--clients", default="ksync,raw,vdirsyncer",
                   help="comma-separated, run in this order (ksync,raw,vdirsyncer)")
    p.add_argument("--servers", default="radicale,xandikos", help="radicale,xandikos")
    p.add_argument("--raw-parallel", type=int, default=1,
                   help="multigets curl keeps in flight (1: one after the other)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per client run (300)")
    p.add_argument("--json", default=None, help="result file (bench/results/<timestamp>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    quick = (1000, 500, 200) if a.quick else (10000, 5000, 1000)
    a.contacts = quick[0] if a.contacts is None else a.contacts
    a.events = quick[1] if a.events is None else a.events
    a.xandikos_items = quick[2] if a.xandikos_items is None else a.xandikos_items
    a.clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for c in a.clients:
        if c not in CLIENT_CLASSES:
            p.error(f"unknown client {c!r}")
    for s in a.servers:
        if s not in ("radicale", "xandikos"):
            p.error(f"unknown server {s!r}")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Turn SIGTERM into an exception so that servers and clients are stopped and temp dirs go.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ksync_build = os.environ.get("KSYNC_BUILD", str(ROOT / "build" / "plain"))
    if "ksync" in args.clients and not os.access(Path(ksync_build) / "ksyncd", os.X_OK):
        sys.exit(f"bench: {ksync_build}/ksyncd not found (run `make`, or pass "
                 f"--clients raw,vdirsyncer)")
    started = datetime.datetime.now().astimezone()
    tmp = tempfile.mkdtemp(prefix="ksync-bench-")
    build_rusage_helper(tmp)
    bench = Bench(args, tmp)
    bench.results["meta"] = {
        "started": started.isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items()},
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "python": platform.python_version()},
        "tools": {"vdirsyncer": tool_version(["/usr/bin/vdirsyncer", "--version"]),
                  "curl": tool_version(["/usr/bin/curl", "--version"])},
        "ksync_build": ksync_build,
        "raw_method": ("one sync-collection REPORT per collection, then multigets of "
                       f"{MULTIGET_BATCH} hrefs, all in one curl process per step "
                       + ("sequentially over one connection" if args.raw_parallel <= 1
                          else f"with {args.raw_parallel} in flight")
                       + "; upload: one PUT with If-Match per edit, sequentially over one "
                         "connection, etags from raw's own re-sync before it"),
        "vdirsyncer_method": "`vdirsyncer sync`; `discover` run once before, not counted",
    }
    log(f"ksync bench: {', '.join(args.servers)}; clients {', '.join(args.clients)}; "
        f"work dir {tmp}")
    log("columns: wall = elapsed time; CPU = user+sys of the client's process tree (sys shown "
        "apart);\n  peak RSS = the client's largest process; requests = as logged by the server;"
        "\n  files = files created, changed or removed in the client's output tree; "
        "server CPU = the server's CPU time meanwhile.\n"
        f"  raw = curl: sync-collection, then multigets of {MULTIGET_BATCH} hrefs "
        + ("one after the other on one connection" if args.raw_parallel <= 1 else
           f"{args.raw_parallel} in flight") + ";\n  for the upload, one PUT with If-Match "
        "per edit, one after the other on one connection;\n  vdirsyncer `discover` is not "
        "counted.")
    rc = 0
    try:
        for s in args.servers:
            try:
                bench.run_server(s)
            except Exception as e:
                log(f"bench: {s}: {type(e).__name__}: {e}")
                bench.results["servers"].append({"server": s, "error": f"{type(e).__name__}: {e}"})
                rc = 1
    except (KeyboardInterrupt, SystemExit) as e:
        rc = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
        log(f"bench: interrupted (exit status {rc})")
        bench.results["meta"]["interrupted"] = True
    finally:
        bench.results["meta"]["finished"] = datetime.datetime.now().astimezone().isoformat(
            timespec="seconds")
        out = Path(args.json) if args.json else (
            ROOT / "bench" / "results" / f"{started.strftime('%Y%m%d-%H%M%S')}.json")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
            log(f"\nresults: {out}")
        except OSError as e:
            log(f"bench: cannot write {out}: {e}")
        if args.keep:
            log(f"work dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
