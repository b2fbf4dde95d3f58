"""What every figure shares: the colours of the pixels without a class, the Agg
backend, the figure resolution and the atomic save.

A class has the same colour in every figure: its nomenclature colour
(`cropcontracts/data/classes_<version>.csv`). Pixels without a class: light grey where the
RPG gives no label, black where the imagery has no observation (no data).
"""
from __future__ import annotations

import pathlib

NO_LABEL_RGB = (235, 235, 235)       # no RPG label (ground truth)
NO_DATA_RGB = (0, 0, 0)              # no observation (prediction nodata), black as in the GIF
DPI = 100


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def hex_color(rgb) -> str:
  """'#rrggbb' of an (r, g, b) triple of 0-255 values."""
  return "#" + "".join(f"{int(c):02x}" for c in rgb)


def text_color(hex_color: str) -> str:
  """'black' or 'white', whichever reads better on `hex_color` (sRGB luma)."""
  r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
  return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


def save(fig, out) -> pathlib.Path:
  """Saves `fig` atomically at DPI in the format of `out`'s suffix and closes it."""
  from cropcontracts.atomic import atomic_path
  out = pathlib.Path(out)
  with atomic_path(out) as tmp:
    fig.savefig(tmp, dpi=DPI, format=out.suffix.lstrip(".") or "png")
  pyplot().close(fig)
  return out
