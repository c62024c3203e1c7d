"""What counts as a secret in a request: names on a researched list, names that match a pattern, and values
that look like credentials whatever their name.

The lists gather the credential-bearing headers and query parameters of the HTTP standards (RFC 7235
``Authorization``, RFC 6265 cookies), OAuth 2.0 and OpenID Connect (RFC 6749 / 6750 / 7636 tokens, codes, client
secrets and assertions), the major clouds (AWS SigV4 pre-signed URLs, Google Cloud API keys, IAP and signed URLs,
Azure Functions keys, API Management subscription keys, SAS signatures, App Service auth tokens), identity
proxies (oauth2-proxy, Cloudflare Access, Istio/Envoy JWT forwarding) and common platforms (GitLab, Vault,
Consul, Datadog, Sentry, webhook signatures). The name pattern follows the default of Datadog's obfuscator for
query keys (passwords, pass phrases, secrets, API / private / public keys, tokens, consumer ids and secrets,
signatures, bearer, authorization) and adds session ids and credentials.

Names compare case-insensitively, with ``-`` and ``_`` alike and a trailing ``[]`` / ``[n]`` (PHP and Rails array
forms, ``access_token[]``) ignored. Values are caught by shape -- an HTTP authentication scheme followed by a
credential, a JWT, or a long, high-entropy string of token characters -- and digested with a marker that says
which shape matched. Hex strings (request ids, trace ids, UUIDs) are never taken for credentials.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

DEFAULT_DIGEST_HEADERS = (
    # RFC 7235 / RFC 6265
    "authorization", "proxy-authorization", "cookie", "set-cookie",
    # API keys and tokens in custom headers
    "x-api-key", "api-key", "apikey", "x-apikey", "x-auth-token", "x-access-token", "x-api-token",
    "x-refresh-token", "x-id-token", "x-session-token", "x-session-id", "x-csrf-token", "x-xsrf-token",
    "x-client-secret", "x-authorization", "authentication", "x-jwt-assertion", "x-jwt",
    # identity-aware proxies
    "x-forwarded-access-token", "x-auth-request-access-token", "x-auth-request-id-token",
    "cf-access-jwt-assertion", "cf-access-token", "x-goog-iap-jwt-assertion",
    "x-ms-token-aad-id-token", "x-ms-token-aad-access-token", "x-ms-token-aad-refresh-token",
    # clouds
    "x-amz-security-token", "x-goog-api-key", "x-functions-key", "ocp-apim-subscription-key",
    # platforms
    "private-token", "x-gitlab-token", "job-token", "x-vault-token", "x-consul-token", "x-nomad-token",
    "dd-api-key", "dd-application-key", "x-sentry-auth", "x-hub-signature", "x-hub-signature-256",
    "x-shopify-access-token", "x-twilio-signature", "x-slack-signature",
)  # fmt: skip

DEFAULT_DIGEST_QUERY_PARAMS = (
    # OAuth 2.0 / OpenID Connect
    "access_token", "id_token", "refresh_token", "code", "code_verifier", "client_secret", "client_assertion",
    "assertion", "subject_token", "actor_token", "device_code", "jwt",
    # API keys, passwords, sessions
    "api_key", "apikey", "key", "token", "auth", "auth_token", "password", "passwd", "pwd", "pass", "secret",
    "session", "sessionid", "session_id", "sid", "private_token", "otp",
    # signed URLs: AWS SigV4, Google Cloud Storage, Azure SAS, generic
    "x-amz-signature", "x-amz-security-token", "x-amz-credential", "x-goog-signature", "x-goog-credential",
    "sig", "signature",
)  # fmt: skip

DEFAULT_NAME_PATTERN = (
    r"p(?:ass)?w(?:or)?d|pass_?phrase|secret|(?:api|private|public|access|secret|subscription)_?key"
    r"|token|consumer_?(?:id|key|secret)|sign(?:ed|ature)|bearer|authori[sz]ation|credential|session_?id"
)
"""Matched (searched) in canonical names: any name containing one of these is digested."""

_ARRAY_SUFFIX = re.compile(r"(?:\[[^\]]*\])+$")


def canonical_name(name: str) -> str:
    """``Access-Token[]`` -> ``access_token``: how names are compared."""
    return _ARRAY_SUFFIX.sub("", name.lower()).replace("-", "_")


class NameRules:
    """Whether a header or parameter name marks its value as secret: on the list, or matching the pattern."""

    def __init__(self, names: frozenset[str], pattern: str) -> None:
        self.names = frozenset(canonical_name(n) for n in names)
        self._pattern = re.compile(pattern) if pattern else None
        self.is_secret = lru_cache(maxsize=4096)(self._is_secret)

    def _is_secret(self, name: str) -> bool:
        canon = canonical_name(name)
        return canon in self.names or (self._pattern is not None and self._pattern.search(canon) is not None)


_SCHEME = re.compile(r"(?i)(?:bearer|basic|digest|negotiate|token|apikey|sso-key)\s+\S{8,}")
# Possessive quantifiers and a lookbehind: linear on hostile input ("eyJ" repeated 20,000 times took a second
# with plain quantifiers, which backtrack from every "eyJ" to the end of the run).
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_.~-]{32,}+")
MAX_SCANNED = 4096
"""Only this many leading characters of a value are examined for a credential's shape: every value of every
Check passes here, and a header may be 60 KiB. (Credentials are far shorter; what a client hides past 4 KiB of
padding is its own.)"""
MIN_TOKEN_LENGTH = 32
MIN_ENTROPY_BITS = 4.0
"""Bits per character (Shannon) from which a 32+ character run of token characters counts as a credential.
English words and paths stay well below; random base64 and base62 keys of that length reach 4.5-5."""


def value_shape(value: str) -> str:
    """Why ``value`` looks like a credential (``bearer``, ``jwt``, ``entropy``), or "" if it does not.

    Runs on every header value of every Check, so the common cases leave early: short values, values whose first
    character cannot start a scheme, and runs of one case (hex and UUID ids) are decided by C string methods."""
    if len(value) < 12:
        return ""
    value = value[:MAX_SCANNED]
    if value[0] in _SCHEME_INITIALS and _SCHEME.match(value):
        return "bearer"
    if "eyJ" in value and _JWT.search(value):
        return "jwt"
    if len(value) >= MIN_TOKEN_LENGTH:
        for run in _TOKEN_RUN.findall(value):
            if _random_looking(run):
                return "entropy"
    return ""


_SCHEME_INITIALS = frozenset("bBdDnNtTaAsS")
_DIGIT = re.compile(r"\d")


def _random_looking(run: str) -> bool:
    if run.islower() or run.isupper() or not _DIGIT.search(run):
        return False  # hex ids, UUIDs, lower-case slugs, dates, words: not credentials
    counts = Counter(run)
    entropy = -sum(n / len(run) * math.log2(n / len(run)) for n in counts.values())
    return entropy >= MIN_ENTROPY_BITS


def may_hold_token(text: str) -> bool:
    """A cheap pre-check: could ``text`` contain a credential-shaped value at all?"""
    if len(text) < 12:
        return False
    text = text[:MAX_SCANNED]
    if "eyJ" in text or (len(text) >= MIN_TOKEN_LENGTH and _TOKEN_RUN.search(text) is not None):
        return True
    return len(text) >= 20 and _SCHEME.search(text) is not None
