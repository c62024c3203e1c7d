"""report.html: the human-readable report of an evidence pack, rendered from the pack's verified contents alone.

A pure function of the manifest's selection, the entries and the two checkpoints, so ``verify-evidence`` renders
it again from what it verified and compares the bytes: a report edited to say something the entries do not is
named like any other change. Self-contained (inline CSS and SVG, no script, nothing fetched): it opens from the
archive on an air-gapped machine and prints. The charts are the console's (part of the same code).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from authz_ledger.console import charts
from authz_ledger.console.facts import Facts
from authz_ledger.console.index import MinuteStats, path_pattern
from authz_ledger.evidence.pack import Manifest
from authz_ledger.readside.values import iso_time
from authz_ledger.tlog.checkpoint import Checkpoint

LISTED = 1000
"""Entries listed in the report's table; entries.jsonl holds them all."""

_MINUTE_NS = 60_000_000_000
_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class SignedTree:
    """A checkpoint of the pack and the names of the keys whose signature lines it carries."""

    checkpoint: Checkpoint
    signers: tuple[str, ...]

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.checkpoint.root).decode()


def _minutes(facts: Sequence[Facts]) -> list[MinuteStats]:
    counts: dict[int, list[int]] = {}
    for f in facts:
        c = counts.setdefault(f.time_ns // _MINUTE_NS, [0, 0, 0, 0])
        c[("allow", "deny", "error").index(f.outcome) if f.outcome in ("allow", "deny", "error") else 3] += 1
    return [MinuteStats(m, 0, 0, *c) for m, c in sorted(counts.items())]


def _version_changes(facts: Sequence[Facts]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for f in facts:
        if not out or out[-1][2] != f.version:
            out.append((f.seq, f.time_ns, f.version))
    return out


def render_report(manifest: Manifest, facts: Sequence[Facts], checkpoint: SignedTree, latest: SignedTree) -> bytes:
    """The report's bytes; the same arguments always give the same bytes."""
    sel = manifest.selection
    since = sel.since_ns or (min(f.time_ns for f in facts) if facts else 0)
    until = sel.until_ns or (max(f.time_ns for f in facts) + 1 if facts else since + _MINUTE_NS)
    versions = _version_changes(facts)
    outcomes = Counter(f.outcome for f in facts)
    denied = [f for f in facts if f.outcome == "deny"]
    outside = sum(
        1 for f in facts if (sel.since_ns and f.time_ns < sel.since_ns) or (sel.until_ns and f.time_ns >= sel.until_ns)
    )
    chart = charts.rates_svg(charts.buckets(_minutes(facts), since, until), versions)
    html = _ENV.get_template(
        "report.html"
    ).render(
        m=manifest,
        since=iso_time(sel.since_ns) if sel.since_ns else "the first entry",
        until=iso_time(sel.until_ns) if sel.until_ns else "the last entry",
        created=iso_time(manifest.created_ns),
        checkpoint=checkpoint,
        latest=latest,
        chart=Markup(chart),  # noqa: S704 (charts.py escapes every text it draws)
        outcomes=[(name, outcomes.get(name, 0)) for name in ("allow", "deny", "error")],
        other=sum(n for name, n in outcomes.items() if name not in ("allow", "deny", "error")),
        outside=outside,
        top_paths=Counter(path_pattern(f.path) for f in denied).most_common(10),
        top_principals=Counter(f.principal or "(none)" for f in denied).most_common(10),
        versions=[(seq, iso_time(t), v, sum(1 for f in facts if f.version == v)) for seq, t, v in versions[:50]],
        rows=[(f, iso_time(f.time_ns)) for f in facts[:LISTED]],
        listed=min(len(facts), LISTED),
        total=len(facts),
    )
    return html.encode("utf-8")
