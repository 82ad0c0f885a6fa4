"""Fixtures for ksync's integration tests.

`server` starts a fresh Radicale or Xandikos (each test gets its own, on a free loopback port,
stopped at teardown even when the test fails); a test marked `all_servers` gets DAViCal and
SabreDAV too. `ks` is a fresh HOME/XDG environment for ksyncd and the readers. A missing server
is an error, never a skip.

KSYNC_TEST_SERVERS=davical,sabredav (a comma-separated list of kinds) runs every test that takes
`server` on exactly those kinds, marked or not.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ksynctest import ksync, servers  # noqa: E402
from ksynctest.daemon import Daemon  # noqa: E402

SERVER_KINDS = ["radicale", "xandikos"]
# Production servers, slower to start and to serve: only for the tests marked all_servers (the
# pull, push, conflict, collection and duplicates cases that differ from server to server).
ALL_SERVER_KINDS = SERVER_KINDS + ["davical", "sabredav"]


def pytest_configure(config):
    config.addinivalue_line("markers", "all_servers: run on DAViCal and SabreDAV as well as "
                            "on Radicale and Xandikos")
    config.addinivalue_line("markers", "server_xfail(kind=reason, ...): strict xfail of the "
                            "test on the named server kinds, for a ksync bug seen only there")


def pytest_generate_tests(metafunc):
    if "server" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker("all_servers") is not None
    kinds = ALL_SERVER_KINDS if marked else SERVER_KINDS
    wanted = os.environ.get("KSYNC_TEST_SERVERS")
    if wanted:
        kinds = wanted.split(",")
        unknown = set(kinds) - set(ALL_SERVER_KINDS)
        if unknown:
            raise pytest.UsageError("KSYNC_TEST_SERVERS: unknown kinds %s" % sorted(unknown))
    xfails = {}
    for mark in metafunc.definition.iter_markers("server_xfail"):
        xfails.update(mark.kwargs)
    params = [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=xfails[k]))
              if k in xfails else k for k in kinds]
    metafunc.parametrize("server", params, indirect=True)


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


@pytest.fixture
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
        starters = {"radicale": servers.start_radicale, "xandikos": servers.start_xandikos,
                    "davical": servers.start_davical, "sabredav": servers.start_sabredav}
        srv = starters[kind](d, **options)
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
