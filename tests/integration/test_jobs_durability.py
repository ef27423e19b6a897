"""Nothing accepted is lost: kill -9 crewd while jobs run, start it again, and every job that
got a 202 reaches a terminal state; agents that had finished are not called again (the fake
LLM's request log is the witness). Also: the cap on running jobs, and a graceful stop that
hands running jobs to the next start at once."""
import json
import sqlite3
import threading
import time
import unittest

from crewd_harness import PG_MODE, CrewdTestCase, unique_name, wait_until
from fakellm_harness import FakeLLM
from test_jobs import fake_agent, system_message

LEASE_MS = 1000  # short, so that a killed instance's jobs are claimable again quickly


class TestRecovery(CrewdTestCase):
    SHARED_SERVER = False

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)

    def calls_by_agent(self, marker):
        out = {}
        for r in self.fake.requests():
            body = r.get("body")
            if isinstance(body, dict) and marker in json.dumps(body):
                who = system_message(r).split(".")[0].replace("You are ", "")
                out.setdefault(who, []).append(r)
        return out

    def test_kill9_mid_job_resumes_without_repeating_finished_agents(self):
        srv = self.start_crewd(args=["--job-lease-ms", str(LEASE_MS)])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("first", self.fake, reply="one"),
            fake_agent("second", self.fake, reply="two", extra_prompt=" [[fake:delay_ms=2000]]"),
            fake_agent("third", self.fake, reply="three")]})
        job_id = srv.execute({"crew_id": name, "query": "k9 " + name})["job_id"]
        # Once the second agent's call has reached the fake, the first one is checkpointed.
        wait_until(lambda: "second" in self.calls_by_agent(name), 30, "the second agent's call")
        srv.kill9()
        srv.start()
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        res = job["result"]
        self.assertEqual(res["output"], "three")
        self.assertEqual(res["results"], ["one", "two", "three"])
        calls = self.calls_by_agent(name)
        self.assertEqual(len(calls["first"]), 1, "a finished agent was called again")
        self.assertEqual(len(calls["second"]), 2)  # the interrupted call, then the resumed one
        self.assertEqual(len(calls["third"]), 1)
        self.assertEqual(res["metadata"].get("resumed_steps"), 1)

    def test_resumed_job_keeps_its_deadline_and_its_finished_steps(self):
        srv = self.start_crewd(args=["--job-lease-ms", str(LEASE_MS)])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, reply="quick"),
            fake_agent("b", self.fake, reply="slow", extra_prompt=" [[fake:delay_ms=30000]]"),
            fake_agent("c", self.fake, reply="c")]})
        job_id = srv.execute({"crew_id": name, "query": "rd " + name, "timeout": 2})["job_id"]
        wait_until(lambda: "b" in self.calls_by_agent(name), 30, "b's call")
        srv.kill9()
        srv.start()
        # Whether the deadline passed while crewd was down or passes after the restart, the
        # job ends timed out with a's checkpointed output, and a is not called again.
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("timed out", job["error"])
        self.assertEqual(job["result"]["results"], ["quick"])
        self.assertEqual(len(self.calls_by_agent(name)["a"]), 1)
        self.assertNotIn("c", self.calls_by_agent(name))

    def test_kill9_with_many_jobs_loses_none(self):
        srv = self.start_crewd(args=["--job-lease-ms", str(LEASE_MS), "--max-running-jobs", "8"])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, extra_prompt=" [[fake:delay_ms=100]]"),
            fake_agent("b", self.fake, extra_prompt=" [[fake:delay_ms=100]]")]})
        ids = [srv.execute({"crew_id": name, "query": "many %s %d" % (name, i)})["job_id"]
               for i in range(30)]
        wait_until(lambda: len(self.calls_by_agent(name).get("b", [])) >= 3, 30,
                   "some jobs to reach their second agent")
        srv.kill9()
        srv.start()
        for job_id in ids:
            job = srv.wait_job(job_id)
            self.assertEqual(job["status"], "completed", job)
            self.assertEqual(len(job["result"]["results"]), 2)
        # No job's first agent ran twice after it had been checkpointed: at most the calls
        # in flight at the kill (<= 8) were repeated.
        calls = self.calls_by_agent(name)
        self.assertLessEqual(len(calls["a"]) + len(calls["b"]), 60 + 8)

    def test_graceful_stop_hands_jobs_to_the_next_start(self):
        # A lease far longer than the test: only the release on SIGTERM can explain a resume.
        srv = self.start_crewd(args=["--job-lease-ms", "600000"])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, reply="A"),
            fake_agent("b", self.fake, reply="B", extra_prompt=" [[fake:delay_ms=2000]]")]})
        job_id = srv.execute({"crew_id": name, "query": "term " + name})["job_id"]
        wait_until(lambda: "b" in self.calls_by_agent(name), 30, "agent b's call")
        self.assertEqual(srv.stop(), 0)
        srv.start()
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(len(self.calls_by_agent(name)["a"]), 1)


@unittest.skipIf(PG_MODE, "holds a SQLite write lock from outside")
class TestStoreErrors(CrewdTestCase):
    """A store that refuses writes for a while (another process holds SQLite's write lock past
    crewd's 5 s busy timeout) stalls jobs but loses none and runs none twice."""
    SHARED_SERVER = False
    HOLD_S = 6.0  # longer than crewd's busy timeout (5 s): its writes fail meanwhile

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)

    def hold_write_lock(self, path):
        """Takes the database's write lock from this process for HOLD_S seconds (the fault
        being injected lasts that long by design); returns the thread holding it."""
        taken = threading.Event()

        def hold():
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(self.HOLD_S)
            db.execute("ROLLBACK")
            db.close()
        t = threading.Thread(target=hold, daemon=True)
        t.start()
        self.assertTrue(taken.wait(30), "could not take the write lock")
        return t

    def calls(self, marker):
        return [r for r in self.fake.requests()
                if isinstance(r.get("body"), dict) and marker in json.dumps(r["body"])]

    def test_failed_checkpoint_gives_the_job_back(self):
        srv = self.start_crewd()
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, reply="A", extra_prompt=" [[fake:delay_ms=300]]"),
            fake_agent("b", self.fake, reply="B")]})
        job_id = srv.execute({"crew_id": name, "query": "busy " + name})["job_id"]
        wait_until(lambda: self.calls("busy " + name), 30, "agent a's call")
        self.hold_write_lock(srv.db_path).join(60)
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["result"]["results"], ["A", "B"])
        self.assertIn("lease given back", srv.stderr_text())

    def test_own_lapsed_lease_is_not_run_twice(self):
        srv = self.start_crewd(args=["--job-lease-ms", "1000"])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", self.fake, reply="A", extra_prompt=" [[fake:delay_ms=9000]]")]})
        job_id = srv.execute({"crew_id": name, "query": "lapse " + name})["job_id"]
        wait_until(lambda: self.calls("lapse " + name), 30, "agent a's call")
        self.hold_write_lock(srv.db_path).join(60)  # renewals fail: the lease lapses
        job = srv.wait_job(job_id)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(len(self.calls("lapse " + name)), 1, "the job ran twice")
        # The lease did lapse. Whether the next store call after the lock is a renewal (which
        # revives the lease) or a claim (which takes the job back, and must leave it to the
        # run in progress: "lease lapsed while this instance held it") is up to the timers.
        self.assertIn("lease renewal failed", srv.stderr_text())


class TestTwoInstances(CrewdTestCase):
    """Two crewd on one store share one queue: every job runs once, on one of them, and a job
    started on one is visible on the other."""
    SHARED_SERVER = False

    def test_shared_queue_runs_each_job_once(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        a = self.start_crewd(args=["--max-running-jobs", "4"])
        b = self.start_crewd(args=["--max-running-jobs", "4"],
                             **({"store": a.pg_url} if PG_MODE else {"store_dir": a.store_dir}))
        name = unique_name()
        a.create({"name": name, "agents": [
            fake_agent("x", fake, extra_prompt=" [[fake:delay_ms=30]]"),
            fake_agent("y", fake, extra_prompt=" [[fake:delay_ms=30]]")]})
        ids = [(a if i % 2 else b).execute({"crew_id": name, "query": "two %s %d" % (name, i)})
               ["job_id"] for i in range(24)]
        for i, job_id in enumerate(ids):
            job = (b if i % 2 else a).wait_job(job_id)  # read through the other instance
            self.assertEqual(job["status"], "completed", job)
        per_query = {}
        for r in fake.requests():
            body = json.dumps(r.get("body"))
            for i in range(24):
                if "two %s %d\"" % (name, i) in body or "two %s %d\\n" % (name, i) in body:
                    per_query[i] = per_query.get(i, 0) + 1
        self.assertEqual(sorted(per_query), list(range(24)))
        self.assertTrue(all(n == 2 for n in per_query.values()), per_query)


class TestRunningCap(CrewdTestCase):
    SHARED_SERVER = False

    def test_max_running_jobs(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd(args=["--max-running-jobs", "2"])
        name = unique_name()
        srv.create({"name": name, "agents": [
            fake_agent("a", fake, reply="x", extra_prompt=" [[fake:delay_ms=200]]")]})
        ids = [srv.execute({"crew_id": name, "query": "cap %d" % i})["job_id"] for i in range(6)]
        pending_seen = any(srv.job(j)["status"] == "pending" for j in ids)
        for j in ids:
            self.assertEqual(srv.wait_job(j)["status"], "completed")
        self.assertTrue(pending_seen, "with a cap of 2, some of 6 jobs must wait pending")
        self.assertEqual(fake.stats()["max_in_flight"], 2)


if __name__ == "__main__":
    unittest.main()
