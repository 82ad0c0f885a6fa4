"""TLS and credential safety (issue 5, point 5, and the redirect faults of point 1).

A local HTTPS front with a self-signed certificate (made with the openssl CLI) forwards to a real
Radicale: without ca_file ksyncd refuses it, with it ksyncd syncs, with the wrong one it refuses.
Plain http:// to a host that is not loopback is refused by the config before any connection (checked
with strace in a network namespace where every connect() is failed by strace, so nothing leaves the
machine). Redirects: same host followed; another host gets no credentials; https -> http refused.
The password never shows in ksyncd's output, its files, the command lines and environments of its
process tree, or the messages about a bad config; password_file must be a 0600 regular file owned
by the user.
"""

import base64
import os
import re
import secrets
import subprocess
import time
import urllib.parse
from types import SimpleNamespace

import pytest

from ksynctest import checks, gen, ksync, servers, tlsfront
from ksynctest.tlsfront import Front, Reply, redirect

ACCOUNT = "acct"
BOOK = "people"
STRACE = "/usr/bin/strace"
UNSHARE = "/usr/bin/unshare"
# A TEST-NET-1 address (RFC 5737): never contacted; every connect() ksyncd makes under
# run_traced() is failed by strace before it reaches the kernel.
TEST_NET = "192.0.2.1"
SHORT_TIMEOUT = 30
RUN_TIMEOUT = 120
# The ASCII part of servers.PASSWORD, in case the whole is escaped differently.
PASSWORD_ASCII = "s3cr3t"


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """front: the certificate the HTTPS fronts serve (127.0.0.1, localhost, 127.0.0.2);
    other: another self-signed CA with the same names; wronghost: self-signed for another name."""
    d = tmp_path_factory.mktemp("certs")
    return SimpleNamespace(
        front=tlsfront.make_cert(d, "front"),
        other=tlsfront.make_cert(d, "other"),
        wronghost=tlsfront.make_cert(d, "wronghost", hosts=("ksync-elsewhere.invalid",)),
    )


@pytest.fixture
def fronts():
    """Factory: fronts.start(**Front kwargs), fronts.pair(hosts, **kwargs); all stopped at
    teardown."""
    started = []

    def start(**kw):
        f = Front(**kw)
        started.append(f)
        return f

    def pair(hosts, **kw):
        fs = tlsfront.start_pair(hosts, **kw)
        started.extend(fs)
        return fs

    try:
        yield SimpleNamespace(start=start, pair=pair)
    finally:
        for f in started:
            f.stop()


@pytest.fixture
def dav(radicale):
    """Radicale with an address book of three contacts."""
    book = radicale.make_addressbook(BOOK, "People")
    radicale.seed(book, gen.contacts(3))
    return radicale


# -- helpers -------------------------------------------------------------------------------------

def set_account(ks, server, url, password=None, password_via="file", **extra):
    keys = ks.add_account(ACCOUNT, server, url=url, password=password, password_via=password_via)
    keys.update({k: str(v) for k, v in extra.items()})
    ks.write_config()
    return keys


def output(r):
    return r.stdout + r.stderr


def failure_text(r):
    lines = checks.failure_lines(r.stderr, ACCOUNT)
    return "\n".join(lines) if lines else r.stderr


def describe(r):
    return "rc %d\nstdout:\n%s\nstderr:\n%s" % (r.rc, r.stdout[-3000:], r.stderr[-3000:])


def secret_forms(password, username=servers.USERNAME):
    """Ways a password could show up: as is, percent-encoded, in a Basic Authorization header,
    base64 alone, and its longest ASCII run when that is distinctive."""
    forms = {password, urllib.parse.quote(password, safe=""),
             base64.b64encode(("%s:%s" % (username, password)).encode()).decode(),
             base64.b64encode(password.encode()).decode()}
    runs = sorted(re.findall(r"[\x21-\x7e]{6,}", password), key=len)
    if runs:
        forms.add(runs[-1])
    if password == servers.PASSWORD:
        forms.add(PASSWORD_ASCII)
    return sorted(forms)


def leaks(text, passwords):
    """[(password, form)] found in text (str or bytes)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [(p, f) for p in passwords for f in secret_forms(p) if f in text]


def files_containing(root, passwords):
    """Files under root whose bytes contain a form of a password."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                data = f.read()
            hit = leaks(data, passwords)
            if hit:
                found.append((p, hit))
    return found


_netns = None


def netns_available():
    """True when `unshare -n` works here (it needs CAP_SYS_ADMIN or user namespaces)."""
    global _netns
    if _netns is None:
        try:
            _netns = subprocess.run([UNSHARE, "-n", "--", "/bin/true"], capture_output=True,
                                    timeout=SHORT_TIMEOUT).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _netns = False
    return _netns


def require_tools():
    for tool, pkg in ((STRACE, "strace"), (UNSHARE, "util-linux")):
        if not os.access(tool, os.X_OK):
            raise RuntimeError("%s is not installed (Debian package '%s')" % (tool, pkg))


def run_traced(ks, *args, fail_connects_from=1, netns=True, timeout=SHORT_TIMEOUT):
    """ksyncd --once ARGS under strace, which records connect() and sendto()/sendmsg() and fails
    every connect() from the Nth on with ENETUNREACH before the kernel sees it
    (fail_connects_from=1: no connection at all). netns=True also runs it in an empty network
    namespace when that is possible. Returns (Result, [(address, port)] connect() attempts to
    AF_INET/AF_INET6 addresses, in order, and the strace log)."""
    require_tools()
    log = ks.root / ("strace-%s.log" % secrets.token_hex(4))
    when = "" if fail_connects_from == 1 else ":when=%d+" % fail_connects_from
    argv = []
    if netns and netns_available():
        argv += [UNSHARE, "-n", "--"]
    argv += [STRACE, "-f", "-qq", "-o", str(log), "-e", "trace=connect,sendto,sendmsg,sendmmsg",
             "-e", "inject=connect:error=ENETUNREACH" + when,
             str(ks.ksyncd), "--once"] + [str(a) for a in args]
    p = subprocess.run(argv, env=ks.env(), cwd=ks.home, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    r = ksync.Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                     p.stderr.decode("utf-8", "replace"))
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    attempts = []
    for m in re.finditer(r'sin6?_port=htons\((\d+)\),\s*(?:sin_addr=inet_addr\("([^"]+)"\)|'
                         r'[^)]*?inet_pton\(AF_INET6,\s*"([^"]+)")', text):
        attempts.append((m.group(2) or m.group(3), int(m.group(1))))
    return r, attempts, text


# -- 1. HTTPS with a self-signed certificate -----------------------------------------------------

def test_self_signed_refused_without_ca_file(dav, certs, fronts, ks):
    front = fronts.start(backend=dav, cert=certs.front)
    set_account(ks, dav, front.url)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    st = front.stats()
    assert st["requests"] == 0, "requests went over an unverified TLS connection: %r" % (
        [(s.method, s.path) for s in front.seen()],)
    assert st["handshake_errors"], "ksyncd never tried the TLS handshake: %r" % (st,)
    msg = failure_text(r)
    problems = []
    if not re.search(r"certificate|verif", msg, re.I):
        problems.append("does not say that certificate verification failed")
    if "ca_file" not in msg:
        problems.append("does not name ca_file")
    if re.search(r"accepted the credentials", msg):
        problems.append("claims the server accepted the credentials")
    assert not problems, "the message %s:\n%s" % ("; ".join(problems), describe(r))


def test_ca_file_accepted(dav, certs, fronts, ks):
    front = fronts.start(backend=dav, cert=certs.front)
    set_account(ks, dav, front.url, ca_file=certs.front.cert)
    r = ks.sync(timeout=RUN_TIMEOUT)
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    assert front.stats()["requests"] > 0
    assert not front.stats()["handshake_errors"]
    checks.check_mirror(ks, dav, ACCOUNT)
    assert len(ks.item_files(ACCOUNT, "addressbook", BOOK)) == 3


@pytest.mark.parametrize("case", ["other-ca", "wrong-host-name"])
def test_wrong_ca_file_refused(dav, certs, fronts, ks, case):
    if case == "other-ca":
        front = fronts.start(backend=dav, cert=certs.front)
        ca = certs.other.cert
    else:
        front = fronts.start(backend=dav, cert=certs.wronghost)
        ca = certs.wronghost.cert
    set_account(ks, dav, front.url, ca_file=ca)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    assert front.stats()["requests"] == 0, [(s.method, s.path) for s in front.seen()]
    msg = failure_text(r)
    problems = []
    if not re.search(r"certificate|verif|host ?name|subject", msg, re.I):
        problems.append("does not say that the certificate was refused")
    if re.search(r"accepted the credentials", msg):
        problems.append("claims the server accepted the credentials")
    assert not problems, "the message %s:\n%s" % ("; ".join(problems), describe(r))


def test_missing_ca_file_named(dav, certs, fronts, ks):
    front = fronts.start(backend=dav, cert=certs.front)
    missing = ks.root / "no-such-ca.pem"
    set_account(ks, dav, front.url, ca_file=missing)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    assert front.stats()["requests"] == 0
    msg = output(r)
    assert str(missing) in msg or "ca_file" in msg, (
        "the message names neither ca_file nor %s:\n%s" % (missing, describe(r)))
    assert not re.search(r"accepted the credentials", msg), describe(r)


# -- 2. Plain http -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://%s/" % TEST_NET,
    "HTTP://%s:8008/dav/" % TEST_NET,
    "http://ksync-test.invalid/",
    "http://127.0.0.1.ksync-test.invalid/",
    "http://localhost.ksync-test.invalid:8080/",
    "http://[2001:db8::1]/",
])
def test_plain_http_to_other_host_refused_before_connecting(ks, url):
    ks.accounts[ACCOUNT] = {"url": url, "username": servers.USERNAME,
                            "password_file": str(ks.secrets / "pw")}
    pw = ks.secrets / "pw"
    pw.write_text("unused\n")
    pw.chmod(0o600)
    ks.write_config()
    t = time.monotonic()
    r, attempts, log = run_traced(ks)
    elapsed = time.monotonic() - t
    assert r.rc != 0, describe(r)
    assert "allow_insecure_http" in output(r), describe(r)
    assert attempts == [], "ksyncd tried to connect to %r before refusing the config:\n%s" % (
        attempts, log[-3000:])
    assert not re.search(r"sendto\(.*sin6?_addr", log), log[-3000:]
    assert elapsed < SHORT_TIMEOUT


def test_plain_http_to_other_host_accepted_with_allow_insecure_http(ks):
    """The config takes it: ksyncd goes as far as connect() to the TEST-NET address (failed by
    strace, in an empty network namespace)."""
    pw = ks.secrets / "pw"
    pw.write_text("unused\n")
    pw.chmod(0o600)
    ks.accounts[ACCOUNT] = {"url": "http://%s:8008/" % TEST_NET, "username": servers.USERNAME,
                            "password_file": str(pw), "allow_insecure_http": "true"}
    ks.write_config()
    r, attempts, log = run_traced(ks)
    assert "allow_insecure_http" not in output(r), describe(r)
    assert (TEST_NET, 8008) in attempts, "no connect() to %s:8008 (%r):\n%s\n%s" % (
        TEST_NET, attempts, describe(r), log[-3000:])
    assert r.rc != 0, describe(r)


@pytest.mark.parametrize("case", ["127.0.0.1-with-allow_insecure_http", "127.0.0.2", "localhost"])
def test_plain_http_loopback_syncs(dav, fronts, ks, case):
    if case == "127.0.0.1-with-allow_insecure_http":
        set_account(ks, dav, dav.url, allow_insecure_http="true")
    elif case == "127.0.0.2":
        front = fronts.start(backend=dav, host="127.0.0.2")
        set_account(ks, dav, front.url)
    else:
        front = fronts.start(backend=dav)
        set_account(ks, dav, front.url_for("/", host="localhost"))
    ks.sync(timeout=RUN_TIMEOUT)
    checks.check_mirror(ks, dav, ACCOUNT)


# -- 3. Redirects --------------------------------------------------------------------------------

def _redirect_base(status, location):
    def route(front, seen):
        if urllib.parse.urlsplit(seen.path).path == "/dav/":
            return redirect(status, location(front))
        return None
    return route


@pytest.mark.parametrize("status,absolute", [(301, False), (302, True), (307, False),
                                             (308, True)])
def test_redirect_same_host_followed(dav, fronts, ks, status, absolute):
    front = fronts.start(backend=dav, route=_redirect_base(
        status, lambda f: f.url_for(dav.principal) if absolute else dav.principal))
    set_account(ks, dav, front.url_for("/dav/"))
    r = ks.sync(timeout=RUN_TIMEOUT)
    assert not checks.failure_lines(r.stderr, ACCOUNT), r.stderr
    checks.check_mirror(ks, dav, ACCOUNT)
    seen = front.seen()
    first = next((i for i, s in enumerate(seen) if s.path == "/dav/"), None)
    assert first is not None, [(s.method, s.path) for s in seen]
    after = seen[first + 1] if first + 1 < len(seen) else None
    assert after is not None and after.path == dav.principal and after.method == "PROPFIND", (
        "the redirect was not followed with PROPFIND %s: %r" % (
            dav.principal, [(s.method, s.path) for s in seen]))
    assert after.body == seen[first].body, "the PROPFIND body was not sent again"
    assert after.header("Authorization"), "no credentials on the same host after the redirect"


@pytest.mark.parametrize("target,scheme,status", [
    ("127.0.0.2", "http", 307),
    ("localhost", "http", 301),
    ("other-port", "http", 302),
    ("127.0.0.2", "https", 308),
])
def test_redirect_other_host_gets_no_credentials(dav, certs, fronts, ks, target, scheme, status):
    """A redirect off the account's origin: the other host never gets the credentials."""
    cert = certs.front if scheme == "https" else None
    extra = {"ca_file": cert.cert} if cert else {}
    if target == "127.0.0.2":
        a, b = fronts.pair(["127.0.0.1", "127.0.0.2"], backend=dav, cert=cert)
        location = b.url_for(dav.principal)
    elif target == "localhost":
        a = b = fronts.start(backend=dav, cert=cert)
        location = a.url_for(dav.principal, host="localhost")
    else:
        a = fronts.start(backend=dav, cert=cert)
        b = fronts.start(backend=dav, cert=cert)
        location = b.url_for(dav.principal)
    a.route = _redirect_base(status, lambda f: location)
    set_account(ks, dav, a.url_for("/dav/"), **extra)
    r = ks.run(timeout=RUN_TIMEOUT)

    target_host = urllib.parse.urlsplit(location).netloc
    on_target = [s for s in b.seen() if (s.header("Host") or "") == target_host]
    on_base = [s for s in a.seen() if s.path == "/dav/"]
    assert on_base and on_base[0].header("Authorization"), (
        "the account's own host got no credentials: %r" % [(s.method, s.path) for s in on_base])
    # ksyncd does not follow a redirect off the account's origin at all; had it followed
    # it, no credentials may have gone along.
    assert not on_target or r.rc == 0, describe(r)
    with_auth = [(s.method, s.path, s.header("Authorization")) for s in on_target
                 if s.header("Authorization")]
    assert not with_auth, "credentials sent to %s after a redirect: %r" % (target_host,
                                                                          with_auth)
    header_text = "\n".join("%s: %s" % kv for s in on_target for kv in s.headers)
    assert not leaks(header_text, [dav.password]), header_text


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_https_to_http_refused(dav, certs, fronts, ks, status):
    plain = fronts.start(backend=dav)
    front = fronts.start(backend=dav, cert=certs.front,
                         route=lambda f, s: redirect(status, plain.url_for(s.path)))
    set_account(ks, dav, front.url_for("/dav/"), ca_file=certs.front.cert)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert r.rc != 0, describe(r)
    assert front.seen(), "the https front got no request:\n%s" % describe(r)
    st = plain.stats()
    assert st["connections"] == 0 and st["requests"] == 0, (
        "ksyncd followed https -> http: %r %r" % (st, [(s.method, s.path) for s in plain.seen()]))
    msg = failure_text(r)
    problems = []
    if not re.search(r"redirect", msg, re.I):
        problems.append("does not say that a redirect was refused")
    if not re.search(r"http://|plain http|unencrypted|insecure", msg, re.I):
        problems.append("does not say that the redirect led to plain http")
    if re.search(r"not supported or disabled in libcurl", msg):
        problems.append("blames libcurl's build")
    assert not problems, "the message %s:\n%s" % ("; ".join(problems), describe(r))


def test_redirect_loopback_http_to_other_host_http_refused(dav, fronts, ks):
    """An http:// account on loopback (allowed without allow_insecure_http) redirected to plain
    http on a host that is not loopback: the config would refuse that URL, so must the redirect.
    Only ksyncd's first connect() is real (to the front); every later one is failed by strace."""
    location = "http://%s:8008" % TEST_NET
    front = fronts.start(backend=dav, route=lambda f, s: redirect(301, location + s.path))
    set_account(ks, dav, front.url_for("/dav/"))
    r, attempts, log = run_traced(ks, fail_connects_from=2, netns=False, timeout=RUN_TIMEOUT)
    assert attempts and attempts[0] == ("127.0.0.1", front.port), (attempts, log[-3000:])
    assert front.seen(), describe(r)
    tried = [a for a in attempts if a[0] == TEST_NET]
    assert not tried, ("ksyncd followed a redirect from http://127.0.0.1 to plain http on %s "
                       "(connect() attempts %r) although allow_insecure_http is not set:\n%s"
                       % (TEST_NET, tried, describe(r)))
    assert r.rc != 0, describe(r)


def _multistatus(href, props):
    body = ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<D:multistatus xmlns:D="DAV:" xmlns:C="%s" xmlns:A="%s"><D:response>'
            '<D:href>%s</D:href><D:propstat><D:prop>%s</D:prop>'
            '<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>'
            % (servers.CALDAV, servers.CARDDAV, href, props))
    return Reply(207, [("Content-Type", "application/xml; charset=utf-8")], body.encode())


@pytest.mark.parametrize("where", ["principal", "home-sets"])
def test_hrefs_to_other_host_get_no_credentials(dav, fronts, ks, where):
    """A server that names a principal or home sets on another host (absolute hrefs): ksyncd
    sends no credentials there."""
    a, b = fronts.pair(["127.0.0.1", "127.0.0.2"], backend=dav)
    elsewhere = b.url_for(dav.principal)

    def route(front, seen):
        path = urllib.parse.urlsplit(seen.path).path
        if seen.method != "PROPFIND":
            return None
        if where == "principal" and path == "/":
            return _multistatus("/", "<D:current-user-principal><D:href>%s</D:href>"
                                "</D:current-user-principal>" % elsewhere)
        if where == "home-sets" and path == dav.principal and b"home-set" in seen.body:
            return _multistatus(dav.principal,
                                "<C:calendar-home-set><D:href>%s</D:href></C:calendar-home-set>"
                                "<A:addressbook-home-set><D:href>%s</D:href>"
                                "</A:addressbook-home-set>" % (elsewhere, elsewhere))
        return None

    a.route = route
    set_account(ks, dav, a.url)
    r = ks.run(timeout=RUN_TIMEOUT)
    assert a.seen() and a.seen()[0].header("Authorization"), describe(r)
    with_auth = [(s.method, s.path) for s in b.seen() if s.header("Authorization")]
    assert not with_auth, "credentials sent to %s: %r\n%s" % (elsewhere, with_auth, describe(r))
    assert not leaks("\n".join("%s: %s" % kv for s in b.seen() for kv in s.headers),
                     [dav.password])


# -- 4. The password never appears ---------------------------------------------------------------

@pytest.mark.parametrize("password_via", ["file", "command"])
def test_password_absent_from_output_and_files_on_success(dav, certs, fronts, ks, password_via):
    front = fronts.start(backend=dav, cert=certs.front)
    set_account(ks, dav, front.url, password_via=password_via, ca_file=certs.front.cert)
    r = ks.sync("--log-level", "debug", timeout=RUN_TIMEOUT)
    assert front.seen() and front.seen()[0].header("Authorization"), "no credentials were sent"
    assert not leaks(output(r), [dav.password]), describe(r)
    stored = [hit for d in (ks.data_dir, ks.runtime_dir, ks.cache_home)
              for hit in files_containing(d, [dav.password])]
    assert not stored, "the password was written to %r" % stored


@pytest.mark.parametrize("case", ["wrong-password", "tls-unverified", "connection-refused",
                                  "base-url-404"])
def test_password_absent_from_output_on_failure(dav, certs, fronts, ks, case):
    wrong = "Wr0ng-%s-Pw" % secrets.token_hex(6)
    passwords = [dav.password, wrong]
    if case == "wrong-password":
        set_account(ks, dav, dav.url, password=wrong)
    elif case == "tls-unverified":
        front = fronts.start(backend=dav, cert=certs.front)
        set_account(ks, dav, front.url)
    elif case == "connection-refused":
        set_account(ks, dav, "http://127.0.0.1:%d/" % servers.free_port())
    else:
        front = fronts.start(route=lambda f, s: Reply(404, [("Content-Type", "text/plain")],
                                                      b"nothing here\n"))
        set_account(ks, dav, front.url_for("/nowhere/"))
    for level in ("notice", "debug"):
        r = ks.run("--log-level", level, timeout=RUN_TIMEOUT)
        assert r.rc != 0, describe(r)
        assert not leaks(output(r), passwords), describe(r)
        if case == "wrong-password":
            msg = failure_text(r)
            assert re.search(r"authenticat", msg, re.I), describe(r)
            assert re.search(r"application password", msg, re.I), describe(r)


def _proc_tree(root):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def _read_proc(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def test_password_absent_from_process_list(dav, ks):
    """password_command sleeps 2 s, then prints the password; meanwhile the command lines and
    environments of ksyncd and all its descendants are read again and again."""
    script = ks.secrets / "pwcmd.sh"
    pwfile = ks.secrets / "real.password"
    pwfile.write_text(dav.password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    script.write_text("#!/bin/sh\nsleep 2\nexec cat %s\n" % pwfile)
    script.chmod(0o700)
    set_account(ks, dav, dav.url)
    ks.accounts[ACCOUNT].pop("password_file")
    ks.accounts[ACCOUNT]["password_command"] = str(script)
    ks.write_config()

    argv = [str(ks.ksyncd), "--once", "--log-level", "debug"]
    p = subprocess.Popen(argv, env=ks.env(), cwd=ks.home, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    found, seen_cmds, samples = [], set(), 0
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while p.poll() is None and time.monotonic() < deadline:
            for pid in _proc_tree(p.pid):
                cmd = _read_proc(pid, "cmdline")
                env = _read_proc(pid, "environ")
                if cmd is None:
                    continue
                seen_cmds.add(cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip())
                for what, data in (("cmdline", cmd), ("environ", env or b"")):
                    for hit in leaks(data.replace(b"\0", b" "), [dav.password]):
                        found.append((pid, what, hit))
            samples += 1
            time.sleep(0.02)
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    r = ksync.Result(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    assert r.rc == 0, describe(r)
    assert any("pwcmd.sh" in c or c.startswith("sleep") for c in seen_cmds), (
        "the password command was never seen running (%d samples): %r" % (samples, seen_cmds))
    assert not found, "password in the process list: %r" % found
    assert not leaks(output(r), [dav.password]), describe(r)


SECRET = "Hunter2-%s" % secrets.token_hex(6)


@pytest.mark.parametrize("case", [
    "userinfo-in-url",
    "userinfo-in-url-with-space",
    "userinfo-in-url-bad-scheme",
    "colon-in-username",
    "password-key",
    "password-command-fails",
])
def test_config_messages_do_not_echo_secrets(dav, ks, case):
    pw = ks.secrets / "pw"
    pw.write_text(dav.password + "\n")
    pw.chmod(0o600)
    lines = ["[account %s]" % ACCOUNT, "username = %s" % servers.USERNAME]
    if case == "userinfo-in-url":
        lines += ["url = http://user:%s@127.0.0.1:%d/" % (SECRET, dav.port),
                  "password_file = %s" % pw]
    elif case == "userinfo-in-url-with-space":
        lines += ["url = http://user:%s x@127.0.0.1:%d/" % (SECRET, dav.port),
                  "password_file = %s" % pw]
    elif case == "userinfo-in-url-bad-scheme":
        lines += ["url = htp://user:%s@127.0.0.1:%d/" % (SECRET, dav.port),
                  "password_file = %s" % pw]
    elif case == "colon-in-username":
        lines = ["[account %s]" % ACCOUNT, "username = user:%s" % SECRET,
                 "url = %s" % dav.url, "password_file = %s" % pw]
    elif case == "password-key":
        lines += ["url = %s" % dav.url, "password = %s" % SECRET]
    else:
        script = ks.secrets / "failing.sh"
        script.write_text("#!/bin/sh\nprintf '%%s\\n' '%s'\nexit 3\n" % SECRET)
        script.chmod(0o700)
        lines += ["url = %s" % dav.url, "password_command = %s" % script]
    ks.write_config("\n".join(lines) + "\n")
    for level in ("notice", "debug"):
        r = ks.run("--log-level", level, timeout=SHORT_TIMEOUT)
        assert r.rc != 0, describe(r)
        assert not leaks(output(r), [SECRET]), "the secret is echoed:\n%s" % describe(r)
        if case == "password-command-fails":
            assert re.search(r"password_command", output(r)), describe(r)


# -- 5. password_file ----------------------------------------------------------------------------

def _refused_file_account(ks, dav, fronts, path):
    front = fronts.start(backend=dav)
    set_account(ks, dav, front.url)
    ks.accounts[ACCOUNT]["password_file"] = str(path)
    ks.write_config()
    return front


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o666],
                         ids=lambda m: "%04o" % m)
def test_password_file_readable_by_others_refused(dav, fronts, ks, mode):
    path = ks.secrets / "loose.password"
    path.write_text(dav.password + "\n")
    path.chmod(mode)
    front = _refused_file_account(ks, dav, fronts, path)
    r = ks.run(timeout=SHORT_TIMEOUT)
    assert r.rc != 0, describe(r)
    msg = failure_text(r)
    assert str(path) in msg and "chmod 600" in msg, describe(r)
    assert front.seen() == [], "requests were made with a refused password file: %r" % (
        [(s.method, s.path) for s in front.seen()],)
    assert not leaks(output(r), [dav.password]), describe(r)


def test_password_file_0600_and_0400_accepted(dav, fronts, ks):
    path = ks.secrets / "tight.password"
    path.write_text(dav.password + "\n")
    for mode in (0o600, 0o400):
        path.chmod(mode)
        front = _refused_file_account(ks, dav, fronts, path)
        ks.sync(timeout=RUN_TIMEOUT)
        assert front.seen()


@pytest.mark.parametrize("kind", ["symlink-to-0600-file", "symlink-to-0644-file",
                                  "dangling-symlink"])
def test_password_file_symlink_refused(dav, fronts, ks, kind):
    target = ks.secrets / "target.password"
    if kind != "dangling-symlink":
        target.write_text(dav.password + "\n")
        target.chmod(0o600 if kind == "symlink-to-0600-file" else 0o644)
    link = ks.secrets / "link.password"
    os.symlink(target, link)
    front = _refused_file_account(ks, dav, fronts, link)
    r = ks.run(timeout=SHORT_TIMEOUT)
    assert r.rc != 0, describe(r)
    msg = failure_text(r)
    assert str(link) in msg and re.search(r"symbolic link|symlink", msg), describe(r)
    assert front.seen() == []
    assert not leaks(output(r), [dav.password]), describe(r)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_password_file_not_regular_refused(dav, fronts, ks, kind):
    path = ks.secrets / "odd.password"
    if kind == "directory":
        path.mkdir(mode=0o700)
    else:
        os.mkfifo(path, 0o600)
    front = _refused_file_account(ks, dav, fronts, path)
    r = ks.run(timeout=SHORT_TIMEOUT)
    assert r.rc != 0, describe(r)
    assert str(path) in failure_text(r), describe(r)
    assert front.seen() == []


def test_password_file_owned_by_another_user_refused(dav, fronts, ks):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    path = ks.secrets / "foreign.password"
    path.write_text(dav.password + "\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    front = _refused_file_account(ks, dav, fronts, path)
    r = ks.run(timeout=SHORT_TIMEOUT)
    assert r.rc != 0, describe(r)
    msg = failure_text(r)
    assert str(path) in msg and "owned" in msg, describe(r)
    assert front.seen() == []
