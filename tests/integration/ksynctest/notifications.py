"""A desktop notification service of our own on a test's private session bus.

`Notifications(env, log_path)` runs this module as a process that owns
org.freedesktop.Notifications (as a desktop's notification daemon does), answers Notify with a
new id, and writes every Notify call, and every Alert and AlertCleared signal of ksyncd, as a
JSON line to log_path; `calls()` and `alerts()` read them back. stop() ends it. Every wait is
bounded."""

import json
import os
import subprocess
import sys
import time

START_TIMEOUT = 20


class Notifications:
    def __init__(self, env, log_path):
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ksynctest.notifications", str(log_path)],
            env=dict(env, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
            if self.proc.poll() is not None:
                break
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError("the notification service did not start: %s" %
                               self.proc.stderr.read().decode(errors="replace"))

    def _entries(self):
        try:
            with open(self.log_path, encoding="utf-8") as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return []

    def calls(self):
        return [e for e in self._entries() if e["what"] == "Notify"]

    def alerts(self):
        return [e for e in self._entries() if e["what"] in ("Alert", "AlertCleared")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve(log_path):
    import dbus
    import dbus.mainloop.glib
    import dbus.service
    from gi.repository import GLib

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    out = open(log_path, "a", encoding="utf-8")

    def log(entry):
        out.write(json.dumps(entry) + "\n")
        out.flush()

    class Service(dbus.service.Object):
        next_id = 0

        @dbus.service.method("org.freedesktop.Notifications", in_signature="susssasa{sv}i",
                             out_signature="u")
        def Notify(self, app, replaces, icon, summary, body, actions, hints, timeout):
            Service.next_id += 1
            log({"what": "Notify", "app": str(app), "replaces": int(replaces),
                 "summary": str(summary), "body": str(body),
                 "urgency": int(hints.get("urgency", 1)), "id": Service.next_id})
            return dbus.UInt32(Service.next_id)

        @dbus.service.method("org.freedesktop.Notifications", out_signature="as")
        def GetCapabilities(self):
            return ["body"]

        @dbus.service.method("org.freedesktop.Notifications", out_signature="ssss")
        def GetServerInformation(self):
            return ["ksynctest", "ksync", "1", "1.2"]

        @dbus.service.method("org.freedesktop.Notifications", in_signature="u")
        def CloseNotification(self, nid):
            pass

    def on_alert(*args, member=None):
        names = ("account", "kind", "collection", "summary", "body")
        log(dict({"what": str(member)}, **{n: str(a) for n, a in zip(names, args)}))

    for member in ("Alert", "AlertCleared"):
        bus.add_signal_receiver(on_alert, signal_name=member, dbus_interface="io.ksync.Sync1",
                                member_keyword="member")
    name = dbus.service.BusName("org.freedesktop.Notifications", bus)
    Service(bus, "/org/freedesktop/Notifications")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, 15, loop.quit)
    loop.run()
    del name


if __name__ == "__main__":
    _serve(sys.argv[1])
