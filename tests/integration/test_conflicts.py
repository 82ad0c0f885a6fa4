"""`ksyncctl conflicts`: the conflicts that kept a copy, listed, and resolved through the
engine like any edit (issue 14)."""

import json
import re

from ksynctest.daemon import synced_ok, wait_until
from ksynctest.faults import card, server_uids, uid_of, write_file

ACCOUNT = "acct"


def conflicts(d):
    r = d.ctl("conflicts", "--json")
    assert r.rc == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["conflicts"]


def sync_people(server, ks, daemon):
    book = server.make_addressbook("people", "People")
    for i in range(3):
        server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    return book, ks.collection_dir(ACCOUNT, "addressbook", "people")


def make_conflict(server, book, d, daemon, uid, n):
    """Both sides change the NOTE of one card: the server's version wins (the default), the
    local one is kept as a copy."""
    href = [h for h in server.list(book) if h.endswith(uid + ".vcf")][0]
    server.put(href, card(uid, "Person", note="server %d" % n))
    write_file(d / (uid + ".vcf"), card(uid, "Person", note="local %d" % n))
    return wait_until(lambda: [c for c in conflicts(daemon) if c["uid"] == uid], 30,
                      "the conflict")[0]


def test_list_and_resolve_keeping_each_side(server, ks, daemon):
    book, d = sync_people(server, ks, daemon)
    c = make_conflict(server, book, d, daemon, "c1", 1)
    item = "%s/contacts/people/c1.vcf" % ACCOUNT
    assert c["winner"] == "server" and c["path"] == str(d / "c1.vcf"), c
    assert b"NOTE:server 1" in (d / "c1.vcf").read_bytes()
    r = daemon.ctl("conflicts")
    assert r.rc == 0, r.stderr
    assert item in r.stdout and "holds the server version" in r.stdout, r.stdout
    assert "(the local version)" in r.stdout and c["kept"] in r.stdout, r.stdout

    # The local version wins after all: into the file, then to the server by a sync.
    r = daemon.ctl("conflicts", "resolve", item, "--keep", "local")
    assert r.rc == 0, r.stdout + r.stderr
    assert "Kept the local version of %s" % item in r.stdout, r.stdout
    assert "Sent to the server." in r.stdout, r.stdout
    assert b"NOTE:local 1" in (d / "c1.vcf").read_bytes()
    assert b"NOTE:local 1" in server_uids(server, book)["c1"]
    assert conflicts(daemon) == []
    assert not (ks.data_dir / c["kept"]).exists()

    # The server's version, which the file holds: only the copy goes.
    c = make_conflict(server, book, d, daemon, "c2", 2)
    before = (d / "c2.vcf").read_bytes()
    r = daemon.ctl("conflicts", "resolve", str(c["id"]), "--keep", "server")
    assert r.rc == 0, r.stdout + r.stderr
    assert (d / "c2.vcf").read_bytes() == before
    assert b"NOTE:server 2" in server_uids(server, book)["c2"]
    assert conflicts(daemon) == []


def test_resolve_keeping_both_makes_a_new_item(server, ks, daemon):
    book, d = sync_people(server, ks, daemon)
    make_conflict(server, book, d, daemon, "c0", 1)
    r = daemon.ctl("conflicts", "resolve", "--json", "%s/people/c0.vcf" % ACCOUNT,
                   "--keep", "both")
    assert r.rc == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)
    assert got["kept"] == "both" and got["synced"] is True, got
    new_file = got["new_file"]
    assert new_file and new_file != "c0.vcf", got
    local = (d / new_file).read_bytes()
    new_uid = uid_of(local)
    assert new_uid and new_uid != "c0" and b"NOTE:local 1" in local, local
    assert b"NOTE:server 1" in (d / "c0.vcf").read_bytes()
    on_server = server_uids(server, book)
    assert b"NOTE:server 1" in on_server["c0"], on_server
    assert b"NOTE:local 1" in on_server[new_uid], on_server
    assert conflicts(daemon) == []
    # Nothing left to send, nothing pending.
    a = wait_until(lambda: synced_ok(daemon), 30, "an ok sync")
    people = [x for x in a["collections"] if x["path"] == "contacts/people"][0]
    assert people["pending"] == 0, people


def test_resolve_refusals(server, ks, daemon):
    book, d = sync_people(server, ks, daemon)
    r = daemon.ctl("conflicts", "resolve", "nothing/here.vcf", "--keep", "local")
    assert r.rc != 0 and "no open conflict 'nothing/here.vcf'" in r.stderr, r.stderr
    r = daemon.ctl("conflicts", "resolve", "1")
    assert r.rc != 0 and re.search(r"--keep local, --keep server or --keep both", r.stderr)
    r = daemon.ctl("conflicts", "resolve", "1", "--keep", "mine")
    assert r.rc != 0 and "not 'mine'" in r.stderr, r.stderr
