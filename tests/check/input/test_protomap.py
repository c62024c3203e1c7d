"""attributes against the plugin's protomap: enums, int64, bytes, Any, Struct numbers, the rare attributes."""

from __future__ import annotations

import base64
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import any_pb2

from authz_ledger.check.input import build_input, document
from authz_ledger.check.input.protomap import protomap
from authz_ledger.record import gojson
from tests.check.input.support import canonical, plain


def rich_request() -> Any:
    """Every rare attribute the plugin converts, with the values that expose protojson differences."""
    request = external_auth_pb2.CheckRequest()
    a = request.attributes
    src = a.source
    src.address.socket_address.address = "10.0.0.1"
    src.address.socket_address.named_port = "http"
    src.address.socket_address.protocol = 1  # UDP: the plugin gives the enum number
    src.service = "frontend"
    src.labels["app"] = "web"
    src.principal = "spiffe://td/sa/frontend"
    src.certificate = "-----BEGIN CERTIFICATE-----"
    a.destination.address.pipe.path = "/run/envoy.sock"
    a.destination.address.pipe.mode = 0o600
    a.request.time.seconds = 1764150000  # nanos 0: left out
    http = a.request.http
    http.id = "1"
    http.method = "GET"
    http.path = "/x"
    http.query = "q=1"
    http.fragment = "f"
    http.size = 2**40
    http.header_map.headers.add(key="x-raw", raw_value=b"\x00\x01")
    a.context_extensions["virtual_host"] = "vh"
    a.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
        {"claims": {"sub": "alice", "exp": 1764150000, "ratio": 2.5, "groups": ["a", "b"], "none": None}}
    )
    packed = any_pb2.Any()
    packed.Pack(address_pb2.Pipe(path="/p"))
    a.metadata_context.typed_filter_metadata["typed"].CopyFrom(packed)
    a.route_metadata_context.filter_metadata["route"].update({"k": "v"})
    a.tls_session.sni = "example.com"
    return request, packed


def test_rare_attributes_follow_the_plugin_protomap() -> None:
    request, packed = rich_request()
    attributes = plain(build_input(request)["attributes"])
    assert attributes == {
        "source": {
            "address": {"socketAddress": {"address": "10.0.0.1", "namedPort": "http", "protocol": 1}},
            "service": "frontend",
            "labels": {"app": "web"},
            "principal": "spiffe://td/sa/frontend",
            "certificate": "-----BEGIN CERTIFICATE-----",
        },
        "destination": {"address": {"pipe": {"path": "/run/envoy.sock", "mode": 0o600}}},
        "request": {
            "time": {"seconds": 1764150000},
            "http": {
                "id": "1",
                "method": "GET",
                "path": "/x",
                "query": "q=1",
                "fragment": "f",
                "size": 2**40,
                "headerMap": {"headers": [{"key": "x-raw", "rawValue": "AAE="}]},
            },
        },
        "contextExtensions": {"virtual_host": "vh"},
        "metadataContext": {
            "filterMetadata": {
                "envoy.filters.http.jwt_authn": {
                    "claims": {
                        "sub": "alice",
                        "exp": 1764150000,
                        "ratio": 2.5,
                        "groups": ["a", "b"],
                        "none": None,
                    }
                }
            },
            "typedFilterMetadata": {
                "typed": {"typeUrl": packed.type_url, "value": base64.b64encode(packed.value).decode()}
            },
        },
        "routeMetadataContext": {"filterMetadata": {"route": {"k": "v"}}},
        "tlsSession": {"sni": "example.com"},
    }


def test_rare_attributes_are_the_same_through_the_generic_walk(monkeypatch: Any) -> None:
    request, _ = rich_request()
    fast = canonical(build_input(request))
    monkeypatch.setattr(document, "_FAST_PATH", False)
    assert canonical(build_input(request)) == fast


def test_struct_numbers_reach_the_policy_as_go_prints_them() -> None:
    # OPA's FloatNumberTerm: strconv.FormatFloat(f, 'g', -1, 64).
    request = attribute_context_pb2.AttributeContext()
    request.metadata_context.filter_metadata["m"].update(
        {"int": 3, "big": 1e300, "frac": 0.5, "exp": 1764150000, "million": 1e6, "small": 1.5e-7}
    )
    values = protomap(request)["metadataContext"]["filterMetadata"]["m"]
    want = '{"big":1e+300,"exp":1.76415e+09,"frac":0.5,"int":3,"million":1e+06,"small":1.5e-07}'
    assert gojson.canonical(values) == want
    assert isinstance(values["int"], int)  # a plain integer text stays a Python int (orjson writes it the same)
