"""Statistics and reporting shared by the quality benchmarks: one place, so nothing is computed twice.

Runs of one seed share initial weights, data subset and data order, so arms are compared *paired
by seed*: the per-seed difference to the baseline, its mean with a 95% confidence interval from
the paired t distribution, and the number of seeds on which the arm is ahead. With 5 seeds an
interval that includes 0 means the difference is not established, whichever way the mean points.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is nan for a single value."""
    values = list(values)
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def paired_ci(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """Mean of the per-seed differences arm - baseline, with its paired-t confidence interval.

    Returns {"n", "mean", "std", "low", "high"}; low/high are nan for fewer than two pairs."""
    from scipy.stats import t

    if len(arm) != len(baseline):
        raise ValueError(f"paired_ci needs one arm value per baseline value (got {len(arm)} and {len(baseline)}): "
                         "pair the runs by seed first.")
    diffs = [a - b for a, b in zip(arm, baseline)]
    n = len(diffs)
    mean, std = mean_std(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "std": std, "low": float("nan"), "high": float("nan")}
    half = t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def win_count(arm: Sequence[float], baseline: Sequence[float], higher_is_better: bool = True) -> Tuple[int, int]:
    """(seeds on which the arm is strictly better than the baseline, number of seeds); ties are no win."""
    if len(arm) != len(baseline):
        raise ValueError(f"win_count needs paired values (got {len(arm)} and {len(baseline)}).")
    sign = 1 if higher_is_better else -1
    return sum(sign * (a - b) > 0 for a, b in zip(arm, baseline)), len(arm)


def verdict(ci: Dict[str, float], higher_is_better: bool = True) -> str:
    """'better' / 'worse' only when the whole confidence interval lies on one side of 0."""
    if not (ci["low"] == ci["low"]):  # nan: too few seeds
        return "not established (fewer than 2 seeds)"
    good = ci["low"] > 0 if higher_is_better else ci["high"] < 0
    bad = ci["high"] < 0 if higher_is_better else ci["low"] > 0
    return "better (CI excludes 0)" if good else "worse (CI excludes 0)" if bad else "not established (CI includes 0)"


def first_reach(curve: Sequence[Tuple[float, float]], target: float, higher_is_better: bool = True) -> Optional[float]:
    """The first x of (x, value) points at which value reaches target (>= for accuracy, <= for losses); None if never."""
    for x, value in curve:
        if (value >= target) if higher_is_better else (value <= target):
            return x
    return None


def fmt(value: float, digits: int = 2, sign: bool = False) -> str:
    if value != value:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def arm_table(rows: Dict[str, Dict[int, Dict]], metrics: Sequence[Tuple[str, str, float, int]],
              baseline: str = "baseline", higher_is_better: Dict[str, bool] = None) -> str:
    """Markdown table: per arm, mean ± std of each metric over its seeds.

    rows: {arm: {seed: result}}; metrics: (key in result, column title, scale, digits)."""
    lines = ["| arm | seeds | " + " | ".join(title for _, title, _, _ in metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for arm, by_seed in rows.items():
        cells = []
        for key, _, scale, digits in metrics:
            values = [r[key] * scale for r in by_seed.values() if r.get(key) is not None]
            m, s = mean_std(values)
            cells.append(f"{fmt(m, digits)} ± {fmt(s, digits)}")
        lines.append(f"| {arm} | {len(by_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: Dict[str, Dict[int, Dict]], metrics: Sequence[Tuple[str, str, float, int, bool]],
                 baseline: str = "baseline") -> str:
    """Markdown table: per arm and metric, the paired difference to the baseline over the seeds both ran:
    mean [95% CI], wins / seeds, and the verdict. metrics: (key, title, scale, digits, higher_is_better)."""
    lines = ["| arm vs baseline | metric | seeds | mean diff [95% CI] | wins | verdict |",
             "|---|---|---:|---|---:|---|"]
    base = rows.get(baseline, {})
    for arm, by_seed in rows.items():
        if arm == baseline:
            continue
        seeds = sorted(s for s in by_seed if s in base)
        for key, title, scale, digits, higher in metrics:
            pairs = [(by_seed[s][key] * scale, base[s][key] * scale) for s in seeds
                     if by_seed[s].get(key) is not None and base[s].get(key) is not None]
            if not pairs:
                continue
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            ci = paired_ci(a, b)
            wins, n = win_count(a, b, higher)
            lines.append(f"| {arm} | {title} | {n} | {fmt(ci['mean'], digits, True)} [{fmt(ci['low'], digits, True)}, "
                         f"{fmt(ci['high'], digits, True)}] | {wins}/{n} | {verdict(ci, higher)} |")
    return "\n".join(lines)


def per_seed_line(rows: Dict[str, Dict[int, Dict]], key: str, scale: float = 1.0, digits: int = 2) -> List[str]:
    """'arm: v0 / v1 / ...' per arm, seeds in order: the raw numbers behind the tables."""
    return [f"{arm}: " + " / ".join(f"s{s} {fmt(r[key] * scale, digits)}" for s, r in sorted(by_seed.items())
                                    if r.get(key) is not None)
            for arm, by_seed in rows.items()]
