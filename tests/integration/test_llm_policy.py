"""Where agents' LLM calls may go, and which of the server's environment variables they may
send there as keys (--llm-base-url-allow, --llm-key-env-allow). Without these lists a crew's
author could point an agent at a server of theirs and receive the server's provider key, or
any variable named in api_key_env (crewd's own API keys, the store's password). Crews are
checked when written, at execute, and when a job starts. Every wait is bounded."""
import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from crewd_harness import CrewdTestCase, run_crewd, unique_name, wait_until
from fakellm_harness import FakeLLM
from test_jobs import fake_agent

WAIT_S = 60


class Sink:
    """An HTTP server on 127.0.0.1 that records every request: where a leaked key would go."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                seen.append((self.path, dict(self.headers)))
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class PolicyCase(CrewdTestCase):
    SHARED_SERVER = False

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)
        self.sink = Sink()
        self.addCleanup(self.sink.stop)
        self.name = unique_name("pol")


class TestRefused(PolicyCase):

    def setUp(self):
        super().setUp()
        self.srv = self.start_crewd(env={"SECRET_DB_PASSWORD": "hunter2-db",
                                         "OPENAI_API_KEY": "sk-server-key"})

    def create(self, config):
        d = {"name": self.name, "agents": [{"agent_id": "a", "config": config}]}
        return self.srv.request("PUT", "/api/v1/crew", body=d)

    def test_base_url_host_not_allowed(self):
        # "localhost" is not "127.0.0.1", the only host the test server allows.
        url = "http://localhost:%d/v1" % self.sink.port
        msg = self.assertJsonError(self.create({"base_url": url}), 400)
        self.assertEqual(msg, "agents[0].config.base_url: host 'localhost' is not on the "
                              "server's --llm-base-url-allow list (LLM calls, with the "
                              "server's provider keys, go only to hosts the operator allows)")
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/" + self.name)[0], 404)
        # A replace is checked the same way.
        ok = {"name": self.name, "agents": [fake_agent("a", self.fake, reply="x")]}
        self.srv.create(ok)
        bad = {"name": self.name, "agents": [{"agent_id": "a", "config": {"base_url": url}}]}
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew/" + self.name, body=bad), 400,
                             "--llm-base-url-allow")
        self.assertEqual(self.sink.seen, [])

    def test_key_variable_not_allowed(self):
        for env in ("SECRET_DB_PASSWORD", "CREWD_API_KEYS", "HOME", "ANTHROPIC_API_KEY"):
            with self.subTest(env=env):
                cfg = {"base_url": self.fake.base_url, "api_key_env": env}
                msg = self.assertJsonError(self.create(cfg), 400)
                self.assertEqual(msg, "agents[0].config.api_key_env: '%s' is neither provider "
                                      "'openai''s own key variable nor on the server's "
                                      "--llm-key-env-allow list" % env)
        # Not another provider's key to a local server's default port, which any local user
        # could bind (ollama: 127.0.0.1:11434).
        msg = self.assertJsonError(self.create({"llm": "ollama", "api_key_env": "OPENAI_API_KEY"}),
                                   400)
        self.assertIn("provider 'ollama''s own key variable", msg)
        # The providers' own variables need no listing.
        cfg = {"base_url": self.fake.base_url, "api_key_env": "OPENAI_API_KEY",
               "model": "fake-model"}
        st, _, _, raw = self.create(cfg)
        self.assertEqual(st, 201, raw)


class TestAllowed(PolicyCase):

    def test_listed_variable_is_sent_to_an_allowed_host(self):
        srv = self.start_crewd(args=["--llm-key-env-allow", "MY_LLM_KEY"],
                               env={"MY_LLM_KEY": "k-listed-1"})
        a = fake_agent("a", self.fake, reply="ok", config={"api_key_env": "MY_LLM_KEY"})
        srv.create({"name": self.name, "agents": [a]})
        job = srv.wait_job(srv.execute({"crew_id": self.name, "query": "q " + self.name})
                           ["job_id"])
        self.assertEqual(job["status"], "completed", job)
        reqs = [r for r in self.fake.requests() if self.name in json.dumps(r.get("body"))]
        self.assertEqual(len(reqs), 1)
        auth = {k.lower(): v for k, v in reqs[0]["headers"].items()}.get("authorization")
        self.assertEqual(auth, "Bearer k-listed-1")

    def test_crewd_variables_cannot_be_listed(self):
        rc, _, err = run_crewd(["--llm-key-env-allow", "CREWD_API_KEYS"])
        self.assertNotEqual(rc, 0)
        self.assertIn("crewd's own variables cannot be used as provider keys", err)


class TestNarrowedLater(PolicyCase):
    """A crew stored while its host was allowed, and a job accepted then, after the server
    restarts without the host: execute is refused, and the job fails when it starts rather
    than calling the host."""

    def test_execute_refused_and_job_failed(self):
        # A short lease: the restarted server takes the job over soon after the kill.
        srv = self.start_crewd(args=["--llm-base-url-allow", "127.0.0.1", "--job-lease-ms", "1000"])
        srv.create({"name": self.name, "agents": [
            fake_agent("a", self.fake, reply="one", extra_prompt=" [[fake:delay_ms=60000]]")]})
        marker = "q " + self.name
        job_id = srv.execute({"crew_id": self.name, "query": marker})["job_id"]
        wait_until(lambda: [r for r in self.fake.requests() if marker in json.dumps(r.get("body"))],
                   WAIT_S, "the job's call to reach the fake")
        srv.kill9()
        srv.extra_args = ["--llm-base-url-allow", "llm.example", "--job-lease-ms", "1000"]
        srv.start()
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("--llm-base-url-allow", job["error"])
        self.assertEqual(len([r for r in self.fake.requests() if marker in json.dumps(r.get("body"))]),
                         1, "the job called the host again after the restart")
        st, _, js, raw = srv.request("POST", "/api/v1/crew/execute",
                                     body={"crew_id": self.name, "query": "again"})
        self.assertEqual(st, 400, raw)
        self.assertIn("host '127.0.0.1' is not on the server's --llm-base-url-allow list",
                      js["message"])


if __name__ == "__main__":
    unittest.main()
