"""The console over HTTP (a real uvicorn listener on loopback, a real ledger): pages, the JSON and byte
endpoints an auditor's scripts use, the live tail, and the exposure rules."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.config import ConsoleConfig
from authz_ledger.console.context import open_context
from authz_ledger.console.serving import RunningConsole, check_exposure, start_console
from authz_ledger.errors import ConfigError
from authz_ledger.tlog import note, proof, receipt, tree
from tests.conftest import ORIGIN, StartService
from tests.support.console import ConsoleLedger, open_console_ledger
from tests.support.pki import make_pki
from tests.support.waits import wait_until

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[ConsoleLedger]:
    led = open_console_ledger(tmp_path / "ledger", note.generate_signer(ORIGIN))
    led.append(400)
    led.checkpoint()
    yield led
    led.store.close()


def start(ledger: ConsoleLedger, tmp_path: Path, **settings: str) -> RunningConsole:
    signer = ledger.writer.signers[0]
    cfg = ConsoleConfig(enabled=True, addr="127.0.0.1:0", index_dir=str(tmp_path / "index"), **settings)
    ctx = open_context(ledger.store.path, [note.Verifier.from_vkey(signer.verifier_key())], cfg, store=ledger.store)
    running = start_console(ctx, cfg)
    wait_until(lambda: ctx.index.covered() == ledger.size, timeout=30, message="the index catches up")
    return running


@pytest.fixture
def console(ledger: ConsoleLedger, tmp_path: Path) -> Iterator[RunningConsole]:
    running = start(ledger, tmp_path)
    yield running
    running.stop()


def get(c: RunningConsole, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{c.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_search_page_lists_matching_rows_and_keeps_the_query_in_the_url(console: RunningConsole) -> None:
    status, headers, body = get(console, "/?q=" + urllib.parse.quote("outcome:allow") + "&method=GET")
    assert status == 200
    html = body.decode()
    assert html.count('data-testid="row"') == 50
    assert 'data-testid="search"' in html
    assert "outcome:allow method:GET" in html
    assert "script-src 'self'" in headers["content-security-policy"]
    status, _, body = get(console, "/api/search?q=" + urllib.parse.quote("outcome:allow method:GET"))
    rows = json.loads(body)["rows"]
    assert len(rows) == 50
    assert all(r["outcome"] == "allow" and r["method"] == "GET" for r in rows)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/search?q=usr:x", 400, "unknown search key"),
        ("/api/entry/999999", 404, "no entry 999999"),
        ("/entry/999999", 404, "no entry 999999"),
        ("/?q=status:9", 400, "HTTP status code"),
        ("/stats?range=1y", 400, "range must be one of"),
    ],
    ids=["a bad query", "an entry that does not exist", "its page", "a bad filter on the page", "a bad range"],
)
def test_bad_requests_get_a_clear_error_and_status(
    console: RunningConsole, path: str, status: int, message: str
) -> None:
    got, _, body = get(console, path)
    assert got == status
    assert message in body.decode()


def test_entry_bytes_and_proof_check_out_against_the_signed_checkpoint(
    console: RunningConsole, ledger: ConsoleLedger
) -> None:
    _, _, body = get(console, "/api/entry/123")
    entry = base64.b64decode(json.loads(body)["entry_b64"])
    assert entry == ledger.store.entry(123)
    _, _, body = get(console, "/api/proof/123")
    doc = json.loads(body)
    verifier = note.Verifier.from_vkey(ledger.writer.signers[0].verifier_key())
    from authz_ledger.tlog.checkpoint import open_checkpoint

    cp, _ = open_checkpoint(doc["checkpoint"].encode(), [verifier])
    assert cp.size == doc["tree_size"] == 400
    proof.verify_inclusion(123, cp.size, tree.leaf_hash(entry), [base64.b64decode(h) for h in doc["proof"]], cp.root)
    _, headers, text = get(console, "/api/receipt/123")
    assert "attachment" in headers["content-disposition"]
    assert receipt.verify_receipt(text, entry, [verifier]).size == 400


def test_an_entry_not_yet_under_a_checkpoint_is_refused_for_now(console: RunningConsole, ledger: ConsoleLedger) -> None:
    ledger.append(5)
    status, _, body = get(console, "/api/proof/402")
    assert status == 409
    assert "not covered by the latest signed checkpoint" in json.loads(body)["error"]


def test_the_live_tail_streams_new_matching_decisions(console: RunningConsole, ledger: ConsoleLedger) -> None:
    url = f"http://127.0.0.1:{console.port}/api/tail?q=" + urllib.parse.quote("outcome:deny")
    events: list[str] = []

    def read() -> None:
        with urllib.request.urlopen(url, timeout=20) as r:
            for line in r:
                events.append(line.decode())
                if sum(e.startswith("data: <tr") for e in events) >= 3:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: any(e.startswith("event: position") for e in events), timeout=10, message="the tail starts")
    ledger.append(60)
    reader.join(20)
    rows = [e for e in events if e.startswith("data: <tr")]
    assert len(rows) >= 3
    assert all('data-testid="row"' in r and ">deny<" in r for r in rows)
    assert all(int(r.split('data-index="')[1].split('"')[0]) >= 400 for r in rows)


def test_the_stats_page_draws_rates_and_lists_checkpoints(console: RunningConsole) -> None:
    status, _, body = get(console, "/stats?range=30d")
    html = body.decode()
    assert status == 200
    assert "<svg" in html
    assert "Most denied paths" in html
    assert ORIGIN in html  # the checkpoint's signer


def test_a_token_is_required_on_every_request_when_configured(ledger: ConsoleLedger, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    running = start(ledger, tmp_path, token_file=str(token_file))
    try:
        assert get(running, "/api/entry/1")[0] == 401
        assert get(running, "/static/verify.js")[0] == 401
        assert get(running, "/api/entry/1", {"Authorization": "Bearer wrong-token-000000000"})[0] == 401
        assert get(running, "/api/entry/1", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(running, "/", {"Cookie": f"authz_ledger_console={TOKEN}"})[0] == 200
    finally:
        running.stop()


EXPOSURE = [
    ("loopback in plaintext is the default", {}, None),
    ("another address in plaintext", {"addr": "0.0.0.0:9194"}, "not loopback"),
    ("another address with TLS but nobody chosen", {"addr": "0.0.0.0:9194", "tls_cert": "c", "tls_key": "k"},
     "token_file or client_ca"),
    ("another address with TLS and a token", {"addr": "0.0.0.0:9194", "tls_cert": "c", "tls_key": "k",
                                              "token_file": "t"}, None),
    ("another address with mutual TLS", {"addr": "[::]:9194", "tls_cert": "c", "tls_key": "k", "client_ca": "a"}, None),
    ("a certificate without its key", {"tls_cert": "c"}, "both tls_cert and tls_key"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "refusal"), [c[1:] for c in EXPOSURE], ids=[c[0] for c in EXPOSURE])
def test_a_console_off_loopback_must_be_protected(settings: dict[str, str], refusal: str | None) -> None:
    cfg = ConsoleConfig(enabled=True, **settings)
    if refusal is None:
        check_exposure(cfg)
    else:
        with pytest.raises(ConfigError, match=refusal):
            check_exposure(cfg)


def test_the_index_follows_the_ledger_while_the_console_runs(console: RunningConsole, ledger: ConsoleLedger) -> None:
    ledger.append(25)
    wait_until(lambda: console.ctx.index.covered() == 425, timeout=10, message="the index follows")
    started = time.monotonic()
    _, _, body = get(console, "/healthz")
    assert json.loads(body) == {"size": 425, "indexed": 425, "error": ""}
    assert time.monotonic() - started < 5


def test_serve_hosts_the_console_when_enabled(authz_service: StartService, tmp_path: Path) -> None:
    running = authz_service("console.enabled=true", "console.addr=127.0.0.1:0", f"console.index_dir={tmp_path / 'ix'}")
    assert running.console is not None
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.method, req.attributes.request.http.path = "GET", "/orders/1"
    req.attributes.request.http.headers["x-user"] = "bob"
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        external_auth_pb2_grpc.AuthorizationStub(channel).Check(req, timeout=10)
    wait_until(lambda: running.console is not None and running.console.ctx.index.covered() == 1, timeout=10)
    status, _, body = get(running.console, "/api/search?q=user:bob")
    assert status == 200
    assert [r["path"] for r in json.loads(body)["rows"]] == ["/orders/1"]
    # The console shows the ledger's own verifier key by default.
    _, _, page = get(running.console, "/")
    assert running.ledger is not None
    assert running.ledger.signers[0].verifier_key() in page.decode()


def test_mutual_tls_admits_only_browsers_with_a_certificate_from_the_client_ca(
    ledger: ConsoleLedger, tmp_path: Path
) -> None:
    files = make_pki().write(tmp_path)
    running = start(
        ledger,
        tmp_path,
        tls_cert=files["server_cert"],
        tls_key=files["server_key"],
        client_ca=files["ca"],
    )
    url = f"https://localhost:{running.port}/healthz"
    try:
        trusted = ssl.create_default_context(cafile=files["ca"])
        trusted.load_cert_chain(files["client_cert"], files["client_key"])
        with urllib.request.urlopen(url, context=trusted, timeout=10) as r:
            assert json.loads(r.read())["size"] == 400
        anonymous = ssl.create_default_context(cafile=files["ca"])
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            urllib.request.urlopen(url, context=anonymous, timeout=10).read()
        rogue = ssl.create_default_context(cafile=files["ca"])
        rogue.load_cert_chain(files["rogue_cert"], files["rogue_key"])
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            urllib.request.urlopen(url, context=rogue, timeout=10).read()
    finally:
        running.stop()
