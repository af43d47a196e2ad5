"""algo=sft on agent episodes (experiment=sft_tiny_search_qa, how the tiny_search_qa warm start is made): the loss
covers what the agent writes (its turns and EOS), never the tool's observations, which stay in the context."""
from __future__ import annotations

import pytest

from steprl.config import ConfigError
from steprl.rollout.types import Sample
from steprl.train import build
from tests.helpers import compose_train


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    cfg = compose_train(["experiment=sft_tiny_search_qa", "task=search_qa", "task.num_val=4", "logger=none",
                         "callbacks.progress_bar=null"], tmp_path_factory.mktemp("sft_agent"))
    return build(cfg)[0]


def test_observations_are_context_not_targets(m):
    turn, last = "<search>Ann Bo</search>", "<answer>Bo</answer>"
    obs = "\n\n<information>Ann Bo is here.</information>\n\n"
    s = Sample(prompt="Q: x\n", solution=turn + obs + last, meta={"solution_segments": [(turn, True), (obs, False),
                                                                                        (last, True)]})
    ids, att, lm = m.encode([s, Sample(prompt="Q: y\n", solution=turn + obs + last)])
    tok = m.tokenizer
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Q: x\n", turn, obs, last)]
    assert ids[0][att[0].bool()].tolist() == sum(enc, []) + [tok.eos_token_id]  # the pieces, in order, + EOS
    assert ids[0][lm[0].bool()].tolist() == enc[1] + enc[3] + [tok.eos_token_id]  # the turns and EOS only
    assert int(lm[0].sum()) == len(enc[1]) + len(enc[3]) + 1
    # a sample without segments keeps the whole solution in the loss
    assert int(lm[1].sum()) == len(tok(turn + obs + last, add_special_tokens=False)["input_ids"]) + 1


def test_search_episodes_train_on_the_agents_turns(m):
    s = m.task.train_dataset()[0]
    ids, _, lm = m.encode([s])
    target = m.tokenizer.decode(ids[0][lm[0].bool()].tolist()[:-1])
    written = "".join(t for t, w in s.meta["solution_segments"] if w)
    assert target == written and "<information>" not in target and "<information>" in s.solution


def test_segments_must_join_to_the_solution(m):
    s = Sample(prompt="Q\n", solution="<answer>a</answer>", meta={"solution_segments": [("<answer>b</answer>", True)]})
    with pytest.raises(ConfigError, match="solution_segments"):
        m.encode([s])
