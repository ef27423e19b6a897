"""Resource exhaustion: crewd out of file descriptors keeps serving, without spinning."""
import socket
import unittest

from crewd_harness import CrewdTestCase, crew, unique_name


class TestOutOfDescriptors(CrewdTestCase):
    SHARED_SERVER = False

    def test_fd_exhaustion_pauses_accept_and_recovers(self):
        # 48 descriptors: the server's own (store, loop, listener) leave room for a few
        # connections; 120 clients exhaust the rest. Before the fix, accept() failed in a
        # busy loop (745k log lines a second) and starved the loop.
        srv = self.start_crewd(max_open_files=48, args=["--log-level", "warn"])
        name = unique_name("fd")
        st, _, _, raw = srv.request("PUT", "/api/v1/crew", crew(name))
        self.assertEqual(st, 201, raw)
        socks = []
        try:
            for _ in range(120):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                socks.append(s)
            # The connections the server did accept still get answers.
            socks[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = socks[0].recv(4096)
            self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        finally:
            for s in socks:
                s.close()
        # Once descriptors are free again, new connections are accepted (the listener
        # resumes after its pause); request() retries nothing, so this is a real check.
        st, _, js, raw = srv.request("GET", "/api/v1/crew/" + name)
        self.assertEqual(st, 200, raw)
        warnings = srv.stderr_text().count("accept failed")
        self.assertGreaterEqual(warnings, 1, srv.describe())
        self.assertLess(warnings, 200, "accept errors must pause, not spin:\n" + srv.describe())


if __name__ == "__main__":
    unittest.main()
