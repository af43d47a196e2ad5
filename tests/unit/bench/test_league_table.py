"""bench/league_table.py: reading csv-logger sweep jobs, merging later runs into an existing league CSV, the table."""
import csv
import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("league_table", ROOT / "bench" / "league_table.py")
lt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lt)


def _job(sweep: Path, name: str, accs: dict[int, float], step_time: float) -> None:
    d = sweep / name / "csv"
    d.mkdir(parents=True)
    with open(d / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "val/acc", "time/step"])
        w.writeheader()
        for step, acc in accs.items():
            w.writerow({"step": step, "val/acc": acc, "time/step": ""})
            if step:
                w.writerow({"step": step, "val/acc": "", "time/step": step_time})


def test_new_runs_replace_their_algo_seed_and_keep_the_rest(tmp_path):
    old = tmp_path / "old"
    _job(old, "0-grpo-seed0", {0: 0.25, 2: 0.4375}, 1.0)
    _job(old, "1-propa-seed0", {0: 0.25, 1: 0.125}, 9.0)   # unfinished in the old league
    new = tmp_path / "new"
    _job(new, "0-propa-seed0", {0: 0.25, 2: 0.375}, 3.0)
    _job(new, "1-propa-seed1", {0: 0.25, 2: 0.625}, 5.0)
    rows = lt.merge(lt.read_sweeps([old]), lt.read_sweeps([new]))
    data = lt.series(rows)
    assert sorted(data) == ["grpo", "propa"]
    assert data["propa"][0]["val/acc"] == {0: 0.25, 2: 0.375}        # the old seed-0 rows are gone
    assert data["grpo"][0]["val/acc"] == {0: 0.25, 2: 0.4375}
    md = lt.table(data, max_steps=2, rollouts_per_step=128).splitlines()
    propa = next(line for line in md if line.startswith("| `propa`"))
    mean, std = statistics.mean([0.375, 0.625]), statistics.pstdev([0.375, 0.625])
    assert f"{mean:.3f} ± {std:.3f}" in propa and f"{mean - 0.25:+.3f}" in propa and "| 2/2 |" in propa
    assert f"| {statistics.mean([3.0, 5.0]):.0f} s |" in propa   # train time: mean over runs of their summed time/step (one logged step each here)
    assert md[2].startswith("| `propa`")                                  # sorted by final accuracy (0.5 > 0.4375)


def test_jobs_that_are_not_league_runs_are_ignored(tmp_path):
    _job(tmp_path, "notes", {0: 0.5}, 1.0)
    assert lt.read_sweeps([tmp_path]) == []


def test_the_command_line_keeps_the_runs_and_redraws_the_same_table_from_them(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "0-grpo-seed0", {0: 0.25, 2: 0.5}, 2.0)
    _job(sweep, "1-grpo-seed1", {0: 0.25, 2: 0.375}, 4.0)
    runs, first, again = tmp_path / "runs.csv", tmp_path / "t1.md", tmp_path / "t2.md"
    script = [sys.executable, str(ROOT / "bench" / "league_table.py")]
    subprocess.run([*script, str(sweep), "--runs-csv", str(runs), "--table", str(first), "--figure",
                    str(tmp_path / "f.png"), "--max-steps", "2"], check=True, capture_output=True)
    subprocess.run([*script, "--from-csv", str(runs), "--table", str(again), "--max-steps", "2"], check=True,
                   capture_output=True)
    assert first.read_text() == again.read_text()
    grpo = next(line for line in again.read_text().splitlines() if line.startswith("| `grpo`"))
    assert f"| {0.4375:.3f} ± {0.0625:.3f} | {0.4375 - 0.25:+.3f} | 2/2 | 2 | 256 | 3 s |" in grpo
    assert (tmp_path / "f.png").stat().st_size > 0
    empty = subprocess.run([*script, str(tmp_path / "empty")], capture_output=True, text=True)
    assert empty.returncode != 0 and "no league runs found" in empty.stderr
