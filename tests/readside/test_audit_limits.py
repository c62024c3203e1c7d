"""The audit API cannot be exhausted by one client: streaming calls are limited per client and in all, an idle
Tail ends (and the client follows on), unary calls always find a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz_ledger import config
from authz_ledger._proto.authzledger.v1 import audit_pb2 as pb
from authz_ledger._proto.authzledger.v1 import audit_pb2_grpc as pb_grpc
from authz_ledger.config import AuditConfig
from authz_ledger.errors import ConfigError, TooManyStreamsError
from authz_ledger.readside.audit import AuditServer, StreamSlots, client_address, start_audit_server
from authz_ledger.readside.client import RemoteSource
from authz_ledger.readside.values import NO_FILTER, EntryFilter
from tests.support.readside import Ledger, open_ledger
from tests.support.waits import wait_until


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = open_ledger(tmp_path / "data")
    led.append(5)
    led.checkpoint()
    yield led
    led.close()


def _serve(led: Ledger, **limits: float) -> AuditServer:
    cfg = AuditConfig(addr="127.0.0.1:0", **limits)  # type: ignore[arg-type]
    return start_audit_server(cfg, led.store, led.writer)


def _open_tail(stub: pb_grpc.LedgerStub) -> grpc.Future:
    return stub.Tail(pb.TailRequest(from_end=True))


def test_one_client_cannot_hold_more_streams_than_its_share(ledger: Ledger) -> None:
    server = _serve(ledger, max_streams=6, max_streams_per_client=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.LedgerStub(channel)
    try:
        held = [_open_tail(stub) for _ in range(2)]
        wait_until(lambda: sum(server_streams(server)), lambda n: n == 2, message="the two Tails never started")
        third = _open_tail(stub)
        with pytest.raises(grpc.RpcError) as exc:
            next(third)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "audit.max_streams_per_client" in (exc.value.details() or "")
        # Unary calls are not streams: they are still answered.
        assert stub.GetCheckpoint(pb.GetCheckpointRequest()).tree_size == 5
        held[0].cancel()
        wait_until(lambda: sum(server_streams(server)), lambda n: n == 1, message="a cancelled Tail kept its slot")
        again = _open_tail(stub)
        wait_until(lambda: sum(server_streams(server)), lambda n: n == 2, message="a freed slot was not reused")
        again.cancel()
        held[1].cancel()
    finally:
        channel.close()
        server.stop(0)


def server_streams(server: AuditServer) -> list[int]:
    """Streams the server holds now, per client (read from its slots)."""
    return list(server.slots._by_client.values())


@pytest.mark.parametrize(
    ("peers", "refused"),
    [
        pytest.param(["ipv4:10.0.0.1:1", "ipv4:10.0.0.1:2", "ipv4:10.0.0.1:3"], 2, id="a third stream of one client"),
        pytest.param(
            ["ipv4:10.0.0.1:1", "ipv4:10.0.0.2:1", "ipv6:[::1]:7", "ipv4:10.0.0.3:1"], 3, id="a fourth stream in all"
        ),
        pytest.param(["ipv4:10.0.0.1:1", "ipv4:10.0.0.2:1"], None, id="two clients within both limits"),
    ],
)
def test_stream_slots_refuse_past_either_limit(peers: list[str], refused: int | None) -> None:
    slots = StreamSlots(total=3, per_client=2)
    held = []
    for i, peer in enumerate(peers):
        ctx = slots.held(peer)
        if i == refused:
            with pytest.raises(TooManyStreamsError):
                ctx.__enter__()
            continue
        ctx.__enter__()
        held.append(ctx)
    for ctx in held:
        ctx.__exit__(None, None, None)
    assert slots._by_client == {}


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        pytest.param("ipv4:127.0.0.1:5555", "ipv4:127.0.0.1", id="an IPv4 peer without its port"),
        pytest.param("ipv6:[::1]:5555", "ipv6:[::1]", id="an IPv6 peer without its port"),
        pytest.param("unix:/run/x.sock", "unix:/run/x.sock", id="a unix socket peer as it is"),
    ],
)
def test_a_client_is_its_address_without_the_port(peer: str, client: str) -> None:
    assert client_address(peer) == client


def test_an_idle_tail_ends_and_the_client_follows_on(ledger: Ledger) -> None:
    server = _serve(ledger, tail_idle_timeout_s=0.3)
    source = RemoteSource(f"127.0.0.1:{server.port}", None, None, None)
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        for found in source.follow(5, NO_FILTER, stop):
            seen.append(found.index)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        ledger.append(1)
        wait_until(lambda: list(seen), lambda s: s == [5], message="the first new entry never arrived")
        threading.Event().wait(1.0)  # a real pause: more than three idle timeouts, so the server ends its Tail
        ledger.append(2)
        wait_until(lambda: list(seen), lambda s: s == [5, 6, 7], message="the Tail did not follow on after idling")
    finally:
        stop.set()
        follower.join(5)
        source.close()
        server.stop(0)


def test_max_streams_must_leave_threads_for_unary_calls() -> None:
    with pytest.raises(ConfigError, match=r"audit\.max_streams must be below the audit listener's 16 threads"):
        config.load(sets=["audit.max_streams=16"], environ={})


def test_a_filtered_tail_that_matches_nothing_still_moves_forward_and_leaves_no_threads(ledger: Ledger) -> None:
    server = _serve(ledger, tail_idle_timeout_s=0.2)
    source = RemoteSource(f"127.0.0.1:{server.port}", None, None, None)
    starts: list[int] = []
    stream = source._stream

    def spy(method: str, request: Any, *rest: Any) -> Any:
        starts.append(request.start_index)
        return stream(method, request, *rest)

    source._stream = spy  # type: ignore[method-assign]
    stop = threading.Event()
    seen: list[int] = []
    follower = threading.Thread(
        target=lambda: seen.extend(e.index for e in source.follow(0, EntryFilter(path_prefix="/none"), stop))
    )
    threads_before = threading.active_count()
    follower.start()
    try:
        ledger.append(40)
        wait_until(lambda: list(starts), lambda s: len(s) >= 4 and s[-1] == 45, message="the Tail never moved on")
        assert threading.active_count() <= threads_before + 3  # the follower and one watcher, not one per call
    finally:
        stop.set()
        follower.join(5)
        source.close()
        server.stop(0)
    assert seen == []
