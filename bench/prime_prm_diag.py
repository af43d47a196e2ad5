"""What PRIME's implicit PRM learns on a short run: does its summed log-ratio rank a group's correct responses
above its wrong ones, and does it track response length instead?

    python bench/prime_prm_diag.py --steps 12                       # league budget: 16 x 8, PRM lr 2 x policy
    python bench/prime_prm_diag.py --steps 6 reward.token.beta=1.0      # any extra Hydra override after the flags

Each RL step it records, for every response: its length, its outcome, the log-likelihood under the frozen
reference ``Σ_t log π_ref``, and the PRM's score ``Σ_t q_t`` (q = log π_φ - log π_ref) three times: before the
PRM trains on this batch (``pre``: generalisation to fresh rollouts), the score the metric ``prime/prm_acc`` sees
(``seen``: each mini-batch's forward just before its optimiser step) and after the step's PRM updates
(``post``: fit on the data it just trained on). Printed per step and pooled over the run:

* pairwise accuracy (``prime/prm_acc``'s rule) of each score, and of two score-free rankers, ``-length``
  (shorter ranked higher) and ``Σ log π_ref``, with the fraction of tied pairs;
* the within-group Pearson correlation of each score with length and with the outcome (rows centred by their
  group's mean, so the group's difficulty does not count);
* the mean length of correct and wrong responses within mixed groups; ``β Σ q`` next to the outcome in [0, 1].
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from steprl.config import compose_run  # noqa: E402


def centred(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``x`` minus its group's mean."""
    out = x.clone().float()
    for k in torch.unique(g):
        out[g == k] -= out[g == k].mean()
    return out


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = float(a.norm() * b.norm())
    return float((a * b).sum()) / d if d > 0 else float("nan")


def ties(scores: torch.Tensor, outcome: torch.Tensor, g: torch.Tensor) -> float:
    """Fraction of the mixed-outcome pairs whose scores are equal."""
    n = t = 0
    for k in torch.unique(g):
        s, o = scores[g == k], outcome[g == k]
        i, j = torch.triu_indices(len(s), len(s), 1)
        mixed = o[i] != o[j]
        n += int(mixed.sum())
        t += int((mixed & (s[i] == s[j])).sum())
    return t / n if n else float("nan")


def summarise(rec: dict, beta: float) -> dict:
    from steprl.core import prm_pairwise_acc

    g, o, n = rec["group"], rec["outcome"], rec["length"].float()
    out = {"rows": len(o), "acc": float(o.mean())}
    for name in ("pre", "seen", "post", "ref", "neg_len"):
        s = -n if name == "neg_len" else rec[name]
        out[f"pair_{name}"] = float(prm_pairwise_acc(s, o, g))
        per = torch.stack([prm_pairwise_acc(s[g == k], o[g == k], g[g == k]) for k in torch.unique(g)])
        out[f"pair_{name}_se"] = float(per.std() / len(per) ** 0.5) if len(per) > 1 else float("nan")
        out[f"ties_{name}"] = ties(s, o, g)
    for name in ("pre", "seen", "post"):
        s = centred(rec[name], g)
        out[f"r_len_{name}"] = corr(s, centred(n, g))
        out[f"r_out_{name}"] = corr(s, centred(o, g))
        out[f"r_ref_{name}"] = corr(s, centred(rec["ref"], g))
    out["r_len_out"] = corr(centred(n, g), centred(o, g))
    mixed = torch.zeros_like(o, dtype=torch.bool)
    for k in torch.unique(g):
        rows = g == k
        mixed |= rows & (o[rows].min() != o[rows].max())
    out["len_right"] = float(n[mixed & (o > 0.5)].mean()) if (mixed & (o > 0.5)).any() else float("nan")
    out["len_wrong"] = float(n[mixed & (o <= 0.5)].mean()) if (mixed & (o <= 0.5)).any() else float("nan")
    out["sum_q"] = float(rec["seen"].mean())
    out["beta_sum_q_abs"] = float((beta * rec["seen"]).abs().mean())
    out["q_per_token"] = float((rec["seen"] / n.clamp_min(1)).mean())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a, extra = p.parse_known_args(argv)

    from steprl.algos.implicit_prm import ImplicitPRM
    from steprl.train import build

    records: list[dict] = []
    original = ImplicitPRM.implicit_q

    def recording(self, m, ro, ref, outcome, real=None):
        mask = ro.loss_mask.bool()
        pre = (self.q(m, ro, ref) * mask).sum(-1)
        q, metrics = original(self, m, ro, ref, outcome, real)
        seen = metrics.pop("_diag_seen", None)
        post = (self.q(m, ro, ref) * mask).sum(-1)
        records.append({"group": ro.group_ids.cpu(), "outcome": outcome.float().cpu(),
                        "length": mask.sum(-1).cpu(), "ref": (ref * mask).sum(-1).float().cpu(),
                        "pre": pre.float().cpu(), "post": post.float().cpu(),
                        "seen": (seen if seen is not None else (q * mask).sum(-1)).float().cpu(),
                        "metric": metrics.get("prime/prm_acc"), "loss": metrics.get("prime/prm_loss"),
                        "r_tok_ref": corr(q[mask].float().cpu(), ref[mask].float().cpu())})
        return q, metrics

    ImplicitPRM.implicit_q = recording
    P, G = a.prompts, a.samples
    overrides = ["algo=prime", "model=tiny_arith", "task=arith", f"seed={a.seed}", "logger=none",
                 "callbacks.progress_bar=null", "callbacks.sample_table=null", "callbacks.model_checkpoint=null",
                 f"torch_threads={a.threads}", f"batch.prompts_per_step={P}", f"batch.samples_per_prompt={G}", f"batch.minibatch_size={P * G}", f"batch.micro_batch_size={min(P * G, 64)}",
                 f"trainer.max_steps={a.steps}", f"trainer.val_check_interval={10 ** 6}",
                 "++trainer.limit_val_batches=0", "++trainer.num_sanity_val_steps=0",
                 "++trainer.enable_progress_bar=false", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run(overrides, Path(tmp))
        module, data, trainer = build(cfg)
        beta = float(module.scorer.cfg["beta"])
        t0 = time.time()
        trainer.fit(module, datamodule=data)
    cols = ["rows", "acc", "pair_pre", "pair_seen", "pair_post", "pair_neg_len", "pair_ref", "ties_seen",
            "r_len_seen", "r_out_seen", "r_ref_seen", "r_tok_ref", "r_len_out", "len_right", "len_wrong", "sum_q", "beta_sum_q_abs", "loss"]
    print(f"\n{len(records)} steps in {time.time() - t0:.0f} s; overrides: {' '.join(extra) or '(none)'}")
    print("step " + " ".join(f"{c:>12}" for c in cols))
    for i, rec in enumerate(records):
        s = {**summarise(rec, beta), "loss": rec["loss"] or float("nan"), "r_tok_ref": rec["r_tok_ref"]}
        print(f"{i + 1:4d} " + " ".join(f"{s[c]:12.3f}" for c in cols))
    half = records[len(records) // 2:]
    if half:
        offset = 0
        pooled = {k: [] for k in ("group", "outcome", "length", "ref", "pre", "seen", "post")}
        for rec in half:
            for k in pooled:
                pooled[k].append(rec[k] + offset if k == "group" else rec[k])
            offset += int(rec["group"].max()) + 1
        s = summarise({k: torch.cat(v) for k, v in pooled.items()}, beta)
        s["r_tok_ref"] = sum(r["r_tok_ref"] for r in half) / len(half)
        s["prm_loss"] = sum(r["loss"] or 0.0 for r in half) / len(half)
        print(f"\npooled over steps {len(records) - len(half) + 1}-{len(records)}:")
        for k, v in s.items():
            print(f"  {k:>15} {v:9.4f}")


if __name__ == "__main__":
    main()
