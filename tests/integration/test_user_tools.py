"""User-defined HTTP tools (PUT/GET/DELETE /api/v1/tools): CRUD, validation, redaction of
secret header values, persistence across a restart, and a job whose agent calls a user tool
served by an in-test HTTP server, refused without the allowlist."""
import http.server
import json
import threading
import unittest

from crewd_harness import PG_MODE, CrewdTestCase, unique_name
from fakellm_harness import FakeLLM
from test_jobs import fake_agent

WAIT_S = 10


def tool(name, url="http://127.0.0.1:9/x", **kw):
    d = {"name": name, "description": "d of " + name,
         "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
         "url": url}
    d.update(kw)
    return d


class Recorder:
    """An HTTP server on 127.0.0.1 in a thread, answering every request and recording it."""

    def __init__(self):
        self.requests = []
        self.cond = threading.Condition()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with rec.cond:
                    rec.requests.append({"method": self.command, "path": self.path,
                                         "headers": dict(self.headers), "body": body})
                    rec.cond.notify_all()
                out = b'{"temp": 21}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = handle_one

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(WAIT_S)


class TestToolsApi(CrewdTestCase):
    def put(self, body):
        return self.srv.request("PUT", "/api/v1/tools", body)

    def test_crud(self):
        name = unique_name("t")
        st, _, js, raw = self.put(tool(name, headers={"X-Plain": "p"}))
        self.assertEqual(st, 201, raw)
        self.assertEqual(js["message"], "Tool created successfully")
        self.assertEqual(js["method"], "POST")
        self.assertIsNone(js["timeout"])
        self.assertFalse(js["builtin"])
        created = js["created_at"]
        st, _, js, raw = self.put(tool(name, method="get", timeout=2.5))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["message"], "Tool replaced successfully")
        self.assertEqual(js["method"], "GET")
        self.assertEqual(js["timeout"], 2.5)
        self.assertEqual(js["created_at"], created)
        self.assertEqual(js["headers"], {})
        st, _, js, _ = self.srv.request("GET", "/api/v1/tools/" + name)
        self.assertEqual(st, 200)
        self.assertEqual(js["url"], "http://127.0.0.1:9/x")
        st, _, js, _ = self.srv.request("GET", "/api/v1/tools")
        by_name = {t["name"]: t for t in js["tools"]}
        self.assertTrue(by_name["calculator"]["builtin"])
        self.assertTrue(by_name["http_request"]["builtin"])
        self.assertFalse(by_name[name]["builtin"])
        st, _, js, _ = self.srv.request("GET", "/api/v1/tools/calculator")
        self.assertEqual(st, 200)
        self.assertTrue(js["builtin"])
        st, _, js, _ = self.srv.request("DELETE", "/api/v1/tools/" + name)
        self.assertEqual(st, 200)
        self.assertJsonError(self.srv.request("GET", "/api/v1/tools/" + name), 404, name)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/tools/" + name), 404)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/tools/calculator"), 400,
                             "built-in")

    def test_validation(self):
        cases = [
            (tool("bad name"), "name"),
            (tool("x" * 65), "name"),
            (tool("calculator"), "built-in"),
            ({k: v for k, v in tool("nodesc").items() if k != "description"}, "description"),
            (tool("p1", parameters={"type": "array"}), "parameters"),
            (tool("p2", parameters=[]), "parameters"),
            (tool("u1", url="ftp://x/"), "url"),
            (tool("u2", url="http://"), "url"),
            (tool("m", method="PUT"), "method"),
            (tool("h1", headers={"Bad Name": "v"}), "header name"),
            (tool("h2", headers={"X": "a\nb"}), "printable"),
            (tool("h3", headers={"X": 1}), "string"),
            (tool("h4", headers={"Host": "x"}), "may not be set"),
            (tool("t1", timeout=0), "timeout"),
            (tool("t2", timeout=301), "timeout"),
            (tool("f", extra=1), "unknown field"),
        ]
        for body, text in cases:
            with self.subTest(body=body):
                self.assertJsonError(self.put(body), 400, text)

    def test_secret_headers_redacted(self):
        name = unique_name("s")
        hdrs = {"Authorization": "Bearer sekrit1", "X-Api-Key": "sekrit2",
                "X-Token-Thing": "sekrit3", "X-Plain": "visible"}
        st, _, js, raw = self.put(tool(name, headers=hdrs))
        self.assertEqual(st, 201, raw)
        self.assertNotIn(b"sekrit", raw)
        self.assertEqual(js["headers"]["X-Plain"], "visible")
        self.assertEqual(js["headers"]["Authorization"], "***")
        for path in ("/api/v1/tools/" + name, "/api/v1/tools"):
            _, _, _, raw = self.srv.request("GET", path)
            self.assertNotIn(b"sekrit", raw, path)
            self.assertIn(b"visible", raw, path)


class TestToolSecrets(CrewdTestCase):
    """Regressions from review: secrets never come back, and what GET shows can be sent back."""

    def test_url_secrets_are_masked(self):
        name = unique_name("u").replace("-", "_")
        url = "https://alice:PW-SEKRIT@api.example.com/v1/w?appid=Q-SEKRIT"
        st, _, js, raw = self.srv.request("PUT", "/api/v1/tools", tool(name, url=url))
        self.assertEqual(st, 201, raw)
        _, _, _, raw2 = self.srv.request("GET", "/api/v1/tools/" + name)
        _, _, _, raw3 = self.srv.request("GET", "/api/v1/tools")
        for r in (raw, raw2, raw3):
            self.assertNotIn(b"SEKRIT", r)
        self.assertIn("api.example.com", js["url"])

    def test_get_body_sent_back_keeps_the_secret(self):
        name = unique_name("r").replace("-", "_")
        st, _, _, raw = self.srv.request("PUT", "/api/v1/tools", tool(
            name, headers={"Authorization": "Bearer real-one"}))
        self.assertEqual(st, 201, raw)
        _, _, got, _ = self.srv.request("GET", "/api/v1/tools/" + name)
        self.assertEqual(got["headers"]["Authorization"], "***")
        st, _, _, raw = self.srv.request("PUT", "/api/v1/tools", got)
        self.assertEqual(st, 200, raw)
        if not PG_MODE:  # the stored value is still the real one, not "***"
            import sqlite3
            db = sqlite3.connect(self.srv.db_path)
            (stored,) = db.execute("SELECT definition FROM tools WHERE name = ?",
                                   (name,)).fetchone()
            db.close()
            self.assertEqual(json.loads(stored)["headers"]["Authorization"], "Bearer real-one")
        # "***" for a secret never stored is refused.
        st, _, js, raw = self.srv.request("PUT", "/api/v1/tools", tool(
            unique_name("n").replace("-", "_"), headers={"X-Api-Key": "***"}))
        self.assertEqual(st, 400, raw)
        self.assertIn("stored secret", js["message"])

    def test_tiny_timeout_and_duplicate_headers_refused(self):
        for kw, word in (({"timeout": 0.0001}, "timeout"),
                         ({"headers": {"X-A": "1", "x-a": "2"}}, "twice")):
            st, _, js, raw = self.srv.request("PUT", "/api/v1/tools",
                                              tool(unique_name("b").replace("-", "_"), **kw))
            self.assertEqual(st, 400, raw)
            self.assertIn(word, js["message"])


class TestUserToolCalls(CrewdTestCase):
    SHARED_SERVER = False

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)
        self.http = Recorder()
        self.addCleanup(self.http.stop)

    def run_with_tool(self, srv, tool_name):
        name = unique_name()
        st, _, _, raw = srv.request("PUT", "/api/v1/crew", {"name": name, "agents": [fake_agent(
            "w", self.fake, tools=[tool_name],
            extra_prompt=' [[fake:tool=%s:{"x":1}]]' % tool_name)]})
        self.assertEqual(st, 201, raw)
        job = srv.wait_job(srv.execute({"crew_id": name, "query": "weather?"})["job_id"])
        self.assertEqual(job["status"], "completed", job)
        return job

    def test_call_and_persistence(self):
        srv = self.start_crewd(args=["--tool-http-allow", "127.0.0.1",
                                     "--tool-http-allow-private", "1"])
        url = "http://127.0.0.1:%d/weather" % self.http.port
        st, _, _, raw = srv.request("PUT", "/api/v1/tools", tool(
            "mytool", url=url, headers={"X-Team": "blue", "Authorization": "Bearer t0k"}))
        self.assertEqual(st, 201, raw)
        # The tool survives a restart: loaded from the store into the registry.
        srv.restart()
        st, _, js, _ = srv.request("GET", "/api/v1/tools/mytool")
        self.assertEqual(st, 200)
        self.assertEqual(js["headers"]["Authorization"], "***")
        job = self.run_with_tool(srv, "mytool")
        with self.http.cond:
            self.http.cond.wait_for(lambda: self.http.requests, WAIT_S)
        req = self.http.requests[0]
        self.assertEqual(req["method"], "POST")
        self.assertEqual(req["path"], "/weather")
        self.assertEqual(json.loads(req["body"]), {"x": 1})
        self.assertEqual(req["headers"]["X-Team"], "blue")
        self.assertEqual(req["headers"]["Authorization"], "Bearer t0k")
        self.assertEqual(req["headers"]["Content-Type"], "application/json")
        out = job["result"]["output"]
        self.assertTrue(out.startswith("tool results: HTTP 200"), out)
        self.assertIn('{"temp": 21}', out)

        # Deleted: a crew naming it can no longer be created, and a call answers unknown tool.
        self.assertEqual(srv.request("DELETE", "/api/v1/tools/mytool")[0], 200)
        self.assertJsonError(srv.request("PUT", "/api/v1/crew", {"name": unique_name(),
                                         "agents": [fake_agent("w", self.fake,
                                                               tools=["mytool"])]}),
                             400, "unknown tool 'mytool'")

    def test_refused_without_allowlist(self):
        srv = self.start_crewd()
        url = "http://127.0.0.1:%d/weather" % self.http.port
        self.assertEqual(srv.request("PUT", "/api/v1/tools", tool("mytool", url=url))[0], 201)
        job = self.run_with_tool(srv, "mytool")
        call = job["result"]["agents"][0]["tool_calls"][0]
        self.assertIsNone(call["result"])
        self.assertIn("allowlist", call["error"])
        self.assertEqual(self.http.requests, [])


if __name__ == "__main__":
    unittest.main()
