"""Pull sync (issue 2): `ksyncd --once` against real Radicale and Xandikos, read back by the
cache, the vdir files and khard/khal/todoman."""

import re
import time
from collections import Counter

import pytest

from ksynctest import checks, gen, servers

ACCOUNT = "acct"
# Radicale's and DAViCal's principal is both home sets; Xandikos has /user/calendars/ and
# /user/contacts/, SabreDAV /calendars/user/ and /addressbooks/user/.
HOME_SETS = {"radicale": 1, "xandikos": 2, "davical": 1, "sabredav": 2}


def make_collections(server):
    """An address book, a calendar holding events and tasks side by side (as Infomaniak's do)
    and a task-only calendar."""
    book = server.make_addressbook("people", "Kontakte & Freunde")
    work = server.make_calendar("work", "Arbeit & Büro", components=("VEVENT", "VTODO"),
                                color="#ff8800")
    todo = server.make_calendar("todo", "Tâches", components=("VTODO",), color="#00AA33FF")
    return book, work, todo


def seed(server, contacts, events, tasks, todo_tasks):
    book, work, todo = make_collections(server)
    t = time.monotonic()
    server.seed(book, gen.contacts(contacts))
    server.seed(work, {**gen.events(events), **gen.tasks(tasks)})
    server.seed(todo, gen.tasks(todo_tasks, seed=2))
    return (book, work, todo), time.monotonic() - t


def requests_between(server, c0, c1):
    return server.requests_logged()[c0:c1]


def test_initial_sync(server, ks, record_property):
    (book, work, todo), seed_time = seed(server, 1000, 500, 200, 40)
    record_property("seed_seconds", round(seed_time, 3))
    print("\n%s: seeded 1,740 items in %.2fs" % (server.kind, seed_time))
    contents = {h: server.contents(h) for h in server.collections()}
    assert sum(len(c) for c in contents.values()) == 1740

    ks.add_account(ACCOUNT, server)
    t = time.monotonic()
    r = ks.sync()
    elapsed = time.monotonic() - t
    record_property("initial_sync_seconds", round(elapsed, 3))
    print("%s: initial sync of 1,740 items in %.2fs" % (server.kind, elapsed))
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr

    checks.check_mirror(ks, server, ACCOUNT, contents)
    checks.check_tree_hygiene(ks)

    items = ks.items(ACCOUNT)
    kinds = Counter(it["kind"] for it in items)
    assert kinds == {"VCARD": 1000, "VEVENT": 500, "VTODO": 240}
    events = [it for it in items if it["kind"] == "VEVENT"]
    n_recurring = sum(1 for i in range(500) if gen.event_kind(i) in ("recurring",
                                                                       "recurring_tz"))
    assert sum(1 for it in events if it["has_rrule"]) == n_recurring
    per_dir = Counter((it["coll_kind"], it["coll_name"]) for it in items)
    assert per_dir[("addressbook", "people")] == 1000
    assert per_dir[("calendar", "work")] == 700
    assert per_dir[("calendar", "todo")] == 40
    assert len(ks.item_files(ACCOUNT, "calendar", "work")) == 700


def _modify(data, old, new):
    assert old in data, (old, data[:200])
    return data.replace(old, new, 1)


@pytest.mark.all_servers
def test_remote_add_modify_delete(server, ks):
    (book, work, todo), _ = seed(server, 30, 20, 10, 8)
    ks.add_account(ACCOUNT, server)
    ks.sync()
    checks.check_mirror(ks, server, ACCOUNT)
    rows0 = {servers.href_path(it["href"]): it for it in ks.items(ACCOUNT)}
    files0 = ks.files()

    cbook, cwork = server.contents(book), server.contents(work)
    book_hrefs, work_hrefs = sorted(cbook), sorted(cwork)
    modified = {}
    for href in book_hrefs[:2]:
        etag, data = cbook[href]
        modified[href] = server.put(href, _modify(data, b"\r\nFN:", b"\r\nFN:Dr. "),
                                    if_match=etag)
    ev = next(h for h in work_hrefs if b"BEGIN:VEVENT" in cwork[h][1])
    task = next(h for h in work_hrefs if b"STATUS:NEEDS-ACTION" in cwork[h][1])
    modified[ev] = server.put(ev, _modify(cwork[ev][1], b"\r\nSUMMARY:", b"\r\nSUMMARY:Neu: "),
                              if_match=cwork[ev][0])
    modified[task] = server.put(task, _modify(cwork[task][1], b"STATUS:NEEDS-ACTION",
                                              b"STATUS:COMPLETED"), if_match=cwork[task][0])
    deleted = [book_hrefs[-1], book_hrefs[-2],
               next(h for h in reversed(work_hrefs) if h not in modified)]
    for href in deleted:
        server.delete(href)
    added = {}
    for name, data in gen.contacts(2, seed=5).items():
        added[book + name + ".vcf"] = data
    # A server-chosen href that is not the UID, and a UID that is no safe file name.
    name, data = next(iter(gen.contacts(1, seed=6).items()))
    added[book + "server-chosen-1.vcf"] = data
    weird = "Ünïcode uid/with spaces:and+more"
    _, data = next(iter(gen.contacts(1, seed=7).items()))
    added[book + "weird-1.vcf"] = re.sub(rb"\r\nUID:[^\r]*", b"\r\nUID:" + weird.encode(), data)
    recurring = list(gen.events(4, seed=7).items())[3]
    assert b"RECURRENCE-ID" in recurring[1]
    added[work + recurring[0] + ".ics"] = recurring[1]
    for href, data in added.items():
        server.put(href, data, if_none_match="*")

    c0 = server.request_count()
    ks.sync()
    c1 = server.request_count()

    mirrored = checks.check_mirror(ks, server, ACCOUNT)
    assert set(mirrored) == set(server.collections())
    checks.check_tree_hygiene(ks)
    rows1 = {servers.href_path(it["href"]): it for it in ks.items(ACCOUNT)}
    for href in deleted:
        assert href not in rows1
        assert not (ks.collection_dir(ACCOUNT, rows0[href]["coll_kind"],
                                      rows0[href]["coll_name"]) / rows0[href]["filename"]).exists()
    for href, etag in modified.items():
        assert rows1[href]["etag"] == etag
        assert rows1[href]["filename"] == rows0[href]["filename"], "a file must keep its name"
    assert rows1[task]["status"] == "COMPLETED"
    assert rows1[ev]["summary"].startswith("Neu: ")
    assert rows1[book + "server-chosen-1.vcf"]["filename"].rsplit("/", 1)[-1] == name + ".vcf"
    weird_row = rows1[book + "weird-1.vcf"]
    assert weird_row["uid"] == weird
    assert checks.SAFE_FILE.match(weird_row["filename"].rsplit("/", 1)[-1])
    assert rows1[work + recurring[0] + ".ics"]["has_rrule"]

    # Untouched items and the untouched task list were not rewritten.
    files1 = ks.files()
    untouched = [h for h in rows0 if h not in modified and h not in deleted]
    assert untouched
    for href in untouched:
        it = rows0[href]
        rel = "%s/%s/%s/%s" % ("contacts" if it["coll_kind"] == "addressbook" else "calendars",
                               ACCOUNT, it["coll_name"], it["filename"].rsplit("/", 1)[-1])
        assert files1[rel] == files0[rel], "%s was rewritten" % rel
    todo_dir = "calendars/%s/todo/" % ACCOUNT
    assert {k: v for k, v in files1.items() if k.startswith(todo_dir)} == \
        {k: v for k, v in files0.items() if k.startswith(todo_dir)}

    # One listing per home set, plus a sync-collection and a multiget per changed collection
    # (SabreDAV 1.8, without sync-collection: a PROPFIND Depth 1 and a multiget); the limit
    # also allows one request per collection instead of the home listings.
    collections = len(server.collections())
    changed_collections = 2
    limit = collections + changed_collections * (2 if server.kind == "sabredav" else 1)
    assert c1 - c0 <= limit, "re-sync after changes made %d requests (limit %d): %s" % (
        c1 - c0, limit, requests_between(server, c0, c1))


@pytest.mark.all_servers
def test_no_change_resync(server, ks):
    seed(server, 40, 30, 15, 6)
    ks.add_account(ACCOUNT, server)
    ks.sync()
    checks.check_mirror(ks, server, ACCOUNT)
    assert len(server.home_sets) == HOME_SETS[server.kind]

    # Later runs list each home set: its tokens say that no collection changed.
    want = checks.quiet_requests(server)
    assert want == server.home_sets
    for attempt in range(2):
        before = checks.snapshot(ks)
        c0 = server.request_count()
        r = ks.sync()
        c1 = server.request_count()
        after = checks.snapshot(ks)
        assert sorted(requests_between(server, c0, c1)) == want, (
            "no-change re-sync #%d made %d requests, want %s: %s"
            % (attempt + 1, c1 - c0, want, requests_between(server, c0, c1)))
        checks.check_unchanged(before, after)
        assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr


@pytest.mark.all_servers
def test_readers_show_server_items(server, ks):
    (book, work, todo), _ = seed(server, 60, 40, 20, 10)
    ks.add_account(ACCOUNT, server)
    ks.sync()
    ks.configure_readers(ACCOUNT)

    cards = {}
    events = {}
    todos = []
    lists = {h: c["displayname"] for h, c in server.collections().items()}
    for href, col in server.collections().items():
        for ihref, (_, data) in server.contents(href).items():
            uid = gen.unescape(gen.prop(data, "UID"))
            kind = checks.item_kind(data) if col["kind"] == "calendar" else "VCARD"
            if kind == "VCARD":
                cards[uid] = gen.unescape(gen.prop(data, "FN"))
            elif kind == "VEVENT":
                events[uid] = data
            else:
                todos.append((lists[href], gen.unescape(gen.prop(data, "SUMMARY", "VTODO")),
                              gen.prop(data, "STATUS", "VTODO") in ("COMPLETED", "CANCELLED")))
    assert len(cards) == 60 and len(events) == 40 and len(todos) == 30

    listed, _ = ks.khard_list()
    assert sorted(u for u, _, _ in listed) == sorted(cards)
    assert {u: n for u, n, _ in listed} == cards

    occ, _ = ks.khal_list()
    assert {u for u, _, _ in occ} == set(events)
    titles = {t for _, t, _ in occ}
    for uid, data in events.items():
        for comp, props in gen.components(data):
            if comp == "VEVENT":
                summary = [v for p, _, v in props if p == "SUMMARY"][0]
                assert gen.unescape(summary) in titles, (uid, summary)
    assert {c for _, _, c in occ} == {"work_%d" % i for i, d in enumerate(
        ks.reader_dirs(ACCOUNT)[1]) if d.name == "work"}
    per_uid = Counter(u for u, _, _ in occ)
    expect = {"timed": 1, "allday": 1, "allday_multi": 3, "recurring": 7}
    names = list(gen.events(40))
    for i, uid in enumerate(names):
        if gen.event_kind(i) in expect:
            assert per_uid[uid] == expect[gen.event_kind(i)], (gen.event_kind(i), uid)

    tasks, _ = ks.todoman_list()
    assert Counter((t["list"], t["summary"], t["completed"]) for t in tasks) == Counter(todos)
    assert Counter(t["list"] for t in tasks) == {lists[work]: 20, lists[todo]: 10}


def test_unreachable_server_fails_only_its_account(radicale, ks):
    book = radicale.make_addressbook("people", "People")
    radicale.seed(book, gen.contacts(5))
    ks.add_account("good", radicale)
    ks.add_account("dead", radicale, url="http://127.0.0.1:%d/" % servers.free_port())
    r = ks.run(timeout=120)
    assert r.rc == 1, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    assert checks.failure_lines(r.stderr, "dead"), \
        "no 'dead/...: ...' line on stderr:\n%s" % r.stderr
    assert not [line for line in r.stderr.splitlines() if line.startswith("good")], r.stderr
    checks.check_mirror(ks, radicale, "good")


def test_wrong_password_is_reported(radicale, ks):
    radicale.make_addressbook("people", "People")
    wrong = "wrong-Pässword-%d" % servers.free_port()
    ks.add_account(ACCOUNT, radicale, password=wrong)
    r = ks.run(timeout=120)
    assert r.rc == 1, "rc %d\nstderr:\n%s" % (r.rc, r.stderr)
    lines = checks.failure_lines(r.stderr, ACCOUNT)
    assert lines, "no '%s/...: ...' line on stderr:\n%s" % (ACCOUNT, r.stderr)
    assert any(re.search(r"authenticat", line, re.I) for line in lines), r.stderr
    for secret in (wrong, radicale.password):
        assert secret not in r.stderr and secret not in r.stdout, "password leaked"


def test_config_option_account_argument_password_command(radicale, ks):
    book = radicale.make_addressbook("people", "People")
    radicale.seed(book, gen.contacts(4))
    ks.add_account("first", radicale, password_via="command")
    ks.add_account("second", radicale)
    alt = ks.root / "alt.conf"
    alt.write_text(ks.config_text(), encoding="utf-8")
    alt.chmod(0o600)
    ks.config_path.unlink()

    ks.sync("second", config=alt)
    assert {r["account"] for r in ks.collections()} == {"second"}
    assert not ks.contacts_dir("first").exists()
    checks.check_mirror(ks, radicale, "second")

    ks.sync(config=alt)
    assert {r["account"] for r in ks.collections()} == {"first", "second"}
    checks.check_mirror(ks, radicale, "first")
    checks.check_tree_hygiene(ks)


@pytest.mark.all_servers
def test_collections_come_and_go(server, ks):
    """New collections appear at the next listing of the home sets (every run where the
    listings carry the tokens, as on all four servers; otherwise with --force and at least
    hourly); a collection deleted on the server goes away once allowed."""
    (book, work, todo), _ = seed(server, 5, 5, 3, 2)
    ks.add_account(ACCOUNT, server)
    ks.sync()
    names = {c["href"] for c in ks.collections(ACCOUNT)}
    assert book in names and work in names

    extra = server.make_calendar("extra", "Extra")
    server.seed(extra, gen.events(3, seed=9))
    r = ks.sync()
    assert extra in {c["href"] for c in ks.collections(ACCOUNT)}, r.stderr
    extra_dir = ks.collection_dir(ACCOUNT, "calendar", "extra")
    assert len(list(extra_dir.glob("*.ics"))) == 3

    # Deleted on the server with items in it: kept here until the user says it may go (the
    # mass-deletion guard), then removed.
    server.delete(extra)
    r = ks.run()
    assert r.rc != 0 and "no longer has this collection" in r.stderr, r.stderr
    assert len(list(extra_dir.glob("*.ics"))) == 3
    r = ks.sync("--allow-mass-delete")
    assert "it was removed here with its 3 items" in r.stderr, r.stderr
    assert extra not in {c["href"] for c in ks.collections(ACCOUNT)}
    assert not extra_dir.exists()
