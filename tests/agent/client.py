#!/usr/bin/env python3
"""A Celery client for ferry's agent tests.

Usage: client.py SPEC

SPEC is a JSON object:
  broker       broker URL (amqp://...)
  queue        the queue to send to (<site>.<queue>#<function>)
  task         task name (default dynamo.tasks.recursive_navigate)
  kwargs       the task's keyword arguments
  timeout      seconds allowed for everything (default 600)
  durable_reply  use a durable, never auto-deleted reply queue (a
               subclass of Celery's rpc:// backend), so results published
               while the broker restarts are kept; plain rpc:// otherwise
  detail       also report every child's full result and the child inputs'
               paths (as hex of their bytes)
  tasks        instead of task/kwargs/queue: a list of {task, kwargs, queue}
               sent one after the other, then waited for in order
  sent_file    a file created once every task is sent
  stop_file    when this file exists, stop waiting: results not read by
               then are reported as UNREADABLE
  log_file     also write progress, and Celery's warnings, to this file

It sends the task with Celery's send_task, waits for its result with
AsyncResult.get, then reads every child listed in that result with
AsyncResult.get. Connection errors (a broker restart) are retried until the
deadline. It prints one JSON document on stdout; progress goes to stderr.
Strings that hold surrogate escapes (non-UTF-8 file names) are reported as
{"hex": ...} so any JSON parser reads the output.
"""

import json
import logging
import os
import socket
import sys
import time

from celery import Celery
from celery.backends.rpc import ResultConsumer, RPCBackend
from celery.exceptions import TimeoutError as CeleryTimeout


LOG = [sys.stderr]


def log(*a):
    for f in LOG:
        print(f"[client {time.strftime('%H:%M:%S')}]", *a, file=f, flush=True)


class AckingResultConsumer(ResultConsumer):
    """Consumes results with acknowledgements, acknowledging each once it is
    recorded. Celery's consumer uses no_ack, so results the broker already
    pushed to the client are lost if the connection drops before they are
    read (a broker restart resets it); these are redelivered instead.

    It also subscribes again after a lost connection, whatever Celery
    version runs it. Celery 5.7's own reconnect (celery#10179) gives up when
    the broker is still down (connect_timeout, 4 s), leaving a connection
    object that kombu later reconnects implicitly, with no consumer on it:
    the client then waits for ever while its results pile up in the reply
    queue (seen with a broker down for 5-6 s). Older versions never
    subscribe again at all."""

    _lost = False

    def start(self, initial_task_id, no_ack=True, **kwargs):
        super().start(initial_task_id, no_ack=False, **kwargs)

    def drain_events(self, timeout=None):
        if self._connection is None:
            if timeout:
                time.sleep(timeout)
            return None
        if self._lost:
            self._subscribe_again()
        conn = self._connection
        try:
            return conn.drain_events(timeout=timeout)
        except socket.timeout:
            raise
        except conn.connection_errors + conn.channel_errors:
            # Subscribed again before the next read; until that works
            # (the broker is back), every read raises.
            self._lost = True
            raise

    def _subscribe_again(self):
        """A new connection and a consumer on the queues the lost one read;
        raises, and stays lost, while the broker is unreachable."""
        queues = list(self._consumer.queues)
        old, self._connection = self._connection, None
        try:
            old.collect()
        except Exception:
            pass
        conn = self.app.connection()
        self._connection = conn
        consumer = self.Consumer(
            conn.default_channel, queues,
            callbacks=[self.on_state_change], no_ack=False, accept=self.accept)
        consumer.consume()
        self._consumer, self._lost = consumer, False
        log("reading results again after a lost connection")

    def on_state_change(self, meta, message):
        super().on_state_change(meta, message)
        # Messages read with basic_get (polling) are acknowledged by Celery.
        if "consumer_tag" in message.delivery_info and not message.acknowledged:
            try:
                message.ack()
            except Exception as e:  # the channel died: it comes back
                log("cannot acknowledge a result:", type(e).__name__, e)


class DurableRPC(RPCBackend):
    """rpc:// with a reply queue that survives broker restarts, read with
    acknowledgements: no result is lost to a broker restart."""

    ResultConsumer = AckingResultConsumer

    @property
    def binding(self):
        return self.Queue(
            self.oid,
            self.exchange,
            self.oid,
            durable=True,
            auto_delete=False,
            expires=self.expires,
        )


def clean(x):
    """x with every string that is not valid Unicode replaced by its bytes."""
    if isinstance(x, str):
        try:
            x.encode("utf-8")
            return x
        except UnicodeEncodeError:
            return {"hex": os.fsencode(x).hex()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    return x


def path_hex(p):
    if isinstance(p, dict):
        p = p["path"]
    return os.fsencode(p).hex()


class Collector:
    def __init__(self, deadline, stop_file):
        self.deadline = deadline
        self.stop_file = stop_file
        self.stopped = False
        self.retries = []

    def wait(self, res):
        """The final (state, value) of res: waits through timeouts and
        connection errors until the deadline or the stop file;
        ("UNREADABLE", why) then."""
        while True:
            left = self.deadline - time.time()
            if left <= 0:
                return "UNREADABLE", "no result by the deadline"
            if self.stopped or (self.stop_file and os.path.exists(self.stop_file)):
                if not self.stopped:
                    log("stopped by the test while waiting for", res.id)
                self.stopped = True
                return "UNREADABLE", "no result when the test stopped waiting"
            try:
                value = res.get(timeout=min(left, 5), propagate=False)
                return res.state, value
            except CeleryTimeout:
                continue
            except Exception as e:  # connection lost, broker restarting
                self.retries.append(f"{type(e).__name__}: {e}")
                log("retrying after", type(e).__name__, e)
                time.sleep(1)


def outcome(state, value):
    if state == "SUCCESS":
        return {"state": state, "result": value}
    if isinstance(value, BaseException):
        return {
            "state": state,
            "exc_type": type(value).__name__,
            "exc_module": type(value).__module__,
            "exc_message": str(value),
        }
    return {"state": state, "message": str(value)}


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("log_file"):
        f = open(spec["log_file"], "a")
        LOG.append(f)
        logging.basicConfig(stream=f, level=logging.WARNING, format="[celery %(asctime)s] %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    deadline = t0 + spec.get("timeout", 600)
    # By name, which every Celery 5 loads (5.5 takes no class here).
    backend = "__main__:DurableRPC" if spec.get("durable_reply") else "rpc://"
    app = Celery(broker=spec["broker"], backend=backend)
    app.conf.result_expires = 3600
    col = Collector(deadline, spec.get("stop_file"))
    if "tasks" in spec:
        sent = [app.send_task(t["task"], kwargs=t.get("kwargs", {}), queue=t["queue"]) for t in spec["tasks"]]
        log("sent", len(sent), "tasks; reply_to", app.backend.oid)
        if spec.get("sent_file"):
            open(spec["sent_file"], "w").close()
        results = []
        for r in sent:
            o = outcome(*col.wait(r))
            o["id"] = r.id
            results.append(clean(o))
        finish(app, spec, {"results": results, "retries": col.retries, "seconds_all": time.time() - t0})
        return
    task = spec.get("task", "dynamo.tasks.recursive_navigate")
    r = app.send_task(task, kwargs=spec.get("kwargs", {}), queue=spec["queue"])
    log("sent", task, r.id, "reply_to", app.backend.oid)
    seed = outcome(*col.wait(r))
    seed["id"] = r.id
    t_seed = time.time() - t0
    log("seed", seed["state"], f"{t_seed:.1f}s")
    out = {"seed": clean(seed), "seconds_seed": t_seed}
    if seed["state"] == "SUCCESS":
        children = list(r.children or [])
        log(len(children), "children")
        reports = []
        inputs = []
        for i, c in enumerate(children):
            o = outcome(*col.wait(c))
            rep = {"id": c.id, "state": o["state"]}
            if o["state"] == "SUCCESS":
                st = o["result"]["status"]
                rep["summary"] = st["summary"]
                rep["task"] = st["task"]
                rep["inputs"] = len(st["input_paths"])
                inputs.extend(path_hex(p) for p in st["input_paths"])
                if spec.get("detail"):
                    rep["result"] = clean(o["result"])
            else:
                rep.update({k: v for k, v in o.items() if k != "result"})
            reports.append(rep)
            if (i + 1) % 100 == 0:
                log(i + 1, "children read")
        out["children"] = reports
        out["inputs_total"] = len(inputs)
        out["inputs_distinct"] = len(set(inputs))
        if spec.get("detail"):
            out["inputs_hex"] = sorted(inputs)
    out["retries"] = col.retries
    out["seconds_all"] = time.time() - t0
    finish(app, spec, out)


def finish(app, spec, out):
    """Prints the report after removing what this client left on the
    broker: the exchanges Celery declared for the queues it sent to (named
    after them) and a durable reply queue."""
    queues = {t["queue"] for t in spec.get("tasks", [])} | ({spec["queue"]} if "queue" in spec else set())
    try:
        with app.connection_for_write() as conn:
            for q in queues:
                conn.default_channel.exchange_delete(q)
            if spec.get("durable_reply"):
                app.backend.binding(conn.default_channel).delete()
    except Exception as e:
        log("cleaning up the broker:", e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
