"""Multi-turn rollouts for tool-using agents: generate a turn, run the tool, append its observation, repeat.

    for turn in 0 .. max_turns:                       (the last turn has tools disabled, as in Search-R1)
        continue every live episode from its token ids until a stop tag (</search>, </answer>), EOS or
        the per-turn token limit                       -> model tokens: loss_mask 1, step_ids = turn
        action = env.step(turn text)                   -> observation tokens: loss_mask 0, step_ids -1
        the episode ends on an answer, an exhausted token budget or the last turn

All live episodes are decoded together in one batched engine call per turn. The result is a normal
:class:`Rollouts` (response = all turns and observations concatenated; ``response_mask`` covers both,
``loss_mask`` only the model's tokens) with one ``info`` dict per row: ``turns``, ``tool_calls``,
``format_errors``, ``answered``, ``over_length`` and ``truncated`` (``tokens`` | ``turns`` | ``None``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steprl.rollout.types import Rollouts


@dataclass
class Action:
    """What an environment makes of one model turn."""

    kind: str = "invalid"          # e.g. "search" | "answer" | "invalid"
    observation: str = ""          # text appended after the turn (never trained on); "" for none
    done: bool = False             # the episode ends after this turn
    format_error: bool = False     # the turn did not follow the action format
    tool_call: bool = False        # a tool ran


class AgentEnv:
    """A tool environment. ``stop``: the strings that end a model turn (closing action tags).

    ``step(text, final)`` parses one model turn and runs its tool; ``final`` is True on the last turn, where
    tools are disabled. It must never raise on what a model writes.
    """

    stop: tuple[str, ...] = ()

    def step(self, text: str, final: bool) -> Action:
        raise NotImplementedError


@dataclass
class _Episode:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    loss: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    format_errors: int = 0
    answered: bool = False
    truncated: str | None = None
    done: bool = False

    def add(self, ids: list[int], trained: bool, step: int) -> None:
        self.tokens += ids
        self.loss += [int(trained)] * len(ids)
        self.steps += [step if trained else -1] * len(ids)


class AgentLoop:
    """Turn-by-turn generation for many episodes at once.

    ``engine``: an engine with ``continue_ids`` (e.g. :class:`~steprl.rollout.hf.HFEngine`); ``env``: an
    :class:`AgentEnv`. ``max_turns``: tool-enabled turns before one last turn without tools (Search-R1's
    ``max_turns``; so at most ``max_turns + 1`` generation calls). ``max_turn_tokens``: new tokens per turn
    (None: the engine's ``max_new_tokens``). ``max_response_tokens``: budget of the whole response, turns and
    observations together; an episode that reaches it is over-length. ``max_obs_tokens``: observations are
    cut to this many tokens (None: no cut).
    """

    def __init__(self, engine, env: AgentEnv, max_turns: int = 2, max_turn_tokens: int | None = None,
                 max_response_tokens: int = 1024, max_obs_tokens: int | None = None):
        if max_turns < 0:
            raise ValueError(f"agent max_turns must be >= 0, got {max_turns}")
        if max_response_tokens < 1:
            raise ValueError(f"agent max_response_tokens must be >= 1, got {max_response_tokens}")
        self.engine, self.env = engine, env
        self.max_turns, self.max_turn_tokens = max_turns, max_turn_tokens
        self.max_response_tokens, self.max_obs_tokens = max_response_tokens, max_obs_tokens

    @property
    def temperature(self) -> float:
        return self.engine.temperature

    def generate(self, model, tokenizer, prompts: list[str], n: int = 1, greedy: bool = False,
                 generator: torch.Generator | None = None, max_new_tokens: int | None = None) -> Rollouts:
        """``n`` episodes per prompt (rows ``i*n .. i*n+n-1`` answer prompt ``i``), as :class:`Rollouts`.
        ``max_new_tokens`` overrides the per-turn token limit."""
        device = next(model.parameters()).device
        limit = max_new_tokens or self.max_turn_tokens or self.engine.max_new_tokens
        side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
        try:
            max_p = getattr(self.engine, "max_prompt_tokens", None)
            enc = tokenizer(list(prompts), add_special_tokens=False, truncation=max_p is not None, max_length=max_p)
        finally:
            tokenizer.truncation_side = side
        eps = [_Episode(list(ids)) for ids in enc["input_ids"] for _ in range(n)]
        for turn in range(self.max_turns + 1):
            for e in eps:
                if not e.done and len(e.tokens) >= self.max_response_tokens:
                    e.done, e.truncated = True, "tokens"
            live = [e for e in eps if not e.done]
            if not live:
                break
            final = turn == self.max_turns
            room = max(self.max_response_tokens - len(e.tokens) for e in live)
            new, finish = self.engine.continue_ids(model, tokenizer, [e.prompt + e.tokens for e in live],
                                                   max_new_tokens=min(limit, room), greedy=greedy,
                                                   generator=generator, stop=tuple(self.env.stop))
            for e, ids, fin in zip(live, new, finish):
                self._advance(e, ids, fin, turn, final, tokenizer)
        return self._collect(eps, prompts, n, tokenizer, device)

    def _advance(self, e: _Episode, ids: list[int], fin: str, turn: int, final: bool, tokenizer) -> None:
        room = self.max_response_tokens - len(e.tokens)
        over = len(ids) >= room and not (len(ids) == room and fin == "stop")
        ids = ids[:room]
        e.add(ids, True, turn)
        e.turns += 1
        if over:  # the token budget ran out inside this turn
            e.done, e.truncated = True, "tokens"
            return
        text = tokenizer.decode(ids, skip_special_tokens=True)
        try:
            act = self.env.step(text, final)
        except Exception:  # noqa: BLE001 - a tool failure must not stop training: count it as a format error
            act = Action(kind="error", format_error=True, done=final)
        e.tool_calls += int(act.tool_call)
        e.format_errors += int(act.format_error)
        if act.kind == "answer" and act.done:
            e.answered = True
        if act.observation and not act.done:
            obs = tokenizer(act.observation, add_special_tokens=False)["input_ids"]
            if self.max_obs_tokens is not None:
                obs = obs[:self.max_obs_tokens]
            room = self.max_response_tokens - len(e.tokens)
            e.add(obs[:room], False, turn)
            if len(obs) >= room:
                e.done, e.truncated = True, "tokens"
                return
        if act.done:
            e.done = True
        elif final:
            e.done, e.truncated = True, "turns"

    def _collect(self, eps: list[_Episode], prompts: list[str], n: int, tokenizer, device) -> Rollouts:
        pad = tokenizer.pad_token_id
        N = len(eps)
        P = max(len(e.prompt) for e in eps)
        T = max(1, max(len(e.tokens) for e in eps))
        prompt_ids = torch.full((N, P), pad, dtype=torch.long)
        prompt_mask = torch.zeros((N, P), dtype=torch.long)
        response_ids = torch.full((N, T), pad, dtype=torch.long)
        response_mask = torch.zeros((N, T), dtype=torch.long)
        loss_mask = torch.zeros((N, T), dtype=torch.long)
        step_ids = torch.full((N, T), -1, dtype=torch.long)
        for r, e in enumerate(eps):
            p, t = len(e.prompt), len(e.tokens)
            if p:
                prompt_ids[r, P - p:] = torch.tensor(e.prompt)
                prompt_mask[r, P - p:] = 1
            if t:
                response_ids[r, :t] = torch.tensor(e.tokens)
                response_mask[r, :t] = 1
                loss_mask[r, :t] = torch.tensor(e.loss)
                step_ids[r, :t] = torch.tensor(e.steps)
        texts = tokenizer.batch_decode([e.tokens for e in eps], skip_special_tokens=True)
        info = [{"turns": e.turns, "tool_calls": e.tool_calls, "format_errors": e.format_errors,
                 "answered": e.answered, "over_length": e.truncated is not None, "truncated": e.truncated}
                for e in eps]
        rows = torch.arange(N)
        return Rollouts(prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
                        response_ids=response_ids.to(device), response_mask=response_mask.to(device),
                        loss_mask=loss_mask.to(device), step_ids=step_ids.to(device),
                        group_ids=(rows // n).to(device), sample_idx=(rows // n).to(device), texts=texts,
                        finish_reason=["length" if e.truncated else "stop" for e in eps], info=info)


def agent_loop(task, engine) -> AgentLoop | None:
    """The multi-turn :class:`AgentLoop` a tool-using task (one with ``make_env``) rolls out through, on ``engine``
    with the task's ``agent_cfg``; None for a single-turn task (the engine generates its responses itself)."""
    if not callable(getattr(task, "make_env", None)):
        return None
    return AgentLoop(engine, task.make_env(), **dict(getattr(task, "agent_cfg", None) or {}))


def agent_metrics(ro: Rollouts) -> dict[str, float]:
    """Means over episodes of the ``info`` counts (``agent/...``); empty for single-turn rollouts."""
    if not ro.info:
        return {}
    n = len(ro.info)
    mean = lambda key: sum(float(d[key]) for d in ro.info) / n  # noqa: E731
    return {"agent/turns": mean("turns"), "agent/tool_calls": mean("tool_calls"),
            "agent/format_errors": mean("format_errors"), "agent/answered": mean("answered"),
            "agent/over_length": mean("over_length")}
