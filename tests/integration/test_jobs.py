"""Jobs end to end: execute (202), the job status routes, and the four modes against the fake
LLM server, asserting the exact prompts the fake received (API.md section 3) and the
CrewResult's shape. Each class runs one crewd and one crewd-fakellm."""
import json
import os
import unittest

from crewd_harness import (Crewd, CrewdTestCase, PG_MODE, agent, check_clean_exit,
                           unique_name, wait_until)
from fakellm_harness import FakeLLM


def fake_agent(agent_id, fake, reply=None, extra_prompt="", config=None, **kw):
    """An agent on the fake (OpenAI-compatible base_url); `reply` pins its answer."""
    cfg = {"llm": "openai", "model": "fake-model", "base_url": fake.base_url}
    cfg.update(config or {})
    prompt = "You are %s.%s" % (agent_id, extra_prompt)
    if reply is not None:
        prompt += " [[fake:reply=%s]]" % reply
    return agent(agent_id, config=cfg, system_prompt=prompt, **kw)


def user_message(req):
    msgs = req["body"]["messages"]
    users = [m for m in msgs if m["role"] == "user"]
    assert len(users) == 1, msgs
    return users[0]["content"]


def system_message(req):
    msgs = [m for m in req["body"]["messages"] if m["role"] == "system"]
    return msgs[0]["content"] if msgs else None


class FakeCase(CrewdTestCase):
    """One fake LLM per class, started before crewd."""
    FAKE_ARGS = []

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeLLM(cls.FAKE_ARGS)
        cls.addClassCleanup(cls.fake.stop)
        super().setUpClass()

    def requests_for(self, job_marker):
        """The fake's log entries whose messages contain `job_marker`."""
        return [r for r in self.fake.requests()
                if isinstance(r.get("body"), dict) and job_marker in json.dumps(r["body"])]

    def run_job(self, definition, query, **body):
        self.srv.create(definition)
        b = {"crew_id": definition["name"], "query": query}
        b.update(body)
        acc = self.srv.execute(b)
        return acc, self.srv.wait_job(acc["job_id"])


class TestExecuteAndStatus(FakeCase):
    def test_accepted_body_and_status_fields(self):
        name = unique_name()
        d = {"name": name, "agents": [fake_agent("a", self.fake, reply="done")]}
        created = self.srv.create(d)
        st, hdrs, acc, raw = self.srv.request("POST", "/api/v1/crew/execute",
                                              body={"name": name, "query": "hi"})
        self.assertEqual(st, 202, raw)
        for k in ("job_id", "crew_id", "status", "message", "created_at", "execution_mode"):
            self.assertIn(k, acc)
        self.assertEqual(acc["status"], "pending")
        self.assertEqual(acc["message"], "Crew execution started")
        self.assertEqual(acc["crew_id"], created["crew_id"])
        self.assertEqual(acc["execution_mode"], "sequential")
        self.assertRegex(acc["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        job = self.srv.wait_job(acc["job_id"])
        self.assertEqual(job["status"], "completed", job)
        for k in ("job_id", "crew_id", "status", "elapsed_time", "created_at", "execution_mode",
                  "metadata", "started_at", "completed_at", "result"):
            self.assertIn(k, job)
        self.assertIsInstance(job["elapsed_time"], float)
        self.assertGreaterEqual(job["elapsed_time"], 0.0)
        self.assertLessEqual(job["created_at"], job["started_at"])
        self.assertLessEqual(job["started_at"], job["completed_at"])
        self.assertEqual(job["result"]["output"], "done")

    def test_every_status_route(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("a", self.fake, reply="ok")]})
        job_id = self.srv.execute({"crew_id": name, "query": "q"}, path="/api/v1/crew")["job_id"]
        self.srv.wait_job(job_id)
        forms = [
            ("PATCH", "/api/v1/crew/job?job_id=" + job_id, None, None),
            ("PATCH", "/api/v1/crew/job/" + job_id, None, None),
            ("PATCH", "/api/v1/crew?job_id=" + job_id, None, None),
            ("PATCH", "/api/v1/crew/job", {"job_id": job_id}, None),
            ("PATCH", "/api/v1/crew", {"job_id": job_id}, None),
            ("GET", "/api/v1/crew/job/" + job_id, None, None),
            ("GET", "/api/v1/crew/job/" + job_id.upper(), None, None),
        ]
        for method, path, body, _ in forms:
            st, _, js, raw = self.srv.request(method, path, body=body)
            self.assertEqual(st, 200, (method, path, raw))
            self.assertEqual(js["job_id"], job_id)
            self.assertEqual(js["status"], "completed")
            self.assertEqual(js["result"]["output"], "ok")
        # PATCH with a query string and neither body nor Content-Type (the seed's clients).
        st, _, js, raw = self.srv.raw_request("PATCH", "/api/v1/crew/job?job_id=" + job_id)
        self.assertEqual(st, 200, raw)

    def test_status_errors(self):
        self.assertJsonError(self.srv.request("PATCH", "/api/v1/crew/job"), 400, "job_id")
        self.assertJsonError(self.srv.request("PATCH", "/api/v1/crew/job", body={}), 400,
                             "job_id is required")
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/job/nope"), 404, "not found")
        self.assertJsonError(
            self.srv.request("GET", "/api/v1/crew/job/2b1c8a3e-58a4-4c2e-9b8f-3f0c2e1d4a5b"),
            404, "not found")
        self.assertJsonError(self.srv.request("PATCH", "/api/v1/crew/job", raw_body=b"{",
                                              headers={"Content-Type": "application/json"}), 400)

    def test_execute_checks_in_order(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("a", self.fake, extra_prompt=name),
                                                  fake_agent("b", self.fake)]})
        ex = lambda body: self.srv.request("POST", "/api/v1/crew/execute", body=body)
        self.assertJsonError(ex({}), 400, "crew_id or name is required")
        self.assertJsonError(ex({"query": "q"}), 400, "crew_id or name is required")
        self.assertJsonError(ex({"crew_id": name}), 400, "query is required")
        self.assertJsonError(ex({"crew_id": name, "query": ""}), 400, "query is required")
        self.assertJsonError(ex({"crew_id": "no-such-crew", "query": "q"}), 404, "not found")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "zigzag"}),
                             400, "Invalid execution mode: zigzag")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop"}),
                             400, "condition")
        self.assertJsonError(ex({"crew_id": name, "query": {"a": "x", "ghost": "y"}}), 400,
                             ["ghost", "agents: a, b"])
        self.assertJsonError(ex({"crew_id": name, "query": "q", "kwargs": []}), 400, "kwargs")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "kwargs": {"max_tokens": "x"}}),
                             400, "kwargs.max_tokens")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "querry": 1}), 400, "querry")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop",
                                 "kwargs": {"condition": "c", "agent_sequence": ["zz"]}}), 400,
                             "zz")
        self.assertJsonError(self.srv.request("POST", "/api/v1/crew/execute"), 400, "body")
        # The contract's checks come before types, ranges and unknown fields.
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "bogus",
                                 "extra": 1}), 400, "Invalid execution mode: bogus")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop",
                                 "extra": 1}), 400, "kwargs.condition")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop",
                                 "kwargs": "x"}), 400, "kwargs.condition")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop",
                                 "kwargs": {"condition": "c", "max_tokens": 0,
                                            "agent_sequence": ["zz"]}}), 400, "'zz'")
        self.assertJsonError(ex({"crew_id": name, "query": "q", "execution_mode": "loop",
                                 "kwargs": {"condition": "c", "condition_llm": "skynet"}}), 400,
                             ["kwargs.condition_llm", "skynet"])
        # A refused execute stores nothing: no job ran on the fake.
        self.assertEqual(self.requests_for(name), [])

    def test_execute_on_crew_path_and_by_id(self):
        name = unique_name()
        created = self.srv.create({"name": name, "agents": [fake_agent("a", self.fake,
                                                                      reply="P")]})
        acc = self.srv.execute({"query": "q"}, path="/api/v1/crew/" + name)
        self.assertEqual(self.srv.wait_job(acc["job_id"])["result"]["output"], "P")
        acc = self.srv.execute({"crew_id": created["crew_id"].upper(), "query": "q"})
        self.assertEqual(acc["crew_id"], created["crew_id"])
        self.assertEqual(self.srv.wait_job(acc["job_id"])["status"], "completed")

    def test_empty_system_prompt_runs(self):
        # Regression: a crew with system_prompt "" was accepted but every execute was a 500
        # (its stored plan did not read back).
        name = unique_name()
        a = agent("a", config={"llm": "openai", "model": "fake-model",
                               "base_url": self.fake.base_url}, system_prompt="")
        self.srv.create({"name": name, "agents": [a]})
        job = self.srv.wait_job(self.srv.execute({"crew_id": name, "query": "empty " + name})
                                ["job_id"])
        self.assertEqual(job["status"], "completed", job)
        req = self.requests_for("empty " + name)[0]
        self.assertEqual([m["role"] for m in req["body"]["messages"]], ["user"])

    def test_deleted_crew_does_not_break_its_jobs(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, extra_prompt=" [[fake:delay_ms=300]]"),
            fake_agent("b", self.fake, reply="after delete")]})
        acc = self.srv.execute({"crew_id": name, "query": "q"})
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        job = self.srv.wait_job(acc["job_id"])
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["result"]["output"], "after delete")


class TestSequential(FakeCase):
    def test_prompts_and_result(self):
        name = unique_name()
        long_reply = "L" * 250
        d = {"name": name, "agents": [
            fake_agent("researcher", self.fake, reply=long_reply, name="r"),
            fake_agent("writer", self.fake, reply="draft text"),
            fake_agent("editor", self.fake, reply="final text")]}
        acc, job = self.run_job(d, "Explain " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        reqs = self.requests_for("Explain " + name)
        self.assertEqual(len(reqs), 3, reqs)
        q = "Explain " + name
        self.assertEqual(user_message(reqs[0]), q)
        self.assertEqual(system_message(reqs[0]),
                         "You are researcher. [[fake:reply=%s]]" % long_reply)
        self.assertEqual(user_message(reqs[1]),
                         "Original query: %s\nPrevious processing:\n- r: %s...\n\n"
                         "Current task: %s" % (q, "L" * 200, long_reply))
        self.assertEqual(user_message(reqs[2]),
                         "Original query: %s\nPrevious processing:\n- r: %s...\n"
                         "- writer: draft text...\n\nCurrent task: draft text" % (q, "L" * 200))
        body = reqs[0]["body"]
        self.assertEqual(body["model"], "fake-model")
        self.assertEqual(body["max_tokens"], 4096)
        self.assertAlmostEqual(body["temperature"], 0.1)

        self.assertEqual(res["output"], "final text")
        self.assertIsNone(res["summary"])
        self.assertEqual(res["status"], "completed")
        self.assertEqual(res["results"], [long_reply, "draft text", "final text"])
        self.assertEqual(res["agent_ids"], ["r", "writer", "editor"])
        self.assertEqual(res["response"]["writer"]["output"], "draft text")
        self.assertEqual(res["response"]["r"]["input"], q)
        self.assertEqual(res["errors"], {})
        self.assertEqual(res["metadata"]["mode"], "sequential")
        self.assertGreaterEqual(res["total_time"], 0)
        self.assertEqual([a["agent_name"] for a in res["agents"]], ["r", "writer", "editor"])
        self.assertEqual(res["agents"][0]["agent_id"], "researcher")
        for a in res["agents"]:
            self.assertEqual(a["status"], "completed")
            self.assertEqual(a["llm_provider"], "openai")
            self.assertEqual(a["model"], "fake-model")
            self.assertIsNone(a["error"])
            self.assertEqual(a["tool_calls"], [])
            self.assertGreater(a["usage"]["total_tokens"], 0)
            self.assertGreaterEqual(a["execution_time"], 0)
        log = res["execution_log"]
        self.assertEqual([e["agent_index"] for e in log], [0, 1, 2])
        self.assertEqual(log[1]["input"], user_message(reqs[1]))
        self.assertEqual(log[2]["full_output"], "final text")
        self.assertTrue(all(e["success"] for e in log))
        total = sum(a["usage"]["total_tokens"] for a in res["agents"])
        self.assertEqual(res["usage"]["total_tokens"], total)
        self.assertEqual(res["usage"]["llm_calls"], 3)
        self.assertEqual(res["usage"]["prompt_tokens"] + res["usage"]["completion_tokens"],
                         total)

    def test_failed_agent_passes_its_error_on(self):
        name = unique_name()
        d = {"name": name, "agents": [
            fake_agent("a", self.fake, reply="A out"),
            fake_agent("b", self.fake, extra_prompt=" [[fake:status=400]]"),
            fake_agent("c", self.fake, reply="C out")]}
        _, job = self.run_job(d, "Q " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        self.assertEqual(res["status"], "partial")
        self.assertIn("b", res["errors"])
        self.assertIn("HTTP 400", res["errors"]["b"])
        self.assertIn("fake error 400", res["errors"]["b"])
        reqs = self.requests_for("Q " + name)
        self.assertEqual(len(reqs), 3)  # a 400 is not retried
        err = res["errors"]["b"]
        self.assertEqual(user_message(reqs[2]),
                         "Original query: Q %s\nPrevious processing:\n- a: A out...\n- b: %s...\n"
                         "\nCurrent task: %s" % (name, err[:200], err))
        self.assertEqual([a["status"] for a in res["agents"]],
                         ["completed", "failed", "completed"])
        self.assertEqual(res["output"], "C out")

    def test_all_failed_fails_the_job(self):
        name = unique_name()
        d = {"name": name, "agents": [fake_agent("a", self.fake,
                                                 extra_prompt=" [[fake:status=401]]")]}
        _, job = self.run_job(d, "q")
        self.assertEqual(job["status"], "failed", job)
        self.assertEqual(job["result"]["status"], "failed")
        self.assertIn("HTTP 401", job["error"])

    def test_kwargs_reach_the_llm(self):
        name = unique_name()
        d = {"name": name, "agents": [
            fake_agent("a", self.fake, reply="x", config={"temperature": 0.7, "max_tokens": 99}),
            fake_agent("b", self.fake, reply="y")]}
        _, job = self.run_job(d, "kw " + name)
        reqs = self.requests_for("kw " + name)
        self.assertAlmostEqual(reqs[0]["body"]["temperature"], 0.7)
        self.assertEqual(reqs[0]["body"]["max_tokens"], 99)
        _, job = self.run_job(dict(d, name=name + "-2"), "kw2 " + name,
                              kwargs={"temperature": 0.3, "max_tokens": 50})
        reqs = self.requests_for("kw2 " + name)
        self.assertAlmostEqual(reqs[0]["body"]["temperature"], 0.3)
        self.assertEqual(reqs[1]["body"]["max_tokens"], 50)


class TestParallel(FakeCase):
    def test_per_agent_queries_and_joined_output(self):
        name = unique_name()
        d = {"name": name, "execution_mode": "parallel", "agents": [
            fake_agent("a", self.fake, reply="from a"),
            fake_agent("b", self.fake, reply="from b", name="bee"),
            fake_agent("c", self.fake, reply="from c")]}
        _, job = self.run_job(d, {"a": "task A " + name, "b": "task B " + name,
                                  "c": "task C " + name})
        res = job["result"]
        self.assertEqual(res["status"], "completed")
        self.assertEqual(res["output"], "from a\n\nfrom b\n\nfrom c")
        got = sorted(user_message(r) for r in self.requests_for(name))
        self.assertEqual(got, ["task A " + name, "task B " + name, "task C " + name])
        self.assertEqual(res["agent_ids"], ["a", "bee", "c"])

    def test_all_results_and_string_query(self):
        name = unique_name()
        d = {"name": name, "execution_mode": "parallel", "agents": [
            fake_agent("a", self.fake, reply="1"), fake_agent("b", self.fake, reply="2")]}
        _, job = self.run_job(d, "same " + name, kwargs={"all_results": True})
        self.assertEqual(json.loads(job["result"]["output"]), ["1", "2"])
        self.assertEqual([user_message(r) for r in self.requests_for("same " + name)],
                         ["same " + name] * 2)

    def test_synthesis(self):
        name = unique_name()
        d = {"name": name, "execution_mode": "parallel", "agents": [
            fake_agent("a", self.fake, reply="A"), fake_agent("b", self.fake, reply="B")]}
        _, job = self.run_job(d, "syn " + name,
                              synthesis_prompt="Merge. [[fake:reply=merged!]]")
        res = job["result"]
        self.assertEqual(res["output"], "merged!")
        self.assertEqual(res["summary"], "merged!")
        self.assertEqual(res["metadata"]["original_output"], "A\n\nB")
        reqs = self.requests_for("syn " + name)
        self.assertEqual(len(reqs), 3)
        synth = [r for r in reqs if "Merge." in user_message(r)]
        self.assertEqual(len(synth), 1)
        self.assertEqual(user_message(synth[0]),
                         "Merge. [[fake:reply=merged!]]\n\nOriginal query: syn %s\n\n"
                         "Agent outputs:\n\n--- a ---\nA\n\n--- b ---\nB" % name)
        self.assertEqual(res["usage"]["llm_calls"], 3)


class TestParallelCap(CrewdTestCase):
    SHARED_SERVER = False

    def test_max_parallel_tasks_bounds_calls_in_flight(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd()
        name = unique_name()
        agents = [fake_agent("a%d" % i, fake, reply="r%d" % i,
                             extra_prompt=" [[fake:delay_ms=150]]") for i in range(6)]
        srv.create({"name": name, "execution_mode": "parallel", "max_parallel_tasks": 2,
                    "agents": agents})
        job = srv.wait_job(srv.execute({"crew_id": name, "query": "q"})["job_id"])
        self.assertEqual(job["result"]["status"], "completed", job)
        stats = fake.stats()
        self.assertEqual(stats["max_in_flight"], 2, stats)
        self.assertEqual(stats["requests"], 6)


class TestFlow(FakeCase):
    def test_dag_prompts(self):
        name = unique_name()
        d = {"name": name, "execution_mode": "flow", "agents": [
            fake_agent("a", self.fake, reply="alpha"),
            fake_agent("b", self.fake, reply="beta"),
            fake_agent("c", self.fake, reply="gamma"),
            fake_agent("d", self.fake, reply="delta")],
            "flow_relations": [{"source": "a", "target": ["b", "c"]},
                               {"source": ["b", "c"], "target": "d"}]}
        _, job = self.run_job(d, "flow " + name)
        res = job["result"]
        self.assertEqual(res["status"], "completed", res)
        reqs = {system_message(r).split(".")[0]: r for r in self.requests_for("flow " + name)}
        self.assertEqual(user_message(reqs["You are a"]), "flow " + name)
        self.assertEqual(user_message(reqs["You are b"]),
                         "Task: flow %s\n\nContext from previous agents:\n--- From a ---\nalpha"
                         % name)
        self.assertEqual(user_message(reqs["You are d"]),
                         "Task: flow %s\n\nContext from previous agents:\n--- From b ---\nbeta"
                         "\n\n--- From c ---\ngamma" % name)
        self.assertEqual(res["output"], "delta")

    def test_not_in_waves(self):
        # b is slow; c depends only on a, so it must start while b is still running.
        name = unique_name()
        d = {"name": name, "execution_mode": "flow", "agents": [
            fake_agent("a", self.fake, reply="A"),
            fake_agent("b", self.fake, reply="B", extra_prompt=" [[fake:delay_ms=3000]]"),
            fake_agent("c", self.fake, reply="C"),
            fake_agent("d", self.fake, reply="D")],
            "flow_relations": [{"source": "a", "target": "c"},
                               {"source": ["b", "c"], "target": "d"}]}
        self.srv.create(d)
        job_id = self.srv.execute({"crew_id": name, "query": "waves " + name})["job_id"]

        def c_started():
            return any(system_message(r).startswith("You are c.")
                       for r in self.requests_for("waves " + name))
        wait_until(c_started, 30, "agent c to start")
        b = [r for r in self.requests_for("waves " + name)
             if system_message(r).startswith("You are b.")]
        self.assertEqual(len(b), 1)
        self.assertEqual(b[0]["status"], 0, "b had already been answered: waves?")
        job = self.srv.wait_job(job_id)
        self.assertEqual(job["result"]["output"], "D")

    def test_failure_skips_descendants(self):
        name = unique_name()
        d = {"name": name, "execution_mode": "flow", "agents": [
            fake_agent("a", self.fake, reply="A"),
            fake_agent("b", self.fake, extra_prompt=" [[fake:status=400]]"),
            fake_agent("c", self.fake, reply="C"),
            fake_agent("d", self.fake, reply="D"),
            fake_agent("e", self.fake, reply="E")],
            "flow_relations": [{"source": "a", "target": ["b", "c"]},
                               {"source": "b", "target": "d"},
                               {"source": "d", "target": "e"}]}
        _, job = self.run_job(d, "skip " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        self.assertEqual(res["status"], "partial")
        by = {a["agent_name"]: a for a in res["agents"]}
        self.assertEqual(by["b"]["status"], "failed")
        self.assertEqual(by["d"]["status"], "skipped")
        self.assertEqual(by["e"]["status"], "skipped")
        self.assertEqual(by["c"]["status"], "completed")
        self.assertEqual(res["output"], "C")  # the final agent that completed
        called = sorted(system_message(r)[8] for r in self.requests_for("skip " + name))
        self.assertEqual(called, ["a", "b", "c"])


class TestLoop(FakeCase):
    def test_stops_on_yes(self):
        name = unique_name()
        d = {"name": name, "agents": [fake_agent("w", self.fake, reply="W"),
                                      fake_agent("r", self.fake, reply="R")]}
        cond = "short enough %s [[fake:reply_seq=NO|YES]]" % name
        _, job = self.run_job(d, "loop " + name, execution_mode="loop",
                              kwargs={"condition": cond, "max_iterations": 5})
        res = job["result"]
        self.assertEqual(res["status"], "completed", res)
        self.assertEqual(res["metadata"]["iterations"], 2)
        self.assertEqual(res["metadata"]["stop_reason"], "condition_met")
        self.assertEqual(res["metadata"]["condition_answers"], ["NO", "YES"])
        reqs = self.requests_for(name)
        # pass 1: w, r; judge; pass 2: w, r; judge
        self.assertEqual(len(reqs), 6, [user_message(r)[:60] for r in reqs])
        self.assertEqual(user_message(reqs[0]), "loop " + name)
        self.assertEqual(user_message(reqs[1]),
                         "Original query: loop %s\nPrevious processing:\n- w: W...\n\n"
                         "Current task: W" % name)
        self.assertEqual(user_message(reqs[2]),
                         "Condition: %s\n\nCurrent output:\nR\n\nDoes the current output "
                         "satisfy the condition? Answer YES or NO." % cond)
        self.assertEqual(system_message(reqs[2]),
                         "You check whether a condition holds. Answer with one word: YES or NO.")
        self.assertEqual(user_message(reqs[3]),
                         "Original query: loop %s\nOutput of iteration 1:\nR\n\n"
                         "Current task: improve on that output." % name)
        self.assertEqual(res["output"], "R")
        self.assertEqual(len(res["execution_log"]), 4)
        self.assertEqual([e.get("iteration") for e in res["execution_log"]], [1, 1, 2, 2])
        self.assertEqual(res["usage"]["llm_calls"], 6)

    def test_max_iterations_and_sequence(self):
        name = unique_name()
        d = {"name": name, "agents": [fake_agent("w", self.fake, reply="W"),
                                      fake_agent("r", self.fake, reply="R"),
                                      fake_agent("x", self.fake, reply="X")]}
        cond = "never %s [[fake:reply=NO]]" % name
        _, job = self.run_job(d, "seq " + name, execution_mode="loop",
                              kwargs={"condition": cond, "max_iterations": 3,
                                      "agent_sequence": ["x", "w"]})
        res = job["result"]
        self.assertEqual(res["metadata"]["iterations"], 3)
        self.assertEqual(res["metadata"]["stop_reason"], "max_iterations")
        reqs = self.requests_for(name)
        # 3 passes of 2 agents, and a check after passes 1 and 2 only.
        self.assertEqual(len(reqs), 8)
        self.assertEqual([a["agent_name"] for a in res["agents"]], ["w", "x"])
        self.assertEqual(res["output"], "W")


class TestKeysAndProviders(FakeCase):
    CREWD_ENV = {"OPENAI_API_KEY": "sk-test-env-key"}

    def test_env_key_sent_as_bearer(self):
        name = unique_name()
        _, job = self.run_job({"name": name, "agents": [fake_agent("a", self.fake, reply="k")]},
                              "key " + name)
        self.assertEqual(job["status"], "completed")
        req = self.requests_for("key " + name)[0]
        self.assertEqual(req["headers"].get("authorization"), "Bearer sk-test-env-key")
        self.assertNotIn("sk-test-env-key", self.srv.stderr_text())

    def test_inline_key_wins_and_is_never_returned(self):
        name = unique_name()
        a = fake_agent("a", self.fake, reply="k", config={"api_key": "sk-inline-secret"})
        _, job = self.run_job({"name": name, "agents": [a]}, "inline " + name)
        req = self.requests_for("inline " + name)[0]
        self.assertEqual(req["headers"].get("authorization"), "Bearer sk-inline-secret")
        self.assertNotIn("sk-inline-secret", json.dumps(job))
        self.assertNotIn("sk-inline-secret", self.srv.stderr_text())

    def test_missing_key_names_the_variable(self):
        srv = self.start_crewd()  # no OPENAI_API_KEY in its environment
        name = unique_name()
        srv.create({"name": name, "agents": [agent("a", config={"model": "gpt-4o-mini"})]})
        job = srv.wait_job(srv.execute({"crew_id": name, "query": "q"})["job_id"])
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("OPENAI_API_KEY", job["error"])
        self.assertIn("OPENAI_API_KEY", job["result"]["errors"]["a"])


class TestJobTimeout(FakeCase):
    def test_timeout_fails_the_job_and_aborts_its_calls(self):
        name = unique_name()
        d = {"name": name, "agents": [
            fake_agent("a", self.fake, reply="quick"),
            fake_agent("b", self.fake, reply="never", extra_prompt=" [[fake:delay_ms=30000]]")]}
        _, job = self.run_job(d, "timeout " + name, timeout=1)
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("job timed out after 1 s", job["error"])
        res = job["result"]
        self.assertEqual(res["results"], ["quick"])  # what finished is kept
        by = {a["agent_name"]: a for a in res["agents"]}
        self.assertEqual(by["a"]["status"], "completed")
        self.assertEqual(by["b"]["status"], "failed")
        self.assertIn("timed out", by["b"]["error"])
        self.assertTrue(res["metadata"]["timed_out"])
        # The fake saw b's call abandoned (crewd closed the connection).
        wait_until(lambda: [r for r in self.requests_for("timeout " + name)
                            if r.get("client_closed")], 30, "the fake to see b's call dropped")

    def test_timeout_is_validated(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("a", self.fake)]})
        for bad in (0, -1, "5", 10 ** 9):
            self.assertJsonError(self.srv.request("POST", "/api/v1/crew/execute", body={
                "crew_id": name, "query": "q", "timeout": bad}), 400, "timeout")


class TestProviderLimits(CrewdTestCase):
    SHARED_SERVER = False

    def test_concurrency_limit_is_shared_by_jobs(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd(args=["--llm-limit", "openai=2"])
        name = unique_name()
        srv.create({"name": name, "execution_mode": "parallel", "agents": [
            fake_agent("a%d" % i, fake, reply="r", extra_prompt=" [[fake:delay_ms=100]]")
            for i in range(4)]})
        ids = [srv.execute({"crew_id": name, "query": "lim %d" % i})["job_id"] for i in range(3)]
        for j in ids:
            self.assertEqual(srv.wait_job(j)["result"]["status"], "completed")
        stats = fake.stats()
        self.assertEqual(stats["requests"], 12)
        self.assertEqual(stats["max_in_flight"], 2, stats)

    def test_requests_per_minute(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        # 60 a minute: one a second, and a bucket of one second's worth (one request), so
        # however long crewd took to start, 4 requests span at least 3 s.
        srv = self.start_crewd(args=["--llm-limit", "openai=0/60"])
        name = unique_name()
        srv.create({"name": name, "execution_mode": "parallel", "agents": [
            fake_agent("a%d" % i, fake, reply="r") for i in range(4)]})
        job = srv.wait_job(srv.execute({"crew_id": name, "query": "rpm"})["job_id"])
        self.assertEqual(job["result"]["status"], "completed", job)
        times = sorted(r["received_at_ms"] for r in fake.requests())
        self.assertEqual(len(times), 4)
        # Not faster than the rate (a loaded machine can only make it slower).
        self.assertGreaterEqual(times[-1] - times[0], 2900, times)

    def test_limited_provider_does_not_hold_up_another_on_the_same_host(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd(args=["--llm-limit", "anthropic=1"],
                               env={"ANTHROPIC_API_KEY": "k"})
        name = unique_name()

        def ag(aid, prov, extra=""):
            return fake_agent(aid, fake, reply="r", extra_prompt=extra,
                              config={"llm": prov, "model": "m", "base_url": fake.base_url})
        srv.create({"name": name, "execution_mode": "parallel", "agents": [
            ag("a1", "anthropic", " [[fake:delay_ms=3000]]"), ag("a2", "anthropic"),
            ag("o", "openai")]})
        job_id = srv.execute({"crew_id": name, "query": "hol " + name})["job_id"]

        def seen(who):
            return [r for r in fake.requests() if "You are %s." % who in json.dumps(r["body"])]
        wait_until(lambda: seen("o"), 30, "the openai agent's call")
        # openai has no limit: its call went out while anthropic's first was still held
        # (answered after 3 s) and its second was waiting for the limit.
        self.assertEqual(seen("a1")[0]["status"], 0, "a1 was answered first: head-of-line")
        self.assertEqual(seen("a2"), [])
        self.assertEqual(srv.wait_job(job_id)["result"]["status"], "completed")

    def test_bad_limits_exit_2(self):
        from crewd_harness import run_crewd
        for bad in ("openai", "skynet=2", "openai=x", "openai=0/0", "openai=-1",
                    "claude=1 --llm-limit anthropic=2"):
            rc, _, err = run_crewd(["--listen", "127.0.0.1:0", "--llm-limit"] + bad.split(" ") + [
                                   "--store", "sqlite:/nonexistent/never-opened.db"])
            self.assertEqual(rc, 2, (bad, err))
            self.assertIn("--llm-limit", err)


class TestToolCalls(FakeCase):
    def tool_agent(self, directive, **cfg):
        return fake_agent("calc", self.fake, extra_prompt=" " + directive, config=cfg,
                          tools=["calculator"])

    def test_tool_loop(self):
        name = unique_name()
        d = {"name": name, "agents": [self.tool_agent(
            '[[fake:tool=calculator:{"expression":"2+3*4"}]] '
            '[[fake:tool=calculator:{"expression":"(1+1)^3"}]]')]}
        _, job = self.run_job(d, "tools " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        self.assertEqual(res["output"], "tool results: 14 | 8")
        calls = res["agents"][0]["tool_calls"]
        self.assertEqual([c["name"] for c in calls], ["calculator", "calculator"])
        self.assertEqual([c["result"] for c in calls], ["14", "8"])
        self.assertTrue(all(c["error"] is None and c["id"] for c in calls))
        self.assertEqual(json.loads(calls[0]["arguments"]), {"expression": "2+3*4"})
        reqs = self.requests_for("tools " + name)
        self.assertEqual(len(reqs), 2)
        first = reqs[0]["body"]
        self.assertEqual([t["function"]["name"] for t in first["tools"]], ["calculator"])
        self.assertEqual(first["tools"][0]["type"], "function")
        self.assertIn("properties", first["tools"][0]["function"]["parameters"])
        msgs = reqs[1]["body"]["messages"]
        self.assertEqual([m["role"] for m in msgs], ["system", "user", "assistant", "tool", "tool"])
        self.assertEqual([m["content"] for m in msgs[3:]], ["14", "8"])
        self.assertEqual(msgs[3]["tool_call_id"], msgs[2]["tool_calls"][0]["id"])
        self.assertEqual(res["usage"]["llm_calls"], 2)

    def test_failing_tool_goes_back_to_the_model(self):
        name = unique_name()
        d = {"name": name, "agents": [self.tool_agent(
            '[[fake:tool=calculator:{"expression":"1/0"}]]')]}
        _, job = self.run_job(d, "toolerr " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        call = res["agents"][0]["tool_calls"][0]
        self.assertIsNone(call["result"])
        self.assertIn("division by zero", call["error"])
        self.assertTrue(res["output"].startswith("tool results: Error: "), res["output"])
        self.assertEqual(res["status"], "completed")

    def test_no_rounds_left_offers_no_tools(self):
        name = unique_name()
        d = {"name": name, "agents": [self.tool_agent(
            '[[fake:tool=calculator:{"expression":"1+1"}]]', max_tool_iterations=0)]}
        _, job = self.run_job(d, "norounds " + name)
        reqs = self.requests_for("norounds " + name)
        self.assertEqual(len(reqs), 1)
        self.assertNotIn("tools", reqs[0]["body"])
        self.assertEqual(job["result"]["agents"][0]["tool_calls"], [])

    def test_a_tool_not_offered_does_not_run(self):
        name = unique_name()
        d = {"name": name, "agents": [self.tool_agent(
            '[[fake:tool=json_query:{"json":"{\\"a\\":1}","path":"a"}]]')]}
        _, job = self.run_job(d, "notoffered " + name)
        call = job["result"]["agents"][0]["tool_calls"][0]
        self.assertEqual(call["name"], "json_query")
        self.assertIsNone(call["result"])
        self.assertIn("not available to this agent", call["error"])

    def test_shared_tools_reach_every_agent(self):
        name = unique_name()
        d = {"name": name, "shared_tools": ["calculator"], "agents": [
            fake_agent("a", self.fake, reply="A"), fake_agent("b", self.fake, reply="B")]}
        self.run_job(d, "shared " + name)
        for r in self.requests_for("shared " + name):
            self.assertEqual([t["function"]["name"] for t in r["body"]["tools"]], ["calculator"])


class TestHttpTool(CrewdTestCase):
    SHARED_SERVER = False

    def run_http_tool(self, args):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd(args=args)
        name = unique_name()
        url = "http://127.0.0.1:%d/_fake/health" % fake.port
        srv.create({"name": name, "agents": [fake_agent(
            "web", fake, tools=["http_request"],
            extra_prompt=' [[fake:tool=http_request:{"url":"%s"}]]' % url)]})
        job = srv.wait_job(srv.execute({"crew_id": name, "query": "fetch"})["job_id"])
        self.assertEqual(job["status"], "completed", job)
        return job["result"]["agents"][0]["tool_calls"][0]

    def test_allowed_host(self):
        call = self.run_http_tool(["--tool-http-allow", "127.0.0.1",
                                   "--tool-http-allow-private", "1"])
        self.assertIsNone(call["error"], call)
        self.assertTrue(call["result"].startswith("HTTP 200"), call)
        self.assertIn('"ok":true', call["result"].replace(" ", ""))

    def test_private_address_refused_by_default(self):
        call = self.run_http_tool(["--tool-http-allow", "127.0.0.1"])
        self.assertIsNone(call["result"])
        self.assertIn("http_request", call["error"])

    def test_host_not_allowed(self):
        call = self.run_http_tool([])
        self.assertIsNone(call["result"])
        self.assertIn("allowlist", call["error"])


def wire_texts(req):
    """(system text, last user text) of a request on any of the three wires."""
    body, path = req["body"], req["path"]

    def text_of(content):
        if isinstance(content, str):
            return content
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    if path.endswith("/messages"):
        system = body.get("system")
        users = [m for m in body["messages"] if m["role"] == "user"]
        return (text_of(system) if system is not None else None), text_of(users[-1]["content"])
    if ":generateContent" in path:
        si = body.get("systemInstruction")
        system = "".join(p.get("text", "") for p in si["parts"]) if si else None
        users = [c for c in body["contents"] if c.get("role", "user") == "user"]
        return system, "".join(p.get("text", "") for p in users[-1]["parts"])
    return system_message(req), user_message(req)


class TestProviders(FakeCase):
    CREWD_ENV = {"ANTHROPIC_API_KEY": "sk-ant-test", "GOOGLE_API_KEY": "g-test"}

    def agent_on(self, provider, agent_id, reply=None, extra="", **kw):
        base = {"openai": self.fake.base_url,
                "anthropic": self.fake.base_url,
                "google": self.fake.base_url.replace("/v1", "/v1beta")}[provider]
        return fake_agent(agent_id, self.fake, reply=reply, extra_prompt=extra,
                          config={"llm": provider, "model": "m-" + provider, "base_url": base},
                          **kw)

    def test_three_wires_in_one_crew(self):
        name = unique_name()
        d = {"name": name, "agents": [self.agent_on("openai", "o", reply="from openai"),
                                      self.agent_on("anthropic", "a", reply="from claude"),
                                      self.agent_on("google", "g", reply="from gemini")]}
        _, job = self.run_job(d, "wires " + name)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        self.assertEqual(res["results"], ["from openai", "from claude", "from gemini"])
        self.assertEqual([a["llm_provider"] for a in res["agents"]],
                         ["openai", "anthropic", "google"])
        reqs = self.requests_for("wires " + name)
        self.assertEqual(len(reqs), 3)
        paths = [r["path"] for r in reqs]
        self.assertEqual(paths[0], "/v1/chat/completions")
        self.assertEqual(paths[1], "/v1/messages")
        self.assertEqual(paths[2], "/v1beta/models/m-google:generateContent")
        sys_a, user_a = wire_texts(reqs[1])
        self.assertEqual(sys_a, "You are a. [[fake:reply=from claude]]")
        self.assertEqual(user_a, "Original query: wires %s\nPrevious processing:\n"
                                 "- o: from openai...\n\nCurrent task: from openai" % name)
        sys_g, user_g = wire_texts(reqs[2])
        self.assertEqual(sys_g, "You are g. [[fake:reply=from gemini]]")
        self.assertIn("- a: from claude...", user_g)
        self.assertEqual(reqs[1]["headers"].get("x-api-key"), "sk-ant-test")
        self.assertIn("anthropic-version", reqs[1]["headers"])
        self.assertEqual(reqs[2]["headers"].get("x-goog-api-key"), "g-test")
        self.assertNotIn("key=", paths[2])
        for a in res["agents"]:
            self.assertGreater(a["usage"]["total_tokens"], 0, a)

    def test_tool_calls_on_each_wire(self):
        for provider in ("anthropic", "google"):
            with self.subTest(provider=provider):
                name = unique_name()
                d = {"name": name, "agents": [self.agent_on(
                    provider, "calc", tools=["calculator"],
                    extra=' [[fake:tool=calculator:{"expression":"6*7"}]]')]}
                _, job = self.run_job(d, "tool %s %s" % (provider, name))
                self.assertEqual(job["status"], "completed", job)
                res = job["result"]
                self.assertEqual(res["output"], "tool results: 42")
                call = res["agents"][0]["tool_calls"][0]
                self.assertEqual((call["name"], call["result"]), ("calculator", "42"))
                self.assertEqual(len(self.requests_for("tool %s %s" % (provider, name))), 2)

    def test_spent_rounds_keep_tools_declared_and_forbid_calls(self):
        """Once max_tool_iterations rounds are spent, the last call still declares the tools
        (the conversation holds tool calls, which Anthropic and Gemini accept only with tools
        declared) and forbids calling them, in each wire's own terms."""
        forbid = {"openai": ("tool_choice", "none"),
                  "anthropic": ("tool_choice", {"type": "none"}),
                  "google": ("toolConfig", {"functionCallingConfig": {"mode": "NONE"}})}
        for provider, (key, value) in forbid.items():
            with self.subTest(provider=provider):
                name = unique_name()
                a = self.agent_on(provider, "calc", tools=["calculator"],
                                  extra=' [[fake:tool=calculator:{"expression":"6*7"}]]')
                a["config"]["max_tool_iterations"] = 1
                _, job = self.run_job({"name": name, "agents": [a]},
                                      "spent %s %s" % (provider, name))
                self.assertEqual(job["status"], "completed", job)
                self.assertEqual(job["result"]["output"], "tool results: 42")
                first, last = self.requests_for("spent %s %s" % (provider, name))
                self.assertIn("tools", first["body"])
                self.assertNotIn(key, first["body"])
                self.assertIn("tools", last["body"])
                self.assertEqual(last["body"][key], value)

    def test_provider_error_reaches_the_agent(self):
        name = unique_name()
        d = {"name": name, "agents": [self.agent_on("anthropic", "a",
                                                    extra=" [[fake:status=400]]")]}
        _, job = self.run_job(d, "err " + name)
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("anthropic: HTTP 400", job["error"])


class TestMemory(FakeCase):
    def roles_and_texts(self, req):
        return [(m["role"], m["content"]) for m in req["body"]["messages"]]

    def ask(self, name, query, **body):
        acc = self.srv.execute(dict({"crew_id": name, "query": query}, **body))
        job = self.srv.wait_job(acc["job_id"])
        self.assertEqual(job["status"], "completed", job)
        reqs = [r for r in self.requests_for(query)]
        return job["result"]["output"], reqs[-1]

    def test_chatbot_continues_a_session(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("bot", self.fake,
                                                             agent_class="Chatbot")]})
        out1, _ = self.ask(name, "first " + name, user_id="u", session_id="s1")
        out2, req2 = self.ask(name, "second " + name, user_id="u", session_id="s1")
        self.assertEqual(self.roles_and_texts(req2)[1:], [
            ("user", "first " + name), ("assistant", out1), ("user", "second " + name)])
        # Another session, or another user, starts afresh.
        _, req3 = self.ask(name, "third " + name, user_id="u", session_id="s2")
        self.assertEqual(len(req3["body"]["messages"]), 2)
        _, req4 = self.ask(name, "fourth " + name, user_id="v", session_id="s1")
        self.assertEqual(len(req4["body"]["messages"]), 2)

    def test_no_user_or_session_no_memory(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("bot", self.fake,
                                                             agent_class="Chatbot")]})
        self.ask(name, "anon1 " + name)
        _, req = self.ask(name, "anon2 " + name)
        self.assertEqual(len(req["body"]["messages"]), 2, "callers without ids share nothing")

    def test_base_agent_only_with_memory_on(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("plain", self.fake)]})
        self.ask(name, "one " + name, session_id="s")
        _, req = self.ask(name, "two " + name, session_id="s")
        self.assertEqual(len(req["body"]["messages"]), 2)
        name2 = unique_name()
        self.srv.create({"name": name2, "agents": [fake_agent("mem", self.fake,
                                                              config={"memory": True})]})
        self.ask(name2, "one " + name2, session_id="s")
        _, req = self.ask(name2, "two " + name2, session_id="s")
        self.assertEqual(len(req["body"]["messages"]), 4)

    def test_max_context_turns_trims(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent(
            "bot", self.fake, agent_class="Chatbot", config={"max_context_turns": 1})]})
        for i in range(3):
            self.ask(name, "turn%d %s" % (i, name), session_id="t")
        _, req = self.ask(name, "last " + name, session_id="t")
        texts = self.roles_and_texts(req)[1:]
        self.assertEqual([r for r, _ in texts], ["user", "assistant", "user"])
        self.assertEqual(texts[0][1], "turn2 " + name)

    def test_memory_survives_a_restart(self):
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("bot", self.fake,
                                                             agent_class="Chatbot")]})
        out1, _ = self.ask(name, "before " + name, session_id="r")
        self.srv.restart()
        _, req = self.ask(name, "after " + name, session_id="r")
        self.assertEqual(self.roles_and_texts(req)[1:3],
                         [("user", "before " + name), ("assistant", out1)])

    def test_bad_memory_config(self):
        for cfg, word in (({"memory": "yes"}, "memory"), ({"max_context_turns": 0},
                                                          "max_context_turns")):
            d = {"name": unique_name(), "agents": [fake_agent("b", self.fake, config=cfg)]}
            self.assertJsonError(self.srv.request("PUT", "/api/v1/crew", body=d), 400, word)


class TestCost(FakeCase):
    # $0.5 per input token, $1 per output token: the cost is easy to check from the tokens.
    CREWD_ARGS = ["--prices", json.dumps({"openai:fake-model": {"input": 500000,
                                                                "output": 1000000}})]

    def test_cost_per_agent_and_job(self):
        name = unique_name()
        d = {"name": name, "agents": [fake_agent("a", self.fake, reply="x"),
                                      fake_agent("b", self.fake, reply="y")]}
        _, job = self.run_job(d, "cost " + name)
        res = job["result"]
        for a in res["agents"]:
            u = a["usage"]
            self.assertAlmostEqual(u["cost"], 0.5 * u["prompt_tokens"] + u["completion_tokens"])
        self.assertAlmostEqual(res["usage"]["cost"], sum(a["usage"]["cost"]
                                                         for a in res["agents"]))

    def test_unpriced_model_has_no_cost(self):
        name = unique_name()
        a = fake_agent("a", self.fake, reply="x",
                       config={"model": "other-model"})
        _, job = self.run_job({"name": name, "agents": [a]}, "nocost " + name)
        self.assertNotIn("cost", job["result"]["usage"])

    def test_bad_price_table_exits_2(self):
        from crewd_harness import run_crewd
        for bad in ('[]', '{"skynet:m": {"input": 1, "output": 1}}',
                    '{"openai:m": {"input": -1, "output": 1}}', '{"m": {"input": 1}}',
                    '{"m": {"input": 1, "output": 1, "extra": 2}}', 'nope'):
            rc, _, err = run_crewd(["--listen", "127.0.0.1:0", "--prices", bad,
                                    "--store", "sqlite:/nonexistent/never.db"])
            self.assertEqual(rc, 2, (bad, err))
            self.assertIn("--prices", err)


class TestRetries(FakeCase):
    def test_500_twice_then_success(self):
        name = unique_name()
        a = fake_agent("a", self.fake, reply="finally",
                       extra_prompt=" [[fake:fail_times=2]] [[fake:retry_after_ms=10]]")
        _, job = self.run_job({"name": name, "agents": [a]}, "retry " + name)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["result"]["output"], "finally")
        self.assertEqual(len(self.requests_for("retry " + name)), 3)
        self.assertEqual(job["result"]["agents"][0]["attempts"], 3)


if __name__ == "__main__":
    unittest.main()
