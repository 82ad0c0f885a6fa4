"""Duplicate contacts (issue 6): `ksyncctl duplicates` through ksyncd on a private bus, against
real Radicale and Xandikos: found, shown, merged on the server (union, others gone), read by
khard as one contact, undone; a concurrent server edit is never lost; read-only books refused;
the listing of a group spanning 10,000 contacts is timed."""

import json
import time
import urllib.parse

import pytest

from ksynctest import checks, gen, servers
from ksynctest.daemon import Daemon, wait_until
from ksynctest.faults import Converting, Faults
from ksynctest.tlsfront import Front, Reply, Stall

ACCOUNT = "acct"
BOOK = "people"


def synced(d):
    r = d.ctl("status", "--json")
    assert r.rc == 0, r.stderr
    a = [a for a in json.loads(r.stdout)["accounts"] if a["name"] == ACCOUNT][0]
    return a["state"] == "idle" and a["last_result"] == "ok"


def card(uid, fn, *extra, version="3.0"):
    lines = ["BEGIN:VCARD", "VERSION:" + version, "UID:" + uid, "FN:" + fn]
    lines += list(extra)
    lines.append("END:VCARD")
    return gen.serialize(lines)


def unfold(data):
    return data.decode("utf-8").replace("\r\n ", "").replace("\r\n\t", "").splitlines()


def by_uid(contents):
    """{uid: (href, etag, bytes)} of a collection's contents."""
    out = {}
    for href, (etag, data) in contents.items():
        uid = [ln[4:] for ln in unfold(data) if ln.startswith("UID:")][0]
        out[uid] = (href, etag, data)
    return out


def ok(r, what):
    assert r.rc == 0, "%s: rc %d\nstdout:\n%s\nstderr:\n%s" % (what, r.rc, r.stdout, r.stderr)
    return r


def groups(d, target=""):
    r = ok(d.ctl("duplicates", "--json", *([target] if target else [])), "duplicates --json")
    return json.loads(r.stdout)["groups"]


JANE = {
    "jane-1": card("jane-1", "Jane Doe", "N:Doe;Jane;;;", "EMAIL;TYPE=work:jane@work.example",
                   "TEL;TYPE=cell:+41 79 123 45 67", "NOTE:Met at the fair",
                   "CATEGORIES:Friends"),
    "jane-2": card("jane-2", "DOE\\, Jane", "EMAIL:JANE@WORK.EXAMPLE",
                   "EMAIL;TYPE=home:jane@home.example", "TEL:079 123 45 67",
                   "BDAY:1980-02-03", "NOTE:Likes tea", "CATEGORIES:Family"),
    "jane-3": card("jane-3", "jäne  dóe", "TEL:0041791234567",
                   "ADR;TYPE=home:;;Main Street 1;Bern;;3000;Switzerland"),
    "bob": card("bob", "Bob Other", "EMAIL:bob@example.org", "TEL:+41 21 555 00 00"),
    "team": card("team", "Team", "KIND:group", "MEMBER:urn:uuid:jane-2",
                 "MEMBER:urn:uuid:bob", version="4.0"),
}


def start(server, ks, daemon, items):
    book = server.make_addressbook(BOOK, "People")
    server.seed(book, items)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    try:
        wait_until(lambda: synced(daemon), 60, "the first sync")
    except AssertionError as e:
        raise AssertionError("%s\nksyncd:\n%s\nstatus:\n%s" % (
            e, daemon.log_text()[-3000:], daemon.ctl("status").stdout)) from None
    return book


@pytest.mark.all_servers
def test_find_show_merge_undo(server, ks, daemon):
    book = start(server, ks, daemon, JANE)
    before = by_uid(server.contents(book))

    gs = groups(daemon)
    assert len(gs) == 1, gs
    g = gs[0]
    assert sorted(c["uid"] for c in g["cards"]) == ["jane-1", "jane-2", "jane-3"], g
    assert sorted(g["why"]) == ["email", "name", "phone"], g
    assert "EMAIL" in g["differs"] and "BDAY" in g["differs"], g
    # The id is stable and names the address book.
    assert g["id"].startswith(BOOK + ":") and groups(daemon)[0]["id"] == g["id"]
    assert groups(daemon, ACCOUNT + "/" + BOOK)[0]["id"] == g["id"]

    table = ok(daemon.ctl("duplicates"), "duplicates").stdout
    assert g["id"] in table and "jane@home.example" in table, table

    show = ok(daemon.ctl("duplicates", "show", "--keep", "jane-1", g["id"]), "show").stdout
    assert "jane-1" in show and "(reference, kept)" in show, show
    added = [ln for ln in show.splitlines() if ln.startswith("+")]
    assert any("jane@home.example" in ln and "[from jane-2]" in ln for ln in added), show
    assert any(ln.startswith("+ ADR") for ln in added), show
    assert not any("jane@work.example" in ln.lower() for ln in added), show

    dry = ok(daemon.ctl("duplicates", "merge", "--dry-run", "--keep", "jane-1", g["id"]),
             "merge --dry-run").stdout
    assert "Dry run" in dry, dry
    assert by_uid(server.contents(book)) == before

    r = ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
    assert "Merged " + g["id"] in r.stdout, r.stdout

    after = by_uid(server.contents(book))
    assert sorted(after) == ["bob", "jane-1", "team"], sorted(after)
    merged = unfold(after["jane-1"][2])
    assert merged[0] == "BEGIN:VCARD" and "UID:jane-1" in merged and "FN:Jane Doe" in merged
    emails = [ln for ln in merged if ln.startswith("EMAIL")]
    assert len(emails) == 2 and any("jane@home.example" in e for e in emails), merged
    assert len([ln for ln in merged if ln.startswith("TEL")]) == 1, merged
    assert "BDAY:1980-02-03" in merged, merged
    assert any(ln.startswith("ADR") and "Main Street 1" in ln for ln in merged), merged
    assert "NOTE:Met at the fair\\n\\nLikes tea" in merged, merged
    assert "CATEGORIES:Friends,Family" in merged, merged
    team = unfold(after["team"][2])
    assert "MEMBER:urn:uuid:jane-1" in team and "MEMBER:urn:uuid:jane-2" not in team, team

    # The files and the cache follow the server, and khard shows one Jane.
    checks.check_mirror(ks, server, ACCOUNT)
    d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
    names = sorted(p.name for p in d.glob("*.vcf"))
    assert names == ["bob.vcf", "jane-1.vcf", "team.vcf"], names
    assert (d / "jane-1.vcf").read_bytes() == after["jane-1"][2]
    ks.configure_readers(ACCOUNT)
    rows, _ = ks.khard_list()
    janes = [row for row in rows if row[0].startswith("jane")]
    assert len(janes) == 1 and janes[0][1] == "Jane Doe", rows

    # Nothing left to merge, and a sync has nothing to do.
    assert groups(daemon) == []
    ok(daemon.ctl("sync"), "sync")
    assert by_uid(server.contents(book)) == after

    # The removed cards were kept.
    backups = list((ks.data_dir / "conflicts" / ACCOUNT / "contacts" / BOOK).glob("merge-*"))
    assert len(backups) == 1 and (backups[0] / "jane-2.vcf").read_bytes() == before["jane-2"][2]

    r = ok(daemon.ctl("duplicates", "undo"), "undo")
    assert "restored 2 cards" in r.stdout, r.stdout
    restored = by_uid(server.contents(book))
    assert sorted(restored) == sorted(before)
    for uid in before:
        assert restored[uid][2] == before[uid][2], uid
    assert sorted(p.name for p in d.glob("*.vcf")) == sorted(u + ".vcf" for u in before)
    assert groups(daemon)[0]["id"] == g["id"]
    # Once only.
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "no merge of duplicates to undo" in r.stderr, r.stderr


def test_undo_refused_after_kept_card_changed(server, ks, daemon):
    items = {k: JANE[k] for k in ("jane-1", "jane-2")}
    book = start(server, ks, daemon, items)
    g = groups(daemon)[0]
    ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
    merged = by_uid(server.contents(book))
    href = merged["jane-1"][0]
    # Changed on the server and not synced yet: the If-Match of the undo refuses it.
    server.put(href, card("jane-1", "Jane Doe", "EMAIL:jane@later.example",
                          "NOTE:edited after merge"), if_match=merged["jane-1"][1])
    before = by_uid(server.contents(book))
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "changed on the server since the merge" in r.stderr, r.stderr
    assert by_uid(server.contents(book)) == before
    # Synced: the cache knows, and the undo is refused before any request.
    ok(daemon.ctl("sync"), "sync")
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "changed since the merge" in r.stderr, r.stderr
    assert by_uid(server.contents(book)) == before
    assert "NOTE:edited after merge" in unfold(before["jane-1"][2])


def test_undo_cut_off_halfway_runs_again(server, ks, daemon):
    """An undo that fails after putting the kept card back (the server refuses to create a
    removed card again) can be run again: it goes on where it stopped."""
    book = server.make_addressbook(BOOK, "People")
    items = {k: JANE[k] for k in ("jane-1", "jane-2", "jane-3")}
    server.seed(book, items)
    before = by_uid(server.contents(book))
    failing = []

    def route(front, seen):
        # The second card re-created by the undo is refused once.
        if failing and seen.method == "PUT" and seen.header("If-None-Match") == "*":
            failing.append(seen.path)
            if len(failing) == 3:
                return Reply(500, [("Content-Type", "text/plain")], b"disk trouble\n")
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for("/", host="localhost"))
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        g = groups(daemon)[0]
        ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
        failing.append(None)
        r = daemon.ctl("duplicates", "undo")
        assert r.rc != 0 and "cannot create the card" in r.stderr, r.stderr
        assert len(failing) == 3, failing
        r = ok(daemon.ctl("duplicates", "undo"), "undo again")
    finally:
        front.stop()
    restored = by_uid(server.contents(book))
    assert sorted(restored) == sorted(before)
    for uid in before:
        assert restored[uid][2] == before[uid][2], uid
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "no merge of duplicates to undo" in r.stderr, r.stderr


class CrashingDaemon(Daemon):
    """ksyncd ending itself (exit 100, as kill -9 would) after its Nth durable step."""

    def __init__(self, ks, crash_after):
        super().__init__(ks)
        self.crash_after = crash_after

    def env(self, **extra):
        return super().env(KSYNC_TEST_CRASH_AFTER=str(self.crash_after), **extra)


def fresh(ks, daemon_class=Daemon, *args):
    for left in ("notify.sock", "bus"):
        (ks.runtime_dir / left).unlink(missing_ok=True)
    return daemon_class(ks, *args)


@pytest.mark.parametrize("crash_after", range(1, 18))
def test_crash_during_merge(server, ks, daemon, crash_after):
    """ksyncd dies after each durable step of a merge (16 of them here: copies and journal,
    requests, files and rows; the 17th run completes): a
    restarted ksyncd mirrors the server, no card is lost (a card is removed only after the
    merged card holding it was written), and the merge can be finished."""
    book = start(server, ks, daemon, {k: JANE[k] for k in ("jane-1", "jane-2", "team")})
    g = groups(daemon)[0]
    daemon.stop()

    d = fresh(ks, CrashingDaemon, crash_after)
    try:
        try:
            d.start()
            r = d.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
        except AssertionError:
            r = None    # ended before it was ready: a step of its first sync
        crashed = d.proc.wait(timeout=30) == 100 if r is None or r.rc else False
    finally:
        d.stop()
    print("\ncrash after %d: %s%s" % (crash_after, "crashed" if crashed else "merge completed",
                                     "" if r is None else " (ksyncctl rc %d: %s)" % (r.rc, r.stderr.strip())))

    d = fresh(ks)
    try:
        d.start()
        wait_until(lambda: synced(d), 60, "the sync after the crash")
        checks.check_mirror(ks, server, ACCOUNT)
        after = by_uid(server.contents(book))
        jane1 = unfold(after["jane-1"][2])
        merged = any("jane@home.example" in ln for ln in jane1)
        # A card goes only once the merged card that holds what it added is on the server.
        if "jane-2" not in after or "MEMBER:urn:uuid:jane-1" in unfold(after["team"][2]):
            assert merged, jane1
        if groups(d):
            ok(d.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge again")
        final = by_uid(server.contents(book))
        assert sorted(final) == ["jane-1", "team"], sorted(final)
        assert any("jane@home.example" in ln for ln in unfold(final["jane-1"][2]))
        assert "MEMBER:urn:uuid:jane-1" in unfold(final["team"][2])
        checks.check_mirror(ks, server, ACCOUNT)
    finally:
        d.stop()


def test_default_reference_is_the_most_complete(server, ks, daemon):
    items = {k: JANE[k] for k in ("jane-1", "jane-2", "jane-3")}
    book = start(server, ks, daemon, items)
    g = groups(daemon)[0]
    # jane-2 has the most properties.
    assert g["reference"] == "jane-2", g
    r = ok(daemon.ctl("duplicates", "merge", g["id"]), "merge")
    after = by_uid(server.contents(book))
    assert sorted(after) == ["jane-2"], r.stdout
    merged = unfold(after["jane-2"][2])
    assert "FN:DOE\\, Jane" in merged and "CATEGORIES:Family,Friends" in merged, merged


@pytest.mark.all_servers
def test_concurrent_server_edit_stops_merge(server, ks, daemon):
    items = {k: JANE[k] for k in ("jane-1", "jane-2")}
    book = start(server, ks, daemon, items)
    g = groups(daemon)[0]
    # Another client edits jane-2 after the listing, before the merge.
    href = by_uid(server.contents(book))["jane-2"][0]
    edited = card("jane-2", "Jane Doe", "EMAIL:jane@new.example", "NOTE:edited elsewhere")
    server.put(href, edited)
    before = by_uid(server.contents(book))

    r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    assert r.rc != 0, r.stdout
    assert "changed on the server" in r.stderr and "jane-2" in r.stderr, r.stderr
    assert "nothing was merged" in r.stderr, r.stderr
    assert by_uid(server.contents(book)) == before
    # After a sync the group (same cards) is listed again, with the new content.
    ok(daemon.ctl("sync"), "sync")
    g2 = groups(daemon)[0]
    assert g2["id"] == g["id"]
    assert any("jane@new.example" in c["emails"] for c in g2["cards"]), g2


@pytest.mark.all_servers
def test_edit_during_merge_is_not_lost(server, ks, daemon, tmp_path):
    """The edit lands between the checks and the DELETE of a removed card: the DELETE's
    If-Match fails, the merge stops, and the edited card stays on the server."""
    book = server.make_addressbook(BOOK, "People")
    items = {k: JANE[k] for k in ("jane-1", "jane-2")}
    server.seed(book, items)
    edited = card("jane-2", "Jane Doe", "EMAIL:jane@racing.example")
    raced = []

    def route(front, seen):
        if seen.method == "DELETE" and not raced:
            raced.append(seen.path)
            server.put(seen.path, edited)
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(servers.href_path(server.url),
                                                          host="localhost"))
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        g = groups(daemon)[0]
        r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    finally:
        front.stop()
    assert raced, "no DELETE was sent"
    assert r.rc != 0 and "changed on the server during the merge" in r.stderr, r.stderr
    after = by_uid(server.contents(book))
    assert sorted(after) == ["jane-1", "jane-2"], sorted(after)
    assert "EMAIL:jane@racing.example" in unfold(after["jane-2"][2])
    assert "EMAIL;TYPE=home:jane@home.example" in unfold(after["jane-1"][2])

    # The half-done merge can be undone: jane-1 gets its old content back, and the edited
    # jane-2, never removed, stays as the other client wrote it.
    daemon.stop()
    for left in ("notify.sock", "bus"):
        (ks.runtime_dir / left).unlink(missing_ok=True)
    ks.add_account(ACCOUNT, server)
    d2 = Daemon(ks)
    try:
        d2.start()
        wait_until(lambda: synced(d2), 60, "the sync after the merge")
        r = ok(d2.ctl("duplicates", "undo"), "undo")
    finally:
        d2.stop()
    assert "restored 0 cards" in r.stdout, r.stdout
    undone = by_uid(server.contents(book))
    kept = unfold(undone["jane-1"][2])
    assert "NOTE:Met at the fair" in kept and not any("jane@home.example" in ln
                                                      for ln in kept), kept
    assert "EMAIL:jane@racing.example" in unfold(undone["jane-2"][2])


@pytest.mark.parametrize("which", ["kept", "removed", "removed-then-undo"])
def test_file_edited_during_merge_is_not_lost(server, ks, daemon, which):
    """A card's file is edited here while the merge runs, after its checks (on the merged
    card's PUT, or on the removed card's DELETE): the merge leaves the edited file and its row
    as they are, as the sync leaves a file edited while the server changed, and the next sync
    brings the edit to the server: merged into the kept card, or as the removed card again.
    An undo right after the merge puts the removed card back beside the edited file."""
    book = server.make_addressbook(BOOK, "People")
    server.seed(book, {k: JANE[k] for k in ("jane-1", "jane-2")})
    d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
    uid = "jane-1" if which == "kept" else "jane-2"
    method = "PUT" if which == "kept" else "DELETE"
    edited = []

    def route(front, seen):
        if seen.method == method and not edited:
            f = d / (uid + ".vcf")
            data = f.read_bytes().replace(b"END:VCARD", b"TITLE:Edited here\r\nEND:VCARD")
            tmp = f.with_name(".edit.tmp")
            tmp.write_bytes(data)
            tmp.rename(f)
            edited.append(data)
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(servers.href_path(server.url),
                                                          host="localhost"))
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        g = groups(daemon)[0]
        r = ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
        assert edited, "no %s was sent" % method
        assert (d / (uid + ".vcf")).read_bytes() == edited[0]
        if which == "removed-then-undo":
            ok(daemon.ctl("duplicates", "undo"), "undo")
        ok(daemon.ctl("sync"), "sync")
    finally:
        front.stop()
    after = server.contents(book)
    texts = [unfold(data) for _, data in after.values()]
    assert any("TITLE:Edited here" in t for t in texts), (r.stdout, texts)
    if which == "removed-then-undo":
        # The old jane-2 is back; the edit is on the server too, as jane-2 itself when the
        # daemon's sync sent it before the undo, or else as a copy with a UID of its own.
        assert any("UID:jane-2" in t and "NOTE:Likes tea" in t and
                   "TITLE:Edited here" not in t for t in texts), texts
        assert not any("jane@home.example" in ln for ln in unfold(by_uid(after)["jane-1"][2]))
    else:
        after = by_uid(after)
        assert "TITLE:Edited here" in unfold(after[uid][2]), (r.stdout, after[uid][2])
        assert "EMAIL;TYPE=home:jane@home.example" in unfold(after["jane-1"][2])
        assert sorted(after) == (["jane-1"] if which == "kept" else ["jane-1", "jane-2"])
    # The card put back beside the edited file is in a file of another name.
    checks.check_mirror(ks, server, ACCOUNT, user_names=which == "removed-then-undo")


@pytest.mark.all_servers
def test_edit_of_reference_during_merge_changes_nothing(server, ks, daemon):
    """The reference card is edited between the checks and the PUT of the merged card: the
    PUT's If-Match fails, nothing is merged, and no copy is left behind."""
    book = server.make_addressbook(BOOK, "People")
    server.seed(book, {k: JANE[k] for k in ("jane-1", "jane-2")})
    edited = card("jane-1", "Jane Doe", "EMAIL:jane@racing.example")
    raced = []

    def route(front, seen):
        if seen.method == "PUT" and not raced:
            raced.append(seen.path)
            server.put(seen.path, edited)
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(servers.href_path(server.url),
                                                          host="localhost"))
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        g = groups(daemon)[0]
        before = by_uid(server.contents(book))
        r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    finally:
        front.stop()
    assert raced and raced[0].endswith("jane-1.vcf"), raced
    assert r.rc != 0 and "changed on the server meanwhile; nothing was merged" in r.stderr, \
        r.stderr
    after = by_uid(server.contents(book))
    assert sorted(after) == ["jane-1", "jane-2"]
    assert after["jane-2"] == before["jane-2"]
    assert "EMAIL:jane@racing.example" in unfold(after["jane-1"][2])
    assert not list((ks.data_dir / "conflicts").rglob("merge-*"))
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "no merge of duplicates to undo" in r.stderr, r.stderr


@pytest.mark.all_servers
def test_local_edit_not_lost(server, ks, daemon):
    """A card edited in its file and not yet sent: the merge either refuses (the edit is not
    synced yet) or, when the daemon's sync sent it first, merges the edited version. The edit
    is never lost."""
    items = {k: JANE[k] for k in ("jane-1", "jane-2")}
    book = start(server, ks, daemon, items)
    g = groups(daemon)[0]
    f = ks.collection_dir(ACCOUNT, "addressbook", BOOK) / "jane-2.vcf"
    tmp = f.with_name(".edit.tmp")
    tmp.write_bytes(card("jane-2", "Jane Doe", "EMAIL:jane@work.example",
                         "NOTE:local edit"))
    tmp.rename(f)
    r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    print("\nmerge with an unsent local edit: %s" % ("refused" if r.rc else "merged after sync"))
    if r.rc != 0:
        assert "not synced yet" in r.stderr, r.stderr
        wait_until(lambda: synced(daemon) and "local edit" in b"".join(
            d for _, _, d in by_uid(server.contents(book)).values()).decode(), 30,
            "the edit to reach the server")
        r = ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
    after = by_uid(server.contents(book))
    assert sorted(after) == ["jane-1"], r.stdout
    assert any("local edit" in ln for ln in unfold(after["jane-1"][2])), after


def test_merged_vcard_4_stays_4_on_a_converting_server(server, ks, daemon):
    """On a server that serves cards as 3.0 unless asked for 4.0 (SabreDAV 4, Cyrus), the
    merged 4.0 card is read back as 4.0, as the sync reads back its uploads: the file keeps
    what 3.0 cannot hold and the server's bytes."""
    book = server.make_addressbook(BOOK, "People")
    server.seed(book, {
        "jane-a": card("jane-a", "Jane Doe", "KIND:individual", "ANNIVERSARY:20100601",
                       "EMAIL:jane@work.example", version="4.0"),
        "jane-b": card("jane-b", "Jane Doe", "EMAIL:jane@home.example", version="4.0"),
    })
    faults = Faults()
    front = Front(backend=server, route=faults)
    conv = Converting(faults, book, {urllib.parse.urlsplit(h).path for h in server.home_sets})
    f = ks.collection_dir(ACCOUNT, "addressbook", BOOK) / "jane-a.vcf"
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(servers.href_path(server.url),
                                                          host="localhost"))
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        assert b"KIND:individual" in f.read_bytes()
        g = groups(daemon)[0]
        ok(daemon.ctl("duplicates", "merge", "--keep", "jane-a", g["id"]), "merge")
    finally:
        front.stop()
    got = f.read_bytes()
    assert b"VERSION:4.0" in got and b"KIND:individual" in got, got
    assert b"jane@home.example" in got, got
    assert got == by_uid(server.contents(book))["jane-a"][2]
    assert conv.asked[-1], conv.asked


def test_copies_never_kept_through_a_symbolic_link(server, ks, daemon, tmp_path):
    """The copies and the journal of a merge go under conflicts/ as the sync's conflict copies
    do, never through a symbolic link: with one on the way, the merge stops before it writes
    anything and the undo does not read through it; nothing is written where it points."""
    book = start(server, ks, daemon, {k: JANE[k] for k in ("jane-1", "jane-2")})
    g = groups(daemon)[0]
    before = by_uid(server.contents(book))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = ks.data_dir / "conflicts" / ACCOUNT
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(elsewhere)
    r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    assert r.rc != 0, r.stdout
    assert "symbolic link" in r.stderr and "nothing was merged" in r.stderr, r.stderr
    assert by_uid(server.contents(book)) == before
    assert not list(elsewhere.iterdir())

    link.unlink()
    ok(daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"]), "merge")
    assert sorted(by_uid(server.contents(book))) == ["jane-1"]
    # The merge's copies moved away, a link in their place: the undo refuses to follow it.
    moved = tmp_path / "moved"
    link.rename(moved)
    link.symlink_to(moved)
    r = daemon.ctl("duplicates", "undo")
    assert r.rc != 0 and "symbolic link" in r.stderr, r.stderr
    assert sorted(by_uid(server.contents(book))) == ["jane-1"]
    link.unlink()
    moved.rename(link)
    ok(daemon.ctl("duplicates", "undo"), "undo")
    assert by_uid(server.contents(book)).keys() == before.keys()


def test_timeout_applies_to_the_merge(server, ks, daemon):
    """The account's `timeout` holds for the merge's requests as for a sync's: a server that
    goes silent is given up after it, and nothing is merged."""
    book = server.make_addressbook(BOOK, "People")
    server.seed(book, {k: JANE[k] for k in ("jane-1", "jane-2")})
    stalled = []
    merging = []

    def route(front, seen):
        if merging and not stalled:
            stalled.append(seen.method)
            return Stall(12)
        return None

    front = Front(backend=server, route=route)
    try:
        ks.add_account(ACCOUNT, server, url=front.url_for(servers.href_path(server.url),
                                                          host="localhost"))
        ks.accounts[ACCOUNT]["timeout"] = "2"
        ks.write_config()
        daemon.start()
        wait_until(lambda: synced(daemon), 60, "the first sync")
        g = groups(daemon)[0]
        before = by_uid(server.contents(book))
        merging.append(True)
        t0 = time.monotonic()
        r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
        elapsed = time.monotonic() - t0
    finally:
        front.stop()
    assert stalled, "the merge sent no request"
    assert r.rc != 0 and "timed out: the server sent no data for 2 s" in r.stderr, r.stderr
    assert elapsed < 12, "the stalled request was not cut: %.1f s" % elapsed
    assert by_uid(server.contents(book)) == before


def test_book_reached_through_a_symbolic_link_refused(server, ks, daemon, tmp_path):
    """The merge opens the address book's directory as the sync does, never through a
    symbolic link on the way (here the account's directory): it refuses before any change,
    and nothing is written where the link points."""
    book = start(server, ks, daemon, {k: JANE[k] for k in ("jane-1", "jane-2")})
    g = groups(daemon)[0]
    before = by_uid(server.contents(book))
    account_dir = ks.collection_dir(ACCOUNT, "addressbook", BOOK).parent
    elsewhere = tmp_path / "elsewhere"
    account_dir.rename(elsewhere)
    account_dir.symlink_to(elsewhere)
    files = {f.name: f.read_bytes() for f in (elsewhere / BOOK).iterdir()}
    r = daemon.ctl("duplicates", "merge", "--keep", "jane-1", g["id"])
    assert r.rc != 0 and "symbolic link" in r.stderr, r.stderr
    assert by_uid(server.contents(book)) == before
    assert {f.name: f.read_bytes() for f in (elsewhere / BOOK).iterdir()} == files


RIGHTS_RO = """\
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[shared]
user: .+
collection: {user}/shared(/.*)?
permissions: r

[collections]
user: .+
collection: {user}/[^/]+(/.*)?
permissions: rw
"""

RIGHTS_RW = RIGHTS_RO.replace("permissions: r\n", "permissions: rw\n")


def test_readonly_book_refused(start_server, ks, daemon):
    # Only Radicale (rights file) serves read-only collections.
    server = start_server("radicale", rights=RIGHTS_RW)
    shared = server.make_addressbook("shared", "Shared")
    server.seed(shared, {k: JANE[k] for k in ("jane-1", "jane-2")})
    with open(server.rights_path, "w", encoding="utf-8") as f:
        f.write(RIGHTS_RO)
    ks.add_account(ACCOUNT, server)
    daemon.start()
    wait_until(lambda: synced(daemon), 60, "the first sync")
    before = server.contents(shared)
    g = groups(daemon)[0]
    assert g["readonly"] is True, g
    r = daemon.ctl("duplicates", "merge", g["id"])
    assert r.rc != 0 and "read-only" in r.stderr, r.stderr
    r = daemon.ctl("duplicates", "merge", "--all", "--yes")
    assert r.rc != 0 and "read-only" in r.stdout + r.stderr, r.stdout + r.stderr
    assert server.contents(shared) == before


@pytest.mark.all_servers
def test_merge_all_and_bad_arguments(server, ks, daemon):
    items = dict(JANE)
    items["bob-2"] = card("bob-2", "Other Bob", "TEL:021 555 00 00")
    book = start(server, ks, daemon, items)
    assert len(groups(daemon)) == 2
    r = daemon.ctl("duplicates", "merge", "--all")
    assert r.rc != 0 and "--yes" in r.stderr, r.stderr
    r = daemon.ctl("duplicates", "merge", "nosuchbook:12345678")
    assert r.rc != 0 and "no group" in r.stderr, r.stderr
    r = daemon.ctl("duplicates", "merge", "--keep", "bob", groups(daemon)[-1]["id"]
                   if groups(daemon)[-1]["cards"][0]["uid"].startswith("jane")
                   else groups(daemon)[0]["id"])
    assert r.rc != 0 and "no card with UID 'bob'" in r.stderr, r.stderr
    r = daemon.ctl("duplicates", ACCOUNT + "/nosuchbook")
    assert r.rc != 0 and "no address book" in r.stderr, r.stderr
    r = ok(daemon.ctl("duplicates", "merge", "--all", "--yes"), "merge --all --yes")
    assert "2 groups merged, 0 failed" in r.stdout, r.stdout
    assert sorted(by_uid(server.contents(book))) in (["bob", "jane-2", "team"],
                                                     ["bob-2", "jane-2", "team"]), r.stdout
    assert groups(daemon) == []


def test_ten_thousand_in_one_group_listed_quickly(radicale, ks, daemon):
    n = 10000
    items = {}
    for i in range(n):
        # A chain: each card shares a number with the next, so all 10,000 form one group.
        items["c%05d" % i] = card("c%05d" % i, "Person %d" % i,
                                  "TEL:+41 79 %03d %02d %02d" % (i // 10000, i // 100 % 100,
                                                                 i % 100),
                                  "TEL:079 %03d %02d %02d" % ((i + 1) // 10000,
                                                             (i + 1) // 100 % 100,
                                                             (i + 1) % 100))
    book = radicale.make_addressbook(BOOK, "People")
    # Straight into Radicale's storage, without DavServer.seed()'s check over HTTP: a
    # PROPFIND of 10,000 items can take a minute on a loaded machine. The first sync reads
    # them all anyway, and the group must hold every one.
    radicale._seed_radicale(book, {name + ".vcf": data for name, data in items.items()})
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    wait_until(lambda: synced(daemon), 600, "the first sync of 10,000 cards")
    t0 = time.monotonic()
    r = ok(daemon.ctl("duplicates", "--json"), "duplicates --json")
    t_json = time.monotonic() - t0
    gs = json.loads(r.stdout)["groups"]
    assert len(gs) == 1 and len(gs[0]["cards"]) == n
    t0 = time.monotonic()
    r = ok(daemon.ctl("duplicates"), "duplicates")
    t_table = time.monotonic() - t0
    assert r.stdout.count("\n") > n
    print("\nduplicates of 10000 contacts in one group through ksyncd: "
          "--json %.3f s, table %.3f s" % (t_json, t_table))
    # Measured, not a benchmark: a bound far above what was seen.
    assert t_json < 5 and t_table < 5
