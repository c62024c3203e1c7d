"""Publishing checkpoints to C2SP witnesses (https://c2sp.org/tlog-witness), and the rollback check they enable.

Every checkpoint the writer signs is offered to each configured witness with ``POST <prefix>/add-checkpoint``;
the cosignatures that come back are verified and stored with the checkpoint (``Store.put_cosigned``), which is
what the read side serves as the cosigned note.

Invariants:

* The writer is never slowed down: ``submit`` (the writer's ``on_checkpoint`` hook) only records the latest
  checkpoint per witness and wakes that witness's thread. Only the latest checkpoint matters: a witness that
  cosigns size N has vouched for every smaller size (tlog-cosignature v1 semantics), so intermediate ones are
  skipped. One daemon thread per witness, so a slow or dead witness delays nobody else.
* Request body (tlog-witness "add-checkpoint"): ``old <size>\\n``, the RFC 6962 consistency proof from that size,
  one base64 hash per line (empty when old is 0 or equal to the new size), an empty line, the signed checkpoint.
  ``old`` is the size this witness last cosigned: learned from the witness itself at start (see
  ``check_witnesses``), kept in memory after each success, and seeded from the stored cosigned checkpoint. When it
  is unknown we send ``old 0``, as the spec allows, and learn the size from the 409.
* 409 (Content-Type ``text/x.tlog.size``, body ``<size>\\n``): retry once from the witness's size, if it is not
  larger than ours. A witness that cosigned a larger tree, or a different tree at our size, holds evidence of a
  rollback or a fork: logged as an error, never "fixed". 404 / 403 / 400 / 422 and transport errors are logged
  failures (see ``protocol.STATUS_MEANING``); every attempt ends counted as ``published`` or ``failed``.
* Fail closed on the answer: a 200 body must be note signature lines only; the cosignature by the configured key
  must verify (tlog-cosignature v1, key type 0x04) or nothing is stored; lines by other keys are ignored (the spec
  says MUST). The stored note is re-opened with the log's keys and every witness key before it is written, and
  cosignatures of several witnesses for one size are merged into one note.
* Every HTTP exchange is bounded by ``timeout`` (urllib3, no retries, no redirects, at most 64 KiB read);
  ``close`` gives the final checkpoint one bounded attempt per witness and joins the threads within its timeout;
  after ``close`` returns no thread touches the store again.

Rollback defence: the publisher keeps the ``witnessed`` file (source (b)) and asks the witnesses at start (source
(c), :meth:`WitnessPublisher.check_witnesses`); ``ledger/rollback.py`` describes the three sources and checks (b).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError

from authz_ledger.errors import AuthzLedgerError, ConfigError, NoteError, RollbackError, WitnessError
from authz_ledger.ledger.files import write_file_atomically
from authz_ledger.ledger.rollback import check_witnessed_file
from authz_ledger.ledger.store import Store
from authz_ledger.tlog import checkpoint, note, tree
from authz_ledger.tlog.cosignature import add_cosignatures
from authz_ledger.tlog.proof import consistency_proof
from authz_ledger.witness.endpoint import WitnessEndpoint
from authz_ledger.witness.protocol import MAX_RESPONSE_BYTES, STATUS_MEANING, Answer, add_checkpoint_body, parse_size

log = logging.getLogger(__name__)


@dataclass
class WitnessStats:
    """Per-witness counters (metrics and tests read them; only that witness's thread writes them)."""

    published: int = 0
    """Checkpoints this witness cosigned whose cosignature verified and was stored."""
    failed: int = 0
    """Attempts that ended without a stored cosignature (unreachable, refused, or an answer that did not verify)."""
    conflicts: int = 0
    """409 answers (each followed by at most one retry from the witness's size)."""
    cosigned_size: int | None = None
    """The size this witness last cosigned as far as we know; None when unknown (then ``old 0`` is sent)."""
    last_error: str | None = None
    last_cosigned_unix: float = 0.0


class _EvidenceError(WitnessError):
    """The witness's answer shows another history (fork) or a larger tree (rollback): logged at ERROR."""


@dataclass
class _Worker:
    endpoint: WitnessEndpoint
    stats: WitnessStats = field(default_factory=WitnessStats)
    latest: tuple[int, bytes] | None = None
    stopping: bool = False
    retry_at: float = 0.0
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def due(self) -> bool:
        return self.latest is not None and self.latest[0] != self.stats.cosigned_size


class WitnessPublisher:
    """Submits checkpoints to witnesses and stores their cosignatures. Thread-safe ``submit``."""

    def __init__(
        self,
        store: Store,
        signers: Sequence[note.Signer],
        origin: str,
        endpoints: Sequence[WitnessEndpoint],
        *,
        timeout: float = 5.0,
        retry_interval: float = 1.0,
        witnessed_file: Path | None = None,
    ) -> None:
        if not timeout > 0 or not retry_interval > 0:
            raise ConfigError("witness timeout and interval must be positive")
        names = [(e.name, e.verifier.key_id) for e in endpoints]
        if len(set(names)) != len(names):
            raise ConfigError("the same witness key is configured twice")
        self.store = store
        self.origin = origin
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.witnessed_file = witnessed_file
        self._signers = list(signers)
        self._log_verifiers: list[note.Verifier] = [s.verifier() for s in self._signers]
        self._all_verifiers: list[note.Verifier] = [*self._log_verifiers, *(e.verifier for e in endpoints)]
        self._workers = [_Worker(e) for e in endpoints]
        self._http = urllib3.PoolManager(num_pools=max(len(endpoints), 1), maxsize=1, retries=False)
        self._store_lock = threading.Lock()
        self._detached = False
        self._started = False
        self._seed_from_store()

    # --- public API ---

    @property
    def stats(self) -> dict[str, WitnessStats]:
        """Counters by witness name."""
        return {w.endpoint.name: w.stats for w in self._workers}

    @property
    def published(self) -> int:
        return sum(w.stats.published for w in self._workers)

    @property
    def failed(self) -> int:
        return sum(w.stats.failed for w in self._workers)

    def check_witnesses(self) -> None:
        """Rollback defence at start, sources (b) and (c); raise RollbackError naming what saw a larger tree.

        Run before the writer starts. Submits the current checkpoint (or, for a ledger without one, a freshly
        signed size-0 checkpoint that is never stored) to every witness in parallel with ``old`` = its size and
        an empty proof. 200: the witness was already there, its cosignature is stored. 409 with a smaller size:
        it is behind and will catch up. 409 with a larger size, or with our size (then it holds another root):
        refuse. Anything else: logged, skipped.
        """
        check_witnessed_file(
            self.witnessed_file,
            self.store,
            self.origin,
            self._log_verifiers,
            [w.endpoint.verifier for w in self._workers],
        )
        latest = self.store.checkpoint()
        if latest is None:
            empty = checkpoint.Checkpoint(self.origin, 0, tree.EMPTY_ROOT)
            size, signed = 0, checkpoint.sign_checkpoint(empty, self._signers)
        else:
            size, signed = latest
        if not self._workers:
            return
        deadline = time.monotonic() + self.timeout
        with ThreadPoolExecutor(len(self._workers), thread_name_prefix="witness-check") as pool:
            refusals = list(pool.map(lambda w: self._probe(w, size, signed, deadline), self._workers))
        reasons = [r for r in refusals if r is not None]
        if reasons:
            raise RollbackError("; ".join(reasons) + "; refusing to start")

    def start(self) -> None:
        """Start one thread per witness and offer it the latest stored checkpoint (catch-up after a restart)."""
        if self._started:
            return
        self._started = True
        for w in self._workers:
            w.thread = threading.Thread(target=self._run, args=(w,), name=f"witness-{w.endpoint.name}", daemon=True)
            w.thread.start()
        latest = self.store.checkpoint()
        if latest is not None:
            self.submit(*latest)

    def submit(self, size: int, signed: bytes) -> None:
        """Offer a new checkpoint (the writer's ``on_checkpoint`` hook): never blocks on I/O, keeps the latest."""
        for w in self._workers:
            with w.cond:
                if w.latest is None or size > w.latest[0]:
                    w.latest = (size, signed)
                    w.retry_at = 0.0
                    w.cond.notify()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every witness has cosigned the latest offered checkpoint (tests, shutdown diagnostics)."""
        deadline = time.monotonic() + timeout
        for w in self._workers:
            with w.cond:
                while w.due():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    w.cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Give the latest checkpoint (the final one at shutdown) one bounded attempt, then stop.

        Call after the writer closed (its final checkpoint is then already submitted) and before the store
        closes. Returns within ``timeout`` (default: the HTTP timeout plus one second); a thread still inside an
        HTTP call by then is abandoned (it is a daemon) and can no longer write to the store.
        """
        bound = self.timeout + 1.0 if timeout is None else timeout
        deadline = time.monotonic() + bound
        for w in self._workers:
            with w.cond:
                w.stopping = True
                w.cond.notify_all()
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(max(deadline - time.monotonic(), 0.0))
                if w.thread.is_alive():
                    log.warning("witness %s: still busy at shutdown; its last checkpoint is abandoned", w.endpoint.name)
        with self._store_lock:
            self._detached = True
        self._http.clear()

    # --- worker thread ---

    def _run(self, w: _Worker) -> None:
        while True:
            with w.cond:
                while not w.stopping and not (w.due() and time.monotonic() >= w.retry_at):
                    timeout = None if not w.due() else max(w.retry_at - time.monotonic(), 0.0)
                    w.cond.wait(timeout)
                if w.stopping and not w.due():
                    return
                assert w.latest is not None
                size, signed = w.latest
                final = w.stopping
            deadline = time.monotonic() + self.timeout
            try:
                ok = self._publish(w, size, signed, deadline)
            except Exception:  # a bug must not silently end this witness's thread
                log.exception("witness %s: unexpected failure publishing size %d", w.endpoint.name, size)
                w.stats.failed += 1
                ok = False
            with w.cond:
                if not ok:
                    w.retry_at = time.monotonic() + self.retry_interval
                w.cond.notify_all()  # wake wait_idle
            if final:
                return

    def _publish(self, w: _Worker, size: int, signed: bytes, deadline: float) -> bool:
        """One round for one witness: submit, handle one 409, verify and store. True if a cosignature is stored."""
        name = w.endpoint.name
        try:
            text = self._checkpoint_text(signed)
            old = w.stats.cosigned_size or 0
            if old > size:
                raise _EvidenceError(
                    f"witness {name} has cosigned size {old}, larger than checkpoint {size}: rollback or fork"
                )
            for _attempt in range(2):
                answer = self._post(w, self._request_body(old, size, signed), deadline)
                if answer.status == 200:
                    self._accept(w, size, signed, text, answer.body)
                    return True
                if answer.status != 409:
                    refusal = self._refusal(w, answer.status, old, size)
                    raise _EvidenceError(refusal) if answer.status == 422 else WitnessError(refusal)
                w.stats.conflicts += 1
                theirs = parse_size(answer)
                if theirs > size:
                    raise _EvidenceError(
                        f"witness {name} has cosigned size {theirs}, a larger tree than checkpoint {size}: "
                        "evidence of a rollback or a fork"
                    )
                if theirs == old:
                    # With old == size, the witness holds another root at our size; otherwise it contradicts
                    # itself (409 names the size we sent). Either way a retry cannot help.
                    if old == size:
                        raise _EvidenceError(f"witness {name} holds another tree head at size {size}: a fork")
                    raise WitnessError(f"witness {name} answered 409 naming the old size we sent ({old})")
                log.info("witness %s: 409, it last cosigned size %d (we sent old %d); retrying", name, theirs, old)
                w.stats.cosigned_size = theirs
                old = theirs
            raise WitnessError(f"witness {name} answered 409 twice for checkpoint {size}")
        except AuthzLedgerError as e:
            self._failed(w, str(e), evidence=isinstance(e, _EvidenceError))
            return False

    def _probe(self, w: _Worker, size: int, signed: bytes, deadline: float) -> str | None:
        """Source (c): submit (size, signed) with old = size. A refusal reason, or None."""
        name = w.endpoint.name
        try:
            answer = self._post(w, self._request_body(size, size, signed), deadline)
            if answer.status == 200:
                if size > 0:
                    self._accept(w, size, signed, self._checkpoint_text(signed), answer.body)
                else:
                    w.stats.cosigned_size = 0
                return None
            if answer.status != 409:
                raise WitnessError(self._refusal(w, answer.status, size, size))
            w.stats.conflicts += 1
            theirs = parse_size(answer)
        except AuthzLedgerError as e:
            self._failed(w, f"start-up check skipped: {e}")
            return None
        if theirs > size:
            return (
                f"witness {name} ({w.endpoint.url}) has cosigned a tree of size {theirs} for {self.origin}, but "
                f"this ledger's latest checkpoint is size {size}: an older copy of the ledger was restored or "
                "entries were lost"
            )
        if theirs == size:
            return (
                f"witness {name} ({w.endpoint.url}) has cosigned a different tree head at size {size} for "
                f"{self.origin}: the ledger's history was replaced"
            )
        log.info("witness %s last cosigned size %d; it will be brought up to %d", name, theirs, size)
        w.stats.cosigned_size = theirs
        return None

    # --- steps ---

    def _checkpoint_text(self, signed: bytes) -> bytes:
        _, opened = checkpoint.open_checkpoint(signed, self._log_verifiers, origin=self.origin)
        return opened.text

    def _request_body(self, old: int, size: int, signed: bytes) -> bytes:
        """tlog-witness "add-checkpoint" body; the proof is read from the store under the store lock."""
        with self._store_lock:
            if self._detached:
                raise WitnessError("the publisher is closed")
            proof = consistency_proof(old, size, self.store.read_hashes, stored_size=self.store.head().size)
        return add_checkpoint_body(old, size, proof, signed)

    def _post(self, w: _Worker, body: bytes, deadline: float) -> Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WitnessError(f"witness {w.endpoint.name}: no time left for the request")
        try:
            resp = self._http.request(
                "POST",
                w.endpoint.url,
                body=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=urllib3.Timeout(total=min(self.timeout, remaining)),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            try:
                data = resp.read(MAX_RESPONSE_BYTES + 1)
            finally:
                resp.release_conn()
        except (HTTPError, OSError) as e:
            raise WitnessError(f"witness {w.endpoint.name} ({w.endpoint.url}) unreachable: {e}") from e
        if len(data) > MAX_RESPONSE_BYTES:
            raise WitnessError(f"witness {w.endpoint.name}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        return Answer(resp.status, data, resp.headers.get("Content-Type", ""))

    def _refusal(self, w: _Worker, status: int, old: int, size: int) -> str:
        meaning = STATUS_MEANING.get(status, "unexpected answer")
        return f"witness {w.endpoint.name} answered HTTP {status} for old {old} -> size {size}: {meaning}"

    def _accept(self, w: _Worker, size: int, signed: bytes, text: bytes, body: bytes) -> None:
        """Verify the 200 body's cosignature by this witness, then merge it into the stored cosigned note."""
        if not body.endswith(b"\n") or not body.startswith("— ".encode()):
            raise WitnessError(f"witness {w.endpoint.name}: 200 answer is not note signature lines")
        try:
            # tlog-witness: concatenate the answer to the checkpoint and open it with the witness key; lines by
            # other keys are ignored, an invalid line by this key fails the whole answer.
            opened = note.open_note(text + b"\n" + body, [w.endpoint.verifier])
        except NoteError as e:
            raise WitnessError(f"witness {w.endpoint.name}: no valid cosignature in its answer: {e}") from e
        mine = [s for s in opened.verified if w.endpoint.verifier.matches(s)]
        with self._store_lock:
            if self._detached:
                raise WitnessError("the publisher is closed")
            existing = self.store.cosigned_checkpoint(size)
            try:
                merged = add_cosignatures(existing[1] if existing else signed, self._all_verifiers, mine)
            except NoteError as e:
                raise WitnessError(f"cannot merge the cosignature of {w.endpoint.name}: {e}") from e
            self.store.put_cosigned(size, merged)
            self._write_witnessed(size, merged)
        recovered = w.stats.last_error is not None
        w.stats.published += 1
        w.stats.cosigned_size = size
        w.stats.last_error = None
        w.stats.last_cosigned_unix = time.time()
        log.log(logging.INFO if recovered else logging.DEBUG, "witness %s cosigned size %d", w.endpoint.name, size)

    def _write_witnessed(self, size: int, merged: bytes) -> None:
        """Replace the ``witnessed`` file when this is the largest cosigned size (store lock held)."""
        if self.witnessed_file is None:
            return
        largest = self.store.cosigned_checkpoint()
        if largest is not None and largest[0] > size:
            return
        try:
            write_file_atomically(self.witnessed_file, merged)
        except OSError as e:
            log.error("cannot write %s: %s", self.witnessed_file, e)

    def _failed(self, w: _Worker, message: str, *, evidence: bool = False) -> None:
        w.stats.failed += 1
        repeated = message == w.stats.last_error
        w.stats.last_error = message
        # Loud once per distinct failure, quiet while a witness stays down (retries every interval). A witness
        # holding evidence of a fork or rollback is an incident, not an outage: ERROR.
        level = logging.ERROR if evidence else logging.WARNING
        log.log(logging.DEBUG if repeated else level, "%s", message)

    def _seed_from_store(self) -> None:
        """``old`` for a witness whose cosignature is on the latest cosigned checkpoint (the witness may be ahead
        if we crashed before storing; the 409 path fixes that)."""
        latest = self.store.cosigned_checkpoint()
        if latest is None:
            return
        size, signed = latest
        for w in self._workers:
            try:
                opened = note.open_note(signed, [w.endpoint.verifier])
            except NoteError:
                continue
            if any(w.endpoint.verifier.matches(s) for s in opened.verified):
                w.stats.cosigned_size = size
