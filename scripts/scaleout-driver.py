#!/usr/bin/env python3
"""Drives one distributed discovery for scripts/bench-scaleout.sh.

Usage: scaleout-driver.py SPEC

SPEC is a JSON object: broker_host (host:port), site, path (the root to
walk), kwargs (the task's other keyword arguments), timeout (seconds),
logs (the agents' log files, read for when the first piece started).

It stands for a hub and a site's workers at once: it sends one
`dynamo.tasks.recursive_navigate` to `<site>.default#discovery` with a
private reply queue, consumes that queue (results of the walk and of every
piece it split into) and the site's worker queue (the batches, counted and
dropped: no operation runs), and ends when the walk and every child its
results list have answered or arrived as batches (a piece's result may
come before its parent's, so counting pieces alone could end early). It
prints one JSON line: seconds from send to the last walk's result, the
milliseconds to the first batch and to the first piece's start (from the
agents' logs), walks, batches and the paths in them.
"""

import datetime
import json
import re
import sys
import time
import uuid

import amqp


def main():
    spec = json.loads(sys.argv[1])
    conn = amqp.Connection(spec.get("broker_host", "127.0.0.1:5672"), userid="guest", password="guest")
    conn.connect()
    ch = conn.channel()
    site = spec["site"]
    discovery = f"{site}.default#discovery"
    worker = f"{site}.default#worker"
    for q in (discovery, worker):
        ch.queue_declare(q, durable=True, auto_delete=False)
        ch.queue_purge(q)
    reply = f"scaleout-{uuid.uuid4()}"
    ch.queue_declare(reply, exclusive=True, auto_delete=True)

    state = {"root_done": False, "walks": 0, "batches": 0, "paths": 0, "first": None, "failed": []}
    # Children listed by finished walks and not seen yet; batches and walks seen.
    pending, batches, finished = set(), set(), set()

    def on_batch(msg):
        if state["first"] is None:
            state["first"] = time.monotonic()
        state["batches"] += 1
        body = json.loads(msg.body)
        state["paths"] += len(body[1].get("paths", []))
        batch_id = msg.properties.get("application_headers", {}).get("id")
        batches.add(batch_id)
        pending.discard(batch_id)

    def on_result(msg):
        doc = json.loads(msg.body)
        if doc.get("status") == "PROGRESS":
            return
        state["walks"] += 1
        if doc.get("status") != "SUCCESS":
            state["failed"].append(doc)
        walk = doc.get("task_id")
        state["root_done"] |= walk == task_id
        finished.add(walk)
        pending.discard(walk)
        for child in doc.get("children") or []:
            cid = child[0][0]
            if cid not in batches and cid not in finished:
                pending.add(cid)

    ch.basic_consume(worker, callback=on_batch, no_ack=True)
    ch.basic_consume(reply, callback=on_result, no_ack=True)

    task_id = str(uuid.uuid4())
    kwargs = dict(spec.get("kwargs", {}))
    kwargs["paths"] = [spec["path"]]
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    headers = {
        "lang": "py",
        "task": "dynamo.tasks.recursive_navigate",
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "origin": "scaleout-driver",
        "argsrepr": "()",
        "kwargsrepr": "{}",
    }
    msg = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        correlation_id=task_id,
        reply_to=reply,
        delivery_mode=2,
        application_headers=headers,
    )
    sent_at = time.time()
    t0 = time.monotonic()
    ch.basic_publish(msg, exchange="", routing_key=discovery)
    deadline = t0 + spec.get("timeout", 600)
    while not state["root_done"] or pending:
        if time.monotonic() > deadline:
            sys.exit(f"scaleout-driver: timed out with {len(pending)} children outstanding")
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            pass
        except OSError as e:
            if "timed out" not in str(e):
                raise
    t1 = time.monotonic()
    # Batches published before the last result may still be on their way.
    end = time.monotonic() + 1
    while time.monotonic() < end:
        try:
            conn.drain_events(timeout=0.2)
        except (TimeoutError, OSError):
            pass
    first_piece = None
    started = re.compile(r"^(\S+)Z .*task started id=(\S+) task=dynamo.tasks.recursive_navigate")
    for path in spec.get("logs", []):
        with open(path, errors="replace") as f:
            for line in f:
                m = started.match(line)
                if m and m.group(2) != task_id:
                    at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
                    first_piece = at if first_piece is None else min(first_piece, at)
    print(
        json.dumps(
            {
                "seconds": round(t1 - t0, 3),
                "first_piece_ms": None if first_piece is None else round((first_piece - sent_at) * 1000, 1),
                "first_batch_ms": None if state["first"] is None else round((state["first"] - t0) * 1000, 1),
                "walks": state["walks"],
                "batches": state["batches"],
                "paths": state["paths"],
                "failed": len(state["failed"]),
            }
        )
    )
    if state["failed"]:
        sys.exit(f"scaleout-driver: a walk failed: {json.dumps(state['failed'][0])[:2000]}")


if __name__ == "__main__":
    main()
