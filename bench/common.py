"""Measuring and reporting helpers shared by the parts of the bench."""

import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------- one measured run

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
    """Compile bench/rusage.c into tmp; without it (and a warning) peak RSS includes the
    bench's own size."""
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


def group_cpu(pgids):
    """CPU seconds (user+sys, with the children they waited for) of every process in the given
    process groups: a server made of several processes (PHP workers, a database) counts
    whole."""
    total, tick, want = 0.0, os.sysconf("SC_CLK_TCK"), set(pgids)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in want:
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


# --------------------------------------------------------------------------- files

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


def file_state(p):
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


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


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def cfg_quote(s):
    """s as a double-quoted curl config string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- statistics

@dataclass
class Stat:
    """Median, min and max of one figure over the rounds (None when no round had it)."""
    median: float | None
    lo: float | None
    hi: float | None
    n: int

    @classmethod
    def of(cls, values):
        vals = [v for v in values if v is not None]
        if not vals:
            return cls(None, None, None, 0)
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))


FIGURES = ("wall", "cpu", "sys", "maxrss_kb", "requests", "server_cpu", "files_changed")


def summarize(measures):
    """{figure: Stat} over the successful measures of one client in one scenario."""
    ok = [m for m in measures if m is not None and m.ok]
    return {f: Stat.of([getattr(m, f) for m in ok]) for f in FIGURES}


def ratio(a, b):
    """a / b of two medians, or None."""
    if a is None or b is None or not b:
        return None
    return a / b


# --------------------------------------------------------------------------- formatting

def fmt_s(x):
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mb(kb):
    return f"{kb / 1024:.1f} MB" if kb else "-"


def fmt_n(x):
    if x is None:
        return "-"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _scaled(x, unit):
    """x in the unit chosen for a whole cell (so median, min and max read alike)."""
    if unit == "s":
        return f"{x:.2f}"
    if unit == "ms":
        return f"{x * 1000:.0f}"
    if unit == "MB":
        return f"{x / 1024:.1f}"
    return fmt_n(x)


def fmt_stat(st, kind):
    """'median (min-max) unit' of a Stat; kind is 'time', 'rss' or 'count'."""
    if st is None or st.median is None:
        return "-"
    if kind == "time":
        unit = "ms" if st.hi < 1 else "s"
    elif kind == "rss":
        unit = "MB"
    else:
        unit = ""
    med = _scaled(st.median, unit)
    if st.n > 1 and st.lo != st.hi:
        cell = f"{med} ({_scaled(st.lo, unit)}-{_scaled(st.hi, unit)})"
    else:
        cell = med
    return f"{cell} {unit}".rstrip()


def verdict(ok):
    return "PASS" if ok else "MISS"


def check_line(what, value, target=None, ok=None):
    line = f"{what:<28}{value:>10}"
    if target:
        line += f"   target {target}"
    if ok is not None:
        line += f"   {verdict(ok)}"
    return line


def print_stat_table(title, rows, checks=(), first="client"):
    """rows: [(label, {figure: Stat}, status text)]."""
    log("")
    log(title)
    log("-" * min(len(title), 110))
    cols = [("wall", "time", "wall"), ("cpu", "time", "CPU"), ("sys", "time", "of it sys"),
            ("maxrss_kb", "rss", "peak RSS"), ("requests", "count", "requests"),
            ("files_changed", "count", "files"), ("server_cpu", "time", "server CPU")]
    cells = [[fmt_stat(st.get(f), k) for f, k, _ in cols] for _, st, _ in rows]
    widths = [max([len(name)] + [len(c[i]) for c in cells]) for i, (_, _, name) in
              enumerate(cols)]
    lw = max([len(first)] + [len(label) for label, _, _ in rows])
    log(f"{first:<{lw}}" + "".join(f"  {name:>{w}}" for (_, _, name), w in zip(cols, widths))
        + "  status")
    for (label, _, status), c in zip(rows, cells):
        log(f"{label:<{lw}}" + "".join(f"  {x:>{w}}" for x, w in zip(c, widths))
            + f"  {status}")
    for text in checks:
        log("  " + text)
