"""Observability end to end: GET /metrics (Prometheus text format 0.0.4, read with a small
parser here), GET /api/v1/stats, and /healthz, healthy and not: 503 while another process
holds SQLite's write lock (crewd's store writes fail), or, on PostgreSQL, once the server is
stopped. Bounded waits on conditions only."""
import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import unittest
import uuid

from crewd_harness import (PG_MODE, PG_SCRIPT, CrewdTestCase, check_clean_exit, unique_name,
                           wait_until)
from fakellm_harness import FakeLLM
from test_jobs import FakeCase, fake_agent

CONTENT_TYPE = "text/plain; version=0.0.4"

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_metrics(text):
    """Parses exposition text into (types, samples): types {family: type}, samples
    {(name, ((label, value), ...sorted)): float}. Fails on any line that is not a HELP, TYPE
    or sample line, or a sample of a family with no TYPE."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "two TYPE lines for " + name
            types[name] = kind
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        name, _, labels_text, value = m.groups()
        labels = []
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL_RE.match(labels_text, pos)
                assert lm, "bad labels in %r" % line
                labels.append((lm.group(1), unescape(lm.group(2))))
                pos = lm.end()
        family = re.sub(r'_(bucket|sum|count)$', "", name)
        assert name in types or (family in types and types[family] == "histogram"), \
            "sample of a family without TYPE: %r" % line
        key = (name, tuple(sorted(labels)))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(value)
    return types, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class MetricsMixin:
    def scrape(self, srv=None):
        srv = srv or self.srv
        st, hdrs, _, raw = srv.request("GET", "/metrics")
        self.assertEqual(st, 200, raw[:500])
        self.assertTrue(hdrs.get("Content-Type", "").startswith(CONTENT_TYPE), hdrs)
        return parse_metrics(raw.decode("utf-8"))

    def check_histograms(self, types, samples):
        """Every histogram series: cumulative buckets, +Inf equal to _count."""
        for fam in [f for f, t in types.items() if t == "histogram"]:
            series = {}
            for (name, labels), v in samples.items():
                if name == fam + "_bucket":
                    rest = tuple(kv for kv in labels if kv[0] != "le")
                    le = dict(labels)["le"]
                    series.setdefault(rest, []).append(
                        (float("inf") if le == "+Inf" else float(le), v))
            for rest, buckets in series.items():
                buckets.sort()
                counts = [c for _, c in buckets]
                self.assertEqual(counts, sorted(counts), "not cumulative: %s %s" % (fam, rest))
                self.assertEqual(buckets[-1][0], float("inf"))
                self.assertEqual(buckets[-1][1],
                                 samples[(fam + "_count", tuple(sorted(rest)))])


class TestParser(unittest.TestCase):
    def test_parser_reads_escapes(self):
        types, samples = parse_metrics('# HELP x y\n# TYPE x gauge\nx{a="q\\"\\\\\\n",b="2"} 1.5\n')
        self.assertEqual(types, {"x": "gauge"})
        self.assertEqual(value(samples, "x", a='q"\\\n', b="2"), 1.5)
        with self.assertRaises(AssertionError):
            parse_metrics("x 1\n")  # no TYPE


class TestMetrics(MetricsMixin, FakeCase):
    def test_exposition(self):
        types, samples = self.scrape()
        for fam, kind in [("crewd_jobs", "gauge"), ("crewd_queue_depth", "gauge"),
                          ("crewd_jobs_running_here", "gauge"),
                          ("crewd_llm_call_duration_seconds", "histogram"),
                          ("crewd_llm_calls_total", "counter"),
                          ("crewd_llm_tokens_total", "counter"),
                          ("crewd_http_requests_total", "counter"),
                          ("crewd_webhook_deliveries_pending", "gauge"),
                          ("crewd_loop_lag_seconds", "gauge"), ("crewd_store_up", "gauge"),
                          ("crewd_build_info", "gauge")]:
            self.assertEqual(types.get(fam), kind, fam)
        self.assertEqual(value(samples, "crewd_store_up"), 1)
        _, _, health, _ = self.srv.request("GET", "/healthz")
        self.assertEqual(value(samples, "crewd_build_info", version=health["version"]), 1)
        for s in ("pending", "running", "completed", "failed", "cancelled"):
            self.assertIn(("crewd_jobs", (("status", s),)), samples)
        self.assertGreaterEqual(value(samples, "crewd_loop_lag_seconds"), 0)
        self.check_histograms(types, samples)

    def test_http_requests_counted_by_route(self):
        _, before = self.scrape()
        for _ in range(2):
            self.assertEqual(self.srv.healthz(), 200)
        self.assertEqual(self.srv.request("GET", "/no/such/route")[0], 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/crew/job/" + str(uuid.uuid4()))[0], 404)
        _, after = self.scrape()

        def delta(**labels):
            return (value(after, "crewd_http_requests_total", **labels)
                    - value(before, "crewd_http_requests_total", **labels))
        self.assertEqual(delta(route="/healthz", method="GET", status="200"), 2)
        self.assertEqual(delta(route="unmatched", method="GET", status="404"), 1)
        self.assertEqual(delta(route="/api/v1/crew/job/{job}", method="GET", status="404"), 1)
        self.assertEqual(delta(route="/metrics", method="GET", status="200"), 1)  # the first

    def test_llm_metrics_and_job_gauges_after_a_job(self):
        types, before = self.scrape()
        name = unique_name()
        self.srv.create({"name": name, "agents": [fake_agent("a", self.fake, reply="done")]})
        job = self.srv.wait_job(self.srv.execute({"crew_id": name, "query": "count me"})["job_id"])
        self.assertEqual(job["status"], "completed", job)
        # The store's gauges are read at most once a second: wait for a read after the job.
        st, _, stats, raw = self.srv.request("GET", "/api/v1/stats")
        self.assertEqual(st, 200, raw)

        def fresh():
            t, s = self.scrape()
            return (t, s) if value(s, "crewd_jobs", status="completed") == \
                stats["jobs"]["completed"] else None
        types, after = wait_until(fresh, 30, "/metrics to count the completed job")
        self.check_histograms(types, after)
        p = {"provider": "openai"}
        self.assertEqual(value(after, "crewd_llm_call_duration_seconds_count", **p)
                         - value(before, "crewd_llm_call_duration_seconds_count", **p), 1)
        self.assertGreater(value(after, "crewd_llm_call_duration_seconds_sum", **p),
                           value(before, "crewd_llm_call_duration_seconds_sum", **p))
        self.assertEqual(value(after, "crewd_llm_calls_total", provider="openai", outcome="ok")
                         - value(before, "crewd_llm_calls_total", provider="openai",
                                 outcome="ok"), 1)
        for kind in ("input", "output"):
            self.assertGreater(
                value(after, "crewd_llm_tokens_total", provider="openai", kind=kind),
                value(before, "crewd_llm_tokens_total", provider="openai", kind=kind), kind)
        self.assertIn(("crewd_llm_tokens_total", (("kind", "cached"), ("provider", "openai"))),
                      after)
        # The job gauges agree with the store's figures as /api/v1/stats reports them.
        for s in ("pending", "running", "completed", "failed", "cancelled"):
            self.assertEqual(value(after, "crewd_jobs", status=s), stats["jobs"][s], s)
        self.assertEqual(value(after, "crewd_queue_depth"), stats["jobs"]["pending"])
        self.assertGreaterEqual(value(after, "crewd_jobs", status="completed"), 1)
        self.assertEqual(value(after, "crewd_jobs_running_here"), 0)


class TestStats(CrewdTestCase):
    CREWD_ARGS = ["--job-ttl-s", "7200", "--cleanup-interval-s", "60", "--api-key", "stats-key"]
    CREWD_API_KEY = "stats-key"

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeLLM([])
        cls.addClassCleanup(cls.fake.stop)
        super().setUpClass()

    def test_stats_figures(self):
        crews = [("seq-a", "sequential", 2), ("seq-b", "sequential", 1), ("par", "parallel", 3)]
        made = {}
        for suffix, mode, n in crews:
            name = unique_name(suffix)
            d = {"name": name, "execution_mode": mode,
                 "agents": [fake_agent("a%d" % i, self.fake, reply="R") for i in range(n)]}
            made[name] = (self.srv.create(d)["crew_id"], mode, n)
        first = next(iter(made))
        for i in range(2):
            job = self.srv.wait_job(
                self.srv.execute({"crew_id": first, "query": "stats %d" % i})["job_id"])
            self.assertEqual(job["status"], "completed", job)
        st, _, body, raw = self.srv.request("GET", "/api/v1/stats")
        self.assertEqual(st, 200, raw)
        jobs = body["jobs"]
        self.assertEqual(jobs, {"total_jobs": 2, "pending": 0, "running": 0, "completed": 2,
                                "failed": 0, "cancelled": 0, "job_ttl": 7200,
                                "cleanup_interval": 60, "running_here": 0})
        c = body["crews"]
        self.assertEqual(c["total_crews"], 3)
        self.assertEqual(c["crews_by_mode"],
                         {"sequential": 2, "parallel": 1, "flow": 0, "loop": 0})
        self.assertEqual(c["total_agents"], 6)
        self.assertEqual({x["name"]: (x["crew_id"], x["mode"], x["agent_count"])
                          for x in c["crews"]}, made)

    def test_auth(self):
        self.assertEqual(self.srv.request("GET", "/api/v1/stats",
                                          headers={"Authorization": None})[0], 401)
        # /metrics and /healthz stay open, like load balancers and scrapers expect.
        self.assertEqual(self.srv.request("GET", "/metrics",
                                          headers={"Authorization": None})[0], 200)
        self.assertEqual(self.srv.request("GET", "/healthz",
                                          headers={"Authorization": None})[0], 200)


class TestHealth(MetricsMixin, CrewdTestCase):
    SHARED_SERVER = False

    def health(self, srv):
        # A long timeout: while SQLite's write lock is held elsewhere, every store write of
        # crewd waits out its 5 s busy timeout on the loop, and a reply takes several loop
        # turns (accept, read, write), so it can take tens of seconds to come.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=180)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            st, raw = resp.status, resp.read()
        finally:
            conn.close()
        self.assertIn(st, (200, 503), raw)
        body = json.loads(raw)
        self.assertEqual(body["status"], "ok" if st == 200 else "unhealthy", body)
        return st, body

    def test_healthy(self):
        srv = self.start_crewd()
        st, body = self.health(srv)
        self.assertEqual(st, 200, body)
        for k in ("version", "store", "jobs_running", "llm_calls"):
            self.assertIn(k, body)
        self.assertTrue(body["checks"]["store"]["ok"], body)
        self.assertIsInstance(body["checks"]["store"]["latency_ms"], int)
        self.assertNotIn("error", body["checks"]["store"])
        self.assertTrue(body["checks"]["loop"]["ok"], body)
        self.assertIsInstance(body["checks"]["loop"]["lag_ms"], int)

    @unittest.skipIf(PG_MODE, "SQLite's write lock")
    def test_unhealthy_while_store_writes_fail(self):
        """Another process holds the SQLite write lock past crewd's busy timeout: the running
        job's checkpoint, the claims and the lease renewals fail, /healthz says 503; once the
        lock is gone the writes succeed again, /healthz says 200 and the job completes."""
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd()
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", fake, reply="A", extra_prompt=" [[fake:delay_ms=300]]"),
            fake_agent("b", fake, reply="B")]})
        job_id = srv.execute({"crew_id": name, "query": "locked " + name})["job_id"]
        wait_until(lambda: any("locked " + name in json.dumps(r.get("body"))
                               for r in fake.requests()), 30, "agent a's call")
        release = threading.Event()
        taken = threading.Event()

        def hold():
            db = sqlite3.connect(srv.db_path, timeout=30, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(120)
            db.execute("ROLLBACK")
            db.close()
        t = threading.Thread(target=hold, daemon=True)
        t.start()
        self.addCleanup(t.join, 30)
        self.addCleanup(release.set)
        self.assertTrue(taken.wait(30), "could not take the write lock")

        def unhealthy():
            st, body = self.health(srv)
            return body if st == 503 and not body["checks"]["store"]["ok"] else None
        body = wait_until(unhealthy, 90, "/healthz 503 while the write lock is held")
        self.assertIn("writes_failing_since", body["checks"]["store"], body)
        self.assertIn("store writes fail", body["checks"]["store"]["error"])
        release.set()
        t.join(30)
        wait_until(lambda: self.health(srv)[0] == 200, 90, "/healthz 200 after the lock")
        job = srv.wait_job(job_id, timeout=90)
        self.assertEqual(job["status"], "completed", job)

    @unittest.skipUnless(PG_MODE, "PostgreSQL only")
    def test_unhealthy_when_postgres_stops(self):
        """A cluster of its own (the shared one serves the other tests), stopped under crewd:
        the ping fails, /healthz says 503 and /metrics says crewd_store_up 0."""
        directory = tempfile.mkdtemp(prefix="crewd-pgobs-", dir="/tmp")
        os.chmod(directory, 0o755)
        out = subprocess.run([PG_SCRIPT, "start", directory], capture_output=True, text=True,
                             timeout=120, check=False)
        stopped = []

        def stop_cluster():
            if not stopped:
                stopped.append(True)
                subprocess.run([PG_SCRIPT, "stop", directory], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60, check=False)
                shutil.rmtree(directory, ignore_errors=True)
        if out.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            self.fail("cannot start a PostgreSQL cluster: %s" % out.stderr)
        url = out.stdout.strip().splitlines()[-1]
        srv = self.start_crewd(store=url)
        self.addCleanup(stop_cluster)  # runs before the server's own cleanup
        self.assertEqual(self.health(srv)[0], 200)
        stop_cluster()

        def unhealthy():
            # The job manager's failing writes may say so first; the ping (reused for a
            # second) follows.
            st, body = self.health(srv)
            return body if st == 503 and "ping failed" in body["checks"]["store"].get(
                "error", "") else None
        body = wait_until(unhealthy, 60, "/healthz 503 (ping failed) once PostgreSQL is down")
        self.assertFalse(body["checks"]["store"]["ok"], body)
        self.assertNotIn(directory, json.dumps(body))  # no detail on the open endpoint
        # The store's gauges are reused for a second: the next read says the store is down.
        wait_until(lambda: value(self.scrape(srv)[1], "crewd_store_up") == 0, 30,
                   "/metrics to say crewd_store_up 0")


if __name__ == "__main__":
    unittest.main()
