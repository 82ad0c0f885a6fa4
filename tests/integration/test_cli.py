"""ksyncctl's habits (issue 14): --json wherever there is an answer, -V, -v, sync --dry-run,
exit statuses that tell usage, configuration, authentication and network failures apart,
and usage errors that name ksyncctl and point at --help."""

import json
import os
import re

from ksynctest import checks, servers
from ksynctest.daemon import synced_ok, wait_until
from ksynctest.faults import card, write_file

ACCOUNT = "acct"


def start(server, ks, daemon, n=3):
    book = server.make_addressbook("people", "People")
    for i in range(n):
        server.put(book + "c%d.vcf" % i, card("c%d" % i, "Person %d" % i))
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    return book


def test_json_wherever_there_is_an_answer(radicale, ks, daemon):
    start(radicale, ks, daemon)
    r = daemon.ctl("account", "list", "--json")
    assert r.rc == 0, r.stderr
    a = json.loads(r.stdout)["accounts"][0]
    assert a["name"] == ACCOUNT and a["state"] == "idle" and a["collections"] >= 1, a
    r = daemon.ctl("--json", "sync", ACCOUNT)
    assert r.rc == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] is True and got["accounts"][0]["account"] == ACCOUNT, got
    paths = [c["path"] for c in got["accounts"][0]["result"]["collections"]]
    assert "contacts/people" in paths, got
    r = daemon.ctl("clients", "--json")
    assert r.rc == 0 and set(json.loads(r.stdout)) == {"khal", "khard", "todoman"}, r
    r = daemon.ctl("--json", "conflicts")
    assert r.rc == 0 and json.loads(r.stdout) == {"conflicts": []}, r
    r = daemon.ctl("--json", "reload")
    assert r.rc == 2, r
    assert "reload prints no JSON; --json goes with status, sync, collections, account " \
        "list, clients, conflicts and duplicates." in r.stderr, r.stderr


def test_usage_errors_and_version(ks, daemon):
    r = daemon.ctl("--bogus")
    assert r.rc == 2
    assert r.stderr.startswith("ksyncctl: unrecognized option '--bogus'\n"), r.stderr
    assert "see 'ksyncctl --help'" in r.stderr and "/ksyncctl" not in r.stderr, r.stderr
    r = daemon.ctl("sync", "--bogus")
    assert r.rc == 2
    assert r.stderr.startswith("ksyncctl sync: unrecognized option '--bogus'\n"), r.stderr
    assert "see 'ksyncctl sync --help'" in r.stderr, r.stderr
    r = daemon.ctl("frobnicate")
    assert r.rc == 2 and "Unknown verb 'frobnicate'" in r.stderr, r
    r = daemon.ctl("add-calendar", ACCOUNT)
    assert r.rc == 2, r
    for flag in ("-V", "--version"):
        r = daemon.ctl(flag)
        assert r.rc == 0 and re.match(r"ksyncctl \S+ \(D-Bus interface io\.ksync\.Sync1 "
                                      r"version \d+\)\n$", r.stdout), r


def test_exit_status_tells_the_failure_apart(radicale, ks, daemon):
    start(radicale, ks, daemon)
    # Configuration: an account ksync.conf does not have.
    r = daemon.ctl("sync", "nosuch")
    assert r.rc == 3, r
    # Network: the server is not there.
    port = servers.free_port()
    ks.accounts["down"] = {"url": "http://127.0.0.1:%d/" % port, "username": "u"}
    ks.write_config()
    assert daemon.ctl("reload").rc == 0
    r = daemon.ctl("sync", "down")
    assert r.rc == 5, r
    # Authentication: the password is refused.
    with open(ks.accounts[ACCOUNT]["password_file"], "w") as f:
        f.write("not-the-password\n")
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 4, r
    assert "application password" in r.stdout + r.stderr, r
    # ... or cannot be read.
    os.chmod(ks.accounts[ACCOUNT]["password_file"], 0o644)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 4, r
    # A failure of another kind: 1.
    os.chmod(ks.accounts[ACCOUNT]["password_file"], 0o600)
    with open(ks.accounts[ACCOUNT]["password_file"], "w") as f:
        f.write(radicale.password + "\n")
    del ks.accounts["down"]
    ks.write_config()
    assert daemon.ctl("reload").rc == 0
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r


def test_verbose(server, ks, daemon):
    start(server, ks, daemon)
    r = daemon.ctl("-v", "status")
    assert r.rc == 0, r.stderr
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    assert "  contacts/people: %s\n" % d in r.stdout, r.stdout
    assert "/people/, last run " in r.stdout, r.stdout
    r = daemon.ctl("-v", "sync", ACCOUNT)
    assert r.rc == 0, r.stderr
    assert "%s: syncing" % ACCOUNT in r.stderr, r.stderr
    r = daemon.ctl("status")
    assert "last run" not in r.stdout


def test_dry_run_changes_nothing(server, ks, daemon):
    """ksyncctl sync --dry-run says what the server's changes would bring; ksyncd --once
    --dry-run also what the local ones would send; neither changes a file, a row or the
    server."""
    book = start(server, ks, daemon, n=4)
    server.put(book + "new.vcf", card("new", "New One"))
    href = [h for h in server.list(book) if h.endswith("c1.vcf")][0]
    server.put(href, card("c1", "Person 1", note="changed"))
    server.delete([h for h in server.list(book) if h.endswith("c2.vcf")][0])
    before, listing = checks.snapshot(ks), server.list(book)
    r = daemon.ctl("sync", "--dry-run", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert "%s/contacts/people: would fetch 1 new, 1 changed, delete 1 here\n" % ACCOUNT \
        in r.stdout, r.stdout
    assert "    new: new.vcf\n" in r.stdout and "    changed: c1.vcf\n" in r.stdout
    assert "    delete here: c2.vcf\n" in r.stdout, r.stdout
    r = daemon.ctl("--json", "sync", "--dry-run", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stderr
    c = json.loads(r.stdout)["accounts"][0]["collections"]
    assert [(x["path"], x["fetch_new"], x["fetch_changed"], x["delete_here"]) for x in c] \
        == [("contacts/people", 1, 1, 1)], c
    checks.check_unchanged(before, checks.snapshot(ks))
    assert server.list(book) == listing

    # The local side, without a service that would send it at once.
    daemon.stop_service()
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    write_file(d / "mine.vcf", card("mine", "Mine"))
    write_file(d / "c0.vcf", card("c0", "Person 0", note="edited here"))
    (d / "c3.vcf").unlink()
    before = checks.snapshot(ks)
    r = ks.run("--dry-run")
    assert r.rc == 0, r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith(ACCOUNT + "/contacts/people:")]
    assert line == ["%s/contacts/people: would fetch 1 new, 1 changed, delete 1 here; would "
                    "send 2, delete 1 on the server" % ACCOUNT], r.stdout
    assert "    send: c0.vcf, mine.vcf\n" in r.stdout or "    send: mine.vcf, c0.vcf\n" \
        in r.stdout, r.stdout
    assert "    delete on the server: c3.vcf\n" in r.stdout, r.stdout
    checks.check_unchanged(before, checks.snapshot(ks))
    assert server.list(book) == listing

