"""Configuration precedence and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authz_ledger import config
from authz_ledger.errors import ConfigError


def test_defaults_start_on_the_embedded_engine_with_the_bundled_policy() -> None:
    cfg = config.load(environ={})
    assert cfg.policy.engine == "embedded"
    assert Path(cfg.policy.source, "policy.rego").exists()
    assert cfg.policy.path == "envoy/authz/allow"
    assert cfg.ledger.durability == "sync"


def test_file_then_environment_then_set_then_flags_each_win_over_the_previous(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("policy:\n  timeout_ms: 10\n  dry_run: true\nledger:\n  durability: async\n  queue_size: 5\n")
    cfg = config.load(
        str(f),
        sets=["ledger.queue_size=7", "policy.opa.url=unix:///tmp/opa.sock"],
        environ={"AUTHZ_LEDGER_POLICY__TIMEOUT_MS": "20", "AUTHZ_LEDGER_LEDGER__QUEUE_SIZE": "6"},
        overrides={"server.addr": "127.0.0.1:1"},
    )
    assert cfg.policy.timeout_ms == 20.0  # env over file
    assert cfg.policy.dry_run is True  # file over default
    assert cfg.ledger.queue_size == 7  # --set over env
    assert cfg.ledger.durability == "async"
    assert cfg.policy.opa.url == "unix:///tmp/opa.sock"
    assert cfg.server.addr == "127.0.0.1:1"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        pytest.param(["policy.engin=opa"], "unknown configuration key 'policy.engin'", id="a misspelt key is named"),
        pytest.param(["policy.engine=rego"], "policy.engine must be one of", id="an unknown engine is refused"),
        pytest.param(["ledger.durability=maybe"], "ledger.durability", id="an unknown durability is refused"),
        pytest.param(["ledger.queue_size=many"], "ledger.queue_size", id="a non-integer queue size is refused"),
        pytest.param(["ledger.queue_size=0"], "must be positive", id="a zero queue size is refused"),
        pytest.param(["ledger.origin=has space"], "ledger.origin", id="an origin with a space is refused"),
        pytest.param(["policy.error_http_status=200"], "HTTP error status", id="an error status of 200 is refused"),
        pytest.param(["policy.path=/envoy/authz"], "policy.path", id="a decision path with a leading slash"),
        pytest.param(["policy=1"], "must be a mapping", id="a section set to a scalar is refused"),
        pytest.param(["novalue"], "key=value", id="a --set without '=' is refused"),
    ],
)
def test_invalid_configuration_is_refused_with_the_key_named(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(sets=sets, environ={})


def test_a_broken_yaml_file_is_reported_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("policy: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        config.load(str(f), environ={})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="AUTHZ_LEDGER_SERVER__THREADS"):
        config.load(environ={"AUTHZ_LEDGER_SERVER__THREADS": "lots"})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param(
            "AUTHZ_LEDGER_LEDGER_ORIGIN",
            "did you mean AUTHZ_LEDGER_LEDGER__ORIGIN",
            id="a single underscore where two are meant is an error naming the spelling meant",
        ),
        pytest.param(
            "AUTHZ_LEDGER_POLICY_OPA_URL",
            "did you mean AUTHZ_LEDGER_POLICY__OPA__URL",
            id="a nested key spelled with single underscores is named too",
        ),
        pytest.param(
            "AUTHZ_LEDGER_NO_SUCH_THING",
            "AUTHZ_LEDGER_NO_SUCH_THING names no configuration key",
            id="a variable that fits no key is an error naming the variable",
        ),
        pytest.param(
            "AUTHZ_LEDGER_LEDGER__NO_SUCH_KEY",
            "unknown configuration key 'ledger.no_such_key' (from environment variable "
            "AUTHZ_LEDGER_LEDGER__NO_SUCH_KEY)",
            id="an unknown key in a known section is an error like one in the file",
        ),
    ],
)
def test_an_environment_variable_that_names_no_key_is_an_error(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(environ={name: "x"})


def test_the_test_tools_cache_variable_is_not_a_setting() -> None:
    assert config.load(environ={"AUTHZ_LEDGER_CACHE": "/tmp/x"}) == config.load(environ={})


def test_redaction_extras_add_to_the_defaults_and_a_replaced_list_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from authz_ledger.ledger.opening import redaction_rules
    from authz_ledger.record.secrets import DEFAULT_DIGEST_HEADERS

    added = config.load(sets=["ledger.redaction.digest_headers_extra=x-my-token"], environ={})
    rules = redaction_rules(added.ledger.redaction, announce=False)
    assert set(DEFAULT_DIGEST_HEADERS) | {"x-my-token"} == rules.digest_headers
    replaced = config.load(sets=["ledger.redaction.digest_headers=x-only"], environ={})
    with caplog.at_level("WARNING"):
        rules = redaction_rules(replaced.ledger.redaction)
    assert rules.digest_headers == {"x-only"}
    assert any("replaces the defaults: api-key" in r.getMessage() for r in caplog.records)


def test_a_name_pattern_that_is_not_a_regular_expression_is_refused() -> None:
    with pytest.raises(ConfigError, match="name_pattern is not a regular expression"):
        config.load(sets=["ledger.redaction.name_pattern=(unclosed"], environ={})
