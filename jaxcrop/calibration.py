"""How far to trust a pixel's confidence: temperature scaling, ECE, reliability curves.

A softmax probability is *calibrated* when, among the pixels given confidence
p, a fraction p is right. Networks trained with cross-entropy are usually
over-confident; temperature scaling (Guo et al., 2017, "On calibration of
modern neural networks") divides the logits by one scalar T > 0 fitted on held-out
data by minimizing the negative log-likelihood. It changes no argmax, so no map
class and no score changes, only the confidences and probabilities.

The expected calibration error (ECE) sorts pixels into B equal-width confidence
bins (lo, hi] and averages |accuracy - mean confidence| over the bins, weighted
by their share of pixels; 15 bins as in Guo et al. The reliability curve is the
per-bin accuracy against the per-bin mean confidence.

Pure numpy functions of flat pixel arrays (N pixels, K classes); what reads a
workdir and writes calibration.json is `jaxcrop.calibrate`.
"""
from __future__ import annotations

import numpy as np

BINS = 15
# The temperatures fit_temperature may return: an untrained model whose argmax is
# worse than chance would otherwise be cooled towards T = infinity (uniform).
T_MIN, T_MAX = 0.05, 100.0


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """float64 [N, K] log-probabilities of logits float [N, K] divided by `temperature`."""
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
  """Mean negative log-likelihood of labels int [N] under logits [N, K] / temperature."""
  lp = log_softmax(logits, temperature)
  return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, iters: int = 50,
                    tol: float = 1e-8) -> float:
  """The temperature T > 0 minimizing nll(logits, labels, T).

  Newton's method on beta = 1 / T, in which the NLL is convex:
  d/dbeta = mean(E_p[z] - z_y), d2/dbeta2 = mean(Var_p[z]) (p the tempered
  softmax). A step that would make beta non-positive is halved; T is kept in
  [T_MIN, T_MAX].

  Args:
    logits: float [N, K]; labels: int [N] in [0, K).
  Returns:
    T (1.0 for no pixel or logits with no spread).
  """
  z = np.asarray(logits, np.float64)
  if not len(z):
    return 1.0
  zy = z[np.arange(len(labels)), labels]
  beta = 1.0
  for _ in range(iters):
    p = np.exp(log_softmax(z, 1.0 / beta))
    mean = (p * z).sum(-1)
    grad = float((mean - zy).mean())
    hess = float(((p * z * z).sum(-1) - mean ** 2).mean())
    if hess <= 1e-12:
      break
    step = grad / hess
    while beta - step <= 0:
      step /= 2
    beta = min(max(beta - step, 1 / T_MAX), 1 / T_MIN)
    if abs(step) < tol * beta or beta in (1 / T_MAX, 1 / T_MIN):
      break
  return float(1.0 / beta)


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
  """int [N] bin of each confidence in [0, 1]: bins (lo, hi] of width 1/bins
  (0 goes to the first bin)."""
  c = np.asarray(confidence, np.float64)
  return np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict:
  """The reliability curve.

  Args:
    confidence: float [N] in [0, 1]; correct: bool [N].
  Returns:
    {"edges": float [bins + 1], "count": int [bins], "confidence": float [bins]
    mean confidence per bin, "accuracy": float [bins] (NaN in an empty bin)}.
  """
  b = bin_index(confidence, bins)
  count = np.bincount(b, minlength=bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    conf = np.bincount(b, weights=np.asarray(confidence, np.float64), minlength=bins) / count
    acc = np.bincount(b, weights=np.asarray(correct, np.float64), minlength=bins) / count
  return {"edges": np.linspace(0, 1, bins + 1), "count": count, "confidence": conf,
          "accuracy": acc}


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
  """Expected calibration error: sum over bins of count/N * |accuracy - confidence|
  (confidence float [N], correct bool [N]); 0.0 for no pixel."""
  r = reliability(confidence, correct, bins)
  n = r["count"].sum()
  if not n:
    return 0.0
  ok = r["count"] > 0
  return float((r["count"][ok] / n * np.abs(r["accuracy"][ok] - r["confidence"][ok])).sum())


def tier_probs(probs: np.ndarray, parents: np.ndarray, num: int) -> np.ndarray:
  """float [N, num]: the probability of each tier-t class, the sum of its
  tier-3 classes' (probs float [N, K3], parents int [K3] their tier-t ids)."""
  out = np.zeros((probs.shape[0], num), probs.dtype)
  np.add.at(out.T, np.asarray(parents), probs.T)
  return out


def tier_confidence(probs: np.ndarray, labels: np.ndarray, parents: np.ndarray,
                    num: int) -> tuple[np.ndarray, np.ndarray]:
  """(confidence float [N], correct bool [N]) at tier t, as the tier maps are
  made: the tier-t class is the parent of the tier-3 argmax
  (`jaxcrop.maps.tiling.tier_maps`), its confidence the summed probability of
  that class (`tier_probs`), correct when it is the label's parent.

  probs float [N, K3], labels int [N] tier-3 ids, parents int [K3].
  """
  parents = np.asarray(parents)
  pred = parents[probs.argmax(-1)]
  conf = tier_probs(probs, parents, num)[np.arange(len(pred)), pred]
  return conf, pred == parents[labels]
