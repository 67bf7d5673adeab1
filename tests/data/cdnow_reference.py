"""Reference values for tests/tests/cdnow.rs, from an implementation that is
not Rapport's: the lifetimes library (0.11.3), fitted on the CDNOW sample
exactly as Rapport sees it (purchases of a day summed into one occasion,
calibration up to and including 1997-09-30, times in days / 7).

    python3 -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3
    /tmp/lt/bin/python tests/data/cdnow_reference.py

Not run by `make test`: its output is written into the test by hand.
"""
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter

warnings.filterwarnings("ignore")
SAMPLE = Path(__file__).with_name("cdnow_sample.txt")
END = pd.Timestamp("1997-09-30")
CUSTOMERS = [1, 2, 18, 28, 157, 1516, 2357]
HORIZON_DAYS = 90
CLV_DAYS = 365
MONTHLY_DISCOUNT = 0.01

rows = [line.split() for line in SAMPLE.read_text().splitlines() if line.strip()]
orders = pd.DataFrame(rows, columns=["original_id", "id", "date", "quantity", "dollars"])
orders["id"] = orders["id"].astype(int)
orders["cents"] = (orders["dollars"].astype(float) * 100).round().astype(int)
orders["date"] = pd.to_datetime(orders["date"])
days = (
    orders[orders["date"] <= END]
    .groupby(["id", "date"])["cents"]
    .sum()
    .reset_index()
    .sort_values(["id", "date"])
)
by_customer = days.groupby("id")
first, last = by_customer["date"].min(), by_customer["date"].max()
x = (by_customer.size() - 1).astype(float)
t_x = (last - first).dt.days / 7
age = (END - first).dt.days / 7
repeat_cents = by_customer["cents"].sum() - by_customer["cents"].first()
mean_repeat = (repeat_cents / x.where(x > 0)).fillna(0)

bg_nbd = BetaGeoFitter().fit(x, t_x, age, tol=1e-10)
r, alpha, a, b = (bg_nbd.params_[name] for name in ["r", "alpha", "a", "b"])
print(f"BG/NBD over {len(x)} customers: r={r:.6f} alpha={alpha:.6f} a={a:.6f} b={b:.6f}")

repeaters = x > 0
# Fitted in dollars, where lifetimes' optimiser converges; gamma scales with
# the unit of money, p and q do not.
gamma_gamma = GammaGammaFitter().fit(x[repeaters], mean_repeat[repeaters] / 100, tol=1e-12)
gamma_gamma.params_["v"] *= 100
p, q, v = (gamma_gamma.params_[name] for name in ["p", "q", "v"])
print(f"Gamma-Gamma over {repeaters.sum()} repeat buyers: p={p:.6f} q={q:.6f} gamma={v:.4f} (cents)")


def scalar(value):
    return np.asarray(value).item()


for customer in CUSTOMERS:
    arguments = (x[customer], t_x[customer], age[customer])
    p_alive = scalar(bg_nbd.conditional_probability_alive(*arguments))
    expected = scalar(
        bg_nbd.conditional_expected_number_of_purchases_up_to_time(HORIZON_DAYS / 7, *arguments)
    )
    value = scalar(gamma_gamma.conditional_expected_average_profit(x[customer], mean_repeat[customer]))
    # Months of 30 days, the last one shorter, each discounted at its end.
    clv, before = 0.0, 0.0
    for month_end in list(range(30, CLV_DAYS, 30)) + [CLV_DAYS]:
        by_end = scalar(
            bg_nbd.conditional_expected_number_of_purchases_up_to_time(month_end / 7, *arguments)
        )
        clv += value * (by_end - before) / (1 + MONTHLY_DISCOUNT) ** (month_end / 30)
        before = by_end
    print(
        f"customer {customer}: x={x[customer]:.0f} p_alive={p_alive:.8f} "
        f"expected_{HORIZON_DAYS}d={expected:.8f} order_value={value:.4f} clv_{CLV_DAYS}d={clv:.4f}"
    )
