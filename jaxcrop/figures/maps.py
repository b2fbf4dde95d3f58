"""Map figures of a zone: the predicted classes beside the ground truth, and the
error map (correct / wrong / no label / no data). Maps are drawn with
nearest-neighbour sampling, so the colours in the PNG are exactly the nomenclature's."""
from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np

from cropcontracts.zonefolder import NO_LABEL
from jaxcrop.figures.style import NO_DATA_RGB, NO_LABEL_RGB, hex_color, pyplot, save
from cropcontracts import nomenclature as nomenclature_lib

# Okabe–Ito blue and vermillion: told apart under every common colour-vision deficiency.
ERROR_COLORS = {"correct": "#0072b2", "wrong": "#d55e00", "no label": "#ebebeb",
                "no data": "#000000"}


def class_rgb(nom, ids: np.ndarray, none_rgb=NO_LABEL_RGB) -> np.ndarray:
  """uint8 [H, W, 3] nomenclature colours of class ids [H, W] (255 → `none_rgb`)."""
  table = np.tile(np.array(none_rgb, np.uint8), (256, 1))
  table[:nom.num_classes] = nom.rgb()
  return table[ids]


def legend_handles(nom, classes: Sequence[int]):
  import matplotlib.patches as mpatches
  return [mpatches.Patch(facecolor=nom.colors[k], edgecolor="none", label=nom.tier3[k])
          for k in classes]


def missing_handles(*, no_label: bool, no_data: bool):
  """Legend patches for the pixels without a class that a figure shows."""
  import matplotlib.patches as mpatches
  shown = [("no label (RPG)", NO_LABEL_RGB, no_label), ("no data", NO_DATA_RGB, no_data)]
  return [mpatches.Patch(facecolor=hex_color(rgb), edgecolor="#555555", linewidth=0.5, label=name)
          for name, rgb, on in shown if on]


def plot_prediction(classes: np.ndarray, labels: np.ndarray | None, out, *, nom=None,
                    title: str = "") -> pathlib.Path:
  """Predicted map next to the ground truth (alone without labels), one legend of the
  classes shown plus "no label" / "no data" when such pixels are shown.

  Args:
    classes: uint8 [H, W] predicted classes (255 = no data, black).
    labels: uint8 [H, W] true classes (255 = no label, light grey), or None for a zone
      without labels.
  Figure: 12 x 6.5 in with labels, 7 x 7.5 in without, at 100 dpi.
  """
  nom = nom or nomenclature_lib.load()
  plt = pyplot()
  panels = [(class_rgb(nom, classes, NO_DATA_RGB), "prediction")]
  if labels is not None:
    panels.append((class_rgb(nom, labels), "ground truth (RPG)"))
  width, height = (12, 6.5) if labels is not None else (7, 7.5)
  fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False)
  for ax, (rgb, name) in zip(axes[0], panels):
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(name if labels is not None or not title else f"{title}: {name}")
    ax.set_axis_off()
  shown = np.unique(classes) if labels is None else np.union1d(np.unique(classes),
                                                                np.unique(labels))
  shown = [int(k) for k in shown if k < nom.num_classes]         # drops 255
  handles = legend_handles(nom, shown) + missing_handles(
      no_label=labels is not None and bool((labels == NO_LABEL).any()),
      no_data=bool((classes == NO_LABEL).any()))
  ncol = min(6 if labels is not None else 4, len(handles) or 1)
  fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.005), ncol=ncol,
             fontsize=9, frameon=False)
  if labels is not None:
    fig.suptitle(title)
  # Room for the legend's rows (~0.19 in each at 9 pt): the maps take the rest.
  legend_h = (0.25 + 0.19 * math.ceil(len(handles) / ncol)) / height
  fig.subplots_adjust(bottom=legend_h, top=0.9 if labels is not None else 0.94, left=0.02,
                      right=0.98, wspace=0.05)
  return save(fig, out)


def error_map(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """uint8 [H, W]: 0 correct, 1 wrong, 2 no label, 3 no data (no prediction).

  No data wins over no label: its area is then the same as in the prediction map.
  """
  err = np.where(labels == NO_LABEL, 2, (classes != labels).astype(np.uint8))
  return np.where(classes == NO_LABEL, 3, err).astype(np.uint8)


def plot_errors(classes: np.ndarray, labels: np.ndarray, out, *,
                title: str = "") -> pathlib.Path:
  """Map of correct / wrong / no label / no data pixels, with the pixel accuracy.

  Colour-blind safe: blue correct, vermillion wrong, light grey no label, black no
  data; "no label" and "no data" are in the legend only when present. 8 x 8.5 in.
  """
  from matplotlib.colors import ListedColormap
  import matplotlib.patches as mpatches
  plt = pyplot()
  err = error_map(classes, labels)
  fig, ax = plt.subplots(figsize=(8, 8.5))
  ax.imshow(err, cmap=ListedColormap(list(ERROR_COLORS.values())), vmin=0, vmax=3,
            interpolation="nearest")
  ax.set_axis_off()
  scored = err < 2
  acc = float((err[scored] == 0).mean()) if scored.any() else float("nan")
  ax.set_title(f"{title + ': ' if title else ''}pixel accuracy {acc:.3f} over "
               f"{int(scored.sum()):,} labelled pixels")
  shown = [n for i, n in enumerate(ERROR_COLORS) if i < 2 or (err == i).any()]
  fig.legend(handles=[mpatches.Patch(facecolor=ERROR_COLORS[n], edgecolor="#555555",
                                     linewidth=0.5, label=n) for n in shown],
             loc="lower center", ncol=len(shown), frameon=False)
  # Fixed margins: constrained layout clips the title of a square image this tall.
  fig.subplots_adjust(bottom=0.06, top=0.95, left=0.03, right=0.97)
  return save(fig, out)
