"""Secrets: after a run with bearer tokens, cookies and API keys in requests, no plaintext secret is anywhere.

Two real ``authz-ledger serve`` processes in turn on one data directory (``server.log_format`` plain, then json,
both at ``debug`` level) receive CheckRequests shaped like Envoy's -- pseudo-headers (``:path`` with the query
string, ``:authority``, ``:method``) included in the header map, as Envoy sends them -- carrying secrets in every
usual place: ``authorization`` (Bearer), ``proxy-authorization`` (Basic), ``cookie``, ``x-api-key``, the query
parameters ``access_token``/``id_token``/``api_key``/``apikey``, a JSON body, a form body, a raw (bytes) body, a
body that is not valid JSON, and requests whose policy evaluation fails. Then ``authz-ledger export --tiles`` and
``--jsonl``. Every byte of the data directory, both exports (and the entries inside ``entry_b64``) and both
server logs is searched for each secret, in plain text and in every base64 alignment.

Canaries keep the search honest: a non-secret marker sent beside the secrets must be found in the ledger and the
exports, and the ledger must hold the ``hmac-sha256:`` digests that replaced the secrets.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from authz_ledger.record.secrets import DEFAULT_DIGEST_HEADERS, DEFAULT_DIGEST_QUERY_PARAMS
from tests.conftest import free_port, serve_process, stop_process, write_policy

POLICY = """
default allow := false

allow if input.attributes.request.http.headers["x-user"] == "alice"

# an evaluation error (conflicting values) for one path: the error path is logged and recorded too
boom := 1 if input.parsed_path[0] == "boom"
boom := 2 if input.parsed_path[0] == "boom"

allow if boom == 3
"""


def _secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


SECRETS = {
    k: _secret(k)
    for k in (
        "bearer",
        "basic",
        "cookie",
        "apikey-header",
        "access-token",
        "id-token",
        "api-key-param",
        "apikey-param",
        "json-body",
        "form-body",
        "raw-body",
        "bad-json-body",
    )
}
BASIC = base64.b64encode(f"svc:{SECRETS['basic']}".encode()).decode()
MARKER = f"not-secret-{secrets.token_hex(8)}"

# Every default secret shape: each header and query parameter on the default lists, their array and case
# variants, and credentials in headers and parameters whose names say nothing (caught by their shape).
_LISTED_HEADERS = [h for h in DEFAULT_DIGEST_HEADERS if h not in ("authorization", "proxy-authorization", "cookie")]
NAMED = {f"header {h}": _secret("h") for h in _LISTED_HEADERS}
NAMED |= {f"param {q}": _secret("q") for q in DEFAULT_DIGEST_QUERY_PARAMS}
NAMED |= {
    "param access_token[]": _secret("arr"),
    "param Refresh-Token": _secret("case"),
    "param client_secret[0]": _secret("idx"),
    "header X-Custom-Password": _secret("pattern"),
    "param user_password": _secret("pattern"),
}


def _jwt() -> str:
    part = lambda n: base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")  # noqa: E731
    return "eyJhbGciOiJIUzI1NiJ9." + part(48) + "." + part(32)


SHAPED = {
    "header x-upstream-hint": _jwt(),  # a JWT under an innocent name
    "header x-thing": "Ab1" + secrets.token_urlsafe(40),  # a long random key
    "header x-forwarded-credentials": f"Bearer {_secret('bearer2')}",  # a scheme and a credential
    "param state": _jwt(),
    "param ref": "Zq9" + secrets.token_urlsafe(40),
}
SECRETS |= NAMED | SHAPED


def _request(path: str, *, method: str = "GET", body: str = "", raw: bytes = b"", ctype: str = "") -> bytes:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method = method
    http.host = "api.example.com"
    http.path = path
    http.headers.update(
        {
            ":authority": "api.example.com",
            ":method": method,
            ":path": path,
            "x-user": "alice",
            "x-marker": MARKER,
            "authorization": f"Bearer {SECRETS['bearer']}",
            "proxy-authorization": f"Basic {BASIC}",
            "cookie": f"theme=dark; session={SECRETS['cookie']}",
            "x-api-key": SECRETS["apikey-header"],
        }
    )
    for label, value in (NAMED | SHAPED).items():
        kind, name = label.split(" ", 1)
        if kind == "header":
            http.headers[name] = value
    if ctype:
        http.headers["content-type"] = ctype
    if body:
        http.body = body
        http.size = len(body)
    if raw:
        http.raw_body = raw
        http.size = len(raw)
    return req.SerializeToString()


def _requests() -> list[bytes]:
    q = (
        f"access_token={SECRETS['access-token']}&id_token={SECRETS['id-token']}"
        f"&api_key={SECRETS['api-key-param']}&apikey={SECRETS['apikey-param']}&page=2"
    )
    q += "".join(
        f"&{quote(label.split(' ', 1)[1], safe='[]')}={quote(value, safe='')}"
        for label, value in (NAMED | SHAPED).items()
        if label.startswith("param ")
    )
    return [
        _request(f"/api/items?{q}"),
        _request(f"/boom?{q}"),  # policy error
        _request(
            "/api/login",
            method="POST",
            body=json.dumps({"user": "alice", "password": SECRETS["json-body"], "nested": {"k": [1, 2]}}),
            ctype="application/json",
        ),
        _request(
            "/api/login",
            method="POST",
            body=f"user=alice&password={SECRETS['form-body']}",
            ctype="x-www-form-urlencoded",
        ),
        _request(
            "/api/upload", method="PUT", raw=f"raw:{SECRETS['raw-body']}".encode(), ctype="application/octet-stream"
        ),
        _request(
            "/api/login", method="POST", body=f'{{"password": "{SECRETS["bad-json-body"]}", ', ctype="application/json"
        ),
    ]


def _drive(port: int) -> int:
    """Send every request (raw bytes, as Envoy would); the number of Checks sent."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        "/envoy.service.auth.v3.Authorization/Check",
        request_serializer=None,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    sent = 0
    for _ in range(3):
        for raw in _requests():
            try:
                call(raw, timeout=10)
            except grpc.RpcError as e:
                failed = e  # the policy error fails the RPC (plugin behaviour)
                assert failed.code() == grpc.StatusCode.UNKNOWN, failed
            sent += 1
    channel.close()
    return sent


def _needles(secret: str) -> list[bytes]:
    """The secret, URL-encoded, and its base64 in each of the three alignments (as it would sit in entry_b64)."""
    raw = secret.encode()
    out = [raw, quote(secret, safe="").encode()]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        start = (pad * 4 + 2) // 3 + 1  # skip the characters that mix the padding bytes in
        out.append(enc[start : start + (len(raw) * 4) // 3 - 3])
    return out


def _files(*roots: Path) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return out


def test_no_plaintext_secret_in_the_data_dir_the_exports_or_the_logs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    policy = write_policy(tmp_path / "policy", POLICY)
    logs = {"plain": tmp_path / "plain.log", "json": tmp_path / "json.log"}
    sent = 0
    for fmt, log in logs.items():
        metrics_addr = f"127.0.0.1:{free_port()}"
        proc = serve_process(
            data,
            free_port(),
            f"server.log_format={fmt}",
            "server.log_level=debug",
            f"metrics.addr={metrics_addr}",
            policy=policy,
            log=log,
        )
        try:
            sent += _drive(int(proc.args[proc.args.index("--addr") + 1].rpartition(":")[2]))
            with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5) as response:
                (tmp_path / f"metrics-{fmt}.txt").write_bytes(response.read())
        finally:
            assert stop_process(proc) == 0
    tiles, jsonl = tmp_path / "tiles", tmp_path / "entries.jsonl"
    for target in (["--tiles", str(tiles)], ["--jsonl", str(jsonl)]):
        cli = [sys.executable, "-m", "authz_ledger.cli", "export", "--data-dir", str(data), *target]
        subprocess.run(cli, check=True, capture_output=True, timeout=60)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == sent, "every Check is one entry"
    decoded_entries = tmp_path / "decoded-entries.bin"
    decoded_entries.write_bytes(b"".join(base64.b64decode(doc["entry_b64"]) for doc in lines))

    places = {
        "data directory": _files(data),
        "tiles export": _files(tiles),
        "jsonl export": _files(jsonl, decoded_entries),
        "plain log": [logs["plain"]],
        "json log": [logs["json"]],
        "metrics": [tmp_path / "metrics-plain.txt", tmp_path / "metrics-json.txt"],
    }
    blobs = {where: b"".join(p.read_bytes() for p in files) for where, files in places.items()}
    assert all(blobs.values()), {k: len(v) for k, v in blobs.items()}
    # canaries: the search looks at the right bytes
    for where in ("data directory", "tiles export", "jsonl export"):
        assert MARKER.encode() in blobs[where], f"the non-secret marker is not in the {where}"
        assert b"hmac-sha256:" in blobs[where], f"no redaction digest in the {where}"
    for where in ("plain log", "json log"):
        assert b"eval_conflict_error" in blobs[where], f"the policy errors are not in the {where}"
    assert b'"decision_id": "' in blobs["json log"]

    leaks = []
    for name, secret in SECRETS.items():
        for where, blob in blobs.items():
            hits = [n for n in _needles(secret) if n in blob]
            if hits:
                files = [str(p.relative_to(tmp_path)) for p in places[where] if any(n in p.read_bytes() for n in hits)]
                context = blob[max(0, blob.find(hits[0]) - 60) : blob.find(hits[0]) + len(hits[0]) + 20]
                leaks.append(f"{name} in the {where} ({', '.join(files[:3])}): ...{context!r}...")
    assert not leaks, "plaintext secrets found:\n" + "\n".join(leaks)


def test_query_secrets_in_the_path_pseudo_header_are_digested_too() -> None:
    """Envoy puts ``:path`` (with the query string) in the CheckRequest's header map; the redactor digests the
    sensitive query parameters of ``http.path``, ``query`` and ``parsed_query`` but not of ``headers[":path"]``."""
    from authz_ledger.check import input as input_document
    from authz_ledger.record.redact import RedactionRules, Redactor

    token = _secret("access-token")
    req = external_auth_pb2.CheckRequest.FromString(_request(f"/api/items?access_token={token}&page=2"))
    document = input_document.build_input(req)
    redacted = json.dumps(Redactor(RedactionRules(), b"k" * 32).redact_input(document))
    assert token not in redacted, json.loads(redacted)["attributes"]["request"]["http"]["headers"]
