"""How a Check arrives: the request deserializer that never fails, and what it hands the handler.

gRPC's default deserializer fails a call whose bytes do not parse, and its transport refuses one over its size
limit, both before any of our code runs: such Checks would leave no trace, although Envoy acts on the failure.
Decoding ourselves turns them into values the handler denies and records like every other Check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError


@dataclass(frozen=True, slots=True)
class MalformedCheckRequest:
    """Bytes that are not a CheckRequest (e.g. invalid UTF-8 in a string field, which proto3 rejects).

    gRPC's default deserializer would fail such a call before any handler runs, leaving no trace; decoding
    ourselves lets the handler deny it and record it like every other Check.
    """

    size: int
    error: str


@dataclass(frozen=True, slots=True)
class OversizeCheckRequest:
    """A CheckRequest over ``server.max_recv_msg_size``. The transport takes up to TRANSPORT_HEADROOM times that
    much so that such a Check reaches the handler and is denied and recorded, instead of failing inside gRPC with
    no trace. ``request``: what it said, without its body (None if it did not parse)."""

    request: external_auth_pb2.CheckRequest | None
    size: int
    limit: int


TRANSPORT_HEADROOM = 4
"""The gRPC transport limit is this many times ``server.max_recv_msg_size``; larger still is refused by gRPC."""

CheckArgument: TypeAlias = "external_auth_pb2.CheckRequest | MalformedCheckRequest | OversizeCheckRequest"


def parse_check_request(data: bytes, limit: int | None = None) -> CheckArgument:
    """The request deserializer of the Check method: never raises."""
    try:
        request = external_auth_pb2.CheckRequest.FromString(data)
    except DecodeError as e:
        if limit is not None and len(data) > limit:
            return OversizeCheckRequest(None, len(data), limit)
        return MalformedCheckRequest(len(data), str(e) or "undecodable protobuf")
    if limit is not None and len(data) > limit:
        http = request.attributes.request.http
        http.ClearField("body")
        http.ClearField("raw_body")
        return OversizeCheckRequest(request, len(data), limit)
    return request
