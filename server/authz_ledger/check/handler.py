"""The ext_authz v3 ``Authorization/Check`` handler: one decision, one ledger entry, whatever the outcome.

For every CheckRequest -- well-formed or not -- the handler builds the opa-envoy-plugin input document, asks the
policy engine, maps the result to a CheckResponse, and hands exactly one encoded entry to the ledger writer
before answering. The outcomes and what Envoy sees:

=========================  =================================================  ===============================
what happened              answer                                              entry outcome
=========================  =================================================  ===============================
policy allowed / denied    the policy's CheckResponse (dry-run: OK)           allow / deny
request_parse_error        PERMISSION_DENIED, HTTP 400 (as the plugin)        deny, with the error
policy error / undefined   RPC fails (plugin behaviour) or a deny, per        error, with the error
/ bad shape / timeout      ``policy.on_error``
ledger cannot record       UNAVAILABLE CheckResponse, HTTP 503: fail closed   (none: the Check was refused)
``sync`` commit too slow   UNAVAILABLE CheckResponse, HTTP 503: fail closed   error: the queued entry is
                                                                              rewritten, or a correction
                                                                              entry follows it
=========================  =================================================  ===============================

Fail closed: an allow is never sent before its entry is queued (``async``) or durable (``sync``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf.descriptor_pool import DescriptorPool

from authz_ledger.check import input as input_document
from authz_ledger.check import result
from authz_ledger.check.arrival import (
    CheckArgument,
    MalformedCheckRequest,
    OversizeCheckRequest,
    parse_check_request,
)
from authz_ledger.errors import (
    CallerNotAllowedError,
    LedgerError,
    PolicyError,
    PolicyEvaluationError,
    RequestParseError,
)
from authz_ledger.ledger.writer import LedgerWriter
from authz_ledger.metrics import Metrics
from authz_ledger.policy import PolicyEngine
from authz_ledger.record import gojson
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR, OUTCOME_NAMES, DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.record.redact import Redactor
from authz_ledger.rpc import status as grpc_status
from authz_ledger.rpc import tls

log = logging.getLogger(__name__)

_GRPC_OK = 0
_GRPC_PERMISSION_DENIED = 7
_EXPIRED = 0.001  # seconds left on the caller's deadline below which a Check cannot be answered in time


_compact_json = gojson.compact  # compact UTF-8 JSON that keeps number text (see authz_ledger.record.gojson)


@dataclass(frozen=True, slots=True)
class CheckOptions:
    dry_run: bool = False
    skip_request_body_parse: bool = False
    descriptor_pool: DescriptorPool | None = None
    on_error: str = "grpc_error"
    error_http_status: int = 403
    overload_http_status: int = 503


def add_to_server(
    service: CheckService,
    server: grpc.Server,
    max_recv_msg_size: int | None = None,
    allowed_client_ids: Sequence[str] = (),
) -> None:
    """Register Authorization/Check with the never-failing deserializer of check/arrival.py
    (``max_recv_msg_size``: larger requests become OversizeCheckRequest; the server's transport limit must be
    TRANSPORT_HEADROOM times it).

    ``allowed_client_ids``: with mutual TLS, only callers whose certificate names one of them are decided;
    anyone else is refused before the handler -- counted and logged, but not recorded: a caller outside the mesh
    must not be able to write permanent ledger records."""
    method = service.Check
    if allowed_client_ids:
        allowed = frozenset(allowed_client_ids)

        def method(request: CheckArgument, context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
            identity = tls.client_identity(context)
            if not any(identity.matches(a) for a in allowed):
                ids = identity.names()
                service.refuse_caller(context.peer(), ids)
                grpc_status.abort(
                    context,
                    CallerNotAllowedError(
                        f"caller {', '.join(ids) or '(no client certificate identity)'} is not in "
                        "server.allowed_client_ids"
                    ),
                )
                return external_auth_pb2.CheckResponse()
            return service.Check(request, context)

    handler = grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=functools.partial(parse_check_request, limit=max_recv_msg_size),
        response_serializer=external_auth_pb2.CheckResponse.SerializeToString,
    )
    service_name = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, {"Check": handler}),))
    # Registered too, as generated code does: gRPC core then matches the method itself instead of each call
    # walking the server's generic handlers (health, reflection, Check) in Python.
    server.add_registered_method_handlers(service_name, {"Check": handler})


class CheckService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(
        self,
        engine: PolicyEngine,
        writer: LedgerWriter | None,
        redactor: Redactor,
        options: CheckOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.redactor = redactor
        self.options = options
        self.metrics = metrics
        self._responses = result.ResponseCache(dry_run=options.dry_run)

    def Check(self, request: CheckArgument, context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        remaining = context.time_remaining()
        if remaining is not None and remaining <= _EXPIRED and self.writer is not None:
            # The caller (Envoy) has already given up on this Check while it queued in gRPC's executor under
            # overload: deciding it now would only spend CPU the live Checks need. It is denied and counted in
            # the ledger's backpressure summary, like a Check refused for a full writer queue.
            self.writer.note_refused()
            if self.metrics is not None:
                self.metrics.ledger_refused.labels("DeadlineExpired").inc()
            return result.fail_closed_response(
                decision_id=str(new_decision_id()),
                http_status=self.options.overload_http_status,
                reason="the caller's deadline expired before the Check was handled",
            ).response
        decision_id = new_decision_id()
        if isinstance(request, MalformedCheckRequest):
            record = DecisionRecord(time_unix_nano=time.time_ns(), decision_id=str(decision_id))
            response, error = self._malformed(request, record)
        elif isinstance(request, OversizeCheckRequest):
            record = (
                _describe_request(request.request, str(decision_id), self.redactor)
                if request.request is not None
                else DecisionRecord(time_unix_nano=time.time_ns(), decision_id=str(decision_id))
            )
            response, error = self._oversize(request, record, context.peer()), None
        else:
            record = (
                _describe_request(request, str(decision_id), self.redactor)
                if self.writer is not None
                else _log_ids(request, str(decision_id))  # nothing is stored: only what the log lines carry
            )
            try:
                response, error = self._decide(request, record)
            except Exception as e:  # a bug must never let a request through unrecorded: fail closed
                response, error = self._internal_error(record, e), None
        code = "OK"
        refused = False
        if self.writer is not None:
            try:
                self.writer.record(
                    record.encode(), decision_id.bytes, refused_body=lambda reason: self._refused(record, reason)
                )
            except LedgerError as e:
                # Fail closed: no durable record, no allow. A CheckResponse with a non-OK status is a deny
                # for Envoy whatever its failure_mode_allow says, unlike a failed RPC.
                log.warning(
                    "decision %s (request %s) refused: ledger cannot record it: %s",
                    decision_id,
                    record.request_id,
                    e,
                    extra=_log_fields(record),
                )
                response = result.fail_closed_response(
                    decision_id=str(decision_id),
                    http_status=self.options.overload_http_status,
                    reason=f"{type(e).__name__}: {e}",
                ).response
                error = None
                refused = True
                if self.metrics is not None:
                    self.metrics.ledger_refused.labels(type(e).__name__).inc()
        if error is not None:
            grpc_status.abort(context, error)
            code = grpc_status.status_for(error).name
            response = external_auth_pb2.CheckResponse()
        if self.metrics is not None:
            self._observe(record, code, started, refused=refused)
        return response

    def _refused(self, record: DecisionRecord, reason: str) -> bytes:
        """The entry of a decision the ledger could not commit in time: denied, whatever the policy said."""
        return dataclasses.replace(
            record,
            outcome=OUTCOME_ERROR,
            allowed=False,
            dry_run=False,
            http_status=self.options.overload_http_status,
            grpc_code=14,  # UNAVAILABLE, as in result.fail_closed_response
            error=f"{reason} (policy: {record.error})" if record.error else reason,
        ).encode()

    def _observe(self, record: DecisionRecord, grpc_code: str, started: float, *, refused: bool) -> None:
        """``refused``: the ledger could not take the decision, so Envoy got a deny whatever the policy said
        (counted as an error outcome; its reason is in authz_ledger_refused_checks, not in the policy errors)."""
        assert self.metrics is not None
        self.metrics.observe_check(
            grpc_code,
            time.perf_counter() - started,
            "error" if refused else OUTCOME_NAMES.get(record.outcome, "error"),
            record.engine,
            record.eval_ns / 1e9,
            record.error_class if record.outcome == OUTCOME_ERROR and not refused else "",
        )

    def _decide(
        self, request: external_auth_pb2.CheckRequest, record: DecisionRecord
    ) -> tuple[external_auth_pb2.CheckResponse, PolicyError | None]:
        """Fill ``record`` and return the answer, or the policy error that fails the RPC."""
        decision_id = record.decision_id
        engine = self.engine
        record.engine = engine.name
        record.decision_path = engine.decision_path
        try:
            document = input_document.build_input(
                request,
                skip_request_body_parse=self.options.skip_request_body_parse,
                descriptor_pool=self.options.descriptor_pool,
            )
        except RequestParseError as e:
            return self._parse_error(record, e, logging.INFO), None
        input_json = _compact_json(document)
        if self.writer is not None:  # with the ledger off nothing is stored, so there is nothing to redact
            redacted = self.redactor.redact_input(document)
            record.input_json = input_json if redacted is document else _compact_json(redacted)
        try:
            evaluation = engine.evaluate(input_json)
            record.policy_version = evaluation.policy_version
            record.eval_ns = evaluation.eval_ns
            result_json = _compact_json(evaluation.result)
            if self.writer is not None:  # a token the policy hands Envoy must not reach the ledger either
                # Set only once redacted: if redaction raised, the record must not hold the raw result.
                stored = self.redactor.redact_result(evaluation.result)
                record.result_json = result_json if stored is evaluation.result else _compact_json(stored)
            outcome = self._responses.check_response(evaluation.result, result_json, decision_id=decision_id)
        except PolicyError as e:
            return self._policy_failed(record, e)
        record.allowed = outcome.allowed
        record.http_status = outcome.http_status
        record.outcome = OUTCOME_ALLOW if outcome.allowed else OUTCOME_DENY
        record.dry_run = self.options.dry_run and not outcome.allowed
        record.grpc_code = outcome.response.status.code
        return outcome.response, None

    def _internal_error(self, record: DecisionRecord, error: Exception) -> external_auth_pb2.CheckResponse:
        """An unexpected exception while deciding: denied whatever policy.on_error says (an RPC error would leave
        the answer to Envoy's failure_mode_allow), logged with its traceback, and recorded as an error."""
        record.outcome = OUTCOME_ERROR
        record.allowed = False
        record.dry_run = False
        record.error = f"internal error: {type(error).__name__}: {self.redactor.digest(str(error))}"
        record.error_class = "internal error"
        # Its message may quote request data in any form: stored and logged only as a digest; the frames of the
        # traceback (code locations, no values) are logged for the bug report.
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error(
            "decision %s (request %s): internal error, denied: %s\n%s", record.decision_id, record.request_id,
            record.error, frames, extra=_log_fields(record),
        )  # fmt: skip
        outcome = result.fail_closed_response(
            decision_id=record.decision_id, http_status=self.options.error_http_status, reason=record.error
        )
        record.http_status = outcome.http_status
        record.grpc_code = outcome.response.status.code
        return outcome.response

    def _malformed(
        self, request: MalformedCheckRequest, record: DecisionRecord
    ) -> tuple[external_auth_pb2.CheckResponse, PolicyError | None]:
        """A 400 deny, as for any request whose input document cannot be built."""
        record.engine = self.engine.name
        record.decision_path = self.engine.decision_path
        error = RequestParseError(f"malformed CheckRequest ({request.size} bytes): {request.error}")
        return self._parse_error(record, error, logging.WARNING), None

    def refuse_caller(self, peer: str, ids: list[str]) -> None:
        if self.metrics is not None:
            self.metrics.refused_callers.inc()
        log.warning("Check from %s refused: client identities %s are not in server.allowed_client_ids", peer, ids)

    def _oversize(
        self, request: OversizeCheckRequest, record: DecisionRecord, peer: str
    ) -> external_auth_pb2.CheckResponse:
        """Denied with 413 and recorded, without its body and without asking the policy (Envoy's
        with_request_body.max_request_bytes should keep requests far below; one this large is a misconfiguration
        or an attack, and either way the operator must see it)."""
        record.engine = self.engine.name
        record.decision_path = self.engine.decision_path
        record.policy_version = self.engine.policy_version()
        record.outcome = OUTCOME_DENY
        record.http_status = 413
        record.grpc_code = _GRPC_PERMISSION_DENIED
        record.error_class = "request_too_large"
        record.error = (
            f"request_too_large: the CheckRequest is {request.size} bytes, over server.max_recv_msg_size "
            f"({request.limit}); denied without a policy decision, its body not kept"
        )
        if self.metrics is not None:
            self.metrics.oversize_checks.inc()
        log.warning(
            "decision %s (request %s) from %s: %s", record.decision_id, record.request_id, peer, record.error,
            extra=_log_fields(record),
        )  # fmt: skip
        return result.request_too_large_response(record.error, decision_id=record.decision_id).response

    def _parse_error(
        self, record: DecisionRecord, error: RequestParseError, level: int
    ) -> external_auth_pb2.CheckResponse:
        """opa-envoy-plugin: not an RPC error but a 400 deny with "request_parse_error: ..."."""
        outcome = result.request_parse_error_response(error, decision_id=record.decision_id)
        record.outcome = OUTCOME_DENY
        record.http_status = outcome.http_status
        record.grpc_code = _GRPC_PERMISSION_DENIED
        # The message can quote the body or path text the parser choked on: digest it before it is stored or
        # logged (Envoy's client still gets the plugin's full message in the 400 body).
        text = str(error)
        if error.raw_from is not None:
            text = text[: error.raw_from] + self.redactor.digest(text[error.raw_from :])
        record.error = f"request_parse_error: {self.redactor.redact_message(text)}"
        record.policy_version = self.engine.policy_version()
        log.log(
            level, "decision %s (request %s): %s", record.decision_id, record.request_id, record.error,
            extra=_log_fields(record),
        )  # fmt: skip
        return outcome.response

    def _policy_failed(
        self, record: DecisionRecord, error: PolicyError
    ) -> tuple[external_auth_pb2.CheckResponse, PolicyError | None]:
        record.outcome = OUTCOME_ERROR
        # The engine's builtin errors quote their arguments (parsing time "Bearer ..."): there quoted text is
        # digested before the message is stored or logged. Our own messages quote only field names.
        text = self.redactor.redact_message(str(error)) if isinstance(error, PolicyEvaluationError) else str(error)
        record.error = f"{type(error).__name__}: {text}"
        record.error_class = type(error).__name__
        if not record.policy_version:
            record.policy_version = self.engine.policy_version()
        log.warning(
            "decision %s (request %s) failed: %s",
            record.decision_id,
            record.request_id,
            record.error,
            extra=_log_fields(record),
        )
        if self.options.on_error == "deny":
            outcome = result.fail_closed_response(
                decision_id=record.decision_id,
                http_status=self.options.error_http_status,
                reason=record.error,
            )
            record.http_status = outcome.http_status
            record.grpc_code = outcome.response.status.code
            return outcome.response, None
        record.grpc_code = grpc_status.code_number(grpc_status.status_for(error))
        return external_auth_pb2.CheckResponse(), error


def _log_fields(record: DecisionRecord) -> dict[str, str]:
    """Structured fields of a decision's log lines (JSON logs): ids to join logs, ledger, Envoy and traces."""
    fields = {"decision_id": record.decision_id, "request_id": record.request_id}
    if record.traceparent:
        fields["traceparent"] = record.traceparent
    if record.b3:
        fields["b3"] = record.b3
    return fields


def _log_ids(request: external_auth_pb2.CheckRequest, decision_id: str) -> DecisionRecord:
    """The ids that join a decision's log lines, ledger entry and traces; with the ledger off, all it needs."""
    http = request.attributes.request.http
    headers = http.headers
    return DecisionRecord(
        time_unix_nano=0,
        decision_id=decision_id,
        # Envoy fills http.id with its internal stream id; the x-request-id header is what its access logs
        # print (%REQ(X-REQUEST-ID)%), so it is the id that joins a log line to its ledger entry.
        request_id=headers.get("x-request-id", "") or http.id,
        traceparent=headers.get("traceparent", ""),
        tracestate=headers.get("tracestate", ""),
        b3=headers.get("b3", "") or headers.get("x-b3-traceid", ""),
    )


def _describe_request(request: external_auth_pb2.CheckRequest, decision_id: str, redactor: Redactor) -> DecisionRecord:
    """The searchable fields of an entry, read straight from the protobuf (never from the policy input)."""
    record = _log_ids(request, decision_id)
    record.time_unix_nano = time.time_ns()
    attrs = request.attributes
    http = attrs.request.http
    src = attrs.source.address.socket_address
    dst = attrs.destination.address.socket_address
    record.source_address, record.source_port = src.address, src.port_value
    record.source_principal = attrs.source.principal
    record.destination_address, record.destination_port = dst.address, dst.port_value
    record.destination_principal = attrs.destination.principal
    record.method, record.host = http.method, http.host
    record.path = redactor.redact_path(http.path)
    return record
