"""Server kinds, the warm-up before each measured run, and the issue's targets."""

import os
import re
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable

from common import group_cpu
from ksynctest import servers as kservers

DAV = "DAV:"

# vdirsyncer (aiohttp) sends Basic credentials encoded as Latin-1, and DAViCal and SabreDAV
# refuse the non-ASCII password the tests use (HTTP 401 in `vdirsyncer discover`): every
# server of the bench gets an ASCII one. The servers read it when they start.
kservers.PASSWORD = "bench-Password-1"

# Targets of the performance issue; they apply to ksync.
TARGET_INITIAL_VS_RAW_SERIAL = 1.15     # servers that answer one request at a time
TARGET_INITIAL_VS_RAW_PARALLEL = 0.9    # servers that answer requests in parallel
TARGET_CPU_VS_VDIRSYNCER = 0.10
TARGET_NOCHANGE_CPU_PER_10K = 0.025
TARGET_RSS_MB = 20.0
TARGET_RSS_FROM_ITEMS = 15000
TARGET_LATENCY = 1.0


# --------------------------------------------------------------------------- server kinds

def _radicale_requests(server):
    return re.findall(r"\] (?:\[\w+\] )?(?:INFO: )?(\w+) request for '([^']*)'"
                      r"(?: with depth '(\w+)')?", server.log_text())


def _logged_requests(server):
    """(method, path, '') of every request: from the "METHOD URI" access log that ksynctest
    keeps for some servers, else from the common log format lines of the server's log
    (aiohttp)."""
    access = getattr(server, "access_log", None)
    if access:
        with open(access, encoding="utf-8", errors="replace") as f:
            return [(m, p, "") for m, p in re.findall(r"^(\S+) (\S+)$", f.read(), re.M)]
    return [(m, p, "") for m, p in re.findall(r'"([A-Z]+) (\S+) HTTP/[\d.]+"',
                                               server.log_text())]


def _version_of(module, attr):
    def version():
        try:
            mod = __import__(module)
            v = getattr(mod, attr)
            return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:
            return "?"
    return version


def _package_version(package):
    def version():
        try:
            return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                  capture_output=True, text=True, timeout=20).stdout or "?"
        except Exception:
            return "?"
    return version


@dataclass
class ServerKind:
    """What the bench needs to know about one kind of server; add one to SERVER_KINDS to bench
    another server."""
    name: str
    title: str
    start: Callable                 # start(directory) -> ksynctest DavServer
    sizes: tuple                    # (contacts, events) seeded for the fair part
    quick: tuple                    # the same with --quick
    parallel: bool                  # answers several requests at once
    version: Callable = lambda: "?"
    requests: Callable = _logged_requests     # server -> [(method, path, depth)] so far
    cpu_groups: Callable = lambda server: [server.proc.pid]   # process groups of the server

    def server_cpu(self, server):
        """CPU seconds the server's processes have used so far."""
        return group_cpu(self.cpu_groups(server))


def _with_postgres(server):
    pg = getattr(server, "postgres", None)
    return [server.proc.pid] + ([pg.proc.pid] if pg is not None and pg.proc else [])


SERVER_KINDS = {
    "radicale": ServerKind(
        "radicale", "Radicale", kservers.start_radicale, (10000, 5000), (1000, 500),
        parallel=False, version=_version_of("radicale", "VERSION"),
        requests=_radicale_requests),
    "xandikos": ServerKind(
        "xandikos", "Xandikos", kservers.start_xandikos, (1000, 0), (200, 0),
        parallel=True, version=_version_of("xandikos", "__version__")),
}
# DAViCal (PHP, PostgreSQL) and SabreDAV 1.8 (PHP, SQLite) run under `php -S` with several
# workers; both are seeded by PUT, one item at a time, which bounds their sizes here.
if hasattr(kservers, "start_davical"):
    SERVER_KINDS["davical"] = ServerKind(
        "davical", "DAViCal", kservers.start_davical, (1000, 500), (200, 100), parallel=True,
        version=_package_version("davical"), cpu_groups=_with_postgres)
if hasattr(kservers, "start_sabredav"):
    SERVER_KINDS["sabredav"] = ServerKind(
        "sabredav", "SabreDAV", kservers.start_sabredav, (1000, 500), (200, 100),
        parallel=True, version=_package_version("php-sabre-dav"))


def logged_requests(server, kind):
    """[(method, path, depth)] of the requests in the server's log, in order, markers left
    out."""
    return [g for g in kind.requests(server)
            if not g[1].startswith(kservers.MARKER_PREFIX)]


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


# --------------------------------------------------------------------------- warm-up

SYNC_BODY = ('<?xml version="1.0" encoding="utf-8"?>\n<D:sync-collection xmlns:D="DAV:">'
             '<D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level>'
             '<D:prop><D:getetag/></D:prop></D:sync-collection>\n')
HOMES_BODY = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" '
              'xmlns:CS="http://calendarserver.org/ns/"><D:prop><D:resourcetype/>'
              '<D:sync-token/><CS:getctag/></D:prop></D:propfind>\n')


class WarmUp:
    """The requests sent before every measured run, so that no client pays for work the server
    does only once after a change (Radicale parses new items into its item cache and writes
    the state of each new sync token on the first listing that sees them): one PROPFIND
    Depth 1 with sync-token and getctag per home set, then one sync-collection REPORT per
    collection with the token of the warm-up's own previous listing (an empty token the first
    time), which makes the server compute every member's etag and the new token; an etag
    listing (PROPFIND Depth 1) where the server has no sync-collection."""

    def __init__(self, server, kind, colls):
        self.server = server
        self.kind = kind
        self.colls = colls
        self.tokens = {}

    def run(self):
        s = self.server
        cpu0, t0 = self.kind.server_cpu(s), time.perf_counter()
        for home in s.home_sets:
            s.request("PROPFIND", home, HOMES_BODY.encode(),
                      {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                      expect=(207,))
        for c in self.colls:
            if c.sync:
                self.tokens[c.href] = self._sync(c, self.tokens.get(c.href, ""))
            else:
                s.list(c.href)
        wall = time.perf_counter() - t0
        cpu1 = self.kind.server_cpu(s)
        return {"wall": wall, "server_cpu": (cpu1 - cpu0) if cpu0 is not None and
                cpu1 is not None else None}

    def _sync(self, c, token):
        s = self.server
        tok = token.replace("&", "&amp;").replace("<", "&lt;")
        resp = s.request("REPORT", c.href, SYNC_BODY.format(tok).encode(),
                         {"Depth": "0", "Content-Type": "application/xml; charset=utf-8"})
        if resp.status_code != 207 and token:
            return self._sync(c, "")     # token refused: the full listing instead
        if resp.status_code != 207:
            raise kservers.ServerError(f"warm-up REPORT on {c.href}: HTTP {resp.status_code}")
        return ET.fromstring(resp.content).findtext(f"{{{DAV}}}sync-token") or ""
