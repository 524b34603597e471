#!/usr/bin/env python3
"""The seed's design, for comparison with the hub's ingest
(docs/benchmarks.md, "Hub"): a Celery-style result recorder.

    bench-hub-recorder.py QUEUE SQLITE_FILE COUNT

Consumes COUNT result documents from QUEUE (py-amqp, Celery's own AMQP
client; prefetch 1,000 like the hub's 2,000 window) and stores each as one
row of a `celery_taskmeta`-shaped table the way Celery's database result
backend stores a result (`DatabaseBackend._store_result`): look the task
up by id, insert it (or update it), commit, one transaction per result;
the message is acknowledged after its commit. SQLite in WAL mode with
synchronous = NORMAL, as the hub's. It does not count jobs: it only
records. Prints one JSON line: the rate from the first commit to the
last.
"""

import json
import sqlite3
import sys
import time

import amqp

queue, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = NORMAL")
db.execute(
    """CREATE TABLE IF NOT EXISTS celery_taskmeta (
        id INTEGER PRIMARY KEY, task_id TEXT UNIQUE, status TEXT, result TEXT,
        date_done TEXT, traceback TEXT, name TEXT, args TEXT, kwargs TEXT,
        worker TEXT, retries INTEGER, queue TEXT)"""
)

conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
conn.connect()
ch = conn.channel()
ch.basic_qos(0, 1000, False)
state = {"n": 0, "first": None, "last": None}


def store(msg):
    doc = json.loads(msg.body)
    db.execute("BEGIN")
    row = db.execute(
        "SELECT id FROM celery_taskmeta WHERE task_id = ?", (doc["task_id"],)
    ).fetchone()
    values = (
        doc["status"],
        json.dumps(doc.get("result")),
        doc.get("date_done"),
        doc.get("traceback"),
        doc.get("name"),
        doc.get("worker"),
        doc.get("queue"),
        doc["task_id"],
    )
    if row is None:
        db.execute(
            "INSERT INTO celery_taskmeta (status, result, date_done, traceback, name, worker, queue, task_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        db.execute(
            "UPDATE celery_taskmeta SET status = ?, result = ?, date_done = ?, traceback = ?, name = ?,"
            " worker = ?, queue = ? WHERE task_id = ?",
            values,
        )
    db.execute("COMMIT")
    ch.basic_ack(msg.delivery_tag)
    now = time.monotonic()
    if state["first"] is None:
        state["first"] = now
    state["last"] = now
    state["n"] += 1


ch.basic_consume(queue, callback=store)
t0 = time.monotonic()
while state["n"] < count:
    conn.drain_events(timeout=60)
cpu = time.process_time()
conn.close()
span = state["last"] - state["first"]
print(
    json.dumps(
        {
            "mode": "recorder",
            "results": state["n"],
            "rate": round((state["n"] - 1) / span) if span > 0 else None,
            "drain_s": round(span, 3),
            "cpu_s": round(cpu, 3),
            "rows": db.execute("SELECT COUNT(*) FROM celery_taskmeta").fetchone()[0],
        }
    )
)
