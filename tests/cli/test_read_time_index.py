"""``list`` and ``tail`` with ``--since`` / ``--until`` answer from the time index exactly as the scan of every
entry did: the same entries, in seq order, under the same limits, printed byte for byte the same."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.cli import main as cli
from authz_ledger.cli.read import entry_doc
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.readside.values import StoredEntry
from authz_ledger.record import entry
from tests.support.timed_ledger import T0, forget_time_index, in_range, open_store, timed_bodies, write

SIZE = 300
"""More entries than the reader reads per transaction (256), so that whole-ledger listings use the index."""


def run(*argv: str) -> str:
    out = io.StringIO()
    assert cli.main(list(argv), out=out) == 0
    return out.getvalue()


@contextmanager
def index_answers() -> Iterator[list[Any]]:
    """Record what the time index answered during the block (None: it could not, and the reader scanned)."""
    answers: list[Any] = []
    real = Store.seqs_in_time_range

    def spy(self: Store, *args: Any, **kwargs: Any) -> Any:
        answers.append(real(self, *args, **kwargs))
        return answers[-1]

    with mock.patch.object(Store, "seqs_in_time_range", spy):
        yield answers


def expected_json(data_dir: Path, indexes: list[int]) -> str:
    """``log --json`` lines of the entries at ``indexes``, built from the stored bytes."""
    store = Store(LedgerPaths(data_dir).store, readonly=True)
    try:
        lines = []
        for i in indexes:
            raw = store.entry(i)
            assert raw is not None
            doc = entry_doc(StoredEntry(i, raw, entry.decode(raw, i)))
            lines.append(json.dumps(doc, ensure_ascii=False) + "\n")
        return "".join(lines)
    finally:
        store.close()


_times = st.lists(
    st.one_of(st.integers(T0, T0 + 60), st.integers(T0 - 3600 * 10**9, T0 + 3600 * 10**9)),
    min_size=SIZE,
    max_size=SIZE,
)
_bound = st.one_of(st.just(0), st.integers(T0 - 1, T0 + 61))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    times=_times,
    since=_bound,
    until=_bound,
    limit=st.one_of(st.none(), st.integers(1, 20)),
    lines=st.sampled_from([10, 280, 1000]),
)
def test_list_and_tail_by_time_print_what_a_brute_force_filter_finds_and_what_the_scan_printed(
    times: list[int], since: int, until: int, limit: int | None, lines: int
) -> None:
    if since and until and since >= until:
        since, until = until, since + 1
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        store = open_store(LedgerPaths(data_dir).store)
        write(store, timed_bodies(times), max_batch=64)
        store.close()
        where = ["--data-dir", str(data_dir), "--since", str(since), "--until", str(until)]
        limited = [] if limit is None else ["--limit", str(limit)]
        commands = {
            "list json": ["list", *where, *limited, "--json"],
            "list table": ["list", *where, *limited],
            "list from to": ["list", *where, "--from", "7", "--to", "290", "--json"],
            "tail": ["tail", *where, "-n", str(lines), "--json"],
            "tail with a header filter": ["tail", *where, "-n", str(lines), "--header", "x-user=b", "--json"],
        }
        with index_answers() as answers:
            by_index = {name: run(*argv) for name, argv in commands.items()}
        if since or until:
            assert any(a is not None for a in answers), "the whole-ledger listings were answered by the index"

        matching = [i for i, t in enumerate(times) if in_range(t, since, until)]
        assert by_index["list json"] == expected_json(data_dir, matching[:limit])
        assert by_index["list from to"] == expected_json(data_dir, [i for i in matching if 7 <= i < 290])
        last = [i for i in matching if i >= max(0, SIZE - lines)]
        assert by_index["tail"] == expected_json(data_dir, last)
        # With a header filter -n counts matching entries, looked for from the ledger's start.
        odd = [i for i in matching if i % 2]
        assert by_index["tail with a header filter"] == expected_json(data_dir, odd[-lines:])

        forget_time_index(LedgerPaths(data_dir).store)  # as a ledger written before the index: read by scanning
        with index_answers() as answers:
            by_scan = {name: run(*argv) for name, argv in commands.items()}
        assert all(a is None for a in answers)
        assert by_index == by_scan
