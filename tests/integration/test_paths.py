"""Collections kept where the user's readers look (calendars_path, contacts_path, path =),
and a tree vdirsyncer wrote taken over by `ksyncctl account add --adopt` with no item
doubled on either side."""

import os
import re
import subprocess

import pytest

from ksynctest import gen
from ksynctest.daemon import wait_until
from ksynctest.faults import describe

ACCOUNT = "acct"
VDIRSYNCER = "/usr/bin/vdirsyncer"


def uids(files):
    """[UID] of {name: bytes}, one per file (its first UID line)."""
    out = []
    for data in files.values():
        m = re.search(rb"^UID:(.*?)\r?$", data, re.M)
        assert m, data[:200]
        out.append(m.group(1).decode())
    return out


def item_files(d, ext):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.name.endswith(ext)}


def server_uids(server, href):
    return sorted(uids({h: server.get(h) for h in server.list(href)}))


def run_vdirsyncer(ks, server, root, *verbs):
    """vdirsyncer with calendars in root/.calendars and address books in root/.contacts,
    collections named as on the server, display names and colors synced into files."""
    status = root / "vdirsyncer-status"
    status.mkdir(exist_ok=True)
    cfg = ['[general]\nstatus_path = "%s/"\n' % status]
    for kind, dav, ext, local, meta in (
            ("cal", "caldav", ".ics", ".calendars", '"displayname", "color"'),
            ("card", "carddav", ".vcf", ".contacts", '"displayname"')):
        cfg.append('[pair %s]\na = "%s_remote"\nb = "%s_local"\ncollections = ["from a"]\n'
                   'metadata = [%s]\n' % (kind, kind, kind, meta))
        remote = ['[storage %s_remote]' % kind, 'type = "%s"' % dav, 'url = "%s"' % server.url]
        if server.username:
            remote.append('username = "%s"' % server.username)
        if server.password is not None:
            remote.append('password = "%s"' % server.password)
        cfg.append("\n".join(remote) + "\n")
        cfg.append('[storage %s_local]\ntype = "filesystem"\npath = "%s/%s/"\n'
                   'fileext = "%s"\n' % (kind, root, local, ext))
    conf = root / "vdirsyncer.conf"
    conf.write_text("\n".join(cfg))
    for verb in verbs:
        p = subprocess.run([VDIRSYNCER, "-c", str(conf), verb], env=ks.env(), cwd=ks.home,
                           input="y\n" * 50, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, "vdirsyncer %s:\n%s%s" % (verb, p.stdout, p.stderr)


def synced(daemon, name):
    import json
    r = daemon.ctl("status", "--json")
    assert r.rc == 0, r.stderr
    for a in json.loads(r.stdout)["accounts"]:
        if a["name"] == name and a["last_result"] == "ok" and a.get("last_sync"):
            return a
    return None


def test_adopt_a_vdirsyncer_tree(server, ks, daemon):
    """vdirsyncer's ~/.calendars and ~/.contacts, with an edit and a new contact it has not
    sent and one directory renamed, taken over as they are: every item stays one file and
    one item, the new contact goes up once, the edit (without a base to merge with) is kept
    as a conflict, and khal and khard read the same directories."""
    work = server.make_calendar("work", "Work", components=("VEVENT",))
    home = server.make_calendar("home", "Home", components=("VEVENT", "VTODO"))
    book = server.make_addressbook("friends", "Friends")
    server.seed(work, gen.events(6, seed=31))
    server.seed(home, dict(list(gen.events(3, seed=32).items()) +
                           list(gen.tasks(2, seed=33).items())))
    server.seed(book, gen.contacts(5, seed=34))
    run_vdirsyncer(ks, server, ks.home, "discover", "sync", "metasync")
    cals, books = ks.home / ".calendars", ks.home / ".contacts"
    assert {"home", "work"} <= {p.name for p in cals.iterdir()}
    # A directory the user named otherwise (vdirsyncer's metadata file still says Home).
    os.rename(cals / "home", cals / "personal")
    # Not synced by vdirsyncer yet: an edit and a new contact.
    name, data = sorted(item_files(cals / "work", ".ics").items())[0]
    edited = data.replace(b"SUMMARY:", b"SUMMARY:Edited before the move ", 1)
    (cals / "work" / name).write_bytes(edited)
    new_card = list(gen.contacts(1, seed=35).values())[0]
    (books / "friends" / "new-one.vcf").write_bytes(new_card)
    # A directory of the user's own that no server collection is.
    (cals / "mine").mkdir()
    (cals / "mine" / "x.ics").write_bytes(list(gen.events(1, seed=36).values())[0])
    before = {d: sorted(item_files(cals / d, ".ics")) for d in ("work", "personal")}
    before_books = sorted(item_files(books / "friends", ".vcf"))
    n_server = {h: len(server.list(h)) for h in (work, home, book)}

    daemon.start()
    pw = ks.secrets / "pw"
    pw.write_text((server.password or "unused") + "\n")
    os.chmod(pw, 0o600)
    args = ["account", "add", ACCOUNT, "--url", server.url]
    args += (["--username", server.username, "--password-file", str(pw)] if server.username
             else ["--no-password"])
    r = daemon.ctl(*args, "--adopt", str(cals), "--adopt", str(books))
    assert r.rc == 0, r.stdout + r.stderr
    assert "%s/personal (5 items) is" % cals in r.stdout, r.stdout
    assert "%s/mine (1 items): no collection" % cals in r.stdout, r.stdout
    conf = ks.config_path.read_text()
    assert "calendars_path = %s\n" % cals in conf, conf
    assert "contacts_path = %s\n" % books in conf, conf
    assert "path = calendars/home %s/personal\n" % cals in conf, conf
    wait_until(lambda: synced(daemon, ACCOUNT), 120, "the first sync of the adopted tree")

    # Nothing doubled: the server has one more item (the new contact), the files are the
    # same ones (no second file for an item), and each UID is in one file.
    assert {h: len(server.list(h)) for h in (work, home, book)} == {
        work: n_server[work], home: n_server[home], book: n_server[book] + 1}
    assert {d: sorted(item_files(cals / d, ".ics")) for d in ("work", "personal")} == before
    assert sorted(item_files(books / "friends", ".vcf")) == sorted(before_books)
    for d, ext in ((cals / "work", ".ics"), (cals / "personal", ".ics"),
                   (books / "friends", ".vcf")):
        u = uids(item_files(d, ext))
        assert len(u) == len(set(u)), (d, u)
    assert server_uids(server, work) == sorted(uids(item_files(cals / "work", ".ics")))
    assert server_uids(server, book) == sorted(uids(item_files(books / "friends", ".vcf")))
    # An edit made after vdirsyncer's last run has no base to merge with: a conflict, kept.
    kept = [p.read_bytes() for p in (ks.data_dir / "conflicts").rglob("*") if p.is_file()]
    assert any(b"Edited before the move" in k for k in kept), kept
    assert item_files(cals / "mine", ".ics"), "a directory of the user's own was touched"
    assert not (ks.data_dir / "calendars").exists() and not (ks.data_dir / "contacts").exists()

    # A second run changes nothing on either side.
    etags = {h: server.list(h) for h in (work, home, book)}
    snap = ks.files(cals)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert {h: server.list(h) for h in (work, home, book)} == etags
    assert ks.files(cals) == snap

    # khal and khard read the adopted directories as ksyncctl clients suggests them.
    ks.configure_readers(books=[books / "friends"], calendars=[cals / "work", cals / "personal"])
    events, _ = ks.khal_list()
    assert len({u for u, _, _ in events}) == 9, events
    cards, _ = ks.khard_list()
    assert len(cards) == 6, cards
    r = daemon.ctl("clients")
    assert r.rc == 0, r.stderr
    assert "path = \"%s/personal\"" % cals in r.stdout, r.stdout
    assert "path = \"%s/*\"" % cals in r.stdout, r.stdout


def test_own_paths_and_a_move(radicale, ks):
    """calendars_path and a path = line: the files are there; a changed calendars_path moves
    the directory with the same files, unless files are in the way there; then nothing is
    touched until the user puts them together."""
    work = radicale.make_calendar("work", "Work", components=("VEVENT",))
    book = radicale.make_addressbook("book", "Book")
    radicale.seed(work, gen.events(4, seed=41))
    radicale.seed(book, gen.contacts(3, seed=42))
    ks.add_account(ACCOUNT, radicale)
    cals, cals2, own = ks.home / "cals", ks.home / "elsewhere" / "deeper", ks.home / "My Book"
    ks.accounts[ACCOUNT]["calendars_path"] = str(cals)
    ks.accounts[ACCOUNT]["path"] = "contacts/book %s" % own
    ks.write_config()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert len(item_files(cals / "work", ".ics")) == 4
    assert len(item_files(own, ".vcf")) == 3
    assert not (ks.data_dir / "calendars").exists()

    # Moved in ksync.conf: ksync moves the directory itself, the same files, and changes
    # nothing on the server.
    listing = radicale.list(work)
    snap = ks.files(cals / "work")
    ks.accounts[ACCOUNT]["calendars_path"] = str(cals2)
    ks.write_config()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert "moved its directory from '%s/work' to '%s/work'" % (cals, cals2) in r.stderr, \
        describe(r)
    assert radicale.list(work) == listing
    assert ks.files(cals2 / "work") == snap
    assert not (cals / "work").exists()

    # Back, with the user's file in the way: nothing is touched, the message says what.
    (cals / "work").mkdir()
    (cals / "work" / "mine.ics").write_bytes(list(gen.events(1, seed=43).values())[0])
    ks.accounts[ACCOUNT]["calendars_path"] = str(cals)
    ks.write_config()
    r = ks.run()
    assert r.rc != 0
    assert "holds files already" in r.stderr, describe(r)
    assert radicale.list(work) == listing
    assert ks.files(cals2 / "work") == snap

    # The user puts them together: the new file goes up, nothing else changes.
    for p in (cals2 / "work").iterdir():
        os.rename(p, cals / "work" / p.name)
    (cals2 / "work").rmdir()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert len(radicale.list(work)) == len(listing) + 1
    assert {h: e for h, e in radicale.list(work).items() if h in listing} == listing
    listing = radicale.list(work)

    # Overlapping places are refused when the file is read, naming both.
    ks.accounts[ACCOUNT]["contacts_path"] = str(cals / "work")
    ks.write_config()
    r = ks.run()
    assert r.rc != 0
    assert "lies inside '%s' of calendars" % cals in r.stderr, r.stderr
    assert radicale.list(work) == listing
