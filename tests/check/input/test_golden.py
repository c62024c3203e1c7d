"""The input document against opa-envoy-plugin's recordings: every golden case, numbers and broken Unicode."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format

from authz_ledger.check.input import build_input, document
from authz_ledger.check.result import request_parse_error_response
from authz_ledger.errors import RequestParseError
from authz_ledger.record import gojson
from tests.check.input.support import canonical, request_from_json
from tests.conftest import VECTORS

GOLDEN = json.loads((VECTORS / "opa-envoy-golden.json").read_text())
INPUT_CASES = {case["name"]: case for case in GOLDEN["input_cases"]}


def attributes_as_plugin(check_request: dict[str, Any]) -> dict[str, Any]:
    """The golden convention for attributes: protobuf JSON, but time as {seconds, nanos}, int64 as numbers."""
    attributes = copy.deepcopy(check_request["attributes"])
    request = attributes.get("request", {})
    if "time" in request:
        when = request["time"]
        stamp = datetime.fromisoformat(when[:19]).replace(tzinfo=UTC)
        request["time"] = {"seconds": int(stamp.timestamp()), "nanos": int(when[20:-1].ljust(9, "0"))}
    http = request.get("http", {})
    if "size" in http:
        http["size"] = int(http["size"])
    return attributes


# --- Golden cases -------------------------------------------------------------------------------------------
#
# Where the plugin's current source (envoyauth/request.go at HEAD) differs from the v1.4.2 recording, the
# current behaviour wins; each override says why. The recording marks only two of them as superseded.


def _with(name: str, **changes: Any) -> dict[str, Any]:
    case = INPUT_CASES[name]
    expected = copy.deepcopy(case["input"]) if "input" in case else None
    if expected is None:
        expected = {
            "attributes": attributes_as_plugin(case["check_request"]),
            "version": {"ext_authz": "v3", "encoding": "protojson"},
            "parsed_query": {},
        }
    expected.update(changes)
    return expected


OVERRIDES: dict[str, dict[str, Any]] = {
    # superseded: the 2026 security fix stopped parsing "//admin" as a URL authority.
    "double slash at start keeps segments": _with(
        "double slash at start keeps segments", parsed_path=["admin", "people"]
    ),
    # superseded: plugin PR #809 (2026) honours x-envoy-auth-partial-body instead of failing to parse.
    "partial body header": _with("partial body header", parsed_path=["json"], parsed_body=None, truncated_body=True),
    # Not marked in the recording: the same 2026 fix replaced url.Parse by strings.Cut(path, "?") and
    # url.ParseQuery, so "#frag" is no longer stripped; it stays in the query value.
    "path with fragment-like text": _with("path with fragment-like text", parsed_query={"x": ["1#frag"]}),
    # Not marked in the recording: PR #732 (July 2025, after v1.4.2) added input.source_principal.
    "mTLS principals": _with("mTLS principals", source_principal="spiffe://cluster.local/ns/default/sa/frontend"),
}


@pytest.mark.parametrize("case", GOLDEN["input_cases"], ids=[c["name"] for c in GOLDEN["input_cases"]])
def test_golden_input_case(case: dict[str, Any]) -> None:
    request = request_from_json(case["check_request"])
    name = case["name"]
    if name in OVERRIDES:
        assert canonical(build_input(request)) == canonical(OVERRIDES[name])
    elif "input" in case:
        assert canonical(build_input(request)) == canonical(case["input"])
    else:
        with pytest.raises(RequestParseError) as info:
            build_input(request)
        outcome = request_parse_error_response(info.value, decision_id="id-1")
        got = json_format.MessageToDict(outcome.response)
        assert got.pop("dynamicMetadata") == {"decision_id": "id-1"}  # our one addition (see result.py)
        assert got == case["response"]


def test_golden_attribute_convention_matches_every_recorded_input() -> None:
    # The helper that builds expectations for the partial-body case is itself checked against the recording.
    for case in GOLDEN["input_cases"]:
        if "input" in case:
            assert attributes_as_plugin(case["check_request"]) == case["input"]["attributes"], case["name"]


@pytest.mark.parametrize("case", GOLDEN["input_cases"], ids=[c["name"] for c in GOLDEN["input_cases"]])
def test_generic_protomap_walk_gives_the_same_attributes(case: dict[str, Any], monkeypatch: Any) -> None:
    request = request_from_json(case["check_request"])
    fast = document._attributes_document(request)
    monkeypatch.setattr(document, "_FAST_PATH", False)
    assert canonical(document._attributes_document(request)) == canonical(fast)


# --- Golden cases for numbers, broken Unicode and refused bodies (part 12) -----------------------------------
#
# Recorded from the same plugin with an echo policy; every number in "input" is the plugin's literal text.


def with_number_text(data: str | bytes) -> Any:
    """JSON read with every number kept as ("number", its text): 1E2, 100 and 1e+02 stay different."""
    return json.loads(data, parse_int=lambda t: ("number", t), parse_float=lambda t: ("number", t))


def without_number_text(value: Any) -> Any:
    if isinstance(value, tuple):
        return json.loads(value[1])
    if isinstance(value, dict):
        return {k: without_number_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_number_text(v) for v in value]
    return value


NUMBERS_GOLDEN = with_number_text((VECTORS / "opa-envoy-golden-numbers.json").read_text())
NUMBER_CASES = NUMBERS_GOLDEN["input_cases"]


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[f"{c['kind']}: {c['name']}" for c in NUMBER_CASES])
def test_golden_numbers_case(case: dict[str, Any]) -> None:
    request = request_from_json(without_number_text(case["check_request"]))
    if "input" in case:
        assert with_number_text(gojson.compact(build_input(request))) == case["input"]
        return
    # Refused as the plugin refuses it. The message is Go's encoding/json wording, which changes with the Go
    # release the plugin is built with (this recording: Go 1.27), so only the refusal itself is compared.
    with pytest.raises(RequestParseError) as info:
        build_input(request)
    outcome = request_parse_error_response(info.value, decision_id="id-1")
    got = json_format.MessageToDict(outcome.response)
    want = without_number_text(case["response"])
    assert got["status"]["code"] == want["status"]["code"]
    assert got["deniedResponse"]["status"] == want["deniedResponse"]["status"]
    assert got["deniedResponse"]["body"].startswith("request_parse_error: ")


def test_golden_numbers_cover_every_kind_the_recording_names() -> None:
    kinds = {case["kind"] for case in NUMBER_CASES}
    assert kinds == {"body-number-range", "body-number-text", "control", "parse-error", "struct-number", "unicode"}
    assert len(NUMBER_CASES) == 190
