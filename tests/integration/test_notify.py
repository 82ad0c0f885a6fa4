"""Problems told without polling (issue 14): a desktop notification (a notification service of
our own on the test's private bus) and ksyncd's Alert signal for a conflict, an item the server
keeps refusing, a mass-deletion stop and refused credentials, once per account and cause."""

import pytest

from ksynctest.daemon import account_status, synced_ok, wait_until
from ksynctest.faults import card, event, write_file
from ksynctest.notifications import Notifications

ACCOUNT = "acct"


@pytest.fixture
def notes(daemon, tmp_path):
    n = Notifications(daemon.env(), tmp_path / "notifications.jsonl")
    try:
        yield n
    finally:
        n.stop()


def of_kind(entries, words):
    return [e for e in entries if words in e["summary"]]


def start(server, ks, daemon, n_cards=12):
    book = server.make_addressbook("people", "People")
    for i in range(n_cards):
        server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
    cal = server.make_calendar("work", "Work", components=("VEVENT",))
    keys = ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    return book, cal, keys


def conflict(server, ks, daemon, book, uid, n):
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    href = [h for h in server.list(book) if h.endswith(uid + ".vcf")][0]
    server.put(href, card(uid, "Person", note="server %d" % n))
    write_file(d / (uid + ".vcf"), card(uid, "Person", note="local %d" % n))


def test_each_problem_is_told_once(radicale, ks, daemon, notes):
    book, cal, keys = start(radicale, ks, daemon)
    cal_dir = ks.collection_dir(ACCOUNT, "calendar", "work")

    # A conflict.
    conflict(radicale, ks, daemon, book, "c1", 1)
    got = wait_until(lambda: of_kind(notes.calls(), ": conflict"), 30, "the notification")
    assert got[0]["summary"] == "ksync: %s/contacts/people: conflict" % ACCOUNT, got
    assert "conflict in 'c1.vcf'" in got[0]["body"] and "ksyncctl conflicts" in got[0]["body"]
    assert got[0]["app"] == "ksync"
    alerts = wait_until(lambda: [a for a in notes.alerts() if a["kind"] == "conflict"], 10,
                        "the Alert signal")
    assert alerts[0]["account"] == ACCOUNT and alerts[0]["collection"] == "contacts/people"

    # An item the server refuses, in this run and the next ones: told once.
    bad = event("bad", "Both").replace(b"DTEND:20240610T100000Z\r\n",
                                       b"DTEND:20240610T100000Z\r\nDURATION:PT1H\r\n")
    write_file(cal_dir / "bad.ics", bad)
    got = wait_until(lambda: of_kind(notes.calls(), "refused by the server"), 30,
                     "the refusal's notification")
    assert "bad.ics" in got[0]["body"] and "DTEND and DURATION" in got[0]["body"], got
    for i in range(2):
        write_file(cal_dir / ("good%d.ics" % i), event("good%d" % i, "Good"))
        wait_until(lambda: any(h.endswith("good%d.ics" % i) for h in radicale.list(cal)), 30,
                   "the next event on the server")
        r = daemon.ctl("sync", ACCOUNT)
    assert len(of_kind(notes.calls(), "refused by the server")) == 1, notes.calls()
    assert len(of_kind(notes.calls(), ": conflict")) == 1, notes.calls()

    # Most of the address book deleted on the server: the guard stops it, told once.
    for i in range(2, 12):
        radicale.delete(book + "c%d.vcf" % i)
    for _ in range(2):
        r = daemon.ctl("sync", ACCOUNT)
        assert r.rc != 0
    got = of_kind(notes.calls(), "stopped before deleting")
    assert len(got) == 1, notes.calls()
    assert got[0]["summary"] == "ksync: %s/contacts/people: stopped before deleting" % ACCOUNT
    assert "--allow-mass-delete" in got[0]["body"] and got[0]["urgency"] == 2, got

    # Credentials refused: told once, however many local edits follow.
    with open(keys["password_file"], "w") as f:
        f.write("no-longer-the-password\n")
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    write_file(d / "e1.vcf", card("e1", "Edit One"))
    wait_until(lambda: account_status(daemon)["state"] == "stopped", 60, "the account to stop")
    got = wait_until(lambda: of_kind(notes.calls(), "credentials refused"), 10,
                     "the notification")
    assert "application password" in got[0]["body"], got
    write_file(d / "e2.vcf", card("e2", "Edit Two"))
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc != 0
    assert len(of_kind(notes.calls(), "credentials refused")) == 1, notes.calls()
    kinds = sorted({a["kind"] for a in notes.alerts() if a["what"] == "Alert"})
    assert kinds == ["conflict", "credentials", "mass-deletion", "refused"], notes.alerts()


def both_ends(uid):
    """An event the servers refuse: DTEND and DURATION together."""
    return event(uid, "Both").replace(b"DTEND:20240610T100000Z\r\n",
                                      b"DTEND:20240610T100000Z\r\nDURATION:PT1H\r\n")


def test_a_refused_item_is_known_by_its_file(radicale, ks, daemon, notes):
    """A refusal is told once per file, and the file is the one the run names, whatever the
    message around its quoted name: two files whose names hold the message's own quote and
    colon are two refusals, each news when it comes."""
    start(radicale, ks, daemon, n_cards=1)
    cal_dir = ks.collection_dir(ACCOUNT, "calendar", "work")
    write_file(cal_dir / "x': one.ics", both_ends("x1"))
    got = wait_until(lambda: of_kind(notes.calls(), "refused by the server"), 30,
                     "the first refusal's notification")
    assert "x': one.ics" in got[0]["body"], got
    write_file(cal_dir / "x': two.ics", both_ends("x2"))
    got = wait_until(lambda: len(of_kind(notes.calls(), "refused by the server")) == 2 and
                     of_kind(notes.calls(), "refused by the server"), 30,
                     "the second refusal's notification")
    assert "x': two.ics" in got[1]["body"], got
    daemon.ctl("sync", ACCOUNT)
    assert len(of_kind(notes.calls(), "refused by the server")) == 2, notes.calls()


def test_notifications_off_keeps_the_signal(server, ks, daemon, notes):
    ks.extra_config = "[general]\nnotifications = no\n"
    book, cal, keys = start(server, ks, daemon, n_cards=3)
    conflict(server, ks, daemon, book, "c1", 1)
    wait_until(lambda: [a for a in notes.alerts() if a["kind"] == "conflict"], 30,
               "the Alert signal")
    assert notes.calls() == []


def test_a_cause_that_went_away_is_told_again(server, ks, daemon, notes):
    """Once a run over the whole account no longer meets a cause, the next time it comes
    back is news again (and AlertCleared said it went)."""
    book, cal, keys = start(server, ks, daemon, n_cards=12)
    for i in range(0, 10):
        server.delete(book + "c%d.vcf" % i)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc != 0
    r = daemon.ctl("sync", "--allow-mass-delete", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    wait_until(lambda: [a for a in notes.alerts() if a["what"] == "AlertCleared"], 10,
               "AlertCleared")
    assert len(of_kind(notes.calls(), "stopped before deleting")) == 1
    for i in range(12, 24):
        server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    for i in range(12, 24):
        server.delete(book + "c%d.vcf" % i)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc != 0
    wait_until(lambda: len(of_kind(notes.calls(), "stopped before deleting")) == 2, 10,
               "the second notification")
