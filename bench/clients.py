"""The clients under test (ksync, vdirsyncer, raw curl) and the edits the scenarios make."""

import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import (Measure, cfg_quote, clean_env, count_items, count_marked, file_state,
                    run_measured, snapshot, snapshot_diff, xml_escape)
from ksynctest.ksync import KsyncHome

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CALDAV = "urn:ietf:params:xml:ns:caldav"
MULTIGET_BATCH = 100
ACCOUNT = "bench"


# --------------------------------------------------------------------------- collections

@dataclass
class Collection:
    kind: str          # "contacts" | "events"
    name: str
    href: str
    url: str
    count: int
    changed_hrefs: list = field(default_factory=list)
    uids: dict = field(default_factory=dict)      # seeded item href -> UID
    sync: bool = True      # the server offers sync-collection (a sync-token) on it

    @property
    def ext(self):
        return ".vcf" if self.kind == "contacts" else ".ics"

    @property
    def multiget(self):
        if self.kind == "contacts":
            return "addressbook-multiget", CARDDAV, "address-data"
        return "calendar-multiget", CALDAV, "calendar-data"


def marker_for(rev):
    return f"X-KSYNC-BENCH:rev{rev}"


def with_marker(data, rev):
    """data with an X-KSYNC-BENCH property (replacing an older one) in its first component."""
    nl = b"\r\n" if b"\r\n" in data else b"\n"
    lines = [ln for ln in data.split(nl) if not ln.startswith(b"X-KSYNC-BENCH:")]
    for i, ln in enumerate(lines):
        if ln in (b"END:VCARD", b"END:VEVENT", b"END:VTODO", b"END:VJOURNAL"):
            lines.insert(i, marker_for(rev).encode())
            break
    else:
        raise ValueError("no component end found")
    return nl.join(lines)


def body_of(got):
    if isinstance(got, (tuple, list)):
        got = got[0]
    if isinstance(got, str):
        got = got.encode()
    return got


def modify_items(server, coll, n, rev):
    """Modify n items of coll by PUT, spread over the collection; remember their hrefs."""
    hrefs = sorted(server.list(coll.href))
    if not hrefs:
        return
    step = max(1, len(hrefs) // n)
    chosen = hrefs[::step][:n]
    for h in chosen:
        server.put(h, with_marker(body_of(server.get(h)), rev))
    coll.changed_hrefs = chosen


# --------------------------------------------------------------------------- local edits (upload)

def upload_marker(client_name, rnd):
    """The text a client's local edits put in NOTE/DESCRIPTION in round rnd: distinct per
    client and per round, so that no edit gives an item bytes it had before. vdirsyncer keeps
    the hash of a local item it replaced with a download in its status, and takes an edit that
    brings those bytes back for no change: with the same marker in every round, its upload in
    round 2 would find nothing to send."""
    return f"ksync-bench-upload-by-{client_name}-round{rnd}-end"


def choose_upload_hrefs(coll, n):
    """n seeded items of coll spread over it, away from the ones the 'changed' scenario PUT."""
    hrefs = sorted(coll.uids)
    if n <= 0 or not hrefs:
        return []
    step = max(1, len(hrefs) // n)
    avoid = set(coll.changed_hrefs)
    chosen = [h for h in hrefs[step // 2::step] if h not in avoid][:n]
    if len(chosen) < n:
        taken = set(chosen)
        chosen += [h for h in hrefs if h not in taken and h not in avoid][:n - len(chosen)]
    return chosen[:n]


def with_note(data, kind, marker):
    """data with the NOTE (vCard) or DESCRIPTION (first VEVENT, not its VALARMs) property set to
    marker: existing ones (folded lines included) are removed and one is added before the
    component's first sub-component or its END. The file's line endings are kept."""
    comp, prop = (b"VCARD", b"NOTE") if kind == "contacts" else (b"VEVENT", b"DESCRIPTION")
    nl = b"\r\n" if b"\r\n" in data else b"\n"
    out = []
    state = "before"      # before the component, in it, after it
    depth = 0             # sub-component nesting inside the component
    inserted = skipping = False
    for ln in data.split(nl):
        cont = ln[:1] in (b" ", b"\t")
        if skipping and cont:
            continue
        skipping = False
        up = ln.upper().rstrip()
        if state == "before":
            if up == b"BEGIN:" + comp:
                state = "in"
        elif state == "in" and not cont:
            if depth == 0 and (up.startswith(b"BEGIN:") or up == b"END:" + comp) \
                    and not inserted:
                out.append(prop + b":" + marker.encode())
                inserted = True
            if up.startswith(b"BEGIN:"):
                depth += 1
            elif up.startswith(b"END:"):
                if depth == 0:
                    state = "after"
                depth -= 1
            elif depth == 0 and re.split(rb"[;:]", up, maxsplit=1)[0].split(b".")[-1] == prop:
                skipping = True
                continue
        out.append(ln)
    if not inserted:
        raise ValueError(f"no {comp.decode()} component found")
    return nl.join(out)


def uid_of(data):
    m = re.search(rb"(?m)^UID:([^\r\n]*)", data)
    return m.group(1).decode("utf-8", "replace").strip() if m else None


def files_by_uid(root, ext):
    """{UID: path} of the item files ending in ext under root."""
    got = {}
    root = Path(root)
    if not root.exists():
        return got
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(ext) and not f.startswith("."):
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    u = uid_of(fh.read())
                if u:
                    got.setdefault(u, p)
    return got


def edit_file(path, kind, marker):
    """Rewrite path with the marker, as editors do: a temp file in the same directory renamed
    over the original."""
    with open(path, "rb") as f:
        data = f.read()
    new = with_note(data, kind, marker)
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.bench-edit")
    with open(tmp, "wb") as f:
        f.write(new)
    os.replace(tmp, path)


def edit_local_items(roots, plan, marker):
    """Edit the local files of the items in plan ([(Collection, [hrefs])]) found by UID under
    roots ({kind: directory}); returns the number edited. Missing files raise."""
    n = 0
    index = {}
    for coll, hrefs in plan:
        if not hrefs:
            continue
        if coll.kind not in index:
            index[coll.kind] = files_by_uid(roots[coll.kind], coll.ext)
        byuid = index[coll.kind]
        missing = [coll.uids[h] for h in hrefs if coll.uids[h] not in byuid]
        if missing:
            raise RuntimeError(f"{len(missing)} of the items to edit in '{coll.name}' have no "
                               f"local file, e.g. UID {missing[0]}")
        for h in hrefs:
            edit_file(byuid[coll.uids[h]], coll.kind, marker)
            n += 1
    return n


def count_on_server(server, coll, hrefs, marker):
    """(items among hrefs whose server copy holds marker, items missing) by one multiget."""
    if not hrefs:
        return 0, 0
    report, ns, data = coll.multiget
    body = ('<?xml version="1.0" encoding="utf-8"?>'
            f'<X:{report} xmlns:D="DAV:" xmlns:X="{ns}"><D:prop><D:getetag/><X:{data}/></D:prop>'
            + "".join(f"<D:href>{xml_escape(urllib.parse.quote(h))}</D:href>" for h in hrefs)
            + f"</X:{report}>")
    resp = server.request("REPORT", coll.href, body.encode(),
                          {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                          expect=(207,))
    root = ET.fromstring(resp.content)
    found, marked = set(), 0
    for r in root.findall(f"{{{DAV}}}response"):
        href = urllib.parse.unquote(r.findtext(f"{{{DAV}}}href") or "")
        d = r.find(f".//{{{ns}}}{data}")
        if d is not None and d.text:
            found.add(urllib.parse.urlsplit(href).path)
            marked += marker in d.text
    missing = sum(1 for h in hrefs if urllib.parse.urlsplit(h).path not in found)
    return marked, missing


# --------------------------------------------------------------------------- clients

class Client:
    """One client under test, with its own state in workdir."""
    name = "?"
    label = "?"

    def __init__(self, bench, server, colls, workdir):
        self.bench = bench
        self.server = server
        self.colls = colls
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "client.log"
        self.notes = {}

    def setup(self):
        pass

    def run(self, scenario):
        raise NotImplementedError

    def item_counts(self):
        """{collection kind: items the client holds}"""
        return {}

    def marked(self, coll, rev):
        """Items of coll on disk that carry the marker of revision rev (None: not tracked)."""
        return None

    def resync(self):
        """One sync run with nothing to measure (the caller counts requests if it wants);
        raises when it fails."""
        raise NotImplementedError

    def prepare_upload(self, plan, marker):
        """Before the measured 'upload' run: catch up with the server (the other clients' edits),
        then edit the items of plan ([(Collection, [hrefs])]) locally with marker."""
        raise NotImplementedError


class KsyncClient(Client):
    name = "ksync"
    label = "ksync"

    def setup(self):
        self.home = KsyncHome(self.workdir / "ksync", build=self.bench.ksync_build)
        self.home.add_account(ACCOUNT, self.server)
        self.data = self.home.data_dir

    def run(self, scenario):
        tree = [self.data / "contacts", self.data / "calendars"]
        db = self.home.db_path
        dbfiles = [db, Path(str(db) + "-wal"), Path(str(db) + "-shm")]
        dump0 = self.home.db_dump() if scenario != "initial" else None
        before = {}
        for t in tree:
            before.update(snapshot(t))
        db_before = {str(p): file_state(p) for p in dbfiles}
        m = run_measured([self.home.ksyncd, "--once", "--config", self.home.config_path, ACCOUNT],
                         env=self.home.env(), cwd=self.home.home, log_path=self.log_path,
                         timeout=self.bench.timeout)
        after = {}
        for t in tree:
            after.update(snapshot(t))
        m.files_changed = snapshot_diff(before, after)
        if scenario != "initial":
            m.extra["db_files_touched"] = [p.name for p in dbfiles
                                           if db_before[str(p)] != file_state(p)]
            try:
                m.extra["db_rows_changed"] = dump0 != self.home.db_dump()
            except Exception as e:
                m.extra["db_rows_changed"] = None
                m.extra["db_error"] = str(e)
        return m

    def item_counts(self):
        return {
            "contacts": sum(count_items(self.data / "contacts", ".vcf").values()),
            "events": sum(count_items(self.data / "calendars", ".ics").values()),
        }

    def marked(self, coll, rev):
        sub = "contacts" if coll.kind == "contacts" else "calendars"
        return count_marked(self.data / sub, coll.ext, marker_for(rev))

    def resync(self):
        before = {}
        tree = [self.data / "contacts", self.data / "calendars"]
        for t in tree:
            before.update(snapshot(t))
        m = run_measured([self.home.ksyncd, "--once", "--config", self.home.config_path, ACCOUNT],
                         env=self.home.env(), cwd=self.home.home, log_path=self.log_path,
                         timeout=self.bench.timeout)
        after = {}
        for t in tree:
            after.update(snapshot(t))
        m.files_changed = snapshot_diff(before, after)
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        self.resync()
        edit_local_items({"contacts": self.data / "contacts" / ACCOUNT,
                          "events": self.data / "calendars" / ACCOUNT}, plan, marker)


class VdirsyncerClient(Client):
    name = "vdirsyncer"
    label = "vdirsyncer"
    exe = "/usr/bin/vdirsyncer"

    def setup(self):
        self._env = clean_env(self.workdir / "home")
        self.local = self.workdir / "vdir"
        status = self.workdir / "status"
        self.local.mkdir(exist_ok=True)
        status.mkdir(exist_ok=True)
        cfg = [f'[general]\nstatus_path = "{status}/"\n']
        kinds = sorted({c.kind for c in self.colls})
        for kind in kinds:
            dav = "carddav" if kind == "contacts" else "caldav"
            ext = ".vcf" if kind == "contacts" else ".ics"
            cfg.append(f'[pair {kind}]\na = "{kind}_remote"\nb = "{kind}_local"\n'
                       f'collections = ["from a"]\n')
            remote = [f'[storage {kind}_remote]', f'type = "{dav}"',
                      f'url = "{self.server.url}"']
            if self.server.username:
                remote.append(f'username = "{self.server.username}"')
            if self.server.password is not None:
                remote.append(f'password = "{self.server.password}"')
            cfg.append("\n".join(remote) + "\n")
            cfg.append(f'[storage {kind}_local]\ntype = "filesystem"\n'
                       f'path = "{self.local / kind}/"\nfileext = "{ext}"\n')
        self.config = self.workdir / "config"
        self.config.write_text("\n".join(cfg))
        # `discover` asks before creating each local collection: answer yes.
        yes = self.workdir / "yes"
        yes.write_text("y\n" * 1000)
        r0 = self.server.request_count()
        m = run_measured([self.exe, "-c", self.config, "discover"], env=self._env,
                         stdin_path=yes, log_path=self.log_path, timeout=self.bench.timeout)
        m.requests = self.server.request_count() - r0
        self.notes["discover"] = asdict(m)
        if not m.ok:
            raise RuntimeError(f"vdirsyncer discover failed: {m.error}")

    def run(self, scenario):
        before = snapshot(self.local)
        m = run_measured([self.exe, "-c", self.config, "sync"], env=self._env,
                         log_path=self.log_path, timeout=self.bench.timeout)
        m.files_changed = snapshot_diff(before, snapshot(self.local))
        return m

    def item_counts(self):
        return {
            "contacts": sum(count_items(self.local / "contacts", ".vcf").values()),
            "events": sum(count_items(self.local / "events", ".ics").values()),
        }

    def marked(self, coll, rev):
        return count_marked(self.local / coll.kind, coll.ext, marker_for(rev))

    def resync(self):
        m = self.run("resync")
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        self.resync()
        edit_local_items({"contacts": self.local / "contacts", "events": self.local / "events"},
                         plan, marker)


class RawClient(Client):
    name = "raw"
    label = "raw (curl)"
    exe = "/usr/bin/curl"

    def setup(self):
        self.tokens = {}
        self.items = {}      # collection href -> {item href: etag} seen with data
        self.bodies = {}     # item href -> its data from the last multiget (CRLF restored)
        self.puts = []       # the 'upload' requests: (url, body file, content type, etag, href)
        self.resyncs = 0
        self.out = self.workdir / "out"
        self.out.mkdir(exist_ok=True)
        self.seq = 0

    def _curl_config(self, requests):
        """A curl -K config for a list of (url, body_path, out_path, depth[, method]) requests
        (REPORT by default)."""
        lines = ["silent", "show-error", "no-progress-meter"]
        if self.bench.raw_parallel > 1 and len(requests) > 1:
            lines += ["parallel", f"parallel-max = {self.bench.raw_parallel}"]
        for i, (url, body, out, depth, *method) in enumerate(requests):
            if i:
                lines.append("next")
            lines += [
                f'url = "{url}"',
                f'request = "{method[0] if method else "REPORT"}"',
                f'header = "Depth: {depth}"',
                'header = "Content-Type: application/xml; charset=utf-8"',
                # Without this curl waits for a 100-continue that Radicale never sends.
                'header = "Expect:"',
                f'data-binary = "@{body}"',
                f'output = "{out}"',
                'write-out = "%{http_code}\\n"',
            ]
            if self.server.username:
                lines.append(f'user = "{self.server.username}:{self.server.password or ""}"')
        self.seq += 1
        path = self.workdir / f"curl-{self.seq:04d}.cfg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _put_config(self, puts):
        """A curl -K config for sequential PUTs [(url, body, content type, etag, href)] over one
        connection; each request writes its status and the reply's ETag."""
        lines = ["silent", "show-error", "no-progress-meter"]
        for i, (url, body, ctype, etag, _) in enumerate(puts):
            if i:
                lines.append("next")
            lines += [
                f"url = {cfg_quote(url)}",
                'request = "PUT"',
                f"header = {cfg_quote('Content-Type: ' + ctype)}",
                f"header = {cfg_quote('If-Match: ' + etag)}",
                'header = "Expect:"',
                f'data-binary = "@{body}"',
                'output = "/dev/null"',
                'write-out = "%{http_code} %header{etag}\\n"',
            ]
            if self.server.username:
                cred = f"{self.server.username}:{self.server.password or ''}"
                lines.append(f"user = {cfg_quote(cred)}")
        self.seq += 1
        path = self.workdir / f"curl-{self.seq:04d}.cfg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _curl(self, requests, cfg=None, ok_codes=("207",)):
        """Run one curl process; returns (Measure, [status lines])."""
        cfg = cfg or self._curl_config(requests)
        status_path = self.workdir / f"curl-{self.seq:04d}.status"
        with open(status_path, "wb"):
            pass
        m = run_measured([self.exe, "-K", cfg], log_path=status_path,
                         stderr_path=self.log_path, timeout=self.bench.timeout)
        codes = [ln for ln in status_path.read_text().split("\n") if ln.strip()]
        bad = [c.split()[0] for c in codes if c.split()[0] not in ok_codes]
        if m.ok and (bad or len(codes) != len(requests)):
            m.ok = False
            m.error = f"curl: HTTP status {','.join(sorted(set(bad))) or '?'} (see {status_path})"
        return m, codes

    def _file(self, stem, suffix):
        return self.out / f"{stem}{suffix}"

    def run(self, scenario):
        if scenario == "upload":
            return self._upload()
        total = Measure()
        for ci, coll in enumerate(self.colls):
            stem = f"{scenario}-c{ci}"
            seen = self.items.setdefault(coll.href, {})
            if coll.sync:
                changed = self._sync_listing(coll, scenario, stem, seen, total)
            else:
                changed = self._ctag_listing(coll, scenario, stem, seen, total)
            if not changed:
                continue
            reqs = []
            for bi in range(0, len(changed), MULTIGET_BATCH):
                batch = changed[bi:bi + MULTIGET_BATCH]
                b = self._file(f"{stem}-mg{bi // MULTIGET_BATCH:04d}", ".req.xml")
                b.write_text(multiget_body(coll, batch))
                reqs.append((coll.url, b, self._file(f"{stem}-mg{bi // MULTIGET_BATCH:04d}",
                                                     ".xml"), 1))
            m, _ = self._curl(reqs)
            total.add(m)
            if m.ok:
                for _, _, o, _ in reqs:
                    for href, (etag, data) in parse_multiget_response(o, coll).items():
                        seen[href] = etag
                        self.bodies[href] = data
        total.files_changed = None
        return total

    def _sync_listing(self, coll, scenario, stem, seen, total):
        """sync-collection with the token of the last run; the hrefs to fetch."""
        token = self.tokens.get(coll.href, "") if scenario != "initial" else ""
        body = self._file(stem + "-sync", ".req.xml")
        body.write_text(sync_collection_body(token))
        out = self._file(stem + "-sync", ".xml")
        m, _ = self._curl([(coll.url, body, out, 0)])
        total.add(m)
        if not m.ok:
            return []
        new_token, changed, removed = parse_sync_response(out)
        if new_token:
            self.tokens[coll.href] = new_token
        for h in removed:
            seen.pop(h, None)
        return changed

    def _ctag_listing(self, coll, scenario, stem, seen, total):
        """For a collection without sync-collection: getctag (PROPFIND Depth 0), and only when
        it changed an etag listing (PROPFIND Depth 1, which brings the new getctag too); the
        first run lists at once. The hrefs whose etag is new."""
        known = self.tokens.get(coll.href) if scenario != "initial" else None
        if known is not None:
            body = self._file(stem + "-ctag", ".req.xml")
            body.write_text(PROPFIND_CTAG)
            out = self._file(stem + "-ctag", ".xml")
            m, _ = self._curl([(coll.url, body, out, 0, "PROPFIND")])
            total.add(m)
            if not m.ok:
                return []
            ctag, _ = parse_propfind_listing(out, coll)
            if ctag == known:
                return []
        body = self._file(stem + "-list", ".req.xml")
        body.write_text(PROPFIND_LISTING)
        out = self._file(stem + "-list", ".xml")
        m, _ = self._curl([(coll.url, body, out, 1, "PROPFIND")])
        total.add(m)
        if not m.ok:
            return []
        ctag, etags = parse_propfind_listing(out, coll)
        if ctag:
            self.tokens[coll.href] = ctag
        for h in [h for h in seen if h not in etags]:
            seen.pop(h)
        return [h for h, e in etags.items() if seen.get(h) != e]

    def resync(self):
        self.resyncs += 1
        m = self.run(f"resync{self.resyncs}")
        if not m.ok:
            raise RuntimeError(m.error)
        return m

    def prepare_upload(self, plan, marker):
        """Catch up (sync-collection + multiget, not measured), then write the edited bodies to
        files; the etags are those of this client's last sync."""
        self.resync()
        self.puts = []
        for coll, hrefs in plan:
            known = {norm_href(h): h for h in self.items.get(coll.href, {})}
            ctype = ("text/vcard" if coll.kind == "contacts" else "text/calendar") \
                + "; charset=utf-8"
            for i, h in enumerate(hrefs):
                sent = known.get(norm_href(h))
                if sent is None or sent not in self.bodies:
                    raise RuntimeError(f"raw has no copy of {h}")
                etag = self.items[coll.href][sent]
                if not etag:
                    raise RuntimeError(f"raw has no etag for {h}")
                body = self._file(f"upload-{coll.name}-{i:05d}", coll.ext)
                body.write_bytes(with_note(self.bodies[sent], coll.kind, marker))
                self.puts.append((urllib.parse.urljoin(self.server.url, sent), body, ctype, etag,
                                  (coll.href, sent)))

    def _upload(self):
        if not self.puts:
            return Measure(ok=False, error="nothing prepared to upload")
        m, codes = self._curl(self.puts, cfg=self._put_config(self.puts),
                              ok_codes=("200", "201", "204"))
        for (_, body, _, _, (ch, h)), line in zip(self.puts, codes):
            parts = line.split(None, 1)
            if parts[0] in ("200", "201", "204"):
                self.bodies[h] = body.read_bytes()
                self.items[ch][h] = parts[1].strip() if len(parts) > 1 else None
        m.files_changed = None
        return m

    def item_counts(self):
        out = {"contacts": 0, "events": 0}
        for c in self.colls:
            out[c.kind] += len(self.items.get(c.href, {}))
        return out


def sync_collection_body(token):
    tok = f"<D:sync-token>{xml_escape(token)}</D:sync-token>" if token else "<D:sync-token/>"
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<D:sync-collection xmlns:D="DAV:">'
            f'{tok}<D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>\n')


def multiget_body(coll, hrefs):
    report, ns, data = coll.multiget
    hs = "".join(f"<D:href>{xml_escape(h)}</D:href>" for h in hrefs)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            f'<C:{report} xmlns:D="DAV:" xmlns:C="{ns}">'
            f'<D:prop><D:getetag/><C:{data}/></D:prop>{hs}</C:{report}>\n')


PROPFIND_CTAG = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" '
                 'xmlns:CS="http://calendarserver.org/ns/"><D:prop><CS:getctag/></D:prop>'
                 '</D:propfind>\n')
PROPFIND_LISTING = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" '
                    'xmlns:CS="http://calendarserver.org/ns/"><D:prop><D:getetag/>'
                    '<D:resourcetype/><CS:getctag/></D:prop></D:propfind>\n')


def parse_propfind_listing(path, coll):
    """(the collection's getctag, {member href: etag}) of a PROPFIND answer."""
    root = ET.parse(path).getroot()
    ctag, etags = None, {}
    for resp in root.findall(f"{{{DAV}}}response"):
        href = resp.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        if norm_href(href).rstrip("/") == norm_href(coll.href).rstrip("/"):
            ctag = resp.findtext(".//{http://calendarserver.org/ns/}getctag") or ctag
            continue
        if resp.find(f".//{{{DAV}}}resourcetype/{{{DAV}}}collection") is not None:
            continue
        etag = resp.findtext(f".//{{{DAV}}}getetag")
        if etag:
            etags[href] = etag
    return ctag, etags


def _status_ok(resp):
    st = resp.find(f"{{{DAV}}}status")
    if st is not None and st.text and " 404" in st.text:
        return False
    return True


def parse_sync_response(path):
    """(new sync token, changed hrefs, removed hrefs) from a sync-collection multistatus."""
    root = ET.parse(path).getroot()
    tok = root.find(f"{{{DAV}}}sync-token")
    changed, removed = [], []
    for resp in root.findall(f"{{{DAV}}}response"):
        href = resp.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        if not _status_ok(resp):
            removed.append(href)
            continue
        if href.endswith("/") and resp.find(f".//{{{DAV}}}getetag") is None:
            continue   # the collection itself
        changed.append(href)
    return (tok.text if tok is not None else None), changed, removed


def parse_multiget_response(path, coll):
    """{href: (etag, data bytes)} of a multiget multistatus. The XML parser turned the items'
    CRLF into LF; CRLF is put back."""
    _, ns, data = coll.multiget
    got = {}
    root = ET.parse(path).getroot()
    for resp in root.findall(f"{{{DAV}}}response"):
        href = resp.findtext(f"{{{DAV}}}href")
        d = resp.find(f".//{{{ns}}}{data}")
        if href and d is not None and d.text:
            text = d.text.replace("\r\n", "\n").replace("\n", "\r\n")
            got[href] = (resp.findtext(f".//{{{DAV}}}getetag"), text.encode())
    return got


def norm_href(href):
    """The decoded path of an href (servers differ in what they percent-encode)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(href).path)



CLIENT_CLASSES = {"ksync": KsyncClient, "vdirsyncer": VdirsyncerClient, "raw": RawClient}
