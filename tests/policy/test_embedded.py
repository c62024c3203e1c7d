"""The embedded engine: OPA's Go engine in evaluator processes. Decisions, failing closed, crashes, timeouts,
hostile policies."""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import tarfile
import threading
import time

import pytest

from authz_ledger.errors import (
    PolicyError,
    PolicyEvaluationError,
    PolicyLoadError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    PolicyUndefinedError,
)
from authz_ledger.policy.embedded import EmbeddedEngine
from tests.support.waits import cpu_seconds, has_exited, threads_running, wait_until

from .conftest import EXAMPLE_POLICY, decision_cases, encode, request_input, write_policy

SLOW = """package envoy.authz
import rego.v1
allow := count([1 | some i in numbers.range(1, input.n); some j in numbers.range(1, input.n)])
"""


@pytest.fixture(scope="module")
def example_engine():
    engine = EmbeddedEngine(EXAMPLE_POLICY, workers=2, timeout=5.0)
    yield engine
    engine.close()


@pytest.mark.parametrize(("method", "path", "user", "want"), decision_cases())
def test_example_policy_decisions(example_engine, method, path, user, want):
    evaluation = example_engine.evaluate(encode(request_input(method, path, user)))
    assert evaluation.result == want
    assert evaluation.policy_version.startswith("sha256:")
    assert evaluation.eval_ns > 0


# Each policy below must end in an error -- never an allow, never a silent undefined. The engine evaluates with
# strict builtin errors (see policy/embedded/go_engine.py): OPA's own default would make the failing builtin undefined.
FAILING_POLICIES = [
    pytest.param(
        "import rego.v1\ndeny if time.parse_rfc3339_ns(input.t) > 0\nallow if not deny\n",
        {"t": "not a time"},
        "eval_builtin_error: time.parse_rfc3339_ns",
        id="a failing builtin under allow-if-not-deny is an error, not an allow",
    ),
    pytest.param(
        'import rego.v1\ndeny if net.cidr_contains(input.cidr, "10.1.2.3")\nallow if not deny\n',
        {"cidr": "10.0.0.0/99"},
        "eval_builtin_error: net.cidr_contains",
        id="a bad CIDR is an error, not an allow",
    ),
    pytest.param(
        "import rego.v1\nallow if input.n + 1 > 0\n",
        {"n": "one"},
        "eval_type_error",
        id="a builtin given the wrong type is an error",
    ),
    pytest.param(
        "import rego.v1\nallow := 1 if input.x\nallow := 2 if input.x\n",
        {"x": True},
        "eval_conflict_error",
        id="a complete rule with two values is an error",
    ),
    pytest.param(
        "import rego.v1\nallow := to_number(input.s)\n",
        {"s": "twelve"},
        "eval_builtin_error: to_number",
        id="a conversion that fails is an error",
    ),
]


@pytest.mark.parametrize(("rules", "document", "message"), FAILING_POLICIES)
def test_failing_policies_fail_closed(tmp_path, rules, document, message):
    write_policy(tmp_path, "package envoy.authz\n" + rules)
    with EmbeddedEngine(tmp_path, workers=1) as engine, pytest.raises(PolicyEvaluationError, match=message):
        engine.evaluate(encode(document))


def test_undefined_decision(tmp_path):
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow if input.ok\n")
    with EmbeddedEngine(tmp_path, workers=1) as engine:
        with pytest.raises(PolicyUndefinedError):
            engine.evaluate(b"{}")
        assert engine.evaluate(b'{"ok": true}').result is True


def test_input_that_is_not_json_is_an_error_not_a_rego_term(tmp_path):
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow := input\n")
    with (
        EmbeddedEngine(tmp_path, workers=1) as engine,
        pytest.raises(PolicyEvaluationError, match="not valid JSON"),
    ):
        engine.evaluate(b"data.envoy")


TRICKY_STRINGS = ['a"b', "back\\slash", "line\nbreak", "é", "\U0001f600", "nul\x00byte", "\u2028", "tab\tx"]


def test_input_strings_reach_the_policy_exactly(tmp_path):
    # The C-API input path passes strings in rego-cpp's escaped spelling; an echo policy must give them back
    # unchanged, and equality with policy literals must hold (a quote in a header must not break matching).
    write_policy(
        tmp_path,
        "package envoy.authz\nimport rego.v1\n"
        'allow := {"echo": input, "quote_matches": input.s[0] == "a\\"b",'
        ' "slash_matches": input.s[1] == "back\\\\slash"}\n',
    )
    document = {"s": TRICKY_STRINGS, 'k"ey': 1, "big": 2**70, "neg": -(2**63), "f": 1.5, "n": None, "t": True}
    with EmbeddedEngine(tmp_path, workers=1) as engine:
        result = engine.evaluate(json.dumps(document).encode()).result
    assert result == {"echo": document, "quote_matches": True, "slash_matches": True}


def test_syntax_error_names_file_and_line(tmp_path):
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow if {\n  input.x ==\n}\n", name="broken.rego")
    with pytest.raises(PolicyLoadError, match=r"broken\.rego:5: rego_parse_error: unexpected \} token"):
        EmbeddedEngine(tmp_path, workers=1)


def test_unknown_function_is_a_load_error(tmp_path):
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow if no_such_function(1)\n")
    with pytest.raises(PolicyLoadError, match=r"policy\.rego:3: rego_type_error: undefined function no_such_function"):
        EmbeddedEngine(tmp_path, workers=1)


def test_an_idle_worker_that_dies_is_replaced_without_failing_a_decision(tmp_path):
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow := input.v\n")
    with EmbeddedEngine(tmp_path, workers=1) as engine:
        (pid,) = engine.worker_pids()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: has_exited(pid), message=f"worker {pid} outlived SIGKILL")
        time.sleep(0.1)  # the kernel's teardown of the dead worker's socket: then the next send sees EPIPE
        assert engine.evaluate(b'{"v": 1}').result == 1
        assert engine.worker_pids() != [pid]


def test_a_worker_that_dies_mid_decision_fails_that_call_and_is_replaced(tmp_path):
    write_policy(tmp_path, SLOW)
    with EmbeddedEngine(tmp_path, workers=1, timeout=30.0) as engine:
        (pid,) = engine.worker_pids()
        errors: list[BaseException] = []

        def slow_call() -> None:
            try:
                engine.evaluate(b'{"n": 5000}')
            except BaseException as exc:
                errors.append(exc)

        idle_cpu = cpu_seconds(pid)
        caller = threading.Thread(target=slow_call)
        caller.start()
        # Killed once it is computing the decision (the CPU it burns shows it took the input), not before.
        wait_until(lambda: cpu_seconds(pid) - idle_cpu, lambda busy: busy >= 0.1, message="the worker never started")
        os.kill(pid, signal.SIGKILL)
        caller.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], PolicyUnavailableError)
        assert engine.evaluate(b'{"n": 2}').result == 4


def test_timeout_kills_the_worker_and_the_next_call_succeeds(tmp_path):
    write_policy(tmp_path, SLOW)
    with EmbeddedEngine(tmp_path, workers=1, timeout=0.5) as engine:
        (pid,) = engine.worker_pids()
        started = time.monotonic()
        with pytest.raises(PolicyTimeoutError):
            engine.evaluate(b'{"n": 5000}')
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 1.0
        # The replacement starts in the background; until it is ready a decision may be refused.
        evaluation = wait_until(lambda: engine.evaluate(b'{"n": 2}'), ignoring=PolicyError, message="no replacement")
        assert evaluation.result == 4
        assert pid not in engine.worker_pids()


def test_a_decision_made_while_a_killed_worker_is_replaced_is_refused_naming_its_timeout(tmp_path):
    write_policy(tmp_path, SLOW)
    with EmbeddedEngine(tmp_path, workers=1, timeout=0.05) as engine:
        with pytest.raises(PolicyTimeoutError, match=r"exceeded the 0\.05 s timeout"):
            engine.evaluate(b'{"n": 5000}')
        # A replacement process takes far longer than 50 ms to start and load OPA's engine.
        with pytest.raises(PolicyUnavailableError, match=r"replacement did not become ready within the 0\.05 s"):
            engine.evaluate(b'{"n": 2}')


def test_reload_keeps_serving_the_old_policy_when_the_new_one_is_broken(tmp_path):
    write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := "v1"\n')
    with EmbeddedEngine(tmp_path, workers=2) as engine:
        v1 = engine.policy_version()
        stop = threading.Event()
        seen: list[object] = []

        def hammer() -> None:
            while not stop.is_set():
                try:
                    seen.append(engine.evaluate(b"{}").result)
                except Exception as exc:
                    seen.append(exc)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := "v2" if {\n')
            with pytest.raises(PolicyLoadError, match=r"policy\.rego:\d+"):
                engine.reload()
            assert engine.policy_version() == v1
            assert engine.evaluate(b"{}").result == "v1"
            write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := "v2"\n')
            v2 = engine.reload()
            assert v2 != v1
            assert engine.policy_version() == v2
            assert engine.evaluate(b"{}").result == "v2"
            assert engine.reload() == v2  # unchanged files: nothing restarts
        finally:
            stop.set()
            thread.join(10)
        assert set(map(repr, seen)) <= {"'v1'", "'v2'"}, "every decision during the reload came from one policy"


def test_bundle_tarball_with_manifest_revision(tmp_path):
    members = {
        ".manifest": b'{"revision": "2026-11-26.1", "roots": ["envoy"]}',
        "envoy/policy.rego": b"package envoy.authz\nimport rego.v1\nallow if data.envoy.ok\n",
        "envoy/data.json": b'{"ok": true}',
    }
    path = tmp_path / "bundle.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    with EmbeddedEngine(path, workers=1) as engine:
        evaluation = engine.evaluate(b"{}")
        assert evaluation.result is True
        assert evaluation.policy_version == "2026-11-26.1"


def test_watcher_reloads_changed_files(tmp_path):
    write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := "before"\n')
    with EmbeddedEngine(tmp_path, workers=1, watch=True, watch_interval=0.2) as engine:
        before = engine.policy_version()
        # A change is a difference from the files as the watcher first saw them: edit only once it has looked.
        wait_until(
            lambda: threads_running(threading.Event.wait, thread_prefix="authz-ledger-policy-watch"),
            message="the policy watcher never started",
        )
        write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := "after"\n')
        wait_until(
            lambda: engine.evaluate(b"{}").result,
            lambda result: result == "after",
            timeout=15,
            interval=0.1,
            message="the watcher did not reload",
        )
        assert engine.policy_version() != before  # the reload replaced the policy, not only its answer


def _rate(engine: EmbeddedEngine, body: bytes, callers: int, seconds: float) -> tuple[float, float]:
    """(decisions per second, parent CPU microseconds per decision) with ``callers`` threads."""
    counts = [0] * callers
    stop = threading.Event()

    def loop(i: int) -> None:
        while not stop.is_set():
            engine.evaluate(body)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)  # the measurement's duration, not a wait for anything
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    total = sum(counts)
    return total / wall, cpu / total * 1e6


def test_throughput_with_a_busy_python_thread(example_engine):
    body = encode(request_input("POST", "/people/42", "carol"))
    single, single_cpu = _rate(example_engine, body, 1, 2.0)
    double, double_cpu = _rate(example_engine, body, 2, 2.0)

    spinning = threading.Event()

    def spin() -> None:
        x = 0
        while not spinning.is_set():
            x += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy, _ = _rate(example_engine, body, 2, 3.0)
    finally:
        spinning.set()
        spinner.join()
    print(
        f"\nembedded: 1 caller {single:.0f}/s ({1e6 / single:.0f} us each, parent CPU {single_cpu:.0f} us);"
        f" 2 callers {double:.0f}/s (parent CPU {double_cpu:.0f} us);"
        f" 2 callers + a spinning Python thread {busy:.0f}/s"
    )
    # In-process regopy manages ~55/s next to a busy thread; the process pool must stay well above that.
    assert busy > 150


def test_a_burst_of_queued_decisions_never_kills_healthy_workers(tmp_path: pathlib.Path) -> None:
    """32 callers on 1 worker: the ones that wait too long are refused; no worker is killed for their wait."""
    # ~10-30 ms per decision, so callers queued behind each other get the worker late in their budget.
    (tmp_path / "p.rego").write_text(
        "package envoy.authz\nimport rego.v1\nallow if count([x | some x in numbers.range(1, 3000)]) > 0\n"
    )
    engine = EmbeddedEngine(tmp_path, workers=1, timeout=0.2)
    try:
        pids = engine.worker_pids()
        outcomes: list[str] = []
        lock = threading.Lock()

        def call() -> None:
            for _ in range(5):
                try:
                    engine.evaluate(b"{}")
                    kind = "ok"
                except PolicyUnavailableError:
                    kind = "unavailable"
                except PolicyTimeoutError:
                    kind = "timeout"
                with lock:
                    outcomes.append(kind)

        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") > 0
        assert "timeout" not in outcomes  # no evaluation was cut short for time it spent queued
        assert engine.worker_pids() == pids  # the same process served throughout
    finally:
        engine.close()


# --- Hostile policies: a decision that never ends is stopped, and the engine keeps answering ---------------

HOSTILE = """package envoy.authz
import rego.v1
default allow := false
allow if input.mode == "fast"
# Minutes of CPU in little memory: 10^12 pairs.
allow if {
    input.mode == "compute"
    some i in numbers.range(1, 1000000)
    some j in numbers.range(1, 1000000)
    i * j == -1
}
# Memory without end: one array of four billion numbers.
allow if {
    input.mode == "allocate"
    count([i | some i in numbers.range(1, 4000000000)]) > 0
}
"""


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _fast_decisions_keep_coming(engine: EmbeddedEngine, stop: threading.Event, answered: list[float]) -> None:
    while not stop.is_set():
        try:
            assert engine.evaluate(b'{"mode": "fast"}').result is True
            answered.append(time.monotonic())
        except PolicyError:
            time.sleep(0.05)  # load, not a wait: the one worker is being replaced, ask again a little later


def test_a_policy_that_computes_for_minutes_is_stopped_at_the_timeout_and_others_are_answered(tmp_path):
    write_policy(tmp_path, HOSTILE)
    with EmbeddedEngine(tmp_path, workers=2, timeout=1.0) as engine:
        stop, answered = threading.Event(), []
        helper = threading.Thread(target=_fast_decisions_keep_coming, args=(engine, stop, answered))
        helper.start()
        try:
            started = time.monotonic()
            with pytest.raises(PolicyTimeoutError):
                engine.evaluate(b'{"mode": "compute"}')
            assert time.monotonic() - started < 3.0  # stopped at the 1 s timeout, not after minutes
            during = len(answered)
            assert during > 0, "the other worker answered nothing while one computed"
            wait_until(
                lambda: len(answered),
                lambda count: count >= during + 20,
                message="decisions stopped after the runaway one was killed",
            )
        finally:
            stop.set()
            helper.join(10)


def test_a_policy_that_allocates_without_end_is_stopped_by_the_memory_limit(tmp_path):
    write_policy(tmp_path, HOSTILE)
    with EmbeddedEngine(tmp_path, workers=1, timeout=60.0, memory_limit_mb=2300) as engine:
        (pid,) = engine.worker_pids()
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError, match="exited during the decision"):
            engine.evaluate(b'{"mode": "allocate"}')
        assert time.monotonic() - started < 30.0  # the limit, not the 60 s timeout, ended it
        # Reaped, not only dead: its memory went back with it.
        wait_until(
            lambda: pathlib.Path(f"/proc/{pid}").exists(),
            lambda exists: not exists,
            message="the worker that ran out of memory was never reaped",
        )
        # A replacement starts in the background; until it is ready a decision may be refused.
        evaluation = wait_until(
            lambda: engine.evaluate(b'{"mode": "fast"}'),
            ignoring=PolicyError,
            timeout=20,
            interval=0.1,
            message="no replacement worker",
        )
        assert evaluation.result is True
        (replacement,) = engine.worker_pids()
        assert replacement != pid
        assert _rss_kb(replacement) < 200_000


def test_a_missing_engine_library_says_how_to_install_it(tmp_path, monkeypatch):
    # Evaluator processes are spawned with the parent's sys.path: a broken opa_bindings first on it stands for
    # an install without the engine's wheel.
    fake = tmp_path / "fake"
    (fake / "opa_bindings").mkdir(parents=True)
    (fake / "opa_bindings" / "__init__.py").write_text("raise ImportError('No module named opa_bindings')\n")
    monkeypatch.syspath_prepend(str(fake))
    with pytest.raises(PolicyLoadError, match=r"opa-golib-python-bindings==0\.4\.4.*engine-requirements\.txt"):
        EmbeddedEngine(EXAMPLE_POLICY, workers=1)


def test_policy_print_output_is_logged_by_the_service_defined_or_not(tmp_path, caplog):
    write_policy(
        tmp_path,
        'package envoy.authz\nimport rego.v1\nallow if {\n  print("user is", input.user)\n  input.user == "alice"\n}\n',
    )
    with EmbeddedEngine(tmp_path, workers=1) as engine, caplog.at_level("INFO", logger="authz_ledger.policy"):
        assert engine.evaluate(b'{"user": "alice"}').result is True
        with pytest.raises(PolicyUndefinedError):
            engine.evaluate(b'{"user": "bob"}')
    printed = [r.getMessage() for r in caplog.records if "policy print" in r.getMessage()]
    assert printed == ["policy print (policy.rego:4): user is alice", "policy print (policy.rego:4): user is bob"]


def test_a_large_policy_answers_its_first_decision_within_a_short_timeout(tmp_path):
    # The engine compiles a query when it first evaluates it (~0.4 s for 3,000 rules): loading warms the
    # decision query up, so no worker spends its first decision's timeout compiling.
    rules = "\n".join(f"r{i} if input.x == {i}" for i in range(3000))
    write_policy(tmp_path, f"package envoy.authz\nimport rego.v1\n{rules}\nallow := true if r5\n")
    with EmbeddedEngine(tmp_path, workers=2, timeout=0.2) as engine:
        for _ in range(4):  # both workers' first decisions
            assert engine.evaluate(b'{"x": 5}').result is True


def test_an_answer_nested_deeper_than_python_reads_is_an_evaluation_error(tmp_path):
    write_policy(tmp_path, 'package envoy.authz\nimport rego.v1\nallow := {"allowed": false, "echo": input.b}\n')
    deep = b'{"b": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    with EmbeddedEngine(tmp_path, workers=1) as engine, pytest.raises(PolicyEvaluationError, match="too deeply"):
        engine.evaluate(deep)


def test_decisions_queued_behind_a_worker_that_dies_are_answered_by_its_replacement(tmp_path):
    write_policy(tmp_path, SLOW)
    with EmbeddedEngine(tmp_path, workers=1, timeout=30.0) as engine:
        (pid,) = engine.worker_pids()
        outcomes: dict[str, object] = {}

        def call(name: str, n: int) -> None:
            try:
                outcomes[name] = engine.evaluate(json.dumps({"n": n}).encode()).result
            except PolicyError as exc:
                outcomes[name] = exc

        idle_cpu = cpu_seconds(pid)
        slow = threading.Thread(target=call, args=("slow", 5000))
        slow.start()
        wait_until(lambda: cpu_seconds(pid) - idle_cpu, lambda busy: busy >= 0.1, message="the worker never started")
        queued = [threading.Thread(target=call, args=(f"fast{i}", 2)) for i in range(5)]
        for t in queued:
            t.start()
        time.sleep(0.2)  # load, not a wait: the five requests reach the busy worker's socket behind the slow one
        os.kill(pid, signal.SIGKILL)
        for t in [slow, *queued]:
            t.join(30)
        assert isinstance(outcomes["slow"], PolicyUnavailableError)  # the one it was evaluating fails
        assert [outcomes[f"fast{i}"] for i in range(5)] == [4] * 5  # the ones it never started are answered
        assert pid not in engine.worker_pids()
