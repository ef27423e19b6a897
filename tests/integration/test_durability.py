"""Durability of the crew registry: what a 2xx acknowledged survives a graceful restart and a
kill -9; the SQLite file is in WAL mode and carries the current schema_version. Each test runs its own
server, because each one stops and restarts it."""

import http.client
import os
import sqlite3
import threading
import unittest

from crewd_harness import PG_MODE, CrewdTestCase, agent, crew, unique_name


class DurabilityCase(CrewdTestCase):
    SHARED_SERVER = False   # every test starts (and restarts) its own

    def get(self, srv, ident):
        return srv.request("GET", "/api/v1/crew/" + ident)


class TestRestart(DurabilityCase):

    def test_crew_survives_graceful_restart(self):
        srv = self.start_crewd()
        name = unique_name("grace")
        d = crew(name, description="kept", agents=[agent("a", name="alpha",
                                                         config={"model": "claude-sonnet-4-5"},
                                                         tools=["calculator"])],
                 metadata={"k": [1, 2]})
        created = srv.create(d)
        _, _, before, _ = self.get(srv, name)
        self.assertEqual(srv.stop(), 0, srv.describe())
        srv.start()
        st, _, after, raw = self.get(srv, name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(after["crew_id"], created["crew_id"])
        self.assertEqual(after["created_at"], created["created_at"])
        self.assertEqual(after, before)

    def test_crew_survives_kill9_right_after_201(self):
        srv = self.start_crewd()
        name = unique_name("crash")
        created = srv.create(crew(name))
        srv.kill9()
        srv.start()
        st, _, js, raw = self.get(srv, name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], created["crew_id"])
        st, _, js, raw = self.get(srv, created["crew_id"])
        self.assertEqual(st, 200, raw)

    def test_many_crews_survive_kill9(self):
        srv = self.start_crewd()
        names = [unique_name("many%02d" % i) for i in range(20)]
        ids = [srv.create(crew(n))["crew_id"] for n in names]
        srv.kill9()
        srv.start()
        st, _, js, raw = srv.request("GET", "/api/v1/crew?limit=1000")
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["total"], 20)
        self.assertEqual(sorted((c["name"], c["crew_id"]) for c in js["crews"]),
                         sorted(zip(names, ids)))

    def test_kill9_under_write_load_loses_nothing_acknowledged(self):
        srv = self.start_crewd()
        acked = []
        stop = threading.Event()
        enough = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                name = unique_name("load%04d" % i)
                i += 1
                try:
                    st = srv.request("PUT", "/api/v1/crew", body=crew(name))[0]
                except (OSError, http.client.HTTPException):
                    return  # the server is gone
                if st == 201:
                    acked.append(name)
                if len(acked) >= 40:
                    enough.set()

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            self.assertTrue(enough.wait(120), "the writers never got 40 crews acknowledged")
            srv.kill9()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        self.assertFalse(any(t.is_alive() for t in threads), "a writer thread is stuck")
        srv.start()
        st, _, js, raw = srv.request("GET", "/api/v1/crew?limit=1000")
        self.assertEqual(st, 200, raw)
        listed = {c["name"] for c in js["crews"]}
        missing = [n for n in acked if n not in listed]
        self.assertEqual(missing, [], "acknowledged with 201, lost after kill -9")
        self.assertEqual(srv.stop(), 0, srv.describe())
        if PG_MODE:
            return  # PostgreSQL checks its own pages; the file check below is SQLite's
        con = sqlite3.connect(srv.db_path, timeout=30)
        try:
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        finally:
            con.close()

    def test_update_survives_kill9(self):
        srv = self.start_crewd()
        name = unique_name("upd")
        new = unique_name("renamed")
        created = srv.create(crew(name, description="v1"))
        st, _, upd, raw = srv.request("PUT", "/api/v1/crew/" + name,
                                      body=crew(new, description="v2"))
        self.assertEqual(st, 200, raw)
        srv.kill9()
        srv.start()
        st, _, js, raw = self.get(srv, new)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["crew_id"], created["crew_id"])
        self.assertEqual(js["description"], "v2")
        self.assertEqual(js["created_at"], created["created_at"])
        self.assertEqual(js["updated_at"], upd["updated_at"])
        self.assertEqual(self.get(srv, name)[0], 404)

    def test_delete_survives_kill9(self):
        srv = self.start_crewd()
        gone = unique_name("gone")
        kept = unique_name("kept")
        srv.create(crew(gone))
        srv.create(crew(kept))
        self.assertEqual(srv.request("DELETE", "/api/v1/crew/" + gone)[0], 200)
        srv.kill9()
        srv.start()
        self.assertEqual(self.get(srv, gone)[0], 404)
        self.assertEqual(self.get(srv, kept)[0], 200)

    def test_list_order_stable_across_restart(self):
        srv = self.start_crewd()
        for i in range(10):
            srv.create(crew(unique_name("ord%02d" % i)))
        before = srv.request("GET", "/api/v1/crew")[2]["crews"]
        srv.restart()
        after = srv.request("GET", "/api/v1/crew")[2]["crews"]
        self.assertEqual(after, before)

    def test_name_still_unique_after_restart(self):
        srv = self.start_crewd()
        name = unique_name("uniq")
        srv.create(crew(name))
        srv.restart()
        st, _, _, raw = srv.request("PUT", "/api/v1/crew", body=crew(name))
        self.assertEqual(st, 409, raw)

    def test_secret_redacted_after_restart(self):
        srv = self.start_crewd()
        name = unique_name("sec")
        secret = "sk-DURABLE-SECRET-51c0"
        srv.create(crew(name, agents=[agent("a", config={"model": "gpt-4", "api_key": secret})]))
        srv.restart()
        st, _, js, raw = self.get(srv, name)
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["agents"][0]["config"]["api_key"], "***")
        self.assertNotIn(secret.encode(), raw)

    def test_plan_available_after_restart(self):
        srv = self.start_crewd()
        name = unique_name("plan")
        srv.create(crew(name, mode="flow"))
        srv.restart()
        st, _, js, raw = srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(st, 200, raw)
        self.assertIn("plan", js)
        self.assertIn("order", js["plan"])


@unittest.skipIf(PG_MODE, "inspects the SQLite file")
class TestStoreFile(DurabilityCase):

    def open_db(self, srv):
        self.assertTrue(os.path.exists(srv.db_path), "no database at " + srv.db_path)
        con = sqlite3.connect(srv.db_path, timeout=30)
        self.addCleanup(con.close)
        return con

    def test_wal_mode_while_running(self):
        srv = self.start_crewd()
        srv.create(crew(unique_name("wal")))
        con = self.open_db(srv)
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertEqual(mode.lower(), "wal")

    def test_wal_mode_after_stop(self):
        srv = self.start_crewd()
        srv.create(crew(unique_name("wal")))
        self.assertEqual(srv.stop(), 0, srv.describe())
        con = self.open_db(srv)
        self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0].lower(), "wal")

    def test_schema_version_is_current(self):
        srv = self.start_crewd()
        self.assertEqual(srv.stop(), 0, srv.describe())
        con = self.open_db(srv)
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")]
        self.assertIn("schema_version", tables)
        cols = [r[1] for r in con.execute("PRAGMA table_info(schema_version)")]
        self.assertIn("version", cols)
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version")]
        self.assertEqual(max(versions), 7, versions)

    def test_reopen_existing_store_keeps_schema(self):
        srv = self.start_crewd()
        srv.create(crew(unique_name("reopen")))
        srv.restart()
        self.assertEqual(srv.stop(), 0, srv.describe())
        con = self.open_db(srv)
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version")]
        self.assertEqual(max(versions), 7, versions)

    def test_new_store_is_empty(self):
        srv = self.start_crewd()
        st, _, js, raw = srv.request("GET", "/api/v1/crew")
        self.assertEqual(st, 200, raw)
        self.assertEqual((js["crews"], js["total"]), ([], 0))


if __name__ == "__main__":
    unittest.main()
