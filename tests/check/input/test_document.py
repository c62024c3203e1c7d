"""The whole document: the fast attribute walk against the generic one, empty requests, source_principal."""

from __future__ import annotations

import copy
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.check.input import build_input, document
from authz_ledger.check.input.protomap import protomap
from tests.check.input.support import canonical, http_request


def test_fast_path_is_active_for_the_installed_envoy_protos() -> None:
    assert document._FAST_PATH


def test_fast_path_turns_itself_off_when_a_message_gains_a_field(monkeypatch: Any) -> None:
    known = copy.deepcopy(document._KNOWN_FIELDS)
    known["envoy.service.auth.v3.AttributeContext.Peer"].discard("certificate")
    monkeypatch.setattr(document, "_KNOWN_FIELDS", known)
    assert not document._fast_path_matches(external_auth_pb2.DESCRIPTOR.pool)


def test_empty_check_request() -> None:
    assert build_input(external_auth_pb2.CheckRequest()) == {
        "version": {"ext_authz": "v3", "encoding": "protojson"},
        "parsed_path": [""],
        "parsed_query": {},
        "parsed_body": None,
        "truncated_body": False,
    }


def test_set_but_empty_messages_are_empty_objects() -> None:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.time.SetInParent()
    request.attributes.source.SetInParent()
    assert build_input(request)["attributes"] == {"source": {}, "request": {"time": {}}}


def test_port_zero_set_explicitly_is_kept() -> None:
    # port_value is in a oneof: set means present, even at 0.
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.address.socket_address.port_value = 0
    assert build_input(request)["attributes"]["source"] == {"address": {"socketAddress": {"portValue": 0}}}


def test_source_principal_is_copied_only_when_set() -> None:
    request = http_request()
    assert "source_principal" not in build_input(request)
    request.attributes.source.principal = "spiffe://td/ns/a/sa/b"
    assert build_input(request)["source_principal"] == "spiffe://td/ns/a/sa/b"


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(st.text(alphabet="abcdefgh-", min_size=1, max_size=6), texts, max_size=4),
    strings=st.lists(texts, min_size=8, max_size=8),
    numbers=st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 999_999_999), st.integers(0, 65535), st.integers(0, 1)),
    raw=st.binary(max_size=6),
    flags=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_fast_path_equals_the_generic_walk_on_generated_requests(
    headers: dict[str, str],
    strings: list[str],
    numbers: tuple[int, int, int, int],
    raw: bytes,
    flags: list[bool],
) -> None:
    request = external_auth_pb2.CheckRequest()
    a = request.attributes
    if flags[0]:
        a.source.address.socket_address.address = strings[0]
        a.source.address.socket_address.port_value = numbers[2]
        a.source.address.socket_address.protocol = numbers[3]
        a.source.principal = strings[1]
        a.source.labels.update({strings[2]: strings[3]})
    if flags[1]:
        a.destination.service = strings[4]
        a.destination.address.socket_address.ipv4_compat = flags[3]
    if flags[2]:
        a.request.time.seconds = numbers[0]
        a.request.time.nanos = numbers[1]
    http = a.request.http
    http.headers.update(headers)
    http.host = strings[5]
    http.scheme = strings[6]
    http.protocol = strings[7]
    http.size = numbers[0]
    http.raw_body = raw
    a.context_extensions.update(headers)
    fast = canonical(document._attributes_document(request))
    generic = canonical(protomap(request))
    assert fast == generic
