"""Collections from the command line (issue 14): a name that exists is refused, collections
are renamed and deleted on the server and then here, and `ksyncctl clients` gives readers'
settings that work as pasted."""

import json

from ksynctest import gen
from ksynctest.daemon import account_status, synced_ok, wait_until

ACCOUNT = "acct"


def by_name(server):
    return {c["displayname"]: h for h, c in server.collections().items()}


def start(server, ks, daemon):
    book = server.make_addressbook("people", "People")
    server.seed(book, gen.contacts(3))
    cal = server.make_calendar("work", "Work", components=("VEVENT",))
    server.seed(cal, gen.events(3))
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    return book, cal


def test_a_name_that_exists_is_refused(server, ks, daemon):
    start(server, ks, daemon)
    r = daemon.ctl("add-calendar", ACCOUNT, "Chores", "--tasks")
    assert r.rc == 0, r.stdout + r.stderr
    r = daemon.ctl("add-calendar", ACCOUNT, "chores", "--tasks")
    assert r.rc != 0
    assert "a calendar called 'Chores' exists already" in r.stderr, r.stderr
    assert [c["displayname"] for c in server.collections().values()].count("Chores") == 1
    r = daemon.ctl("add-addressbook", ACCOUNT, "People")
    assert r.rc != 0 and "an address book called 'People' exists already" in r.stderr


def test_rename_collection(server, ks, daemon):
    book, cal = start(server, ks, daemon)
    r = daemon.ctl("add-addressbook", ACCOUNT, "Family")
    assert r.rc == 0, r.stdout + r.stderr
    r = daemon.ctl("rename-collection", ACCOUNT + "/contacts/people", "Friends")
    assert r.rc == 0, r.stdout + r.stderr
    assert "Renamed %s/contacts/people to 'Friends'." % ACCOUNT in r.stdout, r.stdout
    assert server.collections()[book]["displayname"] == "Friends"
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    assert (d / "displayname").read_text().strip() == "Friends"
    cols = {c["path"]: c for c in account_status(daemon)["collections"]}
    assert cols["contacts/people"]["displayname"] == "Friends", cols
    r = daemon.ctl("rename-collection", ACCOUNT + "/people", "family")
    assert r.rc != 0 and "an address book called 'Family' exists already" in r.stderr, r
    r = daemon.ctl("rename-collection", ACCOUNT + "/contacts/nobody", "X")
    assert r.rc != 0 and "has no collection 'contacts/nobody'" in r.stderr, r.stderr


def test_delete_collection_asks_for_the_mass_deletion_confirmation(server, ks, daemon):
    book, cal = start(server, ks, daemon)
    d = ks.collection_dir(ACCOUNT, "calendar", "work")
    r = daemon.ctl("delete-collection", ACCOUNT + "/calendars/work")
    assert r.rc != 0
    assert "holds 3 items" in r.stderr and "--allow-mass-delete" in r.stderr, r.stderr
    assert cal in server.collections() and d.is_dir()
    r = daemon.ctl("delete-collection", "--allow-mass-delete", ACCOUNT + "/calendars/work")
    assert r.rc == 0, r.stdout + r.stderr
    assert "Deleted %s/calendars/work (3 items) on the server." % ACCOUNT in r.stdout
    assert "Removed it here too." in r.stdout, r.stdout
    assert cal not in server.collections()
    assert not d.exists()
    assert "calendars/work" not in [c["path"] for c in account_status(daemon)["collections"]]
    # A collection of one item needs no confirmation.
    r = daemon.ctl("add-addressbook", ACCOUNT, "Few")
    assert r.rc == 0, r.stdout + r.stderr
    href = by_name(server)["Few"]
    server.put(href + "one.vcf", b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:one\r\nFN:One\r\n"
                                 b"N:One;;;;\r\nEND:VCARD\r\n")
    r = daemon.ctl("sync", ACCOUNT)
    path = [c["path"] for c in account_status(daemon)["collections"]
            if c["displayname"] == "Few"][0]
    r = daemon.ctl("delete-collection", "%s/%s" % (ACCOUNT, path))
    assert r.rc == 0, r.stdout + r.stderr
    assert href not in server.collections()


def test_clients_config_works_as_pasted(server, ks, daemon):
    """The settings `ksyncctl clients` prints, pasted into the readers' files: khal's default
    is a calendar of events, todoman's a task list, and dates given as the comments say are
    taken whatever the locale."""
    import re
    import subprocess

    from ksynctest.ksync import KHAL, TODOMAN

    book, cal = start(server, ks, daemon)
    r = daemon.ctl("add-calendar", ACCOUNT, "Chores", "--tasks")
    assert r.rc == 0, r.stdout + r.stderr
    r = daemon.ctl("clients")
    assert r.rc == 0, r.stderr
    parts = {}
    for m in re.finditer(r"^# (khal|khard|todoman): (\S+)\n((?:(?!# (?:khal|khard|todoman): )"
                         r".*\n?)*)", r.stdout, re.M):
        parts[m.group(1)] = (m.group(2), m.group(3))
    assert set(parts) == {"khal", "khard", "todoman"}, r.stdout
    for reader, (where, text) in parts.items():
        path = ks.home / where.replace("~/", "")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    khal, todoman = parts["khal"][1], parts["todoman"][1]
    if server.kind == "radicale":
        # Radicale keeps the component sets (Xandikos gives every calendar every kind):
        # each reader gets a default of its own kind.
        assert "default_calendar = Work" in khal, khal
        assert 'default_list = "Chores"' in todoman, todoman
    assert re.search(r"^default_calendar = ", khal, re.M), khal
    assert re.search(r"^default_list = ", todoman, re.M), todoman

    def run(argv):
        p = subprocess.run(argv, env=ks.env(), cwd=ks.home, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (argv, p.stdout, p.stderr)
        return p

    run([KHAL, "new", "2026-03-02", "10:00", "11:00", "Pasted event"])
    run([TODOMAN, "new", "--due", "2026-03-02 10:00", "Pasted task"])
    listed = run([KHAL, "list", "2026-03-02", "1d"]).stdout
    assert "Pasted event" in listed, listed
    tasks = json.loads(run([TODOMAN, "--porcelain", "list"]).stdout)
    assert [t["summary"] for t in tasks] == ["Pasted task"], tasks
    # Both reach the server through the service, like any local edit.
    def on_server(text):
        return any(text in server.get(h) for c, info in server.collections().items()
                   if info["kind"] == "calendar" for h in server.list(c))
    wait_until(lambda: on_server(b"Pasted event"), 30, "the event on the server")
    wait_until(lambda: on_server(b"Pasted task"), 30, "the task on the server")
