"""When is "slower" real: a time ratio, its confidence interval, and a verdict.

One set of rules for every comparison the harness makes (``magihuman-bench compare``,
``magihuman-bench diff``, the sweep report's regression view):

- timings are compared only between the same benchmark / sweep point, and in seconds only
  when both come from the same machine ``Fingerprint``; otherwise each time is first
  multiplied by the machine's ``Calibration`` TFLOP/s measured in the same run
  ("normalised": work-equivalents rather than seconds), and the comparison says so;
- the change is a ratio head / base with a 95% confidence interval from repeated
  measurements: a t-interval on log times, paired when base and head ran in alternating
  rounds (the pairing cancels slow drifts in machine load), Welch otherwise. Logs because
  timing noise is multiplicative and a ratio's interval should be symmetric in log space;
- three verdicts, never more than the data shows: "slower" when the interval lies above 1
  *and* the ratio exceeds 1 + threshold (significant and large enough to matter); "not
  slower" when the whole interval lies below 1 + threshold (a slowdown that matters is
  ruled out); "inconclusive" otherwise, including fewer than two measurements a side.
  Each change also states the smallest slowdown the run could have detected (``detectable``):
  the one its noise would flag with 80% probability.

Exit codes of the tools that apply these rules (``magihuman-bench``, ``magihuman-report``):
0 not slower everywhere, 1 something slower (or, for the report, worse), 2 bad input, 3
nothing slower but something inconclusive (``EXIT_INCONCLUSIVE``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, Sequence

from scipy import stats

Verdict = Literal["slower", "not slower", "inconclusive"]
CONFIDENCE = 0.95
THRESHOLD = 0.10
POWER = 0.80  # of ``Change.detectable``
EXIT_SLOWER, EXIT_INCONCLUSIVE = 1, 3


@dataclass(frozen=True)
class Change:
    """head / base ratio with its ``confidence`` interval (``low``/``high`` None without one);
    ``dof``: the t-distribution's degrees of freedom behind the interval (None: none, or exact)."""

    ratio: float
    low: float | None
    high: float | None
    n_base: int
    n_head: int
    paired: bool
    dof: float | None = None
    confidence: float = CONFIDENCE

    def verdict(self, threshold: float = THRESHOLD) -> Verdict:
        if self.low is None or self.high is None:
            return "inconclusive"
        if self.low > 1 and self.ratio > 1 + threshold:
            return "slower"
        if self.high < 1 + threshold:
            return "not slower"
        return "inconclusive"

    def detectable(self, power: float = POWER) -> float | None:
        """Smallest slowdown (a fraction, 0.05 = 5%) this run's noise would flag as significant
        with probability ``power``: (t_conf + t_power) x the standard error of the log ratio."""
        if self.low is None or self.high is None:
            return None
        if self.dof is None:
            return 0.0 if self.low == self.high else None
        t_conf = stats.t.ppf(0.5 + self.confidence / 2, self.dof)
        se = (math.log(self.high) - math.log(self.low)) / 2 / t_conf
        return math.exp((t_conf + stats.t.ppf(power, self.dof)) * se) - 1


def _logs(xs: Sequence[float], what: str) -> list[float]:
    bad = [x for x in xs if not (x > 0 and math.isfinite(x))]
    if bad:
        raise ValueError(f"{what} times must be positive and finite, got {bad}")
    return [math.log(x) for x in xs]


def paired_change(base: Sequence[float], head: Sequence[float], confidence: float = CONFIDENCE) -> Change:
    """Ratio from rounds run side by side (``base[i]`` next to ``head[i]``).

    ratio = geometric mean of the per-round ratios; interval = t-interval of the mean
    log ratio with n - 1 degrees of freedom.
    """
    if len(base) != len(head):
        raise ValueError(f"paired change needs one base and one head time per round, got {len(base)} and {len(head)}")
    if not base:
        raise ValueError("paired change needs at least one round")
    d = [h - b for b, h in zip(_logs(base, "base"), _logs(head, "head"))]
    mean = statistics.fmean(d)
    if len(d) < 2:
        return Change(math.exp(mean), None, None, len(base), len(head), paired=True)
    dof = len(d) - 1
    half = stats.t.ppf(0.5 + confidence / 2, dof) * statistics.stdev(d) / math.sqrt(len(d))
    return Change(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(base), len(head), True,
                  dof if half > 0 else None, confidence)  # fmt: skip


def unpaired_change(base: Sequence[float], head: Sequence[float], confidence: float = CONFIDENCE) -> Change:
    """Ratio from two independent sets of repeats: ratio of geometric means, Welch t-interval on logs."""
    if not base or not head:
        raise ValueError(f"unpaired change needs times on both sides, got {len(base)} base and {len(head)} head")
    lb, lh = _logs(base, "base"), _logs(head, "head")
    diff = statistics.fmean(lh) - statistics.fmean(lb)
    if len(lb) < 2 or len(lh) < 2:
        return Change(math.exp(diff), None, None, len(base), len(head), paired=False)
    vb, vh = statistics.variance(lb) / len(lb), statistics.variance(lh) / len(lh)
    se = math.sqrt(vb + vh)
    if se == 0:
        return Change(math.exp(diff), math.exp(diff), math.exp(diff), len(base), len(head), False, None, confidence)
    dof = (vb + vh) ** 2 / (vb**2 / (len(lb) - 1) + vh**2 / (len(lh) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.5 + confidence / 2, dof) * se
    return Change(math.exp(diff), math.exp(diff - half), math.exp(diff + half), len(base), len(head), False,
                  dof, confidence)  # fmt: skip


def normalised(seconds: float, tflops: float) -> float:
    """A time in calibration work units: the TFLOP of the calibration matmul its machine could
    have done meanwhile. Comparable across machines (approximately), unlike seconds."""
    if not tflops > 0:
        raise ValueError(f"calibration TFLOP/s must be positive, got {tflops}")
    return seconds * tflops
