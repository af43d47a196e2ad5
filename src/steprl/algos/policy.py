"""PolicyModule: what every trainer of a policy shares — the model, greedy validation, optimiser, and the
extra state (RNG, data position) that makes a resumed run identical to an uninterrupted one."""
from __future__ import annotations

import math
import random
import sys
from typing import Any

import lightning as L
import numpy as np
import torch

from steprl.config import ConfigError
from steprl.models import load_model
from steprl.models.vision import load_processor
from steprl.rollout.hf import HFEngine
from steprl.rollout.agent import agent_loop
from steprl.utils import dist as D


class DivergenceError(RuntimeError):
    """Training diverged: too many consecutive optimiser updates had a non-finite gradient."""


class PolicyModule(L.LightningModule):
    """Holds the policy and its tokenizer, the task and the rollout engine.

    ``optim``: name (adamw | adamw8bit | paged_adamw8bit), lr, weight_decay, betas, eps, warmup_steps,
    scheduler (constant | cosine | linear), min_lr_ratio, max_grad_norm. ``val``: max_new_tokens (None: the
    engine's), log_samples. ``max_consecutive_skips``: stop with :class:`DivergenceError` after this many
    consecutive updates skipped for a non-finite gradient (None: never).
    """

    def __init__(self, model: dict, task, rollout: HFEngine, optim: dict, seed: int = 0,
                 val: dict | None = None, total_steps: int | None = None, max_consecutive_skips: int | None = 10):
        super().__init__()
        if max_consecutive_skips is not None and int(max_consecutive_skips) < 1:
            raise ConfigError(f"algo.max_consecutive_skips must be >= 1 or null (never stop), "
                              f"got {max_consecutive_skips}")
        self.max_consecutive_skips = max_consecutive_skips
        self._skips = self._skips_total = 0
        self.model_cfg = dict(model)
        self.policy, self.tokenizer = load_model(**self.model_cfg)
        self.processor = load_processor(**self.model_cfg)  # images -> pixel rows (None for a text model)
        self.task, self.engine, self.optim_cfg = task, rollout, dict(optim)
        self.agent = agent_loop(task, rollout)  # a tool-using task rolls out through the multi-turn AgentLoop
        self.val_cfg = dict(val or {})
        self.seed, self.total_steps = seed, total_steps
        self.sampler = torch.Generator().manual_seed(seed)  # rollout sampling (moved to the policy's device)
        self.shuffler = torch.Generator().manual_seed(seed + 1)  # minibatch shuffles, on CPU
        self._val_correct: list[float] = []
        self._val_sources: list[str] = []
        self.val_history: list[tuple[int, float]] = []
        self.automatic_optimization = False

    # ----------------------------------------------------------------------------------------- optimiser
    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.policy.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        from steprl.models.optim import build_optimizer

        o = self.optim_cfg
        opt = build_optimizer(o.get("name", "adamw"), self.param_groups(), lr=o.get("lr", 1e-5),
                              weight_decay=o.get("weight_decay", 0.0), betas=tuple(o.get("betas", (0.9, 0.999))),
                              eps=o.get("eps", 1e-8))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _lr_lambda(self, step: int) -> float:
        o = self.optim_cfg
        warm = o.get("warmup_steps", 0)
        if warm and step < warm:
            return (step + 1) / warm
        kind, total = o.get("scheduler", "constant"), max(1, self.updates_total() - warm)
        frac = min(1.0, (step - warm) / total)
        floor = o.get("min_lr_ratio", 0.0)
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
        if kind == "linear":
            return floor + (1 - floor) * (1 - frac)
        raise ConfigError(f"optim.scheduler={kind!r} is not one of ['constant', 'cosine', 'linear']")

    def updates_total(self) -> int:
        """Optimiser updates over the whole run (for schedules)."""
        return self.total_steps or 1

    def note_skip(self, ok: bool) -> None:
        """Divergence guard: warn on the console at the first update skipped for a non-finite gradient, and stop
        the run with :class:`DivergenceError` after ``algo.max_consecutive_skips`` skipped updates in a row."""
        if ok:
            self._skips = 0
            return
        self._skips += 1
        self._skips_total += 1
        limit = self.max_consecutive_skips
        if self._skips_total == 1 and D.rank() == 0:
            print(f"[steprl] WARNING: non-finite gradient at RL step {self.global_step}: optimiser update skipped "
                  f"(the run stops after {limit} such updates in a row: algo.max_consecutive_skips)",
                  file=sys.stderr, flush=True)
        if limit is not None and self._skips >= int(limit):
            raise DivergenceError(
                f"training diverged: {self._skips} consecutive optimiser updates had a non-finite gradient and were "
                f"skipped (RL step {self.global_step}, optim.lr={self.optim_cfg.get('lr')}); lower optim.lr or raise "
                f"algo.max_consecutive_skips")

    def grad_clip_groups(self, params: list) -> list[tuple[str, list, float | None]]:
        """``(name, parameters, max norm)`` of each model whose gradients are clipped on their own (verl /
        OpenRLHF clip each model separately). Default: all of the optimiser's parameters, ``optim.max_grad_norm``."""
        return [("policy", params, self.optim_cfg.get("max_grad_norm"))]

    def clip_grad_groups(self, params: list) -> dict[str, float]:
        """Clip each group of :meth:`grad_clip_groups` to its own max norm; their norms before clipping."""
        norms = {}
        for name, group, max_norm in self.grad_clip_groups(params):
            norm = torch.nn.utils.clip_grad_norm_(group, max_norm or float("inf"))
            if hasattr(norm, "full_tensor"):  # FSDP2: DTensor gradients give the norm as a (replicated) DTensor
                norm = norm.full_tensor()
            norms[name] = float(norm)
        return norms

    def clip_and_step(self, last: bool) -> tuple[float, bool]:
        """Clip, then step the optimiser and scheduler unless a gradient is non-finite. Returns the first clip
        group's (the policy's) norm before clipping; the others' are in ``self.last_grad_norms``.

        Only the ``last`` update of a training step goes through Lightning's optimiser wrapper, so
        ``global_step`` (and ``trainer.max_steps``, checkpoint and validation intervals) counts training steps,
        however many minibatch updates each one makes.
        """
        opt = self.optimizers()
        raw = opt.optimizer if hasattr(opt, "optimizer") else opt
        params = [p for g in raw.param_groups for p in g["params"]]
        self.last_grad_norms = self.clip_grad_groups(params)
        norm = next(iter(self.last_grad_norms.values()))
        # every rank must take the same decision (a rank whose loss was non-finite poisoned only its gradient)
        ok = D.all_ranks(all(math.isfinite(v) for v in self.last_grad_norms.values()))
        if ok:
            (opt if last else raw).step()
            self.lr_schedulers().step()
            self._weights_version = getattr(self, "_weights_version", 0) + 1  # the rollout engine re-syncs
        elif last:  # keep global_step counting training steps even when this update is skipped
            raw.zero_grad(set_to_none=True)
            opt.step()
        raw.zero_grad(set_to_none=True)
        self.note_skip(ok)
        return float(norm), ok

    # ----------------------------------------------------------------------------------------- parallelism
    def configure_model(self) -> None:
        """Under FSDP2 (``hardware=fsdp`` / ``fsdp_cpu``): ``fully_shard`` each decoder layer and the root of the
        policy and of every other model this module holds (reference, critic, PRM). No-op otherwise."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if not isinstance(strategy, ModelParallelStrategy):
            return
        from steprl.utils.fsdp import shard_from_strategy

        for name, child in self.named_children():
            if any(True for _ in child.parameters()):
                shard_from_strategy(child, strategy)

    def sampler_seed(self) -> int:
        """Rollout-sampling seed of this rank: ``seed`` on rank 0 (= a 1-process run), distinct on the others."""
        return self.seed + 1_000_003 * D.rank()

    # ----------------------------------------------------------------------------------------- rollout
    def generate(self, prompts: list[str], n: int, greedy: bool = False, max_new_tokens: int | None = None,
                 images: list | None = None):
        device = next(self.policy.parameters()).device
        if getattr(self, "_sampler_rank", 0) != D.rank():  # first use in a distributed run: this rank's stream
            self._sampler_rank = D.rank()
            self.sampler = torch.Generator(device=self.sampler.device).manual_seed(self.sampler_seed())
        if self.sampler.device.type != device.type:  # a CUDA model samples with a CUDA generator, seeded the same way
            self.sampler = torch.Generator(device=device).manual_seed(self.sampler_seed())
        push = getattr(self.engine, "sync_weights", None)  # an engine with its own copy of the weights (vLLM)
        if push is not None:
            push(self.policy, version=getattr(self, "_weights_version", 0))
        was_training = self.policy.training
        self.policy.eval()
        try:
            runner = self.agent if self.agent is not None else self.engine
            return runner.generate(self.policy, self.tokenizer, prompts, n=n, greedy=greedy,
                                   generator=None if greedy else self.sampler, max_new_tokens=max_new_tokens,
                                   **({"images": images, "processor": self.processor} if images and any(images) else {}))
        finally:
            self.policy.train(was_training)

    # ----------------------------------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx):
        ro = self.generate([s.prompt for s in batch], n=1, greedy=True,
                           max_new_tokens=self.val_cfg.get("max_new_tokens"), images=[s.images for s in batch])
        for s, text in zip(batch, ro.texts):
            try:
                score = float(self.task.verify(s, text))
            except Exception:  # a verifier must not stop training; count as wrong
                score = 0.0
            self._val_correct.append(1.0 if score >= 1.0 - 1e-6 else 0.0)
            self._val_sources.append(s.source or "all")
        if batch_idx == 0:
            self.val_examples = [(s.prompt, t) for s, t in zip(batch[:4], ro.texts[:4])]

    def on_validation_epoch_end(self):
        if not self._val_correct:
            return
        acc = float(np.mean(self._val_correct))
        metrics = {"val/acc": acc}
        sources = sorted(set(self._val_sources))
        if len(sources) > 1:
            for src in sources:
                metrics[f"val/acc/{src}"] = float(np.mean([c for c, s in zip(self._val_correct, self._val_sources)
                                                           if s == src]))
        n = len(self._val_correct)
        self._val_correct, self._val_sources = [], []
        step = self.global_step
        if self.trainer.sanity_checking and step > 0:
            return  # a resumed run: its warm start was measured by the run it resumes
        # logged at the RL step just completed (Lightning would use its own batch counter, one less), and
        # also during the sanity pass, whose metrics Lightning drops: that one is the warm-start accuracy
        if self.trainer.sanity_checking:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)
        else:
            self.log_metrics(metrics, bar=tuple(metrics))
        self.val_history.append((step, acc))
        self.print(f"[steprl] step {step}: val/acc = {acc:.3f} on {n} held-out problems")

    def log_metrics(self, metrics: dict[str, float], bar: tuple[str, ...] = ()) -> None:
        """Send metrics to the loggers at step = RL steps completed (Lightning's own step counter runs one
        behind during a training step), and to the progress bar / callback_metrics."""
        self.emit_metrics(D.reduce_metrics(metrics), bar)  # several ranks: counts summed, the rest averaged

    def emit_metrics(self, metrics: dict[str, float], bar: tuple[str, ...] = ()) -> None:
        """Log metrics already reduced over ranks (see :meth:`log_metrics`)."""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.log_dict({k: v for k, v in metrics.items() if k not in bar}, logger=False)
        if bar:
            self.log_dict({k: metrics[k] for k in bar}, logger=False, prog_bar=True)

    # ----------------------------------------------------------------------------------------- state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["steprl"] = {
            "sampler": self.sampler.get_state(),
            "sampler_device": str(self.sampler.device),
            "shuffler": self.shuffler.get_state(),
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": _np_state_to_plain(np.random.get_state()),
            "model": self.model_cfg,
            "val_history": self.val_history,
        }
        if D.is_distributed():  # every rank's random streams (rank 0 writes the checkpoint)
            checkpoint["steprl"]["ranks"] = D.all_gather_object({
                "sampler": self.sampler.get_state(), "torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": _np_state_to_plain(np.random.get_state())})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        st = checkpoint.get("steprl")
        if st is None:
            return
        ranks = st.get("ranks")
        if ranks is not None and len(ranks) == D.world_size():
            st = {**st, **ranks[D.rank()]}
        elif D.rank() > 0:  # resumed on another number of ranks: the other ranks' streams start afresh
            st = {**st, "sampler_device": "cpu:fresh"}
        fresh = st.get("sampler_device") == "cpu:fresh"
        device = torch.device("cpu" if fresh else st.get("sampler_device", "cpu"))
        if fresh or (device.type != "cpu" and not torch.cuda.is_available()):
            # resuming a GPU run on CPU: the sampling stream starts afresh
            self.sampler = torch.Generator().manual_seed(self.sampler_seed())
        else:
            self.sampler = torch.Generator(device=device)
            self.sampler.set_state(st["sampler"])
        self._sampler_rank = D.rank()
        self.shuffler.set_state(st["shuffler"])
        torch.set_rng_state(st["torch"])
        random.setstate(st["python"])
        np.random.set_state(_np_state_from_plain(st["numpy"]))
        self.val_history = list(st.get("val_history", []))


def _np_state_to_plain(state) -> tuple:
    """NumPy's RNG state with its array as a list, so checkpoints load with ``torch.load(weights_only=True)``."""
    return (state[0], list(map(int, state[1])), int(state[2]), int(state[3]), float(state[4]))


def _np_state_from_plain(state) -> tuple:
    return (state[0], np.asarray(state[1], dtype=np.uint32), state[2], state[3], state[4])
