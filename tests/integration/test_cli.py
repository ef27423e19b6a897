"""The command line, the environment and the config file: --help/--version, bad options (exit
2), a store that cannot be opened (exit 1), precedence defaults < config file < environment <
command line, and graceful stop on SIGTERM/SIGINT (exit 0)."""

import json
import os
import socket
import shutil
import signal
import tempfile
import unittest

from crewd_harness import (Crewd, CrewdTestCase, agent, crew, free_port, response_complete,
                           run_crewd, unique_name)


class CliCase(CrewdTestCase):
    """No shared server: tests start crewd themselves."""
    SHARED_SERVER = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="crewd-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.store_arg = ["--store", "sqlite:" + os.path.join(self.tmp, "crewd.db")]

    def write_config(self, obj, name="crewd.json"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))
        return path

    def assertExit(self, args, code, env=None, stderr_contains=None):
        rc, out, err = run_crewd(args, env=env)
        self.assertEqual(rc, code, "crewd %r exited %s, expected %s\nstdout: %s\nstderr: %s"
                         % (args, rc, code, out, err))
        if stderr_contains:
            for s in ([stderr_contains] if isinstance(stderr_contains, str) else stderr_contains):
                self.assertIn(s, err, "stderr should mention %r: %s" % (s, err))
        self.assertNotIn("listening on", out)
        return out, err


class TestHelpVersion(CliCase):

    def test_help_prints_usage_and_exits_0(self):
        rc, out, err = run_crewd(["--help"])
        self.assertEqual(rc, 0, err)
        self.assertIn("usage", out.lower())
        for opt in ("--listen", "--store", "--config", "--log-level", "--api-key",
                    "--cors-origin", "--max-body-bytes", "--default-provider",
                    "--max-running-jobs", "--job-lease-ms", "--job-ttl-s",
                    "--cleanup-interval-s", "--llm-max-host-connections",
                    "--llm-timeout-ms", "--llm-max-attempts"):
            self.assertIn(opt, out)
        self.assertNotIn("listening on", out)

    def test_version_exits_0(self):
        rc, out, err = run_crewd(["--version"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\d+\.\d+\.\d+")


class TestBadArguments(CliCase):

    def test_unknown_option(self):
        self.assertExit(["--bogus-option"] + self.store_arg, 2, stderr_contains="--bogus-option")

    def test_unexpected_positional_argument(self):
        self.assertExit(["stray"] + self.store_arg, 2)

    def test_missing_option_value(self):
        self.assertExit(self.store_arg + ["--listen"], 2, stderr_contains="--listen")

    def test_bad_listen(self):
        for v in ("nonsense", "127.0.0.1", "127.0.0.1:notaport", "127.0.0.1:70000",
                  "127.0.0.1:-1"):
            with self.subTest(listen=v):
                self.assertExit(["--listen", v] + self.store_arg, 2)

    def test_bad_max_body_bytes(self):
        for v in ("abc", "-5", "0", "12x", "99999999999999999999999"):
            with self.subTest(value=v):
                self.assertExit(["--listen", "127.0.0.1:0", "--max-body-bytes", v]
                                + self.store_arg, 2, stderr_contains="max-body-bytes")

    def test_bad_log_level(self):
        self.assertExit(["--listen", "127.0.0.1:0", "--log-level", "loud"] + self.store_arg, 2)

    def test_bad_log_level_from_environment(self):
        out, err = self.assertExit(["--listen", "127.0.0.1:0"] + self.store_arg, 2,
                                   env={"CREWD_LOG_LEVEL": "loud"})
        self.assertIn("log", err.lower(), "stderr should name the log level setting: " + err)

    def test_bad_listen_from_environment(self):
        self.assertExit(self.store_arg, 2, env={"CREWD_LISTEN": "127.0.0.1:notaport"})

    def test_bad_default_provider(self):
        self.assertExit(["--listen", "127.0.0.1:0", "--default-provider", "skynet"]
                        + self.store_arg, 2, stderr_contains="skynet")

    def test_bad_job_and_llm_numbers(self):
        cases = [("--max-running-jobs", "0"), ("--max-running-jobs", "x"),
                 ("--job-lease-ms", "10"), ("--llm-max-host-connections", "-3"),
                 ("--llm-timeout-ms", "1e3"), ("--llm-max-attempts", "21"),
                 ("--job-ttl-s", "0"), ("--job-ttl-s", "-5"), ("--job-ttl-s", "1h"),
                 ("--job-ttl-s", "999999999999"), ("--cleanup-interval-s", "0"),
                 ("--cleanup-interval-s", "x"), ("--cleanup-interval-s", "604801")]
        for opt, v in cases:
            with self.subTest(option=opt, value=v):
                self.assertExit(["--listen", "127.0.0.1:0", opt, v] + self.store_arg, 2,
                                stderr_contains=opt)

    def test_empty_api_key_refused(self):
        self.assertExit(["--listen", "127.0.0.1:0", "--api-key", ""] + self.store_arg, 2)


class TestStoreErrors(CliCase):

    def test_store_not_a_database_exits_1(self):
        path = os.path.join(self.tmp, "garbage.db")
        with open(path, "wb") as f:
            f.write(b"this is not an SQLite database, just some bytes\n" * 100)
        self.assertExit(["--listen", "127.0.0.1:0", "--store", "sqlite:" + path], 1)

    def test_malformed_store_url_is_a_usage_error(self):
        for url in ("mysql://u:Secr3t@h/db", "sqlite:", "var/crewd.db"):
            with self.subTest(url=url):
                out, err = self.assertExit(["--listen", "127.0.0.1:0", "--store", url], 2,
                                           stderr_contains="is not a store URL")
                self.assertNotIn("Secr3t", err)

    def test_postgres_password_with_slash_refused_without_echo(self):
        # libpq would read "u:Pa5s" as host and port and quote "Pa5s" back in its error.
        out, err = self.assertExit(["--listen", "127.0.0.1:0", "--store",
                                    "postgres://u:Pa5s/w0rd@127.0.0.1:1/db"], 1,
                                   stderr_contains="percent-encode")
        self.assertNotIn("Pa5s", err)
        self.assertNotIn("w0rd", err)

    def test_postgres_connect_error_hides_password(self):
        out, err = self.assertExit(["--listen", "127.0.0.1:0", "--store",
                                    "postgres://u:S3cr3tPw@127.0.0.1:1/db?connect_timeout=5"], 1,
                                   stderr_contains="cannot connect")
        self.assertNotIn("S3cr3tPw", err)

    def test_store_under_a_regular_file_exits_1(self):
        blocker = os.path.join(self.tmp, "file")
        with open(blocker, "w") as f:
            f.write("x")
        self.assertExit(["--listen", "127.0.0.1:0", "--store",
                         "sqlite:" + os.path.join(blocker, "sub", "crewd.db")], 1)

    def test_store_creates_missing_parent_directory(self):
        # store.h: the file and its parent directory are created when missing
        srv = self.start_crewd(store="sqlite:" + os.path.join(self.tmp, "sub", "crewd.db"))
        srv.create(crew(unique_name("nested")))
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "sub", "crewd.db")))

    def test_store_from_environment(self):
        path = os.path.join(self.tmp, "env.db")
        srv = self.start_crewd(store=None, env={"CREWD_STORE": "sqlite:" + path})
        srv.create(crew(unique_name("envstore")))
        self.assertTrue(os.path.exists(path), "CREWD_STORE was not used")

    def test_listen_port_in_use_fails(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, out, err = run_crewd(["--listen", "127.0.0.1:%d" % port] + self.store_arg)
        self.assertNotEqual(rc, 0, "crewd started on a port already in use")
        self.assertTrue(err.strip(), "no message on stderr")


class TestConfigFile(CliCase):

    def test_config_file_listen(self):
        port = free_port()
        cfg = self.write_config({"listen": "127.0.0.1:%d" % port})
        srv = self.start_crewd(listen=None, args=["--config", cfg])
        self.assertEqual(srv.port, port)
        self.assertEqual(srv.healthz(), 200)

    def test_config_file_all_keys(self):
        cfg = self.write_config({
            "listen": "127.0.0.1:0",
            "store": "sqlite:" + os.path.join(self.tmp, "cfg.db"),
            "log_level": "debug",
            "api_keys": ["cfg-key-1", "cfg-key-2"],
            "cors_origins": ["http://cfg.example"],
            "max_body_bytes": 8192,
            "default_provider": "anthropic",
            "max_running_jobs": 3,
            "job_lease_ms": 5000,
            "job_ttl_s": 7200,
            "cleanup_interval_s": 60,
            "llm_max_host_connections": 8,
            "llm_timeout_ms": 60000,
            "llm_max_attempts": 2,
            "llm_limits": ["openai=4/100"],
            "tool_http_allow": ["example.com"],
            "tool_http_allow_private": True,
            "prices": {"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}}})
        srv = self.start_crewd(listen=None, store=None, args=["--config", cfg])
        # api_keys
        st = srv.request("GET", "/api/v1/crew")[0]
        self.assertEqual(st, 401)
        srv.api_key = "cfg-key-2"
        # store
        name = unique_name("cfg")
        srv.create(crew(name, agents=[agent("a")]))
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "cfg.db")))
        # default_provider: no llm, no model
        st, _, js, raw = srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        self.assertEqual(st, 200, raw)
        agents = js["plan"]["agents"]
        a = list(agents.values())[0] if isinstance(agents, dict) else agents[0]
        self.assertEqual(a["provider"], "anthropic")
        # cors_origins
        st, hdrs, _, _ = srv.request("GET", "/api/v1/crew",
                                     headers={"Origin": "http://cfg.example"})
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), "http://cfg.example")
        # max_body_bytes
        big = crew(unique_name("big"), description="x" * 10000)
        self.assertEqual(srv.request("PUT", "/api/v1/crew", body=big)[0], 413)

    def test_unknown_key_exits_2(self):
        cfg = self.write_config({"listen": "127.0.0.1:0", "lisen": "127.0.0.1:0"})
        self.assertExit(["--config", cfg] + self.store_arg, 2, stderr_contains="lisen")

    def test_bad_value_exits_2(self):
        cases = [("max_body_bytes", "big"), ("max_body_bytes", -1), ("log_level", "loud"),
                 ("api_keys", "k1,k2"), ("cors_origins", [1]), ("listen", 8080),
                 ("default_provider", "skynet"), ("max_running_jobs", 0),
                 ("job_lease_ms", "soon"), ("llm_max_attempts", 1.5)]
        for key, value in cases:
            with self.subTest(key=key, value=value):
                cfg = self.write_config({"listen": "127.0.0.1:0", key: value}
                                        if key != "listen" else {key: value})
                self.assertExit(["--config", cfg] + self.store_arg, 2, stderr_contains=key)

    def test_invalid_json_exits_2(self):
        cfg = self.write_config('{"listen": "127.0.0.1:0",')
        self.assertExit(["--config", cfg] + self.store_arg, 2)

    def test_not_an_object_exits_2(self):
        cfg = self.write_config('["listen"]')
        self.assertExit(["--config", cfg] + self.store_arg, 2)

    def test_missing_config_file_fails(self):
        missing = os.path.join(self.tmp, "missing.json")
        rc, out, err = run_crewd(["--config", missing, "--listen", "127.0.0.1:0"]
                                 + self.store_arg)
        self.assertIn(rc, (1, 2), err)
        self.assertIn("missing.json", err)


class TestPrecedence(CliCase):

    def test_environment_overrides_config_file(self):
        p_cfg, p_env = free_port(), free_port()
        cfg = self.write_config({"listen": "127.0.0.1:%d" % p_cfg})
        srv = self.start_crewd(listen=None, args=["--config", cfg],
                               env={"CREWD_LISTEN": "127.0.0.1:%d" % p_env})
        self.assertEqual(srv.port, p_env)

    def test_command_line_overrides_environment_and_config(self):
        p_cfg, p_env, p_cli = free_port(), free_port(), free_port()
        cfg = self.write_config({"listen": "127.0.0.1:%d" % p_cfg})
        srv = self.start_crewd(listen="127.0.0.1:%d" % p_cli, args=["--config", cfg],
                               env={"CREWD_LISTEN": "127.0.0.1:%d" % p_env})
        self.assertEqual(srv.port, p_cli)

    def test_environment_listen_alone(self):
        port = free_port()
        srv = self.start_crewd(listen=None, env={"CREWD_LISTEN": "127.0.0.1:%d" % port})
        self.assertEqual(srv.port, port)

    def test_command_line_max_body_overrides_config(self):
        cfg = self.write_config({"max_body_bytes": 1024})
        srv = self.start_crewd(args=["--config", cfg, "--max-body-bytes", "65536"])
        st, _, _, raw = srv.request("PUT", "/api/v1/crew",
                                    body=crew(unique_name("mb"), description="y" * 4000))
        self.assertEqual(st, 201, raw)

    def test_config_max_body_applies(self):
        cfg = self.write_config({"max_body_bytes": 1024})
        srv = self.start_crewd(args=["--config", cfg])
        st, _, _, raw = srv.request("PUT", "/api/v1/crew",
                                    body=crew(unique_name("mb"), description="y" * 4000))
        self.assertEqual(st, 413, raw)

    def test_environment_store_overridden_by_command_line(self):
        env_path = os.path.join(self.tmp, "env.db")
        srv = self.start_crewd(env={"CREWD_STORE": "sqlite:" + env_path})  # --store given
        srv.create(crew(unique_name("cli")))
        self.assertTrue(os.path.exists(srv.db_path))
        self.assertFalse(os.path.exists(env_path), "CREWD_STORE won over --store")

    def test_environment_api_keys_override_config(self):
        cfg = self.write_config({"api_keys": ["from-config"]})
        srv = self.start_crewd(args=["--config", cfg], env={"CREWD_API_KEYS": "from-env"})
        st = srv.request("GET", "/api/v1/crew", headers={"Authorization": "Bearer from-env"})[0]
        self.assertEqual(st, 200)
        # Replaced, not merged: the config file's key no longer opens the API.
        st = srv.request("GET", "/api/v1/crew", headers={"Authorization": "Bearer from-config"})[0]
        self.assertEqual(st, 401)

    def test_command_line_default_provider(self):
        srv = self.start_crewd(args=["--default-provider", "google"])
        name = unique_name("dp")
        srv.create(crew(name, agents=[agent("a")]))
        st, _, js, raw = srv.request("GET", "/api/v1/crew/%s?include=plan" % name)
        agents = js["plan"]["agents"]
        a = list(agents.values())[0] if isinstance(agents, dict) else agents[0]
        self.assertEqual(a["provider"], "google")

    def test_log_level_error_is_quiet(self):
        # nothing in a normal run (start, requests, SIGTERM) is an error
        srv = Crewd(args=["--log-level", "error"])
        try:
            srv.create(crew(unique_name("quiet")))
            srv.request("GET", "/api/v1/crew/" + unique_name("missing"))
        finally:
            rc = srv.stop()
            log = srv.stderr_text()
            srv._remove_tmp()
        self.assertEqual(rc, 0)
        self.assertEqual(log.strip(), "", "stderr at --log-level error: " + log)

    def test_environment_log_level_overrides_config(self):
        cfg = self.write_config({"log_level": "debug"})
        srv = Crewd(args=["--config", cfg], env={"CREWD_LOG_LEVEL": "error"})
        try:
            srv.create(crew(unique_name("envlvl")))
        finally:
            rc = srv.stop()
            log = srv.stderr_text()
            srv._remove_tmp()
        self.assertEqual(rc, 0)
        self.assertEqual(log.strip(), "", "CREWD_LOG_LEVEL=error did not win over the config "
                                          "file's debug: " + log)

    def test_command_line_log_level_overrides_environment(self):
        srv = Crewd(args=["--log-level", "debug"], env={"CREWD_LOG_LEVEL": "error"})
        try:
            srv.create(crew(unique_name("clilvl")))
        finally:
            rc = srv.stop()
            log = srv.stderr_text()
            srv._remove_tmp()
        self.assertEqual(rc, 0)
        self.assertNotEqual(log.strip(), "", "--log-level debug logged nothing")

    def test_log_level_accepted(self):
        for lvl in ("error", "warn", "info", "debug", "trace"):
            with self.subTest(level=lvl):
                srv = Crewd(args=["--log-level", lvl])
                try:
                    self.assertEqual(srv.healthz(), 200)
                finally:
                    rc = srv.close()
                self.assertEqual(rc, 0, "exit status %s at --log-level %s" % (rc, lvl))


class TestSignals(CliCase):

    def test_sigterm_exits_0(self):
        srv = self.start_crewd()
        srv.create(crew(unique_name("term")))
        self.assertEqual(srv.stop(signal.SIGTERM), 0, srv.describe())

    def test_sigint_exits_0(self):
        srv = self.start_crewd()
        srv.create(crew(unique_name("int")))
        self.assertEqual(srv.stop(signal.SIGINT), 0, srv.describe())

    def test_sigterm_with_idle_open_connection(self):
        srv = self.start_crewd()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        # read the full reply so the connection sits idle in keep-alive
        data = b""
        while not response_complete(data):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        self.assertIn(b" 200 ", data.split(b"\r\n")[0] + b" ")
        self.assertEqual(srv.stop(), 0, srv.describe())

    def test_listening_line_is_exact(self):
        srv = self.start_crewd()
        lines = srv._stdout_buf.decode().splitlines()
        self.assertEqual(lines[0], "listening on 127.0.0.1:%d" % srv.port)


if __name__ == "__main__":
    unittest.main()
