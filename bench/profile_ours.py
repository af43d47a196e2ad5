"""Profile our GRPO step on the benchmark's shapes (see ``vs_trl.py``): a torch.profiler table of the hottest ops
and phase times, or run it under py-spy.

    PYTHONPATH=src python bench/profile_ours.py --config small --steps 4           # phase times + op table
    PYTHONPATH=src py-spy record -o prof.svg -- python bench/profile_ours.py --steps 6 --no-torch-profile
    PYTHONPATH=src py-spy record -f raw -o prof.txt -- python bench/profile_ours.py --config realistic --prompts 2 \
        --steps 1 --no-torch-profile
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from vs_trl import Ours, workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", help="small, large or realistic")
    ap.add_argument("--prompts", type=int, default=None, help="realistic: prompts per step (default 4)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-torch-profile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(tempfile.mkdtemp(prefix="prof-"))
    ours = Ours(workload(a.config, a.prompts, None, out), 0, out)
    phases: list[dict] = []
    orig = ours.module._log

    def log(metrics, timer, t0, ro):
        orig(metrics, timer, t0, ro)
        phases.append({k: v for k, v in metrics.items() if k.startswith("time/")})
    ours.module._log = log
    ours.run(1)  # warm-up
    phases.clear()
    if a.no_torch_profile:
        t = ours.run(a.steps)
    else:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = ours.run(a.steps)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print("step times:", " ".join(f"{x:.2f}" for x in t))
    for k in phases[0]:
        print(f"{k:14s}", " ".join(f"{p[k]:.2f}" for p in phases))


if __name__ == "__main__":
    main()
