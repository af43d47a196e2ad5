"""Engine log-probs without vLLM: the lazy-import error names the extra; the HF engine returns its own sampling
log-probs, which give rollout/logprob_diff ~ 0, pass the start-up probe and feed truncated importance sampling."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from steprl.algos.advantage import GroupAdvantage
from steprl.algos.base import RLModule
from steprl.rollout.hf import HFEngine
from steprl.tasks import ArithTask

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_vllm_engine_without_vllm_names_the_extra():
    from steprl.rollout.vllm import VLLMEngine

    with pytest.raises(ImportError, match=r"pip install 'steprl\[vllm\]'"):
        VLLMEngine()


def _module(**engine) -> RLModule:
    torch.manual_seed(0)
    return RLModule(model={"path": "steprl:tiny_arith"}, task=ArithTask(num_train=16, num_val=4),
                    rollout=HFEngine(max_new_tokens=12, temperature=0.7, return_logprobs=True, **engine),
                    optim={"lr": 1e-5}, advantage=GroupAdvantage(),
                    batch={"prompts_per_step": 2, "samples_per_prompt": 4, "minibatch_size": 8,
                           "micro_batch_size": 8, "ppo_epochs": 1})


@pytest.fixture(scope="module")
def rolled():
    torch.set_num_threads(1)
    m = _module()
    samples = [m.task.train_dataset()[i] for i in range(2)]
    ro = m.rollout(samples).select(torch.arange(8))  # as the update does: rows copied out of inference mode
    ro.old_logp = m.logp_pass(m.policy, ro)
    return m, ro


def test_hf_engine_logprobs_match_the_trainer(rolled):
    from steprl import core

    m, ro = rolled
    assert ro.engine_logp is not None and ro.engine_logp.shape == ro.response_ids.shape
    assert torch.all(ro.engine_logp[ro.loss_mask == 0] == 0)
    assert float(core.logprob_diff(ro.old_logp, ro.engine_logp, ro.loss_mask)) < 1e-4


def test_probe_passes_on_matching_engine_and_fails_loudly_beyond_tolerance(rolled):
    m, _ = rolled
    m.engine.probe_tol = 1e-3
    assert m.probe_engine() < 1e-3
    m.engine.probe_tol = -1.0  # no gap can be below this: the probe must stop training
    with pytest.raises(RuntimeError, match="probe_tol=-1.0"):
        m.probe_engine()
    m.engine.probe_tol = None


def test_tis_weight_multiplies_the_policy_gradient_loss(rolled):
    """Engine log-probs ln 2 below the trainer's -> ratio 2 on every token, capped at 1.5: the PPO term of
    every token (and so the token-mean loss, with no entropy/KL term) is exactly 1.5 x the uncorrected one."""
    m, ro = rolled
    adv = torch.randn(len(ro), 1).expand_as(ro.loss_mask).clone()
    n_tok = ro.loss_mask.sum()
    plain, _ = m.micro_loss(ro, adv, {}, n_tok, len(ro))
    shifted = ro.select(torch.arange(len(ro)))
    shifted.engine_logp = ro.old_logp - math.log(2.0)
    m.engine.tis_cap = 1.5
    try:
        tis, _ = m.micro_loss(shifted, adv, {}, n_tok, len(ro))
    finally:
        m.engine.tis_cap = None
    assert float(tis) == pytest.approx(1.5 * float(plain), rel=1e-5)
    assert abs(float(plain)) > 1e-6
