# A candidate policy for `authz-ledger replay` (README, "The auditor's tools"): the example policy's callers may
# only read. Replayed on recorded decisions, it reports every write the example policy allowed that this one
# would deny.
package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method in {"GET", "HEAD"}
