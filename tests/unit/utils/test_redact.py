"""Secrets are masked wherever the config is written or logged: the pure functions (steprl.utils.redact), the
.hydra files rewritten at job start and the logging filter."""
from __future__ import annotations

import logging

import pytest
import yaml

from steprl.utils.redact import (
    RedactingFilter,
    is_secret_key,
    redact,
    redact_hydra_dir,
    redact_override,
    redact_text,
)


@pytest.mark.parametrize("key", ["api_key", "apiKey", "x-api-key", "token", "access_token", "hf_token", "password",
                                 "db_passwd", "secret", "client_secret", "Authorization", "auth", "cookie",
                                 "private_key", "secret_key", "key"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["api_key_env", "max_tokens", "max_new_tokens", "token_rm", "use_token_rewards",
                                 "state_key", "action_key", "tokenizer", "pad_token_id", "base_url", "model", ""])
def test_keys_that_are_not_secrets(key):
    assert not is_secret_key(key)


def test_redact_a_config_tree():
    cfg = {"judge": {"_target_": "steprl.rewards.judges.openai_judge", "openai": {
        "base_url": "http://alice:hunter2@10.0.0.1:8000/v1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 4096,
        "extra_body": {"api_key": "sk-live-123", "top_p": 1.0, "headers": {"Authorization": "Bearer sk-live-456"},
                       "token": None, "password": ""}}},
        "overrides": ["judge.openai.extra_body.api_key=sk-live-123", "seed=3"], "seed": 3}
    assert redact(cfg) == {"judge": {"_target_": "steprl.rewards.judges.openai_judge", "openai": {
        "base_url": "http://***@10.0.0.1:8000/v1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 4096,
        "extra_body": {"api_key": "***", "top_p": 1.0, "headers": {"Authorization": "***"},
                       "token": None, "password": ""}}},  # unset stays visibly unset
        "overrides": ["judge.openai.extra_body.api_key=***", "seed=3"], "seed": 3}
    assert cfg["judge"]["openai"]["extra_body"]["api_key"] == "sk-live-123"  # a copy: the input is untouched


@pytest.mark.parametrize("text, clean", [
    ("GET http://bob:pw@host/v1/models", "GET http://***@host/v1/models"),
    ("https://token@host", "https://***@host"),
    ("http://host/v1?api_key=abc&x=1", "http://host/v1?api_key=***&x=1"),
    ("Authorization: Bearer sk-abcdefgh", "Authorization: *** ***"),
    ("seed=3,judge.openai.extra_body.api_key=sk-1,algo=grpo", "seed=3,judge.openai.extra_body.api_key=***,algo=grpo"),
    ("judge.openai.extra_body={api_key: sk-1, top_p: 1.0}", "judge.openai.extra_body={api_key: ***, top_p: 1.0}"),
    ('{"password": "pw1", "max_tokens": 5}', '{"password": "***", "max_tokens": 5}'),
    ("max_tokens=4096 http://host:8000/v1 time 12:30", "max_tokens=4096 http://host:8000/v1 time 12:30"),
])
def test_redact_text(text, clean):
    assert redact_text(text) == clean


def test_redact_override_masks_by_key():
    assert redact_override("+judge.openai.extra_body.token=abc") == "+judge.openai.extra_body.token=***"
    assert redact_override("judge.openai.base_url=http://u:p@h/v1") == "judge.openai.base_url=http://***@h/v1"
    assert redact_override("trainer.max_steps=5") == "trainer.max_steps=5"


def test_hydra_files_rewritten(tmp_path):
    d = tmp_path / ".hydra"
    d.mkdir()
    (d / "overrides.yaml").write_text(yaml.safe_dump(["judge.openai.base_url=http://u:hunter2@h/v1", "seed=1"]))
    (d / "config.yaml").write_text(yaml.safe_dump({"judge": {"openai": {"extra_body": {"api_key": "sk-9"}}}}))
    (d / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": "train"}}}))
    before = (d / "hydra.yaml").read_text()
    changed = redact_hydra_dir(tmp_path)
    assert sorted(p.name for p in changed) == ["config.yaml", "overrides.yaml"]
    assert yaml.safe_load((d / "overrides.yaml").read_text()) == ["judge.openai.base_url=http://***@h/v1", "seed=1"]
    assert yaml.safe_load((d / "config.yaml").read_text()) == {"judge": {"openai": {"extra_body": {"api_key": "***"}}}}
    assert (d / "hydra.yaml").read_text() == before
    assert not list(d.glob("*.tmp"))


def test_logging_filter_masks_messages_and_tracebacks():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    lg = logging.getLogger("steprl.test_redact")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.warning("endpoint %s failed", "http://alice:hunter2@h/v1")
        try:
            raise ValueError("bad url http://alice:hunter2@h/v1")
        except ValueError:
            lg.exception("probe")
    finally:
        lg.removeHandler(handler)
    assert records[0] == "endpoint http://***@h/v1 failed"
    assert "hunter2" not in records[1] and "ValueError: bad url http://***@h/v1" in records[1]
