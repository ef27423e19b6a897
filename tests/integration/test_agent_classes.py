"""Custom agent classes (PUT/GET/DELETE /api/v1/agents): CRUD, validation, config secrets
masked, a crew using a class gets its defaults (plan and the system prompt the fake LLM
received), a Chatbot-based class keeps memory within a session, persistence across a
restart, and crews unchanged by a later replace or delete of their class."""
import json
import unittest

from crewd_harness import CrewdTestCase, unique_name
from test_jobs import FakeCase, fake_agent


def klass(name, **kw):
    d = {"name": name, "base": "BaseAgent", "config": {"temperature": 0.3},
         "system_prompt": "You are a careful analyst.", "tools": ["calculator"]}
    d.update(kw)
    return d


class TestAgentsApi(CrewdTestCase):
    def put(self, body):
        return self.srv.request("PUT", "/api/v1/agents", body)

    def test_a_class_without_base_is_a_base_agent(self):
        # Regression (found by fuzz_user_tool): a missing base crashed the parser.
        name = unique_name("cls").replace("-", "_")
        st, _, js, raw = self.srv.request("PUT", "/api/v1/agents", body={"name": name})
        self.assertIn(st, (200, 201), raw)
        st, _, js, raw = self.srv.request("GET", "/api/v1/agents/" + name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["base"], "BaseAgent")

    def test_crud(self):
        name = unique_name("K")
        st, _, js, raw = self.put(klass(name))
        self.assertEqual(st, 201, raw)
        self.assertEqual(js["message"], "Agent class created successfully")
        st, _, js, raw = self.put(klass(name, base="Chatbot", tools=None))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["message"], "Agent class replaced successfully")
        self.assertEqual(js["base"], "Chatbot")
        self.assertEqual(js["tools"], [])
        st, _, js, _ = self.srv.request("GET", "/api/v1/agents")
        by_name = {a["name"]: a for a in js["agents"]}
        for b in ("BaseAgent", "Agent", "BasicAgent", "Chatbot"):
            self.assertTrue(by_name[b]["builtin"], b)
        self.assertFalse(by_name[name]["builtin"])
        st, _, js, _ = self.srv.request("GET", "/api/v1/agents/" + name)
        self.assertEqual((st, js["name"]), (200, name))
        self.assertEqual(self.srv.request("GET", "/api/v1/agents/Chatbot")[0], 200)
        self.assertEqual(self.srv.request("DELETE", "/api/v1/agents/" + name)[0], 200)
        self.assertJsonError(self.srv.request("GET", "/api/v1/agents/" + name), 404)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/agents/" + name), 404)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/agents/Chatbot"), 400)

    def test_validation(self):
        cases = [
            (klass("Chatbot"), "built-in"),
            (klass("has space"), "name"),
            (klass("b", base="Agent"), "base"),
            (klass("c", config={"temperature": 5}), "config.temperature"),
            (klass("c", config=[]), "config"),
            (klass("t", tools=["no_such_tool"]), "unknown tool"),
            (klass("p", system_prompt=3), "system_prompt"),
            (klass("f", extra=1), "extra"),
        ]
        for body, text in cases:
            with self.subTest(body=body):
                self.assertJsonError(self.put(body), 400, text)

    def test_secrets_redacted(self):
        name = unique_name("S")
        st, _, _, raw = self.put(klass(name, config={"api_key": "sk-sekrit", "model": "m"}))
        self.assertEqual(st, 201, raw)
        self.assertNotIn(b"sk-sekrit", raw)
        for path in ("/api/v1/agents/" + name, "/api/v1/agents"):
            _, _, _, raw = self.srv.request("GET", path)
            self.assertNotIn(b"sk-sekrit", raw, path)

    def test_unknown_class_message_lists_custom(self):
        name = unique_name("L")
        self.assertEqual(self.put(klass(name))[0], 201)
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew", {
            "name": unique_name(), "agents": [{"agent_id": "a", "agent_class": "Nope"}]}),
            400, ["unknown class 'Nope'", "Chatbot", name])


class TestClassDefaults(FakeCase):
    def test_empty_agent_prompt_takes_the_class_prompt(self):
        cname = unique_name("Pr")
        st, _, _, raw = self.srv.request("PUT", "/api/v1/agents", klass(
            cname, system_prompt="From the class."))
        self.assertEqual(st, 201, raw)
        name = unique_name()
        self.srv.create({"name": name, "agents": [
            {"agent_id": "a", "agent_class": cname, "system_prompt": ""}]})
        _, _, crew, _ = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(crew["plan"]["agents"][0]["system_prompt"], "From the class.")

    def test_class_llm_is_checked_at_put(self):
        st, _, js, raw = self.srv.request("PUT", "/api/v1/agents", klass(
            unique_name("Bad"), config={"llm": "nope"}))
        self.assertEqual(st, 400, raw)
        self.assertIn("config.llm", js["message"])

    def test_crew_gets_class_defaults(self):
        cname = unique_name("Analyst")
        marker = "[[fake:reply=fine]]"
        st, _, _, raw = self.srv.request("PUT", "/api/v1/agents", klass(
            cname, system_prompt="Class prompt " + marker,
            config={"llm": "openai", "model": "fake-model", "base_url": self.fake.base_url,
                    "temperature": 0.3, "max_tokens": 77},
            tools=["calculator", "datetime"]))
        self.assertEqual(st, 201, raw)
        name = unique_name()
        self.srv.create({"name": name, "agents": [
            {"agent_id": "a", "agent_class": cname, "config": {"max_tokens": 99},
             "tools": ["json_query", "calculator"]}]})
        st, _, crew, _ = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(st, 200)
        agent = crew["agents"][0]
        self.assertEqual(agent["agent_class"], cname)
        self.assertEqual(agent["config"]["temperature"], 0.3)
        self.assertEqual(agent["config"]["max_tokens"], 99)  # the agent's own key wins
        self.assertEqual(agent["tools"], ["calculator", "datetime", "json_query"])
        plan = crew["plan"]["agents"][0]
        self.assertEqual(plan["agent_class"], "BaseAgent")
        self.assertEqual(plan["system_prompt"], "Class prompt " + marker)
        self.assertEqual(plan["max_tokens"], 99)
        self.assertEqual(plan["tools"], ["calculator", "datetime", "json_query"])
        query = "q " + name
        job = self.srv.wait_job(self.srv.execute({"crew_id": name, "query": query})["job_id"])
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["result"]["output"], "fine")
        req = self.requests_for(query)[-1]
        sysmsg = [m for m in req["body"]["messages"] if m["role"] == "system"][0]["content"]
        self.assertEqual(sysmsg, "Class prompt " + marker)
        self.assertEqual(req["body"]["temperature"], 0.3)

        # Replacing, then deleting, the class leaves the crew as it was created.
        self.srv.request("PUT", "/api/v1/agents", klass(cname, system_prompt="new"))
        self.assertEqual(self.srv.request("DELETE", "/api/v1/agents/" + cname)[0], 200)
        _, _, again, _ = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(again["plan"]["agents"][0]["system_prompt"], "Class prompt " + marker)
        job = self.srv.wait_job(self.srv.execute({"crew_id": name, "query": "r " + name})
                                ["job_id"])
        self.assertEqual(job["status"], "completed", job)

    def test_chatbot_based_class_keeps_memory(self):
        cname = unique_name("Bot")
        self.assertEqual(self.srv.request("PUT", "/api/v1/agents", klass(
            cname, base="Chatbot", tools=[], system_prompt=None))[0], 201)
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("bot", self.fake,
                                                             agent_class=cname)]})
        outs = []
        for q in ("first " + name, "second " + name):
            job = self.srv.wait_job(self.srv.execute(
                {"crew_id": name, "query": q, "session_id": "s1"})["job_id"])
            self.assertEqual(job["status"], "completed", job)
            outs.append(job["result"]["output"])
        req = self.requests_for("second " + name)[-1]
        turns = [(m["role"], m["content"]) for m in req["body"]["messages"]][1:]
        self.assertEqual(turns, [("user", "first " + name), ("assistant", outs[0]),
                                 ("user", "second " + name)])


class TestClassPersistence(CrewdTestCase):
    SHARED_SERVER = False

    def test_restart(self):
        srv = self.start_crewd()
        cname = unique_name("P")
        self.assertEqual(srv.request("PUT", "/api/v1/agents", klass(cname))[0], 201)
        srv.restart()
        st, _, js, _ = srv.request("GET", "/api/v1/agents/" + cname)
        self.assertEqual(st, 200)
        self.assertEqual(js["system_prompt"], "You are a careful analyst.")
        st, _, _, raw = srv.request("PUT", "/api/v1/crew", {"name": unique_name(), "agents": [
            {"agent_id": "a", "agent_class": cname}]})
        self.assertEqual(st, 201, raw)


if __name__ == "__main__":
    unittest.main()
