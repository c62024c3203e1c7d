"""JSON as Go reads and writes it for OPA: opa-envoy-plugin's body parsing, and Go's text for numbers and strings.

:mod:`.read` parses a body as OPA's ``util.UnmarshalJSON`` does (number text kept, Go's string rules and error
messages); :mod:`.write` writes JSON back out with number text kept, and Go's text for strings and float64s.
Callers use the names re-exported here: ``gojson.unmarshal``, ``gojson.compact``, ``gojson.canonical``, ...
"""

from authz_ledger.record.gojson.read import GO_REPLACE, MAX_DEPTH, GoJSONError, unmarshal
from authz_ledger.record.gojson.write import canonical, compact, go_float_text, go_float_value, go_quote, number

__all__ = [
    "GO_REPLACE",
    "MAX_DEPTH",
    "GoJSONError",
    "canonical",
    "compact",
    "go_float_text",
    "go_float_value",
    "go_quote",
    "number",
    "unmarshal",
]
