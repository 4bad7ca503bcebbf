#!/usr/bin/env python3
"""docs/openapi.yaml is an OpenAPI document a client generator can load.

openapi_tests (C++) checks that its paths are the server's routes; this checks
the document itself, with a real YAML parser: that it parses (an unquoted
": " in a description once made it invalid YAML), that every $ref resolves,
that operation ids are unique, that `required` names only declared
properties, and that a `oneOf` has branches no body can match twice (the
server's bodies are not tagged, so a union of object schemas is an `anyOf`:
with `oneOf`, strict clients refused every body that fit two branches).

Usage: openapi_lint_test.py PATH/TO/openapi.yaml
"""

import sys
import unittest

try:
    import yaml
except ImportError:  # scripts/setup.sh installs python3-yaml
    sys.exit("openapi_lint_test: needs PyYAML (Debian: python3-yaml; run scripts/setup.sh)")

PATH = sys.argv.pop(1) if len(sys.argv) > 1 else "docs/openapi.yaml"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def walk(node, where=""):
    """Yields (where, node) for every mapping and list in the document."""
    yield where, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, "%s/%s" % (where, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, "%s/%d" % (where, i))


class OpenApiLint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(PATH, encoding="utf-8") as f:
            cls.doc = yaml.safe_load(f)

    def resolve(self, ref):
        self.assertTrue(ref.startswith("#/"), ref)
        node = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            self.assertIsInstance(node, dict, ref)
            self.assertIn(part, node, "unresolved $ref " + ref)
            node = node[part]
        return node

    def schema(self, s):
        while isinstance(s, dict) and "$ref" in s:
            s = self.resolve(s["$ref"])
        return s

    def test_it_is_openapi_3(self):
        self.assertTrue(str(self.doc.get("openapi", "")).startswith("3."), self.doc.get("openapi"))
        self.assertIn("paths", self.doc)

    def test_every_ref_resolves(self):
        refs = [(w, n["$ref"]) for w, n in walk(self.doc) if isinstance(n, dict) and "$ref" in n]
        self.assertGreater(len(refs), 100)
        for where, ref in refs:
            with self.subTest(where=where):
                self.resolve(ref)

    def test_operation_ids_are_unique(self):
        seen = {}
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                if method not in METHODS:
                    continue
                with self.subTest(op="%s %s" % (method.upper(), path)):
                    self.assertIn("operationId", op)
                    self.assertNotIn(op["operationId"], seen)
                    seen[op["operationId"]] = path
                    self.assertTrue(op.get("responses"), "no responses")
                    for status in op["responses"]:
                        self.assertRegex(str(status), r"^([1-5][0-9][0-9]|[1-5]XX|default)$")

    def test_required_names_declared_properties(self):
        for where, n in walk(self.doc):
            if isinstance(n, dict) and "required" in n and isinstance(n.get("properties"), dict):
                with self.subTest(where=where):
                    self.assertEqual([r for r in n["required"] if r not in n["properties"]], [])

    def test_one_of_branches_cannot_both_match(self):
        # Branches are told apart by their JSON type (string against object,
        # say); two object schemas without a discriminator may both match.
        for where, n in walk(self.doc):
            if not (isinstance(n, dict) and "oneOf" in n) or "discriminator" in n:
                continue
            with self.subTest(where=where):
                types = [self.schema(b).get("type") for b in n["oneOf"]]
                self.assertNotIn(None, types, "a oneOf branch without a type: use anyOf")
                self.assertEqual(len(types), len(set(types)),
                                 "oneOf branches of the same type %s: use anyOf" % types)


if __name__ == "__main__":
    unittest.main()
