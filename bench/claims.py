"""The ten seed papers' headline claims, each tested in miniature: every arm x several seeds through the real
``src/train.py``, a 95 % confidence interval of the difference to the baseline arm, and a verdict.

    python bench/claims.py --dry-run                          # the commands, nothing run
    nice -n 10 python bench/claims.py --claims prime -j 1     # run one claim (resumable), then its figure + docs
    python bench/claims.py --report                           # redraw figures and docs/claims.md from the CSVs

Each claim's arms are lists of Hydra overrides (mostly ``experiment=<algo>_tiny``, plus the switch an ablation is
about), run with the claim's shared setting (warm start + task) and the shared budget (rollouts per step, RL steps,
held-out evaluation). Raw per-run results go to ``bench/claims/<claim>.csv`` (one row per finished run, appended as
runs finish, with the command that made it; a run whose row exists is skipped), figures to
``bench/claims/<claim>.png``, the table to ``docs/claims.md``. The verdict rule is in ``verdict`` and docs/claims.md.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:      # not POSIX: one runner per CSV at a time
    fcntl = None

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import (interp, mean_over, mean_std, paired_ci, read_metrics_csv, rollouts_to_reach,  # noqa: E402
                      t_ci, welch_ci)

DATA = ROOT / "bench" / "claims"
DOC = ROOT / "docs" / "claims.md"
MIN_SEEDS = 5
LEVEL = 0.95

# The warm starts and tasks; a claim whose model or task config is missing refuses to run and says which.
ARITH = ("model=tiny_arith", "task=arith")
# a long chain's worked solution runs to ~250 tokens: the rule's new-token cap on arith_long is 272 (docs/testbed.md)
ARITH_LONG = ("model=tiny_arith_long", "task=arith_long", "rollout.max_new_tokens=272")
# one update of all the step's rollouts (the rule): under the shared 16 x 8 budget the search recipes' minibatch
# is 128, with their micro-batch of 8
SEARCH = ("model=tiny_search_qa", "task=search_qa_tiny", "batch.minibatch_size=128")
# search_qa_tiny's knowledge base holds 1050 questions and the warm start trained on all but the 128 held out:
# validation on more would score questions it learnt the answers of
SEARCH_HELD_OUT = 128
# GRPO on search: the E-GRPO, EMPG and SALT recipes compose one config under algo=grpo (the same task, turns and
# lengths), so their GRPO arm is one run, made once and read by each claim
SEARCH_GRPO = ("experiment=e_grpo_tiny", "algo=grpo")
SEARCH_GRPO_NOTE = ("GRPO runs in the search recipes' setting with algo=grpo (e_grpo_tiny, empg_tiny and salt_tiny "
                    "compose the same config under algo=grpo: one run, read by each of the three claims).")
# pc_grpo_tiny brings task=puzzles and the RAC monitor; window 1: RAC per step (not a running mean), so a "tail"
# statistic reads the end of training
PUZZLES = ("model=tiny_vl_puzzles", "callbacks.rac_monitor.window=1")


@dataclass(frozen=True)
class Compare:
    """One test of a claim: ``arm`` against ``baseline`` on ``metric``.

    stat: ``final`` (the metric at the last step), ``auc`` (the mean of the metric's curve over the rollouts every
    run of the claim consumed: area under the learning curve against rollouts / rollouts — the sample-efficiency
    statistic), ``tail`` (the mean of a per-step training metric over the last quarter of the steps).
    direction: +1 the paper claims higher, -1 lower. expect: ``better`` (the arm beats the baseline) or ``no_gain``
    (the paper says the arm does NOT beat it). margin: differences inside +-margin count as no difference.
    """
    arm: str
    baseline: str
    label: str
    metric: str = "val/acc"
    stat: str = "final"
    direction: int = 1
    expect: str = "better"
    margin: float = 0.02


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str
    quote: str                              # the claim in the abstract's words
    claim: str                              # what is tested here, in one line
    setting: tuple[str, ...]                # the shared warm start and task (overrides)
    arms: dict[str, tuple[str, ...]]        # arm -> overrides (the first is the paper's method)
    compares: tuple[Compare, ...]
    efficiency: bool = False                # curves against rollouts (the claim is about sample efficiency)
    note: str = ""
    tags: tuple[str, ...] = field(default=())
    held_out: int | None = None             # the task's held-out set, when it caps the budget's validation size


CLAIMS: dict[str, Claim] = {c.key: c for c in [
    Claim("prime", "PRIME — Process Reinforcement through Implicit Rewards (Cui et al., 2025)",
          "dense rewards also offer an appealing choice for the reinforcement learning (RL) of LLMs since their "
          "fine-grained rewards have the potential to address some inherent issues of outcome rewards, such as "
          "training efficiency and credit assignment ... our resulting model, Eurus-2-7B-PRIME, surpasses "
          "Qwen2.5-Math-7B-Instruct on seven reasoning benchmarks with 10% of its training data",
          "implicit process rewards make RL more sample-efficient than outcome-only RLOO (paper: about 2.5x)",
          ARITH, {"prime": ("experiment=prime_tiny",), "rloo": ("experiment=rloo_tiny",)},
          (Compare("prime", "rloo", "mean held-out accuracy over the rollout budget", stat="auc"),),
          efficiency=True,
          note="PRIME refills filtered groups (prime_tiny: one refill round), so it can draw more rollouts a step; "
               "both arms are compared over the rollouts every run consumed."),
    Claim("oreal", "OREAL — Exploring the Limit of Outcome Reward for Learning Mathematical Reasoning (Lyu et al., "
          "2025)",
          "behavior cloning on positive trajectories from best-of-N (BoN) sampling is sufficient to learn the "
          "KL-regularized optimal policy ... the rewards of negative samples should be reshaped ... we further "
          "apply a token-level reward model to sample important tokens in reasoning trajectories for learning",
          "each rung of the ablation ladder adds to the one before: reshaped policy gradient -> + behaviour "
          "cloning on positives -> + token-level reward model",
          ARITH_LONG,
          {"oreal": ("experiment=oreal_tiny", "algo.oreal.pos_mult_adv=false"),
           "oreal_bc": ("experiment=oreal_tiny", "algo.oreal.pos_mult_adv=false", "algo.token_rm.enabled=false",
                        "algo.token_rm.actor_freeze_steps=0"),
           "oreal_shaped": ("experiment=oreal_tiny", "algo.token_rm.enabled=false",
                            "algo.token_rm.actor_freeze_steps=0")},
          (Compare("oreal_bc", "oreal_shaped", "+ behaviour cloning on positives"),
           Compare("oreal", "oreal_bc", "+ token-level reward model")),
          note="Rungs of the paper's Table 2 that steprl can switch: the reshaped (leave-one-out) policy gradient "
               "on both signs (pos_mult_adv=true, no token RM), then plain behaviour cloning on positives "
               "(pos_mult_adv=false), then the token-level RM weights. The un-shaped REINFORCE rung has no switch."),
    Claim("e_grpo", "E-GRPO — Repurposing Synthetic Data for Fine-grained Search Agent Supervision (2025)",
          "E-GRPO consistently and significantly outperforms the GRPO baseline. Furthermore, our analysis reveals "
          "that E-GRPO not only achieves superior accuracy but also induces more efficient reasoning policies that "
          "require fewer tool calls",
          "entity-aware partial credit beats GRPO on search QA and needs fewer tool calls",
          SEARCH, {"e_grpo": ("experiment=e_grpo_tiny",), "grpo": SEARCH_GRPO},
          (Compare("e_grpo", "grpo", "held-out accuracy"),
           Compare("e_grpo", "grpo", "tool calls per episode (last quarter of training)", metric="agent/tool_calls",
                   stat="tail", direction=-1, margin=0.1)),
          note=SEARCH_GRPO_NOTE + " The warm start searches once per hop in every episode (docs/testbed.md), so "
               "tool calls per episode follow the hops of the questions drawn, which a seed fixes for both arms; "
               "fewer calls would mean skipping a hop.",
          held_out=SEARCH_HELD_OUT),
    Claim("ppr", "PPR — Hybrid Reward Normalization for Process-supervised Non-verifiable Agentic Tasks (Xu et al., "
          "2025)",
          "we ... further introduce a Reward Normalization (ReNorm) strategy to calibrate outcome and process "
          "rewards. Experiment results show that PPR achieves state-of-the-art performance",
          "principle process rewards with ReNorm beat outcome-only rewards on search agents; without ReNorm they "
          "do not",
          SEARCH, {"ppr": ("experiment=ppr_tiny",), "ppr_no_renorm": ("experiment=ppr_tiny", "algo.ppr.beta=0"),
                   "ppo": ("experiment=ppo_tiny",)},
          (Compare("ppr", "ppo", "PPR (ReNorm) vs outcome-only PPO"),
           Compare("ppr_no_renorm", "ppo", "PPR without ReNorm (beta = 0) vs outcome-only PPO", expect="no_gain")),
          note="The outcome-only baseline is PPO with its critic (the paper's Search-R1 baseline); "
               "'without ReNorm' keeps r_p + r_o unshifted (beta = 0). The test that reproduces is the negative one "
               "(no gain without ReNorm), and it holds because neither PPR arm beats PPO: ReNorm itself changes "
               "nothing here (0.878 vs 0.875). The principle reward barely separates responses: the rule-based "
               "stand-in for the judge (steprl.tasks.search_qa.principle_judge) scores 0.86-0.87 of the turns "
               "principled over steps 1-10 while 0.53-0.61 of the episodes are correct, and 0.86-0.90 over steps "
               "91-100 (ppr seeds 2-4, ppr_no_renorm seeds 1-4, `ppr/process_reward`), so r_p adds a near-constant "
               "to the outcome; a judge model (judge=hf | openai) may separate more.", held_out=SEARCH_HELD_OUT),
    Claim("tp_grpo", "TP-GRPO — Good Learners Think Their Thinking: Generative PRM Makes Large Reasoning Model More "
          "Efficient Math Learner (2025)",
          "our method achieves higher problem-solving accuracy with significantly fewer training samples than "
          "outcome-only reward baselines",
          "thought-level process rewards reach higher accuracy with fewer samples than outcome-only GRPO",
          ARITH_LONG, {"tp_grpo": ("experiment=tp_grpo_tiny",), "grpo": ("experiment=grpo_tiny",)},
          (Compare("tp_grpo", "grpo", "mean held-out accuracy over the rollout budget", stat="auc"),),
          efficiency=True,
          note="What the difference is made of: GRPO at its paper's defaults loses held-out accuracy on the long "
               "chains while TP-GRPO holds its warm start. In seed 4 (steps 1-10 against 91-100) GRPO's responses "
               "grew from 96 to 135 tokens, the share cut off at 272 tokens from 0.02 to 0.19 and the share of "
               "correct steps from 0.42 to 0.28; TP-GRPO's responses shortened (84 to 68 tokens, none cut off) and "
               "its correct-step share rose from 0.48 to 0.54. The claim's direction reproduces; 'higher accuracy' "
               "here means a smaller loss than GRPO's, not a gain over the warm start."),
    Claim("drm", "DRM — From <Answer> to <Think>: Multidimensional Supervision of Reasoning Process for LLM "
          "Optimization (2025)",
          "DRM provides effective supervision signals, guides the optimization of LLMs and enhances their "
          "reasoning ability",
          "confidence, relevance and coherence supervision improves over outcome-only training",
          ARITH_LONG, {"drm": ("experiment=drm_tiny",), "grpo": ("experiment=grpo_tiny",)},
          (Compare("drm", "grpo", "held-out accuracy"),),
          note="Relevance comes from a trained sentence encoder (all-MiniLM-L6-v2, the steprl[drm] extra; the paper "
               "does not name its encoder); confidence and coherence (the rule judge) are computed as the paper "
               "defines them."),
    Claim("empg", "EMPG — Harnessing Uncertainty: Entropy-Modulated Policy Gradients for Long-Horizon LLM Agents "
          "(2025)",
          "EMPG achieves substantial performance gains and significantly outperforms strong policy gradient "
          "baselines",
          "entropy-modulated gradients beat GRPO on long-horizon agent tasks",
          SEARCH, {"empg": ("experiment=empg_tiny",), "grpo": SEARCH_GRPO},
          (Compare("empg", "grpo", "held-out accuracy"),),
          note=SEARCH_GRPO_NOTE, held_out=SEARCH_HELD_OUT),
    Claim("salt", "SALT — Step-level Advantage Assignment for Long-horizon Agents via Trajectory Graph (2025)",
          "SALT is designed as a plug-and-play module ... introducing negligible computational overhead ... SALT "
          "consistently improves performance",
          "step-level advantages from the trajectory graph improve GRPO at negligible cost",
          SEARCH, {"salt": ("experiment=salt_tiny",), "grpo": SEARCH_GRPO},
          (Compare("salt", "grpo", "held-out accuracy"),
           Compare("salt", "grpo", "extra seconds per RL step (last quarter)", metric="time/step", stat="tail",
                   expect="no_gain", margin=0.1)),
          note=SEARCH_GRPO_NOTE + " SALT is a plug-in on GRPO's advantages. "
               "'Negligible cost': SALT's step time must not exceed GRPO's by more than 0.1 s (the margin); "
               "times are only comparable between runs on the same machine under the same load.",
          held_out=SEARCH_HELD_OUT),
    Claim("propa", "PROPA — Toward Process-level Optimization in Visual Reasoning via Reinforcement Learning (2025)",
          "PROPA consistently outperforms both SFT- and RLVR-based baselines",
          "MCTS process rewards with interleaved SFT beat GRPO and SFT alone",
          ARITH_LONG, {"propa": ("experiment=propa_tiny", "algo.mcts.max_depth=10"), "grpo": ("experiment=grpo_tiny",),
                       "sft": ("experiment=sft_tiny", "batch.minibatch_size=16")},
          (Compare("propa", "grpo", "PROPA vs GRPO"), Compare("propa", "sft", "PROPA vs SFT alone")),
          note="PROPA is a vision-language paper; here its MCTS process rewards and interleaved SFT act on text "
               "arithmetic chains. SFT alone trains on the task's worked solutions (experiment=sft_tiny, from the same "
               "warm start). The search tree is as deep as the longest worked solution (9 reductions and the answer "
               "line: algo.mcts.max_depth=10; the paper's 8 would make every 10-term chain a dead end), as the new "
               "tokens are as many as it needs (rule 3); its simulations get the same 272 tokens. Measured (5 seeds): "
               "PROPA ends a little below the warm start but above GRPO, which falls further; SFT alone gains. Its "
               "trees solve about half of the questions (propa/solved_frac 0.47-0.55 over steps 1-10 and 91-100, "
               "seeds 0, 1, 2, 4) and each step's SFT covers the ~8 unsolved ones (~60 examples); the search's "
               "sibling groups and that SFT do not raise held-out accuracy at this size, where SFT on every "
               "question's worked solution does."),
    Claim("pc_grpo", "PC-GRPO — Puzzle Curriculum GRPO for Vision-Centric Reasoning (2025)",
          "we introduce a difficulty-aware curriculum that dynamically weights samples and peaks at medium "
          "difficulty ... our curriculum delays this decline [of reasoning-answer consistency]",
          "the difficulty curriculum beats flat GRPO on puzzles and keeps reasoning-answer consistency higher",
          PUZZLES, {"pc_grpo": ("experiment=pc_grpo_tiny",),
                    "flat": ("experiment=pc_grpo_tiny", "algo.curriculum.enabled=false")},
          (Compare("pc_grpo", "flat", "held-out puzzle accuracy"),
           Compare("pc_grpo", "flat", "reasoning-answer consistency (RAC, last quarter)", metric="pc_grpo/rac",
                   stat="tail")),
          note="The flat arm is the same recipe with the curriculum weights off (every sample weight 1). The puzzles "
               "are pc_grpo_tiny's: Rotation over upright scenes, the one kind the tiny VL warm start reads from "
               "the image (PatchFit and Jigsaw stay at chance at this size; docs/vision.md). Both arms gain over "
               "the warm start; the curriculum's edge is within the interval."),
]}


@dataclass
class Budget:
    """The shared budget: the `_tiny` recipes' one scale rule (docs/testbed.md, "The tiny recipes: one rule")."""
    steps: int = 100         # the default run's 100 RL steps
    val_every: int = 25
    num_val: int = 512        # s.e. of one accuracy <= 0.022
    prompts: int = 16         # the default run's rollout shape: 16 prompts x G = 8 a step
    samples: int = 8
    threads: int = 1

    def old_shape(self) -> bool:
        """Stored runs made under another rollout shape than the rule's (e.g. the 4 x 4 before the rule)."""
        return (self.prompts, self.samples) != (Budget.prompts, Budget.samples)

    def overrides(self) -> list[str]:
        return [f"batch.prompts_per_step={self.prompts}", f"batch.samples_per_prompt={self.samples}",
                f"trainer.max_steps={self.steps}", f"trainer.val_check_interval={self.val_every}",
                f"task.num_val={self.num_val}", f"torch_threads={self.threads}"]


# what every run adds: csv metrics in its own directory (no shared store to contend for), no checkpoints
PLUMBING = ["logger=csv", "callbacks.model_checkpoint=null", "callbacks.progress_bar=null",
            "++trainer.enable_progress_bar=false"]


def claim_budget(claim: Claim, budget: Budget) -> Budget:
    """The budget a claim's runs get: validation on at most the claim's held-out set (``Claim.held_out``)."""
    if claim.held_out is None or budget.num_val <= claim.held_out:
        return budget
    return dataclasses.replace(budget, num_val=claim.held_out)


def budget_key(claim: Claim, budget: Budget, extra: list[str]) -> str:
    """What must be equal for two runs of a claim to be compared: the setting, the budget and extra overrides."""
    budget = claim_budget(claim, budget)
    return " ".join([*claim.setting, *budget.overrides(), *extra])


def command(claim: Claim, arm: str, seed: int, budget: Budget, extra: list[str], work: Path) -> list[str]:
    if arm not in claim.arms:
        raise KeyError(f"claim {claim.key} has no arm {arm!r}; arms: {sorted(claim.arms)}")
    budget = claim_budget(claim, budget)
    return ["python", "src/train.py", *claim.arms[arm], *claim.setting, *budget.overrides(), *extra,
            f"seed={seed}", *PLUMBING, f"hydra.run.dir={_show(run_dir(work, claim.key, arm, seed))}"]


def _show(path: Path) -> str:
    """A path inside the repository relative to it (the commands run from the repository root)."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


def run_dir(work: Path, claim: str, arm: str, seed: int) -> Path:
    return work / claim / f"{arm}-seed{seed}"


def missing_configs(claim: Claim, extra: list[str] = ()) -> list[str]:
    """The `group=option` overrides of the claim whose conf/<group>/<option>.yaml does not exist."""
    out = []
    for o in [*claim.setting, *extra, *(x for a in claim.arms.values() for x in a)]:
        k, _, v = o.partition("=")
        if k in ("model", "task", "experiment", "algo", "judge", "callbacks") and not (ROOT / "conf" / k /
                                                                                     f"{v}.yaml").exists():
            out.append(o)
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------------- raw data

FIELDS = ["claim", "arm", "seed", "budget", "steps", "rollouts", "seconds", "curves", "command", "commit"]


def code_version(root: Path = ROOT) -> str:
    """The checkout a run measured (``root``'s git work tree): the commit, with `+dirty` when tracked code differs
    from it. Pages (``*.md``) and the CSVs and figures under bench/claims and bench/league are what these scripts
    and their reports write, not code: they do not count (a report written mid-sitting marked every later run
    "+dirty")."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=10", "HEAD") or "unknown"
    docs = [":!*.md", ":!bench/claims", ":!bench/league"]
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ".", *docs) else "")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["seed"], r["steps"] = int(r["seed"]), int(r["steps"])
        r["rollouts"], r["seconds"] = float(r["rollouts"]), float(r["seconds"])
        r["curves"] = json.loads(r["curves"])
        r["commit"] = r.get("commit") or "unknown"
    return rows


def run_key(cmd: str | list[str]) -> tuple[str, ...]:
    """A run's identity: its command without the folder it wrote to. Two claims whose arms have the same
    overrides, setting, budget and seed ask for the same run (GRPO on arith_long is the baseline of TP-GRPO, DRM
    and PROPA), which is then made once."""
    toks = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return tuple(t for t in toks if not t.startswith("hydra.run.dir="))


def claim_rows(claim: Claim, data: Path, budget: Budget | None = None, extra: list[str] = ()) -> list[dict]:
    """The claim's own rows plus the runs other claims stored that are exactly one of its arms (see ``run_key``),
    relabelled to this claim and arm, with ``shared_from`` naming the claim whose CSV holds them. ``budget`` and
    ``extra``: the claim's budget (default: that of its own first row, or the rule's)."""
    own = read_rows(data / f"{claim.key}.csv")
    if budget is None:
        budget, extra = budget_from_row(own[0]) if own else (Budget(), [])
    have = {(r["arm"], r["seed"]) for r in own}
    shared = []
    for path in sorted(data.glob("*.csv")):
        if path.stem == claim.key or path.stem not in CLAIMS:
            continue
        for r in read_rows(path):
            for arm in claim.arms:
                if (arm, r["seed"]) not in have and \
                        run_key(r["command"]) == run_key(command(claim, arm, r["seed"], budget, list(extra), Path("."))):
                    shared.append({**r, "claim": claim.key, "arm": arm, "shared_from": r["claim"]})
                    have.add((arm, r["seed"]))
    return own + shared


def append_row(path: Path, row: dict) -> None:
    """Append one run's row, holding an exclusive lock on the file, so that several runner processes (two
    sittings of the league, or claims beside it) can share a CSV: the header is written once and rows never
    interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=FIELDS).writerow({**row, "curves": json.dumps(row["curves"], separators=(",", ":"))})
    with open(path, "a+", newline="") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        header = next(csv.reader(fh), None)
        if header is None:
            csv.writer(fh).writerow(FIELDS)
        elif header != FIELDS:
            raise SystemExit(f"{path}: its columns {header} are not this script's {FIELDS}; move it aside and rerun")
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def collect(claim: Claim, arm: str, seed: int, rdir: Path, budget_str: str, cmd: list[str], seconds: float) -> dict:
    """A claim's result row from a finished run (``run_row`` with the metrics its tests read)."""
    return run_row(claim.key, arm, seed, rdir, budget_str, cmd, seconds, {c.metric for c in claim.compares})


def run_row(name: str, arm: str, seed: int, rdir: Path, budget_str: str, cmd: list[str], seconds: float,
            metrics=()) -> dict:
    """A result row from a finished run's csv log: the curve [[step, value], ...] of ``metrics``, ``val/acc``,
    ``train/acc`` and ``time/step``, and the cumulative rollouts at every step ("rollouts": [[step, n], ...];
    `filter/groups` x G where the algorithm logs the groups it generated, refills included, else prompts x G)."""
    import yaml

    m = read_metrics_csv(rdir / "csv" / "metrics.csv")
    cfg = yaml.safe_load((rdir / ".hydra" / "config.yaml").read_text())
    P, G = int(cfg["batch"]["prompts_per_step"]), int(cfg["batch"]["samples_per_prompt"])
    steps = int(cfg["trainer"]["max_steps"])
    last = max((s for v in m.values() for s in v), default=0)
    if "val/acc" not in m or steps not in m["val/acc"] or last < steps:
        raise RuntimeError(f"{rdir}: the run did not reach step {steps} with a val/acc (last step logged: {last})")
    groups = m.get("filter/groups", {})
    cum, roll = 0.0, [[0, 0.0]]
    for s in range(1, steps + 1):
        cum += groups.get(s, P) * G
        roll.append([s, cum])
    wanted = set(metrics) | {"val/acc", "time/step", "train/acc"}
    curves = {k: sorted([s, v] for s, v in m[k].items()) for k in sorted(wanted) if k in m}
    curves["rollouts"] = roll
    return {"claim": name, "arm": arm, "seed": seed, "budget": budget_str, "steps": steps, "rollouts": cum,
            "seconds": round(seconds, 1), "curves": curves, "command": shlex.join(cmd),
            "commit": code_version()}


# --------------------------------------------------------------------------------------------------- statistics

def verdict(lo: float, hi: float, direction: int = 1, expect: str = "better", margin: float = 0.02) -> str:
    """The verdict on a difference (arm - baseline) whose confidence interval is [lo, hi].

    expect=better: ``reproduced`` if the interval excludes 0 on the claimed side; ``not reproduced`` if it excludes
    0 on the other side, or lies within [-margin, margin] (no difference worth the name); else ``inconclusive``.
    expect=no_gain (the paper says the arm does not beat the baseline): ``reproduced`` if the interval's claimed-side
    end is below the margin; ``not reproduced`` if it excludes 0 on the claimed side (the arm does beat it); else
    ``inconclusive``."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if lo > hi:
        raise ValueError(f"confidence interval with lo {lo} > hi {hi}")
    lo, hi = (lo, hi) if direction == 1 else (-hi, -lo)
    if expect == "better":
        if lo > 0:
            return "reproduced"
        if hi < 0 or (lo >= -margin and hi <= margin):
            return "not reproduced"
        return "inconclusive"
    if expect == "no_gain":
        if hi <= margin:
            return "reproduced"
        if lo > 0:
            return "not reproduced"
        return "inconclusive"
    raise ValueError(f"expect must be 'better' or 'no_gain', got {expect!r}")


def claim_verdict(verdicts: list[str]) -> str:
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced" if not any(v == "reproduced" for v in verdicts) else "partly reproduced"
    return "inconclusive"


def curve(row: dict, metric: str, x: str = "step") -> list[tuple[float, float]]:
    """The metric's points [(x, value)], x = step or rollouts consumed by that step."""
    pts = row["curves"].get(metric)
    if not pts:
        raise KeyError(f"run {row['arm']} seed {row['seed']} of {row['claim']} logged no {metric!r}")
    if x == "step":
        return [(float(s), v) for s, v in pts]
    roll = dict(row["curves"]["rollouts"])
    return [(roll[s], v) for s, v in pts]


def statistic(row: dict, c: Compare, common_rollouts: float) -> float:
    if c.stat == "final":
        pts = curve(row, c.metric)
        return pts[-1][1]
    if c.stat == "auc":
        return mean_over(curve(row, c.metric, "rollouts"), common_rollouts)
    if c.stat == "tail":
        pts = curve(row, c.metric)
        start = row["steps"] - row["steps"] // 4
        vals = [v for s, v in pts if s > start]
        if not vals:
            raise ValueError(f"{row['claim']} {row['arm']} seed {row['seed']}: no {c.metric} after step {start}")
        return sum(vals) / len(vals)
    raise ValueError(f"unknown stat {c.stat!r} (final | auc | tail)")


def analyse(claim: Claim, rows: list[dict]) -> dict:
    """Per comparison: the per-seed statistics of both arms, the difference's 95 % CI (paired over shared seeds,
    else Welch), the verdict; plus whether the claim is complete (every arm with >= MIN_SEEDS seeds)."""
    by_arm: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    counts = {a: len(by_arm.get(a, {})) for a in claim.arms}
    complete = all(n >= MIN_SEEDS for n in counts.values())
    common = min((r["rollouts"] for r in rows), default=0.0)
    out = {"complete": complete, "counts": counts, "common_rollouts": common, "compares": []}
    if not complete:
        return out
    for c in claim.compares:
        a = {s: statistic(r, c, common) for s, r in by_arm[c.arm].items()}
        b = {s: statistic(r, c, common) for s, r in by_arm[c.baseline].items()}
        shared = set(a) & set(b)
        if len(shared) >= 2:
            d, lo, hi, n = paired_ci(a, b, LEVEL)
            how = f"paired over {n} seeds"
        else:
            d, lo, hi = welch_ci(list(a.values()), list(b.values()), LEVEL)
            how = "Welch, unpaired"
        out["compares"].append({"compare": c, "arm": a, "base": b, "diff": d, "lo": lo, "hi": hi, "how": how,
                                "verdict": verdict(lo, hi, c.direction, c.expect, c.margin)})
    out["verdict"] = claim_verdict([x["verdict"] for x in out["compares"]])
    if claim.efficiency:
        out["reach"] = reach_ratio(claim, by_arm)
    return out


def mean_curve(runs: list[dict], metric: str, x: str) -> list[tuple[float, float, float, float]]:
    """[(x, mean, ci_lo, ci_hi)] over the runs: on x = step at the logged steps; on x = rollouts at the union of the
    runs' points up to the fewest rollouts any of them consumed (every run covers every point), each run linearly
    interpolated."""
    cs = [curve(r, metric, x) for r in runs]
    xs = sorted({p[0] for c in cs for p in c})
    if x == "rollouts":
        xs = [xv for xv in xs if xv <= min(c[-1][0] for c in cs)]
    out = []
    for xv in xs:
        vals = [interp(c, xv) for c in cs] if x == "rollouts" else [dict(c)[xv] for c in cs if xv in dict(c)]
        if not vals:
            continue
        if len(vals) >= 2:
            m, lo, hi = t_ci(vals, LEVEL)
        else:
            m = lo = hi = vals[0]
        out.append((xv, m, lo, hi))
    return out


def reach_ratio(claim: Claim, by_arm: dict) -> list[str]:
    """Descriptive (no CI): rollouts the arm's mean curve needs to reach the baseline's final mean value, against
    the baseline's rollouts (the paper's 'x times more sample-efficient')."""
    lines = []
    for c in claim.compares:
        if c.stat != "auc":
            continue
        arm = [(x, m) for x, m, _, _ in mean_curve(list(by_arm[c.arm].values()), c.metric, "rollouts")]
        base = [(x, m) for x, m, _, _ in mean_curve(list(by_arm[c.baseline].values()), c.metric, "rollouts")]
        target, have = base[-1][1], base[-1][0]
        need = rollouts_to_reach(arm, target)
        if target <= base[0][1]:
            lines.append(f"{c.baseline} ended at or below its start ({target:.3f}), so no sample-efficiency ratio "
                         f"is defined.")
        elif need is None:
            lines.append(f"{c.arm}'s mean curve never reached {c.baseline}'s final mean {target:.3f} "
                         f"({have:.0f} rollouts).")
        else:
            lines.append(f"{c.arm}'s mean curve reached {c.baseline}'s final mean {target:.3f} after {need:.0f} "
                         f"rollouts vs {have:.0f}: {have / max(need, 1):.2f}x.")
    return lines


# ------------------------------------------------------------------------------------------- figure and docs

def figure(claim: Claim, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(c.metric for c in claim.compares))
    x = "rollouts" if claim.efficiency else "step"
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for arm in claim.arms:
            runs = [r for r in rows if r["arm"] == arm]
            if not runs:
                continue
            pts = mean_curve(runs, metric, x)
            xs = [p[0] for p in pts]
            (line,) = ax.plot(xs, [p[1] for p in pts], marker="o", ms=3, label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], color=line.get_color(), alpha=0.15)
        if x == "rollouts" and any(c.stat == "auc" and c.metric == metric for c in claim.compares):
            ax.axvline(min(r["rollouts"] for r in rows), color="grey", ls=":", lw=1,
                       label="the tests compare up to here")
        ax.set_xlabel("rollouts consumed" if x == "rollouts" else "RL step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{claim.key}: mean over seeds, band = 95% t-interval"
                 + ("\n(each arm up to the fewest rollouts one of its seeds drew)" if x == "rollouts" else ""),
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_cmd(claim: Claim, seeds: list[int], budget: Budget, extra: list[str]) -> str:
    parts = ["nice -n 10 python bench/claims.py", f"--claims {claim.key}", f"--seeds {','.join(map(str, seeds))}",
             f"--steps {budget.steps}", f"--val-every {budget.val_every}", f"--num-val {budget.num_val}"]
    return " ".join(parts + ([shlex.join(["--", *extra])] if extra else []))


def doc_row(claim: Claim, rows: list[dict], res: dict | None, cmd: str, fig: str, budget: Budget) -> str:
    budget = claim_budget(claim, budget)
    exp = (f"{' vs '.join(f'`{a}`' for a in claim.arms)} on `{' '.join(claim.setting)}`; {budget.steps} RL steps "
           f"× {budget.prompts}×{budget.samples} rollouts, greedy val on {budget.num_val}")
    if rows and budget.old_shape():
        exp += f" — **{old_shape(budget)}**"
    if not rows:
        miss = missing_configs(claim)
        needs = f" (needs {', '.join(f'`{m}`' for m in miss)}, not in conf/ yet)" if miss else ""
        return (f"| {claim.paper.split(' — ')[0]} | \"{claim.quote}\" | {exp} | not yet run{needs}: `{cmd}` "
                f"| — | — |")
    if not res["complete"]:
        have = ", ".join(f"{a} {n}" for a, n in res["counts"].items())
        return (f"| {claim.paper.split(' — ')[0]} | \"{claim.quote}\" | {exp} | incomplete ({have} of {MIN_SEEDS} "
                f"seeds each; not a result) — finish with `{cmd}` | — | — |")
    cells = [f"{x['compare'].label}: {x['diff']:+.3f} [{x['lo']:+.3f}, {x['hi']:+.3f}] → {x['verdict']}"
             for x in res["compares"]]
    return (f"| {claim.paper.split(' — ')[0]} | \"{claim.quote}\" | {exp} | {'<br>'.join(cells)} | "
            f"**{res['verdict']}** | [figure]({fig}) |")


def detail(claim: Claim, rows: list[dict], res: dict | None, cmd: str, fig: str) -> list[str]:
    L = [f"### {claim.paper}", "", f"> {claim.quote}", "", f"Tested: {claim.claim}.", "",
         f"Setting (every arm): `{' '.join(claim.setting)}`.", ""]
    for arm, ov in claim.arms.items():
        L.append(f"- `{arm}`: `{' '.join(ov)}`")
    for c in claim.compares:
        L.append(f"- test: `{c.arm}` − `{c.baseline}` on `{c.metric}` ({c.stat}); the paper's claim: "
                 f"{claimed(c)}; margin {c.margin}")
    if claim.note:
        L += ["", claim.note]
    L += ["", f"Command: `{cmd}`", ""]
    if rows:
        L += [f"Code measured: commit {', '.join(sorted({r['commit'] for r in rows}))}.", ""]
        shared = sorted({(r["arm"], r["shared_from"]) for r in rows if r.get("shared_from")})
        if shared:
            L += ["Shared runs (the same command, made once): " + "; ".join(
                f"`{arm}` is `bench/claims/{src}.csv`'s runs of it" for arm, src in shared) + ".", ""]
        if (ob := budget_from_row(rows[0])[0]).old_shape():
            L += [f"**{old_shape(ob)}**: these runs are kept as they were measured; the rule's budget is "
                  f"{Budget.prompts} prompts × G = {Budget.samples} a step, {Budget.steps} RL steps, greedy val on "
                  f"{Budget.num_val} every {Budget.val_every} (move `bench/claims/{claim.key}.csv` away to rerun "
                  "at it).", ""]
    if rows and res and res["complete"]:
        b = rows[0]
        L += [f"Runs: {len(rows)} ({', '.join(f'{a}: {n} seeds' for a, n in res['counts'].items())}); budget "
              f"`{b['budget']}`; {b['steps']} RL steps; rollouts per run "
              f"{min(r['rollouts'] for r in rows):.0f}–{max(r['rollouts'] for r in rows):.0f}"
              + (f"; `auc` compares the curves over the first {res['common_rollouts']:.0f} rollouts" if
                 any(c.stat == "auc" for c in claim.compares) else "") + ".", "",
              "| test | arm mean ± sd | baseline mean ± sd | difference [95% CI] | how | verdict |",
              "|---|---|---|---|---|---|"]
        for x in res["compares"]:
            (ma, sa), (mb, sb) = mean_std(list(x["arm"].values())), mean_std(list(x["base"].values()))
            L.append(f"| {x['compare'].label} | {ma:.3f} ± {sa:.3f} | {mb:.3f} ± {sb:.3f} | {x['diff']:+.3f} "
                     f"[{x['lo']:+.3f}, {x['hi']:+.3f}] | {x['how']} | {x['verdict']} |")
        L += ["", "| arm | warm-start val/acc | final val/acc (mean ± sd) | seconds per run |", "|---|---|---|---|"]
        for arm in claim.arms:
            rs = [r for r in rows if r["arm"] == arm]
            w = mean_std([curve(r, "val/acc")[0][1] for r in rs])
            f = mean_std([curve(r, "val/acc")[-1][1] for r in rs])
            secs = mean_std([r["seconds"] for r in rs])[0]
            L.append(f"| `{arm}` | {w[0]:.3f} | {f[0]:.3f} ± {f[1]:.3f} | {secs:.0f} |")
        below = [arm for arm in claim.arms if final_gain(rows, arm) < 0]
        if len(below) == len(claim.arms):
            L += ["", "**Every arm ends below its warm start** at this budget: the recipes do not learn here, so the "
                  "test compares degrading runs and says little about the regime the paper reports on."]
        elif below:
            L += ["", f"Ending below the warm start: {', '.join(f'`{a}`' for a in below)}."]
        if res.get("reach"):
            L += [""] + [f"Descriptive (mean curves, no interval): {s}" for s in res["reach"]]
        L += ["", f"![{claim.key}]({fig})", ""]
    elif rows:
        L += ["Incomplete: " + ", ".join(f"{a} {n}" for a, n in res["counts"].items())
              + f" of {MIN_SEEDS} seeds; no numbers are reported until every arm has them.", ""]
    else:
        miss = missing_configs(claim)
        L += ["Not yet run." + (f" Needs {', '.join(f'`{m}`' for m in miss)} (not on this branch yet)." if miss
                                else ""), ""]
    return L


def claimed(c: Compare) -> str:
    """The claim a test checks, as an inequality."""
    if c.expect == "better":
        return f"{c.arm} {'>' if c.direction > 0 else '<'} {c.baseline}"
    return (f"{c.arm} ≤ {c.baseline} + margin" if c.direction > 0 else f"{c.arm} ≥ {c.baseline} − margin")


def final_gain(rows: list[dict], arm: str) -> float:
    """Mean over the arm's seeds of final minus warm-start val/acc."""
    rs = [r for r in rows if r["arm"] == arm]
    return mean_std([curve(r, "val/acc")[-1][1] - curve(r, "val/acc")[0][1] for r in rs])[0]


def old_shape(b: Budget) -> str:
    return f"old shape ({b.prompts} prompts × G = {b.samples} a step, before the `_tiny` recipes' scale rule)"


HEADER = """# The papers' claims in miniature

Each seed paper makes one headline claim about process or dense rewards. `bench/claims.py` tests each in
miniature: every arm of a claim starts from the same warm start, on the same task, with the same rollout budget
(the `*_tiny` recipes' one scale rule, [testbed.md](testbed.md#the-tiny-recipes-one-rule): 16 prompts × G = 8
rollouts a step, one optimiser update of them all, 100 RL steps, greedy validation on 512 held-out problems every
25 steps; 48 new tokens on `arith`, 272 on `arith_long`), for at least 5 seeds (seed s of every arm shares its data
order and initial sampling seed, so differences are paired per seed). Each arm is a list of Hydra overrides — the
algorithm's `experiment=<algo>_tiny` recipe plus, for an ablation, the one switch the ablation is about; no arm is
tuned alone. The recipes keep each paper's defaults (`algo=<algo>`) at the policy learning rate 3e-5; an auxiliary
model learns at the paper's ratio to it (PRIME's PRM 2×, OREAL's token RM 4×, a PPO critic 10×). The claim's warm
start, task and budget are then set on every arm alike. The baseline is the method the paper compares against;
a baseline that is the same run in several claims (GRPO on `arith_long` for TP-GRPO, DRM and PROPA: the same
command, seed for seed) is made once and read by each.
Runs stored under an older shape keep their numbers and say so.

**Statistic.** Held-out greedy accuracy (`val/acc`) at the last step, unless the claim is about sample efficiency:
then the mean of the accuracy curve over the rollouts every run consumed (area under the curve against rollouts,
divided by the rollouts; an arm that draws more rollouts a step is compared at equal rollouts), and the figure plots
against rollouts. E-GRPO's second test counts tool calls, PC-GRPO's second test reads reasoning-answer consistency.

**Verdict.** The 95 % Student-t interval of the per-seed difference (arm − baseline; Welch's interval if arms
share fewer than 2 seeds): **reproduced** if it excludes 0 in the direction the paper claims; **not reproduced** if
it excludes 0 in the other direction, or lies within the stated margin (±0.02 accuracy unless said) — no difference
worth the name; otherwise **inconclusive at this scale**. Where the paper says an arm does *not* beat the baseline
(PPR without ReNorm) or costs no more than it (SALT's step time): reproduced if the interval's upper end is within the
margin, not reproduced if the interval excludes 0 upward, else inconclusive. A claim of several tests is
reproduced if all are, not reproduced if none is and one is not, partly reproduced if some are and some are not.
A claim with fewer than 5 seeds in any arm shows no numbers.

Raw per-run data (one row per run, with the command that made it): `bench/claims/<claim>.csv`. Regenerate this
page from them with `python bench/claims.py --report`.

| paper | claim (the abstract's words) | experiment | result: difference [95% CI] → verdict | verdict | figure |
|---|---|---|---|---|---|
"""


def write_docs(budget: Budget, seeds: list[int], extra: list[str], data: Path = DATA, doc: Path = DOC) -> str:
    rows_md, details = [], []
    for claim in CLAIMS.values():
        rows = claim_rows(claim, data)
        fig = os.path.relpath(data / f"{claim.key}.png", doc.parent)
        res = analyse(claim, rows) if rows else None
        b, ex = (budget, extra)
        if rows:   # the command that continues / reproduces the stored runs
            b, ex = budget_from_row(rows[0])
        cmd = run_cmd(claim, seeds, b, ex)
        rows_md.append(doc_row(claim, rows, res, cmd, fig, b))
        details += detail(claim, rows, res, cmd, fig)
        if rows:
            figure(claim, rows, data / f"{claim.key}.png")
    text = HEADER + "\n".join(rows_md) + "\n\n## The claims one by one\n\n" + "\n".join(details).rstrip() + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


def budget_from_row(row: dict) -> tuple[Budget, list[str]]:
    """The Budget and extra overrides a stored run used (inverse of budget_key, after the claim's setting)."""
    claim = CLAIMS[row["claim"]]
    toks = row["budget"].split()[len(claim.setting):]
    keys = {"batch.prompts_per_step": "prompts", "batch.samples_per_prompt": "samples", "trainer.max_steps": "steps",
            "trainer.val_check_interval": "val_every", "task.num_val": "num_val", "torch_threads": "threads"}
    b, extra = Budget(), []
    for t in toks:
        k, _, v = t.partition("=")
        if k in keys:
            setattr(b, keys[k], int(v))
        else:
            extra.append(t)
    return b, extra


# --------------------------------------------------------------------------------------------------------- main

def add_run_args(p: argparse.ArgumentParser, budget: Budget, seeds: str, name: str) -> None:
    """The options every batch of training runs takes (claims, league): seeds, budget, parallelism, folders."""
    p.add_argument("--seeds", default=seeds)
    p.add_argument("--steps", type=int, default=budget.steps)
    p.add_argument("--val-every", type=int, default=budget.val_every)
    p.add_argument("--num-val", type=int, default=budget.num_val)
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                   help="runs at once, each with torch_threads=1 (default: one per core)")
    p.add_argument("--work", default=f"outputs/{name}", help="folder for the runs' own output (csv logs, hydra)")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the runs still to do")


def parse_run_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[list[int], Budget, Path]:
    """The seeds, budget and work folder of ``add_run_args``'s options; bad values are named (``p.error``)."""
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be a comma list of integers, got {a.seeds!r}")
    if a.steps < 1 or a.val_every < 1 or a.num_val < 1 or a.jobs < 1:
        p.error("--steps, --val-every, --num-val and --jobs must be positive")
    if a.steps % a.val_every:
        p.error(f"--steps ({a.steps}) must be a multiple of --val-every ({a.val_every}) so the last step is evaluated")
    work = Path(a.work) if Path(a.work).is_absolute() else ROOT / a.work
    return seeds, Budget(a.steps, a.val_every, a.num_val), work


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--claims", default=",".join(CLAIMS), help=f"comma list of {', '.join(CLAIMS)}")
    add_run_args(p, Budget(), "0,1,2,3,4", "claims")
    p.add_argument("--data", default=str(DATA), help="folder of the raw CSVs and figures")
    p.add_argument("--doc", default=str(DOC), help="the markdown page to write")
    p.add_argument("--report", action="store_true", help="only redraw the figures and docs/claims.md")
    p.add_argument("extra", nargs="*", help="more Hydra overrides for every run (after --)")
    a = p.parse_args(argv)
    keys = [k for k in a.claims.split(",") if k]
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown:
        p.error(f"unknown claims {unknown}; choose from {', '.join(CLAIMS)}")
    seeds, budget, work = parse_run_args(p, a)
    data, doc = Path(a.data).resolve(), Path(a.doc).resolve()
    if a.report:
        write_docs(budget, seeds, a.extra, data, doc)
        print(f"[claims] wrote {doc} and the figures in {data}")
        return 0
    todo = []
    for k in keys:
        claim = CLAIMS[k]
        bkey = budget_key(claim, budget, a.extra)
        rows = read_rows(data / f"{k}.csv")
        other = {r["budget"] for r in rows} - {bkey}
        rows += claim_rows(claim, data, budget, a.extra)[len(rows):]    # runs another claim made of one of its arms
        if other:
            raise SystemExit(f"{data / k}.csv holds runs with another setting/budget ({sorted(other)[0]!r}), "
                             f"not {bkey!r}: rerun with the same --steps/--val-every/--num-val/overrides, or move "
                             f"the CSV away to start afresh")
        done = {(r["arm"], r["seed"]) for r in rows}
        todo += [(claim, arm, s, bkey) for s in seeds for arm in claim.arms if (arm, s) not in done]
    seen = set()     # a run two claims ask for in this call is made once (the other claim reads it: claim_rows)
    todo = [t for t in todo if not (k := run_key(command(t[0], t[1], t[2], budget, a.extra, work))) in seen
            and not seen.add(k)]
    if a.dry_run:
        for claim, arm, s, _ in todo:
            print(shlex.join(command(claim, arm, s, budget, a.extra, work)))
        return 0
    missing = {c.key: missing_configs(c, a.extra) for c, *_ in todo}
    missing = {k: v for k, v in missing.items() if v}
    if missing:
        raise SystemExit("cannot run: " + "; ".join(f"claim {k} needs {', '.join(v)} (no such config in conf/)"
                                                   for k, v in missing.items()))
    failures = run_all(todo, budget, a.extra, work, a.jobs, data)
    write_docs(budget, seeds, a.extra, data, doc)
    print(f"[claims] wrote {doc}; raw data and figures in {data}")
    if failures:
        print("[claims] failed runs (no row written; rerun to retry):\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


@dataclass
class Job:
    """One training run: its command, its own folder, the CSV its row goes to and how to make the row from the
    finished run (``row(seconds)``; raises if the run's log is unusable)."""
    label: str
    cmd: list[str]
    rdir: Path
    csv: Path
    row: Callable[[float], dict]


def run_jobs(jobs: list[Job], n_jobs: int, desc: str) -> list[str]:
    """Run ``jobs`` through ``src/train.py``, ``n_jobs`` at once, each logging to ``<rdir>/train.log``; a finished
    run's row is appended to its CSV at once (so an interrupted batch keeps what finished). Returns the failures."""
    from tqdm import tqdm

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}

    def one(job: Job):
        shutil.rmtree(job.rdir, ignore_errors=True)   # what an interrupted attempt left: its logs would mix in
        job.rdir.mkdir(parents=True)
        t0 = time.perf_counter()
        with open(job.rdir / "train.log", "w") as log:
            rc = subprocess.run([sys.executable, *job.cmd[1:]], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = (job.rdir / "train.log").read_text().splitlines()[-5:]
            raise RuntimeError(f"exit {rc} (log {job.rdir / 'train.log'}): " + " | ".join(tail))
        return job.row(time.perf_counter() - t0)

    failures = []
    with tqdm(total=len(jobs), desc=desc, unit="run") as bar, ThreadPoolExecutor(n_jobs) as pool:
        futs = {pool.submit(one, job): job for job in jobs}
        for fut in as_completed(futs):
            job = futs[fut]
            try:
                append_row(job.csv, fut.result())
                ok = True
            except Exception as e:   # the run failed, or finished but left no usable log
                failures.append(f"{job.label}: {e}")
                ok = False
            bar.set_postfix_str(f"{job.label} {'ok' if ok else 'FAILED'}")
            bar.update(1)
    return failures


def run_all(todo: list, budget: Budget, extra: list[str], work: Path, jobs: int, data: Path = DATA) -> list[str]:
    """Run the claims' runs still to do (``todo``: (claim, arm, seed, budget key) tuples)."""
    def job(claim: Claim, arm: str, seed: int, bkey: str) -> Job:
        cmd = command(claim, arm, seed, budget, extra, work)
        rdir = run_dir(work, claim.key, arm, seed)
        return Job(f"{claim.key}/{arm}/seed{seed}", cmd, rdir, data / f"{claim.key}.csv",
                   lambda secs: collect(claim, arm, seed, rdir, bkey, cmd, secs))

    return run_jobs([job(*t) for t in todo], jobs, "claim runs")


if __name__ == "__main__":
    sys.exit(main())
