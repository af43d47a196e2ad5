"""SALT (``algo=salt``): step-level advantages from a per-prompt trajectory graph (spec §2, [RECON]).

    A_i       = the base group advantage of trajectory i (``advantage=`` group: GRPO by default; RLOO works too)
    e_{i,t}   = (s_t, a_t, s_{t+1}) with canonical texts; identical keys inside a prompt group = one edge
    Â_{i,t}   = (1 - λ) A_i + λ mean_{occurrences of e_{i,t}} A_j          (steprl.core.salt)
    loss      = the unchanged clipped objective with Â_{i,t} on the tokens of step t

What the states and actions are, read from the rollouts:
* a step is ``Rollouts.step_ids`` (an agent turn, or a line of an ``arith`` solution); tokens that get gradient
  but no step id (EOS, whitespace) join the step before them;
* the observation after step t is the text of the response tokens with ``loss_mask`` 0 that follow it (tool /
  environment output, AgentLoop layout). A text-only step has none, so the state after it is the step text
  itself (what the model has written is all there is to observe);
* the action is the step text, or with ``action_key=action`` and an ``action_regex`` the parsed env action
  inside it (e.g. the ``<search>`` query), ``<invalid>`` when the step has none.
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.base import RLModule
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.rollout.types import Rollouts

ACTION_KEYS = ("action", "full_response")


class SALT(RLModule):
    """``salt``: state_key (obs | obs+last_action | full_prefix), action_key (action | full_response),
    action_regex (null: the whole step is the action), drop_regex (removed from texts before comparing, e.g.
    step counters), dedup_within_traj, renorm (none | batch_zero_mean), lam (mixing weight λ; 1 = pure SALT)."""

    def __init__(self, *args, salt: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        c = {**node_defaults("salt", "salt"), **(salt or {})}
        for key, allowed in (("state_key", core.SALT_STATE_KEYS), ("action_key", ACTION_KEYS),
                             ("renorm", core.SALT_RENORMS)):
            if c[key] not in allowed:
                raise ConfigError(f"algo.salt.{key}={c[key]!r} is not one of {list(allowed)}")
        if not 0.0 <= float(c["lam"]) <= 1.0:
            raise ConfigError(f"algo.salt.lam must be in [0, 1], got {c['lam']}")
        self.salt_cfg = c

    # ------------------------------------------------------------------------------------ the graph
    def step_texts(self, ro: Rollouts, steps: torch.Tensor) -> list[tuple[list[str], list[str]]]:
        """Per row: the raw text of each step and of the observation that follows it ('' when none)."""
        out = []
        decode = lambda toks: self.tokenizer.decode(toks, skip_special_tokens=True)  # noqa: E731
        for ids, rm, lm, st in zip(ro.response_ids.tolist(), ro.response_mask.tolist(), ro.loss_mask.tolist(),
                                   steps.tolist()):
            n = int(max(st)) + 1 if st else 0
            acts, obs = [[] for _ in range(n)], [[] for _ in range(n)]
            cur = -1
            for tok, r, l, s in zip(ids, rm, lm, st):
                if not r:
                    continue
                if l and s >= 0:
                    cur = s
                    acts[s].append(tok)
                elif cur >= 0:
                    obs[cur].append(tok)
            out.append(([decode(a) for a in acts], [decode(o) for o in obs]))
        return out

    def edge_ids(self, ro: Rollouts, steps: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
        """Flat (row, step index, edge id) of every step; edge ids are unique per (prompt group, edge key)."""
        c, table = self.salt_cfg, {}
        rows, cols, edges = [], [], []
        for r, (acts, obs) in enumerate(self.step_texts(ro, steps)):
            if not acts:
                continue
            a_c = [core.canon_text(core.parse_action(a, c["action_regex"] if c["action_key"] == "action" else None),
                                   c["drop_regex"]) for a in acts]
            o_c = [core.canon_text(o if o.strip() else a, c["drop_regex"]) for a, o in zip(acts, obs)]
            g = int(ro.group_ids[r])
            for t, key in enumerate(core.salt_edge_keys(a_c, o_c, "", c["state_key"])):
                if not acts[t] and not obs[t]:
                    continue  # a step id with no tokens (gap): not a step
                rows.append(r)
                cols.append(t)
                edges.append(table.setdefault((g, key), len(table)))
        return rows, cols, edges

    def advantages(self, step: Step):
        ro = step.ro
        base, returns = super().advantages(step)
        mask = ro.loss_mask.float()
        traj_adv = core.masked_mean(base, mask, dim=-1)
        steps = core.fill_step_ids(ro.step_ids, ro.loss_mask)
        rows, cols, edges = self.edge_ids(ro, steps)
        if not rows:
            return base, returns
        dev = base.device
        rows_t, cols_t = torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)
        e = torch.tensor(edges, device=dev)
        c = self.salt_cfg
        step_adv = core.salt_step_advantages(e, traj_adv[rows_t], rows_t, lam=float(c["lam"]),
                                             dedup_within_traj=bool(c["dedup_within_traj"]), renorm=c["renorm"])
        dense = torch.full((len(ro), int(steps.max()) + 1), float("nan"), dtype=base.dtype, device=dev)
        dense[rows_t, cols_t] = step_adv.to(base.dtype)
        adv = core.scatter_step_values(dense, steps) * mask
        _, inv, counts = torch.unique(e, return_inverse=True, return_counts=True)
        n_groups = max(1, int(torch.unique(ro.group_ids[rows_t]).numel()))
        self.metrics.write({"salt/merged_frac": float((counts[inv] > 1).float().mean()),
                         "salt/edges_per_group": float(counts.numel()) / n_groups,
                         "salt/steps_per_traj": len(rows) / max(1, len(ro)),
                            "salt/adv_shift": float((step_adv - traj_adv[rows_t]).abs().mean())})
        return adv, returns
