"""The update's forward + backward, padded vs packed (``batch.packed``), on the realistic config's shapes.

    PYTHONPATH=src python bench/packed_update.py --prompts 2 --rounds 2
    PYTHONPATH=src python bench/packed_update.py --fixed --prompts 16 --micro 64 --rounds 3

The realistic config's model (``vs_trl.py``: the 19M-parameter Qwen2 shape, random weights, seed 0, fp32, one
thread) and its GSM8K prompts (50-300 templated tokens, at evenly spaced length quantiles), G = 8 responses
per prompt. The responses are random tokens with lengths drawn to match what the realistic rollout samples
(docs/performance.md, fourth round): 30 % of rows run to the 512-token limit, the others uniform in 5-511
(seeded; sampling 512-token responses would cost more than the update measured here). Rows are shuffled as
the update shuffles them and cut into micro-batches; each micro-batch runs ``RLModule.forward_logp`` and the
backward of a token-mean policy-gradient loss, as ``micro_loss`` does (the optimiser step is the same in every
variant and left out). Variants, alternating in each round: ``padded`` (today's default: share_prompt,
micro-batches of ``--micro`` rows), ``packed`` (same micro-batches, packed), ``packed+tokens`` (packed,
micro-batches of at most ``--budget`` tokens). Checks that the variants' summed losses agree, and prints per
variant the process CPU and wall seconds (median over rounds), the tokens run through the model and the
padded positions the padded forward computes. ``--fixed``: the fixed-length small config of ``vs_trl.py``
instead (``tiny_arith``, arith prompts, exactly 64 tokens), where there is no padding to remove: what packing
costs when it cannot gain.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from vs_trl import G, REALISTIC_CPU, realistic_data  # noqa: E402

MAX_NEW = 512


def make_rollouts(prompts: list[str], tok, seed: int = 0, fixed: int | None = None):
    from steprl.rollout.types import Rollouts

    g = torch.Generator().manual_seed(seed)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(G)]
    n, P = len(enc), max(len(e) for e in enc)
    prompt_ids = torch.full((n, P), tok.pad_token_id)
    prompt_mask = torch.zeros(n, P, dtype=torch.long)
    for i, e in enumerate(enc):  # left padding
        prompt_ids[i, P - len(e):] = torch.tensor(e)
        prompt_mask[i, P - len(e):] = 1
    full = torch.rand(n, generator=g) < 0.3
    lens = torch.where(full, torch.full((n,), MAX_NEW), torch.randint(5, MAX_NEW, (n,), generator=g))
    if fixed is not None:  # every response exactly this long: nothing to unpad
        lens = torch.full((n,), fixed)
    T = int(lens.max())
    resp_mask = (torch.arange(T)[None] < lens[:, None]).float()
    resp = torch.randint(3, len(tok), (n, T), generator=g) * resp_mask.long()
    zeros = torch.zeros(n, T, dtype=torch.long)
    return Rollouts(prompt_ids, prompt_mask, resp, resp_mask, resp_mask.clone(), zeros - 1,
                    torch.arange(n) // G, torch.arange(n), [""] * n, ["length"] * n)


def run(module, model, ro, adv, micro_rows, budget):
    from steprl.algos.logprob import row_tokens
    from steprl.models import packing

    order = torch.randperm(len(ro), generator=torch.Generator().manual_seed(1))
    n_tok = ro.loss_mask.sum()
    total, computed = 0.0, 0
    model.zero_grad(set_to_none=True)
    for mid in packing.micro_batches(order, row_tokens(ro), micro_rows, budget):
        mb = ro.select(mid)
        logp, _ = module.forward_logp(model, mb, entropy="detached")
        loss = -(logp * adv[mid, None] * mb.loss_mask).sum() / n_tok
        loss.backward()
        total += float(loss.detach())
        p_width = int(mb.prompt_mask.bool().any(0).sum())
        t_len = int(mb.response_mask.sum(-1).max())
        if module.batch_cfg["packed"]:
            ids = torch.cat([mb.prompt_ids[:, -p_width:], mb.response_ids[:, :t_len]], 1)
            att = torch.cat([mb.prompt_mask[:, -p_width:], mb.response_mask[:, :t_len].long()], 1)
            computed += packing.pack(ids, att, p_width, share_prompt=True).input_ids.shape[1]
        else:  # the shared-prompt forward: each distinct prompt once (when some repeat), the responses padded
            shared = len(set(mb.group_ids.tolist())) < len(mb)
            computed += (len(set(mb.group_ids.tolist())) * p_width if shared else len(mb) * p_width) + len(mb) * t_len
    return total, computed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--micro", type=int, default=8, help="rows per micro-batch (padded, packed)")
    ap.add_argument("--budget", type=int, default=None, help="tokens per micro-batch for packed+tokens "
                    "(default: micro x the mean row's tokens)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fixed", action="store_true", help="the fixed-length small config instead: model "
                    "tiny_arith, 16 arith prompts (~7 tokens) x G, exactly 64 tokens per response, no padding")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from steprl.algos.base import RLModule
    from steprl.models import load_model
    from steprl.rollout.hf import HFEngine
    from steprl.tasks.math import GSM8KTask

    if a.fixed:
        from steprl.tasks.arith import ArithTask

        prompts = [s.prompt for s in ArithTask(seed=0).train_dataset()][:a.prompts]
        model, tok = load_model(path="steprl:tiny_arith")
    else:
        path = realistic_data(a.prompts, Path(tempfile.mkdtemp(prefix="packed-")))
        task = GSM8KTask(path=str(path), val_path=str(path))
        prompts = [s.prompt for s in task.train_dataset()]
        model, tok = load_model(tiny=REALISTIC_CPU, init_seed=0)
    model.train()
    ro = make_rollouts(prompts, tok, fixed=64 if a.fixed else None)
    adv = torch.randn(len(ro), generator=torch.Generator().manual_seed(2))
    real = int(ro.prompt_mask.sum() + ro.response_mask.sum())
    budget = a.budget or a.micro * real // len(ro)
    print(f"{len(ro)} rows, prompts {sorted(set(ro.prompt_mask.sum(1).tolist()))} tokens, responses "
          f"{sorted(ro.response_mask.sum(1).long().tolist())}; {real} real tokens; token budget {budget}", flush=True)
    variants = {"padded": (False, None), "packed": (True, None), "packed+tokens": (True, budget)}
    modules = {}
    for name, (packed, _) in variants.items():
        m = RLModule.__new__(RLModule)  # forward_logp reads the engine's temperature and batch_cfg only
        m.engine = HFEngine(temperature=1.0)
        m.batch_cfg = {"share_prompt": True, "packed": packed}
        modules[name] = m
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    run(modules["packed"], model, ro.select(torch.arange(2)), adv[:2], 2, None)  # warm-up
    for r in range(a.rounds):
        losses = {}
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            t, p = time.perf_counter(), time.process_time()
            losses[name], computed = run(modules[name], model, ro, adv, a.micro, variants[name][1])
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - p)
            print(f"round {r} {name:14s} cpu {cpu[name][-1]:6.2f}s  wall {wall[name][-1]:6.2f}s  loss "
                  f"{losses[name]:.6f}  token positions through the model {computed}", flush=True)
        ref = losses["padded"]
        for name, v in losses.items():
            if abs(v - ref) > 1e-4 * max(1.0, abs(ref)):
                raise SystemExit(f"round {r}: {name} loss {v} differs from padded {ref}")
    base = statistics.median(cpu["padded"])
    for name in variants:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"{name:14s} median cpu {c:6.2f}s  wall {w:6.2f}s  cpu speedup vs padded {base / c:.2f}")


if __name__ == "__main__":
    main()
