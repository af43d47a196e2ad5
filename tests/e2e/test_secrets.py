"""A real run (`src/train.py`, TP-GRPO with an OpenAI-compatible judge on 127.0.0.1) given a password in the judge
URL and an API key in `judge.openai.extra_body`: the judge receives both, and no file the run writes (.hydra/*.yaml,
the log, the MLflow store and its config artifact, checkpoints aside) nor its console output contains either."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.unit.rewards.chat_server import ChatServer

PASSWORD, KEY = "hunter2-pw-7431", "sk-test-SECRET-9917"


@pytest.mark.slow
def test_secrets_never_written(tmp_path):
    with ChatServer(lambda messages: '[{"step": 1, "label": "correct"}]') as srv:
        url = srv.base_url.replace("http://", f"http://alice:{PASSWORD}@")
        run_dir = tmp_path / "run"
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), "experiment=tp_grpo_tiny", "judge=openai",
               f"judge.openai.base_url={url}", f"+judge.openai.extra_body.api_key={KEY}",
               "judge.openai.timeout_s=30", "trainer.max_steps=1", "trainer.num_sanity_val_steps=0",
               "trainer.val_check_interval=100", "task.num_val=4", "callbacks.progress_bar=null", "torch_threads=1",
               f"paths.root_output={tmp_path}", f"hydra.run.dir={run_dir}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    bodies = [r["body"] for r in srv.requests if "messages" in r["body"]]
    assert bodies and all(b["api_key"] == KEY for b in bodies)  # the judge gets the real key
    assert srv.requests[-1]["auth"].startswith("Basic ")
    assert (run_dir / ".hydra" / "overrides.yaml").exists() and (tmp_path / "mlflow.db").exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".ckpt"]
    assert any(p.name == "config.yaml" and "artifacts" in str(p) for p in written)  # the MLflow config artifact
    for p in written:
        data = p.read_bytes()
        assert PASSWORD.encode() not in data and KEY.encode() not in data, f"secret written to {p}"
    assert PASSWORD not in proc.stdout + proc.stderr and KEY not in proc.stdout + proc.stderr
    assert "api_key: '***'" in (run_dir / ".hydra" / "config.yaml").read_text() or \
        "***" in (run_dir / ".hydra" / "overrides.yaml").read_text()
