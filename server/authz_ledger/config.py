"""Configuration: one YAML file, then environment variables, then ``--set key=value`` flags (OPA's convention).

Precedence (later wins): built-in defaults < ``--config FILE`` < ``AUTHZ_LEDGER_<SECTION>__<KEY>`` environment
variables (e.g. ``AUTHZ_LEDGER_POLICY__ENGINE=opa``) < ``--set policy.engine=opa`` < the dedicated serve flags
(``--addr``, ``--policy``, ``--data-dir``). Everything is validated at start; an unknown key or a bad value stops
the service with a message naming the key and where it came from. Values from the environment and ``--set`` are
parsed as YAML scalars (``true``, ``512``, ``[a, b]``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from authz_ledger.errors import ConfigError
from authz_ledger.record.redact import DEFAULT_DIGEST_HEADERS, DEFAULT_DIGEST_QUERY_PARAMS, DEFAULT_NAME_PATTERN

ENV_PREFIX = "AUTHZ_LEDGER_"
NOT_CONFIGURATION_ENV = frozenset({"AUTHZ_LEDGER_CACHE"})
"""Variables with our prefix that are not settings: the test tools' cache directory (tests/tools/build-opa.sh)."""
EXAMPLE_POLICY = Path(__file__).parent / "example_policy"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "authz-ledger"


@dataclass
class ServerConfig:
    addr: str = "127.0.0.1:9191"
    """gRPC listen address: ``host:port``, ``:port`` (all interfaces, as opa-envoy-plugin's default) or
    ``unix:///path``. Loopback by default: expose it to the mesh on purpose."""
    reflection: bool = True
    max_recv_msg_size: int = 4 * 1024 * 1024
    threads: int = 64
    """Handler threads; bounds concurrent Checks (a ``sync`` Check holds one for about one commit)."""
    drain_seconds: float = 1.0
    """After SIGTERM, report NOT_SERVING this long before refusing new Checks, so health checkers notice."""
    grace_seconds: float = 5.0
    log_level: str = "info"
    log_format: str = "plain"
    tls_cert: str = ""
    """PEM certificate chain of the Check listener; with ``tls_key`` it serves TLS (re-read when the files change)."""
    tls_key: str = ""
    client_ca: str = ""
    """PEM CA bundle; when set, callers must present a certificate it signed (mutual TLS)."""
    allowed_client_ids: list[str] = field(default_factory=list)
    """With ``client_ca``: the only client identities (SPIFFE IDs or DNS names from the certificate's subject
    alternative names, or its common name) whose Checks are decided; others are refused and counted, unrecorded."""


@dataclass
class EmbeddedConfig:
    workers: int = 2
    """Evaluator processes (OPA's Go engine runs outside the server process; see policy/embedded/)."""
    memory_limit_mb: int = 3072
    """Address-space limit (RLIMIT_AS) of each evaluator process; 0 = none. A loaded one maps ~1.7 GB."""
    watch: bool = True
    """Reload when the policy files change (SIGHUP always reloads)."""


@dataclass
class OpaConfig:
    url: str = "http://127.0.0.1:8181"
    max_in_flight: int = 256
    pool_size: int = 64


@dataclass
class PolicyConfig:
    engine: str = "embedded"
    path: str = "envoy/authz/allow"
    source: str = str(EXAMPLE_POLICY)
    """Embedded engine: a directory of .rego and data.json/data.yaml files, or a bundle .tar.gz."""
    timeout_ms: float = 200.0
    dry_run: bool = False
    skip_request_body_parse: bool = False
    proto_descriptor: str = ""
    on_error: str = "grpc_error"
    """``grpc_error`` (as opa-envoy-plugin: the RPC fails, Envoy applies failure_mode_allow/status_on_error)
    or ``deny`` (answer a denied CheckResponse with ``error_http_status``, whatever Envoy's settings)."""
    error_http_status: int = 403
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    opa: OpaConfig = field(default_factory=OpaConfig)


@dataclass
class RedactionConfig:
    digest_headers: list[str] = field(default_factory=lambda: list(DEFAULT_DIGEST_HEADERS))
    """Replaces the researched default list (record/secrets.py); to add names, use ``digest_headers_extra``."""
    digest_headers_extra: list[str] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    digest_query_params: list[str] = field(default_factory=lambda: list(DEFAULT_DIGEST_QUERY_PARAMS))
    """Replaces the default list; to add names, use ``digest_query_params_extra``."""
    digest_query_params_extra: list[str] = field(default_factory=list)
    name_pattern: str = DEFAULT_NAME_PATTERN
    """Header and parameter names matching this regular expression are digested too; "" turns it off."""
    detect_values: bool = True
    """Digest values shaped like credentials (auth schemes, JWTs, long random tokens) whatever their name."""
    body: str = "digest"


DEFAULT_ORIGIN = "authz-ledger.local/default"


@dataclass
class LedgerConfig:
    enabled: bool = True
    data_dir: str = str(default_data_dir())
    durability: str = "sync"
    """``sync``: a Check is answered only after its entry is durable. ``async``: answered at once."""
    origin: str = ""
    """Checkpoint origin and signing key name. Empty: the name of the first of ``signing_keys`` (a key given
    alone names its log), else ``DEFAULT_ORIGIN``. Resolved by ``validate``."""
    signing_keys: list[str] = field(default_factory=list)
    """Key files; empty means ``<data_dir>/keys/signing.key``, created on first start. Every key signs."""
    verifier_keys: list[str] = field(default_factory=list)
    """Verifier keys (``name+id+base64``, or files of them) of retired signing keys: the older checkpoints they
    signed still verify at start. A checkpoint no configured key verifies makes the service refuse to start."""
    unsafe_allow_unsigned: bool = False
    """Serve a non-empty ledger that has no signed checkpoint (it crashed before its first one). Unsafe: nothing
    then vouches that its entries are the ones recorded (``verify --allow-unsigned`` is the same choice)."""
    unsafe_verify_tail_only: bool = False
    """At start, verify only the entries after the latest checkpoint instead of the whole ledger. Unsafe: an
    entry changed under that checkpoint is not noticed, and the service extends and signs the altered history."""
    queue_size: int = 8192
    enqueue_timeout_ms: float = 50.0
    commit_timeout_ms: float = 5000.0
    batch_max_entries: int = 512
    checkpoint_interval_ms: float = 1000.0
    map_size_mb: int = 1024
    map_max_size_mb: int = 1024 * 1024
    overload_http_status: int = 503
    """HTTP status of the deny sent when the ledger cannot take a decision (backpressure, write failure)."""
    redaction: RedactionConfig = field(default_factory=RedactionConfig)


AUDIT_THREADS = 16
"""Threads of the audit listener: at most this many audit RPCs at once."""


@dataclass
class AuditConfig:
    """The read side (``authzledger.v1.Ledger`` gRPC API) on its own listener, loopback unless exposed on purpose."""

    enabled: bool = True
    addr: str = "127.0.0.1:9192"
    reflection: bool = True
    tls_cert: str = ""
    """PEM server certificate; with ``tls_key`` the listener uses TLS."""
    tls_key: str = ""
    client_ca: str = ""
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    max_streams: int = 8
    """Streaming calls (ListEntries, Tail) at once, in all: fewer than the listener's 16 threads, so that unary
    calls (GetEntry, proofs, receipts) always find one."""
    max_streams_per_client: int = 4
    """Streaming calls at once from one client address."""
    tail_idle_timeout_s: float = 300.0
    """A Tail that has sent nothing for this long is ended (OK); clients follow on from where it stopped."""


@dataclass
class WitnessConfig:
    """C2SP tlog-witness endpoints every new checkpoint is submitted to."""

    endpoints: list[str] = field(default_factory=list)
    """Each ``<witness vkey> <add-checkpoint URL prefix>``, e.g. ``w.example+1234abcd+AQ... https://w.example/``."""
    timeout_ms: float = 5000.0
    interval_ms: float = 1000.0


@dataclass
class MetricsConfig:
    """Prometheus ``/metrics`` on its own HTTP listener."""

    enabled: bool = True
    addr: str = "127.0.0.1:9193"


DEFAULT_USER_HEADERS = ("x-user", "x-forwarded-user", "x-auth-request-user", "x-remote-user")
"""Request headers an authenticating proxy sets to name the user (the console's ``user:``), first present wins."""


@dataclass
class ConsoleConfig:
    """The audit console (a read-only web application over the ledger); ``authz-ledger console`` takes the same."""

    enabled: bool = False
    addr: str = "127.0.0.1:9194"
    """Loopback by default. Any other address needs TLS and a ``token_file`` or ``client_ca`` (refused otherwise)."""
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    """PEM CA bundle: browsers must present a client certificate it signed (mutual TLS)."""
    token_file: str = ""
    """A file holding the bearer token every request must carry (the console's login form sets it as a cookie)."""
    index_dir: str = ""
    """Where the console keeps its own index (derived data; default: under ``$XDG_CACHE_HOME/authz-ledger``)."""
    user_headers: list[str] = field(default_factory=lambda: list(DEFAULT_USER_HEADERS))
    """Request headers naming the user, first present wins, when the caller had no mTLS principal."""
    index_headers: list[str] = field(default_factory=list)
    """More request headers whose values ``header:name=value`` finds through the index (others are scanned)."""
    candidate_policies: list[str] = field(default_factory=list)
    """Policies (directories or bundle ``.tar.gz`` files) the replay page may evaluate, named by their file or
    directory name. Only the operator chooses them: a browser never sends one (a policy can call ``http.send``)."""


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    witness: WitnessConfig = field(default_factory=WitnessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    def _resolve_origin(self) -> None:
        if self.ledger.origin:
            return
        if self.ledger.signing_keys:
            from authz_ledger import keys  # only for a key file named on the command line or in the config

            self.ledger.origin = keys.load_signing_key(Path(self.ledger.signing_keys[0]).expanduser()).name
        else:
            self.ledger.origin = DEFAULT_ORIGIN

    def validate(self) -> None:
        self._resolve_origin()
        _one_of("policy.engine", self.policy.engine, ("embedded", "opa"))
        _one_of("policy.on_error", self.policy.on_error, ("grpc_error", "deny"))
        _one_of("ledger.durability", self.ledger.durability, ("sync", "async"))
        _one_of("ledger.redaction.body", self.ledger.redaction.body, ("digest", "remove", "unsafe_keep"))
        _one_of("server.log_format", self.server.log_format, ("plain", "json"))
        _one_of("server.log_level", self.server.log_level.lower(), ("debug", "info", "warning", "error"))
        for key, value in (
            ("policy.timeout_ms", self.policy.timeout_ms),
            ("ledger.queue_size", self.ledger.queue_size),
            ("ledger.batch_max_entries", self.ledger.batch_max_entries),
            ("ledger.checkpoint_interval_ms", self.ledger.checkpoint_interval_ms),
            ("ledger.map_size_mb", self.ledger.map_size_mb),
            ("server.threads", self.server.threads),
            ("policy.embedded.workers", self.policy.embedded.workers),
            ("audit.max_streams", self.audit.max_streams),
            ("audit.max_streams_per_client", self.audit.max_streams_per_client),
            ("audit.tail_idle_timeout_s", self.audit.tail_idle_timeout_s),
        ):
            if not value > 0 or not math.isfinite(value):  # NaN compares false with everything
                raise ConfigError(f"{key} must be positive and finite, got {value}")
        if self.policy.embedded.memory_limit_mb < 0:
            raise ConfigError(
                "policy.embedded.memory_limit_mb must be 0 (no limit) or more, "
                f"got {self.policy.embedded.memory_limit_mb}"
            )
        if self.ledger.redaction.name_pattern:
            try:
                re.compile(self.ledger.redaction.name_pattern)
            except re.error as e:
                raise ConfigError(f"ledger.redaction.name_pattern is not a regular expression: {e}") from e
        if self.server.allowed_client_ids and not self.server.client_ca:
            raise ConfigError(
                "server.allowed_client_ids needs server.client_ca (mutual TLS): without a client certificate there "
                "is no identity to check"
            )
        if self.audit.max_streams >= AUDIT_THREADS:
            raise ConfigError(
                f"audit.max_streams must be below the audit listener's {AUDIT_THREADS} threads (so that unary calls "
                f"always find one), got {self.audit.max_streams}"
            )
        for key, status in (
            ("policy.error_http_status", self.policy.error_http_status),
            ("ledger.overload_http_status", self.ledger.overload_http_status),
        ):
            if not 400 <= status <= 599:
                raise ConfigError(f"{key} must be an HTTP error status (400-599), got {status}")
        if not self.policy.path or self.policy.path.startswith("/") or " " in self.policy.path:
            raise ConfigError(f"policy.path must look like envoy/authz/allow, got {self.policy.path!r}")
        origin = self.ledger.origin
        if not origin or any(c.isspace() or c == "+" for c in origin):
            raise ConfigError(f"ledger.origin must be non-empty without spaces or '+', got {origin!r}")
        if self.policy.engine == "embedded" and not Path(self.policy.source).exists():
            raise ConfigError(f"policy.source {self.policy.source} does not exist")
        if self.policy.proto_descriptor and not Path(self.policy.proto_descriptor).is_file():
            raise ConfigError(f"policy.proto_descriptor {self.policy.proto_descriptor} is not a file")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _apply(obj: Any, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown configuration key {dotted!r} ({where}); known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} must be a mapping ({where})")
            _apply(current, value, where, dotted + ".")
        else:
            setattr(obj, key, _coerce(dotted, hints[key], value, where))


def _coerce(key: str, typ: Any, value: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(typ) is list or isinstance(typ, types.GenericAlias):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    raise ConfigError(f"{key} ({where}) must be {getattr(typ, '__name__', typ)}, got {value!r}")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def dotted_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """Every configuration key, dotted (``ledger.origin``, ``policy.opa.url``)."""
    section = obj if obj is not None else Config()
    out: list[str] = []
    for member in dataclasses.fields(section):
        value = getattr(section, member.name)
        if dataclasses.is_dataclass(value):
            out += dotted_keys(value, f"{prefix}{member.name}.")
        else:
            out.append(f"{prefix}{member.name}")
    return out


def _env_without_section(name: str) -> str:
    """A variable with our prefix but no ``__`` would otherwise be ignored without a word (a typo'd setting the
    operator believes is in force): name the variable and, when one fits, the spelling that was meant."""
    words = name[len(ENV_PREFIX) :].lower()
    meant = [ENV_PREFIX + key.upper().replace(".", "__") for key in dotted_keys() if key.replace(".", "_") == words]
    hint = f"; did you mean {meant[0]}?" if meant else ""
    return (
        f"environment variable {name} names no configuration key: section and key are separated by two "
        f"underscores, {ENV_PREFIX}<SECTION>__<KEY> (e.g. {ENV_PREFIX}LEDGER__ORIGIN){hint}"
    )


def load(
    config_file: str | None = None,
    sets: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build and validate the configuration from every source, in precedence order."""
    cfg = Config()
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_file}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {config_file} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping at the top level")
        _apply(cfg, data, f"in {config_file}")
    env = os.environ if environ is None else environ
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIGURATION_ENV:
            continue
        if "__" not in name:
            raise ConfigError(_env_without_section(name))
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        tree: dict[str, Any] = {}
        _set_dotted(tree, dotted, _scalar(raw))
        _apply(cfg, tree, f"from environment variable {name}")
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        tree = {}
        _set_dotted(tree, key.strip(), _scalar(raw))
        _apply(cfg, tree, f"from --set {item}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            tree = {}
            _set_dotted(tree, dotted, value)
            _apply(cfg, tree, "from the command line")
    cfg.validate()
    return cfg


def as_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
