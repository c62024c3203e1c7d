"""The policy input document built from an Envoy ext_authz v3 ``CheckRequest``, exactly as opa-envoy-plugin
builds it.

Contract (facts from the plugin's ``envoyauth/request.go`` and
``envoyauth/protomap.go``)::

    {"attributes": <the CheckRequest's attributes>,            # protomap, see below
     "version": {"ext_authz": "v3", "encoding": "protojson"},
     "parsed_path": [...], "parsed_query": {k: [v, ...]},
     "parsed_body": <any> | null, "truncated_body": bool,       # absent with skip_request_body_parse
     "source_principal": "spiffe://..."}                        # only when attributes.source.principal != ""

* ``attributes`` is NOT protojson. The plugin walks the message with protoreflect (``protomap``): only
  populated fields, keyed by their JSON names; scalars as they are (int64 and uint64 are numbers, enums are
  numbers), bytes as standard base64, ``google.protobuf.Struct`` as a plain object, every other message --
  well-known types included -- as an object of its populated fields, so ``request.time`` is
  ``{"seconds": s, "nanos": n}``. :func:`.protomap.protomap` reproduces that walk; the messages every request
  carries (peers, HTTP request, time) are read field by field, several times faster than
  ``json_format.MessageToDict``, which in any case differs from the plugin on enums, int64, Timestamp and Any.
* ``parsed_path``: the text before the first ``?``, percent-decoded (``+`` stays ``+``), every leading ``/``
  trimmed, split on ``/``. Since the plugin's 2026 security fix ``//admin/people`` keeps ``admin``; since the
  same fix the query is everything after the first ``?``: a ``#...`` is part of the last query value.
* ``parsed_query``: Go's ``url.ParseQuery``: ``&`` separated, ``+`` is a space, a key with ``;`` or a bad
  escape is an error (so are more than 10000 parameters), empty keys are skipped, a key without ``=`` has the
  value ``""``.
* ``parsed_body`` / ``truncated_body``: see :func:`.body.parse_body`; JSON bodies are read as Go reads them
  (:mod:`authz_ledger.record.gojson`): number text kept as written, invalid UTF-8 and lone surrogates replaced as Go
  replaces them, any depth up to 10,000.
* ``google.protobuf.Struct`` numbers (metadata contexts) are float64 and reach the policy as Go formats them
  (``1e+06``, ``1.5e-07``; :func:`authz_ledger.record.gojson.go_float_text`).

Where the plugin answers ``request_parse_error`` we raise :class:`RequestParseError` whose message is the Go
error text the plugin would print (``invalid character 'n' looking for beginning of object key string``,
``invalid URL escape "%zz"``, ``multipart: NextPart: EOF``...); :mod:`authz_ledger.check.result` adds the
``request_parse_error: `` prefix.

One module per job: :mod:`.document` assembles the document (fast walks of the common messages),
:mod:`.protomap` the plugin's generic walk, :mod:`.gourl` Go's ``net/url``, :mod:`.body` the body dispatch and
gRPC bodies, :mod:`.multipart` Go's ``mime`` and ``mime/multipart``, :mod:`.json_body` JSON bodies.
"""

from authz_ledger.check.input.body import load_descriptor_set
from authz_ledger.check.input.document import build_input

__all__ = ["build_input", "load_descriptor_set"]
