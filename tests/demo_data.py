"""Sample address book, calendar and task list for `make demo`.

Dates are relative to the day the demo runs, so that `khal list` and `todoman list` show them.
Every function returns {name: bytes}; the name is the item's UID.
"""

import datetime as dt

PRODID = "-//ksync//demo//EN"
TZID = "Europe/Zurich"

VTIMEZONE_ZURICH = [
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Zurich",
    "BEGIN:DAYLIGHT",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0200",
    "TZNAME:CEST",
    "DTSTART:19810329T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "END:DAYLIGHT",
    "BEGIN:STANDARD",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "TZNAME:CET",
    "DTSTART:19961027T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "END:STANDARD",
    "END:VTIMEZONE",
]


def _in_year(day, year):
    """day moved to year (29 February becomes 28 February)."""
    if day.month == 2 and day.day == 29:
        day = day.replace(day=28)
    return day.replace(year=year)


def _crlf(lines):
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _card(uid, given, family, email, tel, org=None, title=None, extra=()):
    lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:" + PRODID, "UID:" + uid,
             f"FN:{given} {family}", f"N:{family};{given};;;",
             f"EMAIL;TYPE=INTERNET,HOME:{email}", f"TEL;TYPE=CELL:{tel}"]
    if org:
        lines.append("ORG:" + org)
    if title:
        lines.append("TITLE:" + title)
    lines += list(extra)
    lines.append("END:VCARD")
    return _crlf(lines)


def contacts(today=None):
    today = today or dt.date.today()
    bday = _in_year(today + dt.timedelta(days=3), 1990)
    return {
        "demo-lena-meier": _card(
            "demo-lena-meier", "Lena", "Meier", "lena.meier@example.ch", "+41 79 123 45 67",
            extra=[f"BDAY:{bday:%Y-%m-%d}", "ADR;TYPE=HOME:;;Rue du Lac 12;Genève;;1201;Suisse"]),
        "demo-marc-dubois": _card(
            "demo-marc-dubois", "Marc", "Dubois", "marc.dubois@example.fr", "+33 6 12 34 56 78",
            org="Atelier Dubois", title="Architecte"),
        "demo-sofia-rossi": _card(
            "demo-sofia-rossi", "Sofia", "Rossi", "sofia.rossi@example.it", "+39 347 555 0199",
            org="Studio Rossi", title="Designer"),
        "demo-jonas-keller": _card(
            "demo-jonas-keller", "Jonas", "Keller", "jonas.keller@example.ch", "+41 78 555 01 23",
            org="Infomaniak Network SA", title="Support Engineer"),
        "demo-amelie-favre": _card(
            "demo-amelie-favre", "Amélie", "Favre", "amelie.favre@example.ch", "+41 76 555 77 88",
            extra=["NOTE:Neighbour\\, has a spare key."]),
        "demo-bjorn-sorensen": _card(
            "demo-bjorn-sorensen", "Bjørn", "Sørensen", "bjorn@example.no", "+47 912 34 567",
            org="Fjord Consulting AS"),
        "demo-dr-wyss": _card(
            "demo-dr-wyss", "Claudia", "Wyss", "praxis@wyss-dental.example.ch", "+41 22 555 10 10",
            org="Praxis Dr. Wyss", title="Dentist"),
        "demo-noah-brunner": _card(
            "demo-noah-brunner", "Noah", "Brunner", "noah.brunner@example.ch", "+41 79 555 42 42",
            org="FC Lausanne Vétérans"),
    }


def _vcal(components, tz=False):
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:" + PRODID, "CALSCALE:GREGORIAN"]
    if tz:
        lines += VTIMEZONE_ZURICH
    for c in components:
        lines += c
    lines.append("END:VCALENDAR")
    return _crlf(lines)


def _local(d, hh, mm):
    return f"{d:%Y%m%d}T{hh:02d}{mm:02d}00"


def events(today=None):
    today = today or dt.date.today()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    d = lambda n: today + dt.timedelta(days=n)  # noqa: E731

    def vevent(uid, summary, start, end, extra=()):
        return ["BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:" + stamp, start, end,
                "SUMMARY:" + summary, *extra, "END:VEVENT"]

    # Weekly stand-up on tomorrow's weekday, started a week ago; the occurrence a week from
    # tomorrow is moved to 10:30 (a recurrence exception with RECURRENCE-ID).
    first = d(1 - 7)
    moved = d(1 + 7)
    standup = [
        vevent("demo-standup", "Team stand-up",
               f"DTSTART;TZID={TZID}:{_local(first, 9, 0)}",
               f"DTEND;TZID={TZID}:{_local(first, 9, 15)}",
               ["RRULE:FREQ=WEEKLY;COUNT=12", "LOCATION:Video call"]),
        ["BEGIN:VEVENT", "UID:demo-standup", "DTSTAMP:" + stamp,
         f"RECURRENCE-ID;TZID={TZID}:{_local(moved, 9, 0)}",
         f"DTSTART;TZID={TZID}:{_local(moved, 10, 30)}",
         f"DTEND;TZID={TZID}:{_local(moved, 10, 45)}",
         "SUMMARY:Team stand-up (moved)", "LOCATION:Video call", "SEQUENCE:1", "END:VEVENT"],
    ]
    bday_start = _in_year(d(3), d(3).year - 1)
    saturday = d((5 - today.weekday()) % 7 or 7)
    dentist = d(2) if d(2).weekday() < 5 else d(4)
    call = dt.datetime.combine(d(4), dt.time(15, 0))
    return {
        "demo-standup": _vcal(standup, tz=True),
        "demo-lunch": _vcal([vevent(
            "demo-lunch", "Lunch with Sofia",
            f"DTSTART;TZID={TZID}:{_local(d(0), 12, 15)}",
            f"DTEND;TZID={TZID}:{_local(d(0), 13, 30)}",
            ["LOCATION:Café du Marché\\, Genève"])], tz=True),
        "demo-dentist": _vcal([vevent(
            "demo-dentist", "Dentist (Dr. Wyss)",
            f"DTSTART;TZID={TZID}:{_local(dentist, 8, 30)}",
            f"DTEND;TZID={TZID}:{_local(dentist, 9, 15)}",
            ["LOCATION:Praxis Dr. Wyss",
             "DESCRIPTION:Yearly check-up. Bring the insurance card."])],
            tz=True),
        "demo-birthday-lena": _vcal([vevent(
            "demo-birthday-lena", "Lena's birthday",
            f"DTSTART;VALUE=DATE:{bday_start:%Y%m%d}",
            f"DTEND;VALUE=DATE:{bday_start + dt.timedelta(days=1):%Y%m%d}",
            ["RRULE:FREQ=YEARLY", "TRANSP:TRANSPARENT"])]),
        "demo-call-montreal": _vcal([vevent(
            "demo-call-montreal", "Call with the Montréal office",
            f"DTSTART:{call:%Y%m%dT%H%M%S}Z",
            f"DTEND:{call + dt.timedelta(minutes=45):%Y%m%dT%H%M%S}Z",
            ["DESCRIPTION:Quarterly planning."])]),
        "demo-ski-weekend": _vcal([vevent(
            "demo-ski-weekend", "Ski weekend in Verbier",
            f"DTSTART;VALUE=DATE:{saturday:%Y%m%d}",
            f"DTEND;VALUE=DATE:{saturday + dt.timedelta(days=2):%Y%m%d}",
            ["LOCATION:Verbier"])]),
        "demo-football": _vcal([vevent(
            "demo-football", "Football training",
            f"DTSTART;TZID={TZID}:{_local(d(1), 19, 0)}",
            f"DTEND;TZID={TZID}:{_local(d(1), 20, 30)}",
            ["LOCATION:Stade de Vidy", "RRULE:FREQ=WEEKLY;COUNT=6"])], tz=True),
    }


def tasks(today=None):
    today = today or dt.date.today()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def vtodo(uid, summary, due_days=None, priority=0, status="NEEDS-ACTION", extra=()):
        lines = ["BEGIN:VTODO", "UID:" + uid, "DTSTAMP:" + stamp, "SUMMARY:" + summary,
                 "STATUS:" + status, f"PRIORITY:{priority}"]
        if due_days is not None:
            lines.append(f"DUE;VALUE=DATE:{today + dt.timedelta(days=due_days):%Y%m%d}")
        if status == "COMPLETED":
            lines += ["COMPLETED:" + stamp, "PERCENT-COMPLETE:100"]
        lines += list(extra)
        lines.append("END:VTODO")
        return _vcal([lines])

    return {
        "demo-task-train": vtodo("demo-task-train", "Book train tickets to Verbier", 1, 1),
        "demo-task-present": vtodo("demo-task-present", "Buy a birthday present for Lena", 3, 5),
        "demo-task-passport": vtodo("demo-task-passport", "Renew passport", 20, 5,
                                    extra=["DESCRIPTION:Photos first\\, then the online form."]),
        "demo-task-plants": vtodo("demo-task-plants", "Water the plants"),
        "demo-task-taxes": vtodo("demo-task-taxes", "Send the tax return", 9, 1,
                                 status="IN-PROCESS", extra=["PERCENT-COMPLETE:60"]),
        "demo-task-expenses": vtodo("demo-task-expenses", "Submit the expense report", -1, 5,
                                    status="COMPLETED"),
    }
