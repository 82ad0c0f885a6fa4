"""The final table: each target of the performance issue against this run's figures."""

import kinds as K
from common import fmt_s, log, verdict


def targets(bench):
    """The issue's targets against what this run measured, as a table and a dict."""
    s = bench.summary
    rows = []

    def add(target, where, figure, want, ok):
        rows.append({"target": target, "where": where, "measured": figure, "want": want,
                     "ok": ok})

    for name, f in s.get("fair", {}).items():
        title = K.SERVER_KINDS[name].title
        c = f["checks"]
        m = f["medians"]
        ini = c.get("initial", {})
        if "ksync_raw_wall" in ini:
            t = K.TARGET_INITIAL_VS_RAW_PARALLEL if f["parallel"] else \
                K.TARGET_INITIAL_VS_RAW_SERIAL
            add("initial sync wall, ksync/raw", title, f"{ini['ksync_raw_wall']:.2f}",
                f"<= {t}", ini.get("target_initial_wall"))
        if "ksync_vdirsyncer_cpu" in ini:
            add("initial sync CPU, ksync/vdirsyncer", title,
                f"{ini['ksync_vdirsyncer_cpu']:.3f}", f"<= {K.TARGET_CPU_VS_VDIRSYNCER}",
                ini.get("target_cpu"))
        k = m["initial"].get("ksync", {})
        if k.get("maxrss_kb"):
            rss = k["maxrss_kb"] / 1024
            big = f["items"] >= K.TARGET_RSS_FROM_ITEMS
            add("peak RSS of the initial sync", f"{title}, {f['items']} items",
                f"{rss:.1f} MB", f"< {K.TARGET_RSS_MB:.0f} MB" + ("" if big else
                                                               " (from 15,000 items)"),
                rss < K.TARGET_RSS_MB if big else None)
        nc = c.get("nochange", {})
        kn = m["nochange"].get("ksync", {})
        if kn.get("requests") is not None:
            add("no-change requests per collection", title,
                f"{kn['requests'] / f['collections']:.2f}", "1", nc.get("target_requests"))
        if kn.get("cpu") is not None:
            budget = K.TARGET_NOCHANGE_CPU_PER_10K * max(1.0, f["items"] / 10000)
            add("no-change CPU", f"{title}, {f['items']} items", fmt_s(kn["cpu"]),
                f"<= {fmt_s(budget)} (25 ms per 10,000 items, at least 25 ms)",
                nc.get("target_nochange_cpu"))
        up = c.get("upload", {})
        ku = m["upload"].get("ksync", {})
        if ku.get("requests") is not None:
            add(f"{f['nedits']} local edits: requests", title, f"{ku['requests']:.0f}",
                f"<= {f['nedits'] + f['collections']}", up.get("target_requests"))
            add(f"{f['nedits']} local edits: files rewritten", title,
                f"{ku['files_changed']:.0f}" if ku.get("files_changed") is not None else "-",
                "0" if up.get("target_files") is not None else
                "0 where the server keeps the bytes PUT (not this one)", up.get("target_files"))
    sc = s.get("scale")
    if sc:
        for n, row in sc.items():
            if row.get("nochange_cpu_per_10k") is not None:
                add("no-change CPU per 10,000 items", f"scale, {n} items",
                    fmt_s(row["nochange_cpu_per_10k"]), "<= 25 ms",
                    row["nochange_cpu_per_10k"] <= K.TARGET_NOCHANGE_CPU_PER_10K)
        rss = {n: row["rss_mb"] for n, row in sc.items() if row.get("rss_mb")}
        if rss:
            lo, hi = min(rss), max(rss)
            flat = rss[hi] <= rss[lo] * 1.10
            add("peak RSS flat with size", f"scale, {lo} to {hi} items",
                f"{rss[lo]:.1f} -> {rss[hi]:.1f} MB", "flat (<= +10%), < 20 MB",
                flat and rss[hi] < K.TARGET_RSS_MB)
    for name, lat in s.get("latency", {}).items():
        title = K.SERVER_KINDS[name].title
        if lat.get("median") is not None:
            add("local write to the server, ksyncd running", title,
                fmt_s(lat["median"]) + f" ({fmt_s(lat['min'])}-{fmt_s(lat['max'])})",
                "<= 1 s", lat["all_arrived"] and lat["median"] <= K.TARGET_LATENCY)
    for name, res in s.get("collections", {}).items():
        if "error" in res:
            continue
        title = K.SERVER_KINDS[name].title
        kn = res["ksync_nochange"]
        add(f"{res['collections']} collections, no-change run", title,
            f"{kn['requests']:.0f} req, {fmt_s(kn['wall'])}",
            "1 request per home set where that is cheaper", None)
        h, r = res["homes"]["token+ctag"], res["reports"]
        add("home PROPFIND vs per-collection requests", title,
            f"{fmt_s(h['wall'])} vs {fmt_s(r['wall'])} wall, {fmt_s(h['server_cpu'])} vs "
            f"{fmt_s(r['server_cpu'])} server CPU", "choose per server by measurement", None)
    if not rows:
        return []
    log("\nTargets of the performance issue, from this run (medians)")
    log("-" * 58)
    w = max(len(r["target"]) for r in rows)
    ww = max(len(r["where"]) for r in rows)
    for r in rows:
        mark = "" if r["ok"] is None else verdict(r["ok"])
        log(f"{r['target']:<{w}}  {r['where']:<{ww}}  {r['measured']:>24}   "
            f"target {r['want']}   {mark}".rstrip())
    return rows
