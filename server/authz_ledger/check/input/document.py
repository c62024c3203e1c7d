"""The input document: what opa-envoy-plugin's ``envoyauth/request.go`` assembles from a ``CheckRequest`` --
``attributes`` (the protomap of the request), ``version``, ``parsed_path`` / ``parsed_query``, ``parsed_body`` /
``truncated_body`` and ``source_principal``.

``attributes`` is read field by field for the messages every request carries (peers, HTTP request, time), giving
what the plugin's generic walk (:func:`authz_ledger.check.input.protomap.protomap`) gives, at less cost.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor_pool import DescriptorPool  # type: ignore[import-untyped, unused-ignore]

from authz_ledger.check.input.body import parse_body
from authz_ledger.check.input.gourl import parse_path_and_query
from authz_ledger.check.input.protomap import b64, protomap

# The same object for every request; callers must not mutate the input document in place (nobody does: it is
# serialised for the policy engine and the ledger).
_VERSION = {"ext_authz": "v3", "encoding": "protojson"}


# Hand-written walks of the messages every CheckRequest carries. Each gives exactly what protomap gives
# (the tests compare both on generated requests); they exist because upb's ListFields and ScalarMap
# conversions cost more than reading the few fields directly. They are used only while the messages have
# exactly the fields written for here: a newer xds-protos that adds a field falls back to the generic walk.

_EMPTY: dict[str, Any] = {}

_KNOWN_FIELDS = {
    "envoy.service.auth.v3.CheckRequest": {"attributes"},
    "envoy.service.auth.v3.AttributeContext": {
        "source",
        "destination",
        "request",
        "context_extensions",
        "metadata_context",
        "route_metadata_context",
        "tls_session",
    },
    "envoy.service.auth.v3.AttributeContext.Peer": {
        "address",
        "service",
        "labels",
        "principal",
        "certificate",
    },
    "envoy.service.auth.v3.AttributeContext.Request": {"time", "http"},
    "envoy.service.auth.v3.AttributeContext.HttpRequest": {
        "id",
        "method",
        "headers",
        "header_map",
        "path",
        "host",
        "scheme",
        "query",
        "fragment",
        "size",
        "protocol",
        "body",
        "raw_body",
    },
    "envoy.config.core.v3.Address": {"socket_address", "pipe", "envoy_internal_address"},
    "envoy.config.core.v3.SocketAddress": {
        "protocol",
        "address",
        "port_value",
        "named_port",
        "resolver_name",
        "ipv4_compat",
        "network_namespace_filepath",
    },
    "google.protobuf.Timestamp": {"seconds", "nanos"},
}


def _fast_path_matches(pool: DescriptorPool) -> bool:
    try:
        return all(
            set(pool.FindMessageTypeByName(name).fields_by_name) == fields for name, fields in _KNOWN_FIELDS.items()
        )
    except KeyError:
        return False


def _string_map(m: Any) -> dict[str, str]:
    # A comprehension over the keys is about 3x faster than dict() on a upb ScalarMap.
    return {k: m[k] for k in m}


def _socket_address(sa: Any) -> dict[str, Any]:
    # Each field is read once: every read of a upb string field builds a new Python str.
    out: dict[str, Any] = {}
    if protocol := sa.protocol:
        out["protocol"] = protocol  # enums are numbers in the plugin's input
    if address := sa.address:
        out["address"] = address
    port = sa.WhichOneof("port_specifier")
    if port == "port_value":
        out["portValue"] = sa.port_value
    elif port == "named_port":
        out["namedPort"] = sa.named_port
    if resolver_name := sa.resolver_name:
        out["resolverName"] = resolver_name
    if sa.ipv4_compat:
        out["ipv4Compat"] = True
    if namespace := sa.network_namespace_filepath:
        out["networkNamespaceFilepath"] = namespace
    return out


def _peer(peer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.HasField("address"):
        address = peer.address
        if address.WhichOneof("address") == "socket_address":
            out["address"] = {"socketAddress": _socket_address(address.socket_address)}
        else:
            out["address"] = protomap(address)
    if service := peer.service:
        out["service"] = service
    labels = peer.labels
    if len(labels):
        out["labels"] = _string_map(labels)
    if principal := peer.principal:
        out["principal"] = principal
    if certificate := peer.certificate:
        out["certificate"] = certificate
    return out


# HttpRequest fields whose JSON name is their proto name and whose value goes in as read, in the plugin's order.
_HTTP_PLAIN_FIELDS = ("path", "host", "scheme", "query", "fragment", "size", "protocol", "body")


def _http_request(h: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if id_ := h.id:
        out["id"] = id_
    if method := h.method:
        out["method"] = method
    headers = h.headers
    if len(headers):
        out["headers"] = _string_map(headers)
    if h.HasField("header_map"):
        out["headerMap"] = protomap(h.header_map)
    for field in _HTTP_PLAIN_FIELDS:
        if value := getattr(h, field):
            out[field] = value
    if raw := h.raw_body:
        out["rawBody"] = b64(raw)
    return out


def _attributes(a: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.HasField("source"):
        out["source"] = _peer(a.source)
    if a.HasField("destination"):
        out["destination"] = _peer(a.destination)
    if a.HasField("request"):
        request = a.request
        req: dict[str, Any] = {}
        if request.HasField("time"):
            t = request.time
            ts: dict[str, int] = {}
            if t.seconds:
                ts["seconds"] = t.seconds
            if t.nanos:
                ts["nanos"] = t.nanos
            req["time"] = ts
        if request.HasField("http"):
            req["http"] = _http_request(request.http)
        out["request"] = req
    if len(a.context_extensions):
        out["contextExtensions"] = _string_map(a.context_extensions)
    # Rare and open-ended (Struct, Any, TLS details): the generic walk.
    if a.HasField("metadata_context"):
        out["metadataContext"] = protomap(a.metadata_context)
    if a.HasField("route_metadata_context"):
        out["routeMetadataContext"] = protomap(a.route_metadata_context)
    if a.HasField("tls_session"):
        out["tlsSession"] = protomap(a.tls_session)
    return out


def _attributes_document(request: Any) -> dict[str, Any]:
    """``{"attributes": ...}`` -- the plugin's protomap of the whole CheckRequest."""
    if not _FAST_PATH:
        return protomap(request)
    if not request.HasField("attributes"):
        return {}
    return {"attributes": _attributes(request.attributes)}


_FAST_PATH = False  # set by _enable_fast_path() once the Envoy descriptors are known to match


def _enable_fast_path() -> None:
    global _FAST_PATH  # noqa: PLW0603 -- one flag, decided once at import
    from envoy.service.auth.v3 import external_auth_pb2

    _FAST_PATH = _fast_path_matches(external_auth_pb2.DESCRIPTOR.pool)


_enable_fast_path()


def build_input(
    request: Any,
    *,
    skip_request_body_parse: bool = False,
    descriptor_pool: DescriptorPool | None = None,
) -> dict[str, Any]:
    """The input document opa-envoy-plugin gives the policy for this ``CheckRequest``.

    ``request`` is an ``envoy.service.auth.v3.CheckRequest``; ``descriptor_pool`` (see
    :func:`load_descriptor_set`) enables parsing gRPC request bodies. Raises RequestParseError where the
    plugin answers ``request_parse_error``.
    """
    document = _attributes_document(request)
    document["version"] = _VERSION

    attributes = document.get("attributes", _EMPTY)
    http = attributes.get("request", _EMPTY).get("http", _EMPTY)

    parsed_path, parsed_query = parse_path_and_query(http.get("path", ""))
    document["parsed_path"] = parsed_path
    document["parsed_query"] = parsed_query

    if not skip_request_body_parse:
        raw_body = request.attributes.request.http.raw_body if "rawBody" in http else b""
        parsed_body, truncated = parse_body(
            http.get("headers", _EMPTY), http.get("body", ""), raw_body, parsed_path, descriptor_pool
        )
        document["parsed_body"] = parsed_body
        document["truncated_body"] = truncated

    # Since plugin v1.x (July 2025, PR #732): the SPIFFE ID under Istio mTLS, without digging into attributes.
    principal = attributes.get("source", _EMPTY).get("principal")
    if principal:
        document["source_principal"] = principal
    return document
