"""Helpers shared by the bench scripts (sample_efficiency.py, league_table.py, claims.py): a run's csv-logger
metrics, mean / std, Student-t confidence intervals (one sample, paired, Welch), and rollouts to reach a value.

Import from a bench script with ``sys.path.insert(0, str(Path(__file__).resolve().parent)); import benchlib``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of one value is 0."""
    if not xs:
        raise ValueError("mean_std of an empty list")
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def t_quantile(df: float, level: float = 0.95) -> float:
    """Two-sided Student-t critical value t_{(1+level)/2, df}."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def t_ci(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): the one-sample t interval mean ± t_{n-1} s / sqrt(n). Needs two values or more."""
    if len(xs) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(xs)}")
    m, s = mean_std(xs)
    h = t_quantile(len(xs) - 1, level) * s / math.sqrt(len(xs))
    return m, m - h, m + h


def paired_ci(a: dict, b: dict, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean difference a - b, lower, upper, n) over the keys (seeds) both have: the t interval of the differences."""
    keys = sorted(set(a) & set(b))
    return (*t_ci([a[k] - b[k] for k in keys], level), len(keys))


def welch_ci(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lower, upper): Welch's interval with Welch-Satterthwaite degrees of freedom."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's interval needs at least 2 values per arm, got {len(a)} and {len(b)}")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    d = ma - mb
    if va + vb == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    h = t_quantile(df, level) * math.sqrt(va + vb)
    return d, d - h, d + h


def read_metrics_csv(path: Path, keys=None) -> dict[str, dict[int, float]]:
    """{key: {step: value}} from a Lightning CSVLogger ``metrics.csv`` (empty cells skipped; the last value logged
    at a step wins). ``keys``: only these columns (default: all but ``step``)."""
    out: dict[str, dict[int, float]] = {}
    with open(path) as fh:
        for rec in csv.DictReader(fh):
            if rec.get("step") in (None, ""):
                continue
            step = int(float(rec["step"]))
            for k, v in rec.items():
                if k == "step" or v in (None, "") or (keys is not None and k not in keys):
                    continue
                out.setdefault(k, {})[step] = float(v)
    return out


def rollouts_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """First rollout count at which the curve ``[(rollouts, value), ...]`` reaches ``target``, linearly
    interpolated between points; None if it never does."""
    for (n0, a0), (n1, a1) in zip(points, points[1:]):
        if a0 >= target:
            return float(n0)
        if a1 >= target:
            return n0 + (n1 - n0) * (target - a0) / (a1 - a0)
    return float(points[0][0]) if points and points[0][1] >= target else None


def interp(points: list[tuple[float, float]], x: float) -> float:
    """The piecewise-linear curve through ``points`` (sorted by x) at ``x`` (inside their range)."""
    if not points[0][0] <= x <= points[-1][0]:
        raise ValueError(f"x={x} is outside the curve's range [{points[0][0]}, {points[-1][0]}]")
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def mean_over(points: list[tuple[float, float]], upto: float) -> float:
    """Mean value of the piecewise-linear curve over [x_0, upto] (trapezoid area / width): the normalised area under
    a learning curve."""
    if upto <= points[0][0]:
        raise ValueError(f"mean_over needs upto > the first x ({points[0][0]}), got {upto}")
    area, last = 0.0, points[0]
    for p in points[1:]:
        if p[0] >= upto:
            y = interp([last, p], upto)
            area += (upto - last[0]) * (last[1] + y) / 2
            return area / (upto - points[0][0])
        area += (p[0] - last[0]) * (last[1] + p[1]) / 2
        last = p
    if abs(last[0] - upto) > 1e-9:
        raise ValueError(f"the curve ends at x={last[0]}, before upto={upto}")
    return area / (upto - points[0][0])


def compose(overrides: list[str], out_dir: Path):
    """The composed training config (the tree `src/train.py` uses), with its output dir set to ``out_dir``."""
    from steprl.config import compose_run

    return compose_run(overrides, out_dir)
