"""The fake LLM server itself (crewd-fakellm): the reply shapes, every directive, streaming,
errors, the request log and the control endpoints. Other suites rely on all of this when they
point crewd at the fake, so it is checked here first, black-box over real HTTP."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
import uuid

from fakellm_harness import (FAKELLM_BIN, FakeLLM, IO_TIMEOUT_S, START_TIMEOUT_S, directive,
                             parse_sse, wait_for)

# -------------------------------------------------------------------------------------------
# The default reply text, computed independently of the server (fakellm/README.md).

DIRECTIVE_RE = re.compile(r"\[\[fake:.*?\]\]", re.S)


def content_text(msg):
    c = msg.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "".join(p["text"] for p in c
                       if isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str))
    return ""


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def utf8_cut(b, n):
    if len(b) <= n:
        return b
    while n > 0 and (b[n] & 0xC0) == 0x80:
        n -= 1
    return b[:n]


def expected_text(messages):
    data = b"".join(m["role"].encode() + b"\n" + content_text(m).encode() + b"\n"
                    for m in messages)
    h = "%016x" % fnv1a64(data)
    users = [m for m in messages if m["role"] == "user"]
    excerpt = ""
    if users:
        t = DIRECTIVE_RE.sub("", content_text(users[-1]))
        t = t.replace("\r", " ").replace("\n", " ").strip(" ")
        excerpt = utf8_cut(t.encode(), 60).decode().rstrip(" ")
    return "fake-reply %s: %s" % (h[:8], excerpt)


def tokens(n_bytes):
    return max(1, -(-n_bytes // 4))


def tag():
    """A token that makes a directive or a conversation unique to one test."""
    return uuid.uuid4().hex[:10]


def run_fakellm(args, timeout=START_TIMEOUT_S):
    p = subprocess.run([FAKELLM_BIN] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, check=False)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class FakeTestCase(unittest.TestCase):
    """One shared fake per class, stopped with SIGTERM (exit status 0 asserted)."""
    ARGS = []
    llm = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.llm = FakeLLM(cls.ARGS)
        cls.addClassCleanup(cls.llm.stop)

    def start_fake(self, args):
        llm = FakeLLM(args)
        self.addCleanup(llm.stop)
        return llm

    def assertOpenAIError(self, resp, status):
        st, hdrs, js, raw = resp
        self.assertEqual(st, status, raw[:2000])
        self.assertTrue((hdrs.get("Content-Type") or "").startswith("application/json"), raw)
        self.assertIsInstance(js, dict, raw)
        err = js.get("error")
        self.assertIsInstance(err, dict, raw)
        self.assertEqual(set(err), {"message", "type", "param", "code"}, raw)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        self.assertIsInstance(err["type"], str)
        self.assertIsNone(err["param"])
        return err


# -------------------------------------------------------------------------------------------

class TestReplies(FakeTestCase):

    def test_reply_shape_and_usage(self):
        msgs = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello there, fake " + tag()}]
        st, hdrs, js, raw = self.llm.chat(msgs, model="gpt-4o-mini")
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("application/json"))
        self.assertRegex(js["id"], r"^chatcmpl-fake-\d+$")
        self.assertEqual(js["object"], "chat.completion")
        self.assertIsInstance(js["created"], int)
        self.assertLess(abs(js["created"] - time.time()), 600)
        self.assertEqual(js["model"], "gpt-4o-mini")
        self.assertEqual(len(js["choices"]), 1)
        choice = js["choices"][0]
        self.assertEqual(choice["index"], 0)
        self.assertIsNone(choice["logprobs"])
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertEqual(choice["message"],
                         {"role": "assistant", "content": expected_text(msgs),
                          "refusal": None})
        text = choice["message"]["content"]
        p = tokens(sum(len(m["content"].encode()) for m in msgs))
        c = tokens(len(text.encode()))
        self.assertEqual(js["usage"], {"prompt_tokens": p, "completion_tokens": c,
                                       "total_tokens": p + c})

    def test_default_text_rules(self):
        # Directives removed, newlines made spaces, trimmed, cut at 60 bytes on a character
        # boundary; array content counts its text parts; the LAST user message is quoted.
        long_tail = "é" * 40
        msgs = [{"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": [
                    {"type": "text", "text": "  line one\n[[fake:delay_ms=0]]line two "},
                    {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                    {"type": "text", "text": long_tail}]}]
        st, _, js, raw = self.llm.chat(msgs)
        self.assertEqual(st, 200, raw)
        text = js["choices"][0]["message"]["content"]
        self.assertEqual(text, expected_text(msgs))
        self.assertTrue(text.startswith("fake-reply "))
        self.assertIn(": line one line two", text)
        self.assertNotIn("fake:", text)
        excerpt = text.split(": ", 1)[1]
        self.assertLessEqual(len(excerpt.encode()), 60)

    def test_determinism(self):
        msgs = [{"role": "user", "content": "same question " + tag()}]
        a = self.llm.chat(msgs)[2]["choices"][0]["message"]["content"]
        b = self.llm.chat(msgs)[2]["choices"][0]["message"]["content"]
        self.assertEqual(a, b)
        other = [{"role": "system", "content": "x"}] + msgs
        c = self.llm.chat(other)[2]["choices"][0]["message"]["content"]
        self.assertNotEqual(a, c)  # same excerpt, different hash
        d = self.llm.chat(msgs[0]["content"] + "!")[2]["choices"][0]["message"]["content"]
        self.assertNotEqual(a, d)

    def test_paths(self):
        for path in ("/v1/chat/completions", "/openai/v1/chat/completions",
                     "/chat/completions"):
            st, _, js, raw = self.llm.chat("hi", path=path)
            self.assertEqual(st, 200, "%s: %r" % (path, raw))
            self.assertEqual(js["object"], "chat.completion")
        self.assertOpenAIError(self.llm.request("GET", "/v1/models"), 404)
        self.assertOpenAIError(self.llm.request("GET", "/v1/chat/completions"), 405)
        self.assertOpenAIError(self.llm.request("GET", "/_fake/nope"), 404)

    def test_reply_directive(self):
        st, _, js, raw = self.llm.chat("Say it. " + directive("reply", "Exactly this, ünïcode."))
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["choices"][0]["message"]["content"], "Exactly this, ünïcode.")
        self.assertEqual(js["usage"]["completion_tokens"],
                         tokens(len("Exactly this, ünïcode.".encode())))

    def test_directive_in_system_message(self):
        msgs = [{"role": "system", "content": "judge " + directive("reply", "SYS")},
                {"role": "user", "content": "anything"}]
        self.assertEqual(self.llm.chat(msgs)[2]["choices"][0]["message"]["content"], "SYS")

    def test_reply_seq(self):
        d = directive("reply_seq", "NO %s|MAYBE|YES" % tag())
        got = [self.llm.chat("Is it done? " + d)[2]["choices"][0]["message"]["content"]
               for _ in range(5)]
        first = got[0]
        self.assertTrue(first.startswith("NO "))
        self.assertEqual(got[1:], ["MAYBE", "YES", "YES", "YES"])
        # The counter belongs to the directive string, not to the conversation.
        other = [{"role": "system", "content": "another agent"},
                 {"role": "user", "content": d}]
        self.assertEqual(self.llm.chat(other)[2]["choices"][0]["message"]["content"], "YES")

    def test_status_429_retry_after(self):
        resp = self.llm.chat("rate me " + directive("status", "429"))
        err = self.assertOpenAIError(resp, 429)
        self.assertEqual(err["message"], "fake error 429")
        self.assertEqual(err["code"], "rate_limit_exceeded")
        self.assertEqual(resp[1].get("Retry-After"), "1")
        self.assertIsNone(resp[1].get("retry-after-ms"))

    def test_status_other_codes(self):
        for code in (400, 401, 500, 503):
            err = self.assertOpenAIError(self.llm.chat("x " + directive("status", code)), code)
            self.assertEqual(err["message"], "fake error %d" % code)
        resp = self.llm.chat("x " + directive("status", "503"))
        self.assertIsNone(resp[1].get("Retry-After"))

    def test_retry_after_ms(self):
        resp = self.llm.chat("slow down " + directive("status", "503") +
                             directive("retry_after_ms", "1500"))
        self.assertOpenAIError(resp, 503)
        self.assertEqual(resp[1].get("retry-after-ms"), "1500")
        self.assertEqual(resp[1].get("Retry-After"), "2")
        resp = self.llm.chat("slow down " + directive("status", "429") +
                             directive("retry_after_ms", "250"))
        self.assertEqual(resp[1].get("retry-after-ms"), "250")
        self.assertEqual(resp[1].get("Retry-After"), "1")

    def test_fail_times(self):
        msg = "flaky " + tag() + directive("fail_times", "2")
        statuses = [self.llm.chat(msg)[0] for _ in range(4)]
        self.assertEqual(statuses, [500, 500, 200, 200])
        msg = "flaky " + tag() + directive("fail_times", "1") + directive("status", "503")
        self.assertOpenAIError(self.llm.chat(msg), 503)
        st, _, js, raw = self.llm.chat(msg)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["choices"][0]["message"]["content"],
                         expected_text([{"role": "user", "content": msg}]))
        # A different conversation with the same directive has its own count.
        other = "other " + tag() + directive("fail_times", "1")
        self.assertEqual(self.llm.chat(other)[0], 500)

    def test_delay_ms_orders_replies(self):
        slow_tag = tag()
        done = []
        lock = threading.Lock()

        def call(label, text):
            st = self.llm.chat(text)[0]
            with lock:
                done.append((label, st))

        since = self.llm.requests_total()
        slow = threading.Thread(target=call, args=(
            "slow", "slow " + slow_tag + directive("delay_ms", "3000")))
        slow.start()
        self.llm.wait_requests(1, since=since)
        call("fast", "fast " + directive("delay_ms", "0"))
        with lock:
            self.assertEqual(done, [("fast", 200)], "the fast call should finish first")
        slow.join(timeout=IO_TIMEOUT_S)
        self.assertFalse(slow.is_alive())
        self.assertEqual(done, [("fast", 200), ("slow", 200)])

    def test_tool_calls_then_results(self):
        t = tag()
        user = {"role": "user", "content": "weather? " + t +
                directive("tool", 'get_weather:{"city":"Paris"}') +
                directive("tool", "lookup:{}")}
        st, _, js, raw = self.llm.chat([user])
        self.assertEqual(st, 200, raw)
        choice = js["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        msg = choice["message"]
        self.assertIsNone(msg["content"])
        n = js["id"].rsplit("-", 1)[1]
        self.assertEqual(msg["tool_calls"], [
            {"id": "call_fake_%s_0" % n, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_fake_%s_1" % n, "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}])
        self.assertEqual(json.loads(msg["tool_calls"][0]["function"]["arguments"]),
                         {"city": "Paris"})
        follow = [user, {"role": "assistant", "content": None, "tool_calls": msg["tool_calls"]},
                  {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"],
                   "content": "sunny, 21C"},
                  {"role": "tool", "tool_call_id": msg["tool_calls"][1]["id"],
                   "content": "nothing"}]
        st, _, js, raw = self.llm.chat(follow)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["choices"][0]["finish_reason"], "stop")
        self.assertEqual(js["choices"][0]["message"]["content"],
                         "tool results: sunny, 21C | nothing")

    def test_tool_choice_none_gets_text(self):
        user = "weather? " + tag() + directive("tool", 'get_weather:{"city":"Paris"}')
        st, _, js, raw = self.llm.chat(user, tool_choice="none")
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["choices"][0]["finish_reason"], "stop")
        self.assertNotIn("tool_calls", js["choices"][0]["message"])

    def test_bad_bodies_400(self):
        cases = [b"not json", b"[1,2]", b"{}", b'{"model":1,"messages":[{"role":"user"}]}',
                 b'{"model":"m"}', b'{"model":"m","messages":[]}',
                 b'{"model":"m","messages":{}}', b'{"model":"m","messages":["hi"]}',
                 b'{"model":"m","messages":[{"content":"no role"}]}',
                 b'{"model":"m","messages":[{"role":5}]}', b""]
        for body in cases:
            resp = self.llm.request("POST", "/v1/chat/completions", raw_body=body,
                                    headers={"Content-Type": "application/json"})
            err = self.assertOpenAIError(resp, 400)
            self.assertEqual(err["type"], "invalid_request_error", body)
        err = self.assertOpenAIError(self.llm.chat("x " + directive("nonsense", "1")), 400)
        self.assertIn("nonsense", err["message"])
        self.assertOpenAIError(self.llm.chat("x " + directive("status", "abc")), 400)

    def test_oversized_body_413(self):
        body = b'{"model":"m","messages":[{"role":"user","content":"' + \
            b"a" * (8 * 1024 * 1024) + b'"}]}'
        resp = self.llm.request("POST", "/v1/chat/completions", raw_body=body,
                                headers={"Content-Type": "application/json"})
        err = self.assertOpenAIError(resp, 413)
        self.assertEqual(err["type"], "invalid_request_error")

    def test_malformed_http_gets_json(self):
        with socket.create_connection(("127.0.0.1", self.llm.port), timeout=IO_TIMEOUT_S) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data)
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(body["error"]["type"], "invalid_request_error")


class TestStreaming(FakeTestCase):

    def stream(self, messages, include_usage=None):
        extra = {"stream": True}
        if include_usage is not None:
            extra["stream_options"] = {"include_usage": include_usage}
        st, hdrs, _, raw = self.llm.chat(messages, **extra)
        self.assertEqual(st, 200, raw)
        self.assertTrue(hdrs.get("Content-Type").startswith("text/event-stream"))
        self.assertEqual(hdrs.get("Transfer-Encoding"), "chunked")
        self.assertTrue(raw.endswith(b"data: [DONE]\n\n"), raw[-200:])
        events = parse_sse(raw)
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        ids = {c["id"] for c in chunks}
        self.assertEqual(len(ids), 1)
        for c in chunks:
            self.assertEqual(c["object"], "chat.completion.chunk")
            self.assertEqual(c["model"], "gpt-fake")
        return chunks

    def test_text_stream(self):
        msgs = [{"role": "user", "content": "stream ünïcode text please, quite long " + tag()}]
        chunks = self.stream(msgs)
        self.assertEqual(chunks[0]["choices"][0]["delta"],
                         {"role": "assistant", "content": "", "refusal": None})
        self.assertIsNone(chunks[0]["choices"][0]["finish_reason"])
        pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
        self.assertGreater(len(pieces), 3)
        for p in pieces:
            self.assertLessEqual(len(p.encode()), 8)
        self.assertEqual("".join(pieces), expected_text(msgs))
        last = chunks[-1]["choices"][0]
        self.assertEqual(last["delta"], {})
        self.assertEqual(last["finish_reason"], "stop")
        self.assertNotIn("usage", chunks[-1])
        # Same text as the non-streamed reply.
        plain = self.llm.chat(msgs)[2]["choices"][0]["message"]["content"]
        self.assertEqual("".join(pieces), plain)

    def test_include_usage(self):
        msgs = [{"role": "user", "content": "usage please " + tag()}]
        chunks = self.stream(msgs, include_usage=True)
        usage = chunks[-1]
        self.assertEqual(usage["choices"], [])
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")
        plain = self.llm.chat(msgs)[2]
        self.assertEqual(usage["usage"], plain["usage"])
        self.assertNotIn("usage", self.stream(msgs, include_usage=False)[-1])

    def test_tool_call_stream(self):
        args = '{"query": "long enough to need fragments", "n": 3}'
        msgs = [{"role": "user", "content": "search " + directive("tool", "search:" + args) +
                 directive("tool", "noop:{}")}]
        chunks = self.stream(msgs, include_usage=True)
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": None})
        calls = {}
        for c in chunks[1:]:
            if not c["choices"]:
                continue
            for tc in c["choices"][0]["delta"].get("tool_calls", []):
                entry = calls.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                if "id" in tc:
                    entry["id"] = tc["id"]
                    entry["name"] = tc["function"]["name"]
                entry["args"] += tc["function"].get("arguments", "")
        self.assertEqual(sorted(calls), [0, 1])
        self.assertEqual(calls[0]["name"], "search")
        self.assertEqual(calls[0]["args"], args)
        self.assertEqual(calls[1]["args"], "{}")
        self.assertTrue(calls[0]["id"].startswith("call_fake_"))
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(chunks[-1]["choices"], [])

    def test_stream_error_is_plain_json(self):
        resp = self.llm.chat("x " + directive("status", "500"), stream=True)
        self.assertEqual(resp[0], 500)
        self.assertEqual(resp[2]["error"]["message"], "fake error 500")


class TestLogAndControl(FakeTestCase):

    def test_request_log(self):
        self.llm.clear()
        self.assertEqual(self.llm.requests(), [])
        before = self.llm.requests_total()
        body = {"model": "m", "messages": [{"role": "user", "content": "logged " + tag()}]}
        self.llm.request("POST", "/v1/chat/completions", body=body,
                         headers={"Authorization": "Bearer sk-test-123"})
        self.llm.request("POST", "/v1/chat/completions", raw_body=b"plain text",
                         headers={"Content-Type": "text/plain"})
        self.llm.request("GET", "/v1/unknown?x=1")
        reqs = self.llm.requests()
        self.assertEqual(len(reqs), 3)
        self.assertEqual([r["seq"] for r in reqs], [before + 1, before + 2, before + 3])
        a, b, c = reqs
        self.assertEqual(a["method"], "POST")
        self.assertEqual(a["path"], "/v1/chat/completions")
        self.assertEqual(a["headers"]["authorization"], "Bearer sk-test-123")
        self.assertEqual(a["headers"]["content-type"], "application/json")
        self.assertEqual(a["body"], body)
        self.assertEqual(a["status"], 200)
        self.assertFalse(a["client_closed"])
        self.assertLess(abs(a["received_at_ms"] / 1000 - time.time()), 600)
        self.assertNotIn("authorization", b["headers"])
        self.assertEqual(b["body"], "plain text")
        self.assertEqual(b["status"], 400)
        self.assertEqual(c["method"], "GET")
        self.assertEqual(c["path"], "/v1/unknown")
        self.assertIsNone(c["body"])
        self.assertEqual(c["status"], 404)
        self.assertEqual([r["seq"] for r in self.llm.requests(since=before + 2)], [before + 3])
        self.assertEqual(self.llm.requests_total(), before + 3)
        # Control calls are not logged; clearing keeps counting.
        self.llm.clear()
        self.assertEqual(self.llm.requests(), [])
        self.llm.chat("after clear")
        self.assertEqual([r["seq"] for r in self.llm.requests()], [before + 4])

    def test_bad_since(self):
        self.assertOpenAIError(self.llm.request("GET", "/_fake/requests?since=-1"), 400)
        self.assertOpenAIError(self.llm.request("GET", "/_fake/requests?since=x"), 400)

    def test_health_and_stats(self):
        st, _, js, _ = self.llm.request("GET", "/_fake/health")
        self.assertEqual((st, js), (200, {"ok": True}))
        s0 = self.llm.stats()
        self.llm.chat("count me")
        self.llm.chat("fail me " + directive("status", "502"))
        s1 = self.llm.stats()
        self.assertEqual(s1["requests"], s0["requests"] + 2)
        self.assertEqual(s1["by_status"].get("200", 0), s0["by_status"].get("200", 0) + 1)
        self.assertEqual(s1["by_status"].get("502", 0), s0["by_status"].get("502", 0) + 1)
        self.assertEqual(s1["in_flight"], 0)
        self.assertGreaterEqual(s1["max_in_flight"], 1)
        self.assertIn("client_closed", s1)

    def test_client_closed_during_delay(self):
        s0 = self.llm.stats()
        since = self.llm.requests_total()
        body = json.dumps({"model": "m", "messages": [
            {"role": "user", "content": "hang up " + directive("delay_ms", "20000")}]}).encode()
        s = socket.create_connection(("127.0.0.1", self.llm.port), timeout=IO_TIMEOUT_S)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        self.llm.wait_requests(1, since=since)
        wait_for(lambda: self.llm.stats()["in_flight"] == s0["in_flight"] + 1,
                 what="the request in flight")
        s.close()
        entry = wait_for(lambda: [r for r in self.llm.requests(since)
                                  if r["client_closed"]], what="client_closed in the log")[0]
        self.assertEqual(entry["status"], 0)
        s1 = self.llm.stats()
        self.assertEqual(s1["client_closed"], s0["client_closed"] + 1)
        self.assertEqual(s1["in_flight"], s0["in_flight"])

    def test_config_runtime(self):
        old = self.llm.config()
        self.addCleanup(self.llm.config, latency_ms=old["latency_ms"],
                        jitter_ms=old["jitter_ms"], fail_rate=old["fail_rate"],
                        fail_status=old["fail_status"])
        cfg = self.llm.config(fail_rate=1, fail_status=[503])
        self.assertEqual(cfg["fail_rate"], 1)
        self.assertEqual(cfg["fail_status"], [503])
        self.assertEqual(self.llm.chat("x")[0], 503)
        cfg = self.llm.config(fail_rate=0, latency_ms=5, jitter_ms=2)
        self.assertEqual((cfg["latency_ms"], cfg["jitter_ms"], cfg["fail_rate"]), (5, 2, 0))
        self.assertEqual(self.llm.chat("x")[0], 200)
        for bad in ({"latency_ms": -1}, {"fail_rate": 2}, {"fail_status": [418]},
                    {"fail_status": []}, {"nope": 1}):
            self.assertOpenAIError(self.llm.request("POST", "/_fake/config", body=bad), 400)
        self.assertEqual(self.llm.config()["latency_ms"], 5)


class TestProcess(unittest.TestCase):

    def test_fail_rate_1_only_errors(self):
        with FakeLLM(["--fail-rate", "1", "--fail-status", "502,503"]) as llm:
            statuses = {llm.chat("q %d" % i)[0] for i in range(30)}
            self.assertEqual(statuses, {502, 503})
            self.assertEqual(set(llm.stats()["by_status"]), {"502", "503"})

    def test_seed_determinism(self):
        runs = []
        for _ in range(2):
            with FakeLLM(["--fail-rate", "0.5", "--fail-status", "429,500", "--seed", "42",
                          "--jitter-ms", "3"]) as llm:
                runs.append([llm.chat("q %d" % i)[0] for i in range(20)])
        self.assertEqual(runs[0], runs[1])
        self.assertTrue({200, 429, 500} >= set(runs[0]))
        self.assertGreater(len(set(runs[0])), 1)

    def test_log_bodies_0_and_max_log(self):
        with FakeLLM(["--log-bodies", "0", "--max-log", "3"]) as llm:
            for i in range(5):
                llm.chat("q %d" % i)
            reqs = llm.requests()
            self.assertEqual([r["seq"] for r in reqs], [3, 4, 5])
            self.assertTrue(all(r["body"] is None for r in reqs))
            self.assertEqual(llm.requests_total(), 5)

    def test_reset(self):
        with FakeLLM() as llm:
            d = directive("reply_seq", "A|B")
            self.assertEqual(llm.chat(d)[2]["choices"][0]["message"]["content"], "A")
            self.assertEqual(llm.chat(d)[2]["choices"][0]["message"]["content"], "B")
            llm.reset()
            self.assertEqual(llm.requests(), [])
            self.assertEqual(llm.stats()["requests"], 0)
            self.assertEqual(llm.chat(d)[2]["choices"][0]["message"]["content"], "A")
            self.assertEqual([r["seq"] for r in llm.requests()], [3])

    def test_retry_after_option(self):
        with FakeLLM(["--retry-after", "7"]) as llm:
            resp = llm.chat("x " + directive("status", "429"))
            self.assertEqual(resp[1].get("Retry-After"), "7")

    def test_bad_options_exit_2(self):
        for args in (["--bogus"], ["--latency-ms"], ["--latency-ms", "abc"],
                     ["--fail-rate", "2"], ["--fail-status", "418"], ["--fail-status", ""],
                     ["--listen", "0.0.0.0:0"], ["--log-bodies", "yes"], ["--max-log", "0"],
                     ["positional"]):
            rc, out, err = run_fakellm(args)
            self.assertEqual(rc, 2, "%r: %s" % (args, err))
            self.assertTrue(err.strip(), args)
        rc, out, _ = run_fakellm(["--help"])
        self.assertEqual(rc, 0)
        self.assertIn("--latency-ms", out)

    def test_sigterm_with_requests_in_flight(self):
        llm = FakeLLM(["--latency-ms", "20000"])
        try:
            socks = []
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "w"}]})
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", llm.port), timeout=IO_TIMEOUT_S)
                s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
                socks.append(s)
            wait_for(lambda: llm.stats()["in_flight"] == 5, what="5 requests in flight")
        finally:
            self.assertEqual(llm.stop(), 0)
        for s in socks:
            s.close()

    def test_sigint_exit_0(self):
        llm = FakeLLM()
        self.assertEqual(llm.chat("x")[0], 200)
        self.assertEqual(llm.stop(signal.SIGINT), 0)


if __name__ == "__main__":
    unittest.main()
