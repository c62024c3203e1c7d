"""Prometheus metrics on their own HTTP listener (loopback by default), with Prometheus naming conventions.

Hot-path cost is kept to a counter increment and a histogram observation per Check; everything the writer
already counts (queue depth, batch size, commit latency, tree size, checkpoints) is read at scrape time by a
custom collector, so the writer thread pays nothing for it. No label has unbounded cardinality: methods, gRPC
codes, outcomes and engines are small fixed sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from authz_ledger import __version__
from authz_ledger.errors import ConfigError
from authz_ledger.witness import WitnessPublisher
from authz_ledger.writer import LedgerWriter

# Check latency is sub-millisecond when healthy, seconds when an engine times out.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the service exports, in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.grpc_handled = Counter(
            "grpc_server_handled", "RPCs completed, by method and gRPC status code.", ["grpc_method", "grpc_code"],
            registry=r,
        )  # fmt: skip
        self.grpc_seconds = Histogram(
            "grpc_server_handling_seconds", "Time to answer an RPC.", ["grpc_method"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            "authz_decisions", "Check decisions by outcome (allow, deny, error) and engine.", ["outcome", "engine"],
            registry=r,
        )  # fmt: skip
        self.policy_seconds = Histogram(
            "authz_policy_evaluation_seconds", "Policy evaluation time, engine round trip included.", ["engine"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.policy_errors = Counter(
            "authz_policy_errors", "Decisions without a usable policy result, by error class.", ["engine", "error"],
            registry=r,
        )  # fmt: skip
        self.ledger_refused = Counter(
            "authz_ledger_refused_checks", "Checks denied because the ledger could not take them, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        build = Gauge("authz_ledger_build_info", "Build information.", ["version"], registry=r)
        build.labels(__version__).set(1)
        # Labelled children by label values: ``labels()`` takes a lock and builds its key on every call, which
        # made the per-Check metrics cost ~14 µs; a dict hit is a fraction of a microsecond. The label sets are
        # small and fixed (see the module docstring), so the dict stays small.
        self._children: dict[tuple[Any, ...], Any] = {}

    def observe_check(
        self, grpc_code: str, seconds: float, outcome: str, engine: str, eval_seconds: float, error_class: str
    ) -> None:
        """Everything one Check records: its gRPC code and latency, its outcome, the engine's time and error."""
        self._child(self.grpc_handled, "Check", grpc_code).inc()
        self._child(self.grpc_seconds, "Check").observe(seconds)
        self._child(self.decisions, outcome, engine).inc()
        if eval_seconds:
            self._child(self.policy_seconds, engine).observe(eval_seconds)
        if error_class:
            self._child(self.policy_errors, engine, error_class).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch_writer(self, writer: LedgerWriter) -> None:
        self.registry.register(_WriterCollector(writer))

    def watch_witnesses(self, publisher: WitnessPublisher) -> None:
        self.registry.register(_WitnessCollector(publisher))


class _WitnessCollector(Collector):
    def __init__(self, publisher: WitnessPublisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "authz_witness_cosignatures", "Checkpoint submissions to witnesses, by result.", labels=["result"]
        )
        family.add_metric(["published"], self.publisher.published)
        family.add_metric(["failed"], self.publisher.failed)
        yield family


class _WriterCollector(Collector):
    def __init__(self, writer: LedgerWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        w, s = self.writer, self.writer.stats
        yield GaugeMetricFamily("authz_ledger_queue_depth", "Decisions waiting for the writer.", value=w.queue_depth)
        yield GaugeMetricFamily("authz_ledger_tree_size", "Entries committed (tree size).", value=w.head.size)
        yield CounterMetricFamily("authz_ledger_entries", "Entries committed.", value=s.committed_entries)
        yield CounterMetricFamily("authz_ledger_batches", "Batches committed.", value=s.committed_batches)
        yield CounterMetricFamily("authz_ledger_failed_batches", "Batch commits that failed.", value=s.failed_batches)
        yield GaugeMetricFamily("authz_ledger_last_batch_size", "Entries in the last batch.", value=s.last_batch_size)
        yield GaugeMetricFamily(
            "authz_ledger_last_commit_seconds", "Duration of the last commit (fsync included).",
            value=s.last_commit_seconds,
        )  # fmt: skip
        yield CounterMetricFamily(
            "authz_ledger_checkpoints", "Signed checkpoints published.", value=s.checkpoints_published
        )
        yield GaugeMetricFamily(
            "authz_ledger_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint.",
            value=s.last_checkpoint_unix,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "authz_ledger_up", "1 while the ledger can write, 0 while commits fail.", value=0 if w.failure else 1
        )


@dataclass
class MetricsServer:
    port: int
    stop: Callable[[], None]


def serve_metrics(metrics: Metrics, addr: str) -> MetricsServer:
    """Start ``/metrics`` on ``host:port`` (``:port`` = every interface, only when asked for)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"metrics.addr must be host:port, got {addr!r}")
    # ":port" binds every interface, as for the Check listener; the default is loopback.
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - only when the operator wrote ":port"
    try:
        httpd, thread = start_http_server(int(port_text), addr=host, registry=metrics.registry)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {addr}: {e}") from e

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return MetricsServer(int(httpd.server_address[1]), stop)
