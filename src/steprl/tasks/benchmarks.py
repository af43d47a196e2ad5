"""Math benchmarks by name: GSM8K, MATH-500, AIME 2024 / 2025, AMC 2023, Minerva Math, OlympiadBench.

``benchmark("math500")`` reads ``<data_dir>/math500_test.jsonl`` (the shared copies' names, Qwen2.5-Math's
packaging for the others) or, when ``path=`` is given, that file; ``hf_name=`` reads a hub dataset instead
(downloaded only then; :data:`BENCHMARKS` lists a known hub id per benchmark). Every benchmark is graded with
math-verify through :class:`~steprl.tasks.math.MathTask` (GSM8K through :class:`GSM8KTask`). Rows are normalised
first: OlympiadBench's ``final_answer`` lists become one answer (``"a, b"``), and ``$...$`` around an answer is
dropped.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steprl.rollout.types import Sample
from steprl.tasks.math import GSM8KTask, MathTask

__all__ = ["BENCHMARKS", "benchmark", "BenchmarkTask", "GSM8KBenchmarkTask"]

BENCHMARKS: dict[str, dict[str, Any]] = {
    "gsm8k": {"file": "gsm8k_test.jsonl", "hf_name": "openai/gsm8k", "hf_config": "main", "hf_split": "test"},
    "math500": {"file": "math500_test.jsonl", "hf_name": "HuggingFaceH4/MATH-500", "hf_split": "test"},
    "aime24": {"file": "aime24_test.jsonl", "hf_name": "HuggingFaceH4/aime_2024", "hf_split": "train"},
    "aime25": {"file": "aime25_test.jsonl", "hf_name": "yentinglin/aime_2025", "hf_split": "train"},
    "amc23": {"file": "amc23_test.jsonl", "hf_name": "AI-MO/aimo-validation-amc", "hf_split": "train"},
    "minerva_math": {"file": "minerva_math_test.jsonl", "hf_name": "math-ai/minervamath", "hf_split": "test"},
    "olympiadbench": {"file": "olympiadbench_test.jsonl", "hf_name": "Hothan/OlympiadBench",
                      "hf_config": "OE_TO_maths_en_COMP", "hf_split": "train"},
}


def _normalise_answer(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        parts = [_normalise_answer(v) for v in value if v is not None]
        parts = [str(p) for p in parts if str(p).strip()]
        return ", ".join(parts) if parts else None
    if isinstance(value, str):
        s = value.strip()
        if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
            s = s.strip("$").strip()
        return s
    return value


class _Normalising:
    def _to_sample(self, where: str, row: Any, index: int) -> Sample:
        if isinstance(row, Mapping):
            row = dict(row)
            for key in ("answer", "final_answer"):
                if key in row:
                    row[key] = _normalise_answer(row[key])
        return super()._to_sample(where, row, index)  # type: ignore[misc]


class BenchmarkTask(_Normalising, MathTask):
    """A :class:`MathTask` whose rows are normalised as described in the module docstring."""


class GSM8KBenchmarkTask(_Normalising, GSM8KTask):
    """A :class:`GSM8KTask` with normalised rows."""


def benchmark(benchmark: str, path: str | None = None, hf_name: str | None = None, hf_split: str | None = None,
              hf_config: str | None = None, data_dir: str | None = None, **kwargs) -> MathTask:
    """The task of a named benchmark; ``kwargs`` go to :class:`MathTask` (``prompt_template``, ``num_val``, ...)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"task.benchmark={benchmark!r} is not one of {sorted(BENCHMARKS)}")
    info = BENCHMARKS[benchmark]
    cls = GSM8KBenchmarkTask if benchmark == "gsm8k" else BenchmarkTask
    kwargs.setdefault("name", benchmark)
    if hf_name is not None:
        if path is not None:
            raise ValueError(f"benchmark {benchmark}: give task.path or task.hf_name, not both")
        return cls(hf_name=hf_name, hf_split=hf_split or info["hf_split"],
                   hf_config=hf_config if hf_config is not None else info.get("hf_config"), **kwargs)
    if path is None:
        candidate = Path(data_dir or ".") / info["file"]
        if not candidate.is_file():
            raise FileNotFoundError(
                f"benchmark {benchmark}: no data file at {candidate}; pass task.path=<file> (jsonl / jsonl.gz / "
                f"parquet), task.data_dir=<dir holding {info['file']}>, or task.hf_name={info['hf_name']} "
                f"(downloads it)")
        path = str(candidate)
    return cls(path=path, **kwargs)
