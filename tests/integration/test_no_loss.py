"""Nothing a person writes is lost: ordinary situations that used to lose local work or stop
ksyncd, each against a real Radicale and Xandikos (with a fault-injecting front where the
situation needs a server or proxy glitch).

The rules checked here: nothing ksync did not write is deleted; a file ksync deletes is one
whose bytes match its cache row; local-only work that must go is moved under conflicts/ first
and reported; a collection that vanishes from a listing, or a directory that is gone, passes the
mass-deletion guard whatever its size; the guard counts against the size at the last complete
sync, across runs and pages.
"""

import re
import urllib.parse

import pytest

from ksynctest import checks, gen
from ksynctest.faults import (Faults, card, describe, event, local_uids, on, omit_first_response,
                              rewrite, server_uids, write_file)
from ksynctest.tlsfront import Front

ACCOUNT = "acct"
BOOK = "people"
CAL = "work"
RUN_TIMEOUT = 180


def failure_text(r):
    return "\n".join(checks.failure_lines(r.stderr, ACCOUNT))


def fronted(server, ks, faults):
    """An account whose requests pass through a front applying `faults`."""
    front = Front(backend=server, route=faults)
    ks.add_account(ACCOUNT, server, url=front.url_for(urllib.parse.urlsplit(server.url).path))
    return front


def converges(ks, server):
    """A clean run changes nothing more than it must; a second one changes nothing."""
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_mirror(ks, server, ACCOUNT)
    before = checks.snapshot(ks)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc == 0, describe(r)
    checks.check_unchanged(before, checks.snapshot(ks))


# -- a multiget that leaves out an item while others are in flight --------------------------------

@pytest.mark.parametrize("gone", [False, True])
def test_multiget_omission_with_others_in_flight(server, ks, gone):
    """A first sync of 350 cards runs four multigets at once; one answer leaves out an item
    (SabreDAV omits hrefs deleted since the listing). The missing item is fetched by GET
    after the multigets, never from inside the request loop; when the server has deleted it
    meanwhile, it is simply not there. ksyncd exits normally either way."""
    book = server.make_addressbook(BOOK, "People")
    cards = {"c%03d" % i: card("c%03d" % i, "Person %d" % i) for i in range(350)}
    server.seed(book, cards)
    faults = Faults()
    omitted = []

    def omit_and_maybe_delete(body):
        m = re.search(rb"<(?:\w+:)?href>([^<]*)</", body)
        if m:
            omitted.append(urllib.parse.unquote(m.group(1).decode()))
            if gone:
                server.delete(omitted[-1])
        return omit_first_response(body)

    # The second multiget to arrive is cut while the first, third and fourth are in flight.
    faults.add(on("multiget", book), rewrite(omit_and_maybe_delete), which=2)
    front = fronted(server, ks, faults)
    try:
        r = ks.run(timeout=RUN_TIMEOUT)
        assert r.rc == 0, describe(r)
        assert omitted, faults.hits
        d = ks.collection_dir(ACCOUNT, "addressbook", BOOK)
        got = local_uids(d, ".vcf")
        want = set(cards) - ({omitted[0].rsplit("/", 1)[1][:-4]} if gone else set())
        assert set(got) == want, sorted(set(want) ^ set(got))
        gets = [s for s in front.seen() if s.method == "GET"]
        assert len(gets) == 1, [s.path for s in gets]
        converges(ks, server)
    finally:
        front.stop()
