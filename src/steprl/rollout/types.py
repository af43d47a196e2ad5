"""The data that flows through one RL step: prompts in, rollouts out."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class Sample:
    """One problem of a task.

    ``prompt`` is the exact text given to the model (already formatted by the task); ``answer`` is the
    reference final answer a verifier compares against; ``solution`` is a worked demonstration (the SFT
    target, also used by algorithms that interleave supervised steps). ``images`` are the images the prompt
    shows (PIL images, uint8 arrays or paths), one per image placeholder in ``prompt`` (vision-language tasks).
    """

    prompt: str
    answer: str | None = None
    solution: str | None = None
    uid: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    images: list[Any] = field(default_factory=list)


PromptBatch = list[Sample]


@dataclass
class Rollouts:
    """N generated sequences: left-padded prompts [N, P] followed by right-padded responses [N, T].

    ``response_mask`` marks generated tokens (the EOS token included); ``loss_mask`` marks the response
    tokens that receive gradient (tool observations excluded); ``step_ids`` gives the index of the reasoning
    step / agent turn each response token belongs to (-1 outside any step); ``group_ids`` says which prompt
    each sequence answers and ``sample_idx`` indexes the ``PromptBatch`` it came from.

    Vision-language rollouts also carry, per row, the prompt's vision inputs: ``pixel_values`` (a list of
    [patches, D] tensors; the rows of one group share one tensor) and ``image_grid_thw`` (a list of [k, 3]).
    Being lists, ``select`` picks them by row and ``cat_rollouts`` concatenates them.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    loss_mask: torch.Tensor
    step_ids: torch.Tensor
    group_ids: torch.Tensor
    sample_idx: torch.Tensor
    texts: list[str]
    finish_reason: list[str]
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    engine_logp: torch.Tensor | None = None  # the rollout engine's own log-probs of the sampled tokens (vLLM)
    pixel_values: list[torch.Tensor] | None = None
    image_grid_thw: list[torch.Tensor] | None = None
    info: list[dict[str, Any]] | None = None  # per-row episode facts of multi-turn rollouts (AgentLoop)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    def select(self, idx: torch.Tensor | list[int]) -> "Rollouts":
        """The rows ``idx`` (tensor fields indexed, list fields picked), e.g. a minibatch or the kept groups."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = idx.tolist()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v[idx.to(v.device)]
            elif isinstance(v, list):
                out[f.name] = [v[i] for i in rows]
            else:
                out[f.name] = v
        return Rollouts(**out)

    def to(self, device: torch.device | str) -> "Rollouts":
        def move(v):
            if isinstance(v, torch.Tensor):
                return v.to(device)
            if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):  # per-row vision tensors
                moved: dict[int, torch.Tensor] = {}  # rows that share a tensor keep sharing it
                return [moved.setdefault(id(t), t.to(device)) for t in v]
            return v
        return Rollouts(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


def cat_rollouts(parts: list[Rollouts], pad_id: int) -> Rollouts:
    """Concatenate rollouts of different widths (prompts stay left-padded, responses right-padded).

    Group ids of later parts are shifted so groups stay distinct; ``sample_idx`` is kept as given.
    """
    if len(parts) == 1:
        return parts[0]
    p_w = max(r.prompt_ids.shape[1] for r in parts)
    t_w = max(r.response_ids.shape[1] for r in parts)
    F = torch.nn.functional

    def left(x, value):
        return F.pad(x, (p_w - x.shape[1], 0), value=value)

    def right(x, value):
        return F.pad(x, (0, t_w - x.shape[1]), value=value)

    out: dict[str, Any] = {
        "prompt_ids": torch.cat([left(r.prompt_ids, pad_id) for r in parts]),
        "prompt_mask": torch.cat([left(r.prompt_mask, 0) for r in parts]),
        "response_ids": torch.cat([right(r.response_ids, pad_id) for r in parts]),
        "response_mask": torch.cat([right(r.response_mask, 0) for r in parts]),
        "loss_mask": torch.cat([right(r.loss_mask, 0) for r in parts]),
        "step_ids": torch.cat([right(r.step_ids, -1) for r in parts]),
        "sample_idx": torch.cat([r.sample_idx for r in parts]),
        "texts": [t for r in parts for t in r.texts],
        "finish_reason": [t for r in parts for t in r.finish_reason],
    }
    offset, groups = 0, []
    for r in parts:
        groups.append(r.group_ids + offset)
        offset += int(r.group_ids.max()) + 1 if len(r) else 0
    out["group_ids"] = torch.cat(groups)
    for name in ("old_logp", "ref_logp", "engine_logp"):
        vals = [getattr(r, name) for r in parts]
        out[name] = torch.cat([right(v, 0.0) for v in vals]) if all(v is not None for v in vals) else None
    for name in ("pixel_values", "image_grid_thw"):
        vals = [getattr(r, name) for r in parts]
        out[name] = [t for v in vals for t in v] if all(v is not None for v in vals) else None
    out["info"] = [d for r in parts for d in r.info] if all(r.info is not None for r in parts) else None
    return Rollouts(**out)
