"""A caller's identity is read by kind: an allowed SPIFFE ID must be a URI SAN of the client certificate, an
allowed DNS name a DNS SAN; a common name or an e-mail SAN that spells the same text does not count."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz_ledger.rpc.tls import _identity_of

ENVOY = "spiffe://cluster.local/ns/gw/sa/envoy"


def _pem(common_name: str, sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("common_name", "sans", "allowed", "matches"),
    [
        pytest.param("envoy", [x509.UniformResourceIdentifier(ENVOY)], ENVOY, True, id="the SPIFFE ID as a URI SAN"),
        pytest.param(ENVOY, [x509.UniformResourceIdentifier("spiffe://other/x")], ENVOY, False,
                     id="a common name spelling the SPIFFE ID does not count"),
        pytest.param("x", [x509.RFC822Name(ENVOY)], ENVOY, False, id="an e-mail SAN spelling it does not count"),
        pytest.param("x", [x509.DNSName(ENVOY)], ENVOY, False, id="a DNS SAN spelling it does not count"),
        pytest.param("x", [x509.DNSName("envoy.mesh.example")], "envoy.mesh.example", True,
                     id="a DNS name as a DNS SAN"),
        pytest.param("x", [x509.UniformResourceIdentifier("envoy.mesh.example")], "envoy.mesh.example", False,
                     id="a DNS name only as a URI SAN does not count"),
        pytest.param("envoy.mesh.example", [], "envoy.mesh.example", True,
                     id="the common name counts only without any SAN"),
        pytest.param("envoy.mesh.example", [x509.DNSName("other.example")], "envoy.mesh.example", False,
                     id="the common name is ignored when SANs are present"),
    ],
)  # fmt: skip
def test_identities_match_only_by_their_kind(
    common_name: str, sans: list[x509.GeneralName], allowed: str, matches: bool
) -> None:
    assert _identity_of(_pem(common_name, sans)).matches(allowed) is matches
