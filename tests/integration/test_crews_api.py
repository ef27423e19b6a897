"""Crew registry over HTTP: create, update, get (by path, ?name=, ?crew_id=), list, delete,
the normalized definition, ?include=plan and secret redaction (API.md sections 1 and 2)."""

import unittest
import urllib.parse
import uuid

from crewd_harness import (RFC3339_RE, UUID4_RE, CrewdTestCase, agent, crew, unique_name)

Q = urllib.parse.quote


def as_list(v):
    return v if isinstance(v, list) else [v]


class TestHealth(CrewdTestCase):

    def test_healthz_ok(self):
        st, hdrs, js, raw = self.srv.request("GET", "/healthz")
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type", "").startswith("application/json"))
        self.assertEqual(js.get("status"), "ok", raw)


class TestCreate(CrewdTestCase):

    def test_create_returns_201_with_summary(self):
        name = unique_name("create")
        st, hdrs, js, raw = self.srv.request("PUT", "/api/v1/crew", body=crew(name))
        self.assertEqual(st, 201, raw)
        self.assertTrue(hdrs.get("Content-Type", "").startswith("application/json"))
        self.assertEqual(js["message"], "Crew created successfully")
        self.assertEqual(js["name"], name)
        self.assertEqual(js["execution_mode"], "sequential")
        self.assertEqual(js["agents"], ["researcher", "writer"])
        self.assertRegex(js["crew_id"], UUID4_RE)
        self.assertRegex(js["created_at"], RFC3339_RE)

    def test_agent_key_is_name_else_agent_id(self):
        name = unique_name("keys")
        js = self.srv.create(crew(name, agents=[
            agent("a1", name="researcher"), agent("a2"), agent("a3", name="editor")]))
        self.assertEqual(js["agents"], ["researcher", "a2", "editor"])

    def test_execution_mode_echoed(self):
        for mode in ("parallel", "flow", "loop"):
            with self.subTest(mode=mode):
                js = self.srv.create(crew(unique_name(mode), mode=mode))
                self.assertEqual(js["execution_mode"], mode)

    def test_default_execution_mode_is_sequential(self):
        d = crew(unique_name("defmode"))
        del d["execution_mode"]
        js = self.srv.create(d)
        self.assertEqual(js["execution_mode"], "sequential")

    def test_duplicate_name_is_409(self):
        name = unique_name("dup")
        first = self.srv.create(crew(name))
        resp = self.srv.request("PUT", "/api/v1/crew", body=crew(name))
        self.assertJsonError(resp, 409)
        # the first crew is untouched
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], first["crew_id"])

    def test_client_given_crew_id_is_kept(self):
        cid = str(uuid.uuid4())
        js = self.srv.create(crew(unique_name("ownid"), crew_id=cid))
        self.assertEqual(js["crew_id"], cid)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/" + cid)[0], 200)

    def test_duplicate_crew_id_is_409(self):
        cid = str(uuid.uuid4())
        self.srv.create(crew(unique_name("id1"), crew_id=cid))
        name2 = unique_name("id2")
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew",
                                              body=crew(name2, crew_id=cid)), 409)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/" + name2)[0], 404)

    def test_each_crew_gets_distinct_id(self):
        a = self.srv.create(crew(unique_name("ida")))
        b = self.srv.create(crew(unique_name("idb")))
        self.assertNotEqual(a["crew_id"], b["crew_id"])


class TestGet(CrewdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.name = unique_name("get")
        cls.created = cls.srv.create(crew(
            cls.name, description="Research then write", agents=[
                agent("researcher", agent_class="Agent", config={"model": "gpt-4"},
                      tools=["calculator"], system_prompt="You research."),
                agent("w1", name="writer")],
            metadata={"team": "docs", "n": 3}))

    def get_ok(self, path):
        st, hdrs, js, raw = self.srv.request("GET", path)
        self.assertEqual(st, 200, "%s: %r" % (path, raw[:1500]))
        self.assertTrue(hdrs.get("Content-Type", "").startswith("application/json"))
        return js

    def test_get_by_name(self):
        js = self.get_ok("/api/v1/crew/" + self.name)
        self.assertEqual(js["crew_id"], self.created["crew_id"])
        self.assertEqual(js["name"], self.name)

    def test_get_by_crew_id(self):
        js = self.get_ok("/api/v1/crew/" + self.created["crew_id"])
        self.assertEqual(js["name"], self.name)

    def test_get_by_name_query(self):
        js = self.get_ok("/api/v1/crew?name=" + Q(self.name))
        self.assertEqual(js["crew_id"], self.created["crew_id"])
        self.assertEqual(js["name"], self.name)
        self.assertIn("agents", js)

    def test_get_by_crew_id_query(self):
        js = self.get_ok("/api/v1/crew?crew_id=" + self.created["crew_id"])
        self.assertEqual(js["name"], self.name)
        self.assertIn("agents", js)

    def test_all_lookups_return_same_definition(self):
        a = self.get_ok("/api/v1/crew/" + self.name)
        b = self.get_ok("/api/v1/crew/" + self.created["crew_id"])
        c = self.get_ok("/api/v1/crew?name=" + Q(self.name))
        d = self.get_ok("/api/v1/crew?crew_id=" + self.created["crew_id"])
        self.assertEqual(a, b)
        self.assertEqual(a, c)
        self.assertEqual(a, d)

    def test_full_normalized_definition(self):
        js = self.get_ok("/api/v1/crew/" + self.name)
        for key in ("crew_id", "name", "description", "execution_mode", "agents",
                    "flow_relations", "shared_tools", "max_parallel_tasks", "metadata",
                    "created_at", "updated_at"):
            self.assertIn(key, js)
        self.assertEqual(js["description"], "Research then write")
        self.assertEqual(js["execution_mode"], "sequential")
        self.assertEqual(js["flow_relations"], [])
        self.assertEqual(js["shared_tools"], [])
        self.assertEqual(js["max_parallel_tasks"], 10)
        self.assertEqual(js["metadata"], {"team": "docs", "n": 3})
        self.assertEqual(js["created_at"], self.created["created_at"])
        self.assertRegex(js["updated_at"], RFC3339_RE)

    def test_agents_normalized_with_defaults(self):
        js = self.get_ok("/api/v1/crew/" + self.name)
        agents = js["agents"]
        self.assertEqual(len(agents), 2)
        for a in agents:
            for key in ("agent_id", "agent_class", "name", "config", "tools", "system_prompt"):
                self.assertIn(key, a, a)
        r, w = agents
        self.assertEqual(r["agent_id"], "researcher")
        self.assertEqual(r["agent_class"], "Agent")
        self.assertEqual(r["config"], {"model": "gpt-4"})
        self.assertEqual(r["tools"], ["calculator"])
        self.assertEqual(r["system_prompt"], "You research.")
        self.assertEqual(w["agent_id"], "w1")
        self.assertEqual(w["name"], "writer")
        self.assertEqual(w["agent_class"], "BaseAgent")   # the default
        self.assertEqual(w["config"], {})
        self.assertEqual(w["tools"], [])

    def test_get_without_include_has_no_plan(self):
        js = self.get_ok("/api/v1/crew/" + self.name)
        self.assertNotIn("plan", js)

    def test_unknown_name_is_404(self):
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + unique_name("nope")), 404)

    def test_unknown_crew_id_is_404(self):
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + str(uuid.uuid4())), 404)

    def test_unknown_name_query_is_404(self):
        self.assertJsonError(
            self.srv.request("GET", "/api/v1/crew?name=" + unique_name("nope")), 404)

    def test_unknown_crew_id_query_is_404(self):
        self.assertJsonError(
            self.srv.request("GET", "/api/v1/crew?crew_id=" + str(uuid.uuid4())), 404)

    def test_utf8_name_lookup(self):
        name = unique_name("\u00e9quipe-\u65e5\u672c")
        created = self.srv.create(crew(name))
        for path in ("/api/v1/crew/" + Q(name), "/api/v1/crew?name=" + Q(name)):
            with self.subTest(path=path):
                js = self.get_ok(path)
                self.assertEqual(js["crew_id"], created["crew_id"])
                self.assertEqual(js["name"], name)

    def test_include_plan_with_name_query(self):
        js = self.get_ok("/api/v1/crew?name=%s&include=plan" % Q(self.name))
        self.assertEqual(js["crew_id"], self.created["crew_id"])
        self.assertIn("plan", js)
        js = self.get_ok("/api/v1/crew?crew_id=%s&include=plan" % self.created["crew_id"])
        self.assertIn("plan", js)

    def test_percent_encoded_name(self):
        name = unique_name("with space")
        created = self.srv.create(crew(name))
        js = self.get_ok("/api/v1/crew/" + Q(name))
        self.assertEqual(js["crew_id"], created["crew_id"])
        js = self.get_ok("/api/v1/crew?name=" + Q(name))
        self.assertEqual(js["crew_id"], created["crew_id"])


class TestFlowAndPlan(CrewdTestCase):

    def plan_of(self, name):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % Q(name))
        self.assertEqual(st, 200, raw)
        self.assertIn("plan", js, raw)
        return js, js["plan"]

    @staticmethod
    def plan_agents(plan):
        agents = plan["agents"]
        if isinstance(agents, dict):
            return [dict(v, key=k) for k, v in agents.items()]
        return agents

    def plan_keys(self, plan, seq):
        """Maps a plan's "order"/"finals" (keys or indexes) to agent keys."""
        agents = self.plan_agents(plan)
        out = []
        for x in seq:
            if isinstance(x, int):
                a = agents[x]
                out.append(a.get("key") or a.get("name") or a.get("agent_id"))
            elif isinstance(x, dict):
                out.append(x.get("key") or x.get("name") or x.get("agent_id"))
            else:
                out.append(x)
        return out

    def test_flow_relations_written_with_agent_keys(self):
        name = unique_name("flowkeys")
        self.srv.create(crew(name, mode="flow", agents=[
            agent("a1", name="researcher"), agent("a2", name="writer")],
            flow_relations=[{"source": "a1", "target": "a2"}]))
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        rels = js["flow_relations"]
        self.assertEqual(len(rels), 1, rels)
        self.assertEqual(as_list(rels[0]["source"]), ["researcher"])
        self.assertEqual(as_list(rels[0]["target"]), ["writer"])

    def test_plan_order_is_topological_and_finals(self):
        name = unique_name("flowplan")
        # definition order differs from the dependency order on purpose
        self.srv.create(crew(name, mode="flow", agents=[
            agent("summarize"), agent("fetch"), agent("analyze"), agent("chart")],
            flow_relations=[{"source": "fetch", "target": ["analyze", "chart"]},
                            {"source": ["analyze", "chart"], "target": "summarize"}]))
        _, plan = self.plan_of(name)
        order = self.plan_keys(plan, plan["order"])
        # Topological, ties broken by definition order (analyze before chart).
        self.assertEqual(order, ["fetch", "analyze", "chart", "summarize"])
        self.assertEqual(self.plan_keys(plan, plan["finals"]), ["summarize"])

    def test_plan_finals_with_two_sinks(self):
        name = unique_name("twosinks")
        self.srv.create(crew(name, mode="flow", agents=[agent("a"), agent("b"), agent("c")],
                             flow_relations=[{"source": "a", "target": ["b", "c"]}]))
        _, plan = self.plan_of(name)
        self.assertEqual(self.plan_keys(plan, plan["finals"]), ["b", "c"])

    def test_plan_resolves_provider_and_model(self):
        name = unique_name("plan")
        self.srv.create(crew(name))
        js, plan = self.plan_of(name)
        agents = self.plan_agents(plan)
        self.assertEqual(len(agents), 2)
        for a in agents:
            self.assertEqual(a["provider"], "openai", a)
            self.assertEqual(a["model"], "gpt-4", a)
        # the definition is still there alongside the plan
        self.assertEqual(js["name"], name)
        self.assertEqual(len(js["agents"]), 2)

    def test_plan_merges_shared_tools(self):
        name = unique_name("shared")
        self.srv.create(crew(name, agents=[agent("a", tools=["calculator"])],
                             shared_tools=["current_time"]))
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(js["shared_tools"], ["current_time"])
        _, plan = self.plan_of(name)
        tools = self.plan_agents(plan)[0]["tools"]
        self.assertEqual(sorted(tools), ["calculator", "current_time"])


class TestQueryLookup(CrewdTestCase):
    """?name= and ?crew_id= are both identifiers, name first, then id (the seed's lookup):
    seed clients send a name in crew_id, as its execute body allows."""

    def test_either_query_takes_a_name_or_an_id(self):
        name = unique_name("q")
        cid = self.srv.create(crew(name))["crew_id"]
        for query in ("name=" + name, "crew_id=" + name, "name=" + cid, "crew_id=" + cid):
            with self.subTest(query=query):
                st, _, js, raw = self.srv.request("GET", "/api/v1/crew?" + query)
                self.assertEqual(st, 200, raw)
                self.assertEqual(js["crew_id"], cid)
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew?crew_id=" + name)
        self.assertEqual(st, 200, raw)
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew?name=" + cid)
        self.assertEqual(st, 404, raw)


class TestIdCase(CrewdTestCase):
    """Ids are stored lowercase; an id in any case finds its crew, on every store."""

    def test_uppercase_id_finds_the_crew(self):
        upper = "AAAAAAAA-BBBB-4CCC-8DDD-" + uuid.uuid4().hex[:12].upper()
        name = unique_name("upper")
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew", body=crew(name, crew_id=upper))
        self.assertEqual(st, 201, raw)
        self.assertEqual(js["crew_id"], upper.lower())
        for path in ("/api/v1/crew/" + upper, "/api/v1/crew?crew_id=" + upper,
                     "/api/v1/crew/" + upper.lower()):
            with self.subTest(path=path):
                st, _, js, raw = self.srv.request("GET", path)
                self.assertEqual(st, 200, raw)
                self.assertEqual(js["name"], name)
        st, _, _, raw = self.srv.request("PUT", "/api/v1/crew/" + upper, body=crew(name))
        self.assertEqual(st, 200, raw)
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew?crew_id=" + upper)
        self.assertEqual(st, 200, raw)


class TestUpdate(CrewdTestCase):

    def test_update_replaces_definition_keeps_id_and_created_at(self):
        name = unique_name("upd")
        created = self.srv.create(crew(name, description="v1"))
        new = crew(name, mode="parallel", description="v2",
                   agents=[agent("solo", name="analyst")], max_parallel_tasks=3)
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + name, body=new)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["message"], "Crew updated successfully")
        self.assertEqual(js["crew_id"], created["crew_id"])
        self.assertEqual(js["name"], name)
        self.assertEqual(js["execution_mode"], "parallel")
        self.assertEqual(js["agents"], ["analyst"])
        self.assertEqual(js["created_at"], created["created_at"])
        self.assertRegex(js["updated_at"], RFC3339_RE)
        self.assertGreaterEqual(js["updated_at"], js["created_at"])

        st, _, got, raw = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(got["crew_id"], created["crew_id"])
        self.assertEqual(got["created_at"], created["created_at"])
        self.assertEqual(got["description"], "v2")
        self.assertEqual(got["execution_mode"], "parallel")
        self.assertEqual(got["max_parallel_tasks"], 3)
        self.assertEqual([a["agent_id"] for a in got["agents"]], ["solo"])
        self.assertEqual(got["updated_at"], js["updated_at"])

    def test_update_by_crew_id(self):
        name = unique_name("updid")
        created = self.srv.create(crew(name))
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + created["crew_id"],
                                          body=crew(name, description="by id"))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], created["crew_id"])
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(got["description"], "by id")

    def test_rename(self):
        old = unique_name("old")
        new = unique_name("new")
        created = self.srv.create(crew(old))
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + old, body=crew(new))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["name"], new)
        self.assertEqual(js["crew_id"], created["crew_id"])
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + new)
        self.assertEqual(st, 200)
        self.assertEqual(got["crew_id"], created["crew_id"])
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + old), 404)

    def test_rename_onto_other_crew_is_409(self):
        a = unique_name("a")
        b = unique_name("b")
        ca = self.srv.create(crew(a, description="A"))
        cb = self.srv.create(crew(b, description="B"))
        resp = self.srv.request("PUT", "/api/v1/crew/" + a, body=crew(b, description="A2"))
        self.assertJsonError(resp, 409)
        st, _, got_a, _ = self.srv.request("GET", "/api/v1/crew/" + a)
        st2, _, got_b, _ = self.srv.request("GET", "/api/v1/crew/" + b)
        self.assertEqual((st, st2), (200, 200))
        self.assertEqual((got_a["crew_id"], got_a["description"]), (ca["crew_id"], "A"))
        self.assertEqual((got_b["crew_id"], got_b["description"]), (cb["crew_id"], "B"))

    def test_update_shows_in_list(self):
        name = unique_name("updlist")
        created = self.srv.create(crew(name, description="before"))
        st, _, _, raw = self.srv.request("PUT", "/api/v1/crew/" + name, body=crew(
            name, mode="parallel", description="after", agents=[agent("x"), agent("y"),
                                                                agent("z")]))
        self.assertEqual(st, 200, raw)
        st, _, js, _ = self.srv.request("GET", "/api/v1/crew?limit=1000")
        item = [c for c in js["crews"] if c["crew_id"] == created["crew_id"]]
        self.assertEqual(len(item), 1)
        self.assertEqual((item[0]["description"], item[0]["execution_mode"],
                          item[0]["agent_count"]), ("after", "parallel", 3))

    def test_update_keeps_the_crews_id_whatever_the_body_says(self):
        # API.md: a replace keeps crew_id. Seed clients send back whole definitions carrying
        # an id their own model generated; that id neither fails the replace nor moves the
        # crew, and the other crew whose id it is stays untouched.
        a = unique_name("ida")
        ca = self.srv.create(crew(a, description="A"))
        b = unique_name("idb")
        cb = self.srv.create(crew(b, description="B"))
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + a,
                                          body=crew(a, description="A2", crew_id=cb["crew_id"]))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], ca["crew_id"])
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + a)
        self.assertEqual((got["crew_id"], got["description"]), (ca["crew_id"], "A2"))
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + cb["crew_id"])
        self.assertEqual((got["name"], got["description"]), (b, "B"))

    def test_update_with_same_crew_id_in_body(self):
        a = unique_name("same")
        ca = self.srv.create(crew(a))
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + a,
                                          body=crew(a, crew_id=ca["crew_id"], description="s"))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], ca["crew_id"])

    def test_update_after_delete_is_404(self):
        name = unique_name("gone")
        self.srv.create(crew(name))
        self.assertEqual(self.srv.request("DELETE", "/api/v1/crew/" + name)[0], 200)
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew/" + name, body=crew(name)),
                             404)

    def test_update_unknown_is_404(self):
        name = unique_name("ghost")
        self.assertJsonError(
            self.srv.request("PUT", "/api/v1/crew/" + name, body=crew(name)), 404)
        # and it did not create it
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + name), 404)

    def test_update_unknown_crew_id_is_404(self):
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew/" + str(uuid.uuid4()),
                                              body=crew(unique_name("x"))), 404)

    def test_invalid_update_leaves_crew_unchanged(self):
        name = unique_name("badupd")
        self.srv.create(crew(name, description="kept"))
        bad = crew(name, description="lost", agents=[agent("a", agent_class="Foo")])
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew/" + name, body=bad), 400,
                             "agents[0].agent_class")
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200)
        self.assertEqual(got["description"], "kept")


class TestList(CrewdTestCase):
    """A fresh server with exactly five crews, created in order; these tests only read."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.names = ["list-%d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(5)]
        cls.created = []
        for i, n in enumerate(cls.names):
            agents = [agent("a%d" % j) for j in range(i + 1)]
            cls.created.append(cls.srv.create(
                crew(n, mode="parallel" if i == 2 else "sequential", agents=agents,
                     description="crew %d" % i)))

    def list_ok(self, query=""):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew" + query)
        self.assertEqual(st, 200, raw)
        return js

    def test_list_all(self):
        js = self.list_ok()
        self.assertEqual(js["total"], 5)
        self.assertEqual(sorted(c["name"] for c in js["crews"]), sorted(self.names))
        self.assertEqual(js["limit"], 100)
        self.assertEqual(js["offset"], 0)

    def test_list_sorted_by_created_at(self):
        stamps = [c["created_at"] for c in self.list_ok()["crews"]]
        self.assertEqual(stamps, sorted(stamps))

    def test_list_item_fields(self):
        js = self.list_ok()
        by_id = {c["crew_id"]: (i, c) for i, c in enumerate(self.created)}
        for item in js["crews"]:
            self.assertEqual(set(item), {"crew_id", "name", "description", "execution_mode",
                                         "agent_count", "created_at"}, item)
            i, created = by_id[item["crew_id"]]
            self.assertEqual(item["name"], self.names[i])
            self.assertEqual(item["description"], "crew %d" % i)
            self.assertEqual(item["agent_count"], i + 1)
            self.assertEqual(item["created_at"], created["created_at"])
            self.assertEqual(item["execution_mode"], "parallel" if i == 2 else "sequential")

    def test_limit_and_offset(self):
        everything = [c["crew_id"] for c in self.list_ok()["crews"]]
        js = self.list_ok("?limit=2&offset=1")
        self.assertEqual([c["crew_id"] for c in js["crews"]], everything[1:3])
        self.assertEqual(js["total"], 5)
        self.assertEqual(js["limit"], 2)
        self.assertEqual(js["offset"], 1)

    def test_offset_past_end_is_empty(self):
        js = self.list_ok("?offset=10")
        self.assertEqual(js["crews"], [])
        self.assertEqual(js["total"], 5)

    def test_limit_bounds_accepted(self):
        self.assertEqual(len(self.list_ok("?limit=1")["crews"]), 1)
        self.assertEqual(len(self.list_ok("?limit=1000")["crews"]), 5)

    def test_bad_limit_or_offset_is_400(self):
        for q in ("?limit=0", "?limit=1001", "?limit=-1", "?limit=abc", "?limit=",
                  "?limit=1.5", "?limit=99999999999999999999", "?offset=-1",
                  "?offset=abc", "?offset=1x", "?limit=+5", "?limit=%205"):
            with self.subTest(query=q):
                self.assertJsonError(self.srv.request("GET", "/api/v1/crew" + q), 400)


class TestListOrder(CrewdTestCase):
    """Crews created back to back (several within one millisecond) list in creation order."""

    def test_rapid_creates_list_in_creation_order(self):
        names = ["rapid-%02d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(30)]
        for n in names:
            self.srv.create(crew(n, agents=[agent("a")]))
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew?limit=1000")
        self.assertEqual(st, 200, raw)
        listed = [c["name"] for c in js["crews"] if c["name"].startswith("rapid-")]
        self.assertEqual(listed, names)

    def test_pages_follow_creation_order(self):
        for i in range(15):
            self.srv.create(crew(unique_name("page%02d" % i), agents=[agent("a")]))
        st, _, js, _ = self.srv.request("GET", "/api/v1/crew?limit=1000")
        everything = [c["crew_id"] for c in js["crews"]]
        self.assertGreaterEqual(len(everything), 15)
        paged = []
        for off in range(0, len(everything), 7):
            st, _, page, raw = self.srv.request("GET", "/api/v1/crew?limit=7&offset=%d" % off)
            self.assertEqual(st, 200, raw)
            paged += [c["crew_id"] for c in page["crews"]]
        self.assertEqual(paged, everything)


class TestDelete(CrewdTestCase):

    def test_delete_by_name(self):
        name = unique_name("del")
        created = self.srv.create(crew(name))
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["message"], "Crew deleted successfully")
        self.assertEqual(js["crew_id"], created["crew_id"])
        self.assertEqual(js["name"], name)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + name), 404)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + created["crew_id"]), 404)

    def test_delete_by_crew_id(self):
        name = unique_name("delid")
        created = self.srv.create(crew(name))
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew/" + created["crew_id"])
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["name"], name)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + name), 404)

    def test_delete_by_name_query(self):
        name = unique_name("delq")
        created = self.srv.create(crew(name))
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew?name=" + Q(name))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], created["crew_id"])
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + name), 404)

    def test_delete_by_crew_id_query(self):
        name = unique_name("delqid")
        created = self.srv.create(crew(name))
        st, _, js, raw = self.srv.request("DELETE",
                                          "/api/v1/crew?crew_id=" + created["crew_id"])
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["name"], name)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/" + name), 404)

    def test_delete_twice_is_404(self):
        name = unique_name("deltwice")
        self.srv.create(crew(name))
        self.assertEqual(self.srv.request("DELETE", "/api/v1/crew/" + name)[0], 200)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/crew/" + name), 404)

    def test_delete_unknown_is_404(self):
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/crew/" + unique_name("no")), 404)
        self.assertJsonError(
            self.srv.request("DELETE", "/api/v1/crew?crew_id=" + str(uuid.uuid4())), 404)

    def test_delete_without_identifier_is_400(self):
        keep = unique_name("keep")
        self.srv.create(crew(keep))
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/crew"), 400)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/" + keep)[0], 200)

    def test_deleted_crew_leaves_list_and_name_reusable(self):
        name = unique_name("reuse")
        old = self.srv.create(crew(name))
        self.assertEqual(self.srv.request("DELETE", "/api/v1/crew/" + name)[0], 200)
        st, _, js, _ = self.srv.request("GET", "/api/v1/crew?limit=1000")
        self.assertNotIn(name, [c["name"] for c in js["crews"]])
        new = self.srv.create(crew(name))
        self.assertNotEqual(new["crew_id"], old["crew_id"])

    def test_delete_only_removes_that_crew(self):
        a = unique_name("dela")
        b = unique_name("delb")
        self.srv.create(crew(a))
        self.srv.create(crew(b))
        self.assertEqual(self.srv.request("DELETE", "/api/v1/crew/" + a)[0], 200)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/" + b)[0], 200)


SECRET = "sk-TOPSECRET-4f9c2a77e1"
SECRET2 = "hdr-SECRET-b81d03"
SECRET3 = "tok-SECRET-99aa1c"
SECRET4 = "pw-SECRET-0e5e5e"
SECRET5 = "proxy-pw-6b1d0e0f4a"
SECRET6 = "query-key-93c1aa07d2"


class TestSecrets(CrewdTestCase):
    """Secrets written in an agent's config never come back: "***" in every response, and the
    value itself in no response body at all (nor in the log, even at trace level)."""
    CREWD_ARGS = ["--log-level", "trace", "--llm-base-url-allow", "proxy.example",
                  "--llm-key-env-allow", "MY_OPENAI_KEY"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.name = unique_name("secret")
        cls.config = {"model": "gpt-4", "api_key": SECRET, "max_tokens": 512,
                      "client_secret": SECRET, "access_token": SECRET3, "API_KEY": SECRET,
                      "x-api-key": SECRET,
                      "api_key_env": "MY_OPENAI_KEY",
                      "headers": {"Authorization": "Bearer " + SECRET2},
                      "token": SECRET3, "password": SECRET4, "secret": SECRET,
                      "base_url": "https://proxyuser:%s@proxy.example/v1?key=%s"
                                  % (SECRET5, SECRET6)}
        st, _, cls.created, cls.create_raw = cls.srv.request(
            "PUT", "/api/v1/crew", body=crew(cls.name, agents=[agent("a", config=cls.config)]))
        assert st == 201, cls.create_raw

    def assertNoSecret(self, raw, where):
        for s in (SECRET, SECRET2, SECRET3, SECRET4, SECRET5, SECRET6):
            self.assertNotIn(s.encode(), raw, "%s leaks a secret: %r" % (where, raw[:2000]))

    def assertRedacted(self, cfg):
        self.assertEqual(cfg["api_key"], "***")
        for k in ("client_secret", "access_token", "API_KEY", "x-api-key"):
            self.assertEqual(cfg[k], "***", k)
        self.assertEqual(cfg["secret"], "***")
        self.assertEqual(cfg["token"], "***")
        self.assertEqual(cfg["password"], "***")
        self.assertEqual(cfg["headers"]["Authorization"], "***")
        self.assertEqual(cfg["max_tokens"], 512)
        self.assertEqual(cfg["api_key_env"], "MY_OPENAI_KEY")
        self.assertEqual(cfg["model"], "gpt-4")
        # A URL keeps what tells where it points, not its password or query.
        self.assertEqual(cfg["base_url"], "https://proxyuser:***@proxy.example/v1?***")

    def test_create_response_has_no_secret(self):
        self.assertNoSecret(self.create_raw, "create")

    def test_get_by_name_redacts(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/" + self.name)
        self.assertEqual(st, 200, raw)
        self.assertNoSecret(raw, "GET /crew/{name}")
        self.assertRedacted(js["agents"][0]["config"])

    def test_get_by_id_and_query_redacts(self):
        for path in ("/api/v1/crew/" + self.created["crew_id"],
                     "/api/v1/crew?name=" + Q(self.name),
                     "/api/v1/crew?crew_id=" + self.created["crew_id"]):
            with self.subTest(path=path):
                st, _, js, raw = self.srv.request("GET", path)
                self.assertEqual(st, 200, raw)
                self.assertNoSecret(raw, path)
                self.assertRedacted(js["agents"][0]["config"])

    def test_include_plan_redacts(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % self.name)
        self.assertEqual(st, 200, raw)
        self.assertIn("plan", js)
        self.assertNoSecret(raw, "include=plan")
        self.assertEqual(js["plan"]["agents"][0]["base_url"],
                         "https://proxyuser:***@proxy.example/v1?***")
        self.assertRedacted(js["agents"][0]["config"])

    def test_list_has_no_secret(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew?limit=1000")
        self.assertEqual(st, 200, raw)
        self.assertNoSecret(raw, "list")

    def test_update_and_delete_responses_have_no_secret(self):
        name = unique_name("secret-upd")
        d = crew(name, agents=[agent("a", config=self.config)])
        st, _, _, raw = self.srv.request("PUT", "/api/v1/crew", body=d)
        self.assertEqual(st, 201, raw)
        st, _, _, raw = self.srv.request("PUT", "/api/v1/crew/" + name, body=d)
        self.assertEqual(st, 200, raw)
        self.assertNoSecret(raw, "update")
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertNoSecret(raw, "GET after update")
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        self.assertNoSecret(raw, "delete")

    def test_error_responses_have_no_secret(self):
        # a duplicate (409) and an invalid definition (400) carrying the same secrets
        st, _, _, raw = self.srv.request(
            "PUT", "/api/v1/crew", body=crew(self.name, agents=[agent("a", config=self.config)]))
        self.assertEqual(st, 409, raw)
        self.assertNoSecret(raw, "409")
        bad = dict(self.config, llm="nosuchprovider")
        st, _, _, raw = self.srv.request(
            "PUT", "/api/v1/crew", body=crew(unique_name("s"), agents=[agent("a", config=bad)]))
        self.assertEqual(st, 400, raw)
        self.assertNoSecret(raw, "400")

    def test_secret_not_logged(self):
        # API.md: an inline api_key is "never logged".
        self.srv.request("GET", "/api/v1/crew/" + self.name)
        log = self.srv.stderr_text()
        self.assertIn("serving on port", log, "the log went elsewhere: nothing was checked")
        for s in (SECRET, SECRET2, SECRET3, SECRET4, SECRET5, SECRET6):
            self.assertNotIn(s, log)


if __name__ == "__main__":
    unittest.main()
