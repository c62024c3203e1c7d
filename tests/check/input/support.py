"""Helpers shared by the input-document tests, and by tests/policy/test_opa.py and tests/record/gojson/test_read.py:
CheckRequests from JSON or from a path, headers and body; documents compared as the policy engine reads them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from authz_ledger.check.input import build_input
from authz_ledger.errors import RequestParseError
from authz_ledger.record import gojson


def canonical(document: Any) -> str:
    """Key order aside, the JSON the policy engine receives (numbers by value here; by text in test_golden)."""
    return json.dumps(plain(document), sort_keys=True)


def plain(value: Any) -> Any:
    """A document as plain Python values: numbers held as their text (gojson.number) read back as int/float."""
    return json.loads(gojson.compact(value))


def request_from_json(check_request: dict[str, Any]) -> Any:
    return json_format.ParseDict(check_request, external_auth_pb2.CheckRequest())


def http_request(
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    body: str = "",
    raw_body: bytes = b"",
) -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers.update(headers or {})
    http.body = body
    http.raw_body = raw_body
    return request


def parse(path: str = "/", **kwargs: Any) -> dict[str, Any]:
    return build_input(
        http_request(path, **{k: v for k, v in kwargs.items() if k != "pool"}),
        descriptor_pool=kwargs.get("pool"),
    )


def parse_error(path: str = "/", **kwargs: Any) -> str:
    with pytest.raises(RequestParseError) as info:
        parse(path, **kwargs)
    return str(info.value)


def body_of(content_type: str, body: str = "", raw_body: bytes = b"", **headers: str) -> tuple[Any, bool]:
    doc = parse("/b", headers={"content-type": content_type, **headers}, body=body, raw_body=raw_body)
    return plain(doc["parsed_body"]), doc["truncated_body"]
