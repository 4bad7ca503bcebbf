#!/usr/bin/env python3
"""End-to-end tests of outbound HTTP (the http service): the real ticktockd on
127.0.0.1 with a temp data directory, a real HTTP server (Python's
http.server, also on 127.0.0.1) as the destination, and the built-in
`fetcher` agent, which stages each message as ctx.fetch and emits every
http_result it gets. Covers the result trigger, http/new and http/jobs, the
policy gate by destination host, approvals decided over HTTP, the kill switch,
the budget, timeouts, size limits, bad requests, a crash with a fetch open,
and the refusal of private addresses without --http-fetch-private (the
target is on 127.0.0.1, so the other tests start ticktockd with it).

Run: TICKTOCKD=build/tools/ticktockd python3 tests/e2e/http_fetch_e2e_test.py -v
"""

import http.server
import json
import os
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_check  # noqa: E402
from ticktockd_server import Server  # noqa: E402

PRICE = 1000  # --http-fetch-price: micro-USD per fetch


def fs(agent, path):
    return "/v1/agents/%s/fs/%s" % (agent, path)


# -- the destination ---------------------------------------------------------------


class Target:
    """A small HTTP server on 127.0.0.1 that records what it gets:
    /hello (200 text), /echo (the request body back), /redirect (302 to
    /hello), /big (200 KB), /hang (answers only when released, at most 15 s)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.hanging = threading.Event()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the fetch gave up first (timeout, size limit, crash)

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with target.lock:
                    target.requests.append({"method": self.command, "path": self.path,
                                            "headers": {k.lower(): v for k, v in self.headers.items()},
                                            "request_ids": self.headers.get_all("X-Request-Id") or [],
                                            "body": body})
                if self.path == "/hello":
                    self.answer(200, b"hello from the target", [("Content-Type", "text/plain"),
                                                                 ("X-Target", "yes")])
                elif self.path == "/echo":
                    self.answer(200, body, [("Content-Type", "application/octet-stream")])
                elif self.path == "/redirect":
                    self.answer(302, b"", [("Location", "/hello")])
                elif self.path == "/big":
                    self.answer(200, b"x" * 200_000)
                elif self.path == "/hang":
                    target.hanging.set()
                    target.release.wait(15)
                    self.answer(200, b"late")
                else:
                    self.answer(404, b"no such page")

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = handle_any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def paths(self):
        with self.lock:
            return [r["path"] for r in self.requests]

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# -- helpers ---------------------------------------------------------------------


class Helpers:
    def ok(self, r, status=200):
        self.assertEqual(r.status, status, "%r\n%s" % (r, self.server.output()))
        return r.json() if r.body else None

    def get_json(self, path):
        return self.ok(self.server.get(path))

    def put(self, path, body):
        return self.server.request("PUT", path, body=body)

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code, r)
        return err

    def fetcher(self, agent):
        self.server.create(agent, "fetcher")

    def ask(self, agent, request):
        """Sends a fetch request to a fetcher; returns the job id it staged."""
        r = self.server.post("/v1/agents/%s/inbox" % agent, body=json.dumps(request),
                             headers={"Content-Type": "application/json"})
        seq = self.ok(r, 202)["seq"]
        ev = self.wait_outbox(agent, lambda e: "job" in e and "service" not in e
                              and e["job"] not in self.seen(agent),
                              "the fetcher to stage its fetch")
        self.seen(agent).add(ev["job"])
        return ev["job"], seq

    def seen(self, agent):
        if not hasattr(self, "_seen"):
            self._seen = {}
        return self._seen.setdefault(agent, set())

    def outbox(self, agent):
        events = self.get_json(fs(agent, "outbox?limit=10000"))["events"]
        return [json.loads(e["payload"]) for e in events]

    def wait_outbox(self, agent, pred, what, timeout=20):
        def found():
            return next((e for e in self.outbox(agent) if pred(e)), None)
        return self.server.wait_for(found, what, timeout)

    def result(self, agent, job, timeout=20):
        """The http_result payload the agent got for `job`."""
        return self.wait_outbox(agent, lambda e: e.get("service") == "http" and e["job"] == job,
                                "the http_result of %s" % job, timeout)

    def job(self, agent, job):
        return self.get_json(fs(agent, "http/jobs/%s/status" % job))

    def trajectory(self, agent):
        return self.get_json(fs(agent, "logs/trajectory?limit=10000"))["records"]

    def decisions_for(self, agent, job):
        return [(d["action"], d["decision"], d["reason"], d.get("destination"))
                for r in self.trajectory(agent) for d in r.get("decisions", []) if d["job"] == job]

    def balance(self, agent):
        return self.get_json(fs(agent, "wallet/balance"))


class FetchCase(Helpers, unittest.TestCase):
    """One ticktockd and one target per class."""

    # The target is on 127.0.0.1: allow private addresses.
    server_args = ("--http-fetch-price", str(PRICE), "--http-fetch-private")

    @classmethod
    def setUpClass(cls):
        cls.target = Target()
        cls.server = Server(args=cls.server_args).start()

    @classmethod
    def tearDownClass(cls):
        cls.target.close()
        rc = cls.server.stop()
        cls.server.close()
        assert rc == 0, "ticktockd exited with %r" % rc


# -- fetching -------------------------------------------------------------------


class FetchTest(FetchCase):
    def test_an_agent_fetches_and_gets_the_response_as_an_http_result_trigger(self):
        self.fetcher("f1")
        job, _ = self.ask("f1", {"url": self.target.url("/hello"),
                                 "headers": {"X-Agent": "f1", "Authorization": "Bearer s3cret"}})
        res = self.result("f1", job)
        self.assertEqual((res["status"], res["cost_micro_usd"]), ("done", PRICE), res)
        self.assertEqual(res["result"]["status"], 200)
        self.assertEqual(res["result"]["body"], "hello from the target")
        self.assertEqual(res["result"]["headers"]["x-target"], "yes")
        got = [r for r in self.target.requests if r["headers"].get("x-agent") == "f1"]
        self.assertEqual(len(got), 1)
        self.assertEqual((got[0]["method"], got[0]["path"]), ("GET", "/hello"))
        self.assertEqual(got[0]["headers"]["authorization"], "Bearer s3cret")

        # The trigger kind, the gate's decision and the job's files.
        kinds = [r["trigger"] for r in self.trajectory("f1")]
        self.assertIn("http_result", kinds)
        self.assertEqual(self.decisions_for("f1", job),
                         [("http", "allow", "allowed", "127.0.0.1")])
        j = self.job("f1", job)
        self.assertEqual((j["service"], j["status"], j["destination"]), ("http", "done", "127.0.0.1"))
        # Credentials in the request's headers are not served back.
        self.assertEqual(j["request"]["headers"], {"X-Agent": "f1", "Authorization": "(redacted)"})
        self.assertNotIn("s3cret", json.dumps(self.get_json(fs("f1", "http/jobs"))))
        full = self.get_json(fs("f1", "http/jobs/%s/result" % job))
        self.assertEqual(full["result"]["body"], "hello from the target")
        self.assertEqual([x["id"] for x in self.get_json(fs("f1", "http/jobs"))["jobs"]], [job])
        # The job, and its result's tick, carry the id of the request that asked for it.
        recs = self.trajectory("f1")
        asked = [r.get("request_id") for r in recs if r["trigger"] == "message"]
        self.assertTrue(asked and asked[-1], recs)
        self.assertEqual(j.get("request_id"), asked[-1], j)
        # The fetch itself sends it on.
        self.assertEqual(got[0]["request_ids"], [asked[-1]])
        self.assertEqual([r.get("request_id") for r in recs if r["trigger"] == "http_result"],
                         [asked[-1]])

        # Billed to the wallet as an http fetch.
        b = self.balance("f1")
        self.assertEqual((b["spent"]["total"], b["reserved"]), (PRICE, 0))
        u = self.get_json(fs("f1", "http/usage"))
        self.assertEqual((u["spent_micro_usd"], u["reserved_micro_usd"], u["jobs"]),
                         (PRICE, 0, {"done": 1}))
        h = [(e["kind"], e["service"]) for e in self.get_json(fs("f1", "wallet/history"))["entries"]
             if e["job"] == job]
        self.assertEqual(h, [("reserve", "http"), ("settle", "http")])
        self.assertEqual(self.get_json(fs("f1", "http")), {"entries": ["new", "jobs", "policy", "usage"]})

    def test_post_bodies_and_headers_arrive_and_redirects_come_back_unfollowed(self):
        self.fetcher("f2")
        job, _ = self.ask("f2", {"method": "POST", "url": self.target.url("/echo"),
                                 "headers": {"Content-Type": "text/plain", "X-Request-Id": "mine-1"},
                                 "body": "ping \u00e9"})
        res = self.result("f2", job)
        self.assertEqual(res["result"]["status"], 200)
        self.assertEqual(res["result"]["body"], "ping \u00e9")
        sent = [r for r in self.target.requests if r["path"] == "/echo"][-1]
        self.assertEqual(sent["body"], "ping \u00e9".encode())
        self.assertEqual(sent["headers"]["content-type"], "text/plain")
        self.assertEqual(sent["request_ids"], ["mine-1"])  # the agent's own, not the tick's too

        before = self.target.paths().count("/hello")
        job, _ = self.ask("f2", {"url": self.target.url("/redirect")})
        res = self.result("f2", job)
        self.assertEqual(res["status"], "done")
        self.assertEqual(res["result"]["status"], 302)
        self.assertEqual(res["result"]["headers"]["location"], "/hello")
        self.assertEqual(self.target.paths().count("/hello"), before)  # not followed

        job, _ = self.ask("f2", {"url": self.target.url("/missing")})
        res = self.result("f2", job)
        self.assertEqual((res["status"], res["result"]["status"]), ("done", 404))

    def test_a_server_that_never_answers_fails_with_timeout(self):
        self.fetcher("f3")
        job, _ = self.ask("f3", {"url": self.target.url("/hang"), "timeout_ms": 300})
        res = self.result("f3", job)
        self.assertEqual((res["status"], res["reason"]), ("failed", "timeout"), res)
        self.assertIn("300 ms", res["message"])
        self.assertEqual(res["result"]["code"], "timeout")
        self.assertEqual(self.balance("f3")["reserved"], 0)

    def test_a_response_over_the_size_limit_fails_with_response_too_large(self):
        self.fetcher("f4")
        job, _ = self.ask("f4", {"url": self.target.url("/big"), "max_response_bytes": 1000})
        res = self.result("f4", job)
        self.assertEqual((res["status"], res["reason"]), ("failed", "response_too_large"), res)
        self.assertIn("1000", res["message"])

    def test_bad_requests_are_refused_with_a_clear_error(self):
        self.server.create("plain", "echo")
        for body, part in ((b"{not json", "not valid JSON"),
                           (json.dumps({"url": "ftp://127.0.0.1/x"}), "only http and https"),
                           (json.dumps({"url": "http://127.0.0.1/", "method": "TRACE"}), "method"),
                           (json.dumps({"url": "http://127.0.0.1/", "headers": {"Host": "x"}}),
                            "set by the executor"),
                           (json.dumps({"url": "http://127.0.0.1/", "timeout_ms": 10 ** 9}),
                            "timeout_ms"),
                           (json.dumps({"url": "http://127.0.0.1/", "bogus": 1}), "unknown field")):
            r = self.server.post(fs("plain", "http/new"), body=body,
                                 headers={"Content-Type": "application/json"})
            err = self.assertError(r, 400, "BAD_REQUEST_BODY")
            self.assertIn(part, err["message"])
        self.assertEqual(self.get_json(fs("plain", "http/jobs"))["jobs"], [])
        # The agent's own malformed fetch: fetcher checks before ctx.fetch.
        self.fetcher("f5")
        self.server.post("/v1/agents/f5/inbox", body=json.dumps({"url": "gopher://x/"}),
                         headers={"Content-Type": "application/json"})
        ev = self.wait_outbox("f5", lambda e: "error" in e, "the refusal")
        self.assertIn("only http and https", ev["error"])

    def test_http_new_from_outside_runs_and_the_agent_gets_the_result(self):
        self.fetcher("f6")
        r = self.server.post(fs("f6", "http/new"), {"url": self.target.url("/hello")})
        j = self.ok(r, 202)
        self.assertEqual((j["service"], j["status"], j["destination"]), ("http", "queued", "127.0.0.1"))
        res = self.result("f6", j["id"])
        self.assertEqual(res["result"]["status"], 200)
        done = self.job("f6", j["id"])
        self.assertEqual((done["status"], done["cost_micro_usd"]), ("done", PRICE))
        # The job and its result's tick carry the id of the POST that submitted it.
        self.assertEqual((j.get("request_id"), done.get("request_id")),
                         (r.headers["x-request-id"],) * 2)
        self.assertIn(r.headers["x-request-id"], [rec.get("request_id") for rec in self.trajectory("f6")
                                                   if rec["trigger"] == "http_result"])


    def test_an_agent_token_needs_the_fetch_scope_and_cannot_write_the_policy(self):
        self.fetcher("f7")

        def issue(scopes):
            r = self.server.post("/v1/tokens", {"agent": "f7", "scopes": scopes})
            self.assertEqual(r.status, 201, r)
            return r.json()["token"]

        def call(token, method, path, body):
            return self.server.request(method, path, body=body, auth=False,
                                       headers={"Authorization": "Bearer " + token})

        req = {"url": self.target.url("/hello")}
        reader = issue(["read"])
        self.assertError(call(reader, "POST", fs("f7", "http/new"), req), 403, "FORBIDDEN")
        # "http" is the scope of the agent's own routes, not of outbound fetches.
        self.assertError(call(issue(["http"]), "POST", fs("f7", "http/new"), req), 403, "FORBIDDEN")
        j = self.ok(call(issue(["fetch"]), "POST", fs("f7", "http/new"), req), 202)
        self.assertEqual(self.result("f7", j["id"])["status"], "done")
        self.assertEqual(self.ok(call(reader, "GET", fs("f7", "http/policy"), None)),
                         {"rules": [], "default": "allow"})
        self.assertError(call(issue(["read", "fetch"]), "PUT", fs("f7", "http/policy"),
                              {"rules": [], "default": "deny"}), 403, "FORBIDDEN")


# -- the policy gate ----------------------------------------------------------------


class PolicyTest(FetchCase):
    def test_an_agent_policy_denies_by_destination_host(self):
        self.fetcher("p1")
        policy = {"rules": [{"when": {"action": "http", "destination": "127.0.0.*"},
                             "decision": "deny", "reason": "no_loopback"}], "default": "allow"}
        self.ok(self.put(fs("p1", "http/policy"), policy))
        self.assertEqual(self.get_json(fs("p1", "http/policy"))["rules"][0]["reason"], "no_loopback")
        before = len(self.target.requests)
        job, _ = self.ask("p1", {"url": self.target.url("/hello")})
        res = self.result("p1", job)
        self.assertEqual((res["status"], res["reason"]), ("denied", "no_loopback"), res)
        self.assertEqual(self.decisions_for("p1", job), [("http", "deny", "no_loopback", "127.0.0.1")])
        # Another host is not matched by the rule (it fails to connect instead).
        job2, _ = self.ask("p1", {"url": "http://localhost:1/", "timeout_ms": 2000})
        res2 = self.result("p1", job2)
        self.assertNotEqual(res2["status"], "denied", res2)
        self.assertEqual(len([r for r in self.target.requests[before:] if r["path"] == "/hello"]), 0)
        # From outside, http/new refuses with 403 POLICY_DENIED.
        r = self.server.post(fs("p1", "http/new"), {"url": self.target.url("/hello")})
        err = self.assertError(r, 403, "POLICY_DENIED")
        self.assertEqual(err["details"]["job"]["reason"], "no_loopback")
        b = self.balance("p1")
        self.assertEqual(b["reserved"], 0)
        # A malformed policy is refused and the old one stays.
        self.assertError(self.put(fs("p1", "http/policy"), {"rules": [{"decision": "nope"}]}),
                         400, "BAD_POLICY")
        self.assertEqual(self.get_json(fs("p1", "http/policy"))["rules"][0]["reason"], "no_loopback")

    def test_require_approval_parks_the_fetch_until_an_admin_decides_over_http(self):
        self.fetcher("p2")
        policy = {"rules": [{"when": {"action": "http"}, "decision": "require_approval",
                             "reason": "fetch_needs_approval"}]}
        self.ok(self.put(fs("p2", "http/policy"), policy))

        # Approved: the fetch runs, the agent saw approval_decision then http_result.
        j = self.ok(self.server.post(fs("p2", "http/new"), {"url": self.target.url("/hello")}), 202)
        self.assertEqual(j["status"], "awaiting_approval")
        a = self.get_json("/v1/approvals/" + j["approval"])
        self.assertEqual((a["action"], a["destination"], a["reason"], a["cost_micro_usd"], a["status"]),
                         ("http", "127.0.0.1", "fetch_needs_approval", PRICE, "pending"))
        self.assertEqual(self.balance("p2")["reserved"], 0)
        d = self.ok(self.server.post("/v1/approvals/%s/decide" % a["id"], {"decision": "approve"}))
        self.assertEqual(d["status"], "approved")
        res = self.result("p2", j["id"])
        self.assertEqual((res["status"], res["result"]["status"]), ("done", 200))
        kinds = [r["trigger"] for r in self.trajectory("p2")]
        i = kinds.index("approval_decision")
        self.assertIn("http_result", kinds[i + 1:])
        self.assertEqual(self.decisions_for("p2", j["id"]),
                         [("http", "require_approval", "fetch_needs_approval", "127.0.0.1"),
                          ("http", "allow", "approved", "127.0.0.1")])

        # Denied: it never runs; the agent is told.
        before = len(self.target.requests)
        job, _ = self.ask("p2", {"url": self.target.url("/hello")})
        self.assertEqual(self.job("p2", job)["status"], "awaiting_approval")
        aid = self.job("p2", job)["approval"]
        self.ok(self.server.post("/v1/approvals/%s/decide" % aid, {"decision": "deny"}))
        res = self.result("p2", job)
        self.assertEqual((res["status"], res["reason"]), ("denied", "denied_by_admin"))
        self.assertEqual(len(self.target.requests), before)
        self.assertEqual(self.balance("p2")["spent"]["total"], PRICE)  # only the approved one

    def test_the_kill_switch_denies_fetches(self):
        self.fetcher("p3")
        self.ok(self.put("/v1/killswitch", {"engaged": True}))
        try:
            job, _ = self.ask("p3", {"url": self.target.url("/hello")})
            res = self.result("p3", job)
            self.assertEqual((res["status"], res["reason"]), ("denied", "kill_switch"))
            self.assertEqual(self.decisions_for("p3", job), [("http", "deny", "kill_switch", "127.0.0.1")])
            r = self.server.post(fs("p3", "http/new"), {"url": self.target.url("/hello")})
            self.assertError(r, 403, "KILL_SWITCH")
        finally:
            self.ok(self.put("/v1/killswitch", {"engaged": False}))
        job, _ = self.ask("p3", {"url": self.target.url("/hello")})
        self.assertEqual(self.result("p3", job)["status"], "done")

    def test_engaging_the_kill_switch_cancels_a_fetch_in_flight(self):
        self.fetcher("p5")
        self.target.hanging.clear()
        job, _ = self.ask("p5", {"url": self.target.url("/hang"), "timeout_ms": 20000})
        self.assertTrue(self.target.hanging.wait(10), "the fetch never reached the target")
        self.assertEqual(self.balance("p5")["reserved"], PRICE)
        self.ok(self.put("/v1/killswitch", {"engaged": True}))
        try:
            res = self.result("p5", job, timeout=5)
            self.assertEqual((res["status"], res["reason"], res["cost_micro_usd"]),
                             ("cancelled", "kill_switch", 0), res)
        finally:
            self.ok(self.put("/v1/killswitch", {"engaged": False}))
        b = self.balance("p5")
        self.assertEqual((b["reserved"], b["spent"]["total"]), (0, 0))

    def test_a_fetch_over_the_budget_is_denied_with_budget_exceeded(self):
        self.fetcher("p4")
        self.ok(self.put(fs("p4", "wallet/limits"), {"total": PRICE + PRICE // 2}))
        job, _ = self.ask("p4", {"url": self.target.url("/hello")})
        self.assertEqual(self.result("p4", job)["status"], "done")
        job, _ = self.ask("p4", {"url": self.target.url("/hello")})
        res = self.result("p4", job)
        self.assertEqual((res["status"], res["reason"]), ("denied", "budget_exceeded"), res)
        self.assertIn("budget exceeded", res["message"])
        r = self.server.post(fs("p4", "http/new"), {"url": self.target.url("/hello")})
        self.assertError(r, 402, "BUDGET_EXCEEDED")
        b = self.balance("p4")
        self.assertEqual((b["spent"]["total"], b["reserved"]), (PRICE, 0))


# -- private addresses ---------------------------------------------------------------


class PrivateAddressTest(FetchCase):
    """ticktockd without --http-fetch-private: fetches reach public addresses only."""

    server_args = ("--http-fetch-price", str(PRICE))

    def test_a_fetch_of_the_nodes_own_loopback_port_fails_with_address_not_allowed(self):
        self.fetcher("p1")
        own = "http://127.0.0.1:%d/v1/agents" % self.server.port
        for url in (own, self.target.url("/hello"), "http://169.254.169.254/latest/meta-data/"):
            job, _ = self.ask("p1", {"url": url, "headers": {"Authorization": "Bearer t"}})
            res = self.result("p1", job)
            self.assertEqual((res["status"], res["reason"]), ("failed", "address_not_allowed"), res)
            self.assertEqual(res["result"]["code"], "address_not_allowed", res)
            self.assertIn("not a public address", res["message"])
            self.assertIn("--http-fetch-private", res["message"])
            self.assertNotIn("\n", res["message"])
            j = self.job("p1", job)
            self.assertEqual((j["status"], j["reason"]), ("failed", "address_not_allowed"), j)
        self.assertEqual(self.target.paths(), [])  # no request reached the target
        # Nothing went out: a refused fetch costs nothing.
        b = self.balance("p1")
        self.assertEqual((b["spent"]["total"], b["reserved"]), (0, 0))

    def test_the_config_file_and_the_environment_allow_private_addresses(self):
        with tempfile.TemporaryDirectory(prefix="ticktock-private-") as tmp:
            config = os.path.join(tmp, "ticktockd.json")
            with open(config, "w") as f:
                json.dump({"http-fetch-private": True}, f)
            for args, env in ((("--config", config), None), ((), "true")):
                server = self.server = Server(args=args)
                saved = os.environ.get("TICKTOCK_HTTP_FETCH_PRIVATE")
                try:
                    if env is not None:
                        os.environ["TICKTOCK_HTTP_FETCH_PRIVATE"] = env
                    server.start()
                    self.fetcher("p2")
                    job, _ = self.ask("p2", {"url": self.target.url("/hello")})
                    res = self.result("p2", job)
                    self.assertEqual((res["status"], res["result"]["status"]), ("done", 200),
                                     (args, env, res))
                    self.assertEqual(server.stop(), 0, server.output())
                finally:
                    if saved is None:
                        os.environ.pop("TICKTOCK_HTTP_FETCH_PRIVATE", None)
                    else:
                        os.environ["TICKTOCK_HTTP_FETCH_PRIVATE"] = saved
                    server.close()
                    del self.server  # back to the class's server
                    self._seen = {}


# -- crash and restart ---------------------------------------------------------------


class CrashRestartTest(Helpers, unittest.TestCase):
    def test_a_fetch_open_when_the_server_dies_is_ended_as_interrupted_at_restart(self):
        target = Target()
        server = self.server = Server(args=("--http-fetch-price", str(PRICE), "--http-fetch-private"))
        try:
            server.start()
            self.fetcher("c1")
            job, _ = self.ask("c1", {"url": target.url("/hang"), "timeout_ms": 20000})
            self.assertTrue(target.hanging.wait(10), "the fetch never reached the target")
            self.assertEqual(self.job("c1", job)["status"], "queued")
            self.assertEqual(self.balance("c1")["reserved"], PRICE)

            server.kill()  # SIGKILL with the fetch in flight
            target.release.set()
            server.start()

            res = self.result("c1", job)
            self.assertEqual((res["status"], res["reason"]), ("failed", "interrupted"), res)
            done = self.job("c1", job)
            self.assertEqual((done["status"], done["reason"], done["cost_micro_usd"]),
                             ("failed", "interrupted", 0))
            b = self.balance("c1")
            self.assertEqual((b["reserved"], b["spent"]["total"]), (0, 0))
            h = [(e["kind"], e["amount_micro_usd"]) for e in
                 self.get_json(fs("c1", "wallet/history"))["entries"] if e["job"] == job]
            self.assertEqual(h, [("reserve", PRICE), ("release", PRICE)])
            self.assertEqual(self.get_json(fs("c1", "http/usage"))["reserved_micro_usd"], 0)
            self.assertEqual(server.stop(), 0, server.output())
        finally:
            server.close()
            target.close()


class TwoNodesTest(Helpers, unittest.TestCase):
    def test_an_agent_calling_another_nodes_agent_gives_both_ticks_one_request_id(self):
        # Node A's fetcher POSTs to node B's /a/e1/ (an echo): B keeps the
        # X-Request-Id the fetch sends, so one id finds the ticks on both.
        self.server = Server(args=("--http-fetch-price", str(PRICE), "--http-fetch-private"))
        other = Server(token="other-node-token")
        try:
            self.server.start()
            other.start()
            other.create("e1", "echo")
            self.fetcher("f1")
            job, _ = self.ask("f1", {"method": "POST", "body": "hello B",
                                     "url": "http://127.0.0.1:%d/a/e1/" % other.port,
                                     "headers": {"Authorization": "Bearer " + other.token}})
            res = self.result("f1", job)
            self.assertEqual((res["status"], res["result"]["status"], res["result"]["body"]),
                             ("done", 200, "hello B"), res)
            asked = [r.get("request_id") for r in self.trajectory("f1") if r["trigger"] == "message"]
            self.assertTrue(asked and asked[-1])
            self.assertEqual(res["result"]["headers"].get("x-request-id"), asked[-1])
            on_b = other.get("/v1/agents/e1/fs/logs/trajectory").json()["records"]
            self.assertEqual([r.get("request_id") for r in on_b if r["trigger"] == "http"],
                             [asked[-1]], on_b)
            self.assertIn("request_id=%s " % asked[-1], other.output())
            self.assertEqual(other.stop(), 0, other.output())
            self.assertEqual(self.server.stop(), 0, self.server.output())
        finally:
            other.close()
            self.server.close()


def tearDownModule():
    # Every response these tests received through Server.request agrees with
    # docs/openapi.yaml: documented route, method and status, and a body of
    # the documented schema.
    openapi_check.assert_conforms()


if __name__ == "__main__":
    unittest.main()
