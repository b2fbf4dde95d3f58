"""Figures: files decode with the expected size/frames, classes keep their colours;
texts (titles, legends, values) are read from SVG renderings that keep text as text."""
import json
import re
import types

import numpy as np
import pytest
from PIL import Image

from cropcontracts import nomenclature
from jaxcrop import plots
from jaxcrop.figures import distribution, scores, style
from jaxcrop.figures import gif as gif_figures
from jaxcrop.figures import maps as map_figures
from prep.demo import zonefolders as zf
from tests import fixtures as pt

NOM = nomenclature.load("v1")   # zones, maps and metrics of these tests: v1's 23 classes


def _rgb(path):
  return np.asarray(Image.open(path).convert("RGB"))


def _has_color(img, hex_color):
  rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
  return bool(np.all(img == rgb, axis=-1).any())


def _texts(plot, *args, **kwargs) -> list[tuple[str, float]]:
  """(text, font size in pt) of each text of the figure plot(...) writes to an .svg."""
  import matplotlib
  with matplotlib.rc_context({"svg.fonttype": "none"}):
    path = plot(*args, **kwargs)
  return [(t.strip(), float(size)) for size, t in
          re.findall(r'<text style="font-size: ([\d.]+)px[^>]*>([^<]*)', path.read_text())]


def _blank_rows_at_bottom(img) -> int:
  """Rows of pure white under the lowest drawn pixel."""
  return img.shape[0] - 1 - int(np.flatnonzero((img != 255).any(axis=(1, 2))).max())


def _metrics(*, baseline=True):
  """metrics.json of jaxcrop.evaluate for a tiny confusion matrix (classes 2, 5, 7)."""
  from jaxcrop import metrics
  cm = np.zeros((23, 23), int)
  cm[2, 2], cm[2, 5], cm[5, 5], cm[7, 7], cm[7, 2] = 30, 10, 7, 12, 4
  base = cm.copy()
  base[2, 2], base[2, 7] = 20, 10
  m = {"split": "test", "pixel": {"model": metrics.summarize(cm, list(NOM.tier3))},
       "confusion_matrix": {"pixel_model": cm.tolist(), "parcel_model": (cm // 2).tolist()}}
  if baseline:
    m["pixel"]["baseline"] = metrics.summarize(base, list(NOM.tier3))
  return m


def _simulate_cvd(hex_color, kind):
  """sRGB 0-255 of a colour as seen with full protanopia / deuteranopia / tritanopia
  (Machado et al. 2009, severity 1, in linear RGB)."""
  m = {"protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                  [-0.003882, -0.048116, 1.051998]],
       "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                  [-0.011820, 0.042940, 0.968881]],
       "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                  [0.004733, 0.691367, 0.303900]]}[kind]
  c = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]) / 255
  lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
  out = np.clip(np.array(m) @ lin, 0, 1)
  return 255 * np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
  return zf.write_zone(tmp_path_factory.mktemp("z") / "testz_0", version=NOM.version)


def _predict(zone, maps):
  from jaxcrop.maps import geotiff, tiling
  meta = pt.make_meta(version=NOM.version,
                      classes=tuple(zip(NOM.tier3, NOM.tier2, NOM.tier1, NOM.colors)))
  pred = tiling.predict_zone(*pt.init(pt.PixelModel(NOM.num_classes)), zone, meta,
                             tiling.MapSettings(tile=16, overlap=4))
  return geotiff.write_outputs(zone, pred, NOM, maps)


def test_class_rgb_uses_nomenclature_colors_and_grey_for_ignore():
  ids = np.array([[0, 5], [255, 22]], np.uint8)
  rgb = map_figures.class_rgb(NOM, ids)
  assert rgb[0, 1].tolist() == NOM.rgb()[5].tolist()
  assert rgb[1, 0].tolist() == list(style.NO_LABEL_RGB)
  assert map_figures.class_rgb(NOM, ids, style.NO_DATA_RGB)[1, 0].tolist() == [0, 0, 0]


def test_prediction_figure_size_and_class_colors(zone, tmp_path):
  labels = zone.read_labels()
  classes = np.where(labels == 255, 3, labels).astype(np.uint8)
  classes[:10] = 21                              # a class maybe absent from labels
  out = map_figures.plot_prediction(classes, labels, tmp_path / "p.png", nom=NOM, title="z")
  img = _rgb(out)
  assert img.shape == (650, 1200, 3)
  shown = set(np.unique(classes)) | set(np.unique(labels)) - {255}
  for k in shown:
    assert _has_color(img, NOM.colors[k]), NOM.tier3[k]
  absent = [k for k in range(NOM.num_classes) if k not in shown]
  assert not any(_has_color(img, NOM.colors[k]) for k in absent[:3])


def test_prediction_legend_names_no_label_and_no_data_when_shown(zone, tmp_path):
  labels = zone.read_labels()                    # has a strip without parcel (255)
  classes = np.where(labels == 255, 3, labels).astype(np.uint8)
  names = [t for t, _ in _texts(map_figures.plot_prediction, classes, labels, tmp_path / "a.svg",
                                nom=NOM)]
  assert "no label (RPG)" in names and "no data" not in names
  classes[:5] = 255                              # the map's nodata: black, in the legend
  names = [t for t, _ in _texts(map_figures.plot_prediction, classes, labels, tmp_path / "b.svg",
                                nom=NOM)]
  assert "no label (RPG)" in names and "no data" in names
  assert _has_color(_rgb(map_figures.plot_prediction(classes, labels, tmp_path / "b.png", nom=NOM)),
                    "#000000")
  names = [t for t, _ in _texts(map_figures.plot_prediction, np.full_like(labels, 3),
                                np.full_like(labels, 3), tmp_path / "c.svg", nom=NOM)]
  assert "no label (RPG)" not in names and "no data" not in names


def test_prediction_alone_without_labels(zone, tmp_path):
  classes = np.where(zone.read_labels() == 255, 255, 4).astype(np.uint8)
  img = _rgb(map_figures.plot_prediction(classes, None, tmp_path / "p.png", nom=NOM))
  assert img.shape == (750, 700, 3)
  assert _has_color(img, NOM.colors[4]) and _has_color(img, "#000000")
  names = [t for t, _ in _texts(map_figures.plot_prediction, classes, None, tmp_path / "p.svg",
                                nom=NOM)]
  assert "ground truth (RPG)" not in names and "no label (RPG)" not in names
  assert {"prediction", NOM.tier3[4], "no data"} <= set(names)


def test_error_map_and_figure(tmp_path):
  # No prediction (classes 255) is "no data" (3), apart from "no label" (2) since the
  # colour-blind-safe version; it used to be folded into "no label".
  classes = np.array([[1, 2, 255], [4, 4, 4]], np.uint8)
  labels = np.array([[1, 3, 2], [255, 4, 0]], np.uint8)
  assert map_figures.error_map(classes, labels).tolist() == [[0, 1, 3], [2, 0, 1]]
  img = _rgb(map_figures.plot_errors(classes, labels, tmp_path / "e.png"))
  assert img.shape == (850, 800, 3)
  for c in map_figures.ERROR_COLORS.values():
    assert _has_color(img, c)
  names = [t for t, _ in _texts(map_figures.plot_errors, classes, labels, tmp_path / "e.svg",
                                title="z")]
  assert {"correct", "wrong", "no label", "no data"} <= set(names)
  assert "z: pixel accuracy 0.500 over 4 labelled pixels" in names
  names = [t for t, _ in _texts(map_figures.plot_errors, classes, np.where(labels == 255, 0, labels),
                                tmp_path / "f.svg")]
  assert "no label" not in names and "no data" in names


def test_error_colors_stay_apart_with_colour_blindness():
  # The former green/red pair comes within 30 sRGB units of each other for a deuteranope.
  for kind in ("protan", "deutan", "tritan"):
    good, bad = (_simulate_cvd(map_figures.ERROR_COLORS[n], kind) for n in ("correct", "wrong"))
    assert np.linalg.norm(good - bad) > 150, kind
  old_good, old_bad = (_simulate_cvd(c, "deutan") for c in ("#2ca02c", "#d62728"))
  assert np.linalg.norm(old_good - old_bad) < 30


def test_confusion_figure_drops_absent_classes(tmp_path):
  cm = np.zeros((23, 23), int)
  cm[0, 0], cm[0, 1], cm[1, 1] = 8, 2, 5
  img = _rgb(scores.plot_confusion(cm, NOM.tier3, tmp_path / "c.png"))
  assert img.shape == (1000, 1100, 3)
  assert _blank_rows_at_bottom(img) < 30          # was ~100 px of white under the labels
  names = [t for t, _ in _texts(scores.plot_confusion, cm, NOM.tier3, tmp_path / "c.svg")]
  assert "true class  (support)" in names          # no unit given: none named


def test_confusion_numbers_readable_and_rows_carry_their_support(tmp_path):
  cm = np.zeros((23, 23), int)
  cm[np.arange(17), np.arange(17)] = 90 + np.arange(17)   # 17 classes, like the demo
  cm[0, 1] = 1210
  texts = dict(_texts(scores.plot_confusion, cm, NOM.tier3, tmp_path / "c.svg",
                      title="pixel level, test split: x", unit="parcels"))
  assert texts["winter_wheat  1,300"] >= 7 and "durum_wheat  91" in texts
  assert texts["93"] >= 10                        # 1210 / 1300; the numbers were 6 pt
  assert texts["true class  (support: parcels)"] and "pixel level, test split: x" in texts
  assert scores.cell_fontsize(17) >= 10 and scores.cell_fontsize(23) >= 7.5
  assert scores.cell_fontsize(40) < 6              # too small: no numbers drawn
  assert scores.support_labels(["a", "b"], np.array([1234.0, 5])) == ["a  1,234", "b  5"]


def test_per_class_f1_figure_reads_evaluate_format(tmp_path):
  per_class = [dict(**{"class": NOM.tier3[k]}, precision=0.5, recall=0.5, f1=0.1 * k,
                    support=10 ** k) for k in range(1, 6)]
  per_class.append(dict(name=NOM.tier3[9], precision=0, recall=0, f1=0, support=0))
  metrics = {"pixel": {"model": {"overall_accuracy": 0.5, "per_class": per_class}}}
  (tmp_path / "m.json").write_text(json.dumps(metrics))
  assert plots.main(["f1", "--metrics", str(tmp_path / "m.json"),
                     "--out", str(tmp_path / "f1.png")]) == 0
  img = _rgb(tmp_path / "f1.png")
  assert img.shape == (800, 1200, 3)
  assert all(_has_color(img, NOM.colors[k]) for k in range(1, 6))
  assert not _has_color(img, NOM.colors[9])     # no support → not drawn
  assert _blank_rows_at_bottom(img) < 30
  texts = [t for t, _ in _texts(scores.plot_per_class_f1, metrics, tmp_path / "f1.svg")]
  values = [t for t in texts if re.fullmatch(r"0\.\d\d", t)]        # ticks have 1 digit
  assert values == ["0.50", "0.40", "0.30", "0.20", "0.10"]           # sorted by support
  assert "pixel level: per-class F1, model" in texts and "baseline" not in texts
  assert "class (sorted by true pixels)" in texts
  with pytest.raises(plots.UserError, match="no per_class table"):
    scores.per_class_rows({"pixel": {}})


def test_per_class_f1_draws_the_baseline_and_says_level_and_split(tmp_path):
  m = _metrics()
  base = scores.baseline_f1(m)
  assert base["winter_barley"] == pytest.approx(
      next(r["f1"] for r in m["pixel"]["baseline"]["per_class"] if r["name"] == "winter_barley"))
  assert base["winter_barley"] < next(r["f1"] for r in scores.per_class_rows(m)
                                      if r["name"] == "winter_barley")
  assert scores.baseline_f1(_metrics(baseline=False)) is None
  texts = [t for t, _ in _texts(scores.plot_per_class_f1, m, tmp_path / "f1.svg")]
  assert "pixel level, test split: per-class F1, model vs baseline" in texts
  assert {"baseline", "model (class colour)"} <= set(texts)
  f1 = {r["name"]: r["f1"] for r in scores.per_class_rows(m)}
  assert {f"{f1[n]:.2f}" for n in ("winter_barley", "maize", "rapeseed")} <= set(texts)
  img = _rgb(scores.plot_per_class_f1(m, tmp_path / "f1.png"))
  assert _has_color(img, "#000000")               # the baseline ticks


def test_per_class_f1_colours_from_the_metrics_nomenclature():
  assert scores.metrics_nomenclature({"nomenclature_version": "v1"}) is NOM
  assert scores.metrics_nomenclature({}).version == nomenclature.VERSION
  with pytest.raises(plots.UserError, match="nomenclature v9"):
    scores.metrics_nomenclature({"nomenclature_version": "v9"})   # not silently the default
  assert scores.metrics_title({"split": "val"}, "parcel", "x") == "parcel level, val split: x"


def test_class_distribution_per_region(tmp_path):
  zones = [zf.write_zone(tmp_path / f"z{i}", zf.synthetic_zone(f"z_{i}"), seed=i,
                         version=NOM.version) for i in range(2)]
  regions, counts, names = distribution.region_class_counts(zones)
  assert regions == ["Testland"] and names == list(NOM.tier3)
  expected = sum(np.bincount(z.read_labels().ravel(), minlength=256)[:23] for z in zones)
  assert counts.shape == (1, 23)
  meta_counts = sum(np.array([z.meta["labels"].get("class_pixel_counts", {}).get(n, 0)
                              for n in NOM.tier3]) for z in zones)
  np.testing.assert_array_equal(counts[0], meta_counts)
  np.testing.assert_array_equal(counts[0], expected)
  assert counts.sum() > 0
  counts = np.stack([expected, expected[::-1]])
  img = _rgb(distribution.plot_class_distribution(["A", "B"], counts, tmp_path / "d.png"))
  assert img.shape == (700, 1200, 3)
  assert all(_has_color(img, NOM.colors[k]) for k in np.flatnonzero(expected)[:5])


def test_class_distribution_labels_large_shares_and_uses_the_zones_nomenclature(tmp_path):
  counts = np.zeros((2, 23), int)
  counts[0, [0, 5, 7]] = 80, 16, 4
  counts[1, [0, 7]] = 50, 50
  texts = [t for t, _ in _texts(distribution.plot_class_distribution, ["A", "B"], counts,
                                tmp_path / "d.svg", nom=NOM)]
  assert sorted(t for t in texts if t.endswith(" %")) == ["16 %", "50 %", "50 %", "80 %"]
  zone = lambda v: types.SimpleNamespace(has_labels=True, nomenclature=v)
  assert distribution.zones_nomenclature([zone("v1"), types.SimpleNamespace(
      has_labels=False, nomenclature=None)]) is NOM
  with pytest.raises(plots.UserError, match="nomenclature v9"):
    distribution.zones_nomenclature([zone("v9")])        # the zones' version, not the default
  with pytest.raises(plots.UserError, match=r"different nomenclatures \['v1', 'v2'\]"):
    distribution.zones_nomenclature([zone("v1"), zone("v2")])


def test_stretch_keeps_greys_grey():
  rng = np.random.default_rng(0)
  rgb = np.stack([rng.uniform(500, 2000, 500), rng.uniform(300, 1200, 500),
                  rng.uniform(100, 600, 500)], -1).astype(np.float32)   # red > green > blue
  rgb[:10] = 550                                  # grey pixels: B4 = B3 = B2
  out = gif_figures.stretch(rgb, np.ones(500, bool)).astype(int)
  assert (out[:10, 0] == out[:10, 1]).all() and (out[:10, 1] == out[:10, 2]).all()
  assert (out[10:, 0] >= out[10:, 2]).mean() > 0.95    # the colour balance is kept


def test_monthly_gif_frames_and_ndvi(zone, tmp_path):
  image = zone.read_image()
  out = gif_figures.monthly_gif(image, zone.bands, zone.months, tmp_path / "m.gif", scale=2)
  strip = 2 * gif_figures.caption_font_px(2 * zf.W)
  with Image.open(out) as gif:
    assert gif.n_frames == zf.T
    assert gif.size == ((2 * zf.W + 4) * 2, zf.H * 2 + 2 * strip)
  v = gif_figures.ndvi(np.array([[[[100, 100, 100, 300]], [[0, 0, 0, 0]]]], np.uint16), zone.bands)
  assert v[0, 0, 0] == pytest.approx(0.5) and np.isnan(v[0, 1, 0])
  frames = gif_figures.monthly_frames(image, zone.bands)
  assert frames.shape == (zf.T, zf.H, 2 * zf.W + 4, 3)
  assert (frames[:, zf.HOLE[0], zf.HOLE[1]] == 0).all()     # nodata is black


def test_monthly_gif_is_wide_with_a_caption_per_panel_and_an_ndvi_scale(zone):
  image = zone.read_image()
  scale = gif_figures.auto_scale(zf.W)
  assert (2 * zf.W + 4) * scale >= 800 > (2 * zf.W + 4) * (scale - 1)
  assert gif_figures.auto_scale(1000) == 1
  frames = gif_figures.gif_frames(image, zone.bands, zone.months, scale=scale)
  px = gif_figures.caption_font_px(zf.W * scale)
  strip, panel = 2 * px, zf.W * scale
  assert px >= 16
  assert frames.shape == (zf.T, zf.H * scale + 2 * strip, (2 * zf.W + 4) * scale, 3)
  top = frames[0, :strip].min(-1) < 100                      # dark text pixels
  for x0 in (0, panel + 4 * scale):                           # one caption per panel
    rows = np.flatnonzero(top[:, x0:x0 + panel].any(1))
    assert rows.size and rows.max() - rows.min() >= 0.6 * px  # glyphs px tall, not 8
  assert not top[:, panel:panel + 4 * scale].any()            # none across the gap
  bottom = frames[0, -strip:, panel + 4 * scale:].reshape(-1, 3)
  lo, hi = gif_figures.ndvi_rgb(np.array(gif_figures.NDVI_RANGE))
  assert np.all(bottom == lo, -1).any() and np.all(bottom == hi, -1).any()


def test_cli_prediction_and_errors_from_predict_outputs(zone, tmp_path, capsys):
  folder = _predict(zone, tmp_path)
  for fig in ("prediction", "errors", "confusion"):
    assert plots.main([fig, "--zone", str(zone.path), "--pred", str(folder),
                       "--out", str(tmp_path / f"{fig}.png")]) == 0
    assert Image.open(tmp_path / f"{fig}.png").format == "PNG"
  assert plots.main(["gif", "--zone", str(zone.path), "--out", str(tmp_path / "g.gif")]) == 0
  with Image.open(tmp_path / "g.gif") as gif:
    assert gif.size[0] >= 800                    # auto scale without --scale
  assert plots.main(["errors", "--zone", str(zone.path), "--pred", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "x.png")]) == 2
  assert capsys.readouterr().err == (
      f"error: {tmp_path / 'nope' / 'classes.tif'}: not found; run `python -m "
      f"jaxcrop.predict` first (--pred is OUT/<zone_id>)\n")


FIGURES = ("all", "prediction", "errors", "confusion", "f1", "distribution", "gif")


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: figure"),
    (["gfi"], f"argument figure: invalid choice: 'gfi' (choose from "
             f"{', '.join(map(repr, FIGURES))})"),
    (["f1", "--out", "f1.png"], "the following arguments are required: --metrics"),
    (["f1", "--metrics", "m.json", "--out", "f1.png", "--tier", "4"],
     "argument --tier: invalid choice: '4' (choose from '1', '2', '3', 'all')"),
    (["gif", "--zone", "z", "--out", "g.gif", "--scale", "x"],
     "argument --scale: invalid int value: 'x'"),
    (["gif", "--zone", "z", "--out", "g.gif", "--pred", "p"], "--pred: unknown flag"),
    (["distribution", "--zone", "z", "--out", "d.png"],
     "--zone: unknown flag (did you mean --zones?)"),
])
def test_cli_argument_mistake_is_one_line(argv, expected, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  rc, out, err = pt.run(plots.main, argv, capsys)
  pt.assert_error(rc, err, expected)
  assert out == "" and list(tmp_path.iterdir()) == []


def test_cli_help_lists_the_figures_and_examples(capsys):
  rc, out, err = pt.run(plots.main, ["--help"], capsys)
  assert rc == 0 and err == "" and out.startswith("usage: python -m jaxcrop.plots")
  assert all(f"\n    {figure}" in out for figure in FIGURES)
  assert "\nexamples:\n  python -m jaxcrop.plots all " in out

def test_confusion_from_evaluate_metrics_json(tmp_path):
  m = _metrics()
  got, names = scores.confusion_from_metrics(m, "parcel")
  assert got[2, 2] == 15 and names == list(NOM.tier3)
  (tmp_path / "m.json").write_text(json.dumps(m))
  assert plots.main(["confusion", "--metrics", str(tmp_path / "m.json"), "--out",
                     str(tmp_path / "c.png")]) == 0
  assert _rgb(tmp_path / "c.png").shape == (1000, 1100, 3)
  texts = [t for t, _ in _texts(scores.plot_metrics_confusion, m, "parcel", tmp_path / "c.svg")]
  assert "parcel level, test split: model confusion (rows: % of the true class)" in texts
  assert "winter_barley  20" in texts and "true class  (support: parcels)" in texts
  with pytest.raises(plots.UserError, match=r"no confusion_matrix\['pixel_model'\]"):
    scores.confusion_from_metrics({"pixel": m["pixel"]})


def test_all_figures_for_predicted_zones_only(tmp_path):
  zones = [zf.write_zone(tmp_path / "zones" / f"z_{i}", zf.synthetic_zone(f"z_{i}"), seed=i,
                         version=NOM.version) for i in range(2)]
  _predict(zones[0], tmp_path / "maps")
  m = _metrics()
  del m["confusion_matrix"]["parcel_model"]
  (tmp_path / "m.json").write_text(json.dumps(m))
  assert plots.main(["all", "--zones", str(tmp_path / "zones"), "--maps",
                     str(tmp_path / "maps"), "--metrics", str(tmp_path / "m.json"),
                     "--out", str(tmp_path / "fig")]) == 0
  # No parcel confusion in these metrics, and z_1 has no map: neither is drawn.
  assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
      "class_distribution.png", "confusion_pixel.png", "f1_per_class.png",
      "z_0_composites.gif", "z_0_errors.png", "z_0_prediction.png"]
  with Image.open(tmp_path / "fig" / "z_0_composites.gif") as gif:
    assert gif.size[0] >= 800


def test_all_figures_for_zones_without_labels(tmp_path, capsys):
  root = tmp_path / "zones"
  zones = [zf.write_zone(root / f"new_{i}", zf.synthetic_zone(f"new_{i}"), seed=i, labels=False)
           for i in range(2)]
  for z in zones:
    _predict(z, tmp_path / "maps")
  capsys.readouterr()
  assert plots.main(["all", "--zones", str(root), "--maps", str(tmp_path / "maps"),
                     "--out", str(tmp_path / "fig")]) == 0
  out, err = capsys.readouterr()
  assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
      "new_0_composites.gif", "new_0_prediction.png", "new_1_composites.gif",
      "new_1_prediction.png"]
  assert err == ("note: class_distribution.png skipped: no labelled zone among the 2 zone "
                 "folder(s)\n")
  assert out == f"wrote 4 figures to {tmp_path / 'fig'}\n"
  img = _rgb(tmp_path / "fig" / "new_0_prediction.png")
  assert img.shape == (750, 700, 3)                          # the map alone
  assert _has_color(img, "#000000")                          # the nodata hole
  # A labelled zone beside them brings the class distribution back (no --maps here).
  zf.write_zone(root / "old_0", zf.synthetic_zone("old_0"), version=NOM.version)
  assert plots.main(["all", "--zones", str(root), "--out", str(tmp_path / "fig2")]) == 0
  assert [p.name for p in (tmp_path / "fig2").iterdir()] == ["class_distribution.png"]
  assert capsys.readouterr().err == ""
  assert plots.main(["prediction", "--zone", str(zones[0].path), "--pred",
                     str(tmp_path / "maps" / "new_0"), "--out", str(tmp_path / "p.png")]) == 0
  assert _rgb(tmp_path / "p.png").shape == (750, 700, 3)


def _tiered_metrics():
  """_metrics() with a `tiers` section as jaxcrop.evaluate writes it: each tier's
  confusion matrices and summaries from the tier-3 ones mapped up the tree."""
  from jaxcrop import hierarchy, metrics
  m = _metrics()
  tables = {1: NOM.tier1_of(), 2: NOM.tier2_of(), 3: np.arange(NOM.num_classes)}
  m["tiers"] = {}
  for tier, table in tables.items():
    names = hierarchy.tier_legend(NOM, tier)[0]
    up = lambda cm: hierarchy.tier_confusion(np.asarray(cm), table, len(names))
    model = up(m["confusion_matrix"]["pixel_model"])
    m["tiers"][f"tier{tier}"] = {
        "class_names": names,
        "pixel": {"model": metrics.summarize(model, names),
                  "baseline": metrics.summarize(np.diag(np.diag(model)), names)},
        "confusion_matrix": {"pixel_model": model.tolist(),
                             "parcel_model": up(m["confusion_matrix"]["parcel_model"]).tolist()}}
  m["nomenclature_version"] = "v1"
  return m


def test_tier_metrics_is_the_tier_section_with_the_split_and_tier():
  m = _tiered_metrics()
  t2 = scores.tier_metrics(m, 2)
  assert t2["tier"] == 2 and t2["split"] == "test" and t2["nomenclature_version"] == "v1"
  assert t2["class_names"] == list(NOM.tier2_names)
  assert scores.tier_metrics(_metrics(), 3)["pixel"] == _metrics()["pixel"]   # no tiers: top
  with pytest.raises(plots.UserError, match=r"no tiers\['tier1'\] section"):
    scores.tier_metrics(_metrics(), 1)


def test_tier2_confusion_figure_shows_the_tier2_names(tmp_path):
  m = _tiered_metrics()
  g2, g5, g7 = (NOM.tier2[k] for k in (2, 5, 7))          # the groups of classes 2, 5, 7
  texts = [t for t, _ in _texts(scores.plot_metrics_confusion, scores.tier_metrics(m, 2),
                                "pixel", tmp_path / "c.svg")]
  cm = np.asarray(m["tiers"]["tier2"]["confusion_matrix"]["pixel_model"])
  support = cm.sum(1)
  for g in {g2, g5, g7}:
    k = NOM.tier2_names.index(g)
    assert f"{g}  {support[k]:,}" in texts and g in texts    # row (with support), column
  assert not {"winter_barley", "maize", "rapeseed"} & set(texts)   # no tier-3 names
  assert "pixel level, test split, tier 2 (groups): model confusion (rows: % of the true " \
         "class)" in texts


def test_cli_tier_all_writes_each_tiers_confusion_and_f1(tmp_path, capsys):
  (tmp_path / "m.json").write_text(json.dumps(_tiered_metrics()))
  for figure in ("confusion", "f1"):
    assert plots.main([figure, "--metrics", str(tmp_path / "m.json"), "--tier", "all",
                       "--out", str(tmp_path / f"{figure}.png")]) == 0
  assert sorted(p.name for p in tmp_path.glob("*.png")) == [
      f"{f}_tier{t}.png" for f in ("confusion", "f1") for t in (1, 2, 3)]
  img = _rgb(tmp_path / "f1_tier1.png")
  names, colors = scores.tier_legend(NOM, 1)
  fam = NOM.tier1[2]                                    # a family of the metrics' classes
  assert _has_color(img, colors[names.index(fam)])       # bars in the family's colour
  assert plots.main(["f1", "--metrics", str(tmp_path / "m.json"), "--tier", "2",
                     "--out", str(tmp_path / "g.svg")]) == 0
  assert "tier 2 (groups): per-class F1, model vs baseline" in (tmp_path / "g.svg").read_text()
  (tmp_path / "old.json").write_text(json.dumps(_metrics()))
  assert plots.main(["f1", "--metrics", str(tmp_path / "old.json"), "--tier", "1",
                     "--out", str(tmp_path / "x.png")]) == 2
  assert "no tiers['tier1'] section" in capsys.readouterr().err


def test_all_figures_draw_every_tier_of_the_metrics(tmp_path):
  zone = zf.write_zone(tmp_path / "zones" / "z_0", zf.synthetic_zone("z_0"))
  (tmp_path / "m.json").write_text(json.dumps(_tiered_metrics()))
  assert plots.main(["all", "--zones", str(zone.path), "--metrics", str(tmp_path / "m.json"),
                     "--out", str(tmp_path / "fig")]) == 0
  got = {p.name for p in (tmp_path / "fig").iterdir()}
  assert {f"{f}{t}.png" for f in ("f1_per_class", "confusion_pixel", "confusion_parcel")
          for t in ("", "_tier1", "_tier2")} <= got


# --- nomenclature v3: the background (non_agricultural) in the figures

V3 = nomenclature.load("v3")


def test_background_in_the_map_legend_and_the_f1_figure(zone, tmp_path):
  from jaxcrop import metrics
  labels = zone.read_labels()
  bg = V3.background_id
  labels = np.where(labels == 255, bg, labels).astype(np.uint8)    # the land outside parcels
  labels[:2] = 255                                                  # a margin: no label
  classes = labels.copy()
  classes[labels == 255] = bg
  out = map_figures.plot_prediction(classes, labels, tmp_path / "p.png", nom=V3)
  assert _has_color(_rgb(out), "#c8c8c8")                          # its neutral colour
  names = [t for t, _ in _texts(map_figures.plot_prediction, classes, labels,
                                tmp_path / "p.svg", nom=V3)]
  assert {"non_agricultural", "no label (RPG)"} <= set(names)
  cm = np.zeros((24, 24), int)
  cm[0, 0], cm[0, bg], cm[5, 5], cm[bg, bg], cm[bg, 5] = 8, 2, 10, 30, 3
  m = {"split": "test", "nomenclature_version": "v3",
       "pixel": {"model": metrics.summarize(cm, list(V3.tier3))}}
  assert _has_color(_rgb(scores.plot_per_class_f1(m, tmp_path / "f1.png")), "#c8c8c8")
  texts = [t for t, _ in _texts(scores.plot_per_class_f1, m, tmp_path / "f1.svg")]
  crop = (2 * 8 / 10 / (1 + 8 / 10) + 2 * 10 / 13 / (1 + 10 / 13)) / 2   # wheat, maize
  assert f"model crop macro-F1 {crop:.2f} (non_agricultural excluded)" in texts
  assert not any("crop macro-F1" in t for t, _ in _texts(
      scores.plot_per_class_f1, _metrics(), tmp_path / "v1.svg"))       # no background: as before
