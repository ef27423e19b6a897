"""The Idempotency-Key header of execute (API.md section 4): the same key and body answer the
same job again and run nothing new, another body is a 422, a malformed key a 400, no key
creates a job per request; concurrent requests with one key make one job; deleting the job
frees its key. On every execute route. Every wait is bounded."""
import threading
import unittest
import uuid

from crewd_harness import unique_name
from test_jobs import FakeCase, fake_agent

ROUTES = ("/api/v1/crew/execute", "/api/v1/crew")


def new_key():
    return "key-" + uuid.uuid4().hex


class TestIdempotencyKey(FakeCase):

    def setUp(self):
        self.name = unique_name("idem")
        self.srv.create({"name": self.name, "agents": [fake_agent("a", self.fake, reply="ok")]})

    def post(self, body, key, path="/api/v1/crew/execute"):
        headers = {"Idempotency-Key": key} if key is not None else None
        return self.srv.request("POST", path, body=body, headers=headers)

    def crew_jobs(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew/jobs?crew_id=" + self.name)
        self.assertEqual(st, 200, raw)
        return [j["job_id"] for j in js["jobs"]]

    def test_same_key_same_body_is_one_job(self):
        for path in ROUTES + ("/api/v1/crew/" + self.name,):
            with self.subTest(path=path):
                marker = uuid.uuid4().hex
                body = {"query": "once " + marker}
                if not path.startswith("/api/v1/crew/" + self.name):
                    body["crew_id"] = self.name
                key = new_key()
                st, hdrs, first, raw = self.post(body, key, path)
                self.assertEqual(st, 202, raw)
                self.assertIsNone(hdrs.get("Idempotent-Replayed"))
                self.assertEqual(first["status"], "pending")
                done = self.srv.wait_job(first["job_id"])
                self.assertEqual(done["status"], "completed", done)
                st, hdrs, again, raw = self.post(body, key, path)
                self.assertEqual(st, 202, raw)
                self.assertEqual(hdrs.get("Idempotent-Replayed"), "true")
                for k in ("job_id", "crew_id", "crew_name", "created_at", "execution_mode",
                          "message"):
                    self.assertEqual(again[k], first[k], k)
                # The job's status now.
                self.assertEqual(again["status"], "completed")
                # The fake LLM saw one run.
                self.assertEqual(len(self.requests_for(marker)), 1)
        self.assertEqual(len(self.crew_jobs()), 3)

    def test_same_key_other_body_is_422(self):
        key = new_key()
        st, _, first, raw = self.post({"crew_id": self.name, "query": "a"}, key)
        self.assertEqual(st, 202, raw)
        st, _, js, raw = self.post({"crew_id": self.name, "query": "b"}, key)
        self.assertEqual(st, 422, raw)
        self.assertEqual(js, {"message": "Idempotency-Key '%s' was used with another request "
                                         "body" % key, "status": 422})
        # Keys are per server, not per crew: another crew's request with it is refused too.
        other = unique_name("idem-other")
        self.srv.create({"name": other, "agents": [fake_agent("a", self.fake, reply="x")]})
        st, _, js, raw = self.post({"crew_id": other, "query": "a"}, key)
        self.assertEqual(st, 422, raw)
        self.srv.wait_job(first["job_id"])
        self.assertEqual(self.crew_jobs(), [first["job_id"]])

    def test_malformed_key_is_400(self):
        body = {"crew_id": self.name, "query": "bad key"}
        for key in ("", "k" * 256, "caf\u00e9", "tab\there"):
            with self.subTest(key=key[:20]):
                st, _, js, raw = self.post(body, key)
                self.assertEqual(st, 400, raw)
                self.assertEqual(js["message"],
                                 "Idempotency-Key must be 1 to 255 printable ASCII characters")
        self.assertEqual(self.crew_jobs(), [])
        # 255 printable bytes, spaces and punctuation included, are a key.
        st, _, js, raw = self.post(body, "k" * 250 + " !~\"'")
        self.assertEqual(st, 202, raw)
        self.srv.wait_job(js["job_id"])

    def test_no_key_makes_a_job_per_request(self):
        body = {"crew_id": self.name, "query": "no key"}
        ids = []
        for _ in range(2):
            st, _, js, raw = self.post(body, None)
            self.assertEqual(st, 202, raw)
            ids.append(js["job_id"])
        self.assertNotEqual(ids[0], ids[1])
        for j in ids:
            self.srv.wait_job(j)
        self.assertEqual(sorted(self.crew_jobs()), sorted(ids))

    def test_invalid_request_is_not_remembered(self):
        key = new_key()
        st, _, _, raw = self.post({"crew_id": self.name}, key)
        self.assertEqual(st, 400, raw)
        st, _, js, raw = self.post({"crew_id": self.name, "query": "now valid"}, key)
        self.assertEqual(st, 202, raw)
        self.srv.wait_job(js["job_id"])

    def test_concurrent_requests_make_one_job(self):
        key = new_key()
        marker = uuid.uuid4().hex
        body = {"crew_id": self.name, "query": "race " + marker}
        n = 8
        barrier = threading.Barrier(n)
        results = [None] * n

        def worker(i):
            barrier.wait(timeout=10)
            results[i] = self.post(body, key)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        ids = set()
        for st, _, js, raw in results:
            self.assertEqual(st, 202, raw)
            ids.add(js["job_id"])
        self.assertEqual(len(ids), 1, ids)
        self.srv.wait_job(ids.pop())
        self.assertEqual(len(self.crew_jobs()), 1)
        self.assertEqual(len(self.requests_for(marker)), 1)

    def test_deleting_the_job_frees_the_key(self):
        key = new_key()
        body = {"crew_id": self.name, "query": "delete me"}
        st, _, first, raw = self.post(body, key)
        self.assertEqual(st, 202, raw)
        self.srv.wait_job(first["job_id"])
        st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew/job/" + first["job_id"])
        self.assertEqual(st, 200, raw)
        # Free again, for any body.
        st, _, second, raw = self.post({"crew_id": self.name, "query": "another"}, key)
        self.assertEqual(st, 202, raw)
        self.assertNotEqual(second["job_id"], first["job_id"])
        self.srv.wait_job(second["job_id"])
        self.assertEqual(self.crew_jobs(), [second["job_id"]])


if __name__ == "__main__":
    unittest.main()
