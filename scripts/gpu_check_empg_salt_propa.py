"""GPU smoke check for EMPG, SALT and PROPA (run on a CUDA machine), in fp32 and bf16:

* EMPG / SALT: rollouts of the tiny arith model, old-policy step entropies, step-level advantages, the clipped loss
  and its backward pass on CUDA;
* PROPA: MCTS on CUDA (batched expansions and simulations), the sibling GRPO batch, SFT and PRM phases and a
  PRM-guided best-of-k solve.

    python scripts/gpu_check_empg_salt_propa.py
"""
import time

import torch

from steprl.algos.empg import EMPG
from steprl.algos.propa import PROPA
from steprl.algos.salt import SALT
from steprl.rollout.hf import HFEngine
from steprl.tasks import ArithTask

BATCH = {"prompts_per_step": 16, "samples_per_prompt": 8, "minibatch_size": 64, "micro_batch_size": 32,
         "ppo_epochs": 1}


def step_level(m, task, name, dtype):
    m.setup("fit")
    samples = [task.train_dataset()[i] for i in range(16)]
    m._reward_counts = {"reward/errors": 0, "reward/timeouts": 0}
    t = time.time()
    ro = m.rollout(samples)
    rw = m.score(ro, samples)
    ro, rw = ro.to("cuda"), rw.to("cuda")
    m.prepare(ro)
    adv, _ = m.advantages(ro, rw)
    torch.cuda.synchronize()
    t_adv = time.time() - t
    mb = torch.arange(32, device="cuda")
    loss, _ = m.micro_loss(ro.select(mb), adv[mb], {}, ro.loss_mask[mb].sum(), 32)
    loss.backward()
    gn = sum(float(p.grad.float().norm() ** 2) for p in m.policy.parameters() if p.grad is not None) ** 0.5
    assert torch.isfinite(loss) and torch.isfinite(adv).all() and gn > 0
    assert (adv[~ro.loss_mask.bool()] == 0).all()
    metrics = {k: round(v, 4) for k, v in m.after_update(ro, rw).items()}
    print(f"[gpu_check] {name} {dtype}: rollouts {len(ro)}, rollout+advantages {t_adv:.2f}s, acc "
          f"{float(rw.correct.mean()):.3f}, loss {float(loss):.4f}, grad_norm {gn:.3f} {metrics}", flush=True)


def propa(m, task, dtype):
    m.setup("fit")
    samples = [task.train_dataset()[i] for i in range(8)]
    t = time.time()
    roots, stats = m.search(samples)
    torch.cuda.synchronize()
    t_search = time.time() - t
    m._trees = list(zip(samples, roots))
    ro, rw = m.tree_batch(m._trees)
    assert ((rw.outcome >= 0) & (rw.outcome <= 1)).all()
    line = f"[gpu_check] propa {dtype}: search {t_search:.2f}s {stats}, solved {sum(r.W > 0 for r in roots)}/8, " \
           f"groups {int(torch.unique(ro.group_ids).numel())}"
    if len(ro):
        adv, _ = m.advantages(ro, rw)
        n = min(len(ro), 16)
        loss, _ = m.micro_loss(ro.select(torch.arange(n)), adv[:n], {}, ro.loss_mask[:n].sum(), n)
        loss.backward()
        assert torch.isfinite(loss)
        line += f", grpo loss {float(loss):.4f}"
        m.policy.zero_grad(set_to_none=True)
    sft = m.sft_phase([s for s, r in m._trees if r.W == 0] or samples[:2])
    prm = m.prm_phase()
    texts, _ = m.best_of_k(samples[:4], k=4, max_steps=6)
    acc = sum(task.verify(s, t) for s, t in zip(samples, texts)) / 4
    print(f"{line}, sft {sft}, prm {prm}, best-of-4 acc {acc:.2f}", flush=True)


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    task = ArithTask(num_val=32)
    for dtype in ("float32", "bfloat16"):
        common = dict(model={"path": "steprl:tiny_arith", "dtype": dtype}, task=task,
                      rollout=HFEngine(max_new_tokens=32, temperature=0.7), optim={"lr": 3e-5}, batch=BATCH)
        step_level(EMPG(**common).cuda(), task, "empg", dtype)
        step_level(SALT(**common).cuda(), task, "salt", dtype)
        pcommon = {**common, "rollout": HFEngine(max_new_tokens=32, temperature=1.0),
                   "batch": {**BATCH, "prompts_per_step": 8, "samples_per_prompt": 4}}
        propa(PROPA(**pcommon, mcts={"iterations": 8, "terminal_regex": "^####", "step_max_tokens": 16,
                                      "simulate_max_tokens": 32, "max_depth": 6}).cuda(), task, dtype)
    print("[gpu_check] EMPG, SALT and PROPA OK on", torch.cuda.get_device_name(), flush=True)


if __name__ == "__main__":
    main()
