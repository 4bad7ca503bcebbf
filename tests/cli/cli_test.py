#!/usr/bin/env python3
"""End-to-end test of the `ticktock` CLI against a real ticktockd.

Starts ticktockd on 127.0.0.1 (port 0, then the same port again after a
restart) with a temporary data directory and a given admin token, runs every
CLI command, and checks outputs and exit codes: 0 ok, 1 the server answered an
error (one line "ticktock: CODE: message" on stderr), 2 usage error, 3 cannot
reach the server. `tail` must show every outbox event once and in order while
the server is stopped and restarted under it. Every wait is bounded.

usage: cli_test.py --cli PATH --ticktockd PATH --work DIR
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

TOKEN = "cli-test-token"
ARGS = None


class Failure(Exception):
    pass


def check(cond, what, proc=None):
    if cond:
        return
    detail = ""
    if proc is not None:
        detail = "\n  args: %s\n  rc: %s\n  stdout: %r\n  stderr: %r" % (
            proc.args, proc.returncode, proc.stdout, proc.stderr)
    raise Failure(what + detail)


def wait_until(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise Failure("timed out after %ss waiting for %s" % (seconds, what))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the server ---------------------------------------------------------------

class Server:
    def __init__(self, binary, data, logdir):
        self.binary, self.data, self.logdir = binary, data, logdir
        self.proc, self.port, self.starts = None, 0, 0

    def start(self, port=0):
        self.starts += 1
        log = os.path.join(self.logdir, "ticktockd-%d.log" % self.starts)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--data", self.data, "--listen", "127.0.0.1:%d" % port,
                 "--admin-token", TOKEN],
                stdout=out, stderr=subprocess.STDOUT)
        found = {}

        def started():
            with open(log, "r", errors="replace") as f:
                m = re.search(r"event=start .*listen=127\.0\.0\.1:(\d+)", f.read())
            if m:
                found["port"] = int(m.group(1))
                return True
            check(self.proc.poll() is None, "ticktockd exited at start:\n" + open(log).read())
            return False

        wait_until(started, 30, "ticktockd to log event=start")
        self.port = found["port"]
        check(port == 0 or self.port == port, "ticktockd listens on the requested port")
        return self.port

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("ticktockd did not stop within 30 s of SIGTERM")
        check(rc == 0, "ticktockd exits 0 on SIGTERM (got %s):\n%s" % (rc, open(self.log).read()))
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


SERVER = None


# -- running the CLI ----------------------------------------------------------

def env_for(url=None, token=TOKEN):
    env = dict(os.environ)
    env.pop("TICKTOCK_URL", None)
    env.pop("TICKTOCK_TOKEN", None)
    env["TICKTOCK_URL"] = url if url is not None else SERVER.url
    if token is not None:
        env["TICKTOCK_TOKEN"] = token
    return env


def cli(*args, url=None, token=TOKEN, stdin=None, timeout=30, request_id=None):
    env = env_for(url, token)
    if request_id is not None:
        env["TICKTOCK_REQUEST_ID"] = request_id
    try:
        return subprocess.run([ARGS.cli, *args], capture_output=True, text=True, input=stdin,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Failure("ticktock %s did not exit within %s s" % (" ".join(args), timeout))


class Blackhole:
    """A server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            while True:
                self.held.append(self.sock.accept()[0])
        except OSError:
            pass  # closed

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


def post_many(agent, n):
    """Sends n messages to agent over one keep-alive connection (fast)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=30)
    try:
        for i in range(n):
            conn.request("POST", "/v1/agents/%s/inbox" % agent, body=b"{}",
                         headers={"Authorization": "Bearer " + TOKEN,
                                  "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            check(r.status in (200, 202), "message %d to %s accepted (%d)" % (i, agent, r.status))
    finally:
        conn.close()


def expect(proc, rc, out=None, err=None):
    """Checks the exit code, and that a failure says why in one line."""
    check(proc.returncode == rc, "exit code %d expected" % rc, proc)
    if rc != 0:
        lines = proc.stderr.splitlines()
        check(len(lines) == 1 and lines[0].startswith("ticktock: "),
              "a failure prints one line 'ticktock: ...' on stderr", proc)
    if out is not None:
        check(out in proc.stdout, "stdout contains %r" % out, proc)
    if err is not None:
        check(err in proc.stderr, "stderr contains %r" % err, proc)
    return proc


def ok_json(*args, **kw):
    p = expect(cli(*args, "--json", **kw), 0)
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise Failure("--json output is one JSON document: %r" % p.stdout)


def outbox(agent):
    return ok_json("cat", agent + "/outbox")["events"]


def tail_lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f.read().splitlines() if l.strip()]


COMMANDS = ["agents ls", "agents create", "agents rm", "status", "send", "tick", "cat", "write",
            "ls", "tail", "trajectory", "verify", "export", "import"]


# -- the steps ----------------------------------------------------------------

def test_help_and_usage():
    p = expect(cli("--help", url="http://127.0.0.1:9"), 0, out="commands:")
    for c in COMMANDS:
        check(c in p.stdout, "main help lists '%s'" % c, p)
        expect(cli(*c.split(), "--help", url="http://127.0.0.1:9"), 0, out="usage: ticktock " + c)
    expect(cli("help", "tail"), 0, out="--max-seconds")
    expect(cli("help", "agents", "create"), 0, out="usage: ticktock agents create ID TYPE")
    # `agents` alone with --help (or `help agents`) lists its sub-commands.
    for args in (["agents", "--help"], ["agents", "-h"], ["help", "agents"]):
        p = expect(cli(*args, url="http://127.0.0.1:9"), 0)
        for c in ("agents ls", "agents create ID TYPE", "agents rm ID"):
            check(c in p.stdout, "'%s' lists '%s'" % (" ".join(args), c), p)
    # Every built-in type of ticktockd.
    p = expect(cli("agents", "create", "--help"), 0)
    for t in ("counter", "echo", "fetcher", "heartbeat", "llm-chat", "player", "timer"):
        check(t in p.stdout, "agents create --help names the type %s" % t, p)
    expect(cli(url="http://127.0.0.1:9"), 2, err="no command")
    expect(cli("frobnicate"), 2, err="unknown command")
    # An option no command takes is named as one, not as a missing command.
    expect(cli("--bogus", url="http://127.0.0.1:9"), 2, err="unknown option '--bogus'")
    expect(cli("--limit", "5", "ls", url="http://127.0.0.1:9"), 2,
           err="a command's options go after the command")
    expect(cli("--version", url="http://127.0.0.1:9"), 0, out="ticktock ")
    # An empty key would lose the deduplication without a word.
    expect(cli("send", "a", "{}", "--idempotency-key", "", url="http://127.0.0.1:9"), 2,
           err="--idempotency-key is empty")
    expect(cli("tail", "c1/outbox", "--from", "18446744073709551615", url="http://127.0.0.1:9"), 2,
           err="'--from' must be a whole number from 0 to 9223372036854775807")
    expect(cli("tail", "c1/outbox", "--max-seconds", "1e9", url="http://127.0.0.1:9"), 2,
           err="at most 10000000")
    expect(cli("export", "c1", "", url="http://127.0.0.1:9"), 2, err="FILE is empty")
    expect(cli("agents"), 2)
    expect(cli("status"), 2, err="missing arguments")
    expect(cli("status", "a", "b"), 2, err="too many arguments")
    expect(cli("status", "a", "--no-such-option"), 2)
    expect(cli("tail", "c1/status"), 2, err="tail follows")
    expect(cli("status", "a", url="ftp://127.0.0.1:1"), 2, err="http://")
    expect(cli("status", "a", "--url", "http://127.0.0.1:99999"), 2, err="port")
    expect(cli("status", "a", "--url", "", url="http://127.0.0.1:9"), 2, err="--url")
    # What goes into the request head is checked: a line break would add headers.
    expect(cli("status", "a", url="http://127.0.0.1:9/a b"), 2, err="space or a control character")
    expect(cli("status", "a", url="http://127.0.0.1:9?x=1"), 2, err="query or a fragment")
    expect(cli("status", "a", url="http://[::1]:9"), 3, err="cannot reach http://[::1]:9")
    expect(cli("status", "a", token="secret\r\nX-Request-Id: injected", url="http://127.0.0.1:9"),
           2, err="control character")
    expect(cli("send", "a", "{}", "--idempotency-key", "k\r\nX-Request-Id: i", url="http://127.0.0.1:9"),
           2, err="--idempotency-key")
    for c in (["status", ""], ["agents", "rm", ""], ["send", "", "{}"]):
        expect(cli(*c, url="http://127.0.0.1:9"), 2, err="the agent ID is empty")
    for t in ("0", "-1", "86401"):
        expect(cli("status", "a", "--timeout", t, url="http://127.0.0.1:9"), 2,
               err="--timeout must be more than 0 and at most 86400")
    # Counts, seqs and indexes are whole numbers: "-1" is not "no limit".
    for args, opt in ((["trajectory", "c1", "--limit=-1"], "--limit"),
                      (["trajectory", "c1", "--from=-1"], "--from"),
                      (["agents", "ls", "--limit=-1"], "--limit"),
                      (["tail", "c1/outbox", "--after=-1"], "--after"),
                      (["tail", "c1/outbox", "--from=-1"], "--from"),
                      (["tail", "c1/outbox", "--max-events=-1"], "--max-events"),
                      (["tail", "c1/outbox", "--from=1x"], "--from"),
                      (["trajectory", "c1", "--limit=99999999999999999999999"], "--limit")):
        expect(cli(*args, url="http://127.0.0.1:9"), 2, err="'%s'" % opt)


def test_no_server():
    url = "http://127.0.0.1:%d" % free_port()
    expect(cli("agents", "ls", url=url), 3, err="cannot reach")
    expect(cli("status", "x", "--url", url), 3)
    expect(cli("tail", "x/outbox", "--max-seconds", "2", url=url), 3)
    # A server that accepts but never answers: the first connection fails.
    bh = Blackhole()
    try:
        expect(cli("tail", "c1/outbox", "--timeout", "2", url=bh.url), 3, err="cannot reach")
        expect(cli("tail", "c1/outbox", "--max-seconds", "2", url=bh.url), 3, err="cannot reach")
        expect(cli("status", "c1", "--timeout", "2", url=bh.url), 3, err="cannot reach")
    finally:
        bh.close()


def test_auth():
    expect(cli("agents", "ls", token="wrong"), 1, err="UNAUTHORIZED")
    expect(cli("agents", "ls", token=None), 1, err="UNAUTHORIZED: no token given: pass --token TOKEN or set TICKTOCK_TOKEN")
    # --token wins over TICKTOCK_TOKEN, --url over TICKTOCK_URL
    expect(cli("agents", "ls", "--token", TOKEN, token="wrong"), 0)
    expect(cli("agents", "ls", "--url", SERVER.url, url="http://127.0.0.1:9"), 0)


def test_agents():
    expect(cli("agents", "create", "c1", "counter"), 0, out="created c1 (type counter")
    s = ok_json("agents", "create", "e1", "echo")
    check(s["id"] == "e1" and s["type"] == "echo", "create --json prints the status: %r" % s)
    expect(cli("agents", "create", "v1", "counter", "--config", "{}"), 0)
    expect(cli("agents", "create", "c1", "counter"), 1, err="ALREADY_EXISTS")
    expect(cli("agents", "create", "x1", "no-such-type"), 1, err="UNKNOWN_TYPE")
    expect(cli("agents", "create", "Bad Id", "counter"), 1)
    p = expect(cli("agents", "ls"), 0, out="c1")
    check(p.stdout.splitlines()[0].split()[:3] == ["ID", "TYPE", "STATE"], "agents ls has a header", p)
    ids = [a["id"] for a in ok_json("agents", "ls")["agents"]]
    check(ids == ["c1", "e1", "v1"], "agents ls --json lists c1, e1, v1: %r" % ids)
    check(len(ok_json("agents", "ls", "--limit", "2")["agents"]) == 2, "agents ls --limit 2")
    p = expect(cli("status", "c1"), 0, out="counter")
    check(re.search(r"^state\s+(active|hibernated)", p.stdout, re.M), "status shows the state", p)
    check(ok_json("status", "c1")["type"] == "counter", "status --json")
    expect(cli("status", "nope"), 1, err="AGENT_NOT_FOUND")


def test_send_and_tick():
    # --request-id (or TICKTOCK_REQUEST_ID) names the requests: the ticks carry it.
    expect(cli("--request-id", "cli-trace-8", "send", "c1", '{"n":1}'), 0, out="accepted seq")
    a = ok_json("send", "c1", '{"n":2}', "--idempotency-key", "k-2")
    b = ok_json("send", "c1", '{"n":2}', "--idempotency-key", "k-2")
    check(not a["duplicate"] and b["duplicate"] and a["seq"] == b["seq"],
          "a repeated idempotency key gets the first seq: %r %r" % (a, b))
    expect(cli("send", "c1", '{"n":2}', "--idempotency-key", "k-2"), 0, out="duplicate of seq")
    expect(cli("send", "c1", "-", stdin='{"n":3}', request_id="cli-trace.7"), 0, out="accepted seq")
    expect(cli("send", "c1", "{not json"), 1, err="BAD_JSON")
    expect(cli("send", "nope", "{}"), 1, err="AGENT_NOT_FOUND")
    t = ok_json("tick", "c1")
    check(isinstance(t.get("seq"), int), "tick --json gives the seq: %r" % t)
    expect(cli("tick", "c1"), 0, out="tick queued (seq")
    expect(cli("tick", "nope"), 1, err="AGENT_NOT_FOUND")
    expect(cli("--request-id", "has space", "send", "c1", "{}"), 2, err="--request-id is 1 to 128")
    expect(cli("send", "c1", "{}", request_id="bad id"), 2, err="--request-id is 1 to 128")
    wait_until(lambda: len(outbox("c1")) == 3, 10, "three outbox events of c1")
    recs = json.loads(cli("--json", "trajectory", "c1").stdout.splitlines()[0])["records"]
    check([r.get("request_id") for r in recs if r.get("request_id", "").startswith("cli-trace")]
          == ["cli-trace-8", "cli-trace.7"], "the ticks carry the CLI's request ids: %r" % recs)
    ev = outbox("c1")
    check([e["seq"] for e in ev] == [1, 2, 3], "outbox seqs 1..3: %r" % ev)
    check(json.loads(ev[-1]["payload"]) == {"count": 3}, "the counter counted 3: %r" % ev)
    for i in range(2):
        expect(cli("send", "v1", '{"v":%d}' % i), 0)
    wait_until(lambda: len(outbox("v1")) == 2, 10, "two outbox events of v1")
    # A signed envelope (here v1's own, as another node's agent would make
    # one) goes in as an envelope: once, then it is a replay.
    env = cli("--json", "write", "v1/identity/envelope", '{"to":"v1","payload":"{\\"v\\":9}"}',
              "--method", "POST").stdout.strip()
    check(json.loads(env)["to"] == "v1", "an envelope: %r" % env)
    expect(cli("send", "v1", env, "--envelope"), 0, out="accepted seq")
    expect(cli("send", "v1", env, "--envelope"), 1, err="REPLAYED_ENVELOPE")
    expect(cli("send", "v1", env, "--envelope", "--idempotency-key", "k"), 2, err="--envelope takes no")
    wait_until(lambda: len(outbox("v1")) == 3, 10, "the envelope's tick on v1")


def test_filesystem():
    ev = ok_json("cat", "c1/outbox", "-q", "from_seq=2")["events"]
    check([e["seq"] for e in ev] == [2, 3], "cat -q from_seq=2: %r" % ev)
    expect(cli("cat", "c1/outbox", "-q", "nonsense"), 2)
    expect(cli("cat", "c1/status"), 0, out='"id": "c1"')
    expect(cli("cat", "c1/no-such-file"), 1, err="NO_SUCH_FILE")
    expect(cli("cat", "nope/status"), 1, err="AGENT_NOT_FOUND")
    expect(cli("cat", "c1/logs/trace"), 1, err="STREAM_ONLY")

    expect(cli("write", "c1/goals/g1", "reach ten"), 0, out='"seq"')
    p = expect(cli("cat", "c1/goals/g1"), 0)
    check(p.stdout == "reach ten\n", "cat of a goal prints its value", p)
    check(ok_json("cat", "c1/goals/g1")["value"] == "reach ten", "cat --json of a goal")
    expect(cli("write", "c1/goals/g2", "-", stdin="from stdin"), 0)
    p = expect(cli("ls", "c1/goals"), 0)
    check(p.stdout.split() == ["g1", "g2"], "ls lists the goals", p)

    expect(cli("write", "c1/ctl", "hibernate"), 0, out="hibernate")
    check(ok_json("status", "c1")["state"] == "hibernated", "ctl hibernate hibernates")
    expect(cli("write", "c1/ctl", "wake"), 0)
    expect(cli("write", "c1/ctl", "dance"), 1, err="BAD_CTL")
    expect(cli("write", "c1/ctl", "tick", "--method", "PATCH"), 2)
    expect(cli("write", "c1", "x"), 2)
    check(ok_json("write", "c1/deadletter", '{"ids":[]}', "--method", "post")["requeued"] == 0,
          "write --method POST requeues the deadletter")

    p = expect(cli("ls", "c1/"), 0)
    for name in ("ctl", "status", "inbox", "outbox", "goals", "memory", "logs"):
        check(name in p.stdout.split(), "ls c1/ lists %s" % name, p)
    check(p.stdout.split() == expect(cli("ls", "c1"), 0).stdout.split(), "ls c1 is ls c1/")
    p = expect(cli("ls"), 0)
    check(p.stdout.split() == ["c1/", "e1/", "v1/"], "ls lists the agents", p)
    p = expect(cli("ls", "c1/outbox"), 0)
    check(p.stdout.split() == ["1", "2", "3"], "ls of the outbox lists seqs", p)
    p = expect(cli("ls", "c1/status"), 0)
    check(p.stdout.split() == ["status"], "ls of a file lists its name", p)
    check("entries" in ok_json("ls", "c1/memory"), "ls --json prints the answer")


def test_trajectory_and_verify():
    recs = ok_json("trajectory", "c1")["records"]
    check([r["index"] for r in recs] == list(range(len(recs))) and len(recs) >= 6,
          "trajectory --json has every record in order: %r" % [r["index"] for r in recs])
    check(recs[0]["trigger"] == "init", "the first record is init")
    # Every trigger of c1 came over HTTP (its create, sends, ctl and goal
    # writes): each record names its request (the server's id, or the one
    # given with --request-id), and each request is another.
    ids = [r.get("request_id", "") for r in recs]
    check(all(re.fullmatch(r"[0-9a-f]{6}-[0-9]+|cli-trace[-.][0-9]", i) for i in ids)
          and len(set(ids)) == len(ids),
          "every record names the request that delivered its trigger: %r" % ids)
    check([r["index"] for r in ok_json("trajectory", "c1", "--from", "2", "--limit", "2")["records"]]
          == [2, 3], "trajectory --from 2 --limit 2")
    p = expect(cli("trajectory", "c1"), 0)
    lines = p.stdout.splitlines()
    check(lines[0].split()[:6] == ["INDEX", "TICK", "ATTEMPT", "TRIGGER", "SEQ", "REQUEST"],
          "a table header", p)
    check(len(lines) == len(recs) + 1 and "init" in lines[1], "one row per record", p)
    check([line.split()[5] for line in lines[1:]] == ids, "the REQUEST column", p)
    expect(cli("trajectory", "nope"), 1, err="AGENT_NOT_FOUND")
    expect(cli("verify", "c1"), 0, out="trajectory records verified")
    v = ok_json("verify", "c1")
    check(v["ok"] is True and v["records"] == len(recs), "verify --json: %r" % v)
    expect(cli("verify", "nope"), 1, err="AGENT_NOT_FOUND")


def test_tail():
    # --from is the first seq shown; --after is exclusive (Last-Event-ID).
    p = expect(cli("tail", "c1/outbox", "--from", "2", "--max-events", "2", "--max-seconds", "20",
                   "--json"), 0)
    got = [json.loads(l) for l in p.stdout.splitlines()]
    check([e["id"] for e in got] == [2, 3] and got[0]["event"] == "outbox"
          and json.loads(got[0]["data"]) == {"count": 2}, "tail --from 2 shows 2 and 3", p)
    p = expect(cli("tail", "c1/outbox", "--after", "1", "--max-seconds", "1"), 0)
    check(p.stdout.splitlines() == ['2  {"count":2}', '3  {"count":3}'],
          "tail --after 1 shows 2 and 3, then stops at --max-seconds", p)
    expect(cli("tail", "nope/outbox", "--max-seconds", "5"), 1, err="AGENT_NOT_FOUND")
    expect(cli("tail", "c1/outbox", "--max-seconds", "5", token="wrong"), 1, err="UNAUTHORIZED")
    expect(cli("tail", "c1/outbox", "--from", "1", "--after", "1"), 2)

    # The trace reports ticks that happen while it is connected.
    out = os.path.join(ARGS.work, "trace.out")
    with open(out, "w") as f:
        tr = subprocess.Popen([ARGS.cli, "tail", "c1/logs/trace", "--json", "--max-events", "1",
                               "--max-seconds", "20"], stdout=f, stderr=subprocess.PIPE,
                              env=env_for())
    try:
        deadline = time.monotonic() + 20
        while tr.poll() is None and time.monotonic() < deadline:
            expect(cli("tick", "c1"), 0)
            time.sleep(0.3)
        check(tr.wait(timeout=25) == 0, "tail of the trace exits 0")
    finally:
        if tr.poll() is None:
            tr.kill()
            tr.wait()
    ev = tail_lines(out)
    check(len(ev) == 1 and ev[0]["event"] == "tick" and json.loads(ev[0]["data"])["tick"] >= 1,
          "the trace shows a tick: %r" % ev)


def test_tail_resumes_across_restart():
    last = outbox("c1")[-1]["seq"]
    out = os.path.join(ARGS.work, "tail.out")
    err = os.path.join(ARGS.work, "tail.err")
    with open(out, "w") as fo, open(err, "w") as fe:
        tp = subprocess.Popen([ARGS.cli, "tail", "c1/outbox", "--after", str(last), "--json",
                               "--max-events", "6", "--max-seconds", "60"],
                              stdout=fo, stderr=fe, env=env_for())
    try:
        for i in range(3):
            expect(cli("send", "c1", '{"round":1}'), 0)
        wait_until(lambda: len(tail_lines(out)) == 3, 15, "tail to show 3 events")
        port = SERVER.port
        SERVER.stop()  # with the stream open: still exits 0
        expect(cli("send", "c1", "{}"), 3, err="cannot reach")
        time.sleep(0.5)  # let tail notice and back off at least once
        SERVER.start(port)
        for i in range(3):
            expect(cli("send", "c1", '{"round":2}'), 0)
        try:
            rc = tp.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Failure("tail did not see 6 events within 30 s of the restart: %r"
                          % tail_lines(out))
    finally:
        if tp.poll() is None:
            tp.kill()
            tp.wait()
    ev = tail_lines(out)
    ids = [e["id"] for e in ev]
    check(rc == 0, "tail exits 0 after --max-events (got %s)" % rc)
    check(ids == list(range(last + 1, last + 7)),
          "every event once and in order across the restart: %r" % ids)
    check([json.loads(e["data"])["count"] for e in ev] == list(range(last + 1, last + 7)),
          "the events' data: %r" % ev)
    check("reconnecting" in open(err).read(), "tail says it reconnects: %r" % open(err).read())


def test_rm():
    expect(cli("agents", "rm", "e1"), 0, out="terminated e1")
    p = cli("status", "e1", "--json")
    check(p.returncode == 1 and "AGENT_NOT_FOUND" in p.stderr, "a removed agent is gone", p)
    check("e1" not in [a["id"] for a in ok_json("agents", "ls")["agents"]], "rm removes e1")
    check(ok_json("agents", "rm", "v1")["state"] == "terminated", "agents rm --json")


def test_a_body_over_max_body_is_the_servers_413():
    """Bug: sending a body past --max-body died in a broken pipe ("cannot reach",
    exit 3) before the server's 413 could be read, most of the time."""
    expect(cli("agents", "create", "big", "echo"), 0)
    for _ in range(3):
        expect(cli("write", "big/goals/g", "-", stdin="x" * (3 << 20)), 1, err="BODY_TOO_LARGE")
    expect(cli("send", "big", "-", stdin=json.dumps({"x": "y" * (2 << 20)})), 1, err="BODY_TOO_LARGE")
    # Under the limit, a large body still goes through (after the 100 Continue).
    expect(cli("write", "big/goals/g", "-", stdin="z" * 700000), 0)
    wait_until(lambda: cli("cat", "big/goals/g").stdout.rstrip("\n") == "z" * 700000, 15,
               "the goal, whole")
    expect(cli("agents", "rm", "big"), 0)


def tail_in_background(agent):
    """A `tail AGENT/outbox --json` running in the background, once it has
    shown the agent's first event: (process, stdout file, stderr file)."""
    out = os.path.join(ARGS.work, "tail-%s.out" % agent)
    err = os.path.join(ARGS.work, "tail-%s.err" % agent)
    with open(out, "w") as fo, open(err, "w") as fe:
        tp = subprocess.Popen([ARGS.cli, "tail", agent + "/outbox", "--json", "--max-seconds", "90"],
                              stdout=fo, stderr=fe, env=env_for())
    wait_until(lambda: len(tail_lines(out)) == 1, 15, "tail to show %s's event" % agent)
    return tp, out, err


def ended_tail(tp, err, what):
    """The exit code and stderr of a background tail that must end by itself."""
    try:
        rc = tp.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise Failure("tail of %s still runs 60 s later: %r" % (what, open(err).read()))
    finally:
        if tp.poll() is None:
            tp.kill()
            tp.wait()
    return rc, open(err).read()


def test_tail_of_a_replaced_agent():
    """Bug: a tail reconnecting to a new agent of the same id went on with its
    events past the old one's last seq, as if nothing had happened."""
    expect(cli("agents", "create", "t2", "counter"), 0)
    expect(cli("send", "t2", "{}"), 0)
    tp, out, err = tail_in_background("t2")
    tp.send_signal(signal.SIGSTOP)  # the stream ends while tail is held
    try:
        expect(cli("agents", "rm", "t2"), 0)
        expect(cli("agents", "create", "t2", "counter"), 0)
        for _ in range(3):
            expect(cli("send", "t2", "{}"), 0)
    finally:
        tp.send_signal(signal.SIGCONT)
    rc, stderr = ended_tail(tp, err, "a replaced agent")
    check(rc == 1 and "AGENT_REPLACED" in stderr, "tail of a replaced agent exits 1 (rc %s): %r"
          % (rc, stderr))
    check(len(tail_lines(out)) == 1, "none of the new agent's events is shown as the old one's")
    expect(cli("agents", "rm", "t2"), 0)


def test_tail_of_a_removed_agent():
    """Deleting the agent ends a tail of it: exit 1 with one line, no endless retry."""
    expect(cli("agents", "create", "t1", "counter"), 0)
    expect(cli("send", "t1", "{}"), 0)
    tp, out, err = tail_in_background("t1")
    expect(cli("agents", "rm", "t1"), 0)
    # The delete ends the server's stream; the reconnection's 404 then
    # ends tail, well before --max-seconds.
    rc, stderr = ended_tail(tp, err, "a removed agent")
    check(rc == 1 and stderr.startswith("ticktock: AGENT_NOT_FOUND")
          and len(stderr.splitlines()) == 1,
          "tail of a removed agent exits 1 with one line (rc %s): %r" % (rc, stderr))
    # A fresh tail of it answers at once.
    expect(cli("tail", "t1/outbox", "--max-seconds", "20"), 1, err="AGENT_NOT_FOUND")


def test_ls_follows_pages():
    """The server pages the outbox and the trajectory (1000 by default)."""
    n = 1005
    expect(cli("agents", "create", "p1", "counter"), 0)
    post_many("p1", n)
    wait_until(lambda: ok_json("cat", "p1/outbox", "-q", "from_seq=%d" % n)["events"], 60,
               "p1 to emit %d events" % n)
    p = expect(cli("ls", "p1/outbox"), 0)
    check(p.stdout.split() == [str(i) for i in range(1, n + 1)],
          "ls of the outbox lists all %d seqs (got %d)" % (n, len(p.stdout.split())))
    ev = ok_json("ls", "p1/outbox")["events"]
    check([e["seq"] for e in ev] == list(range(1, n + 1)), "ls --json of the outbox: all events")
    p = expect(cli("ls", "p1/logs/trajectory"), 0)
    idx = p.stdout.split()
    check(idx == [str(i) for i in range(len(idx))] and len(idx) >= n + 1,
          "ls of the trajectory lists every record index (got %d)" % len(idx))
    check(len(ok_json("ls", "p1/logs/trajectory")["records"]) == len(idx),
          "ls --json of the trajectory: all records")
    check(len(ok_json("trajectory", "p1")["records"]) == len(idx), "trajectory agrees")
    expect(cli("agents", "rm", "p1"), 0)


def test_verify_detects_corruption():
    """Flips one byte of v2's trajectory record 1 in RocksDB (server stopped)."""
    ldb = shutil.which("ldb")
    if not ldb:
        print("SKIPPED verify of a corrupt chain: no ldb (rocksdb-tools)")
        return
    expect(cli("agents", "create", "v2", "counter"), 0)
    for i in range(3):
        expect(cli("send", "v2", "{}"), 0)
    wait_until(lambda: len(outbox("v2")) == 3, 10, "three outbox events of v2")
    port = SERVER.port
    SERVER.stop()
    key = "0x" + (b"v2\0" + (1).to_bytes(8, "big")).hex().upper()
    db = ["--db=" + ARGS.data, "--column_family=trajectory"]
    got = subprocess.run([ldb, *db, "get", "--hex", key], capture_output=True, text=True, timeout=30)
    check(got.returncode == 0 and got.stdout.startswith("0x"), "ldb reads the record: %r" % got)
    value = bytearray.fromhex(got.stdout.strip()[2:])
    value[-1] ^= 1
    put = subprocess.run([ldb, *db, "put", "--hex", key, "0x" + value.hex().upper()],
                         capture_output=True, text=True, timeout=30)
    check(put.returncode == 0, "ldb writes the record: %r" % put)
    SERVER.start(port)
    p = expect(cli("verify", "v2"), 1, err="CHAIN_BROKEN: first bad record")
    v = json.loads(expect(cli("verify", "v2", "--json"), 1).stdout)
    check(v["ok"] is False and "first_bad" in v, "verify --json of a broken chain: %r" % v)
    check(("first bad record %d" % v["first_bad"]) in p.stderr, "stderr names the record", p)
    # Its bundle would not import: export refuses to write it (the recipe
    # `export && agents rm && import` stops before the rm), unless asked.
    bundle = os.path.join(ARGS.work, "v2.bundle")
    expect(cli("export", "v2", bundle), 1, err="would not import")
    check(not os.path.exists(bundle) and not os.path.exists(bundle + ".part"),
          "a refused export writes nothing")
    expect(cli("export", "v2", bundle, "--allow-broken"), 0, out="exported v2 to")
    expect(cli("import", bundle), 1, err="does not verify")
    expect(cli("verify", "c1"), 0)


def test_export_import():
    """Bundles: GET .../fs/memory/export and POST /v1/agents/import."""
    before = ok_json("status", "c1")
    bundle = os.path.join(ARGS.work, "c1.bundle")
    expect(cli("export", "c1", bundle), 0, out="exported c1 to")
    check(os.path.getsize(bundle) > 0 and not os.path.exists(bundle + ".part"),
          "the bundle file is written whole")
    e = ok_json("export", "c1", bundle)
    check(e["bytes"] == os.path.getsize(bundle), "export --json gives the size: %r" % e)
    expect(cli("export", "nope", bundle + ".x"), 1, err="AGENT_NOT_FOUND")
    check(not os.path.exists(bundle + ".x"), "a failed export writes no file")
    expect(cli("import", bundle), 1, err="ALREADY_EXISTS")
    expect(cli("import", "/dev/null"), 1, err="INVALID_ARGUMENT")
    expect(cli("export", "c1", "/nonexistent-dir/c1.bundle"), 2, err="cannot write")
    target_dir = os.path.join(ARGS.work, "a-directory")
    os.mkdir(target_dir)
    expect(cli("export", "c1", target_dir), 2, err="cannot write")
    check(os.listdir(ARGS.work).count("a-directory") == 1
          and not [n for n in os.listdir(ARGS.work) if n.startswith(".a-directory")],
          "a failed export leaves no temporary file")
    # Bugs: the bundle went through FILE.part, following a symlink left there
    # onto its target; it replaced a device or a symlink with a plain file;
    # and it was world-readable with the secret keys in it.
    victim = os.path.join(ARGS.work, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious")
    trap = os.path.join(ARGS.work, "trap.bundle")
    os.symlink(victim, trap + ".part")
    expect(cli("export", "c1", trap), 0)
    check(open(victim).read() == "precious", "a link at FILE.part is not followed")
    fifo = os.path.join(ARGS.work, "a-fifo")  # as /dev/null would be, but ours
    os.mkfifo(fifo)
    expect(cli("export", "c1", fifo), 2, err="not a regular file")
    check(stat.S_ISFIFO(os.stat(fifo).st_mode), "a FIFO FILE is not replaced")
    # A link to a file not there yet: the file is written there, the link stays.
    dangling = os.path.join(ARGS.work, "dangling.bundle")
    os.symlink("sub/target.bundle", dangling)
    os.mkdir(os.path.join(ARGS.work, "sub"))
    expect(cli("export", "c1", dangling), 0)
    check(os.path.islink(dangling) and os.path.getsize(os.path.join(ARGS.work, "sub/target.bundle")) > 0,
          "a dangling symlink FILE stays a link; its target is written")
    link = os.path.join(ARGS.work, "link.bundle")
    os.symlink("c1.bundle", link)
    expect(cli("export", "c1", link, "--secrets"), 0)
    check(os.path.islink(link), "a symlink FILE stays a link; its target is written")
    check(stat.S_IMODE(os.stat(bundle).st_mode) == 0o600, "a bundle with secrets is 0600")
    os.chmod(bundle, 0o640)
    expect(cli("export", "c1", bundle), 0)
    check(stat.S_IMODE(os.stat(bundle).st_mode) == 0o640, "without secrets, FILE keeps its mode")
    # Output that cannot be written is an error, not a silent success.
    with open("/dev/full", "wb") as full:
        p = subprocess.run([ARGS.cli, "export", "c1", "-"], stdout=full, stderr=subprocess.PIPE,
                           timeout=30, env=env_for())
    check(p.returncode == 2 and b"cannot write to standard output" in p.stderr,
          "export - to a full device fails: %r" % p)
    expect(cli("import", target_dir), 2, err="cannot read %s: " % target_dir)
    expect(cli("agents", "rm", "c1"), 0)
    expect(cli("import", bundle), 0, out="imported c1 (type counter")
    after = ok_json("status", "c1")
    check(after["type"] == "counter" and after["last_tick"] == before["last_tick"],
          "the imported agent is the exported one: %r vs %r" % (after, before))
    expect(cli("verify", "c1"), 0)
    count = len(outbox("c1"))
    expect(cli("send", "c1", "{}"), 0)  # it goes on where it left off
    wait_until(lambda: len(outbox("c1")) == count + 1, 10, "the imported c1 to count on")
    check(json.loads(outbox("c1")[-1]["payload"]) == {"count": count + 1}, "the count goes on")
    expect(cli("agents", "rm", "c1"), 0)
    with open(bundle, "rb") as f:
        p = subprocess.run([ARGS.cli, "import", "-", "--json"], stdin=f, capture_output=True,
                           timeout=30, env=env_for())
    check(p.returncode == 0 and json.loads(p.stdout)["id"] == "c1", "import - reads stdin: %r" % p)
    expect(cli("import", os.path.join(ARGS.work, "no-such-file")), 2)
    # --secrets carries the keys, so the imported agent keeps its public key.
    key = ok_json("cat", "c1/identity/pubkey")["ed25519"]
    expect(cli("export", "c1", bundle, "--secrets"), 0)
    expect(cli("agents", "rm", "c1"), 0)
    expect(cli("import", bundle), 0)
    check(ok_json("cat", "c1/identity/pubkey")["ed25519"] == key, "--secrets keeps the keys")
    expect(cli("export", "c1", bundle), 0)
    expect(cli("agents", "rm", "c1"), 0)
    expect(cli("import", bundle), 0)
    check(ok_json("cat", "c1/identity/pubkey")["ed25519"] != key, "without --secrets: new keys")
    expect(cli("verify", "c1"), 0)  # old records verify with the retired key


def main():
    global ARGS, SERVER
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--ticktockd", required=True)
    ap.add_argument("--work", required=True)
    ARGS = ap.parse_args()
    shutil.rmtree(ARGS.work, ignore_errors=True)
    os.makedirs(ARGS.work)
    ARGS.data = os.path.join(ARGS.work, "data")
    SERVER = Server(ARGS.ticktockd, ARGS.data, ARGS.work)
    steps = [test_help_and_usage, test_no_server]
    server_steps = [test_auth, test_agents, test_send_and_tick, test_filesystem,
                    test_trajectory_and_verify, test_tail, test_tail_resumes_across_restart,
                    test_rm, test_a_body_over_max_body_is_the_servers_413,
                    test_tail_of_a_replaced_agent, test_tail_of_a_removed_agent, test_ls_follows_pages,
                    test_verify_detects_corruption, test_export_import]
    try:
        for step in steps:
            step()
            print("ok", step.__name__)
        SERVER.start()
        for step in server_steps:
            step()
            print("ok", step.__name__)
        SERVER.stop()
        print("ok ticktockd exits 0 on SIGTERM")
    except Failure as f:
        print("FAILED:", f)
        for n in range(1, SERVER.starts + 1):
            log = os.path.join(ARGS.work, "ticktockd-%d.log" % n)
            print("--- ticktockd-%d.log (tail)" % n)
            print("".join(open(log, errors="replace").readlines()[-30:]))
        return 1
    finally:
        SERVER.kill()
    shutil.rmtree(ARGS.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
