"""Differential: the embedded engine (OPA v1.20.2's Go engine) against a real OPA server (v1.4.2) on our own cases.

Every case of ``differential_cases.py`` is loaded into both as one package, behind one dispatcher rule, and
evaluated with the same input document. The embedded engine must give what the server gives with
``strict-builtin-errors`` (both are strict: see policy/embedded/go_engine.py): the same value, the same undefined, an
error where the server errs. Differences due to the version gap are listed in ``VERSION_GAP``, each with its
reason, and asserted to still differ, so the list cannot go stale. The server is asked without strict builtin
errors too (opa-envoy-plugin's default): ``LENIENT_ONLY`` lists exactly the cases where that changes the
decision -- what an operator moving from the plugin must know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz_ledger.errors import PolicyError, PolicyUndefinedError
from authz_ledger.policy.embedded import EmbeddedEngine
from authz_ledger.policy.opa import OpaEngine

from .differential_cases import Case, cases
from .test_opa import Opa

CASES = cases()
DISPATCH = """package diff
import rego.v1
run := r if {
    name := input.case
    document := input.doc
    r := data.diff.cases[name].result with input as document
}
"""

# Cases whose answers differ between OPA 1.4.2 (the server the tests build) and 1.20.2 (the embedded engine),
# and why. Each must still differ; remove it when the server catches up.
VERSION_GAP: dict[str, str] = {
    "big_arithmetic_0": "1.4.2 adds a 30-digit integer in float64 (...900000000000); 1.20.2 keeps it exact (...891)",
}

# Cases whose decision changes without strict builtin errors: the failing builtin makes its expression
# undefined, so the rule (or the default) decides instead of an error.
LENIENT_ONLY = {
    "builtin_error_default_1": "deny's time.parse_rfc3339_ns fails: lenient, `allow if not deny` ALLOWS",
    "cidr_contains_5": "net.cidr_contains of 'not-an-ip'",
    "decode_errors_1": "base64.decode of text that is not base64",
    "decode_errors_2": "base64.decode of unpadded base64",
    "glob_error_0": "glob.match with an unclosed '['",
    "json_errors_1": "json.unmarshal of '{nope'",
    "json_errors_2": "json.unmarshal of '[1,'",
    "jwt_decode_3": "io.jwt.decode of 'not.a.jwt'",
    "jwt_decode_4": "io.jwt.decode of 'garbage'",
    "jwt_decode_verify_3": "io.jwt.decode_verify of 'not.a.jwt'",
    "jwt_decode_verify_4": "io.jwt.decode_verify of 'garbage'",
    "jwt_verify_hs256_4": "io.jwt.verify_hs256 of 'garbage'",
    "jwt_verify_rs256_2": "io.jwt.verify_rs256 of 'a.b.c'",
    "number_errors_1": "division by zero",
    "number_errors_2": "a string divided by a number (type error)",
    "query_params_2": "to_number of 'x'",
    "regex_errors_1": "regex.match of an unclosed group",
    "regex_errors_2": "regex.match of a bad repetition",
    "semver_uuid_3": "semver.compare of 'bogus'",
    "string_errors_0": "substring with a negative offset",
    "time_parse_2": "time.parse_rfc3339_ns of February 30",
    "time_parse_3": "time.parse_rfc3339_ns of 'yesterday'",
    "time_parse_4": "time.parse_rfc3339_ns without the 'T'",
    "type_errors_0": "a string plus a number (type error)",
    "units_2": "units.parse_bytes of 'lots'",
    "url_query_errors_1": "urlquery.decode of a bad escape",
    "yaml_builtins_2": "yaml.unmarshal of an unclosed flow mapping",
}


def outcome(evaluate: Any, case: Case) -> tuple[str, Any]:
    """("result", value) | ("undefined", None) | ("error", the eval_*_error code or the message)."""
    document = b'{"case":' + json.dumps(case.id).encode() + b',"doc":' + case.input + b"}"
    try:
        return ("result", evaluate(document).result)
    except PolicyUndefinedError:
        return ("undefined", None)
    except PolicyError as exc:
        code = re.search(r"(eval_[a-z_]+_error|rego_[a-z_]+_error)", str(exc))
        return ("error", code.group(1) if code else str(exc))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("differential")
    (root / "dispatch.rego").write_text(DISPATCH)
    for case in CASES:
        (root / f"{case.id}.rego").write_text(f"package diff.cases.{case.id}\nimport rego.v1\n{case.rego}")
    data = {case.id: case.data for case in CASES if case.data is not None}
    (root / "data.json").write_text(json.dumps({"diff": {"data": data}}))
    return root


@pytest.fixture(scope="module")
def answers(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    server = Opa([str(policy_dir)], tmp_path_factory.mktemp("differential-opa"))
    try:
        with (
            EmbeddedEngine(policy_dir, "diff/run", workers=1, timeout=20.0) as embedded,
            OpaEngine(server.url, "diff/run", timeout=20.0) as strict,
            OpaEngine(server.url, "diff/run", timeout=20.0, strict_builtin_errors=False) as lenient,
        ):
            yield {
                case.id: {
                    "embedded": outcome(embedded.evaluate, case),
                    "strict": outcome(strict.evaluate, case),
                    "lenient": outcome(lenient.evaluate, case),
                }
                for case in CASES
            }
    finally:
        server.stop()


def test_the_suite_is_large_and_covers_every_family() -> None:
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_embedded_engine_answers_as_a_real_opa_server(answers: dict[str, dict[str, Any]], case: Case) -> None:
    got = answers[case.id]
    if case.id in VERSION_GAP:
        assert got["embedded"] != got["strict"], f"no longer differs: remove from VERSION_GAP ({VERSION_GAP[case.id]})"
    else:
        assert got["embedded"] == got["strict"]


def test_without_strict_builtin_errors_exactly_the_listed_decisions_change(
    answers: dict[str, dict[str, Any]],
) -> None:
    changed = {case_id for case_id, got in answers.items() if got["lenient"] != got["strict"]}
    assert changed == set(LENIENT_ONLY)
    for case_id in changed:  # strict errs where the lenient server decides
        assert answers[case_id]["strict"][0] == "error"


def test_the_suite_exercises_decisions_undefined_and_errors(answers: dict[str, dict[str, Any]]) -> None:
    kinds = [got["strict"][0] for got in answers.values()]
    assert kinds.count("result") >= 150
    assert kinds.count("undefined") >= 5
    assert kinds.count("error") >= 15
