"""Certificates for the TLS tests, generated with ``cryptography``: a CA, a server certificate, client
certificates (with subject alternative names, e.g. SPIFFE IDs), and a client certificate the server must refuse."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    rogue_cert: bytes
    rogue_key: bytes
    next_server_cert: bytes = b""
    """Another server certificate for localhost from the same CA: what a rotation installs."""
    next_server_key: bytes = b""

    def write(self, d: Path) -> dict[str, str]:
        paths = {}
        for name in (
            "ca", "server_cert", "server_key", "client_cert", "client_key", "rogue_cert", "rogue_key",
            "next_server_cert", "next_server_key",
        ):  # fmt: skip
            p = d / f"{name}.pem"
            p.write_bytes(getattr(self, name))
            paths[name] = str(p)
        return paths


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    client_ids: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if client_ids:
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(i) if ":" in i else x509.DNSName(i) for i in client_ids
        ]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(client_ids: tuple[str, ...] = (), rogue_ids: tuple[str, ...] = ()) -> Pki:
    """A CA; a server certificate for localhost / 127.0.0.1; a client certificate it signed (with ``client_ids``
    as URI / DNS subject alternative names); a "rogue" client certificate, signed by another CA unless
    ``rogue_ids`` is given, in which case it is signed by the same CA with those names instead."""
    pem = serialization.Encoding.PEM
    ca_key, rogue_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("audit test CA", ca_key, None, ca_key, ca=True)
    rogue_ca = _cert("someone else's CA", rogue_ca_key, None, rogue_ca_key, ca=True)
    server_key, client_key, rogue_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server = _cert("localhost", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _cert("auditor", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, client_ids=client_ids)
    if rogue_ids:
        rogue = _cert("intruder", rogue_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, client_ids=rogue_ids)
    else:
        rogue = _cert("auditor", rogue_key, rogue_ca, rogue_ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    next_key = ec.generate_private_key(ec.SECP256R1())
    next_server = _cert("localhost", next_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    return Pki(
        ca.public_bytes(pem),
        server.public_bytes(pem),
        _pem_key(server_key),
        client.public_bytes(pem),
        _pem_key(client_key),
        rogue.public_bytes(pem),
        _pem_key(rogue_key),
        next_server.public_bytes(pem),
        _pem_key(next_key),
    )
