"""io.ksync.Sync2, the typed D-Bus interface for desktop front ends: an object per account
with properties a panel applet binds to, PropertiesChanged as runs start and end, and
Sync without JSON. Read with busctl, as a front end would."""

import json
import subprocess
import time

from ksynctest import gen
from ksynctest.daemon import synced_ok, wait_until

ACCOUNT = "acct"
ROOT = "/io/ksync/Sync2"
ACCT = ROOT + "/account/" + ACCOUNT


def busctl(daemon, *args, timeout=30):
    p = subprocess.run(["busctl", "--user", "--timeout=%d" % timeout, "--json=short"] +
                       [str(a) for a in args], env=daemon.env(), capture_output=True,
                       timeout=timeout + 5)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return json.loads(p.stdout) if p.stdout.strip() else None


def prop(daemon, path, iface, name):
    return busctl(daemon, "get-property", "io.ksync.Sync1", path, iface, name)["data"]


def account_prop(daemon, name):
    return prop(daemon, ACCT, "io.ksync.Sync2.Account", name)


def test_typed_properties_and_changes(radicale, ks, daemon):
    book = radicale.make_addressbook("people", "People")
    radicale.seed(book, gen.contacts(3))
    ks.add_account(ACCOUNT, radicale)
    daemon.start()
    wait_until(lambda: synced_ok(daemon, ACCOUNT), 60, "the first sync")

    assert prop(daemon, ROOT, "io.ksync.Sync2", "Accounts") == [ACCT]
    assert prop(daemon, ROOT, "io.ksync.Sync2", "ConfigPath") == str(ks.config_path)
    assert account_prop(daemon, "Name") == ACCOUNT
    assert account_prop(daemon, "State") == "idle"
    assert account_prop(daemon, "LastResult") == "ok"
    assert account_prop(daemon, "LastSync") > time.time() - 120
    assert account_prop(daemon, "Subscription") is False
    assert account_prop(daemon, "Conflicts") == 0
    assert account_prop(daemon, "Collections") == [["contacts/people", "People", True, False,
                                                    3, 0]]

    # A run seen from outside: State goes to syncing and back, with the new LastSync.
    monitor = subprocess.Popen(["busctl", "--user", "--json=short", "monitor",
                                "io.ksync.Sync1"], env=daemon.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)
        before = account_prop(daemon, "LastSync")
        run_id = busctl(daemon, "call", "io.ksync.Sync1", ACCT, "io.ksync.Sync2.Account",
                        "Sync", "b", "false")["data"][0]
        assert run_id > 0
        wait_until(lambda: account_prop(daemon, "LastSync") > before or
                   account_prop(daemon, "State") == "idle" and
                   account_prop(daemon, "LastSync") >= before, 60, "the run")
        time.sleep(1)
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=10)
    states = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("member") != "PropertiesChanged" or msg.get("path") != ACCT:
            continue
        iface, changed, _ = msg["payload"]["data"]
        assert iface == "io.ksync.Sync2.Account"
        if "State" in changed:
            states.append(changed["State"]["data"])
    assert states[:2] == ["syncing", "idle"], out[-3000:]

    # A file the disabled collection holds back is pending, and so said.
    r = daemon.ctl("disable", ACCOUNT + "/contacts/people")
    assert r.rc == 0, r.stdout + r.stderr
    d = ks.collection_dir(ACCOUNT, "addressbook", "people")
    (d / "later.vcf").write_bytes(b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:later\r\nFN:Later\r\n"
                                  b"N:Later;;;;\r\nEND:VCARD\r\n")
    wait_until(lambda: account_prop(daemon, "Pending") == 1, 30, "the pending file")
    assert account_prop(daemon, "Collections")[0][2] is False

    # An account that is not there is an error, not an empty object.
    p = subprocess.run(["busctl", "--user", "get-property", "io.ksync.Sync1",
                        ROOT + "/account/nobody", "io.ksync.Sync2.Account", "State"],
                       env=daemon.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, p.stdout
