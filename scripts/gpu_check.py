"""GPU smoke checks of the algorithms (run on a CUDA machine), in fp32 and bf16, one runner for all:

* grpo / tp_grpo / drm / empg / salt: rollouts of the tiny arith model, the algorithm's advantages (judge-labelled
  thought advantages for TP-GRPO, DRM's three dimensions, EMPG / SALT step-level advantages), the clipped loss and
  its backward pass, with stored behaviour log-probs and a moved policy where the algorithm trains off-policy;
* propa: MCTS (batched expansions and simulations), the sibling GRPO batch, SFT and PRM phases and a PRM-guided
  best-of-k solve.

    python scripts/gpu_check.py                             # every algorithm
    python scripts/gpu_check.py --algos grpo,tp_grpo,drm    # a subset

``STEPRL_CHECK_CPU=1`` runs the same code on CPU with small batches, fp32 only by default (checks the script, not
the GPU).
"""
import argparse
import os
import time

import torch

from steprl.algos.step import Step
from steprl.rollout.hf import HFEngine
from steprl.tasks import ArithTask

CPU_DRY_RUN = os.environ.get("STEPRL_CHECK_CPU") == "1"
DEVICE = "cpu" if CPU_DRY_RUN else "cuda"
PROMPTS, G, MICRO = (4, 4, 8) if CPU_DRY_RUN else (16, 8, 32)
BATCH = {"prompts_per_step": PROMPTS, "samples_per_prompt": G, "minibatch_size": PROMPTS * G,
         "micro_batch_size": MICRO, "ppo_epochs": 1}


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build(name: str, common: dict):
    """The algorithm's module with smoke-check settings (imports only what the algorithm needs)."""
    if name == "grpo":
        from steprl.algos.advantage import GroupAdvantage
        from steprl.algos.base import RLModule
        return RLModule(**common, advantage=GroupAdvantage())
    if name == "tp_grpo":
        from steprl.algos.tp_grpo import TPGRPO
        return TPGRPO(**common, judge={"backend": "rule"}, tp_grpo={"round_steps": 2})
    if name == "drm":
        from steprl.algos.drm import DRM
        return DRM(**common, judge={"backend": "rule"}, drm={"spans": "last_step"},
                   relevance={"path": None, "tiny": {}, "device": DEVICE})
    if name == "empg":
        from steprl.algos.empg import EMPG
        return EMPG(**common)
    if name == "salt":
        from steprl.algos.salt import SALT
        return SALT(**common)
    if name == "propa":
        from steprl.algos.propa import PROPA
        pcommon = {**common, "rollout": HFEngine(max_new_tokens=32, temperature=1.0),
                   "batch": {**BATCH, "prompts_per_step": max(2, PROMPTS // 2), "samples_per_prompt": 4}}
        return PROPA(**pcommon, mcts={"iterations": 4 if CPU_DRY_RUN else 8, "terminal_regex": "^####",
                                      "step_max_tokens": 16, "simulate_max_tokens": 32, "max_depth": 6})
    raise SystemExit(f"unknown algorithm {name!r}; choose from {', '.join(ALGOS)}")


ALGOS = ("grpo", "tp_grpo", "drm", "empg", "salt", "propa")
OFF_POLICY = ("tp_grpo", "drm")  # trained on stored rounds: check the ratio != 1 path


def step(m, task, name: str, dtype: str) -> None:
    """One rollout -> score -> advantages -> loss -> backward on the device, with the algorithm's metrics."""
    m.setup("fit")
    samples = [task.train_dataset()[i] for i in range(PROMPTS)]
    t = time.time()
    ro = m.rollout(samples)
    sync()
    gen_s = time.time() - t
    assert m.sampler.device.type == DEVICE
    rw = m.group_values(ro, m.score(ro, samples))
    ro, rw = ro.to(DEVICE), rw.to(DEVICE)
    st = Step(samples, ro, rw, real=torch.ones(len(ro), dtype=torch.bool, device=DEVICE))
    st.extras = m.prepare(st)
    m.dense_rewards(st)
    adv, _ = m.advantages(st)
    ro.old_logp = m.logp_pass(m.policy, ro)  # behaviour log-probs, as a round stores them
    if name in OFF_POLICY:
        with torch.no_grad():  # move the policy so the ratio is not 1
            for p in m.policy.parameters():
                p.add_(1e-3 * torch.randn_like(p))
    n = min(len(ro), MICRO)
    mb = torch.arange(n, device=DEVICE)
    loss, stats = m.micro_loss(ro.select(mb), adv[mb], {}, ro.loss_mask[mb].sum(), n)
    loss.backward()
    gn = sum(float(p.grad.float().norm() ** 2) for p in m.policy.parameters() if p.grad is not None) ** 0.5
    assert torch.isfinite(loss) and torch.isfinite(adv).all() and gn > 0, (name, float(loss), gn)
    assert (adv[~ro.loss_mask.bool()] == 0).all(), name
    m.after_update(st)
    metrics = {k: round(v, 4) for k, v in m.metrics.compute().items()}  # what every stage wrote this step
    m.metrics.reset()
    print(f"[gpu_check] {name} {dtype}: rollouts {len(ro)} in {gen_s:.2f}s, acc {float(rw.correct.mean()):.3f}, "
          f"|adv|>0 {float((adv.abs() > 0).float().mean()):.3f}, loss {float(loss.detach()):.4f}, clip_frac "
          f"{stats['train/clip_frac'] / max(stats['tokens'], 1):.4f}, grad_norm {gn:.3f} {metrics}", flush=True)
    if name == "grpo":  # greedy decoding and the ratio = 1 identity of the engine's log-probs
        greedy = m.generate([s.prompt for s in samples], n=1, greedy=True)
        acc = sum(task.verify(s, t) for s, t in zip(samples, greedy.texts)) / len(samples)
        k = min(8, len(ro))
        with torch.no_grad():
            gap = (m.forward_logp(m.policy, ro.select(torch.arange(k)))[0] - ro.old_logp[:k]) * ro.loss_mask[:k]
        print(f"[gpu_check] grpo {dtype}: greedy acc {acc:.3f}, ratio==1 max|logp-old| "
              f"{float(gap.abs().max()):.2e}", flush=True)
    m.teardown("fit")


def propa(m, task, dtype: str) -> None:
    m.setup("fit")
    n_q = m.batch_cfg["prompts_per_step"]
    samples = [task.train_dataset()[i] for i in range(n_q)]
    t = time.time()
    roots, stats = m.search(samples)
    sync()
    t_search = time.time() - t
    trees = list(zip(samples, roots))
    ro, rw = m.tree_batch(trees)
    assert ((rw.outcome >= 0) & (rw.outcome <= 1)).all()
    line = f"[gpu_check] propa {dtype}: search {t_search:.2f}s {stats}, solved {sum(r.W > 0 for r in roots)}/{n_q}, " \
           f"groups {int(torch.unique(ro.group_ids).numel())}"
    if len(ro):
        adv, _ = m.advantages(Step(samples, ro, rw))
        n = min(len(ro), 16)
        loss, _ = m.micro_loss(ro.select(torch.arange(n)), adv[:n], {}, ro.loss_mask[:n].sum(), n)
        loss.backward()
        assert torch.isfinite(loss)
        line += f", grpo loss {float(loss.detach()):.4f}"
        m.policy.zero_grad(set_to_none=True)
    sft = m.sft_phase([s for s, r in trees if r.W == 0] or samples[:2])
    prm = m.prm_phase(trees)
    k = min(4, n_q)
    texts, _ = m.best_of_k(samples[:k], k=4, max_steps=6)
    acc = sum(task.verify(s, t) for s, t in zip(samples, texts)) / k
    print(f"{line}, sft {sft}, prm {prm}, best-of-4 acc {acc:.2f}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", default=",".join(ALGOS), help=f"comma-separated subset of {','.join(ALGOS)}")
    ap.add_argument("--dtypes", default="float32" if CPU_DRY_RUN else "float32,bfloat16")
    args = ap.parse_args(argv)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    for a in algos:
        if a not in ALGOS:
            raise SystemExit(f"--algos: unknown algorithm {a!r}; choose from {', '.join(ALGOS)}")
    if not CPU_DRY_RUN:
        assert torch.cuda.is_available(), "no CUDA device (STEPRL_CHECK_CPU=1 runs the script on CPU)"
    task = ArithTask(num_val=32)
    for dtype in args.dtypes.split(","):
        common = dict(model={"path": "steprl:tiny_arith", "dtype": dtype}, task=task,
                      rollout=HFEngine(max_new_tokens=32, temperature=0.7), optim={"lr": 3e-5}, batch=BATCH)
        for name in algos:
            m = build(name, common).to(DEVICE)
            propa(m, task, dtype) if name == "propa" else step(m, task, name, dtype)
            del m
    where = "CPU (dry run)" if CPU_DRY_RUN else torch.cuda.get_device_name()
    print(f"[gpu_check] {', '.join(algos)} OK on {where}", flush=True)
    print("GPU_CHECK_OK")


if __name__ == "__main__":
    main()
