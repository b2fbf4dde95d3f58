"""The dataset metadata every cropmap config writes (`info.metadata`), whatever its source.

`dataset_metadata` is the one place that lays out the metadata's fields: the
nomenclature's class tables, months, bands, per-split counts, and the per-fold
normalization moments with their merge over all training folds. The zone configs
(`cropmap_dataset_builder`) and the points config (`points`) fill it from their
own reads; `jaxcrop.input_pipeline.load_meta` reads it without the builder code.
"""
from __future__ import annotations

from cropcontracts import moments as moments_lib
from tfds_builder.cropmap import patching


def dataset_metadata(nom, *, months, bands, patch_size: int, num_folds: int,
                     counts: dict, examples: dict, dropped: dict, moments: dict,
                     members: dict) -> dict:
  """info.metadata of a build.

  Args:
    nom: the `cropcontracts.nomenclature.Nomenclature` of the labels.
    counts: {split: [K] labelled pixels per class}; examples: {split: examples
      kept}; dropped: {split: examples dropped}; moments: {training fold:
      Moments.to_json()}; members: {split: [zone or point ids]}.
  """
  return dict(
      nomenclature_version=nom.version, class_names=list(nom.tier3),
      tier2_names=list(nom.tier2_names), tier1_names=list(nom.tier1_names),
      tier2_of=nom.tier2_of().tolist(), tier1_of=nom.tier1_of().tolist(),
      colors=list(nom.colors), months=list(months), bands=list(bands),
      # Constants (the test split: each region's zone of index 0, every
      # patch), kept so that the metadata keeps the fields of version 2.0.0.
      patch_size=patch_size, test_full_cover=True, test_zone_index=patching.TEST_INDEX,
      num_folds=num_folds, zones_per_split=members,
      class_pixel_counts=counts, patches_per_split=examples,
      dropped_empty_patches=dropped, moments_per_fold=moments,
      normalization=normalization(moments))


def normalization(moments_per_fold: dict) -> dict:
  """Mean and std [T][C] over all training zones (every fold; never test), for
  readers that take the dataset as it is. Training with a subset of the folds
  merges that subset's `moments_per_fold` instead (`input_pipeline.load_meta`),
  so that validation zones stay out of the statistics."""
  folds = sorted(moments_per_fold)
  mean, std = moments_lib.mean_std(moments_lib.merge_all(
      moments_lib.Moments.from_json(moments_per_fold[f]) for f in folds))
  return dict(splits="+".join(folds), mean=mean.tolist(), std=std.tolist())
