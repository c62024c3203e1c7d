"""Redaction applied to the policy input and result before anything is written to the ledger.

The policy sees the request as Envoy sent it; the ledger must never hold a bearer token, cookie, API key or
request body in plaintext -- neither those of the request nor those a policy hands to Envoy in its result
(a token injected into the upstream request's headers, a cookie set on the response). Sensitive values are
replaced by a keyed digest, ``hmac-sha256:<hex>``, computed with a per-ledger secret kept beside the signing
key: equal values stay correlatable across entries (the same token used twice shows the same digest) while
nobody without the secret can test guesses against them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from authz_ledger.record import gojson
from authz_ledger.record.secrets import (
    DEFAULT_DIGEST_HEADERS,
    DEFAULT_DIGEST_QUERY_PARAMS,
    DEFAULT_NAME_PATTERN,
    MAX_SCANNED,
    NameRules,
    may_hold_token,
    value_shape,
)

__all__ = [
    "DEFAULT_DIGEST_HEADERS",
    "DEFAULT_DIGEST_QUERY_PARAMS",
    "DEFAULT_NAME_PATTERN",
    "RedactionRules",
    "Redactor",
]

BODY_FIELDS = ("body", "rawBody")
_PLAIN, _DIGEST, _URL, _REMOVE = range(4)  # what happens to a request header, by its name


def document_path(document: dict[str, Any]) -> Any:
    return document.get("attributes", {}).get("request", {}).get("http", {}).get("path")


def document_headers(document: Any) -> dict[str, Any]:
    """``attributes.request.http.headers`` of an opa-envoy-plugin input document, as recorded ({} if absent)."""
    try:
        headers = document["attributes"]["request"]["http"]["headers"]
    except (KeyError, TypeError):
        return {}
    return headers if isinstance(headers, dict) else {}


def _unbase64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except ValueError:
        return text


def _quote(text: str) -> str:
    """Percent-encode a query key or value; our digests keep their readable ``hmac-sha256+shape:`` prefix."""
    return quote(text, safe=":+" if text.startswith("hmac-sha256") else "")


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
PATH_HEADERS = frozenset(
    {
        ":path", "x-envoy-original-path", "referer",
        # forward-auth proxies (Traefik, nginx auth_request, IIS) hand the original URL over in these
        "x-forwarded-uri", "x-original-url", "x-original-uri", "x-rewrite-url",
    }
)  # fmt: skip
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
    name_pattern: str = DEFAULT_NAME_PATTERN
    """Header and parameter names matching it are digested too ("": only the lists)."""
    detect_values: bool = True
    """Digest any header or parameter value shaped like a credential (record/secrets.py), with a marker."""

    @classmethod
    def build(
        cls,
        digest_headers: Iterable[str],
        remove_headers: Iterable[str],
        digest_query_params: Iterable[str],
        body: str,
        name_pattern: str = DEFAULT_NAME_PATTERN,
        detect_values: bool = True,
    ) -> RedactionRules:
        return cls(
            frozenset(h.lower() for h in digest_headers),
            frozenset(h.lower() for h in remove_headers),
            frozenset(digest_query_params),
            body,
            name_pattern,
            detect_values,
        )

    def describe(self) -> dict[str, object]:
        """The effective rules, as the start-up log and ``authz-ledger redaction`` show them."""
        return {
            "digest_headers": sorted(self.digest_headers),
            "remove_headers": sorted(self.remove_headers),
            "digest_query_params": sorted(self.digest_query_params),
            "name_pattern": self.name_pattern,
            "detect_values": self.detect_values,
            "body": self.body,
        }


class Redactor:
    def __init__(self, rules: RedactionRules, secret: bytes) -> None:
        self.rules = rules
        self._secret = secret
        self._header_names = rules.digest_headers | rules.remove_headers
        self._header_rules = NameRules(rules.digest_headers, rules.name_pattern)
        self._query_rules = NameRules(rules.digest_query_params, rules.name_pattern)
        self._query_names = self._query_rules.names
        # Before parsing a query string: can any name in it be secret? (names as written: either separator)
        words = [re.escape(n).replace("_", "[-_]") for n in self._query_names]
        if rules.name_pattern:
            words.append(rules.name_pattern.replace("_", "[-_]"))
        self._query_precheck = re.compile("|".join(words), re.IGNORECASE) if words else None
        self._hmac = hmac.new(secret, digestmod=hashlib.sha256)
        self._clean_paths: set[str] = set()
        self._header_kinds: dict[str, int] = {}

    def _header_secret(self, name: str) -> bool:
        return name.lower() not in PATH_HEADERS and self._header_rules.is_secret(name)

    def _param_secret(self, name: str) -> bool:
        return self._query_rules.is_secret(name)

    def _digest_shape(self, value: str) -> str | None:
        """The marked digest of a value shaped like a credential, or None."""
        if not self.rules.detect_values:
            return None
        shape = value_shape(value)
        return self._marked_digest(value, shape) if shape else None

    def digest(self, value: str | bytes) -> str:
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        mac = self._hmac.copy()  # the keyed state is prepared once; copying it skips the key schedule
        mac.update(data)
        return "hmac-sha256:" + mac.hexdigest()

    def redact_path(self, path: str) -> str:
        """See :meth:`_redact_path`. The same paths recur request after request: those that need no change are
        remembered (bounded), so they cost one lookup; a path that carried a secret is never kept."""
        if path in self._clean_paths:
            return path
        redacted = self._redact_path(path)
        if redacted == path:
            if len(self._clean_paths) >= 1024:
                self._clean_paths.clear()
            self._clean_paths.add(path)
            return path
        return redacted

    def _redact_path(self, path: str) -> str:
        """Digest what is secret in a request path (or an absolute URL): the values of sensitive query parameters
        (by name or by shape), a parameter that is itself a credential, a credential-shaped path segment, and the
        same in a fragment (``#access_token=...``, as implicit-grant redirects carry).

        Names match case-insensitively and ``;`` separates parameters too: some backends read both, and
        redacting too much is acceptable here where too little is not.
        """
        rest, hash_sep, fragment = path.partition("#")
        head, sep, query = rest.partition("?")
        new_head = self._redact_segments(head) if self.rules.detect_values else head
        new_query = self._redact_query(query) if sep and query else query
        new_fragment = self._redact_query(fragment) if hash_sep and fragment else fragment
        if new_head is head and new_query is query and new_fragment is fragment:
            return path
        return new_head + sep + new_query + hash_sep + new_fragment

    def _redact_segments(self, head: str) -> str:
        if not may_hold_token(head):
            return head
        segments = head.split("/")
        shaped = [self._digest_shape(seg) if len(seg) >= 12 else None for seg in segments]
        if not any(shaped):
            return head
        return "/".join(d or seg for d, seg in zip(shaped, segments, strict=True))

    def _redact_query(self, query: str) -> str:
        """A query string (or a fragment of the same form) with its secrets digested; ``query`` itself if none."""
        if (
            len(query) <= MAX_SCANNED
            and "%" not in query
            and (self._query_precheck is None or not self._query_precheck.search(query))
            and not (self.rules.detect_values and may_hold_token(query))
        ):
            return query  # cheap pre-check: no sensitive name, no credential-shaped value, no escape hiding one
        pairs = parse_qsl(query.replace(";", "&"), keep_blank_values=True)
        keys = [self._digest_shape(k) or k if self.rules.detect_values and len(k) >= 12 else k for k, _ in pairs]
        values = [self._param_value(k, v) for k, v in pairs]
        if all(new is old for new, (_, old) in zip(values, pairs, strict=True)) and all(
            new is old for new, (old, _) in zip(keys, pairs, strict=True)
        ):
            return query
        return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in zip(keys, values, strict=True))

    def _param_value(self, name: str, value: str) -> str:
        """A query parameter's value as stored: digested if its name or its shape says secret, else itself."""
        if self._param_secret(name):
            return self.digest(value)
        if value and may_hold_token(value):
            return self._digest_shape(value) or value
        return value

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
                if field in item and self._header_secret(name):
                    item[field] = self.digest(str(item[field]))
                elif field == "value" and field in item and name in PATH_HEADERS:
                    item[field] = self.redact_path(str(item[field]))
                elif field == "value" and field in item:
                    item[field] = self._digest_shape(str(item[field])) or item[field]
                elif field == "rawValue" and field in item and name not in PATH_HEADERS:
                    # base64 of the bytes Envoy got: judge the value itself, as for ``headers``
                    item[field] = self._digest_shape(_unbase64(str(item[field]))) or item[field]
            if "rawValue" in item and name in PATH_HEADERS:
                item["rawValue"] = self.digest(str(item["rawValue"]))  # base64 of a URL: digest it whole
            out.append(item)
        return {**header_map, "headers": out}

    def _redact_headers(self, headers: dict[str, Any]) -> dict[str, Any]:
        """The request headers as stored: one dict lookup per name (its treatment is cached), and the value-shape
        check only for values long enough to be a credential."""
        kinds, detect = self._header_kinds, self.rules.detect_values
        out = {}
        changed = False
        for name, value in headers.items():
            kind = kinds.get(name)
            if kind is None:
                kind = self._header_kind(name)
            if kind == _PLAIN:
                if detect and type(value) is str and len(value) >= 12 and (shape := value_shape(value)):
                    out[name] = self._marked_digest(value, shape)
                    changed = True
                else:
                    out[name] = value
            elif kind == _DIGEST:
                out[name] = self.digest(value) if isinstance(value, str) else self._digest_any(value)
                changed = True
            elif kind == _URL:
                out[name] = self.redact_path(value) if isinstance(value, str) else value  # a path, or a referer URL
                changed = changed or out[name] != value
            else:  # _REMOVE: left out
                changed = True
        return out if changed else headers

    def _header_kind(self, name: str) -> int:
        key = name.lower()
        if key in self.rules.remove_headers:
            kind = _REMOVE
        elif key in PATH_HEADERS:
            kind = _URL
        elif self._header_rules.is_secret(key):
            kind = _DIGEST
        else:
            kind = _PLAIN
        if len(self._header_kinds) >= 4096:
            self._header_kinds.clear()  # names are few in practice; never let odd clients grow it without end
        self._header_kinds[name] = kind
        return kind

    def _marked_digest(self, value: str, shape: str) -> str:
        return self.digest(value).replace("hmac-sha256:", f"hmac-sha256+{shape}:", 1)

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
        if isinstance(params, dict):
            redacted = {k: self._result_param(str(k), v) for k, v in params.items()}
            if any(redacted[k] is not v for k, v in params.items()):
                out = {**out, "query_parameters_to_set": redacted}
        elif isinstance(params, list):  # the wrong shape (recorded as a policy error): digest it whole
            out = {**out, "query_parameters_to_set": self._digest_any(params)}
        return out

    def _result_param(self, name: str, value: Any) -> Any:
        if self._param_secret(name):
            return self._digest_any(value)
        if isinstance(value, str):
            return self._digest_shape(value) or value
        return value

    def _redact_header_options(self, value: Any) -> Any:
        """Header objects at any depth of lists: a result of the wrong shape is recorded too (as a policy error),
        so its secrets must be digested like those of a well-formed one."""
        if isinstance(value, dict):
            out = {}
            for name, v in value.items():
                key = str(name).lower()
                if key in self.rules.remove_headers:
                    continue
                if self._header_secret(key):
                    out[name] = self._digest_any(v)
                elif key in RESULT_URL_HEADERS:  # a redirect URL carries query secrets like a request path
                    out[name] = (
                        [self.redact_path(u) if isinstance(u, str) else u for u in v]
                        if isinstance(v, list)
                        else (self.redact_path(v) if isinstance(v, str) else v)
                    )
                elif isinstance(v, str):
                    out[name] = self._digest_shape(v) or v
                elif isinstance(v, list):
                    out[name] = [self._digest_shape(x) or x if isinstance(x, str) else x for x in v]
                else:
                    out[name] = v
            return value if all(out.get(k) is v for k, v in value.items()) and len(out) == len(value) else out
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
        if not isinstance(http, dict):
            return document
        headers = http.get("headers")
        new_headers = self._redact_headers(headers) if isinstance(headers, dict) else headers
        path, query = http.get("path"), http.get("query")
        new_path = self.redact_path(path) if isinstance(path, str) else path
        new_query = self.redact_path("?" + query)[1:] if isinstance(query, str) and query else query
        # (cached answers: compare values, not identity)
        query_changed = new_path != path or new_query != query
        has_body = self.rules.body != "unsafe_keep" and ("body" in http or "rawBody" in http)
        if new_headers is headers and not query_changed and not has_body and "headerMap" not in http:
            return document  # the common case: nothing to change, nothing copied
        http = dict(http)
        if "headers" in http:
            http["headers"] = new_headers
        if "headerMap" in http:
            http["headerMap"] = self._redact_header_map(http["headerMap"])
        if "path" in http:
            http["path"] = new_path
        if "query" in http:
            http["query"] = new_query
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
        if query_changed and isinstance(out.get("parsed_query"), dict):  # parsed from the same query string
            pq = out["parsed_query"]
            redacted_pq = {
                k: [self._param_value(str(k), v) if isinstance(v, str) else v for v in vs]
                if isinstance(vs, list)
                else vs
                for k, vs in pq.items()
            }
            if redacted_pq != pq:
                out["parsed_query"] = redacted_pq
        parsed_path = out.get("parsed_path")
        if self.rules.detect_values and isinstance(parsed_path, list) and http.get("path") != document_path(document):
            out["parsed_path"] = [
                (self._digest_shape(seg) or seg) if isinstance(seg, str) and len(seg) >= 12 else seg
                for seg in parsed_path
            ]
        new_attrs = dict(attrs)  # type: ignore[arg-type]
        new_request = dict(new_attrs["request"])
        new_request["http"] = http
        new_attrs["request"] = new_request
        out["attributes"] = new_attrs
        return out
