"""The shared bootstrap interval (decision_distill/stats/bootstrap.py): coverage, what the
clustered and paired designs do to the width, seeding, and the arguments it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from decision_distill.stats.bootstrap import bootstrap_interval, percentile_interval


def mean(x):
    return x.mean(axis=-1)


def clustered_sample(rng, clusters: int, size: int, between: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `clusters` clusters of `size` rows, true mean 0: a cluster effect of sd `between`
    shared by its rows (0: independent rows) plus a row effect of sd 1."""
    groups = np.repeat(np.arange(clusters), size)
    return rng.normal(0, between, clusters)[groups] + rng.normal(0, 1, clusters * size), groups


def test_the_interval_covers_a_known_mean_about_as_often_as_it_claims():
    """Skewed (exponential) samples of 40 with mean 1: the 90 % interval holds 1 in about 90 % of
    400 draws (binomial sd 1.5 points; the percentile bootstrap runs a little short on skewed
    data of this size), and is informative, not just wide."""
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for draw in range(400):
        x = rng.exponential(1.0, 40)
        low, high = bootstrap_interval(mean, x, resamples=500, confidence=0.9, seed=draw, vectorized=True)
        covered += low <= 1.0 <= high
        widths.append(high - low)
    assert 0.84 <= covered / 400 <= 0.95, f"covered the mean in {covered} of 400 draws"
    assert np.median(widths) < 0.6  # the mean's sd is 1/sqrt(40) = 0.16: width ~2 * 1.645 * 0.16


def test_clustered_intervals_widen_with_correlated_rows_and_match_with_independent_ones():
    """20 clusters of 8 rows. With a shared cluster effect (sd 1.5 against a row sd of 1) the
    rows are not 160 independent draws: resampling clusters keeps the nominal coverage of the
    true mean 0, resampling rows is much narrower and misses it. With independent rows both
    designs give about the same width."""
    rng = np.random.default_rng(1)
    kw = dict(resamples=300, confidence=0.9)
    covered = {"clustered": 0, "rows": 0}
    ratios_correlated, ratios_independent = [], []
    for draw in range(120):
        x, groups = clustered_sample(rng, 20, 8, between=1.5)
        clustered = bootstrap_interval(np.mean, x, groups=groups, seed=draw, **kw)
        rows = bootstrap_interval(mean, x, seed=draw, vectorized=True, **kw)
        covered["clustered"] += clustered[0] <= 0 <= clustered[1]
        covered["rows"] += rows[0] <= 0 <= rows[1]
        ratios_correlated.append((clustered[1] - clustered[0]) / (rows[1] - rows[0]))
        x, groups = clustered_sample(rng, 20, 8, between=0.0)
        clustered = bootstrap_interval(np.mean, x, groups=groups, seed=draw, **kw)
        rows = bootstrap_interval(mean, x, seed=draw, vectorized=True, **kw)
        ratios_independent.append((clustered[1] - clustered[0]) / (rows[1] - rows[0]))
    # Design effect 1 + (8 - 1) * 2.25 / 3.25 = 5.8: the clustered interval is ~2.4 times wider.
    assert np.median(ratios_correlated) > 1.8
    assert 0.85 < np.median(ratios_independent) < 1.15
    assert covered["clustered"] / 120 >= 0.8, covered
    assert covered["rows"] / 120 <= 0.65, covered


def test_a_clustered_resample_takes_whole_clusters():
    groups = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    seen = []

    def record(rows):
        seen.append(rows.copy())
        return float(rows.mean())

    bootstrap_interval(record, np.arange(len(groups)), groups=groups, resamples=50, seed=3)
    assert len(seen) >= 50
    sizes = np.bincount(groups)
    for rows in seen:
        counts = np.bincount(groups[rows], minlength=4)
        assert (counts % sizes == 0).all()  # every drawn cluster with all its rows
        assert (counts // sizes).sum() == 4  # as many clusters drawn as there are


def test_paired_intervals_of_a_difference_are_narrower_on_positively_correlated_samples():
    """Two models scored on the same 60 states, a shared state difficulty (sd 1) and their own
    noise (sd 0.3): resampling states together cancels the difficulty out of the difference."""
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 1, 60)
    a, b = difficulty + rng.normal(0.2, 0.3, 60), difficulty + rng.normal(0, 0.3, 60)
    assert np.corrcoef(a, b)[0, 1] > 0.8
    diff = lambda x, y: x.mean(axis=-1) - y.mean(axis=-1)  # noqa: E731
    kw = dict(resamples=1000, confidence=0.95, seed=4, vectorized=True)
    paired = bootstrap_interval(diff, a, b, paired=True, **kw)
    unpaired = bootstrap_interval(diff, a, b, paired=False, **kw)
    assert (paired[1] - paired[0]) < 0.5 * (unpaired[1] - unpaired[0])
    assert paired[0] > 0  # the 0.2 shift shows only in the paired interval
    assert unpaired[0] < 0


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    x = np.random.default_rng(5).normal(size=30)
    kw = dict(resamples=200, confidence=0.95, vectorized=True, distribution=True)
    (ci_a, dist_a), (ci_b, dist_b) = (bootstrap_interval(mean, x, seed=[7, 1], **kw) for _ in range(2))
    assert ci_a == ci_b and np.array_equal(dist_a, dist_b)
    ci_gen, _ = bootstrap_interval(mean, x, seed=np.random.default_rng([7, 1]), **kw)
    assert ci_gen == ci_a  # a Generator and the seed it was made from draw the same resamples
    assert bootstrap_interval(mean, x, seed=[7, 2], **kw)[0] != ci_a


def test_vectorized_is_only_a_speed_hint_and_the_interval_is_scipys_percentile_interval():
    x = np.random.default_rng(6).gamma(2.0, size=25)
    kw = dict(resamples=300, confidence=0.8, seed=9, distribution=True)
    fast, dist = bootstrap_interval(mean, x, vectorized=True, **kw)
    slow, slow_dist = bootstrap_interval(lambda v: float(v.mean()), x, **kw)
    np.testing.assert_allclose(slow_dist, dist, rtol=1e-12)
    assert slow == pytest.approx(fast, rel=1e-12)
    scipy_ci = stats.bootstrap((x,), np.mean, n_resamples=300, confidence_level=0.8, method="percentile",
                               rng=np.random.default_rng(9)).confidence_interval
    assert fast == pytest.approx((scipy_ci.low, scipy_ci.high), rel=1e-12)


def test_a_statistic_with_several_values_gets_one_interval_each():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, 40), rng.normal(5, 1, 40)
    both = lambda x, y: np.stack([x.mean(axis=-1), y.mean(axis=-1)])  # noqa: E731
    (low, high), dist = bootstrap_interval(both, a, b, paired=True, resamples=400, seed=1, vectorized=True,
                                           distribution=True)
    assert dist.shape == (2, 400)
    assert low[0] < 0 < high[0] and low[1] < 5 < high[1] and high[0] < low[1]


def test_undefined_resamples_are_left_out_and_no_defined_one_means_no_interval():
    x = np.arange(12.0)
    # NaN on every resample that repeats unit 0 more than once: the rest still give an interval.
    stat = lambda v: float(v.mean()) if np.sum(v == 0) < 2 else float("nan")  # noqa: E731
    ci, dist = bootstrap_interval(stat, x, resamples=400, seed=2, distribution=True)
    assert np.isnan(dist).any() and not np.isnan(dist).all()
    assert ci == pytest.approx(tuple(np.percentile(dist[~np.isnan(dist)], [2.5, 97.5])))
    assert bootstrap_interval(lambda v: float("nan"), x, resamples=50) is None
    assert percentile_interval(np.full(10, np.nan), 0.9) is None


def test_fewer_than_two_units_or_clusters_give_no_interval():
    assert bootstrap_interval(mean, np.array([3.0]), vectorized=True) is None
    assert bootstrap_interval(mean, np.array([3.0]), distribution=True) == (None, None)
    assert bootstrap_interval(np.mean, np.arange(5.0), groups=np.zeros(5)) is None
    assert bootstrap_interval(lambda a, b: a.mean() / b.mean(), np.ones(5), np.ones(1), paired=False) is None


@pytest.mark.parametrize("kw, message", [
    (dict(resamples=0), "resamples"), (dict(resamples=-5), "resamples"), (dict(resamples=2.5), "resamples"),
    (dict(confidence=0.0), "confidence"), (dict(confidence=1.0), "confidence"), (dict(confidence=95), "confidence"),
])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(mean, np.arange(10.0), **kw)


def test_ambiguous_or_misaligned_samples_are_refused():
    x, y = np.arange(10.0), np.arange(10.0)
    with pytest.raises(ValueError, match="paired"):
        bootstrap_interval(lambda a, b: a.mean() - b.mean(), x, y)  # paired or not must be said
    with pytest.raises(ValueError, match="same number of rows"):
        bootstrap_interval(lambda a, b: a.mean() - b.mean(), x, y[:5], paired=True)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_interval(np.mean, x, groups=np.arange(5))
    with pytest.raises(ValueError, match="paired"):
        bootstrap_interval(lambda a, b: a.mean(), x, y, groups=np.arange(10) // 2, paired=False)
