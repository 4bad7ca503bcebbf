"""A tiny headless-Chromium driver for end-to-end tests (Python 3 standard library only).

Chromium is started with --remote-debugging-pipe: instead of a WebSocket it speaks the
Chrome DevTools Protocol (CDP) on two inherited file descriptors. It reads commands from
fd 3 and writes replies and events to fd 4; every message is one JSON text followed by a
NUL byte. We create two os.pipe()s, move their child ends onto fds 3 and 4 in the child
(preexec_fn + pass_fds), and run a daemon reader thread that splits the stream on NULs,
hands replies to the waiting send() call by "id" and records events (page errors,
console messages, load events). We attach to the page target with flatten=true, so
page-level commands carry its "sessionId" in the same stream. Every wait is bounded.

    with Browser() as b:
        b.navigate("http://127.0.0.1:8080/")
        b.fill("#name", "x"); b.click("button"); b.wait_for("document.title == 'ok'")
        assert b.page_errors() == []
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

FLAGS = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-dev-shm-usage"]


class BrowserError(Exception):
    pass


def _remote_text(obj):
    """A CDP RemoteObject (console argument) as text."""
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "?")


def _exception_text(details):
    """Runtime.ExceptionDetails as text: the exception's description (message and stack)
    if there is one, else CDP's text, plus the location."""
    exc = details.get("exception") or {}
    text = exc.get("description") or _remote_text(exc) if exc else details.get("text", "")
    if details.get("url"):
        text += " (%s:%s)" % (details["url"], details.get("lineNumber", 0) + 1)
    return text


class Browser:
    def __init__(self, timeout=30):
        self.timeout = timeout
        self.proc = None
        self.session_id = None
        self._tmp = self._stderr_path = None
        self._wfd = self._rfd = None
        self._reader = None
        self._lock = threading.Condition()
        self._next_id = 0
        self._replies = {}          # id -> reply message (None while waiting)
        self._events = []           # (method, params) of our page session and the browser
        self._errors = []
        self._console = []
        self._eof = False

    # --- process -----------------------------------------------------------------------

    @staticmethod
    def find_chromium():
        """Path of the chromium binary ($CHROMIUM, else PATH lookup), or None."""
        if os.environ.get("CHROMIUM"):
            return shutil.which(os.environ["CHROMIUM"])
        return shutil.which("chromium") or shutil.which("chromium-browser")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        exe = self.find_chromium()
        if exe is None:
            raise BrowserError("chromium not found (install the Debian package 'chromium')")
        child_ends = []
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="ticktock-chromium-",
                                                    ignore_cleanup_errors=True)
            profile = os.path.join(self._tmp.name, "profile")
            self._stderr_path = os.path.join(self._tmp.name, "stderr.log")
            cmd_r, cmd_w = os.pipe()     # we write commands, chromium reads fd 3
            out_r, out_w = os.pipe()     # chromium writes fd 4, we read
            self._wfd, self._rfd, child_ends = cmd_w, out_r, [cmd_r, out_w]

            def child_fds():
                # Move the two ends well above 4 first so the dup2s cannot clobber each other.
                a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
                b = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
                os.dup2(a, 3)
                os.dup2(b, 4)        # dup2 clears FD_CLOEXEC; pass_fds keeps 3 and 4 open

            with open(self._stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [exe, *FLAGS, "--user-data-dir=" + profile, "about:blank"],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(3, 4),
                    preexec_fn=child_fds, start_new_session=True)
            while child_ends:        # only chromium holds them now: EOF when it exits
                os.close(child_ends.pop())
            self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
            self._reader.start()
            self._attach()
        except BaseException:
            for fd in child_ends:
                os.close(fd)
            self.close()
            raise
        return self

    def _attach(self):
        deadline = time.monotonic() + min(self.timeout, 5)
        page = None
        while page is None and time.monotonic() < deadline:
            targets = self.send("Target.getTargets", session=False)["targetInfos"]
            page = next((t["targetId"] for t in targets if t["type"] == "page"), None)
            if page is None:
                time.sleep(0.05)
        if page is None:
            page = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session_id = self.send("Target.attachToTarget", {"targetId": page, "flatten": True},
                                    session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(domain + ".enable")

    def stderr_text(self, limit=4000):
        """The tail of chromium's stderr, kept in a file rather than the test output; without
        the dbus complaints it always prints when there is no session bus."""
        try:
            with open(self._stderr_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except (OSError, TypeError):
            return ""
        return "\n".join(l for l in lines if ":ERROR:dbus/" not in l)[-limit:]

    def close(self):
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                if not self._eof:
                    try:
                        self.send("Browser.close", session=False, timeout=2)
                    except BrowserError:
                        pass
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(3)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            if proc is not None:
                try:        # helper processes (zygote, renderers) share the new session's group
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            for fd in (self._wfd, self._rfd):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._wfd = self._rfd = None
            if self._reader is not None:
                self._reader.join(2)
                self._reader = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    # --- transport ---------------------------------------------------------------------

    def _read_loop(self):
        buf = b""
        try:
            while True:
                chunk = os.read(self._rfd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    if raw:
                        self._dispatch(json.loads(raw))
        except (OSError, TypeError, ValueError):
            pass
        finally:
            with self._lock:
                self._eof = True
                self._lock.notify_all()

    def _dispatch(self, msg):
        with self._lock:
            if "id" in msg:
                if msg["id"] in self._replies:
                    self._replies[msg["id"]] = msg
            elif msg.get("sessionId") in (None, self.session_id):
                method, params = msg.get("method"), msg.get("params", {})
                self._record(method, params)
                self._events.append((method, params))
            self._lock.notify_all()

    def _record(self, method, params):
        if method == "Runtime.exceptionThrown":
            self._errors.append("uncaught exception: " + _exception_text(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in params.get("args", []))
            self._console.append((params.get("type"), text))
            if params.get("type") == "error":
                frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
                where = frames[0].get("url")
                self._errors.append("console.error: " + text + (" (%s)" % where if where else ""))
        elif method == "Log.entryAdded":
            e = params["entry"]
            if e.get("level") == "error":
                self._errors.append("log %s error: %s%s" % (
                    e.get("source"), e.get("text"), " (%s)" % e["url"] if e.get("url") else ""))

    def send(self, method, params=None, session=True, timeout=None):
        """Send one CDP command (to the page session unless session=False); its result."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            if self._eof or self._wfd is None:
                raise BrowserError("%s: chromium is not running\n%s" % (method, self.stderr_text()))
            self._next_id += 1
            mid = self._next_id
            self._replies[mid] = None
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session_id
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._wfd, data):]
            with self._lock:
                if not self._lock.wait_for(lambda: self._replies[mid] is not None or self._eof,
                                           timeout):
                    raise BrowserError("%s: no reply within %ss" % (method, timeout))
                reply = self._replies[mid]
        except OSError as e:
            raise BrowserError("%s: pipe to chromium failed: %s\n%s"
                               % (method, e, self.stderr_text())) from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if reply is None:
            raise BrowserError("%s: chromium exited\n%s" % (method, self.stderr_text()))
        if "error" in reply:
            err = reply["error"]
            raise BrowserError("%s: %s%s" % (method, err.get("message"),
                                             " (%s)" % err["data"] if err.get("data") else ""))
        return reply.get("result", {})

    def wait_event(self, method, since=0, timeout=None):
        """Params of the first `method` event at index >= since in the event log."""
        timeout = self.timeout if timeout is None else timeout

        def first():
            return next((p for m, p in self._events[since:] if m == method), None)

        with self._lock:
            self._lock.wait_for(lambda: first() is not None or self._eof, timeout)
            params = first()
        if params is None:
            raise BrowserError("no %s event within %ss%s" % (method, timeout,
                               " (chromium exited)" if self._eof else ""))
        return params

    # --- page helpers ------------------------------------------------------------------

    def navigate(self, url, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            since = len(self._events)
        res = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if res.get("errorText"):
            raise BrowserError("navigate %s: %s" % (url, res["errorText"]))
        if res.get("loaderId"):       # no loaderId: same-document (fragment) navigation
            self.wait_event("Page.loadEventFired", since, timeout)
            self.wait_for("document.readyState == 'complete'", timeout)

    def evaluate(self, expression, await_promise=True, timeout=None):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": await_promise, "userGesture": True},
                        timeout=timeout)
        if "exceptionDetails" in res:
            raise BrowserError("evaluate %r threw: %s"
                               % (expression, _exception_text(res["exceptionDetails"])))
        return res.get("result", {}).get("value")

    def wait_for(self, expression, timeout=10, interval=0.05):
        """Poll `expression` until it is truthy; its value. Errors while polling (e.g. the
        page is between documents) count as not yet."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.evaluate(expression, timeout=max(1, deadline - time.monotonic()))
                if last:
                    return last
            except BrowserError as e:
                if self._eof:
                    raise
                last = e
            if time.monotonic() >= deadline:
                raise BrowserError("wait_for(%r) timed out after %ss; last value: %r; page errors: %r"
                                   % (expression, timeout, last, self.page_errors()))
            time.sleep(interval)

    def _on_element(self, selector, body):
        return self.evaluate("(() => { const sel = %s, el = document.querySelector(sel); %s })()"
                             % (json.dumps(selector), body))

    def click(self, selector):
        self._on_element(selector, "if (!el) throw new Error('no element matches ' + sel); el.click();")

    def fill(self, selector, text):
        self._on_element(selector, """
            if (!el) throw new Error('no element matches ' + sel);
            if (!('value' in el)) throw new Error(sel + ' has no value property');
            el.focus();
            el.value = %s;
            el.dispatchEvent(new Event('input', {bubbles: true}));
            el.dispatchEvent(new Event('change', {bubbles: true}));""" % json.dumps(text))

    def text(self, selector):
        return self._on_element(selector, "return el ? el.innerText : null;")

    def page_errors(self):
        with self._lock:
            return list(self._errors)

    def clear_errors(self):
        """Forgets the page errors seen so far (after a step that expects some)."""
        with self._lock:
            self._errors.clear()

    def console_messages(self):
        with self._lock:
            return list(self._console)
