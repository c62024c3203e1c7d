"""Process lifecycle: build the engine and the ledger, serve gRPC, drain and stop cleanly.

gRPC services on one listener: ``envoy.service.auth.v3.Authorization`` (Check), ``grpc.health.v1.Health``
(per service name) and, unless switched off, server reflection so that ``grpcurl list/describe`` work.

Signals: SIGTERM / SIGINT -> health NOT_SERVING, wait ``drain_seconds`` so health checkers notice, stop taking
RPCs (``grace_seconds`` for the ones in flight), drain the ledger queue, commit, sign a final checkpoint, exit 0.
SIGHUP -> reload the policy atomically (a broken policy keeps the old one serving and is logged).
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TextIO

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_ledger import __version__
from authz_ledger.check import arrival
from authz_ledger.check import handler as check
from authz_ledger.check import input as input_document
from authz_ledger.check.handler import CheckOptions, CheckService
from authz_ledger.config import Config, WitnessConfig
from authz_ledger.errors import ConfigError, PolicyError
from authz_ledger.ledger.opening import OpenLedger, open_for_serving
from authz_ledger.ledger.rollback import WITNESSED_FILE, check_witnessed_file
from authz_ledger.logs import setup_logging
from authz_ledger.metrics import Metrics, MetricsServer, serve_metrics
from authz_ledger.policy import PolicyEngine
from authz_ledger.readside.audit import AuditServer, start_audit_server
from authz_ledger.record.redact import RedactionRules, Redactor
from authz_ledger.rpc import tls
from authz_ledger.rpc.serving import MethodAwarePool, grpc_address, is_loopback
from authz_ledger.witness.endpoint import WitnessEndpoint
from authz_ledger.witness.publisher import WitnessPublisher

if TYPE_CHECKING:  # the console (starlette, uvicorn, jinja2) is imported only when it is enabled
    from authz_ledger.console.context import ConsoleContext
    from authz_ledger.console.serving import RunningConsole

log = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

SWITCH_INTERVAL_S = 0.0005
"""How long a thread may keep the interpreter lock while another waits for it (CPython's default: 5 ms).

The ledger writer gives the lock up around every LMDB call that may block and must get it back from whichever
handler thread holds it; a ``sync`` Check waits for that. Measured here (``bench/bench_ledger.py``), the p50 of
one ``sync`` record() next to one CPU-bound Python thread: 6.0 ms at 5 ms, 0.9 ms at 0.5 ms (0.26-0.41 ms
alone); next to four: 77 ms at 5 ms, 17 ms at 0.5 ms. Below 0.5 ms it gained little more.
"""


def tune_interpreter() -> None:
    """Process-wide settings the Check path needs (see SWITCH_INTERVAL_S); read at call time.

    They stay for the life of the process (``Running.stop`` does not undo them): an embedding program that
    starts the service in-process gets them too.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_heap() -> None:
    """Exempt everything the start-up built from the cyclic garbage collector's full collections.

    Every gRPC call leaves reference cycles (grpcio's per-call state and its callbacks) that only the collector
    frees, so under load it runs a full collection once or twice a second; each one walked the whole start-up
    heap (modules, protobuf descriptors, the metrics registry) for 16-20 ms, ~7 µs per Check at ~3,800 Checks/s
    (``bench/bench_check.py --pairs``; with the frozen heap, 0.4-1.2 ms each). The cost: an object frozen here
    is never collected if it later becomes cyclic garbage (reference counting still frees the rest). Nearly all
    of the serving process's start-up objects live until it exits; what a policy reload replaces is closed
    explicitly, and at worst the first evaluator pool's cyclic leftovers stay, once. A test process that starts many
    servers would keep every one of them, so only the serving process calls this, once started.
    """
    gc.freeze()


def build_engine(cfg: Config) -> PolicyEngine:
    timeout = cfg.policy.timeout_ms / 1000
    if cfg.policy.engine == "opa":
        from authz_ledger.policy.opa import OpaEngine

        return OpaEngine(
            cfg.policy.opa.url,
            decision_path=cfg.policy.path,
            timeout=timeout,
            max_in_flight=cfg.policy.opa.max_in_flight,
            pool_size=cfg.policy.opa.pool_size,
        )
    from authz_ledger.policy.embedded import EmbeddedEngine

    return EmbeddedEngine(
        cfg.policy.source,
        decision_path=cfg.policy.path,
        workers=cfg.policy.embedded.workers,
        timeout=timeout,
        watch=cfg.policy.embedded.watch,
        memory_limit_mb=cfg.policy.embedded.memory_limit_mb,
    )


def attach_witnesses(cfg: WitnessConfig, ledger: OpenLedger) -> WitnessPublisher | None:
    """Rollback checks against witnesses, then hook a started publisher to the (not yet started) writer.

    Without configured endpoints only the ``witnessed`` file left by an earlier configuration is checked (with
    the log's keys) and None is returned. Raises RollbackError or ConfigError; nothing is left running then.
    """
    witnessed_file = ledger.paths.data_dir / WITNESSED_FILE
    origin = ledger.writer.origin
    if not cfg.endpoints:
        check_witnessed_file(witnessed_file, ledger.store, origin, [s.verifier() for s in ledger.signers], [])
        return None
    if not cfg.timeout_ms > 0 or not cfg.interval_ms > 0:
        raise ConfigError("witness.timeout_ms and witness.interval_ms must be positive")
    publisher = WitnessPublisher(
        ledger.store,
        ledger.signers,
        origin,
        [WitnessEndpoint.parse(s) for s in cfg.endpoints],
        timeout=cfg.timeout_ms / 1000,
        retry_interval=cfg.interval_ms / 1000,
        witnessed_file=witnessed_file,
    )
    try:
        publisher.check_witnesses()
    except BaseException:
        publisher.close(0)
        raise
    ledger.writer.on_checkpoint = publisher.submit
    publisher.start()
    return publisher


@dataclass
class Running:
    """A started service; ``stop()`` performs the SIGTERM sequence."""

    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    engine: PolicyEngine
    ledger: OpenLedger | None
    cfg: Config
    _stopped: threading.Event
    metrics: Metrics
    metrics_server: MetricsServer | None = None
    publisher: WitnessPublisher | None = None
    audit: AuditServer | None = None
    console: RunningConsole | None = None

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down: health NOT_SERVING, draining for %.1f s", self.cfg.server.drain_seconds)
        self.health.enter_graceful_shutdown()
        threading.Event().wait(self.cfg.server.drain_seconds)
        self.server.stop(self.cfg.server.grace_seconds).wait()
        if self.audit is not None:
            self.audit.stop(self.cfg.server.grace_seconds)  # before the store closes under its readers
        if self.console is not None:
            self.console.stop()  # also before the store closes
        if self.ledger is not None:
            self.ledger.writer.close()  # signs the final checkpoint and hands it to the witness publisher
            if self.publisher is not None:
                self.publisher.close()  # one bounded attempt per witness (witness.timeout_ms + 1 s)
            head = self.ledger.writer.head
            log.info("ledger closed at size %d; final checkpoint signed", head.size)
            if self.ledger.writer.is_alive():
                # Closing LMDB under a live write transaction is undefined behaviour: leave it to process exit.
                log.error("the ledger writer is still running; not closing the store")
            else:
                self.ledger.close()
        self.engine.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()

    def wait(self) -> None:
        self._stopped.wait()


def start(cfg: Config) -> Running:
    """Start every component; raise AuthzLedgerError (nothing left running) if any cannot start."""
    tune_interpreter()
    engine = build_engine(cfg)
    ledger: OpenLedger | None = None
    metrics = Metrics()
    metrics_server: MetricsServer | None = None
    publisher: WitnessPublisher | None = None
    audit_server: AuditServer | None = None
    console: RunningConsole | None = None
    try:
        pool = input_document.load_descriptor_set(cfg.policy.proto_descriptor) if cfg.policy.proto_descriptor else None
        if cfg.ledger.enabled:
            opened = open_for_serving(cfg.ledger)
            try:
                # Rollback check against the witnessed file and the witnesses; hooks writer.on_checkpoint.
                publisher = attach_witnesses(cfg.witness, opened)
            except BaseException:
                opened.close()  # sign nothing on a ledger that failed the rollback check
                raise
            ledger = opened
            if publisher is not None:
                metrics.watch_witnesses(publisher)
            redactor = ledger.redactor
            metrics.watch_writer(ledger.writer)
            ledger.writer.start()
        else:
            redactor = Redactor(RedactionRules(), b"\x00" * 32)
        service = CheckService(
            engine,
            ledger.writer if ledger else None,
            redactor,
            CheckOptions(
                dry_run=cfg.policy.dry_run,
                skip_request_body_parse=cfg.policy.skip_request_body_parse,
                descriptor_pool=pool,
                on_error=cfg.policy.on_error,
                error_http_status=cfg.policy.error_http_status,
                overload_http_status=cfg.ledger.overload_http_status,
            ),
            metrics,
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.server.threads, thread_name_prefix="check"),
            options=[
                # server.max_recv_msg_size is enforced by the Check handler, which denies and records a larger
                # Check; the transport takes TRANSPORT_HEADROOM times as much so that one reaches it.
                ("grpc.max_receive_message_length", cfg.server.max_recv_msg_size * arrival.TRANSPORT_HEADROOM),
                # Two servers must never silently share a port (grpcio enables SO_REUSEPORT by default).
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        check.add_to_server(service, server, cfg.server.max_recv_msg_size, cfg.server.allowed_client_ids)
        health_servicer = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if cfg.server.reflection:
            reflection.enable_server_reflection(
                (AUTHORIZATION_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=MethodAwarePool()
            )
        address = grpc_address(cfg.server.addr)
        credentials, _ = tls.server_credentials(
            tls.TlsFiles("server", cfg.server.tls_cert, cfg.server.tls_key, cfg.server.client_ca)
        )
        try:
            port = (
                server.add_insecure_port(address)
                if credentials is None
                else server.add_secure_port(address, credentials)
            )
        except RuntimeError as e:
            raise ConfigError(f"cannot listen on {cfg.server.addr}: {e}") from e
        if port == 0 and not address.startswith("unix:"):
            raise ConfigError(f"cannot listen on {cfg.server.addr}")
        if credentials is None and not is_loopback(address):
            log.warning(
                "Check listener on %s without TLS: anyone who can reach it can send Checks that become permanent "
                "ledger records (set server.tls_cert, server.tls_key and server.client_ca)", cfg.server.addr,
            )  # fmt: skip
        if cfg.metrics.enabled:
            metrics_server = serve_metrics(metrics, cfg.metrics.addr)
        if cfg.audit.enabled and ledger is not None:
            audit_server = start_audit_server(cfg.audit, ledger.store, ledger.writer)
        if cfg.console.enabled and ledger is not None:
            from authz_ledger.console.serving import start_console

            console = start_console(_console_context(cfg, ledger), cfg.console)
        server.start()
        for name in ("", AUTHORIZATION_SERVICE):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        if console is not None:
            console.stop()
        if audit_server is not None:
            audit_server.stop(0)
        if metrics_server is not None:
            metrics_server.stop()
        if ledger is not None:
            ledger.writer.close()
            if publisher is not None:
                publisher.close()
            ledger.close()
        engine.close()
        raise
    running = Running(
        server,
        port,
        address,
        health_servicer,
        engine,
        ledger,
        cfg,
        threading.Event(),
        metrics,
        metrics_server,
        publisher,
        audit_server,
        console,
    )
    if ledger is not None:
        threading.Thread(target=_watch_ledger_health, args=(running,), name="ledger-health", daemon=True).start()
    return running


def _console_context(cfg: Config, ledger: OpenLedger) -> ConsoleContext:
    """The console inside serve reads the serving store and wakes on the writer's commits; it shows the
    ledger's own verifier keys (and ``ledger.verifier_keys``), which auditors may replace in their browser."""
    from authz_ledger.console.context import open_context
    from authz_ledger.keys import load_verifiers
    from authz_ledger.tlog import note

    verifiers = [note.Verifier.from_vkey(s.verifier_key()) for s in ledger.signers]
    if cfg.ledger.verifier_keys:
        verifiers += load_verifiers(cfg.ledger.verifier_keys)
    return open_context(
        ledger.paths.store, verifiers, cfg.console, store=ledger.store, wait_for_size=ledger.writer.wait_for_size
    )


def _watch_ledger_health(running: Running) -> None:
    """Report NOT_SERVING while the ledger cannot write: Checks are being denied anyway (fail closed)."""
    assert running.ledger is not None
    writer = running.ledger.writer
    serving = True
    while not running._stopped.wait(0.5):
        ok = writer.failure is None
        if ok != serving:
            serving = ok
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", AUTHORIZATION_SERVICE):
                running.health.set(name, status)
            log.log(logging.INFO if ok else logging.ERROR, "ledger %s", "recovered" if ok else writer.failure)


def describe(running: Running, out: TextIO) -> None:
    """Say where everything is: operators should not have to guess."""
    cfg = running.cfg
    where = running.address if running.address.startswith("unix:") else f"{cfg.server.addr} (port {running.port})"
    lines = [
        f"authz-ledger {__version__} serving ext_authz v3 on {where}",
        f"  engine: {cfg.policy.engine}; decision: data.{cfg.policy.path.replace('/', '.')}; "
        f"policy version: {running.engine.policy_version()}",
    ]
    if cfg.policy.engine == "embedded":
        lines.append(f"  policy: {cfg.policy.source}")
    else:
        lines.append(f"  OPA: {cfg.policy.opa.url}")
    if running.ledger is not None:
        led = running.ledger
        lines += [
            f"  ledger: {led.paths.store} ({cfg.ledger.durability}); size {led.writer.head.size}; "
            f"verified {led.recovery.entries} entries since the last checkpoint",
            f"  origin: {cfg.ledger.origin}",
            f"  verifier key: {led.signers[0].verifier_key()}"
            + (f"  (new key written to {led.paths.signing_key})" if led.created_key else ""),
            f"  checkpoint file: {led.paths.checkpoint}",
        ]
    else:
        lines.append("  ledger: DISABLED (decisions are not recorded)")
    lines.append(f"  health, reflection: {'on' if cfg.server.reflection else 'reflection off'}")
    if running.audit is not None:
        tls = "TLS" if cfg.audit.tls_cert else "plaintext"
        lines.append(f"  audit API (authzledger.v1.Ledger): {cfg.audit.addr} (port {running.audit.port}, {tls})")
    if running.console is not None:
        scheme = "https" if cfg.console.tls_cert else "http"
        host = cfg.console.addr.rpartition(":")[0] or "*"
        lines.append(f"  console: {scheme}://{host}:{running.console.port}/")
    if running.metrics_server is not None:
        host = cfg.metrics.addr.rpartition(":")[0] or "*"
        lines.append(f"  metrics: http://{host}:{running.metrics_server.port}/metrics")
    print("\n".join(lines), file=out, flush=True)


def serve(cfg: Config, out: TextIO = sys.stdout) -> int:
    setup_logging(cfg.server.log_level, cfg.server.log_format)
    running = start(cfg)
    freeze_startup_heap()
    describe(running, out)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=running.stop, name="shutdown").start()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=_reload, args=(running.engine,), name="reload").start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    running.wait()
    for t in threading.enumerate():
        if t.name == "shutdown":
            t.join()
    return 0


def _reload(engine: PolicyEngine) -> None:
    try:
        version = engine.reload()
        log.info("policy reloaded: version %s", version)
    except PolicyError as e:
        log.error("policy reload failed, the previous policy keeps serving: %s", e.diagnostics())
