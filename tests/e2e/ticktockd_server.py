"""Starts the real ticktockd for end-to-end tests (Python 3 standard library only).

TICKTOCKD names the binary. The server listens on 127.0.0.1 on a port it
picks itself (--listen 127.0.0.1:0) and logs `event=start ... listen=HOST:PORT`;
we read the port from that line.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

ADMIN_TOKEN = "e2e-admin-token"

# (method, target, status, headers, body) of every response Server.request
# received, for openapi_check (bounded).
RESPONSES = []
MAX_RESPONSES = 50000


def ticktockd_path():
    path = os.environ.get("TICKTOCKD")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("set TICKTOCKD to the ticktockd binary (got %r)" % path)
    return path


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error_code(self):
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:300])


class Server:
    """One ticktockd process. Use as a context manager or call start()/stop()."""

    def __init__(self, data_dir=None, args=(), token=ADMIN_TOKEN):
        self._own_dir = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="ticktock-e2e-")
            data_dir = self._own_dir.name
        self.data_dir = data_dir
        self.args = list(args)
        self.token = token
        # A restart can keep the port: set this to "127.0.0.1:PORT" before start().
        self.listen = "127.0.0.1:0"
        self.proc = None
        self.port = None
        self.lines = []
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout=30):
        self.lines = []
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()
        cmd = [ticktockd_path(), "--listen", self.listen, "--data", self.data_dir,
               "--admin-token", self.token] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        started = threading.Event()

        def pump():
            for line in self.proc.stdout:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))
                m = re.search(r"event=start .*listen=([0-9.]+):(\d+)", line)
                if m:
                    self.port = int(m.group(2))
                    started.set()
            started.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not started.wait(timeout) or self.port is None:
            self.kill()
            raise RuntimeError("ticktockd did not start: %s" % self.output())
        return self

    def stop(self, timeout=30):
        """SIGTERM, then waits; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("ticktockd did not stop within %ss after SIGTERM" % timeout)
        self._pump.join(5)
        self.proc.stdout.close()
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._pump.join(5)
            self.proc.stdout.close()
        self.proc = None

    def close(self):
        self.kill()
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def output(self):
        with self._lock:
            out = "\n".join(self.lines[-50:])
        err = b""
        if getattr(self, "_stderr", None) is not None:
            self._stderr.seek(0)
            err = self._stderr.read()[-4000:]
        return "stdout:\n%s\nstderr:\n%s" % (out, err.decode(errors="replace"))

    # -- requests -----------------------------------------------------------

    def connection(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, auth=True, timeout=30):
        """One request on a fresh connection; auth=True sends the admin token as a bearer."""
        hdrs = {}
        if auth:
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            res = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            if len(RESPONSES) < MAX_RESPONSES:
                RESPONSES.append((method, path, res.status, res.headers, res.body))
            return res
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def create(self, agent_id, agent_type, config=None):
        body = {"id": agent_id, "type": agent_type}
        if config is not None:
            body["config"] = config
        r = self.post("/v1/agents", body)
        if r.status != 201:
            raise AssertionError("create %s: %r" % (agent_id, r))
        return r.json()

    def status(self, agent_id):
        r = self.get("/v1/agents/" + agent_id)
        if r.status != 200:
            raise AssertionError("status %s: %r" % (agent_id, r))
        return r.json()

    def wait_for(self, predicate, what, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))

    def wait_count(self, agent_id, count, timeout=20):
        """Waits until a counter agent has consumed its inbox and counted `count`."""
        def done():
            s = self.status(agent_id)
            return s["queue_depth"] == 0 and s["summary"].get("count") == count and s
        return self.wait_for(done, "%s to count %d" % (agent_id, count), timeout)
