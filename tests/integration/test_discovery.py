"""Discovery (issue 2): principal, home sets, RFC 6764 well-known URIs, collection properties."""

import os
import re
import urllib.parse
from collections import Counter

import pytest
from dulwich.repo import Repo

from ksynctest import checks, gen, servers

ACCOUNT = "acct"


@pytest.mark.all_servers
def test_collections_and_their_properties(server, ks):
    book = server.make_addressbook("people", "Kontakte & Freunde")
    work = server.make_calendar("work", "Arbeit & Büro", components=("VEVENT", "VTODO"),
                                color="#FF8800")
    todo = server.make_calendar("todo", "Tâches", components=("VTODO",), color="#00aa33ff")
    odd = server.make_calendar("Café Zürich 2024", "Café Zürich", color="#123456")
    server.seed(book, gen.contacts(3))
    server.seed(work, {**gen.events(3), **gen.tasks(2)})
    server.seed(todo, gen.tasks(2, seed=2))
    server.seed(odd, gen.events(2, seed=3))

    # The base URL without a trailing slash: discovery starts at the server root.
    ks.add_account(ACCOUNT, server, url=server.url.rstrip("/"))
    ks.sync()
    rows = checks.check_mirror(ks, server, ACCOUNT)
    checks.check_tree_hygiene(ks)
    cols = server.collections()
    assert set(rows) == set(cols)

    for href, row in rows.items():
        assert row["account"] == ACCOUNT
        assert row["kind"] == cols[href]["kind"]
        assert row["readonly"] in (0, False)
        assert row["sync_token"] == cols[href]["sync_token"], href
    assert [r["name"] for r in rows.values() if r["kind"] == "calendar"].count("work") == 1

    assert rows[book]["kind"] == "addressbook" and rows[book]["name"] == "people"
    # DAViCal stores a displayname with its XML escaping and serves it escaped once more.
    amp = "&amp;" if server.kind == "davical" else "&"
    assert rows[book]["displayname"] == "Kontakte %s Freunde" % amp
    assert rows[work]["displayname"] == "Arbeit %s Büro" % amp
    assert checks.normalize_color(rows[work]["color"]) == "#ff8800"
    assert checks.normalize_color(rows[todo]["color"]) == "#00aa33"
    todo_dir = ks.collection_dir(ACCOUNT, "calendar", "todo")
    assert (todo_dir / "color").read_text().strip().lower() == "#00aa33"
    assert (todo_dir / "displayname").read_text(encoding="utf-8").strip() == "Tâches"
    if server.kind != "xandikos":
        assert checks.components_of(rows[todo]["components"]) == ["VTODO"]
        assert checks.components_of(rows[work]["components"]) == ["VEVENT", "VTODO"]
    else:
        # Xandikos reports one fixed component set for every calendar.
        assert checks.components_of(rows[todo]["components"]) == \
            checks.components_of(cols[todo]["components"])
        assert "VTODO" in checks.components_of(rows[todo]["components"])

    # A collection whose last href segment is no safe file name still gets its own safe dir.
    name = rows[odd]["name"]
    assert name and "/" not in name and not name.startswith(".")
    assert name not in {r["name"] for h, r in rows.items() if h != odd and r["kind"] ==
                        "calendar"}
    odd_dir = ks.collection_dir(ACCOUNT, "calendar", name)
    assert len(ks.item_files(ACCOUNT, "calendar", name)) == 2
    assert (odd_dir / "displayname").read_text(encoding="utf-8").strip() == "Café Zürich"


@pytest.mark.all_servers
def test_discovery_from_principal_url(server, ks):
    book = server.make_addressbook("people", "People")
    server.seed(book, gen.contacts(2))
    ks.add_account(ACCOUNT, server, url=urllib.parse.urljoin(server.url,
                                                                     server.principal))
    ks.sync()
    rows = checks.check_mirror(ks, server, ACCOUNT)
    assert book in rows


@pytest.mark.parametrize("kind", ["radicale", "xandikos"])
def test_discovery_through_well_known(kind, start_server, ks):
    """The configured URL is a web site root that is no DAV resource; only
    /.well-known/caldav and /.well-known/carddav lead to the DAV tree below /dav/."""
    if kind == "radicale":
        backend = start_server("radicale")
    else:
        backend = start_server("xandikos", route_prefix="/dav/")
    front = servers.WebFront(backend, "/dav", strip=(kind == "radicale"))
    try:
        book = backend.make_addressbook("people", "People")
        cal = backend.make_calendar("work", "Work", color="#abcdef")
        backend.seed(book, gen.contacts(3))
        backend.seed(cal, gen.events(4))
        ks.add_account(ACCOUNT, backend, url=front.url)
        ks.sync()
        prefix = "" if kind == "xandikos" else "/dav"
        want = {prefix + h: c for h, c in backend.collections().items()}
        rows = {servers.href_path(r["href"]): r for r in ks.collections(ACCOUNT)}
        assert set(rows) == set(want)
        assert all(h.startswith("/dav/") for h in rows)
        items = ks.items(ACCOUNT)
        assert Counter(it["kind"] for it in items) == {"VCARD": 3, "VEVENT": 4}
        assert len(ks.item_files(ACCOUNT, "addressbook", "people")) == 3
        assert any(p.startswith("/.well-known/") for _, p in front.requests), front.requests
    finally:
        front.stop()


def test_missing_principal_is_named(start_server, ks):
    """The server accepts the request but the principal it names does not exist."""
    srv = start_server("xandikos", create_principal=False, principal="/nobody/")
    ks.add_account(ACCOUNT, srv)
    r = ks.run(timeout=120)
    assert r.rc == 1, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    lines = checks.failure_lines(r.stderr, ACCOUNT)
    assert lines, "no '%s/...: ...' line on stderr:\n%s" % (ACCOUNT, r.stderr)
    assert any(re.search(r"principal", line, re.I) for line in lines), r.stderr


def test_missing_home_set_is_named(start_server, ks):
    """The principal exists but has neither calendar-home-set nor addressbook-home-set."""
    srv = start_server("xandikos", create_principal=False, principal="/user/")
    # A plain collection at the principal's path: Xandikos answers both home-set properties
    # with 404.
    os.makedirs(os.path.join(srv.storage, "user"))
    Repo.init(os.path.join(srv.storage, "user"))
    ks.add_account(ACCOUNT, srv)
    r = ks.run(timeout=120)
    assert r.rc == 1, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    lines = checks.failure_lines(r.stderr, ACCOUNT)
    assert lines, "no '%s/...: ...' line on stderr:\n%s" % (ACCOUNT, r.stderr)
    assert any(re.search(r"home", line, re.I) for line in lines), r.stderr
