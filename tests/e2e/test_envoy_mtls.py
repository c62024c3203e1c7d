"""Mutual TLS on the Check listener, through real Envoy: Envoy presents the mesh identity it was given and its
Checks are decided and recorded; a caller with another identity, a certificate from another CA, or no TLS at all
gets nothing recorded; certificates rotate without a restart. Certificates generated here with ``cryptography``."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.record import entry
from authz_ledger.server import Running
from tests.conftest import StartService
from tests.support.envoy_harness import AUTHZ_CLUSTER, ENVOY_YAML, Envoy, start_envoy
from tests.support.pki import Pki, make_pki
from tests.support.waits import wait_until

ENVOY_ID = "spiffe://mesh.example/ns/edge/sa/envoy"
INTRUDER_ID = "spiffe://mesh.example/ns/other/sa/intruder"


@dataclass
class Mesh:
    pki: Pki
    files: dict[str, str]
    authz: Running
    envoy: Envoy

    def entries(self) -> list[entry.LedgerEntry]:
        assert self.authz.ledger is not None
        return [entry.decode(raw) for _, raw in self.authz.ledger.store.iter_entries()]


def envoy_with_mtls(files: dict[str, str], out: Path) -> Path:
    """envoy/envoy.yaml with TLS to the authz cluster: Envoy's client certificate, our CA, the server's name."""
    doc = yaml.safe_load(ENVOY_YAML.read_text())
    [cluster] = [c for c in doc["static_resources"]["clusters"] if c["name"] == AUTHZ_CLUSTER]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": files["client_cert"]},
                        "private_key": {"filename": files["client_key"]},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": files["ca"]},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "localhost"}}],
                },
            },
        },
    }
    out.write_text(yaml.safe_dump(doc))
    return out


@pytest.fixture
def mesh(tmp_path: Path, authz_service: StartService) -> Iterator[Mesh]:
    pki = make_pki(client_ids=(ENVOY_ID,), rogue_ids=(INTRUDER_ID,))
    files = pki.write(tmp_path)
    authz = authz_service(
        f"server.tls_cert={files['server_cert']}",
        f"server.tls_key={files['server_key']}",
        f"server.client_ca={files['ca']}",
        f"server.allowed_client_ids={ENVOY_ID}",
    )
    config = envoy_with_mtls(files, tmp_path / "envoy-mtls.yaml")
    with start_envoy(tmp_path / "envoy", authz.port, config) as envoy:
        yield Mesh(pki, files, authz, envoy)


def _check(mesh: Mesh, credentials: grpc.ChannelCredentials | None) -> external_auth_pb2.CheckResponse:
    target = f"localhost:{mesh.authz.port}"
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.method, req.attributes.request.http.path = "GET", "/api/items"
    try:
        response: external_auth_pb2.CheckResponse = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            req, timeout=5
        )
        return response
    finally:
        channel.close()


def test_envoy_with_the_mesh_identity_is_decided_and_recorded(mesh: Mesh) -> None:
    allowed = mesh.envoy.request("GET", "/api/items", {"x-user": "alice"})
    denied = mesh.envoy.request("DELETE", "/orders/7", {"x-user": "bob"})
    assert (allowed.status, denied.status) == (200, 403)
    assert [e.outcome for e in mesh.entries()] == [entry.OUTCOME_ALLOW, entry.OUTCOME_DENY]


@pytest.mark.parametrize(
    ("who", "code"),
    [
        pytest.param(
            "intruder",
            grpc.StatusCode.PERMISSION_DENIED,
            id="a certificate of our CA naming another identity is refused",
        ),
        pytest.param("rogue-ca", grpc.StatusCode.UNAVAILABLE, id="a certificate of another CA fails the handshake"),
        pytest.param("no-certificate", grpc.StatusCode.UNAVAILABLE, id="TLS without a client certificate fails"),
        pytest.param("plaintext", grpc.StatusCode.UNAVAILABLE, id="plaintext fails"),
    ],
)
def test_callers_outside_the_mesh_get_nothing_recorded(mesh: Mesh, who: str, code: grpc.StatusCode) -> None:
    pki = mesh.pki
    if who == "intruder":
        creds = grpc.ssl_channel_credentials(pki.ca, pki.rogue_key, pki.rogue_cert)
    elif who == "rogue-ca":
        other = make_pki()
        creds = grpc.ssl_channel_credentials(pki.ca, other.rogue_key, other.rogue_cert)
    elif who == "no-certificate":
        creds = grpc.ssl_channel_credentials(pki.ca)
    else:
        creds = None
    with pytest.raises(grpc.RpcError) as exc:
        _check(mesh, creds)
    assert exc.value.code() == code
    assert mesh.entries() == []
    refused = mesh.authz.metrics.registry.get_sample_value("authz_ledger_refused_callers_total")
    assert refused == (1 if who == "intruder" else 0)
    # A caller with the mesh identity is still served.
    ok = _check(mesh, grpc.ssl_channel_credentials(pki.ca, pki.client_key, pki.client_cert))
    assert ok.status.code in (0, 7) and len(mesh.entries()) == 1


def _served_certificate_serial(mesh: Mesh) -> int:
    ctx = ssl.create_default_context(cafile=mesh.files["ca"])
    ctx.load_cert_chain(mesh.files["client_cert"], mesh.files["client_key"])
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", mesh.authz.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_rotated_server_certificate_is_served_without_a_restart(mesh: Mesh) -> None:
    before = _served_certificate_serial(mesh)
    for name in ("server_cert", "server_key"):  # as cert-manager does: new files renamed into place
        staged = Path(mesh.files[name] + ".new")
        staged.write_bytes(getattr(mesh.pki, f"next_{name}"))
        os.replace(staged, mesh.files[name])
    expected = x509.load_pem_x509_certificate(mesh.pki.next_server_cert).serial_number
    assert expected != before
    wait_until(lambda: _served_certificate_serial(mesh), lambda s: s == expected, message="no rotation")
    # Envoy's existing connection keeps working; a Check still goes through.
    assert mesh.envoy.request("GET", "/api/items", {"x-user": "alice"}).status == 200
