"""DRM's relevance scorer on one RL step of the DRM claim's setting, alone: encoding every text vs each distinct text.

    PYTHONPATH=src python bench/drm_relevance.py --rounds 2

Samples one step's rollouts from the shipped long-chain warm start (``model=tiny_arith_long`` on 2-10-term
``arith_long`` chains: 16 questions x G = 8, temperature 1, up to 272 new tokens, seed 0), cuts each response into
DRM's reasoning and answer spans (``spans=last_step``), and scores the (question, reasoning) and (reasoning,
answer) pairs with the default relevance model, all-MiniLM-L6-v2 (the ``steprl[drm]`` extra), one thread. The
baseline encodes all 4 texts of each response in arrival order, 32 a batch (the scorer before it deduplicated);
``EmbeddingRelevance.embed`` encodes each distinct text once, batched by length. Prints wall and process CPU
seconds of each, in alternating rounds, and the largest difference between their scores.
"""
from __future__ import annotations

import argparse
import time

import torch


def every_text(rel, texts: list[str]) -> torch.Tensor:
    """The baseline: every text encoded where it stands, ``rel.batch_size`` a batch."""
    texts = [t or " " for t in texts]
    return torch.cat([rel.encode_batch(texts[i:i + rel.batch_size]) for i in range(0, len(texts), rel.batch_size)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from steprl.algos.drm import reasoning_answer_spans
    from steprl.models.build import load_model
    from steprl.rewards.drm_models import EmbeddingRelevance
    from steprl.rollout.hf import HFEngine
    from steprl.tasks import ArithTask

    task = ArithTask(num_train=16, num_val=4, seed=0, num_terms=[2, 10])
    samples = [task.train_dataset()[i] for i in range(16)]
    model, tok = load_model(path="steprl:tiny_arith_long")
    model.eval()
    ro = HFEngine(max_new_tokens=272, temperature=1.0).generate(
        model, tok, [s.prompt for s in samples], n=8, generator=torch.Generator().manual_seed(0))
    pairs = []
    for i, text in enumerate(ro.texts):
        r, ans = reasoning_answer_spans(text, "last_step", task.splitter)
        if r is None:
            continue
        R = text[r[0]:r[1]]
        pairs.append((samples[i // 8].prompt, R))
        if ans is not None:
            pairs.append((R, text[ans[0]:ans[1]]))
    texts = [p for p, _ in pairs] + [q for _, q in pairs]
    rel = EmbeddingRelevance()
    print(f"{len(ro.texts)} responses, {len(pairs)} pairs, {len(texts)} texts, {len(set(texts))} distinct, "
          f"mean {sum(map(len, texts)) / len(texts):.0f} characters")
    runs = {"every text": lambda: every_text(rel, texts), "distinct texts": lambda: rel.embed(texts)}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(a.rounds):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                fn()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    for name, ts in times.items():
        print(f"{name:15s} wall " + " ".join(f"{w:6.2f}" for w, _ in ts) + " s   cpu " +
              " ".join(f"{c:6.2f}" for _, c in ts) + " s")
    with torch.no_grad():
        diff = (every_text(rel, texts) - rel.embed(texts)).abs().max().item()
    print(f"largest |difference| of an embedding coordinate: {diff:.1e}")


if __name__ == "__main__":
    main()
