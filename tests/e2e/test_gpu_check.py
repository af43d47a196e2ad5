"""scripts/gpu_check.py, the GPU check runner, without a GPU: it composes every RL algorithm's recipe for the
device (``--dry-run``) and runs one algorithm's steps on CPU the way it runs them on a GPU (``--device cpu``)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.engine.record_golden import ALGOS as RL_ALGOS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)


def test_it_checks_every_rl_algorithm_through_its_recipe():
    assert sorted(gc.ALGOS) == sorted(RL_ALGOS)
    for algo in gc.ALGOS:
        assert (ROOT / "conf" / "experiment" / f"{algo}_tiny.yaml").is_file(), algo
    # no algorithm class is imported: the runner composes configs
    assert "steprl.algos" not in SCRIPT.read_text()


def test_the_overrides_of_one_check():
    over = gc.overrides("oreal", "cuda", "bf16")
    assert over[:3] == ["experiment=oreal_tiny", "hardware=gpu", "trainer.precision=bf16-mixed"]
    assert "algo.token_rm.actor_freeze_steps=0" in over and "batch.prompts_per_step=2" not in over
    assert "batch.prompts_per_step=2" in gc.overrides("grpo", "cpu", "fp32")


def test_dry_run_composes_every_algorithm_for_the_gpu(capsys):
    gc.main(["--dry-run", "--precisions", "fp32"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "GPU_CHECK_OK"
    composed = [ln for ln in lines if ln.startswith("[gpu_check]") and "composed (" in ln]
    assert [ln.split()[1] for ln in composed] == list(gc.ALGOS)
    assert all(ln.endswith("gpu 32-true)") for ln in composed)
    assert "(steprl.algos.prime.PRIME, task ArithTask, 16 x 8 rollouts a step" in composed[gc.ALGOS.index("prime")]


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        gc.main(["--algos", "grpo,gpt", "--dry-run"])
    assert "unknown algorithm 'gpt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gc.main(["--precisions", "fp8", "--dry-run"])
    assert "unknown precision 'fp8'" in capsys.readouterr().err


def test_cpu_run_of_one_algorithm(tmp_path):
    """The path a GPU run takes (build, fit, the per-step checks), on CPU: two steps of PRIME (policy, implicit
    PRM and its update), each with a finite loss and a non-zero gradient norm."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--algos", "prime"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("[gpu_check] prime fp32")]
    assert line and "2 steps of 2 x 4" in line[0] and "grad_norm" in line[0], out.stdout[-2000:]
    assert out.stdout.rstrip().endswith("GPU_CHECK_OK")
