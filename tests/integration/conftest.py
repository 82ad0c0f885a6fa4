"""Fixtures for ksync's integration tests.

`server` starts a fresh Radicale or Xandikos (each test gets its own, on a free loopback port,
stopped at teardown even when the test fails); `ks` is a fresh HOME/XDG environment for ksyncd
and the readers. A missing server binary is an error, never a skip.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ksynctest import ksync, servers  # noqa: E402
from ksynctest.daemon import Daemon  # noqa: E402

SERVER_KINDS = ["radicale", "xandikos"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _log_tail_on_failure(request, srv):
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        try:
            tail = srv.log_text()[-6000:]
        except OSError:
            return
        sys.stderr.write("\n--- %s log tail (%s) ---\n%s\n" % (srv.kind, srv.log_path, tail))


@pytest.fixture(params=SERVER_KINDS)
def server(request, tmp_path):
    srv = servers.start(request.param, tmp_path / "server")
    try:
        yield srv
    finally:
        _log_tail_on_failure(request, srv)
        srv.stop()


@pytest.fixture
def radicale(request, tmp_path):
    srv = servers.start_radicale(tmp_path / "radicale")
    try:
        yield srv
    finally:
        _log_tail_on_failure(request, srv)
        srv.stop()


@pytest.fixture
def start_server(request, tmp_path):
    """Factory for extra servers: start_server(kind, **options) -> DavServer."""
    started = []

    def start(kind, **options):
        d = tmp_path / ("extra-%s-%d" % (kind, len(started)))
        srv = (servers.start_radicale(d, **options) if kind == "radicale"
               else servers.start_xandikos(d, **options))
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            _log_tail_on_failure(request, srv)
            srv.stop()


@pytest.fixture
def ks(tmp_path):
    return ksync.KsyncHome(tmp_path / "user")


@pytest.fixture
def daemon(ks):
    """ksyncd as a service on a private session bus for `ks`, stopped at teardown."""
    d = Daemon(ks)
    try:
        yield d
    finally:
        d.stop()
