"""Compose the real Hydra configs for tests (no mocks: the same tree `src/train.py` uses); compare fp32 results
of two computation paths with a tolerance that follows from the arithmetic."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from steprl.config import compose_run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"


# The 4 prompts x 4 samples shape the *_tiny recipes had before the scale rule (docs/testbed.md): tests whose counts
# were written for it, or that only need a step to run, pin it (a 16 x 8 step with 512 validation problems costs
# seconds to minutes on a 2-core CPU).
SMOKE = ["batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=8", "batch.micro_batch_size=4",
         "rollout.max_new_tokens=32", "task.num_val=32"]

# DRM recipes' relevance model is a trained sentence encoder (all-MiniLM-L6-v2 from the `steprl[drm]` extra, which the
# test environment does not install): the tests swap in a small random-weight BERT built from config (plumbing only)
TINY_RELEVANCE = "algo.relevance.tiny={hidden_size:32,num_layers:2,num_heads:2,intermediate_size:64}"


def compose_train(overrides: list[str], out_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The composed training config, with Hydra's runtime set so `${hydra:...}` interpolations resolve."""
    return compose_run(overrides, out_dir, config_name)


# ------------------------------------------------------------------------------------------ float comparisons
FP32_EPS = torch.finfo(torch.float32).eps  # 2^-23 = 2u, u the unit roundoff of float32


class Recorder(L.Callback):
    """Collects the logged metrics after every training step, and the last step's outputs (an RLModule's
    ``Step`` under ``"step"``).

    A row holds Lightning's ``callback_metrics`` (the logged values, as Lightning stores them) without the keys
    an earlier training step logged and this one did not: ``callback_metrics`` keeps a key's last value until it
    is logged again, so a step that skipped its update would otherwise repeat the previous step's ``train/loss``.
    An RLModule's outputs name the keys its step logged (``outputs["metrics"]``); keys no training step logs
    (``val/acc``) stay, with the last validation's value."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []
        self.outputs: dict | None = None
        self.step_keys: set[str] = set()  # every key a training step has logged so far

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logged = outputs.get("metrics") if isinstance(outputs, dict) else None
        if logged is None:  # a module whose outputs do not name its step's keys (SFT): all of them
            self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        else:
            self.step_keys |= set(logged)
            self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()
                              if k in logged or k not in self.step_keys})
        self.outputs = outputs


def fp32_tol(terms: int) -> float:
    """Relative gap allowed between two float32 computations of one value that differ only in rounding
    (summation order, blocking, fused kernels, thread count, CPU vector width).

    A sum of n float32 terms is within (n - 1) u of the exact sum, relative to the sum of the terms' magnitudes
    (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1 and §4.2); along a chain of sums (a
    norm, a projection, a softmax, ..., layer after layer) the lengths add; two computations, each within that
    bound, differ by at most twice it: ``terms * 2u = terms * eps``, with ``terms`` the summed lengths along
    the longest chain. A bound on rounding, not on bugs: a wrong mask, sign or constant moves the result by far
    more.
    """
    if terms < 1:
        raise ValueError(f"terms must be >= 1, got {terms}")
    return terms * FP32_EPS


def assert_close_fp32(actual, expected, *, terms: int, scale: float | None = None, msg=None) -> None:
    """``actual`` equals ``expected`` up to float32 rounding over ``terms`` summed terms (:func:`fp32_tol`),
    measured against ``scale``, the magnitude of the summed terms (default: the largest ``|expected|``; entries
    near 0 come out of cancellations of terms that large, so the bound is absolute, the same for every entry)."""
    if scale is None:
        scale = float(torch.as_tensor(expected).detach().abs().max())
    atol = fp32_tol(terms) * scale
    note = (lambda default: f"{msg}: {default}") if isinstance(msg, str) else msg  # keep the default's numbers
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol, msg=note)


def decoder_terms(config, length: int, vocab: bool = False) -> int:
    """The summed lengths of the sums along one token's path through a Qwen2/Llama-style decoder (``config``
    its HF config) attending ``length`` positions, for :func:`fp32_tol`: per layer the RMSNorm (hidden d), the
    q/k/v projections (d), the attention scores (head dim), the softmax normaliser and the weighted values
    (``length`` each), the output projection (d), the second RMSNorm (d), gate/up (d) and the down projection
    (intermediate); then the final RMSNorm and the LM head (d each); ``vocab``: a log-softmax over the
    vocabulary on top (its normaliser sums ``vocab_size`` terms). The few elementwise roundings per layer
    (rotary, activation, residual adds; u each) are small next to these lengths."""
    c = getattr(config, "text_config", None) or config
    d, i = c.hidden_size, c.intermediate_size
    head = getattr(c, "head_dim", None) or d // c.num_attention_heads
    layer = 5 * d + head + 2 * length + i
    return c.num_hidden_layers * layer + 2 * d + (c.vocab_size if vocab else 0)


def redraw_weights(model, std: float = 0.5, seed: int = 0, eos_bias: tuple[int, float] | None = None):
    """``model`` in eval mode with its matrices redrawn from N(0, std) under ``seed``, in place. The stock init
    (std 0.02) gives a tiny model that repeats its last prompt token whatever came before; std 0.5 makes its
    continuation depend on the whole prompt, its positions and its image, so padding / position / cache mistakes
    change the output. ``eos_bias=(eos_id, b)`` gives the LM head a bias of ``b`` on ``eos_id`` (zero elsewhere),
    so sampled rows finish at different lengths."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std, generator=g)
        if eos_bias is not None:
            head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            head.bias[eos_bias[0]] = eos_bias[1]
            model.lm_head = head
    return model.eval()
