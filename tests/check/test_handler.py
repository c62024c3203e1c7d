"""The Check handler as a unit: a fake engine and a fake gRPC context stand in; the ledger is a real one."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_ledger.check.handler import CheckOptions, CheckService
from authz_ledger.errors import PolicyEvaluationError
from authz_ledger.ledger.store import Store
from authz_ledger.metrics import Metrics
from authz_ledger.policy import Evaluation
from authz_ledger.record import entry
from authz_ledger.record.redact import RedactionRules, Redactor
from authz_ledger.tlog import note
from tests.conftest import make_writer


class AllowEngine:
    name = "fake"
    decision_path = "envoy/authz/allow"

    def evaluate(self, input_json: bytes) -> Evaluation:
        return Evaluation(True, "v1", 1000)

    def policy_version(self) -> str:
        return "v1"

    def reload(self) -> str:
        return "v1"

    def close(self) -> None:
        pass


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.code: Any = None

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


def service(store: Store, signer: note.Signer) -> CheckService:
    writer = make_writer(store, signer)
    writer.start()
    return CheckService(AllowEngine(), writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions())


def test_a_check_whose_caller_already_gave_up_is_denied_and_counted_not_decided(
    store: Store, signer: note.Signer
) -> None:
    svc = service(store, signer)
    response = svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=0.0))
    assert response.status.code == 14
    assert response.denied_response.status.code == 503
    assert svc.writer is not None
    svc.writer.close()
    [(_, raw)] = list(store.iter_entries())  # no entry of its own, one summary entry
    summary = entry.decode(raw)
    assert summary.error.startswith("BackpressureError: 1 Checks denied")


def test_a_check_with_time_left_is_decided_and_recorded(store: Store, signer: note.Signer) -> None:
    svc = service(store, signer)
    response = svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=0.5))
    assert response.status.code == 0
    assert svc.writer is not None
    svc.writer.close()
    [(_, raw)] = list(store.iter_entries())
    assert entry.decode(raw).decision_id == response.dynamic_metadata["decision_id"]


class TokenInjectingEngine(AllowEngine):
    """A policy that hands Envoy a credential for the upstream request."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        return Evaluation({"allowed": True, "headers": {"authorization": "Bearer upstream-secret"}}, "v1", 1000)


class WrongShapeEngine(AllowEngine):
    """A policy whose result the contract rejects, with a credential inside."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        return Evaluation({"allowed": True, "headers": {"authorization": ["Bearer upstream-secret", [1]]}}, "v1", 1)


@pytest.mark.parametrize("on_error", ["grpc_error", "deny"], ids=["failing the RPC", "denying"])
def test_a_rejected_result_is_recorded_as_an_error_without_its_secrets(
    store: Store, signer: note.Signer, on_error: str
) -> None:
    writer = make_writer(store, signer)
    writer.start()
    redactor = Redactor(RedactionRules(), b"k" * 32)
    svc = CheckService(WrongShapeEngine(), writer, redactor, CheckOptions(on_error=on_error))
    svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=0.5))
    writer.close()
    [(_, raw)] = list(store.iter_entries())
    assert entry.decode(raw).outcome == entry.OUTCOME_ERROR
    assert b"upstream-secret" not in raw


def test_a_token_the_policy_hands_envoy_reaches_envoy_but_not_the_ledger(store: Store, signer: note.Signer) -> None:
    writer = make_writer(store, signer)
    writer.start()
    redactor = Redactor(RedactionRules(), b"k" * 32)
    svc = CheckService(TokenInjectingEngine(), writer, redactor, CheckOptions())
    response = svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=0.5))
    writer.close()
    assert response.ok_response.headers[0].header.value == "Bearer upstream-secret"
    [(_, raw)] = list(store.iter_entries())
    assert b"upstream-secret" not in raw
    assert redactor.digest("Bearer upstream-secret").encode() in entry.decode(raw).result_json


def test_an_allow_whose_commit_times_out_is_denied_and_recorded_as_refused(store: Store, signer: note.Signer) -> None:
    writer = make_writer(store, signer, commit_timeout_s=0.2)
    gate, held = threading.Event(), threading.Event()
    append = writer._append
    writer._append = lambda batch: held.set() or (gate.wait(10) and append(batch))  # type: ignore[method-assign]
    writer.start()
    metrics = Metrics()
    svc = CheckService(AllowEngine(), writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions(), metrics)
    response = svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=5.0))
    assert held.is_set(), "the writer held the entry in its commit when the Check gave up"
    decisions = {
        outcome: metrics.registry.get_sample_value("authz_decisions_total", {"outcome": outcome, "engine": "fake"})
        for outcome in ("allow", "error")
    }
    assert decisions == {"allow": None, "error": 1.0}, "metrics count what Envoy got, not what the policy said"
    refused = metrics.registry.get_sample_value("authz_ledger_refused_checks_total", {"reason": "LedgerWriteError"})
    assert refused == 1.0
    gate.set()
    writer.close()
    assert (response.status.code, response.denied_response.status.code) == (14, 503)
    # The commit under way held the allow; a correction entry says what Envoy was told.
    [(_, allowed), (_, raw)] = list(store.iter_entries())
    assert entry.decode(allowed).decision_id == response.dynamic_metadata["decision_id"]
    correction = entry.decode(raw)
    assert correction.outcome == entry.OUTCOME_ERROR
    assert f"decision {response.dynamic_metadata['decision_id']} was denied with HTTP 503" in correction.error


def test_an_allow_still_queued_when_its_commit_times_out_is_recorded_as_the_deny_envoy_got(
    store: Store, signer: note.Signer
) -> None:
    writer = make_writer(store, signer, commit_timeout_s=0.2)
    gate, held = threading.Event(), threading.Event()
    append = writer._append
    writer._append = lambda batch: held.set() or (gate.wait(10) and append(batch))  # type: ignore[method-assign]
    writer.start()
    svc = CheckService(AllowEngine(), writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions())
    first = threading.Thread(target=svc.Check, args=(external_auth_pb2.CheckRequest(), Context(remaining=5.0)))
    first.start()  # its commit is held: the next Check's entry waits in the queue
    assert held.wait(5)
    response = svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=5.0))
    gate.set()
    first.join(5)
    writer.close()
    assert (response.status.code, response.denied_response.status.code) == (14, 503)
    # seq 0: the first Check, committed as allowed; seq 1: this one, rewritten in the queue; seq 2: the first
    # Check's correction (it timed out too, inside the held commit).
    assert store.head().size == 3
    recorded = entry.decode(store.entry(1) or b"")
    assert recorded.decision_id == response.dynamic_metadata["decision_id"]
    assert (recorded.outcome, recorded.allowed, recorded.http_status, recorded.grpc_code) == (
        entry.OUTCOME_ERROR, False, 503, 14,
    )  # fmt: skip
    assert recorded.error == "LedgerWriteError: commit did not finish within 0.2 s"
    assert recorded.input_json, "what the policy was asked stays on record"
    assert entry.decode(store.entry(2) or b"").error.startswith("LedgerWriteError: decision ")


class EchoEngine(AllowEngine):
    """Keeps the input JSON it was given, as a real engine would parse it."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def evaluate(self, input_json: bytes) -> Evaluation:
        self.seen.append(input_json)
        return Evaluation({"allowed": False, "http_status": 403}, "v1", 1000)


ODD_BODIES = {
    "a number beyond float64": (b'{"a": 1e400}', b'"parsed_body":{"a":1e400}'),
    "a number below minus float64": (b"-1e400", b'"parsed_body":-1e400'),
    "decimals as written": (b"[1E2, 2.50, -0]", b'"parsed_body":[1E2,2.50,-0]'),
    "a lone surrogate escape": (b'"\\ud800"', '"parsed_body":"\ufffd"'.encode()),
    "invalid UTF-8 in raw bytes": (b'"\xe2\x82"', '"parsed_body":"\ufffd\ufffd"'.encode()),
}


@pytest.mark.parametrize(("body", "want"), ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_an_odd_json_body_is_decided_by_the_policy_and_recorded_as_written(
    store: Store, signer: note.Signer, body: bytes, want: bytes
) -> None:
    # A body the policy engine cannot read would fail the RPC, and behind failure_mode_allow: true Envoy would
    # then allow the request without a decision. Every body Go accepts must reach the policy instead.
    writer = make_writer(store, signer)
    writer.start()
    engine = EchoEngine()
    svc = CheckService(engine, writer, Redactor(RedactionRules(body="unsafe_keep"), b"k" * 32), CheckOptions())
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "POST", "/api"
    http.headers["content-type"] = "application/json"
    http.raw_body = body
    context = Context(remaining=0.5)
    response = svc.Check(request, context)
    assert context.code is None  # not an RPC error
    assert response.status.code == 7  # the policy's deny
    [seen] = engine.seen
    assert want in seen
    writer.close()
    [(_, raw)] = list(store.iter_entries())
    stored = entry.decode(raw)
    assert stored.input_json == seen  # the record holds what the policy saw (no redaction of the body here)


ALLOW_UNLESS_DENIED = """package envoy.authz
import rego.v1
deny if time.parse_rfc3339_ns(input.attributes.request.http.headers["x-expires"]) < 0
allow if not deny
"""


@pytest.mark.parametrize(
    ("on_error", "want_http"),
    [("grpc_error", None), ("deny", 403)],
    ids=["with on_error grpc_error the RPC fails", "with on_error deny Envoy gets a 403"],
)
def test_a_builtin_error_is_a_policy_error_not_the_default_decision(
    store: Store, signer: note.Signer, tmp_path: Any, on_error: str, want_http: int | None
) -> None:
    # OPA's Envoy plugin evaluates without strict builtin errors: there `deny` is undefined and this policy
    # allows. The embedded engine is strict, so the Check fails by policy.on_error instead (see README).
    from authz_ledger.policy.embedded import EmbeddedEngine

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.rego").write_text(ALLOW_UNLESS_DENIED)
    writer = make_writer(store, signer)
    writer.start()
    with EmbeddedEngine(tmp_path / "p", workers=1, timeout=5.0) as engine:
        svc = CheckService(engine, writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions(on_error=on_error))
        request = external_auth_pb2.CheckRequest()
        request.attributes.request.http.headers["x-expires"] = "tomorrow"
        context = Context(remaining=5.0)
        response = svc.Check(request, context)
    writer.close()
    if want_http is None:
        assert context.code is not None and context.code != grpc.StatusCode.OK
    else:
        assert context.code is None
        assert response.denied_response.status.code == want_http
    [(_, raw)] = list(store.iter_entries())
    recorded = entry.decode(raw)
    assert recorded.outcome == entry.OUTCOME_ERROR
    assert "eval_builtin_error: time.parse_rfc3339_ns" in recorded.error
    assert not recorded.allowed


class BrokenEngine(AllowEngine):
    """An engine with a bug: it raises something that is not a PolicyError."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        raise RuntimeError("boom")


@pytest.mark.parametrize("on_error", ["grpc_error", "deny"])
def test_an_unexpected_exception_is_a_recorded_deny_never_an_rpc_error(
    store: Store, signer: note.Signer, on_error: str
) -> None:
    writer = make_writer(store, signer)
    writer.start()
    svc = CheckService(BrokenEngine(), writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions(on_error=on_error))
    context = Context(remaining=0.5)
    response = svc.Check(external_auth_pb2.CheckRequest(), context)
    writer.close()
    assert context.code is None  # an RPC error would leave the answer to Envoy's failure_mode_allow
    assert response.status.code != 0 and response.denied_response.status.code == 403
    [(_, raw)] = list(store.iter_entries())
    recorded = entry.decode(raw)
    assert (recorded.outcome, recorded.allowed) == (entry.OUTCOME_ERROR, False)
    redactor = Redactor(RedactionRules(), b"k" * 32)
    assert recorded.error == f"internal error: RuntimeError: {redactor.digest('boom')}"  # its text may quote data


def test_a_lone_surrogate_after_a_json_body_is_a_recorded_request_parse_error(
    store: Store, signer: note.Signer
) -> None:
    writer = make_writer(store, signer)
    writer.start()
    svc = CheckService(EchoEngine(), writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions())
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.headers["content-type"] = "application/json"
    request.attributes.request.http.body = '{} "\\ud800"'
    context = Context(remaining=0.5)
    response = svc.Check(request, context)
    writer.close()
    assert context.code is None
    assert response.denied_response.status.code == 400
    assert response.denied_response.body.startswith("request_parse_error: ")
    [(_, raw)] = list(store.iter_entries())
    assert entry.decode(raw).error.startswith("request_parse_error: ")


class QuotingErrorEngine(AllowEngine):
    """A strict builtin error quotes its argument, as OPA's do: ``parsing time "<the header's value>"``."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        raise PolicyEvaluationError('eval_builtin_error: time.parse_rfc3339_ns: parsing time "Bearer s3cr3t-T0ken"')


class DeepResultEngine(AllowEngine):
    """A result nested beyond the redactor's recursion, beside a credential it must not store raw."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        deep: Any = "Bearer s3cr3t-T0ken"
        for _ in range(1500):
            deep = [deep]
        return Evaluation({"allowed": True, "headers": {"authorization": deep}}, "v1", 1000)


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(QuotingErrorEngine(), id="a policy error quoting a credential"),
        pytest.param(DeepResultEngine(), id="a result the redactor cannot walk"),
    ],
)
def test_no_credential_reaches_the_ledger_or_the_log_through_an_error(
    store: Store, signer: note.Signer, caplog: pytest.LogCaptureFixture, engine: AllowEngine
) -> None:
    writer = make_writer(store, signer)
    writer.start()
    svc = CheckService(engine, writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions(on_error="deny"))
    with caplog.at_level("INFO"):
        svc.Check(external_auth_pb2.CheckRequest(), Context(remaining=5.0))
    writer.close()
    [(_, raw)] = list(store.iter_entries())
    assert entry.decode(raw).outcome == entry.OUTCOME_ERROR
    assert b"s3cr3t" not in raw
    assert "s3cr3t" not in caplog.text
