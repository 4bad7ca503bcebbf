#!/usr/bin/env python3
"""Runs the examples of a Markdown document against the real ticktockd.

Every ```sh block runs, in document order, with `bash -e` in one temp working
directory, against one fresh server; TICKTOCK_URL and TOKEN are set. A block
fails the test if it exits non-zero (blocks may check their own output with
grep). A ```text block right after a ```sh block is the expected output: each
of its lines must match a line of the block's stdout, in order (other output
lines may come between); `...` in an expected line matches anything.

Run: TICKTOCKD=build/tools/ticktockd python3 tests/e2e/doc_examples_test.py docs/http.md
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ticktockd_server import Server  # noqa: E402

DOC = None


def blocks(markdown):
    """[(line, lang, text)] of the fenced blocks, in order."""
    out = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang, body = i + 1, m.group(1), []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError("unclosed ``` block at line %d" % start)
        out.append((start, lang, "\n".join(body) + "\n", i + 1))
        i += 1
    return out


def examples(markdown):
    """[(line, script, expected lines or None)]: each sh block and the text block after it."""
    found = []
    bs = blocks(markdown)
    lines = markdown.split("\n")
    for k, (line, lang, text, end) in enumerate(bs):
        if lang != "sh":
            continue
        expected = None
        if k + 1 < len(bs) and bs[k + 1][1] == "text":
            between = lines[end:bs[k + 1][0] - 1]
            if all(not s.strip() for s in between):
                expected = [s for s in bs[k + 1][2].split("\n") if s.strip()]
        found.append((line, text, expected))
    return found


def line_pattern(expected):
    return re.compile("^" + ".*".join(re.escape(part) for part in expected.split("...")) + "$")


def unmatched(expected, output):
    """The first expected line that matches no output line after the previous match."""
    got = output.split("\n")
    pos = 0
    for want in expected:
        pattern = line_pattern(want.rstrip())
        while pos < len(got) and not pattern.match(got[pos].rstrip()):
            pos += 1
        if pos == len(got):
            return want
        pos += 1
    return None


class DocExamplesTest(unittest.TestCase):
    def test_every_sh_example_runs(self):
        with open(DOC) as f:
            found = examples(f.read())
        self.assertTrue(found, "no ```sh blocks in %s" % DOC)
        with Server() as server, tempfile.TemporaryDirectory(prefix="ticktock-doc-") as work:
            env = dict(os.environ,
                       TICKTOCK_URL="http://127.0.0.1:%d" % server.port,
                       TOKEN=server.token)
            for line, script, expected in found:
                where = "%s:%d" % (os.path.basename(DOC), line)
                try:
                    p = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env,
                                       capture_output=True, text=True, timeout=60)
                except subprocess.TimeoutExpired:
                    self.fail("%s: the example ran over 60 s:\n%s" % (where, script))
                report = "%s: exit %d\n--- script\n%s--- stdout\n%s--- stderr\n%s" % (
                    where, p.returncode, script, p.stdout, p.stderr)
                self.assertEqual(p.returncode, 0, report)
                if expected is not None:
                    miss = unmatched(expected, p.stdout)
                    self.assertIsNone(miss, "%s\nexpected output line not found: %s" % (report, miss))
            self.assertEqual(server.get("/healthz", auth=False).status, 200, server.output())
            self.assertEqual(server.stop(), 0, server.output())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: doc_examples_test.py DOC.md [unittest args]")
    DOC = sys.argv.pop(1)
    unittest.main()
