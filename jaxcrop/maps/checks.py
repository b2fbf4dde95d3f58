"""What a zone, a checkpoint, the tiling and the output folder must satisfy, checked
before any prediction so that a mistake is one line, not a traceback after minutes."""
from __future__ import annotations

import pathlib

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zonefolder import ZoneFolder


def check_tiling(tile: int, overlap: int, batch: int = 1) -> None:
  """Raises UserError on a tile side, overlap or batch that cannot work."""
  if tile < 1:
    raise UserError(f"--tile {tile} must be a positive number of pixels")
  if not 0 <= overlap < tile:
    raise UserError(f"--overlap {overlap} must be in [0, --tile {tile})")
  if batch < 1:
    raise UserError(f"--batch {batch} must be at least 1 tile")


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
        f"predicts nomenclature {meta.nomenclature_version}; relabel the zone or use a "
        f"checkpoint trained on {zone.nomenclature}")


def check_tile(apply_fn, variables, meta, tile: int, valid_count: bool = False) -> None:
  """Traces the model on one tile (no compute): a tile the model cannot take (e.g. a
  side not divisible by the U-Net's downsampling) becomes a one-line error.
  valid_count: the model also takes valid_count [B, T, tile, tile]."""
  import jax
  shape = (1, len(meta.months), tile, tile)
  x = jax.ShapeDtypeStruct(shape + (len(meta.bands),), np.float32)
  inputs = {"valid_count": jax.ShapeDtypeStruct(shape, np.float32)} if valid_count else {}
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


def check_output(folder: pathlib.Path, overwrite: bool) -> None:
  if folder.exists() and not overwrite:
    raise UserError(f"{folder}: output folder already exists; pass --overwrite to "
                       f"replace it or choose another --out")
