"""``authz-ledger check``: a real CheckRequest to a running service; decision, decision id, ledger index."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_ledger.cli.main import main as cli_main
from tests.conftest import free_port, serve_process, stop_process


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    data = tmp_path_factory.mktemp("check") / "data"
    port, audit = free_port(), free_port()
    proc = serve_process(data, port, f"audit.addr=127.0.0.1:{audit}")
    yield port, audit, data
    stop_process(proc)


def check(port: int, audit: int, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(["check", "--addr", f"127.0.0.1:{port}", "--audit-addr", f"127.0.0.1:{audit}", *args], out=out)
    return code, out.getvalue()


CASES = {
    "alice may read items": (["--path", "/api/items", "-H", "x-user: alice"], 0, True, 200),
    "bob may not delete orders": (["--method", "DELETE", "--path", "/orders/7", "-H", "x-user: bob"], 1, False, 403),
    "no user is told to authenticate": (["--path", "/people"], 1, False, 401),
}


@pytest.mark.parametrize(("args", "code", "allowed", "status"), CASES.values(), ids=CASES.keys())
def test_the_decision_its_id_and_its_ledger_entry(
    service: tuple[int, int, Path], args: list[str], code: int, allowed: bool, status: int
) -> None:
    port, audit, data = service
    got, text = check(port, audit, *args, "--json")
    doc = json.loads(text)
    assert got == code
    assert (doc["allowed"], doc["http_status"]) == (allowed, status)
    assert doc["ledger_index"] is not None
    shown = io.StringIO()
    assert cli_main(["show", "--data-dir", str(data), "--index", str(doc["ledger_index"]), "--json"], out=shown) == 0
    assert json.loads(shown.getvalue())["decision_id"] == doc["decision_id"]


def test_the_plain_output_names_decision_id_and_index(service: tuple[int, int, Path]) -> None:
    port, audit, _ = service
    code, text = check(port, audit, "--path", "/api/items", "-H", "x-user: alice")
    lines = text.splitlines()
    assert code == 0
    assert lines[0] == "allowed (HTTP 200)"
    assert lines[1].startswith("decision id:  ") and len(lines[1].split()[-1]) == 36
    assert lines[2].split()[-1].isdigit()
    assert "header:       x-authz-user: alice" in lines


def test_no_service_is_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["check", "--addr", f"127.0.0.1:{free_port()}", "--timeout", "1"], out=io.StringIO())
    assert code == 2
    assert "the Check failed: UNAVAILABLE" in capsys.readouterr().err


def test_a_malformed_header_is_a_usage_error() -> None:
    assert cli_main(["check", "-H", "no colon here"], out=io.StringIO()) == 2


def test_list_and_tail_find_one_users_decisions_by_header(service: tuple[int, int, Path]) -> None:
    port, audit, data = service
    for path, user in (("/api/items", "dora"), ("/orders", "dora"), ("/api/items", "erin")):
        check(port, audit, "--path", path, "-H", f"x-user: {user}")
    for where in (["--data-dir", str(data)], ["--server", f"127.0.0.1:{audit}"]):

        def paths(*args: str, where: list[str] = where) -> list[str]:
            out = io.StringIO()
            assert cli_main([*args, *where, "--header", "x-user=dora", "--json"], out=out) == 0
            return [json.loads(line)["path"] for line in out.getvalue().splitlines()]

        assert paths("list") == ["/api/items", "/orders"]
        assert paths("list", "--limit", "1") == ["/api/items"]  # the limit counts matching entries
        assert paths("tail", "-n", "1") == ["/orders"]
        assert paths("list", "--path-prefix", "/orders") == ["/orders"]


def test_a_header_filter_without_a_value_is_a_usage_error(service: tuple[int, int, Path]) -> None:
    _, _, data = service
    assert cli_main(["list", "--data-dir", str(data), "--header", "x-user"], out=io.StringIO()) == 2
