"""ksync's own cost at scale against bench/davserve.py, and where its CPU goes (perf)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import davserve
from clients import ACCOUNT, with_marker
from common import (ROOT, check_line, fmt_s, log, print_stat_table, process_cpu,
                    run_measured, snapshot, snapshot_diff, summarize)
from ksynctest.ksync import KsyncHome

START_TIMEOUT = 60
SCALE_SCENARIOS = ("initial", "nochange", "changed")


def split(n):
    """(contacts, events) of n items: two thirds contacts, like the Radicale data."""
    c = round(n * 2 / 3)
    return c, n - c


class Responder:
    """bench/davserve.py in its own process on a free loopback port; quacks enough like a
    ksynctest DavServer for KsyncHome.add_account()."""

    def __init__(self, workdir, contacts, events):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "port"
        self.log = open(self.workdir / "davserve.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "davserve.py"), "--contacts", str(contacts),
             "--events", str(events), "--port-file", str(port_file)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("bench/davserve.py did not start: "
                                   + (self.workdir / "davserve.log").read_text()[-2000:])
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}/"
        self.username = "user"
        self.password = None
        self.counts = {"contacts": contacts, "events": events}

    def _open(self, method, path, data=None, headers=None):
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method,
                                     headers=headers or {})
        return urllib.request.urlopen(req, timeout=60)

    def requests(self):
        with self._open("GET", "/.bench/stats") as r:
            return json.loads(r.read())["requests"]

    def href(self, kind, i):
        """The href of generated item i of the collection of that kind."""
        return (davserve.HOMES[kind] + davserve.COLLECTION_NAMES[kind] + "/"
                + davserve.uid_for(kind, i) + (".vcf" if kind == "contacts" else ".ics"))

    def modify(self, n, rev):
        """Modify n items of every collection by GET + PUT with If-Match, spread over it; these
        requests go through the stats counter too, so the caller reads it afterwards."""
        done = 0
        for kind, count in self.counts.items():
            if not count:
                continue
            step = max(1, count // n)
            for i in list(range(0, count, step))[:n]:
                h = self.href(kind, i)
                with self._open("GET", h) as r:
                    etag, data = r.headers["ETag"], r.read()
                self._open("PUT", h, with_marker(data, rev), {
                    "If-Match": etag, "Content-Type": "text/vcard" if kind == "contacts"
                    else "text/calendar"}).close()
                done += 1
        return done

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def snap(trees):
    out = {}
    for t in trees:
        out.update(snapshot(t))
    return out


def _ksync_run(bench, home, logp):
    return run_measured([home.ksyncd, "--once", "--config", home.config_path, ACCOUNT],
                        env=home.env(), cwd=home.home, log_path=logp, timeout=bench.timeout)


def scale(bench):
    a = bench.args
    log(f"\n=== scale: ksync alone against bench/davserve.py (two thirds contacts, one third "
        f"events), {a.rounds} rounds per size")
    out, rows, checks = {}, [], []
    for n in a.scale_sizes:
        nc, ne = split(n)
        sdir = bench.tmp / f"scale-{n}"
        resp = Responder(sdir / "server", nc, ne)
        per = {s: [] for s in SCALE_SCENARIOS}
        bad = []
        rev = 0
        try:
            for rnd in range(a.rounds):
                home = KsyncHome(sdir / f"round{rnd + 1}", build=bench.ksync_build)
                home.add_account(ACCOUNT, resp)
                trees = [home.data_dir / "contacts", home.data_dir / "calendars"]
                for scenario in SCALE_SCENARIOS:
                    if scenario == "changed":
                        rev += 1
                        nchanged = resp.modify(a.changes, rev)
                    before = snap(trees) if scenario != "initial" else None
                    r0, cpu0 = resp.requests(), process_cpu(resp.proc.pid)
                    m = _ksync_run(bench, home, sdir / "ksync.log")
                    cpu1 = process_cpu(resp.proc.pid)
                    m.requests = resp.requests() - r0
                    m.server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                    if before is not None:
                        m.files_changed = snapshot_diff(before, snap(trees))
                    per[scenario].append(m)
                    if scenario == "initial":
                        got = sum(1 for t in trees for p in t.rglob("*")
                                  if p.suffix in (".vcf", ".ics"))
                        if got != n:
                            bad.append(f"round {rnd + 1}: {got} items on disk, want {n}")
                    if scenario == "changed" and m.ok and m.files_changed != nchanged:
                        bad.append(f"round {rnd + 1}: {m.files_changed} files changed after "
                                   f"{nchanged} remote changes")
                    log(f"  {n} items, round {rnd + 1}, {scenario}: {fmt_s(m.wall)} wall, "
                        f"{fmt_s(m.cpu)} CPU, {m.maxrss_kb / 1024:.1f} MB"
                        + ("" if m.ok else f"  FAILED: {m.error}"))
        finally:
            resp.stop()
        row = {"contacts": nc, "events": ne, "problems": bad}
        for s in SCALE_SCENARIOS:
            st = summarize(per[s])
            row[s] = {f: x.median for f, x in st.items()}
            row[s + "_runs"] = [{"wall": m.wall, "cpu": m.cpu, "sys": m.sys,
                                 "maxrss_kb": m.maxrss_kb, "requests": m.requests,
                                 "server_cpu": m.server_cpu, "files_changed": m.files_changed,
                                 "ok": m.ok, "error": m.error} for m in per[s]]
            fails = [m for m in per[s] if not m.ok]
            rows.append((f"{n} {s}", st, "ok" if not fails else
                         f"FAILED {len(fails)}/{len(per[s])}: {fails[0].error}"))
        nochange_cpu = row["nochange"]["cpu"]
        row["nochange_cpu_per_10k"] = nochange_cpu / n * 10000 if nochange_cpu else None
        rss = [x for x in (row[s]["maxrss_kb"] for s in SCALE_SCENARIOS) if x]
        row["rss_mb"] = max(rss) / 1024 if rss else None
        out[n] = row
        checks.append(f"{n} items: initial CPU per 10,000 items "
                      f"{fmt_s(_per10k(row['initial']['cpu'], n))}, no-change CPU per 10,000 "
                      f"items {fmt_s(row['nochange_cpu_per_10k'])} (target <= 25 ms), peak "
                      f"RSS {row['rss_mb']:.1f} MB" if row["rss_mb"] else f"{n}: no figures")
        for b in bad:
            checks.append(f"{n} items: MISMATCH {b}")
    rss = {n: r["rss_mb"] for n, r in out.items() if r.get("rss_mb")}
    if len(rss) > 1:
        lo, hi = min(rss), max(rss)
        checks.append(check_line("peak RSS growth", f"{rss[hi] / rss[lo]:.2f}x",
                                 f"flat from {lo} to {hi} items (<= 1.10x)",
                                 rss[hi] <= rss[lo] * 1.10))
    checks.append("server CPU is bench/davserve.py's own (Python): it stays well below the "
                  "client's, so the responder is not what the client waits for")
    print_stat_table(f"Scale: ksyncd --once against bench/davserve.py, {a.changes} remote "
                     f"changes per collection for 'changed'; medians (min-max) of {a.rounds} "
                     "rounds", rows, checks, first="items")
    bench.summary["scale"] = out
    return {str(k): v for k, v in out.items()}


def _per10k(x, n):
    return x / n * 10000 if x is not None and n else None


# --------------------------------------------------------------------------- profile

CATEGORIES = (
    "XML parsing", "libical", "SQLite", "hashing", "file creation and flushing", "HTTP",
    "other: ksync's own code", "other: libc, loader, kernel",
)

# ksync's own functions by the module that defines them; the category of each module.
MODULE_CATEGORY = {"xml": "XML parsing", "ical": "libical", "cache": "SQLite", "hash": "hashing",
                   "fsutil": "file creation and flushing", "vdir": "file creation and flushing",
                   "dav": "HTTP"}
DSO_CATEGORY = (
    (re.compile(r"libxml2"), "XML parsing"),
    (re.compile(r"libical"), "libical"),
    (re.compile(r"libsqlite3"), "SQLite"),
    (re.compile(r"libnettle|libhogweed"), "hashing"),
    (re.compile(r"libcurl|libnghttp|libssl|libcrypto|libz\.|libbrotli|libzstd|libidn|libpsl|"
                r"libgnutls|libssh|librtmp|libldap|liblber|libkrb|libgss"), "HTTP"),
)
NET_RE = re.compile(r"tcp_|sock_|inet_|unix_|__sys_send|__sys_recv|sys_sendmsg|sys_recvmsg|"
                    r"ip_|skb|net_rx|do_sys_poll|ep_poll|__x64_sys_poll|__x64_sys_epoll|"
                    r"__x64_sys_ppoll|do_select")
FILE_RE = re.compile(r"ext4|jbd2|vfs_|openat|path_openat|do_fsync|fsync|fdatasync|syncfs|"
                     r"sync_filesystem|rename|unlink|mkdir|filemap|writeback|"
                     r"generic_perform_write|__x64_sys_write|__x64_sys_pwrite|__x64_sys_close|"
                     r"fsnotify|d_alloc|dput|iput|getdents|statx|newfstat|btrfs|xfs_|"
                     r"__x64_sys_ftruncate|__x64_sys_fchmod")


def function_modules():
    """{function name: module} for every function defined in lib/*.c and daemon/*.c."""
    out = {}
    pat = re.compile(r"^[A-Za-z_][\w \*]*?\b(\w+)\(")
    for d in ("lib", "daemon"):
        for path in sorted((ROOT / d).glob("*.c")):
            mod = path.stem if d == "lib" else "daemon"
            for line in path.read_text(errors="replace").splitlines():
                m = pat.match(line)
                if m and not line.rstrip().endswith(";") and not line.startswith(("typedef",
                                                                                    "return")):
                    out.setdefault(m.group(1), mod)
    return out


FRAME_RE = re.compile(r"^\s*([0-9a-f]+) (.*) \((.*)\)$")


def read_samples(text):
    """[(period, [(symbol, dso)] leaf first)] from `perf script -F period,ip,sym,dso`;
    inlined frames take the dso of the real frame at their address."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        try:
            period = int(lines[0].split()[-1])
        except ValueError:
            continue
        frames = []
        for ln in lines[1:]:
            m = FRAME_RE.match(ln)
            if m:
                frames.append([m.group(1), m.group(2), m.group(3)])
        for i in range(len(frames) - 1, -1, -1):
            if frames[i][2] == "inlined":
                nxt = next((f for f in frames[i + 1:] if f[0] == frames[i][0] and
                            f[2] != "inlined"), None)
                frames[i][2] = nxt[2] if nxt else "?"
        out.append((period, [(f[1], f[2]) for f in frames]))
    return out


def _clean_sym(sym):
    return re.sub(r"\+0x[0-9a-f]+$", "", sym)


def categorize(frames, modules, ksyncd_name):
    """The category of one sample: the kernel part by what it does (file system, network),
    the user part by the first frame outside libc that belongs to a known library or
    module."""
    kernel = [f for f in frames if f[1].startswith("[kernel")]
    user = [f for f in frames if not f[1].startswith("[kernel")]
    owner = None
    for sym, dso in user:
        name = _clean_sym(sym)
        base = os.path.basename(dso)
        if base == ksyncd_name:
            mod = modules.get(name)
            if mod is None:
                continue
            owner = MODULE_CATEGORY.get(mod, "other: ksync's own code")
            break
        cat = next((c for r, c in DSO_CATEGORY if r.search(base)), None)
        if cat:
            owner = cat
            break
    if kernel:
        ks = " ".join(_clean_sym(s) for s, _ in kernel)
        if owner == "SQLite":
            return "SQLite"
        if NET_RE.search(ks):
            return "HTTP"
        if FILE_RE.search(ks):
            return "file creation and flushing"
        return owner or "other: libc, loader, kernel"
    return owner or "other: libc, loader, kernel"


def profile(bench):
    """perf record (cpu-clock, DWARF call chains) of `ksyncd --once` doing the initial sync of
    --profile-items items from bench/davserve.py; shares by category and the top functions by
    self time."""
    a = bench.args
    perf = shutil.which("perf")
    n = a.profile_items
    nc, ne = split(n)
    log(f"\n=== profile: ksync's initial sync of {nc} contacts and {ne} events from "
        "bench/davserve.py under `perf record`")
    if not perf:
        log("  perf is not installed (Debian package linux-perf): no profile")
        return {"error": "perf not installed"}
    sdir = bench.tmp / "profile"
    resp = Responder(sdir / "server", nc, ne)
    data = sdir / "perf.data"
    try:
        home = KsyncHome(sdir / "ksync", build=bench.ksync_build)
        home.add_account(ACCOUNT, resp)
        base = [perf, "record", "-q", "-F", "1000", "--call-graph", "dwarf,16384", "-o",
                str(data)]
        cmd = [str(home.ksyncd), "--once", "--config", str(home.config_path), ACCOUNT]
        scope = "user and kernel"
        m = run_measured(base + ["--"] + cmd, env=home.env(), cwd=home.home,
                         log_path=sdir / "perf.log", timeout=bench.timeout)
        if not m.ok:
            # perf_event_paranoid may forbid kernel samples to a user who is not root.
            shutil.rmtree(home.root, ignore_errors=True)
            home = KsyncHome(sdir / "ksync2", build=bench.ksync_build)
            home.add_account(ACCOUNT, resp)
            cmd = [str(home.ksyncd), "--once", "--config", str(home.config_path), ACCOUNT]
            scope = "user space only (perf may not sample the kernel here)"
            m = run_measured(base + ["--all-user", "--"] + cmd, env=home.env(), cwd=home.home,
                             log_path=sdir / "perf.log", timeout=bench.timeout)
        if not m.ok:
            raise RuntimeError(f"perf record: {m.error}: "
                               + (sdir / "perf.log").read_text(errors="replace")[-1500:])
        got = sum(1 for p in home.data_dir.rglob("*") if p.suffix in (".vcf", ".ics"))
        script = subprocess.run([perf, "script", "-i", str(data), "-F", "comm,period,ip,sym,dso"],
                                capture_output=True, text=True, errors="replace",
                                timeout=bench.timeout)
        if script.returncode != 0:
            raise RuntimeError("perf script: " + script.stderr[-1500:])
    finally:
        resp.stop()
    samples = read_samples(script.stdout)
    modules = function_modules()
    ksyncd_name = os.path.basename(str(home.ksyncd))
    total = sum(p for p, _ in samples) or 1
    cats, in_kernel, funcs = Counter(), Counter(), Counter()
    module_self = defaultdict(int)
    scan = 0
    for period, frames in samples:
        cat = categorize(frames, modules, ksyncd_name)
        cats[cat] += period
        if frames and frames[0][1].startswith("[kernel"):
            in_kernel[cat] += period
        if any(_clean_sym(f[0]) == "recently_deleted" for f in frames):
            scan += period
        if frames:
            sym, dso = frames[0]
            funcs[(_clean_sym(sym), os.path.basename(dso))] += period
            if os.path.basename(dso) == ksyncd_name:
                module_self[modules.get(_clean_sym(sym), "?")] += period
    res = {"items": n, "contacts": nc, "events": ne, "items_on_disk": got, "scope": scope,
           "samples": len(samples), "wall": m.wall, "cpu": m.cpu, "user": m.user, "sys": m.sys,
           "categories": {c: cats[c] / total for c in CATEGORIES if cats[c]},
           "categories_kernel": {c: in_kernel[c] / total for c in CATEGORIES if cats[c]},
           "ext4_recently_deleted": scan / total,
           "top": [{"function": f, "dso": d, "share": p / total}
                   for (f, d), p in funcs.most_common(15)],
           "ksync_modules_self": {k: v / total for k, v in
                                  sorted(module_self.items(), key=lambda kv: -kv[1])}}
    log(f"  {len(samples)} samples ({scope}); the run under perf: {fmt_s(m.wall)} wall, "
        f"{fmt_s(m.cpu)} CPU ({fmt_s(m.sys)} sys); {got} items on disk")
    log("  where the CPU goes (each sample counted once: kernel work by what it does, the "
        "rest by the first frame outside libc):")
    for c in CATEGORIES:
        if cats[c]:
            log(f"    {c:<32} {cats[c] / total * 100:5.1f} %   (in the kernel "
                f"{in_kernel[c] / total * 100:4.1f} %)")
        if c == "file creation and flushing" and scan:
            log(f"      of it ext4 skipping inodes freed in the last 30 s (a file system "
                f"without a journal): {scan / total * 100:.1f} %")
    own = ", ".join(f"{k} {v * 100:.1f} %" for k, v in res["ksync_modules_self"].items()
                    if v >= 0.002)
    log(f"  self time in ksync's own code by module of lib/: {own or '-'}")
    log("  top 15 functions by self time:")
    for t in res["top"]:
        log(f"    {t['share'] * 100:5.1f} %  {t['function']}  ({t['dso']})")
    bench.summary["profile"] = res
    return res
