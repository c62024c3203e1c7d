"""Prometheus metrics on their own HTTP listener (loopback by default), with Prometheus naming conventions.

Hot-path cost is kept to a few dict and list increments per Check, in the Check's own thread (``_CheckTallies``:
no lock); everything the writer already counts (queue depth, batch size, commit latency, tree size,
checkpoints) is read at scrape time by a custom collector, so the writer thread pays nothing for it. No label
has unbounded cardinality: methods, gRPC codes, outcomes and engines are small fixed sets.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from authz_ledger import __version__
from authz_ledger.errors import ConfigError

if TYPE_CHECKING:  # only read here; the layers above hand them in (server.py)
    from authz_ledger.ledger.writer import LedgerWriter
    from authz_ledger.witness.publisher import WitnessPublisher

# Check latency is sub-millisecond when healthy, seconds when an engine times out.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the service exports, in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The per-Check metrics (grpc_server_handled, grpc_server_handling_seconds, authz_decisions,
        # authz_policy_evaluation_seconds, authz_policy_errors) are tallied per thread: see _CheckTallies.
        self.checks = _CheckTallies()
        r.register(self.checks)
        self.ledger_refused = Counter(
            "authz_ledger_refused_checks", "Checks denied because the ledger could not take them, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.oversize_checks = Counter(
            "authz_ledger_oversize_checks",
            "Checks larger than server.max_recv_msg_size: denied (413) and recorded without their body.",
            registry=r,
        )
        self.refused_callers = Counter(
            "authz_ledger_refused_callers",
            "Checks refused before the handler: the mutual-TLS caller is not in server.allowed_client_ids.",
            registry=r,
        )
        build = Gauge("authz_ledger_build_info", "Build information.", ["version"], registry=r)
        build.labels(__version__).set(1)

    def observe_check(
        self, grpc_code: str, seconds: float, outcome: str, engine: str, eval_seconds: float, error_class: str
    ) -> None:
        """Everything one Check records: its gRPC code and latency, its outcome, the engine's time and error."""
        self.checks.observe(grpc_code, seconds, outcome, engine, eval_seconds, error_class)

    def watch_writer(self, writer: LedgerWriter) -> None:
        self.registry.register(_WriterCollector(writer))

    def watch_witnesses(self, publisher: WitnessPublisher) -> None:
        self.registry.register(_WitnessCollector(publisher))


# The per-Check metric families: name -> (help, label names).
_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpc_server_handled": ("RPCs completed, by method and gRPC status code.", ("grpc_method", "grpc_code")),
    "authz_decisions": ("Check decisions by outcome (allow, deny, error) and engine.", ("outcome", "engine")),
    "authz_policy_errors": ("Decisions without a usable policy result, by error class.", ("engine", "error")),
}
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpc_server_handling_seconds": ("Time to answer an RPC.", ("grpc_method",)),
    "authz_policy_evaluation_seconds": ("Policy evaluation time, engine round trip included.", ("engine",)),
}

_Key = tuple[str, tuple[str, ...]]
"""(family name, label values)."""


class _Tally:
    """One thread's counts: only that thread writes them, scrapes read them."""

    __slots__ = ("counts", "histograms")

    def __init__(self) -> None:
        self.counts: dict[_Key, int] = {}
        self.histograms: dict[_Key, list[float]] = {}
        """Per bucket of _LATENCY_BUCKETS and +Inf, the observations that fell in it; then their sum."""

    def count(self, key: _Key) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(self, key: _Key, value: float) -> None:
        values = self.histograms.get(key)
        if values is None:
            values = self.histograms[key] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        values[bisect_left(_LATENCY_BUCKETS, value)] += 1  # the first bucket with value <= le
        values[-1] += value


class _CheckTallies(Collector):
    """The per-Check metrics, counted without a lock and summed when scraped.

    prometheus_client's metric children take a lock on every update: four of them cost ~8 µs of a Check whose
    own work is ~30 µs. Here each thread counts into its own ``_Tally`` (a Check runs on one thread from start to
    end), so an update is a dict or list increment, and a scrape adds the tallies up. A scrape may miss the
    updates of the Check in progress on another thread; nothing is ever lost or counted twice.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._lock = threading.Lock()  # taken once per thread, and by scrapes

    def observe(
        self, grpc_code: str, seconds: float, outcome: str, engine: str, eval_seconds: float, error_class: str
    ) -> None:
        t: _Tally | None = getattr(self._local, "tally", None)
        if t is None:
            t = self._local.tally = _Tally()
            with self._lock:
                self._tallies.append(t)
        t.count(("grpc_server_handled", ("Check", grpc_code)))
        t.observe(("grpc_server_handling_seconds", ("Check",)), seconds)
        t.count(("authz_decisions", (outcome, engine)))
        if eval_seconds:
            t.observe(("authz_policy_evaluation_seconds", (engine,)), eval_seconds)
        if error_class:
            t.count(("authz_policy_errors", (engine, error_class)))

    def collect(self) -> Iterator[Metric]:
        counts: dict[_Key, int] = {}
        histograms: dict[_Key, list[float]] = {}
        with self._lock:
            tallies = list(self._tallies)
        for t in tallies:
            # .copy() of a dict, list() of a list: one C call each, consistent even while their thread counts.
            for key, n in t.counts.copy().items():
                counts[key] = counts.get(key, 0) + n
            for key, values in t.histograms.copy().items():
                total = histograms.get(key)
                histograms[key] = (
                    list(values) if total is None else [a + b for a, b in zip(total, list(values), strict=True)]
                )
        for name, (doc, labels) in _COUNTERS.items():
            counter = CounterMetricFamily(name, doc, labels=labels)
            for (family, label_values), n in sorted(counts.items()):
                if family == name:
                    counter.add_metric(label_values, n)
            yield counter
        for name, (doc, labels) in _HISTOGRAMS.items():
            histogram = HistogramMetricFamily(name, doc, labels=labels)
            for (family, label_values), values in sorted(histograms.items()):
                if family == name:
                    histogram.add_metric(label_values, _buckets(values[:-1]), values[-1])
            yield histogram


def _buckets(counts: list[float]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets (Prometheus histograms count observations <= le), +Inf last."""
    out: list[tuple[str, float]] = []
    running = 0.0
    for le, n in zip((*_LATENCY_BUCKETS, float("inf")), counts, strict=True):
        running += n
        out.append((floatToGoString(le), running))  # type: ignore[no-untyped-call]
    return out


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
