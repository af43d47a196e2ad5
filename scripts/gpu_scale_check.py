"""GPU scale checks, one per invocation (``scripts/gpu_check.sh`` runs them all, each with its own timeout).

    python scripts/gpu_scale_check.py single   # bf16 GRPO steps, ~0.5B random Qwen2, 1 GPU (Lightning, bf16-mixed)
    python scripts/gpu_scale_check.py fsdp     # the same through FSDP2 (ModelParallelStrategy) on 1 GPU
    python scripts/gpu_scale_check.py vllm     # the same with rollout=vllm, when vLLM is installed

Imports only torch, transformers, lightning and steprl (no Hydra / MLflow / peft). Prints, per check, rollout
and update tokens/s, peak GPU memory and the update's MFU (6 x params x trained tokens / time / peak bf16
FLOP/s of the card), then ``CHECK_OK <name>`` or exits non-zero with the reason.
"""
from __future__ import annotations

import os
import sys
import time

import torch

# Qwen2.5-0.5B's shape (24 layers, d=896, 14 heads / 2 KV heads, MLP 4864); the byte tokenizer's small
# vocabulary instead of 151,936 entries (a random model's samples must decode), so ~0.36B parameters
SHAPE = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
             max_position_embeddings=1024)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    for key, val in PEAK_BF16.items():
        if key in name:
            return val
    return float(os.environ.get("PEAK_FLOPS", 989e12))


CPU_DRY_RUN = os.environ.get("STEPRL_CHECK_CPU") == "1"  # tiny shapes on CPU: checks the script, not the GPU
if CPU_DRY_RUN:
    SHAPE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 max_position_embeddings=256)


def build(rollout=None, max_new_tokens: int = 128, prompts: int = 32, G: int = 8):
    if CPU_DRY_RUN:
        max_new_tokens, prompts, G = 8, 4, 2
    from steprl.algos.advantage import GroupAdvantage
    from steprl.algos.base import RLModule
    from steprl.rollout.data import RolloutDataModule
    from steprl.rollout.hf import HFEngine
    from steprl.tasks import ArithTask

    task = ArithTask(num_val=8)
    engine = rollout or HFEngine(max_new_tokens=max_new_tokens, temperature=1.0)
    n = prompts * G
    module = RLModule(model={"tiny": SHAPE, "dtype": "float32", "gradient_checkpointing": True}, task=task,
                      rollout=engine, optim={"lr": 1e-6, "max_grad_norm": 1.0},
                      batch={"prompts_per_step": prompts, "samples_per_prompt": G, "minibatch_size": n,
                             "micro_batch_size": 32, "ppo_epochs": 1},
                      advantage=GroupAdvantage(), total_steps=3, loss={"entropy_coef": 1e-3})
    data = RolloutDataModule(task, prompts, val_batch_size=8, seed=0)
    return module, data


class Meter:
    """Collects the module's per-step metrics (``time/*``, token counts) from the loggers' stream."""

    def __init__(self):
        import lightning as L

        meter = self

        class CB(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                ro = outputs["step"].unfiltered[0]  # the step's first round, before any filter
                m = {k: float(v) for k, v in trainer.callback_metrics.items()}
                m["tokens"] = float(ro.prompt_mask.sum() + ro.response_mask.sum())
                m["train_tokens"] = float(ro.loss_mask.sum())
                meter.rows.append(m)

        self.rows: list[dict] = []
        self.callback = CB()


def run(kind: str) -> None:
    import lightning as L

    if not torch.cuda.is_available() and not CPU_DRY_RUN:
        sys.exit(f"FAIL {kind}: no CUDA device (torch {torch.__version__}, cuda {torch.version.cuda})")
    torch.backends.cuda.matmul.allow_tf32 = True
    rollout = None
    if kind == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("SKIP vllm: vLLM is not installed (pip install 'steprl[vllm]')")
            print("CHECK_OK vllm (skipped)")
            return
        from steprl.rollout.vllm import VLLMEngine

        rollout = VLLMEngine(max_new_tokens=128, temperature=1.0, gpu_memory_utilization=0.3, probe_tol=None)
    module, data = build(rollout)
    n_params = sum(p.numel() for p in module.policy.parameters())
    meter = Meter()
    if kind == "fsdp":
        from steprl.utils.fsdp import FSDP2Strategy

        strategy, precision = FSDP2Strategy(param_dtype="bfloat16", reduce_dtype="float32"), "32-true"
    else:
        strategy, precision = "auto", "bf16-mixed"
    if CPU_DRY_RUN and kind == "fsdp":
        strategy = FSDP2Strategy()
    trainer = L.Trainer(accelerator="cpu" if CPU_DRY_RUN else "gpu", devices=1, strategy=strategy,
                        precision="32-true" if CPU_DRY_RUN else precision, max_steps=3,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        use_distributed_sampler=False, callbacks=[meter.callback])
    cuda = torch.cuda.is_available() and not CPU_DRY_RUN
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - t0
    rows = meter.rows[1:] or meter.rows  # step 1 includes CUDA / allocator warm-up
    roll = sum(r.get("time/rollout", 0.0) for r in rows)
    upd = sum(r.get("time/update", 0.0) + r.get("time/logprob", 0.0) for r in rows)
    tok = sum(r["tokens"] for r in rows)
    gen = sum(r["train_tokens"] for r in rows)
    trained = sum(r["tokens"] for r in rows)  # the update's forward/backward runs over prompt + response
    mfu = 6 * n_params * trained / max(upd, 1e-9) / (peak_flops() if cuda else 1e12)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    device = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    losses = [round(r.get("train/loss", float("nan")), 5) for r in meter.rows]
    print(f"[{kind}] {device} | params {n_params / 1e6:.0f}M | steps {len(meter.rows)} "
          f"in {wall:.1f}s | rollout {gen / max(roll, 1e-9):,.0f} gen tok/s | update {trained / max(upd, 1e-9):,.0f} "
          f"tok/s | overall {tok / max(roll + upd, 1e-9):,.0f} tok/s | peak mem {peak:.2f} GiB | update MFU "
          f"{100 * mfu:.1f}% | losses {losses}", flush=True)
    if not all(l == l for l in losses):
        sys.exit(f"FAIL {kind}: non-finite loss {losses}")
    if kind == "vllm":
        diffs = [r.get("rollout/logprob_diff") for r in meter.rows]
        print(f"[vllm] rollout/logprob_diff per step: {diffs}")
    print(f"CHECK_OK {kind}", flush=True)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "single"
    if which not in ("single", "fsdp", "vllm"):
        sys.exit(f"unknown check {which!r}: single | fsdp | vllm")
    run(which)
