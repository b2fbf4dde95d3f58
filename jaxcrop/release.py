"""A model release: the folder `python -m jaxcrop.export` writes and predict accepts.

  DIR/config.json, DIR/dataset_meta.json     as in the training workdir
  DIR/checkpoints/<best|last>/<step>/        the one checkpoint (model arrays, their
                                             digest; no optimizer state)
  DIR/calibration.json                       the temperature (when fitted)
  DIR/season_reference.json                  the training calendar (season alignment)
  DIR/MODEL_CARD.md, DIR/mlm.json            the model card, the STAC MLM Item
                                             (`jaxcrop.modelcard`)
  DIR/MANIFEST.json                          {"format": "jaxcrop-release/1",
                                             "files": {path: sha256}} of every file above

`verify(DIR)` (predict calls it on its --workdir) recomputes the digests: a file
of the manifest that is missing or whose SHA-256 differs is one UserError line
naming it. A folder without MANIFEST.json is a training workdir, not checked here
(its checkpoints carry their own digest, `jaxcrop.checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import pathlib

from cropcontracts.errors import UserError

FORMAT = "jaxcrop-release/1"
MANIFEST = "MANIFEST.json"


def sha256(path) -> str:
  """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def manifest(folder) -> dict:
  """The manifest of every file under folder (relative POSIX paths, sorted)."""
  folder = pathlib.Path(folder)
  files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
  return {"format": FORMAT,
          "files": {p.relative_to(folder).as_posix(): sha256(p) for p in files}}


def is_release(folder) -> bool:
  s = str(folder)
  return "://" not in s and (pathlib.Path(s) / MANIFEST).is_file()


def verify(folder) -> bool:
  """Checks a release's files against its manifest (UserError on the first that is
  missing or altered); False when `folder` is not a release (no manifest)."""
  if not is_release(folder):
    return False
  folder = pathlib.Path(folder)
  try:
    listed = json.loads((folder / MANIFEST).read_text())
  except ValueError:
    listed = {}
  if not isinstance(listed, dict) or listed.get("format") != FORMAT:
    raise UserError(f"{folder / MANIFEST}: not a {FORMAT} manifest; export the model "
                    f"again (python -m jaxcrop.export)")
  for name, digest in listed["files"].items():
    path = folder / name
    if not path.is_file():
      raise UserError(f"{path}: missing from the model release ({MANIFEST} lists it); "
                      f"copy the release again or export it again (python -m jaxcrop.export)")
    if sha256(path) != digest:
      raise UserError(f"{path}: altered since the model release was made (its SHA-256 "
                      f"differs from {MANIFEST}); copy the release again or export it again")
  return True
