"""Serving the console: uvicorn on one listener, loopback unless exposed on purpose, TLS and client certificates as
the audit listener has them.

Fail closed: a console on an address other than loopback must be protected, so it refuses to start unless it
has TLS *and* either a bearer token or client certificates (mutual TLS). A token over plaintext would be readable
on the wire; plaintext on loopback is the default for one operator on one host.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import ssl
import threading
from pathlib import Path

import uvicorn

from authz_ledger.config import ConsoleConfig
from authz_ledger.console.app import build_app
from authz_ledger.console.context import ConsoleContext
from authz_ledger.console.fleet import Fleet
from authz_ledger.errors import ConfigError

log = logging.getLogger(__name__)


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"console address {addr!r}: want host:port")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (":port" asks for every interface, on purpose)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    if not path:
        return ""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read the console token file {path}: {e.strerror}") from e
    if len(token) < 16:
        raise ConfigError(f"the console token in {path} is shorter than 16 characters: use a long random token")
    return token


def check_exposure(listener: ConsoleConfig) -> None:
    host, _ = split_addr(listener.addr)
    if bool(listener.tls_cert) != bool(listener.tls_key):
        raise ConfigError("console: give both tls_cert and tls_key, or neither")
    if listener.client_ca and not listener.tls_cert:
        raise ConfigError("console: client_ca needs TLS (tls_cert and tls_key)")
    if is_loopback(host):
        return
    if not listener.tls_cert or not (listener.token_file or listener.client_ca):
        raise ConfigError(
            f"console: {listener.addr} is not loopback; exposing the ledger's decisions needs TLS (tls_cert, "
            "tls_key) and a token_file or client_ca, so that only those you choose can read them"
        )


class RunningConsole:
    """A console started in a thread of its own (inside ``serve``, or a test); :meth:`stop` ends it."""

    def __init__(
        self, server: uvicorn.Server, sock: socket.socket, ctx: ConsoleContext, fleet: Fleet | None = None
    ) -> None:
        self.server, self.sock, self.ctx, self.fleet = server, sock, ctx, fleet
        self.port: int = sock.getsockname()[1]
        self.thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console", daemon=True)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.fleet is not None:
            self.fleet.stop()
        self.ctx.stop()
        self.sock.close()


def prepare(
    ctx: ConsoleContext, listener: ConsoleConfig, fleet: Fleet | None = None
) -> tuple[uvicorn.Server, socket.socket]:
    """The uvicorn server and its bound socket (bound now, so a busy port fails at start, not later)."""
    check_exposure(listener)
    host, port = split_addr(listener.addr)
    tls = bool(listener.tls_cert)
    app = build_app(ctx, token=read_token(listener.token_file), secure_cookie=tls, fleet=fleet)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        ssl_certfile=listener.tls_cert or None,
        ssl_keyfile=listener.tls_key or None,
        ssl_ca_certs=listener.client_ca or None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if listener.client_ca else ssl.CERT_NONE,
        timeout_graceful_shutdown=2,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"console cannot listen on {listener.addr}: {e.strerror}") from e
    sock.listen(128)
    sock.set_inheritable(True)
    return uvicorn.Server(config), sock


def start_console(ctx: ConsoleContext, listener: ConsoleConfig, fleet: Fleet | None = None) -> RunningConsole:
    """Start the indexer (one per shard of a ``fleet``, whose first shard is ``ctx``) and the console in
    background threads."""
    server, sock = prepare(ctx, listener, fleet)
    if fleet is not None:
        fleet.start_indexers()
    else:
        ctx.start_indexer()
    running = RunningConsole(server, sock, ctx, fleet)
    running.thread.start()
    return running


def run_console(ctx: ConsoleContext, cfg: ConsoleConfig, fleet: Fleet | None = None) -> None:
    """Serve until SIGINT / SIGTERM, then stop cleanly (the command exits 0, as ``serve`` does)."""
    running = start_console(ctx, cfg, fleet)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheme = "https" if cfg.tls_cert else "http"
    log.info("console on %s://%s:%d/", scheme, split_addr(cfg.addr)[0], running.port)
    while not stop.wait(1.0):
        if not running.thread.is_alive():  # uvicorn ended on its own: an error it has logged
            raise ConfigError("the console's HTTP server stopped; see the log above")
    running.stop()
