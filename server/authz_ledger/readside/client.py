"""Where the ledger is read from: a local data directory or a running server's audit API, behind one interface.

:class:`LocalSource` opens a data directory read-only (LMDB readers never block a running server's writer);
:class:`RemoteSource` is a client of the ``authzledger.v1.Ledger`` gRPC API, with TLS and mutual TLS. Both return
the same values for the same ledger, so a tool written against :class:`Source` works with either.

A remote source trusts only what it can check: an entry is decoded and hashed from its raw bytes here, and proofs
and receipts are verified against the roots the server sent before they are returned (fail closed). gRPC failures
become errors of the tree (rpc/status.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc

from authz_ledger._proto.authzledger.v1 import audit_pb2 as _pb
from authz_ledger._proto.authzledger.v1 import audit_pb2_grpc as _pb_grpc
from authz_ledger.errors import ConfigError, InvalidRequestError, NotFoundError, ProofError
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.readside.reader import LedgerReader, check_decision_id, poll_store
from authz_ledger.readside.values import (
    NEXT_INDEX_METADATA,
    ConsistencyProof,
    EntryFilter,
    InclusionProof,
    IssuedReceipt,
    SignedCheckpoint,
    StoredEntry,
    parse_signed_checkpoint,
)
from authz_ledger.record import entry
from authz_ledger.rpc import status as grpc_status
from authz_ledger.tlog import proof, receipt, tree

_RPC_TIMEOUT = 30.0


class Source(Protocol):
    """A ledger to read: a local data directory or a server's audit API."""

    def entry(self, index: int | None, decision_id: str | None) -> StoredEntry: ...
    def entries(self, start: int, end: int | None, limit: int | None, flt: EntryFilter) -> Iterator[StoredEntry]: ...
    def tail_start(self, n: int) -> int: ...
    def follow(self, start: int, flt: EntryFilter, stop: threading.Event) -> Iterator[StoredEntry]: ...
    def checkpoint(self, size: int | None) -> SignedCheckpoint: ...
    def inclusion(self, index: int, tree_size: int | None) -> InclusionProof: ...
    def consistency(self, size1: int, size2: int | None) -> ConsistencyProof: ...
    def receipt(self, index: int | None, decision_id: str | None) -> IssuedReceipt: ...
    def close(self) -> None: ...


class LocalSource:
    """A data directory opened read-only (LMDB readers never block the writer of a running server)."""

    def __init__(self, data_dir: str) -> None:
        self._store = Store(LedgerPaths(Path(data_dir)).store, readonly=True)
        self._reader = LedgerReader(self._store)

    def entry(self, index: int | None, decision_id: str | None) -> StoredEntry:
        return self._reader.get_entry(index=index, decision_id=decision_id)

    def entries(self, start: int, end: int | None, limit: int | None, flt: EntryFilter) -> Iterator[StoredEntry]:
        return self._reader.list_entries(start, end, limit, flt)

    def tail_start(self, n: int) -> int:
        return max(0, self._reader.size() - n)

    def follow(self, start: int, flt: EntryFilter, stop: threading.Event) -> Iterator[StoredEntry]:
        # Another process writes: poll the committed head (cheap: one read transaction per poll).
        return self._reader.follow(start, flt, poll_store(self._reader), lambda: not stop.is_set())

    def checkpoint(self, size: int | None) -> SignedCheckpoint:
        return self._reader.checkpoint(size)

    def inclusion(self, index: int, tree_size: int | None) -> InclusionProof:
        return self._reader.inclusion_proof(index, tree_size)

    def consistency(self, size1: int, size2: int | None) -> ConsistencyProof:
        return self._reader.consistency_proof(size1, size2)

    def receipt(self, index: int | None, decision_id: str | None) -> IssuedReceipt:
        return self._reader.receipt(index=index, decision_id=decision_id)

    def close(self) -> None:
        self._store.close()


def _stored_entry(msg: Any) -> StoredEntry:
    """An Entry from the API, trusting only its raw bytes: decoded and hashed here."""
    raw = bytes(msg.raw)
    found = StoredEntry(msg.index, raw, entry.decode(raw, msg.index))
    if msg.leaf_hash and msg.leaf_hash != found.leaf_hash:
        raise ProofError(f"the server's leaf hash for entry {msg.index} is not the hash of the bytes it sent")
    return found


def _signed_checkpoint(msg: Any) -> SignedCheckpoint:
    return SignedCheckpoint(msg.origin, msg.tree_size, bytes(msg.root_hash), bytes(msg.note))


class RemoteSource:
    """A server's ``authzledger.v1.Ledger`` API; gRPC failures become errors of the tree (grpc_status)."""

    def __init__(self, address: str, ca: str | None, cert: str | None, key: str | None) -> None:
        self._address = address
        if bool(cert) != bool(key):
            raise ConfigError("--cert and --key go together (a client certificate and its private key)")
        if ca or cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_flag_file(ca, "--ca") if ca else None,
                private_key=read_flag_file(key, "--key") if key else None,
                certificate_chain=read_flag_file(cert, "--cert") if cert else None,
            )
            self._channel = grpc.secure_channel(address, creds)
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = _pb_grpc.LedgerStub(self._channel)

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=_RPC_TIMEOUT)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def _stream(
        self, method: str, request: Any, stop: threading.Event | None = None, ended: list[Any] | None = None
    ) -> Iterator[StoredEntry]:
        """The entries of a server-streaming call; ``ended``, if given, receives the call's trailing metadata."""
        call = getattr(self._stub, method)(request)
        done = threading.Event()
        if stop is not None:
            # Cancel from the side: the call's iterator blocks until a message or the end of the stream. The
            # watcher ends with the call, so following across many calls leaves no thread behind.
            def watch() -> None:
                while not done.wait(0.2):
                    if stop.is_set():
                        call.cancel()
                        return

            threading.Thread(target=watch, daemon=True).start()
        try:
            for msg in call:
                yield _stored_entry(msg)
            if ended is not None:
                ended.extend(call.trailing_metadata() or ())
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise self._error(e) from None
        finally:
            done.set()
            call.cancel()

    def _error(self, e: grpc.RpcError) -> Exception:
        code, details = e.code(), e.details()
        return grpc_status.error_from_status(code, details or "", f"audit server {self._address}")

    def entry(self, index: int | None, decision_id: str | None) -> StoredEntry:
        req = _pb.GetEntryRequest(index=index) if index is not None else _pb.GetEntryRequest(decision_id=decision_id)
        found = _stored_entry(self._call("GetEntry", req))
        if decision_id is not None:
            check_decision_id(found, decision_id)  # the server's answer too: an error, never another decision
        return found

    def entries(self, start: int, end: int | None, limit: int | None, flt: EntryFilter) -> Iterator[StoredEntry]:
        # 0 means "the default" in the API, so a real 0 cannot be sent: an empty range or limit asks nothing.
        if end == 0 and start > 0:
            raise InvalidRequestError(f"end index 0 is before start index {start}")
        if end == 0 or limit == 0:
            return iter(())
        req = _pb.ListEntriesRequest(start_index=start, end_index=end or 0, limit=limit or 0, filter=_filter_pb(flt))
        return self._stream("ListEntries", req)

    def tail_start(self, n: int) -> int:
        # The API tells the latest checkpoint's size, not the head's: start there; the caller keeps the last n.
        try:
            size = self.checkpoint(None).size
        except NotFoundError:
            return 0
        return max(0, size - n)

    def follow(self, start: int, flt: EntryFilter, stop: threading.Event) -> Iterator[StoredEntry]:
        # The server ends a Tail that stayed idle (audit.tail_idle_timeout_s); follow on from where it stopped.
        pos = start
        while not stop.is_set():
            ended: list[Any] = []
            request = _pb.TailRequest(start_index=pos, filter=_filter_pb(flt))
            for found in self._stream("Tail", request, stop, ended):
                pos = found.index + 1
                yield found
            # The server says how far it scanned: a filter that matched nothing still moves forward.
            for key, value in ended:
                if key == NEXT_INDEX_METADATA:
                    pos = max(pos, int(value))

    def checkpoint(self, size: int | None) -> SignedCheckpoint:
        if size == 0:
            raise NotFoundError("no checkpoint is ever published at tree size 0")
        return _signed_checkpoint(self._call("GetCheckpoint", _pb.GetCheckpointRequest(tree_size=size or 0)))

    def inclusion(self, index: int, tree_size: int | None) -> InclusionProof:
        if tree_size == 0:
            raise ProofError(f"leaf index {index} is not in a tree of 0 leaves")
        msg = self._call("GetInclusionProof", _pb.GetInclusionProofRequest(index=index, tree_size=tree_size or 0))
        found = self.entry(index, None)
        hashes = tuple(bytes(h) for h in msg.hashes)
        root = bytes(msg.root_hash)
        # Fail closed: check what the server sent before anyone takes it for a proof.
        if bytes(msg.leaf_hash) != found.leaf_hash:
            raise ProofError(f"the server's leaf hash for entry {index} is not the hash of the entry it serves")
        proof.verify_inclusion(msg.index, msg.tree_size, found.leaf_hash, hashes, root)
        return InclusionProof(
            msg.index, msg.tree_size, found.raw, found.leaf_hash, root, hashes, bytes(msg.checkpoint) or None
        )

    def consistency(self, size1: int, size2: int | None) -> ConsistencyProof:
        if size2 == 0:
            if size1 != 0:
                raise ProofError(f"size1 {size1} is larger than size2 0: a log only grows")
            return ConsistencyProof(0, tree.EMPTY_ROOT, 0, tree.EMPTY_ROOT, ())
        msg = self._call("GetConsistencyProof", _pb.GetConsistencyProofRequest(size1=size1, size2=size2 or 0))
        p = ConsistencyProof(
            msg.size1, bytes(msg.root1), msg.size2, bytes(msg.root2), tuple(bytes(h) for h in msg.hashes)
        )
        if p.size1 == 0 and (p.hashes or p.root1 != tree.EMPTY_ROOT):
            raise ProofError("the server sent a non-empty proof or a wrong root for the empty tree")
        if p.size1 > 0:
            proof.verify_consistency(p.size1, p.size2, p.root1, p.root2, p.hashes)
        return p

    def receipt(self, index: int | None, decision_id: str | None) -> IssuedReceipt:
        if index is not None:
            req = _pb.GetReceiptRequest(index=index)
        else:
            req = _pb.GetReceiptRequest(decision_id=decision_id)
        msg = self._call("GetReceipt", req)
        found = _stored_entry(msg.entry)
        if decision_id is not None:
            check_decision_id(found, decision_id)
        proof = bytes(msg.proof)
        parsed = receipt.parse_receipt(proof)
        if parsed.index != found.index:
            raise ProofError(f"the server's receipt is for entry {parsed.index}, not {found.index}")
        return IssuedReceipt(proof, found, parse_signed_checkpoint(parsed.checkpoint))

    def close(self) -> None:
        self._channel.close()


def _filter_pb(flt: EntryFilter) -> Any:
    return _pb.EntryFilter(
        since_unix_nano=flt.since_unix_nano,
        until_unix_nano=flt.until_unix_nano,
        outcome=flt.outcome,  # type: ignore[arg-type]
        path_prefix=flt.path_prefix,
        principal=flt.principal,
    )


def read_flag_file(path: str, flag: str) -> bytes:
    """The bytes of the file a command-line flag names; ConfigError naming the flag when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag}: cannot read {path}: {e.strerror}") from e
