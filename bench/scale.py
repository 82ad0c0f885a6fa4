"""ksync's own cost at scale against bench/davserve.py."""

import json
import subprocess
import sys
import time
import urllib.request
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
