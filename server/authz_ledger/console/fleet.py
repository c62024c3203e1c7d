"""A console over a fleet: several data directories (each a replica's ledger, a *shard*), one search page.

Each shard keeps what a one-ledger console has: its own ConsoleContext, console index (one index directory per
ledger directory) and indexer thread. A shard is named by its origin, the first line of its latest signed
checkpoint (C2SP tlog-checkpoint): pages, proofs, receipts and the API take it as ``?shard=ORIGIN``, and the
browser verifies an entry only with the key named like that origin, so one shard's key never vouches for another.

The search page runs the query on every shard's index (``search.search``, newest first) and merges the pages by
decision time, newest first (ties: shard, then index, both descending). Within a shard the order stays the
ledger's (seq), which is time order but for clock steps. Paging keeps one position per shard in the URL
(``before=N1,N2,...`` in the order the shards were given, ``-`` for a shard with nothing older), so a page
starts exactly where the previous one stopped in every shard; with one shard it is today's ``before=N``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authz_ledger.config import ConsoleConfig
from authz_ledger.console import search
from authz_ledger.console.context import ConsoleContext, default_index_dir, open_context
from authz_ledger.console.facts import Facts
from authz_ledger.console.query import Query
from authz_ledger.errors import ConfigError, InvalidRequestError, NotFoundError
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.tlog import note

DONE = "-"
"""A shard's position in the cursor when nothing older matches in it."""


@dataclass(frozen=True)
class Shard:
    origin: str
    ctx: ConsoleContext


@dataclass(frozen=True)
class FleetPage:
    rows: list[tuple[str, Facts]]
    """(shard origin, row), newest first."""
    next_before: str | None
    """The cursor of the next (older) page; None when no shard has anything older."""
    partial: bool
    """A shard ran out of its read budget (search.BUDGET) before the page filled: older matches may follow."""


class Fleet:
    """The shards of one console, in the order they were given."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)
        self._by_origin = {s.origin: s for s in self.shards}

    @property
    def origins(self) -> list[str]:
        return [s.origin for s in self.shards]

    def ctx_for(self, origin: str | None, *, first_by_default: bool = False) -> ConsoleContext:
        """The shard a request names (``?shard=``); without one, the first shard only where asked for (a page of
        aggregates), else an error: an entry number means nothing until it is known whose ledger it is in."""
        if not origin:
            if first_by_default:
                return self.shards[0].ctx
            raise InvalidRequestError(f"this console shows several shards: add ?shard= one of {self._names()}")
        found = self._by_origin.get(origin)
        if found is None:
            raise NotFoundError(f"no shard {origin!r} in this console (shards: {self._names()})")
        return found.ctx

    def _names(self) -> str:
        return ", ".join(self.origins)

    def parse_cursor(self, text: str | None) -> list[int | None]:
        """Positions per shard (None: nothing older); no cursor: each shard's head now (pinned, so new entries
        arriving while an auditor pages do not shift the pages)."""
        if not text:
            return [s.ctx.store.head().size for s in self.shards]
        parts = text.split(",")
        if len(parts) != len(self.shards) or not all(p == DONE or p.isdigit() for p in parts):
            raise InvalidRequestError(
                f"before must hold one whole number (or {DONE}) per shard, {len(self.shards)} in all, got {text!r}"
            )
        return [None if p == DONE else int(p) for p in parts]

    def search(self, q: Query, cursor: Sequence[int | None], limit: int = search.PAGE) -> FleetPage:
        """The newest ``limit`` rows matching ``q`` below each shard's position, merged newest first."""
        pages = [
            None if before is None else search.search(s.ctx.index, q, before, limit)
            for s, before in zip(self.shards, cursor, strict=True)
        ]
        taken = [0] * len(self.shards)
        rows: list[tuple[str, Facts]] = []
        while len(rows) < limit:
            heads: list[tuple[tuple[int, str, int], int]] = []
            for i, page in enumerate(pages):
                if page is None:
                    continue
                if taken[i] < len(page.rows):
                    f = page.rows[taken[i]]
                    heads.append(((f.time_ns, self.shards[i].origin, f.seq), i))
                elif page.next_before is not None:
                    heads = []  # this shard must read further before the next row is known: the page ends here
                    break
            if not heads:
                break
            _, best = max(heads)
            rows.append((self.shards[best].origin, pages[best].rows[taken[best]]))  # type: ignore[union-attr]
            taken[best] += 1
        positions = [_position(page, n, before) for page, n, before in zip(pages, taken, cursor, strict=True)]
        more = any(p is not None for p in positions)
        cursor_text = ",".join(DONE if p is None else str(p) for p in positions) if more else None
        return FleetPage(rows, cursor_text, more and len(rows) < limit)

    def start_indexers(self) -> None:
        for s in self.shards:
            s.ctx.start_indexer()

    def stop(self) -> None:
        for s in self.shards:
            s.ctx.stop()


def _position(page: search.Page | None, taken: int, before: int | None) -> int | None:
    """Where the shard's next page starts: below the last row shown from it; past every row it returned, where
    its search stopped; None when nothing older matches."""
    if page is None:
        return None
    if taken == len(page.rows):
        return page.next_before
    return page.rows[taken - 1].seq if taken else before


def open_fleet(data_dirs: Sequence[Path], verifiers: Sequence[note.Verifier], cfg: ConsoleConfig) -> Fleet:
    """Open every ledger read-only with its own console index; each must have published a signed checkpoint
    (its origin names it) and a ``--vkey`` must be named like that origin (the key its pages verify with)."""
    shards: list[Shard] = []
    try:
        for data_dir in data_dirs:
            shards.append(_open_shard(data_dir, verifiers, cfg))
            seen = [s.origin for s in shards]
            if seen.count(shards[-1].origin) > 1:
                raise ConfigError(f"{data_dir} is shard {shards[-1].origin!r} again: give each shard once")
    except BaseException:
        for s in shards:
            s.ctx.index.close()
            s.ctx.store.close()
        raise
    return Fleet(shards)


def _open_shard(data_dir: Path, verifiers: Sequence[note.Verifier], cfg: ConsoleConfig) -> Shard:
    ledger_dir = LedgerPaths(data_dir).store
    if cfg.index_dir:  # one index per ledger directory: under --index-dir, named as in the default place
        cfg = dataclasses.replace(cfg, index_dir=str(Path(cfg.index_dir) / default_index_dir(ledger_dir).name))
    ctx = open_context(ledger_dir, verifiers, cfg)
    try:
        origin = ctx.reader.checkpoint().origin
    except NotFoundError:
        ctx.index.close()
        ctx.store.close()
        raise ConfigError(
            f"--data-dir {data_dir}: no signed checkpoint yet, so this shard has no name (origin) its pages could "
            "be verified under; start the console again after its first checkpoint"
        ) from None
    if not any(v.name == origin for v in verifiers):
        ctx.index.close()
        ctx.store.close()
        raise ConfigError(f"--data-dir {data_dir} is shard {origin!r}: give a --vkey named like it (its log key)")
    return Shard(origin, ctx)
