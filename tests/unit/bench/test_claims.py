"""bench/claims.py and bench/benchlib.py: the interval and verdict arithmetic against hand-computed values, the
commands a dry run prints, resuming from the raw CSV, every runnable arm composing, and (slow) a 2-step claim run
through the real command line."""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steprl.config import check_config, register_resolvers
from tests.helpers import compose_train

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("claims", ROOT / "bench" / "claims.py")
cl = importlib.util.module_from_spec(spec)
sys.modules["claims"] = cl          # dataclasses resolve their module by name
spec.loader.exec_module(cl)
import benchlib as bl  # noqa: E402  (bench/ is on sys.path once claims.py is loaded)

register_resolvers()


# ------------------------------------------------------------------------------------------ interval arithmetic

def test_one_sample_t_interval_by_hand():
    # mean 3, sd sqrt(2.5) = 1.58114, se = 0.707107, t_{0.975, 4} = 2.776445 -> half-width 1.963243
    m, lo, hi = bl.t_ci([1, 2, 3, 4, 5])
    assert m == 3
    assert lo == pytest.approx(1.036757, abs=1e-6) and hi == pytest.approx(4.963243, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        bl.t_ci([1.0])


def test_paired_interval_uses_the_per_seed_differences():
    # differences 0.10, 0.15, 0.05 (seed 9 is in one arm only and is left out): mean 0.1, sd 0.05,
    # se 0.0288675, t_{0.975, 2} = 4.302653 -> half-width 0.124207
    d, lo, hi, n = bl.paired_ci({0: 0.5, 1: 0.6, 2: 0.55, 9: 1.0}, {0: 0.4, 1: 0.45, 2: 0.5})
    assert n == 3 and d == pytest.approx(0.1)
    assert lo == pytest.approx(-0.024207, abs=1e-6) and hi == pytest.approx(0.224207, abs=1e-6)


def test_welch_interval_by_hand():
    # a: mean 2, var 1 -> 1/3 per mean; b: mean 5, var 20/3 -> 5/3 per mean; se = sqrt(2);
    # df = 4 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / 0.981481 = 4.075472; t_{0.975, 4.075472} = 2.764 (between
    # t_4 = 2.776 and t_5 = 2.571)
    d, lo, hi = bl.welch_ci([1, 2, 3], [2, 4, 6, 8])
    assert d == -3
    half = (hi - lo) / 2
    assert half / math.sqrt(2) == pytest.approx(bl.t_quantile(4.075472), abs=1e-5)
    assert 2.571 < half / math.sqrt(2) < 2.776


def test_mean_over_is_the_trapezoid_area_over_the_width():
    pts = [(0, 0.0), (10, 1.0), (20, 1.0)]
    assert bl.mean_over(pts, 20) == pytest.approx(15 / 20)       # 5 + 10
    assert bl.mean_over(pts, 15) == pytest.approx(10 / 15)       # 5 + 5
    assert bl.mean_over(pts, 5) == pytest.approx(1.25 / 5)       # y(5) = 0.5
    with pytest.raises(ValueError, match="ends at"):
        bl.mean_over(pts, 25)


def test_rollouts_to_reach_interpolates():
    assert bl.rollouts_to_reach([(0, 0.2), (100, 0.4), (200, 0.6)], 0.5) == pytest.approx(150)
    assert bl.rollouts_to_reach([(0, 0.2), (100, 0.4)], 0.5) is None


# ---------------------------------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("lo,hi,direction,expect,margin,want", [
    (0.01, 0.05, 1, "better", 0.02, "reproduced"),
    (-0.05, -0.01, 1, "better", 0.02, "not reproduced"),          # excludes 0 the other way
    (-0.015, 0.018, 1, "better", 0.02, "not reproduced"),         # within the +-0.02 margin
    (-0.03, 0.05, 1, "better", 0.02, "inconclusive"),
    (-0.5, -0.1, -1, "better", 0.02, "reproduced"),               # fewer tool calls is the claim
    (0.1, 0.5, -1, "better", 0.02, "not reproduced"),
    (-0.05, 0.01, 1, "no_gain", 0.02, "reproduced"),              # 'without ReNorm they do not' beat the baseline
    (0.01, 0.05, 1, "no_gain", 0.02, "not reproduced"),
    (-0.01, 0.05, 1, "no_gain", 0.02, "inconclusive"),
    (0.01, 0.08, 1, "no_gain", 0.1, "reproduced"),               # SALT: slower, but by less than the 0.1 s margin
])
def test_verdict_rule(lo, hi, direction, expect, margin, want):
    assert cl.verdict(lo, hi, direction, expect, margin) == want


def test_verdict_rejects_bad_input():
    with pytest.raises(ValueError, match="direction"):
        cl.verdict(0, 1, direction=2)
    with pytest.raises(ValueError, match="lo"):
        cl.verdict(1, 0)
    with pytest.raises(ValueError, match="expect"):
        cl.verdict(0, 1, expect="worse")


def test_claim_verdict_combines_tests():
    assert cl.claim_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert cl.claim_verdict(["reproduced", "not reproduced"]) == "partly reproduced"
    assert cl.claim_verdict(["inconclusive", "not reproduced"]) == "not reproduced"
    assert cl.claim_verdict(["reproduced", "inconclusive"]) == "inconclusive"


# ------------------------------------------------------------------------------------------- from rows to docs

def _row(claim, arm, seed, accs, per_step=16, budget="b"):
    steps = max(s for s, _ in accs)
    return {"claim": claim, "arm": arm, "seed": seed, "budget": budget, "steps": steps,
            "rollouts": float(per_step * steps), "seconds": 1.0, "command": "python src/train.py ...",
            "curves": {"val/acc": [[s, a] for s, a in accs],
                       "rollouts": [[s, float(per_step * s)] for s in range(steps + 1)]}}


def test_analyse_final_accuracy_paired_over_five_seeds():
    drm = [0.50, 0.52, 0.48, 0.55, 0.50]
    grpo = [0.45, 0.46, 0.47, 0.50, 0.44]
    rows = [_row("drm", "drm", s, [(0, 0.4), (4, a)]) for s, a in enumerate(drm)] + \
           [_row("drm", "grpo", s, [(0, 0.4), (4, a)]) for s, a in enumerate(grpo)]
    res = cl.analyse(cl.CLAIMS["drm"], rows)
    # differences 0.05 0.06 0.01 0.05 0.06: mean 0.046, sd 0.0207364, se 0.0092736, x t_{0.975,4} 2.776445 = 0.025747
    (x,) = res["compares"]
    assert res["complete"] and x["how"] == "paired over 5 seeds"
    assert x["diff"] == pytest.approx(0.046)
    assert x["lo"] == pytest.approx(0.020253, abs=1e-6) and x["hi"] == pytest.approx(0.071747, abs=1e-6)
    assert x["verdict"] == res["verdict"] == "reproduced"


def test_auc_compares_at_the_rollouts_every_run_consumed():
    # PRIME draws 20 rollouts a step (refills), RLOO 16: common budget = 2 x 16 = 32 rollouts.
    prime = _row("prime", "prime", 0, [(0, 0.4), (2, 0.6)], per_step=20)
    rloo = _row("prime", "rloo", 0, [(0, 0.4), (2, 0.6)], per_step=16)
    c = cl.CLAIMS["prime"].compares[0]
    # prime at 32 of its 40 rollouts: 0.4 + 0.2 * 32/40 = 0.56; mean over [0, 32] = (0.4 + 0.56) / 2 = 0.48
    assert cl.statistic(prime, c, 32.0) == pytest.approx(0.48)
    assert cl.statistic(rloo, c, 32.0) == pytest.approx(0.5)


def test_incomplete_claims_show_no_numbers(tmp_path):
    rows = [_row("drm", arm, s, [(0, 0.4), (4, 0.5)]) for arm in ("drm", "grpo") for s in range(4)]
    res = cl.analyse(cl.CLAIMS["drm"], rows)
    assert not res["complete"] and res["compares"] == []
    line = cl.doc_row(cl.CLAIMS["drm"], rows, res, "CMD", "fig.png", cl.Budget())
    assert "incomplete" in line and "not a result" in line and "CMD" in line and "0.5" not in line


# ---------------------------------------------------------------------------------------- dry run and resume

def _dry(capsys, tmp_path, *args):
    assert cl.main(["--dry-run", "--data", str(tmp_path), "--work", "outputs/claims", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_prints_the_train_commands(capsys, tmp_path):
    out = _dry(capsys, tmp_path, "--claims", "prime", "--seeds", "3", "--steps", "20", "--val-every", "5",
               "--num-val", "64")
    common = ("model=tiny_arith task=arith batch.prompts_per_step=16 batch.samples_per_prompt=8 "
              "trainer.max_steps=20 trainer.val_check_interval=5 task.num_val=64 torch_threads=1 seed=3 "
              "logger=csv callbacks.model_checkpoint=null callbacks.progress_bar=null "
              "++trainer.enable_progress_bar=false")
    assert out == [f"python src/train.py experiment=prime_tiny {common} hydra.run.dir=outputs/claims/prime/prime-seed3",
                   f"python src/train.py experiment=rloo_tiny {common} hydra.run.dir=outputs/claims/prime/rloo-seed3"]


def test_resume_skips_runs_with_a_row_and_refuses_another_budget(capsys, tmp_path):
    b = cl.Budget(steps=20, val_every=5, num_val=64)
    key = cl.budget_key(cl.CLAIMS["prime"], b, [])
    cl.append_row(tmp_path / "prime.csv", _row("prime", "rloo", 0, [(0, 0.4), (20, 0.5)], budget=key))
    assert cl.read_rows(tmp_path / "prime.csv")[0]["curves"]["val/acc"] == [[0, 0.4], [20, 0.5]]
    out = _dry(capsys, tmp_path, "--claims", "prime", "--seeds", "0,1", "--steps", "20", "--val-every", "5",
               "--num-val", "64")
    assert [o.split("hydra.run.dir=")[1] for o in out] == [
        "outputs/claims/prime/prime-seed0", "outputs/claims/prime/prime-seed1", "outputs/claims/prime/rloo-seed1"]
    with pytest.raises(SystemExit, match="another setting/budget"):
        cl.main(["--dry-run", "--data", str(tmp_path), "--claims", "prime", "--steps", "50"])


def _append_many(path: str, arm: str, start) -> None:
    start.wait()             # every process's first row goes to a file that does not exist yet
    for seed in range(30):
        cl.append_row(Path(path), _row("prime", arm, seed, [(s, 0.5) for s in range(1500)]))


def test_runner_processes_can_share_a_csv(tmp_path):
    """Two league sittings (or claims beside them) append to one CSV at once: one header, every row whole."""
    import multiprocessing

    path = tmp_path / "shared.csv"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_append_many, args=(str(path), f"arm{i}", start)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 4
    rows = cl.read_rows(path)
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((f"arm{i}", s) for i in range(4) for s in range(30))
    assert path.read_text().count("claim,arm,seed") == 1


def test_run_jobs_starts_each_run_afresh_and_names_failures(tmp_path):
    """A run starts in an emptied folder (an interrupted attempt's files are gone), a finished run's row lands in
    its CSV, a failed run is reported with its exit code and log and writes no row."""
    ok_dir, bad_dir = tmp_path / "ok", tmp_path / "bad"
    ok_dir.mkdir()
    (ok_dir / "stale.txt").write_text("left by an interrupted attempt")
    check = f"import pathlib, sys; sys.exit(3 * pathlib.Path({str(ok_dir / 'stale.txt')!r}).exists())"
    jobs = [cl.Job("ok", ["python", "-c", check], ok_dir, tmp_path / "runs.csv",
                   lambda secs: _row("prime", "prime", 0, [(0, 0.4), (2, 0.5)])),
            cl.Job("bad", ["python", "-c", "print('boom'); raise SystemExit(3)"], bad_dir, tmp_path / "runs.csv",
                   lambda secs: _row("prime", "rloo", 0, [(0, 0.4), (2, 0.5)]))]
    failures = cl.run_jobs(jobs, 2, "test")
    assert [(r["arm"], r["seed"]) for r in cl.read_rows(tmp_path / "runs.csv")] == [("prime", 0)]
    assert len(failures) == 1 and failures[0].startswith("bad: exit 3 (log ") and "boom" in failures[0]
    assert not (ok_dir / "stale.txt").exists() and (ok_dir / "train.log").exists()


def test_bad_arguments_are_named(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cl.main(["--dry-run", "--data", str(tmp_path), "--claims", "prime,nope"])
    assert "unknown claims ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cl.main(["--dry-run", "--data", str(tmp_path), "--steps", "25", "--val-every", "10"])
    assert "multiple of --val-every" in capsys.readouterr().err


def test_missing_configs_are_named():
    c = cl.Claim("x", "X", "q", "c", ("model=tiny_arith", "task=no_such_task"),
                 {"a": ("experiment=grpo_tiny",), "b": ("experiment=no_such_recipe", "algo.kl.coef=0")}, ())
    assert cl.missing_configs(c) == ["experiment=no_such_recipe", "task=no_such_task"]


def test_every_arm_with_its_configs_composes(tmp_path):
    """Each runnable arm's exact command-line overrides compose and pass the config checks (claims whose task or
    warm start has not landed yet are skipped: missing_configs names them)."""
    b = cl.Budget()
    composed = 0
    for claim in cl.CLAIMS.values():
        if cl.missing_configs(claim):
            continue
        for arm in claim.arms:
            cmd = cl.command(claim, arm, 0, b, [], tmp_path)
            ov = [o for o in cmd[2:] if not o.startswith("hydra.run.dir=")]
            cfg = compose_train(ov, out_dir=tmp_path)
            check_config(cfg)
            # the rule's shape: 16 x 8 rollouts, one update of them all (docs/testbed.md)
            assert cfg.batch.prompts_per_step == 16 and cfg.batch.samples_per_prompt == 8
            # validation on the budget's problems, or on the whole held-out set where that is smaller (search)
            assert cfg.trainer.max_steps == b.steps
            assert cfg.task.num_val == (b.num_val if claim.held_out is None else min(b.num_val, claim.held_out))
            want = [o.split("=", 1)[1] for o in claim.setting if o.startswith("model=")]
            assert [cfg.hydra.runtime.choices.model] == want   # the same warm start in every arm
            composed += 1
    assert composed >= 2   # at least the PRIME claim (on main's arith)


# ----------------------------------------------------------------------------------------------------- smoke

@pytest.mark.slow
def test_two_step_claim_through_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, str(ROOT / "bench" / "claims.py"), "--claims", "prime", "--seeds", "0", "--steps", "2",
            "--val-every", "2", "--num-val", "8", "-j", "2", "--work", str(tmp_path / "work"),
            "--data", str(tmp_path / "data"), "--doc", str(tmp_path / "claims.md")]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = cl.read_rows(tmp_path / "data" / "prime.csv")
    assert sorted(r["arm"] for r in rows) == ["prime", "rloo"]
    for row in rows:
        assert row["steps"] == 2 and [s for s, _ in row["curves"]["val/acc"]] == [0, 2]
        assert row["rollouts"] >= 32 and row["command"].startswith(f"python src/train.py experiment={row['arm']}_tiny")
    doc = (tmp_path / "claims.md").read_text()
    assert "incomplete" in doc and "not yet run" in doc   # 1 seed of 5: no numbers
    again = subprocess.run(args + ["--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == ""   # both runs have their row: nothing left to do


def test_docs_from_csvs(tmp_path):
    """A complete claim gets its interval, verdict and figure; the others say 'not yet run' with their command."""
    b = cl.Budget(steps=4, val_every=4, num_val=8)
    key = cl.budget_key(cl.CLAIMS["drm"], b, [])
    for arm, accs in (("drm", [0.50, 0.52, 0.48, 0.55, 0.50]), ("grpo", [0.45, 0.46, 0.47, 0.50, 0.44])):
        for s, acc in enumerate(accs):
            cl.append_row(tmp_path / "drm.csv", _row("drm", arm, s, [(0, 0.4), (4, acc)], budget=key))
    text = cl.write_docs(cl.Budget(), [0, 1, 2, 3, 4], [], data=tmp_path, doc=tmp_path / "docs" / "claims.md")
    assert (tmp_path / "drm.png").stat().st_size > 0
    row = next(line for line in text.splitlines() if line.startswith("| DRM"))
    assert "held-out accuracy: +0.046 [+0.020, +0.072] → reproduced" in row and "[figure](../drm.png)" in row
    assert "--steps 4 --val-every 4 --num-val 8" in text     # the command that reproduces the stored runs
    prime = next(line for line in text.splitlines() if line.startswith("| PRIME"))
    assert "not yet run: `nice -n 10 python bench/claims.py --claims prime --seeds 0,1,2,3,4 --steps 100" in prime
    assert "Every arm ends below" not in text                  # both arms gained over the warm start (0.4)


def test_a_run_two_claims_ask_for_is_made_once(capsys, tmp_path):
    """GRPO on arith_long is the baseline of TP-GRPO and DRM: DRM reuses TP-GRPO's stored GRPO runs (same command
    but the output folder), and says so; a run with another override is not reused."""
    b = cl.Budget(steps=4, val_every=4, num_val=8)
    tp, drm = cl.CLAIMS["tp_grpo"], cl.CLAIMS["drm"]
    for s, acc in enumerate([0.45, 0.46, 0.47, 0.50, 0.44]):
        row = _row("tp_grpo", "grpo", s, [(0, 0.4), (4, acc)], budget=cl.budget_key(tp, b, []))
        row["command"] = cl.shlex.join(cl.command(tp, "grpo", s, b, [], tmp_path / "w"))
        cl.append_row(tmp_path / "tp_grpo.csv", row)
    odd = _row("tp_grpo", "grpo", 9, [(0, 0.4), (4, 0.9)], budget=cl.budget_key(tp, b, []))
    odd["command"] = cl.shlex.join(cl.command(tp, "grpo", 9, b, [], tmp_path / "w")).replace("seed=9", "seed=9 x=1")
    cl.append_row(tmp_path / "tp_grpo.csv", odd)
    out = _dry(capsys, tmp_path, "--claims", "drm", "--seeds", "0,1,2,3,4,9", "--steps", "4", "--val-every", "4",
               "--num-val", "8")
    assert [o.split("hydra.run.dir=")[1] for o in out] == [
        *(f"outputs/claims/drm/drm-seed{s}" for s in (0, 1, 2, 3, 4)), "outputs/claims/drm/drm-seed9",
        "outputs/claims/drm/grpo-seed9"]
    rows = cl.claim_rows(drm, tmp_path, b, [])
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("grpo", s) for s in range(5)]
    assert {r["shared_from"] for r in rows} == {"tp_grpo"} and {r["claim"] for r in rows} == {"drm"}
    for s, acc in enumerate([0.50, 0.52, 0.48, 0.55, 0.50]):
        cl.append_row(tmp_path / "drm.csv", _row("drm", "drm", s, [(0, 0.4), (4, acc)],
                                                 budget=cl.budget_key(drm, b, [])))
    text = cl.write_docs(cl.Budget(), [0, 1, 2, 3, 4], [], data=tmp_path, doc=tmp_path / "docs" / "claims.md")
    row = next(line for line in text.splitlines() if line.startswith("| DRM"))
    assert "held-out accuracy: +0.046 [+0.020, +0.072] → reproduced" in row   # the same numbers as test_docs_from_csvs
    assert "`grpo` is `bench/claims/tp_grpo.csv`'s runs of it" in text


def test_a_run_two_claims_ask_for_in_one_call_is_listed_once(capsys, tmp_path):
    out = _dry(capsys, tmp_path, "--claims", "drm,tp_grpo", "--seeds", "0", "--steps", "4", "--val-every", "4",
               "--num-val", "8")
    assert [o.split("hydra.run.dir=")[1] for o in out] == [
        "outputs/claims/drm/drm-seed0", "outputs/claims/drm/grpo-seed0", "outputs/claims/tp_grpo/tp_grpo-seed0"]


def test_search_claims_validate_on_the_held_out_questions_only(tmp_path):
    """search_qa_tiny holds out 128 of its 1050 questions; the warm start trained on the rest, so a search claim's
    runs validate on those 128 whatever --num-val asks (more would score questions it learnt)."""
    for key in ("e_grpo", "ppr", "empg", "salt"):
        claim = cl.CLAIMS[key]
        assert claim.held_out == 128
        for num_val, want in ((512, 128), (64, 64)):
            cmd = cl.command(claim, next(iter(claim.arms)), 0, cl.Budget(num_val=num_val), [], tmp_path)
            assert f"task.num_val={want}" in cmd
    cfg = compose_train(["experiment=e_grpo_tiny"], out_dir=tmp_path)
    assert cfg.task.num_val == 128
    assert "task.num_val=512" in cl.command(cl.CLAIMS["prime"], "prime", 0, cl.Budget(), [], tmp_path)


def test_the_search_claims_grpo_arm_is_one_run(tmp_path):
    """E-GRPO's, EMPG's and SALT's GRPO arm is one command (made once, read by each claim): their recipes compose
    the same config under algo=grpo, so running it three times would measure the same thing."""
    from omegaconf import OmegaConf

    def composed(recipe):
        cfg = compose_train([f"experiment={recipe}", "algo=grpo"], out_dir=tmp_path)
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)

    first = composed("e_grpo_tiny")
    assert composed("empg_tiny") == first and composed("salt_tiny") == first
    keys = {cl.run_key(cl.command(cl.CLAIMS[k], "grpo", 3, cl.Budget(), [], tmp_path))
            for k in ("e_grpo", "empg", "salt")}
    assert len(keys) == 1


def test_propa_trees_can_reach_the_longest_worked_solution(tmp_path):
    """PROPA's claim runs on 2-10-term chains: its simulations get the run's new tokens (a fixed 48 cut them
    before the answer there) and its tree is as deep as the longest worked solution, one line per reduction and
    the answer line (the paper's depth 8 would make every 10-term chain a dead end)."""
    from steprl.tasks import ArithTask

    cmd = cl.command(cl.CLAIMS["propa"], "propa", 0, cl.Budget(), [], tmp_path)
    cfg = compose_train([o for o in cmd[2:] if not o.startswith("hydra.run.dir=")], out_dir=tmp_path)
    assert cfg.algo.mcts.simulate_max_tokens == cfg.rollout.max_new_tokens == 272
    task = ArithTask(num_train=400, num_val=4, seed=0, num_terms=list(cfg.task.num_terms))
    longest = max(len(task.make_sample("train", i).solution.split("\n")) for i in range(400))
    assert longest == 10 and cfg.algo.mcts.max_depth >= longest


def test_code_version_counts_code_changes_not_the_pages_and_data_the_scripts_write(tmp_path):
    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)
    for f in ["src/steprl/x.py", "README.md", "docs/algorithms/grpo.md", "bench/league/arith.csv", "bench/claims.py"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("v1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert cl.code_version(tmp_path) == head
    for f in ["README.md", "docs/algorithms/grpo.md", "bench/league/arith.csv"]:        # what reports rewrite
        (tmp_path / f).write_text("v2\n")
    (tmp_path / "new_untracked.py").write_text("x = 1\n")
    assert cl.code_version(tmp_path) == head
    for f in ["src/steprl/x.py", "bench/claims.py"]:
        (tmp_path / f).write_text("v2\n")
        assert cl.code_version(tmp_path) == head + "+dirty", f
        git("checkout", "--", f)
