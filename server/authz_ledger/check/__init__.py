"""The ext_authz request path: CheckRequest -> opa-envoy-plugin input document -> policy -> CheckResponse, with
exactly one ledger record per Check whatever the outcome (opa-envoy-plugin's ``envoyauth`` package, in Python)."""
