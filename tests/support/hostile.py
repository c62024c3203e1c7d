"""Hypothesis strategies for hostile CheckRequests (tests/faults/test_fuzz.py)."""

from __future__ import annotations

import json

from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import strategies as st

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/grpc",
    "text/plain",
    "application/x-bogus; ;;=\x01",
    "",
]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@st.composite
def bodies(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["json", "deep", "text", "multipart", "form", "empty"]))
    if kind == "json":
        return json.dumps(draw(_json_values))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=50_000))
        return "[" * depth + "]" * draw(st.integers(min_value=0, max_value=depth))
    if kind == "multipart":
        part = draw(st.text(max_size=50))
        return f'--xyz\r\nContent-Disposition: form-data; name="{part}"\r\n\r\n{part}\r\n--xyz--'
    if kind == "form":
        return "&".join(draw(st.lists(st.text(max_size=10), max_size=5)))
    if kind == "empty":
        return ""
    return draw(st.text(max_size=200))


@st.composite
def check_requests(draw: st.DrawFn) -> bytes:
    """Serialized CheckRequests: well-formed but absurd, or byte-mutated into malformed protobuf."""
    req = external_auth_pb2.CheckRequest()
    if draw(st.booleans()):
        http = req.attributes.request.http
        http.method = draw(st.sampled_from(["GET", "POST", "DELETE", "", "G\u00e9T"]))
        http.path = draw(
            st.one_of(
                st.text(max_size=100).map(lambda t: "/" + t),
                st.sampled_from(["//admin/x", "/%zz", "/a?b=%ff&&=", "?", "/../..", "/" + "a/" * 2000]),
            )
        )
        http.host = draw(st.text(max_size=30))
        headers = draw(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=30))
        for key, value in headers.items():
            http.headers[key.lower()] = value
        if draw(st.booleans()):
            http.headers["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
            http.body = draw(bodies())
        if draw(st.booleans()):
            http.raw_body = draw(st.binary(max_size=200))
        if draw(st.booleans()):
            http.headers["content-length"] = draw(st.sampled_from(["0", "-1", "abc", "99999999999999999999", "5"]))
        if draw(st.booleans()):
            http.headers["x-envoy-auth-partial-body"] = draw(st.sampled_from(["true", "false", "garbage"]))
    if draw(st.booleans()):
        req.attributes.source.principal = draw(st.text(max_size=40))
    data = req.SerializeToString()
    if data and draw(st.integers(min_value=0, max_value=4)) == 0:  # one in five: corrupt the bytes
        pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos + 1 :]
    return data
