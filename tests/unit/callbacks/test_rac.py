"""RAC monitor (PC-GRPO spec §4.6): splitting rationale / answer, the rule judge, the judge reply parser, and
the moving average over a window of steps with unparsed judgements left out and counted."""
from __future__ import annotations


import pytest

from steprl.callbacks.rac import RAC_TEMPLATE, RACMonitor, RuleRACJudge, parse_rac, split_reasoning
from steprl.rewards.judges import JudgeRequest, PromptedJudge, ScriptedBackend
from steprl.rollout.types import Sample


def test_split_reasoning():
    assert split_reasoning("<think>turned 90</think><answer>90</answer>") == ("turned 90", "90")
    assert split_reasoning("I think 180 <answer>180</answer>") == ("I think 180", "180")
    assert split_reasoning("<think>unterminated <answer>1</answer> <answer>2</answer>") == ("unterminated", "2")
    assert split_reasoning("nothing") == ("nothing", None)


def _req(reasoning, answer):
    return JudgeRequest(question="q", response="", steps=[reasoning],
                        meta={"fields": {"reasoning": reasoning, "answer": answer}})


def test_rule_judge_needs_the_exact_answer_in_the_rationale():
    res = RuleRACJudge().score([_req("so the angle is 90 degrees", "90"), _req("the angle is 190", "90"),
                                _req("tiles: 1, 3, 4, 2", "1,3,4,2"), _req("it is B", "b"), _req("x", None)])
    assert [r.final for r in res] == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_parse_rac_first_digit_or_unparsed():
    assert parse_rac("1", _req("", "")).final == 1.0
    assert parse_rac("Verdict: 0 (it does not)", _req("", "")).final == 0.0
    bad = parse_rac("yes it does", _req("", ""))
    assert not bad.parsed and bad.final is None


class _Trainer:  # the two attributes of a Lightning Trainer / module the callback reads
    def __init__(self):
        self.global_step = 0


class _Module:
    def __init__(self):
        self.rac_candidates, self.logged = [], []

    def log_metrics(self, metrics):
        self.logged.append(dict(metrics))


def test_moving_average_over_the_window_through_a_prompted_judge():
    # scripted judge: "1" if the rationale says "yes", "0" if "no", garbage otherwise
    def reply(prompt: str) -> str:
        body = prompt.split("Reasoning:")[1]
        return "1" if "yes" in body else ("0" if "no" in body else "???")
    judge = PromptedJudge(ScriptedBackend(reply), RAC_TEMPLATE, parse_rac)
    mon = RACMonitor(judge=judge, every_n_steps=1, num_samples=4, window=2)
    trainer, module = _Trainer(), _Module()
    s = Sample(prompt="<|vision_start|><|image_pad|><|vision_end|>Rotate?", answer="90")
    steps = [["yes", "yes", "no", "no"], ["yes", "yes", "yes", "???"], ["no", "no", "no", "no"]]
    for k, rows in enumerate(steps, start=1):
        trainer.global_step = k
        module.rac_candidates = [(s, f"<think>{r}</think><answer>90</answer>") for r in rows]
        mon.on_train_batch_end(trainer, module, {"rac_candidates": module.rac_candidates}, None, 0)
    m1, m2, m3 = module.logged
    assert m1["pc_grpo/rac"] == 0.5 and m1["pc_grpo/rac_step"] == 0.5
    assert m2["pc_grpo/rac_step"] == 1.0 and m2["pc_grpo/rac_unjudged"] == 1.0
    assert m2["pc_grpo/rac"] == pytest.approx(5 / 7)            # (2 + 3) / (4 + 3)
    assert m3["pc_grpo/rac"] == pytest.approx(3 / 7)            # window 2: steps 2 and 3 only
    assert m2["pc_grpo/judge/parse_failures"] == 1.0
    assert "Rotate?" in judge.render(mon.requests(module.rac_candidates[:1])[0])
    assert "<|image_pad|>" not in judge.render(mon.requests(module.rac_candidates[:1])[0])
    state = mon.state_dict()
    again = RACMonitor(judge=judge, window=2)
    again.load_state_dict(state)
    assert list(again.history) == list(mon.history)


def test_rule_is_the_default_and_bad_settings_are_named():
    assert isinstance(RACMonitor.build(None), RuleRACJudge)
    assert isinstance(RACMonitor.build({"_target_": "steprl.rewards.judges.rule_judge"}), RuleRACJudge)
    with pytest.raises(ValueError, match="rac_monitor"):
        RACMonitor(window=0)


def _yes(prompt):
    return "1"


def test_a_judge_config_reaches_the_monitor_unbuilt(tmp_path):
    """Hydra leaves the monitor's judge node alone (``_recursive_: false``): the monitor builds it with the RAC
    prompt, not the judge config's own template."""
    import hydra

    from tests.helpers import compose_train

    judge = "{_target_: steprl.rewards.judges.scripted_judge, probe: false, scripted: {fn: %s._yes}}" % __name__
    cfg = compose_train(["experiment=pc_grpo_tiny", f"callbacks.rac_monitor.judge={judge}"], tmp_path)
    mon = hydra.utils.instantiate(cfg.callbacks.rac_monitor)
    j = mon.build(mon.judge_cfg)
    assert isinstance(j, PromptedJudge) and j.template is RAC_TEMPLATE and j.parser is parse_rac
