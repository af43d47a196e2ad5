"""EMPG and SALT modules on hand-built rollouts: agent-layout turns with observation tokens (loss_mask 0),
the spec's hand cases carried through to the tokens, and EMPG's corridor toy (spec §1.8.4)."""
from __future__ import annotations

import pytest
import torch

from steprl.algos.step import Step
from steprl import core
from steprl.algos.base import Rewards
from steprl.config import ConfigError
from steprl.rollout.types import Rollouts
from steprl.train import build
from tests.helpers import compose_train


def _module(algo, tmp_path, *extra):
    cfg = compose_train([f"experiment={algo}_tiny", "logger=none", "callbacks.progress_bar=null", *extra], tmp_path)
    return build(cfg)[0]


def agent_rollouts(tok, episodes: list[list[tuple[str, str]]], group_ids: list[int]) -> Rollouts:
    """Each episode is a list of (assistant turn, observation) pairs; observation tokens get loss_mask 0 and
    step id -1, turn k's tokens get step id k."""
    rows = []
    for ep in episodes:
        ids, lm, st = [], [], []
        for k, (turn, obs) in enumerate(ep):
            t = tok(turn, add_special_tokens=False)["input_ids"]
            ids += t
            lm += [1] * len(t)
            st += [k] * len(t)
            if obs:
                o = tok(obs, add_special_tokens=False)["input_ids"]
                ids += o
                lm += [0] * len(o)
                st += [-1] * len(o)
        ids.append(tok.eos_token_id)
        lm.append(1)
        st.append(-1)  # EOS: no step id, joins the last turn
        rows.append((ids, lm, st))
    T = max(len(r[0]) for r in rows)
    pad = lambda xs, v: xs + [v] * (T - len(xs))  # noqa: E731
    resp = torch.tensor([pad(r[0], tok.pad_token_id) for r in rows])
    rmask = torch.tensor([pad([1] * len(r[0]), 0) for r in rows])
    n = len(rows)
    prompt = torch.tensor([tok("Q:", add_special_tokens=False)["input_ids"]] * n)
    return Rollouts(prompt_ids=prompt, prompt_mask=torch.ones_like(prompt), response_ids=resp,
                    response_mask=rmask, loss_mask=torch.tensor([pad(r[1], 0) for r in rows]),
                    step_ids=torch.tensor([pad(r[2], -1) for r in rows]), group_ids=torch.tensor(group_ids),
                    sample_idx=torch.tensor(group_ids), texts=[""] * n, finish_reason=["stop"] * n)


def rewards(xs):
    r = torch.tensor(xs, dtype=torch.float)
    return Rewards(outcome=r, correct=r)


# the SALT hand example as agent episodes: turn text = action, observation = next state
HAND = [[("go a", "[s1]"), ("go b", "[s2]"), ("go c", "[win]")],
        [("go a", "[s1]"), ("go d", "[s3]"), ("go e", "[win]")],
        [("go a", "[s1]"), ("go b", "[s2]"), ("go f", "[lose]")],
        [("go g", "[s4]"), ("go h", "[lose]")]]
A = 0.8660


def _per_turn(ro, adv):
    """Advantage of each turn (asserting it is constant over the turn's tokens) and of the observation tokens."""
    out = []
    for r in range(len(ro)):
        turns = {}
        for t in range(ro.response_ids.shape[1]):
            if ro.response_mask[r, t] and not ro.loss_mask[r, t]:
                assert float(adv[r, t]) == 0.0  # observation tokens never get an advantage
            s = int(ro.step_ids[r, t])
            if s >= 0:
                turns.setdefault(s, set()).add(round(float(adv[r, t]), 4))
        assert all(len(v) == 1 for v in turns.values())
        out.append([v.pop() for _, v in sorted(turns.items())])
    return out


def test_salt_on_agent_turns_hand_example(tmp_path):
    m = _module("salt", tmp_path)
    ro = agent_rollouts(m.tokenizer, HAND + HAND, [0, 0, 0, 0, 1, 1, 1, 1])  # two groups never merge across
    adv, _ = m.advantages(Step([], ro, rewards([1, 1, 0, 0, 0, 0, 1, 1])))
    got = _per_turn(ro, adv)
    a = pytest.approx
    assert got[0] == a([0.2887, 0.0, A], abs=1e-3) and got[1] == a([0.2887, A, A], abs=1e-3)
    assert got[2] == a([0.2887, 0.0, -A], abs=1e-3) and got[3] == a([-A, -A], abs=1e-3)
    assert got[4] == a([-0.2887, 0.0, -A], abs=1e-3) and got[7] == a([A, A], abs=1e-3)
    # the EOS token joins its episode's last turn
    last = int(ro.response_mask[0].sum()) - 1
    assert float(adv[0, last]) == pytest.approx(A, abs=1e-3)
    assert m.metrics.peek()["salt/merged_frac"] > 0


def test_salt_action_regex_and_full_prefix(tmp_path):
    m = _module("salt", tmp_path, "algo.salt.action_regex='go ([a-z])'", "algo.salt.state_key=full_prefix")
    eps = [[("think x. go a", "[s1]"), ("go z", "[s5]")],
           [("think y. go a", "[s1]"), ("go b", "[s2]")],
           [("think x. go a", "[s9]"), ("go b", "[s2]")]]
    ro = agent_rollouts(m.tokenizer, eps, [0, 0, 0])
    adv, _ = m.advantages(Step([], ro, rewards([1, 0, 0])))
    got = _per_turn(ro, adv)
    base = core.grpo_advantage(torch.tensor([1.0, 0, 0]), torch.zeros(3, dtype=torch.long)).tolist()
    # turn 1 of ep 0/1 merge (same parsed action, same next observation; the thoughts differ); ep 2 lands on s9
    assert got[0][0] == pytest.approx((base[0] + base[1]) / 2, abs=1e-3) == got[1][0]
    assert got[2][0] == pytest.approx(base[2], abs=1e-3)
    # "go b" from s2 after different prefixes: a tree does not merge them
    assert got[1][1] == pytest.approx(base[1], abs=1e-3) and got[2][1] == pytest.approx(base[2], abs=1e-3)


ARITH = [[("3+4-2=7-2\n", ""), ("7-2=5\n", ""), ("#### 5", "")],
         [("3+4-2=7-2\n", ""), ("7-2=4\n", ""), ("#### 4", "")],
         [("3+4-2=3+2\n", ""), ("3+2=5\n", ""), ("#### 5", "")],
         [("3+4-2=7-2\n", ""), ("7-2=5\n", ""), ("#### 5", "")]]


def test_salt_on_text_steps_and_lam_zero_is_grpo(tmp_path):
    """Text-only steps (arith lines): the state after a step is its text, so identical lines after identical
    lines merge; the final "#### 5" lines of τ1 and τ3 follow different lines and stay apart."""
    m = _module("salt", tmp_path)
    ro = agent_rollouts(m.tokenizer, ARITH, [0, 0, 0, 0])
    rw = rewards([1, 0, 1, 1])
    base = core.grpo_advantage(rw.outcome, ro.group_ids).tolist()
    got = _per_turn(ro, m.advantages(Step([], ro, rw))[0])
    a = pytest.approx
    assert got[0][0] == a((base[0] + base[1] + base[3]) / 3, abs=1e-3) == got[1][0] == got[3][0]
    assert got[2] == a([base[2]] * 3, abs=1e-3)
    assert got[0][1:] == a([(base[0] + base[3]) / 2] * 2, abs=1e-3) and got[1][1:] == a([base[1]] * 2, abs=1e-3)
    m.salt_cfg["lam"] = 0.0
    adv, _ = m.advantages(Step([], ro, rw))
    assert torch.allclose(adv, torch.tensor(base)[:, None] * ro.loss_mask, atol=1e-6)


def test_salt_bad_config_names_key(tmp_path):
    with pytest.raises(ConfigError, match="algo.salt.state_key"):
        _module("salt", tmp_path, "algo.salt.state_key=history")


def test_empg_on_agent_turns_hand_case(tmp_path):
    """EMPG with turns as steps: τ1 (A=+1) turn entropies [0.2, 1.0], τ2 (A=-1) [0.6, 0.2]; observation
    tokens (their entropies are irrelevant) get nothing; each turn gets its own A_final."""
    m = _module("empg", tmp_path, "advantage.std_scale=none")  # Dr.GRPO base: A = r - mean = ±1 for r = [2, 0]
    ro = agent_rollouts(m.tokenizer, [[("go a", "[s1]"), ("go bb", "")], [("go c", "[s2]"), ("go d", "")]], [0, 0])
    ent = torch.full(ro.response_ids.shape, 9.0)  # 9.0 on observations / padding: must not count
    steps = core.fill_step_ids(ro.step_ids, ro.loss_mask)
    for r, hs in enumerate([[0.2, 1.0], [0.6, 0.2]]):
        for s, h in enumerate(hs):
            ent[r][steps[r] == s] = h
    adv, _ = m.advantages(Step([], ro, rewards([2.0, 0.0]), extras={"old_entropy": ent}))
    got = _per_turn(ro, adv)
    assert got[0] == pytest.approx([1.4276, 0.5408], abs=1e-3)
    assert got[1] == pytest.approx([-0.6696, -1.2988], abs=1e-3)
    assert m.metrics.peek()["empg/g_mean"] == pytest.approx(1.0, abs=1e-6)


def test_empg_prepare_reads_the_rollout_policy(tmp_path):
    m = _module("empg", tmp_path)
    ro = agent_rollouts(m.tokenizer, ARITH, [0, 0, 0, 0])
    st = Step([], ro, rewards([1, 0, 1, 1]))
    st.extras = m.prepare(st)
    with torch.no_grad():
        _, ent = m.forward_logp(m.policy, ro, entropy=True)
    mask = ro.response_mask.bool()
    assert torch.allclose(st.extras["old_entropy"][mask], ent[mask], atol=1e-5)
    adv, _ = m.advantages(st)
    assert torch.isfinite(adv).all() and (adv[~ro.loss_mask.bool()] == 0).all()
    H = core.gather_step_values(ent, core.fill_step_ids(ro.step_ids, ro.loss_mask), 3, "mean")
    base = core.grpo_advantage(torch.tensor([1.0, 0, 1, 1]), ro.group_ids)
    want = core.empg_advantages(H, base).adv
    assert _per_turn(ro, adv) == [pytest.approx(w, abs=1e-4) for w in want.tolist()]


def _corridor(method: str, seed: int, iters: int = 10, G: int = 16, lr: float = 0.5) -> float:
    """2-step corridor: state s0 then s1, two actions each, reward 1 iff both actions are 0. The policy is
    confident at s0 (p(0) = 0.88) and unsure at s1 (p(0) = 0.5). Returns p(correct | s0) after training.
    The policy is tabular (a bias-free linear layer on one-hot states): with parameters shared across states the
    two steps' gradients mix, and the check is about how each step's own gradient is weighted."""
    policy = torch.nn.Linear(2, 2, bias=False)               # one-hot state -> logits: a tabular softmax policy
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]).T)
    states = torch.eye(2)
    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(iters):
        logits = policy(states)                      # [2 states, 2 actions]
        logp = torch.log_softmax(logits, -1)
        acts = torch.multinomial(logp.exp().detach(), G, replacement=True, generator=gen).T  # [G, 2 steps]
        r = ((acts[:, 0] == 0) & (acts[:, 1] == 0)).float()
        A = core.grpo_advantage(r, torch.zeros(G, dtype=torch.long))
        lp = torch.stack([logp[0, acts[:, 0]], logp[1, acts[:, 1]]], 1)  # [G, 2]
        if method == "empg":
            H = core.entropy_from_logits(logits.detach())    # per state = per step entropy
            adv = core.empg_advantages(H[None, :].expand(G, 2).contiguous(), A).adv
        else:
            adv = A[:, None].expand(G, 2)
        loss = -(adv.detach() * lp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(torch.softmax(policy(states), -1)[0, 0])


def test_empg_corridor_confident_step_learns_faster():
    for seed in (0, 1, 2):
        p0 = float(torch.softmax(torch.tensor([2.0, 0.0]), -1)[0])
        grpo, empg = _corridor("grpo", seed), _corridor("empg", seed)
        assert empg > grpo > p0 - 0.05, (seed, grpo, empg)


def test_salt_and_empg_on_agent_loop_rollouts(tmp_path):
    """Real AgentLoop rollouts (BM25 search tool) from a scripted policy: three episodes open with the same search,
    two then answer right and one wrong, the fourth answers wrong at once. SALT with the parsed action as key gives
    the shared first turn (0.866 + 0.866 - 0.866) / 3; EMPG leaves observations alone and keeps turns constant."""
    from steprl.rollout.agent import AgentLoop
    from steprl.tasks.search_tools import BM25Retriever, Document, SearchEnv
    from tests.scripted import ScriptedEngine

    docs = [Document("Kai Dro", "Kai Dro works for Orbex Corp."), Document("Teluma", "Teluma is in Vornia.")]

    def script(ctx, row):
        if "<information>" not in ctx:
            return "<think>x</think><answer>Vornia</answer>" if row == 3 else "<think>x</think><search>Kai Dro</search>"
        return f"<think>y{row}</think><answer>{'Teluma' if row == 2 else 'Orbex Corp'}</answer>"

    pattern = "'<(?:search|answer)>(.*?)</(?:search|answer)>'"
    m = _module("salt", tmp_path, f"algo.salt.action_regex={pattern}")
    loop = AgentLoop(ScriptedEngine(script, 200), SearchEnv(BM25Retriever(docs), topk=1), max_turns=2,
                     max_response_tokens=1000)
    ro = loop.generate(m.policy, m.tokenizer, ["Who employs Kai Dro?\n"], n=4)
    assert [i["turns"] for i in ro.info] == [2, 2, 2, 1]
    rw = rewards([1, 1, 0, 0])
    got = _per_turn(ro, m.advantages(Step([], ro, rw))[0])
    a = pytest.approx
    assert got[0] == a([0.2887, A], abs=1e-3) and got[1] == a([0.2887, A], abs=1e-3)  # thoughts y0 / y1 differ
    assert got[2] == a([0.2887, -A], abs=1e-3) and got[3] == a([-A], abs=1e-3)
    e = _module("empg", tmp_path / "e")
    st = Step([], ro, rw)
    st.extras = e.prepare(st)
    adv, _ = e.advantages(st)
    _per_turn(ro, adv)  # constant per turn, zero on observations
    assert torch.isfinite(adv).all() and e.metrics.peek()["empg/steps_per_traj"] == pytest.approx(7 / 4)
