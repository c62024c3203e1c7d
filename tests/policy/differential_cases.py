"""The differential suite's cases: Rego policies, data and Envoy-shaped inputs, written for authz-ledger.

Each case is one policy module (package ``diff.cases.<id>``, decision ``result``), optional data under
``data.diff.data.<id>``, and one input document built by :func:`authz_ledger.check.input.build_input` from a
real CheckRequest -- the shape opa-envoy-plugin gives a policy. Families: JWT decode and verify, CIDR, regex,
time, glob, strings, sets and objects, ``every``, ``some ... in``, comprehensions, ``with``, JSON / YAML /
base64 / URL builtins, numbers as written, undefined decisions, conflicts and builtin errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from envoy.service.auth.v3 import external_auth_pb2

from authz_ledger.check.input import build_input
from authz_ledger.record import gojson


@dataclass(frozen=True)
class Case:
    id: str
    rego: str  # rules of the module, after its package line
    input: bytes  # the input document's JSON
    data: Any = field(default=None)


def envoy_input(
    method: str = "GET",
    path: str = "/api/items",
    headers: dict[str, str] | None = None,
    body: str = "",
    source: str = "10.1.2.3",
    principal: str = "",
) -> bytes:
    """The input document opa-envoy-plugin builds for such a request, as JSON."""
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = source
    attributes.source.address.socket_address.port_value = 52000
    attributes.source.principal = principal
    attributes.destination.address.socket_address.address = "10.9.0.7"
    attributes.destination.address.socket_address.port_value = 8080
    attributes.request.time.seconds = 1_767_225_600
    http = attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = method, path, "api.example.com", "https", "HTTP/2"
    http.headers.update({":authority": "api.example.com", ":method": method, ":path": path, **(headers or {})})
    if body:
        http.body = body
        http.headers.setdefault("content-type", "application/json")
    return gojson.compact(build_input(request))


# --- JWTs signed here, with fixed keys, so every run sees the same tokens ----------------------------------

_SECRET = "s3cret-for-tests"
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_PUBLIC_PEM = (
    _RSA.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: dict[str, Any], *, alg: str = "HS256", secret: str = _SECRET) -> str:
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "HS256":
        signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    else:
        signature = _RSA.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


ALICE = {"sub": "alice", "iss": "https://idp.example", "aud": "api", "exp": 1_900_000_000, "roles": ["admin"]}
EXPIRED = {**ALICE, "exp": 1_600_000_000}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- The cases ------------------------------------------------------------------------------------------------

_TOKEN_RULES = 'token := t if { some t in [split(input.attributes.request.http.headers.authorization, " ")[1]] }\n'


def _family(prefix: str, rego: str, inputs: list[bytes], data: Any = None) -> list[Case]:
    return [Case(f"{prefix}_{i}", rego, document, data) for i, document in enumerate(inputs)]


def cases() -> list[Case]:
    out: list[Case] = []
    hs_ok, hs_bad = jwt(ALICE), jwt(ALICE, secret="wrong")
    rs_ok = jwt(ALICE, alg="RS256")
    tokens = [
        envoy_input(headers=bearer(hs_ok)),
        envoy_input(headers=bearer(hs_bad)),
        envoy_input(headers=bearer(jwt(EXPIRED))),
        envoy_input(headers=bearer("not.a.jwt")),
        envoy_input(headers=bearer("garbage")),
        envoy_input(),
        envoy_input(headers=bearer(jwt({**ALICE, "aud": "another-api"}))),
        envoy_input(headers=bearer(jwt({**ALICE, "nbf": 1_800_000_000}))),
    ]
    out += _family("jwt_decode", _TOKEN_RULES + "result := io.jwt.decode(token)\n", tokens)
    out += _family("jwt_verify_hs256", _TOKEN_RULES + f'result := io.jwt.verify_hs256(token, "{_SECRET}")\n', tokens)
    out += _family(
        "jwt_decode_verify",
        _TOKEN_RULES
        + f'result := io.jwt.decode_verify(token, {{"secret": "{_SECRET}", "aud": "api", "time": 1767225600000000000}})\n',
        tokens,
    )
    out += _family(
        "jwt_verify_rs256",
        _TOKEN_RULES + f"result := io.jwt.verify_rs256(token, {json.dumps(_RSA_PUBLIC_PEM)})\n",
        [envoy_input(headers=bearer(rs_ok)), envoy_input(headers=bearer(hs_ok)), envoy_input(headers=bearer("a.b.c"))],
    )
    out += _family(
        "jwt_claims_rbac",
        _TOKEN_RULES
        + "claims := io.jwt.decode(token)[1]\n"
        + 'default result := {"allowed": false}\n'
        + 'result := {"allowed": true, "headers": {"x-user": claims.sub}} if { "admin" in claims.roles }\n',
        tokens[:3] + [envoy_input(headers=bearer(jwt({**ALICE, "roles": ["viewer"]})))],
    )

    addresses = ["10.1.2.3", "192.168.7.9", "172.16.0.1", "8.8.8.8", "::1", "not-an-ip", "10.0.0.0/8"]
    out += _family(
        "cidr_contains",
        'result := net.cidr_contains("10.0.0.0/8", input.attributes.source.address.socketAddress.address)\n',
        [envoy_input(source=a) for a in addresses],
    )
    out += _family(
        "cidr_any_of_data",
        "result := [n | some n in data.diff.data.cidr_any_of_data.nets; "
        "net.cidr_contains(n, input.attributes.source.address.socketAddress.address)]\n",
        [envoy_input(source=a) for a in addresses[:5]],
        {"nets": ["10.0.0.0/8", "192.168.0.0/16", "0.0.0.0/0", "fd00::/8"]},
    )
    out += _family(
        "cidr_misc",
        "result := {\n"
        '  "intersects": net.cidr_intersects("10.0.0.0/8", "10.1.0.0/16"),\n'
        '  "expand": net.cidr_expand("10.0.0.0/30"),\n'
        '  "merge": net.cidr_merge(["10.0.0.0/25", "10.0.0.128/25", input.attributes.source.address.socketAddress.address]),\n'
        '  "valid": net.cidr_is_valid(input.parsed_query.net[0]),\n'
        "}\n",
        [envoy_input(path="/n?net=10.0.0.0/8"), envoy_input(path="/n?net=300.0.0.0/8"), envoy_input(path="/n?net=x")],
    )

    paths = [
        "/api/items",
        "/API/Items",
        "/api/items/42",
        "/admin/users?id=7",
        "/v2/api/x",
        "/",
        "/api%2Fitems",
        "/api/items/-1",
        "/api/ünïcødé",
    ]
    out += _family(
        "regex_match",
        "result := {\n"
        '  "plain": regex.match("^/api/items(/[0-9]+)?$", input.attributes.request.http.path),\n'
        '  "ci": regex.match("(?i)^/api/", input.attributes.request.http.path),\n'
        '  "find": regex.find_n("[0-9]+", input.attributes.request.http.path, -1),\n'
        '  "split": regex.split("/+", input.attributes.request.http.path),\n'
        '  "replace": regex.replace(input.attributes.request.http.path, "[0-9]+", "N"),\n'
        "}\n",
        [envoy_input(path=p) for p in paths],
    )
    out += _family(
        "regex_errors",
        "result := regex.match(input.parsed_query.re[0], input.attributes.request.http.path)\n",
        [envoy_input(path="/a?re=%5Ea"), envoy_input(path="/a?re=(unclosed"), envoy_input(path="/a?re=a%7B2,1%7D")],
    )
    out += _family(
        "regex_template",
        'result := regex.template_match("/api/{[a-z]+}/{[0-9]+}", input.attributes.request.http.path, "{", "}")\n',
        [envoy_input(path=p) for p in paths[:4]],
    )

    times = [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123456789+02:00",
        "2026-02-30T00:00:00Z",
        "yesterday",
        "2026-01-01 00:00:00",
        "1969-07-20T20:17:40Z",
    ]
    out += _family(
        "time_parse",
        'result := time.parse_rfc3339_ns(input.attributes.request.http.headers["x-when"])\n',
        [envoy_input(headers={"x-when": t}) for t in times],
    )
    out += _family(
        "time_parts",
        'ns := time.parse_rfc3339_ns(input.attributes.request.http.headers["x-when"])\n'
        'result := {"date": time.date(ns), "clock": time.clock(ns), "weekday": time.weekday(ns),\n'
        '  "plus": time.add_date(ns, 0, 1, 1), "diff": time.diff(ns, 0)}\n',
        [envoy_input(headers={"x-when": t}) for t in times[:2] + times[5:]],
    )
    out += _family(
        "time_request",
        "ns := input.attributes.request.time.seconds * 1000000000\n"
        'result := {"format": time.format(ns), "hours": time.clock([ns, "America/New_York"]), '
        '"parse": time.parse_ns("2006-01-02", "2026-03-04"), "duration": time.parse_duration_ns("1h30m")}\n',
        [envoy_input()],
    )

    out += _family(
        "glob",
        "result := {\n"
        '  "path": glob.match("/api/*/items", ["/"], input.attributes.request.http.path),\n'
        '  "deep": glob.match("/api/**", ["/"], input.attributes.request.http.path),\n'
        '  "host": glob.match("*.example.com", ["."], input.attributes.request.http.host),\n'
        '  "quoted": glob.quote_meta("*.example.com"),\n'
        "}\n",
        [envoy_input(path=p) for p in ["/api/v1/items", "/api/v1/v2/items", "/api", "/other"]],
    )
    out += _family("glob_error", 'result := glob.match("[", [], input.attributes.request.http.path)\n', [envoy_input()])

    words = ["alice", "Alice", "ÄLICE", "bob smith", "", "a,b,,c", "  padded  ", "ß", "tab\tinside", "emoji 😀"]
    out += _family(
        "strings",
        'u := input.attributes.request.http.headers["x-user"]\n'
        "result := {\n"
        '  "upper": upper(u), "lower": lower(u), "trim": trim_space(u), "split": split(u, ","),\n'
        '  "concat": concat("-", [u, "x"]), "contains": contains(u, "li"), "prefix": startswith(u, "al"),\n'
        '  "index": indexof(u, "c"), "sprintf": sprintf("%s=%d %v", [u, count(u), [u]]),\n'
        '  "replace": replace(u, "a", "4"), "substring": substring(u, 1, 3), "reverse": strings.reverse(u),\n'
        '  "any_prefix": strings.any_prefix_match(u, ["bo", "al"]), "format_int": format_int(count(u), 2),\n'
        '  "trim_prefix": trim_prefix(u, "al"), "count": count(u), "is_string": is_string(u),\n'
        "}\n",
        [envoy_input(headers={"x-user": w}) for w in words],
    )
    out += _family(
        "string_errors",
        'result := substring(input.attributes.request.http.headers["x-user"], -1, 2)\n',
        [envoy_input(headers={"x-user": "alice"})],
    )

    out += _family(
        "sets_objects",
        'roles := {r | some r in data.diff.data.sets_objects.users[input.attributes.request.http.headers["x-user"]]}\n'
        "result := {\n"
        '  "roles": roles, "union": roles | {"reader"}, "intersection": roles & {"admin", "x"},\n'
        '  "difference": roles - {"admin"}, "keys": object.keys(data.diff.data.sets_objects.users),\n'
        '  "get": object.get(data.diff.data.sets_objects.users, ["nobody"], "none"),\n'
        '  "union_n": object.union_n([{"a": 1}, {"a": 2, "b": 3}]),\n'
        '  "remove": object.remove({"a": 1, "b": 2}, ["a"]), "filter": object.filter({"a": 1, "b": 2}, {"b"}),\n'
        '  "subset": object.subset({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}),\n'
        '  "sorted": sort(roles), "count": count(roles),\n'
        "}\n",
        [envoy_input(headers={"x-user": u}) for u in ["alice", "bob", "carol", "nobody"]],
        {"users": {"alice": ["admin", "reader"], "bob": ["reader"], "carol": []}},
    )

    out += _family(
        "every",
        "result if {\n"
        '  every seg in input.parsed_path { regex.match("^[a-z0-9]+$", seg) }\n'
        '  every name, value in input.attributes.request.http.headers { count(value) < 64; name != "x-bad" }\n'
        "}\n",
        [
            envoy_input(path="/api/items"),
            envoy_input(path="/api/Items"),
            envoy_input(headers={"x-bad": "1"}),
            envoy_input(headers={"x-long": "y" * 80}),
        ],
    )
    out += _family(
        "some_in",
        "result := {\n"
        '  "pairs": [[k, v] | some k, v in input.parsed_query],\n'
        '  "member": "b" in input.parsed_query.tag,\n'
        '  "first_index": [i | some i, t in input.parsed_query.tag; t == "b"],\n'
        '  "nested": {k: count(vs) | some k, vs in input.parsed_query},\n'
        "}\n",
        [envoy_input(path=p) for p in ["/q?tag=a&tag=b&x=1", "/q", "/q?tag=c", "/q?tag=b&tag=b"]],
    )
    out += _family(
        "comprehensions",
        "result := {\n"
        '  "headers": sort([h | some h, _ in input.attributes.request.http.headers; startswith(h, "x-")]),\n'
        '  "lengths": {h: count(v) | some h, v in input.attributes.request.http.headers; not startswith(h, ":")},\n'
        '  "segments": {s | some s in input.parsed_path},\n'
        '  "numbered": [sprintf("%d:%s", [i, s]) | some i, s in input.parsed_path],\n'
        "}\n",
        [
            envoy_input(path="/a/b/c", headers={"x-a": "1", "x-b": "22"}),
            envoy_input(path="/a/a", headers={"y": "z"}),
            envoy_input(path="/"),
        ],
    )
    out += _family(
        "with_keyword",
        "default allowed := false\n"
        'allowed if input.attributes.request.http.method == "GET"\n'
        "default admin := false\n"
        'admin if data.diff.data.with_keyword.admins[_] == input.attributes.request.http.headers["x-user"]\n'
        'result := {"as_is": a, "as_post": p, "admin": d, "admin_with_data": w} if {\n'
        "  a := allowed\n"
        '  p := allowed with input.attributes.request.http.method as "POST"\n'
        "  d := admin\n"
        '  w := admin with data.diff.data.with_keyword.admins as ["bob"]\n'
        "}\n",
        [envoy_input(headers={"x-user": "alice"}), envoy_input(method="POST", headers={"x-user": "bob"})],
        {"admins": ["alice"]},
    )

    bodies = ['{"a": 1, "b": [true, null, "x"]}', '{"n": 1E2, "d": 2.50, "z": -0}', "[1, 1e400]", '"\\ud800"']
    out += _family(
        "json_builtins",
        "result := {\n"
        '  "marshal": json.marshal(input.parsed_body),\n'
        '  "roundtrip": json.unmarshal(json.marshal(input.parsed_body)),\n'
        '  "valid": json.is_valid(input.attributes.request.http.body),\n'
        '  "filter": json.filter({"a": {"b": 1, "c": 2}}, ["a/b"]),\n'
        '  "remove": json.remove({"a": {"b": 1, "c": 2}}, ["a/c"]),\n'
        '  "patch": json.patch({"a": 1}, [{"op": "add", "path": "/b", "value": 2}]),\n'
        "}\n",
        [envoy_input(method="POST", body=b) for b in bodies],
    )
    out += _family(
        "json_errors",
        'result := json.unmarshal(input.attributes.request.http.headers["x-doc"])\n',
        [envoy_input(headers={"x-doc": d}) for d in ['{"ok": 1}', "{nope", "[1,", "1e400"]],
    )
    out += _family(
        "yaml_builtins",
        'doc := input.attributes.request.http.headers["x-doc"]\n'
        'result := {"valid": yaml.is_valid(doc), "parsed": yaml.unmarshal(doc), "out": yaml.marshal({"a": [1, "b"]})}\n',
        [envoy_input(headers={"x-doc": d}) for d in ["a: 1\nb: [x, y]", "just text", "key: {unclosed"]],
    )
    out += _family(
        "base64_url",
        'v := input.attributes.request.http.headers["x-v"]\n'
        "result := {\n"
        '  "b64": base64.encode(v), "b64url": base64url.encode(v), "b64url_nopad": base64url.encode_no_pad(v),\n'
        '  "back": base64.decode(base64.encode(v)), "is_b64": base64.is_valid(v),\n'
        '  "query_escape": urlquery.encode(v), "query_obj": urlquery.encode_object({"q": v, "n": ["1", "2"]}),\n'
        '  "decoded_query": urlquery.decode_object("a=1&a=2&b=x%20y"), "hex": hex.encode(v),\n'
        "}\n",
        [envoy_input(headers={"x-v": v}) for v in ["hello world", "a+b/c=d", "ünïcødé", ""]],
    )
    out += _family(
        "decode_errors",
        'result := base64.decode(input.attributes.request.http.headers["x-v"])\n',
        [envoy_input(headers={"x-v": v}) for v in ["aGVsbG8=", "not base64!", "aGVsbG8"]],
    )
    out += _family(
        "url_query_errors",
        'result := urlquery.decode(input.attributes.request.http.headers["x-v"])\n',
        [envoy_input(headers={"x-v": v}) for v in ["a%20b", "bad%zzescape"]],
    )

    out += _family(
        "numbers",
        "result := {\n"
        '  "sum": sum([1, 2.5, 3]), "div": 7 / 2, "rem": 7 % 3, "round": round(2.5), "abs": abs(-3),\n'
        '  "to_number": to_number("1e3"),\n'
        '  "body": input.parsed_body, "body_text": json.marshal(input.parsed_body),\n'
        '  "range": numbers.range(1, 4), "bits": bits.and(12, 10), "units": units.parse_bytes("1KiB"),\n'
        "}\n",
        [envoy_input(method="POST", body=b) for b in ['{"price": 2.50}', "[1E2, -0]", "1e400", "0.1"]],
    )
    out += _family(
        "big_arithmetic",
        'result := {"sum": 123456789012345678901234567890 + to_number(input.parsed_query.n[0])}\n',
        [envoy_input(path="/?n=1")],
    )
    out += _family(
        "number_errors",
        "result := input.parsed_body.a / input.parsed_body.b\n",
        [envoy_input(method="POST", body=b) for b in ['{"a": 1, "b": 2}', '{"a": 1, "b": 0}', '{"a": "x", "b": 1}']],
    )

    out += _family(
        "undefined",
        'result := input.attributes.request.http.headers["x-missing"]\n',
        [envoy_input(), envoy_input(headers={"x-missing": "here"})],
    )
    out += _family(
        "undefined_partial",
        'result contains h if { some h, _ in input.attributes.request.http.headers; startswith(h, "x-") }\n',
        [envoy_input(), envoy_input(headers={"x-a": "1", "x-b": "2"})],
    )
    out += _family(
        "default_decision",
        'default result := {"allowed": false, "http_status": 401}\n'
        'result := {"allowed": true} if input.attributes.request.http.headers["x-user"] == "alice"\n',
        [envoy_input(headers={"x-user": "alice"}), envoy_input(headers={"x-user": "bob"}), envoy_input()],
    )
    out += _family(
        "conflicts",
        'result := "a" if input.parsed_query.x\nresult := "b" if input.parsed_query.y\n',
        [envoy_input(path="/?x=1"), envoy_input(path="/?y=1"), envoy_input(path="/?x=1&y=1"), envoy_input()],
    )
    out += _family(
        "object_conflicts",
        'result[k] := 1 if { some k in input.parsed_path }\nresult["a"] := 2 if input.parsed_query.dup\n',
        [envoy_input(path="/a/b"), envoy_input(path="/a?dup=1"), envoy_input(path="/c?dup=1")],
    )
    out += _family(
        "builtin_error_default",
        'deny if time.parse_rfc3339_ns(input.attributes.request.http.headers["x-when"]) > 0\n'
        "default result := false\nresult if not deny\n",
        [envoy_input(headers={"x-when": "2026-01-01T00:00:00Z"}), envoy_input(headers={"x-when": "soon"})],
    )
    out += _family(
        "type_errors",
        'result := input.attributes.request.http.headers["x-user"] + 1\n',
        [envoy_input(headers={"x-user": "alice"})],
    )
    out += _family(
        "envoy_response",
        'user := input.attributes.request.http.headers["x-user"]\n'
        "result := {\n"
        '  "allowed": user != "",\n'
        '  "headers": {"x-authz-user": user, "x-request-path": input.attributes.request.http.path},\n'
        '  "request_headers_to_remove": ["x-user"],\n'
        '  "response_headers_to_add": {"x-decided-by": "opa"},\n'
        '  "dynamic_metadata": {"user": user, "segments": count(input.parsed_path)},\n'
        '  "query_parameters_to_set": {"checked": "1"},\n'
        "}\n",
        [envoy_input(headers={"x-user": "alice"}), envoy_input(path="/x/y?z=1", headers={"x-user": ""})],
    )
    out += _family(
        "crypto_hash",
        'v := input.attributes.request.http.headers["x-v"]\n'
        'result := {"sha256": crypto.sha256(v), "md5": crypto.md5(v), "hmac": crypto.hmac.sha256(v, "key"),\n'
        '  "equal": crypto.hmac.equal(crypto.sha256(v), crypto.sha256(v))}\n',
        [envoy_input(headers={"x-v": v}) for v in ["abc", ""]],
    )
    out += _family(
        "semver_uuid",
        'v := input.attributes.request.http.headers["x-version"]\n'
        'result := {"valid": semver.is_valid(v), "cmp": semver.compare(v, "1.2.3")}\n',
        [envoy_input(headers={"x-version": v}) for v in ["1.2.3", "2.0.0-rc.1", "1.10.0", "bogus"]],
    )
    out += _family(
        "graphql_schema",
        'schema := "type Query { items: [String] }"\n'
        'result := {"valid": graphql.is_valid(input.parsed_body.query, schema)}\n',
        [envoy_input(method="POST", body=json.dumps({"query": q})) for q in ["{ items }", "{ nope }", "not graphql"]],
    )
    out += _family(
        "json_schema",
        'schema := {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}\n'
        "result := json.match_schema(input.parsed_body, schema)\n",
        [envoy_input(method="POST", body=b) for b in ['{"id": 7}', '{"id": "x"}', "{}"]],
    )
    out += _more_cases()
    return out


def _more_cases() -> list[Case]:
    out: list[Case] = []
    out += _family(
        "rbac",
        'user := input.attributes.request.http.headers["x-user"]\n'
        'default result := {"allowed": false}\n'
        'result := {"allowed": true, "headers": {"x-role": role}} if {\n'
        "  some role in data.diff.data.rbac.users[user]\n"
        "  some rule in data.diff.data.rbac.roles[role]\n"
        '  rule.method in {"*", input.attributes.request.http.method}\n'
        "  array.slice(input.parsed_path, 0, count(rule.prefix)) == rule.prefix\n"
        "}\n",
        [
            envoy_input(method=m, path=p, headers={"x-user": u})
            for m, p, u in [
                ("GET", "/api/items", "alice"),
                ("DELETE", "/api/items/1", "alice"),
                ("GET", "/api/items", "bob"),
                ("DELETE", "/api/items/1", "bob"),
                ("GET", "/admin", "bob"),
                ("GET", "//admin", "alice"),
                ("POST", "/api/items", "carol"),
                ("GET", "/api", "bob"),
            ]
        ],
        {
            "users": {"alice": ["admin"], "bob": ["reader"]},
            "roles": {
                "admin": [{"method": "*", "prefix": []}],
                "reader": [{"method": "GET", "prefix": ["api", "items"]}],
            },
        },
    )
    out += _family(
        "principal",
        'parts := split(trim_prefix(input.source_principal, "spiffe://"), "/")\n'
        'result := {"trust_domain": parts[0], "namespace": parts[2], "sa": parts[4]} if {\n'
        '  startswith(input.source_principal, "spiffe://"); count(parts) == 5\n'
        "}\n",
        [
            envoy_input(principal=p)
            for p in ["spiffe://cluster.local/ns/default/sa/frontend", "spiffe://td/ns/x", "", "not-spiffe"]
        ],
    )
    out += _family(
        "query_params",
        "result := {\n"
        '  "page": to_number(object.get(input.parsed_query, "page", ["1"])[0]),\n'
        '  "all": input.parsed_query,\n'
        '  "keys": sort(object.keys(input.parsed_query)),\n'
        "}\n",
        [envoy_input(path=p) for p in ["/l?page=2&sort=name", "/l", "/l?page=x", "/l?a=1&a=2&b=", "/l?q=a%20b+c"]],
    )
    out += _family(
        "arrays",
        "p := input.parsed_path\n"
        "result := {\n"
        '  "concat": array.concat(p, ["end"]), "slice": array.slice(p, 1, 3), "reverse": array.reverse(p),\n'
        '  "max": max([count(s) | some s in p]), "min": min([count(s) | some s in p]),\n'
        '  "product": product([1, 2, 3]), "has_b": "b" in p, "no_empty": count([s | some s in p; s == ""]) == 0,\n'
        "}\n",
        [envoy_input(path=p) for p in ["/a/b/c", "/only", "/x//y", "/1/22/333/4444"]],
    )
    out += _family(
        "sprintf_numbers",
        'result := sprintf("%v %d %.2f %s %x", [input.parsed_body, 42, 3.14159, "s", 255])\n',
        [envoy_input(method="POST", body=b) for b in ["2.50", '{"a": [1, 2]}', "true", '"text"']],
    )
    out += _family(
        "type_names",
        "result := {\n"
        '  "type": type_name(input.parsed_body), "is_number": is_number(input.parsed_body),\n'
        '  "is_array": is_array(input.parsed_body), "is_null": is_null(input.parsed_body),\n'
        "}\n",
        [envoy_input(method="POST", body=b) for b in ["1", "[]", "{}", "null", '"s"', "false"]],
    )
    out += _family(
        "walk",
        'result := [path | walk(input.parsed_body, [path, value]); value == "needle"]\n',
        [envoy_input(method="POST", body=b) for b in ['{"a": {"b": "needle"}}', '["x", ["needle", "needle"]]', "{}"]],
    )
    out += _family(
        "units",
        'result := {"bytes": units.parse_bytes(input.parsed_query.size[0]), "si": units.parse(input.parsed_query.si[0])}\n',
        [envoy_input(path=p) for p in ["/?size=10MB&si=1.5k", "/?size=1GiB&si=2m", "/?size=lots&si=1"]],
    )
    out += _family(
        "headers_case",
        'result := {k: v | some name, v in input.attributes.request.http.headers; k := lower(name); not startswith(k, ":")}\n',
        [envoy_input(headers={"x-a": "1", "X-B": "2"}), envoy_input(headers={"cookie": "a=b; c=d"})],
    )
    return out
