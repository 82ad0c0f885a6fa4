"""A real Secret Service for the tests: gnome-keyring-daemon on a test's private session bus.

`Keyring(env)` starts `gnome-keyring-daemon --foreground --unlock --components=secrets` with
the environment of a test (its HOME, XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS), which
creates and unlocks a "login" keyring with a known password read from stdin; stop() ends it.
Every wait is bounded."""

import subprocess
import time

KEYRING_PASSWORD = "keyring-test-password"
START_TIMEOUT = 20


class Keyring:
    def __init__(self, env):
        self.env = dict(env)
        self.proc = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self.env, cwd=self.env["HOME"])
        self.proc.stdin.write(KEYRING_PASSWORD.encode())
        self.proc.stdin.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gnome-keyring-daemon exited %d: %s" % (
                    self.proc.returncode, self.proc.stderr.read().decode(errors="replace")))
            if "/collection/login" in self.call("ReadAlias", "s", "default").stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gnome-keyring-daemon did not offer the login keyring within %ds"
                           % START_TIMEOUT)

    def call(self, method, signature="", *args, path="/org/freedesktop/secrets",
             interface="org.freedesktop.Secret.Service"):
        argv = ["busctl", "--user", "--timeout=10", "call", "org.freedesktop.secrets", path,
                interface, method]
        if signature:
            argv += [signature] + [str(a) for a in args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=20)

    def store(self, password, *attrs, label="test"):
        """`secret-tool store` of password under attrs ("key", "value", ...)."""
        p = subprocess.run(["secret-tool", "store", "--label=%s" % label] + list(attrs),
                           input=password, env=self.env, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        return p

    def lookup(self, *attrs):
        """`secret-tool lookup`: the password, or None when nothing matches."""
        p = subprocess.run(["secret-tool", "lookup"] + list(attrs), env=self.env,
                           capture_output=True, text=True, timeout=30)
        return p.stdout if p.returncode == 0 else None

    def lock(self):
        """Locks the login keyring, as a screen lock or a timeout would."""
        r = self.call("Lock", "ao", 1, "/org/freedesktop/secrets/collection/login")
        assert r.returncode == 0, r.stderr

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
