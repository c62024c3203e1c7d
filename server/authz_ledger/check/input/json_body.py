"""JSON bodies: OPA's ``util.UnmarshalJSON`` as the plugin applies it to request bodies and multipart parts.

The parser is :mod:`authz_ledger.record.gojson` (number text kept, Go's string rules and error messages); this
module sets how deep a body may nest and turns Go's error text into a RequestParseError.
"""

from __future__ import annotations

from typing import Any

from authz_ledger.errors import RequestParseError
from authz_ledger.record import gojson

# The engines read the input document as JSON text inside their request (``{"input": document}``) with the same
# decoder, whose 10,000-level limit counts those two levels too. A body nested deeper than what is left could
# never reach the policy: it is refused here, as a deny, rather than failing in the engine -- an engine error
# would leave the answer to Envoy's failure_mode_allow. (The plugin evaluates bodies of 9,999 and 10,000
# levels; no request Envoy forwards from a real client is nested that deep.)
_BODY_DEPTH = gojson.MAX_DEPTH - 2
MULTIPART_JSON_DEPTH = _BODY_DEPTH - 2  # parsed_body -> form field -> list of values -> the part's JSON


def unmarshal_json(data: str | bytes, max_depth: int = _BODY_DEPTH) -> Any:
    try:
        return gojson.unmarshal(data, max_depth=max_depth)
    except gojson.GoJSONError as e:
        raise RequestParseError(str(e)) from None
