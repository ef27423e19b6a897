"""fakellm_harness - start crewd-fakellm, the scripted OpenAI-compatible server, and read what
it was sent. Python standard library only.

    with FakeLLM(["--latency-ms", "50"]) as llm:
        crewd = Crewd(env={"OPENAI_BASE_URL": llm.base_url})   # however crewd is pointed
        ...
        reqs = llm.requests()          # what crewd sent, oldest first
        llm.config(fail_rate=0.5)      # change behaviour at run time
        llm.stats()["by_status"]

The binary is $CREWD_FAKELLM_BIN, else ../../build-dev/crewd-fakellm relative to this file.
No fixed sleeps: start-up waits for "listening on 127.0.0.1:PORT" with a deadline, stop waits
for the exit with a deadline (and expects status 0: an ASan/LSan report makes it non-zero),
and wait_for() polls a condition with a deadline. See fakellm/README.md for the directives.
"""

import http.client
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAKELLM_BIN = os.environ.get("CREWD_FAKELLM_BIN") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build-dev", "crewd-fakellm"))

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
IO_TIMEOUT_S = 30.0

LISTEN_RE = re.compile(rb"listening on 127\.0\.0\.1:(\d+)\r?\n")


def directive(name, value):
    """The text of one directive, to put in a message: directive("reply", "YES")."""
    return "[[fake:%s=%s]]" % (name, value)


def wait_for(predicate, timeout=IO_TIMEOUT_S, interval=0.01, what="condition"):
    """Polls predicate() until it returns a true value (returned) or `timeout` seconds pass
    (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(interval)


class FakeLLM:
    """One crewd-fakellm process on 127.0.0.1. FakeLLM(args=[...]) starts it; stop() (or the
    context manager) sends SIGTERM and asserts exit status 0."""

    def __init__(self, args=None, start=True):
        self.args = list(args or [])
        self.proc = None
        self.port = None
        self._stdout = b""
        self._stderr_file = None
        self._stderr_text = ""
        self._drain = None
        if start:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------

    def argv(self):
        return [FAKELLM_BIN, "--listen", "127.0.0.1:0"] + self.args

    def start(self):
        if not os.path.exists(FAKELLM_BIN):
            raise AssertionError("crewd-fakellm not found at %s (build it, or set "
                                 "CREWD_FAKELLM_BIN)" % FAKELLM_BIN)
        self._stderr_file = tempfile.TemporaryFile()
        self._stdout = b""
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr_file)
        deadline = time.monotonic() + START_TIMEOUT_S
        fd = self.proc.stdout.fileno()
        while True:
            m = LISTEN_RE.search(self._stdout)
            if m:
                self.port = int(m.group(1))
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise AssertionError("crewd-fakellm did not print 'listening on "
                                     "127.0.0.1:PORT' within %.0f s\n%s"
                                     % (START_TIMEOUT_S, self.describe()))
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
                    raise AssertionError("crewd-fakellm exited with status %s before "
                                         "listening\n%s" % (rc, self.describe()))
                self._stdout += chunk
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self

    def _drain_stdout(self):
        try:
            while True:
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    break
                self._stdout += chunk
        except (OSError, ValueError):
            pass

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, expect_status=0):
        """Sends `sig`, waits for the exit (bounded) and returns the status; asserts it equals
        `expect_status` unless that is None."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError("crewd-fakellm did not exit within %.0f s of signal %d\n%s"
                                     % (STOP_TIMEOUT_S, sig, self.describe()))
        self._close()
        rc = self.proc.returncode
        if expect_status is not None and rc != expect_status:
            raise AssertionError("crewd-fakellm exited with status %s (expected %s)\n%s"
                                 % (rc, expect_status, self.describe()))
        return rc

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._close()

    def _close(self):
        if self._drain is not None:
            self._drain.join(timeout=STOP_TIMEOUT_S)
            self._drain = None
        if self.proc is not None and self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        if self._stderr_file is not None:
            self._stderr_text = self.stderr_text()
            self._stderr_file.close()
            self._stderr_file = None

    def stderr_text(self):
        if self._stderr_file is None:
            return self._stderr_text
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode("utf-8", "replace")

    def describe(self):
        return ("argv: %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                % (" ".join(self.argv()), self._stdout.decode("utf-8", "replace"),
                   self.stderr_text()[-20000:]))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.stop(expect_status=None)
        return False

    # -- addresses ------------------------------------------------------------------------

    @property
    def base_url(self):
        """The OpenAI base URL: http://127.0.0.1:PORT/v1."""
        return "http://127.0.0.1:%d/v1" % self.port

    # -- HTTP -----------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, raw_body=None,
                timeout=IO_TIMEOUT_S):
        """One request on a fresh connection. Returns (status, headers, json_or_None, raw)."""
        hdrs = dict(headers or {})
        payload = raw_body
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            js = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            js = None
        return resp.status, resp.msg, js, data

    def chat(self, messages, model="gpt-fake", path="/v1/chat/completions", headers=None,
             **extra):
        """POSTs a chat completion; `messages` may be a string (one user message).
        Returns (status, headers, json_or_None, raw)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = {"model": model, "messages": messages}
        body.update(extra)
        return self.request("POST", path, body=body, headers=headers)

    def _control(self, method, path, body=None):
        status, _, js, raw = self.request(method, path, body=body)
        if status != 200 or js is None:
            raise AssertionError("%s %s: %s %r" % (method, path, status, raw[:2000]))
        return js

    def requests(self, since=0):
        """The logged requests with seq > since, oldest first (each a dict: seq, method, path,
        headers, body, status, client_closed, received_at_ms)."""
        return self._control("GET", "/_fake/requests?since=%d" % since)["requests"]

    def requests_total(self):
        return self._control("GET", "/_fake/requests?since=%d" % (2 ** 62))["total"]

    def clear(self):
        """Empties the request log (seq numbers keep counting)."""
        self._control("DELETE", "/_fake/requests")

    def reset(self):
        """Empties the log, the reply_seq / fail_times counters and the stats."""
        self._control("POST", "/_fake/reset")

    def config(self, **kw):
        """Changes latency_ms, jitter_ms, fail_rate, fail_status, retry_after, log_bodies;
        returns the configuration now in force. config() only reads it."""
        if not kw:
            return self._control("GET", "/_fake/config")
        return self._control("POST", "/_fake/config", body=kw)

    def stats(self):
        return self._control("GET", "/_fake/stats")

    def wait_requests(self, n, since=0, timeout=IO_TIMEOUT_S):
        """Waits until at least n requests with seq > since are logged; returns them."""
        return wait_for(lambda: (lambda r: r if len(r) >= n else None)(self.requests(since)),
                        timeout=timeout, what="%d logged requests" % n)


def parse_sse(raw):
    """Splits a text/event-stream body into its data payloads (strings), in order."""
    text = raw.decode("utf-8")
    out = []
    for event in text.split("\n\n"):
        if not event.strip():
            continue
        data = [line[len("data: "):] for line in event.split("\n") if line.startswith("data: ")]
        out.append("\n".join(data))
    return out
