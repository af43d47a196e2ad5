"""PC-GRPO end to end on CPU: the tiny Qwen2-VL on puzzles runs 2 steps with the curriculum, the CARE bonus and
the RAC monitor (a scripted judge through the judges interface); the module, built from the real config, turns
scripted responses into the spec's hand-computed weights (§4.8 case 2) and CARE confidences over the answer
tokens; the paper recipes compose."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steprl.algos.step import Step
from steprl.config import check_config
from steprl.rollout.types import Sample
from steprl.train import build
from tests.helpers import Recorder, compose_train


pytestmark = pytest.mark.usefixtures("one_thread")


def judge_fn(prompt: str) -> str:
    """Scripted RAC judge: supports only rationales that mention the word 'rotated'."""
    return "1" if "rotated" in prompt.split("Reasoning:")[-1].split("Final answer:")[0] else "0"


def test_pc_grpo_tiny_runs_two_steps(tmp_path):
    judge = "{_target_: steprl.rewards.judges.scripted_judge, scripted: {fn: tests.e2e.test_pc_grpo.judge_fn}}"
    cfg = compose_train(["experiment=pc_grpo_tiny", "logger=none", "callbacks.progress_bar=null",
                         "trainer.max_steps=2", "trainer.val_check_interval=2", "task.num_val=2",
                         # the recipe's 16 x 8 puzzles of 132 tokens take minutes a step on 2 cores: 2 x 4 here
                         "batch.prompts_per_step=2", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
                         "batch.micro_batch_size=8",
                         "callbacks.model_checkpoint.every_n_train_steps=2",
                         f"callbacks.rac_monitor.judge={judge}"], tmp_path)
    module, data, trainer = build(cfg)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data)
    assert len(rec.rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rec.rows)
    last = rec.rows[-1]
    for key in ("pc_grpo/curriculum_weight", "pc_grpo/difficulty", "pc_grpo/dispersion", "pc_grpo/invalid_answers",
                "pc_grpo/care_bonus", "pc_grpo/ref_confidence", "pc_grpo/rac", "pc_grpo/judge/requests"):
        assert key in last, key
    assert last["pc_grpo/judge/requests"] == cfg.callbacks.rac_monitor.num_samples == 8  # judged by the scripted backend
    assert 0.0 <= last["pc_grpo/rac"] <= 1.0
    assert module.val_history[-1][0] == 2 and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert module.ema_policy is not None and type(module.policy).__name__ == "Qwen2VLForConditionalGeneration"
    # the trained VL policy exports to a directory that loads back with its image processor
    from steprl.export import export
    from steprl.models import load_model
    from steprl.models.vision import load_processor

    out = export(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "exported")
    model, _ = load_model(path=str(out))
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration" and load_processor(path=str(out)) is not None
    trained = dict(module.policy.named_parameters())
    assert all(torch.equal(p, trained[k]) for k, p in model.named_parameters())


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    cfg = compose_train(["experiment=pc_grpo_tiny", "logger=none"], tmp_path_factory.mktemp("pc"))
    mod, _, _ = build(cfg)
    mod.setup("fit")
    mod._reward_counts = {"reward/errors": 0, "reward/timeouts": 0}  # what training_step sets before scoring
    yield mod
    mod.teardown("fit")


def _scripted(module, samples, responses):
    """Real rollouts of ``samples`` (prompt and image rows from the engine) with their responses replaced."""
    G = len(responses) // len(samples)
    ro = module.generate([s.prompt for s in samples], n=G, images=[s.images for s in samples], max_new_tokens=1)
    tok = module.tokenizer
    enc = tok(responses, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    ro.response_ids, ro.response_mask = enc["input_ids"], enc["attention_mask"]
    ro.loss_mask, ro.step_ids = enc["attention_mask"].clone(), torch.full_like(enc["input_ids"], -1)
    ro.texts = list(responses)
    return ro.select(torch.arange(len(ro)))  # plain tensors (generate runs in inference mode)


def _patchfit_samples(n):
    img = np.zeros((56, 56, 3), np.uint8)
    return [Sample(prompt=f"<|vision_start|><|image_pad|><|vision_end|>q{i}\n", answer="A",
                   meta={"puzzle": "patchfit", "num_options": 6}, images=[img]) for i in range(n)]


def test_module_weights_groups_as_the_spec_case_2(module):
    picks = list("ABBBBBBB") + list("ABBCCDEF")
    ro = _scripted(module, _patchfit_samples(2), [f"<think>t</think><answer>{p}</answer>" for p in picks])
    rw = module.score(ro, _patchfit_samples(2))
    assert rw.outcome.tolist() == [float(p == "A") for p in picks]
    adv, _ = module.advantages(Step([], ro, rw))  # no "confidence" in the extras: curriculum only
    # A_i = r_i - 0.125 (mean-centred), times w = 0.2006 (group 0) and 0.4303 (group 1)
    row = adv[:, 0]
    assert row[0].item() == pytest.approx(0.2006 * 0.875, abs=1e-4)
    assert row[1].item() == pytest.approx(-0.2006 * 0.125, abs=1e-4)
    assert row[8].item() == pytest.approx(0.4303 * 0.875, abs=1e-4)
    assert torch.equal(adv == 0, ro.loss_mask == 0) or (adv[ro.loss_mask == 0] == 0).all()
    stats = module.metrics.peek()
    module.metrics.reset()
    assert stats["pc_grpo/curriculum_weight"] == pytest.approx((0.2006 + 0.4303) / 2, abs=1e-4)
    assert stats["pc_grpo/invalid_answers"] == 0.0
    # unusable answers are their own class, counted
    ro2 = _scripted(module, _patchfit_samples(1), ["<answer>A</answer>", "garbage", "<answer>Q</answer>", "x"])
    rw2 = module.score(ro2, _patchfit_samples(1))
    module.advantages(Step([], ro2, rw2))
    assert module.metrics.peek()["pc_grpo/invalid_answers"] == 0.75


def test_care_confidence_reads_the_answer_tokens_of_the_ema_model(module):
    responses = ["<think>abc</think><answer>B</answer>", "<think>x</think><answer>AB</answer>",
                 "no answer at all", "<answer>C"]
    ro = _scripted(module, _patchfit_samples(1), responses)
    mask = module.answer_mask(ro)
    picked = [module.tokenizer.decode(ro.response_ids[i][mask[i]]) for i in range(4)]
    assert picked == ["B", "AB", "", "C"]
    conf = module.prepare(Step([], ro))["confidence"]
    logp, _ = module.forward_logp(module.ema_policy, ro)
    want = torch.exp((logp * mask).sum(-1) / (mask.sum(-1) + 1e-6))
    assert torch.allclose(conf, want, atol=1e-5)
    assert conf[2].item() == pytest.approx(1.0)
    # the EMA reference moves toward the policy by (1 - decay) on its update steps
    p = next(module.policy.parameters())
    e = next(module.ema_policy.parameters())
    with torch.no_grad():
        p.add_(1.0)
    before = e.detach().clone()
    module.after_update(Step([], ro, module.score(ro, _patchfit_samples(1))))
    assert torch.allclose(e, 0.995 * before + 0.005 * p.detach(), atol=1e-6)
    with torch.no_grad():
        p.sub_(1.0)


@pytest.mark.parametrize("recipe", ["pc_grpo_qwen2_5_vl_7b_jigsaw", "pc_grpo_qwen2_5_vl_3b_mix"])
def test_paper_recipes_compose(recipe, tmp_path):
    cfg = compose_train([f"experiment={recipe}", "logger=none"], tmp_path)
    check_config(cfg)
    assert cfg.model.path.startswith("Qwen/Qwen2.5-VL-")
    assert cfg.optim.lr == 5e-7 and cfg.batch.samples_per_prompt == 8 and cfg.algo.kl.coef == 0
    assert cfg.rollout.temperature == 0.9 and cfg.rollout.top_p == 0.95 and cfg.rollout.max_new_tokens == 2048
    assert cfg.algo.curriculum.enabled and cfg.algo.curriculum.gamma == 0.5 and cfg.algo.care.enabled
    assert cfg.model.image_processor.max_pixels == 1024 * 28 * 28
    assert "rac_monitor" in cfg.callbacks
