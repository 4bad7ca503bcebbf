#!/usr/bin/env python3
"""Self-test of browser.py: headless Chromium against a tiny static site on 127.0.0.1.

Run: python3 tests/e2e/browser_selftest.py -v   (fails when chromium is not installed)
"""

import functools
import http.server
import os
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser, BrowserError  # noqa: E402

FILES = {
    "index.html": """<!doctype html><html><head><title>t</title><link rel="icon" href="data:,"></head>
<body><input id="name"><button id="go">go</button><div id="out"></div><span id="n"></span>
<script>
document.getElementById('go').addEventListener('click', () => {
  document.getElementById('out').textContent = 'clicked:' + document.getElementById('name').value;
});
fetch('/data.json').then(r => r.json()).then(d => { document.getElementById('n').textContent = d.n; });
</script></body></html>""",
    "data.json": '{"n": 42}',
    "boom.html": """<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<script>throw new Error("boom");</script></body></html>""",
}


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class BrowserSelfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        for name, body in FILES.items():
            with open(os.path.join(cls.tmp.name, name), "w") as f:
                f.write(body)
        handler = functools.partial(Quiet, directory=cls.tmp.name)
        cls.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()
        cls.base = "http://127.0.0.1:%d/" % cls.httpd.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.httpd.server_close()
        cls.tmp.cleanup()

    def test_page(self):
        with Browser() as b:
            b.navigate(self.base + "index.html")
            b.fill("#name", "alice")
            b.click("#go")
            self.assertEqual(b.wait_for("document.getElementById('out').innerText"), "clicked:alice")
            self.assertEqual(b.wait_for("document.getElementById('n').innerText"), "42")
            self.assertEqual(b.text("#out"), "clicked:alice")
            self.assertIsNone(b.text("#missing"))
            with self.assertRaises(BrowserError):
                b.click("#missing")
            self.assertEqual(b.page_errors(), [])

            b.navigate(self.base + "boom.html")
            self.assertTrue(any("boom" in e for e in b.page_errors()), b.page_errors())

    def test_evaluate_errors(self):
        with Browser() as b:
            self.assertEqual(b.evaluate("Promise.resolve(6 * 7)"), 42)
            with self.assertRaises(BrowserError) as cm:
                b.evaluate("(() => { throw new Error('kaput'); })()")
            self.assertIn("kaput", str(cm.exception))
            with self.assertRaises(BrowserError) as cm:
                b.wait_for("window.never", timeout=0.3)
            self.assertIn("window.never", str(cm.exception))
            b.navigate(self.base + "missing.js")      # a 404 is logged as a network error
            self.assertTrue(any("missing.js" in e for e in b.page_errors()), b.page_errors())


if __name__ == "__main__":
    unittest.main()
