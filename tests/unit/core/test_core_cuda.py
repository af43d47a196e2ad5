"""Device parity: every core function gives the same numbers on CUDA as on CPU (skipped without a GPU)."""
import pytest
import torch

import steprl.core as C

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cases():
    g = torch.Generator().manual_seed(0)
    n, t, v, s = 6, 9, 11, 4
    mask = torch.rand(n, t, generator=g) > 0.3
    mask[5] = False  # an empty row
    logp = -torch.rand(n, t, generator=g)
    ref = -torch.rand(n, t, generator=g)
    adv = torch.randn(n, t, generator=g)
    r = torch.randn(n, generator=g)
    gid = torch.tensor([4, 9, 4, 9, 1, 4])
    tok = torch.randn(n, t, generator=g)
    vals = torch.randn(n, t, generator=g)
    logits = torch.randn(n, t + 1, v, generator=g)
    labels = torch.randint(0, v, (n, t), generator=g)
    step_ids = torch.randint(-1, s, (n, t), generator=g)
    step_vals = torch.randn(n, s, generator=g)
    step_vals[0, 1] = float("nan")
    return {
        "masked_mean": lambda d: C.masked_mean(d(tok), d(mask), dim=-1),
        "masked_var": lambda d: C.masked_var(d(tok), d(mask)),
        "masked_whiten": lambda d: C.masked_whiten(d(tok), d(mask), shift_mean=False),
        "grpo": lambda d: C.grpo_advantage(d(r), d(gid)),
        "grpo_batch": lambda d: C.grpo_advantage(d(r), d(gid), std_scale="batch"),
        "rloo": lambda d: C.rloo_advantage(d(r), d(gid)),
        "returns": lambda d: C.discounted_returns(d(tok), d(mask), gamma=0.9),
        "rpp": lambda d: C.reinforce_pp_advantage(d(tok), d(mask)),
        "rpp_base": lambda d: C.reinforce_pp_baseline_advantage(d(r), d(gid), d(mask)),
        "gae": lambda d: torch.stack(C.gae(d(tok), d(vals), d(mask), 0.95, 0.9)),
        "outcome": lambda d: C.outcome_to_token_rewards(d(r), d(mask)),
        "logp": lambda d: C.logprobs_from_logits(d(logits)[:, :-1], d(labels)),
        "logp_bf16": lambda d: C.logprobs_from_logits(d(logits).bfloat16()[:, :-1], d(labels), chunk_size=7),
        "entropy": lambda d: C.entropy_from_logits(d(logits), chunk_size=5),
        "k3": lambda d: C.kl_penalty(d(logp), d(ref), "k3"),
        "ppo": lambda d: C.ppo_clip_loss(d(logp), d(ref), d(adv), 0.2, 0.28, 3.0)[0],
        "agg": lambda d: torch.stack([C.aggregate_loss(d(adv), d(mask), m, num_tokens=40, num_seqs=8)
                                      for m in C.AGG_MODES]),
        "scatter": lambda d: C.scatter_step_values(d(step_vals), d(step_ids)),
        "ends": lambda d: C.place_on_step_ends(d(step_vals), d(step_ids)),
        "gather": lambda d: C.gather_step_values(d(tok), d(step_ids), 4, "last"),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_cuda_matches_cpu(name):
    fn = _cases()[name]
    cpu = fn(lambda x: x)
    gpu = fn(lambda x: x.cuda())
    assert gpu.is_cuda
    tol = 2e-2 if "bf16" in name else 1e-5
    torch.testing.assert_close(gpu.cpu(), cpu, atol=tol, rtol=tol, equal_nan=True)
