"""The HF engine's decode-batch compaction (``rollout.compact``) on the realistic config's rollout, alone.

    PYTHONPATH=src python bench/rollout_compaction.py --prompts 4 --rounds 3

Builds the realistic config's model (``vs_trl.py``: the 19M-parameter Qwen2 shape, random weights, seed 0, fp32,
one thread) and its GSM8K prompts (50-300 tokens), and samples G = 8 responses per prompt, up to 512 new tokens,
temperature 0.7, ending at EOS, with compaction on and off in alternating rounds, each round from the same
generator seed. It checks that both give the same tokens, and prints wall and process CPU seconds per rollout,
generated tokens per second, and the share of row-steps a decode without compaction spends on finished rows.
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
from vs_trl import G, REALISTIC_CPU, TEMPERATURE, realistic_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from steprl.models import load_model
    from steprl.rollout.hf import HFEngine
    from steprl.tasks.math import GSM8KTask

    path = realistic_data(a.prompts, Path(tempfile.mkdtemp(prefix="compaction-")))
    task = GSM8KTask(path=str(path), val_path=str(path))
    prompts = [s.prompt for s in task.train_dataset()]
    model, tok = load_model(tiny=REALISTIC_CPU, init_seed=0)
    model.eval()
    engines = {c: HFEngine(max_new_tokens=512, temperature=TEMPERATURE, compact=c) for c in (True, False)}
    wall = {True: [], False: []}
    cpu = {True: [], False: []}
    engines[True].generate(model, tok, prompts[:1], n=2, max_new_tokens=8)  # warm-up
    for r in range(a.rounds):
        out = {}
        for c in (True, False) if r % 2 == 0 else (False, True):
            t, p = time.perf_counter(), time.process_time()
            out[c] = engines[c].generate(model, tok, prompts, n=G, generator=torch.Generator().manual_seed(r))
            wall[c].append(time.perf_counter() - t)
            cpu[c].append(time.process_time() - p)
        if not torch.equal(out[True].response_ids, out[False].response_ids):
            raise SystemExit(f"round {r}: compaction changed the samples")
        lengths = out[True].response_mask.sum(1)
        width = int(lengths.max())
        wasted = 1 - float(lengths.sum()) / (len(lengths) * width)
        print(f"round {r}: {int(lengths.sum())} tokens, lengths {sorted(lengths.tolist())}; without compaction "
              f"{100 * wasted:.0f}% of row-steps decode finished rows;  on {wall[True][-1]:.1f}s "
              f"(cpu {cpu[True][-1]:.1f}s)  off {wall[False][-1]:.1f}s (cpu {cpu[False][-1]:.1f}s)", flush=True)
    for c in (True, False):
        print(f"compact={c!s:5s}: median {statistics.median(wall[c]):.1f} s wall, {statistics.median(cpu[c]):.1f} s "
              f"cpu per rollout of {len(prompts) * G} rows")
    ratios = [off / on for on, off in zip(cpu[True], cpu[False])]
    print(f"compaction_cpu_speedup={statistics.median(ratios):.2f} (per round: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
