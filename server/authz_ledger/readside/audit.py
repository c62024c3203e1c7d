"""The audit gRPC service ``authzledger.v1.Ledger``: the ledger's read side on its own listener.

Invariants:

* Its own ``grpc.server`` and thread pool, bound to ``audit.addr`` (loopback by default), so the read side is
  never reachable through the ext_authz listener the mesh talks to, and a busy auditor never takes a Check
  thread. At most ``threads`` RPCs run at once; more are refused with RESOURCE_EXHAUSTED, never queued behind
  long-lived Tails. Streaming calls are limited further (``audit.max_streams`` in all, below ``threads``, and
  ``audit.max_streams_per_client``), and a Tail idle for ``audit.tail_idle_timeout_s`` ends, so that no client
  can hold every thread.
* TLS when ``audit.tls_cert``/``audit.tls_key`` are set; mutual TLS (a client certificate signed by
  ``audit.client_ca`` is required) when ``audit.client_ca`` is set. A half-configured TLS setup is a ConfigError,
  never a silent fallback to plaintext.
* Every handler reads through :class:`~authz_ledger.readside.reader.LedgerReader`, which only opens short LMDB *read*
  transactions and copies the bytes out before a message is sent: a client that stops reading blocks only its
  own stream (gRPC flow control suspends the handler at a ``yield`` while it holds no transaction), never the
  writer, and pins no old snapshot.
* Errors become gRPC statuses in exactly one place, :mod:`authz_ledger.rpc.status`.
* Health (``grpc.health.v1``) and, unless switched off, reflection, so ``grpcurl`` can list, describe and call
  every method.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_ledger._proto.authzledger.v1 import audit_pb2 as _pb
from authz_ledger._proto.authzledger.v1 import audit_pb2_grpc as _pb_grpc
from authz_ledger.config import AUDIT_THREADS, AuditConfig
from authz_ledger.errors import AuthzLedgerError, ConfigError, InvalidRequestError, TooManyStreamsError
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import LedgerWriter
from authz_ledger.readside.reader import LedgerReader, poll_store
from authz_ledger.readside.values import NEXT_INDEX_METADATA, EntryFilter, StoredEntry, WaitForSize
from authz_ledger.rpc import status as grpc_status
from authz_ledger.rpc import tls
from authz_ledger.rpc.serving import MethodAwarePool, grpc_address, is_loopback

log = logging.getLogger(__name__)

LEDGER_SERVICE = _pb.DESCRIPTOR.services_by_name["Ledger"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_CLIENT_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE)


def entry_message(e: StoredEntry) -> Any:
    """An ``authzledger.v1.Entry``: the stored bytes, the same decoded, and their RFC 6962 leaf hash."""
    return _pb.Entry(index=e.index, raw=e.raw, entry=e.message, leaf_hash=e.leaf_hash)


def _filter(msg: Any) -> EntryFilter:
    return EntryFilter(
        since_unix_nano=msg.since_unix_nano,
        until_unix_nano=msg.until_unix_nano,
        outcome=int(msg.outcome),
        path_prefix=msg.path_prefix,
        principal=msg.principal,
    )


def _fail(context: grpc.ServicerContext, error: AuthzLedgerError) -> None:
    code = grpc_status.status_for(error)
    if code in _CLIENT_ERRORS:
        log.debug("audit request refused: %s", error)
    else:
        log.error("audit request failed: %s", error.diagnostics())
    grpc_status.abort(context, error)


class StreamSlots:
    """The audit API's streaming calls in flight, in all and per client address: a client that opens stream
    after stream (or leaves Tails idle) gets RESOURCE_EXHAUSTED instead of taking every thread."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._lock = threading.Lock()
        self._by_client: dict[str, int] = {}

    @contextmanager
    def held(self, peer: str) -> Iterator[None]:
        client = client_address(peer)
        with self._lock:
            if sum(self._by_client.values()) >= self.total:
                raise TooManyStreamsError(
                    f"the audit API serves at most {self.total} streaming calls at once (audit.max_streams); "
                    "retry later"
                )
            if self._by_client.get(client, 0) >= self.per_client:
                raise TooManyStreamsError(
                    f"{client} already has {self.per_client} streaming calls open (audit.max_streams_per_client)"
                )
            self._by_client[client] = self._by_client.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._by_client[client] -= 1
                if not self._by_client[client]:
                    del self._by_client[client]


def client_address(peer: str) -> str:
    """``ipv4:10.0.0.1:5555`` -> ``ipv4:10.0.0.1``; ``ipv6:[::1]:5555`` -> ``ipv6:[::1]``; others unchanged."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


class LedgerService:
    """``authzledger.v1.Ledger`` over a LedgerReader. In the proto's requests, 0 means "the default" for sizes."""

    def __init__(
        self,
        reader: LedgerReader,
        wait: WaitForSize,
        slots: StreamSlots | None = None,
        tail_idle_timeout_s: float = 300.0,
    ) -> None:
        self._reader = reader
        self._wait = wait
        self._slots = slots or StreamSlots(8, 4)
        self._tail_idle = tail_idle_timeout_s

    def GetEntry(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            key = request.WhichOneof("key")
            if key is None:
                raise InvalidRequestError("give an index or a decision_id")
            if key == "index":
                found = self._reader.get_entry(index=request.index)
            else:
                found = self._reader.get_entry(decision_id=request.decision_id)
            return entry_message(found)
        except AuthzLedgerError as e:
            _fail(context, e)
            return _pb.Entry()

    def ListEntries(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            with self._slots.held(context.peer()):
                entries = self._reader.list_entries(
                    request.start_index,
                    request.end_index or None,
                    request.limit or None,
                    _filter(request.filter),
                    is_active=context.is_active,
                )
                for e in entries:
                    yield entry_message(e)
        except AuthzLedgerError as e:
            _fail(context, e)

    def Tail(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            start: int | None = request.start_index
            if request.from_end:
                if start not in (0, -1):
                    raise InvalidRequestError("give a start_index or from_end, not both")
                start = None
            elif start == -1:
                start = None
            with self._slots.held(context.peer()):
                last_sent = [time.monotonic()]
                scanned: list[int] = []

                def active() -> bool:  # ends an idle Tail: the client follows on with a new one
                    return context.is_active() and time.monotonic() - last_sent[0] < self._tail_idle

                for e in self._reader.follow(start, _filter(request.filter), self._wait, active, position=scanned):
                    yield entry_message(e)
                    last_sent[0] = time.monotonic()
                if scanned:  # where a follow-on Tail starts, even if the filter matched nothing meanwhile
                    context.set_trailing_metadata(((NEXT_INDEX_METADATA, str(scanned[0])),))
        except AuthzLedgerError as e:
            _fail(context, e)

    def GetCheckpoint(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            cp = self._reader.checkpoint(request.tree_size or None, cosigned=request.cosigned)
            return _pb.Checkpoint(origin=cp.origin, tree_size=cp.size, root_hash=cp.root, note=cp.note)
        except AuthzLedgerError as e:
            _fail(context, e)
            return _pb.Checkpoint()

    def GetInclusionProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            p = self._reader.inclusion_proof(request.index, request.tree_size or None)
            return _pb.InclusionProof(
                index=p.index,
                tree_size=p.tree_size,
                leaf_hash=p.leaf_hash,
                root_hash=p.root,
                hashes=p.hashes,
                checkpoint=p.checkpoint or b"",
            )
        except AuthzLedgerError as e:
            _fail(context, e)
            return _pb.InclusionProof()

    def GetConsistencyProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            p = self._reader.consistency_proof(request.size1, request.size2 or None)
            return _pb.ConsistencyProof(size1=p.size1, root1=p.root1, size2=p.size2, root2=p.root2, hashes=p.hashes)
        except AuthzLedgerError as e:
            _fail(context, e)
            return _pb.ConsistencyProof()

    def GetReceipt(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            key = request.WhichOneof("key")
            if key is None:
                raise InvalidRequestError("give a decision_id or an index")
            if key == "index":
                issued = self._reader.receipt(index=request.index)
            else:
                issued = self._reader.receipt(decision_id=request.decision_id)
            return _pb.Receipt(proof=issued.proof, entry=entry_message(issued.entry))
        except AuthzLedgerError as e:
            _fail(context, e)
            return _pb.Receipt()


@dataclass
class AuditServer:
    """A started audit listener; ``stop()`` reports NOT_SERVING, then ends RPCs (Tails) after ``grace``."""

    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    slots: StreamSlots

    def stop(self, grace: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def server_credentials(cfg: AuditConfig) -> grpc.ServerCredentials | None:
    """TLS (and mutual TLS) credentials from the audit configuration, re-read when the files change; None for
    plaintext (rpc/tls.py)."""
    credentials, _ = tls.server_credentials(tls.TlsFiles("audit", cfg.tls_cert, cfg.tls_key, cfg.client_ca))
    return credentials


def start_audit_server(
    cfg: AuditConfig, store: Store, writer: LedgerWriter | None, *, threads: int = AUDIT_THREADS
) -> AuditServer:
    """Serve ``authzledger.v1.Ledger`` over ``store`` on ``cfg.addr``; raise ConfigError if it cannot listen.

    With ``writer`` (the same process writes), Tail wakes on each commit; without one it polls the store.
    """
    credentials = server_credentials(cfg)
    reader = LedgerReader(store)
    wait = writer.wait_for_size if writer is not None else poll_store(reader)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="audit"),
        options=[
            # Two servers must never silently share a port (grpcio enables SO_REUSEPORT by default).
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
            # Keepalive enforcement: a client pinging more often than every 10 s without data is sent GOAWAY
            # after 2 strikes; a connection idle (no RPC) for 5 minutes is closed.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_connection_idle_ms", 300_000),
        ],
        maximum_concurrent_rpcs=threads,
    )
    slots = StreamSlots(cfg.max_streams, cfg.max_streams_per_client)
    _pb_grpc.add_LedgerServicer_to_server(LedgerService(reader, wait, slots, cfg.tail_idle_timeout_s), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if cfg.reflection:
        reflection.enable_server_reflection(
            (LEDGER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=MethodAwarePool()
        )
    address = grpc_address(cfg.addr)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise ConfigError(f"audit.addr: cannot listen on {cfg.addr}: {e}") from e
    if port == 0 and not address.startswith("unix:"):
        raise ConfigError(f"audit.addr: cannot listen on {cfg.addr}")
    if not is_loopback(address) and credentials is None:
        log.warning("audit API on %s without TLS: anyone who can reach it can read every recorded decision", cfg.addr)
    server.start()
    for name in ("", LEDGER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    security = "mutual TLS" if cfg.client_ca else "TLS" if credentials else "plaintext"
    log.info("audit API (%s) on %s, %s", LEDGER_SERVICE, cfg.addr, security)
    return AuditServer(server, port, address, health_servicer, slots)
