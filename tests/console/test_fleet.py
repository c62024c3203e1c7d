"""A console over a fleet (two data directories, each a real ledger signed by its own key), over HTTP: one search
list merged by time across the shards, paged without losing or repeating a row, and entries, proofs, receipts
and the API per shard, each checking out only against its own shard's key."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz_ledger.config import ConsoleConfig
from authz_ledger.console.facts import Facts, facts_of, matches
from authz_ledger.console.fleet import open_fleet
from authz_ledger.console.query import parse
from authz_ledger.console.serving import RunningConsole, start_console
from authz_ledger.errors import ConfigError, NoteError
from authz_ledger.ledger.store import Store
from authz_ledger.tlog import note, proof, receipt, tree
from authz_ledger.tlog.checkpoint import open_checkpoint
from tests.support.console import open_console_ledger
from tests.support.waits import wait_until

A, B = "replica-a.example/log", "replica-b.example/log"


@dataclass
class Fleet:
    dirs: dict[str, Path]
    signers: dict[str, note.Signer]
    facts: dict[str, list[Facts]]

    @property
    def verifiers(self) -> list[note.Verifier]:
        return [s.verifier() for s in self.signers.values()]


def write_shard(data_dir: Path, origin: str, size: int, shift_ns: int = 0) -> tuple[note.Signer, list[Facts]]:
    """A closed data directory: ``size`` entries under a signed checkpoint (the console opens it read-only)."""
    signer = note.generate_signer(origin)
    led = open_console_ledger(data_dir / "ledger", signer)
    led.shift_ns = shift_ns
    led.append(size)
    led.checkpoint()
    facts = list(led.facts())
    led.store.close()
    return signer, facts


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Shard A: 400 decisions over 20 s; shard B: 200 over its last 10 s. Newest first, their rows interleave,
    then B runs out while A still has older rows."""
    tmp = tmp_path_factory.mktemp("fleet")
    a_signer, a_facts = write_shard(tmp / "a", A, 400)
    b_signer, b_facts = write_shard(tmp / "b", B, 200, shift_ns=10_000_000_000)
    return Fleet({A: tmp / "a", B: tmp / "b"}, {A: a_signer, B: b_signer}, {A: a_facts, B: b_facts})


@pytest.fixture(scope="module")
def console(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    index_dir = tmp_path_factory.mktemp("index")
    cfg = ConsoleConfig(enabled=True, addr="127.0.0.1:0", index_dir=str(index_dir))
    shards = open_fleet(list(fleet.dirs.values()), fleet.verifiers, cfg)
    running = start_console(shards.shards[0].ctx, cfg, shards)
    for s in shards.shards:
        size = len(fleet.facts[s.origin])
        wait_until(lambda s=s, size=size: s.ctx.index.covered() == size, timeout=30, message=f"{s.origin} indexed")
    assert len({p.name for p in index_dir.iterdir()}) == 2  # one index per ledger directory
    yield running
    running.stop()


def get(c: RunningConsole, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{c.port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


ROW = re.compile(
    r'<tr data-testid="row" data-index="(\d+)".*?data-testid="row-shard">([^<]*)</td>.*?<a href="([^"]*)"', re.S
)
OLDER = re.compile(r'data-testid="older" href="([^"]*)"')


def page_rows(body: bytes) -> tuple[list[tuple[str, int, str]], str | None]:
    text = body.decode()
    rows = [(html.unescape(shard), int(index), html.unescape(href)) for index, shard, href in ROW.findall(text)]
    older = OLDER.search(text)
    return rows, html.unescape(older[1]) if older else None


def test_the_search_page_merges_both_shards_newest_first_with_a_shard_column(
    fleet: Fleet, console: RunningConsole
) -> None:
    status, body = get(console, "/")
    assert status == 200
    rows, older = page_rows(body)
    assert len(rows) == 50 and {shard for shard, _, _ in rows} == {A, B}
    assert "600 decisions in 2 shards" in body.decode()
    for shard, index, href in rows:
        assert href == f"/entry/{index}?shard={urllib.parse.quote(shard)}"
    # The newer of the two shards' last decisions comes first (on a tie of times, the later shard name).
    newest = max((facts[-1].time_ns, s, facts[-1].seq) for s, facts in fleet.facts.items())
    assert (rows[0][0], rows[0][1]) == (newest[1], newest[2])
    assert older is not None and re.fullmatch(r"/\?q=&before=\d+,\d+", older)
    assert 'data-testid="live"' not in body.decode()  # the live tail follows one ledger's sequence


QUERIES = {
    "every decision": "",
    "the denials": "outcome:deny",
    "one user's GETs": "user:alice method:GET",
}


@pytest.mark.parametrize("text", QUERIES.values(), ids=QUERIES.keys())
def test_paging_shows_every_matching_row_of_every_shard_once_in_merged_order(
    fleet: Fleet, console: RunningConsole, text: str
) -> None:
    url: str | None = "/?q=" + urllib.parse.quote(text)
    seen: list[tuple[str, int]] = []
    times = {s: {f.seq: f.time_ns for f in facts} for s, facts in fleet.facts.items()}
    while url is not None:
        status, body = get(console, url)
        assert status == 200
        rows, url = page_rows(body)
        seen += [(shard, index) for shard, index, _ in rows]
    q = parse(text)
    want = {(s, f.seq) for s, facts in fleet.facts.items() for f in facts if matches(q, f)}
    assert len(seen) == len(set(seen)) and set(seen) == want
    for shard in (A, B):  # each shard's rows keep its ledger's order, newest first
        seqs = [i for s, i in seen if s == shard]
        assert seqs == sorted(seqs, reverse=True)
    # Where the list turns from one shard to the other, the row shown first is the newer (time, shard, index).
    for (s1, i1), (s2, i2) in itertools.pairwise(seen):
        if s1 != s2:
            assert (times[s1][i1], s1, i1) > (times[s2][i2], s2, i2)


def test_an_entry_and_its_proof_and_receipt_are_the_shards_and_verify_with_its_key(
    fleet: Fleet, console: RunningConsole
) -> None:
    b = fleet.facts[B][42]
    status, body = get(console, f"/entry/42?shard={urllib.parse.quote(B)}")
    assert status == 200
    page = body.decode()
    assert f'data-decision-id="{b.decision_id}"' in page and f'data-shard="{B}"' in page
    assert f'href="/api/receipt/42?shard={urllib.parse.quote(B)}"' in page
    links = re.findall(r'href="(/entry/[^"]*|/api/[^"]*)"', page)
    assert links and all(link.endswith(f"?shard={urllib.parse.quote(B)}") for link in links)  # they stay in B
    _, body = get(console, f"/api/entry/42?shard={B}")
    entry = base64.b64decode(json.loads(body)["entry_b64"])
    assert facts_of(42, entry).decision_id == b.decision_id != fleet.facts[A][42].decision_id
    _, body = get(console, f"/api/proof/42?shard={B}")
    doc = json.loads(body)
    cp, _ = open_checkpoint(doc["checkpoint"].encode(), [fleet.signers[B].verifier()])
    assert (cp.origin, cp.size) == (B, 200)
    proof.verify_inclusion(42, cp.size, tree.leaf_hash(entry), [base64.b64decode(h) for h in doc["proof"]], cp.root)
    with pytest.raises(NoteError):  # the other shard's key does not vouch for this shard's checkpoint
        open_checkpoint(doc["checkpoint"].encode(), [fleet.signers[A].verifier()])
    _, text = get(console, f"/api/receipt/42?shard={B}")
    assert receipt.verify_receipt(text, entry, [fleet.signers[B].verifier()], B).size == 200


REQUESTS = {
    "an entry without its shard": ("/entry/3", 400, "add ?shard= one of replica-a.example/log, replica-b.example/log"),
    "the API without a shard": ("/api/entry/3", 400, "add ?shard="),
    "an unknown shard": ("/entry/3?shard=elsewhere.example/log", 404, "no shard 'elsewhere.example/log'"),
    "an entry beyond its shard": (f"/api/entry/300?shard={B}", 404, "the ledger holds 200 entries"),
    "a cursor for another number of shards": ("/?before=12", 400, "one whole number (or -) per shard, 2 in all"),
}


@pytest.mark.parametrize(("path", "status", "message"), REQUESTS.values(), ids=REQUESTS.keys())
def test_requests_that_do_not_say_which_shard_get_a_clear_error(
    console: RunningConsole, path: str, status: int, message: str
) -> None:
    got, body = get(console, path)
    assert got == status
    assert message in html.unescape(body.decode())


def test_the_stats_page_shows_the_first_shard_and_offers_the_others(console: RunningConsole) -> None:
    status, body = get(console, "/stats")
    assert status == 200 and 'data-testid="shards"' in body.decode()
    assert f'href="/stats?range=24h&shard={urllib.parse.quote(B)}"' in body.decode()
    status, body = get(console, f"/stats?shard={B}")
    assert status == 200


def test_every_shard_needs_a_key_named_like_it_and_a_signed_checkpoint(tmp_path: Path) -> None:
    cfg = ConsoleConfig(enabled=True, index_dir=str(tmp_path / "index"))
    a, _ = write_shard(tmp_path / "a", A, 5)
    write_shard(tmp_path / "b", B, 5)
    with pytest.raises(ConfigError, match=f"is shard '{B}': give a --vkey named like it"):
        open_fleet([tmp_path / "a", tmp_path / "b"], [a.verifier()], cfg)
    Store(tmp_path / "new" / "ledger", map_size=1 << 20).close()
    with pytest.raises(ConfigError, match="no signed checkpoint yet"):
        open_fleet([tmp_path / "a", tmp_path / "new"], [a.verifier()], cfg)
    shutil.copytree(tmp_path / "a", tmp_path / "copy-of-a")
    with pytest.raises(ConfigError, match=f"is shard '{A}' again"):
        open_fleet([tmp_path / "a", tmp_path / "copy-of-a"], [a.verifier()], cfg)
