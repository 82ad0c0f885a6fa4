"""HTTP and HTTPS fronts for the TLS, redirect, credential and fault-injection tests.

make_cert() makes a self-signed certificate with the openssl CLI. Front is a threaded HTTP/1.1
server on a loopback address, plain or TLS, that records every connection, failed TLS handshake
and request (method, path, headers, body). Its `route` function decides, per request: answer it
itself (a Reply), forward it to the backend DavServer (None), forward it and rewrite the answer
(Transform), cut the connection part-way through the answer (Drop), go silent (Stall) or send
a large answer made piece by piece (Stream).
"""

import http.client
import http.server
import ipaddress
import os
import socket
import ssl
import sys
import subprocess
import threading
import time
from typing import NamedTuple

OPENSSL = "/usr/bin/openssl"
OPENSSL_TIMEOUT = 60
HANDSHAKE_TIMEOUT = 10
REQUEST_TIMEOUT = 30
BACKEND_TIMEOUT = 60
MAX_BODY = 64 << 20

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "content-length", "host"}
METHODS = ("GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PROPFIND", "PROPPATCH",
           "REPORT", "MKCOL", "MKCALENDAR", "MOVE", "COPY")


class FrontError(RuntimeError):
    pass


class Cert(NamedTuple):
    cert: str
    key: str
    hosts: tuple


class Seen(NamedTuple):
    """One request as the front received it. headers: [(name, value)] in order."""
    method: str
    path: str
    headers: list
    body: bytes
    local: tuple

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class Reply(NamedTuple):
    status: int
    headers: list = []
    body: bytes = b""


class Transform(NamedTuple):
    """Forward, then answer fn(seen, reply) -> Reply instead of the backend's reply."""
    fn: object


class Drop(NamedTuple):
    """Send the status line, the headers (with the full Content-Length) and the first `after`
    bytes of the body, then close the connection. reply None: the backend's reply."""
    after: int = 0
    reply: object = None


class Stall(NamedTuple):
    """Read the request, then send nothing for `seconds` (or until the client goes away) and
    close the connection. forward: the backend still receives the request."""
    seconds: float
    forward: bool = False


class Stream(NamedTuple):
    """Answer with `chunks` (an iterable of bytes) sent one by one with chunked transfer
    encoding, so that an answer of any size never has to be held in memory. The front stops
    quietly when the client goes away."""
    status: int
    headers: list
    chunks: object


def require_openssl():
    if not (os.path.isfile(OPENSSL) and os.access(OPENSSL, os.X_OK)):
        raise FrontError("the openssl CLI is not installed (%s; Debian package 'openssl')"
                         % OPENSSL)


def make_cert(directory, name, hosts=("127.0.0.1", "localhost", "127.0.0.2")):
    """A self-signed certificate (CA:TRUE, EC P-256, valid 2 days) for `hosts` in its
    subjectAltName, written to DIRECTORY/NAME.pem with its key in DIRECTORY/NAME.key (0600)."""
    require_openssl()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert = os.path.join(str(directory), name + ".pem")
    key = os.path.join(str(directory), name + ".key")
    san = []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
            san.append("IP:" + h)
        except ValueError:
            san.append("DNS:" + h)
    argv = [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-sha256",
            "-subj", "/CN=ksync test %s" % name,
            "-addext", "subjectAltName=" + ",".join(san),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyCertSign"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "RANDFILE": os.path.join(str(directory),
                                                                         ".rnd")}
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                       timeout=OPENSSL_TIMEOUT)
    if p.returncode != 0 or not os.path.isfile(cert):
        raise FrontError("openssl req failed (%d): %s" % (
            p.returncode, p.stderr.decode("utf-8", "replace")[-2000:]))
    os.chmod(key, 0o600)
    return Cert(cert, key, tuple(hosts))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, front, address, handler):
        self.front = front
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        front = self.front
        front._count_connection()
        if front.ssl_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = front.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            front._record_handshake_error(e)
            return None
        try:
            return super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        self.front._record_error(sys.exc_info()[1])


def _read_body(handler):
    te = (handler.headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        out = bytearray()
        while True:
            line = handler.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise FrontError("request body too large")
            out += handler.rfile.read(size)
            handler.rfile.readline(16)
    length = int(handler.headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        raise FrontError("request body too large")
    return handler.rfile.read(length) if length else b""


class Front:
    """A recording HTTP(S) front on HOST:PORT (port 0: a free one).

    backend: a DavServer (or anything with .port on 127.0.0.1) requests are forwarded to;
    route(front, seen) -> Reply, None, Transform, Drop or Stall (see those; without a backend,
    a forwarded request is answered 404). cert: a Cert to serve TLS with."""

    def __init__(self, backend=None, host="127.0.0.1", port=0, cert=None, route=None):
        self.backend = backend
        self.host = host
        self.route = route
        self.cert = cert
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        self.handshake_errors = []
        self.errors = []
        self.ssl_context = None
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert.cert, cert.key)
            self.ssl_context = ctx
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = REQUEST_TIMEOUT

            def log_message(self, fmt, *args):
                pass

            def _reply(self, reply):
                self.send_response(reply.status)
                for k, v in reply.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            def _drop(self, reply, after):
                self.send_response(reply.status)
                for k, v in reply.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body[:after])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _stream(self, action):
                self.send_response(action.status)
                for k, v in action.headers:
                    self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in action.chunks:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

            def _stall(self, seconds):
                self.close_connection = True
                self.connection.settimeout(seconds)
                deadline = time.monotonic() + seconds
                try:
                    while time.monotonic() < deadline:
                        if not self.connection.recv(4096):
                            return
                except OSError:
                    return

            def _any(self):
                body = _read_body(self)
                seen = Seen(self.command, self.path, list(self.headers.items()), body,
                            self.server.server_address[:2])
                with front.lock:
                    front.requests.append(seen)
                action = front.route(front, seen) if front.route else None
                if isinstance(action, Reply):
                    self._reply(action)
                    return
                if isinstance(action, Stream):
                    self._stream(action)
                    return
                if isinstance(action, Stall):
                    if action.forward and front.backend is not None:
                        front._forward(seen)
                    self._stall(action.seconds)
                    return
                if front.backend is None:
                    reply = Reply(404)
                elif isinstance(action, Drop) and action.reply is not None:
                    reply = action.reply
                else:
                    reply = front._forward(seen)
                if isinstance(action, Transform):
                    reply = action.fn(seen, reply)
                if isinstance(action, Drop):
                    self._drop(reply, action.after)
                    return
                self._reply(reply)

        for m in METHODS:
            setattr(Handler, "do_" + m, Handler._any)
        self.httpd = _Server(self, (host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def scheme(self):
        return "https" if self.cert is not None else "http"

    def url_for(self, path="/", host=None):
        h = host or self.host
        if ":" in h:
            h = "[%s]" % h
        return "%s://%s:%d%s" % (self.scheme, h, self.port, path)

    @property
    def url(self):
        return self.url_for("/")

    def __repr__(self):
        return "<Front %s>" % self.url

    # -- records -------------------------------------------------------------------------------

    def _count_connection(self):
        with self.lock:
            self.connections += 1

    def _record_handshake_error(self, e):
        with self.lock:
            self.handshake_errors.append("%s: %s" % (type(e).__name__, e))

    def _record_error(self, e):
        with self.lock:
            self.errors.append("%s: %s" % (type(e).__name__, e))

    def seen(self):
        with self.lock:
            return list(self.requests)

    def stats(self):
        with self.lock:
            return {"connections": self.connections, "requests": len(self.requests),
                    "handshake_errors": list(self.handshake_errors)}

    # -- forwarding ----------------------------------------------------------------------------

    def forward(self, seen):
        """Sends `seen` (possibly a Seen._replace()d copy with another body or path) to the
        backend and returns its Reply; for routes that rewrite a request before forwarding."""
        return self._forward(seen)

    def _forward(self, seen):
        headers = {k: v for k, v in seen.headers if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection("127.0.0.1", self.backend.port,
                                          timeout=BACKEND_TIMEOUT)
        try:
            conn.request(seen.method, seen.path, body=seen.body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = []
            backend_base = "http://127.0.0.1:%d" % self.backend.port
            for k, v in resp.getheaders():
                if k.lower() in HOP_BY_HOP or k.lower() in ("server", "date"):
                    continue
                if k.lower() == "location" and v.startswith(backend_base):
                    v = self.url_for(v[len(backend_base):] or "/")
                out.append((k, v))
            return Reply(resp.status, out, data)
        finally:
            conn.close()

    # -- lifetime ------------------------------------------------------------------------------

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def redirect(status, location):
    """A redirect Reply."""
    return Reply(status, [("Location", location), ("Content-Type", "text/plain")],
                 b"moved\n")


def start_pair(hosts, **kw):
    """Fronts on the same free port of each address in `hosts` (for example 127.0.0.1 and
    127.0.0.2), so that they differ only in the host. Retries when a port is taken meanwhile."""
    last = None
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        started = []
        try:
            for h in hosts:
                started.append(Front(host=h, port=port, **kw))
            return started
        except OSError as e:
            last = e
            for f in started:
                f.stop()
            time.sleep(0.05)
    raise FrontError("no port free on all of %s: %s" % (hosts, last))

