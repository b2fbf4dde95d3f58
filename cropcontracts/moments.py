"""Per-month, per-band moments of the composites, streamed and mergeable.

The builder computes them zone by zone (one strip of rows at a time) and stores
one set per fold in the dataset metadata; `jaxcrop.input_pipeline.load_meta`
merges the folds of the training split it is given, so the normalization always
comes from exactly the zones it trains on. Moments are (count, mean, M2) in
float64 and are merged with Chan et al.'s pairwise formula, which stays exact
where the textbook sum-of-squares formula cancels catastrophically.
Only valid pixels count: a value of 0 is nodata (no cloud-free observation).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Moments:
  """count, mean, m2 (sum of squared deviations): float64 [T, C] each."""
  count: np.ndarray
  mean: np.ndarray
  m2: np.ndarray

  @classmethod
  def zeros(cls, shape) -> "Moments":
    return cls(*(np.zeros(shape, np.float64) for _ in range(3)))

  def to_json(self) -> dict:
    return {k: getattr(self, k).tolist() for k in ("count", "mean", "m2")}

  @classmethod
  def from_json(cls, d: dict) -> "Moments":
    return cls(*(np.asarray(d[k], np.float64) for k in ("count", "mean", "m2")))


def moments_of(image: np.ndarray) -> Moments:
  """Moments of the non-zero values of a uint16 [T, H, W, C] block, per (T, C)."""
  x = image.astype(np.float64)
  valid = image != 0
  count = valid.sum(axis=(1, 2)).astype(np.float64)
  mean = np.where(valid, x, 0).sum(axis=(1, 2)) / np.maximum(count, 1)
  dev = np.where(valid, x - mean[:, None, None, :], 0)
  return Moments(count, mean, (dev * dev).sum(axis=(1, 2)))


def merge(a: Moments, b: Moments) -> Moments:
  """Moments of the union of two disjoint sets of pixels (Chan et al. 1979)."""
  n = a.count + b.count
  safe = np.maximum(n, 1)
  delta = b.mean - a.mean
  mean = a.mean + delta * b.count / safe
  m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / safe
  return Moments(n, np.where(n > 0, mean, 0.0), m2)


def merge_all(parts: Iterable[Moments]) -> Moments:
  parts = list(parts)
  total = Moments.zeros(parts[0].count.shape)
  for p in parts:
    total = merge(total, p)
  return total


def mean_std(m: Moments) -> tuple[np.ndarray, np.ndarray]:
  """float32 [T, C] mean and population std; std 1 where a band has < 2 values."""
  std = np.sqrt(m.m2 / np.maximum(m.count, 1))
  std = np.where((m.count > 1) & (std > 0), std, 1.0)
  return m.mean.astype(np.float32), std.astype(np.float32)
