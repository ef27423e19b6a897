"""CrewDefinition validation at create and update time (API.md section 2): every refusal is a
400 whose message names the field path, and nothing is stored. Also the provider inference
visible through ?include=plan."""

import json
import unittest
import urllib.parse
import uuid

from crewd_harness import CrewdTestCase, agent, crew, unique_name


class ValidationCase(CrewdTestCase):

    def refuse(self, definition, contains=None):
        """PUT /api/v1/crew must answer 400 naming `contains`, and create nothing."""
        msg = self.assertJsonError(self.srv.request("PUT", "/api/v1/crew", body=definition),
                                   400, contains)
        name = definition.get("name") if isinstance(definition, dict) else None
        if isinstance(name, str) and name:
            # ?name= rather than /crew/{name}: /api/v1/crew/jobs is the job list.
            st, _, _, raw = self.srv.request(
                "GET", "/api/v1/crew?name=" + urllib.parse.quote(name, safe=""))
            self.assertEqual(st, 404, "refused crew was stored anyway: %r" % raw[:500])
        return msg


class TestAgentClassAndTools(ValidationCase):

    def test_unknown_agent_class_exact_message(self):
        msg = self.refuse(crew(unique_name("cls"), agents=[
            agent("a", agent_class="Agent"), agent("b", agent_class="Foo")]))
        self.assertEqual(
            msg, "agents[1].agent_class: unknown class 'Foo' "
                 "(known: BaseAgent, Agent, BasicAgent, Chatbot)")

    def test_known_agent_classes_accepted(self):
        for cls in ("BaseAgent", "Agent", "BasicAgent", "Chatbot"):
            with self.subTest(agent_class=cls):
                js = self.srv.create(crew(unique_name("cls"), agents=[agent("a", agent_class=cls)]))
                st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + js["name"])
                self.assertEqual(got["agents"][0]["agent_class"], cls)

    def test_unknown_tool(self):
        msg = self.refuse(crew(unique_name("tool"),
                               agents=[agent("a", tools=["rm_rf", "calculator"])]))
        self.assertTrue(msg.startswith("agents[0].tools[0]: unknown tool"), msg)

    def test_unknown_tool_second_position(self):
        msg = self.refuse(crew(unique_name("tool"),
                               agents=[agent("a"), agent("b", tools=["calculator", "nope"])]))
        self.assertTrue(msg.startswith("agents[1].tools[1]: unknown tool"), msg)

    def test_unknown_shared_tool(self):
        self.refuse(crew(unique_name("shared"), shared_tools=["teleport"]), "shared_tools")

    def test_builtin_tools_accepted(self):
        tools = ["calculator", "current_time", "http_get", "json_query"]
        js = self.srv.create(crew(unique_name("tools"), agents=[agent("a", tools=tools)],
                                  shared_tools=["calculator"]))
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + js["name"])
        self.assertEqual(got["agents"][0]["tools"], tools)

    def test_tools_not_a_list(self):
        self.refuse(crew(unique_name("tools"), agents=[agent("a", tools="calculator")]),
                    "agents[0].tools")

    def test_tool_not_a_string(self):
        self.refuse(crew(unique_name("tools"), agents=[agent("a", tools=[42])]),
                    "agents[0].tools[0]")


class TestAgents(ValidationCase):

    def test_duplicate_agent_ids(self):
        self.refuse(crew(unique_name("dupa"), agents=[agent("x"), agent("x")]), "x")

    def test_duplicate_keys_name_vs_agent_id(self):
        # keys are name-else-agent_id: both agents have key "x"
        self.refuse(crew(unique_name("dupk"), agents=[agent("x"), agent("y", name="x")]), "x")

    def test_duplicate_names(self):
        self.refuse(crew(unique_name("dupn"), agents=[agent("a", name="same"),
                                                      agent("b", name="same")]), "same")

    def test_empty_agents(self):
        self.refuse(crew(unique_name("empty"), agents=[]), "agents")

    def test_missing_agents(self):
        d = crew(unique_name("noagents"))
        del d["agents"]
        self.refuse(d, "agents")

    def test_agents_not_an_array(self):
        self.refuse(crew(unique_name("agobj"), agents={"agent_id": "a"}), "agents")

    def test_agent_not_an_object(self):
        self.refuse(crew(unique_name("agstr"), agents=["researcher"]), "agents[0]")

    def test_agent_missing_agent_id(self):
        self.refuse(crew(unique_name("noid"), agents=[{"name": "writer"}]), "agents[0].agent_id")

    def test_agent_id_wrong_type(self):
        self.refuse(crew(unique_name("idnum"), agents=[{"agent_id": 7}]), "agents[0].agent_id")

    def test_config_not_an_object(self):
        self.refuse(crew(unique_name("cfg"), agents=[agent("a", config="gpt-4")]),
                    "agents[0].config")

    def test_system_prompt_wrong_type(self):
        self.refuse(crew(unique_name("sp"), agents=[agent("a", system_prompt=["x"])]),
                    "agents[0].system_prompt")

    def test_unknown_llm(self):
        self.refuse(crew(unique_name("llm"), agents=[agent("a", config={"llm": "skynet"})]),
                    "agents[0].config.llm")

    def test_names_no_path_can_reach_are_refused(self):
        for name in (".", ".."):
            with self.subTest(name=name):
                self.refuse(crew(name), "name: '%s' cannot be used in a URL path" % name)

    def test_c1_control_characters_refused_in_names(self):
        self.refuse(crew("c1\u0085x"), "name: must not contain control characters")
        self.refuse(crew(unique_name("c1"), agents=[agent("a\u009bb")]),
                    "agents[0].agent_id: must not contain control characters")

    def test_long_non_ascii_value_keeps_the_message(self):
        # Regression: quoting a value cut mid-character made the message invalid UTF-8 and
        # the answer fell back to a bare "Bad Request", losing the field and the hint.
        long = "x" + "\u00e9" * 80
        for config in ({"llm": long}, {"llm": "openai:" + long, "model": "gpt-4"}):
            with self.subTest(config=list(config)):
                self.refuse(crew(unique_name("utf"), agents=[agent("a", config=config)]),
                            "agents[0].config.llm")

    def test_unknown_llm_second_agent(self):
        self.refuse(crew(unique_name("llm"), agents=[
            agent("a"), agent("b", config={"llm": "skynet:v9"})]), "agents[1].config.llm")


class TestFlow(ValidationCase):

    def test_relation_names_unknown_source(self):
        self.refuse(crew(unique_name("rel"), mode="flow",
                         flow_relations=[{"source": "ghost", "target": "writer"}]),
                    ["flow_relations", "ghost"])

    def test_relation_names_unknown_target_in_list(self):
        self.refuse(crew(unique_name("rel"), mode="flow",
                         flow_relations=[{"source": "researcher",
                                          "target": ["writer", "phantom"]}]),
                    ["flow_relations", "phantom"])

    def test_cycle_names_agents(self):
        msg = self.refuse(crew(unique_name("cyc"), mode="flow",
                               agents=[agent("alpha"), agent("beta"), agent("gamma")],
                               flow_relations=[{"source": "alpha", "target": "beta"},
                                               {"source": "beta", "target": "gamma"},
                                               {"source": "gamma", "target": "alpha"}]))
        self.assertIn("cycle", msg)
        for n in ("alpha", "beta", "gamma"):
            self.assertIn(n, msg)

    def test_cycle_not_through_first_agent(self):
        msg = self.refuse(crew(unique_name("cyc"), mode="flow",
                               agents=[agent("start"), agent("left"), agent("right")],
                               flow_relations=[{"source": "start", "target": "left"},
                                               {"source": "left", "target": "right"},
                                               {"source": "right", "target": "left"}]))
        self.assertIn("cycle", msg)
        self.assertIn("left", msg)
        self.assertIn("right", msg)

    def test_self_loop_is_a_cycle(self):
        msg = self.refuse(crew(unique_name("self"), mode="flow", agents=[agent("a"), agent("b")],
                               flow_relations=[{"source": "a", "target": "a"},
                                               {"source": "a", "target": "b"}]))
        self.assertIn("cycle", msg)

    def test_cycle_refused_even_outside_flow_mode(self):
        # plan.h: the graph is compiled whatever the mode (a job may override to flow)
        msg = self.refuse(crew(unique_name("cycseq"), mode="sequential",
                               agents=[agent("a"), agent("b")],
                               flow_relations=[{"source": "a", "target": "b"},
                                               {"source": "b", "target": "a"}]))
        self.assertIn("cycle", msg)

    def test_flow_without_relations(self):
        self.refuse(crew(unique_name("norel"), mode="flow", flow_relations=[]),
                    "flow_relations")

    def test_flow_relations_missing_entirely(self):
        d = crew(unique_name("norel2"), mode="flow")
        del d["flow_relations"]
        self.refuse(d, "flow_relations")

    def test_relation_wrong_type(self):
        self.refuse(crew(unique_name("reltype"), mode="flow",
                         flow_relations=[{"source": 1, "target": "writer"}]), "flow_relations")

    def test_relation_keys_by_agent_id_accepted(self):
        # relations may use either the key (name) or the agent_id
        self.srv.create(crew(unique_name("relid"), mode="flow",
                             agents=[agent("a1", name="r"), agent("a2", name="w")],
                             flow_relations=[{"source": "a1", "target": "w"}]))

    def test_diamond_accepted(self):
        self.srv.create(crew(unique_name("diamond"), mode="flow",
                             agents=[agent("a"), agent("b"), agent("c"), agent("d")],
                             flow_relations=[{"source": "a", "target": ["b", "c"]},
                                             {"source": ["b", "c"], "target": "d"}]))


class TestTopLevel(ValidationCase):

    def test_unknown_top_level_field(self):
        self.refuse(crew(unique_name("unk"), bogus_field=1), "bogus_field")

    def test_missing_name(self):
        d = crew("x")
        del d["name"]
        self.refuse(d, "name")

    def test_empty_name(self):
        self.refuse(crew(""), "name")

    def test_name_wrong_type(self):
        self.refuse(crew(42), "name")

    def test_reserved_names(self):
        for n in ("execute", "job", "jobs"):
            with self.subTest(name=n):
                self.refuse(crew(n), "name")

    def test_uuid_form_name(self):
        self.refuse(crew(str(uuid.uuid4())), "name")

    def test_max_parallel_tasks_as_string(self):
        self.refuse(crew(unique_name("mpt"), max_parallel_tasks="5"), "max_parallel_tasks")

    def test_max_parallel_tasks_out_of_range(self):
        for v in (0, -1, 1001, 2.5):
            with self.subTest(value=v):
                self.refuse(crew(unique_name("mpt"), max_parallel_tasks=v),
                            "max_parallel_tasks")

    def test_unknown_execution_mode(self):
        self.refuse(crew(unique_name("mode"), mode="turbo"), "execution_mode")

    def test_execution_mode_wrong_type(self):
        self.refuse(crew(unique_name("mode"), mode=3), "execution_mode")

    def test_description_wrong_type(self):
        self.refuse(crew(unique_name("desc"), description=["x"]), "description")

    def test_metadata_wrong_type(self):
        self.refuse(crew(unique_name("meta"), metadata="x"), "metadata")

    def test_shared_tools_wrong_type(self):
        self.refuse(crew(unique_name("st"), shared_tools="calculator"), "shared_tools")

    def test_crew_id_not_uuid(self):
        self.refuse(crew(unique_name("cid"), crew_id="not-a-uuid"), "crew_id")

    def test_body_not_an_object(self):
        for body in ([crew("x")], "crew", 42, None):
            with self.subTest(body=body):
                self.assertJsonError(self.srv.request(
                    "PUT", "/api/v1/crew", raw_body=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"}), 400)

    def test_empty_body(self):
        self.assertJsonError(self.srv.request("PUT", "/api/v1/crew", raw_body=b"",
                                              headers={"Content-Type": "application/json"}),
                             400)

    def test_server_owned_timestamps_ignored(self):
        name = unique_name("ts")
        js = self.srv.create(crew(name, created_at="1999-01-01T00:00:00Z",
                                  updated_at="1999-01-01T00:00:00Z"))
        self.assertFalse(js["created_at"].startswith("1999"), js)


class TestLimits(ValidationCase):
    """model/crew.h: CREW_MAX_AGENTS 100, CREW_MAX_NAME_BYTES 200."""

    def test_too_many_agents(self):
        self.refuse(crew(unique_name("many"), agents=[agent("a%d" % i) for i in range(101)]),
                    "agents")

    def test_hundred_agents_accepted(self):
        self.srv.create(crew(unique_name("hundred"), agents=[agent("a%d" % i)
                                                             for i in range(100)]))

    def test_name_too_long(self):
        self.refuse(crew("n" * 201), "name")


class TestValidationOnUpdate(ValidationCase):

    def test_update_validates_like_create(self):
        name = unique_name("updval")
        self.srv.create(crew(name))
        cases = [
            (crew(name, agents=[agent("a"), agent("b", agent_class="Foo")]),
             "agents[1].agent_class: unknown class 'Foo' "
             "(known: BaseAgent, Agent, BasicAgent, Chatbot)"),
            (crew(name, agents=[agent("a", tools=["nope"])]), "agents[0].tools[0]: unknown tool"),
            (crew(name, agents=[agent("a"), agent("a")]), None),
            (crew(name, mode="flow", agents=[agent("a"), agent("b")],
                  flow_relations=[{"source": "a", "target": "b"},
                                  {"source": "b", "target": "a"}]), "cycle"),
            (crew(name, bogus=True), "bogus"),
            (crew("job"), "name"),
        ]
        for d, expect in cases:
            with self.subTest(expect=expect):
                self.assertJsonError(self.srv.request("PUT", "/api/v1/crew/" + name, body=d),
                                     400, expect)
        st, _, got, _ = self.srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200)
        self.assertEqual([a["agent_id"] for a in got["agents"]], ["researcher", "writer"])


class TestProviderInference(CrewdTestCase):

    def provider_of(self, config):
        name = unique_name("prov")
        self.srv.create(crew(name, agents=[agent("a", agent_class="Agent", config=config)]))
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(st, 200, raw)
        agents = js["plan"]["agents"]
        a = list(agents.values())[0] if isinstance(agents, dict) else agents[0]
        return a["provider"], a["model"]

    def test_gpt_model_is_openai(self):
        self.assertEqual(self.provider_of({"model": "gpt-4"}), ("openai", "gpt-4"))

    def test_o_series_is_openai(self):
        self.assertEqual(self.provider_of({"model": "o3-mini"})[0], "openai")

    def test_claude_model_is_anthropic(self):
        self.assertEqual(self.provider_of({"model": "claude-sonnet-4-5"}),
                         ("anthropic", "claude-sonnet-4-5"))

    def test_gemini_model_is_google(self):
        self.assertEqual(self.provider_of({"model": "gemini-2.5-pro"}),
                         ("google", "gemini-2.5-pro"))

    def test_provider_colon_model(self):
        self.assertEqual(self.provider_of({"llm": "anthropic:claude-sonnet-4-5"}),
                         ("anthropic", "claude-sonnet-4-5"))

    def test_alias_claude(self):
        prov, model = self.provider_of({"llm": "claude"})
        self.assertEqual(prov, "anthropic")
        self.assertTrue(model, "a default model is filled in")

    def test_alias_gemini(self):
        self.assertEqual(self.provider_of({"llm": "gemini"})[0], "google")

    def test_explicit_llm_with_model(self):
        self.assertEqual(self.provider_of({"llm": "groq", "model": "llama-3.3-70b"}),
                         ("groq", "llama-3.3-70b"))


if __name__ == "__main__":
    unittest.main()
