"""Our GRPO step against TRL's ``GRPOTrainer`` on the same model, tokenizer, prompts and shapes, in one process.

    PYTHONPATH=src python bench/vs_trl.py                 # both configs (small, then ~20M parameters)
    PYTHONPATH=src python bench/vs_trl.py --configs small --rounds 3 --steps 3
    PYTHONPATH=src python bench/vs_trl.py --device cuda   # both on one GPU (fp32, TF32 off in both)

Prints, per config and framework, seconds per RL step, generated tokens per second and the peak memory a step
allocates, and as its LAST line ``speedup_vs_trl=<x>``: our generated-token throughput over TRL's on the small
config (x > 1: we are faster).

What is compared, and the choices that make it fair
----------------------------------------------------
* Configs. ``small``: the shipped warm start ``model=tiny_arith`` (1M-parameter Qwen2, byte tokenizer) exactly
  as the default run uses it. ``large``: a ~20M-parameter Qwen2 built from config (hidden 512, 6 layers, 8 heads,
  4 KV heads, MLP 1536) with the same byte tokenizer, randomly initialised with one seed. Each framework gets its
  own copy of the same weights, in fp32 on CPU.
* Shapes. 16 prompts x G = 8 samples = 128 sequences per RL step, 64 new tokens each. Generation is forced to a
  fixed length in both (``min_new_tokens = max_new_tokens = 64``: TRL through ``generation_kwargs``, ours
  through ``rollout.min_new_tokens``), so both generate, score and train on exactly 128 x 64 = 8192 response
  tokens per step; the script counts the tokens each one actually generated and stops if they differ.
* Prompts. The same ``task=arith`` training prompts (the task's own stream, same seed) for both; TRL gets them
  as a ``datasets.Dataset`` with ``prompt`` and ``answer`` columns. Sampling at temperature 0.7, top-p 1,
  top-k off, in both (our default rollout temperature).
* One optimiser update per RL step in both, over all 128 sequences, in 2 micro-batches of 64 with gradient
  accumulation: ours ``minibatch_size=128 micro_batch_size=64 ppo_epochs=1``; TRL
  ``per_device_train_batch_size=64 gradient_accumulation_steps=2 steps_per_generation=2 num_iterations=1``.
  Neither therefore needs an "old log-prob" forward pass (both reuse the detached current log-probs), and
  neither has a reference model (``beta=0`` / ``kl.coef=0``). Same AdamW (lr 3e-5, betas (0.9, 0.999),
  eps 1e-8, no weight decay, constant schedule) and gradient clipping at norm 1.
* Loss. GRPO's group-normalised advantage ((r - mean) / std per group; TRL ``scale_rewards="group"``) and the
  PPO clipped surrogate (eps 0.2) averaged over all response tokens of the update (TRL ``loss_type="dapo"``,
  our ``algo.loss.agg=token-mean``). TRL's std is the unbiased one, ours the population one (a scale on the
  advantages; no effect on time).
* Reward. Both call the same ``ArithTask.verify`` on each decoded response. Ours runs it through its reward
  pipeline (inline) and, as every steprl run on ``arith`` does, also scores every step (``score_steps``) and
  maps tokens to steps; TRL does neither. That extra work is counted against us.
* Implementations. Each side runs its own defaults: ours decodes a Qwen2 through its hand-written decode step
  (``rollout.fast_decode``, the same arithmetic as the HF forward; on a GPU replayed as CUDA graphs) and, in the update, forwards each distinct
  prompt of a micro-batch once with its responses on top (``batch.share_prompt``, the same log-probs and
  gradients); TRL generates with ``model.generate`` and forwards every [prompt, completion] row in full. These
  are implementation choices, not workload: both produce and train on the same tokens with the same loss.
* What a step is. Ours: one Lightning ``training_step`` (rollout, rewards, advantages, update, metrics) timed
  by a callback from batch start to batch end. TRL: one optimiser step of ``Trainer.train`` (generation and
  scoring in its ``_prepare_inputs``, the two micro-batches, the optimiser step) timed by a callback from
  ``on_step_begin`` to ``on_step_end``. Logging is off in both (TRL ``report_to="none"``, ``logging_steps``
  larger than the run; our ``logger=none``); no checkpoints, no validation.
* Timing. Both run in this process, in alternating rounds (ours, then TRL's, ``--rounds`` times), each round
  a fresh ``fit`` / ``train`` call of ``--steps`` steps whose first step is discarded as warm-up; before that,
  one untimed warm-up round each. The reported time is the median over the kept steps; tokens/s is
  generated (response) tokens per second. Alternation spreads the machine's background load over both.
* Memory. The peak of tensor memory allocated above what was live when a step started, measured by
  ``torch.profiler`` (``profile_memory=True``: cumulative self allocations in time order) over one extra,
  separately run step of each framework (the profiler slows that step; it is not timed). Weights and
  optimiser state, the same in both, are listed separately.
* CPU time. Next to wall-clock seconds the script reports the process CPU time of each step (median), which a
  machine shared with other jobs inflates far less than wall time; ``speedup_vs_trl`` stays the wall-clock one.
* Threads. ``--threads`` (default 1) torch threads for both (on a shared 2-core machine one thread per process
  gives far steadier timings than two).
* GPU. ``--device cuda`` runs both on the first GPU, still in fp32 with TF32 matmuls off (the one process-wide
  setting, checked after every round), our Lightning trainer on ``accelerator=gpu`` and TRL with
  ``use_cpu=False``. Step times are taken after ``torch.cuda.synchronize()``; peak memory is
  ``torch.cuda.max_memory_allocated`` over the profiled step above what was allocated when it began.
  ``--fast-decode`` overrides our ``rollout.fast_decode`` (default: the config's own, ``true``; on a GPU the
  hand-written decode step is replayed as CUDA graphs, ``rollout.cuda_graph``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

G, PROMPTS, NEW_TOKENS, MICRO = 8, 16, 64, 64
LR, TEMPERATURE = 3e-5, 0.7
LARGE = dict(hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=1536,
             max_position_embeddings=512)


# ---------------------------------------------------------------------------------------------- helpers
def peak_step_bytes(prof) -> int:
    """Peak of cumulative self allocations (bytes) over the profiled window, in time order."""
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


DEVICE = "cpu"  # set by --device


def sync() -> None:
    """Wait for queued GPU work, so that a host clock read after it covers the step (no-op on CPU)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class _Profiled:
    def __init__(self):
        self.prof = None
        self.peak = None

    def start(self):
        if DEVICE == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        from torch.profiler import ProfilerActivity, profile
        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.prof.start()

    def stop(self):
        if DEVICE == "cuda":
            sync()
            self.peak = torch.cuda.max_memory_allocated() - self.base
            return
        self.prof.stop()
        self.peak = peak_step_bytes(self.prof)
        self.prof = None


# ---------------------------------------------------------------------------------------------- ours
class Ours:
    name = "steprl"

    def __init__(self, config: str, seed: int, out: Path, fast_decode: str | None = None):
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        from steprl.train import build

        model = ["model=tiny_arith"] if config == "small" else \
            ["model=tiny"] + [f"model.tiny.{k}={v}" for k, v in LARGE.items()]
        overrides = model + [
            "logger=none", f"seed={seed}", f"batch.prompts_per_step={PROMPTS}", f"batch.samples_per_prompt={G}",
            f"batch.minibatch_size={PROMPTS * G}", f"batch.micro_batch_size={MICRO}", "batch.ppo_epochs=1",
            f"rollout.max_new_tokens={NEW_TOKENS}", f"rollout.min_new_tokens={NEW_TOKENS}",
            f"rollout.temperature={TEMPERATURE}", "rollout.top_p=1.0", "rollout.top_k=0",
            f"optim.lr={LR}", "optim.scheduler=constant", "optim.max_grad_norm=1.0", "optim.weight_decay=0.0",
            "algo.loss.agg=token-mean", "algo.kl.coef=0.0", "torch_threads=null", "reward=inline",
        ] + ([f"rollout.fast_decode={fast_decode}"] if fast_decode is not None else [])
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.paths.root_output = str(out)
        HydraConfig.instance().set_config(cfg)
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # the start-up banner
            self.module, self.data, _ = build(cfg)
        self.step_times: list[float] = []
        self.tokens: list[int] = []
        self.profile_step: int | None = None
        self.profiled = _Profiled()

    def policy(self):
        return self.module.policy

    def run(self, steps: int, profile_step: int | None = None) -> list[float]:
        import lightning as L

        outer = self

        class Clock(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if batch_idx == profile_step:
                    outer.profiled.start()
                sync()
                self.t, self.c = time.perf_counter(), time.process_time()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                sync()
                dt, dc = time.perf_counter() - self.t, time.process_time() - self.c
                if batch_idx == profile_step:
                    outer.profiled.stop()
                outer.step_times.append(dt)
                outer.cpu_times.append(dc)
                outer.tokens.append(int(module._unfiltered[0].response_mask.sum()))

        self.step_times, self.tokens, self.cpu_times = [], [], []
        trainer = L.Trainer(max_steps=steps, accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, callbacks=[Clock()])
        trainer.fit(self.module, datamodule=self.data)
        return self.step_times


# ---------------------------------------------------------------------------------------------- TRL
class TRL:
    name = "trl"

    def __init__(self, config: str, seed: int, out: Path, policy_state: dict, tokenizer, task):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        from steprl.models import load_model
        from steprl.rollout.types import Sample

        if config == "small":
            model, _ = load_model(path="steprl:tiny_arith")
        else:
            model, _ = load_model(tiny=LARGE, init_seed=seed)
        model.load_state_dict(policy_state)  # the very weights our side starts from
        train = task.train_dataset()
        rows = [{"prompt": train[i].prompt, "answer": train[i].answer} for i in range(PROMPTS * 64)]
        outer = self
        self.tokens: list[int] = []
        self._count = 0

        def arith_reward(prompts, completions, answer, completion_ids, **kw):
            outer._count += sum(len(c) for c in completion_ids)
            out = []
            for p, c, a in zip(prompts, completions, answer):
                try:
                    out.append(float(task.verify(Sample(prompt=p, answer=a), c)))
                except Exception:
                    out.append(0.0)
            return out

        args = GRPOConfig(
            output_dir=str(out / "trl"), use_cpu=DEVICE != "cuda", bf16=False, fp16=False, gradient_checkpointing=False,
            per_device_train_batch_size=MICRO, gradient_accumulation_steps=PROMPTS * G // MICRO,
            steps_per_generation=PROMPTS * G // MICRO, num_generations=G, num_iterations=1,
            max_completion_length=NEW_TOKENS, generation_kwargs={"min_new_tokens": NEW_TOKENS},
            temperature=TEMPERATURE, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="dapo",
            scale_rewards="group", mask_truncated_completions=False, learning_rate=LR, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
            max_grad_norm=1.0, optim="adamw_torch", max_steps=1, logging_steps=10**6, report_to="none",
            save_strategy="no", eval_strategy="no", seed=seed, dataloader_num_workers=0, log_completions=False,
            disable_tqdm=True,
        )

        class Clock(TrainerCallback):
            def on_step_begin(self, a, state, control, **kw):
                outer._count = 0
                if state.global_step == outer._profile_step:
                    outer.profiled.start()
                sync()
                self.t, self.c = time.perf_counter(), time.process_time()

            def on_step_end(self, a, state, control, **kw):
                sync()
                dt, dc = time.perf_counter() - self.t, time.process_time() - self.c
                if state.global_step - 1 == outer._profile_step:
                    outer.profiled.stop()
                outer.step_times.append(dt)
                outer.cpu_times.append(dc)
                outer.tokens.append(outer._count)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer = GRPOTrainer(model=model, reward_funcs=arith_reward, args=args,
                                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                       callbacks=[Clock()])
        self.step_times: list[float] = []
        self._profile_step = None
        self.profiled = _Profiled()

    def policy(self):
        return self.trainer.model

    def run(self, steps: int, profile_step: int | None = None) -> list[float]:
        self.step_times, self.tokens, self.cpu_times = [], [], []
        self._profile_step = profile_step
        self.trainer.args.max_steps = steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.train()
        return self.step_times


# ---------------------------------------------------------------------------------------------- main
def bench(config: str, rounds: int, steps: int, seed: int, memory: bool = True,
          fast_decode: str | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="vs_trl-"))
    ours = Ours(config, seed, out, fast_decode)
    theirs = TRL(config, seed, out, {k: v.clone() for k, v in ours.policy().state_dict().items()},
                 ours.module.tokenizer, ours.module.task)
    n_params = sum(p.numel() for p in ours.policy().parameters())
    print(f"[{config}] {n_params / 1e6:.2f}M parameters; {PROMPTS} prompts x G={G}, {NEW_TOKENS} new tokens, "
          f"{torch.get_num_threads()} threads, {device_name()}", flush=True)
    frameworks = (ours, theirs)
    for fw in frameworks:  # warm-up round: allocator, kernels, first-call costs
        fw.run(1)
    times = {fw.name: [] for fw in frameworks}
    cpu = {fw.name: [] for fw in frameworks}
    tokens = {fw.name: [] for fw in frameworks}
    for r in range(rounds):
        for fw in frameworks:
            t = fw.run(steps)
            times[fw.name] += t[1:]
            cpu[fw.name] += fw.cpu_times[1:]
            tokens[fw.name] += fw.tokens[1:]
            if torch.get_float32_matmul_precision() != "highest":
                raise SystemExit(f"{fw.name} changed the float32 matmul precision to "
                                 f"{torch.get_float32_matmul_precision()!r}: the comparison would not be fp32")
            print(f"  round {r}: {fw.name:7s} " + " ".join(f"{x:.2f}s" for x in t)
                  + "  (cpu " + " ".join(f"{x:.2f}s" for x in fw.cpu_times) + ")", flush=True)
    for fw in frameworks:  # one profiled step (the second of its round) for peak memory
        if memory:
            fw.run(2, profile_step=1)
    res = {}
    for fw in frameworks:
        toks = set(tokens[fw.name])
        if toks != {PROMPTS * G * NEW_TOKENS}:
            raise SystemExit(f"{fw.name} generated {sorted(toks)} tokens per step, expected {PROMPTS * G * NEW_TOKENS}")
        med = statistics.median(times[fw.name])
        res[fw.name] = {"s_per_step": med, "tok_s": PROMPTS * G * NEW_TOKENS / med,
                        "cpu_s": statistics.median(cpu[fw.name]),
                        "peak_mib": fw.profiled.peak / 2**20 if memory else float("nan"), "n": len(times[fw.name]),
                        "spread": (min(times[fw.name]), max(times[fw.name]))}
    state_mib = n_params * 4 * 4 / 2**20  # weights + grads + AdamW's two moments, fp32
    print(f"[{config}] weights + grads + AdamW state: {state_mib:.1f} MiB in both")
    for name, v in res.items():
        print(f"[{config}] {name:7s} {v['s_per_step']:7.2f} s/step (median of {v['n']}, "
              f"range {v['spread'][0]:.2f}-{v['spread'][1]:.2f}; cpu {v['cpu_s']:.2f} s)  {v['tok_s']:8.0f} generated tok/s  "
              f"peak step memory {v['peak_mib']:7.1f} MiB", flush=True)
    ratio = res["steprl"]["tok_s"] / res["trl"]["tok_s"]
    cpu_ratio = res["trl"]["cpu_s"] / res["steprl"]["cpu_s"]
    print(f"[{config}] steprl/trl throughput = {ratio:.2f} (process cpu time per step: {cpu_ratio:.2f})", flush=True)
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, **res}


def device_name() -> str:
    if DEVICE == "cuda":
        return torch.cuda.get_device_name()
    import platform
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return f"CPU {model}"


def main() -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="small,large", help="comma list of small,large")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per round; the first of each is discarded")
    ap.add_argument("--large-rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the profiled step that measures peak memory")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--fast-decode", choices=("cpu", "true", "false"), default=None,
                    help="our rollout.fast_decode (default: the config's)")
    a = ap.parse_args()
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    torch.set_float32_matmul_precision("highest")  # fp32 matmuls in both (no TF32 on GPU)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    for name in ("lightning.pytorch", "lightning.fabric", "transformers", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    results = {}
    for config in a.configs.split(","):
        results[config] = bench(config, a.rounds if config == "small" else a.large_rounds, a.steps, a.seed,
                                not a.no_memory, a.fast_decode)
    if "large" in results:
        print(f"large_ratio_vs_trl={results['large']['ratio']:.2f}")
    if "small" in results:
        print(f"speedup_vs_trl={results['small']['ratio']:.2f}")


if __name__ == "__main__":
    main()
