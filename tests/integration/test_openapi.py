"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of the HTTP API (docs/openapi.json,
embedded at build time). The document must name exactly the routes of the route table in
src/api/api.c, every $ref in it must resolve, and the route behaves like any other /api/ route
(API key, CORS, metrics)."""

import json
import os
import re
import unittest

from crewd_harness import CrewdTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
API_C = os.path.join(ROOT, "src", "api", "api.c")
DOC_FILE = os.path.join(ROOT, "docs", "openapi.json")
PATH = "/api/v1/openapi.json"

# The route table's capture names -> the parameter names the document uses for them.
CAPTURES = {"crew": "name_or_id", "job": "job_id", "name": "name"}
METHODS = {"HTTP_GET": "get", "HTTP_PUT": "put", "HTTP_POST": "post", "HTTP_PATCH": "patch",
           "HTTP_DELETE": "delete"}
OPERATION_KEYS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}

ROUTE_RE = re.compile(
    r'\{\s*(HTTP_[A-Z]+(?:\s*\|\s*HTTP_[A-Z]+)*)\s*,\s*"([^"]+)"\s*,\s*(\w+)\s*\}')
CAPTURE_RE = re.compile(r"\{([^}]+)\}")


def route_table():
    """The (method, path) pairs of src/api/api.c's routes[], captures renamed as the document
    names them."""
    with open(API_C, encoding="utf-8") as f:
        src = f.read()
    m = re.search(r"struct http_route routes\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    if m is None:
        raise AssertionError("no routes[] table found in %s" % API_C)
    pairs = set()
    for methods, pattern, _handler in ROUTE_RE.findall(m.group(1)):
        def rename(c):
            if c.group(1) not in CAPTURES:
                raise AssertionError("route %s: capture {%s} has no name in the test's "
                                     "CAPTURES map" % (pattern, c.group(1)))
            return "{%s}" % CAPTURES[c.group(1)]
        path = CAPTURE_RE.sub(rename, pattern)
        for bit in re.split(r"\s*\|\s*", methods):
            if bit not in METHODS:
                raise AssertionError("route %s: method %s unknown to the test" % (pattern, bit))
            pairs.add((METHODS[bit], path))
    if len(pairs) < 20:
        raise AssertionError("only %d routes parsed from %s: is the regex stale?"
                             % (len(pairs), API_C))
    return pairs


def documented(doc):
    return {(method, path) for path, item in doc["paths"].items()
            for method in item if method in OPERATION_KEYS}


def resolve(doc, ref):
    """The value a local $ref ("#/a/b") points at, or raises KeyError."""
    if not ref.startswith("#/"):
        raise KeyError("not a local reference: " + ref)
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def all_refs(node, where="#"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield where, v
            else:
                yield from all_refs(v, where + "/" + k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from all_refs(v, "%s/%d" % (where, i))


class TestOpenApiDocument(CrewdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        st, hdrs, js, raw = cls.srv.request("GET", PATH)
        cls.reply = (st, hdrs, js, raw)
        cls.doc = js

    def test_served_as_json(self):
        st, hdrs, js, raw = self.reply
        self.assertEqual(st, 200, raw[:500])
        self.assertTrue((hdrs.get("Content-Type") or "").startswith("application/json"),
                        hdrs.get("Content-Type"))
        self.assertIsInstance(js, dict, "the body does not parse as a JSON object")
        self.assertEqual(js["openapi"], "3.1.0")
        self.assertEqual(js["info"]["title"], "crewd")

    def test_version_is_the_builds(self):
        st, _, health, raw = self.srv.request("GET", "/healthz")
        self.assertEqual(st, 200, raw)
        self.assertEqual(self.doc["info"]["version"], health["version"])
        self.assertNotIn("@", self.doc["info"]["version"])

    def test_same_as_docs_file(self):
        # The build embeds docs/openapi.json as it is, only the version filled in: a stale
        # build (or an edit the build did not pick up) shows here.
        with open(DOC_FILE, encoding="utf-8") as f:
            expected = json.load(f)
        self.assertEqual(expected["info"]["version"], "@CREWD_VERSION@")
        expected["info"]["version"] = self.doc["info"]["version"]
        self.assertEqual(self.doc, expected)

    def test_every_route_is_documented(self):
        missing = sorted(route_table() - documented(self.doc))
        self.assertEqual(missing, [], "routes of src/api/api.c missing from the document")

    def test_no_stale_paths(self):
        stale = sorted(documented(self.doc) - route_table())
        self.assertEqual(stale, [], "documented operations that src/api/api.c does not route")

    def test_path_parameters_declared(self):
        for path, item in self.doc["paths"].items():
            for method in (m for m in item if m in OPERATION_KEYS):
                params = [p if "$ref" not in p else resolve(self.doc, p["$ref"])
                          for p in item.get("parameters", []) +
                          item[method].get("parameters", [])]
                in_path = {p["name"] for p in params if p["in"] == "path"}
                self.assertEqual(in_path, set(CAPTURE_RE.findall(path)),
                                 "%s %s: path parameters" % (method.upper(), path))

    def test_operations_well_formed(self):
        ids = []
        for path, item in self.doc["paths"].items():
            for method in (m for m in item if m in OPERATION_KEYS):
                op = item[method]
                ids.append(op["operationId"])
                self.assertTrue(op.get("summary"), "%s %s: no summary" % (method, path))
                codes = set(op["responses"])
                self.assertTrue(any(c.startswith("2") for c in codes),
                                "%s %s: no success response" % (method, path))
                open_route = not path.startswith("/api/")
                # /api/ routes need the key when keys are set; the open ones say so.
                self.assertEqual(op.get("security") == [], open_route, "%s %s" % (method, path))
                self.assertEqual("401" in codes, not open_route, "%s %s" % (method, path))
        self.assertEqual(len(ids), len(set(ids)), "duplicate operationId")
        self.assertEqual(self.doc["security"], [{"bearerAuth": []}])
        scheme = self.doc["components"]["securitySchemes"]["bearerAuth"]
        self.assertEqual((scheme["type"], scheme["scheme"]), ("http", "bearer"))

    def test_special_content_types(self):
        events = self.doc["paths"]["/api/v1/crew/job/{job_id}/events"]["get"]["responses"]
        self.assertIn("text/event-stream", events["200"]["content"])
        metrics = self.doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        self.assertTrue(all(ct.startswith("text/plain") for ct in metrics), metrics)

    def test_every_ref_resolves(self):
        refs = list(all_refs(self.doc))
        self.assertGreater(len(refs), 50)
        for where, ref in refs:
            try:
                resolve(self.doc, ref)
            except (KeyError, IndexError, ValueError):
                self.fail("%s: $ref %s does not resolve" % (where, ref))

    def test_every_schema_is_used(self):
        used = {ref for _, ref in all_refs(self.doc)}
        for kind in ("schemas", "responses", "parameters"):
            for name in self.doc["components"][kind]:
                self.assertIn("#/components/%s/%s" % (kind, name), used,
                              "components/%s/%s is never referenced" % (kind, name))

    def test_valid_against_the_openapi_31_schema(self):
        try:
            from openapi_spec_validator import validate
        except ImportError:
            raise unittest.SkipTest("openapi-spec-validator is not installed")
        validate(self.doc)  # raises on an invalid document

    def test_head_and_metrics(self):
        st, hdrs, _, raw = self.srv.request("HEAD", PATH)
        self.assertEqual(st, 200)
        self.assertEqual(raw, b"")
        self.assertEqual(int(hdrs["Content-Length"]), len(self.reply[3]))
        st, _, _, raw = self.srv.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertRegex(raw.decode(), r'crewd_http_requests_total\{route="/api/v1/openapi\.json",'
                                       r'method="GET",status="200"\} [1-9]')

    def test_other_method_is_405(self):
        st, hdrs, js, raw = self.srv.request("POST", PATH, body={})
        self.assertEqual(st, 405, raw)
        self.assertIn("GET", hdrs.get("Allow") or "")


KEY = "openapi-test-key-5d0c1a"
ORIGIN = "http://docs.example"


class TestOpenApiAuthAndCors(CrewdTestCase):
    CREWD_ARGS = ["--api-key", KEY, "--cors-origin", ORIGIN]

    def test_needs_the_key(self):
        self.assertJsonError(self.srv.request("GET", PATH), 401)
        self.assertJsonError(self.srv.request("GET", PATH,
                                              headers={"Authorization": "Bearer nope"}), 401)
        st, _, js, raw = self.srv.request("GET", PATH,
                                          headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(st, 200, raw[:300])
        self.assertEqual(js["openapi"], "3.1.0")

    def test_cors_headers(self):
        st, hdrs, _, raw = self.srv.request("GET", PATH, headers={
            "Authorization": "Bearer " + KEY, "Origin": ORIGIN})
        self.assertEqual(st, 200, raw[:300])
        self.assertEqual(hdrs.get("Access-Control-Allow-Origin"), ORIGIN)


if __name__ == "__main__":
    unittest.main()
