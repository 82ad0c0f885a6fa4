#!/usr/bin/python3
"""ksync benchmark: ksync, vdirsyncer and the raw server cost, in fair rounds, plus the
daemon's latency, many collections, the client's cost at scale and where its CPU goes.

Run by `make bench` (which sets KSYNC_BUILD); extra arguments go in BENCH_ARGS:

    make bench BENCH_ARGS=--quick
    make bench BENCH_ARGS='--parts fair --servers radicale --rounds 5'

Parts (--parts, all by default; bench/README.md describes each in full):
  fair         every server kind: the clients side by side in rounds, medians (min-max);
  latency      ksyncd as a service: a local file write until the item is on the server;
  collections  100 calendars: ksync's no-change run, and one home-set PROPFIND against one
               REPORT per collection, on every server kind;
  scale        ksync alone against bench/davserve.py (a streaming responder) at 10,000,
               50,000 and 100,000 items;
  profile      `perf record` of ksync's initial sync of 15,000 items: where its CPU goes.

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
import time
import urllib.parse
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, Measure, Stat, build_rusage_helper, check_line, fmt_s,  # noqa: E402
                    log, print_stat_table, ratio, summarize)

sys.path.insert(0, str(ROOT / "tests" / "integration"))
try:
    from ksynctest import servers as kservers, gen as kgen  # noqa: E402
except ImportError as e:
    sys.exit(f"bench: cannot import tests/integration/ksynctest ({e})")
from clients import (CLIENT_CLASSES, Collection, choose_upload_hrefs,  # noqa: E402
                     count_on_server, modify_items, upload_marker)
from kinds import (SERVER_KINDS, TARGET_CPU_VS_VDIRSYNCER,  # noqa: E402
                   TARGET_INITIAL_VS_RAW_PARALLEL, TARGET_INITIAL_VS_RAW_SERIAL,
                   TARGET_NOCHANGE_CPU_PER_10K, TARGET_RSS_FROM_ITEMS, TARGET_RSS_MB, WarmUp,
                   logged_requests, summarize_requests)
import extra  # noqa: E402
import scale  # noqa: E402
import targets  # noqa: E402

# The first listing of a freshly seeded Radicale collection parses every item: with 15,000 items
# that takes minutes, more than the helpers' default HTTP timeout.
kservers.HTTP_TIMEOUT = max(kservers.HTTP_TIMEOUT, 900)

SCENARIOS = ("initial", "nochange", "changed", "upload")
SCENARIO_TITLES = {
    "initial": "initial sync (empty directories)",
    "nochange": "no-change re-sync",
    "changed": "re-sync after {n} remote changes per collection",
    "upload": "upload of {u} local edits ({detail})",
}
PARTS = ("fair", "latency", "collections", "scale", "profile")
# --------------------------------------------------------------------------- fair rounds

class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.timeout = args.timeout
        self.raw_parallel = args.raw_parallel
        self.ksync_build = os.environ.get("KSYNC_BUILD", str(ROOT / "build" / "plain"))
        self.results = {"servers": []}
        self.summary = {}        # figures the final targets table reads
        self.stores_bytes = {}   # server kind -> whether it serves what was PUT, unchanged

    def start_server(self, kind, plan, sdir):
        """Start a server of that kind in sdir and seed it with plan [(kind, n)]; returns
        (server, [Collection])."""
        server = kind.start(sdir / "server")
        try:
            existing = server.collections()
            seeded, uids = {}, {}
            for k, n in plan:
                if k == "contacts":
                    # Xandikos starts with a default address book: fill that one.
                    href = next((h for h, c in existing.items() if c["kind"] == "addressbook"),
                                None) or server.make_addressbook("contacts", "Contacts")
                    items = kgen.contacts(n, seed=1)
                    if kind.name not in self.stores_bytes:
                        self.stores_bytes[kind.name] = stores_bytes(server, href)
                else:
                    href = next((h for h, c in existing.items() if c["kind"] == "calendar"),
                                None) or server.make_calendar("calendar", "Calendar",
                                                             components=("VEVENT",))
                    items = kgen.events(n, seed=1)
                # seed() checks by listing the collection that the server serves every item;
                # that first listing is also where the server parses and caches each item.
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
                                        uids=uids.get(href, {}), sync=bool(c["sync_token"])))
        except BaseException:
            server.stop()
            raise
        return server, colls

    def run_server(self, name):
        kind = SERVER_KINDS[name]
        plan = [(k, n) for k, n in zip(("contacts", "events"), self.args.sizes[name]) if n > 0]
        sdir = self.tmp / name
        sdir.mkdir()
        log(f"\n=== {kind.title}: starting, seeding " + " and ".join(f"{n} {k}" for k, n in plan))
        t0 = time.perf_counter()
        server, colls = self.start_server(kind, plan, sdir)
        result = {"server": name, "version": kind.version(), "items": dict(plan),
                  "parallel": kind.parallel, "stores_bytes": self.stores_bytes.get(name),
                  "rounds": [], "scenarios": {}}
        try:
            log(f"seeded in {time.perf_counter() - t0:.1f} s")
            if "fair" in self.args.parts:
                self.fair_rounds(server, kind, colls, result)
            if "latency" in self.args.parts:
                result["latency"] = extra.latency(self, server, kind, colls)
        finally:
            server.stop()
        self.results["servers"].append(result)

    def measure(self, client, scenario, server, kind):
        """One measured run of client, with the requests and server CPU it caused."""
        r0 = server.request_count()
        log0 = len(logged_requests(server, kind))
        cpu0 = kind.server_cpu(server)
        try:
            m = client.run(scenario)
        except Exception as e:
            m = Measure(ok=False, error=f"{type(e).__name__}: {e}")
        cpu1 = kind.server_cpu(server)
        m.requests = server.request_count() - r0
        m.extra["requests_made"] = summarize_requests(logged_requests(server, kind)[log0:])
        if cpu0 is not None and cpu1 is not None:
            m.server_cpu = cpu1 - cpu0
        return m

    def fair_rounds(self, server, kind, colls, result):
        """a.rounds rounds; in each, fresh clients run every scenario, in an order that turns
        by one client per round, each measured run preceded by the warm-up."""
        a = self.args
        names = list(a.clients)
        per = {s: {n: [] for n in names} for s in SCENARIOS}
        warm = {s: [] for s in SCENARIOS}
        upload_checks = {n: [] for n in names}
        next_syncs = []
        sanity_bad = []
        warmup = WarmUp(server, kind, colls)
        if a.warmup:
            warmup.run()
        rev = 0
        plan = []
        for rnd in range(a.rounds):
            k = rnd % len(names)
            order = names[k:] + names[:k]
            log(f"\nround {rnd + 1}/{a.rounds}, order {', '.join(order)}")
            rdir = self.tmp / kind.name / f"round{rnd + 1}"
            clients = {}
            for n in order:
                c = CLIENT_CLASSES[n](self, server, colls, rdir / n)
                try:
                    c.setup()
                except Exception as e:  # one client failing must not stop the others
                    log(f"  {n}: setup failed: {e}")
                    result.setdefault("errors", []).append(f"round {rnd + 1}: {n}: {e}")
                    continue
                clients[n] = c
            rinfo = {"round": rnd + 1, "order": order, "scenarios": {}}
            for scenario in SCENARIOS:
                if scenario == "changed":
                    rev += 1
                    for c in colls:
                        modify_items(server, c, a.changes, rev)
                if scenario == "upload":
                    plan = [(c, choose_upload_hrefs(c, a.uploads if c.kind == "contacts"
                                                    else a.upload_events)) for c in colls]
                    plan = [(c, h) for c, h in plan if h]
                    result["upload_plan"] = {c.name: len(h) for c, h in plan}
                cells = []
                for n in order:
                    c = clients.get(n)
                    if c is None:
                        continue
                    if scenario == "upload":
                        try:
                            c.prepare_upload(plan, upload_marker(n, rnd + 1))
                        except Exception as e:
                            m = Measure(ok=False, error=f"before the upload: "
                                                        f"{type(e).__name__}: {e}")
                            per[scenario][n].append(m)
                            cells.append(f"{n} FAILED")
                            continue
                    if a.warmup:
                        warm[scenario].append(warmup.run())
                    m = self.measure(c, scenario, server, kind)
                    m.extra["round"] = rnd + 1
                    m.extra["position"] = order.index(n) + 1
                    per[scenario][n].append(m)
                    cells.append(f"{n} {fmt_s(m.wall)}" + ("" if m.ok else " FAILED"))
                    if scenario == "upload":
                        got, nxt = self.check_upload(server, kind, plan, c, m, rnd + 1)
                        upload_checks[n].append(got)
                        if nxt:
                            next_syncs.append(nxt)
                log(f"  {scenario:<9} " + ", ".join(cells)
                    + (f"   (last warm-up: {fmt_s(warm[scenario][-1]['wall'])})"
                       if warm[scenario] else ""))
                if scenario != "nochange":
                    line, ok, data = self.sanity(server, colls, clients, scenario, rev)
                    rinfo["scenarios"][scenario] = data
                    if not ok:
                        sanity_bad.append(f"round {rnd + 1} {scenario}: {line}")
                        log("  " + line)
            result["rounds"].append(rinfo)
            for c in clients.values():
                d = c.notes.get("discover")
                if d:
                    result.setdefault("vdirsyncer_discover", []).append(d)
        self.report_fair(kind, colls, result, per, warm, upload_checks, next_syncs, sanity_bad,
                         plan)

    def check_upload(self, server, kind, plan, client, m, rnd):
        """Right after a client's upload: how many of the planned items carry its marker on the
        server; for ksync also what its next sync costs (not counted)."""
        marker = upload_marker(client.name, rnd)
        got = {}
        for coll, hrefs in plan:
            try:
                marked, missing = count_on_server(server, coll, hrefs, marker)
                got[coll.name] = {"want": len(hrefs), "marked": marked, "missing": missing}
            except Exception as e:
                got[coll.name] = {"want": len(hrefs), "error": f"{type(e).__name__}: {e}"}
        m.extra["upload_on_server"] = got
        nxt = None
        if client.name == "ksync" and m.ok:
            r0 = server.request_count()
            log0 = len(logged_requests(server, kind))
            try:
                f = client.resync()
                nxt = {"wall": f.wall, "cpu": f.cpu, "files_changed": f.files_changed,
                       "requests": server.request_count() - r0,
                       "requests_made": summarize_requests(
                           logged_requests(server, kind)[log0:])}
            except Exception as e:
                nxt = {"error": f"{type(e).__name__}: {e}"}
            m.extra["next_sync"] = nxt
        return got, nxt

    def sanity(self, server, colls, clients, scenario, rev):
        """(line, all same, data): items each client holds against the server, and after
        'changed' the changed items each holds."""
        on_server = {"contacts": 0, "events": 0}
        for c in colls:
            on_server[c.kind] += len(server.list(c.href))
        kinds = [k for k in on_server if any(c.kind == k for c in colls)]
        data, parts, ok = {"server": on_server}, [], True
        for n, cl in clients.items():
            counts = cl.item_counts()
            data[n] = counts
            ok = ok and all(counts.get(k) == on_server[k] for k in kinds)
            parts.append(f"{n} " + "/".join(str(counts.get(k, 0)) for k in kinds))
        line = (f"items ({'/'.join(kinds)}): server "
                + "/".join(str(on_server[k]) for k in kinds) + ", " + ", ".join(parts))
        if scenario == "changed":
            changed = [c for c in colls if c.changed_hrefs]
            want = [len(c.changed_hrefs) for c in changed]
            for n, cl in clients.items():
                got = [cl.marked(c, rev) for c in changed]
                if any(g is None for g in got):
                    continue
                data.setdefault("changed_on_disk", {})[n] = got
                if got != want:
                    ok = False
                    line += f"; {n} holds {'/'.join(map(str, got))} of the changed items"
        return line + ("" if ok else "   MISMATCH"), ok, data

    # -- reporting -------------------------------------------------------------------------------

    def report_fair(self, kind, colls, result, per, warm, upload_checks, next_syncs, sanity_bad,
                    plan):
        a = self.args
        ncoll = len(colls)
        nitems = sum(c.count for c in colls)
        nchanged = sum(1 for c in colls if c.changed_hrefs)
        nedits = sum(len(h) for _, h in plan)
        detail = ", ".join(f"{len(h)} in '{c.name}'" for c, h in plan)
        what = ", ".join(f"{c.count} {c.kind} in '{c.name}'" for c in colls)
        log(f"\n{kind.title} {result['version']}: {what}; medians (min-max) of {a.rounds} "
            f"rounds, the client order turning each round")
        for scenario in SCENARIOS:
            stats = {n: summarize(ms) for n, ms in per[scenario].items()}
            rows = []
            for n in a.clients:
                ms = per[scenario][n]
                bad = [m for m in ms if not m.ok]
                status = "ok" if ms and not bad else (
                    "not run" if not ms else f"FAILED {len(bad)}/{len(ms)}: {bad[0].error}")
                rows.append((CLIENT_CLASSES[n].label, stats[n], status))
            checks, verdicts = scenario_checks(scenario, stats, kind, ncoll, nchanged, nitems,
                                               nedits, self.stores_bytes.get(kind.name))
            ks = [m for m in per[scenario].get("ksync", []) if m.ok]
            if ks:
                checks.append("ksync asked for:            " + ks[-1].extra["requests_made"])
            if a.warmup:
                w = Stat.of([x["wall"] for x in warm[scenario]])
                ws = Stat.of([x["server_cpu"] for x in warm[scenario]])
                checks.append(f"warm-up before each run: {fmt_s(w.median)} wall, "
                              f"{fmt_s(ws.median)} server CPU (median; not counted above)")
            else:
                checks.append("no warm-up (--no-warmup): the first client after a change pays "
                              "for the server's first listing")
            if scenario == "upload":
                checks += self.upload_lines(plan, upload_checks, next_syncs)
            title = f"{kind.title}: " + SCENARIO_TITLES[scenario].format(n=a.changes, u=nedits,
                                                                        detail=detail)
            print_stat_table(title, rows, checks)
            result["scenarios"][scenario] = {
                "clients": {n: [asdict(m) for m in ms] for n, ms in per[scenario].items()},
                "medians": {n: {f: asdict(st) for f, st in s.items()} for n, s in stats.items()},
                "warmup": warm[scenario],
                "checks": verdicts,
            }
        for line in sanity_bad:
            log("  " + line)
        if not sanity_bad:
            log("  items: every client held what the server held after every scenario of "
                "every round")
        d = result.get("vdirsyncer_discover")
        if d:
            log(f"  (vdirsyncer discover, once per round, not counted: "
                f"{fmt_s(Stat.of([x['wall'] for x in d]).median)} wall)")
        self.summary.setdefault("fair", {})[kind.name] = {
            "items": nitems, "collections": ncoll, "nedits": nedits, "parallel": kind.parallel,
            "checks": {s: result["scenarios"][s]["checks"] for s in SCENARIOS},
            "medians": {s: {n: {f: st.median for f, st in summarize(ms).items()}
                            for n, ms in per[s].items()} for s in SCENARIOS},
        }

    def upload_lines(self, plan, upload_checks, next_syncs):
        want = "/".join(f"{len(h)} in '{c.name}'" for c, h in plan)
        parts = []
        for n, rounds in upload_checks.items():
            if not rounds:
                continue
            good = 0
            for got in rounds:
                if all("error" not in got[c.name] and got[c.name]["marked"] == len(h)
                       for c, h in plan):
                    good += 1
            parts.append(f"{n} {good}/{len(rounds)}")
        lines = [f"edits on the server right after each upload (want {want}), rounds where "
                 f"all arrived: " + ", ".join(parts)]
        ok = [x for x in next_syncs if "error" not in x]
        if ok:
            r = Stat.of([x["requests"] for x in ok])
            f = Stat.of([x["files_changed"] for x in ok])
            lines.append(f"ksync's next sync (not counted): {r.median:.0f} requests, "
                         f"{f.median:.0f} files changed (median): " + ok[-1]["requests_made"])
        for x in next_syncs:
            if "error" in x:
                lines.append(f"ksync's next sync failed: {x['error']}")
        return lines


def stores_bytes(server, href):
    """Whether the server serves an item exactly as it was PUT (PUT, GET and DELETE of a probe
    contact in the collection href, before it is seeded). Radicale does not: it serializes
    items anew, so the ETag of its answer to a PUT is not that of the bytes sent, and a client
    that keeps the server's bytes has to fetch and rewrite what it uploaded."""
    name, data = next(iter(kgen.contacts(1, seed=99).items()))
    h = href + name + "-probe.vcf"
    server.put(h, data)
    got = server.get(h)
    server.delete(h)
    return got == data


def scenario_checks(scenario, stats, kind, ncoll, nchanged_coll, nitems, nedits,
                    same_bytes=True):
    """Ratio and target lines for ksync in one scenario (from medians), and a dict for JSON.
    same_bytes: whether the server keeps the bytes of a PUT as they were sent."""
    k, v, r = stats.get("ksync"), stats.get("vdirsyncer"), stats.get("raw")
    med = lambda st, f: st[f].median if st else None  # noqa: E731
    lines, out = [], {}
    kw, rw, vw = med(k, "wall"), med(r, "wall"), med(v, "wall")
    kc, vc = med(k, "cpu"), med(v, "cpu")
    x = ratio(kw, rw)
    if x is not None:
        out["ksync_raw_wall"] = x
        if scenario == "initial":
            t = TARGET_INITIAL_VS_RAW_PARALLEL if kind.parallel else TARGET_INITIAL_VS_RAW_SERIAL
            ok = out["target_initial_wall"] = x <= t
            lines.append(check_line("ksync/raw wall", f"{x:.2f}",
                                    f"<= {t} ({'parallel' if kind.parallel else 'serial'} "
                                    "server)", ok))
        else:
            lines.append(check_line("ksync/raw wall", f"{x:.2f}"))
    x = ratio(kc, vc)
    if x is not None:
        out["ksync_vdirsyncer_cpu"] = x
        if scenario == "initial":
            ok = out["target_cpu"] = x <= TARGET_CPU_VS_VDIRSYNCER
            lines.append(check_line("ksync/vdirsyncer CPU", f"{x:.3f}",
                                    f"<= {TARGET_CPU_VS_VDIRSYNCER}", ok))
        else:
            lines.append(check_line("ksync/vdirsyncer CPU", f"{x:.3f}"))
    x = ratio(kw, vw)
    if x is not None:
        out["ksync_vdirsyncer_wall"] = x
        lines.append(check_line("ksync/vdirsyncer wall", f"{x:.3f}"))
    if k is None or k["wall"].median is None:
        return lines, out
    kreq, kfiles = med(k, "requests"), med(k, "files_changed")
    if scenario == "initial":
        rss = k["maxrss_kb"].median / 1024
        if nitems >= TARGET_RSS_FROM_ITEMS:
            ok = out["target_rss"] = rss < TARGET_RSS_MB
            lines.append(check_line("ksync peak RSS", f"{rss:.1f} MB",
                                    f"< {TARGET_RSS_MB:.0f} MB ({nitems} items)", ok))
        else:
            lines.append(check_line("ksync peak RSS", f"{rss:.1f} MB",
                                    f"< {TARGET_RSS_MB:.0f} MB applies from "
                                    f"{TARGET_RSS_FROM_ITEMS} items"))
    if scenario == "nochange":
        ok = out["target_requests"] = kreq is not None and kreq <= ncoll
        lines.append(check_line("ksync requests", fmt_n0(kreq),
                                f"<= {ncoll} (1 per collection)", ok))
        ok = out["target_no_file"] = kfiles == 0
        lines.append(check_line("ksync files written", fmt_n0(kfiles), "0", ok))
        budget = TARGET_NOCHANGE_CPU_PER_10K * max(1.0, nitems / 10000)
        ok = out["target_nochange_cpu"] = kc <= budget
        per10k = kc / nitems * 10000 if nitems else None
        out["ksync_cpu_per_10k"] = per10k
        lines.append(check_line("ksync CPU", fmt_s(kc), f"<= {fmt_s(budget)} (25 ms per "
                                f"10,000 items, {nitems} here; {fmt_s(per10k)} per 10,000)",
                                ok))
    if scenario == "changed":
        want = ncoll + nchanged_coll
        ok = out["target_requests"] = kreq is not None and kreq <= want
        lines.append(check_line("ksync requests", fmt_n0(kreq),
                                f"<= {want} (1 per collection + 1 multiget per changed "
                                f"collection)", ok))
    if scenario == "upload":
        want = ncoll + nedits
        ok = out["target_requests"] = kreq is not None and kreq <= want
        lines.append(check_line("ksync requests", fmt_n0(kreq),
                                f"<= {want} (1 per edit + 1 per collection)", ok))
        if same_bytes is False:
            out["target_files"] = None
            lines.append(check_line("ksync files rewritten", fmt_n0(kfiles),
                                    "0 applies where the server keeps the bytes PUT; this one "
                                    "changes them"))
            if kfiles == 0:
                lines.append("  (ksync kept the bytes it sent: the server's copies differ from "
                             "the local files, yet each PUT was answered with an ETag)")
        else:
            ok = out["target_files"] = kfiles == 0
            lines.append(check_line("ksync files rewritten", fmt_n0(kfiles),
                                    "0 (the server keeps the bytes PUT, with their ETag)", ok))
        for other, name in ((stats.get("vdirsyncer"), "vdirsyncer"), (r, "raw")):
            oreq = med(other, "requests")
            x = ratio(kreq, oreq)
            if x is not None:
                out[f"ksync_{name}_requests"] = x
                lines.append(check_line(f"ksync/{name} requests", f"{x:.3f}")
                             + f"   ({fmt_n0(kreq)} vs {fmt_n0(oreq)})")
    return lines, out


def fmt_n0(x):
    return "-" if x is None else f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


# The parts that run once, after the servers' own parts (fair, latency).
LATER_PARTS = {
    "collections": extra.collections,
    "scale": scale.scale,
    "profile": scale.profile,
}


# --------------------------------------------------------------------------- main

def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated, of " + ", ".join(PARTS) + " (all)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of every scenario in the fair part and the scale part (3)")
    p.add_argument("--items", action="append", default=[], metavar="KIND=CONTACTS[+EVENTS]",
                   help="items seeded on a server kind, e.g. radicale=10000+5000; defaults: "
                        + ", ".join(f"{k.name}={k.sizes[0]}+{k.sizes[1]}"
                                    for k in SERVER_KINDS.values()))
    p.add_argument("--contacts", type=int, default=None, help="contacts on Radicale")
    p.add_argument("--events", type=int, default=None, help="events on Radicale")
    p.add_argument("--xandikos-items", type=int, default=None, help="contacts on Xandikos")
    p.add_argument("--quick", action="store_true",
                   help="small sizes everywhere: "
                        + ", ".join(f"{k.name}={k.quick[0]}+{k.quick[1]}"
                                    for k in SERVER_KINDS.values())
                        + ", scale at 3000 and 10000, 20 calendars (explicit sizes win)")
    p.add_argument("--changes", type=int, default=10,
                   help="items modified per collection before the 'changed' re-sync (10)")
    p.add_argument("--uploads", type=int, default=100,
                   help="contacts edited locally per address book before the 'upload' run "
                        "(100)")
    p.add_argument("--upload-events", type=int, default=50,
                   help="events edited locally per non-empty calendar before the 'upload' run "
                        "(50)")
    p.add_argument("--clients", default="ksync,raw,vdirsyncer",
                   help="comma-separated; the first round runs them in this order "
                        "(ksync,raw,vdirsyncer)")
    p.add_argument("--servers", default=",".join(SERVER_KINDS),
                   help="comma-separated, of " + ", ".join(SERVER_KINDS))
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="no warm-up requests before the measured runs (to see what they "
                        "remove)")
    p.add_argument("--raw-parallel", type=int, default=1,
                   help="multigets curl keeps in flight (1: one after the other)")
    p.add_argument("--latency-edits", type=int, default=None,
                   help="local edits timed with ksyncd running, per server (5; quick 3)")
    p.add_argument("--calendars", type=int, default=None,
                   help="calendars of the collections part (100; quick 20)")
    p.add_argument("--calendar-events", type=int, default=10,
                   help="events in each calendar of the collections part (10)")
    p.add_argument("--scale-sizes", type=int_list, default=None,
                   help="items of the scale part, two thirds contacts and one third events "
                        "(10000,50000,100000; quick 3000,10000)")
    p.add_argument("--profile-items", type=int, default=None,
                   help="items of the profiled initial sync (15000; quick 3000)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per client run (600)")
    p.add_argument("--json", default=None, help="result file (bench/results/<timestamp>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    a.sizes = {k.name: k.quick if a.quick else k.sizes for k in SERVER_KINDS.values()}
    c, e = a.sizes["radicale"]
    a.sizes["radicale"] = (c if a.contacts is None else a.contacts,
                           e if a.events is None else a.events)
    if a.xandikos_items is not None:
        a.sizes["xandikos"] = (a.xandikos_items, a.sizes["xandikos"][1])
    for spec in a.items:
        m = re.fullmatch(r"(\w+)=(\d+)(?:\+(\d+))?", spec.strip())
        if not m or m.group(1) not in SERVER_KINDS:
            p.error(f"--items {spec!r}: want KIND=CONTACTS[+EVENTS] with KIND one of "
                    + ", ".join(SERVER_KINDS))
        a.sizes[m.group(1)] = (int(m.group(2)), int(m.group(3) or 0))
    if a.latency_edits is None:
        a.latency_edits = 3 if a.quick else 5
    if a.calendars is None:
        a.calendars = 20 if a.quick else 100
    if a.scale_sizes is None:
        a.scale_sizes = [3000, 10000] if a.quick else [10000, 50000, 100000]
    if a.profile_items is None:
        a.profile_items = 3000 if a.quick else 15000
    a.clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    a.parts = [s.strip() for s in a.parts.split(",") if s.strip()]
    for c in a.clients:
        if c not in CLIENT_CLASSES:
            p.error(f"unknown client {c!r}")
    for s in a.servers:
        if s not in SERVER_KINDS:
            p.error(f"unknown server {s!r} (known: {', '.join(SERVER_KINDS)})")
    for s in a.parts:
        if s not in PARTS:
            p.error(f"unknown part {s!r}")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Turn SIGTERM into an exception so that servers and clients are stopped and temp dirs go.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ksync_build = os.environ.get("KSYNC_BUILD", str(ROOT / "build" / "plain"))
    if not os.access(Path(ksync_build) / "ksyncd", os.X_OK):
        sys.exit(f"bench: {ksync_build}/ksyncd not found (run `make`)")
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
    }
    log(f"ksync bench: parts {', '.join(args.parts)}; servers {', '.join(args.servers)}; "
        f"clients {', '.join(args.clients)}; {args.rounds} rounds; work dir {tmp}")
    log("columns: median (min-max) over the rounds of: wall = elapsed time; CPU = user+sys of "
        "the client's\n  process tree (sys shown apart); peak RSS = the client's largest "
        "process; requests = as logged\n  by the server; files = files created, changed or "
        "removed in the client's output tree;\n  server CPU = the server's CPU time meanwhile. "
        "raw = curl: sync-collection, then multigets of\n  100 hrefs one after the other on "
        "one connection; for the upload, one PUT with If-Match per edit.\n  Before every "
        "measured run the warm-up requests (bench/README.md) run, not counted.")
    rc = 0
    try:
        if "fair" in args.parts or "latency" in args.parts:
            for s in args.servers:
                try:
                    bench.run_server(s)
                except Exception as e:
                    log(f"bench: {s}: {type(e).__name__}: {e}")
                    bench.results["servers"].append({"server": s,
                                                     "error": f"{type(e).__name__}: {e}"})
                    rc = 1
        for part, fn in LATER_PARTS.items():
            if part not in args.parts:
                continue
            try:
                bench.results[part] = fn(bench)
            except Exception as e:
                log(f"bench: {part}: {type(e).__name__}: {e}")
                bench.results[part] = {"error": f"{type(e).__name__}: {e}"}
                rc = 1
        bench.results["targets"] = targets.targets(bench)
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
