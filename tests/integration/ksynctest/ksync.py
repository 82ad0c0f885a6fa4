"""A fresh user environment for running ksyncd and the readers (khard, khal, todoman).

Everything lives under one temporary directory: HOME, the XDG base directories, the password
files. Programs run with an environment built from scratch, never the caller's.
"""

import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import NamedTuple

# The checkout's own plain build, when KSYNC_BUILD does not name another.
DEFAULT_BUILD = str(Path(__file__).resolve().parents[3] / "build" / "plain")
RUN_TIMEOUT = 180
READER_TIMEOUT = 120

KHARD = "/usr/bin/khard"
KHAL = "/usr/bin/khal"
TODOMAN = "/usr/bin/todoman"

# Date range handed to `khal list`: covers every event gen.events() makes (2024-01-01 plus
# 540 days, recurrences and multi-day events included).
KHAL_START = "2023-12-01"
KHAL_RANGE = "800d"


class Result(NamedTuple):
    rc: int
    stdout: str
    stderr: str


# What ASan and UBSan print (or glibc for a failed assertion): never right, whatever a test
# expects of the run otherwise.
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error: |"
                          r"AddressSanitizer:DEADLYSIGNAL|Assertion .* failed")


def check_no_sanitizer_report(what, text):
    """Fails when text (a program's stderr or log) holds a sanitizer's report."""
    m = SANITIZER_RE.search(text)
    if m:
        start = max(0, m.start() - 200)
        raise AssertionError("%s: a sanitizer report or a failed assertion:\n%s" % (
            what, text[start:start + 6000]))


class FileInfo(NamedTuple):
    mode: int
    mtime_ns: int
    ino: int
    size: int
    sha256: str


def build_dir():
    return os.environ.get("KSYNC_BUILD", DEFAULT_BUILD)


# Longest path of a socket the tests put under the runtime dir (sun_path holds 108 bytes).
SOCKET_PATH_MAX = 100


def _mkdir(path, mode=0o700):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


class KsyncHome:
    """Fresh HOME and XDG dirs plus the ksync config; runs ksyncd --once and reads its output."""

    def __init__(self, tmpdir, build=None):
        self.root = _mkdir(Path(tmpdir))
        self.home = _mkdir(self.root / "home")
        self.config_home = _mkdir(self.home / ".config")
        self.data_home = _mkdir(self.home / ".local" / "share")
        self.cache_home = _mkdir(self.home / ".cache")
        self.runtime_dir = _mkdir(self.root / "run")
        if len(str(self.runtime_dir / "no-system-bus")) > SOCKET_PATH_MAX:
            # A socket's path must fit in sun_path (108 bytes): a deep test directory gets a
            # short runtime dir of its own, removed with this object.
            self.runtime_dir = Path(tempfile.mkdtemp(prefix="ksrun."))
            weakref.finalize(self, shutil.rmtree, str(self.runtime_dir), True)
        self.secrets = _mkdir(self.root / "secrets")
        self.build = Path(build or build_dir())
        self.accounts = {}
        self.extra_config = ""

    # -- paths -----------------------------------------------------------------------------------

    @property
    def ksyncd(self):
        return self.build / "ksyncd"

    @property
    def config_path(self):
        return self.config_home / "ksync" / "ksync.conf"

    @property
    def data_dir(self):
        return self.data_home / "ksync"

    @property
    def db_path(self):
        return self.data_dir / "ksync.db"

    def contacts_dir(self, account):
        return self.data_dir / "contacts" / account

    def calendars_dir(self, account):
        return self.data_dir / "calendars" / account

    def collection_dir(self, account, kind, name):
        base = self.contacts_dir(account) if kind == "addressbook" else self.calendars_dir(account)
        return base / name

    def row_dir(self, account, row):
        """The directory of a collection as its cache row places it (ksync.conf's
        calendars_path, contacts_path or path =), else under the data directory."""
        if row.get("dir"):
            return Path(row["dir"])
        return self.collection_dir(account, row["kind"], row["name"])

    def env(self, **extra):
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_CACHE_HOME": str(self.cache_home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "TERM": "dumb",
            "EDITOR": "/bin/false",
            "VISUAL": "/bin/false",
            "PAGER": "cat",
            "DBUS_SESSION_BUS_ADDRESS": "disabled:",
        }
        if "ASAN_OPTIONS" in os.environ:
            env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"]
        if "UBSAN_OPTIONS" in os.environ:
            env["UBSAN_OPTIONS"] = os.environ["UBSAN_OPTIONS"]
        env.update(extra)
        return env

    # -- config ----------------------------------------------------------------------------------

    def add_account(self, name, server, password=None, url=None, username=None,
                    password_via="file"):
        """Add [account NAME] for a DavServer. The password goes to a 0600 password_file
        (password_via="file") or is read by `cat` (password_via="command"). Xandikos has no
        authentication; it gets a placeholder password that it ignores."""
        if password is None:
            password = server.password if server.password is not None else "unused"
        pwfile = self.secrets / ("%s.password" % name)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        os.chmod(pwfile, 0o600)
        keys = {
            "url": url or server.url,
            "username": username or server.username,
        }
        if password_via == "file":
            keys["password_file"] = str(pwfile)
        else:
            keys["password_command"] = "cat %s" % pwfile
        self.accounts[name] = keys
        self.write_config()
        return keys

    def config_text(self):
        out = []
        if self.extra_config:
            out.append(self.extra_config.rstrip("\n") + "\n")
        for name, keys in self.accounts.items():
            out.append("[account %s]\n" % name)
            for k, v in keys.items():
                out.append("%s = %s\n" % (k, v))
            out.append("\n")
        return "".join(out)

    def write_config(self, text=None):
        _mkdir(self.config_path.parent)
        self.config_path.write_text(self.config_text() if text is None else text,
                                    encoding="utf-8")
        os.chmod(self.config_path, 0o600)
        return self.config_path

    # -- running ---------------------------------------------------------------------------------

    def run(self, *args, config=None, timeout=RUN_TIMEOUT, env=None):
        """`ksyncd --once [--config FILE] ARGS...`; Result(rc, stdout, stderr). env, when
        given, replaces the environment (e.g. a daemon's, with its session bus)."""
        if not os.access(self.ksyncd, os.X_OK):
            raise FileNotFoundError("ksyncd is not built: %s does not exist (set KSYNC_BUILD "
                                    "or run make)" % self.ksyncd)
        argv = [str(self.ksyncd), "--once"]
        if config is not None:
            argv += ["--config", str(config)]
        argv += [str(a) for a in args]
        p = subprocess.run(argv, env=env or self.env(), cwd=self.home,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        r = Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"))
        check_no_sanitizer_report("ksyncd --once", r.stderr)
        return r

    def sync(self, *args, **kw):
        """run() that must succeed; returns the Result."""
        r = self.run(*args, **kw)
        assert r.rc == 0, "ksyncd --once %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(map(str, args)), r.rc, r.stdout[-4000:], r.stderr[-4000:])
        return r

    # -- reading the output ----------------------------------------------------------------------

    def db(self):
        """Read-only connection to ksync.db with sqlite3.Row rows."""
        if not self.db_path.exists():
            raise FileNotFoundError("no cache database at %s" % self.db_path)
        conn = sqlite3.connect("file:%s?mode=ro" % self.db_path, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql, params=()):
        conn = self.db()
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def collections(self, account=None):
        sql = "SELECT * FROM collection"
        if account is not None:
            return self.query(sql + " WHERE account = ?", (account,))
        return self.query(sql)

    def items(self, account=None):
        """Item rows, each with its collection's account, href, kind and name added as
        coll_account, coll_href, coll_kind, coll_name."""
        sql = ("SELECT item.*, collection.account AS coll_account, collection.href AS coll_href,"
               " collection.kind AS coll_kind, collection.name AS coll_name"
               " FROM item JOIN collection ON item.collection = collection.id")
        if account is not None:
            return self.query(sql + " WHERE collection.account = ?", (account,))
        return self.query(sql)

    def db_dump(self):
        """Every row of every table, sorted, as text lines (for before/after comparisons)."""
        conn = self.db()
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            out = []
            for t in tables:
                rows = conn.execute('SELECT * FROM "%s"' % t.replace('"', '""')).fetchall()
                out += sorted("%s %r" % (t, tuple(r)) for r in rows)
            return out
        finally:
            conn.close()

    def files(self, base=None):
        """{path relative to the ksync data dir: FileInfo} for every file and directory under it
        (directories have sha256 '')."""
        base = Path(base or self.data_dir)
        out = {}
        for dirpath, dirnames, filenames in os.walk(base):
            for d in dirnames:
                p = Path(dirpath) / d
                st = p.lstat()
                out[str(p.relative_to(base)) + "/"] = FileInfo(stat.S_IMODE(st.st_mode),
                                                               st.st_mtime_ns, st.st_ino, 0, "")
            for f in filenames:
                p = Path(dirpath) / f
                st = p.lstat()
                out[str(p.relative_to(base))] = FileInfo(
                    stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ino, st.st_size,
                    hashlib.sha256(p.read_bytes()).hexdigest())
        return out

    def item_files(self, account, kind, name):
        """{file name: bytes} of the .vcf/.ics files of one collection dir."""
        d = self.collection_dir(account, kind, name)
        ext = ".vcf" if kind == "addressbook" else ".ics"
        return {p.name: p.read_bytes() for p in d.iterdir() if p.name.endswith(ext)}

    # -- readers ---------------------------------------------------------------------------------

    def reader_dirs(self, account):
        """(address book dirs, calendar dirs) of an account, sorted."""
        books = sorted(p for p in self.contacts_dir(account).iterdir() if p.is_dir()) \
            if self.contacts_dir(account).is_dir() else []
        cals = sorted(p for p in self.calendars_dir(account).iterdir() if p.is_dir()) \
            if self.calendars_dir(account).is_dir() else []
        return books, cals

    def configure_readers(self, account=None, books=None, calendars=None):
        """Write khard, khal and todoman configs in XDG_CONFIG_HOME for the synced dirs of
        `account` (or for the given dirs)."""
        if account is not None:
            b, c = self.reader_dirs(account)
            books = b if books is None else books
            calendars = c if calendars is None else calendars
        write_reader_configs(self, books or [], calendars or [])

    def reader(self, argv, timeout=READER_TIMEOUT):
        p = subprocess.run(argv, env=self.env(), cwd=self.home, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        r = Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"))
        assert r.rc == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(argv), r.rc, r.stdout[-3000:], r.stderr[-3000:])
        return r

    def khard_list(self):
        """[(uid, formatted name, address book)] from `khard list --parsable`."""
        r = self.reader([KHARD, "list", "--parsable"])
        out = []
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            parts = line.split("\t")
            assert len(parts) >= 3, "unexpected khard output line %r" % line
            out.append((parts[0], parts[1], parts[2]))
        return out, r

    def khal_list(self, start=KHAL_START, span=KHAL_RANGE):
        """[(uid, title, calendar)] from `khal list`, one per occurrence and day."""
        r = self.reader([KHAL, "list", "--format", "{uid}\t{title}\t{calendar}",
                         "--day-format", "", start, span])
        out = []
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            parts = line.split("\t")
            assert len(parts) == 3, "unexpected khal output line %r" % line
            out.append(tuple(parts))
        return out, r

    def todoman_list(self):
        """Tasks of every list, completed and cancelled included, from
        `todoman --porcelain list --status ANY` (a JSON array of dicts)."""
        r = self.reader([TODOMAN, "--porcelain", "list", "--status", "ANY"])
        return json.loads(r.stdout), r


def write_reader_configs(env, books, calendars):
    """khard.conf, khal/config and todoman/config.py for the given vdir collection dirs."""
    cfg = Path(env.config_home)
    _mkdir(cfg / "khard")
    lines = ["[addressbooks]"]
    for i, d in enumerate(books):
        lines += ["[[%s]]" % _reader_name(d, i), "path = %s/" % d]
    lines += [
        "",
        "[general]",
        "debug = no",
        "default_action = list",
        "editor = /bin/false",
        "merge_editor = /bin/false",
        "",
        "[contact table]",
        "display = formatted_name",
        "group_by_addressbook = no",
        "localize_dates = no",
        "show_uids = yes",
        "sort = formatted_name",
        "",
        "[vcard]",
        "skip_unparsable = no",
        "search_in_source_files = no",
        "",
    ]
    (cfg / "khard" / "khard.conf").write_text("\n".join(lines), encoding="utf-8")

    _mkdir(cfg / "khal")
    lines = ["[calendars]"]
    for i, d in enumerate(calendars):
        lines += ["[[%s]]" % _reader_name(d, i), "path = %s/" % d, "type = calendar",
                  "readonly = True"]
    lines += [
        "",
        "[sqlite]",
        "path = %s/khal/khal.db" % env.cache_home,
        "",
        "[locale]",
        "local_timezone = UTC",
        "default_timezone = UTC",
        "timeformat = %H:%M",
        "dateformat = %Y-%m-%d",
        "longdateformat = %Y-%m-%d",
        "datetimeformat = %Y-%m-%d %H:%M",
        "longdatetimeformat = %Y-%m-%d %H:%M",
        "firstweekday = 0",
        "unicode_symbols = False",
        "",
        "[default]",
        "highlight_event_days = False",
        "",
        "[view]",
        "dynamic_days = False",
        "",
    ]
    (cfg / "khal" / "config").write_text("\n".join(lines), encoding="utf-8")

    _mkdir(cfg / "todoman")
    parents = sorted({str(Path(d).parent) for d in calendars})
    if len(parents) > 1:
        raise ValueError("todoman needs its lists under one directory, got %r" % parents)
    path = "%s/*" % (parents[0] if parents else Path(env.data_home) / "no-calendars")
    lines = [
        "path = %r" % path,
        "date_format = '%Y-%m-%d'",
        "time_format = '%H:%M'",
        "dt_separator = ' '",
        "humanize = False",
        "color = 'never'",
        "default_due = 0",
        "cache_path = %r" % str(Path(env.cache_home) / "todoman" / "cache.sqlite3"),
        "",
    ]
    (cfg / "todoman" / "config.py").write_text("\n".join(lines), encoding="utf-8")


def _reader_name(path, i):
    name = Path(path).name
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return "%s_%d" % (safe or "c", i)
