"""Deterministic vCard and iCalendar test data.

Every generator returns an ordered dict {name: bytes}; the name is the item's UID and only uses
characters that are safe in file names ([A-Za-z0-9@._+-]). Output uses CRLF line endings and
folds content lines at 75 octets without splitting UTF-8 sequences (RFC 5545 3.1, RFC 6350 3.2).
"""

import datetime as _dt
import random
import unicodedata

PRODID = "-//ksync//integration tests//EN"

GIVEN = [
    "Amélie", "Åsa", "Björn", "Chloé", "Émile", "François", "Gaëlle", "Héloïse", "Inès",
    "Jérôme", "Jürgen", "Łukasz", "Núria", "Océane", "Pål", "Renée", "Søren", "Zoë", "José",
    "Noël", "Ângela", "Çağla", "Anna", "David", "Maria", "Peter", "Ingrid", "Tomáš", "Dóra",
    "Sebastián",
]
FAMILY = [
    "Müller", "García", "Dubois", "Nowak", "Sørensen", "Łęcka", "Çelik", "Øberg", "Lefèvre",
    "Novák", "Fernández", "Kovačević", "Brontë", "Smith", "Rossi", "Yılmaz", "Jäger", "Gómez",
    "Aalto", "Ødegård", "Schäfer", "Dvořák", "Núñez", "Béranger", "Sánchez", "Wójcik",
    "Håkansson", "Fröhlich", "Mäkinen", "O'Brien",
]
CITIES = [
    ("Genève", "1201", "Suisse"), ("Zürich", "8001", "Schweiz"), ("Köln", "50667", "Deutschland"),
    ("Málaga", "29001", "España"), ("Kraków", "30-001", "Polska"), ("Besançon", "25000", "France"),
    ("Tromsø", "9008", "Norge"), ("Lisboa", "1100-148", "Portugal"),
]
STREETS = ["Rue de l'Église", "Hauptstraße", "Calle Mayor", "Via Roma", "Storgata", "Ulica Długa"]
ORGS = ["Infomaniak Network SA", "Café Ünïcode GmbH", "Société Générale d'Exemples",
        "Høst & Vår AS", "Ñandú Software SL"]
WORDS = [
    "réunion", "équipe", "projet", "Übersicht", "planificación", "revisión", "café", "déjeuner",
    "Besprechung", "budget", "atelier", "Präsentation", "lançamento", "retrospective", "sprint",
    "formación", "Kundengespräch", "clôture", "démo", "Jahresplanung",
]
LOCATIONS = ["Salle Léman", "Büro 3.14", "Sala Añil", "Zoom", "Café du Marché", "Møterom Fjord"]

VTIMEZONES = {
    "America/New_York": [
        "BEGIN:VTIMEZONE",
        "TZID:America/New_York",
        "BEGIN:DAYLIGHT",
        "TZOFFSETFROM:-0500",
        "TZOFFSETTO:-0400",
        "TZNAME:EDT",
        "DTSTART:19700308T020000",
        "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU",
        "END:DAYLIGHT",
        "BEGIN:STANDARD",
        "TZOFFSETFROM:-0400",
        "TZOFFSETTO:-0500",
        "TZNAME:EST",
        "DTSTART:19701101T020000",
        "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU",
        "END:STANDARD",
        "END:VTIMEZONE",
    ],
    "Asia/Tokyo": [
        "BEGIN:VTIMEZONE",
        "TZID:Asia/Tokyo",
        "BEGIN:STANDARD",
        "TZOFFSETFROM:+0900",
        "TZOFFSETTO:+0900",
        "TZNAME:JST",
        "DTSTART:19700101T000000",
        "END:STANDARD",
        "END:VTIMEZONE",
    ],
}

# First day of generated events and due dates; everything falls in [BASE, BASE + SPAN_DAYS + 60).
BASE = _dt.date(2024, 1, 1)
SPAN_DAYS = 540
DTSTAMP = "20231215T120000Z"


def fold(line):
    """Fold one content line (str) to CRLF-terminated bytes, at most 75 octets per line."""
    raw = line.encode("utf-8")
    parts = []
    limit = 75
    while len(raw) > limit:
        cut = limit
        while (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        parts.append(raw[:cut])
        raw = raw[cut:]
        limit = 74
    parts.append(raw)
    return b"\r\n ".join(parts) + b"\r\n"


def serialize(lines):
    return b"".join(fold(line) for line in lines)


def escape(text):
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\n", "\\n"))


def ascii_slug(text):
    norm = unicodedata.normalize("NFKD", text)
    return "".join(c for c in norm if c.isascii() and (c.isalnum())).lower() or "x"


def _uid(rng, kind, seed, i):
    if i % 3 == 0:
        return "%s-%d-%05d@ksync.example" % (kind, seed, i)
    h = "%032x" % rng.getrandbits(128)
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _rng(kind, seed):
    return random.Random("%s:%d" % (kind, seed))


def _long_text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def contacts(n, seed=1):
    """n vCards, alternating 3.0 and 4.0, with FN/N/EMAIL/TEL and more; UTF-8 names."""
    rng = _rng("contact", seed)
    out = {}
    for i in range(n):
        uid = _uid(rng, "contact", seed, i)
        given = rng.choice(GIVEN)
        family = rng.choice(FAMILY)
        middle = rng.choice(["", "", "A.", "M.", "Zé"])
        fn = " ".join(p for p in (given, middle, family) if p)
        email = "%s.%s%d@%s" % (ascii_slug(given), ascii_slug(family), i,
                                rng.choice(["example.org", "example.com", "ik.me"]))
        tel = "+41 %02d %03d %02d %02d" % (rng.randint(21, 79), rng.randint(0, 999),
                                           rng.randint(0, 99), rng.randint(0, 99))
        city, zipc, country = rng.choice(CITIES)
        street = "%s %d" % (rng.choice(STREETS), rng.randint(1, 120))
        v4 = i % 2 == 1
        lines = ["BEGIN:VCARD", "VERSION:4.0" if v4 else "VERSION:3.0",
                 "PRODID:" + PRODID, "UID:" + uid, "FN:" + escape(fn),
                 "N:%s;%s;%s;;" % (escape(family), escape(given), escape(middle))]
        has_email = i % 10 != 7
        if has_email:
            if v4:
                lines.append("EMAIL;TYPE=home;PREF=1:" + email)
            else:
                lines.append("EMAIL;TYPE=INTERNET,HOME:" + email)
            if i % 4 == 0:
                lines.append("EMAIL;TYPE=work:%s@work.example" % ascii_slug(given + family))
        if v4:
            lines.append('TEL;VALUE=uri;TYPE="voice,cell":tel:' + tel.replace(" ", "-"))
        else:
            lines.append("TEL;TYPE=CELL,VOICE:" + tel)
        if i % 3 == 0:
            lines.append("ORG:" + escape(rng.choice(ORGS)))
            lines.append("TITLE:" + escape(rng.choice(["Ingénieure", "Geschäftsführer",
                                                        "Jefa de proyecto"])))
        if i % 2 == 0:
            lines.append("ADR;TYPE=home:;;%s;%s;;%s;%s" % (escape(street), escape(city), zipc,
                                                          escape(country)))
        if i % 5 == 0:
            lines.append("NOTE:" + escape("Notiz für %s: %s" % (fn, _long_text(rng, 18))))
        if i % 11 == 0:
            lines.append("BDAY:%04d%02d%02d" % (rng.randint(1950, 2005), rng.randint(1, 12),
                                                rng.randint(1, 28)))
        if i % 13 == 0:
            lines.append("CATEGORIES:Família,Kollegen")
        lines.append("REV:20240102T030405Z")
        lines.append("END:VCARD")
        out[uid] = serialize(lines)
    return out


def _fmt_utc(d):
    return d.strftime("%Y%m%dT%H%M%SZ")


def _fmt_local(d):
    return d.strftime("%Y%m%dT%H%M%S")


def _fmt_date(d):
    return d.strftime("%Y%m%d")


# Kinds of event by index modulo 10.
EVENT_KINDS = ["timed", "timed", "allday", "recurring", "tz_new_york", "timed", "allday_multi",
               "tz_tokyo", "floating", "recurring_tz"]


def event_kind(i):
    return EVENT_KINDS[i % len(EVENT_KINDS)]


def events(n, seed=1):
    """n VCALENDAR objects with one VEVENT each (plus its RECURRENCE-ID exceptions).

    Kinds cycle through EVENT_KINDS: timed UTC, all-day (one and several days), weekly recurring
    with an EXDATE and a moved exception, daily recurring in America/New_York with an exception,
    America/New_York and Asia/Tokyo with their VTIMEZONE, and floating time.
    """
    rng = _rng("event", seed)
    out = {}
    for i in range(n):
        uid = _uid(rng, "event", seed, i)
        kind = event_kind(i)
        day = BASE + _dt.timedelta(days=rng.randrange(SPAN_DAYS))
        hour = rng.randint(7, 18)
        minute = rng.choice([0, 15, 30, 45])
        start = _dt.datetime(day.year, day.month, day.day, hour, minute)
        dur = _dt.timedelta(minutes=rng.choice([30, 45, 60, 90, 120]))
        summary = "%s %s #%d" % (rng.choice(WORDS).capitalize(), rng.choice(WORDS), i)
        tzs = []
        body = ["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:" + DTSTAMP,
                "CREATED:20231201T080000Z", "SEQUENCE:0"]
        exceptions = []
        if kind == "timed" or kind == "recurring":
            body += ["DTSTART:" + _fmt_utc(start), "DTEND:" + _fmt_utc(start + dur)]
        elif kind == "allday":
            body += ["DTSTART;VALUE=DATE:" + _fmt_date(day),
                     "DTEND;VALUE=DATE:" + _fmt_date(day + _dt.timedelta(days=1)),
                     "TRANSP:TRANSPARENT"]
        elif kind == "allday_multi":
            body += ["DTSTART;VALUE=DATE:" + _fmt_date(day),
                     "DTEND;VALUE=DATE:" + _fmt_date(day + _dt.timedelta(days=3))]
        elif kind in ("tz_new_york", "recurring_tz"):
            tzs.append("America/New_York")
            body += ["DTSTART;TZID=America/New_York:" + _fmt_local(start),
                     "DTEND;TZID=America/New_York:" + _fmt_local(start + dur)]
        elif kind == "tz_tokyo":
            tzs.append("Asia/Tokyo")
            body += ["DTSTART;TZID=Asia/Tokyo:" + _fmt_local(start),
                     "DTEND;TZID=Asia/Tokyo:" + _fmt_local(start + dur)]
        elif kind == "floating":
            body += ["DTSTART:" + _fmt_local(start), "DTEND:" + _fmt_local(start + dur)]
        body.append("SUMMARY:" + escape(summary))
        if i % 2 == 0:
            body.append("LOCATION:" + escape(rng.choice(LOCATIONS)))
        if i % 3 == 0:
            body.append("DESCRIPTION:" + escape("Ordre du jour, Tagesordnung; %s\n%s" % (
                _long_text(rng, 12), _long_text(rng, 10))))
        if kind == "recurring":
            body.append("RRULE:FREQ=WEEKLY;COUNT=8")
            body.append("EXDATE:" + _fmt_utc(start + _dt.timedelta(weeks=2)))
            rid = start + _dt.timedelta(weeks=1)
            moved = rid + _dt.timedelta(days=1, hours=2)
            exceptions.append(["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:" + DTSTAMP,
                               "RECURRENCE-ID:" + _fmt_utc(rid),
                               "DTSTART:" + _fmt_utc(moved), "DTEND:" + _fmt_utc(moved + dur),
                               "SEQUENCE:1", "SUMMARY:" + escape(summary + " (déplacé)"),
                               "END:VEVENT"])
        elif kind == "recurring_tz":
            body.append("RRULE:FREQ=DAILY;COUNT=5")
            rid = start + _dt.timedelta(days=3)
            moved = rid + _dt.timedelta(hours=3)
            exceptions.append(["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:" + DTSTAMP,
                               "RECURRENCE-ID;TZID=America/New_York:" + _fmt_local(rid),
                               "DTSTART;TZID=America/New_York:" + _fmt_local(moved),
                               "DTEND;TZID=America/New_York:" + _fmt_local(moved + dur),
                               "SEQUENCE:2", "SUMMARY:" + escape(summary + " (verschoben)"),
                               "LOCATION:" + escape(rng.choice(LOCATIONS)), "END:VEVENT"])
        body.append("END:VEVENT")
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:" + PRODID, "CALSCALE:GREGORIAN"]
        for tz in tzs:
            lines += VTIMEZONES[tz]
        lines += body
        for exc in exceptions:
            lines += exc
        lines.append("END:VCALENDAR")
        out[uid] = serialize(lines)
    return out


TASK_STATUSES = ["NEEDS-ACTION", "NEEDS-ACTION", "IN-PROCESS", "COMPLETED", "NEEDS-ACTION",
                 "COMPLETED", "CANCELLED"]


def tasks(n, seed=1):
    """n VCALENDAR objects with one VTODO each: DUE (date, UTC or zoned), STATUS, PRIORITY;
    some completed or cancelled."""
    rng = _rng("task", seed)
    out = {}
    for i in range(n):
        uid = _uid(rng, "task", seed, i)
        status = TASK_STATUSES[i % len(TASK_STATUSES)]
        day = BASE + _dt.timedelta(days=rng.randrange(SPAN_DAYS))
        summary = "%s: %s #%d" % (rng.choice(["À faire", "Erledigen", "Revisar", "Check",
                                               "Préparer", "Übersetzen"]),
                                  rng.choice(WORDS), i)
        tzs = []
        body = ["BEGIN:VTODO", "UID:" + uid, "DTSTAMP:" + DTSTAMP, "CREATED:20231201T080000Z",
                "SUMMARY:" + escape(summary)]
        due_kind = i % 4
        if due_kind == 0:
            body.append("DUE;VALUE=DATE:" + _fmt_date(day))
        elif due_kind == 1:
            body.append("DUE:%sT%02d0000Z" % (_fmt_date(day), rng.randint(8, 20)))
        elif due_kind == 2:
            tzs.append("America/New_York")
            body.append("DTSTART;TZID=America/New_York:%sT090000" % _fmt_date(day))
            body.append("DUE;TZID=America/New_York:%sT170000" % _fmt_date(day))
        body.append("STATUS:" + status)
        prio = [0, 1, 5, 9, 3][i % 5]
        body.append("PRIORITY:%d" % prio)
        if status == "COMPLETED":
            body.append("COMPLETED:%sT120000Z" % _fmt_date(day))
            body.append("PERCENT-COMPLETE:100")
        elif status == "IN-PROCESS":
            body.append("PERCENT-COMPLETE:%d" % rng.choice([10, 40, 75]))
        if i % 3 == 0:
            body.append("DESCRIPTION:" + escape("Détails; Einzelheiten, %s" % _long_text(rng, 16)))
        if i % 6 == 0:
            body.append("CATEGORIES:Büro,Privé")
        body.append("END:VTODO")
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:" + PRODID]
        for tz in tzs:
            lines += VTIMEZONES[tz]
        lines += body
        lines.append("END:VCALENDAR")
        out[uid] = serialize(lines)
    return out


def unfold(data):
    """Content lines (str) of a serialized object, unfolded."""
    text = data.decode("utf-8")
    return text.replace("\r\n ", "").replace("\r\n\t", "").split("\r\n")[:-1]


def components(data):
    """Top-level components inside VCALENDAR (or the VCARD itself) as
    [(name, [(PROPNAME, params, value), ...])]; nested components (VALARM, STANDARD, ...) are
    skipped."""
    out = []
    stack = []
    for line in unfold(data):
        upper = line.upper()
        if upper.startswith("BEGIN:"):
            stack.append(upper[6:])
            if len(stack) == 2 or (len(stack) == 1 and stack[0] == "VCARD"):
                out.append((stack[-1], []))
            continue
        if upper.startswith("END:"):
            stack.pop()
            continue
        if not out or (stack[0] != "VCARD" and len(stack) != 2):
            continue
        head, _, value = line.partition(":")
        name, _, params = head.partition(";")
        out[-1][1].append((name.upper(), params, value))
    return out


def prop(data, name, component=None):
    """First value of property `name` (escapes kept) in the first matching component that has no
    RECURRENCE-ID (any component but VTIMEZONE when `component` is None); None if absent."""
    for comp, props in components(data):
        if component and comp != component or not component and comp == "VTIMEZONE":
            continue
        if any(p[0] == "RECURRENCE-ID" for p in props):
            continue
        for pname, _, value in props:
            if pname == name:
                return value
        return None
    return None


def unescape(value):
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            n = value[i + 1]
            out.append("\n" if n in "nN" else n)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)
