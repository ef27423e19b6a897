"""crewd_harness - start the real crewd binary and talk to it over real HTTP on 127.0.0.1.

Black-box only: everything here goes through the command line, the environment, stdout
("listening on 127.0.0.1:PORT"), stderr (captured to a file) and sockets. Python standard
library only.

The binary is $CREWD_BIN, else ../../build-dev/crewd relative to this file (an ASan+UBSan
build: a leak report turns the exit status non-zero, which is why every stop checks for 0).

No fixed sleeps: start-up waits for the "listening on" line with a deadline, stop waits for
the process to exit with a deadline, raw socket reads wait for a complete reply or EOF.
"""

import atexit
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
CREWD_BIN = os.environ.get("CREWD_BIN") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build-dev", "crewd"))

START_TIMEOUT_S = 30.0   # the machine has 2 cores and may be loaded; ASan start-up is slow
STOP_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 60.0     # a job against the fake LLM; generous for a loaded 2-core machine
IO_TIMEOUT_S = 30.0

LISTEN_RE = re.compile(rb"listening on 127\.0\.0\.1:(\d+)\r?\n")

# CREWD_TEST_STORE=postgres runs the same tests on the PostgreSQL store: one throwaway cluster
# per test process (scripts/pg-cluster.sh, Unix socket only), one fresh database per server.
PG_MODE = os.environ.get("CREWD_TEST_STORE") == "postgres"
PG_SCRIPT = os.path.normpath(os.path.join(HERE, "..", "..", "scripts", "pg-cluster.sh"))
_pg_cluster = None   # (dir, url of its "postgres" database)


def _pg_stop(directory):
    subprocess.run([PG_SCRIPT, "stop", directory], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=False)


def pg_new_database():
    """Creates an empty database in this process's cluster (started on first use, stopped at
    exit) and returns its libpq URL."""
    global _pg_cluster
    if _pg_cluster is None:
        directory = tempfile.mkdtemp(prefix="crewd-pg-", dir="/tmp")
        os.chmod(directory, 0o755)
        out = subprocess.run([PG_SCRIPT, "start", directory], capture_output=True, text=True,
                             timeout=120, check=False)
        if out.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise AssertionError("cannot start a PostgreSQL cluster: %s" % out.stderr)
        _pg_cluster = (directory, out.stdout.strip().splitlines()[-1])
        atexit.register(_pg_stop, directory)
    directory, url = _pg_cluster
    name = "crewd_" + uuid.uuid4().hex[:12]
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE " + name],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError("cannot create database %s: %s" % (name, out.stderr))
    return url.replace(":///postgres?", ":///%s?" % name, 1)
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
UUID4_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def clean_env(extra=None):
    """The test's environment without any CREWD_* variables (so the developer's shell does
    not leak into the tests), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWD_")}
    if extra:
        env.update(extra)
    return env


def unique_name(prefix="crew"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def agent(agent_id, **kw):
    """One AgentDefinition: agent(\"writer\", name=\"w\", config={...}, tools=[...])."""
    a = {"agent_id": agent_id}
    a.update(kw)
    return a


def crew(name, mode="sequential", agents=None, **extra):
    """A valid CrewDefinition. Default agents: researcher then writer, both Agent/gpt-4. In
    flow mode without explicit flow_relations, researcher -> writer is added."""
    if agents is None:
        agents = [
            agent("researcher", agent_class="Agent", config={"model": "gpt-4"},
                  system_prompt="You research."),
            agent("writer", agent_class="Agent", config={"model": "gpt-4"},
                  system_prompt="You write."),
        ]
    d = {"name": name, "execution_mode": mode, "agents": agents}
    if mode == "flow" and "flow_relations" not in extra:
        keys = [a.get("name") or a["agent_id"] for a in agents]
        d["flow_relations"] = [{"source": keys[i], "target": keys[i + 1]}
                               for i in range(len(keys) - 1)]
    d.update(extra)
    return d


def free_port():
    """A port that was free a moment ago (for tests that must name a port explicitly)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def run_crewd(args, env=None, timeout=START_TIMEOUT_S, cwd=None):
    """Runs crewd to completion (for --help, --version and start-up failures).
    Returns (returncode, stdout_text, stderr_text). Fails the caller (AssertionError) if the
    process is still running after `timeout` seconds, after killing it."""
    p = subprocess.Popen([CREWD_BIN] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(env), cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(
            "crewd %r still running after %.0f s (expected it to exit)\nstdout:\n%s\nstderr:\n%s"
            % (args, timeout, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 reply parsing (for hostile requests sent on a plain socket)

def _dechunk(data):
    """Returns (complete, body) for a chunked body prefix."""
    body = b""
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return False, body
        size_txt = data[pos:eol].split(b";")[0].strip()
        try:
            size = int(size_txt, 16)
        except ValueError:
            return True, body  # malformed: take what there is
        pos = eol + 2
        if size == 0:
            # trailers end with an empty line
            return data.find(b"\r\n", pos) >= 0, body
        if len(data) < pos + size + 2:
            return False, body
        body += data[pos:pos + size]
        pos += size + 2


def parse_response(raw):
    """Parses one HTTP/1.x response. Returns (status, headers, body_bytes); status is None if
    `raw` holds no status line. 1xx interim responses are skipped. headers is an
    http.client.HTTPMessage (case-insensitive get / get_all)."""
    while True:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return None, http.client.HTTPMessage(), raw
        head = raw[:end]
        rest = raw[end + 4:]
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
        if not m:
            return None, http.client.HTTPMessage(), raw
        status = int(m.group(1))
        headers = http.client.parse_headers(io.BytesIO(b"\r\n".join(lines[1:]) + b"\r\n\r\n"))
        if 100 <= status < 200:
            raw = rest
            continue
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            _, body = _dechunk(rest)
        elif headers.get("Content-Length") is not None:
            body = rest[:int(headers.get("Content-Length"))]
        else:
            body = rest
        return status, headers, body


def response_complete(raw):
    while True:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        m = re.match(rb"HTTP/\d\.\d (\d{3})", raw)
        if not m:
            return False
        status = int(m.group(1))
        headers = http.client.parse_headers(io.BytesIO(raw[raw.find(b"\r\n") + 2:end + 4]))
        rest = raw[end + 4:]
        if 100 <= status < 200:
            raw = rest
            continue
        if status in (204, 304):
            return True
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return _dechunk(rest)[0]
        cl = headers.get("Content-Length")
        if cl is not None:
            try:
                return len(rest) >= int(cl)
            except ValueError:
                return False
        return False  # read until the server closes


def _parse_json(body):
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------

class Crewd:
    """One crewd process on 127.0.0.1 with its own temporary directory.

    Crewd(args=[...], env={...}, store_dir=None, listen="127.0.0.1:0", store="default")
      args     extra command-line arguments
      env      extra environment (CREWD_* of the caller's environment are removed)
      store_dir directory holding crewd.db (default: the temp dir; the caller owns it)
      listen   value of --listen, or None to pass no --listen
      store    "default" (--store sqlite:<dir>/crewd.db, or a fresh PostgreSQL database when
               CREWD_TEST_STORE=postgres), a store URL, or None (no --store)
    """

    def __init__(self, args=None, env=None, store_dir=None, listen="127.0.0.1:0",
                 store="default", api_key=None, max_open_files=None):
        self.tmpdir = tempfile.mkdtemp(prefix="crewd-itest-")
        self.max_open_files = max_open_files  # RLIMIT_NOFILE for the server, or None
        self.store_dir = store_dir or self.tmpdir
        self.db_path = os.path.join(self.store_dir, "crewd.db")
        self.pg_url = pg_new_database() if PG_MODE and store == "default" else None
        self.extra_args = list(args or [])
        self.extra_env = dict(env or {})
        self.listen = listen
        self.store = store
        self.api_key = api_key   # sent as Authorization: Bearer by request() when set
        self.proc = None
        self.port = None
        self.n_starts = 0
        self.stderr_paths = []
        self._stdout_buf = b""
        self._drain = None
        try:
            self.start()
        except BaseException:
            self._kill_quietly()
            self._remove_tmp()
            raise

    # -- process lifecycle ---------------------------------------------------------------

    def argv(self):
        argv = [CREWD_BIN]
        if self.listen is not None:
            argv += ["--listen", self.listen]
        if self.store == "default" and self.pg_url is not None:
            argv += ["--store", self.pg_url]
        elif self.store == "default":
            argv += ["--store", "sqlite:" + self.db_path]
        elif self.store is not None:
            argv += ["--store", self.store]
        return argv + self.extra_args

    def start(self):
        if not os.path.exists(CREWD_BIN):
            raise AssertionError("crewd binary not found at %s (set CREWD_BIN)" % CREWD_BIN)
        self.n_starts += 1
        err_path = os.path.join(self.tmpdir, "stderr-%d.log" % self.n_starts)
        self.stderr_paths.append(err_path)
        self._stdout_buf = b""
        with open(err_path, "wb") as err_file:
            # SIGTERM stops at once unless a test asks for a grace period: the suite stops
            # servers with jobs in flight all the time (test_shutdown covers the grace).
            # Crews in tests point their agents at the fake LLM on 127.0.0.1, which the
            # server allows only when told (a test of the refusal sets this empty).
            env = {"CREWD_SHUTDOWN_GRACE_MS": "0", "CREWD_LLM_BASE_URL_ALLOW": "127.0.0.1"}
            env.update(self.extra_env)
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err_file,
                                         env=clean_env(env),
                                         preexec_fn=self._limits)
        self.port = self._wait_listening()
        # Keep draining stdout so that a chatty server never blocks on a full pipe.
        self._drain = threading.Thread(target=self._drain_stdout, args=(self.proc,),
                                       daemon=True)
        self._drain.start()

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        fd = self.proc.stdout.fileno()
        while True:
            m = LISTEN_RE.search(self._stdout_buf)
            if m:
                return int(m.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill_quietly()
                raise AssertionError(
                    "crewd did not print 'listening on 127.0.0.1:PORT' within %.0f s\n%s"
                    % (START_TIMEOUT_S, self.describe()))
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
                    raise AssertionError(
                        "crewd exited with status %s before listening\n%s"
                        % (rc, self.describe()))
                self._stdout_buf += chunk
            elif self.proc.poll() is not None:
                raise AssertionError("crewd exited with status %s before listening\n%s"
                                     % (self.proc.returncode, self.describe()))

    def _drain_stdout(self, proc):
        try:
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") \
                    else proc.stdout.read(65536)
                if not chunk:
                    break
                self._stdout_buf += chunk
        except (OSError, ValueError):
            pass

    def _limits(self):
        if self.max_open_files is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (self.max_open_files, self.max_open_files))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` (SIGTERM) and waits up to 30 s. Returns the exit status (negative for a
        signal, as subprocess reports it). Kills the process if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill_quietly()
                raise AssertionError("crewd did not exit within %.0f s of signal %d\n%s"
                                     % (STOP_TIMEOUT_S, sig, self.describe()))
        self._close_pipes()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL, no chance to clean up (a crash). Returns the exit status (-9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_pipes()
        return self.proc.returncode

    def restart(self):
        """Stops (SIGTERM) if running, asserting a clean exit, then starts again on the same
        store file. Returns the new port."""
        if self.running():
            rc = self.stop()
            if rc != 0:
                raise AssertionError("crewd exited with status %s on SIGTERM\n%s"
                                     % (rc, self.describe()))
        self.start()
        return self.port

    def close(self):
        """Stops the server (SIGTERM) and removes the temp dir. Returns the exit status of
        the last run (None if it was already reaped before, e.g. after kill9)."""
        try:
            return self.stop()
        finally:
            self._remove_tmp()

    def _kill_quietly(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._close_pipes()

    def _close_pipes(self):
        if self._drain is not None:
            self._drain.join(timeout=STOP_TIMEOUT_S)
            self._drain = None
        if self.proc is not None and self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except OSError:
                pass

    def _remove_tmp(self):
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- diagnostics ----------------------------------------------------------------------

    def stderr_text(self, all_runs=True):
        paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
        parts = []
        for p in paths:
            try:
                with open(p, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(parts)

    def describe(self):
        return ("argv: %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                % (" ".join(self.argv()), self._stdout_buf.decode("utf-8", "replace"),
                   self.stderr_text()[-20000:]))

    # -- HTTP -------------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, raw_body=None):
        """One request on a fresh http.client connection.
        body: a JSON-able value (sent with Content-Type: application/json unless `headers`
        names one); raw_body: bytes sent as they are (no Content-Type added).
        Returns (status, headers, parsed_json_or_None, raw_bytes)."""
        hdrs = {}
        if self.api_key is not None:
            hdrs["Authorization"] = "Bearer " + self.api_key
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif raw_body is not None:
            payload = raw_body
        if headers:
            for k, v in headers.items():
                # A None value removes a default header (e.g. Authorization).
                for existing in [e for e in hdrs if e.lower() == k.lower()]:
                    del hdrs[existing]
                if v is not None:
                    hdrs[k] = v
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO_TIMEOUT_S)
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.msg, _parse_json(data), data
        finally:
            conn.close()

    def raw(self, data, timeout=IO_TIMEOUT_S):
        """Sends `data` on a new socket and returns everything read until the server closes or
        a complete reply (by Content-Length / chunked framing) has arrived. Sending and reading
        are interleaved, so a server that answers and closes early (413) is seen, not a broken
        pipe."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setblocking(False)
        out = b""
        pos = 0
        sending = True
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "no complete reply within %.0f s; got %r" % (timeout, out[:2000]))
                wlist = [s] if sending and pos < len(data) else []
                r, w, _ = select.select([s], wlist, [], min(left, 1.0))
                if r:
                    try:
                        chunk = s.recv(65536)
                    except (ConnectionResetError, BrokenPipeError):
                        break
                    except BlockingIOError:
                        chunk = None
                    if chunk == b"":
                        break
                    if chunk:
                        out += chunk
                        if response_complete(out):
                            break
                if w:
                    try:
                        pos += s.send(data[pos:pos + 65536])
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        sending = False
        finally:
            s.close()
        return out

    def raw_request(self, method, path, headers=None, body=b"", version="HTTP/1.1",
                    timeout=IO_TIMEOUT_S):
        """Builds a request by hand (headers is a list of (name, value) pairs, sent exactly as
        given, repeats allowed) and sends it with raw(). Host and Connection: close are added
        unless present. Returns (status, headers, parsed_json_or_None, raw_bytes)."""
        hdrs = list(headers or [])
        names = {k.lower() for k, _ in hdrs}
        if "host" not in names:
            hdrs.insert(0, ("Host", "127.0.0.1:%d" % self.port))
        if "connection" not in names:
            hdrs.append(("Connection", "close"))
        if self.api_key is not None and "authorization" not in names:
            hdrs.append(("Authorization", "Bearer " + self.api_key))
        head = "%s %s %s\r\n" % (method, path, version)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
        raw = self.raw(head.encode("latin-1") + body, timeout=timeout)
        status, rh, rbody = parse_response(raw)
        return status, rh, _parse_json(rbody), raw

    # -- conveniences ---------------------------------------------------------------------

    def healthz(self):
        return self.request("GET", "/healthz")[0]

    def create(self, definition):
        """PUT /api/v1/crew; asserts 201 and returns the parsed reply."""
        st, _, js, raw = self.request("PUT", "/api/v1/crew", body=definition)
        if st != 201:
            raise AssertionError("create %r: expected 201, got %s %r"
                                 % (definition.get("name"), st, raw[:2000]))
        return js

    def execute(self, body, path="/api/v1/crew/execute"):
        """POST an execute body; asserts 202 and returns the parsed reply."""
        st, _, js, raw = self.request("POST", path, body=body)
        if st != 202:
            raise AssertionError("execute: expected 202, got %s %r" % (st, raw[:2000]))
        return js

    def job(self, job_id):
        """GET /api/v1/crew/job/{id}; asserts 200 and returns the job status body."""
        st, _, js, raw = self.request("GET", "/api/v1/crew/job/" + job_id)
        if st != 200:
            raise AssertionError("job %s: expected 200, got %s %r" % (job_id, st, raw[:2000]))
        return js

    def wait_job(self, job_id, timeout=JOB_TIMEOUT_S,
                 statuses=("completed", "failed", "cancelled")):
        """Polls the job until its status is one of `statuses`; fails with the last body and
        the server's log after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.job(job_id)
            if last.get("status") in statuses:
                return last
            time.sleep(0.02)
        raise AssertionError("job %s did not reach %s within %ss; last: %s\n%s"
                             % (job_id, statuses, timeout, json.dumps(last)[:3000],
                                self.describe()))


class CrewdTestCase(unittest.TestCase):
    """One crewd per test class (setUpClass), stopped with SIGTERM when the class is done (a
    class cleanup) with the exit status checked (0; an ASan/LSan report makes it non-zero).

    Subclasses set CREWD_ARGS / CREWD_ENV / CREWD_API_KEY. Tests that need their own server
    call self.start_crewd(...), which registers a cleanup that checks a clean exit too."""

    CREWD_ARGS = []
    CREWD_ENV = {}
    CREWD_API_KEY = None
    SHARED_SERVER = True   # False: no class-wide server; tests call start_crewd()
    srv = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not cls.SHARED_SERVER:
            return
        cls.srv = Crewd(args=cls.CREWD_ARGS, env=cls.CREWD_ENV, api_key=cls.CREWD_API_KEY)
        # A class cleanup (not tearDownClass) so that the server is stopped and checked even
        # when a subclass's setUpClass fails after this point.
        cls.addClassCleanup(check_clean_exit, cls.srv)

    def start_crewd(self, **kw):
        srv = Crewd(**kw)
        self.addCleanup(check_clean_exit, srv)
        return srv

    # -- assertions -----------------------------------------------------------------------

    def assertJsonError(self, resp, status, contains=None, msg_prefix=""):
        """resp is the 4-tuple from request(); checks the status, a JSON Content-Type and a
        {"message": "...", "status": N} body. `contains` (str or list) must be substrings of
        the message. Returns the message."""
        st, hdrs, js, raw = resp
        ctx = "%sreply %s %r" % (msg_prefix, st, raw[:1500])
        if isinstance(status, (tuple, list, set)):
            self.assertIn(st, status, ctx)
        else:
            self.assertEqual(st, status, ctx)
        ctype = (hdrs.get("Content-Type") or "")
        self.assertTrue(ctype.lower().startswith("application/json"),
                        "Content-Type %r, expected application/json; %s" % (ctype, ctx))
        self.assertIsInstance(js, dict, "error body is not a JSON object; " + ctx)
        self.assertIsInstance(js.get("message"), str, ctx)
        self.assertTrue(js["message"].strip(), "empty error message; " + ctx)
        self.assertEqual(js.get("status"), st, "body status differs from HTTP status; " + ctx)
        if contains:
            for c in ([contains] if isinstance(contains, str) else contains):
                self.assertIn(c, js["message"], ctx)
        return js["message"]


def wait_until(cond, timeout, what):
    """Polls cond() until it is truthy (returning its value), or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def check_clean_exit(srv):
    """Stops srv (SIGTERM, bounded wait), removes its temp dir, and asserts exit status 0,
    printing the server's stderr otherwise."""
    desc = None
    try:
        rc = srv.stop()
        if rc is not None and rc != 0:
            desc = srv.describe()
    finally:
        srv._remove_tmp()
    if desc is not None:
        raise AssertionError("crewd exited with status %s on SIGTERM (0 expected; ASan report?)"
                             "\n%s" % (rc, desc))
