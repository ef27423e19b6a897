"""The job life cycle beyond execute and status: GET /api/v1/crew/jobs (filters, order,
paging, errors), POST /api/v1/crew/job/{id}/cancel (a pending job, a running one whose LLM
call the fake LLM sees dropped, 409 once ended), DELETE /api/v1/crew/job/{id} (running and
finished jobs), and retention (--job-ttl-s / --cleanup-interval-s). Every wait is bounded."""
import json
import sqlite3
import unittest

from crewd_harness import PG_MODE, CrewdTestCase, unique_name, wait_until
from fakellm_harness import FakeLLM
from test_jobs import FakeCase, fake_agent

TERMINAL = ("completed", "failed", "cancelled")
MISSING = "0b8e7c1a-0000-4000-8000-0000000000ff"


def list_jobs(srv, **query):
    path = "/api/v1/crew/jobs"
    if query:
        path += "?" + "&".join("%s=%s" % kv for kv in query.items())
    return srv.request("GET", path)


class TestJobList(FakeCase):

    def setUp(self):
        self.name = unique_name("list")
        self.other = unique_name("list-other")
        self.srv.create({"name": self.name, "agents": [fake_agent("a", self.fake, reply="x")]})
        self.srv.create({"name": self.other, "agents": [fake_agent("a", self.fake, reply="y")]})

    def run_jobs(self, crew, n):
        ids = [self.srv.execute({"crew_id": crew, "query": "q%d %s" % (i, crew)})["job_id"]
               for i in range(n)]
        for j in ids:
            self.srv.wait_job(j)
        return ids

    def ids(self, **query):
        st, _, js, raw = list_jobs(self.srv, **query)
        self.assertEqual(st, 200, raw)
        return [j["job_id"] for j in js["jobs"]], js

    def test_newest_first_by_name_and_by_id(self):
        ids = self.run_jobs(self.name, 3)
        self.run_jobs(self.other, 1)
        got, js = self.ids(crew_id=self.name)
        self.assertEqual(got, ids[::-1])
        self.assertEqual(js["total"], 3)
        crew_id = self.srv.request("GET", "/api/v1/crew/" + self.name)[2]["crew_id"]
        self.assertEqual(self.ids(crew_id=crew_id)[0], ids[::-1])
        self.assertEqual(self.ids(crew_id=crew_id.upper())[0], ids[::-1])
        # Status objects without result.
        for j in js["jobs"]:
            self.assertNotIn("result", j)
            self.assertEqual(j["status"], "completed")
            self.assertEqual(j["crew_name"], self.name)
            for k in ("job_id", "crew_id", "created_at", "started_at", "completed_at",
                      "elapsed_time", "execution_mode", "metadata", "error"):
                self.assertIn(k, j)
        # Every crew: ours are among them, newest first.
        got, js = self.ids(limit=1000)
        self.assertGreaterEqual(js["total"], 4)
        pos = [got.index(j) for j in ids]
        self.assertEqual(pos, sorted(pos, reverse=True))

    def test_paging(self):
        ids = self.run_jobs(self.name, 5)[::-1]
        self.assertEqual(self.ids(crew_id=self.name, limit=2)[0], ids[:2])
        self.assertEqual(self.ids(crew_id=self.name, limit=2, offset=2)[0], ids[2:4])
        got, js = self.ids(crew_id=self.name, limit=2, offset=4)
        self.assertEqual(got, ids[4:])
        self.assertEqual(js["total"], 5)
        got, js = self.ids(crew_id=self.name, offset=50)
        self.assertEqual(got, [])
        self.assertEqual(js["total"], 5)

    def test_status_filter(self):
        ids = self.run_jobs(self.name, 2)
        self.assertEqual(self.ids(crew_id=self.name, status="completed")[0], ids[::-1])
        for st in ("pending", "running", "failed", "cancelled"):
            got, js = self.ids(crew_id=self.name, status=st)
            self.assertEqual((got, js["total"]), ([], 0), st)

    def test_deleted_crew_still_filtered_by_id(self):
        ids = self.run_jobs(self.name, 1)
        crew_id = self.srv.request("GET", "/api/v1/crew/" + self.name)[2]["crew_id"]
        self.assertEqual(self.srv.request("DELETE", "/api/v1/crew/" + self.name)[0], 200)
        self.assertEqual(self.ids(crew_id=crew_id)[0], ids)
        self.assertJsonError(list_jobs(self.srv, crew_id=self.name), 404, "not found")

    def test_errors(self):
        self.assertJsonError(list_jobs(self.srv, crew_id="no-such-crew"), 404, "no-such-crew")
        self.assertEqual(self.ids(crew_id=MISSING)[0], [])  # an id: maybe a deleted crew
        for bad in ("done", "Completed", ""):
            self.assertJsonError(list_jobs(self.srv, status=bad), 400, "status")
        for k, v in (("limit", "0"), ("limit", "1001"), ("limit", "x"), ("limit", "-1"),
                     ("offset", "-1"), ("offset", "1e3"), ("offset", "+1")):
            self.assertJsonError(list_jobs(self.srv, **{k: v}), 400, k)


class TestCancelDelete(CrewdTestCase):
    """One running job at a time, so that a second job stays pending."""
    SHARED_SERVER = False

    def setUp(self):
        self.fake = FakeLLM([])
        self.addCleanup(self.fake.stop)
        self.srv = self.start_crewd(args=["--max-running-jobs", "1"])
        self.name = unique_name("cancel")
        self.srv.create({"name": self.name, "agents": [
            fake_agent("first", self.fake, reply="done-first"),
            fake_agent("second", self.fake, reply="never",
                       extra_prompt=" [[fake:delay_ms=60000]]"),
            fake_agent("third", self.fake, reply="three")]})

    def calls(self, marker):
        return [r for r in self.fake.requests()
                if isinstance(r.get("body"), dict) and marker in json.dumps(r["body"])]

    def start_blocked(self, marker):
        """A job whose second agent's call is in flight at the fake."""
        job_id = self.srv.execute({"crew_id": self.name, "query": marker})["job_id"]
        wait_until(lambda: len(self.calls(marker)) >= 2, 30, "the second agent's call")
        return job_id

    def cancel(self, job_id):
        return self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % job_id)

    def test_cancel_running_aborts_the_call_and_keeps_what_finished(self):
        marker = "run " + self.name
        job_id = self.start_blocked(marker)
        st, _, js, raw = self.cancel(job_id)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["status"], "cancelled", js)
        self.assertEqual(js["error"], "cancelled by the client")
        self.assertIsNotNone(js["completed_at"])
        res = js["result"]
        self.assertEqual(res["status"], "cancelled")
        self.assertEqual(res["results"], ["done-first"])
        self.assertTrue(res["metadata"]["cancelled"])
        by = {a["agent_name"]: a for a in res["agents"]}
        self.assertEqual(by["first"]["status"], "completed")
        self.assertIn("cancelled", by["second"]["error"])
        # The fake saw the second call dropped; the third agent never ran.
        wait_until(lambda: [r for r in self.calls(marker) if r.get("client_closed")], 30,
                   "the fake to see the call dropped")
        self.assertEqual(len(self.calls(marker)), 2)
        # Terminal everywhere: GET, the list's filter, and a second cancel.
        self.assertEqual(self.srv.job(job_id)["status"], "cancelled")
        got = list_jobs(self.srv, crew_id=self.name, status="cancelled")[2]["jobs"]
        self.assertEqual([j["job_id"] for j in got], [job_id])
        self.assertJsonError(self.cancel(job_id), 409, "cancelled")

    def test_cancel_pending(self):
        blocker = self.start_blocked("blocker " + self.name)
        pending = self.srv.execute({"crew_id": self.name, "query": "p " + self.name})["job_id"]
        self.assertEqual(self.srv.job(pending)["status"], "pending")
        st, _, js, raw = self.cancel(pending)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["status"], "cancelled")
        self.assertEqual(js["error"], "cancelled by the client")
        self.assertIsNone(js["started_at"])
        self.assertIsNotNone(js["completed_at"])
        self.assertEqual(self.cancel(blocker)[0], 200)
        # The freed slot does not run the cancelled job.
        later = self.srv.execute({"crew_id": self.name, "query": "l " + self.name})["job_id"]
        wait_until(lambda: len(self.calls("l " + self.name)) >= 1, 30, "the next job to run")
        self.assertEqual(self.calls("p " + self.name), [])
        self.assertEqual(self.srv.job(pending)["status"], "cancelled")
        self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % later)

    def test_cancel_finished_and_unknown(self):
        quick = unique_name("quick")
        self.srv.create({"name": quick, "agents": [fake_agent("a", self.fake, reply="ok")]})
        job_id = self.srv.execute({"crew_id": quick, "query": "f " + quick})["job_id"]
        self.assertEqual(self.srv.wait_job(job_id)["status"], "completed")
        self.assertJsonError(self.cancel(job_id), 409, "completed")
        self.assertEqual(self.srv.job(job_id)["status"], "completed")
        self.assertJsonError(self.cancel(MISSING), 404, "not found")
        self.assertJsonError(self.cancel("not-an-id"), 404, "not found")

    def test_delete_running_and_finished(self):
        marker = "del " + self.name
        job_id = self.start_blocked(marker)
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew/job/" + job_id)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js, {"message": "Job deleted", "job_id": job_id})
        wait_until(lambda: [r for r in self.calls(marker) if r.get("client_closed")], 30,
                   "the fake to see the call dropped")
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/job/" + job_id), 404)
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/crew/job/" + job_id), 404)
        self.assertJsonError(self.cancel(job_id), 404)
        # The instance goes on: the next job runs in the freed slot.
        quick = unique_name("quick")
        self.srv.create({"name": quick, "agents": [fake_agent("a", self.fake, reply="ok")]})
        done = self.srv.execute({"crew_id": quick, "query": "f " + quick})["job_id"]
        self.assertEqual(self.srv.wait_job(done)["status"], "completed")
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew/job/" + done)
        self.assertEqual(st, 200, raw)
        self.assertJsonError(self.srv.request("GET", "/api/v1/crew/job/" + done), 404)
        self.assertEqual(list_jobs(self.srv, crew_id=quick)[2]["jobs"], [])
        self.assertJsonError(self.srv.request("DELETE", "/api/v1/crew/job/" + MISSING), 404)


class TestCutSynthesis(FakeCase):
    """A timeout or a cancel that cuts the synthesis call in flight ends the job (it used to
    wait forever for a call that had been cancelled)."""

    def start(self, tag, **body):
        name = unique_name(tag)
        self.srv.create({"name": name, "agents": [fake_agent("a", self.fake, reply="A")]})
        marker = "%s %s" % (tag, name)
        job_id = self.srv.execute(dict({
            "crew_id": name, "query": marker,
            "synthesis_prompt": "Merge. [[fake:delay_ms=60000]]"}, **body))["job_id"]
        return job_id, marker

    def test_timeout_during_synthesis(self):
        job_id, marker = self.start("syn-timeout", timeout=1)
        job = self.srv.wait_job(job_id, timeout=30)
        self.assertEqual(job["status"], "failed", job)
        self.assertIn("timed out", job["error"])
        self.assertEqual(job["result"]["results"], ["A"])

    def test_cancel_during_synthesis(self):
        job_id, marker = self.start("syn-cancel")
        wait_until(lambda: len(self.requests_for(marker)) >= 2, 30, "the synthesis call")
        st, _, js, raw = self.srv.request("POST", "/api/v1/crew/job/%s/cancel" % job_id)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["status"], "cancelled")
        self.assertEqual(js["result"]["results"], ["A"])
        wait_until(lambda: [r for r in self.requests_for(marker) if r.get("client_closed")],
                   30, "the fake to see the synthesis call dropped")


class TestCancelOnAnotherInstance(CrewdTestCase):
    SHARED_SERVER = False

    def test_the_running_instance_abandons_at_its_next_step(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        a = self.start_crewd()
        name = unique_name("remote")
        a.create({"name": name, "agents": [
            fake_agent("first", fake, reply="one", extra_prompt=" [[fake:delay_ms=1500]]"),
            fake_agent("second", fake, reply="two")]})
        marker = "remote " + name
        job_id = a.execute({"crew_id": name, "query": marker})["job_id"]

        def calls():
            return [r for r in fake.requests()
                    if isinstance(r.get("body"), dict) and marker in json.dumps(r["body"])]
        wait_until(lambda: calls(), 30, "the first call")
        # B starts once A holds the job, so B has no slot for it: B ends it in the store.
        b = self.start_crewd(store=a.pg_url) if PG_MODE else self.start_crewd(
            store_dir=a.store_dir)
        st, _, js, raw = b.request("POST", "/api/v1/crew/job/%s/cancel" % job_id)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["status"], "cancelled")
        self.assertNotIn("result", js)
        # A's call ends, its checkpoint fails its fence, and A drops the run: the second agent
        # is never called and the job stays cancelled.
        wait_until(lambda: "run abandoned" in a.stderr_text(), 30, "A to abandon the run")
        self.assertEqual(len(calls()), 1)
        self.assertEqual(a.job(job_id)["status"], "cancelled")
        self.assertEqual(a.job(job_id)["error"], "cancelled by the client")


class TestRetention(CrewdTestCase):
    SHARED_SERVER = False

    def test_finished_jobs_expire_live_ones_never(self):
        fake = FakeLLM([])
        self.addCleanup(fake.stop)
        srv = self.start_crewd(args=["--job-ttl-s", "1", "--cleanup-interval-s", "1",
                                     "--max-running-jobs", "1"])
        name = unique_name("ttl")
        srv.create({"name": name, "agents": [fake_agent("a", fake, reply="ok")]})
        slow = unique_name("ttl-slow")
        srv.create({"name": slow, "agents": [
            fake_agent("a", fake, reply="z", extra_prompt=" [[fake:delay_ms=60000]]")]})
        done = srv.execute({"crew_id": name, "query": "d " + name})["job_id"]
        self.assertEqual(srv.wait_job(done)["status"], "completed")
        running = srv.execute({"crew_id": slow, "query": "r " + slow})["job_id"]
        wait_until(lambda: srv.job(running)["status"] == "running", 30, "the slow job to run")
        pending = srv.execute({"crew_id": slow, "query": "p " + slow})["job_id"]
        # The finished job goes within a few intervals.
        wait_until(lambda: srv.request("GET", "/api/v1/crew/job/" + done)[0] == 404, 30,
                   "the finished job to be deleted")
        # Its events and deliveries went with it.
        self.assertEqual(srv.request("GET", "/api/v1/crew/job/%s/events" % done)[0], 404)
        self.assertEqual(srv.request("GET", "/api/v1/crew/job/%s/webhooks" % done)[0], 404)
        if not PG_MODE:
            with sqlite3.connect(srv.db_path) as db:
                def n_events(j):
                    return db.execute("SELECT count(*) FROM job_events WHERE job_id = ?",
                                      (j,)).fetchone()[0]
                self.assertEqual(n_events(done), 0)
                self.assertGreater(n_events(running), 0)  # the query does find events
        # Another finished job goes too, after further purges: the live ones stay all along.
        again = srv.execute({"crew_id": name, "query": "a " + name})["job_id"]
        srv.request("POST", "/api/v1/crew/job/%s/cancel" % again)  # pending behind the slow one
        wait_until(lambda: srv.request("GET", "/api/v1/crew/job/" + again)[0] == 404, 30,
                   "the second finished job to be deleted")
        self.assertEqual(srv.job(running)["status"], "running")
        self.assertEqual(srv.job(pending)["status"], "pending")
        # Once ended, they expire like any other.
        for j in (pending, running):
            self.assertEqual(srv.request("POST", "/api/v1/crew/job/%s/cancel" % j)[0], 200)
        for j in (pending, running):
            wait_until(lambda: srv.request("GET", "/api/v1/crew/job/" + j)[0] == 404, 30,
                       "the cancelled job to be deleted")
        self.assertEqual(list_jobs(srv, crew_id=slow)[2]["total"], 0)

if __name__ == "__main__":
    unittest.main()
