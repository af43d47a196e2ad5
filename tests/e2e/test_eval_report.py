"""Evaluation and run comparison end to end: a real 2-step training run makes a checkpoint and an MLflow store;
the checkpoint is evaluated, saved predictions are graded from the command line (and every shared benchmark's
boxed references grade as correct), and the report script and notebook summarise the store."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from steprl.eval import evaluate
from steprl.report import find_runs, latest_sweep, load_curves, markdown_table, report, summarize
from steprl.train import train
from tests.helpers import ROOT, compose_train

DATA = Path(os.environ.get("STEPRL_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real 2-step GRPO run logged to its own MLflow store."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_train(["experiment=grpo_tiny", "trainer.max_steps=2", "trainer.val_check_interval=2",
                         "task.num_val=16", "callbacks.progress_bar=null", "torch_threads=1",
                         "batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=16",
                         "batch.micro_batch_size=16"], out)
    train(cfg)
    return out, cfg.logger.tracking_uri


def eval_cfg(overrides, out):
    return compose_train(["mlflow.enabled=false", "reward=inline", *overrides], out, config_name="eval")


def test_evaluate_a_checkpoint(store, tmp_path):
    out, uri = store
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = eval_cfg([f"ckpt_path={ckpt}", "eval.limit=8", "eval.n=3", "eval.k=[1,2,3]", "eval.batch_size=24",
                    "mlflow.enabled=true", f"mlflow.tracking_uri={uri}", "torch_threads=1"], tmp_path)
    rep = evaluate(cfg, log=lambda *a: None)
    m = rep["metrics"]["all"]
    assert m["problems"] == 8 and m["samples"] == 3
    assert {"greedy", "pass@1", "pass@2", "pass@3", "maj@3", "mean@3"} <= set(m)
    assert m["pass@1"] <= m["pass@2"] <= m["pass@3"] and 0 <= m["greedy"] <= 1
    assert m["pass@1"] == pytest.approx(m["mean@3"])  # unbiased pass@1 = mean over the n samples
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["accuracy"] == rep["accuracy"] == m["greedy"] and len(saved["problems"]) == 8
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 8 and len(json.loads(lines[0])["responses"]) == 3
    run = MlflowClient(tracking_uri=uri).get_run(rep["mlflow_run_id"])
    assert run.data.metrics["all/pass_at_2"] == pytest.approx(m["pass@2"])
    assert run.data.params["n"] == "3"


def test_predictions_cli_prints_accuracy_last(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"},
            {"problem": "Half of 3?", "answer": "\\frac{3}{2}"}, {"problem": "3*3?", "answer": "9"}]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "preds.jsonl"
    responses = ["so \\boxed{2}", "it is \\boxed{5}", "... \\boxed{1.5}", None]
    preds.write_text("".join(json.dumps({"response": r}) + "\n" for r in responses))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "STEPRL_OUTPUTS": str(tmp_path / "outputs")}
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "eval.py"), "task=math", f"task.path={task}",
                           f"predictions={preds}", "reward=inline", "mlflow.enabled=false"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "accuracy=0.500000"


SHARED_MATH = {"gsm8k_test.jsonl": "gsm8k", "math500_test.jsonl": "math", "aime24_test.jsonl": "math",
               "amc23_test.jsonl": "math"}


def _reference(row: dict) -> str:
    answer = row["answer"]
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the text after ####
        return answer.rpartition("####")[2].strip()
    return str(answer)


@pytest.mark.parametrize("name", sorted(SHARED_MATH))
def test_boxed_references_grade_correct_on_shared_files(name, tmp_path):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"shared benchmark file not found: {path}")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"response": f"... \\boxed{{{_reference(r)}}}"}) + "\n" for r in rows))
    rep = evaluate(eval_cfg([f"task={SHARED_MATH[name]}", f"task.path={path}", f"predictions={preds}"], tmp_path),
                   log=lambda *a: None)
    assert rep["accuracy"] == 1.0 and rep["metrics"]["all"]["problems"] == len(rows)


def test_humaneval_canonical_predictions_grade_correct(tmp_path):
    path = DATA / "humaneval.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"shared HumanEval not found: {path}")
    rows = [json.loads(line) for line in gzip.open(path)][:8]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"responses": [r["canonical_solution"], "    return None\n"]}) + "\n"
                             for r in rows))
    rep = evaluate(eval_cfg(["task=humaneval", f"task.path={path}", f"predictions={preds}", "eval.limit=8",
                             "eval.k=[1,2]"], tmp_path), log=lambda *a: None)
    m = rep["metrics"]["all"]
    assert m["pass@2"] == 1.0 and m["pass@1"] == 0.5 and "maj@2" not in m


# ------------------------------------------------------------------------------------------------ comparison
def test_report_from_the_real_run(store, tmp_path):
    out, uri = store
    md, png = report(uri, "steprl", None, out_dir=tmp_path)
    assert "| grpo | 1 |" in md and png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report.md").read_text() == md
    client = MlflowClient(tracking_uri=uri)
    (curve,) = load_curves(client, find_runs(client, "steprl"))
    assert curve.steps == [0, 2] and curve.rollouts == [0.0, 32.0]  # 2 steps x 4 prompts x G=4
    assert curve.seconds[-1] > 0


def test_summary_over_seeds_by_hand(store):
    """Runs logged by hand: final mean/std over seeds, rollouts (with refill) and time to reach the final value."""
    client = MlflowClient(tracking_uri=store[1])  # the store exists already: no second database set-up
    exp = client.create_experiment("by-hand")
    t0 = int(time.time() * 1000)

    def run(algo, seed, vals, groups, sweep="s1"):
        r = client.create_run(exp, start_time=t0, tags={"choices": f"algo={algo} task=arith", "sweep": sweep})
        rid = r.info.run_id
        client.log_batch(rid, params=[Param("seed", str(seed)), Param("batch/prompts_per_step", "4"),
                                      Param("batch/samples_per_prompt", "2")],
                         metrics=[Metric("val/acc", v, t0 + 1000 * s, s) for s, v in vals]
                         + [Metric("filter/groups", g, t0, s) for s, g in groups])
        client.set_terminated(rid)

    run("grpo", 0, [(0, 0.2), (2, 0.5), (4, 0.5)], [(1, 4), (2, 6), (3, 4), (4, 4)])  # refill at step 2
    run("grpo", 1, [(0, 0.2), (2, 0.6), (4, 0.7)], [(1, 4), (2, 4), (3, 4), (4, 4)])
    run("rloo", 0, [(0, 0.2), (2, 0.3), (4, 0.4)], [])
    run("rloo", 0, [(0, 0.9), (4, 0.9)], [], sweep="other")
    assert latest_sweep(client, "by-hand") in ("s1", "other")
    curves = load_curves(client, find_runs(client, "by-hand", "s1"))
    rows = {r["group"]: r for r in summarize(curves)}
    g, r = rows["grpo"], rows["rloo"]
    assert g["seeds"] == 2 and g["final_mean"] == pytest.approx(0.6) and g["final_std"] == pytest.approx(0.1414214)
    # seed 0 reaches 0.5 at step 2: (4 + 6) groups x 2 = 20 rollouts, 2 s; seed 1 reaches 0.7 at step 4: 32, 4 s
    assert g["reach_rollouts"] == pytest.approx((20 + 32) / 2) and g["reach_seconds"] == pytest.approx(3.0)
    assert r["seeds"] == 1 and r["final_std"] == 0.0 and r["reach_rollouts"] == 32  # 4 steps x 4 x 2, no filter log
    md = markdown_table(summarize(curves))
    assert md.splitlines()[2].startswith("| grpo | 2 | 0.200 | 0.600 ± 0.141 | 4 | 26 | 3 s |")


def test_notebook_runs_on_the_store(store, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out, uri = store
    monkeypatch.setenv("STEPRL_TRACKING_URI", uri)
    monkeypatch.setenv("STEPRL_SWEEP", "")
    monkeypatch.setenv("STEPRL_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    nb = nbformat.read(ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "1 runs with val/acc" in text
    assert (tmp_path / "curves.png").is_file()
