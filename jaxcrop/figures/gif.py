"""The animated GIF of a zone's monthly composites: true colour beside NDVI, one
frame a month, captions and the NDVI colour scale drawn with Pillow; nodata black."""
from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np

NDVI_RANGE = (-0.2, 0.9)
NDVI_CMAP = "RdYlGn"
GIF_MIN_WIDTH = 800                  # px: smaller frames hide the parcels
GAP = 4                              # px between the GIF's two panels, before scaling


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
