"""Replays the console runs for its replay page: which candidate policies it may evaluate, the one run at a time,
its progress, and the last few reports.

Why only configured candidates: a Rego policy can call ``http.send`` and read files, so a policy a browser sent
would let anyone who can open the console make this host do that. The operator names the candidates
(``--candidate-policy``, ``console.candidate_policies``); a browser only picks one by its name.

Why one run at a time: a replay keeps evaluator processes busy for as long as it takes (minutes on a large
ledger), and the console may live inside ``serve``, whose Checks need the same cores. A request for the run
already going joins it; any other waits until it is done (the page says what is running). The engine is started
for the run and closed after it, so no Go runtime sits idle in the console between runs.

A report covers the entries ``0 .. size-1``, ``size`` being the ledger's size when its run began, and is kept
under (candidate, query, size): reloading the page, or the JSON link, shows that same report while ``serve``
goes on appending. Only the last :data:`KEEP` reports are kept (a report holds every changed decision).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_ledger.console import query
from authz_ledger.console.replay import DECISION_TIMEOUT_MS, PROCESSES, Report, open_engine, replay
from authz_ledger.errors import AuthzLedgerError, ConfigError, NotFoundError
from authz_ledger.ledger.store import Store
from authz_ledger.policy import PolicyEngine

log = logging.getLogger(__name__)

KEEP = 4
"""Completed reports kept in memory."""

WORKERS = max(1, (os.cpu_count() or 2) // 2)
"""Evaluator processes of a run: half the cores, so a console inside ``serve`` leaves the rest to Checks."""

HOW_TO_CONFIGURE = (
    "start the console with --candidate-policy PATH (a policy directory or bundle .tar.gz; repeatable), or set "
    "console.candidate_policies for serve"
)


def candidate_policies(paths: Sequence[str]) -> dict[str, Path]:
    """The configured candidates by name (their file or directory name). ConfigError at start for a path that
    is not a policy directory or bundle, or two candidates with one name (a page could not tell them apart)."""
    named: dict[str, Path] = {}
    for text in paths:
        path = Path(text).expanduser()
        if not (path.is_dir() or (path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".rego")))):
            raise ConfigError(f"console candidate policy {text}: not a policy directory, bundle .tar.gz or .rego file")
        if path.name in named:
            raise ConfigError(
                f"console candidate policies {named[path.name]} and {text} have the same name {path.name!r}: "
                "the replay page names a candidate by its file or directory name"
            )
        named[path.name] = path
    return named


@dataclass
class Run:
    """One replay: what it replays, how far it has got, and its report or its error."""

    number: int
    candidate: str
    query_text: str
    size: int
    """Entries ``0 .. size-1`` are replayed: the ledger's size when the run began."""
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"
    """``starting`` (the engine loads the policy), ``running``, then ``done``, ``failed`` or ``stopped``."""
    evaluated: int = 0
    position: int = 0
    """The index of the last entry reached."""
    report: Report | None = None
    error: AuthzLedgerError | None = None
    seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        return self.candidate, self.query_text, self.size

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "stopped")

    def elapsed(self) -> float:
        return self.seconds if self.finished else time.monotonic() - self.started

    def progress_json(self) -> dict[str, Any]:
        """What ``/api/replay.json`` answers while the run goes on (202)."""
        return {
            "state": self.state,
            "candidate": self.candidate,
            "query": self.query_text,
            "size": self.size,
            "evaluated": self.evaluated,
            "position": self.position,
            "seconds": round(self.elapsed(), 3),
        }


@dataclass(frozen=True)
class Answer:
    run: Run
    busy: bool
    """True: ``run`` is another replay, still going; the one asked for was not started."""


class ReplayRuns:
    """The console's replays: at most one running, the last :data:`KEEP` reports. Thread-safe."""

    def __init__(
        self,
        store: Store,
        candidates: Mapping[str, Path],
        *,
        workers: int = WORKERS,
        timeout_ms: int = DECISION_TIMEOUT_MS,
        keep: int = KEEP,
    ) -> None:
        self.store = store
        self.candidates = dict(candidates)
        self.workers = workers
        self.timeout_ms = timeout_ms
        self._keep = keep
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._current: Run | None = None
        self._thread: threading.Thread | None = None
        self._engine: PolicyEngine | None = None
        self._reports: OrderedDict[tuple[str, str, int], Run] = OrderedDict()
        self._runs = 0

    @property
    def names(self) -> list[str]:
        return sorted(self.candidates)

    def request(self, candidate: str, text: str, size: int | None = None) -> Answer:
        """The run for ``candidate`` over the entries matching ``text`` (the console's query language) up to
        ``size`` (None: the ledger's size now): a kept report, the run going on, or a new run. Busy when another
        run is going. NotFoundError for a candidate the operator did not configure; InvalidRequestError for a
        query that does not parse."""
        if candidate not in self.candidates:
            configured = ", ".join(self.names) if self.candidates else f"none is configured ({HOW_TO_CONFIGURE})"
            raise NotFoundError(f"no candidate policy named {candidate!r}; this console's candidates: {configured}")
        q = query.parse(text)
        canonical = q.text()
        with self._lock:
            if size is not None and (candidate, canonical, size) in self._reports:
                return Answer(self._reports[candidate, canonical, size], busy=False)
            current = self._current
            # Join the run going on; a finished one only when asked for by its size (its own page reloading: a
            # failed run is then shown, and asked for afresh it runs again).
            same = current is not None and current.key[:2] == (candidate, canonical)
            if current is not None and same and (not current.finished or current.size == size):
                return Answer(current, busy=False)
            if current is not None and not current.finished:
                return Answer(current, busy=True)
            now = self.store.head().size
            if (candidate, canonical, now) in self._reports:
                return Answer(self._reports[candidate, canonical, now], busy=False)
            self._runs += 1
            run = Run(self._runs, candidate, canonical, now)
            self._current = run
            self._thread = threading.Thread(target=self._run, args=(run, q), name="console-replay", daemon=True)
            self._thread.start()
            return Answer(run, busy=False)

    def _run(self, run: Run, q: query.Query) -> None:
        def advance(evaluated: int, position: int) -> None:
            run.evaluated, run.position = evaluated, position

        report: Report | None = None
        try:
            # Evaluator processes, never this process: the console may be serve's, and a runaway candidate's
            # evaluation is killed with its process (reported as an error) instead of ending the console.
            candidate = self.candidates[run.candidate]
            with open_engine(candidate, where=PROCESSES, workers=self.workers, timeout_ms=self.timeout_ms) as e:
                self._engine = e
                if self._stop.is_set():  # stopped while the engine was starting: close() missed it
                    e.close()
                run.state = "running"
                report = replay(
                    self.store,
                    e,
                    q,
                    threads=self.workers * 8,
                    end=run.size,
                    progress=advance,
                    is_active=lambda: not self._stop.is_set(),
                )
        except AuthzLedgerError as err:
            run.error = err
            log.warning("replay of %s over %r failed: %s", run.candidate, run.query_text, err)
        except Exception as err:  # a bug must not leave the console busy for good: the run ends, failed
            log.exception("replay of %s over %r failed", run.candidate, run.query_text)
            run.error = AuthzLedgerError(f"the replay stopped on an unexpected error: {err!r}")
        finally:
            self._engine = None
        run.seconds = time.monotonic() - run.started
        with self._lock:
            if self._stop.is_set():
                run.state = "stopped"  # its report would cover part of the range: not shown
            elif run.error is not None or report is None:
                run.state = "failed"
            else:
                run.report, run.state = report, "done"
                self._reports[run.key] = run
                while len(self._reports) > self._keep:
                    self._reports.popitem(last=False)
        log.info("replay of %s over %r: %s in %.1f s", run.candidate, run.query_text, run.state, run.seconds)

    def stop(self, timeout: float = 10.0) -> None:
        """End the run going on (its evaluator processes are killed) and wait for its thread."""
        self._stop.set()
        engine = self._engine
        if engine is not None:
            engine.close()
        if self._thread is not None:
            self._thread.join(timeout)
