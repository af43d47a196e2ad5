"""GPU smoke check (run on a CUDA machine): the engine, a GRPO step and resume-relevant RNG state on CUDA.

    python scripts/gpu_check.py
"""
import time

import torch

from steprl.algos.advantage import GroupAdvantage
from steprl.algos.base import RLModule
from steprl.rollout.hf import HFEngine
from steprl.tasks import ArithTask


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    task = ArithTask(num_val=32)
    for dtype in ("float32", "bfloat16"):
        m = RLModule(model={"path": "steprl:tiny_arith", "dtype": dtype}, task=task,
                     rollout=HFEngine(max_new_tokens=32, temperature=0.7), optim={"lr": 3e-5},
                     batch={"prompts_per_step": 16, "samples_per_prompt": 8, "minibatch_size": 64,
                            "micro_batch_size": 32, "ppo_epochs": 1},
                     advantage=GroupAdvantage()).cuda()
        m.setup("fit")
        samples = [task.train_dataset()[i] for i in range(16)]
        m._reward_counts = {"reward/errors": 0, "reward/timeouts": 0}
        t = time.time()
        ro = m.rollout(samples)
        torch.cuda.synchronize()
        gen_s = time.time() - t
        assert m.sampler.device.type == "cuda"
        rw = m.score(ro, samples)
        ro, rw = ro.select(torch.arange(len(ro))).to("cuda"), rw.to("cuda")
        adv, _ = m.advantages(ro, rw)
        ro.old_logp = m.logp_pass(m.policy, ro)
        loss, stats = m.micro_loss(ro.select(torch.arange(32)), adv[:32], {}, ro.loss_mask[:32].sum(), 32)
        loss.backward()
        gn = sum(float(p.grad.float().norm() ** 2) for p in m.policy.parameters() if p.grad is not None) ** 0.5
        greedy = m.generate([s.prompt for s in samples], n=1, greedy=True)
        acc = sum(task.verify(s, t) for s, t in zip(samples, greedy.texts)) / len(samples)
        print(f"{dtype}: gen {gen_s:.2f}s for {len(ro)} seqs, reward {float(rw.outcome.mean()):.3f}, "
              f"loss {float(loss):.4f}, grad_norm {gn:.3f}, greedy acc {acc:.3f}, "
              f"ratio==1 max|logp-old| {float(((m.forward_logp(m.policy, ro.select(torch.arange(8)))[0] - ro.old_logp[:8]) * ro.loss_mask[:8]).abs().max()):.2e}")
        m.teardown("fit")
    print("GPU_CHECK_OK")


if __name__ == "__main__":
    main()
