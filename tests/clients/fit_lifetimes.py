"""Fits BG/NBD and Gamma-Gamma with the lifetimes package (0.11.3) on the
CSV the analytics bench writes (x, t_x, T in weeks; m the mean repeat
value), as the yardstick for Rapport's own fits. Prints one JSON object:
each model's parameters and seconds, or the error it raised."""

import json
import sys
import time

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter

data = pd.read_csv(sys.argv[1])
answer = {}
try:
    started = time.time()
    purchases = BetaGeoFitter(penalizer_coef=0.0).fit(data["x"], data["t_x"], data["T"])
    answer["seconds"] = time.time() - started
    answer.update({name: float(value) for name, value in purchases.params_.items()})
except Exception as error:  # a yardstick that failed is reported, not fatal
    answer["error"] = repr(error)
spenders = data[(data["x"] > 0) & (data["m"] > 0)]
try:
    started = time.time()
    spend = GammaGammaFitter(penalizer_coef=0.0).fit(spenders["x"], spenders["m"])
    answer["gg_seconds"] = time.time() - started
    answer.update({"gg_" + name: float(value) for name, value in spend.params_.items()})
except Exception as error:
    answer["gg_error"] = repr(error)
print(json.dumps(answer))
