"""Checkpoint IO: a ``kill -9`` in the middle of a save leaves the previous ``last.ckpt`` loadable (a real
training process killed while it writes, with ``$TMPDIR`` on another filesystem); temporary files of interrupted
saves are cleaned up; a cut-off checkpoint is named and called incomplete when a run resumes from it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from steprl.callbacks.checkpoint import (
    AtomicCheckpointIO,
    Checkpoint,
    CheckpointIncomplete,
    atomic_save,
    clean_interrupted_saves,
)

BALLAST = 32_000_000  # float32 entries in the child's checkpoint: 128 MB, so a save takes a while to write

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import lightning as L, torch
    from steprl.callbacks import Checkpoint

    out = Path(sys.argv[1])

    class Big(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.register_buffer("ballast", torch.zeros({ballast}))

        def training_step(self, batch, i):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Gate(L.Callback):  # runs before the checkpoint callback (Lightning orders those last)
        def on_train_batch_end(self, trainer, *args):
            print(f"BEFORE_SAVE {{trainer.global_step}}", flush=True)
            while not (out / f"go{{trainer.global_step}}").exists():
                time.sleep(0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 4)), batch_size=1)
    ckpt = Checkpoint(dirpath=out / "ckpt", every_n_train_steps=1, save_top_k=0,
                      save_last=True)
    trainer = L.Trainer(max_steps=3, callbacks=[Gate(), ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(Big(), data)
""").format(ballast=BALLAST)


def _identity(p: Path):
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def test_kill_9_during_a_save_leaves_the_previous_last_ckpt_loadable(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:  # $TMPDIR on another filesystem
        tmpdir = shm / f"steprl-ckpt-test-{os.getpid()}"
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=env)
    last = tmp_path / "ckpt" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        for line in child.stdout:  # step 1 trains; its save finishes before step 2's gate
            if line.startswith("BEFORE_SAVE 1"):
                (tmp_path / "go1").touch()
            if line.startswith("BEFORE_SAVE 2"):
                break
            assert time.monotonic() < deadline, "child did not reach step 2"
        good = torch.load(last, map_location="cpu", weights_only=True)
        assert good["global_step"] == 1
        before = _identity(last)
        killed = threading.Event()

        def watch():  # kill as soon as the save of last.ckpt touches the disk
            end = time.monotonic() + 60
            while time.monotonic() < end and child.poll() is None:
                tmps = list(last.parent.glob(".last.ckpt.tmp-*"))
                if _identity(last) != before or tmps:
                    child.kill()  # SIGKILL
                    killed.set()
                    return
                time.sleep(0.0005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        (tmp_path / "go2").touch()
        watcher.join(90)
        child.wait(30)
        assert killed.is_set() and child.returncode == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if "TMPDIR" in env and env["TMPDIR"] != os.environ.get("TMPDIR"):
            for p in Path(env["TMPDIR"]).glob("*"):
                p.unlink()
            Path(env["TMPDIR"]).rmdir()
    try:
        after = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"the kill destroyed the previous good last.ckpt ({last.stat().st_size} bytes left): {e!r:.200}")
    assert after["global_step"] == 1 and _identity(last) == before  # the final path was never written in place
    leftovers = list(last.parent.glob(".last.ckpt.tmp-*"))
    assert len(leftovers) == 1, "the kill was meant to land mid-save: its temporary file should be there"
    state = AtomicCheckpointIO().load_checkpoint(last)  # loads, and removes the dead save's temporary file
    assert state["global_step"] == 1 and state["state_dict"]["ballast"].numel() == BALLAST
    assert not list(last.parent.glob(".*.tmp-*"))


def test_interrupted_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.tmp-{dead.pid}-abc"
    live = tmp_path / f".last.ckpt.tmp-{os.getppid()}-def"  # our parent is alive: another process still saving
    other = tmp_path / "notes.tmp-1-x"                       # not ours: no leading dot
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    atomic_save({"x": torch.arange(3)}, tmp_path / "last.ckpt")
    assert not stale.exists() and live.exists() and other.exists()
    assert torch.load(tmp_path / "last.ckpt")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", live.name, other.name])


@pytest.mark.parametrize("cut", [0, 100, 0.5, -30])
def test_a_cut_off_checkpoint_is_named_and_called_incomplete(tmp_path, cut):
    path = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(1000)}, "global_step": 7}, path)
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointIncomplete, match=rf"checkpoint {path} is incomplete"):
        AtomicCheckpointIO().load_checkpoint(path)


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, i):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, max_steps, ckpt_path=None):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 4)), batch_size=1)
    ckpt = Checkpoint(dirpath=tmp_path / "ckpt", filename="step{step}", every_n_train_steps=2, save_last=True,
                      auto_insert_metric_name=False,
                      save_top_k=-1)
    trainer = L.Trainer(max_steps=max_steps, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(_Tiny(), data, ckpt_path=ckpt_path)
    return trainer


def test_training_saves_atomically_and_resuming_from_a_cut_off_file_says_so(tmp_path):
    trainer = _fit(tmp_path, 3)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # on_train_end's extra save
    assert not list(last.parent.glob(".*"))
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(CheckpointIncomplete, match=rf"{last} is incomplete.*step2\.ckpt"):
        _fit(tmp_path, 5, ckpt_path=str(last))
    assert _fit(tmp_path, 5, ckpt_path=str(tmp_path / "ckpt" / "step2.ckpt")).global_step == 5
