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


def test_report_writes_the_readme_table_and_each_algorithms_row(tmp_path):
    key = lg.budget_str("arith", lg.BUDGET)
    # grpo: 2 seeds from 0.375 to 0.5 and 0.625; rloo: 3 seeds, all 0.375 -> 0.5; on arith only
    for seed, final in [(0, 0.5), (1, 0.625)]:
        cl.append_row(tmp_path / "arith.csv", _row("arith", "grpo", seed, [(0, 0.375), (100, final)], key))
    for seed in range(3):
        cl.append_row(tmp_path / "arith.csv", _row("arith", "rloo", seed, [(0, 0.375), (100, 0.5)], key))
    readme, pages = tmp_path / "README.md", tmp_path / "algorithms"
    readme.write_text(f"intro\n{lg.START}\n{lg.END}\nafter\n")
    pages.mkdir()
    (pages / "grpo.md").write_text(f"# GRPO\n\n## League row\n\n{lg.ROW_START}\nold\n{lg.ROW_END}\n\nreduced\n")
    (pages / "rloo.md").write_text("# RLOO without markers\n")
    lg.report(tmp_path, tmp_path / "league.md", draw=False, readme=readme, pages=pages)

    lines = readme.read_text().splitlines()
    assert lines[0] == "intro" and lines[-1] == "after"
    assert lines[2] == ("| algo | `arith` (warm start 0.375, mean over seeds): final val/acc (Δ vs warm start, "
                        "paired by seed) | `arith_long`: final val/acc (Δ vs warm start, paired by seed) |")
    # grpo's mean 0.5625 ranks above rloo's 0.5; grpo has 2 of the 3 seeds; algorithms not run come last
    assert lines[4] == "| `grpo` | 0.562 ± 0.062 (+0.188), 2 of 3 seeds | not yet run |"
    assert lines[5] == "| `rloo` | 0.500 ± 0.000 (+0.125) | not yet run |"
    assert lines[6].endswith("| not yet run | not yet run |") and len(lines) == 4 + len(lg.league_algos()) + 2
    # one seed has no spread: its value alone, never "± 0.000"
    assert lg._cell(lg.summary({0: {"val/acc": {0: 0.25, 100: 0.5}, "time/step": {}}}, 100)) == \
        "0.500 (+0.250), 1 of 3 seeds"

    page = (pages / "grpo.md").read_text()
    assert page.startswith("# GRPO\n\n## League row\n\n") and page.endswith(f"{lg.ROW_END}\n\nreduced\n")
    assert "old" not in page
    assert "| `arith` | 0.562 ± 0.062 | +0.188 | 2/3 | 1 of 2 | 200 s |" in page
    assert "| `arith_long` | not yet run | — | 0/3 | — | — |" in page
    assert (pages / "rloo.md").read_text() == "# RLOO without markers\n"      # no markers: left alone


def test_the_readme_warm_start_is_the_mean_over_seeds_and_one_seed_shows_no_spread(tmp_path):
    key = lg.budget_str("arith", lg.BUDGET)
    # seed 0 starts at 0.25 (grpo and rloo both ran it), seed 1 at 0.5 (grpo only): the mean over the seeds is
    # 0.375; a mean over the three runs would read 0.333
    cl.append_row(tmp_path / "arith.csv", _row("arith", "grpo", 0, [(0, 0.25), (100, 0.5)], key))
    cl.append_row(tmp_path / "arith.csv", _row("arith", "grpo", 1, [(0, 0.5), (100, 0.75)], key))
    cl.append_row(tmp_path / "arith.csv", _row("arith", "rloo", 0, [(0, 0.25), (100, 0.375)], key))
    readme, pages = tmp_path / "README.md", tmp_path / "algorithms"
    readme.write_text(f"{lg.START}\n{lg.END}\n")
    pages.mkdir()
    (pages / "rloo.md").write_text(f"{lg.ROW_START}\n{lg.ROW_END}\n")
    (tmp_path / "league.md").write_text(f"{lg.START}\n{lg.END}\n")
    lg.report(tmp_path, tmp_path / "league.md", draw=False, readme=readme, pages=pages)

    text = readme.read_text()
    assert "`arith` (warm start 0.375, mean over seeds)" in text
    assert "| `rloo` | 0.375 (+0.125), 1 of 3 seeds | not yet run |" in text
    assert "| `arith` | 0.375 | +0.125 | 1/3 | 2 of 2 | 200 s |" in (pages / "rloo.md").read_text()
    assert "| `rloo` | 0.375 | +0.125 | 1/3 |" in (tmp_path / "league.md").read_text()


def test_the_docs_full_league_tables_are_the_kept_runs(tmp_path):
    """docs/league.md's full-scale block, the README's table and each algorithm page's row are what ``--report``
    makes of bench/league/*.csv (not edited by hand)."""
    def block(text: str, start: str = lg.START, end: str = lg.END) -> str:
        assert start in text and end in text
        return text.split(start, 1)[1].split(end, 1)[0]

    def tables(text: str) -> list[str]:
        return [line for line in block(text).splitlines() if line.startswith("|") or "not yet run" in line.lower()]
    doc, readme, pages = tmp_path / "league.md", tmp_path / "README.md", tmp_path / "algorithms"
    pages.mkdir()
    doc.write_text(f"{lg.START}\n{lg.END}\n")
    readme.write_text(f"{lg.START}\n{lg.END}\n")
    for algo in lg.league_algos():
        (pages / f"{algo}.md").write_text(f"{lg.ROW_START}\n{lg.ROW_END}\n")
    lg.report(lg.DATA, doc, draw=False, readme=readme, pages=pages)
    assert tables((ROOT / "docs" / "league.md").read_text()) == tables(doc.read_text())
    assert block((ROOT / "README.md").read_text()) == block(readme.read_text())
    for algo in lg.league_algos():
        kept, made = (ROOT / "docs" / "algorithms" / f"{algo}.md").read_text(), (pages / f"{algo}.md").read_text()
        assert block(kept, lg.ROW_START, lg.ROW_END) == block(made, lg.ROW_START, lg.ROW_END), algo


def test_the_kept_runs_report_alone_rewrites_the_readme_and_pages(tmp_path, monkeypatch):
    """``--report`` on the repository's own runs also writes the README and the pages; on other data only with
    --readme/--pages, so a trial run's CSV never overwrites the repository's tables."""
    seen = []
    monkeypatch.setattr(lg, "report", lambda data, doc, **out: seen.append(out) or "")
    lg.main(["--report"])
    lg.main(["--report", "--data", str(tmp_path)])
    lg.main(["--report", "--data", str(tmp_path), "--readme", str(tmp_path / "R.md")])
    assert seen == [{"readme": lg.README, "pages": lg.PAGES}, {"readme": None, "pages": None},
                    {"readme": tmp_path / "R.md", "pages": None}]


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
    # --report from the command line writes the given README's table and each page's row, and nothing outside
    readme, pages = tmp_path / "README.md", tmp_path / "pages"
    readme.write_text(f"intro\n{lg.START}\nold\n{lg.END}\nafter\n")
    pages.mkdir()
    (pages / "grpo.md").write_text(f"# GRPO\n{lg.ROW_START}\nold\n{lg.ROW_END}\nkept\n")
    rep = subprocess.run([*args, "--report", "--readme", str(readme), "--pages", str(pages)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = readme.read_text()
    assert text.startswith(f"intro\n{lg.START}\n") and text.endswith(f"{lg.END}\nafter\n") and "old" not in text
    table = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert set(table) == {f"`{a}`" for a in lg.league_algos()}
    for row in rows:        # one seed: its final val/acc alone, then how many of the league's seeds are done
        assert f"{row['curves']['val/acc'][-1][1]:.3f}" in table[f"`{row['arm']}`"].split("|")[2]
        assert f"1 of {lg.SEEDS} seeds" in table[f"`{row['arm']}`"]
    assert "not yet run" in table["`prime`"]
    page = (pages / "grpo.md").read_text()
    assert page.startswith(f"# GRPO\n{lg.ROW_START}\n") and page.endswith(f"{lg.ROW_END}\nkept\n")
    assert "old" not in page and f"| 1/{lg.SEEDS} |" in page.split("| `arith` |")[1].splitlines()[0]
