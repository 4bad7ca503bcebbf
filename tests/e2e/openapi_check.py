"""Checks recorded responses of ticktockd against docs/openapi.yaml.

For every response the e2e tests received through Server.request (not the
raw-socket exchanges, nor WebSocket frames): the route and method are
documented, the status is documented for that operation (a success status
explicitly; an error may fall to `default`, and the transport's errors go
anywhere), the content type is one documented, and a JSON body validates
against the documented schema (for an `fs` file, the schema its table names),
strictly: an object that lists its properties lists every field sent. An
agent's own reply on /a/ is its business. PyYAML and jsonschema
(python3-yaml, python3-jsonschema) read and check the file.
"""

import json
import os
import re
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")

# fs files (GET, 200) and the schema docs/openapi.yaml's table gives each;
# the first pattern that matches the path under fs/ wins.
FS_SCHEMAS = [
    (r"status", "AgentStatus"),
    (r"inbox", "InboxCount"),
    (r"outbox", "OutboxPage"),
    (r"goals", "Goals"),
    (r"goals/.+", "KeyValue"),
    (r"alarms", "Alarms"),
    (r"memory(/[^/]+)?", "MemoryNamespace"),
    (r"memory/[^/]+/.+", "KeyValue"),
    (r"(identity|nostr|logs|http|compute|containers|wallet|hud)", "Entries"),
    (r"identity/pubkey", "PublicKeys"),
    (r"nostr/relays", "NostrRelays"),
    (r"deadletter", "DeadletterList"),
    (r"logs/trajectory", "TrajectoryPage"),
    (r"mounts", "Mounts"),
    (r"wallet/balance", "WalletBalance"),
    (r"wallet/limits", "WalletLimits"),
    (r"wallet/history", "WalletHistory"),
    (r"limits", "TickLimits"),
    (r"(compute|containers)/providers", "Providers"),
    (r"(compute|http)/jobs", "JobList"),
    (r"containers/sessions", "SessionList"),
    (r"((compute|http)/jobs|containers/sessions)/[^/]+/(status|result)", "Job"),
    (r"compute/jobs/[^/]+/stream", "JobStream"),
    (r"containers/sessions/[^/]+/files", "SessionFiles"),
    (r"(compute|containers|http)/policy", "Policy"),
    (r"(compute|containers|http)/usage", "ServiceUsage"),
]


# Errors of the transport, on any route (docs/http.md, "Errors from the
# transport"): malformed HTTP, timeouts, sizes, codings, connections.
TRANSPORT_ERRORS = {400, 408, 413, 414, 431, 501, 503}


class Spec:
    def __init__(self, path=SPEC, strict=True):
        self.strict = strict
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        routes = []
        for template, item in self.doc["paths"].items():
            params = re.findall(r"\{(\w+)\}", template)
            # `{path}` spans segments and may be empty, with its slash
            # (fs files, /a/ routes: `/a/{id}` is `/a/{id}/`); others are one.
            rx = re.sub(r"/\\\{path\\\}", "(?:/(?P<path>.*))?", re.escape(template))
            rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", rx)
            routes.append((len(params), -len(template), template, re.compile("^" + rx + "$"), item))
        routes.sort(key=lambda r: r[:2])  # literal segments before parameters
        self.routes = routes
        self._schemas = {}

    def resolve(self, node, seen=()):
        """The schema with every $ref inlined and OpenAPI 3.0's nullable made JSON Schema."""
        if isinstance(node, list):
            return [self.resolve(n, seen) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            if ref in seen:  # a recursive schema: accept anything below
                return {}
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            return self.resolve(target, seen + (ref,))
        out = {k: self.resolve(v, seen) for k, v in node.items()
               if k not in ("example", "examples", "nullable", "discriminator", "xml",
                            "externalDocs", "deprecated", "readOnly", "writeOnly")}
        # Strict: an object schema that lists its properties lists them all
        # (a field the server sends must be documented).
        if self.strict and isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        if node.get("nullable"):
            if "type" in out:
                out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        return out

    def schema(self, name):
        if name not in self._schemas:
            self._schemas[name] = self.resolve({"$ref": "#/components/schemas/" + name})
        return self._schemas[name]

    def route(self, path, method):
        """The most specific template of `path` that has `method` (else the
        most specific one), its match and its path item."""
        found = [(t, m, item) for _, _, t, rx, item in self.routes for m in [rx.match(path)] if m]
        for t, m, item in found:
            if method.lower() in item or (method == "HEAD" and "get" in item):
                return t, m, item
        return found[0] if found else (None, None, None)


def check(responses, spec=None):
    """Problems found in `responses`: (method, target, status, headers, body) tuples."""
    spec = spec or Spec()
    problems = []
    seen = set()
    for method, target, status, headers, body in responses:
        url = urlsplit(target)
        path = url.path
        where = "%s %s -> %d" % (method, target[:120], status)
        if method == "OPTIONS":
            continue  # CORS preflights: docs/http.md, not operations
        template, m, item = spec.route(path, method)
        key = (method, template, status)
        if template is None:
            # The token is checked before the route is looked up.
            if status not in (401, 404) and (path, status) not in seen:
                problems.append(where + ": no such path in openapi.yaml")
            seen.add((path, status))
            continue
        op = item.get(method.lower()) or (item.get("get") if method == "HEAD" else None)
        if op is None:
            if status not in (401, 403, 405) and key not in seen:
                problems.append(where + ": %s is not documented for %s" % (method, template))
            seen.add(key)
            continue
        responses_doc = op.get("responses", {})
        doc = responses_doc.get(str(status))
        if doc is None and status in TRANSPORT_ERRORS:
            doc = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if doc is None:
            if status < 400 or "default" not in responses_doc:
                if key not in seen:
                    problems.append(where + ": status %d is not documented for %s %s"
                                    % (status, method, template))
                seen.add(key)
                continue
            doc = responses_doc["default"]
        doc = spec.resolve(doc)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        content = doc.get("content", {})
        if method == "HEAD" or not body or "*/*" in content:  # */*: an agent's own reply
            continue
        if template.startswith("/a/") and not body.startswith(b'{"error":'):
            continue  # the agent's own reply, of any status and type
        if ctype != "application/json":
            if ctype not in content and key not in seen:
                problems.append(where + ": a body of type %r where openapi.yaml documents %s"
                                % (ctype, sorted(content) or "none"))
            seen.add(key)
            continue
        if "application/json" not in content:
            if key not in seen:
                problems.append(where + ": a JSON body where openapi.yaml documents %s"
                                % (sorted(content) or "none"))
            seen.add(key)
            continue
        schema = None
        if template == "/v1/agents/{id}/fs/{path}" and method == "GET" and status == 200:
            fs_path = (m.group("path") or "").rstrip("/")
            verify = parse_qs(url.query, keep_blank_values=True).get("verify", ["false"])[-1]
            if fs_path == "logs/trajectory" and verify in ("", "1", "true"):
                schema = spec.schema("VerifyReport")
            else:
                for rx, name in FS_SCHEMAS:
                    if re.fullmatch(rx, fs_path):
                        schema = spec.schema(name)
                        break
        if schema is None:
            schema = content["application/json"].get("schema", {})
        try:
            value = json.loads(body)
        except ValueError:
            problems.append(where + ": Content-Type application/json, but the body is not JSON")
            continue
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            problems.append("%s: %s at %s (body %s)" % (where, e.message[:200],
                                                        "/".join(str(p) for p in e.path) or "the top",
                                                        body[:200]))
    return problems


def assert_conforms():
    """Raises AssertionError naming the recorded responses that disagree with
    docs/openapi.yaml (a suite's tearDownModule calls it)."""
    import ticktockd_server
    problems = check(ticktockd_server.RESPONSES)
    if problems:
        raise AssertionError("%d responses disagree with docs/openapi.yaml:\n  %s"
                             % (len(problems), "\n  ".join(problems[:40])))
