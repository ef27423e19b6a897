"""API keys (Authorization: Bearer) and CORS (preflight and simple requests), configured on the
command line and through the environment."""

import unittest

from crewd_harness import CrewdTestCase, crew, unique_name

K1 = "k1-4e1c9d2b7a55f0aa"
K2 = "k2-b7f3306cc19d4e21"
ORIGIN = "http://app.example"


def bearer(key):
    return {"Authorization": "Bearer " + key}


def header_list(value):
    return [v.strip().lower() for v in (value or "").split(",") if v.strip()]


class AuthCase(CrewdTestCase):

    def assert401(self, resp):
        self.assertJsonError(resp, 401)
        www = resp[1].get("WWW-Authenticate") or ""
        self.assertTrue(www.lower().startswith("bearer"),
                        "401 needs WWW-Authenticate: Bearer, got %r" % www)


class TestApiKeysFromCommandLine(AuthCase):
    # trace: the most verbose level still never logs a key
    CREWD_ARGS = ["--api-key", K1, "--api-key", K2, "--log-level", "trace"]

    def test_missing_key_is_401(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew"))

    def test_wrong_key_is_401(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew", headers=bearer("nope")))

    def test_key_prefix_or_extension_is_401(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew", headers=bearer(K1[:-1])))
        self.assert401(self.srv.request("GET", "/api/v1/crew", headers=bearer(K1 + "x")))

    def test_wrong_scheme_is_401(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew",
                                        headers={"Authorization": "Basic " + K1}))
        self.assert401(self.srv.request("GET", "/api/v1/crew", headers={"Authorization": K1}))

    def test_first_key_works(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew", headers=bearer(K1))
        self.assertEqual(st, 200, raw)
        self.assertIn("crews", js)

    def test_second_key_works(self):
        st, _, js, raw = self.srv.request("GET", "/api/v1/crew", headers=bearer(K2))
        self.assertEqual(st, 200, raw)

    def test_healthz_is_open(self):
        st, _, js, raw = self.srv.request("GET", "/healthz")
        self.assertEqual(st, 200, raw)
        self.assertEqual(js["status"], "ok")

    def test_unknown_api_route_needs_key(self):
        self.assert401(self.srv.request("GET", "/api/v1/nothing"))
        self.assert401(self.srv.request("GET", "/api/v2/whatever"))

    def test_percent_encoded_api_segment_needs_key(self):
        # Regression: auth was decided on the raw path, so "/%61pi/v1/crew" skipped it while
        # the router matched the decoded "/api/v1/crew": full access without a key.
        for path in ("/%61pi/v1/crew", "/%61%70%69/v1/crew", "/ap%69/v1/crew/x"):
            with self.subTest(path=path):
                self.assert401(self.srv.request("GET", path))
        name = unique_name("enc")
        self.assert401(self.srv.request("PUT", "/%61pi/v1/crew", body=crew(name)))
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew/" + name, headers=bearer(K1))
        self.assertEqual(st, 404, raw)

    def test_options_without_preflight_needs_key(self):
        # Only a CORS preflight is exempt; a bare OPTIONS would tell routes from non-routes.
        self.assert401(self.srv.request("OPTIONS", "/api/v1/crew"))
        self.assert401(self.srv.request("OPTIONS", "/api/v1/no-such-route"))

    def test_every_crew_route_needs_key(self):
        name = unique_name("auth")
        for method, path, body in (("PUT", "/api/v1/crew", crew(name)),
                                   ("PUT", "/api/v1/crew/" + name, crew(name)),
                                   ("GET", "/api/v1/crew/" + name, None),
                                   ("GET", "/api/v1/crew?name=" + name, None),
                                   ("DELETE", "/api/v1/crew/" + name, None),
                                   ("DELETE", "/api/v1/crew?name=" + name, None)):
            with self.subTest(method=method, path=path):
                self.assert401(self.srv.request(method, path, body=body))

    def test_refused_create_stores_nothing(self):
        name = unique_name("noauth")
        self.assert401(self.srv.request("PUT", "/api/v1/crew", body=crew(name)))
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew/" + name, headers=bearer(K1))
        self.assertEqual(st, 404, raw)

    def test_refused_delete_keeps_crew(self):
        name = unique_name("keep")
        st, _, _, raw = self.srv.request("PUT", "/api/v1/crew", body=crew(name),
                                         headers=bearer(K1))
        self.assertEqual(st, 201, raw)
        self.assert401(self.srv.request("DELETE", "/api/v1/crew/" + name,
                                        headers=bearer("wrong")))
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew/" + name, headers=bearer(K2))
        self.assertEqual(st, 200, raw)

    def test_full_crud_with_key(self):
        name = unique_name("crud")
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew", body=crew(name),
                                          headers=bearer(K1))
        self.assertEqual(st, 201, raw)
        st, _, js, raw = self.srv.request("PUT", "/api/v1/crew/" + name,
                                          body=crew(name, description="d"), headers=bearer(K2))
        self.assertEqual(st, 200, raw)
        st, _, js, raw = self.srv.request("DELETE", "/api/v1/crew/" + name, headers=bearer(K1))
        self.assertEqual(st, 200, raw)

    def test_keys_never_logged(self):
        # exercise both the accepted and the refused paths first
        self.srv.request("GET", "/api/v1/crew", headers=bearer(K1))
        self.srv.request("GET", "/api/v1/crew", headers=bearer(K2))
        self.srv.request("GET", "/api/v1/crew", headers=bearer(K1 + "-wrong"))
        self.srv.request("GET", "/api/v1/nothing", headers=bearer(K2))
        log = self.srv.stderr_text()
        self.assertNotIn(K1, log)
        self.assertNotIn(K2, log)


class TestApiKeysFromEnvironment(AuthCase):
    CREWD_ENV = {"CREWD_API_KEYS": K1 + "," + K2, "CREWD_LOG_LEVEL": "trace"}

    def test_missing_key_is_401(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew"))

    def test_both_keys_work(self):
        for k in (K1, K2):
            with self.subTest(key=k[:2]):
                st, _, _, raw = self.srv.request("GET", "/api/v1/crew", headers=bearer(k))
                self.assertEqual(st, 200, raw)

    def test_joined_string_is_not_a_key(self):
        self.assert401(self.srv.request("GET", "/api/v1/crew", headers=bearer(K1 + "," + K2)))

    def test_healthz_is_open(self):
        self.assertEqual(self.srv.request("GET", "/healthz")[0], 200)

    def test_keys_never_logged(self):
        self.srv.request("GET", "/api/v1/crew", headers=bearer(K1))
        self.srv.request("GET", "/api/v1/crew", headers=bearer("bad"))
        log = self.srv.stderr_text()
        self.assertNotIn(K1, log)
        self.assertNotIn(K2, log)


class TestNoKeysConfigured(CrewdTestCase):

    def test_api_open_without_keys(self):
        st, _, _, raw = self.srv.request("GET", "/api/v1/crew")
        self.assertEqual(st, 200, raw)


PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "content-type, authorization"}


class CorsCase(CrewdTestCase):

    def assertPreflightOk(self, resp, origin=ORIGIN):
        st, hdrs, _, raw = resp
        self.assertEqual(st, 204, raw)
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), origin)
        methods = [m.upper() for m in header_list(hdrs.get("Access-Control-Allow-Methods"))]
        for m in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            self.assertIn(m, methods, hdrs.get("Access-Control-Allow-Methods"))
        allowed = header_list(hdrs.get("Access-Control-Allow-Headers"))
        for h in ("content-type", "authorization", "idempotency-key", "last-event-id"):
            self.assertIn(h, allowed, hdrs.get("Access-Control-Allow-Headers"))


class TestCors(CorsCase):
    CREWD_ARGS = ["--cors-origin", ORIGIN]

    def test_preflight(self):
        self.assertPreflightOk(self.srv.request("OPTIONS", "/api/v1/crew", headers=PREFLIGHT))

    def test_preflight_on_crew_path(self):
        self.assertPreflightOk(self.srv.request("OPTIONS", "/api/v1/crew/" + unique_name("x"),
                                                headers=PREFLIGHT))

    def test_simple_request_carries_allow_origin(self):
        st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers={"Origin": ORIGIN})
        self.assertEqual(st, 200, raw)
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), ORIGIN)

    def test_create_with_origin_carries_allow_origin(self):
        st, hdrs, _, raw = self.srv.request("PUT", "/api/v1/crew",
                                            body=crew(unique_name("cors")),
                                            headers={"Origin": ORIGIN})
        self.assertEqual(st, 201, raw)
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), ORIGIN)

    def test_other_origin_preflight_gets_no_allow_origin(self):
        h = dict(PREFLIGHT, Origin="http://evil.example")
        st, hdrs, _, raw = self.srv.request("OPTIONS", "/api/v1/crew", headers=h)
        self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"), raw)

    def test_other_origin_simple_request_gets_no_allow_origin(self):
        st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew",
                                            headers={"Origin": "http://evil.example"})
        self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"), raw)

    def test_vary_origin_on_every_reply(self):
        # The reply depends on Origin even when it leaves Access-Control-Allow-Origin out, so
        # a shared cache must key on it: Vary: Origin for allowed, other and absent origins.
        for h in ({"Origin": ORIGIN}, {"Origin": "http://evil.example"}, {}):
            with self.subTest(headers=h):
                st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers=h)
                self.assertIn("origin", header_list(hdrs.get("Vary")), raw)

    def test_errors_libevent_raises_carry_cors_headers(self):
        # A browser client must be able to read why its oversized crew was refused (413, from
        # libevent) and why a method failed (501), like any other answer.
        big = b'{"name":"x","pad":"' + b"a" * (2 * 1024 * 1024) + b'"}'
        for resp in (self.srv.raw_request("PUT", "/api/v1/crew", [
                         ("Origin", ORIGIN), ("Content-Type", "application/json"),
                         ("Content-Length", str(len(big)))], big),
                     self.srv.raw_request("FROB", "/api/v1/crew", [("Origin", ORIGIN)])):
            with self.subTest(status=resp[0]):
                self.assertIn(resp[0], (413, 501), resp[3][:300])
                self.assertEqual(resp[1].get("Access-Control-Allow-Origin"), ORIGIN, resp[3][:300])
                self.assertIn("origin", header_list(resp[1].get("Vary")), resp[3][:300])

    def test_origin_match_is_exact(self):
        for o in (ORIGIN + ".evil.example", "https://app.example", ORIGIN + ":8080"):
            with self.subTest(origin=o):
                st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers={"Origin": o})
                self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"), raw)

    def test_no_origin_no_cors_headers(self):
        st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew")
        self.assertEqual(st, 200, raw)
        self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"))


class TestCorsWithApiKeys(CorsCase):
    CREWD_ARGS = ["--cors-origin", ORIGIN, "--api-key", K1]

    def test_preflight_needs_no_key(self):
        self.assertPreflightOk(self.srv.request("OPTIONS", "/api/v1/crew", headers=PREFLIGHT))

    def test_request_with_key_and_origin(self):
        h = dict(bearer(K1), Origin=ORIGIN)
        st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers=h)
        self.assertEqual(st, 200, raw)
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), ORIGIN)

    def test_unauthenticated_preflight_reveals_no_routes(self):
        # A preflight needs no key, so it must answer alike for routes and non-routes.
        known = self.srv.request("OPTIONS", "/api/v1/crew", headers=PREFLIGHT)
        unknown = self.srv.request("OPTIONS", "/api/v1/no-such-route", headers=PREFLIGHT)
        self.assertPreflightOk(known)
        self.assertPreflightOk(unknown)
        self.assertEqual(known[1].get("Allow"), unknown[1].get("Allow"))

    def test_auth_before_media_type(self):
        # Without a key, nothing but the 401: not even whether the body would have been read.
        resp = self.srv.request("PUT", "/api/v1/crew", headers={"Content-Type": "text/plain"},
                                raw_body=b"hello")
        self.assertJsonError(resp, 401)

    def test_origin_without_preflight_method_needs_key(self):
        resp = self.srv.request("OPTIONS", "/api/v1/crew", headers={"Origin": ORIGIN})
        self.assertJsonError(resp, 401)

    def test_request_without_key_still_401(self):
        resp = self.srv.request("GET", "/api/v1/crew", headers={"Origin": ORIGIN})
        self.assertJsonError(resp, 401)


class TestCorsFromEnvironment(CorsCase):
    CREWD_ENV = {"CREWD_CORS_ORIGINS": "http://a.example,http://b.example"}

    def test_both_origins_allowed(self):
        for o in ("http://a.example", "http://b.example"):
            with self.subTest(origin=o):
                h = dict(PREFLIGHT, Origin=o)
                self.assertPreflightOk(self.srv.request("OPTIONS", "/api/v1/crew", headers=h),
                                       origin=o)

    def test_unlisted_origin_refused(self):
        st, hdrs, _, _ = self.srv.request("GET", "/api/v1/crew",
                                          headers={"Origin": ORIGIN})
        self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"))


class TestCorsNotConfigured(CrewdTestCase):

    def test_no_allow_origin_when_no_origins_configured(self):
        st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers={"Origin": ORIGIN})
        self.assertEqual(st, 200, raw)
        self.assertIsNone(hdrs.get("Access-Control-Allow-Origin"))


class TestCorsAnyOrigin(CorsCase):
    CREWD_ARGS = ["--cors-origin", "*"]

    def test_any_origin_is_echoed(self):
        for o in ("http://a.example", "https://b.example:8443"):
            with self.subTest(origin=o):
                self.assertPreflightOk(self.srv.request(
                    "OPTIONS", "/api/v1/crew", headers=dict(PREFLIGHT, Origin=o)), origin=o)
                st, hdrs, _, raw = self.srv.request("GET", "/api/v1/crew", headers={"Origin": o})
                self.assertEqual(st, 200, raw)
                self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), o)


if __name__ == "__main__":
    unittest.main()
