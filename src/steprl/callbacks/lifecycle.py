"""A run's life around the engine: validate at the last step, keep ``last.ckpt`` up to date with that validation,
store the run's config in every checkpoint, apply a changed learning rate on resume, and stop cleanly on
SIGINT / SIGTERM (finish the step, save ``last.ckpt``, then raise :class:`RunInterrupted`)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig


class RunInterrupted(Exception):
    """Raised out of ``trainer.fit`` after a stop signal. ``saved``: the checkpoint written (None if none)."""

    def __init__(self, signum: int, step: int, saved: str | None, abandoned: bool = False):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.saved, self.abandoned = signum, step, saved, abandoned


class StopRequest:
    """SIGINT / SIGTERM handlers: the first signal asks the run to stop after the current step; a second one
    abandons the step at once. ``restore()`` puts the previous handlers back."""

    def __init__(self):
        self.signum: int | None = None
        self.trainer = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        trainer = self.trainer
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None:  # Lightning's SIGTERM flag would end validation half-way, with exit code 0
            connector.received_sigterm = False
        if self.signum is not None:
            step = trainer.global_step if trainer is not None else 0
            raise RunInterrupted(signum, step, None, abandoned=True)
        self.signum = signum
        name = signal.Signals(signum).name
        again = "Ctrl-C" if signum == signal.SIGINT else name
        print(f"\n[steprl] {name}: stopping after the current step and saving last.ckpt ({again} again: stop at "
              f"once, losing the step)", file=sys.stderr, flush=True)


class RunLifecycle(L.Callback):
    def __init__(self, cfg: DictConfig, stop: StopRequest | None = None):
        self.cfg = cfg
        self.stop = stop
        self.max_steps = int(cfg.trainer.max_steps)
        self._saved: tuple[int, int] | None = None  # (step, validations) of the latest checkpoint written

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        from steprl.resume import RUN_KEY, run_info

        checkpoint[RUN_KEY] = run_info(self.cfg, trainer)
        self._saved = (trainer.global_step, len(getattr(pl_module, "val_history", [])))

    def last_path(self, trainer) -> str:
        cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
        folder = cb.dirpath if cb is not None else os.path.join(trainer.default_root_dir, "checkpoints")
        return os.path.join(folder, "last.ckpt")

    def save_last(self, trainer) -> str:
        path = self.last_path(trainer)
        trainer.save_checkpoint(path)
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint):
                cb._last_global_step_saved = trainer.global_step  # the same step is not written twice
        return path

    # ------------------------------------------------------------------------------ resume
    def on_train_start(self, trainer, pl_module) -> None:
        """A resumed optimiser comes back with the checkpoint's learning rate: scale the policy's to ``optim.lr``
        (the schedule's shape is kept)."""
        if self.stop is not None:
            self.stop.trainer = trainer
        new = (self.cfg.get("optim") or {}).get("lr")
        if not self.cfg.get("ckpt_path") or new is None or not trainer.optimizers:
            return
        opt = trainer.optimizers[0]
        old = opt.param_groups[0].get("initial_lr")
        if not old or abs(float(old) - float(new)) <= 1e-12 * abs(float(new)):
            return
        scale = float(new) / float(old)
        for group in opt.param_groups:
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] *= scale
        for cfg in trainer.lr_scheduler_configs:
            if cfg.scheduler.optimizer is opt:
                cfg.scheduler.base_lrs = [b * scale for b in cfg.scheduler.base_lrs]
        pl_module.print(f"[steprl] resume: learning rate {float(old):g} -> {float(new):g} (optim.lr)")

    # ------------------------------------------------------------------------------ last step, stop
    def stop_requested(self, trainer) -> bool:
        """A stop signal reached this process, or (several ranks) any rank: all ranks stop at the same step."""
        requested = self.stop is not None and self.stop.signum is not None
        if trainer.world_size > 1:
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        return requested

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop_requested(trainer):
            self.interrupt(trainer)
        if trainer.global_step >= self.max_steps:
            vci = trainer.val_check_interval
            on_interval = isinstance(vci, int) and vci > 0 and trainer.global_step % vci == 0
            if not on_interval and trainer.num_val_batches:
                trainer.should_stop = True  # Lightning validates when a run stops early: here, at its last step

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.stop_requested(trainer):
            self.interrupt(trainer, save=not trainer.sanity_checking)

    def interrupt(self, trainer, save: bool = True) -> None:
        saved = self.save_last(trainer) if save and trainer.global_step > 0 else None
        signum = self.stop.signum if self.stop is not None and self.stop.signum else signal.SIGTERM
        raise RunInterrupted(signum, trainer.global_step, saved)

    def on_train_end(self, trainer, pl_module) -> None:
        """The last step's validation ran after that step's checkpoint: write ``last.ckpt`` again so it holds it."""
        n_val = len(getattr(pl_module, "val_history", []))
        if self._saved is not None and self._saved[0] == trainer.global_step and self._saved[1] < n_val:
            self.save_last(trainer)
