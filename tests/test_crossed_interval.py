"""The seeds x days t interval: it covers the true mean at its stated rate when both the
training seed and the day vary, where an interval over days alone does not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from decision_distill.stats.crossed import crossed_t_interval


def crossed_table(rng, seeds: int, days: int, sd_seed: float, sd_day: float, sd_noise: float) -> np.ndarray:
    return (rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_day, (1, days))
            + rng.normal(0, sd_noise, (seeds, days)))


@pytest.mark.parametrize("sd_seed, sd_day", [(1.0, 0.3), (0.2, 1.0), (0.0, 0.0)])
def test_covers_the_true_mean_at_the_stated_rate(sd_seed, sd_day):
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        _, (low, high), _ = crossed_t_interval(crossed_table(rng, 5, 40, sd_seed, sd_day, 1.0), 0.95)
        hits += low <= 0 <= high
    # At least the stated rate; a little above where a component is truly 0 (the floors at 0
    # then keep some of the sampling noise of MS_seed - MS_res: conservative, never short).
    assert 0.93 <= hits / 2000 <= 0.985


def test_an_interval_over_days_alone_misses_the_seed_variation():
    """The reason for the crossed design: with seeds that differ, pooling days undercovers."""
    rng = np.random.default_rng(1)
    crossed = days_only = 0
    for _ in range(1000):
        y = crossed_table(rng, 5, 40, 1.0, 0.3, 1.0)
        _, (low, high), _ = crossed_t_interval(y, 0.95)
        crossed += low <= 0 <= high
        day_means = y.mean(axis=0)
        low, high = stats.t.interval(0.95, len(day_means) - 1, day_means.mean(), stats.sem(day_means))
        days_only += low <= 0 <= high
    assert crossed / 1000 >= 0.93 and days_only / 1000 < 0.7


def test_one_seed_is_the_ordinary_t_interval_over_days():
    y = np.random.default_rng(2).normal(3.0, 2.0, (1, 12))
    mean, (low, high), df = crossed_t_interval(y, 0.9)
    expected = stats.t.interval(0.9, 11, y.mean(), stats.sem(y.ravel()))
    assert mean == pytest.approx(y.mean()) and df == pytest.approx(11)
    assert (low, high) == pytest.approx(expected)


def test_no_interval_from_a_single_value_or_a_constant_table():
    assert crossed_t_interval(np.array([[4.0]]))[1] is None
    assert crossed_t_interval(np.full((3, 5), 2.5))[1] is None
    with pytest.raises(ValueError, match="finite"):
        crossed_t_interval(np.array([[1.0, np.nan]]))
