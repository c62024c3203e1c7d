"""What every gRPC listener of this service shares: address syntax and the reflection descriptor pool.

Both the ext_authz listener (server.py) and the audit listener (audit.py) use these, so that ``:port`` means
the same thing on both and ``grpcurl describe Service.Method`` works on both.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from google.protobuf import descriptor_pool


def grpc_address(addr: str) -> str:
    """opa-envoy-plugin address syntax to gRPC's: ``:9191`` means every interface; unix:// passes through."""
    if addr.startswith("unix:"):
        return addr
    if addr.startswith(":"):
        return "[::]" + addr
    return addr


class MethodAwarePool:
    """The default descriptor pool, plus method symbols for reflection (``grpcurl describe Svc.Method``).

    grpcio-reflection resolves a symbol with ``FindFileContainingSymbol``, which in the Python protobuf runtime
    does not know method names (grpc/grpc#34743), so describing a method failed with "Symbol not found". A
    method's file is its service's file.
    """

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            service = self._pool.FindServiceByName(service_name)  # KeyError -> NOT_FOUND, as before
            if service.FindMethodByName(method) is None:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def is_loopback(address: str) -> bool:
    """A listen address only this host can reach (loopback, or a unix socket)."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
