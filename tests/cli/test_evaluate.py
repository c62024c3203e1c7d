"""``authz-ledger eval``: the decision serve would make, from the command line, with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from authz_ledger.config import EXAMPLE_POLICY
from authz_ledger.policy.embedded import EmbeddedEngine
from tests.policy.conftest import encode, request_input, write_policy


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz_ledger.cli", "eval", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def alice(tmp_path: Path) -> Path:
    path = tmp_path / "alice.json"
    path.write_bytes(encode(request_input("GET", "/api/items", "alice")))
    return path


def test_a_defined_decision_is_printed_and_exits_zero(alice: Path) -> None:
    proc = run("--policy", str(EXAMPLE_POLICY), "--input", str(alice))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["allowed"] is True


def test_eval_gives_what_serve_gives_for_the_same_input(alice: Path) -> None:
    with EmbeddedEngine(EXAMPLE_POLICY, workers=1, timeout=5.0) as engine:
        served = engine.evaluate(alice.read_bytes())
    proc = run("--policy", str(EXAMPLE_POLICY), "--input", str(alice), "--json")
    assert json.loads(proc.stdout) == {"result": served.result, "policy_version": served.policy_version}


def test_an_undefined_decision_exits_one_with_nothing_on_stdout(alice: Path) -> None:
    proc = run("--policy", str(EXAMPLE_POLICY), "--input", str(alice), "--path", "envoy/authz/nothing")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert "data.envoy.authz.nothing is undefined" in proc.stderr


EVAL_ERRORS = {
    "a builtin error (strict, as serve)": (
        "package envoy.authz\nimport rego.v1\ndeny if time.parse_rfc3339_ns(input.t) > 0\nallow if not deny\n",
        '{"t": "yesterday"}',
        "eval_builtin_error: time.parse_rfc3339_ns",
    ),
    "an input that is not JSON": ("package envoy.authz\nallow := true\n", "{nope", "not valid JSON"),
    "a policy that does not compile": ("package envoy.authz\nallow if {\n", "{}", "rego_parse_error"),
}


@pytest.mark.parametrize(("rego", "document", "message"), EVAL_ERRORS.values(), ids=EVAL_ERRORS.keys())
def test_an_error_exits_two_with_the_message(tmp_path: Path, rego: str, document: str, message: str) -> None:
    write_policy(tmp_path / "p", rego)
    proc = run("--policy", str(tmp_path / "p"), "--input", "-", stdin=document)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_data_files_are_merged_into_data(tmp_path: Path) -> None:
    write_policy(tmp_path / "p", "package envoy.authz\nimport rego.v1\nallow := data.limits.max > input.n\n")
    (tmp_path / "limits.yaml").write_text("limits:\n  max: 10\n")
    proc = run(
        "--policy", str(tmp_path / "p"), "--data", str(tmp_path / "limits.yaml"), "--input", "-", stdin='{"n": 3}'
    )
    assert (proc.returncode, json.loads(proc.stdout)) == (0, True)


def test_inputs_gives_one_result_per_line_and_the_worst_exit_code(tmp_path: Path) -> None:
    lines = [
        json.dumps(request_input("GET", "/api/items", "alice")),
        "",  # blank lines are skipped
        json.dumps(request_input("GET", "/api/items", None)),
        "{not json",
    ]
    path = tmp_path / "inputs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    proc = run("--policy", str(EXAMPLE_POLICY), "--inputs", str(path))
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in reports] == [1, 3, 4]
    assert reports[0]["result"]["allowed"] is True
    assert reports[1]["result"]["http_status"] == 401
    assert "not valid JSON" in reports[2]["error"]
    assert proc.returncode == 2
    assert "line 4:" in proc.stderr


def test_a_policy_that_runs_too_long_is_stopped_by_the_timeout(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "p",
        "package envoy.authz\nimport rego.v1\n"
        "allow if { input.spin; some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i * j < 0 }\n",
    )
    proc = run("--policy", str(tmp_path / "p"), "--input", "-", "--timeout-ms", "300", stdin='{"spin": true}')
    assert proc.returncode == 2
    assert "PolicyTimeoutError" in proc.stderr


def test_an_empty_input_is_an_error_not_no_input() -> None:
    proc = run("--policy", str(EXAMPLE_POLICY), "--input", "-", stdin="  \n")
    assert proc.returncode == 2
    assert "the input is empty" in proc.stderr


def test_json_output_stays_strict_json_for_numbers_beyond_float64(tmp_path: Path) -> None:
    write_policy(tmp_path / "p", 'package envoy.authz\nimport rego.v1\nallow := {"n": input.n}\n')
    proc = run("--policy", str(tmp_path / "p"), "--input", "-", "--json", stdin='{"n": 1e400}')
    assert proc.returncode == 0
    json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
