#!/usr/bin/env python3
"""Crash campaign: SIGKILLs a loaded ticktockd at random moments and checks
that nothing acknowledged is lost and nothing is applied twice.

    scripts/crash_campaign.py --ticktockd build/tools/ticktockd [--cycles 100] [--seed S]

Python 3 standard library only. It starts the real ticktockd (--ticktockd or
$TICKTOCKD) on 127.0.0.1 (a port the server picks) with a temporary data
directory, creates counter and timer agents, and drives HTTP load from several
client threads:

  * inbox writers: POST /v1/agents/{id}/inbox to counter agents, each message
    with its own Idempotency-Key; a message whose answer did not arrive (the
    server was killed, refused or busy) is retried with the same key until it
    is acknowledged (202 or 200);
  * HTTP triggers: POST /a/{id}/ to other counter agents (no idempotency key:
    an unanswered one may or may not have ticked);
  * alarm setters: messages {"alarm": NAME, "in_ms": N} to `timer` agents, each
    setting a one-shot alarm a little in the future (idempotent like the
    inbox writers); timer agents also have a periodic alarm.

The main thread SIGKILLs the server after a random uptime, `--cycles` times,
and restarts it on the same data directory each time. At the end it stops
adding work, lets the clients finish their retries, waits for every inbox to
drain and every one-shot alarm to fire, and checks:

  1. inbox counters: count == the number of distinct acknowledged keys (no
     acknowledged message lost, none applied twice); the ok message ticks in
     the trajectory are exactly that many, each inbox seq at most once;
  2. HTTP counters: acknowledged <= count <= acknowledged + unanswered
     attempts; no two 200 answers carry the same count; ok http ticks == count;
  3. timers: every acknowledged one-shot alarm fired exactly once (policy
     fire_once: an alarm due while the server was down fires once after the
     restart), no unknown alarm fired; the periodic alarm's firings are on its
     grid, strictly increasing (never twice), and a gap of more than
     --max-alarm-gap seconds must lie over a kill/restart window;
  4. every agent: no errored state, an empty deadletter, and its trajectory
     chain verifies (GET .../fs/logs/trajectory?verify);
  5. the server stops cleanly (exit 0) on SIGTERM at the end.

It prints a summary and exits 0, or 1 with the first violations. The run is
bounded: --time-limit (seconds) caps the whole campaign.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "crash-campaign-token"


class Violation(Exception):
    pass


def now_us():
    return int(time.time() * 1_000_000)


# -- the server ------------------------------------------------------------------


class Server:
    """ticktockd on a fixed data directory; a new port at every start."""

    def __init__(self, binary, data_dir, args):
        self.binary = binary
        self.data_dir = data_dir
        self.args = args
        self.proc = None
        self.port = None  # None while down; read by the client threads
        self.lines = []
        self.starts = 0
        self._log = open(os.path.join(os.path.dirname(data_dir), "ticktockd.log"), "ab")

    def start(self, timeout=60):
        self.starts += 1
        self._log.write(b"--- start %d\n" % self.starts)
        self._log.flush()
        cmd = [self.binary, "--listen", "127.0.0.1:0", "--data", self.data_dir,
               "--admin-token", TOKEN, "--quiet"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        port = [None]
        started = threading.Event()
        proc = self.proc

        def pump():
            for line in proc.stdout:
                self._log.write(line.encode())
                self._log.flush()
                m = re.search(r"event=start .*listen=[0-9.]+:(\d+)", line)
                if m:
                    port[0] = int(m.group(1))
                    started.set()
            started.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not started.wait(timeout) or port[0] is None:
            rc = self.proc.poll()
            self.kill()
            raise Violation("ticktockd did not start (start %d, exit %r); see %s"
                            % (self.starts, rc, self._log.name))
        self.port = port[0]

    def kill(self):
        self.port = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._pump.join(5)
            self.proc.stdout.close()
        self.proc = None

    def stop(self, timeout=60):
        """SIGTERM; returns the exit code."""
        self.port = None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Violation("ticktockd did not stop within %d s of SIGTERM" % timeout)
        self._pump.join(5)
        self.proc.stdout.close()
        self.proc = None
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection: (status, parsed JSON or raw bytes).
    Raises OSError / http.client errors when the server is not there."""
    if port is None:
        raise ConnectionRefusedError("server down")
    hdrs = {"Authorization": "Bearer " + TOKEN}
    hdrs.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    try:
        return r.status, json.loads(raw) if raw else None
    except ValueError:
        return r.status, raw


# -- the load ----------------------------------------------------------------------


class Ledger:
    """What the clients were told. Each structure is written by one thread."""

    def __init__(self):
        self.inbox_acked = {}   # counter id -> {key: seq}
        self.inbox_pending = {}  # worker -> (agent, key) not yet acknowledged
        self.http_acked = {}    # http counter id -> [count from each 200]
        self.http_maybe = {}    # http counter id -> attempts without an answer
        self.alarms = {}        # timer id -> {name: due offset ms}
        self.errors = []        # unexpected answers (status, body), for the report
        self.lock = threading.Lock()

    def odd(self, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(what)


ACK = (200, 202)
RETRY = (429, 503)


class Worker(threading.Thread):
    def __init__(self, name, server, ledger, rng, stop_new, deadline):
        super().__init__(name=name, daemon=True)
        self.server = server
        self.ledger = ledger
        self.rng = rng
        self.stop_new = stop_new  # set: no new work, finish retries
        self.deadline = deadline
        self.requests = 0
        self.failure = None

    def post(self, path, body=None, headers=None):
        self.requests += 1
        return request(self.server.port, "POST", path, body, headers, timeout=10)

    def pause(self):
        time.sleep(0.02 + self.rng.random() * 0.03)

    def run(self):
        try:
            self.work()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.failure = "%s: %r" % (self.name, e)


class InboxWorker(Worker):
    """Idempotent messages to counter agents, each retried until acknowledged."""

    def __init__(self, agents, kind, *a):
        super().__init__(*a)
        self.agents = agents
        self.kind = kind  # "count" or "alarm"
        self.n = 0
        self.pending = None  # (agent, key, body) not yet acknowledged

    def next_message(self):
        self.n += 1
        agent = self.rng.choice(self.agents)
        key = "%s-%d" % (self.name, self.n)
        if self.kind == "alarm":
            body = {"alarm": key, "in_ms": self.rng.randint(50, 2500)}
        else:
            body = {"n": self.n, "from": self.name}
        return agent, key, body

    def work(self):
        while time.monotonic() < self.deadline:
            if self.pending is None:
                if self.stop_new.is_set():
                    return
                self.pending = self.next_message()
            agent, key, body = self.pending
            try:
                status, answer = self.post("/v1/agents/%s/inbox" % agent, body,
                                           {"Idempotency-Key": key})
            except (OSError, http.client.HTTPException):
                self.pause()  # killed or restarting: retry the same key
                continue
            if status in ACK:
                if self.kind == "alarm":
                    self.ledger.alarms[agent][key] = body["in_ms"]
                else:
                    self.ledger.inbox_acked[agent][key] = answer.get("seq")
                self.pending = None
            elif status in RETRY:
                self.pause()
            else:
                self.ledger.odd("inbox %s %s: %d %r" % (agent, key, status, answer))
                self.pause()
        if self.pending is not None:
            self.failure = "%s: message %s to %s never acknowledged before the time limit" % (
                self.name, self.pending[1], self.pending[0])


class HttpWorker(Worker):
    """POST /a/{id}/ to counters; unanswered ones are counted as maybe-applied."""

    def __init__(self, agents, *a):
        super().__init__(*a)
        self.agents = agents

    def work(self):
        while time.monotonic() < self.deadline and not self.stop_new.is_set():
            agent = self.rng.choice(self.agents)
            if self.server.port is None:
                self.pause()
                continue
            try:
                status, answer = self.post("/a/%s/" % agent)
            except ConnectionRefusedError:
                self.pause()  # nothing reached the server
                continue
            except (OSError, http.client.HTTPException):
                self.ledger.http_maybe[agent] += 1
                self.pause()
                continue
            if status == 200 and isinstance(answer, dict) and "count" in answer:
                self.ledger.http_acked[agent].append(answer["count"])
            elif status in RETRY:
                self.ledger.http_maybe[agent] += 1  # a 503 may come after the enqueue
                self.pause()
            else:
                self.ledger.http_maybe[agent] += 1
                self.ledger.odd("http %s: %d %r" % (agent, status, answer))
                self.pause()


# -- reading what the server holds ---------------------------------------------------


def get(server, path):
    status, body = request(server.port, "GET", path, timeout=30)
    if status != 200:
        raise Violation("GET %s answered %d %r" % (path, status, body))
    return body


def trajectory(server, agent):
    records, start = [], 0
    while True:
        page = get(server, "/v1/agents/%s/fs/logs/trajectory?from=%d&limit=10000" % (agent, start))
        recs = page["records"]
        records += recs
        if len(recs) < 10000:
            return records
        start = recs[-1]["index"] + 1


def outbox(server, agent):
    events, start = [], 0
    while True:
        page = get(server, "/v1/agents/%s/fs/outbox?from_seq=%d&limit=10000" % (agent, start))
        evs = page["events"]
        events += evs
        if len(evs) < 10000:
            return events
        start = evs[-1]["seq"] + 1


def ok_ticks(records, kind):
    """trigger_seqs of the ok ticks of `kind`; the second value lists seqs
    that have more than one ok tick (a tick applied twice)."""
    seqs, twice = [], []
    seen = set()
    for r in records:
        if r["outcome"] == "ok" and r["trigger"] == kind:
            if r["trigger_seq"] in seen:
                twice.append(r["trigger_seq"])
            seen.add(r["trigger_seq"])
            seqs.append(r["trigger_seq"])
    return seqs, twice


# -- the campaign --------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticktockd", default=os.environ.get("TICKTOCKD"),
                    help="the ticktockd binary [$TICKTOCKD]")
    ap.add_argument("--cycles", type=int, default=100, help="SIGKILL/restart cycles [100]")
    ap.add_argument("--seed", type=int, default=None, help="random seed [from the clock]")
    ap.add_argument("--counters", type=int, default=6, help="inbox counter agents [6]")
    ap.add_argument("--http-counters", type=int, default=3, help="HTTP-trigger counters [3]")
    ap.add_argument("--timers", type=int, default=3, help="timer agents [3]")
    ap.add_argument("--period-ms", type=int, default=1000,
                    help="period of each timer's periodic alarm [1000]")
    ap.add_argument("--inbox-threads", type=int, default=3, help="inbox writer threads [3]")
    ap.add_argument("--http-threads", type=int, default=2, help="HTTP trigger threads [2]")
    ap.add_argument("--alarm-threads", type=int, default=1, help="alarm setter threads [1]")
    ap.add_argument("--min-up", type=float, default=0.2, help="least uptime before a kill, s [0.2]")
    ap.add_argument("--max-up", type=float, default=1.5, help="most uptime before a kill, s [1.5]")
    ap.add_argument("--max-down", type=float, default=0.5, help="most downtime after a kill, s [0.5]")
    ap.add_argument("--max-alarm-gap", type=float, default=10.0,
                    help="a periodic alarm gap longer than this (s) must span a crash [10]")
    ap.add_argument("--durability", default="async", choices=["async", "sync"])
    ap.add_argument("--time-limit", type=float, default=3600,
                    help="seconds for the whole campaign; exceeding it fails [3600]")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and log")
    args = ap.parse_args()
    if not args.ticktockd or not os.access(args.ticktockd, os.X_OK):
        ap.error("pass --ticktockd PATH or set TICKTOCKD (got %r)" % args.ticktockd)
    if args.cycles < 0 or args.counters < 1 or args.http_counters < 1 or args.timers < 1:
        ap.error("--cycles >= 0 and at least one agent of each kind")
    if not 0 < args.min_up <= args.max_up:
        ap.error("need 0 < --min-up <= --max-up")
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000_007
    rng = random.Random(seed)
    t0 = time.monotonic()
    deadline = t0 + args.time_limit

    work = tempfile.mkdtemp(prefix="ticktock-crash-")
    data = os.path.join(work, "data")
    server = Server(os.path.abspath(args.ticktockd), data,
                    ["--durability", args.durability, "--missed-alarms", "fire_once"])
    print("crash campaign: seed %d, %d cycles, work dir %s" % (seed, args.cycles, work), flush=True)
    ok = False
    try:
        report = campaign(args, rng, server, deadline)
        ok = True
    except Violation as v:
        print("\nFAIL (seed %d): %s" % (seed, v), flush=True)
        print("server log: %s" % os.path.join(work, "ticktockd.log"))
        args.keep = True
    finally:
        if server.alive():
            server.kill()
    if ok:
        print(report)
        print("PASS in %.1f s (seed %d)" % (time.monotonic() - t0, seed), flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("kept %s" % work)
    return 0 if ok else 1


def campaign(args, rng, server, deadline):
    counters = ["count-%d" % i for i in range(args.counters)]
    http_counters = ["http-%d" % i for i in range(args.http_counters)]
    timers = ["timer-%d" % i for i in range(args.timers)]
    ledger = Ledger()
    for a in counters:
        ledger.inbox_acked[a] = {}
    for a in http_counters:
        ledger.http_acked[a] = []
        ledger.http_maybe[a] = 0
    for a in timers:
        ledger.alarms[a] = {}

    server.start()
    for a in counters + http_counters:
        status, body = request(server.port, "POST", "/v1/agents", {"id": a, "type": "counter"})
        if status != 201:
            raise Violation("create %s: %d %r" % (a, status, body))
    for a in timers:
        status, body = request(server.port, "POST", "/v1/agents",
                               {"id": a, "type": "timer", "config": str(args.period_ms)})
        if status != 201:
            raise Violation("create %s: %d %r" % (a, status, body))

    stop_new = threading.Event()
    workers = []
    mk = lambda: random.Random(rng.random())  # noqa: E731 - one seeded stream per thread
    for i in range(args.inbox_threads):
        workers.append(InboxWorker(counters, "count", "inbox%d" % i, server, ledger, mk(),
                                   stop_new, deadline))
    for i in range(args.alarm_threads):
        workers.append(InboxWorker(timers, "alarm", "alarm%d" % i, server, ledger, mk(),
                                   stop_new, deadline))
    for i in range(args.http_threads):
        workers.append(HttpWorker(http_counters, "http%d" % i, server, ledger, mk(), stop_new,
                                  deadline))
    for w in workers:
        w.start()

    # The kills. windows: (kill time, ready time) in wall-clock microseconds.
    windows = []
    for cycle in range(args.cycles):
        if time.monotonic() > deadline:
            raise Violation("time limit reached after %d of %d cycles" % (cycle, args.cycles))
        time.sleep(rng.uniform(args.min_up, args.max_up))
        if not server.alive():
            raise Violation("ticktockd died by itself before kill %d (exit %r)"
                            % (cycle + 1, server.proc.poll()))
        kill_us = now_us()
        server.kill()
        time.sleep(rng.uniform(0, args.max_down))
        server.start()
        windows.append((kill_us, now_us()))
        if (cycle + 1) % 10 == 0 or cycle + 1 == args.cycles:
            print("  cycle %d/%d, %d requests so far" % (
                cycle + 1, args.cycles, sum(w.requests for w in workers)), flush=True)

    # Let the load run a little on the last server, then stop adding work;
    # the inbox and alarm workers retry until everything they sent is acked.
    time.sleep(min(1.0, args.max_up))
    stop_new.set()
    for w in workers:
        w.join(max(1, deadline - time.monotonic()))
        if w.is_alive():
            raise Violation("client %s did not finish before the time limit" % w.name)
        if w.failure:
            raise Violation(w.failure)
    last_set_us = now_us()

    # Everything queued gets ticked; every one-shot alarm (at most 2.5 s
    # after its message) fires.
    agents = counters + http_counters + timers
    wait_until = time.monotonic() + 60

    def settled():
        for a in agents:
            s = get(server, "/v1/agents/" + a)
            if s["queue_depth"] != 0:
                return False
        return True

    # Alarm messages arrived before last_set_us and are due at most 2.5 s
    # after their arrival.
    while now_us() < last_set_us + 4_500_000:
        time.sleep(0.1)
    while not settled():
        if time.monotonic() > min(wait_until, deadline):
            raise Violation("the server did not drain its inboxes and fire its alarms within 60 s")
        time.sleep(0.1)

    problems = check(server, args, ledger, counters, http_counters, timers, windows)
    # A clean stop at the end; then the same checks once more on a restarted
    # server (what was verified is what is on disk).
    rc = server.stop()
    if rc != 0:
        problems.append("ticktockd exited %d on SIGTERM" % rc)
    if not problems:
        server.start()
        problems += check(server, args, ledger, counters, http_counters, timers, windows)
        server.stop()
    if problems:
        raise Violation("%d violation(s):\n  - %s" % (len(problems), "\n  - ".join(problems[:40])))

    acked = sum(len(v) for v in ledger.inbox_acked.values())
    http_ok = sum(len(v) for v in ledger.http_acked.values())
    http_maybe = sum(ledger.http_maybe.values())
    alarms = sum(len(v) for v in ledger.alarms.values())
    lines = [
        "summary:",
        "  kills/restarts          %d" % len(windows),
        "  client requests         %d" % sum(w.requests for w in workers),
        "  inbox messages acked    %d (counted exactly once each)" % acked,
        "  HTTP triggers answered  %d (+%d unanswered, maybe applied)" % (http_ok, http_maybe),
        "  one-shot alarms         %d (each fired exactly once)" % alarms,
        "  periodic alarm firings  %s" % ", ".join(
            "%s=%d" % (a, n) for a, n in sorted(check.periodic.items())),
        "  trajectory chains       %d verified" % len(counters + http_counters + timers),
    ]
    if ledger.errors:
        lines.append("  unexpected answers (retried): %d, first: %s" % (
            len(ledger.errors), ledger.errors[0]))
    return "\n".join(lines)


def check(server, args, ledger, counters, http_counters, timers, windows):
    problems = []
    check.periodic = {}
    for a in counters + http_counters + timers:
        s = get(server, "/v1/agents/" + a)
        if s["state"] not in ("active", "hibernated"):
            problems.append("%s is %s" % (a, s["state"]))
        v = get(server, "/v1/agents/%s/fs/logs/trajectory?verify" % a)
        if not v.get("ok"):
            problems.append("%s: trajectory chain does not verify: %r" % (a, v))
        dl = get(server, "/v1/agents/%s/fs/deadletter" % a)
        if dl.get("entries"):
            problems.append("%s: deadletter not empty: %r" % (a, dl["entries"][:3]))

    for a in counters:
        s = get(server, "/v1/agents/" + a)
        count = s["summary"]["count"]
        acked = ledger.inbox_acked[a]
        if count != len(acked):
            problems.append("%s: count %d but %d distinct messages acknowledged (%s)" % (
                a, count, len(acked), "lost" if count < len(acked) else "applied twice"))
        seqs = [q for q in acked.values() if q is not None]
        if len(set(seqs)) != len(seqs):
            problems.append("%s: two idempotency keys got the same inbox seq" % a)
        recs = trajectory(server, a)
        ticked, twice = ok_ticks(recs, "message")
        if twice:
            problems.append("%s: inbox seqs ticked ok twice: %r" % (a, twice[:10]))
        if len(ticked) != len(acked):
            problems.append("%s: %d ok message ticks for %d acknowledged messages" % (
                a, len(ticked), len(acked)))
        missing = set(seqs) - set(ticked)
        if missing:
            problems.append("%s: acknowledged seqs never ticked: %r" % (a, sorted(missing)[:10]))

    for a in http_counters:
        s = get(server, "/v1/agents/" + a)
        count = s["summary"]["count"]
        acked, maybe = ledger.http_acked[a], ledger.http_maybe[a]
        if count < len(acked):
            problems.append("%s: count %d below %d answered POSTs (lost)" % (a, count, len(acked)))
        if count > len(acked) + maybe:
            problems.append("%s: count %d above %d answered + %d unanswered POSTs (applied twice)"
                            % (a, count, len(acked), maybe))
        if len(set(acked)) != len(acked):
            problems.append("%s: two POSTs were answered with the same count" % a)
        ticked, twice = ok_ticks(trajectory(server, a), "http")
        if twice:
            problems.append("%s: http seqs ticked ok twice: %r" % (a, twice[:10]))
        if len(ticked) != count:
            problems.append("%s: %d ok http ticks but count %d" % (a, len(ticked), count))

    period_us = args.period_ms * 1000
    for a in timers:
        # The trajectory first: the periodic alarm keeps firing meanwhile, so
        # the outbox read after it holds at least what it shows.
        recs = trajectory(server, a)
        events = outbox(server, a)
        fired = {}
        periodic = []
        one_shot_out = []
        for e in events:
            p = json.loads(e["payload"]) if isinstance(e["payload"], str) else None
            if not isinstance(p, dict) or "alarm" not in p:
                problems.append("%s: unexpected outbox event %r" % (a, e))
                continue
            if p["alarm"] == "every":
                periodic.append(p["due_us"])
            else:
                fired[p["alarm"]] = fired.get(p["alarm"], 0) + 1
                one_shot_out.append("alarm %s due_us=%d" % (p["alarm"], p["due_us"]))
        expected = ledger.alarms[a]
        lost = [n for n in expected if n not in fired]
        twice = [n for n, c in fired.items() if c > 1]
        unknown = [n for n in fired if n not in expected]
        if lost:
            problems.append("%s: %d acknowledged alarms never fired: %r" % (a, len(lost), lost[:10]))
        if twice:
            problems.append("%s: alarms fired more than once: %r" % (a, twice[:10]))
        if unknown:
            problems.append("%s: alarms fired that no acknowledged message set: %r" % (
                a, unknown[:10]))
        s = get(server, "/v1/agents/" + a)
        if s["summary"].get("set") != len(expected):
            problems.append("%s: set %r alarms, %d acknowledged" % (
                a, s["summary"].get("set"), len(expected)))
        ticked, twice_seq = ok_ticks(recs, "alarm")
        if twice_seq:
            problems.append("%s: alarm triggers ticked ok twice: %r" % (a, twice_seq[:10]))
        logged = [line for r in recs if r["outcome"] == "ok" and r["trigger"] == "alarm"
                  for line in r["logs"] if line.startswith("alarm ")]
        if len(set(logged)) != len(logged):
            problems.append("%s: the trajectory shows an alarm occurrence ticked twice" % a)
        one_shot = sorted(line for line in logged if not line.startswith("alarm every "))
        if one_shot != sorted(one_shot_out):
            problems.append("%s: the one-shot firings in the trajectory and the outbox differ" % a)
        if len(ticked) > len(events):
            problems.append("%s: %d ok alarm ticks but only %d firings in the outbox" % (
                a, len(ticked), len(events)))
        check.periodic[a] = len(periodic)
        if not periodic:
            problems.append("%s: the periodic alarm never fired" % a)
            continue
        if windows and periodic[-1] < windows[-1][1]:
            problems.append("%s: the periodic alarm never fired after the last restart (lost)" % a)
        for prev, due in zip(periodic, periodic[1:]):
            if due <= prev:
                problems.append("%s: periodic alarm fired for due %d after %d (twice or "
                                "out of order)" % (a, due, prev))
            elif (due - periodic[0]) % period_us:
                problems.append("%s: periodic alarm due %d is off its grid" % (a, due))
            elif due - prev > args.max_alarm_gap * 1e6:
                # Under fire_once, occurrences due while the server was down
                # (and until it fired again) collapse into one.
                slack = period_us + 2_000_000
                spans = any(k - slack <= prev + period_us and due - period_us <= r + slack
                            for k, r in windows)
                if not spans:
                    problems.append("%s: periodic alarm silent from due %d to %d with no crash "
                                    "in between (lost)" % (a, prev, due))
    return problems


if __name__ == "__main__":
    sys.exit(main())
