"""PROPA's parts around the algorithm box (``steprl.algos.propa.module``): the PRM head, the MCTS step policy
over the HF engine, the tree-search collector, and the cleaning of generated steps. Nothing here imports the
module: the ``module`` arguments are the PROPA LightningModule."""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch

from steprl.models.heads import ScalarHead
from steprl.models.vision import VISION_TOKENS
from steprl.rollout.types import Sample

_VISION_TEXT = re.compile("|".join(re.escape(t) for t in VISION_TOKENS))


# What a final step looks like, per task (issue: the final step must come from the task, not from one regex for
# all): a task may expose its own ``final_step_regex``; else its class's entry here; else a step is final when the
# task can read an answer out of it (``task.extract_answer``).
TASK_FINAL_STEPS = {
    "ArithTask": r"^\s*####",                                           # "#### 13"
    "MathTask": r"\\boxed\{|^\s*####|(?i:the final answer is)",            # \boxed{..}, GSM8K "####", PROPA's phrase
    "PuzzleTask": r"<answer>",                                         # "<answer>2</answer>"
    "SearchQATask": r"<answer>",
}


def task_final_step_regex(task) -> str | None:
    """The task's own pattern of a final step (see ``TASK_FINAL_STEPS``), or None."""
    own = getattr(task, "final_step_regex", None)
    if isinstance(own, str):
        return own
    for cls in type(task).__mro__:
        if cls.__name__ in TASK_FINAL_STEPS:
            return TASK_FINAL_STEPS[cls.__name__]
    return None


def final_step_test(task, override: str | None) -> Callable[[str], bool]:
    """``step -> bool``: whether a step ends the solution. ``override`` (``algo.mcts.terminal_regex``) replaces
    the task's own test."""
    pattern = override if override else task_final_step_regex(task)
    if pattern is not None:
        rx = re.compile(pattern)
        return lambda step: rx.search(step) is not None
    return lambda step: task.extract_answer(step) is not None


def check_final_step(task, splitter, test: Callable[[str], bool], override: str | None, n: int = 16) -> None:
    """Start-up check: the final-step test must recognise a step of at least one of the task's own worked
    solutions (its first ``n`` training samples with one); a task without worked solutions is not checked."""
    from steprl.config import ConfigError

    try:
        data = task.train_dataset()
        sols = [s.solution for s in (data[i] for i in range(min(n, len(data)))) if s.solution]
    except (NotImplementedError, TypeError):
        return
    if not sols:
        return
    if any(test(step) for sol in sols for step in splitter.split_text(sol)):
        return
    what = (f"algo.mcts.terminal_regex={override!r}" if override else
            f"the final-step test of task {type(task).__name__} (set algo.mcts.terminal_regex)")
    raise ConfigError(f"{what} matches no step of the task's own worked solutions (e.g. the last step "
                      f"{splitter.split_text(sols[0])[-1:]!r}): no simulation could ever reach a final answer")


def clean_step(text: str) -> str:
    """A generated step with any literal vision-token text removed: re-tokenised, it would become an image
    placeholder without pixels (a prompt would then have more image tokens than images)."""
    return _VISION_TEXT.sub("", text)


def PRMHead(policy) -> ScalarHead:
    """PROPA's PRM: a scalar regression head on a copy of the policy's trunk (PPO's critic architecture), read at
    the last token; for a vision-language policy the trunk is the whole multimodal model, so the PRM's score
    depends on the image as well as on the steps."""
    return ScalarHead(policy)


class EngineStepPolicy:
    """:class:`steprl.core.mcts.StepPolicy` over the module's HF engine for a batch of questions."""

    def __init__(self, module, samples: list[Sample]):
        self.m, self.samples = module, samples
        self.prompts = self.image_prompts = 0  # prompts sent to the engine, and how many of them showed images
        c = module.mcts_cfg
        self.final = module.is_final_step
        base = module.engine
        self.expander = dataclasses.replace(base, stop=tuple(c["step_stop"]), max_new_tokens=c["step_max_tokens"],
                                            temperature=c["expand_temperature"], top_k=c["expand_top_k"],
                                            top_p=c["expand_top_p"], min_new_tokens=0)
        self.simulator = dataclasses.replace(base, stop=(), max_new_tokens=c["simulate_max_tokens"], min_new_tokens=0)

    def _gen(self, engine, prompts, n, greedy, trees):
        m = self.m
        images = [self.samples[i].images for i in trees]
        self.prompts += len(prompts)
        self.image_prompts += sum(1 for ims in images if ims)
        vision = {"images": images, "processor": m.processor} if any(images) else {}
        device = next(m.policy.parameters()).device
        if m.sampler.device.type != device.type:  # a CUDA model samples with a CUDA generator (as PolicyModule does)
            m.sampler = torch.Generator(device=device).manual_seed(m.seed)
        was = m.policy.training
        m.policy.eval()
        try:
            return engine.generate(m.policy, m.tokenizer, prompts, n=n, greedy=greedy,
                                   generator=None if greedy else m.sampler, **vision)
        finally:
            m.policy.train(was)

    def expand(self, requests, k):
        prompts = [self.m.step_prompt(self.samples[i], steps) for i, steps in requests]
        ro = self._gen(self.expander, prompts, k, greedy=False, trees=[i for i, _ in requests])
        out = []
        for j in range(len(requests)):
            kids = []
            for r in range(j * k, (j + 1) * k):
                text = ro.texts[r]
                eos = ro.finish_reason[r] == "stop" and not any(text.endswith(s) for s in self.expander.stop)
                text = clean_step(text)
                kids.append((text.strip(), text, eos))
            out.append(kids)
        return out

    def simulate(self, requests, budget):
        """One (greedy) continuation per request, cut into steps, up to the first final step or ``budget`` steps."""
        prompts = [self.m.step_prompt(self.samples[i], steps) for i, steps in requests]
        greedy = bool(self.m.mcts_cfg["simulate_greedy"])
        ro = self._gen(self.simulator, prompts, 1, greedy=greedy, trees=[i for i, _ in requests])
        out = []
        for t, b in zip(ro.texts, budget):
            steps = []
            for step in self.m.task.splitter.split_text(clean_step(t))[:b]:
                steps.append(step)
                if self.final(step):
                    break
            out.append(steps)
        return out

    def is_terminal(self, step: str, eos: bool) -> bool:
        return eos or not step or self.final(step)

    def is_correct(self, tree: int, steps: list[str]) -> bool:
        return self.m.task.verify(self.samples[tree], "\n".join(steps)) >= 1.0 - 1e-6


class TreeSearch:
    """PROPA's collector: MCTS on every question; the sibling groups of its trees are the step's rows (kept
    with the trees in ``step.extras["trees"]`` for the SFT and PRM phases)."""

    def collect(self, m, step) -> None:
        with step.timer("rollout"):
            roots, stats = m.search(step.samples)
        trees = list(zip(step.samples, roots))
        step.ro, step.rewards = m.tree_batch(trees)
        step.unfiltered, step.extras["trees"] = (step.ro, step.rewards), trees
        solved = sum(r.W > 0 for r in roots) / max(1, len(roots))
        m.metrics.write({
            "train/acc": solved, "propa/solved_frac": solved,
            "propa/groups": float(torch.unique(step.ro.group_ids).numel()),
            "propa/root_q": sum(r.Q for r in roots) / max(1, len(roots)),
            "propa/tree_nodes": sum(sum(1 for _ in r.walk()) for r in roots) / max(1, len(roots)),
            "propa/expansions": float(stats["expansions"]), "propa/simulations": float(stats["simulations"]),
            "propa/sim_terminal_frac": stats["sim_final"] / max(1, stats["simulations"]),
            "propa/image_prompts": float(stats["image_prompts"]) / max(1, stats["prompts"])})
