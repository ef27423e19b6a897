"""A job's events as Server-Sent Events (GET /api/v1/crew/job/{id}/events): the history of a
finished job then the end of the stream, live events, resume with Last-Event-ID after a
dropped connection (nothing lost, nothing twice), many readers on one job, heartbeats,
streamed text (agent.delta), tool calls, failures, cancel, delete, a restart mid-job, and the
errors (404, 400, 204). Every wait is bounded."""
import http.client
import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from crewd_harness import PG_MODE, CrewdTestCase, unique_name, wait_until
from fakellm_harness import FakeLLM
from test_jobs import agent, fake_agent

IO_TIMEOUT_S = 30
MISSING = "0b8e7c1a-0000-4000-8000-0000000000ff"


class SSE:
    """One event stream, read message by message."""

    def __init__(self, srv, job_id, last_event_id=None, query="", timeout=IO_TIMEOUT_S):
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
        headers = {"Accept": "text/event-stream"}
        if srv.api_key:
            headers["Authorization"] = "Bearer " + srv.api_key
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/api/v1/crew/job/%s/events%s" % (job_id, query),
                          headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comments = 0
        self.retry = None

    def next(self):
        """The next message as {"id", "event", "data"}, or None at the end of the stream.
        Comments (heartbeats) are counted and skipped."""
        fields = {}
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if "data" in fields:
                    return {"id": int(fields["id"]), "event": fields["event"],
                            "data": json.loads(fields["data"])}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(": ")
            if name == "retry":
                self.retry = int(value)
                continue
            fields[name] = value

    def read_all(self):
        out = []
        while True:
            m = self.next()
            if m is None:
                return out
            out.append(m)

    def close(self):
        self.conn.close()


def types(msgs):
    return [m["event"] for m in msgs]


class EventCase(CrewdTestCase):
    SHARED_SERVER = False
    CREWD_EXTRA = []

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)
        self.srv = self.start_crewd(args=self.CREWD_EXTRA)
        self.name = unique_name("ev")

    def crew(self, *agents, **extra):
        d = {"name": self.name, "agents": list(agents)}
        d.update(extra)
        self.srv.create(d)

    def run_job(self, query="q", **body):
        b = {"crew_id": self.name, "query": query + " " + self.name}
        b.update(body)
        job_id = self.srv.execute(b)["job_id"]
        return job_id

    def history(self, job_id, **kw):
        s = SSE(self.srv, job_id, **kw)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        return s.read_all()

    def check_well_formed(self, job_id, msgs, first_id=1):
        self.assertEqual([m["id"] for m in msgs], list(range(first_id, first_id + len(msgs))))
        for m in msgs:
            d = m["data"]
            self.assertEqual(d["seq"], m["id"])
            self.assertEqual(d["type"], m["event"])
            self.assertEqual(d["job_id"], job_id)
            self.assertRegex(d["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIsInstance(d["data"], dict)


class TestHistory(EventCase):

    def test_finished_job_replays_its_history_and_ends(self):
        self.crew(fake_agent("a", self.fake, reply="one"), fake_agent("b", self.fake, reply="two"))
        job_id = self.run_job()
        self.srv.wait_job(job_id)
        msgs = self.history(job_id)
        self.check_well_formed(job_id, msgs)
        self.assertEqual(types(msgs), ["job.started", "agent.started", "agent.completed",
                                       "agent.started", "agent.completed", "job.completed"])
        self.assertEqual(msgs[0]["data"]["data"]["attempt"], 1)
        done = [m["data"]["data"] for m in msgs if m["event"] == "agent.completed"]
        self.assertEqual([(d["agent"], d["step"], d["output"]) for d in done],
                         [("a", "agent:0", "one"), ("b", "agent:1", "two")])
        for d in done:
            self.assertGreater(d["usage"]["total_tokens"], 0)
            self.assertEqual(d["llm_calls"], 1)
        self.assertEqual(msgs[-1]["data"]["data"], {"status": "completed", "error": None})

    def test_resume_with_last_event_id_and_query(self):
        self.crew(fake_agent("a", self.fake, reply="one"), fake_agent("b", self.fake, reply="two"))
        job_id = self.run_job()
        self.srv.wait_job(job_id)
        full = self.history(job_id)
        for k in range(0, len(full)):
            self.assertEqual(self.history(job_id, last_event_id=k), full[k:])
        self.assertEqual(self.history(job_id, query="?after=3"), full[3:])
        # The client has everything of a finished job: 204 stops EventSource reconnecting.
        s = SSE(self.srv, job_id, last_event_id=len(full))
        self.addCleanup(s.close)
        self.assertEqual(s.status, 204)

    def test_errors(self):
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew/job/%s/events" % MISSING)
        self.assertEqual(st, 404, raw)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/job/nope/events"), 404)
        self.crew(fake_agent("a", self.fake, reply="one"))
        job_id = self.run_job()
        for bad in ("x", "-1", "1.5", "99999999999999999999999"):
            self.assertJsonError(self.srv.request(
                "GET", "/api/v1/crew/job/%s/events" % job_id,
                headers={"Last-Event-ID": bad}), 400, "Last-Event-ID")
        self.assertJsonError(self.srv.request(
            "GET", "/api/v1/crew/job/%s/events?after=z" % job_id), 400, "after")
        self.srv.wait_job(job_id)

    def test_failed_agent_and_failed_job(self):
        self.crew(fake_agent("a", self.fake, reply="x", extra_prompt=" [[fake:status=400]]"))
        job_id = self.run_job()
        self.assertEqual(self.srv.wait_job(job_id)["status"], "failed")
        msgs = self.history(job_id)
        self.assertEqual(types(msgs), ["job.started", "agent.started", "agent.failed",
                                       "job.failed"])
        self.assertIn("HTTP 400", msgs[2]["data"]["data"]["error"])
        self.assertEqual(msgs[3]["data"]["data"]["status"], "failed")
        self.assertTrue(msgs[3]["data"]["data"]["error"])

    def test_tool_calls_and_streamed_text(self):
        args = json.dumps({"expression": "6*7"})
        self.crew(fake_agent("a", self.fake, reply="the answer is 42",
                             extra_prompt=" [[fake:tool=calculator:%s]]" % args,
                             tools=["calculator"]))
        job_id = self.run_job(stream=True)
        job = self.srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        msgs = self.history(job_id)
        self.check_well_formed(job_id, msgs)
        calls = [m["data"]["data"] for m in msgs if m["event"] == "agent.tool_call"]
        self.assertEqual(len(calls), 1, msgs)
        self.assertEqual((calls[0]["agent"], calls[0]["name"], calls[0]["result"]),
                         ("a", "calculator", "42"))
        deltas = [m["data"]["data"] for m in msgs if m["event"] == "agent.delta"]
        self.assertTrue(deltas, types(msgs))
        self.assertEqual("".join(d["text"] for d in deltas), "the answer is 42")
        # Streamed text comes after the step started and before it completed.
        t = types(msgs)
        self.assertLess(t.index("agent.started"), t.index("agent.delta"))
        self.assertLess(max(i for i, x in enumerate(t) if x == "agent.delta"),
                        t.index("agent.completed"))
        # The calls really were streamed.
        bodies = [r["body"] for r in self.fake.requests()
                  if isinstance(r.get("body"), dict) and self.name in json.dumps(r["body"])]
        self.assertTrue(bodies and all(b.get("stream") is True for b in bodies), bodies)

    def test_history_larger_than_a_reader_buffer(self):
        """A history of more than a megabyte (the stream layer's cap on what may wait for a
        reader) goes out whole, paced by the reader, to a reader that reads it at once and to
        one that does not read until the first is done."""
        texts = [c * 150000 for c in "wxyz"]
        self.crew(*[fake_agent("a%d" % i, self.fake, reply=t) for i, t in enumerate(texts)])
        job_id = self.run_job(stream=True)
        job = self.srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        # Both open at once; the second is not read while the first is: a slow reader.
        readers = [SSE(self.srv, job_id), SSE(self.srv, job_id)]
        for s in readers:
            self.addCleanup(s.close)
            self.assertEqual(s.status, 200)
        for s in readers:
            msgs = s.read_all()
            self.check_well_formed(job_id, msgs)
            self.assertEqual(types(msgs)[-1], "job.completed", types(msgs))
            self.assertGreater(sum(len(json.dumps(m["data"])) for m in msgs), 1024 * 1024)
            outs = [m["data"]["data"]["output"] for m in msgs if m["event"] == "agent.completed"]
            self.assertEqual(outs, texts)
        self.assertNotIn("stream cut", self.srv.stderr_text())

    def test_stream_must_be_a_boolean(self):
        self.crew(fake_agent("a", self.fake, reply="x"))
        self.assertJsonError(self.srv.request("POST", "/api/v1/crew/execute", body={
            "crew_id": self.name, "query": "q", "stream": "yes"}), 400, "stream")


class TestLive(EventCase):
    CREWD_EXTRA = ["--sse-heartbeat-ms", "200"]

    def slow_crew(self):
        self.crew(fake_agent("a", self.fake, reply="one"),
                  fake_agent("b", self.fake, reply="two", extra_prompt=" [[fake:delay_ms=1500]]"))

    def test_live_events_heartbeats_and_end(self):
        self.slow_crew()
        job_id = self.run_job()
        s = SSE(self.srv, job_id)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.resp.getheader("Content-Type").startswith("text/event-stream"))
        self.assertEqual(s.resp.getheader("Cache-Control"), "no-cache")
        first = s.next()
        self.assertEqual(self.srv.request("GET", "/healthz")[2]["event_streams"], 1)
        metrics = self.srv.request("GET", "/metrics")[3].decode()
        self.assertIn("\ncrewd_event_streams_open 1\n", metrics)
        msgs = [first] + s.read_all()
        self.assertEqual(s.retry, 1000)
        self.check_well_formed(job_id, msgs)
        self.assertEqual(types(msgs)[-1], "job.completed", msgs)
        self.assertGreaterEqual(s.comments, 1, "no heartbeat during a 1.5 s call")
        wait_until(lambda: self.srv.request("GET", "/healthz")[2]["event_streams"] == 0,
                   IO_TIMEOUT_S, "the ended stream to be gone from /healthz")

    def test_resume_after_a_dropped_connection(self):
        self.slow_crew()
        job_id = self.run_job()
        s = SSE(self.srv, job_id)
        got = []
        while True:  # up to b's start: then the connection drops mid-job
            m = s.next()
            got.append(m)
            if m["event"] == "agent.started" and m["data"]["data"]["agent"] == "b":
                break
        s.close()
        s2 = SSE(self.srv, job_id, last_event_id=got[-1]["id"])
        self.addCleanup(s2.close)
        rest = s2.read_all()
        self.check_well_formed(job_id, got + rest)
        self.assertEqual(types(rest), ["agent.completed", "job.completed"])
        self.assertEqual(got + rest, self.history(job_id))

    def test_many_readers_on_one_job(self):
        self.slow_crew()
        job_id = self.run_job()
        n = 40
        results = [None] * n

        def reader(i):
            s = SSE(self.srv, job_id)
            try:
                results[i] = s.read_all()
            finally:
                s.close()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT_S)
            self.assertFalse(t.is_alive(), "a reader did not finish")
        full = self.history(job_id)
        self.assertEqual(types(full)[-1], "job.completed")
        for r in results:
            self.assertEqual(r, full)

    def test_cancel_ends_the_stream(self):
        self.crew(fake_agent("a", self.fake, reply="one"),
                  fake_agent("b", self.fake, reply="two", extra_prompt=" [[fake:delay_ms=60000]]"))
        job_id = self.run_job()
        s = SSE(self.srv, job_id)
        self.addCleanup(s.close)
        while True:
            m = s.next()
            if m["event"] == "agent.started" and m["data"]["data"]["agent"] == "b":
                break
        st, _, _, raw = self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % job_id)
        self.assertEqual(st, 200, raw)
        rest = s.read_all()
        self.assertEqual(types(rest), ["job.cancelled"])
        self.assertEqual(rest[0]["data"]["data"],
                         {"status": "cancelled", "error": "cancelled by the client"})

    def test_delete_ends_the_stream(self):
        self.crew(fake_agent("a", self.fake, reply="one", extra_prompt=" [[fake:delay_ms=60000]]"))
        job_id = self.run_job()
        s = SSE(self.srv, job_id)
        self.addCleanup(s.close)
        self.assertEqual(s.next()["event"], "job.started")
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew/job/%s" % job_id)
        self.assertEqual(st, 200, raw)
        rest = s.read_all()  # ends: the job is gone (cancelled first, then deleted)
        # What the reader saw before the job went depends on when the hub read the store,
        # but it is a prefix of the history, and the job is gone.
        seen = [m for m in types(rest) if m != "agent.started"]
        self.assertIn(seen, (["job.cancelled"], []), rest)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/job/%s" % job_id)[0], 404)

    def test_pending_job_stream_waits(self):
        self.crew(fake_agent("a", self.fake, reply="one"))
        job_id = self.run_job()
        msgs = self.history(job_id)
        self.assertEqual(types(msgs), ["job.started", "agent.started", "agent.completed",
                                       "job.completed"])


def openai_chunk(delta, finish=None):
    return "data: " + json.dumps({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"


class TextThenToolLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible stream that says something, then asks for the calculator in the
    same reply (the fake LLM's tool replies carry no text); after the tool result, "42"."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = openai_chunk({"role": "assistant", "content": ""})
        if not any(m["role"] == "tool" for m in body["messages"]):
            out += openai_chunk({"content": "let me compute. "})
            out += openai_chunk({"tool_calls": [{
                "index": 0, "id": "c1", "type": "function",
                "function": {"name": "calculator", "arguments": "{\"expression\":\"6*7\"}"}}]})
            out += openai_chunk({}, "tool_calls")
        else:
            out += openai_chunk({"content": "42"}) + openai_chunk({}, "stop")
        data = (out + "data: [DONE]\n\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TestStreamOrder(EventCase):

    def test_text_streamed_before_a_tool_call_comes_before_it(self):
        llm = ThreadingHTTPServer(("127.0.0.1", 0), TextThenToolLLM)
        threading.Thread(target=llm.serve_forever, daemon=True).start()
        self.addCleanup(llm.server_close)
        self.addCleanup(llm.shutdown)
        url = "http://127.0.0.1:%d/v1" % llm.server_address[1]
        self.crew(agent("a", config={"llm": "openai", "model": "m", "base_url": url},
                        system_prompt="s", tools=["calculator"]))
        job_id = self.run_job(stream=True)
        self.assertEqual(self.srv.wait_job(job_id)["status"], "completed")
        steps = [(m["event"], m["data"]["data"].get("text") or m["data"]["data"].get("name"))
                 for m in self.history(job_id) if m["event"].startswith("agent.")]
        self.assertEqual(steps, [("agent.started", None), ("agent.delta", "let me compute. "),
                                 ("agent.tool_call", "calculator"), ("agent.delta", "42"),
                                 ("agent.completed", None)])


class TestHeadRequest(EventCase):

    def test_head_gets_headers_and_keeps_nothing(self):
        self.crew(fake_agent("a", self.fake, reply="one"))
        job_id = self.run_job()
        self.srv.wait_job(job_id)
        st, hdrs, _, raw = self.srv.request("HEAD", "/api/v1/crew/job/%s/events" % job_id)
        self.assertEqual((st, raw), (200, b""))
        self.assertTrue(hdrs.get("Content-Type").startswith("text/event-stream"))

    def test_head_on_a_live_job_does_not_hold_the_connection(self):
        self.crew(fake_agent("a", self.fake, reply="one", extra_prompt=" [[fake:delay_ms=60000]]"))
        job_id = self.run_job()
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=IO_TIMEOUT_S)
        self.addCleanup(conn.close)
        conn.request("HEAD", "/api/v1/crew/job/%s/events" % job_id)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.read(), b"")
        # The same connection serves the next request while the job still runs.
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(json.loads(resp.read())["event_streams"], 0)
        self.assertIn(self.srv.job(job_id)["status"], ("pending", "running"))
        self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % job_id)


class TestAuth(EventCase):
    """With an API key, the stream needs it like every /api/ route (401 JSON without)."""

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)
        self.srv = self.start_crewd(args=["--api-key", "sekrit-key-1"], api_key="sekrit-key-1")
        self.name = unique_name("ev-auth")

    def test_key_required(self):
        self.crew(fake_agent("a", self.fake, reply="one"))
        job_id = self.run_job()
        self.srv.wait_job(job_id)
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=IO_TIMEOUT_S)
        self.addCleanup(conn.close)
        conn.request("GET", "/api/v1/crew/job/%s/events" % job_id)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        self.assertEqual((resp.status, body["status"]), (401, 401))
        self.assertEqual(types(self.history(job_id))[-1], "job.completed")  # with the key


class TestTwoInstances(EventCase):
    """A reader on another instance than the one running the job gets every event, through
    the store (the hub's poll), and the end of the stream."""

    def test_reader_on_the_other_instance(self):
        self.crew(fake_agent("a", self.fake, reply="one"),
                  fake_agent("b", self.fake, reply="two", extra_prompt=" [[fake:delay_ms=2500]]"))
        job_id = self.run_job()
        wait_until(lambda: self.srv.job(job_id)["status"] == "running", IO_TIMEOUT_S,
                   "the job to run on the first instance")
        if PG_MODE:
            other = self.start_crewd(store=self.srv.pg_url)
        else:
            other = self.start_crewd(store_dir=self.srv.store_dir)
        s = SSE(other, job_id)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        got = s.read_all()
        self.check_well_formed(job_id, got)
        self.assertEqual(types(got)[-1], "job.completed")
        self.assertEqual(got, self.history(job_id))
        # The first instance ran it: one job.started.
        self.assertEqual(types(got).count("job.started"), 1)


class TestRestart(EventCase):
    CREWD_EXTRA = ["--job-lease-ms", "2000"]

    def test_kill9_mid_job_events_continue(self):
        self.crew(fake_agent("a", self.fake, reply="one"),
                  fake_agent("b", self.fake, reply="two", extra_prompt=" [[fake:delay_ms=3000]]"))
        job_id = self.run_job()
        s = SSE(self.srv, job_id)
        seen = []
        while True:
            m = s.next()
            seen.append(m)
            if m["event"] == "agent.started" and m["data"]["data"]["agent"] == "b":
                break
        s.close()
        self.srv.kill9()
        self.srv.restart()
        s2 = SSE(self.srv, job_id, last_event_id=seen[-1]["id"], timeout=90)
        self.addCleanup(s2.close)
        rest = s2.read_all()
        self.check_well_formed(job_id, seen + rest)
        # The job starts again (attempt 2, one step done), b runs again, the job completes.
        t = types(rest)
        self.assertEqual(t, ["job.started", "agent.started", "agent.completed", "job.completed"],
                         rest)
        self.assertEqual(rest[0]["data"]["data"], {"attempt": 2, "steps_done": 1})


if __name__ == "__main__":
    unittest.main()
