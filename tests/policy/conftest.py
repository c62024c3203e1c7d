"""Fixtures for the policy engine tests: the example policy, a decision table both engines must agree on, and
helpers to write small policies into temporary directories."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "server" / "authz_ledger" / "example_policy"

GOLDEN = VECTORS / "opa-envoy-golden.json"


def request_input(method: str, path: str, user: str | None) -> dict[str, Any]:
    """An input document shaped like the plugin's (golden case 0) with this method, path and x-user."""
    golden = json.loads(GOLDEN.read_text())
    document: dict[str, Any] = copy.deepcopy(golden["input_cases"][0]["input"])
    http = document["attributes"]["request"]["http"]
    http["method"] = method
    http["path"] = path
    headers = http.setdefault("headers", {})
    headers.pop("x-user", None)
    if user is not None:
        headers["x-user"] = user
    bare = path.split("?", maxsplit=1)[0]
    document["parsed_path"] = bare.removeprefix("/").split("/")  # the plugin trims one slash: "//x" → ["", "x"]
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _allowed(user: str, roles: list[str]) -> dict[str, Any]:
    return {
        "allowed": True,
        "headers": {"x-authz-user": user},
        "request_headers_to_remove": ["x-user"],
        "dynamic_metadata": {"user": user, "roles": roles},
    }


def _forbidden(user: str, roles: list[str], method: str, path: str) -> dict[str, Any]:
    return {
        "allowed": False,
        "http_status": 403,
        "body": f"user {user} (roles: {', '.join(roles)}) may not {method} {path}",
        "dynamic_metadata": {"user": user, "roles": roles},
    }


# (id, method, path, x-user, expected result of data.envoy.authz.allow)
DECISION_TABLE: list[tuple[str, str, str, str | None, Any]] = [
    ("an admin may delete anything", "DELETE", "/orders/7", "alice", _allowed("alice", ["admin"])),
    ("a reader may read people", "GET", "/people?lang=en", "bob", _allowed("bob", ["reader"])),
    (
        "a reader may not write people, and the body says why",
        "POST",
        "/people",
        "bob",
        _forbidden("bob", ["reader"], "POST", "/people"),
    ),
    ("a writer may write people", "POST", "/people/42", "carol", _allowed("carol", ["reader", "writer"])),
    (
        "a double slash does not reach the people route",
        "GET",
        "//people",
        "bob",
        _forbidden("bob", ["reader"], "GET", "//people"),
    ),
    (
        "an unknown user is denied with 403",
        "GET",
        "/people",
        "mallory",
        {
            "allowed": False,
            "http_status": 403,
            "body": "unknown user: mallory",
            "dynamic_metadata": {"user": "mallory", "roles": []},
        },
    ),
    (
        "no user on a private route asks for authentication",
        "GET",
        "/people",
        None,
        {
            "allowed": False,
            "http_status": 401,
            "body": "authentication required: send an x-user header",
            "headers": {"www-authenticate": "x-user"},
        },
    ),
    (
        "no user may read the public health route",
        "GET",
        "/health",
        None,
        {
            "allowed": True,
            "headers": {"x-authz-user": "anonymous"},
            "dynamic_metadata": {"user": "anonymous", "roles": []},
        },
    ),
]


def decision_cases() -> list[Any]:
    return [pytest.param(method, path, user, want, id=name) for name, method, path, user, want in DECISION_TABLE]


def write_policy(directory: Path, rego: str, data: Any = None, name: str = "policy.rego") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(rego)
    if data is not None:
        (directory / "data.json").write_text(json.dumps(data))
    return directory
