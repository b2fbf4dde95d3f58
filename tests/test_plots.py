"""Figures: files decode with the expected size/frames, classes keep their colours."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxcrop import plots
from prep import nomenclature
from tests import predict_testing as pt

NOM = nomenclature.load("v1")


def _rgb(path):
  return np.asarray(Image.open(path).convert("RGB"))


def _has_color(img, hex_color):
  rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
  return bool(np.all(img == rgb, axis=-1).any())


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
  return pt.make_zone(tmp_path_factory.mktemp("z") / "testz_0")


def test_class_rgb_uses_nomenclature_colors_and_grey_for_ignore():
  ids = np.array([[0, 5], [255, 22]], np.uint8)
  rgb = plots.class_rgb(NOM, ids)
  assert rgb[0, 1].tolist() == NOM.rgb()[5].tolist()
  assert rgb[1, 0].tolist() == list(plots.NO_LABEL_RGB)


def test_prediction_figure_size_and_class_colors(zone, tmp_path):
  labels = zone.read_labels()
  classes = np.where(labels == 255, 3, labels).astype(np.uint8)
  classes[:10] = 21                              # a class maybe absent from labels
  out = plots.plot_prediction(classes, labels, tmp_path / "p.png", nom=NOM, title="z")
  img = _rgb(out)
  assert img.shape == (650, 1200, 3)
  shown = set(np.unique(classes)) | set(np.unique(labels)) - {255}
  for k in shown:
    assert _has_color(img, NOM.colors[k]), NOM.tier3[k]
  absent = [k for k in range(NOM.num_classes) if k not in shown]
  assert not any(_has_color(img, NOM.colors[k]) for k in absent[:3])


def test_error_map_and_figure(tmp_path):
  classes = np.array([[1, 2, 255], [4, 4, 4]], np.uint8)
  labels = np.array([[1, 3, 2], [255, 4, 0]], np.uint8)
  assert plots.error_map(classes, labels).tolist() == [[0, 1, 2], [2, 0, 1]]
  img = _rgb(plots.plot_errors(classes, labels, tmp_path / "e.png"))
  assert img.shape == (850, 800, 3)
  for c in plots.ERROR_COLORS.values():
    assert _has_color(img, c)


def test_confusion_figure_drops_absent_classes(tmp_path):
  cm = np.zeros((23, 23), int)
  cm[0, 0], cm[0, 1], cm[1, 1] = 8, 2, 5
  img = _rgb(plots.plot_confusion(cm, NOM.tier3, tmp_path / "c.png"))
  assert img.shape == (1000, 1100, 3)


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
  with pytest.raises(plots.PrepError, match="no per_class table"):
    plots.per_class_rows({"pixel": {}})


def test_class_distribution_per_region(tmp_path):
  zones = [pt.make_zone(tmp_path / f"z{i}", zone_id=f"z_{i}", seed=i) for i in range(2)]
  regions, counts, names = plots.region_class_counts(zones)
  assert regions == ["Testland"] and names == list(NOM.tier3)
  expected = sum(np.bincount(z.read_labels().ravel(), minlength=256)[:23] for z in zones)
  assert counts.shape == (1, 23)
  meta_counts = sum(np.array([z.meta["labels"].get("class_pixel_counts", {}).get(n, 0)
                              for n in NOM.tier3]) for z in zones)
  np.testing.assert_array_equal(counts[0], meta_counts)
  np.testing.assert_array_equal(counts[0], expected)
  assert counts.sum() > 0
  counts = np.stack([expected, expected[::-1]])
  img = _rgb(plots.plot_class_distribution(["A", "B"], counts, tmp_path / "d.png"))
  assert img.shape == (700, 1200, 3)
  assert all(_has_color(img, NOM.colors[k]) for k in np.flatnonzero(expected)[:5])


def test_monthly_gif_frames_and_ndvi(zone, tmp_path):
  image = zone.read_image()
  out = plots.monthly_gif(image, zone.bands, zone.months, tmp_path / "m.gif", scale=2)
  with Image.open(out) as gif:
    assert gif.n_frames == pt.T
    assert gif.size == ((2 * pt.W + 4) * 2, pt.H * 2 + 16)
  v = plots.ndvi(np.array([[[[100, 100, 100, 300]], [[0, 0, 0, 0]]]], np.uint16), zone.bands)
  assert v[0, 0, 0] == pytest.approx(0.5) and np.isnan(v[0, 1, 0])
  frames = plots.monthly_frames(image, zone.bands)
  assert frames.shape == (pt.T, pt.H, 2 * pt.W + 4, 3)
  assert (frames[:, pt.HOLE[0], pt.HOLE[1]] == 0).all()     # nodata is black


def test_cli_prediction_and_errors_from_predict_outputs(zone, tmp_path, capsys):
  from jaxcrop import predict
  pred = predict.predict_zone(*pt.init(pt.PixelModel()), zone, pt.make_meta(), tile=16,
                              overlap=4)
  folder = predict.write_outputs(zone, pred, NOM, tmp_path)
  for fig in ("prediction", "errors", "confusion"):
    assert plots.main([fig, "--zone", str(zone.path), "--pred", str(folder),
                       "--out", str(tmp_path / f"{fig}.png")]) == 0
    assert Image.open(tmp_path / f"{fig}.png").format == "PNG"
  assert plots.main(["gif", "--zone", str(zone.path), "--out", str(tmp_path / "g.gif")]) == 0
  assert plots.main(["errors", "--zone", str(zone.path), "--pred", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "x.png")]) == 2
  assert capsys.readouterr().err == (
      f"error: {tmp_path / 'nope' / 'classes.tif'}: not found; run `python -m "
      f"jaxcrop.predict` first (--pred is OUT/<zone_id>)\n")


def test_confusion_from_evaluate_metrics_json(tmp_path):
  from jaxcrop import metrics
  cm = np.zeros((23, 23), int)
  cm[2, 2], cm[2, 5], cm[5, 5] = 30, 10, 7
  m = {"pixel": {"model": metrics.summarize(cm, list(NOM.tier3))},
       "confusion_matrix": {"pixel_model": cm.tolist(), "parcel_model": (cm // 2).tolist()}}
  got, names = plots.confusion_from_metrics(m, "parcel")
  assert got[2, 2] == 15 and names == list(NOM.tier3)
  (tmp_path / "m.json").write_text(json.dumps(m))
  assert plots.main(["confusion", "--metrics", str(tmp_path / "m.json"), "--out",
                     str(tmp_path / "c.png")]) == 0
  assert _rgb(tmp_path / "c.png").shape == (1000, 1100, 3)
  with pytest.raises(plots.PrepError, match=r"no confusion_matrix\['pixel_model'\]"):
    plots.confusion_from_metrics({"pixel": m["pixel"]})


def test_all_figures_for_predicted_zones_only(tmp_path):
  from jaxcrop import metrics, predict
  zones = [pt.make_zone(tmp_path / "zones" / f"z_{i}", zone_id=f"z_{i}", seed=i)
           for i in range(2)]
  pred = predict.predict_zone(*pt.init(pt.PixelModel()), zones[0], pt.make_meta(),
                              tile=16, overlap=4)
  predict.write_outputs(zones[0], pred, NOM, tmp_path / "maps")
  cm = np.zeros((23, 23), int)
  cm[2, 2], cm[2, 5], cm[5, 5] = 30, 10, 7
  m = {"pixel": {"model": metrics.summarize(cm, list(NOM.tier3))},
       "confusion_matrix": {"pixel_model": cm.tolist()}}
  (tmp_path / "m.json").write_text(json.dumps(m))
  assert plots.main(["all", "--zones", str(tmp_path / "zones"), "--maps",
                     str(tmp_path / "maps"), "--metrics", str(tmp_path / "m.json"),
                     "--out", str(tmp_path / "fig")]) == 0
  # No parcel confusion in these metrics, and z_1 has no map: neither is drawn.
  assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
      "class_distribution.png", "confusion_pixel.png", "f1_per_class.png",
      "z_0_composites.gif", "z_0_errors.png", "z_0_prediction.png"]
