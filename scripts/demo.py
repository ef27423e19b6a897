#!/usr/bin/env python3
"""make demo: starts crewd-fakellm and crewd (release build, temporary SQLite store), loads
the example crews of examples/ with every agent pointed at the fake LLM, runs one job per
crew (sequential, parallel, flow, loop, and parallel with a synthesis step) and prints each
result, then follows one more job live through its event stream (SSE), with the agents'
replies streamed. Standard library only; everything on 127.0.0.1; both servers stop at the end.

usage: scripts/demo.py [BUILD_DIR]   (default: build)
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, sys.argv[1] if len(sys.argv) > 1 else "build")
START_TIMEOUT_S = 20
JOB_TIMEOUT_S = 60


def start(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit("demo: %s did not start" % argv[0])


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, out


def follow_live(port):
    """One more job, followed live: its events as Server-Sent Events, with the agents'
    replies streamed ("stream": true), printed as they arrive until the stream ends."""
    st, acc = call(port, "POST", "/api/v1/crew/execute",
                   {"name": "research_flow", "query": "What does a job's event stream show?",
                    "stream": True})
    if st != 202:
        sys.exit("demo: execute research_flow: %s %s" % (st, acc))
    print("== research_flow, followed live: GET /api/v1/crew/job/%s/events" % acc["job_id"])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=JOB_TIMEOUT_S)
    conn.request("GET", "/api/v1/crew/job/%s/events" % acc["job_id"])
    resp = conn.getresponse()
    event_id = event = None
    for raw in iter(resp.readline, b""):
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])["data"]
            what = data.get("agent") or data.get("step") or ""
            detail = (data.get("text") or data.get("output") or data.get("error")
                      or data.get("status") or "")
            print("   %3s %-16s %-12s %s" % (event_id, event, what,
                                            str(detail)[:60].replace("\n", " ")))
    conn.close()


def main():
    fake, fake_port = start([os.path.join(BUILD, "crewd-fakellm"), "--latency-ms", "50"])
    tmp = tempfile.mkdtemp(prefix="crewd-demo-")
    crewd, port = start([os.path.join(BUILD, "crewd"), "--listen", "127.0.0.1:0",
                         "--store", "sqlite:" + os.path.join(tmp, "demo.db"),
                         "--llm-base-url-allow", "127.0.0.1"])
    try:
        base_url = "http://127.0.0.1:%d/v1" % fake_port
        runs = [
            ("sequential.json", "Crewd keeps every job it accepts, even across a crash.", {}),
            ("parallel.json", "Should we rewrite our job server in C?", {}),
            ("research-flow.json", "How fast is SQLite in WAL mode?", {}),
            ("loop.json", "Draft a two-line release note.",
             {"kwargs": {"condition": "the reviewer finds nothing missing "
                                      "[[fake:reply_seq=NO|YES]]", "max_iterations": 3}}),
            ("parallel.json", "Name one risk of this plan.",
             {"synthesis_prompt": "Merge the three opinions into one recommendation."}),
            # The fake asks for the calculator once (a directive in the prompt), then answers
            # with the tool's result; the second question continues the same session.
            ("tools-and-memory.json", "What is 3 boxes of 12 plus 7?",
             {"user_id": "demo", "session_id": "s1",
              "_directive": ' [[fake:tool=calculator:{"expression":"3*12+7"}]]'}),
            ("tools-and-memory.json", "And what did I just ask you?",
             {"user_id": "demo", "session_id": "s1"}),
        ]
        for fname, query, extra in runs:
            with open(os.path.join(ROOT, "examples", fname)) as f:
                crew = json.load(f)
            directive = extra.pop("_directive", "")
            for a in crew["agents"]:  # every agent talks to the fake, under its own model name
                cfg = a.get("config", {})
                cfg.update({"llm": "openai", "model": cfg.get("model", "demo-model"),
                            "base_url": base_url})
                cfg.pop("api_key_env", None)
                a["config"] = cfg
                a["system_prompt"] = a.get("system_prompt", "") + directive
            call(port, "PUT", "/api/v1/crew", crew)
            body = {"name": crew["name"], "query": query}
            body.update(extra)
            st, acc = call(port, "POST", "/api/v1/crew/execute", body)
            if st != 202:
                sys.exit("demo: execute %s: %s %s" % (crew["name"], st, acc))
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while True:
                st, job = call(port, "GET", "/api/v1/crew/job/" + acc["job_id"])
                if job["status"] in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    sys.exit("demo: job %s did not finish" % acc["job_id"])
                time.sleep(0.05)
            res = job.get("result") or {}
            print("== %s (%s%s): job %s, result %s, %.2f s, %d LLM calls"
                  % (crew["name"], job["execution_mode"],
                     ", synthesis" if "synthesis_prompt" in extra else "", job["status"],
                     res.get("status"), job["elapsed_time"] or 0,
                     res.get("usage", {}).get("llm_calls", 0)))
            for agent in res.get("agents", []):
                for tc in agent.get("tool_calls", []):
                    print("   %s called %s(%s) -> %s" % (agent["agent_name"], tc["name"],
                                                        tc["arguments"],
                                                        tc["result"] or tc["error"]))
            for entry in res.get("execution_log", []):
                it = " (iteration %d)" % entry["iteration"] if "iteration" in entry else ""
                print("   %s%s -> %s" % (entry["agent_name"], it,
                                         (entry["output"] or entry["error"] or "")[:90]))
            print("   output: %s" % res.get("output", "")[:200].replace("\n", " | "))
        follow_live(port)
    finally:
        for p in (crewd, fake):
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
