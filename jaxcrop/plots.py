"""Figures of maps, scores and data: PNG (matplotlib, Agg) and animated GIF (Pillow).

  python -m jaxcrop.plots all        --zones ZONES [--maps OUT] [--metrics METRICS] --out FIGS
  python -m jaxcrop.plots prediction --zone Z --pred OUT/<zone_id> --out pred.png
  python -m jaxcrop.plots errors     --zone Z --pred OUT/<zone_id> --out errors.png
  python -m jaxcrop.plots confusion  --zone Z --pred OUT/<zone_id> --out cm.png
  python -m jaxcrop.plots confusion  --metrics W/eval/metrics.json [--level parcel] --out cm.png
  python -m jaxcrop.plots f1         --metrics W/eval/metrics.json [--level parcel] --out f1.png
  python -m jaxcrop.plots distribution --zones ZONES --out classes.png
  python -m jaxcrop.plots gif        --zone Z --out months.gif [--scale 2]

A class has the same colour in every figure: its nomenclature colour
(`cropcontracts/data/classes_<version>.csv`, the version the zones, the map or the metrics
name). Maps are drawn with nearest-neighbour sampling, so the colours in the PNG are
exactly the nomenclature's. Pixels without a class: light grey where the RPG gives no
label, black where the imagery has no observation (no data), in maps and GIFs alike.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Sequence

import numpy as np

from jaxcrop import cli
from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL

NO_LABEL_RGB = (235, 235, 235)       # no RPG label (ground truth)
NO_DATA_RGB = (0, 0, 0)              # no observation (prediction nodata), black as in the GIF
# Okabe–Ito blue and vermillion: told apart under every common colour-vision deficiency.
ERROR_COLORS = {"correct": "#0072b2", "wrong": "#d55e00", "no label": "#ebebeb",
                "no data": "#000000"}
NDVI_RANGE = (-0.2, 0.9)
NDVI_CMAP = "RdYlGn"
GIF_MIN_WIDTH = 800                  # px: smaller frames hide the parcels
GAP = 4                              # px between the GIF's two panels, before scaling
DPI = 100


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _hex(rgb) -> str:
  return "#" + "".join(f"{int(c):02x}" for c in rgb)


def text_color(hex_color: str) -> str:
  """'black' or 'white', whichever reads better on `hex_color` (sRGB luma)."""
  r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
  return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


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
  return [mpatches.Patch(facecolor=_hex(rgb), edgecolor="#555555", linewidth=0.5, label=name)
          for name, rgb, on in shown if on]


def _save(fig, out) -> pathlib.Path:
  from cropcontracts.atomic import atomic_path
  out = pathlib.Path(out)
  with atomic_path(out) as tmp:
    fig.savefig(tmp, dpi=DPI, format=out.suffix.lstrip(".") or "png")
  _plt().close(fig)
  return out


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
  plt = _plt()
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
  return _save(fig, out)


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
  plt = _plt()
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
  return _save(fig, out)


def cell_fontsize(k: int) -> float:
  """Points for the numbers in a K x K confusion matrix of 11 x 10 in: as large as
  the cells allow ("100" fits a cell), at most 12; under 6 (K > 30) no numbers."""
  return float(min(12.0, 180.0 / max(k, 1)))


def support_labels(names: Sequence[str], support: np.ndarray) -> list[str]:
  """Row labels 'name  1,234' (support of each true class)."""
  return [f"{n}  {int(s):,}" for n, s in zip(names, support)]


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], out, *,
                   only_present: bool = True, title: str = "",
                   unit: str | None = None) -> pathlib.Path:
  """Row-normalized confusion matrix (rows: truth, % of the true class in the cells),
  class names on both axes, each row label with its support (in `unit`: "pixels",
  "parcels"; None: not named). 11 x 10 in.

  only_present: drop classes absent from both truth and prediction.
  """
  from matplotlib.ticker import PercentFormatter
  plt = _plt()
  cm = np.asarray(cm, np.float64)
  keep = np.arange(len(cm))
  if only_present:
    keep = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
  cm = cm[np.ix_(keep, keep)]
  rows = cm.sum(1, keepdims=True)
  norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  names = [class_names[k] for k in keep]
  fig, ax = plt.subplots(figsize=(11, 10), layout="constrained")
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
  tick = min(10.0, max(6.0, 200.0 / max(len(names), 1)))
  ax.set_xticks(range(len(names)), names, rotation=90, fontsize=tick)
  ax.set_yticks(range(len(names)), support_labels(names, rows[:, 0]), fontsize=tick)
  ax.set_xlabel("predicted class")
  ax.set_ylabel(f"true class  (support{': ' + unit if unit else ''})")
  size = cell_fontsize(len(names))
  if size >= 6:
    for (i, j), v in np.ndenumerate(norm):
      if v >= 0.005:
        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=size,
                color="white" if v > 0.5 else "black")
  fig.colorbar(im, ax=ax, shrink=0.8, format=PercentFormatter(1.0, decimals=0),
               label="share of the true class")
  ax.set_title(title or "confusion matrix (rows: % of the true class)")
  return _save(fig, out)


def per_class_rows(metrics: dict, level: str = "pixel", which: str = "model") -> list[dict]:
  """Per-class rows of an evaluation: `metrics[level][which]["per_class"]`, or a
  `summarize()` dict directly. Each row gets `name` (from `name` or `class`)."""
  m = metrics
  for key in (level, which):
    if isinstance(m, dict) and key in m and "per_class" not in m:
      m = m[key]
  if "per_class" not in m:
    raise UserError("metrics file has no per_class table (expected "
                    "{'pixel': {'model': {'per_class': [...]}}}); rerun jaxcrop.evaluate")
  return [dict(r, name=r.get("name", r.get("class"))) for r in m["per_class"]]


def baseline_f1(metrics: dict, level: str = "pixel") -> dict[str, float] | None:
  """{class name: F1} of the baseline at `level`; None when the evaluation has none
  (`jaxcrop.evaluate --nobaseline`, or a bare `summarize()` dict)."""
  base = metrics.get(level, {}).get("baseline")
  if not isinstance(base, dict) or "per_class" not in base:
    return None
  return {r["name"]: r["f1"] for r in per_class_rows(base)}


def metrics_nomenclature(metrics: dict):
  """The nomenclature named in a metrics file (`nomenclature_version` or
  `nomenclature`), else the default one."""
  version = metrics.get("nomenclature_version") or metrics.get("nomenclature")
  return nomenclature_lib.load(version) if isinstance(version, str) else nomenclature_lib.load()


def metrics_title(metrics: dict, level: str, what: str) -> str:
  """'<level> level, <split> split: <what>' (no split when the metrics lack one)."""
  split = metrics.get("split")
  return f"{level} level{f', {split} split' if split else ''}: {what}"


def confusion_from_metrics(metrics: dict, level: str = "pixel"):
  """(int [K, K], class names) of the model at `level` (pixel | parcel) from the
  metrics.json of jaxcrop.evaluate: `confusion_matrix["<level>_model"]`."""
  key = f"{level}_model"
  if key not in metrics.get("confusion_matrix", {}):
    raise UserError(f"metrics file has no confusion_matrix[{key!r}]; rerun "
                    f"jaxcrop.evaluate, or use --zone and --pred")
  names = [r["name"] for r in per_class_rows(metrics)]
  return np.asarray(metrics["confusion_matrix"][key]), names


def plot_metrics_confusion(metrics: dict, level: str, out) -> pathlib.Path:
  """The model's confusion matrix of an evaluation, titled with level and split."""
  cm, names = confusion_from_metrics(metrics, level)
  unit = f"{level}s"                 # pixels | parcels
  return plot_confusion(cm, names, out, unit=unit, title=metrics_title(
      metrics, level, "model confusion (rows: % of the true class)"))


def plot_per_class_f1(metrics: dict, out, *, nom=None, level: str = "pixel",
                      title: str = "") -> pathlib.Path:
  """Per-class F1 of the model (bars in class colours, value above each) and of the
  baseline (black ticks), above the true pixel counts (log scale); classes sorted by
  support: shows how scores follow the class imbalance. 12 x 8 in.

  nom: colours; default the nomenclature the metrics name (see metrics_nomenclature).
  """
  import matplotlib.lines as mlines
  import matplotlib.patches as mpatches
  nom = nom or metrics_nomenclature(metrics)
  plt = _plt()
  rows = [r for r in per_class_rows(metrics, level) if r.get("support", 0) > 0]
  rows.sort(key=lambda r: -r["support"])
  names = [r["name"] for r in rows]
  colors = [nom.colors[nom.tier3.index(n)] if n in nom.tier3 else "#777777" for n in names]
  f1 = np.array([r["f1"] for r in rows], np.float64)
  base = baseline_f1(metrics, level)
  fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, layout="constrained",
                               gridspec_kw=dict(height_ratios=(2, 1)))
  x = np.arange(len(rows))
  a1.bar(x, f1, color=colors)
  top = f1.copy()
  handles = [mpatches.Patch(facecolor="#bbbbbb", label="model (class colour)")]
  if base is not None:
    b = np.array([base.get(n, np.nan) for n in names], np.float64)
    a1.hlines(b, x - 0.42, x + 0.42, colors="black", linewidth=2.5, zorder=3)
    top = np.fmax(top, b)
    handles.append(mlines.Line2D([], [], color="black", linewidth=2.5, label="baseline"))
  for xi, t, v in zip(x, top, f1):
    a1.text(xi, t + 0.015, f"{v:.2f}", ha="center", va="bottom",
            fontsize=8 if len(rows) <= 30 else 6, rotation=0 if len(rows) <= 30 else 90)
  a1.set_ylim(0, 1.1)
  a1.set_yticks(np.linspace(0, 1, 6))
  a1.set_ylabel("F1")
  a1.grid(axis="y", alpha=0.3)
  a1.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncol=2, fontsize=9,
            frameon=False, borderaxespad=0.2)
  unit = f"{level}s"                 # pixels | parcels
  support = np.array([r["support"] for r in rows], np.float64)
  a2.bar(x, support, color=colors)
  a2.set_yscale("log")
  if len(support):
    a2.set_ylim(0.5 * support.min(), 2 * support.max())
    a2.set_xlim(-0.6, len(rows) - 0.4)
  a2.set_ylabel(f"true {unit} (log)")
  a2.set_xticks(x, names, rotation=90, fontsize=9)
  a2.set_xlabel(f"class (sorted by true {unit})")
  what = "per-class F1, model" + (" vs baseline" if base is not None else "")
  a1.set_title(title or metrics_title(metrics, level, what))
  return _save(fig, out)


def zones_nomenclature(zones):
  """The nomenclature of the labelled zones (one version for all of them), else the
  default one. Raises UserError on zones labelled with different versions."""
  versions = sorted({z.nomenclature for z in zones if z.has_labels and z.nomenclature})
  if len(versions) > 1:
    raise UserError(f"zone folders labelled with different nomenclatures {versions}; "
                    f"plot the zones of one version at a time")
  return nomenclature_lib.load(*versions)


def region_class_counts(zones) -> tuple[list[str], np.ndarray, list[str]]:
  """(regions, int [R, K] labelled pixels per region and class, class names) from
  the zone folders' meta.json `labels.class_pixel_counts` ({class name: pixels})."""
  nom = zones_nomenclature(zones)
  by_region: dict[str, np.ndarray] = {}
  for z in zones:
    if not z.has_labels:
      continue
    counts = z.meta["labels"].get("class_pixel_counts", {})
    v = np.array([counts.get(n, 0) for n in nom.tier3], np.int64)
    by_region[z.zone.region] = by_region.get(z.zone.region, 0) + v
  if not by_region:
    raise UserError("no labelled zone folder; run `python -m prep labels` first")
  regions = sorted(by_region)
  return regions, np.stack([by_region[r] for r in regions]), list(nom.tier3)


def plot_class_distribution(regions: Sequence[str], counts: np.ndarray, out, *,
                            nom=None, title: str = "", min_label: float = 0.05) -> pathlib.Path:
  """Stacked bars: share of each class in each region's labelled pixels, shares of at
  least `min_label` written in their segment. 12 x 7 in.

  counts: int [R, K], K classes of `nom` (pass the zones' nomenclature).
  """
  nom = nom or nomenclature_lib.load()
  plt = _plt()
  counts = np.asarray(counts, np.float64)
  share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(12, 7), layout="constrained")
  left = np.zeros(len(regions))
  for k in np.flatnonzero(counts.sum(0) > 0):
    ax.barh(regions, share[:, k], left=left, color=nom.colors[k], label=nom.tier3[k])
    for i in np.flatnonzero(share[:, k] >= min_label):
      ax.text(left[i] + share[i, k] / 2, i, f"{100 * share[i, k]:.0f} %", ha="center",
              va="center", fontsize=8, color=text_color(nom.colors[k]))
    left += share[:, k]
  ax.set_xlim(0, 1)
  ax.set_xlabel("share of labelled pixels")
  ax.invert_yaxis()
  for i, n in enumerate(counts.sum(1)):
    ax.text(1.01, i, f"{int(n):,} px", va="center", fontsize=8)
  fig.legend(loc="outside lower center", ncol=6, fontsize=9, frameon=False)
  ax.set_title(title or "class distribution per region")
  return _save(fig, out)


def stretch(rgb: np.ndarray, valid: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
  """uint8 [..., 3]: the three channels scaled with ONE lo–hi percentile range, taken
  over the valid pixels of all three channels together; 0 where not valid.

  One range for all channels keeps the ratios between bands, so a pixel with equal
  reflectance in B4, B3 and B2 stays grey and vegetation stays green. A separate
  range per channel gives every channel the same histogram and so shifts the colour
  balance: Sentinel-2's dim blue band is stretched most, the weak green least (the
  magenta cast). Cost: the image is as bluish-dim as reflectance is.
  """
  v = rgb[valid]
  a, b = np.percentile(v, (lo, hi)) if v.size else (0.0, 1.0)
  out = np.clip(255 * (rgb.astype(np.float32) - a) / max(b - a, 1e-6), 0, 255).astype(np.uint8)
  out[~valid] = 0
  return out


def ndvi(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
  """float32 [T, H, W] (B8 - B4) / (B8 + B4); NaN where nodata."""
  red = image[..., list(bands).index("B4")].astype(np.float32)
  nir = image[..., list(bands).index("B8")].astype(np.float32)
  with np.errstate(invalid="ignore", divide="ignore"):
    v = (nir - red) / (nir + red)
  return np.where((red > 0) | (nir > 0), v, np.nan).astype(np.float32)


def ndvi_rgb(v: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] RdYlGn colours of NDVI values, clipped to NDVI_RANGE (NaN → low end)."""
  import matplotlib
  lo, hi = NDVI_RANGE
  t = np.clip((np.nan_to_num(v, nan=lo) - lo) / (hi - lo), 0, 1)
  return (matplotlib.colormaps[NDVI_CMAP](t)[..., :3] * 255).astype(np.uint8)


def monthly_frames(image: np.ndarray, bands: Sequence[str], *, scale: int = 1,
                   gap: int = GAP) -> np.ndarray:
  """uint8 [T, H*scale, (2W+gap)*scale, 3]: true colour (B4 B3 B2, one common 2–98 %
  stretch over the year, see `stretch`) beside NDVI (RdYlGn, NDVI_RANGE), nodata black.

  Args:
    image: uint16 [T, H, W, C] composites, 0 = nodata.
  """
  T, H, W, _ = image.shape
  b = list(bands)
  valid = np.any(image != 0, axis=-1)                          # [T, H, W]
  rgb = stretch(image[..., [b.index("B4"), b.index("B3"), b.index("B2")]], valid)
  vi = np.where(valid[..., None], ndvi_rgb(ndvi(image, bands)), 0).astype(np.uint8)
  sep = np.full((T, H, gap, 3), 255, np.uint8)
  frames = np.concatenate([rgb, sep, vi], axis=2)
  return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def auto_scale(width: int, gap: int = GAP) -> int:
  """Smallest integer scale that makes a frame of two W-wide panels >= GIF_MIN_WIDTH px."""
  return max(1, math.ceil(GIF_MIN_WIDTH / (2 * width + gap)))


def caption_font_px(panel_width: int) -> int:
  """Caption font size in px for a panel `panel_width` px wide (11–26)."""
  return int(np.clip(panel_width // 20, 11, 26))


def _font(px: int):
  from matplotlib import font_manager
  from PIL import ImageFont
  return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), px)


def caption_frames(frames: np.ndarray, months: Sequence[str], *, panel_width: int,
                   gap: int) -> np.ndarray:
  """uint8 [T, Hf + 2S, Wf, 3]: frames [T, Hf, Wf, 3] with a caption strip of S px on
  top (month and "true colour" / "NDVI" over each panel) and one below the NDVI panel
  holding its colour scale (NDVI_RANGE, ends and middle labelled).
  """
  from PIL import Image, ImageDraw
  T, Hf, Wf, _ = frames.shape
  px = caption_font_px(panel_width)
  strip, pad, font = 2 * px, px // 2, _font(px)
  right = panel_width + gap
  lo, hi = NDVI_RANGE
  label_w = int(font.getlength(f"{lo:.1f}")) + pad
  bar_x0, bar_x1 = right + label_w + pad, right + panel_width - label_w - pad
  bar = ndvi_rgb(np.linspace(lo, hi, max(bar_x1 - bar_x0, 1)))      # [N, 3]
  out = []
  for f, month in zip(frames, months):
    canvas = Image.new("RGB", (Wf, Hf + 2 * strip), "white")
    canvas.paste(Image.fromarray(f), (0, strip))
    d = ImageDraw.Draw(canvas)
    y = (strip - px) // 2
    d.text((pad, y), f"{month}  true colour", fill="black", font=font)
    d.text((right + pad, y), f"{month}  NDVI", fill="black", font=font)
    y0, h = Hf + strip, strip
    bar_img = np.broadcast_to(bar[None], (h // 2, len(bar), 3))
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar_img)), (bar_x0, y0 + h // 4))
    d.text((bar_x0 - pad, y0 + h // 2), f"{lo:.1f}", fill="black", font=font, anchor="rm")
    d.text((bar_x1 + pad, y0 + h // 2), f"{hi:.1f}", fill="black", font=font, anchor="lm")
    out.append(np.asarray(canvas))
  return np.stack(out)


def gif_frames(image: np.ndarray, bands: Sequence[str], months: Sequence[str], *,
               scale: int = 1) -> np.ndarray:
  """uint8 [T, H*scale + 2S, (2W+GAP)*scale, 3]: what `monthly_gif` animates
  (monthly_frames with their captions and NDVI scale, S = 2 * caption_font_px)."""
  frames = monthly_frames(image, bands, scale=scale)
  return caption_frames(frames, months, panel_width=image.shape[2] * scale, gap=GAP * scale)


def monthly_gif(image: np.ndarray, bands: Sequence[str], months: Sequence[str], out, *,
                scale: int | None = None, ms_per_frame: int = 700) -> pathlib.Path:
  """Animated GIF of the monthly composites (true colour | NDVI), one frame a month.

  Args:
    image: uint16 [T, H, W, C] composites, 0 = nodata.
    scale: integer upscaling; None → auto_scale (frames >= GIF_MIN_WIDTH px wide).
  """
  from PIL import Image
  from cropcontracts.atomic import atomic_path
  scale = scale or auto_scale(image.shape[2])
  imgs = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
          for f in gif_frames(image, bands, months, scale=scale)]
  out = pathlib.Path(out)
  with atomic_path(out) as tmp:
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                 duration=ms_per_frame, loop=0)
  return out


# --------------------------------------------------------------------------- #
# Command line.

def _read_classes(pred_dir, zone=None) -> tuple[np.ndarray, str | None]:
  """(uint8 [H, W] classes.tif of a prediction folder, its NOMENCLATURE tag or None);
  with `zone`, refuses a map of another zone (a different grid: CRS, geotransform or
  size)."""
  import rasterio
  p = pathlib.Path(pred_dir) / "classes.tif"
  if not p.is_file():
    raise UserError(f"{p}: not found; run `python -m jaxcrop.predict` first (--pred is "
                    f"OUT/<zone_id>)")
  with rasterio.open(p) as src:
    if zone is not None and (src.crs != zone.zone.crs or
                             not src.transform.almost_equals(zone.zone.transform)):
      raise UserError(f"{p}: map is not on zone {zone.zone_id}'s grid (another zone's "
                      f"prediction?); pass --pred OUT/{zone.zone_id}")
    if zone is not None and src.shape != zone.zone.shape:
      raise UserError(f"{p}: map {src.shape} is not on zone {zone.zone_id}'s grid "
                      f"{zone.zone.shape}; pass the prediction of this zone")
    return src.read(1), src.tags().get("NOMENCLATURE")


def _read_metrics(path) -> dict:
  from jaxcrop.metrics import read_metrics  # pylint: disable=g-import-not-at-top
  return read_metrics(path)


def map_nomenclature(map_version: str | None, zone):
  """The nomenclature of a map: its NOMENCLATURE tag, else the zone's labels', else
  the default one."""
  return nomenclature_lib.load(map_version or zone.nomenclature or nomenclature_lib.VERSION)


def zone_figures(zone, pred_dir, out) -> list[pathlib.Path]:
  """A zone's monthly GIF and prediction map; with labels, the map beside them and
  the error map too."""
  out = pathlib.Path(out)
  classes, version = _read_classes(pred_dir, zone)
  nom = map_nomenclature(version, zone)
  labels = zone.read_labels() if zone.has_labels else None
  written = [monthly_gif(zone.read_image(), zone.bands, zone.months,
                         out / f"{zone.zone_id}_composites.gif"),
             plot_prediction(classes, labels, out / f"{zone.zone_id}_prediction.png",
                             nom=nom, title=zone.zone_id)]
  if labels is not None:
    written.append(plot_errors(classes, labels, out / f"{zone.zone_id}_errors.png",
                               title=zone.zone_id))
  return written


def all_figures(zones, out, *, maps=None, metrics=None) -> list[pathlib.Path]:
  """Every figure that the inputs allow: what `./launch.sh demo` shows a person.

  Args:
    zones: ZoneFolders; the class distribution covers the labelled ones (skipped,
      with a note on stderr, when none is), the per-zone figures (monthly GIF and
      prediction map; errors with labels) those with a map in `maps`.
    out: output folder.
    maps: the OUT folder of `jaxcrop.predict` (maps/<zone_id>/classes.tif).
    metrics: W/eval/metrics.json of `jaxcrop.evaluate`, for F1 bars and confusion.
  """
  out = pathlib.Path(out)
  written = []
  if metrics:
    m = _read_metrics(metrics)
    written.append(plot_per_class_f1(m, out / "f1_per_class.png"))
    for level in ("pixel", "parcel"):
      if f"{level}_model" in m.get("confusion_matrix", {}):
        written.append(plot_metrics_confusion(m, level, out / f"confusion_{level}.png"))
  labelled = [z for z in zones if z.has_labels]
  if labelled:
    regions, counts, _ = region_class_counts(labelled)
    written.append(plot_class_distribution(regions, counts, out / "class_distribution.png",
                                           nom=zones_nomenclature(labelled)))
  else:
    print(f"note: class_distribution.png skipped: no labelled zone among the {len(zones)} "
          f"zone folder(s)", file=sys.stderr)
  for zone in zones:
    pred = pathlib.Path(maps) / zone.zone_id if maps else None
    if pred is not None and (pred / "classes.tif").is_file():
      written += zone_figures(zone, pred, out)
  return written


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="python -m jaxcrop.plots", description=__doc__.split("\n")[0],
                               epilog="examples:\n" + __doc__.split("\n\n")[1],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="figure", required=True, metavar="figure")
  zone_help = "zone folder (prep), labelled except for prediction and gif"
  pred_help = "prediction folder OUT/<zone_id> of jaxcrop.predict"
  metrics_help = "W/eval/metrics.json of jaxcrop.evaluate"
  level_help = "with --metrics: pixel or parcel scores (default: %(default)s)"
  s = sub.add_parser("all", help="every figure: F1, confusion, distribution, per-zone maps "
                     "and GIFs", description="Every figure the inputs allow (what "
                     "./launch.sh demo shows); zones without labels get their GIF and "
                     "prediction map only.")
  s.add_argument("--zones", required=True, nargs="+", help="zone folders or their parent(s)")
  s.add_argument("--maps", help="OUT folder of jaxcrop.predict (per-zone map figures)")
  s.add_argument("--metrics", help=metrics_help + " (F1 and confusion figures)")
  s.add_argument("--out", required=True, help="folder for the figures")
  for name, text in (("prediction", "map of a zone, beside its labels when it has some"),
                     ("errors", "where a zone's map disagrees with its labels"),
                     ("confusion", "row-normalized confusion matrix, of a zone (--zone, "
                                   "--pred) or of an evaluation (--metrics)")):
    s = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    s.add_argument("--zone", help=zone_help)
    s.add_argument("--pred", help=pred_help)
    s.add_argument("--out", required=True, help="output PNG")
    if name == "confusion":
      s.add_argument("--metrics", help=metrics_help + " instead of --zone/--pred")
      s.add_argument("--level", default="pixel", choices=("pixel", "parcel"), help=level_help)
  s = sub.add_parser("f1", help="per-class F1 bars of an evaluation",
                     description="Per-class F1 bars, model vs baseline, of an evaluation.")
  s.add_argument("--metrics", required=True, help=metrics_help)
  s.add_argument("--level", default="pixel", choices=("pixel", "parcel"), help=level_help)
  s.add_argument("--out", required=True, help="output PNG")
  s = sub.add_parser("distribution", help="labelled pixels per class and region",
                     description="Labelled pixels per class and region of zone folders.")
  s.add_argument("--zones", required=True, nargs="+", help="zone folders or their parent(s)")
  s.add_argument("--out", required=True, help="output PNG")
  s = sub.add_parser("gif", help="animated monthly composites of a zone",
                     description="Animated GIF of a zone's monthly composites (true colour "
                                 "and NDVI).")
  s.add_argument("--zone", required=True, help="zone folder (prep)")
  s.add_argument("--out", required=True, help="output GIF")
  s.add_argument("--scale", type=int, default=None,
                 help=f"integer upscaling of the frames (default: the smallest giving "
                      f"frames of at least {GIF_MIN_WIDTH} px)")
  return ap


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return cli.run(_main, args)


def check_out(out, figure: str) -> None:
  """Raises UserError on an --out that cannot take the figure, before any work."""
  out = pathlib.Path(out)
  if figure == "all":
    if out.exists() and not out.is_dir():
      raise UserError(f"{out}: --out is a file; `all` writes its figures into a folder")
    return
  if out.is_dir():
    raise UserError(f"{out}: --out is a folder; pass the figure's file, e.g. "
                    f"{out / (figure + ('.gif' if figure == 'gif' else '.png'))}")
  from matplotlib.figure import Figure
  formats = ["gif"] if figure == "gif" else sorted(Figure().canvas.get_supported_filetypes())
  if out.suffix.lower().lstrip(".") not in formats:
    hint = ".gif" if figure == "gif" else ".png, .pdf or .svg"
    raise UserError(f"{out}: unknown figure format {out.suffix or '(no extension)'}; end "
                    f"--out with {hint}")


def _main(args) -> int:
  check_out(args.out, args.figure)
  if args.figure == "all":
    from jaxcrop.predict import resolve_zones
    outs = all_figures(resolve_zones(args.zones), args.out, maps=args.maps,
                       metrics=args.metrics)
    print(f"wrote {len(outs)} figures to {args.out}")
    return 0
  print(f"wrote {_run(args)}")
  return 0


def _run(args) -> pathlib.Path:
  from cropcontracts.zonefolder import open_zone
  if args.figure == "f1":
    return plot_per_class_f1(_read_metrics(args.metrics), args.out, level=args.level)
  if args.figure == "distribution":
    from jaxcrop.predict import resolve_zones
    zones = resolve_zones(args.zones)
    regions, counts, _ = region_class_counts(zones)
    return plot_class_distribution(regions, counts, args.out, nom=zones_nomenclature(zones))
  if args.figure == "confusion" and args.metrics:
    return plot_metrics_confusion(_read_metrics(args.metrics), args.level, args.out)
  if not args.zone:
    raise UserError(f"{args.figure}: --zone is required")
  zone = open_zone(args.zone, require_labels=args.figure not in ("gif", "prediction"))
  if args.figure == "gif":
    return monthly_gif(zone.read_image(), zone.bands, zone.months, args.out, scale=args.scale)
  if not args.pred:
    raise UserError(f"{args.figure}: --pred OUT/<zone_id> is required")
  classes, version = _read_classes(args.pred, zone)
  labels = zone.read_labels() if zone.has_labels else None
  nom = map_nomenclature(version, zone)
  if args.figure == "prediction":
    return plot_prediction(classes, labels, args.out, nom=nom, title=zone.zone_id)
  if args.figure == "errors":
    return plot_errors(classes, labels, args.out, title=zone.zone_id)
  from jaxcrop import metrics
  cm = metrics.confusion_matrix_np(np.where(classes != NO_LABEL, labels, NO_LABEL), classes,
                                   nom.num_classes)
  return plot_confusion(cm, nom.tier3, args.out, unit="pixels",
                        title=f"{zone.zone_id}, pixel level: confusion (rows: % of the "
                              f"true class)")


if __name__ == "__main__":
  sys.exit(main())
