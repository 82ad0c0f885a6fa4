#!/usr/bin/python3
"""ksync demo: sync a sample account from a local CalDAV/CardDAV server, then read it.

Run by `make demo` (which builds ksyncd and sets KSYNC_BUILD). Steps:

  1. start Radicale on a free loopback port, in a temporary directory, and fill it with sample
     contacts, events (one recurring, with a moved occurrence) and tasks (tests/demo_data.py);
  2. write a ksync config for it in a temporary HOME and run `ksyncd --once`;
  3. show the files ksync wrote;
  4. point khard, khal and todoman at those files and show what they list;
  5. the service itself: on a private session bus, `ksyncctl status` starts ksyncd by D-Bus
     activation, an event made with `khal new` reaches the server within seconds (ksyncd
     watches the files), and `ksyncctl status` shows the account afterwards.

Nothing outside the temporary directory is touched; it is removed at the end unless --keep.
"""

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests"))

from ksynctest import servers  # noqa: E402
from ksynctest.daemon import Daemon  # noqa: E402
from ksynctest.ksync import KsyncHome  # noqa: E402
import demo_data  # noqa: E402

ACCOUNT = "demo"
KHARD = "/usr/bin/khard"
KHAL = "/usr/bin/khal"
TODOMAN = "/usr/bin/todoman"
KHAL_DAYS = 10
RUN_TIMEOUT = 120


def heading(text):
    print()
    print(text)
    print("=" * len(text), flush=True)


def indent(text, prefix="    "):
    return "\n".join(prefix + line if line else line for line in text.rstrip("\n").split("\n"))


def local_timezone():
    """The machine's time zone name (Olson), UTC when it cannot be told."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz and Path("/usr/share/zoneinfo", tz).exists():
        return tz
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    return "UTC"


# ------------------------------------------------------------------------------- server

def start_server(tmp):
    heading("1. A CalDAV/CardDAV server with sample data")
    server = servers.start_radicale(tmp / "server")
    print(f"Radicale is listening on {server.url} (user '{server.username}'), "
          f"storage in {server.root}.")
    today = dt.date.today()
    cards, events, tasks = (demo_data.contacts(today), demo_data.events(today),
                            demo_data.tasks(today))
    book = server.make_addressbook("contacts", "Contacts")
    cal = server.make_calendar("personal", "Personal", components=("VEVENT",), color="#2E7D32")
    todo = server.make_calendar("tasks", "Tasks", components=("VTODO",), color="#1565C0")
    for href, items in ((book, cards), (cal, events), (todo, tasks)):
        for name, data in items.items():
            ext = ".vcf" if data.startswith(b"BEGIN:VCARD") else ".ics"
            server.put(href + name + ext, data, if_none_match="*")
    print("Created and filled over HTTP:\n"
          f"    {book:<22} address book 'Contacts': {len(cards)} contacts\n"
          f"    {cal:<22} calendar 'Personal': {len(events)} events "
          "(a weekly stand-up with one moved occurrence, a yearly birthday, ...)\n"
          f"    {todo:<22} task list 'Tasks': {len(tasks)} tasks (one already completed)")
    return server


# ------------------------------------------------------------------------------- ksync

def run_ksync(home, server):
    heading("2. ksync")
    home.add_account(ACCOUNT, server)
    print(f"Config file {home.config_path}:")
    print(indent(home.config_text()))
    print("(the password file is mode 0600. For Infomaniak an account needs only "
          "'provider = infomaniak',\n 'username' and a password_command or password_file: "
          "see README.md)")
    print()
    cmd = f"ksyncd --once --config {home.config_path}"
    print(f"$ {cmd}", flush=True)
    t0 = time.monotonic()
    r = home.run(config=home.config_path, timeout=RUN_TIMEOUT)
    took = time.monotonic() - t0
    for out in (r.stdout, r.stderr):
        if out.strip():
            print(indent(out))
    if r.rc != 0:
        print(f"demo: ksyncd exited with status {r.rc}.")
        return False
    print(f"ksyncd synced account '{ACCOUNT}' in {took:.2f} s.")
    return True


def show_tree(home):
    heading("3. The files ksync wrote (vdir layout, one item per file)")
    base = home.data_dir
    print(f"{base}/")
    lines = []

    def walk(d, prefix):
        entries = sorted(d.iterdir(), key=lambda p: (p.is_dir(), p.suffix in (".vcf", ".ics"),
                                                     p.name))
        items = [p for p in entries if p.suffix in (".vcf", ".ics")]
        shown_items = items[:4]
        rest = len(items) - len(shown_items)
        visible = [p for p in entries if p not in items or p in shown_items]
        for i, p in enumerate(visible):
            last = i == len(visible) - 1 and rest == 0
            branch = "`-- " if last else "|-- "
            label = p.name + ("/" if p.is_dir() else "")
            note = ""
            if p.is_file() and p.name in ("displayname", "color"):
                note = f"    ({p.read_text(errors='replace').strip()!r})"
            lines.append(prefix + branch + label + note)
            if p.is_dir():
                walk(p, prefix + ("    " if last else "|   "))
        if rest:
            lines.append(prefix + f"`-- ... and {rest} more {items[0].suffix} files")

    walk(base, "")
    print("\n".join(lines))
    books, cals = collection_dirs(home)
    n_cards = sum(len(list(d.glob("*.vcf"))) for d in books)
    n_ics = sum(len(list(d.glob("*.ics"))) for d in cals)
    print(f"\n{n_cards} contacts in {len(books)} address book(s), {n_ics} events and tasks in "
          f"{len(cals)} calendar(s); ksync.db is the cache (SQLite).")


def collection_dirs(home):
    books = sorted(p for p in home.contacts_dir(ACCOUNT).glob("*") if p.is_dir()) \
        if home.contacts_dir(ACCOUNT).is_dir() else []
    cals = sorted(p for p in home.calendars_dir(ACCOUNT).glob("*") if p.is_dir()) \
        if home.calendars_dir(ACCOUNT).is_dir() else []
    return books, cals


def holds(d, component):
    tag = f"BEGIN:{component}".encode()
    return any(tag in p.read_bytes() for p in d.glob("*.ics"))


def display_name(d):
    try:
        name = (d / "displayname").read_text().strip()
    except OSError:
        name = ""
    return name or d.name


def section_name(d, used):
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in display_name(d)) or "c"
    name, i = base, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


# ------------------------------------------------------------------------------- readers

def write_reader_configs(home, tz):
    """khard, khal and todoman configs in the demo's XDG_CONFIG_HOME; returns their paths."""
    books, cals = collection_dirs(home)
    event_cals = [d for d in cals if holds(d, "VEVENT")]
    cfg = home.config_home

    used = set()
    khard = ["[addressbooks]"]
    for d in books:
        khard += [f"[[{section_name(d, used)}]]", f"path = {d}/"]
    khard += ["", "[general]", "default_action = list", "editor = /bin/false",
              "merge_editor = /bin/false", "", "[contact table]", "display = formatted_name",
              "sort = last_name", "show_uids = no", ""]
    (cfg / "khard").mkdir(parents=True, exist_ok=True)
    (cfg / "khard" / "khard.conf").write_text("\n".join(khard))

    used = set()
    khal = ["[calendars]"]
    for d in event_cals:
        khal += [f"[[{section_name(d, used)}]]", f"path = {d}/", "type = calendar"]
        try:
            color = (d / "color").read_text().strip()
            if color:
                khal.append(f"color = '{color}'")
        except OSError:
            pass
    khal += ["", "[locale]", f"local_timezone = {tz}", f"default_timezone = {tz}",
             "timeformat = %H:%M", "dateformat = %Y-%m-%d", "longdateformat = %Y-%m-%d",
             "datetimeformat = %Y-%m-%d %H:%M", "longdatetimeformat = %Y-%m-%d %H:%M",
             "firstweekday = 0", ""]
    (cfg / "khal").mkdir(parents=True, exist_ok=True)
    (cfg / "khal" / "config").write_text("\n".join(khal))

    todo = [f"path = {str(home.calendars_dir(ACCOUNT)) + '/*'!r}",
            "date_format = '%a %Y-%m-%d'", "time_format = '%H:%M'", "color = 'never'", ""]
    (cfg / "todoman").mkdir(parents=True, exist_ok=True)
    (cfg / "todoman" / "config.py").write_text("\n".join(todo))
    return [cfg / "khard" / "khard.conf", cfg / "khal" / "config", cfg / "todoman" / "config.py"]


def run_reader(home, tz, argv, title):
    print()
    shown = " ".join([Path(argv[0]).name] + argv[1:])
    print(f"--- {title}: $ {shown}")
    try:
        p = subprocess.run(argv, env=home.env(TZ=tz, COLUMNS="100"), cwd=home.home,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"demo: {argv[0]} did not finish within {RUN_TIMEOUT} s")
        return False
    if p.stdout.strip():
        print(indent(p.stdout))
    if p.returncode != 0 or p.stderr.strip():
        print(indent(p.stderr or "", "  ! "))
    if p.returncode != 0:
        print(f"demo: {Path(argv[0]).name} exited with status {p.returncode}")
        return False
    return True


def show_readers(home):
    heading("4. What khard, khal and todoman show")
    tz = local_timezone()
    paths = write_reader_configs(home, tz)
    print("They read the synced directories directly; their configs (in the demo's "
          "XDG_CONFIG_HOME):")
    for p in paths:
        print(f"    {p}")
    today = dt.date.today()
    ok = run_reader(home, tz, [KHARD, "list"], "Contacts (khard)")
    ok &= run_reader(home, tz, [KHAL, "list", today.strftime("%Y-%m-%d"), f"{KHAL_DAYS}d"],
                     f"Events of the next {KHAL_DAYS} days, times in {tz} (khal)")
    ok &= run_reader(home, tz, [TODOMAN, "list"], "Open tasks (todoman)")
    return ok


# ------------------------------------------------------------------------------- service

SERVICE_WAIT = 60


def ctl(bus, *args):
    r = bus.ctl(*args, timeout=RUN_TIMEOUT)
    print(f"$ ksyncctl {' '.join(args)}")
    if r.stdout.strip():
        print(indent(r.stdout))
    if r.stderr.strip():
        print(indent(r.stderr, "  ! "))
    return r


def account_idle_ok(bus):
    import json
    r = bus.ctl("status", "--json", timeout=RUN_TIMEOUT)
    if r.rc != 0:
        return False
    for a in json.loads(r.stdout)["accounts"]:
        if a["name"] == ACCOUNT:
            return a["state"] == "idle" and a["last_result"] == "ok"
    return False


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def show_service(home, server):
    heading("5. The service: ksyncd started by D-Bus, an edit in khal on the server in seconds")
    print("A private session bus whose io.ksync.Sync1.service file runs the demo's ksyncd, as\n"
          "an installed ksync's does (`make install`); the first ksyncctl call starts it.")
    bus = Daemon(home)
    try:
        bus.make_activatable()
        r = ctl(bus, "status")
        if r.rc != 0:
            print("demo: ksyncctl status failed")
            return False
        if not wait_for(lambda: account_idle_ok(bus), SERVICE_WAIT):
            print(f"demo: ksyncd did not finish its first run within {SERVICE_WAIT} s")
            return False
        tz = local_timezone()
        _, cals = collection_dirs(home)
        personal = [d for d in cals if holds(d, "VEVENT")][0]
        cal_href = [h for h, c in server.collections().items()
                    if c["kind"] == "calendar" and "personal" in h][0]
        before = set(server.list(cal_href))
        day = (dt.date.today() + dt.timedelta(days=1)).strftime("%Y-%m-%d")
        name = section_name(personal, set())
        print()
        ok = run_reader(home, tz, [KHAL, "new", "-a", name, day, "10:00", "11:00",
                                   "Written with khal"], "A new event (khal)")
        if not ok:
            return False
        t0 = time.monotonic()
        if not wait_for(lambda: set(server.list(cal_href)) - before, SERVICE_WAIT):
            print(f"demo: the event did not reach the server within {SERVICE_WAIT} s")
            return False
        took = time.monotonic() - t0
        new = sorted(set(server.list(cal_href)) - before)
        print(f"On the server {took:.1f} s later: {new[0]}\n"
              "(ksyncd saw the new file through inotify and sent it after a 0.5 s pause for "
              "more edits.)")
        wait_for(lambda: account_idle_ok(bus), SERVICE_WAIT)
        print()
        return ctl(bus, "status").rc == 0
    finally:
        bus.stop()


# ------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description="Sync a sample account and show it in "
                                             "khard, khal and todoman.")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (server data, HOME, synced files)")
    args = ap.parse_args()
    # Turn SIGTERM into an exception so that the server is stopped and the temp dir goes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    missing = [p for p in ("/usr/bin/radicale", KHARD, KHAL, TODOMAN) if not os.access(p, os.X_OK)]
    if missing:
        print("demo: missing " + ", ".join(missing) + " (run `make deps` as root)",
              file=sys.stderr)
        return 1
    ksyncd = Path(os.environ.get("KSYNC_BUILD", ROOT / "build" / "plain")) / "ksyncd"
    if not os.access(ksyncd, os.X_OK):
        print(f"demo: {ksyncd} is not built; run `make demo` (or `make` first)", file=sys.stderr)
        return 1

    tmp = Path(tempfile.mkdtemp(prefix="ksync-demo-"))
    print("ksync demo: everything below happens in " + str(tmp))
    server = None
    ok = False
    try:
        server = start_server(tmp)
        home = KsyncHome(tmp / "user", build=ksyncd.parent)
        if run_ksync(home, server):
            show_tree(home)
            ok = show_readers(home)
            ok = show_service(home, server) and ok
    except KeyboardInterrupt:
        print("\ndemo: interrupted")
    except Exception as e:
        print(f"\ndemo: {type(e).__name__}: {e}")
    finally:
        if server is not None:
            server.stop()
        heading("Done" if ok else "Done, with errors")
        if ok:
            print("ksync brought the server's contacts, events and tasks down as plain .vcf/.ics "
                  "files,\nkhard, khal and todoman read them as they are, and ksyncd sent an "
                  "event made in khal\nto the server within seconds. See README.md to set up "
                  "a real account.")
        print("The demo server is stopped.")
        if args.keep:
            h = tmp / "user" / "home"
            print(f"Kept: {tmp}\nTo look around, prefix the readers with the demo's directories:\n"
                  f"    env HOME={h} XDG_CONFIG_HOME={h}/.config "
                  f"XDG_DATA_HOME={h}/.local/share XDG_CACHE_HOME={h}/.cache khal calendar")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
