"""The latency of a local edit with ksyncd running, and the cost of many collections."""

import time
import urllib.parse
import xml.etree.ElementTree as ET

from common import (Stat, cfg_quote, check_line, fmt_s, log, print_stat_table,
                    run_measured, summarize, xml_escape)
import kinds as K
from clients import ACCOUNT, Collection, edit_file, files_by_uid
from ksynctest import gen as kgen
from ksynctest.daemon import Daemon
from ksynctest.ksync import KsyncHome

DAV = "DAV:"
CS = "http://calendarserver.org/ns/"
POLL = 0.025          # seconds between two looks at the server for the edited item
SETTLE_TIMEOUT = 120


# --------------------------------------------------------------------------- latency

def _wait_status(daemon, after, timeout):
    """Wait for a STATUS= notification saying the account's run ended, among the notifications
    after index `after`; returns the text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = daemon.read_notifications()[after:]
        started = False
        for n in notes:
            if n.startswith(f"STATUS=syncing {ACCOUNT}"):
                started = True
            elif started and n.startswith(f"STATUS={ACCOUNT}: "):
                return n
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"ksyncd exited {daemon.proc.returncode}:\n"
                               + daemon.log_text()[-2000:])
        time.sleep(0.02)
    raise RuntimeError(f"ksyncd did not finish a run within {timeout} s")


def latency(bench, server, kind, colls):
    """ksyncd as a service (private D-Bus bus, NOTIFY_SOCKET): after its first sync, edit one
    item file at a time (temp file renamed over it) and time until a GET of the item on the
    server returns the edit."""
    a = bench.args
    targets = [c for c in colls if c.uids]
    if not targets or a.latency_edits <= 0:
        return {"skipped": "no seeded collection"}
    base = bench.tmp / kind.name / "latency"
    home = KsyncHome(base, build=bench.ksync_build)
    home.add_account(ACCOUNT, server)
    log(f"\n{kind.title}: latency of a local edit with ksyncd running "
        f"({a.latency_edits} edits, one at a time)")
    t0 = time.perf_counter()
    r = home.run(ACCOUNT, timeout=bench.timeout)
    if r.rc != 0:
        raise RuntimeError(f"ksyncd --once failed: {r.stderr[-1000:]}")
    log(f"  first sync with ksyncd --once: {time.perf_counter() - t0:.1f} s")
    daemon = Daemon(home)
    out = {"edits": []}
    try:
        n0 = len(daemon.read_notifications())
        daemon.start()
        _wait_status(daemon, n0, SETTLE_TIMEOUT)
        local = {c.href: files_by_uid(home.data_dir / ("contacts" if c.kind == "contacts"
                                                       else "calendars"), c.ext)
                 for c in targets}
        for i in range(a.latency_edits):
            coll = targets[i % len(targets)]
            hrefs = sorted(coll.uids)
            href = hrefs[(i * 7919 + len(hrefs) // 3) % len(hrefs)]
            path = local[coll.href][coll.uids[href]]
            marker = f"ksync-bench-latency-{i}-{int(time.time())}"
            before = server.request_count()
            log0 = len(K.logged_requests(server, kind))
            n0 = len(daemon.read_notifications())
            polls = 0
            edit_file(path, coll.kind, marker)
            t_write = time.perf_counter()
            deadline = t_write + SETTLE_TIMEOUT
            arrived = None
            while time.perf_counter() < deadline:
                polls += 1
                resp = server.request("GET", href)
                if resp.status_code == 200 and marker.encode() in resp.content:
                    arrived = time.perf_counter() - t_write
                    break
                time.sleep(POLL)
            status = _wait_status(daemon, n0, SETTLE_TIMEOUT)
            reqs = server.request_count() - before - polls
            target = urllib.parse.unquote(urllib.parse.urlsplit(href).path)
            made = [q for q in K.logged_requests(server, kind)[log0:]
                    if not (q[0] == "GET" and urllib.parse.unquote(
                        urllib.parse.urlsplit(q[1]).path) == target)]
            e = {"seconds": arrived, "requests": reqs, "status": status.split(": ", 1)[-1],
                 "requests_made": K.summarize_requests(made)}
            out["edits"].append(e)
            log(f"  edit {i + 1}: " + (f"on the server after {fmt_s(arrived)}" if arrived
                                       else "NOT on the server") + f", run {e['status']}; "
                f"{reqs} requests by ksyncd: {e['requests_made']}")
    finally:
        daemon.stop()
    got = [e["seconds"] for e in out["edits"] if e["seconds"] is not None]
    st = Stat.of(got)
    out["median"], out["min"], out["max"] = st.median, st.lo, st.hi
    out["all_arrived"] = len(got) == len(out["edits"])
    out["requests_median"] = Stat.of([e["requests"] for e in out["edits"]]).median
    ok = out["all_arrived"] and st.median is not None and st.median <= 1.0
    log("  " + check_line("write to server", fmt_s(st.median),
                          f"<= 1 s (min {fmt_s(st.lo)}, max {fmt_s(st.hi)})", ok))
    bench.summary.setdefault("latency", {})[kind.name] = out
    return out


# --------------------------------------------------------------------------- many collections

HOME_PROPS = {
    "token+ctag": "<D:resourcetype/><D:sync-token/><CS:getctag/>",
    "ctag": "<D:resourcetype/><CS:getctag/>",
    "token": "<D:resourcetype/><D:sync-token/>",
}


def _propfind_body(props):
    return ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" '
            f'xmlns:CS="{CS}"><D:prop>{props}</D:prop></D:propfind>\n')


def _sync_body(token):
    return ('<?xml version="1.0" encoding="utf-8"?>\n<D:sync-collection xmlns:D="DAV:">'
            f'<D:sync-token>{xml_escape(token)}</D:sync-token><D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>\n')


def _curl(bench, server, kind, work, name, reqs):
    """One curl process running reqs [(method, url, depth, body)] one after the other over one
    connection, measured; returns (Measure with server CPU, [output paths])."""
    lines = ["silent", "show-error", "no-progress-meter"]
    outs = []
    for i, (method, url, depth, body) in enumerate(reqs):
        bpath = work / f"{name}-{i:04d}.req.xml"
        bpath.write_text(body)
        opath = work / f"{name}-{i:04d}.xml"
        outs.append(opath)
        if i:
            lines.append("next")
        lines += [f"url = {cfg_quote(url)}", f'request = "{method}"',
                  f'header = "Depth: {depth}"',
                  'header = "Content-Type: application/xml; charset=utf-8"',
                  'header = "Expect:"', f"data-binary = {cfg_quote('@' + str(bpath))}",
                  f"output = {cfg_quote(str(opath))}", 'write-out = "%{http_code}\\n"']
        if server.password is not None:
            lines.append(f"user = {cfg_quote(server.username + ':' + server.password)}")
    cfg = work / f"{name}.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    status = work / f"{name}.status"
    status.write_text("")
    cpu0 = kind.server_cpu(server)
    m = run_measured(["/usr/bin/curl", "-K", cfg], log_path=status,
                     stderr_path=work / "curl.log", timeout=bench.timeout)
    cpu1 = kind.server_cpu(server)
    m.server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    codes = [c for c in status.read_text().split() if c]
    if m.ok and (len(codes) != len(reqs) or any(c != "207" for c in codes)):
        m.ok, m.error = False, f"HTTP {','.join(sorted(set(codes)))}"
    m.requests = len(reqs)
    return m, outs


def _home_tokens(path, colls):
    """(collections answered with a sync-token, with a getctag) in a home PROPFIND answer."""
    root = ET.parse(path).getroot()
    tok = ctag = 0
    want = {urllib.parse.unquote(c) for c in colls}
    for r in root.findall(f"{{{DAV}}}response"):
        href = urllib.parse.unquote(urllib.parse.urlsplit(r.findtext(f"{{{DAV}}}href") or "")
                                    .path)
        if href not in want:
            continue
        for ps in r.findall(f"{{{DAV}}}propstat"):
            if " 200 " not in (ps.findtext(f"{{{DAV}}}status") or ""):
                continue
            tok += bool((ps.findtext(f".//{{{DAV}}}sync-token") or "").strip())
            ctag += bool((ps.findtext(f".//{{{CS}}}getctag") or "").strip())
    return tok, ctag


def collections(bench):
    """On every server kind: N calendars of a few events each. ksync's no-change run (requests,
    wall, CPU), and what the server charges for one PROPFIND Depth 1 on the calendar home with
    every collection's sync-token and/or getctag against one sync-collection REPORT per
    collection."""
    a = bench.args
    out = {}
    log(f"\n=== many collections: {a.calendars} calendars of {a.calendar_events} events on "
        "each server")
    for name in a.servers:
        kind = K.SERVER_KINDS[name]
        sdir = bench.tmp / f"collections-{name}"
        sdir.mkdir()
        server = kind.start(sdir / "server")
        try:
            out[name] = _collections_on(bench, kind, server, sdir)
        except Exception as e:
            log(f"  {kind.title}: {type(e).__name__}: {e}")
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            server.stop()
    _report_collections(bench, out)
    bench.summary["collections"] = out
    return out


def _collections_on(bench, kind, server, sdir):
    a = bench.args
    t0 = time.perf_counter()
    for i in range(a.calendars):
        href = server.make_calendar(f"bench{i:03d}", f"Bench {i}", components=("VEVENT",))
        if a.calendar_events:
            server.seed(href, kgen.events(a.calendar_events, seed=100 + i))
    found = server.collections()
    colls = [Collection(kind="contacts" if c["kind"] == "addressbook" else "events",
                          name=h.rstrip("/").rsplit("/", 1)[-1], href=h,
                          url=urllib.parse.urljoin(server.url, h), count=0,
                          sync=bool(c["sync_token"]))
             for h, c in sorted(found.items())]
    cal_hrefs = [c.href for c in colls if c.kind == "events"]
    log(f"  {kind.title}: {len(colls)} collections ({len(cal_hrefs)} calendars) made in "
        f"{time.perf_counter() - t0:.1f} s")
    home = KsyncHome(sdir / "ksync", build=bench.ksync_build)
    home.add_account(ACCOUNT, server)
    warm = K.WarmUp(server, kind, colls)
    warm.run()
    env, argv = home.env(), [home.ksyncd, "--once", "--config", home.config_path, ACCOUNT]
    first = run_measured(argv, env=env, cwd=home.home, log_path=sdir / "ksync.log",
                         timeout=bench.timeout)
    if not first.ok:
        raise RuntimeError(first.error)
    runs, homes = [], {k: [] for k in HOME_PROPS}
    reports = []
    work = sdir / "raw"
    work.mkdir()
    cal_home = server.calendar_home
    for rnd in range(a.rounds):
        warm.run()
        r0, cpu0 = server.request_count(), kind.server_cpu(server)
        m = run_measured(argv, env=env, cwd=home.home, log_path=sdir / "ksync.log",
                         timeout=bench.timeout)
        cpu1 = kind.server_cpu(server)
        m.requests = server.request_count() - r0
        m.server_cpu = cpu1 - cpu0
        runs.append(m)
        for k, props in HOME_PROPS.items():
            warm.run()
            hm, outs = _curl(bench, server, kind, work, f"home-{k}-{rnd}",
                             [("PROPFIND", urllib.parse.urljoin(server.url, cal_home), "1",
                               _propfind_body(props))])
            hm.extra["tokens"], hm.extra["ctags"] = _home_tokens(outs[0], cal_hrefs) \
                if hm.ok else (0, 0)
            homes[k].append(hm)
        warm.run()
        rm, _ = _curl(bench, server, kind, work, f"reports-{rnd}",
                      [("REPORT", urllib.parse.urljoin(server.url, c.href), "0",
                        _sync_body(warm.tokens.get(c.href, ""))) if c.sync else
                       ("PROPFIND", urllib.parse.urljoin(server.url, c.href), "0",
                        _propfind_body("<CS:getctag/>")) for c in colls])
        reports.append(rm)
    res = {"collections": len(colls), "calendars": len(cal_hrefs),
           "ksync_first": {"wall": first.wall, "cpu": first.cpu},
           "ksync_nochange": {f: s.median for f, s in summarize(runs).items()},
           "ksync_nochange_runs": [{"wall": m.wall, "cpu": m.cpu, "requests": m.requests,
                                    "server_cpu": m.server_cpu, "ok": m.ok} for m in runs],
           "reports": {f: s.median for f, s in summarize(reports).items()},
           "homes": {}}
    for k, ms in homes.items():
        res["homes"][k] = {f: s.median for f, s in summarize(ms).items()}
        res["homes"][k]["tokens"] = ms[-1].extra.get("tokens")
        res["homes"][k]["ctags"] = ms[-1].extra.get("ctags")
        res["homes"][k]["ok"] = all(m.ok for m in ms)
    res["reports"]["ok"] = all(m.ok for m in reports)
    res["stats"] = {"ksync": summarize(runs), "reports": summarize(reports),
                    **{f"home {k}": summarize(ms) for k, ms in homes.items()}}
    return res


def _report_collections(bench, out):
    for name, res in out.items():
        if "error" in res:
            continue
        kind = K.SERVER_KINDS[name]
        st = res.pop("stats")
        rows = [("ksync", st["ksync"], "no-change run, `ksyncd --once`")]
        rows.append((f"{res['collections']} requests", st["reports"],
                     "one per collection (sync-collection with the current token, or "
                     "PROPFIND getctag without), one curl, one connection"))
        for k in HOME_PROPS:
            h = res["homes"][k]
            rows.append((f"home {k}", st[f"home {k}"],
                         f"one PROPFIND Depth 1 on the calendar home: sync-token on "
                         f"{h['tokens']}, getctag on {h['ctags']} of {res['calendars']} "
                         "calendars"))
        checks = []
        rw, rc = res["reports"]["wall"], res["reports"]["server_cpu"]
        for k in HOME_PROPS:
            h = res["homes"][k]
            checks.append(f"home {k} / per-collection requests: wall {_r(h['wall'], rw)}, "
                          f"server CPU {_r(h['server_cpu'], rc)}")
        kreq = res["ksync_nochange"]["requests"]
        checks.append(check_line("ksync no-change requests", f"{kreq:.0f}",
                                 f"1 per home set where a home PROPFIND is cheap "
                                 f"({res['collections']} collections)"))
        print_stat_table(f"{kind.title}: {res['collections']} collections, "
                         f"{bench.args.calendar_events} events per calendar - no-change "
                         "cost, medians", rows, checks, first="what")


def _r(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"
