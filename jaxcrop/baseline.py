"""A per-pixel gradient-boosting baseline on the same normalized data as the model.

Each labelled pixel is one sample of T·C features (its monthly band values, no
spatial context): what the hybrid model adds over it is the temporal CNN and
the U-Net's view of the neighbourhood. Trained on a random subsample of the
training split's labelled pixels (at most `max_pixels`), cached in
`workdir/baseline/` (reused while max_pixels, max_iter, split, seed and classes
match: a baseline of another nomenclature is refitted); `max_iter` = boosting
iterations. It is scored like the model (`jaxcrop.evaluate`): with a background
class (nomenclature v3 on) it learns the background from the labelled pixels
outside the parcels like any class, and gets the same crop macro-F1, miou_all,
background and agricultural-area scores.
"""
from __future__ import annotations

import json
import pickle

import numpy as np

from cropcontracts import atomic
from cropcontracts.zonefolder import NO_LABEL


def pixel_features(image) -> np.ndarray:
  """float [B, T, H, W, C] → float32 [B·H·W, T·C] (pixels in B, H, W order)."""
  b, t, h, w, c = image.shape
  return np.moveaxis(np.asarray(image, np.float32), 1, 3).reshape(b * h * w, t * c)


def make_classifier(seed: int, max_iter: int = 100):
  """scikit-learn's histogram gradient boosting, `max_iter` iterations, no early stop."""
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  return ensemble.HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                                 random_state=seed)


def sample_pixels(batches, total_labelled: int, max_pixels: int, seed: int):
  """(features [N, T·C], labels [N]) from a random share of the labelled pixels.

  Each labelled pixel is kept with probability max_pixels / total_labelled, so
  one pass over the split gives ≈ max_pixels samples spread over all zones.
  """
  rng = np.random.default_rng(seed)
  keep = min(1.0, max_pixels / max(total_labelled, 1))
  xs, ys = [], []
  for batch in batches:
    label = np.asarray(batch["label"])
    if "mask" in batch:
      label = np.where(np.asarray(batch["mask"])[:, None, None] > 0, label, NO_LABEL)
    y = label.reshape(-1)
    chosen = (y != NO_LABEL) & (rng.random(y.shape) < keep)
    xs.append(pixel_features(batch["image"])[chosen])
    ys.append(y[chosen])
  x, y = np.concatenate(xs), np.concatenate(ys)
  if len(y) > max_pixels:
    idx = rng.choice(len(y), max_pixels, replace=False)
    x, y = x[idx], y[idx]
  return x, y


def fit_or_load(workdir, batches_fn, *, total_labelled: int, max_pixels=200_000,
                max_iter=100, seed=0, train_split="", classes=()):
  """The fitted classifier, from workdir/baseline/ when its settings match
  (`classes`: the class names it predicts)."""
  from jaxcrop.checkpoint import workdir_path  # pylint: disable=g-import-not-at-top
  folder = workdir_path(workdir) / "baseline"   # local or gs://
  settings = dict(max_pixels=int(max_pixels), max_iter=int(max_iter), seed=int(seed),
                  train_split=train_split, classes=list(classes))
  model_path, settings_path = folder / "model.pkl", folder / "settings.json"
  if model_path.exists() and settings_path.exists() and \
      json.loads(settings_path.read_text()) == settings:
    return pickle.loads(model_path.read_bytes())
  x, y = sample_pixels(batches_fn(), total_labelled, max_pixels, seed)
  clf = make_classifier(seed, max_iter).fit(x, y)
  # Each file whole, the old settings gone first and the new ones last: an
  # interrupted refit never leaves another model under matching settings. The
  # temporaries of refits killed here go first (`atomic.claim`).
  with atomic.claim(folder, shared=True):
    if settings_path.exists():
      settings_path.unlink()
    atomic.write_bytes(model_path, pickle.dumps(clf))
    atomic.write_text(settings_path, json.dumps(settings))
  return clf


def predict(clf, image) -> np.ndarray:
  """Per-pixel classes uint8 [B, H, W] for image float [B, T, H, W, C]."""
  b, _, h, w, _ = image.shape
  return clf.predict(pixel_features(image)).astype(np.uint8).reshape(b, h, w)
