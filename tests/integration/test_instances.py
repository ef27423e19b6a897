"""Two crewd processes on one store (a SQLite file, or a PostgreSQL database with
CREWD_TEST_STORE=postgres): names stay unique and each sees what the other wrote."""
import threading
import unittest

from crewd_harness import PG_MODE, CrewdTestCase, crew, unique_name


class TestTwoInstances(CrewdTestCase):
    SHARED_SERVER = False

    def start_pair(self):
        a = self.start_crewd()
        if PG_MODE:
            b = self.start_crewd(store=a.pg_url)
        else:
            b = self.start_crewd(store_dir=a.store_dir)
        return a, b

    def test_same_name_created_on_both_one_wins(self):
        a, b = self.start_pair()
        names = [unique_name("race") for _ in range(5)]
        results = {n: [] for n in names}
        lock = threading.Lock()

        def worker(srv):
            for n in names:
                st, _, _, raw = srv.request("PUT", "/api/v1/crew", body=crew(n))
                with lock:
                    results[n].append((st, raw))

        threads = [threading.Thread(target=worker, args=(srv,)) for srv in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            self.assertFalse(t.is_alive(), "a client thread did not finish within 120 s")
        for n, replies in results.items():
            statuses = sorted(st for st, _ in replies)
            self.assertEqual(statuses, [201, 409, 409, 409], "%s: %r" % (n, replies))

    def test_each_instance_sees_the_other(self):
        a, b = self.start_pair()
        name = unique_name("shared")
        st, _, js, raw = a.request("PUT", "/api/v1/crew", body=crew(name))
        self.assertEqual(st, 201, raw)
        st, _, got, raw = b.request("GET", "/api/v1/crew/" + js["crew_id"])
        self.assertEqual(st, 200, raw)
        self.assertEqual(got["name"], name)
        st, _, _, raw = b.request("DELETE", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        st, _, _, raw = a.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 404, raw)


if __name__ == "__main__":
    unittest.main()
