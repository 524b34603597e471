"""Celery's own answers for tests/hub_cron.rs, the differential test of
src/hub/cron.rs against the installed Celery.

Reads JSON from stdin:

    {"cases": [{"fields": [minute, hour, day_of_week, day_of_month,
                           month_of_year],
                "tz": "Europe/London",
                "starts": [unix_seconds, ...],
                "chain": 4}, ...]}

and writes JSON to stdout:

    {"celery": "5.7.0",
     "results": [{"error": "ValueError: ..."}
                 | {"sets": {"minute": [...], ...},
                    "runs": [[next1, next2, ...] for each start]}, ...]}

Each case is `celery.schedules.crontab(...)` with an app whose timezone is
the case's `tz` (as beat runs it). A run is Celery's next run after
`last_run_at`: `last_run_at + remaining_estimate(last_run_at)`, with
`nowfun` returning `last_run_at` itself and `last_run_at` an aware datetime
in the zone (`astimezone`, so `fold` is set as beat's `app.now()` sets it).
Runs are chained from each start, each the `last_run_at` of the next, up
to `chain` of them; a chain stops after an answer that is not later than
its `last_run_at` (Celery does that inside the second pass of a repeated
hour). A `RuntimeError` while stepping (older Celery: "unable to rollover"
for a date that never occurs) makes the whole case an error, like the
`ValueError` newer Celery raises when constructing it.
"""

import json
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import celery
from celery import Celery
from celery.schedules import crontab

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def unix(dt):
    """Whole seconds since the epoch; Celery's runs are whole minutes."""
    d = dt - EPOCH
    assert d % timedelta(seconds=1) == timedelta(0), dt
    return d // timedelta(seconds=1)


def main():
    cases = json.load(sys.stdin)["cases"]
    apps = {}
    results = []
    for case in cases:
        tzname = case["tz"]
        app = apps.get(tzname)
        if app is None:
            app = apps[tzname] = Celery("cron-oracle", set_as_current=False)
            app.conf.timezone = tzname
            app.conf.enable_utc = True
        tz = ZoneInfo(tzname)
        now = [None]
        minute, hour, dow, dom, moy = case["fields"]
        try:
            c = crontab(minute=minute, hour=hour, day_of_week=dow,
                        day_of_month=dom, month_of_year=moy,
                        nowfun=lambda: now[0], app=app)
        except Exception as e:  # every refusal counts, whatever its type
            results.append({"error": f"{type(e).__name__}: {e}"})
            continue
        sets = {f: sorted(getattr(c, f)) for f in FIELDS}
        try:
            runs = []
            for start in case["starts"]:
                chain = []
                t = start
                for _ in range(case["chain"]):
                    last = datetime.fromtimestamp(t, timezone.utc).astimezone(tz)
                    now[0] = last
                    nxt = last.astimezone(timezone.utc) + c.remaining_estimate(last)
                    n = unix(nxt)
                    chain.append(n)
                    if n <= t:
                        break
                    t = n
                runs.append(chain)
        except RuntimeError as e:
            results.append({"error": f"RuntimeError: {e}"})
            continue
        results.append({"sets": sets, "runs": runs})
    json.dump({"celery": celery.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
