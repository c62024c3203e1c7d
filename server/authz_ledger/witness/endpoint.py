"""A configured witness: the ``witness.endpoints`` spelling ``<witness vkey> <submission URL prefix>``, parsed.

Parsed once at start so that a malformed endpoint is a ConfigError before anything is served, not a failure the
publisher's thread would only log.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz_ledger.errors import ConfigError, NoteError
from authz_ledger.tlog.cosignature import CosignatureVerifier


@dataclass(frozen=True)
class WitnessEndpoint:
    """One configured witness: its cosigner key and its ``add-checkpoint`` URL."""

    verifier: CosignatureVerifier
    url: str

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def parse(cls, spec: str) -> WitnessEndpoint:
        """``<witness vkey> <submission URL prefix>`` (config ``witness.endpoints``); ConfigError if malformed."""
        parts = spec.split()
        if len(parts) != 2:
            raise ConfigError(f"witness endpoint {spec!r}: want '<witness vkey> <URL prefix>'")
        vkey, prefix = parts
        try:
            verifier = CosignatureVerifier.from_vkey(vkey)
        except NoteError as e:
            raise ConfigError(f"witness endpoint {spec!r}: {e}") from e
        scheme = prefix.partition("://")[0].lower()
        if scheme not in ("http", "https") or "://" not in prefix:
            raise ConfigError(f"witness endpoint {spec!r}: the URL prefix must be http:// or https://")
        return cls(verifier, prefix.rstrip("/") + "/add-checkpoint")
