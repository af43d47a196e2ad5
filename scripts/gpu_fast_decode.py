"""``rollout.fast_decode`` on a GPU (eager, and replayed as a CUDA graph) against ``model.forward``: the same
tokens? how much faster? how much memory?

    python scripts/gpu_fast_decode.py                 # tiny_arith (fp32) and a Qwen2.5-0.5B-shaped model (fp32, bf16)
    STEPRL_CHECK_CPU=1 python scripts/gpu_fast_decode.py   # the same on CPU with small shapes (checks the script)

For each model: 16 prompts x 8 samples, exactly 64 new tokens (``min_new_tokens``), temperature 0.7, one
generator seed, decoded by the HF engine through ``model.forward`` (``fast_decode=false``), with the hand-written decode
step (``fast_decode=true cuda_graph=false``) and with that step replayed as a CUDA graph (``cuda_graph=true``). Prints the fraction of rows whose tokens are identical, the mean |difference| of
the engine's sampling log-probs over the tokens both drew alike up to the first difference, the median wall time
of a whole ``generate`` (after a warm-up, with ``torch.cuda.synchronize``) and the peak GPU memory of each.
Exits non-zero if the fp32 runs disagree on more than a few rows (bf16 may legitimately differ: the fused
matmuls round differently).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

CPU = os.environ.get("STEPRL_CHECK_CPU") == "1"
DEV = "cpu" if CPU else "cuda"
SHAPE = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
             max_position_embeddings=1024)
if CPU:
    SHAPE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 max_position_embeddings=256)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


VARIANTS = {"forward": dict(fast_decode=False), "fast": dict(fast_decode=True, cuda_graph=False),
            "fast+graph": dict(fast_decode=True, cuda_graph=True)}


def run(name: str, model, tokenizer, prompts: list[str], rounds: int = 3) -> dict:
    from steprl.rollout.hf import HFEngine

    out = {}
    for variant, kw in VARIANTS.items():
        if CPU and kw.get("cuda_graph"):
            continue  # CUDA graphs need a GPU
        eng = HFEngine(max_new_tokens=64, min_new_tokens=64, temperature=0.7, return_logprobs=True, **kw)
        gen = lambda: eng.generate(model, tokenizer, prompts, n=8,  # noqa: E731
                                   generator=torch.Generator(DEV).manual_seed(0))
        gen()  # warm-up
        times = []
        if DEV == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if DEV == "cuda" else 0
        for _ in range(rounds):
            sync()
            t = time.perf_counter()
            ro = gen()
            sync()
            times.append(time.perf_counter() - t)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if DEV == "cuda" else float("nan")
        out[variant] = (ro, statistics.median(times), peak)
    a, ta, pa = out["forward"]
    res = {}
    for variant, (b, tb, pb) in out.items():
        same = (a.response_ids == b.response_ids).all(-1)
        # log-probs compared over each row's prefix up to (and including) the first token where the draws differ
        differ = a.response_ids != b.response_ids
        first = torch.where(differ.any(-1), differ.float().argmax(-1),
                            torch.full_like(same, differ.shape[1], dtype=torch.long))
        upto = torch.arange(differ.shape[1], device=first.device)[None] <= first[:, None]
        upto &= a.loss_mask.bool() & b.loss_mask.bool()
        lp_diff = float(((a.engine_logp - b.engine_logp).abs() * upto).sum() / upto.sum().clamp(min=1))
        res[variant] = {"same_rows": float(same.float().mean()), "lp_diff": lp_diff, "time": tb, "peak": pb}
        print(f"[{name}] {variant:10s} generate {tb * 1e3:6.0f} ms ({ta / tb:.2f}x model.forward) | rows identical "
              f"to model.forward's {res[variant]['same_rows']:.3f} | mean |dlogp| {lp_diff:.2e} | peak above "
              f"weights {pb:.0f} MiB", flush=True)
    return res


def main() -> None:
    if not CPU and not torch.cuda.is_available():
        sys.exit("FAIL fast_decode: no CUDA device (STEPRL_CHECK_CPU=1 checks the script on CPU)")
    torch.backends.cuda.matmul.allow_tf32 = False
    from steprl.models import load_model
    from steprl.tasks import ArithTask

    train = ArithTask(num_val=8).train_dataset()
    prompts = [train[i].prompt for i in range(16)]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if DEV == 'cuda' else 'cpu'}", flush=True)
    results = {}
    model, tok = load_model(path="steprl:tiny_arith")
    results["tiny_arith fp32"] = run("tiny_arith fp32", model.to(DEV).eval(), tok, prompts)
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(tiny=SHAPE, init_seed=0, dtype=dtype)
        name = f"0.5B-shape {dtype}"
        results[name] = run(name, model.to(DEV).eval(), tok, prompts)
        del model
    bad = [f"{k} {v}" for k, r in results.items() if "float32" in k or "fp32" in k for v, x in r.items()
           if x["same_rows"] < 0.9]
    if bad:
        sys.exit(f"FAIL fast_decode: fp32 tokens differ from model.forward's on more than 10% of rows: {bad}")
    print("CHECK_OK fast_decode", flush=True)


if __name__ == "__main__":
    main()
