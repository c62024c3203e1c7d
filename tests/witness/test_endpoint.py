"""Parsing ``witness.endpoints``: ``<witness vkey> <submission URL prefix>``, or a configuration error."""

from __future__ import annotations

import pytest

from authz_ledger.errors import ConfigError
from authz_ledger.tlog.cosignature import Cosigner
from authz_ledger.witness.endpoint import WitnessEndpoint


def make_cosigner_vkey(name: str) -> str:
    return Cosigner.generate(name).vkey()


@pytest.mark.parametrize(
    ("case", "spec", "message"),
    [
        ("a URL without a key", "http://w.example/", "want '<witness vkey> <URL prefix>'"),
        ("a plain 0x01 note key", "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs http://w/", "0x04"),
        ("a non-HTTP URL", "{vkey} ftp://w.example/", "http:// or https://"),
    ],
)
def test_malformed_witness_endpoints_are_configuration_errors(case: str, spec: str, message: str) -> None:
    spec = spec.format(vkey=make_cosigner_vkey("witness.test/w"))
    with pytest.raises(ConfigError, match=message):
        WitnessEndpoint.parse(spec)


def test_an_endpoint_prefix_gets_add_checkpoint_appended_once() -> None:
    vkey = make_cosigner_vkey("witness.test/w")
    assert WitnessEndpoint.parse(f"{vkey} https://w.example/sub/").url == "https://w.example/sub/add-checkpoint"
