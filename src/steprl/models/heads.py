"""One scalar-head model for every value-like model an algorithm trains beside the policy: PPO's critic,
OREAL's token reward model, PROPA's PRM.

A copy of the policy's trunk (the decoder; for a vision-language policy the whole multimodal model, so the
score depends on the image) with a zero-initialised ``Linear(hidden, 1)`` head: one scalar per position, the
head in fp32 over a possibly bf16 trunk.
"""
from __future__ import annotations

import copy

import torch

from steprl.models.vision import is_vision_model


class ScalarHead(torch.nn.Module):
    """``bias``: the head's bias (the critic and PROPA's PRM have one, OREAL's token RM has none)."""

    def __init__(self, policy, bias: bool = True):
        super().__init__()
        self.vision = is_vision_model(policy)
        if self.vision:
            base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy  # a LoRA wrapper
            self.trunk, hidden = copy.deepcopy(base.model), policy.config.text_config.hidden_size
        else:
            self.trunk = copy.deepcopy(policy.get_decoder() if hasattr(policy, "get_decoder") else policy.model)
            hidden = policy.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1, bias=bias)
        torch.nn.init.zeros_(self.head.weight)
        if bias:
            torch.nn.init.zeros_(self.head.bias)

    def hidden(self, input_ids, attention_mask, position_ids=None, **vision) -> torch.Tensor:
        if vision:  # the multimodal model computes its own (3-row) positions from the ids, the mask and the grids
            return self.trunk(input_ids=vision.pop("input_ids", input_ids), attention_mask=attention_mask,
                              use_cache=False, **vision).last_hidden_state
        return self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1).float()  # a bf16 trunk feeds the fp32 head

    def forward(self, input_ids, attention_mask, position_ids=None, **vision) -> torch.Tensor:
        """The scalar of every position [n, L]."""
        return self.score(self.hidden(input_ids, attention_mask, position_ids, **vision))

    def response_scores(self, mb, head_on_all: bool = True) -> torch.Tensor:
        """The scalar of each response token [n, T] of rollouts ``mb``, read at the position that predicts it
        (like log-probs). ``head_on_all``: the head runs on every position, then the response's are kept
        (the critic); False: on the response's positions only (the token RM)."""
        ids, att = mb.input_ids, mb.attention_mask
        h = self.hidden(ids, att, (att.long().cumsum(-1) - 1).clamp(min=0))
        T = mb.response_ids.shape[1]
        return self.score(h)[:, -T - 1:-1] if head_on_all else self.score(h[:, -T - 1:-1])
