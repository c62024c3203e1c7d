"""Redaction applied to the policy input and result before anything is written to the ledger.

The policy sees the request as Envoy sent it; the ledger must never hold a bearer token, cookie, API key or
request body in plaintext -- neither those of the request nor those a policy hands to Envoy in its result
(a token injected into the upstream request's headers, a cookie set on the response). Sensitive values are
replaced by a keyed digest, ``hmac-sha256:<hex>``, computed with a per-ledger secret kept beside the signing
key: equal values stay correlatable across entries (the same token used twice shows the same digest) while
nobody without the secret can test guesses against them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from authz_ledger.record import gojson

DEFAULT_DIGEST_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
DEFAULT_DIGEST_QUERY_PARAMS = ("access_token", "id_token", "api_key", "apikey")
BODY_FIELDS = ("body", "rawBody")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
PATH_HEADERS = frozenset({":path", "x-envoy-original-path", "referer"})
"""Headers that carry a URL, query string included: Envoy copies ``:path`` into the CheckRequest's headers."""
RESULT_URL_HEADERS = PATH_HEADERS | {"location", "content-location"}
"""Headers of a policy result that carry a URL (a redirect to a login page, say)."""


@dataclass(frozen=True, slots=True)
class RedactionRules:
    digest_headers: frozenset[str] = frozenset(DEFAULT_DIGEST_HEADERS)
    remove_headers: frozenset[str] = frozenset()
    digest_query_params: frozenset[str] = frozenset(DEFAULT_DIGEST_QUERY_PARAMS)
    body: str = "digest"
    """``digest`` (default), ``remove``, or ``unsafe_keep`` (the raw body goes into the ledger)."""

    @classmethod
    def build(
        cls,
        digest_headers: Iterable[str],
        remove_headers: Iterable[str],
        digest_query_params: Iterable[str],
        body: str,
    ) -> RedactionRules:
        return cls(
            frozenset(h.lower() for h in digest_headers),
            frozenset(h.lower() for h in remove_headers),
            frozenset(digest_query_params),
            body,
        )


class Redactor:
    def __init__(self, rules: RedactionRules, secret: bytes) -> None:
        self.rules = rules
        self._secret = secret
        self._header_names = rules.digest_headers | rules.remove_headers
        self._query_names = frozenset(name.lower() for name in rules.digest_query_params)
        self._special_headers = self._header_names | PATH_HEADERS
        self._result_special_headers = self._header_names | RESULT_URL_HEADERS
        self._hmac = hmac.new(secret, digestmod=hashlib.sha256)

    def digest(self, value: str | bytes) -> str:
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        mac = self._hmac.copy()  # the keyed state is prepared once; copying it skips the key schedule
        mac.update(data)
        return "hmac-sha256:" + mac.hexdigest()

    def redact_path(self, path: str) -> str:
        """Digest the values of sensitive query parameters inside a request path (or an absolute URL).

        Names match case-insensitively and ``;`` separates parameters too: some backends read both, and
        redacting too much is acceptable here where too little is not.
        """
        head, sep, query = path.partition("?")
        names = self._query_names
        if not sep or not names:
            return path
        lowered = query.lower()
        if "%" not in query and not any(name in lowered for name in names):
            return path  # cheap pre-check: no sensitive name (nor an escape hiding one), no need to parse
        pairs = parse_qsl(query.replace(";", "&"), keep_blank_values=True)
        if not any(k.lower() in names for k, _ in pairs):
            return path
        parts = [
            f"{quote(k, safe='')}={quote(self.digest(v) if k.lower() in names else v, safe=':')}" for k, v in pairs
        ]
        return head + "?" + "&".join(parts)

    def redact_message(self, message: str) -> str:
        """An error message safe to store and log: quoted fragments (Go %q style, as parse errors quote the body
        or path text they choke on) become digests, unless bodies are kept on purpose (``unsafe_keep``)."""
        if self.rules.body == "unsafe_keep" or '"' not in message:
            return message
        return _QUOTED.sub(lambda m: '"' + self.digest(m.group(0)[1:-1]) + '"', message)

    def _redact_header_map(self, header_map: Any) -> Any:
        """Envoy's ``encode_raw_headers`` form: ``headerMap.headers[] = {key, value | rawValue}``."""
        if not isinstance(header_map, dict) or not isinstance(header_map.get("headers"), list):
            return header_map
        out = []
        for item in header_map["headers"]:
            if not isinstance(item, dict):
                out.append(item)
                continue
            name = str(item.get("key", "")).lower()
            if name in self.rules.remove_headers:
                continue
            item = dict(item)  # noqa: PLW2901 - a redacted copy replaces the original
            for field in ("value", "rawValue"):
                if field in item and name in self.rules.digest_headers:
                    item[field] = self.digest(str(item[field]))
                elif field == "value" and field in item and name in PATH_HEADERS:
                    item[field] = self.redact_path(str(item[field]))
            if "rawValue" in item and name in PATH_HEADERS:
                item["rawValue"] = self.digest(str(item["rawValue"]))  # base64 of a URL: digest it whole
            out.append(item)
        return {**header_map, "headers": out}

    def needs_redaction(self, http: dict[str, Any]) -> bool:
        headers = http.get("headers")
        if headers:
            if not self._header_names.isdisjoint(headers):
                return True
            # Envoy sends lower-case names; any other client may not, so compare lower-cased too.
            if not all(name.islower() for name in headers) and any(
                name.lower() in self._header_names for name in headers
            ):
                return True
        if self.rules.body != "unsafe_keep" and ("body" in http or "rawBody" in http):
            return True
        if "headerMap" in http:
            return True
        if not self.rules.digest_query_params:
            return False
        if "?" in http.get("path", ""):
            return True
        return isinstance(headers, dict) and any("?" in str(headers.get(name, "")) for name in PATH_HEADERS)

    def redact_result(self, result: Any) -> Any:
        """A copy of a policy result safe to store; the original (what Envoy is answered with) is not modified.

        The header options of an object result (``headers``, ``response_headers_to_add``: ``{name: value |
        [values]}`` or a list of such objects) get the request headers' rules, URL-valued ones (``location``)
        the query parameters' rules, as does ``query_parameters_to_set``. A result with nothing to redact is
        returned as is. Not redacted: ``dynamic_metadata`` and a deny ``body`` (free-form: policies must not put
        credentials there).
        """
        if not isinstance(result, dict):
            return result
        out = result
        for key in ("headers", "response_headers_to_add"):
            value = result.get(key)
            redacted = self._redact_header_options(value)
            if redacted is not value:
                out = {**out, key: redacted}
        params = result.get("query_parameters_to_set")
        if isinstance(params, dict) and any(str(k).lower() in self._query_names for k in params):
            out = dict(out)
            out["query_parameters_to_set"] = {
                k: self._digest_any(v) if str(k).lower() in self._query_names else v for k, v in params.items()
            }
        return out

    def _redact_header_options(self, value: Any) -> Any:
        """Header objects at any depth of lists: a result of the wrong shape is recorded too (as a policy error),
        so its secrets must be digested like those of a well-formed one."""
        if isinstance(value, dict):
            if all(str(name).lower() not in self._result_special_headers for name in value):
                return value
            out = {}
            for name, v in value.items():
                key = str(name).lower()
                if key in self.rules.remove_headers:
                    continue
                if key in self.rules.digest_headers:
                    out[name] = self._digest_any(v)
                elif key in RESULT_URL_HEADERS:  # a redirect URL carries query secrets like a request path
                    out[name] = (
                        [self.redact_path(u) if isinstance(u, str) else u for u in v]
                        if isinstance(v, list)
                        else (self.redact_path(v) if isinstance(v, str) else v)
                    )
                else:
                    out[name] = v
            return out
        if isinstance(value, list):
            items = [self._redact_header_options(v) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value

    def _digest_any(self, value: Any) -> Any:
        """A string is digested; each item of a list in turn; any other value (an object, a number: a result the
        contract rejects) is digested whole, as its canonical JSON."""
        if isinstance(value, str):
            return self.digest(value)
        if isinstance(value, list):
            return [self._digest_any(v) for v in value]
        return self.digest(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))

    def redact_input(self, document: dict[str, Any]) -> dict[str, Any]:
        """A copy of the input document safe to store; the original (the policy's view) is not modified.

        Only the containers on the way to a redacted value are copied, so the common case stays cheap.
        """
        attrs = document.get("attributes")
        http = attrs.get("request", {}).get("http") if isinstance(attrs, dict) else None
        if not isinstance(http, dict) or not self.needs_redaction(http):
            return document
        http = dict(http)
        headers = http.get("headers")
        if isinstance(headers, dict):
            new_headers = {}
            special, digest_names = self._special_headers, self.rules.digest_headers
            for name, value in headers.items():
                key = name if name in special or name.islower() else name.lower()
                if key not in special:
                    new_headers[name] = value  # the common case: one set lookup
                elif key in self.rules.remove_headers:
                    continue
                elif key in digest_names:
                    new_headers[name] = self.digest(value)
                elif isinstance(value, str):
                    new_headers[name] = self.redact_path(value)  # a path or an absolute URL (referer)
                else:
                    new_headers[name] = value
            http["headers"] = new_headers
        if "headerMap" in http:
            http["headerMap"] = self._redact_header_map(http["headerMap"])
        if "path" in http:
            http["path"] = self.redact_path(http["path"])
        if "query" in http and self.rules.digest_query_params:
            http["query"] = self.redact_path("?" + http["query"])[1:]
        out = dict(document)
        if self.rules.body != "unsafe_keep":
            for field in BODY_FIELDS:
                if field in http:
                    if self.rules.body == "remove":
                        del http[field]
                    else:
                        http[field] = self.digest(http[field])
            if out.get("parsed_body") is not None:
                out["parsed_body"] = (
                    "<redacted>" if self.rules.body == "remove" else self.digest(gojson.canonical(out["parsed_body"]))
                )
        if "parsed_query" in out and self.rules.digest_query_params:
            pq = out["parsed_query"]
            if isinstance(pq, dict) and any(str(k).lower() in self._query_names for k in pq):
                out["parsed_query"] = {
                    k: [self.digest(v) for v in vs] if str(k).lower() in self._query_names else vs
                    for k, vs in pq.items()
                }
        new_attrs = dict(attrs)  # type: ignore[arg-type]
        new_request = dict(new_attrs["request"])
        new_request["http"] = http
        new_attrs["request"] = new_request
        out["attributes"] = new_attrs
        return out
