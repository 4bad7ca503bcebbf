#!/usr/bin/env python3
"""End-to-end tests of budgets, the policy gate, approvals, the kill switch and
the compute and containers services: the real ticktockd on 127.0.0.1 with a
temp data directory, spoken to over HTTP (Python 3 standard library only).
The built-in `llm-chat` agent type asks the compute service (the deterministic
`local` provider) for its answers, so these are the agent's own jobs.

Run: TICKTOCKD=build/tools/ticktockd python3 tests/e2e/services_e2e_test.py -v
TICKTOCK_TEST_OPENAI names the OpenAI-compatible test server (default: next
to ticktockd, build/tests/ticktock-test-openai); without it that test skips.
"""

import json
import os
import shutil
import re
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_check  # noqa: E402
from ticktockd_server import Server, ticktockd_path  # noqa: E402


# -- helpers -------------------------------------------------------------------


def fs(agent, path):
    return "/v1/agents/%s/fs/%s" % (agent, path)


class Helpers:
    """Requests and waits against self.server, for unittest.TestCase classes."""

    # -- requests ---------------------------------------------------------------

    def ok(self, r, status=200):
        self.assertEqual(r.status, status, "%r\n%s" % (r, self.server.output()))
        return r.json() if r.body and r.headers.get("content-type", "").startswith(
            "application/json") else r.body

    def get_json(self, path):
        return self.ok(self.server.get(path))

    def put(self, path, body):
        return self.server.request("PUT", path, body=body)

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code, r)
        self.assertTrue(err["message"], r)
        return err

    # -- agents -----------------------------------------------------------------

    def chat(self, agent, config=None):
        self.server.create(agent, "llm-chat", config)
        self.idle(agent)

    def idle(self, agent):
        """Waits until the agent has no trigger queued and no question pending."""
        def done():
            s = self.server.status(agent)
            return s["queue_depth"] == 0 and s["summary"].get("pending", 0) == 0 and s
        return self.server.wait_for(done, "%s to be idle" % agent)

    def ask(self, agent, text, conversation=""):
        """POST /a/{agent}/[conversation]: the deferred reply to a question."""
        return self.server.post("/a/%s/%s" % (agent, conversation), body=text.encode(),
                                headers={"Content-Type": "text/plain"})

    def send(self, agent, payload):
        r = self.server.post("/v1/agents/%s/inbox" % agent, body=json.dumps(payload),
                             headers={"Content-Type": "application/json"})
        return self.ok(r, 202)["seq"]

    def outbox(self, agent):
        events = self.get_json(fs(agent, "outbox?limit=10000"))["events"]
        return [json.loads(e["payload"]) for e in events]

    def wait_outbox(self, agent, pred, what):
        def found():
            return next((e for e in self.outbox(agent) if pred(e)), None)
        return self.server.wait_for(found, what)

    def trajectory(self, agent):
        return self.get_json(fs(agent, "logs/trajectory?limit=10000"))["records"]

    def jobs(self, agent):
        return self.get_json(fs(agent, "compute/jobs"))["jobs"]

    def job(self, agent, job_id, service="compute"):
        sub = "jobs" if service == "compute" else "sessions"
        return self.get_json(fs(agent, "%s/%s/%s/status" % (service, sub, job_id)))

    def wait_job(self, agent, job_id, service="compute"):
        def ended():
            j = self.job(agent, job_id, service)
            return j["status"] not in ("queued", "awaiting_approval") and j
        return self.server.wait_for(ended, "job %s of %s to end" % (job_id, agent), timeout=60)

    def balance(self, agent):
        return self.get_json(fs(agent, "wallet/balance"))

    def history(self, agent):
        return self.get_json(fs(agent, "wallet/history"))["entries"]

    def pending_approval(self, agent):
        def found():
            lst = self.get_json("/v1/approvals?status=pending")["approvals"]
            return next((a for a in lst if a["agent"] == agent), None)
        return self.server.wait_for(found, "a pending approval of %s" % agent)

    PARKING_POLICY = {"rules": [{"when": {"action": "compute"}, "decision": "require_approval",
                                 "reason": "parked_for_test"}]}

    def park(self, agent, text):
        """A chat agent whose compute policy parks its question's job: the approval."""
        self.chat(agent)
        self.ok(self.put(fs(agent, "compute/policy"), self.PARKING_POLICY))
        self.send(agent, text)
        return self.pending_approval(agent)


def decisions(record):
    return record.get("decisions", [])


class ServicesCase(Helpers, unittest.TestCase):
    """One server for the whole class (node-wide settings such as the kill
    switch and the global policy stay within the class)."""

    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Server(args=cls.server_args).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        cls.server.close()
        assert rc == 0, "ticktockd exited with %r" % rc


# -- (a) budget exhaustion in the middle of a conversation ----------------------


class BudgetExhaustionTest(ServicesCase):
    def test_a_conversation_stops_with_a_clear_reply_when_the_budget_runs_out(self):
        self.chat("talker", {"system": "You are terse.", "max_tokens": 8})
        limit = 200
        b = self.ok(self.put(fs("talker", "wallet/limits"), {"total": limit}))
        self.assertEqual(b["limits"], {"total": limit, "day": 0, "month": 0})
        self.assertEqual(b["available"], limit)

        # Each question carries the conversation so far, so each costs more;
        # ask until one is refused (bounded: far fewer fit in 200 micro-USD).
        answered, refused = [], None
        for i in range(20):
            r = self.ask("talker", "question number %d" % i)
            if r.status == 402:
                refused = r
                break
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body.decode(), "You said: question number %d" % i)
            answered.append((r.headers["x-job"], int(r.headers["x-cost-micro-usd"])))
        self.assertIsNotNone(refused, "the budget never ran out")
        self.assertGreaterEqual(len(answered), 2, "the budget ran out before a conversation")

        # The clear reply: what limit, what is spent and reserved, what was asked.
        text = refused.body.decode()
        m = re.match(r"^budget exhausted: total limit of %d micro-USD: (\d+) spent, 0 reserved, "
                     r"(\d+) asked; this question was not sent to the model$" % limit, text)
        self.assertIsNotNone(m, text)
        self.assertTrue(refused.headers["content-type"].startswith("text/plain"))
        self.assertEqual(refused.headers["x-cost-micro-usd"], "0")
        spent, asked = int(m.group(1)), int(m.group(2))
        denied_job = refused.headers["x-job"]

        # wallet/balance: exactly what the answered jobs cost, nothing reserved.
        self.idle("talker")
        costs = sum(c for _, c in answered)
        self.assertTrue(all(c > 0 for _, c in answered), answered)
        self.assertEqual(spent, costs)
        self.assertGreater(spent + asked, limit)
        b = self.balance("talker")
        self.assertEqual(b["spent"], {"total": costs, "day": costs, "month": costs})
        self.assertEqual(b["reserved"], 0)
        self.assertEqual(b["available"], limit - costs)
        self.assertEqual(b["currency"], "micro-usd")

        # wallet/history: reserve, settle (the cost) and release (the rest) per
        # answered job; one deny for the refused one, which reserved nothing.
        h = self.history("talker")
        self.assertEqual([e["seq"] for e in h], list(range(len(h))))
        self.assertEqual([e["kind"] for e in h if e["kind"] == "limits"], ["limits"])
        for job, cost in answered:
            mine = [e for e in h if e["job"] == job]
            kinds = [e["kind"] for e in mine]
            self.assertEqual(kinds[:2], ["reserve", "settle"], mine)
            self.assertIn(kinds[2:], ([], ["release"]), mine)
            reserved = mine[0]["amount_micro_usd"]
            self.assertEqual(mine[1]["amount_micro_usd"], cost)
            self.assertEqual(sum(e["amount_micro_usd"] for e in mine[1:]), reserved)
            self.assertTrue(all(e["service"] == "compute" for e in mine))
        refusal = [e for e in h if e["job"] == denied_job]
        self.assertEqual(len(refusal), 1, refusal)
        self.assertEqual(refusal[0]["kind"], "deny")
        self.assertEqual(refusal[0]["reason"], "budget_exceeded")
        self.assertEqual(refusal[0]["amount_micro_usd"], asked)

        usage = self.get_json(fs("talker", "compute/usage"))
        self.assertEqual(usage, {"reserved_micro_usd": 0, "spent_micro_usd": costs,
                                 "jobs": {"done": len(answered), "denied": 1}})
        denied = self.job("talker", denied_job)
        self.assertEqual((denied["status"], denied["reason"]), ("denied", "budget_exceeded"))

        # The trajectory has the refusal; the outbox the clear reply.
        rec = [r for r in self.trajectory("talker")
               if any(d["job"] == denied_job for d in decisions(r))]
        self.assertEqual(len(rec), 1)
        self.assertEqual(decisions(rec[0])[0]["decision"], "deny")
        self.assertEqual(decisions(rec[0])[0]["reason"], "budget_exceeded")
        last = self.outbox("talker")[-1]
        self.assertEqual((last["job"], last["status"], last["reply"]),
                         (denied_job, "budget_exhausted", text))

        # The refused question is not part of the conversation.
        conv = self.ok(self.server.get("/a/talker/"))
        self.assertEqual(conv["conversation"], "default")
        self.assertEqual(len(conv["messages"]), 2 * len(answered))
        self.assertEqual(conv["messages"][-1]["content"],
                         "You said: question number %d" % (len(answered) - 1))

        # A message gets the same clear answer, and compute is asked once
        # for it: the refusal is not retried.
        before = len(self.jobs("talker"))
        self.send("talker", {"text": "are you still there?"})
        ev = self.wait_outbox("talker", lambda e: e["status"] == "budget_exhausted"
                              and e["job"] != denied_job, "the refusal of the message")
        self.assertTrue(ev["reply"].startswith("budget exhausted: total limit of %d" % limit), ev)
        self.idle("talker")
        jobs = self.jobs("talker")
        self.assertEqual(len(jobs), before + 1)
        self.assertEqual([j["status"] for j in jobs if j["status"] == "queued"], [])
        s = self.server.status("talker")["summary"]
        self.assertEqual(s, {"answered": len(answered), "refused": 2, "failed": 0, "pending": 0})
        self.assertEqual(self.balance("talker")["spent"]["total"], costs)

        # Raising the limit lets the conversation go on where it stopped.
        self.ok(self.put(fs("talker", "wallet/limits"), {"total": 100000}))
        r = self.ask("talker", "back again")
        self.assertEqual((r.status, r.body), (200, b"You said: back again"))
        conv = self.ok(self.server.get("/a/talker/"))
        self.assertEqual(len(conv["messages"]), 2 * len(answered) + 2)

    def test_a_daily_limit_refuses_like_the_total_one(self):
        self.chat("daily", {"max_tokens": 4})
        self.ok(self.put(fs("daily", "wallet/limits"), {"day": 5}))
        r = self.ask("daily", "hello")
        self.assertEqual(r.status, 402, r)
        self.assertRegex(r.body.decode(), r"^budget exhausted: daily limit of 5 micro-USD: 0 spent")
        self.assertEqual(self.balance("daily")["spent"]["total"], 0)


# -- llm-chat itself ----------------------------------------------------------------


class LlmChatTest(ServicesCase):
    def test_conversations_are_kept_apart_in_memory(self):
        self.chat("host", {"system": "Be brief."})
        self.assertEqual(self.ask("host", "hi from alice", "alice").body, b"You said: hi from alice")
        self.assertEqual(self.ask("host", "hi from bob", "bob/").body, b"You said: hi from bob")
        self.send("host", {"text": "alice again", "conversation": "alice"})
        self.wait_outbox("host", lambda e: e["reply"] == "You said: alice again", "the answer")
        alice = self.ok(self.server.get("/a/host/alice"))
        self.assertEqual([m["content"] for m in alice["messages"]],
                         ["hi from alice", "You said: hi from alice",
                          "alice again", "You said: alice again"])
        self.assertEqual(len(self.ok(self.server.get("/a/host/bob"))["messages"]), 2)
        self.assertEqual(self.ok(self.server.get("/a/host/"))["messages"], [])
        # The same conversations through the memory files.
        mem = self.get_json(fs("host", "memory/conversations"))
        self.assertEqual(sorted(mem["entries"]), ["alice", "bob"])
        # The second question carried the first exchange (and the system prompt).
        jobs = sorted(self.jobs("host"), key=lambda j: j["created_us"])
        sent = jobs[-1]["request"]["messages"]
        self.assertEqual([m["role"] for m in sent], ["system", "user", "assistant", "user"])

    def test_bad_questions_get_clear_answers_without_a_job(self):
        self.chat("strict")
        self.assertEqual(self.ask("strict", "").status, 400)
        self.assertEqual(self.ask("strict", "x", "no%20spaces").status, 404)
        r = self.server.request("PUT", "/a/strict/", body=b"x")
        self.assertEqual((r.status, r.headers.get("allow")), (405, "GET, POST"))
        r = self.ask("strict", "y" * (600 << 10))
        self.assertEqual(r.status, 413, r)
        # Bug: a question that is not UTF-8 failed the tick (500, three
        # attempts, the deadletter): it cannot go into the request's JSON.
        r = self.server.post("/a/strict/", b"q\xff\xfe")
        self.assertEqual((r.status, r.body), (400, b"the question is not UTF-8 text\n"))
        self.assertEqual(self.get_json(fs("strict", "deadletter"))["entries"], [])
        self.assertEqual(self.jobs("strict"), [])

    def test_a_job_for_a_provider_the_node_lacks_is_refused_before_it_reserves(self):
        # Bug: 202 with a reservation, then the job failed unknown_provider.
        self.server.create("nowhere", "echo")
        body = {"provider": "nope", "model": "local-chat",
                "messages": [{"role": "user", "content": "hi"}]}
        err = self.assertError(self.server.post(fs("nowhere", "compute/new"), body), 400,
                               "BAD_REQUEST_BODY")
        self.assertIn("no provider 'nope' on this node (local", err["message"])
        self.assertEqual(self.jobs("nowhere"), [])
        self.assertEqual(self.balance("nowhere")["reserved"], 0)


# -- (b) approvals over HTTP ------------------------------------------------------


class ApprovalFlowTest(ServicesCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        policy = {"rules": [{"when": {"action": "compute"}, "decision": "require_approval",
                             "reason": "compute_needs_approval"}], "default": "allow"}
        r = cls.server.request("PUT", "/v1/policy", body=policy)
        assert r.status == 200, r

    def test_an_approved_job_runs_and_the_agent_sees_the_decision_then_the_result(self):
        self.chat("asker")
        seq = self.send("asker", {"text": "may I?"})
        a = self.pending_approval("asker")
        self.assertEqual((a["action"], a["destination"], a["reason"], a["status"]),
                         ("compute", "local/local-chat", "compute_needs_approval", "pending"))
        self.assertGreater(a["cost_micro_usd"], 0)
        self.assertEqual(self.get_json("/v1/approvals/" + a["id"]), a)

        # Parked: nothing reserved, the job waits, the decision is on record.
        j = self.job("asker", a["job"])
        self.assertEqual((j["status"], j["approval"]), ("awaiting_approval", a["id"]))
        self.assertEqual(self.balance("asker")["reserved"], 0)
        parked = [r for r in self.trajectory("asker") if r["trigger_seq"] == seq]
        self.assertEqual(decisions(parked[0])[0]["decision"], "require_approval")
        self.assertEqual(decisions(parked[0])[0]["reason"], "compute_needs_approval")

        decided = self.server.post("/v1/approvals/%s/decide" % a["id"],
                                   {"decision": "approve", "note": "go ahead"},
                                   headers={"X-Request-Id": "decide-17"})
        d = self.ok(decided)
        self.assertEqual((d["status"], d["note"]), ("approved", "go ahead"))
        ev = self.wait_outbox("asker", lambda e: e["job"] == a["job"], "the answer")
        self.assertEqual((ev["status"], ev["reply"]), ("ok", "You said: may I?"))

        # The agent saw approval_decision, then compute_result, in that order.
        recs = self.trajectory("asker")
        kinds = [r["trigger"] for r in recs]
        i = kinds.index("approval_decision")
        self.assertEqual(decisions(recs[i]), [dict(decisions(parked[0])[0], decision="allow",
                                                   reason="approved")])
        # Bug: its record had no request id.
        self.assertEqual(recs[i]["request_id"], "decide-17")
        self.assertIn("compute_result", kinds[i + 1:])
        done = self.wait_job("asker", a["job"])
        self.assertEqual(done["status"], "done")
        b = self.balance("asker")
        self.assertEqual((b["spent"]["total"], b["reserved"]), (done["cost_micro_usd"], 0))
        self.assertEqual(self.get_json("/v1/approvals/" + a["id"])["status"], "approved")

        # A decision is final.
        r = self.server.post("/v1/approvals/%s/decide" % a["id"], {"decision": "deny"})
        self.assertError(r, 409, "ALREADY_DECIDED")

    def test_a_denied_job_never_runs_and_the_waiting_request_gets_the_refusal(self):
        self.chat("refused")
        replies = []
        t = threading.Thread(target=lambda: replies.append(self.ask("refused", "please")))
        t.start()
        try:
            a = self.pending_approval("refused")
            self.ok(self.server.post("/v1/approvals/%s/decide" % a["id"], {"decision": "deny"}))
        finally:
            t.join(40)
        self.assertEqual(len(replies), 1)
        r = replies[0]
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.body.decode(), "denied by an admin (denied_by_admin); this question "
                                          "was not sent to the model")
        j = self.job("refused", a["job"])
        self.assertEqual((j["status"], j["reason"]), ("denied", "denied_by_admin"))
        recs = self.trajectory("refused")
        kinds = [r["trigger"] for r in recs]
        i = kinds.index("approval_decision")
        self.assertEqual([(d["decision"], d["reason"]) for d in decisions(recs[i])],
                         [("deny", "denied_by_admin")])
        self.assertIn("compute_result", kinds[i + 1:])
        # Nothing was reserved or spent for it.
        self.assertEqual([e["kind"] for e in self.history("refused") if e["job"] == a["job"]],
                         ["deny"])
        self.assertEqual(self.balance("refused")["spent"]["total"], 0)
        self.assertEqual(self.get_json("/v1/approvals/" + a["id"])["status"], "denied")
        self.assertNotIn(a["id"], [x["id"] for x in
                                   self.get_json("/v1/approvals?status=pending")["approvals"]])

    def test_a_question_whose_job_is_cancelled_is_answered_409(self):
        # Bug: 502 "compute failed", as if the provider had failed.
        self.chat("withdrawn")
        replies = []
        t = threading.Thread(target=lambda: replies.append(self.ask("withdrawn", "please")))
        t.start()
        try:
            a = self.pending_approval("withdrawn")
            self.ok(self.server.post(fs("withdrawn", "compute/jobs/%s/cancel" % a["job"])), 202)
        finally:
            t.join(40)
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0].status, 409, replies[0])
        self.assertTrue(replies[0].body.decode().startswith("cancelled ("), replies[0])

    def test_compute_new_parks_too_and_bad_decisions_are_refused(self):
        self.server.create("plain", "echo")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        j = self.ok(self.server.post(fs("plain", "compute/new"), body), 202)
        self.assertEqual(j["status"], "awaiting_approval")
        aid = j["approval"]
        for bad in ({}, {"decision": "yes"}, {"decision": "approve", "extra": 1}, [1]):
            r = self.server.post("/v1/approvals/%s/decide" % aid, bad)
            self.assertError(r, 400, "BAD_JSON")
        self.assertError(self.server.post("/v1/approvals/ap-nope/decide", {"decision": "approve"}),
                         404, "NO_SUCH_APPROVAL")
        self.ok(self.server.post("/v1/approvals/%s/decide" % aid, {"decision": "approve"}))
        self.assertEqual(self.wait_job("plain", j["id"])["status"], "done")
        # The job's stream as JSON takes from_seq as the event stream does
        # (it was ignored, and a bad value answered 200).
        stream = fs("plain", "compute/jobs/%s/stream" % j["id"])
        chunks = self.get_json(stream)["chunks"]
        self.assertEqual(self.get_json(stream + "?from_seq=1")["chunks"], chunks[1:])
        for bad in ("abc", "-5"):
            self.assertError(self.server.get(stream + "?from_seq=" + bad), 400, "BAD_QUERY")
        # A job's listing names only its files (compute jobs have no files/).
        self.assertNotIn("files", self.get_json(fs("plain", "compute/jobs/" + j["id"]))["entries"])
        self.assertError(self.server.get(fs("plain", "logs/trajectory?verify&limit=abc")), 400,
                         "BAD_QUERY")
        self.assertError(self.server.get(fs("plain", "deadletter?from=abc")), 400, "BAD_QUERY")
        self.assertEqual(self.get_json(fs("plain", "deadletter?from=5&limit=1")), {"entries": []})

    def test_a_new_agent_of_the_same_id_gets_new_approval_ids(self):
        # Bug: the id hashed the agent id and the job id only, and job ids
        # start again, so an admin's decision taken from an earlier listing
        # reached the new agent's different request.
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        self.server.create("again", "echo")
        first = self.ok(self.server.post(fs("again", "compute/new"), body), 202)
        self.assertEqual(self.server.request("DELETE", "/v1/agents/again").status, 200)
        self.server.create("again", "echo")
        second = self.ok(self.server.post(fs("again", "compute/new"), body), 202)
        self.assertEqual(first["id"], second["id"])  # the job ids do start again
        self.assertNotEqual(first["approval"], second["approval"])
        self.assertError(self.server.post("/v1/approvals/%s/decide" % first["approval"],
                                          {"decision": "approve"}), 404, "NO_SUCH_APPROVAL")

    def test_approvals_are_listed_a_page_at_a_time(self):
        # Bug: the list stopped at the 1000 oldest, without saying so, and the
        # newer approvals could not be reached.
        self.server.create("pager", "echo")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ids = [self.ok(self.server.post(fs("pager", "compute/new"), body), 202)["approval"]
               for _ in range(5)]
        everything = self.get_json("/v1/approvals")
        self.assertIsNone(everything["next"])
        mine = [a["id"] for a in everything["approvals"] if a["agent"] == "pager"]
        self.assertEqual(sorted(mine), sorted(ids))
        seen, after, pages = [], None, 0
        while pages < 100:
            page = self.get_json("/v1/approvals?limit=2" + ("&after=" + after if after else ""))
            pages += 1
            self.assertLessEqual(len(page["approvals"]), 2)
            seen += [a["id"] for a in page["approvals"]]
            after = page["next"]
            if after is None:
                break
        self.assertEqual(seen, [a["id"] for a in everything["approvals"]])
        for bad in ("limit=0", "limit=1001", "limit=x", "after=nope", "after=12x.ap-1", "after=.ap-1"):
            self.assertError(self.server.get("/v1/approvals?" + bad), 400, "BAD_QUERY")

    def test_a_job_awaiting_approval_is_cancelled_with_its_approval(self):
        # Bug: cancel answered 409 NOT_RUNNING for a parked job, which only an
        # admin's deny could then end.
        self.server.create("waiter", "echo")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        j = self.ok(self.server.post(fs("waiter", "compute/new"), body), 202)
        self.assertEqual(j["status"], "awaiting_approval")
        cancel = fs("waiter", "compute/jobs/%s/cancel" % j["id"])
        self.assertEqual(self.ok(self.server.post(cancel), 202), {"cancelling": j["id"]})
        ended = self.wait_job("waiter", j["id"])
        self.assertEqual((ended["status"], ended["reason"]), ("cancelled", "cancelled"))
        a = self.get_json("/v1/approvals/" + j["approval"])
        self.assertEqual(a["status"], "cancelled")
        self.assertIn(a, self.get_json("/v1/approvals?status=cancelled")["approvals"])
        self.assertError(self.server.post("/v1/approvals/%s/decide" % j["approval"],
                                          {"decision": "approve"}), 409, "ALREADY_DECIDED")
        self.assertError(self.server.post(cancel), 409, "NOT_RUNNING")
        err = self.assertError(self.server.get(fs("waiter", "compute/jobs/%s/nope" % j["id"])), 404,
                               "NO_SUCH_FILE")
        self.assertIn("'jobs/%s/nope' in compute/" % j["id"], err["message"])
        self.assertEqual(self.balance("waiter")["reserved"], 0)
        # The agent was told: a tick of the job's result.
        self.server.wait_for(
            lambda: [r for r in self.trajectory("waiter") if r["trigger"] == "compute_result"],
            "the cancelled job's result tick")


# -- (c) the kill switch ----------------------------------------------------------


class KillSwitchTest(ServicesCase):
    def tearDown(self):
        self.put("/v1/killswitch", {"engaged": False})

    def test_the_kill_switch_denies_new_jobs_until_it_is_released(self):
        self.chat("worker")
        self.assertEqual(self.ask("worker", "before").status, 200)

        self.assertEqual(self.ok(self.put("/v1/killswitch", {"engaged": True})), {"engaged": True})
        self.assertEqual(self.get_json("/v1/killswitch"), {"engaged": True})

        # The agent's own job: refused, and the agent is told why.
        r = self.ask("worker", "during")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.body.decode(), "denied by the kill switch (kill_switch); this question "
                                          "was not sent to the model")
        job = r.headers["x-job"]
        self.assertEqual(self.job("worker", job)["reason"], "kill_switch")
        rec = [x for x in self.trajectory("worker")
               if any(d["job"] == job for d in decisions(x))]
        self.assertEqual([(d["decision"], d["reason"]) for d in decisions(rec[0])],
                         [("deny", "kill_switch")])
        ev = self.wait_outbox("worker", lambda e: e["job"] == job, "the refusal")
        self.assertEqual(ev["status"], "denied")
        # The result trigger the agent saw says kill_switch too.
        self.assertIn("compute_result", [x["trigger"] for x in self.trajectory("worker")
                                         if x["index"] > rec[0]["index"]])

        # Jobs written from outside, compute and containers alike.
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        self.assertError(self.server.post(fs("worker", "compute/new"), body), 403, "KILL_SWITCH")
        self.assertError(self.server.post(fs("worker", "containers/new"),
                                          {"command": ["true"]}), 403, "KILL_SWITCH")
        self.assertEqual(self.balance("worker")["reserved"], 0)

        self.assertEqual(self.ok(self.put("/v1/killswitch", {"engaged": False})),
                         {"engaged": False})
        r = self.ask("worker", "after")
        self.assertEqual((r.status, r.body), (200, b"You said: after"))

    def test_engaging_it_cancels_a_running_job_and_releases_its_reservation(self):
        self.server.create("slow", "echo")
        body = {"model": "local-wait", "messages": [{"role": "user", "content": "wait"}]}
        j = self.ok(self.server.post(fs("slow", "compute/new"), body), 202)
        self.assertEqual(j["status"], "queued")
        self.assertEqual(self.balance("slow")["reserved"], j["reserved_micro_usd"])
        self.ok(self.put("/v1/killswitch", {"engaged": True}))
        done = self.wait_job("slow", j["id"])
        self.assertEqual((done["status"], done["reason"]), ("cancelled", "kill_switch"))
        b = self.balance("slow")
        self.assertEqual((b["reserved"], b["spent"]["total"]), (0, 0))

    def test_a_bad_body_leaves_the_switch_as_it_was(self):
        for bad in ({}, {"engaged": "yes"}, {"engaged": True, "x": 1}):
            self.assertError(self.put("/v1/killswitch", bad), 400, "BAD_JSON")
        self.assertEqual(self.get_json("/v1/killswitch"), {"engaged": False})


# -- (d) crash and restart with open reservations ----------------------------------


class CrashRestartTest(Helpers, unittest.TestCase):
    def test_reservations_of_a_killed_server_are_reconciled_at_restart(self):
        server = self.server = Server()
        try:
            server.start()
            # A question whose job runs until cancelled: its reservation is
            # open when the server dies.
            self.chat("stuck", {"model": "local-wait"})
            seq = self.send("stuck", {"text": "think hard"})
            job = server.wait_for(lambda: next((j for j in self.jobs("stuck")), None),
                                  "the job")
            self.assertEqual(job["status"], "queued")
            reserved = job["reserved_micro_usd"]
            self.assertGreater(reserved, 0)
            self.assertEqual(self.balance("stuck")["reserved"], reserved)
            # And a parked job, which holds no reservation, on another agent.
            approval = self.park("parked", "wait for me")

            server.kill()  # SIGKILL: no drain, no clean shutdown
            server.start()

            # The interrupted job ended, its reservation released, the agent told.
            done = self.wait_job("stuck", job["id"])
            self.assertEqual((done["status"], done["reason"]), ("failed", "interrupted"))
            self.assertEqual(done["cost_micro_usd"], 0)
            ev = self.wait_outbox("stuck", lambda e: e["job"] == job["id"], "the agent to be told")
            self.assertEqual(ev["status"], "failed")
            self.assertTrue(ev["reply"].startswith("compute failed: interrupted: "), ev)
            b = self.balance("stuck")
            self.assertEqual((b["reserved"], b["spent"]["total"]), (0, 0))
            h = [(e["kind"], e["amount_micro_usd"], e["reason"]) for e in self.history("stuck")
                 if e["job"] == job["id"]]
            self.assertEqual(h, [("reserve", reserved, ""), ("release", reserved, "interrupted")])
            self.assertEqual(self.get_json(fs("stuck", "compute/usage"))["reserved_micro_usd"], 0)
            self.idle("stuck")
            self.assertEqual(self.server.status("stuck")["summary"]["failed"], 1)
            # The question's trigger was not applied twice.
            self.assertEqual(len([r for r in self.trajectory("stuck") if r["trigger_seq"] == seq
                                  and r["trigger"] == "message"]), 1)

            # The parked job survived and still runs once approved.
            self.assertEqual(self.get_json("/v1/approvals/" + approval["id"])["status"], "pending")
            self.ok(server.post("/v1/approvals/%s/decide" % approval["id"],
                                {"decision": "approve"}))
            ev = self.wait_outbox("parked", lambda e: e["job"] == approval["job"], "the answer")
            self.assertEqual((ev["status"], ev["reply"]), ("ok", "You said: wait for me"))
            b = self.balance("parked")
            self.assertEqual(b["reserved"], 0)
            self.assertGreater(b["spent"]["total"], 0)

            # A clean restart after that finds nothing open.
            self.assertEqual(server.stop(), 0, server.output())
            server.start()
            for agent in ("stuck", "parked"):
                self.assertEqual(self.balance(agent)["reserved"], 0)
                self.assertEqual([j["id"] for j in self.jobs(agent)
                                  if j["status"] in ("queued", "awaiting_approval")], [])
            self.assertEqual(server.stop(), 0, server.output())
        finally:
            server.close()


class ImportWithOpenJobsTest(Helpers, unittest.TestCase):
    def test_jobs_open_in_an_imported_bundle_end_as_interrupted(self):
        # Bug: a job queued when its agent was exported came back queued with
        # its reservation held, run by no one, until the next restart.
        server = self.server = Server()
        try:
            server.start()
            self.chat("mover", {"model": "local-wait"})
            self.send("mover", {"text": "think hard"})
            job = server.wait_for(lambda: next((j for j in self.jobs("mover")), None), "the job")
            reserved = job["reserved_micro_usd"]
            self.assertGreater(reserved, 0)
            bundle = server.get(fs("mover", "memory/export"))
            self.assertEqual(bundle.status, 200, bundle.body)
            self.assertEqual(server.request("DELETE", "/v1/agents/mover").status, 200)
            imported = server.post("/v1/agents/import", bundle.body,
                                   headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(imported.status, 201, imported.body)
            done = self.wait_job("mover", job["id"])
            self.assertEqual((done["status"], done["reason"]), ("failed", "interrupted"))
            b = self.balance("mover")
            self.assertEqual((b["reserved"], b["spent"]["total"]), (0, 0))
            ev = self.wait_outbox("mover", lambda e: e["job"] == job["id"], "the agent to be told")
            self.assertEqual(ev["status"], "failed")
            # A job awaiting approval ends too (its approval stayed behind),
            # while the policy that parked it moves with the agent.
            approval = self.park("parked", "wait for me")
            bundle = server.get(fs("parked", "memory/export"))
            self.assertEqual(server.request("DELETE", "/v1/agents/parked").status, 200)
            self.assertEqual(server.post("/v1/agents/import", bundle.body).status, 201)
            done = self.wait_job("parked", approval["job"])
            self.assertEqual((done["status"], done["reason"]), ("failed", "interrupted"))
            self.assertEqual(self.balance("parked")["reserved"], 0)
            self.assertEqual(self.get_json(fs("parked", "compute/policy"))["rules"][0]["reason"],
                             "parked_for_test")
            self.assertEqual(server.stop(), 0, server.output())
        finally:
            server.close()


# -- (e) malformed policies and price tables ---------------------------------------


class BadSettingsTest(ServicesCase):
    BAD_POLICIES = [
        "not json",
        "[]",
        '{"rules":[{"decision":"maybe"}]}',
        '{"rules":[],"default":"allow","extra":1}',
        '{"rules":[{"when":{"cost_over":-5},"decision":"deny"}]}',
        '{"rules":[{"when":{"action":"HTTP"},"decision":"deny"}]}',
        '{"rules":[{"when":{"action":"compute","action":"http"},"decision":"deny"}]}',
        '{"rules":[{"decision":"deny","reason":"Not-A-Code"}]}',
    ]

    def compute(self, agent, model, status):
        body = {"model": model, "messages": [{"role": "user", "content": "price me"}],
                "max_tokens": 10}
        r = self.server.post(fs(agent, "compute/new"), body)
        self.assertEqual(r.status, status, r)
        return r

    def test_a_malformed_global_policy_is_refused_and_the_old_one_still_decides(self):
        self.server.create("subject", "echo")
        good = {"rules": [{"when": {"action": "compute", "destination": "local/forbidden-*"},
                           "decision": "deny", "reason": "model_not_allowed"}],
                "default": "allow"}
        self.ok(self.put("/v1/policy", good))
        before = self.get_json("/v1/policy")
        self.assertEqual(before["rules"][0]["reason"], "model_not_allowed")
        for bad in self.BAD_POLICIES:
            err = self.assertError(self.put("/v1/policy", bad), 400, "BAD_POLICY")
            self.assertNotIn("\n", err["message"])
        self.assertEqual(self.get_json("/v1/policy"), before)
        # Still in force: it denies what it denied and allows the rest.
        r = self.compute("subject", "forbidden-model", 403)
        err = self.assertError(r, 403, "POLICY_DENIED")
        self.assertEqual(err["details"]["job"]["reason"], "model_not_allowed")
        self.compute("subject", "allowed-model", 202)

    def test_a_malformed_agent_policy_is_refused_and_the_old_one_still_decides(self):
        self.server.create("guarded", "echo")
        good = {"rules": [{"when": {"action": "compute", "cost_over": 1}, "decision": "deny",
                           "reason": "too_dear"}]}
        self.ok(self.put(fs("guarded", "compute/policy"), good))
        before = self.get_json(fs("guarded", "compute/policy"))
        for bad in self.BAD_POLICIES:
            self.assertError(self.put(fs("guarded", "compute/policy"), bad), 400, "BAD_POLICY")
            self.assertError(self.put(fs("guarded", "containers/policy"), bad), 400, "BAD_POLICY")
        self.assertEqual(self.get_json(fs("guarded", "compute/policy")), before)
        err = self.assertError(self.compute("guarded", "any", 403), 403, "POLICY_DENIED")
        self.assertEqual(err["details"]["job"]["reason"], "too_dear")

    def test_a_rule_an_agent_policy_can_never_apply_is_refused(self):
        # Bug: a container rule written to compute/policy was taken (200) and
        # never applied: the sessions it seemed to deny ran.
        self.server.create("scoped", "echo")
        for file, when, field in [
                ("compute/policy", {"action": "container"}, "rules[0].when.action"),
                ("containers/policy", {"action": ["compute", "http"]}, "rules[0].when.action"),
                ("http/policy", {"action": "compute"}, "rules[0].when.action"),
                ("compute/policy", {"agent": "someone-else*"}, "rules[0].when.agent")]:
            body = {"rules": [{"when": when, "decision": "deny"}]}
            err = self.assertError(self.put(fs("scoped", file), body), 400, "BAD_POLICY")
            self.assertTrue(err["message"].startswith(field), err)
            self.assertEqual(self.get_json(fs("scoped", file)), {"rules": [], "default": "allow"})
        # What can apply is taken: the file's own action, alone or among others,
        # and an agent glob that matches this agent.
        self.ok(self.put(fs("scoped", "containers/policy"),
                         {"rules": [{"when": {"action": ["container", "http"], "agent": "sc*"},
                                     "decision": "deny", "reason": "no_sessions"}]}))
        r = self.server.post(fs("scoped", "containers/new"), {"command": ["true"]})
        self.assertEqual(self.assertError(r, 403, "POLICY_DENIED")["details"]["job"]["reason"],
                         "no_sessions")

    def test_a_malformed_price_table_is_refused_and_the_old_one_still_prices(self):
        self.server.create("payer", "echo")
        table = {"models": {"dear": {"input_per_mtok": 1000000000, "output_per_mtok": 2000000000}},
                 "default": {"input_per_mtok": 1000000, "output_per_mtok": 2000000}}
        self.ok(self.put("/v1/compute/prices", table))
        before = self.get_json("/v1/compute/prices")
        self.assertEqual(before["models"]["dear"], table["models"]["dear"])
        first = self.compute("payer", "dear", 202).json()
        # 10 completion tokens at 2000 micro-USD each, plus the prompt at 1000.
        self.assertGreater(first["reserved_micro_usd"], 20000)
        bad_tables = [
            "not json",
            "{}",
            '{"models":[]}',
            '{"models":{"x":{"input_per_mtok":-1,"output_per_mtok":1}}}',
            '{"models":{"x":{"input_per_mtok":1.5,"output_per_mtok":1}}}',
            '{"models":{"x":{"input_per_mtok":1}}}',
            '{"models":{"x":{"input_per_mtok":1,"output_per_mtok":1,"cached":1}}}',
            '{"models":{"":{"input_per_mtok":1,"output_per_mtok":1}}}',
            '{"models":{},"default":{"input_per_mtok":18446744073709551616,"output_per_mtok":1}}',
            '{"models":{},"extra":true}',
        ]
        for bad in bad_tables:
            self.assertError(self.put("/v1/compute/prices", bad), 400, "BAD_PRICES")
        self.assertEqual(self.get_json("/v1/compute/prices"), before)
        again = self.compute("payer", "dear", 202).json()
        self.assertEqual(again["reserved_micro_usd"], first["reserved_micro_usd"])
        cheap = self.compute("payer", "anything-else", 202).json()
        self.assertLess(cheap["reserved_micro_usd"], first["reserved_micro_usd"])

    def test_malformed_wallet_limits_are_refused_and_the_old_ones_stay(self):
        self.server.create("limited", "echo")
        self.ok(self.put(fs("limited", "wallet/limits"), {"total": 500, "day": 100}))
        for bad in ("nope", '{"total":-1}', '{"total":1.5}', '{"week":1}', '{"total":"5"}'):
            self.assertError(self.put(fs("limited", "wallet/limits"), bad), 400, "BAD_LIMITS")
        self.assertEqual(self.get_json(fs("limited", "wallet/limits")),
                         {"total": 500, "day": 100, "month": 0})

    def test_concurrent_changes_of_different_wallet_limits_all_hold(self):
        # Bug: each PUT read the limits, merged its own and wrote all three,
        # so a concurrent PUT of another limit could be undone (back to 0:
        # no limit) although both answered 200.
        self.server.create("racing", "echo")
        path = fs("racing", "wallet/limits")
        for i in range(40):
            self.ok(self.put(path, {"total": 0, "day": 0, "month": 0}))
            want = {"total": 1000 + i, "day": 500 + i, "month": 700 + i}
            results = []
            threads = [threading.Thread(target=lambda k=k, v=v: results.append(self.put(path, {k: v})))
                       for k, v in want.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual([r.status for r in results], [200] * 3)
            self.assertEqual(self.get_json(path), want)


# -- containers: a session's files ---------------------------------------------------


class ContainerFilesTest(ServicesCase):
    @classmethod
    def setUpClass(cls):
        # Run as root, sessions run as nobody, and in bubblewrap mode every
        # parent of a session's directory must be searchable by it
        # (docs/containers.md); the temp data directory is 0700.
        cls.server = Server()
        os.chmod(cls.server.data_dir, 0o711)
        cls.server.start()

    def test_a_symlink_in_a_session_never_leads_out_of_it(self):
        # Regression: containers/sessions/{id}/files/... checked only the last
        # path component for a symlink, so a session that made `x -> /` could
        # read any file of the server through files/x/etc/passwd (and the
        # admin token through files/x/<data dir>/admin.token).
        self.server.create("boxed", "echo")
        script = ("ln -s / x && ln -s .. up && mkdir d && echo inside > d/f && ln -s d dl "
                  "&& ln -s d/f lf && echo made")
        s = self.ok(self.server.post(fs("boxed", "containers/new"),
                                     {"command": ["sh", "-c", script]}), 202)
        done = self.wait_job("boxed", s["id"], "containers")
        self.assertEqual(done["status"], "done", done)
        base = fs("boxed", "containers/sessions/%s/files" % s["id"])
        if os.geteuid() == 0:
            # Ended: its directory is root's again, and its output the
            # server's alone (bugs: the shared sandbox uid kept the
            # directory, and .out was 0644, for later sessions of any agent).
            sessions = os.path.join(self.server.data_dir, "containers", "boxed")
            self.assertEqual(os.stat(os.path.join(sessions, s["id"])).st_uid, 0)
            self.assertEqual(os.stat(os.path.join(sessions, s["id"] + ".out")).st_mode & 0o077, 0)

        data = os.path.abspath(self.server.data_dir).lstrip("/")
        outside = ["x/etc/passwd", "x/etc/hostname", "x", "x/" + data + "/node.key",
                   "up/%s.out" % s["id"], "dl/f", "lf", "up", "dl"]
        for path in outside:
            r = self.server.get(base + "/" + path)
            self.assertTrue(400 <= r.status < 500, "%s: %r" % (path, r))
            self.assertNotIn(b"root:", r.body)
            self.assertEqual(r.json()["error"]["code"], "NO_SUCH_FILE", path)
        # Files of the session itself are served; the listing has no links.
        r = self.server.get(base + "/d/f")
        self.assertEqual((r.status, r.body), (200, b"inside\n"))
        self.assertEqual(self.get_json(base), {"files": [{"path": "d/f", "bytes": 7}]})
        self.assertError(self.server.get(base + "/%2e%2e/x"), 400, "BAD_PATH")
        self.assertError(self.server.get(base + "/d/nothing"), 404, "NO_SUCH_FILE")

    def test_providers_names_the_isolation_sessions_get(self):
        # Bug: containers/providers said bubblewrap while every session ran
        # as a process, because the sandbox uid could not reach the data
        # directory (sessions fall back; providers did not look).
        if os.geteuid() != 0 or not shutil.which("bwrap"):
            self.skipTest("needs root and bubblewrap")
        self.server.create("iso", "echo")
        path = fs("iso", "containers/providers")
        self.assertEqual(self.get_json(path), {"providers": ["bubblewrap"]})
        os.chmod(self.server.data_dir, 0o700)
        try:
            self.assertEqual(self.get_json(path), {"providers": ["process"]})
        finally:
            os.chmod(self.server.data_dir, 0o711)

    def test_a_large_file_is_sent_without_being_read_into_memory(self):
        # Bug: files/ read the whole file into a string before answering, so
        # parallel reads of a session's large files grew the server by their
        # sizes. The file is now sent from its descriptor as it is written.
        self.server.create("bigfile", "echo")
        size = 48 << 20
        s = self.ok(self.server.post(fs("bigfile", "containers/new"),
                                     {"command": ["sh", "-c", "head -c %d /dev/zero > big" % size]}), 202)
        self.assertEqual(self.wait_job("bigfile", s["id"], "containers")["status"], "done")

        def peak_rss():
            with open("/proc/%d/status" % self.server.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
            return 0

        path = fs("bigfile", "containers/sessions/%s/files/big" % s["id"])
        before = peak_rss()
        r = self.server.get(path)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("content-type"), "application/octet-stream")
        self.assertEqual(len(r.body), size)
        self.assertEqual(r.body.count(b"\0"), size)
        self.assertLess(peak_rss() - before, size // 4)
        head = self.server.request("HEAD", path)
        self.assertEqual((head.status, head.headers.get("content-length"), head.body),
                         (200, str(size), b""))

    def test_a_session_output_stream_resumes_after_last_event_id(self):
        # Bug: a job's stream read from_seq with strtoull (abc was 0, -1 the
        # largest seq) and ignored Last-Event-ID, so a client that reconnected
        # (an EventSource does by itself) got the whole output again.
        self.server.create("resumer", "echo")
        s = self.ok(self.server.post(fs("resumer", "containers/new"),
                                     {"command": ["sh", "-c", "echo one; echo two"]}), 202)
        self.assertEqual(self.wait_job("resumer", s["id"], "containers")["status"], "done")
        out = fs("resumer", "containers/sessions/%s/output" % s["id"])
        sse = {"Accept": "text/event-stream"}

        def ids(path, headers):
            r = self.server.get(path, headers=dict(sse, **headers))
            self.assertEqual(r.status, 200, r)
            return [int(line[4:]) for line in r.body.decode().split("\n") if line.startswith("id: ")]

        everything = ids(out, {})
        self.assertEqual(everything, list(range(len(everything))))  # chunks, then the end
        self.assertEqual(ids(out, {"Last-Event-ID": "0"}), everything[1:])
        self.assertEqual(ids(out + "?from_seq=0", {"Last-Event-ID": "0"}), everything[1:])
        self.assertEqual(ids(out + "?from_seq=1", {}), everything[1:])
        for bad in ("?from_seq=abc", "?from_seq=-1"):
            self.assertError(self.server.get(out + bad, headers=sse), 400, "BAD_QUERY")
        self.assertError(self.server.get(out, headers=dict(sse, **{"Last-Event-ID": "x"})), 400, "BAD_QUERY")

    def test_a_deleted_agents_sessions_go_with_it_and_never_reach_its_successor(self):
        # Job ids follow an agent's ticks, so a new agent of the same id runs
        # its first session under the same id as the old one's: it must start
        # in an empty directory, and deleting the agent frees the disk.
        dirs = os.path.join(self.server.data_dir, "containers", "reborn")

        def run(script):
            s = self.ok(self.server.post(fs("reborn", "containers/new"),
                                         {"command": ["sh", "-c", script]}), 202)
            done = self.wait_job("reborn", s["id"], "containers")
            self.assertEqual(done["status"], "done", done)
            return s["id"]

        self.server.create("reborn", "echo")
        first = run("echo secret > left && echo made")
        self.assertTrue(os.path.isfile(os.path.join(dirs, first, "left")))
        # A session still running when its agent goes is cancelled.
        s = self.ok(self.server.post(fs("reborn", "containers/new"),
                                     {"command": ["sh", "-c", "echo started; exec sleep 30"]}), 202)
        self.server.wait_for(lambda: self.server.get(fs("reborn", "containers/sessions/%s/output"
                                                        % s["id"])).body == b"started\n",
                             "the sleeper to start")
        self.assertEqual(self.server.request("DELETE", "/v1/agents/reborn").status, 200)
        self.assertFalse(os.path.exists(dirs))

        # At once: the old sleeper's end (it is being killed) must not reach
        # the new agent, neither as a session of its own nor as a trigger.
        self.server.create("reborn", "echo")
        second = run("ls -A > /dev/null; echo fresh > mine")
        self.assertEqual(second, first)
        time.sleep(0.5)
        sessions = self.get_json(fs("reborn", "containers/sessions"))
        self.assertEqual([j["id"] for j in sessions["sessions"]], [second], sessions)
        # init, containers/new, its own session's result
        self.assertEqual(self.server.status("reborn")["last_tick"], 3)
        self.assertEqual(self.get_json(fs("reborn", "containers/sessions/%s/files" % second)),
                         {"files": [{"path": "mine", "bytes": 6}]})
        out = self.server.get(fs("reborn", "containers/sessions/%s/output" % second))
        self.assertEqual(out.body, b"")


# -- the OpenAI-compatible provider ---------------------------------------------------


def openai_server_path():
    path = os.environ.get("TICKTOCK_TEST_OPENAI")
    if not path:
        tools = os.path.dirname(os.path.abspath(ticktockd_path()))
        path = os.path.join(os.path.dirname(tools), "tests", "ticktock-test-openai")
    return path if os.access(path, os.X_OK) else None


class OpenAIProviderTest(Helpers, unittest.TestCase):
    """llm-chat with provider "openai": ticktockd registers the OpenAI-compatible
    client when --openai-base-url is set, here pointed at the test server."""

    @classmethod
    def setUpClass(cls):
        path = openai_server_path()
        if path is None:
            raise unittest.SkipTest("no ticktock-test-openai (set TICKTOCK_TEST_OPENAI)")
        cls.api = subprocess.Popen([path, "--port", "0"], stdout=subprocess.PIPE, text=True)
        line = cls.api.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            cls.api.kill()
            cls.api.wait()
            raise RuntimeError("ticktock-test-openai did not start: %r" % line)
        url = "http://127.0.0.1:%s/v1" % m.group(1)
        cls.server = Server(args=["--openai-base-url", url]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.server.stop()
            cls.server.close()
            assert rc == 0, "ticktockd exited with %r" % rc
        finally:
            cls.api.terminate()
            cls.api.wait(30)
            cls.api.stdout.close()

    def test_llm_chat_answers_through_the_openai_compatible_provider(self):
        self.chat("remote", {"provider": "openai", "model": "gpt-test", "system": "Be kind."})
        providers = self.get_json(fs("remote", "compute/providers"))["providers"]
        self.assertEqual(sorted(providers), ["local", "openai"])
        self.assertTrue(any("event=provider name=openai" in l for l in self.server.lines))
        r = self.ask("remote", "hello over the wire")
        self.assertEqual((r.status, r.body), (200, b"Echo: hello over the wire"))
        job = self.wait_job("remote", r.headers["x-job"])
        self.assertEqual(job["destination"], "openai/gpt-test")
        # Billed by the usage the server reported, at the default price
        # (1 micro-USD per prompt token, 2 per completion token): prompt 5 per
        # message + 1 per 4 bytes (system "Be kind." 2, user 19 bytes 5),
        # completion one per word of "Echo: hello over the wire".
        self.assertEqual(job["cost_micro_usd"], (5 + 2) + (5 + 5) + 2 * 5)
        self.assertEqual(int(r.headers["x-cost-micro-usd"]), job["cost_micro_usd"])
        self.assertEqual(self.balance("remote")["spent"]["total"], job["cost_micro_usd"])

    def test_a_provider_error_reaches_the_asker_as_a_clear_reply(self):
        self.chat("broken", {"provider": "openai", "model": "test-error-400"})
        r = self.ask("broken", "hi")
        self.assertEqual(r.status, 502, r)
        self.assertTrue(r.body.decode().startswith("compute failed: bad_request"), r)
        self.assertEqual(self.balance("broken")["reserved"], 0)


class NoOpenAIProviderTest(ServicesCase):
    def test_without_a_base_url_there_is_no_openai_provider_and_llm_chat_says_so(self):
        if os.environ.get("OPENAI_BASE_URL"):
            self.skipTest("OPENAI_BASE_URL is set in this environment")
        self.chat("lonely", {"provider": "openai", "model": "gpt-4o-mini"})
        self.assertEqual(self.get_json(fs("lonely", "compute/providers"))["providers"], ["local"])
        r = self.ask("lonely", "anyone?")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.body.decode(), "compute failed: unknown_provider: no provider 'openai' "
                                          "on this node")
        self.assertEqual(self.balance("lonely")["reserved"], 0)

    def test_a_bad_config_fails_the_init_tick_with_a_clear_error(self):
        self.server.create("misconfigured", "llm-chat", {"max_tokens": 0})
        dl = self.server.wait_for(
            lambda: self.get_json(fs("misconfigured", "deadletter"))["entries"], "the deadletter")
        self.assertIn("llm-chat config: max_tokens: an integer 1..32768", dl[0]["error"])



class ContainerFlagsTest(ServicesCase):
    """ticktockd's container settings: --container-concurrency (the rest wait,
    queued), --container-isolation, --container-price (the reservation) and
    --container-uid-base (a uid per slot, as root)."""

    server_args = ("--container-concurrency", "1", "--container-isolation", "process",
                   "--container-price", "7", "--container-uid-base", "61000")

    def test_one_session_at_a_time_in_process_mode_at_the_flag_price(self):
        self.server.create("cf", "echo")
        # Bug: it said bubblewrap (installed here) whatever the flag chose.
        self.assertEqual(self.get_json(fs("cf", "containers/providers")), {"providers": ["process"]})
        req = {"command": ["sh", "-c", "sleep 1; id -u"], "limits": {"cpu_seconds": 3}}
        first = self.ok(self.server.post(fs("cf", "containers/new"), req), 202)
        second = self.ok(self.server.post(fs("cf", "containers/new"), req), 202)
        ended = []
        for s in (first, second):
            self.wait_job("cf", s["id"], "containers")
            done = self.get_json(fs("cf", "containers/sessions/%s/result" % s["id"]))
            self.assertEqual(done["status"], "done", done)
            self.assertEqual(done["reserved_micro_usd"], 3 * 7, done)
            self.assertLessEqual(done["cost_micro_usd"], 3 * 7, done)
            self.assertEqual(done["result"]["isolation"], "process", done)
            ended.append(done["finished_us"])
            out = self.server.get(fs("cf", "containers/sessions/%s/output" % s["id"]))
            self.assertEqual(out.status, 200)
            if os.geteuid() == 0:
                # Slot 0 each time: uid 61000, not nobody.
                self.assertEqual(out.body.strip(), b"61000")
        # One slot: the second session started after the first ended, so it
        # ended at least its 1 s sleep later.
        self.assertGreaterEqual(ended[1] - ended[0], 900_000, ended)

    def test_bad_container_flags_stop_the_server_with_a_clear_reason(self):
        for args, reason in [(["--container-isolation", "chroot"], "--container-isolation"),
                             (["--container-concurrency", "0"], "--container-concurrency"),
                             (["--container-uid-base", "0"], "--container-uid-base"),
                             (["--container-price", "-1"], "container-price")]:
            bad = subprocess.run([ticktockd_path(), "--data", self.server.data_dir + "-bad",
                                  "--listen", "127.0.0.1:0", "--exit-after-ms", "100"] + args,
                                 capture_output=True, text=True, timeout=60)
            self.assertNotEqual(bad.returncode, 0, (args, bad))
            self.assertIn(reason, bad.stderr, (args, bad.stderr))


class LimitsTest(ServicesCase):
    """The tick limits: server-wide defaults from ticktockd's flags, per-agent
    overrides in fs/limits (admin), each hit visible in the status, the
    metrics and the trajectory."""

    server_args = ("--ticks-per-minute", "3")

    def limit_hits(self, name):
        m = re.search(r'ticktock_limit_hits_total\{limit="%s"\} (\d+)' % name,
                      self.server.get("/metrics").body.decode())
        return int(m.group(1)) if m else None

    def override(self, agent, limits):
        self.ok(self.put(fs(agent, "limits"), json.dumps(limits)))
        self.assertEqual({k: self.get_json(fs(agent, "limits"))[k] for k in limits}, limits)

    def records_with(self, agent, limit):
        return [r for r in self.trajectory(agent) if limit in r.get("limits", [])]

    def test_ticks_per_minute_from_the_server_flag_makes_triggers_wait(self):
        self.server.create("tpm", "counter")
        self.assertEqual(self.get_json(fs("tpm", "limits"))["ticks_per_minute"], 3)
        for i in range(5):
            self.send("tpm", {"n": i})
        # init + 2 messages fit in the minute; the rest wait, visibly.
        s = self.server.wait_for(
            lambda: (lambda s: s if s["throttled"] and s["limits_hit"].get("ticks_per_minute") else None)(
                self.server.status("tpm")), "tpm to be throttled")
        self.assertEqual(s["summary"]["count"], 2)
        self.assertEqual(s["queue_depth"], 3)
        self.assertIn("throttled_until_us", s)
        self.assertGreaterEqual(self.limit_hits("ticks_per_minute"), 1)
        # Nothing was lost or failed: the waiting triggers are still queued.
        self.assertEqual(self.get_json(fs("tpm", "deadletter"))["entries"], [])

    def test_outbox_retention_keeps_the_newest_events(self):
        self.server.create("ret", "echo")
        self.override("ret", {"ticks_per_minute": 0, "outbox_retention": 2})
        for i in range(5):
            self.send("ret", {"n": i})
        self.server.wait_for(lambda: self.server.status("ret")["summary"].get("echoed") == 5, "5 echoes")
        self.assertEqual(self.outbox("ret"), [{"n": 3}, {"n": 4}])
        self.assertGreaterEqual(self.server.status("ret")["limits_hit"].get("outbox_retention", 0), 1)
        self.assertTrue(self.records_with("ret", "outbox_retention"))
        self.assertTrue(self.get_json(fs("ret", "logs/trajectory?verify"))["ok"])

    def test_a_tick_growing_the_state_past_its_limit_commits_nothing(self):
        self.server.create("big", "counter")
        self.server.wait_for(lambda: self.server.status("big")["last_tick"] >= 1, "big's init tick")
        before = self.limit_hits("state_size")
        self.override("big", {"ticks_per_minute": 0, "max_state_bytes": 1, "max_attempts": 1})
        self.send("big", {"n": 1})
        dl = self.server.wait_for(lambda: self.get_json(fs("big", "deadletter"))["entries"],
                                  "the oversized tick in the deadletter")
        self.assertIn("state", dl[0]["error"])
        s = self.server.status("big")
        self.assertEqual(s["summary"]["count"], 0)  # nothing committed
        self.assertGreaterEqual(s["limits_hit"].get("state_size", 0), 1)
        self.assertGreater(self.limit_hits("state_size"), before)
        failed = self.records_with("big", "state_size")
        self.assertTrue(failed)
        self.assertTrue(all(r["outcome"] != "ok" for r in failed), failed)
        self.assertTrue(self.get_json(fs("big", "logs/trajectory?verify"))["ok"])

    def test_bad_limit_overrides_are_refused_and_agents_cannot_write_them(self):
        self.server.create("lim", "counter")
        before = self.get_json(fs("lim", "limits"))
        for bad in ('{"ticks_per_minute":-1}', '{"max_attempts":0}', '{"bogus":1}', '[]', 'x'):
            r = self.put(fs("lim", "limits"), bad)
            self.assertEqual(r.status, 400, bad)
        self.assertEqual(self.get_json(fs("lim", "limits")), before)
        token = self.ok(self.server.post("/v1/tokens", {"agent": "lim", "scopes": ["read"]}), 201)["token"]
        r = self.server.request("PUT", fs("lim", "limits"), body='{"outbox_retention":1}', auth=False,
                                headers={"Authorization": "Bearer " + token})
        self.assertEqual(r.status, 403)
        r = self.server.request("GET", fs("lim", "limits"), auth=False,
                                headers={"Authorization": "Bearer " + token})
        self.assertEqual(r.status, 200)


def tearDownModule():
    # Every response these tests received through Server.request agrees with
    # docs/openapi.yaml: documented route, method and status, and a body of
    # the documented schema.
    openapi_check.assert_conforms()


if __name__ == "__main__":
    unittest.main()
