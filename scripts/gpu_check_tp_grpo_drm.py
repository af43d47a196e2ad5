"""GPU smoke check for TP-GRPO and DRM (run on a CUDA machine): rollouts, judge-labelled thought advantages, DRM's
three dimensions and the clipped loss with stored behaviour log-probs, in fp32 and bf16, on CUDA.

    python scripts/gpu_check_tp_grpo_drm.py
"""
import time

import torch

from steprl.algos.drm import DRM
from steprl.algos.tp_grpo import TPGRPO
from steprl.rollout.hf import HFEngine
from steprl.tasks import ArithTask

BATCH = {"prompts_per_step": 16, "samples_per_prompt": 8, "minibatch_size": 64, "micro_batch_size": 32,
         "ppo_epochs": 1}


def step(m, task, name, dtype):
    m.setup("fit")
    samples = [task.train_dataset()[i] for i in range(16)]
    m._reward_counts = {"reward/errors": 0, "reward/timeouts": 0}
    t = time.time()
    ro = m.rollout(samples)
    rw = m.score(ro, samples)
    torch.cuda.synchronize()
    score_s = time.time() - t
    ro, rw = ro.to("cuda"), rw.to("cuda")
    adv, _ = m.advantages(ro, rw)
    ro.old_logp = m.logp_pass(m.policy, ro)             # behaviour log-probs, as a round stores them
    with torch.no_grad():                               # move the policy so the ratio is not 1
        for p in m.policy.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    mb = torch.arange(32, device="cuda")
    loss, stats = m.micro_loss(ro.select(mb), adv[mb], {}, ro.loss_mask[mb].sum(), 32)
    loss.backward()
    gn = sum(float(p.grad.float().norm() ** 2) for p in m.policy.parameters() if p.grad is not None) ** 0.5
    assert torch.isfinite(loss) and gn > 0 and torch.isfinite(adv).all()
    extra = {k: round(v, 4) for k, v in getattr(m, "_drm_metrics", {}).items()}
    print(f"[gpu_check] {name} {dtype}: rollouts {len(ro)}, rollout+score {score_s:.2f}s, acc "
          f"{float(rw.correct.mean()):.3f}, |adv|>0 {float((adv.abs() > 0).float().mean()):.3f}, loss "
          f"{float(loss):.4f}, clip_frac {stats['train/clip_frac'] / max(stats['tokens'], 1):.4f}, grad_norm "
          f"{gn:.3f} {extra}", flush=True)


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    task = ArithTask(num_val=32)
    for dtype in ("float32", "bfloat16"):
        common = dict(model={"path": "steprl:tiny_arith", "dtype": dtype}, task=task,
                      rollout=HFEngine(max_new_tokens=32, temperature=0.7), optim={"lr": 3e-5}, batch=BATCH)
        step(TPGRPO(**common, judge={"backend": "rule"}, tp_grpo={"round_steps": 2}).cuda(), task, "tp_grpo", dtype)
        step(DRM(**common, judge={"backend": "rule"}, drm={"spans": "last_step"},
                 relevance={"path": None, "tiny": {}, "device": "cuda"}).cuda(), task, "drm", dtype)
    print("[gpu_check] TP-GRPO and DRM OK on", torch.cuda.get_device_name(), flush=True)


if __name__ == "__main__":
    main()
