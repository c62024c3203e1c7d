# Example policy: role-based access control for HTTP requests checked by Envoy ext_authz.
#
# authz-ledger loads this file when it starts with no configuration. It is also a valid policy for OPA's own
# Envoy plugin (`opa run --server policy.rego data.json`): it uses Rego v1 syntax, and the embedded engine is
# OPA's own.
#
# Who is calling: the `x-user` request header. This example trusts that header, which is only safe when a gateway
# in front of Envoy has authenticated the caller and sets (and overwrites) it. Replace `user` with JWT or mTLS
# (`input.source_principal`) identity for anything else.
#
# What they may do: `data.rbac` (data.json) maps users to roles and roles to routes. A route is a list of HTTP
# methods ("*" = any) and a path prefix given as segments, matched against `input.parsed_path`. A request for
# `//admin` has the segments ["", "admin"], so it does not match the prefix ["admin"]: odd paths are denied, not
# allowed.
#
# The decision (`data.envoy.authz.allow`) is always an object, so Envoy gets a status and a body that explain a
# denial, and the upstream service learns who the caller is from the `x-authz-user` header.
package envoy.authz

import rego.v1

http_request := input.attributes.request.http

# The caller's name; undefined when the header is absent.
user := http_request.headers["x-user"]

known_user if data.rbac.users[user]

user_roles contains role if some role in data.rbac.users[user].roles

# A route matches when both the method and the path prefix match.
route_matches(route) if {
	method_matches(route.methods)
	path_has_prefix(route.path)
}

method_matches(methods) if "*" in methods

method_matches(methods) if http_request.method in methods

path_has_prefix(prefix) if array.slice(input.parsed_path, 0, count(prefix)) == prefix

# Public routes need no user at all.
permitted if {
	some route in data.rbac.public_routes
	route_matches(route)
}

permitted if {
	some role in user_roles
	some route in data.rbac.roles[role]
	route_matches(route)
}

# The four outcomes below are mutually exclusive; the default covers "no x-user header and not a public route".

default allow := {
	"allowed": false,
	"http_status": 401,
	"body": "authentication required: send an x-user header",
	"headers": {"www-authenticate": "x-user"},
}

# Anonymous request for a public route.
allow := {
	"allowed": true,
	"headers": {"x-authz-user": "anonymous"},
	"dynamic_metadata": {"user": "anonymous", "roles": []},
} if {
	not user
	permitted
}

# A header naming nobody in data.rbac.users.
allow := {
	"allowed": false,
	"http_status": 403,
	"body": concat("", ["unknown user: ", user]),
	"dynamic_metadata": {"user": user, "roles": []},
} if {
	user
	not known_user
}

# A known user whose roles grant the route.
allow := {
	"allowed": true,
	"headers": {"x-authz-user": user},
	"request_headers_to_remove": ["x-user"],
	"dynamic_metadata": {"user": user, "roles": sort(user_roles)},
} if {
	known_user
	permitted
}

# A known user whose roles do not grant the route.
allow := {
	"allowed": false,
	"http_status": 403,
	"body": concat("", ["user ", user, " (roles: ", concat(", ", sort(user_roles)), ") may not ", http_request.method, " ", http_request.path]),
	"dynamic_metadata": {"user": user, "roles": sort(user_roles)},
} if {
	known_user
	not permitted
}
