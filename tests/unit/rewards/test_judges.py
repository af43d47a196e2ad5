"""Step judges: the rule checker, the reply parsers, and the OpenAI-compatible backend against a real HTTP server
on 127.0.0.1 (slow replies time out, are retried and counted; malformed replies are retried or counted as parse
failures; a dead endpoint fails at start-up)."""
from __future__ import annotations

import json
import math
import re
import socket
import time

import pytest
import yaml

from steprl.rewards.judges import (
    HFChatBackend,
    JudgeFailing,
    JudgeRequest,
    JudgeUnavailable,
    OpenAIChatBackend,
    PromptedJudge,
    RuleStepJudge,
    ScriptedBackend,
    build_judge,
    parse_json_labels,
    parse_scalar_score,
    parse_step_labels,
)
from steprl.tasks import ArithTask
from tests.helpers import CONF
from tests.unit.rewards.chat_server import ChatServer


def _task():
    return ArithTask(num_train=10, num_val=4, seed=0)


def _req(n=3, **kw):
    return JudgeRequest(question="q", response="r", steps=[f"s{k}" for k in range(n)], **kw)


def _nan_eq(a, b):
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


def _labels_reply(messages) -> str:
    """A scripted judge: labels every step correct except those whose text contains 'bad'."""
    text = messages[-1]["content"]
    steps = re.findall(r"Step (\d+): (.*)", text)
    return "\n".join(f"Step {k}: {'incorrect' if 'bad' in s else 'correct'}" for k, s in steps)


# ------------------------------------------------------------------------------------------- rule judge
def test_rule_judge_scores_arith_steps_exactly():
    task = _task()
    s = task.make_sample("train", 0)
    expr = s.meta["expression"]
    good = task.make_sample("train", 0).solution
    lines = good.split("\n")
    bad = "\n".join([lines[0].split("=")[0] + "=999", *lines[1:]])  # first step wrong
    judge = RuleStepJudge(task)
    res = judge.score([JudgeRequest(expr + "=\n", good, task.splitter.split_text(good), s.answer, {"sample": s}),
                       JudgeRequest(expr + "=\n", bad, task.splitter.split_text(bad), s.answer, {"sample": s})])
    assert res[0].step_scores == [1.0] * len(lines) and res[0].final == 1.0
    assert res[1].step_scores[0] == 0.0 and res[1].parsed
    assert judge.metrics() == {"judge/requests": 2.0, "judge/parse_failures": 0.0, "judge/call_failures": 0.0}
    assert judge.metrics()["judge/requests"] == 0.0  # reset after reading


def test_rule_judge_needs_a_step_checker():
    with pytest.raises(ValueError, match="step checker"):
        RuleStepJudge(object())


# ------------------------------------------------------------------------------------------- config (judge=)
def _reply_yes(prompt):
    return "Step 1: correct"


def _my_parser(reply, req):
    return parse_step_labels(reply.replace("correct", "incorrect"), req)


@pytest.mark.parametrize("choice", ["rule", "hf", "openai", "scripted"])
def test_every_judge_config_names_its_builder(choice):
    node = yaml.safe_load((CONF / "judge" / f"{choice}.yaml").read_text())
    assert node["_target_"] == f"steprl.rewards.judges.{choice}_judge"
    assert "backend" not in node


def test_composed_judges_are_built_by_their_target(tmp_path):
    from tests.helpers import compose_train

    rule = compose_train(["algo=tp_grpo"], tmp_path).judge
    assert isinstance(build_judge(rule, task=_task()), RuleStepJudge)
    fn = f"{__name__}._reply_yes"
    cfg = compose_train(["algo=ppr", "judge=scripted", f"judge.scripted.fn={fn}", "judge.probe=false",
                         "judge.max_failed_steps=5"], tmp_path).judge
    judge = build_judge(cfg)
    assert isinstance(judge, PromptedJudge) and isinstance(judge.backend, ScriptedBackend)
    assert judge.parser is parse_step_labels and judge.max_failed_steps == 5
    assert judge.score([_req(1)])[0].step_scores == [1.0]
    # an algorithm's own prompt replaces the config's
    mine = build_judge(cfg, template="{steps}", parser=_my_parser)
    assert mine.template == "{steps}" and mine.score([_req(1)])[0].step_scores == [0.0]


@pytest.mark.parametrize("cfg, match", [
    ({"backend": "gpt"},
     r"judge\._target_ is missing \(`backend: gpt` is now `_target_: steprl\.rewards\.judges\.gpt_judge`\)"),
    ({"_target_": "steprl.rewards.judges.gpt_judge"},
     r"judge\._target_=steprl\.rewards\.judges\.gpt_judge: cannot import"),
    ({"_target_": "steprl.rewards.judges.scripted_judge", "tmplate": "x", "scripted": {"fn": f"{__name__}._reply_yes"}},
     r"judge\.tmplate is not a key of judge steprl\.rewards\.judges\.scripted_judge \(did you mean \['template'\]\?\)"),
    ({"_target_": "steprl.rewards.judges.openai_judge", "probe": False,
      "openai": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "retry": 2}},
     r"judge\.openai\.retry is not an option of the openai judge backend \(did you mean \['retries'\]\?\)"),
    ({"_target_": "steprl.rewards.judges.scripted_judge", "scripted": {"fn": None}}, r"judge\.scripted\.fn must be"),
    ({"_target_": "steprl.rewards.judges.openai_judge", "openai": {"model": "m"}},
     r"judge\.openai\.base_url must be set"),
])
def test_a_bad_judge_config_is_one_config_error_naming_the_key(cfg, match):
    from steprl.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        build_judge(cfg)


# ------------------------------------------------------------------------------------------- parsers
def test_parse_step_labels():
    r = parse_step_labels("Step 1: correct\nStep 3: **incorrect**\nStep 9: correct", _req(3))
    assert _nan_eq(r.step_scores, [1.0, math.nan, 0.0]) and r.parsed
    assert not parse_step_labels("I think it is fine.", _req(3)).parsed


def test_parse_json_labels_takes_the_last_list():
    reply = 'analysis [1, 2]\n[{"step": 1, "label": "correct"}, {"step": 2, "label": "incorrect"}]'
    r = parse_json_labels(reply, _req(3))
    assert r.labels == ["C", "I", None] and _nan_eq(r.step_scores, [1.0, 0.0, math.nan])
    r = parse_json_labels('[{"step": 2, "label": "matched"}, {"step": "x"}, {"step": 7, "label": "matched"}]', _req(3))
    assert r.labels == [None, "M", None]
    for bad in ["no json", "[{\"step\": 1, \"label\": \"maybe\"}]", "[not json]", '{"step": 1}']:
        assert not parse_json_labels(bad, _req(3)).parsed


def test_parse_scalar_score():
    assert parse_scalar_score("ok. Score: 7", _req(1)).final == pytest.approx(0.7)
    assert parse_scalar_score("Score: 2/4 ... Score: 3/4", _req(1)).final == pytest.approx(0.75)
    for bad in ["Score: 11", "Score: 3/0", "no score", "Score: -1"]:
        assert not parse_scalar_score(bad, _req(1)).parsed


# ------------------------------------------------------------------------------------------- prompted judge
def test_prompted_judge_counts_parse_and_call_failures():
    replies = iter(["Step 1: correct\nStep 2: incorrect", "gibberish", RuntimeError("boom")])

    def fn(prompt):
        r = next(replies)
        if isinstance(r, Exception):
            raise r
        return r

    judge = PromptedJudge(ScriptedBackend(fn), "Q: {question}\n{steps}\nN={num_steps} ref={reference}{missing}",
                          parse_step_labels)
    assert judge.render(_req(2, reference="7")) == "Q: q\nStep 1: s0\nStep 2: s1\nN=2 ref=7"
    res = judge.score([_req(2), _req(2), _req(2)])
    assert res[0].step_scores == [1.0, 0.0] and res[0].text.startswith("Step 1")
    assert not res[1].parsed and res[1].text == "gibberish"
    assert not res[2].parsed and _nan_eq(res[2].step_scores, [math.nan] * 2)
    assert judge.metrics() == {"judge/requests": 3.0, "judge/parse_failures": 1.0, "judge/call_failures": 1.0}


def test_parser_exception_is_a_parse_failure():
    def broken(reply, req):
        raise KeyError("x")

    judge = PromptedJudge(ScriptedBackend(lambda p: "x"), "{question}", broken)
    assert not judge.score([_req(1)])[0].parsed
    assert judge.metrics()["judge/parse_failures"] == 1.0


# ------------------------------------------------------------------------------------------- OpenAI backend
def _backend(server, **kw):
    opts = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, "max_concurrency": 4}
    return OpenAIChatBackend(server.base_url, "judge", **{**opts, **kw})


def test_openai_backend_round_trip_with_key_and_concurrency(monkeypatch):
    monkeypatch.setenv("STEPRL_TEST_JUDGE_KEY", "sekret")
    with ChatServer(_labels_reply, slow_s=0.2) as srv:
        srv.plan.extend(["slow"] * 8)
        backend = _backend(srv, api_key_env="STEPRL_TEST_JUDGE_KEY", max_concurrency=3)
        judge = PromptedJudge(backend, {"system": "grade", "user": "{steps}"}, parse_step_labels)
        judge.probe()
        reqs = [JudgeRequest("q", "r", ["ok", "bad", "ok"]) for _ in range(8)]
        res = judge.score(reqs)
        judge.close()
    assert all(r.step_scores == [1.0, 0.0, 1.0] for r in res)
    assert srv.requests[0]["auth"] == "Bearer sekret"
    assert srv.requests[0]["body"]["messages"][0] == {"role": "system", "content": "grade"}
    assert 2 <= srv.max_in_flight <= 3
    assert backend.counts["failures"] == 0 and judge.metrics()["judge/call_failures"] == 0


def test_slow_reply_times_out_is_retried_then_counted():
    # a 1 s limit against a 6 s reply: a normal reply beats 1 s even on a loaded machine, a hang would take 12 s
    with ChatServer(_labels_reply, slow_s=6.0) as srv:
        backend = _backend(srv, timeout_s=1.0, retries=1)
        judge = PromptedJudge(backend, "{steps}", parse_step_labels)
        srv.plan.extend(["slow"])              # first attempt times out, the retry succeeds
        ok = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        assert ok.parsed and ok.step_scores == [1.0]
        assert backend.counts["timeouts"] == 1 and backend.counts["retries"] == 1
        srv.plan.extend(["slow", "slow"])      # every attempt times out: a failed call, not a hang
        t0 = time.perf_counter()
        bad = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        assert time.perf_counter() - t0 < 5.0  # two 1 s attempts plus scheduling, far below the 12 s of two replies
        backend.close()
    assert not bad.parsed and _nan_eq(bad.step_scores, [math.nan])
    assert backend.counts["timeouts"] == 3 and backend.counts["failures"] == 1
    assert judge.metrics()["judge/call_failures"] == 1.0


def test_malformed_replies_are_retried_or_counted():
    with ChatServer(lambda m: "I refuse to use the format.") as srv:
        backend = _backend(srv, retries=3)
        judge = PromptedJudge(backend, "{steps}", parse_step_labels)
        srv.plan.extend(["bad_json", "no_choices", "500"])  # three bad attempts, the fourth answers
        res = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        assert backend.counts["retries"] == 3 and backend.counts["failures"] == 0
        assert not res.parsed and res.text == "I refuse to use the format."  # it answered, but not parseably
        srv.plan.extend(["400"])                              # a client error is not retried
        n = len(srv.requests)
        res = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        assert len(srv.requests) == n + 1 and not res.parsed
        backend.close()
    assert judge.metrics() == {"judge/requests": 2.0, "judge/parse_failures": 1.0, "judge/call_failures": 1.0}


@pytest.mark.parametrize("fault,error", [("bad_status", "BadStatusLine"), ("incomplete", "IncompleteRead"),
                                         ("long_line", "LineTooLong"), ("reset", "Connection"),
                                         ("bad_json", "JSONDecodeError")])
def test_a_reply_that_is_not_http_is_a_counted_failure_not_a_crash(fault, error):
    """BadStatusLine, IncompleteRead and LineTooLong are http.client.HTTPException, not OSError: they used to
    escape the backend and crash training at step 0."""
    with ChatServer(_labels_reply) as srv:
        backend = _backend(srv, retries=1)
        judge = PromptedJudge(backend, "{steps}", parse_step_labels)
        srv.plan.extend([fault, fault])         # the retry meets it too: the call fails
        res = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        why = backend.last_error
        srv.plan.extend([fault])                # a retry past one bad reply succeeds
        again = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        backend.close()
    assert not res.parsed and _nan_eq(res.step_scores, [math.nan]) and error in why
    assert again.parsed and again.step_scores == [1.0]
    assert backend.counts["failures"] == 1 and backend.counts["retries"] == 2
    assert judge.metrics()["judge/call_failures"] == 1.0


def test_timeout_bounds_the_whole_request_not_each_read():
    """The server sends a valid reply one byte every 0.3 s: each read is faster than the 1 s timeout, so a
    per-read timeout never fires and the request took the server's whole 8 s trickle."""
    with ChatServer(_labels_reply, trickle_s=0.3, trickle_total_s=8.0) as srv:
        backend = _backend(srv, timeout_s=1.0, retries=0)
        judge = PromptedJudge(backend, "{steps}", parse_step_labels)
        srv.plan.extend(["trickle"])
        t0 = time.perf_counter()
        res = judge.score([JudgeRequest("q", "r", ["ok"])])[0]
        took = time.perf_counter() - t0
        backend.close()
    assert took < 4.0, f"a 1 s request took {took:.1f}s"  # the trickle lasts 8 s; 4 s leaves room for load
    assert not res.parsed and backend.counts["timeouts"] == 1 and backend.counts["failures"] == 1
    assert "within 1s" in backend.last_error


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown():
    with ChatServer(_labels_reply) as srv:
        url = srv.base_url.replace("http://", "http://alice:hunter2@")
        backend = OpenAIChatBackend(url, "judge", api_key_env=None, timeout_s=5.0, retries=0)
        backend.probe()
        assert backend.complete(["Step 1: ok"]) == ["Step 1: correct"]
        assert srv.requests[-1]["auth"] == "Basic YWxpY2U6aHVudGVyMg=="  # base64("alice:hunter2")
        assert "hunter2" not in backend.describe()
        backend.close()
    dead = OpenAIChatBackend(f"http://alice:hunter2@127.0.0.1:{_dead_port()}/v1", "judge", probe_timeout_s=1.0)
    with pytest.raises(JudgeUnavailable) as err:
        dead.probe()
    assert "hunter2" not in str(err.value) and "alice" not in str(err.value)
    with pytest.raises(ValueError) as err:
        OpenAIChatBackend("ftp://bob:pw123456@host/v1", "judge")
    assert "pw123456" not in str(err.value)


# ------------------------------------------------------------------------------------------- judge health
def _always_fails(prompt):
    raise ConnectionRefusedError("judge down")


def test_a_judge_that_always_fails_warns_then_stops(caplog):
    judge = PromptedJudge(ScriptedBackend(_always_fails), "{steps}", parse_step_labels,
                          warn_failure_rate=0.25, max_failed_steps=3)
    with caplog.at_level("WARNING", logger="steprl.rewards.judges"):
        judge.score([_req(1)] * 4)
        judge.score([_req(1)] * 4)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "4 of 4 calls failed" in warnings[0] and "judge down" in warnings[0]
    with pytest.raises(JudgeFailing, match=r"every call failed in 3 judged batches in a row.*judge down"):
        judge.score([_req(1)] * 4)


def test_failure_streak_resets_and_a_low_rate_does_not_warn(caplog):
    answers = iter([None, None, "Step 1: correct", None] + [None] * 4 + ["Step 1: correct"] * 3 + [None] + [None] * 2)
    judge = PromptedJudge(ScriptedBackend(lambda p: next(answers)), "{steps}", parse_step_labels,
                          warn_failure_rate=0.5, max_failed_steps=2)
    with caplog.at_level("WARNING", logger="steprl.rewards.judges"):
        judge.score([_req(1)] * 4)   # 3/4 failed: warns
        judge.score([_req(1)] * 4)   # 4/4 failed: all-failed streak 1; the 2nd bad batch in a row: no new warning
        assert len(caplog.records) == 1 and "3 of 4 calls failed" in caplog.records[0].getMessage()
        judge.score([_req(1)] * 4)   # 1/4 failed (25% <= 50%): no warning, both streaks reset
        judge.score([_req(1)] * 0)   # nothing judged: no change
        assert len(caplog.records) == 1
        judge.score([_req(1)] * 2)   # 2/2 failed: a new bad streak warns again; all-failed streak 1 < 2
    assert len(caplog.records) == 2 and "2 of 2 calls failed" in caplog.records[1].getMessage()


def test_health_keys_come_from_the_config_and_are_checked():
    cfg = _judge_cfg("scripted", scripted={"fn": f"{__name__}._always_fails"})
    assert cfg["max_failed_steps"] >= 1 and 0 < cfg["warn_failure_rate"] < 1
    j = build_judge({**cfg, "max_failed_steps": 1})
    with pytest.raises(JudgeFailing, match="judge.max_failed_steps=0"):
        j.score([_req(1)])
    never = build_judge({**cfg, "max_failed_steps": 0})
    for _ in range(5):
        assert not never.score([_req(1)])[0].parsed
    with pytest.raises(ValueError, match="warn_failure_rate"):
        build_judge({**cfg, "warn_failure_rate": 2.0})
    with pytest.raises(ValueError, match="max_failed_steps"):
        build_judge({**cfg, "max_failed_steps": -1})


def test_shipped_openai_defaults_bound_a_hanging_judge():
    """A judge that never answers costs at most (retries + 1) * timeout_s + the backoffs per batch (the calls run
    in parallel), and the run stops after max_failed_steps such batches: under 15 minutes in all."""
    cfg = _judge_cfg("openai")
    o = cfg["openai"]
    per_batch = (o["retries"] + 1) * o["timeout_s"] + sum(min(o["max_backoff_s"], o["backoff_s"] * 2 ** k)
                                                           for k in range(o["retries"]))
    assert per_batch <= 300 and per_batch * cfg["max_failed_steps"] <= 15 * 60


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_fails_fast_on_a_dead_endpoint_and_on_a_wrong_model():
    backend = OpenAIChatBackend(f"http://127.0.0.1:{_dead_port()}/v1", "judge", probe_timeout_s=2.0)
    t0 = time.perf_counter()
    with pytest.raises(JudgeUnavailable, match="not reachable"):
        backend.probe()
    assert time.perf_counter() - t0 < 3.0
    with ChatServer(_labels_reply) as srv:
        with pytest.raises(JudgeUnavailable, match=r"does not serve model 'other'.*\['judge'\]"):
            OpenAIChatBackend(srv.base_url, "other").probe()
    with ChatServer(_labels_reply, models_route=False) as srv:  # no /models: probed with a one-token request
        OpenAIChatBackend(srv.base_url, "judge").probe()
        assert srv.requests[-1]["body"]["max_tokens"] == 1
        with pytest.raises(JudgeUnavailable, match="one-token"):
            OpenAIChatBackend(srv.base_url, "other").probe()
    for bad, key in [({"base_url": "localhost:8000"}, "base_url"), ({"model": ""}, "model"),
                     ({"max_concurrency": 0}, "max_concurrency")]:
        with pytest.raises(ValueError, match=key):
            OpenAIChatBackend(**{"base_url": "http://x/v1", "model": "m", **bad})


# ------------------------------------------------------------------------------------------- configs
def _judge_cfg(name, **over):
    cfg = yaml.safe_load((CONF / "judge" / f"{name}.yaml").read_text())
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def scripted_respond(prompt):  # used through its dotted path by the scripted config
    return _labels_reply([{"content": prompt if isinstance(prompt, str) else prompt[-1]["content"]}])


def test_build_judge_from_each_config():
    assert isinstance(build_judge(_judge_cfg("rule"), task=_task()), RuleStepJudge)
    j = build_judge(_judge_cfg("scripted", scripted={"fn": f"{__name__}.scripted_respond"}))
    assert j.score([JudgeRequest("q", "r", ["fine", "bad"])])[0].step_scores == [1.0, 0.0]
    with ChatServer(_labels_reply) as srv:
        j = build_judge(_judge_cfg("openai", openai={"base_url": srv.base_url, "timeout_s": 5.0}))
        assert j.score([JudgeRequest("q", "r", ["bad"])])[0].step_scores == [0.0]
        j.close()
    with pytest.raises(JudgeUnavailable):
        build_judge(_judge_cfg("openai", openai={"base_url": f"http://127.0.0.1:{_dead_port()}/v1",
                                                 "probe_timeout_s": 1.0}))
    with pytest.raises(ValueError, match="judge.parser"):
        build_judge({"_target_": "steprl.rewards.judges.scripted_judge", "template": "{steps}", "scripted": {"fn": f"{__name__}.scripted_respond"}})


def test_tiny_model_judge_behind_the_http_server():
    """The shipped tiny model serves as the judge (HF backend) behind the HTTP server; it does not write the
    format, so every reply is a counted parse failure and nothing raises."""
    hf = HFChatBackend(path="steprl:tiny_arith", max_new_tokens=8, batch_size=4)
    direct = hf.complete(["1+2=\n", [{"role": "user", "content": "3+4=\n"}]])
    assert all(isinstance(t, str) for t in direct)
    with ChatServer(lambda msgs: hf.complete([msgs])[0]) as srv:
        judge = PromptedJudge(_backend(srv), "{question}", parse_step_labels)
        res = judge.score([JudgeRequest("2+2=\n", "2+2=4", ["2+2=4"]) for _ in range(3)])
        judge.close()
    assert all(not r.parsed for r in res) and all(isinstance(r.text, str) for r in res)
    assert judge.metrics()["judge/parse_failures"] == 3.0
    assert json.loads(json.dumps(srv.requests[0]["body"]))["model"] == "judge"
