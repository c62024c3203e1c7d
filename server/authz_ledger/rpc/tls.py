"""TLS and mutual TLS for the gRPC listeners, with certificates that rotate without a restart, and the client
identities a mutual-TLS peer presents.

Both listeners (the Check listener, ``server.*``; the audit API, ``audit.*``) take the same three files: a PEM
certificate chain and key, and optionally a CA bundle that client certificates must chain to. A half-configured
set is an error, never a silent fallback to plaintext (fail closed).

Rotation: grpcio's dynamic server credentials ask :meth:`ReloadingCertificates.fetch` before each new TLS
handshake; it compares the files' modification times and sizes with what it loaded and re-reads them when they
changed (cert-manager and Kubernetes secret volumes replace them in place). A half-written or unreadable
rotation keeps the previous certificates and logs why: connections keep working with the last good set.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509

from authz_ledger.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of one listener; ``prefix`` names its configuration keys in errors (``server``, ``audit``)."""

    prefix: str
    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def enabled(self) -> bool:
        if not self.cert and not self.key:
            if self.client_ca:
                raise ConfigError(
                    f"{self.prefix}.client_ca is set but {self.prefix}.tls_cert / {self.prefix}.tls_key are not: "
                    "mutual TLS needs TLS"
                )
            return False
        if not (self.cert and self.key):
            raise ConfigError(f"{self.prefix}.tls_cert and {self.prefix}.tls_key must be set together")
        return True


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from e


def _stamp(paths: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(Path(p).expanduser())
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


class ReloadingCertificates:
    """The current certificate configuration of one listener, re-read when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._paths = [p for p in (files.cert, files.key, files.client_ca) if p]
        self.reloads = 0
        self.initial = self._load()  # first: a missing or unreadable file is a ConfigError naming its key
        self._stamp = _stamp(self._paths)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        f = self.files
        cert = _read(f"{f.prefix}.tls_cert", f.cert)
        key = _read(f"{f.prefix}.tls_key", f.key)
        ca = _read(f"{f.prefix}.client_ca", f.client_ca) if f.client_ca else None
        if b"PRIVATE KEY" not in key or b"CERTIFICATE" not in cert or (ca is not None and b"CERTIFICATE" not in ca):
            raise ConfigError(f"{f.prefix}.tls_cert / tls_key / client_ca must be PEM certificates and a PEM key")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's fetcher: a new configuration when the files changed, else None (keep the current one)."""
        with self._lock:
            try:
                stamp = _stamp(self._paths)
                if stamp == self._stamp:
                    return None
                config = self._load()
            except (OSError, ConfigError) as e:
                log.warning("%s TLS files changed but cannot be loaded (%s); keeping the previous ones",
                            self.files.prefix, e)  # fmt: skip
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("%s TLS certificates reloaded from %s", self.files.prefix, self.files.cert)
            return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial,
            self.fetch,  # type: ignore[arg-type]  # grpcio documents None as "keep the current configuration"
            require_client_authentication=bool(self.files.client_ca),
        )


def server_credentials(files: TlsFiles) -> tuple[grpc.ServerCredentials | None, ReloadingCertificates | None]:
    """(credentials, their reloader) for ``files``; (None, None) for plaintext."""
    if not files.enabled:
        return None, None
    certificates = ReloadingCertificates(files)
    return certificates.credentials(), certificates


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What a mutual-TLS peer's certificate says it is, by kind: an allowed SPIFFE ID must be a URI SAN, an
    allowed DNS name a DNS SAN -- never a common name or an e-mail SAN that merely spells the same text."""

    uris: frozenset[str]
    dns_names: frozenset[str]
    common_name: str  # considered only when the certificate has no subject alternative names (RFC 6125 §6.4.4)

    def matches(self, allowed: str) -> bool:
        if "://" in allowed:
            return allowed in self.uris
        if self.uris or self.dns_names:
            return allowed in self.dns_names
        return allowed == self.common_name

    def names(self) -> list[str]:
        return sorted(self.uris | self.dns_names) or ([self.common_name] if self.common_name else [])


_NO_IDENTITY = ClientIdentity(frozenset(), frozenset(), "")


@lru_cache(maxsize=1024)
def _identity_of(pem: bytes) -> ClientIdentity:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = frozenset(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns_names = frozenset(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris = dns_names = frozenset()
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    return ClientIdentity(uris, dns_names, common_name)


def client_identity(context: grpc.ServicerContext) -> ClientIdentity:
    """The identity in the peer's client certificate (parsed once per certificate); empty without one."""
    auth = cast(Mapping[str, list[bytes]], context.auth_context())  # each property: a list of values
    pems = auth.get("x509_pem_cert", [])
    if not pems:
        return _NO_IDENTITY
    try:
        return _identity_of(bytes(pems[0]))
    except ValueError:
        return _NO_IDENTITY
