"""``authz-ledger eval``: evaluate a policy on input documents exactly as ``serve`` would, before deploying it.

Same engine (OPA's Go engine in an evaluator process), same loading (directory or bundle, ``.manifest``, data
files), same strict builtin errors, same timeout. The input is the JSON text ``serve`` would hand the engine: an
input document as opa-envoy-plugin builds it (``authz-ledger log --json`` shows recorded ones).

Exit status: 0 when every decision is defined, 1 when one is undefined, 2 on any error (the message on stderr;
with ``--inputs`` every line is still evaluated and reported).

``--json`` and ``--inputs`` print one JSON object per input, a contract for scripts: ``result`` (the decision
document, present only when defined), ``undefined`` (true when not), ``error`` (the message, on error),
``policy_version``; with ``--inputs`` also ``line`` (1-based line number in the file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.cli.common import positive
from authz_ledger.errors import PolicyError, PolicyUndefinedError
from authz_ledger.record import gojson

_DEFINED, _UNDEFINED, _ERROR = 0, 1, 2


def register(sub: Any) -> None:
    e = sub.add_parser(
        "eval",
        help="evaluate a policy on an input document exactly as serve would; exit 0 defined, 1 undefined, 2 error",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--policy", required=True, metavar="PATH", help="a directory of .rego and data files, or a bundle")
    e.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON or YAML object merged into data (repeatable)",
    )
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="the input document (JSON), or - for standard input")
    source.add_argument("--inputs", metavar="FILE", help="JSON Lines: one input document per line (- for stdin)")
    e.add_argument("--path", default="envoy/authz/allow", help="decision path (default envoy/authz/allow)")
    e.add_argument("--json", action="store_true", help="one JSON object per input: result / undefined / error")
    e.add_argument(
        "--timeout-ms",
        type=positive,
        default=200,
        metavar="MS",
        help="per-decision timeout (policy.timeout_ms)",
    )
    e.set_defaults(func=cmd_eval)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from authz_ledger.policy.embedded import EmbeddedEngine

    try:
        data = _read(args.inputs if args.inputs is not None else args.input)
    except OSError as exc:
        print(f"authz-ledger eval: cannot read the input: {exc.strerror or exc}", file=sys.stderr)
        return _ERROR
    try:
        engine = EmbeddedEngine(
            args.policy,
            decision_path=args.path,
            workers=1,
            timeout=args.timeout_ms / 1000,
            data_files=args.data,
        )
    except PolicyError as exc:
        print(f"authz-ledger eval: {exc}", file=sys.stderr)
        return _ERROR
    with engine:
        if args.inputs is None:
            if not data.strip():  # serve never sends an empty input; the engine would take it as "no input"
                print("authz-ledger eval: the input is empty (an input document is a JSON value)", file=sys.stderr)
                return _ERROR
            return _one(engine, data.strip(), args.json, out)
        worst = _DEFINED
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            report, status = _evaluate(engine, line)
            print(_json_line({**report, "line": number}), file=out)
            if status != _DEFINED:
                print(f"authz-ledger eval: line {number}: {report.get('error', 'undefined')}", file=sys.stderr)
            worst = max(worst, status)
        return worst


def _evaluate(engine: Any, input_json: bytes) -> tuple[dict[str, Any], int]:
    try:
        evaluation = engine.evaluate(input_json)
    except PolicyUndefinedError:
        return {"undefined": True, "policy_version": engine.policy_version()}, _UNDEFINED
    except PolicyError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "policy_version": engine.policy_version()}, _ERROR
    except Exception as exc:  # exit 2, not a traceback and exit 1 (which means undefined)
        return {"error": f"internal error: {type(exc).__name__}: {exc}", "policy_version": ""}, _ERROR
    return {"result": evaluation.result, "policy_version": evaluation.policy_version}, _DEFINED


def _json_line(value: Any) -> str:
    """Strict JSON, always (a number beyond float64 in a result is read as an infinity: written as null)."""
    return gojson.compact(value).decode("utf-8", "replace")


def _one(engine: Any, input_json: bytes, as_json: bool, out: TextIO) -> int:
    report, status = _evaluate(engine, input_json)
    if as_json:
        print(_json_line(report), file=out)
    elif status == _DEFINED:
        try:
            print(json.dumps(report["result"], ensure_ascii=False, indent=2, allow_nan=False), file=out)
        except (ValueError, RecursionError):
            print(_json_line(report["result"]), file=out)
    if status == _UNDEFINED:
        print(f"authz-ledger eval: data.{engine.decision_path.replace('/', '.')} is undefined", file=sys.stderr)
    elif status == _ERROR:
        print(f"authz-ledger eval: {report['error']}", file=sys.stderr)
    return status
