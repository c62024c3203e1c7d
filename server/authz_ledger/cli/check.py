"""``authz-ledger check``: send one real ext_authz CheckRequest, as Envoy would, and show what came back.

Prints the decision (allowed or denied, the HTTP status Envoy would send), the decision id Envoy receives in
dynamic metadata, and the index of the decision's ledger entry, found through the audit API by decision id.
With ``--json``, one object: ``allowed``, ``grpc_code``, ``http_status``, ``decision_id``, ``ledger_index``
(null when the audit API cannot be reached), ``headers`` (what the policy adds to the request or the deny),
``body`` (of a deny). Exit status: 0 allowed, 1 denied, 2 the Check itself failed (no answer, an RPC error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.errors import AuthzLedgerError, ConfigError, NotFoundError

_HTTP_OK = 200


def register(sub: Any) -> None:
    c = sub.add_parser(
        "check",
        help="send one ext_authz Check as Envoy would; print the decision, its decision id and ledger index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--addr", default="127.0.0.1:9191", help="the service's Check address (default 127.0.0.1:9191)")
    c.add_argument("--method", default="GET")
    c.add_argument("--path", default="/", help="request path, query included (e.g. /api/items?page=2)")
    c.add_argument("--host", default="localhost", help=":authority of the request (default localhost)")
    c.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="request header (repeatable)"
    )
    c.add_argument("--body", help="request body (text); set a content-type header for it to be parsed")
    c.add_argument(
        "--audit-addr",
        default="127.0.0.1:9192",
        help="audit API, to look up the decision's ledger index (default 127.0.0.1:9192; '' to skip)",
    )
    c.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    c.add_argument("--json", action="store_true", help="one JSON object (see above)")
    c.set_defaults(func=cmd_check)


def build_request(args: argparse.Namespace) -> external_auth_pb2.CheckRequest:
    """A CheckRequest shaped as Envoy's ext_authz filter sends it: pseudo-headers included."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = (
        args.method,
        args.path,
        args.host,
        "http",
        "HTTP/1.1",
    )
    http.headers.update({":method": args.method, ":path": args.path, ":authority": args.host, ":scheme": "http"})
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"-H expects 'NAME: VALUE', got {item!r}")
        http.headers[name.strip().lower()] = value.strip()
    if args.body is not None:
        http.body = args.body
        http.size = len(args.body.encode())
    request.attributes.request.time.GetCurrentTime()
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    request.attributes.destination.address.socket_address.address = "127.0.0.1"
    return request


def _ledger_index(audit_addr: str, decision_id: str, deadline: float) -> int | None:
    """The entry's index through the audit API; None if it cannot be reached or the entry never shows up
    (``async`` durability writes it just after the answer: a few short retries)."""
    from authz_ledger.readside.client import RemoteSource

    source = RemoteSource(audit_addr, None, None, None)
    try:
        while True:
            try:
                return source.entry(None, decision_id).index
            except NotFoundError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
            except AuthzLedgerError:
                return None
    finally:
        source.close()


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    request = build_request(args)
    deadline = time.monotonic() + args.timeout
    with grpc.insecure_channel(args.addr) as channel:
        try:
            response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"authz-ledger check: the Check failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
    allowed = response.status.code == 0
    fields = dict(response.dynamic_metadata.fields)
    decision_id = fields["decision_id"].string_value if "decision_id" in fields else ""
    index = _ledger_index(args.audit_addr, decision_id, deadline) if args.audit_addr and decision_id else None
    if allowed:
        headers = [(h.header.key, h.header.value) for h in response.ok_response.headers]
        status, body = _HTTP_OK, ""
    else:
        headers = [(h.header.key, h.header.value) for h in response.denied_response.headers]
        status, body = response.denied_response.status.code or 403, response.denied_response.body
    if args.json:
        doc = {
            "allowed": allowed,
            "grpc_code": response.status.code,
            "http_status": status,
            "decision_id": decision_id,
            "ledger_index": index,
            "headers": dict(headers),
            "body": body,
        }
        print(json.dumps(doc, ensure_ascii=False), file=out)
    else:
        print(f"{'allowed' if allowed else 'denied'} (HTTP {status})", file=out)
        print(f"decision id:  {decision_id or '(none)'}", file=out)
        print(
            f"ledger index: {index if index is not None else '(not found through ' + repr(args.audit_addr) + ')'}",
            file=out,
        )
        for name, value in headers:
            print(f"header:       {name}: {value}", file=out)
        if body:
            print(f"body:         {body}", file=out)
    return 0 if allowed else 1
