"""The power of an online experiment: CUPED rates and minimum detectable effects.

A rate per 1,000 served impressions is a ratio of sums over an arm's users, R = sum(Y) / sum(N)
(Y a user's engagements of one outcome, N the user's served impressions). Its variance over users
is that of the delta method's linearization `L_i = 1000 * (Y_i - R * N_i) / mean(N)`: var(R) =
var(L) / n (Deng et al. 2013, "Improving the sensitivity of online controlled experiments by
utilizing pre-experiment data", the ratio-metric case).

CUPED (same paper): with a covariate X fixed before the experiment (here each user's engagement of
the pre-period, the warm-up days no arm served, linearized the same way against the pre-period's
own rate: `pre_period_covariate`), the arm's estimate is `1000 R - theta * (mean_arm(X) - mu)`,
theta = cov(L, X) / var(X) in the arm, mu the covariate's mean over every user of the experiment
(the arms are random splits of them, so mean_arm(X) estimates mu and the shift has expectation 0).
Its variance is var(L - theta X) / n = var(L) (1 - corr(L, X)^2) / n: the part of the users'
spread that their past already explains is taken out. With a constant covariate theta is 0 and
the estimate is the plain rate.

`mde(se_a, se_b)`: the smallest true difference between two arms that a two-sided test at level
alpha detects with the given power, (z_{1 - alpha/2} + z_power) * sqrt(se_a^2 + se_b^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

Z95 = NormalDist().inv_cdf(0.975)


def linearized(users: pd.DataFrame, outcome: str) -> np.ndarray:
    """Per user `1000 * (Y - R * N) / mean(N)` of `<outcome>s_per_1k` (per_user's layout: columns
    `impressions` and the outcome); its mean is 0 and var / n is the rate's delta-method variance."""
    y = users[outcome].to_numpy(dtype=np.float64)
    n = users["impressions"].to_numpy(dtype=np.float64)
    if len(n) == 0 or n.sum() <= 0:
        return np.zeros(len(n))
    return 1000.0 * (y - y.sum() / n.sum() * n) / n.mean()


def pre_period_covariate(pre_users: pd.DataFrame, outcome: str, users: pd.Index) -> pd.Series:
    """Each of `users`' linearized engagement of the pre-period (`pre_users`: per_user of the
    pre-period's impressions, all users of it), 0 for a user the pre-period did not see."""
    if len(pre_users) == 0:
        return pd.Series(0.0, index=users)
    x = pd.Series(linearized(pre_users, outcome), index=pre_users.index)
    return x.reindex(users, fill_value=0.0)


@dataclass(frozen=True)
class CupedEstimate:
    """One arm's rate per 1,000 (plain and CUPED) with standard errors over users."""

    rate: float
    se: float  # the plain rate's delta-method standard error
    rate_cuped: float
    se_cuped: float
    theta: float
    users: int

    @property
    def ci95(self) -> float:
        return Z95 * self.se

    @property
    def ci95_cuped(self) -> float:
        return Z95 * self.se_cuped

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "ci95": self.ci95, "ci95_cuped": self.ci95_cuped}


def cuped_rate(
    users: pd.DataFrame, covariate: pd.Series, outcome: str, population_mean: float | None = None
) -> CupedEstimate:
    """The arm's `<outcome>s_per_1k`, plain and CUPED (module docstring). `covariate` is indexed by
    user (the arm's users are looked up, 0 where missing); `population_mean` is the covariate's
    mean over every user of the experiment (None: the arm's own, which leaves the estimate as it is
    and only narrows its interval)."""
    n_users = len(users)
    imp = float(users["impressions"].sum()) if n_users else 0.0
    rate = 1000.0 * float(users[outcome].sum()) / imp if imp else float("nan")
    if n_users < 2:
        return CupedEstimate(rate, float("nan"), rate, float("nan"), 0.0, n_users)
    lin = linearized(users, outcome)
    x = covariate.reindex(users.index, fill_value=0.0).to_numpy(dtype=np.float64)
    var_x = float(np.var(x, ddof=1))
    theta = float(np.cov(lin, x, ddof=1)[0, 1] / var_x) if var_x > 0 else 0.0
    mu = float(x.mean()) if population_mean is None else float(population_mean)
    adjusted = lin - theta * x
    return CupedEstimate(
        rate=rate,
        se=float(np.sqrt(np.var(lin, ddof=1) / n_users)),
        rate_cuped=rate - theta * (float(x.mean()) - mu),
        se_cuped=float(np.sqrt(np.var(adjusted, ddof=1) / n_users)),
        theta=theta,
        users=n_users,
    )


def mde(se_a: float, se_b: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference between two independent estimates (module docstring)."""
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0) + NormalDist().inv_cdf(power)
    return float(z * np.sqrt(se_a**2 + se_b**2))


def users_of_events(events: pd.DataFrame) -> pd.DataFrame:
    """`monitoring.online.per_user`'s layout from contract rows (an engaged impression is an
    `impression` row and its engagement's row): impressions and each rate outcome's rows per user."""
    from monitoring.online import RATE_OUTCOMES

    counts = pd.crosstab(events["user_id"], events["outcome"]) if len(events) else pd.DataFrame()
    out = pd.DataFrame(index=counts.index)
    for column, outcome in (("impressions", "impression"), *((o, o) for o in RATE_OUTCOMES)):
        out[column] = counts[outcome] if outcome in counts else 0
    return out.astype("int64")


def arm_rows(
    log: pd.DataFrame,
    pre_users: pd.DataFrame,
    arms: Sequence[str],
    catalogue_size: int,
    reference: str = "pinrec",
    outcomes: Sequence[str] = ("save", "click"),
) -> list[dict[str, float | str]]:
    """One row per arm of a serving log (`arm` column): `group_metrics`'s figures (bootstrap
    intervals), and per outcome of `outcomes` the CUPED rate `<o>s_per_1k_cuped` with its 95%
    half-width `ci95_<o>s_per_1k_cuped` (covariate: `pre_users`, per_user of the pre-period's
    contract rows, `users_of_events`; mu over every user of the log), the CUPED difference to the
    `reference` arm `<o>s_per_1k_cuped_minus_<reference>` and `mde_<o>s_per_1k`, the difference to
    it a two-sided 5% test detects with 80% power (the reference's own row: against an arm of its
    own size and spread)."""
    from monitoring.online import group_metrics, per_user

    everyone = per_user(log).index
    covariates = {o: pre_period_covariate(pre_users, o, everyone) for o in outcomes}
    rows: dict[str, dict] = {}
    estimates: dict[str, dict[str, CupedEstimate]] = {}
    for arm in arms:
        arm_log = log[log["arm"] == arm]
        users = per_user(arm_log)
        estimates[arm] = {o: cuped_rate(users, covariates[o], o, float(covariates[o].mean())) for o in outcomes}
        rows[arm] = {"name": arm, **group_metrics(arm_log, catalogue_size)}
        for o, est in estimates[arm].items():
            rows[arm][f"{o}s_per_1k_cuped"] = est.rate_cuped
            rows[arm][f"ci95_{o}s_per_1k_cuped"] = est.ci95_cuped
    for arm in arms:
        ref = estimates.get(reference, estimates[arm])
        for o, est in estimates[arm].items():
            rows[arm][f"{o}s_per_1k_cuped_minus_{reference}"] = est.rate_cuped - ref[o].rate_cuped
            rows[arm][f"mde_{o}s_per_1k"] = mde(est.se_cuped, ref[o].se_cuped)
    return [rows[a] for a in arms]
