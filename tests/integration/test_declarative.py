"""Which collections sync is said in ksync.conf (include =, exclude =, collections =): it
outlives the cache, and `ksyncctl enable`/`disable` write it there, every other line kept."""

from ksynctest import gen
from ksynctest.daemon import synced_ok, wait_until
from ksynctest.faults import describe

ACCOUNT = "acct"
COMMENT = "# calendars for work only\n"


def make_account(server, ks, rules):
    """Calendars work-a, work-b and one of holidays, address books team and family; the
    account's config ends with `rules` and a comment line."""
    hrefs = {}
    for name, display in (("work-a", "Work A"), ("work-b", "Work B"), ("hol", "Holidays")):
        hrefs[name] = server.make_calendar(name, display, components=("VEVENT",))
        server.seed(hrefs[name], gen.events(3, seed=len(hrefs)))
    for name in ("team", "family"):
        hrefs[name] = server.make_addressbook(name, name.capitalize())
        server.seed(hrefs[name], gen.contacts(2, seed=len(hrefs)))
    keys = ks.add_account(ACCOUNT, server)
    keys.update(rules)
    ks.write_config(ks.config_text().rstrip("\n") + "\n" + COMMENT)
    return hrefs


def enabled(ks):
    return {("%s/%s" % ("contacts" if r["kind"] == "addressbook" else "calendars", r["name"])):
            bool(r["enabled"]) for r in ks.collections(ACCOUNT)}


def contents(ks):
    """{path: sha256} of the collections' files."""
    out = {}
    for base in (ks.contacts_dir(ACCOUNT), ks.calendars_dir(ACCOUNT)):
        if base.is_dir():
            out.update({"%s/%s" % (base.name, k): v.sha256 for k, v in ks.files(base).items()})
    return out


def has_uid(ks, name, uid):
    return any(("UID:%s\r\n" % uid).encode() in data
               for data in ks.item_files(ACCOUNT, "calendar", name).values())


def synced_dirs(ks):
    out = set()
    for kind, base in (("contacts", ks.contacts_dir(ACCOUNT)),
                       ("calendars", ks.calendars_dir(ACCOUNT))):
        if base.is_dir():
            out |= {"%s/%s" % (kind, d.name) for d in base.iterdir()
                    if d.is_dir() and any(d.iterdir())}
    return out


WANT = {"calendars/work-a": True, "calendars/work-b": True, "calendars/hol": False,
        "contacts/team": True, "contacts/family": False}


def test_rules_choose_and_outlive_the_cache(radicale, ks):
    """collections = none with include = and exclude = (a display name pattern): only the
    collections they name sync, and a cache rebuilt from nothing syncs the same ones,
    without a request that changes the server."""
    hrefs = make_account(radicale, ks, {"collections": "none",
                                 "include": "calendars/work-*, team, Holi*",
                                 "exclude": "*days"})
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert enabled(ks) == WANT
    assert synced_dirs(ks) == {k for k, v in WANT.items() if v}
    before = {h: radicale.list(h) for h in hrefs.values()}
    files = contents(ks)

    for p in ks.data_dir.glob("ksync.db*"):
        p.unlink()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert enabled(ks) == WANT
    assert {h: radicale.list(h) for h in hrefs.values()} == before
    assert contents(ks) == files


def test_rules_change_a_synced_account(radicale, ks):
    """exclude = added to an account that synced everything stops that collection at the
    next run (its files stay); taken away, the collection syncs again."""
    hrefs = make_account(radicale, ks, {})
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert all(enabled(ks).values())
    kept = ks.item_files(ACCOUNT, "calendar", "work-b")
    ks.accounts[ACCOUNT]["exclude"] = "calendars/work-b"
    ks.write_config()
    name, data = next(iter(gen.events(1, seed=40).items()))
    radicale.put(hrefs["work-b"] + name, data)
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert not enabled(ks)["calendars/work-b"]
    assert ks.item_files(ACCOUNT, "calendar", "work-b") == kept

    del ks.accounts[ACCOUNT]["exclude"]
    ks.write_config()
    r = ks.run()
    assert r.rc == 0, describe(r)
    assert enabled(ks)["calendars/work-b"]
    assert has_uid(ks, "work-b", name)


def test_enable_disable_write_the_config(radicale, ks, daemon):
    """`ksyncctl disable` adds the collection to exclude = and `enable` takes it out, the
    rest of ksync.conf unchanged; a collection a pattern excludes is not enabled behind the
    user's back: the error names the line."""
    hrefs = make_account(radicale, ks, {"exclude": "*days"})
    daemon.start()
    wait_until(lambda: synced_ok(daemon), 60, "the first sync")
    original = ks.config_path.read_text()

    r = daemon.ctl("disable", ACCOUNT + "/work-b")
    assert r.rc == 0, r.stdout + r.stderr
    text = ks.config_path.read_text()
    assert text == original.replace("exclude = *days\n",
                                    "exclude = *days, calendars/work-b\n"), text
    assert text.endswith(COMMENT)
    name, data = next(iter(gen.events(1, seed=41).items()))
    radicale.put(hrefs["work-b"] + name, data)
    r = daemon.ctl("sync", ACCOUNT)
    assert r.rc == 0, r.stdout + r.stderr
    assert not has_uid(ks, "work-b", name)
    r = daemon.ctl("collections", ACCOUNT)
    assert r.rc == 0 and [ln for ln in r.stdout.splitlines()
                          if "work-b" in ln and " off " in ln], r.stdout

    r = daemon.ctl("enable", ACCOUNT + "/calendars/work-b")
    assert r.rc == 0, r.stdout + r.stderr
    assert ks.config_path.read_text() == original
    wait_until(lambda: has_uid(ks, "work-b", name), 30,
               "the event of the enabled calendar")

    r = daemon.ctl("enable", ACCOUNT + "/hol")
    assert r.rc != 0, r.stdout + r.stderr
    assert "exclude = still names 'calendars/hol' through a pattern" in r.stderr, r.stderr
    assert ks.config_path.read_text() == original
    assert not enabled(ks)["calendars/hol"]
