"""Reward functions with known failure modes, importable by spawned workers (tests.unit.rewards.verifiers)."""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass


@dataclass
class LightSample:
    """Duck-typed stand-in for Sample whose unpickling does not import torch (faster worker start)."""

    prompt: str
    answer: str | None = None


def add(a, b):
    return a + b


def sleep_then(seconds: float, value):
    time.sleep(seconds)
    return value


def spin_forever():
    while True:
        pass


def raise_value_error():
    raise ValueError("boom")


def exit_hard():
    os._exit(1)


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def swallow_timeout_and_sleep(seconds: float):
    """Catches everything, including the inline timeout, then returns normally."""
    try:
        time.sleep(seconds)
    except BaseException:  # noqa: BLE001
        pass
    return "survived"


def unpicklable_result():
    return lambda: None


def behave(kind: str):
    """One call whose behaviour is named by ``kind``."""
    return {
        "ok": lambda: 1.0,
        "raise": raise_value_error,
        "exit": exit_hard,
        "spin": spin_forever,
    }[kind]()


# (sample, response) -> score: the response text says how to misbehave; otherwise exact match with the answer
def outcome_by_response(sample, response: str):
    if response == "hang":
        spin_forever()
    if response == "boom":
        raise_value_error()
    if response == "exit":
        exit_hard()
    if response == "nan":
        return math.nan
    if response == "str":
        return "1.0"
    if response == "none":
        return None
    return float(response == sample.answer)


def steps_by_line(sample, response: str):
    """One score per line: 1 if the line is 'good', 0 otherwise; 'stephang' hangs, 'stepnone' gives None."""
    if response == "stephang":
        spin_forever()
    if response == "stepnone":
        return None
    if response == "stepnan":
        return [1.0, math.inf]
    return [float(line == "good") for line in response.split("\n")]


def answer_within(sample, response: str, partial: float = 0.5):
    """An outcome verifier with an option (``reward.outcome`` by ``_target_``): 1 for the exact answer, ``partial``
    when the answer appears inside a longer response, 0 otherwise."""
    if response == sample.answer:
        return 1.0
    return partial if sample.answer in response else 0.0
