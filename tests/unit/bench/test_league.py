"""bench/league.py: the full-scale league's commands (every listed algorithm x seeds, the default run's budget, the
long-chain task's overrides), resuming from its CSV, every arith_long job composing, the report's block in the
docs page, and (slow) two 2-step runs through the real command line."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steprl.config import check_config, register_resolvers
from tests.helpers import compose_train

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("league", ROOT / "bench" / "league.py")
lg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lg)
cl = sys.modules["claims"]          # the module league.py reads its run machinery from

register_resolvers()


def _dry(capsys, data: Path, *args) -> list[str]:
    assert lg.main(["--dry-run", "--data", str(data), "--work", "outputs/league", *args]) == 0
    return capsys.readouterr().out.splitlines()


def _row(task: str, algo: str, seed: int, accs: list[tuple[int, float]], budget: str) -> dict:
    return {"claim": f"league_{task}", "arm": algo, "seed": seed, "budget": budget, "steps": accs[-1][0],
            "rollouts": 128.0 * accs[-1][0], "seconds": 10.0, "command": "python src/train.py", "commit": "abc",
            "curves": {"val/acc": [list(p) for p in accs],
                       "time/step": [[s, 2.0] for s in range(1, accs[-1][0] + 1)]}}


def test_the_league_lists_its_algorithms_once_from_the_sweep_config():
    algos = lg.league_algos()
    assert len(algos) == 15 == len(set(algos)) and "grpo" in algos and "sft" not in algos


def test_dry_run_prints_every_algorithm_and_seed_at_the_default_budget(capsys, tmp_path):
    out = _dry(capsys, tmp_path, "--task", "arith_long")
    algos = lg.league_algos()
    assert len(out) == 3 * len(algos)
    # seed by seed, so an interrupted sitting leaves whole seeds rather than whole algorithms
    assert [o.split("hydra.run.dir=outputs/league/arith_long/")[1] for o in out[:2]] == [
        f"{algos[0]}-seed0", f"{algos[1]}-seed0"]
    assert out[0] == ("python src/train.py experiment=league_tiny algo=grpo model=tiny_arith_long task=arith_long "
                      "rollout.max_new_tokens=272 batch.prompts_per_step=16 batch.samples_per_prompt=8 "
                      "trainer.max_steps=100 trainer.val_check_interval=50 task.num_val=256 torch_threads=1 seed=0 "
                      "logger=csv callbacks.model_checkpoint=null callbacks.progress_bar=null "
                      "++trainer.enable_progress_bar=false hydra.run.dir=outputs/league/arith_long/grpo-seed0")
    arith = _dry(capsys, tmp_path, "--task", "arith", "--algos", "prime", "--seeds", "4")
    assert arith == [out[5].replace(" model=tiny_arith_long task=arith_long rollout.max_new_tokens=272", "")
                     .replace("seed0", "seed4").replace("seed=0", "seed=4").replace("arith_long/", "arith/")]


def test_resume_skips_runs_with_a_row_and_refuses_another_budget(capsys, tmp_path):
    key = lg.budget_str("arith", lg.BUDGET)
    cl.append_row(tmp_path / "arith.csv", _row("arith", "rloo", 0, [(0, 0.4), (100, 0.5)], key))
    out = _dry(capsys, tmp_path, "--task", "arith", "--algos", "grpo,rloo", "--seeds", "0,1")
    assert [o.rsplit("/", 1)[1] for o in out] == ["grpo-seed0", "grpo-seed1", "rloo-seed1"]
    assert _dry(capsys, tmp_path, "--task", "arith_long", "--algos", "rloo", "--seeds", "0") != []  # its own CSV
    with pytest.raises(SystemExit, match="another budget"):
        lg.main(["--dry-run", "--data", str(tmp_path), "--task", "arith", "--steps", "50"])


def test_bad_arguments_are_named(capsys, tmp_path):
    for args, msg in [(["--task", "arith", "--algos", "grpo,nope"], "unknown algos ['nope']"),
                      ([], "--task is required"),
                      (["--task", "arith", "--steps", "30", "--val-every", "20"], "multiple of --val-every")]:
        with pytest.raises(SystemExit):
            lg.main(["--data", str(tmp_path), *args])
        assert msg in capsys.readouterr().err


def test_every_long_chain_job_composes(tmp_path):
    for i, algo in enumerate(lg.league_algos()):
        over = lg.command("arith_long", algo, i % 3, lg.BUDGET, tmp_path)[2:]
        over = [o for o in over if not o.startswith(("hydra.run.dir=", "logger=", "callbacks.", "++trainer."))]
        cfg = compose_train(over, out_dir=tmp_path)
        check_config(cfg)
        assert cfg.hydra.runtime.choices.algo == algo and cfg.model.path == "steprl:tiny_arith_long"
        assert cfg.rollout.max_new_tokens == 272 and cfg.task.num_val == 256 and cfg.trainer.max_steps == 100


def test_report_fills_the_marked_block_and_keeps_the_page(tmp_path):
    key = lg.budget_str("arith", lg.BUDGET)
    for seed, final in [(0, 0.5), (1, 0.625)]:
        cl.append_row(tmp_path / "arith.csv", _row("arith", "grpo", seed, [(0, 0.375), (100, final)], key))
    doc = tmp_path / "league.md"
    doc.write_text(f"# League\n\nprose before\n\n{lg.START}\nold table\n{lg.END}\n\nprose after\n")
    lg.report(tmp_path, doc)
    text = doc.read_text()
    assert text.startswith("# League\n\nprose before\n\n") and text.endswith(f"{lg.END}\n\nprose after\n")
    assert "old table" not in text and (tmp_path / "arith.png").exists()
    grpo = next(line for line in text.splitlines() if line.startswith("| `grpo`"))
    # mean ± population sd of 0.5 and 0.625; change from the warm start 0.375; 2 of the league's 3 seeds
    assert "| 0.562 ± 0.062 | +0.188 | 2/3 | 100 | 12800 | 200 s |" in grpo
    assert "Not yet run on `arith`: `rloo`" in text and "**`arith_long`**: not yet run" in text


def test_the_docs_full_league_tables_are_the_kept_runs(tmp_path):
    """docs/league.md's full-scale block is what ``--report`` makes of bench/league/*.csv (not edited by hand)."""
    doc = tmp_path / "league.md"
    doc.write_text(f"{lg.START}\n{lg.END}\n")
    lg.report(lg.DATA, doc, draw=False)
    page = (ROOT / "docs" / "league.md").read_text()
    assert lg.START in page and lg.END in page

    def tables(text: str) -> list[str]:
        block = text.split(lg.START, 1)[1].split(lg.END, 1)[0]
        return [line for line in block.splitlines() if line.startswith("|") or "not yet run" in line.lower()]
    assert tables(page) == tables(doc.read_text())


@pytest.mark.slow
def test_two_step_league_through_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, str(ROOT / "bench" / "league.py"), "--task", "arith", "--algos", "grpo,rloo", "--seeds",
            "0", "--steps", "2", "--val-every", "2", "--num-val", "8", "-j", "2", "--work", str(tmp_path / "work"),
            "--data", str(tmp_path / "data"), "--doc", str(tmp_path / "league.md")]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = cl.read_rows(tmp_path / "data" / "arith.csv")
    assert sorted(row["arm"] for row in rows) == ["grpo", "rloo"]
    for row in rows:
        assert row["claim"] == "league_arith" and row["steps"] == 2 and row["rollouts"] == 256
        assert [s for s, _ in row["curves"]["val/acc"]] == [0, 2] and "train/reward" in row["curves"]
        assert row["command"].startswith(f"python src/train.py experiment=league_tiny algo={row['arm']} ")
    again = subprocess.run(args + ["--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == ""   # both runs have their row: nothing left to do
