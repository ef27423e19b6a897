"""The examples/ directory stays true to the code: every example crew is accepted, and the
curl walkthrough (examples/crews.sh) runs clean against a live server."""
import glob
import json
import os
import subprocess
import unittest

from crewd_harness import HERE, CrewdTestCase

EXAMPLES = os.path.normpath(os.path.join(HERE, "..", "..", "examples"))


class TestExamples(CrewdTestCase):

    def test_every_example_crew_is_accepted_and_compiles(self):
        files = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
        self.assertGreaterEqual(len(files), 4, "examples/*.json went missing")
        for path in files:
            with self.subTest(example=os.path.basename(path)):
                with open(path) as f:
                    definition = json.load(f)
                st, _, js, raw = self.srv.request("PUT", "/api/v1/crew", body=definition)
                self.assertEqual(st, 201, raw)
                st, _, js, raw = self.srv.request(
                    "GET", "/api/v1/crew/%s?include=plan" % definition["name"])
                self.assertEqual(st, 200, raw)
                self.assertEqual(len(js["plan"]["agents"]), len(definition["agents"]))
                st, _, _, raw = self.srv.request("DELETE", "/api/v1/crew/" + definition["name"])
                self.assertEqual(st, 200, raw)

    def test_curl_walkthrough_runs(self):
        script = os.path.join(EXAMPLES, "crews.sh")
        out = subprocess.run([script, "http://127.0.0.1:%d" % self.srv.port],
                             capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(out.stdout.count("Crew created successfully"), 4, out.stdout)
        self.assertEqual(out.stdout.count("Crew deleted successfully"), 4, out.stdout)
        self.assertNotIn('"status":4', out.stdout.replace(" ", ""), out.stdout)


if __name__ == "__main__":
    unittest.main()
