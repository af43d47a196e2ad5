"""Per-kind greedy accuracy of a vision-language model on held-out puzzles, with and without the image (how the
puzzle warm start is measured).

    python -m steprl.tasks.puzzle_eval --model steprl:tiny_vl_puzzles --source scene --puzzles rotation patchfit \\
        --num-val 512 --black --other-image

Greedy decoding on the held-out split of ``PuzzleTask(puzzles, source, num_val=N, seed=S)`` (the split the SFT
recipe ``experiment=sft_tiny_vl_puzzles`` never trains on). For each puzzle kind it prints the accuracy (a
Jigsaw counts only when every tile is right, as ``val/acc``) with its binomial standard error, and:

* ``--black``: the same puzzles with every image replaced by a black one of the same size. A model that reads
  the image loses accuracy; the drop (paired, on the same puzzles) is its *image dependence*. A black image can
  also be far from anything the model was trained on and break its format, so
* ``--other-image``: each puzzle shown the image of the next puzzle in the list (a real puzzle image of the same
  kind when the list has one kind): the format holds, and a model that reads the image falls to about chance.
* ``--against-model`` / ``--against-ckpt``: a second model decoded greedily on the same puzzles; the paired gain
  (first minus second, per puzzle) with its standard error, per kind.

``--out`` writes the summary and every puzzle's 0/1 correctness as JSON. ``--model`` is a model directory, a hub
id or ``steprl:<name>``; ``--ckpt`` a steprl training checkpoint instead.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from steprl.rollout.hf import HFEngine
from steprl.tasks import eval_cli
from steprl.tasks.puzzles import PUZZLES, PuzzleTask


def load_processor_for(model: str | None, ckpt: str | None):
    """The image processor that goes with ``--model`` (its directory) or ``--ckpt`` (the model config saved in
    the checkpoint); an error when the model is not a vision-language model."""
    from steprl.models.vision import load_processor

    if ckpt:
        cfg = torch.load(ckpt, map_location="cpu", weights_only=False)["steprl"]["model"]
        proc = load_processor(**cfg)
    else:
        proc = load_processor(path=model)
    if proc is None:
        raise ValueError(f"{model or ckpt} is not a vision-language model: puzzles need one (e.g. steprl:tiny_vl_puzzles)")
    return proc


def responses(model, tokenizer, processor, samples, batch_size: int = 64, max_new_tokens: int = 132,
              black: bool = False, other_image: bool = False) -> list[str]:
    """The greedy response to each sample (``black``: with its images replaced by black ones of the same size;
    ``other_image``: sample ``i`` shown the images of sample ``i + 1``, the last one those of the first)."""
    from PIL import Image

    engine = HFEngine(max_new_tokens=max_new_tokens, temperature=1.0)
    model.eval()
    shown = [samples[(i + 1) % len(samples)].images if other_image else s.images for i, s in enumerate(samples)]
    texts: list[str] = []
    for b in range(0, len(samples), batch_size):
        batch = samples[b:b + batch_size]
        images = [[Image.new("RGB", im.size) for im in ims] if black else ims for ims in shown[b:b + batch_size]]
        texts += engine.generate(model, tokenizer, [s.prompt for s in batch], n=1, greedy=True,
                                 images=images, processor=processor).texts
    return texts


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of the per-puzzle differences ``a - b`` and its standard error sd(a - b) / sqrt(n)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def summarize(kinds: list[str], runs: dict[str, list[float]]) -> dict:
    """Per kind (and ``all``): ``n``, each run's accuracy and standard error, and each non-first run's paired
    difference to the first (``<run>_minus_<first>``, with ``_se``)."""
    names = list(runs)
    groups = defaultdict(list)
    for i, k in enumerate(kinds):
        groups[k].append(i)
    groups["all"] = list(range(len(kinds)))
    out = {}
    for k, idx in groups.items():
        row = {"n": len(idx)}
        for name in names:
            acc = float(np.mean([runs[name][i] for i in idx]))
            row[name], row[name + "_se"] = acc, eval_cli.se(acc, len(idx))
        for name in names[1:]:
            d, s = paired([runs[names[0]][i] for i in idx], [runs[name][i] for i in idx])
            row[f"{names[0]}_minus_{name}"], row[f"{names[0]}_minus_{name}_se"] = d, s
        out[k] = row
    return out


def format_table(res: dict) -> str:
    cols = [c for c in next(iter(res.values())) if c != "n" and not c.endswith("_se")]
    lines = ["| kind | puzzles | " + " | ".join(c.replace("_", " ") + " (± s.e.)" for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for k, r in res.items():
        lines.append(f"| {k} | {r['n']} | " + " | ".join(f"{r[c]:+.3f} ± {r[c + '_se']:.3f}" if "_minus_" in c
                                                          else f"{r[c]:.3f} ± {r[c + '_se']:.3f}" for c in cols)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = eval_cli.parser(__doc__, batch_size=64)
    p.add_argument("--puzzles", nargs="+", default=list(PUZZLES), choices=list(PUZZLES))
    p.add_argument("--source", default="procedural", help="task.source: procedural | scene | skimage | a folder")
    p.add_argument("--num-val", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=132)
    p.add_argument("--black", action="store_true", help="also decode with every image replaced by a black one")
    p.add_argument("--other-image", action="store_true", help="also decode with each puzzle shown the next one's image")
    against = p.add_mutually_exclusive_group()
    against.add_argument("--against-model", help="a second model to compare with, paired on the same puzzles")
    against.add_argument("--against-ckpt", help="a second steprl checkpoint to compare with")
    a = p.parse_args(argv)
    task = PuzzleTask(puzzles=a.puzzles, source=a.source, num_val=a.num_val, num_train=0, seed=a.seed)
    samples = [task.val_dataset()[i] for i in range(task.num_val)]
    kinds = [s.meta["puzzle"] for s in samples]

    def score(texts):
        return [1.0 if float(task.verify(s, t)) >= 1.0 - 1e-6 else 0.0 for s, t in zip(samples, texts)]

    model, tok = eval_cli.load(a)
    proc = load_processor_for(a.model, a.ckpt)
    runs = {"acc": score(responses(model, tok, proc, samples, a.batch_size, a.max_new_tokens))}
    if a.black:
        runs["black"] = score(responses(model, tok, proc, samples, a.batch_size, a.max_new_tokens, black=True))
    if a.other_image:
        runs["other_image"] = score(responses(model, tok, proc, samples, a.batch_size, a.max_new_tokens,
                                              other_image=True))
    if a.against_model or a.against_ckpt:
        from steprl.export import load_model_or_checkpoint

        m2, t2 = load_model_or_checkpoint(a.against_model, a.against_ckpt)
        p2 = load_processor_for(a.against_model, a.against_ckpt)
        runs["against"] = score(responses(m2, t2, p2, samples, a.batch_size, a.max_new_tokens))
    res = summarize(kinds, runs)
    eval_cli.report({**res, "per_puzzle": {"kinds": kinds, **runs}}, format_table(res), a.out)
    return res


if __name__ == "__main__":
    main()
