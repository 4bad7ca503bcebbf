"""The Control Center (GET /, drivers/web) in a real headless Chromium against the real ticktockd.

Signs in with the admin token, lists agents with their budgets, follows an agent's live
trajectory timeline (also across a server restart, which drops the stream), inspects one
record, requeues a deadletter entry, decides an approval, and watches the public HUD with
an agent-scoped token. Every action goes through the page's own buttons; its effect is
checked through the API. The page must raise no error in the browser (uncaught exceptions,
console errors, failed loads). Fails, rather than skips, without Chromium: scripts/setup.sh
installs Debian's `chromium`.
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from browser import Browser  # noqa: E402
from ticktockd_server import Server  # noqa: E402


class ControlCenterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.server.start()
        cls.browser = Browser(timeout=30)
        cls.browser.start()
        cls.base = "http://127.0.0.1:%d" % cls.server.port

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.server.close()

    def setUp(self):
        self.b = self.browser

    def tearDown(self):
        self.assertEqual(self.b.page_errors(), [], "errors in the page")

    def api(self, method, path, body=None, status=None, **kw):
        r = self.server.request(method, path, body=body, **kw)
        if status is not None:
            self.assertEqual(r.status, status, r)
        return r

    def sign_in(self):
        self.b.navigate(self.base + "/")
        self.b.wait_for("!document.querySelector('#sign-in').hidden")
        self.b.fill("#token", self.server.token)
        self.b.click("#sign-in-form button")
        self.b.wait_for("!document.querySelector('#nav').hidden")

    # -- the tests run in name order ---------------------------------------------

    def test_1_sign_in_and_agents(self):
        # The page and its files are public; the API is not.
        r = self.api("GET", "/", auth=False, status=200)
        self.assertIn("text/html", r.headers["content-type"])
        self.assertIn("script-src 'self'", r.headers["content-security-policy"])
        self.api("GET", "/ui/app.js", auth=False, status=200)
        self.api("GET", "/ui/nope.js", auth=False, status=404)
        self.api("POST", "/", auth=False, status=405)

        self.api("POST", "/v1/agents", {"id": "c1", "type": "counter"}, status=201)
        self.api("POST", "/v1/agents", {"id": "e1", "type": "echo"}, status=201)
        self.api("PUT", "/v1/agents/c1/fs/wallet/limits", {"total": 2500000}, status=200)
        for _ in range(3):
            self.api("POST", "/a/c1/", status=200)

        # A wrong token is refused and the form stays.
        self.b.navigate(self.base + "/")
        self.b.wait_for("!document.querySelector('#sign-in').hidden")
        self.b.fill("#token", "not-the-token")
        self.b.click("#sign-in-form button")
        self.b.wait_for("document.querySelector('#sign-in-error').textContent.includes('refused')")
        self.assertTrue(self.b.evaluate("document.querySelector('#nav').hidden"))
        self.assertEqual(self.b.evaluate("document.cookie"), "")  # the refused token is dropped
        # The browser logs the refused check (its event may come after the page's update).
        errors = self.server.wait_for(self.b.page_errors, "the 401 in the browser's log", timeout=5)
        self.assertTrue(all("401" in e and "/v1/agents?limit=1" in e for e in errors), errors)
        self.b.clear_errors()

        self.sign_in()
        self.b.wait_for("document.querySelectorAll('#agents-rows tr').length == 2")
        c1 = self.b.text('#agents-rows tr[data-agent="c1"]')
        self.assertIn("counter", c1)
        self.assertIn("$0.00 / $2.50", c1)   # spent / limit, from the budget
        self.assertIn('"count":3', c1)       # the summary
        # The cookie signs in again after a reload.
        self.b.navigate(self.base + "/#/agents")
        self.b.wait_for("document.querySelectorAll('#agents-rows tr').length == 2")

    def test_2_timeline_inspector_and_ctl(self):
        self.b.navigate(self.base + "/#/agent/c1")
        self.b.wait_for("document.querySelector('#timeline-live').textContent == 'live'")
        status = self.api("GET", "/v1/agents/c1/fs/status").json()
        before = status["trajectory_records"]
        self.b.wait_for("document.querySelectorAll('#timeline-rows tr').length == %d" % before)
        # The outbox: what the counter emitted so far (its last 20 at most).
        self.b.wait_for("document.querySelectorAll('#outbox-rows tr').length == %d"
                        % min(20, status["outbox_next"] - 1))

        # New ticks appear live, newest first.
        self.api("POST", "/a/c1/", status=200)
        self.b.wait_for("document.querySelectorAll('#timeline-rows tr').length == %d" % (before + 1))
        self.assertEqual(self.b.evaluate("document.querySelector('#timeline-rows tr').dataset.index"),
                         str(before))

        # The Tick button queues a ctl trigger, whose record arrives on the stream.
        self.b.click('button[data-ctl="tick"]')
        self.b.wait_for("document.querySelector('#agent-message').textContent.startsWith('Tick queued')")
        self.b.wait_for("[...document.querySelectorAll('#timeline-rows tr')].some("
                        "tr => tr.textContent.includes('ctl'))")

        # The inspector shows one record in full, read from fs/logs/trajectory.
        self.b.click('#timeline-rows tr[data-index="1"]')
        self.b.wait_for("!document.querySelector('#inspector').hidden")
        record = self.api("GET", "/v1/agents/c1/fs/logs/trajectory?from=1&limit=1").json()["records"][0]
        # As the server wrote it: 64-bit numbers are not rounded to a double.
        self.assertEqual(json.loads(self.b.text("#inspector-json")), record)
        self.assertGreaterEqual(record["trigger_seq"], 1 << 63)  # an HTTP request's
        self.assertIn("http (direct #1)", self.b.text("#inspector-fields"))
        self.assertIn("#/agent/c1/record/1", self.b.evaluate("location.hash"))
        # Verify re-hashes the chain on the server.
        self.b.click("#verify")
        n = self.api("GET", "/v1/agents/c1/fs/status").json()["trajectory_records"]
        self.b.wait_for("document.querySelector('#verify-result').textContent == '✓ %d records verified'" % n)
        # ... and a deep link opens it directly.
        self.b.navigate(self.base + "/#/agent/c1/record/2")
        self.b.wait_for("document.querySelector('#inspector-title').textContent.startsWith('Record 2 ')")
        self.b.wait_for("document.querySelector('#timeline-rows tr.selected')?.dataset.index == '2'")

    def test_3_timeline_resumes_after_a_restart(self):
        self.b.navigate(self.base + "/#/agent/c1")
        self.b.wait_for("document.querySelector('#timeline-live').textContent == 'live'")
        n = self.api("GET", "/v1/agents/c1/fs/status").json()["trajectory_records"]
        self.b.wait_for("document.querySelectorAll('#timeline-rows tr').length == %d" % n)
        # Same data directory and port: the EventSource reconnects by itself with
        # Last-Event-ID and gets exactly the records it missed.
        port = self.server.port
        self.server.stop()
        self.b.wait_for("document.querySelector('#timeline-live').textContent == 'reconnecting'")
        self.server.listen = "127.0.0.1:%d" % port
        self.server.start()
        for _ in range(2):
            self.api("POST", "/a/c1/", status=200)
        self.b.wait_for("document.querySelectorAll('#timeline-rows tr').length == %d" % (n + 2),
                        timeout=20)
        indexes = self.b.evaluate("[...document.querySelectorAll('#timeline-rows tr')]"
                                  ".map(tr => Number(tr.dataset.index))")
        self.assertEqual(indexes, list(range(n + 1, -1, -1)))
        self.assertEqual(self.b.evaluate("document.querySelector('#timeline-live').textContent"),
                         "live")
        # While the server was down, the page's periodic reads failed to connect.
        errors = self.b.page_errors()
        self.assertTrue(all("ERR_CONNECTION_REFUSED" in e for e in errors), errors)
        self.b.clear_errors()

    def test_4_deadletter_requeue(self):
        # A heartbeat with a bad config fails its init tick into the deadletter.
        self.api("POST", "/v1/agents", {"id": "broken", "type": "heartbeat", "config": "soon"},
                 status=201)
        self.server.wait_for(
            lambda: self.api("GET", "/v1/agents/broken/fs/deadletter").json()["entries"],
            "a deadletter entry")
        self.b.navigate(self.base + "/#/agent/broken")
        self.b.wait_for("document.querySelectorAll('#deadletter-rows tr').length == 1")
        self.assertIn("tick_failed", self.b.text("#deadletter-rows tr"))
        self.b.click('button[data-requeue="1"]')
        self.b.wait_for("document.querySelector('#agent-message').textContent == 'Requeued 1.'")
        # Requeued, it fails again after its retries and comes back with a new id.
        self.server.wait_for(
            lambda: [e for e in self.api("GET", "/v1/agents/broken/fs/deadletter").json()["entries"]
                     if e["id"] == 2],
            "the requeued trigger back in the deadletter")
        self.b.wait_for("document.querySelector('#deadletter-rows tr [data-requeue=\"2\"]') !== null",
                        timeout=15)

    def test_5_approvals(self):
        self.api("POST", "/v1/agents", {"id": "bot", "type": "llm-chat"}, status=201)
        self.api("PUT", "/v1/policy", {"rules": [{"when": {"action": "compute"},
                                                  "decision": "require_approval",
                                                  "reason": "needs_a_human"}]}, status=200)
        try:
            for question in ("first", "second"):
                job = self.api("POST", "/v1/agents/bot/fs/compute/new",
                               {"model": "local-chat", "max_tokens": 16,
                                "messages": [{"role": "user", "content": question}]}).json()
                self.assertEqual(job["status"], "awaiting_approval", job)
            pending = self.server.wait_for(
                lambda: len(self.api("GET", "/v1/approvals?status=pending").json()["approvals"]) == 2
                and self.api("GET", "/v1/approvals?status=pending").json()["approvals"],
                "two pending approvals")
            self.b.navigate(self.base + "/#/approvals")
            self.b.wait_for("document.querySelectorAll('#approvals-rows tr').length == 2")
            self.b.wait_for("document.querySelector('#pending-count').textContent == '2'", timeout=15)
            first, second = pending[0]["id"], pending[1]["id"]
            self.assertIn("needs_a_human", self.b.text('#approvals-rows tr[data-approval="%s"]' % first))

            self.b.fill('input[data-note="%s"]' % first, "fine by me")
            self.b.click('button[data-approve="%s"]' % first)
            self.b.click('button[data-deny="%s"]' % second)
            self.b.wait_for("document.querySelectorAll('#approvals-rows tr').length == 0")
            a = self.api("GET", "/v1/approvals/" + first).json()
            self.assertEqual((a["status"], a.get("note")), ("approved", "fine by me"))
            self.assertEqual(self.api("GET", "/v1/approvals/" + second).json()["status"], "denied")
            # Decided ones show when asked for.
            self.b.click("#approvals-all")
            self.b.wait_for("document.querySelectorAll('#approvals-rows tr').length == 2")
            self.assertIn("approved", self.b.text('#approvals-rows tr[data-approval="%s"]' % first))
        finally:
            self.api("PUT", "/v1/policy", {"rules": []}, status=200)

    def test_6_public_hud_with_an_agent_token(self):
        token = self.api("POST", "/v1/tokens", {"agent": "c1", "scopes": ["read"], "expires_in": 600},
                         status=201).json()["token"]
        # A fresh browser profile: no admin cookie, only the agent token in the link.
        self.b.evaluate("document.cookie = 'ticktock_token=; path=/; Max-Age=0'")
        self.b.navigate(self.base + "/?token=" + token + "#/hud/c1")
        self.b.wait_for("document.querySelector('#hud-live').textContent == 'live'")
        self.assertEqual(self.b.evaluate("location.search"), "")  # the token left the address
        self.assertEqual(self.b.evaluate("document.cookie"), "")  # and was not kept
        # The last records, then live ones.
        n = min(50, self.api("GET", "/v1/agents/c1/fs/status").json()["trajectory_records"])
        self.b.wait_for("document.querySelectorAll('#hud-rows tr').length == %d" % n)
        self.api("POST", "/a/c1/", status=200)
        self.b.wait_for("document.querySelectorAll('#hud-rows tr').length == %d" % (n + 1))
        top = self.b.text("#hud-rows tr")
        self.assertIn("http", top)
        self.assertIn("ok", top)
        # Redacted: the HUD stream carries no hashes or payloads.
        self.assertNotIn("count", top)

    def test_7_create_send_and_delete(self):
        self.sign_in()  # the HUD test left no cookie
        self.b.click("#agent-new")
        self.b.fill("#create-id", "e2")
        self.b.fill("#create-type", "echo")
        self.b.click("#create-form button[type=submit]")
        self.b.wait_for("location.hash == '#/agent/e2'")
        self.assertEqual(self.api("GET", "/v1/agents/e2", status=200).json()["type"], "echo")
        self.b.wait_for("document.querySelector('#outbox-live').textContent == 'live'")

        # Not JSON: refused in the page, nothing sent.
        self.b.fill("#send-body", "hello there")
        self.b.click("#send-form button[type=submit]")
        self.b.wait_for("document.querySelector('#error').textContent.includes('not JSON')")
        # As text: a JSON string, which echo emits to its outbox.
        self.b.click("#send-text")
        self.b.click("#send-form button[type=submit]")
        self.b.wait_for("document.querySelector('#agent-message').textContent.startsWith('Message accepted')")
        self.b.wait_for("document.querySelectorAll('#outbox-rows tr').length == 1")
        self.assertEqual(self.b.text("#outbox-rows tr td.mono"), '"hello there"')
        events = self.api("GET", "/v1/agents/e2/fs/outbox").json()["events"]
        self.assertEqual([e["payload"] for e in events], ['"hello there"'])
        self.b.fill("#send-body", '{"n": 2}')
        self.b.click("#send-text")  # off again: JSON as it is
        self.b.click("#send-form button[type=submit]")
        self.b.wait_for("document.querySelectorAll('#outbox-rows tr').length == 2")
        self.assertEqual(self.b.text("#outbox-rows tr td.mono"), '{"n": 2}')

        # Delete takes two clicks.
        self.b.click("#agent-delete")
        self.assertEqual(self.b.text("#agent-delete"), "Delete e2?")
        self.api("GET", "/v1/agents/e2", status=200)
        self.b.click("#agent-delete")
        self.b.wait_for("location.hash == '#/agents'")
        self.api("GET", "/v1/agents/e2", status=404)
        self.b.wait_for("document.querySelector('#agents-rows tr[data-agent=\"e2\"]') === null")


if __name__ == "__main__":
    unittest.main()
