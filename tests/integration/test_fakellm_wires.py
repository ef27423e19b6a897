"""crewd-fakellm's Anthropic Messages and Gemini generateContent wires, black-box over real
HTTP: reply shapes (as in shared/provider-refs/anthropic and gemini), usage, the same default
text as the OpenAI wire for the same conversation, directives, tool calls and their follow-up,
streaming framing, validation errors and the request log (fakellm/README.md)."""

import json
import unittest

from fakellm_harness import directive
from test_fakellm import FakeTestCase, expected_text, tag, tokens

# The keys of the live responses recorded in shared/provider-refs (recorded-exchanges.json):
# Anthropic's Message (nullable container / stop_details are omitted by the live API too) and
# Gemini's GenerateContentResponse and Candidate.
ANTHROPIC_MESSAGE_KEYS = {"id", "type", "role", "model", "content", "stop_reason",
                          "stop_sequence", "usage"}
GEMINI_RESPONSE_KEYS = {"candidates", "usageMetadata", "modelVersion", "responseId"}
GEMINI_USAGE_KEYS = {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}


def anthropic_sse(raw):
    """[(event name, data dict)] of an Anthropic stream; checks the framing as it goes."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    out = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name, block
        out.append((name, data))
    return out


def gemini_sse(raw):
    """The chunks of a Gemini alt=sse stream; checks the "data: X\\r\\n\\r\\n" framing."""
    text = raw.decode("utf-8")
    assert text.endswith("\r\n\r\n"), text[-200:]
    out = []
    for block in text[:-4].split("\r\n\r\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        out.append(json.loads(block[len("data: "):]))
    return out


class WireCase(FakeTestCase):

    def anthropic(self, messages, system=None, path="/v1/messages", **extra):
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = {"model": "claude-fake", "max_tokens": 1024, "messages": messages}
        if system is not None:
            body["system"] = system
        body.update(extra)
        return self.llm.request("POST", path, body=body,
                                headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})

    def gemini(self, contents, system=None, model="gemini-fake", method="generateContent",
               query="", prefix="/v1beta", **extra):
        if isinstance(contents, str):
            contents = [{"role": "user", "parts": [{"text": contents}]}]
        body = {"contents": contents}
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        body.update(extra)
        return self.llm.request("POST", "%s/models/%s:%s%s" % (prefix, model, method, query),
                                body=body, headers={"x-goog-api-key": "k"})

    def openai_text(self, messages):
        st, _, js, raw = self.llm.chat(messages)
        self.assertEqual(st, 200, raw)
        return js["choices"][0]["message"]["content"]

    def assertAnthropicError(self, resp, status, etype):
        st, hdrs, js, raw = resp
        self.assertEqual(st, status, raw[:2000])
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"), raw)
        self.assertEqual(set(js), {"type", "error", "request_id"}, raw)
        self.assertEqual(js["type"], "error")
        self.assertEqual(set(js["error"]), {"type", "message"}, raw)
        self.assertEqual(js["error"]["type"], etype, raw)
        self.assertTrue(js["error"]["message"])
        self.assertEqual(hdrs.get_all("x-request-id"), [js["request_id"]])
        return js["error"]

    def assertGeminiError(self, resp, status, name):
        st, hdrs, js, raw = resp
        self.assertEqual(st, status, raw[:2000])
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"), raw)
        self.assertEqual(set(js), {"error"}, raw)
        self.assertEqual(set(js["error"]), {"code", "message", "status"}, raw)
        self.assertEqual(js["error"]["code"], status)
        self.assertEqual(js["error"]["status"], name, raw)
        self.assertTrue(js["error"]["message"])
        return js["error"]


# -------------------------------------------------------------------------------------------

class TestAnthropic(WireCase):

    def test_reply_shape_usage_and_same_text(self):
        t = tag()
        system = "You are terse."
        user = "Hello there, fake " + t
        st, hdrs, js, raw = self.anthropic(user, system=system)
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"))
        self.assertRegex(hdrs.get("x-request-id"), r"^req_fake_\d+$")
        self.assertEqual(set(js), ANTHROPIC_MESSAGE_KEYS)
        self.assertRegex(js["id"], r"^msg_fake_\d+$")
        self.assertEqual((js["type"], js["role"], js["model"]),
                         ("message", "assistant", "claude-fake"))
        self.assertEqual(js["stop_reason"], "end_turn")
        self.assertIsNone(js["stop_sequence"])
        oa = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = expected_text(oa)
        self.assertEqual(js["content"], [{"type": "text", "text": text}])
        self.assertEqual(text, self.openai_text(oa))
        self.assertEqual(js["usage"]["input_tokens"], tokens(len(system) + len(user)))
        self.assertEqual(js["usage"]["output_tokens"], tokens(len(text.encode())))
        # System as text blocks, content as blocks: the same conversation.
        st, _, js2, raw = self.anthropic(
            [{"role": "user", "content": [{"type": "text", "text": "Hello there, "},
                                          {"type": "text", "text": "fake " + t}]}],
            system=[{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}])
        self.assertEqual(st, 200, raw)
        self.assertEqual(js2["content"][0]["text"], text)

    def test_multi_turn_and_tool_round_same_text_as_openai(self):
        t = tag()
        oa = [{"role": "system", "content": "sys " + t},
              {"role": "user", "content": "first question"},
              {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c1", "type": "function",
                               "function": {"name": "f", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c1", "content": "result one"},
              {"role": "assistant", "content": "an answer"},
              {"role": "user", "content": "second\nquestion  "}]
        an = [{"role": "user", "content": "first question"},
              {"role": "assistant", "content": [
                  {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
              {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_1",
                   "content": [{"type": "text", "text": "result one"}]}]},
              {"role": "assistant", "content": "an answer"},
              {"role": "user", "content": "second\nquestion  "}]
        st, _, js, raw = self.anthropic(an, system="sys " + t)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["content"][0]["text"], expected_text(oa))
        self.assertEqual(js["content"][0]["text"], self.openai_text(oa))

    def test_paths(self):
        for path in ("/v1/messages", "/anthropic/v1/messages", "/messages"):
            st, _, js, raw = self.anthropic("hi " + tag(), path=path)
            self.assertEqual(st, 200, (path, raw))
            self.assertEqual(js["type"], "message")
        self.assertAnthropicError(self.llm.request("GET", "/v1/messages"), 405,
                                  "invalid_request_error")

    def test_reply_and_reply_seq(self):
        st, _, js, raw = self.anthropic("x " + directive("reply", "YES"))
        self.assertEqual((st, js["content"]), (200, [{"type": "text", "text": "YES"}]), raw)
        d = directive("reply_seq", "a-%s|b" % tag())
        got = [self.anthropic("q " + d)[2]["content"][0]["text"] for _ in range(3)]
        self.assertEqual([g[0] for g in got], ["a", "b", "b"])
        # A directive in the system prompt counts too.
        st, _, js, raw = self.anthropic("x", system="s " + directive("reply", "SYS"))
        self.assertEqual(js["content"][0]["text"], "SYS", raw)

    def test_status_directives(self):
        resp = self.anthropic("x " + tag() + directive("status", "429"))
        self.assertAnthropicError(resp, 429, "rate_limit_error")
        self.assertEqual(resp[1].get("Retry-After"), "1")
        for code, etype in ((500, "api_error"), (529, "overloaded_error"),
                            (503, "api_error"), (400, "invalid_request_error"),
                            (401, "authentication_error"), (404, "not_found_error")):
            err = self.assertAnthropicError(
                self.anthropic("x " + directive("status", str(code))), code, etype)
            self.assertEqual(err["message"], "fake error %d" % code)
        # Failing streamed calls get the plain JSON error too.
        self.assertAnthropicError(self.anthropic("x " + directive("status", "529"), stream=True),
                                  529, "overloaded_error")
        # fail_times then success, keyed by the conversation.
        msg = "ft " + tag() + directive("fail_times", "1") + directive("status", "529")
        self.assertAnthropicError(self.anthropic(msg), 529, "overloaded_error")
        self.assertEqual(self.anthropic(msg)[0], 200)

    def test_tool_use_then_results(self):
        t = tag()
        user = {"role": "user", "content": "weather? " + t +
                directive("tool", 'get_weather:{"city":"Paris","n":[1,2]}') +
                directive("tool", "lookup:{}")}
        st, _, js, raw = self.anthropic([user])
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["stop_reason"], "tool_use")
        n = js["id"].rsplit("_", 1)[1]
        self.assertEqual(js["content"], [
            {"type": "tool_use", "id": "toolu_fake_%s_0" % n, "name": "get_weather",
             "input": {"city": "Paris", "n": [1, 2]}},
            {"type": "tool_use", "id": "toolu_fake_%s_1" % n, "name": "lookup", "input": {}}])
        self.assertEqual(js["usage"]["output_tokens"],
                         tokens(len("get_weather") + len('{"city":"Paris","n":[1,2]}') +
                                len("lookup") + len("{}")))
        follow = [user, {"role": "assistant", "content": js["content"]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": js["content"][0]["id"],
                       "content": "sunny, 21C"},
                      {"type": "tool_result", "tool_use_id": js["content"][1]["id"],
                       "content": [{"type": "text", "text": "noth"},
                                   {"type": "text", "text": "ing"}], "is_error": True}]}]
        st, _, js, raw = self.anthropic(follow)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["stop_reason"], "end_turn")
        self.assertEqual(js["content"], [{"type": "text",
                                          "text": "tool results: sunny, 21C | nothing"}])

    def test_tool_choice_none_gets_text(self):
        user = "weather? " + tag() + directive("tool", 'get_weather:{"city":"Paris"}') + \
            directive("reply", "no tools")
        st, _, js, raw = self.anthropic(user, tool_choice={"type": "none"})
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["stop_reason"], "end_turn")
        self.assertEqual(js["content"], [{"type": "text", "text": "no tools"}])

    def test_text_stream(self):
        msgs = "stream ünïcode text please, quite long " + tag()
        st, _, full, _ = self.anthropic(msgs)
        st, hdrs, _, raw = self.anthropic(msgs, stream=True)
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("text/event-stream"))
        events = anthropic_sse(raw)
        names = [e[0] for e in events]
        n_deltas = names.count("content_block_delta")
        self.assertEqual(names, ["message_start", "content_block_start", "ping"] +
                         ["content_block_delta"] * n_deltas +
                         ["content_block_stop", "message_delta", "message_stop"])
        start = events[0][1]["message"]
        self.assertEqual(set(start), ANTHROPIC_MESSAGE_KEYS)
        self.assertEqual((start["content"], start["stop_reason"]), ([], None))
        self.assertEqual(start["usage"]["input_tokens"], full["usage"]["input_tokens"])
        self.assertEqual(events[1][1], {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
        text = ""
        for _, d in events[3:3 + n_deltas]:
            self.assertEqual(d["index"], 0)
            self.assertEqual(d["delta"]["type"], "text_delta")
            self.assertLessEqual(len(d["delta"]["text"].encode()), 8)
            text += d["delta"]["text"]
        self.assertEqual(text, full["content"][0]["text"])
        self.assertEqual(events[-3][1], {"type": "content_block_stop", "index": 0})
        self.assertEqual(events[-2][1], {
            "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": full["usage"]["output_tokens"]}})
        self.assertEqual(events[-1][1], {"type": "message_stop"})

    def test_tool_use_stream(self):
        args0 = '{"city": "Paris", "days": [1, 2, 3]}'
        msg = "t " + tag() + directive("tool", "get_weather:" + args0) + \
            directive("tool", "noop:")
        st, _, _, raw = self.anthropic(msg, stream=True)
        self.assertEqual(st, 200, raw)
        events = anthropic_sse(raw)
        n = events[0][1]["message"]["id"].rsplit("_", 1)[1]
        blocks = {}
        order = []
        for name, d in events:
            if name == "content_block_start":
                self.assertEqual(d["content_block"]["type"], "tool_use")
                self.assertEqual(d["content_block"]["input"], {})
                self.assertEqual(d["content_block"]["id"], "toolu_fake_%s_%d" % (n, d["index"]))
                blocks[d["index"]] = [d["content_block"]["name"], ""]
                order.append(("start", d["index"]))
            elif name == "content_block_delta":
                self.assertEqual(d["delta"]["type"], "input_json_delta")
                blocks[d["index"]][1] += d["delta"]["partial_json"]
            elif name == "content_block_stop":
                order.append(("stop", d["index"]))
        self.assertEqual(order, [("start", 0), ("stop", 0), ("start", 1), ("stop", 1)])
        self.assertEqual(blocks[0][0], "get_weather")
        self.assertEqual(json.loads(blocks[0][1]), {"city": "Paris", "days": [1, 2, 3]})
        self.assertEqual(blocks[1], ["noop", ""])  # empty ARGS_JSON is the input {}
        self.assertEqual(events[-2][1]["delta"]["stop_reason"], "tool_use")

    def test_validation_errors(self):
        cases = [b"not json", b"[1]", b"{}",
                 b'{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","max_tokens":"5","messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","max_tokens":5}',
                 b'{"model":"m","max_tokens":5,"messages":[]}',
                 b'{"model":"m","max_tokens":5,"messages":["x"]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[5]}]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":'
                 b'[{"type":"text"}]}]}',
                 b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":'
                 b'[{"type":"tool_result","content":"x"}]}]}',
                 b'{"model":"m","max_tokens":5,"system":7,'
                 b'"messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","max_tokens":5,"system":[{"type":"image"}],'
                 b'"messages":[{"role":"user","content":"x"}]}',
                 b'{"model":"m","max_tokens":5,"stream":"yes",'
                 b'"messages":[{"role":"user","content":"x"}]}']
        for body in cases:
            resp = self.llm.request("POST", "/v1/messages", raw_body=body,
                                    headers={"Content-Type": "application/json"})
            self.assertAnthropicError(resp, 400, "invalid_request_error")
        err = self.assertAnthropicError(self.anthropic("x [[fake:nope=1]]"), 400,
                                        "invalid_request_error")
        self.assertIn("unknown fake directive", err["message"])
        err = self.assertAnthropicError(self.anthropic("x" + directive("tool", "f:[1]")), 400,
                                        "invalid_request_error")
        self.assertIn("JSON object", err["message"])

    def test_request_log(self):
        self.llm.clear()
        self.anthropic("logged " + tag())
        entry = self.llm.wait_requests(1)[-1]
        self.assertEqual((entry["method"], entry["path"], entry["status"]),
                         ("POST", "/v1/messages", 200))
        self.assertEqual(entry["body"]["model"], "claude-fake")
        self.assertEqual(entry["headers"]["anthropic-version"], "2023-06-01")


# -------------------------------------------------------------------------------------------

class TestGemini(WireCase):

    def test_reply_shape_usage_and_same_text(self):
        t = tag()
        system, user = "You are terse.", "Hello there, fake " + t
        st, hdrs, js, raw = self.gemini(user, system=system, model="gemini-2.5-flash")
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"))
        self.assertRegex(hdrs.get("x-request-id"), r"^req_fake_\d+$")
        self.assertEqual(set(js), GEMINI_RESPONSE_KEYS)
        self.assertEqual(js["modelVersion"], "gemini-2.5-flash")
        oa = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = expected_text(oa)
        self.assertEqual(text, self.openai_text(oa))
        self.assertEqual(js["candidates"], [{"content": {"role": "model",
                                                         "parts": [{"text": text}]},
                                             "finishReason": "STOP", "index": 0}])
        p, c = tokens(len(system) + len(user)), tokens(len(text.encode()))
        self.assertEqual(js["usageMetadata"], {"promptTokenCount": p, "candidatesTokenCount": c,
                                               "totalTokenCount": p + c})
        # Several text parts, and a content without a role (the API takes it as user).
        st, _, js2, raw = self.gemini(
            [{"parts": [{"text": "Hello there, "}, {"text": "fake " + t}]}],
            systemInstruction={"parts": [{"text": "You are "}, {"text": "terse."}]})
        self.assertEqual(st, 200, raw)
        self.assertEqual(js2["candidates"][0]["content"]["parts"][0]["text"], text)

    def test_multi_turn_and_tool_round_same_text_as_openai(self):
        t = tag()
        oa = [{"role": "system", "content": "sys " + t},
              {"role": "user", "content": "first question"},
              {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c1", "type": "function",
                               "function": {"name": "f", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c1", "content": "result one"},
              {"role": "tool", "tool_call_id": "c2", "content": '{"n":42}'},
              {"role": "assistant", "content": "an answer"},
              {"role": "user", "content": "second question"}]
        ge = [{"role": "user", "parts": [{"text": "first question"}]},
              {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
              {"role": "user", "parts": [
                  {"functionResponse": {"name": "f", "response": {"output": "result one"}}},
                  {"functionResponse": {"name": "g", "response": {"n": 42}}}]},
              {"role": "model", "parts": [{"text": "an "}, {"text": "answer"}]},
              {"role": "user", "parts": [{"text": "second question"}]}]
        st, _, js, raw = self.gemini(ge, system="sys " + t)
        self.assertEqual(st, 200, raw)
        text = js["candidates"][0]["content"]["parts"][0]["text"]
        self.assertEqual(text, expected_text(oa))
        self.assertEqual(text, self.openai_text(oa))

    def test_paths(self):
        for prefix in ("/v1beta", "/v1", "/gemini/v1beta"):
            st, _, js, raw = self.gemini("hi " + tag(), prefix=prefix, model="m-1.5")
            self.assertEqual(st, 200, (prefix, raw))
            self.assertEqual(js["modelVersion"], "m-1.5")
        st, _, js, raw = self.gemini("hi", method="countTokens")
        self.assertEqual(st, 404, raw)
        self.assertGeminiError(self.llm.request("GET", "/v1beta/models/m:generateContent"), 405,
                               "UNIMPLEMENTED")

    def test_reply_directives(self):
        st, _, js, raw = self.gemini("x " + directive("reply", "YES"))
        self.assertEqual(js["candidates"][0]["content"]["parts"], [{"text": "YES"}], raw)
        st, _, js, raw = self.gemini("x", system="s " + directive("reply", "SYS"))
        self.assertEqual(js["candidates"][0]["content"]["parts"], [{"text": "SYS"}], raw)

    def test_status_directives(self):
        resp = self.gemini("x " + tag() + directive("status", "429"))
        self.assertGeminiError(resp, 429, "RESOURCE_EXHAUSTED")
        self.assertEqual(resp[1].get("Retry-After"), "1")
        for code, name in ((500, "INTERNAL"), (503, "UNAVAILABLE"), (400, "INVALID_ARGUMENT"),
                           (404, "NOT_FOUND"), (504, "DEADLINE_EXCEEDED")):
            err = self.assertGeminiError(self.gemini("x " + directive("status", str(code))),
                                         code, name)
            self.assertEqual(err["message"], "fake error %d" % code)
        self.assertGeminiError(self.gemini("x " + directive("status", "503"),
                                           method="streamGenerateContent", query="?alt=sse"),
                               503, "UNAVAILABLE")

    def test_function_calling_mode_none_gets_text(self):
        user = "weather? " + tag() + directive("tool", 'get_weather:{"city":"Paris"}') + \
            directive("reply", "no tools")
        st, _, js, raw = self.gemini(user, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["candidates"][0]["content"]["parts"], [{"text": "no tools"}])

    def test_function_call_then_response(self):
        t = tag()
        user = {"role": "user", "parts": [{"text": "weather? " + t + directive(
            "tool", 'get_weather:{"city":"Paris"}') + directive("tool", "lookup:{}")}]}
        st, _, js, raw = self.gemini([user])
        self.assertEqual(st, 200, raw)
        cand = js["candidates"][0]
        self.assertEqual(cand["finishReason"], "STOP")
        self.assertEqual(cand["content"], {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "lookup", "args": {}}}]})
        follow = [user, cand["content"],
                  {"role": "user", "parts": [
                      {"functionResponse": {"name": "get_weather",
                                            "response": {"output": "sunny, 21C"}}},
                      {"functionResponse": {"name": "lookup", "response": {"hits": [1]}}}]}]
        st, _, js, raw = self.gemini(follow)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["candidates"][0]["content"]["parts"],
                         [{"text": 'tool results: sunny, 21C | {"hits":[1]}'}])

    def test_text_stream(self):
        msg = "stream ünïcode text please, quite long " + tag()
        _, _, full, _ = self.gemini(msg)
        st, hdrs, _, raw = self.gemini(msg, method="streamGenerateContent", query="?alt=sse")
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("text/event-stream"))
        chunks = gemini_sse(raw)
        self.assertGreater(len(chunks), 1)
        text = ""
        last_total = 0
        for i, c in enumerate(chunks):
            self.assertEqual(set(c), GEMINI_RESPONSE_KEYS)
            self.assertEqual(c["responseId"], chunks[0]["responseId"])
            cand = c["candidates"][0]
            self.assertEqual(cand["content"]["role"], "model")
            self.assertEqual(cand["index"], 0)
            self.assertEqual("finishReason" in cand, i == len(chunks) - 1)
            text += cand["content"]["parts"][0]["text"]
            u = c["usageMetadata"]
            self.assertEqual(set(u), GEMINI_USAGE_KEYS)
            self.assertEqual(u["promptTokenCount"], full["usageMetadata"]["promptTokenCount"])
            self.assertGreaterEqual(u["totalTokenCount"], last_total)
            last_total = u["totalTokenCount"]
        self.assertEqual(chunks[-1]["candidates"][0]["finishReason"], "STOP")
        self.assertEqual(text, full["candidates"][0]["content"]["parts"][0]["text"])
        self.assertEqual(chunks[-1]["usageMetadata"], full["usageMetadata"])
        # Without alt=sse: one JSON array of the same chunks.
        st, hdrs, js, raw = self.gemini(msg, method="streamGenerateContent")
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"))
        self.assertEqual("".join(c["candidates"][0]["content"]["parts"][0]["text"]
                                 for c in js), text)

    def test_function_call_stream(self):
        msg = "t " + tag() + directive("tool", 'get_weather:{"city": "Paris"}')
        st, _, _, raw = self.gemini(msg, method="streamGenerateContent", query="?alt=sse")
        self.assertEqual(st, 200, raw)
        chunks = gemini_sse(raw)
        self.assertEqual(len(chunks), 1)
        cand = chunks[0]["candidates"][0]
        self.assertEqual(cand["finishReason"], "STOP")
        self.assertEqual(cand["content"]["parts"],
                         [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}])

    def test_validation_errors(self):
        cases = [b"not json", b"[1]", b"{}", b'{"contents":[]}', b'{"contents":{}}',
                 b'{"contents":["x"]}', b'{"contents":[{"role":"user"}]}',
                 b'{"contents":[{"role":"user","parts":[]}]}',
                 b'{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}',
                 b'{"contents":[{"role":"user","parts":[{"text":5}]}]}',
                 b'{"contents":[{"role":"user","parts":["x"]}]}',
                 b'{"contents":[{"role":"user","parts":[{"functionResponse":{}}]}]}',
                 b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],'
                 b'"systemInstruction":"x"}',
                 b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],'
                 b'"systemInstruction":{"parts":[]}}']
        for body in cases:
            resp = self.llm.request("POST", "/v1beta/models/m:generateContent", raw_body=body,
                                    headers={"Content-Type": "application/json"})
            self.assertGeminiError(resp, 400, "INVALID_ARGUMENT")
        err = self.assertGeminiError(self.gemini("x [[fake:status=99]]"), 400,
                                     "INVALID_ARGUMENT")
        self.assertIn("status", err["message"])
        self.assertGeminiError(self.gemini("x" + directive("tool", "f:1")), 400,
                               "INVALID_ARGUMENT")

    def test_request_log(self):
        self.llm.clear()
        self.gemini("logged " + tag(), model="gemini-2.5-flash",
                    method="streamGenerateContent", query="?alt=sse")
        entry = self.llm.wait_requests(1)[-1]
        self.assertEqual((entry["method"], entry["path"], entry["status"]),
                         ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", 200))
        self.assertIn("contents", entry["body"])
        self.assertEqual(entry["headers"]["x-goog-api-key"], "k")


class TestWiresWithLatency(WireCase):
    ARGS = ["--latency-ms", "30"]

    def test_latency_and_delay(self):
        # Latency and delay_ms go through the same timer for every wire.
        st, hdrs, js, raw = self.anthropic("x " + directive("delay_ms", "1"), stream=True)
        self.assertEqual(st, 200, raw)
        self.assertEqual(len(hdrs.get_all("x-request-id")), 1)
        st, _, js, raw = self.gemini("x " + tag(), method="streamGenerateContent",
                                     query="?alt=sse")
        self.assertEqual(st, 200, raw)
        self.assertEqual(gemini_sse(raw)[-1]["candidates"][0]["finishReason"], "STOP")


if __name__ == "__main__":
    unittest.main()
