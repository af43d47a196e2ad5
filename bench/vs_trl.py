"""Our GRPO step against TRL's ``GRPOTrainer`` on the same model, tokenizer, prompts and shapes, in one process.

    PYTHONPATH=src python bench/vs_trl.py                 # both configs (small, then ~20M parameters)
    PYTHONPATH=src python bench/vs_trl.py --configs small --rounds 3 --steps 3
    PYTHONPATH=src python bench/vs_trl.py --device cuda   # both on one GPU (fp32, TF32 off in both)
    PYTHONPATH=src python bench/vs_trl.py --configs realistic [--device cuda] [--with-uncompacted]

Prints, per config and framework, seconds per RL step, generated tokens per second and the peak memory a step
allocates, and as its LAST line ``speedup_vs_trl=<x>``: our generated-token throughput over TRL's on the small
config (x > 1: we are faster), or, when the realistic config ran, its ratio (by process CPU time per generated
token on a CPU, by generated tokens per wall-clock second on a GPU).

The realistic config
--------------------
The shapes RL really runs, unlike the fixed-length configs below: prompts of 50-300 tokens, responses of
varying length up to 512 new tokens, G = 8.

* Prompts. GSM8K test problems read through the project's loader (``steprl.tasks.benchmarks.benchmark``) from
  the repository's usual ``../shared/data/gsm8k_test.jsonl`` (the script stops with a message naming the path
  if it is missing), with the GSM8K task's prompt template, kept if the prompt is 50-300 tokens; ``--prompts``
  of them (default 4 on CPU, 16 on a GPU) at evenly spaced quantiles of that length. Both frameworks train on
  exactly these prompts at every step (a dataset of just them), so prompt work is identical; rewards are
  ``GSM8KTask.verify`` in both.
* Models. On CPU the 19M shape of ``large`` (context 1024); with ``--device cuda`` the Qwen2.5-0.5B body
  (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864: 0.36B parameters with the byte vocabulary), random
  weights from one seed, fp32, the same weights in both.
* Lengths: the stop rule is EOS, in both, and nothing else (no ``min_new_tokens``, no stop strings), up to 512
  new tokens. A random-weight model does emit EOS: its logits are near zero, so at temperature 0.7 EOS is
  one of 260 (the byte vocabulary) nearly equal choices at every step, somewhat less likely once a row
  falls into repeating a token. Measured on 96 rows of this config: lengths 5-512, mean 300, 22-47 % of a
  batch's rows reaching 512 (``bench/rollout_compaction.py`` prints them). So lengths vary inside a batch as
  much as real ones do, under one rule shared by both; each framework draws its own samples, so a step's
  token count differs between them (the mean response length is printed), and throughput and CPU time are
  per generated token over all kept steps. (Imposing per-row lengths identically would need a hook in each
  framework's sampler; we chose the shared natural rule and report the lengths instead.)
* Everything else as for the fixed-length configs (one update per step, ``--micro`` rows per micro-batch
  (default 16), same optimiser, loss, advantage, timing). Also printed: the time in generation + scoring
  (ours: the module's ``collect``; TRL: ``_generate_and_score_completions``), the rest of the step as the
  update, its model FLOP rate counting 6 x parameters x tokens (every prompt and response token of every row;
  our shared-prompt forward does less work for the same count), and on a GPU that rate over the GPU's dense
  fp32 peak (``--peak-tflops``; known for H100 / H200 / A100) as the update's MFU.
* ``--with-uncompacted`` adds our engine with ``rollout.compact=false`` as a third contestant in the same
  rounds (same samples, printed side by side).

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
import dataclasses
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

G, PROMPTS, NEW_TOKENS, MICRO = 8, 16, 64, 64  # the fixed-length configs (small, large)
LR, TEMPERATURE = 3e-5, 0.7
LARGE = dict(hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=1536,
             max_position_embeddings=512)
# realistic: the 19M shape on CPU; on a GPU the Qwen2.5-0.5B body (0.36B parameters with the byte vocabulary)
REALISTIC_CPU = dict(LARGE, max_position_embeddings=1024)
REALISTIC_GPU = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                     max_position_embeddings=1024)
PROMPT_TOKENS = (50, 300)  # realistic prompts: GSM8K problems whose templated prompt has this many tokens
# dense fp32 peak (no TF32: the benchmark turns it off) of the GPUs the MFU is quoted for, TFLOP/s
FP32_PEAK_TFLOPS = {"H100 PCIe": 51.2, "H100": 66.9, "H200": 66.9, "A100": 19.5}


@dataclasses.dataclass
class Workload:
    """One config's shapes: ``prompts`` x G rows per step, up to ``new_tokens`` new tokens (exactly that many
    when ``fixed_length``), micro-batches of ``micro`` rows; ``model`` a tiny-Qwen2 shape (None: tiny_arith);
    ``data`` the realistic prompts' file (None: the arith task)."""

    config: str
    prompts: int
    new_tokens: int
    micro: int
    fixed_length: bool
    model: dict | None
    data: Path | None = None

    @property
    def rows(self) -> int:
        return self.prompts * G


def workload(config: str, prompts: int | None, micro: int | None, out: Path, tokenizer=None) -> Workload:
    if config == "small":
        return Workload(config, PROMPTS, NEW_TOKENS, MICRO, True, None)
    if config == "large":
        return Workload(config, PROMPTS, NEW_TOKENS, MICRO, True, LARGE)
    if config != "realistic":
        raise SystemExit(f"--configs: unknown config {config!r} (small, large, realistic)")
    gpu = DEVICE == "cuda"
    n = prompts or (16 if gpu else 4)
    w = Workload(config, n, 512, micro or 16, False, REALISTIC_GPU if gpu else REALISTIC_CPU)
    w.data = realistic_data(n, out)
    return w


def realistic_data(n: int, out: Path) -> Path:
    """``n`` GSM8K test problems whose templated prompt is 50-300 tokens (byte tokenizer), at evenly spaced
    quantiles of that length, written (raw rows) to a JSON-lines file under ``out`` for both frameworks.
    Read through the project's own loader from the repository's usual ``../shared/data``."""
    import json

    from steprl.models.tokenizer import build_byte_tokenizer
    from steprl.tasks.base import read_jsonl_rows
    from steprl.tasks.benchmarks import BENCHMARKS, benchmark

    data_dir = ROOT.parent / "shared" / "data"
    src = data_dir / BENCHMARKS["gsm8k"]["file"]
    if not src.is_file():
        raise SystemExit(f"--configs realistic needs GSM8K's test problems at {src} (the repository's "
                         f"../shared/data/{src.name}); it is missing. Put the file there (one JSON object per "
                         f"line with `question` and `answer`) or link ../shared to a directory holding data/.")
    task = benchmark("gsm8k", data_dir=str(data_dir))
    tok = build_byte_tokenizer()
    samples = task.eval_dataset()  # every row, in file order
    lengths = [len(tok(samples[i].prompt, add_special_tokens=False)["input_ids"]) for i in range(len(samples))]
    lo, hi = PROMPT_TOKENS
    fit = sorted((L, i) for i, L in enumerate(lengths) if lo <= L <= hi)
    if len(fit) < n:
        raise SystemExit(f"only {len(fit)} GSM8K problems have {lo}-{hi} prompt tokens; asked for {n}")
    pick = [fit[min(len(fit) - 1, int((k + 0.5) * len(fit) / n))][1] for k in range(n)]
    raw = read_jsonl_rows(src, "GSM8K file")
    path = out / "realistic_prompts.jsonl"
    path.write_text("".join(json.dumps(raw[i][1]) + "\n" for i in pick))
    print(f"[realistic] {n} GSM8K test problems (rows {pick}) with {[lengths[i] for i in pick]} prompt tokens",
          flush=True)
    return path


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


class _Phase:
    """Wall and CPU seconds spent inside one wrapped function (generation + scoring) per step."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.reset()

    def wrap(self, fn):
        def timed(*a, **k):
            sync()
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                sync()
                self._w += time.perf_counter() - t
                self._c += time.process_time() - c
        return timed

    def reset(self):
        self._w = self._c = 0.0

    def record(self):
        self.wall.append(self._w)
        self.cpu.append(self._c)

    def clear(self):
        self.wall, self.cpu = [], []


# ---------------------------------------------------------------------------------------------- ours
class Ours:
    name = "steprl"

    def __init__(self, w: Workload | str, seed: int, out: Path, fast_decode: str | None = None,
                 compact: bool | None = None, extra: tuple[str, ...] = ()):
        from steprl.config import compose_run

        from steprl.train import build

        if isinstance(w, str):  # profile_ours.py: a fixed-length config by name
            w = workload(w, None, None, out)
        model = ["model=tiny_arith"] if w.model is None else \
            ["model=tiny"] + [f"model.tiny.{k}={v}" for k, v in w.model.items()]
        task = [] if w.data is None else ["task=gsm8k", f"task.path={w.data}", f"task.val_path={w.data}"]
        overrides = model + task + [
            "logger=none", f"seed={seed}", f"batch.prompts_per_step={w.prompts}", f"batch.samples_per_prompt={G}",
            f"batch.minibatch_size={w.rows}", f"batch.micro_batch_size={w.micro}", "batch.ppo_epochs=1",
            f"rollout.max_new_tokens={w.new_tokens}",
            f"rollout.min_new_tokens={w.new_tokens if w.fixed_length else 0}",
            f"rollout.temperature={TEMPERATURE}", "rollout.top_p=1.0", "rollout.top_k=0",
            f"optim.lr={LR}", "optim.scheduler=constant", "optim.max_grad_norm=1.0", "optim.weight_decay=0.0",
            "algo.loss.agg=token-mean", "algo.kl.coef=0.0", "torch_threads=null", "reward=inline",
        ] + ([f"rollout.fast_decode={fast_decode}"] if fast_decode is not None else []) \
            + ([f"rollout.compact={str(compact).lower()}"] if compact is not None else []) + list(extra)
        if compact is False:
            self.name = "steprl-nocompact"
        cfg = compose_run(overrides, out)
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # the start-up banner
            self.module, self.data, _ = build(cfg)
        self.step_times: list[float] = []
        self.tokens: list[int] = []
        self.profile_step: int | None = None
        self.profiled = _Profiled()
        self.phase = _Phase()
        c = self.module.collector  # rollout + rewards of a step
        c.collect = self.phase.wrap(c.collect)

    def policy(self):
        return self.module.policy

    def run(self, steps: int, profile_step: int | None = None) -> list[float]:
        import lightning as L

        outer = self

        class Clock(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if batch_idx == profile_step:
                    outer.profiled.start()
                outer.phase.reset()
                sync()
                self.t, self.c = time.perf_counter(), time.process_time()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                sync()
                dt, dc = time.perf_counter() - self.t, time.process_time() - self.c
                if batch_idx == profile_step:
                    outer.profiled.stop()
                outer.step_times.append(dt)
                outer.cpu_times.append(dc)
                ro = outputs["step"].unfiltered[0]  # the step's first round, before any filter
                outer.tokens.append(int(ro.response_mask.sum()))
                outer.seq_tokens.append(int(ro.response_mask.sum() + ro.prompt_mask.sum()))
                outer.phase.record()

        self.step_times, self.tokens, self.cpu_times, self.seq_tokens = [], [], [], []
        self.phase.clear()
        trainer = L.Trainer(max_steps=steps, accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, callbacks=[Clock()])
        trainer.fit(self.module, datamodule=self.data)
        return self.step_times


# ---------------------------------------------------------------------------------------------- TRL
class TRL:
    name = "trl"

    def __init__(self, w: Workload, seed: int, out: Path, policy_state: dict, tokenizer, task):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        from steprl.models import load_model
        from steprl.rollout.types import Sample

        if w.model is None:
            model, _ = load_model(path="steprl:tiny_arith")
        else:
            model, _ = load_model(tiny=w.model, init_seed=seed)
        model.load_state_dict(policy_state)  # the very weights our side starts from
        train = task.train_dataset()
        n_rows = w.prompts * 64 if w.data is None else len(train)  # realistic: the same prompts every step
        rows = [{"prompt": train[i].prompt, "answer": train[i].answer} for i in range(n_rows)]
        prompt_len = {r["prompt"]: len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows}
        outer = self
        self.tokens: list[int] = []
        self._count = self._seq = 0

        def arith_reward(prompts, completions, answer, completion_ids, **kw):
            outer._count += sum(len(c) for c in completion_ids)
            outer._seq += sum(len(c) for c in completion_ids) + sum(prompt_len[p] for p in prompts)
            out = []
            for p, c, a in zip(prompts, completions, answer):
                try:
                    out.append(float(task.verify(Sample(prompt=p, answer=a), c)))
                except Exception:
                    out.append(0.0)
            return out

        args = GRPOConfig(
            output_dir=str(out / "trl"), use_cpu=DEVICE != "cuda", bf16=False, fp16=False, gradient_checkpointing=False,
            per_device_train_batch_size=w.micro, gradient_accumulation_steps=w.rows // w.micro,
            steps_per_generation=w.rows // w.micro, num_generations=G, num_iterations=1,
            max_completion_length=w.new_tokens,
            generation_kwargs={"min_new_tokens": w.new_tokens} if w.fixed_length else None,
            temperature=TEMPERATURE, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="dapo",
            scale_rewards="group", mask_truncated_completions=False, learning_rate=LR, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
            max_grad_norm=1.0, optim="adamw_torch", max_steps=1, logging_steps=10**6, report_to="none",
            save_strategy="no", eval_strategy="no", seed=seed, dataloader_num_workers=0, log_completions=False,
            disable_tqdm=True,
        )

        class Clock(TrainerCallback):
            def on_step_begin(self, a, state, control, **kw):
                outer._count = outer._seq = 0
                outer.phase.reset()
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
                outer.seq_tokens.append(outer._seq)
                outer.phase.record()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer = GRPOTrainer(model=model, reward_funcs=arith_reward, args=args,
                                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                       callbacks=[Clock()])
        self.step_times: list[float] = []
        self._profile_step = None
        self.profiled = _Profiled()
        self.phase = _Phase()
        # generation + scoring of a step (TRL's _prepare_inputs calls it once per generation batch)
        self.trainer._generate_and_score_completions = self.phase.wrap(self.trainer._generate_and_score_completions)

    def policy(self):
        return self.trainer.model

    def run(self, steps: int, profile_step: int | None = None) -> list[float]:
        self.step_times, self.tokens, self.cpu_times, self.seq_tokens = [], [], [], []
        self.phase.clear()
        self._profile_step = profile_step
        self.trainer.args.max_steps = steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.train()
        return self.step_times


# ---------------------------------------------------------------------------------------------- main
def bench(config: str, rounds: int, steps: int, seed: int, memory: bool = True,
          fast_decode: str | None = None, prompts: int | None = None, micro: int | None = None,
          with_uncompacted: bool = False, peak_tflops: float | None = None, extra: tuple[str, ...] = ()) -> dict:
    out = Path(tempfile.mkdtemp(prefix="vs_trl-"))
    w = workload(config, prompts, micro, out)
    ours = Ours(w, seed, out, fast_decode, extra=extra)
    theirs = TRL(w, seed, out, {k: v.clone() for k, v in ours.policy().state_dict().items()},
                 ours.module.tokenizer, ours.module.task)
    frameworks = [ours, theirs]
    if with_uncompacted:  # our engine without decode-batch compaction, same weights, as a third contestant
        plain = Ours(w, seed, out, fast_decode, compact=False, extra=extra)
        plain.policy().load_state_dict(ours.policy().state_dict())
        frameworks.insert(1, plain)
    n_params = sum(p.numel() for p in ours.policy().parameters())
    print(f"[{config}] {n_params / 1e6:.2f}M parameters; {w.prompts} prompts x G={G}, "
          f"{'exactly' if w.fixed_length else 'up to'} {w.new_tokens} new tokens, micro-batches of {w.micro}, "
          f"{torch.get_num_threads()} threads, {device_name()}", flush=True)
    for fw in frameworks:  # warm-up round: allocator, kernels, first-call costs
        fw.run(1)
    keys = ("times", "cpu", "tokens", "seq", "gen_wall", "gen_cpu")
    acc = {fw.name: {k: [] for k in keys} for fw in frameworks}
    for r in range(rounds):
        for fw in frameworks:
            t = fw.run(steps)
            a = acc[fw.name]
            a["times"] += t[1:]
            a["cpu"] += fw.cpu_times[1:]
            a["tokens"] += fw.tokens[1:]
            a["seq"] += fw.seq_tokens[1:]
            a["gen_wall"] += fw.phase.wall[1:]
            a["gen_cpu"] += fw.phase.cpu[1:]
            if torch.get_float32_matmul_precision() != "highest":
                raise SystemExit(f"{fw.name} changed the float32 matmul precision to "
                                 f"{torch.get_float32_matmul_precision()!r}: the comparison would not be fp32")
            print(f"  round {r}: {fw.name:16s} " + " ".join(f"{x:.2f}s" for x in t)
                  + "  (cpu " + " ".join(f"{x:.2f}s" for x in fw.cpu_times) + ")  generated "
                  + " ".join(str(x) for x in fw.tokens), flush=True)
    for fw in frameworks:  # one profiled step (the second of its round) for peak memory
        if memory:
            fw.run(2, profile_step=1)
    if peak_tflops is None and DEVICE == "cuda":
        name = torch.cuda.get_device_name()
        peak_tflops = next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)
    res = {}
    for fw in frameworks:
        a = acc[fw.name]
        if w.fixed_length and set(a["tokens"]) != {w.rows * w.new_tokens}:
            raise SystemExit(f"{fw.name} generated {sorted(set(a['tokens']))} tokens per step, "
                             f"expected {w.rows * w.new_tokens}")
        wall, cpu, toks = sum(a["times"]), sum(a["cpu"]), sum(a["tokens"])
        upd_wall, upd_cpu = wall - sum(a["gen_wall"]), cpu - sum(a["gen_cpu"])
        flops = 6 * n_params * sum(a["seq"])  # the update's forward + backward over every sequence token
        # FLOP rate: per CPU second on a CPU (one thread per process: load-proof), per wall second on a GPU
        upd_time = upd_wall if DEVICE == "cuda" else upd_cpu
        res[fw.name] = {
            "s_per_step": statistics.median(a["times"]), "cpu_s": statistics.median(a["cpu"]),
            # throughput over all kept steps (lengths vary per step in the realistic config)
            "tok_s": toks / wall, "cpu_ms_per_tok": 1e3 * cpu / toks, "gen_tok_s": toks / sum(a["gen_wall"]),
            "gen_cpu_ms_per_tok": 1e3 * sum(a["gen_cpu"]) / toks, "upd_s": upd_wall / len(a["times"]),
            "upd_cpu_s": upd_cpu / len(a["times"]), "gen_cpu_s": sum(a["gen_cpu"]) / len(a["times"]),
            "upd_tflops": flops / upd_time / 1e12, "mean_len": toks / (w.rows * len(a["times"])),
            "mfu": flops / upd_time / (peak_tflops * 1e12) if peak_tflops else None,
            "peak_mib": fw.profiled.peak / 2**20 if memory else float("nan"), "n": len(a["times"]),
            "spread": (min(a["times"]), max(a["times"]))}
    state_mib = n_params * 4 * 4 / 2**20  # weights + grads + AdamW's two moments, fp32
    print(f"[{config}] weights + grads + AdamW state: {state_mib:.1f} MiB in each")
    for name, v in res.items():
        mfu = "" if v["mfu"] is None else f"  update MFU {100 * v['mfu']:.1f}% of {peak_tflops} TFLOP/s fp32"
        print(f"[{config}] {name:16s} {v['s_per_step']:7.2f} s/step (median of {v['n']}, "
              f"range {v['spread'][0]:.2f}-{v['spread'][1]:.2f}; cpu {v['cpu_s']:.2f} s)  "
              f"{v['tok_s']:8.1f} generated tok/s  {v['cpu_ms_per_tok']:.2f} cpu ms/tok  "
              f"mean response {v['mean_len']:.0f} tok  peak step memory {v['peak_mib']:7.1f} MiB", flush=True)
        print(f"[{config}] {name:16s} generation + scoring: {v['gen_tok_s']:8.1f} tok/s, "
              f"{v['gen_cpu_ms_per_tok']:.2f} cpu ms/tok, cpu {v['gen_cpu_s']:.2f} s/step;  update (the rest): "
              f"{v['upd_s']:.2f} s/step, cpu {v['upd_cpu_s']:.2f} s/step, "
              f"{1e3 * v['upd_tflops']:.1f} GFLOP/s (6 x params x tokens){mfu}", flush=True)
    ratio = res["steprl"]["tok_s"] / res["trl"]["tok_s"]
    cpu_ratio = res["trl"]["cpu_ms_per_tok"] / res["steprl"]["cpu_ms_per_tok"]
    print(f"[{config}] steprl/trl throughput = {ratio:.2f} (process cpu time per generated token: "
          f"{cpu_ratio:.2f})", flush=True)
    if with_uncompacted:
        u = res["steprl-nocompact"]
        print(f"[{config}] compaction: generation {res['steprl']['gen_tok_s'] / u['gen_tok_s']:.2f}x tok/s "
              f"({u['gen_cpu_ms_per_tok'] / res['steprl']['gen_cpu_ms_per_tok']:.2f}x by cpu time), step "
              f"{res['steprl']['tok_s'] / u['tok_s']:.2f}x tok/s "
              f"({u['cpu_ms_per_tok'] / res['steprl']['cpu_ms_per_tok']:.2f}x by cpu time)", flush=True)
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
    ap.add_argument("--configs", default="small,large", help="comma list of small,large,realistic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per round; the first of each is discarded")
    ap.add_argument("--large-rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the profiled step that measures peak memory")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--fast-decode", choices=("cpu", "true", "false"), default=None,
                    help="our rollout.fast_decode (default: the config's)")
    ap.add_argument("--prompts", type=int, default=None,
                    help="realistic: prompts per step (default 4 on CPU, 16 on a GPU; x G=8 rows)")
    ap.add_argument("--micro", type=int, default=None, help="realistic: rows per micro-batch (default 16)")
    ap.add_argument("--realistic-rounds", type=int, default=2)
    ap.add_argument("--with-uncompacted", action="store_true",
                    help="also run our engine with rollout.compact=false (the decode-batch compaction's effect)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense fp32 peak for the update's MFU (default: known for H100 / H200 / A100)")
    ap.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more Hydra overrides for our side only, e.g. --ours batch.packed=true")
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
    rounds = {"small": a.rounds, "large": a.large_rounds, "realistic": a.realistic_rounds}
    for config in a.configs.split(","):
        if config not in rounds:
            raise SystemExit(f"--configs: unknown config {config!r} (small, large, realistic)")
        results[config] = bench(config, rounds[config], a.steps, a.seed, not a.no_memory, a.fast_decode,
                                a.prompts, a.micro, a.with_uncompacted, a.peak_tflops, tuple(a.ours))
    if "large" in results:
        print(f"large_ratio_vs_trl={results['large']['ratio']:.2f}")
    if "realistic" in results:
        r = results["realistic"]
        print(f"realistic_wall_ratio_vs_trl={r['ratio']:.2f}")
        print(f"realistic_cpu_ratio_vs_trl={r['cpu_ratio']:.2f}")
        # the realistic target is by CPU time on a CPU; on a GPU (launch-bound, cpu ~ wall) by throughput
        print(f"speedup_vs_trl={r['cpu_ratio'] if DEVICE == 'cpu' else r['ratio']:.2f}")
    elif "small" in results:
        print(f"speedup_vs_trl={results['small']['ratio']:.2f}")


if __name__ == "__main__":
    main()
