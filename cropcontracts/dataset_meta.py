"""Contract 3: what a model needs to know about its dataset, without reading it.

`DatasetMeta` is built by `jaxcrop.input_pipeline.load_meta` from the TFDS
dataset's metadata, saved as `<workdir>/dataset_meta.json` beside every
checkpoint, and read back by evaluate and predict. `compatible_with` is the one
check that a dataset or a zone folder has the layout a checkpoint was trained
on (months, bands, classes, nomenclature).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np


@dataclasses.dataclass
class DatasetMeta:
  """What a model needs to know about the dataset, without reading it.

  mean, std: float32 [T, C] over the valid pixels of the training split's zones.
  class_pixel_counts: int [K] labelled pixels per class in the training split.
  tier2_of, tier1_of: int [K] parent index of each tier-3 class.
  """
  num_classes: int
  class_names: list
  tier2_names: list
  tier1_names: list
  tier2_of: np.ndarray
  tier1_of: np.ndarray
  colors: list
  months: list
  bands: list
  mean: np.ndarray
  std: np.ndarray
  class_pixel_counts: np.ndarray
  nomenclature_version: str
  version: str
  builder_config: str = ""
  patch_size: int = 0
  train_split: str = ""

  def to_json(self) -> str:
    d = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
         for k, v in dataclasses.asdict(self).items()}
    return json.dumps(d, indent=1)

  @classmethod
  def from_json(cls, text: str | dict) -> "DatasetMeta":
    d = json.loads(text) if isinstance(text, str) else dict(text)
    arrays = dict(tier2_of=np.int32, tier1_of=np.int32, mean=np.float32,
                  std=np.float32, class_pixel_counts=np.int64)
    for k, dtype in arrays.items():
      d[k] = np.asarray(d[k], dtype)
    return cls(**d)

  def compatible_with(self, other: "DatasetMeta") -> list[str]:
    """What differs between this layout and `other`'s (empty when compatible).

    A checkpoint can read data of another dataset version, split or
    normalization; it cannot read other months, bands or classes.
    """
    diffs = []
    if len(self.months) != len(other.months):
      diffs.append(f"{len(self.months)} months ({self.months[0]}..{self.months[-1]}) vs "
                   f"{len(other.months)} ({other.months[0]}..{other.months[-1]})")
    if list(self.bands) != list(other.bands):
      diffs.append(f"bands {list(self.bands)} vs {list(other.bands)}")
    if list(self.class_names) != list(other.class_names):
      diffs.append(f"classes: {len(self.class_names)} ({self.nomenclature_version}) vs "
                   f"{len(other.class_names)} ({other.nomenclature_version})")
    return diffs
