"""Whether a checkpoint fits what it is asked to map: every zone (months, bands,
nomenclature), the tile shape, and this code's nomenclature table. Checked once,
before any model work (`python -m jaxcrop.predict`), so that a mistake is one
line, not a traceback after minutes. The options themselves are checked when a
`tiling.MapSettings` is made, an output folder by `geotiff.check_output`.
"""
from __future__ import annotations

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zonefolder import ZoneFolder


def check_compatible(zone: ZoneFolder, meta) -> None:
  """Raises UserError when the zone's months, bands or nomenclature differ from
  those the checkpoint was trained on."""
  where = f"zone {zone.zone_id} ({zone.path})"
  if len(zone.months) != len(meta.months):
    raise UserError(
        f"{where} has {len(zone.months)} months, the checkpoint was trained on "
        f"{len(meta.months)} ({meta.months[0]}..{meta.months[-1]}); composite the zone "
        f"with the same months")
  if list(zone.bands) != list(meta.bands):
    raise UserError(
        f"{where} has bands {list(zone.bands)}, the checkpoint was trained on "
        f"{list(meta.bands)}; composite the zone with the same bands")
  if zone.nomenclature and zone.nomenclature != meta.nomenclature_version:
    raise UserError(
        f"{where} is labelled with nomenclature {zone.nomenclature}, the checkpoint "
        f"predicts nomenclature {meta.nomenclature_version}; relabel the zone "
        f"(`python -m prep labels`) or use a checkpoint trained on {zone.nomenclature}")


def check_tile(apply_fn, variables, meta, settings) -> None:
  """Traces the model on one tile of `settings` (a tiling.MapSettings; no compute):
  a tile the model cannot take (e.g. a side not divisible by the U-Net's
  downsampling) becomes a one-line error. With settings.valid_count the model
  also takes valid_count [B, T, tile, tile]."""
  import jax
  tile = settings.tile
  shape = (1, len(meta.months), tile, tile)
  x = jax.ShapeDtypeStruct(shape + (len(meta.bands),), np.float32)
  inputs = ({"valid_count": jax.ShapeDtypeStruct(shape, np.float32)}
            if settings.valid_count else {})
  try:
    jax.eval_shape(lambda v, x, i: apply_fn(v, x, **i), variables, x, inputs)
  except ValueError as e:
    raise UserError(f"--tile {tile} does not fit the model: {e}") from None


def checkpoint_nomenclature(meta, workdir):
  """The nomenclature table of the checkpoint's version, checked against the
  class names and colours the checkpoint was trained with (the maps' names and
  colour table come from the table)."""
  from cropcontracts import nomenclature as nomenclature_lib
  v = meta.nomenclature_version
  try:
    nom = nomenclature_lib.load(v)
  except UserError as e:
    raise UserError(f"--workdir {workdir}: the checkpoint predicts nomenclature {v}, "
                    f"which this code does not have ({e}); use the jaxcrop version "
                    f"it was trained with") from None
  ours, theirs = list(nom.tier3), list(meta.class_names)
  if ours != theirs:
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
             min(len(ours), len(theirs)))
    raise UserError(
        f"--workdir {workdir}: the checkpoint's classes differ from nomenclature {v} of "
        f"this code from class {k} on ({theirs[k] if k < len(theirs) else 'none'!r} vs "
        f"{ours[k] if k < len(ours) else 'none'!r}); the table was edited without a new "
        f"version: restore it, or retrain")
  return nom
