"""A private D-Bus session bus and a running ksyncd for the daemon tests.

`Daemon(ks)` starts `dbus-daemon --session` on a socket in the test's runtime dir and
`ksyncd` (without --once) on it, with NOTIFY_SOCKET pointing at a datagram socket the test
reads, so that READY=1, STATUS= and STOPPING=1 are seen as systemd would see them. Every
wait is bounded; stop() ends both, also after a failure."""

import json
import signal
import socket
import subprocess
import threading
import time

from .ksync import Result, check_no_sanitizer_report

READY_TIMEOUT = 20
# KS_IPC_VERSION of lib/util/ipc.h, which every method takes first.
IPC_VERSION = 2

SESSION_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path=%(socket)s</listen>
  <servicedir>%(services)s</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
RUN_TIMEOUT = 120


class Daemon:
    def __init__(self, ks, log_level="info"):
        self.ks = ks
        self.notify_path = str(ks.runtime_dir / "notify.sock")
        self.notifications = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        # Read at once, as systemd does: a datagram socket holds only a few unread messages
        # (net.unix.max_dgram_qlen), and past them ksyncd's sd_notify() would block.
        self.sock.settimeout(0.2)
        self._notes_lock = threading.Lock()
        self._pending_notes = []
        self._reading = True
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        bus_sock = ks.runtime_dir / "bus"
        # The bus activates only what the test puts in its own service directory, never the
        # machine's services (a keyring daemon would start by itself there).
        self.services_dir = ks.root / "dbus-services"
        self.services_dir.mkdir(exist_ok=True)
        conf = ks.root / "session-bus.conf"
        conf.write_text(SESSION_CONF % {"services": self.services_dir,
                                        "socket": bus_sock})
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--config-file=%s" % conf, "--nofork", "--nopidfile",
             "--print-address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ks.env())
        self.address = self.bus.stdout.readline().decode().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon did not start")
        self.log_path = ks.home / "ksyncd.log"
        self.log = open(self.log_path, "wb")
        self.proc = None
        self.log_level = log_level
        # No system bus unless a test gives one (a fake NetworkManager's).
        self.system_bus_address = "unix:path=%s" % (ks.runtime_dir / "no-system-bus")

    def make_activatable(self, log_level="info"):
        """Lets the bus start ksyncd by D-Bus activation, as an installed
        io.ksync.Sync1.service would (its output goes to the bus's stderr)."""
        (self.services_dir / "io.ksync.Sync1.service").write_text(
            "[D-BUS Service]\nName=io.ksync.Sync1\nExec=%s --log-level %s\n"
            % (self.ks.ksyncd, log_level))

    def env(self, **extra):
        return self.ks.env(DBUS_SESSION_BUS_ADDRESS=self.address,
                           DBUS_SYSTEM_BUS_ADDRESS=self.system_bus_address, **extra)

    def start(self, wait_ready=True):
        level = ["--log-level", self.log_level] if self.log_level else []
        self.proc = subprocess.Popen(
            [str(self.ks.ksyncd)] + level, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
            env=self.env(NOTIFY_SOCKET=self.notify_path), cwd=self.ks.home)
        if wait_ready:
            self.wait_notify("READY=1", READY_TIMEOUT)
        return self

    def _read_loop(self):
        while self._reading:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._notes_lock:
                self._pending_notes.extend(data.decode().split("\n"))

    def read_notifications(self):
        with self._notes_lock:
            self.notifications.extend(self._pending_notes)
            self._pending_notes = []
        return self.notifications

    def wait_notify(self, what, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n.startswith(what) for n in self.read_notifications()):
                return
            if self.proc.poll() is not None:
                raise AssertionError("ksyncd exited %d before %s:\n%s" % (
                    self.proc.returncode, what, self.log_text()))
            time.sleep(0.05)
        raise AssertionError("no %s from ksyncd within %ds:\n%s" % (what, timeout,
                                                                   self.log_text()))

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def ctl(self, *args, timeout=RUN_TIMEOUT, env=None):
        """Runs ksyncctl ARGS on the private bus; Result(rc, stdout, stderr)."""
        ctl = self.ks.ksyncd.parent / "ksyncctl"
        p = subprocess.run([str(ctl)] + [str(a) for a in args], env=env or self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           cwd=self.ks.home)
        r = Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"))
        check_no_sanitizer_report("ksyncctl " + " ".join(map(str, args)), r.stderr)
        return r

    def busctl(self, method, signature, *args, timeout=30):
        argv = ["busctl", "--user", "--timeout=%d" % timeout, "--json=short", "call",
                "io.ksync.Sync1", "/io/ksync/Sync1", "io.ksync.Sync1", method, signature]
        p = subprocess.run(argv + [str(a) for a in args], env=self.env(), capture_output=True,
                           timeout=timeout + 5)
        return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                      p.stderr.decode("utf-8", "replace"))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=60):
        return self.proc.wait(timeout=timeout)

    def stop_service(self):
        """Stops ksyncd with SIGTERM and keeps the bus, so that start() runs it again."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        time.sleep(0.3)
        self.read_notifications()
        self.notifications = []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.bus.poll() is None:
            self.bus.terminate()
            try:
                self.bus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.bus.kill()
                self.bus.wait()
        self.log.close()
        self._reading = False
        self._reader.join(timeout=5)
        self.sock.close()
        check_no_sanitizer_report("ksyncd's log", self.log_path.read_text(errors="replace"))


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def status(d):
    """ksyncctl status --json, read."""
    r = d.ctl("status", "--json")
    assert r.rc == 0, "ksyncctl status --json: rc %d\n%s%s" % (r.rc, r.stdout, r.stderr)
    return json.loads(r.stdout)


def account_status(d, account="acct"):
    """The status of one account, which must be there once."""
    accts = [a for a in status(d)["accounts"] if a["name"] == account]
    assert len(accts) == 1, status(d)
    return accts[0]


def synced_ok(d, account="acct"):
    """The account's status once it is idle after a run that went well, else False."""
    a = account_status(d, account)
    return a["state"] == "idle" and a["last_result"] == "ok" and a
