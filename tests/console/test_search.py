"""The console's index and search against a real ledger: every answer equals a brute-force filter of all entries."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz_ledger.console import query, search
from authz_ledger.console.facts import Facts
from authz_ledger.console.index import ConsoleIndex, path_pattern
from authz_ledger.tlog import note
from tests.conftest import ORIGIN
from tests.support.console import PATHS, T0, ConsoleLedger, open_console_ledger

N = 9_000  # three posting blocks (4,096 entries each)


def iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleLedger]:
    led = open_console_ledger(tmp_path_factory.mktemp("ledger") / "ledger", note.generate_signer(ORIGIN))
    led.append(3_000, version="v1")
    led.append(4_000, version="v2")
    led.append(2_000, version="v1")
    led.checkpoint()
    yield led
    led.store.close()


@pytest.fixture(scope="module")
def index(ledger: ConsoleLedger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleIndex]:
    idx = ConsoleIndex(tmp_path_factory.mktemp("index"), ledger.store)
    assert idx.catch_up() == N
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def everything(ledger: ConsoleLedger) -> list[Facts]:
    return sorted(ledger.facts(), key=lambda f: -f.seq)


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


MIDDLE = T0 + 4_000 * 50_000_000
CASES: list[tuple[str, str, Callable[[Facts], bool]]] = [
    ("everything, newest first", "", lambda f: True),
    ("one user's decisions", "user:alice", lambda f: f.principal == "alice"),
    ("one user's denials", "user:bob outcome:deny", lambda f: f.principal == "bob" and f.outcome == "deny"),
    ("the mTLS principal, not the user header", "user:spiffe://example/sa/batch", lambda f: "spiffe" in f.principal),
    ("a path prefix of whole segments", "path:/admin", lambda f: under(f.path, "/admin")),
    ("a deeper path prefix", "path:/admin/users/3", lambda f: under(f.path, "/admin/users/3")),
    ("a path prefix with a trailing slash", "path:/api/", lambda f: under(f.path, "/api")),
    ("a host, case-insensitively", "host:ADMIN.example.com", lambda f: f.host == "admin.example.com"),
    ("a method, case-insensitively", "method:delete", lambda f: f.method == "DELETE"),
    ("an HTTP status", "status:500", lambda f: f.status == 500),
    ("the user header through the index", "header:x-user=carol", lambda f: f.headers.get("x-user") == "carol"),
    ("a header the index does not hold, narrowed by others", "header:x-tenant=acme outcome:error method:GET",
     lambda f: f.headers.get("x-tenant") == "acme" and f.outcome == "error" and f.method == "GET"),
    ("a policy version", "version:v2 outcome:deny", lambda f: f.version == "v2" and f.outcome == "deny"),
    ("a time range (times not monotonic in seq)", f"since:{iso(MIDDLE)} until:{iso(MIDDLE + 60_000_000_000)}",
     lambda f: MIDDLE <= f.time_ns < MIDDLE + 60_000_000_000),
    ("free words, all of them", "admin roles", lambda f: {"admin", "roles"} <= f.words),
    ("free words and keys together", "items user:dave outcome:allow",
     lambda f: "items" in f.words and f.principal == "dave" and f.outcome == "allow"),
    ("a user with no decisions", "user:nobody", lambda f: False),
]  # fmt: skip


def all_pages(index: ConsoleIndex, q: query.Query, limit: int, budget: int = search.BUDGET) -> list[int]:
    seqs: list[int] = []
    before = None
    for _ in range(10_000):
        page = search.search(index, q, before, limit=limit, budget=budget)
        seqs.extend(f.seq for f in page.rows)
        if page.next_before is None:
            return seqs
        before = page.next_before
    raise AssertionError("paging did not end")


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_query_finds_exactly_what_a_scan_of_every_entry_finds(
    index: ConsoleIndex, everything: list[Facts], text: str, expected: Callable[[Facts], bool]
) -> None:
    want = [f.seq for f in everything if f.message is not None and expected(f)]
    assert all_pages(index, query.parse(text), limit=97) == want
    first = search.search(index, query.parse(text))
    assert [f.seq for f in first.rows] == want[: search.PAGE]


def test_a_query_the_index_narrows_too_little_stops_at_its_budget_and_says_where_to_go_on(
    index: ConsoleIndex, everything: list[Facts]
) -> None:
    q = query.parse("header:x-tenant=globex outcome:error")
    page = search.search(index, q, limit=50, budget=60)
    assert page.partial
    assert page.next_before is not None
    assert len(page.rows) < 50
    want = [f.seq for f in everything if f.headers.get("x-tenant") == "globex" and f.outcome == "error"]
    assert all_pages(index, q, limit=50, budget=60) == want


def test_a_pasted_decision_id_finds_that_decision(index: ConsoleIndex, everything: list[Facts]) -> None:
    target = everything[1234]
    page = search.search(index, query.parse(f"  {target.decision_id} "))
    assert [f.seq for f in page.rows] == [target.seq]


def test_the_previous_and_next_decision_of_the_same_principal(index: ConsoleIndex, everything: list[Facts]) -> None:
    alice = sorted(f.seq for f in everything if f.principal == "alice")
    for i in (0, 1, len(alice) // 2, len(alice) - 1):
        prev, nxt = search.neighbours(index, "alice", alice[i])
        assert prev == (alice[i - 1] if i else None)
        assert nxt == (alice[i + 1] if i + 1 < len(alice) else None)


def test_minute_counts_top_denials_and_version_changes_match_the_entries(
    index: ConsoleIndex, everything: list[Facts]
) -> None:
    stats = list(index.minute_stats(0, 0))
    assert sum(m.allow for m in stats) == sum(f.outcome == "allow" for f in everything)
    assert sum(m.deny for m in stats) == sum(f.outcome == "deny" for f in everything)
    assert sum(m.error for m in stats) == sum(f.outcome == "error" for f in everything)
    denied = Counter(path_pattern(f.path) for f in everything if f.outcome == "deny")
    assert "/admin/users/*/roles" in denied
    assert dict(index.top_denied("p", 0, 0, n=len(PATHS))) == dict(denied)  # by day
    hour = 3_600_000_000_000
    since = T0 // hour * hour - hour  # whole hours around every entry: counted by hour
    principals = Counter(f.principal for f in everything if f.outcome == "deny" and f.principal)
    assert len(principals) == 5
    assert dict(index.top_denied("u", since, since + 4 * hour, n=10)) == dict(principals)
    assert index.top_denied("u", since + 4 * hour, since + 5 * hour) == []
    assert [(seq, v) for seq, _, v in index.version_changes()] == [(0, "v1"), (3_000, "v2"), (7_000, "v1")]


def test_entries_the_index_has_not_reached_are_found_by_scanning(tmp_path: Path) -> None:
    led = open_console_ledger(tmp_path / "ledger", note.generate_signer(ORIGIN))
    led.append(300)
    idx = ConsoleIndex(tmp_path / "index", led.store)
    idx.catch_up()
    led.append(40)  # not indexed yet
    everything = sorted(led.facts(), key=lambda f: -f.seq)
    want = [f.seq for f in everything if f.outcome == "deny"]
    assert all_pages(idx, query.parse("outcome:deny"), limit=7) == want
    assert idx.catch_up() == 340
    assert all_pages(idx, query.parse("outcome:deny"), limit=7) == want
    idx.close()
    led.store.close()


def test_an_index_of_another_ledger_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    first = open_console_ledger(tmp_path / "one", note.generate_signer(ORIGIN))
    first.append(50)
    idx = ConsoleIndex(tmp_path / "index", first.store)
    idx.catch_up()
    idx.close()
    second = open_console_ledger(tmp_path / "two", note.generate_signer(ORIGIN))
    second.append(20)
    idx = ConsoleIndex(tmp_path / "index", second.store)
    assert idx.covered() == 0
    assert idx.catch_up() == 20
    assert sum(m.allow + m.deny + m.error + m.other for m in idx.minute_stats(0, 0)) == 20
    idx.close()
    first.store.close()
    second.store.close()


def test_a_time_range_reads_only_the_entries_of_its_minutes(index: ConsoleIndex, everything: list[Facts]) -> None:
    since, until = MIDDLE, MIDDLE + 120_000_000_000
    q = query.parse(f"since:{iso(since)} until:{iso(until)}")
    want = [f.seq for f in everything if since <= f.time_ns < until]
    # Far fewer reads than the entries above the range: the minutes' seqs bound the walk.
    page = search.search(index, q, limit=50, budget=len(want) + 200)
    assert [f.seq for f in page.rows] == want[:50]
    assert not page.partial
