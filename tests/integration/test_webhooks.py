"""Job webhooks end to end: the execute body's webhook, Standard Webhooks signatures checked
here the way a receiver would (HMAC-SHA256, constant-time compare, timestamp tolerance), the
retry schedule, 410, the delivery log (GET /api/v1/crew/job/{id}/webhooks), a crash in the
middle of an attempt, the connect-time address guard, and the secret kept out of every reply
and of the log.

The receiver is a small http.server in a thread on 127.0.0.1 that records every request and
answers from a per-test script (a status per attempt, or hang until released)."""
import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import unittest

from crewd_harness import CrewdTestCase, agent, unique_name, wait_until
from fakellm_harness import FakeLLM

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RAW_SECRET = "raw-secret-0123456789-SECRETMARK"
TOLERANCE_S = 300
WAIT_S = 60.0

BASE_ARGS = ["--webhook-allow", "127.0.0.1", "--webhook-allow-private", "1",
             "--webhook-retry-base-ms", "50", "--webhook-max-attempts", "3",
             "--webhook-timeout-ms", "3000", "--log-level", "debug"]


class Receiver:
    """Records POSTs; script(n) (n = 0-based attempt count) returns a status, or "hang"."""

    def __init__(self, script=None):
        self.script = script or (lambda n: 200)
        self.requests = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    idx = len(outer.requests)
                    outer.requests.append({"path": self.path,
                                           "headers": {k.lower(): v for k, v in
                                                       self.headers.items()},
                                           "body": body, "time": time.time()})
                action = outer.script(idx)
                if action == "hang":
                    outer.release.wait(WAIT_S)
                    action = 200
                try:
                    reply = b"{\"ok\": true}"
                    self.send_response(action)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # crewd gave up on us (timeout, or killed)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def count(self):
        with self.lock:
            return len(self.requests)

    def get(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def verify(secret, req):
    """A receiver's check per the Standard Webhooks spec: the signed content is
    "{id}.{timestamp}.{body}", one of the space-separated "v1,<base64>" values must match
    (compared in constant time), and the timestamp must be within the tolerance."""
    h = req["headers"]
    msg_id, ts, sigs = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    if abs(time.time() - int(ts)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") \
        else secret.encode()
    mac = hmac.new(key, ("%s.%s." % (msg_id, ts)).encode() + req["body"], hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    for s in sigs.split(" "):
        version, _, value = s.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value):
            return True
    return False


class WebhookCase(CrewdTestCase):
    CREWD_ARGS = BASE_ARGS

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeLLM([])
        cls.addClassCleanup(cls.fake.stop)
        super().setUpClass()

    def receiver(self, script=None):
        r = Receiver(script)
        self.addCleanup(r.close)
        return r

    def crew_name(self, srv=None):
        srv = srv or self.srv
        name = unique_name()
        cfg = {"llm": "openai", "model": "fake-model", "base_url": self.fake.base_url}
        srv.create({"name": name, "agents": [
            agent("a", config=cfg, system_prompt="You are a. [[fake:reply=done]]")]})
        return name

    def run_hooked(self, hook, srv=None, headers=None):
        srv = srv or self.srv
        name = self.crew_name(srv)
        st, _, acc, raw = srv.request("POST", "/api/v1/crew/execute",
                                      body={"crew_id": name, "query": "q", "webhook": hook},
                                      headers=headers)
        self.assertEqual(st, 202, raw)
        return acc["job_id"], srv.wait_job(acc["job_id"])

    def deliveries(self, job_id, srv=None):
        st, _, js, raw = (srv or self.srv).request(
            "GET", "/api/v1/crew/job/%s/webhooks" % job_id)
        self.assertEqual(st, 200, raw)
        return js["deliveries"]

    def wait_delivery(self, job_id, state, srv=None):
        def done():
            d = self.deliveries(job_id, srv)
            return d if d and all(x["state"] == state for x in d) else None
        return wait_until(done, WAIT_S, "deliveries of %s to be %s" % (job_id, state))


class TestDelivery(WebhookCase):
    def test_completed_job_delivers_once_signed(self):
        rcv = self.receiver()
        job_id, job = self.run_hooked({"url": rcv.url, "secret": SECRET})
        self.assertEqual(job["status"], "completed")
        d = self.wait_delivery(job_id, "delivered")
        self.assertEqual(len(d), 1, d)
        self.assertEqual(d[0]["type"], "job.completed")
        self.assertEqual(d[0]["attempts"], 1)
        self.assertEqual(d[0]["last_status"], 200)
        self.assertIsNone(d[0]["last_error"])
        self.assertIsNone(d[0]["next_attempt_at"])
        self.assertIsInstance(d[0]["seq"], int)
        self.assertEqual(set(d[0]), {"seq", "type", "state", "attempts", "last_status",
                                     "last_error", "next_attempt_at", "updated_at"})
        reqs = rcv.get()
        self.assertEqual(len(reqs), 1)
        req = reqs[0]
        self.assertEqual(req["path"], "/hook")
        self.assertTrue(req["headers"]["content-type"].startswith("application/json"))
        self.assertTrue(verify(SECRET, req), req["headers"])
        self.assertFalse(verify("whsec_" + base64.b64encode(b"x" * 24).decode(), req))
        self.assertEqual(req["headers"]["webhook-id"], "evt_%s_%d" % (job_id, d[0]["seq"]))
        body = json.loads(req["body"])
        self.assertEqual(body["type"], "job.completed")
        self.assertRegex(body["timestamp"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(body["data"]["job_id"], job_id)
        self.assertEqual(body["data"]["seq"], d[0]["seq"])
        self.assertEqual(body["data"]["status"], "completed")
        self.assertEqual(body["job"]["job_id"], job_id)
        self.assertEqual(body["job"]["status"], "completed")
        self.assertEqual(body["job"]["result"]["output"], "done")
        self.assertNotIn(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", req["body"])

    def test_raw_secret_and_events_filter(self):
        rcv = self.receiver()
        # job.failed only: a completed job sends nothing and records nothing
        job_id, job = self.run_hooked({"url": rcv.url, "secret": RAW_SECRET,
                                       "events": ["job.failed", "job.cancelled"]})
        self.assertEqual(job["status"], "completed")
        self.assertEqual(self.deliveries(job_id), [])
        # "*" takes the terminal event too; a raw secret's bytes are the key
        job2, _ = self.run_hooked({"url": rcv.url, "secret": RAW_SECRET, "events": ["*"]})
        d = self.wait_delivery(job2, "delivered")
        self.assertIn("job.completed", [x["type"] for x in d])
        mine = [r for r in rcv.get() if json.loads(r["body"])["data"]["job_id"] == job2]
        self.assertTrue(mine)
        for r in mine:
            self.assertTrue(verify(RAW_SECRET, r))
        self.assertFalse([r for r in rcv.get()
                          if json.loads(r["body"])["data"]["job_id"] == job_id])

    def test_every_event_type_reaches_the_webhook(self):
        """With "*", the job's whole history is delivered: one delivery per event, the same
        types and numbers as its event stream, each signed."""
        rcv = self.receiver()
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET, "events": ["*"]})
        d = self.wait_delivery(job_id, "delivered")
        self.assertEqual([(x["seq"], x["type"]) for x in d],
                         [(1, "job.started"), (2, "agent.started"), (3, "agent.completed"),
                          (4, "job.completed")])
        mine = sorted((json.loads(r["body"]) for r in rcv.get()
                       if json.loads(r["body"])["data"]["job_id"] == job_id),
                      key=lambda b: b["data"]["seq"])
        self.assertEqual([b["type"] for b in mine], [x["type"] for x in d])
        self.assertEqual(mine[2]["data"]["output"], "done")
        self.assertEqual(mine[2]["data"]["agent"], "a")
        self.assertNotIn("job", mine[2])
        for r in rcv.get():
            self.assertTrue(verify(SECRET, r))

    def test_fails_twice_then_delivered_with_the_same_id(self):
        rcv = self.receiver(lambda n: 503 if n < 2 else 200)
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET})
        d = self.wait_delivery(job_id, "delivered")
        self.assertEqual(d[0]["attempts"], 3)
        self.assertEqual(d[0]["last_status"], 200)
        reqs = rcv.get()
        self.assertEqual(len(reqs), 3)
        self.assertEqual(len({r["headers"]["webhook-id"] for r in reqs}), 1)
        self.assertEqual(len({r["body"] for r in reqs}), 1)
        for r in reqs:
            self.assertTrue(verify(SECRET, r))
        self.assertLess(reqs[0]["time"], reqs[1]["time"])

    def test_always_500_fails_after_max_attempts(self):
        rcv = self.receiver(lambda n: 500)
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET})
        d = self.wait_delivery(job_id, "failed")
        self.assertEqual(d[0]["attempts"], 3)
        self.assertEqual(d[0]["last_status"], 500)
        self.assertIn("500", d[0]["last_error"])
        self.assertIsNone(d[0]["next_attempt_at"])
        self.assertEqual(rcv.count(), 3)

    def test_410_fails_at_once(self):
        rcv = self.receiver(lambda n: 410)
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET})
        d = self.wait_delivery(job_id, "failed")
        self.assertEqual(d[0]["attempts"], 1)
        self.assertEqual(d[0]["last_status"], 410)
        self.assertIn("410", d[0]["last_error"])
        self.assertEqual(rcv.count(), 1)

    def test_cancelled_job_sends_job_cancelled(self):
        rcv = self.receiver()
        # a slow agent, so that the cancel comes first
        cfg = {"llm": "openai", "model": "fake-model", "base_url": self.fake.base_url}
        name = unique_name()
        self.srv.create({"name": name, "agents": [
            agent("a", config=cfg,
                  system_prompt="You are a. [[fake:reply=x]] [[fake:delay_ms=20000]]")]})
        acc = self.srv.execute({"crew_id": name, "query": "q",
                                "webhook": {"url": rcv.url, "secret": SECRET}})
        st, _, _, raw = self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % acc["job_id"])
        self.assertEqual(st, 200, raw)
        d = self.wait_delivery(acc["job_id"], "delivered")
        self.assertEqual([x["type"] for x in d], ["job.cancelled"])
        body = json.loads(rcv.get()[0]["body"])
        self.assertEqual(body["type"], "job.cancelled")
        self.assertEqual(body["job"]["status"], "cancelled")


class TestRefusals(WebhookCase):
    def execute_error(self, hook, contains):
        name = self.crew_name()
        st, h, js, raw = self.srv.request("POST", "/api/v1/crew/execute",
                                          body={"crew_id": name, "query": "q",
                                                "webhook": hook})
        msg = self.assertJsonError((st, h, js, raw), 400, contains)
        self.assertNotIn("SECRETMARK", msg)

    def test_bad_webhook_bodies(self):
        ok_url = "http://127.0.0.1:9/hook"
        cases = [
            ("http://127.0.0.1:9/", "webhook: must be an object"),
            ({"url": ok_url, "secret": RAW_SECRET, "extra": 1}, "webhook.extra: unknown field"),
            ({"secret": RAW_SECRET}, "webhook.url: is required"),
            ({"url": "ftp://127.0.0.1/", "secret": RAW_SECRET}, "only http and https"),
            ({"url": "not a url", "secret": RAW_SECRET}, "webhook.url"),
            ({"url": ok_url}, "webhook.secret: is required"),
            ({"url": ok_url, "secret": "SECRETMARK"}, "webhook.secret: must be whsec_"),
            ({"url": ok_url, "secret": "whsec_!!SECRETMARK!!"}, "webhook.secret"),
            ({"url": ok_url, "secret": RAW_SECRET, "events": ["job.done"]},
             "unknown event type 'job.done' (known: job.started"),
            ({"url": ok_url, "secret": RAW_SECRET, "events": "job.completed"},
             "webhook.events: must be a non-empty array"),
            ({"url": "http://localhost:9/", "secret": RAW_SECRET},
             "host 'localhost' is not in the server's webhook allowlist"),
        ]
        for hook, contains in cases:
            with self.subTest(hook=hook):
                self.execute_error(hook, contains)

    def test_no_allowlist_refuses_every_webhook(self):
        srv = self.start_crewd()
        name = self.crew_name(srv)
        st, h, js, raw = srv.request("POST", "/api/v1/crew/execute",
                                     body={"crew_id": name, "query": "q",
                                           "webhook": {"url": "https://example.com/h",
                                                       "secret": RAW_SECRET}})
        self.assertJsonError((st, h, js, raw), 400, "this server allows no webhook hosts")

    def test_unknown_job_is_404(self):
        self.assertJsonError(self.srv.request(
            "GET", "/api/v1/crew/job/2b1c8a3e-58a4-4c2e-9b8f-3f0c2e1d4a5b/webhooks"), 404,
            "not found")
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/job/nope/webhooks"), 404)


class TestSecretStaysSecret(WebhookCase):
    def test_secret_absent_from_replies_and_log(self):
        rcv = self.receiver()
        hook = {"url": rcv.url, "secret": RAW_SECRET}
        key = {"Idempotency-Key": unique_name("idem")}
        job_id, _ = self.run_hooked(hook, headers=key)
        self.wait_delivery(job_id, "delivered")
        seen = []
        for method, path, body in [
                ("GET", "/api/v1/crew/job/" + job_id, None),
                ("PATCH", "/api/v1/crew/job?job_id=" + job_id, None),
                ("GET", "/api/v1/crew/jobs", None),
                ("GET", "/api/v1/crew/jobs?limit=1000", None),
                ("GET", "/api/v1/crew/job/%s/webhooks" % job_id, None)]:
            st, _, _, raw = self.srv.request(method, path, body=body)
            self.assertEqual(st, 200, raw)
            seen.append(raw)
        self.assertEqual(json.loads(seen[0])["job_id"], job_id)
        for raw in seen:
            self.assertNotIn(b"SECRETMARK", raw)
        self.assertNotIn("SECRETMARK", self.srv.stderr_text())
        self.assertNotIn("SECRETMARK", json.dumps(self.fake.requests()))


class TestIdempotentReplay(WebhookCase):
    def test_replay_has_no_secret(self):
        rcv = self.receiver()
        name = self.crew_name()
        body = {"crew_id": name, "query": "q", "webhook": {"url": rcv.url, "secret": RAW_SECRET}}
        key = {"Idempotency-Key": unique_name("idem")}
        st, _, first, raw1 = self.srv.request("POST", "/api/v1/crew/execute", body=body,
                                              headers=key)
        self.assertEqual(st, 202, raw1)
        st, h, again, raw2 = self.srv.request("POST", "/api/v1/crew/execute", body=body,
                                              headers=key)
        self.assertEqual(st, 202, raw2)
        self.assertEqual(h.get("Idempotent-Replayed"), "true")
        self.assertEqual(again["job_id"], first["job_id"])
        self.assertNotIn(b"SECRETMARK", raw1 + raw2)
        self.srv.wait_job(first["job_id"])
        self.wait_delivery(first["job_id"], "delivered")
        self.assertEqual(rcv.count(), 1)


class TestCrashMidDelivery(WebhookCase):
    SHARED_SERVER = False

    def test_restart_redelivers_with_the_same_id(self):
        rcv = self.receiver(lambda n: "hang" if n == 0 else 200)
        srv = self.start_crewd(args=["--webhook-allow", "127.0.0.1",
                                     "--webhook-allow-private", "1",
                                     "--webhook-timeout-ms", "1500",
                                     "--webhook-retry-base-ms", "50"])
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET}, srv=srv)
        wait_until(lambda: rcv.count() >= 1, WAIT_S, "the first attempt")
        self.assertEqual(srv.kill9(), -9)
        srv.start()  # same store; the old lease (2 x timeout) must expire first
        d = self.wait_delivery(job_id, "delivered", srv=srv)
        self.assertGreaterEqual(d[0]["attempts"], 2)
        reqs = rcv.get()
        self.assertGreaterEqual(len(reqs), 2)
        self.assertEqual(reqs[0]["headers"]["webhook-id"], reqs[-1]["headers"]["webhook-id"])
        self.assertEqual(reqs[0]["body"], reqs[-1]["body"])
        self.assertTrue(verify(SECRET, reqs[-1]))


class TestPrivateAddressRefused(WebhookCase):
    SHARED_SERVER = False

    def test_loopback_refused_without_allow_private(self):
        rcv = self.receiver()
        srv = self.start_crewd(args=["--webhook-allow", "127.0.0.1",
                                     "--webhook-retry-base-ms", "50",
                                     "--webhook-max-attempts", "2"])
        job_id, _ = self.run_hooked({"url": rcv.url, "secret": SECRET}, srv=srv)
        d = self.wait_delivery(job_id, "failed", srv=srv)
        self.assertEqual(d[0]["attempts"], 2)
        self.assertIsNone(d[0]["last_status"])
        self.assertIn("refused to connect to 127.0.0.1 (loopback)", d[0]["last_error"])
        self.assertIn("--webhook-allow-private", d[0]["last_error"])
        self.assertEqual(rcv.count(), 0)


if __name__ == "__main__":
    unittest.main()
