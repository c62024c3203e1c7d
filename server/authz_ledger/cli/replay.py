"""``authz-ledger replay``: impact analysis of a candidate policy on recorded decisions, before it is deployed.

Every recorded decision in the range is evaluated again, on the input document it was recorded with, by the
engine ``serve`` uses (OPA's Go engine, same loading and result contract), and every decision that would change
(outcome or HTTP status) is reported: counts by path pattern and by principal, then the list. Inputs are the
recorded, redacted ones: a policy that reads a value stored as a digest decides differently here (the report
counts those inputs). Read-only; safe while ``serve`` runs.

``--json`` prints one object: ``policy_version``, ``replayed``, ``changed``, ``unchanged``, ``not_replayable``,
``redacted_inputs``, ``by_path``, ``by_principal`` and ``changes`` (``index``, ``decision_id``,
``time_unix_nano``, ``method``, ``path``, ``principal``, ``was``, ``now``, ``error`` when the candidate errs).
Exit 0 when nothing would change, 1 when something would, 2 on an error.

``--engine in-process`` (the default) evaluates in this process, one thread by default (``--workers``): the
fastest on one core, but OPA's engine cannot stop an evaluation there, so one that outlives ``--timeout-ms``
ends the replay (exit 2, naming the timeout). ``--engine processes`` evaluates in evaluator processes as
``serve`` does (``--workers`` of them, one per core by default): such a decision is then killed and reported
as an ``error`` change, and the replay goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.cli.common import positive
from authz_ledger.console import query
from authz_ledger.console.replay import DECISION_TIMEOUT_MS, IN_PROCESS, PROCESSES, Report, open_engine, replay
from authz_ledger.errors import AuthzLedgerError, PolicyTimeoutError
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store


def register(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="re-evaluate recorded decisions with a candidate policy and report every decision that would change",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--data-dir", required=True, type=Path)
    r.add_argument("--policy", required=True, metavar="PATH", help="the candidate: a policy directory or bundle")
    r.add_argument("--data", action="append", default=[], metavar="FILE", help="data merged in (repeatable)")
    r.add_argument("--path", default="envoy/authz/allow", help="decision path (default envoy/authz/allow)")
    r.add_argument("--since", default="", help="15m, 1h, 7d or ISO 8601 (default: the whole ledger)")
    r.add_argument("--until", default="", help="same forms, exclusive")
    r.add_argument("--filter", default="", metavar="QUERY", help="the console's query language, e.g. 'user:alice'")
    r.add_argument(
        "--engine",
        choices=(IN_PROCESS, PROCESSES),
        default=IN_PROCESS,
        help="where the candidate is evaluated: in this process (default; a decision past the timeout ends the "
        "replay) or in evaluator processes as serve does (such a decision is reported as an error)",
    )
    r.add_argument(
        "--workers",
        type=positive,
        default=None,
        help="threads evaluating in this process (default 1), or evaluator processes (default: one per core)",
    )
    r.add_argument(
        "--timeout-ms", type=positive, default=DECISION_TIMEOUT_MS, metavar="MS", help="per-decision timeout"
    )
    r.add_argument("--show", type=int, default=20, metavar="N", help="changed decisions listed (default 20)")
    r.add_argument("--json", action="store_true", help="one JSON object (all changes)")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    q = query.parse(args.filter)
    if args.since:
        q = replace(q, since_ns=query.parse_time(args.since))
    if args.until:
        q = replace(q, until_ns=query.parse_time(args.until))
    in_process = args.engine == IN_PROCESS
    workers = args.workers or (1 if in_process else os.cpu_count() or 2)
    store = Store(LedgerPaths(args.data_dir).store, readonly=True)
    try:
        report = _run(args, q, store, in_process, workers)
    except AuthzLedgerError as e:
        # Exit 1 already means "something would change": every error, a candidate that does not compile
        # included, must not read as that, so it is 2 here (not the shared mapping's 1).
        print(f"authz-ledger replay: {e.diagnostics()}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return _print_report(args, report, out)


def _run(args: argparse.Namespace, q: query.Query, store: Store, in_process: bool, workers: int) -> Report:
    with open_engine(
        args.policy,
        where=args.engine,
        decision_path=args.path,
        workers=workers,
        timeout_ms=args.timeout_ms,
        data_files=args.data,
        on_overrun=_exit_on_overrun,
    ) as engine:
        # In-process, one thread per evaluation at once; evaluator processes want several decisions waiting.
        return replay(store, engine, q, threads=workers if in_process else workers * 8)


def _print_report(args: argparse.Namespace, report: Report, out: TextIO) -> int:
    if args.json:
        print(json.dumps(report.as_json()), file=out)
        return 1 if report.changes else 0
    print(
        f"replayed {report.replayed} decisions with policy {report.policy_version}: {len(report.changes)} would "
        f"change, {report.unchanged} would not"
        + (f"; {report.not_replayable} recorded without an input" if report.not_replayable else ""),
        file=out,
    )
    if report.redacted_inputs:
        print(
            f"note: {report.redacted_inputs} inputs hold redacted values (hmac-sha256:...); a policy reading them "
            "decides on the digest here",
            file=out,
        )
    for title, counts in (("by path", report.by_path), ("by principal", report.by_principal)):
        if counts:
            print(f"\n{title}:", file=out)
            for key, n in counts.most_common(10):
                print(f"  {n:>8}  {key}", file=out)
    if report.changes:
        print(f"\nchanged decisions (first {min(args.show, len(report.changes))}):", file=out)
        for c in report.changes[: args.show]:
            print(f"  {c.index:>8}  {c.was} -> {c.now}  {c.method} {c.path}  {c.principal}  {c.decision_id}", file=out)
    return 1 if report.changes else 0


def _exit_on_overrun(error: PolicyTimeoutError) -> None:
    """The in-process engine's watchdog: an evaluation it cannot stop has outlived the timeout. Only ending the
    process stops it (the watchdog's thread calls this while the evaluation runs on), so exit 2 with the error."""
    print(
        f"authz-ledger replay: {error.diagnostics()}; with --engine {PROCESSES} such a decision is reported as an "
        "error and the replay goes on",
        file=sys.stderr,
        flush=True,
    )
    os._exit(2)
