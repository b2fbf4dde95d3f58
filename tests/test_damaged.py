"""Damaged and foreign inputs at every stage boundary (issue 11): one line naming the
file and the fix, exit 2, no traceback, no partial output, a good output left intact.
The catalogue of these cases is docs/errors.md."""
import csv
import json
import pathlib

import pytest

from prep import cli as prep_cli
from prep import zones as Z
from prep.errors import PrepError
from tests.test_user_errors import assert_error, run


# --------------------------------------------------------------------------- #
# the zones table (prep.zones.read_zones): every mistake names the table

def _table(tmp_path, edit=None, *, delimiter=",", drop=None) -> pathlib.Path:
  """A zones table of 2 study zones; edit(row) changes the first row."""
  rows = [z.to_row() for z in Z.read_zones()[:2]]
  if edit:
    edit(rows[0])
  cols = [c for c in rows[0] if c != drop]
  path = tmp_path / "zones.csv"
  with path.open("w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, delimiter=delimiter, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  return path


COLUMNS = ("zone_id, region, town, index, epsg, x0, y0, width, height, res, center_lon, "
           "center_lat, cropland_fraction, source")


@pytest.mark.parametrize("edit, kw, expected", [
    (lambda r: r.update(width=-1000), {},
     "{t}: line 2: zone stquentin_0: width=-1000 must be positive"),
    (lambda r: r.update(res=0), {},
     "{t}: line 2: zone stquentin_0: res=0.0 must be positive"),
    (lambda r: r.update(x0="abc"), {},
     "{t}: line 2: zone 'stquentin_0': could not convert string to float: 'abc'"),
    (None, {"drop": "epsg"},
     f"{{t}}: zones table lacks column(s) epsg (expected a CSV with columns {COLUMNS})"),
    (None, {"delimiter": ";"},
     f"{{t}}: zones table is ;-separated; write it with commas (expected a CSV with columns "
     f"{COLUMNS})"),
    (lambda r: r.update(zone_id="../evil"), {},
     "{t}: line 2: zone id '../evil' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
    (lambda r: r.update(zone_id="a/b"), {},
     "{t}: line 2: zone id 'a/b' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
    (lambda r: r.update(zone_id=".."), {},
     "{t}: line 2: zone id '..' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
])
def test_zones_table_mistakes_are_one_line_naming_the_table(edit, kw, expected, tmp_path,
                                                            capsys):
  table = _table(tmp_path, edit, **kw)
  out = tmp_path / "out"
  for argv in (["zones", "--zones-csv", table],
               ["composite", "--scenes", tmp_path, "--zones-csv", table, "--all",
                "--out", out]):
    rc, _, err = run(prep_cli.main, ["--quiet", *argv], capsys)
    assert_error(rc, err, expected.format(t=table))
  assert not out.exists() and not (tmp_path / "evil").exists()


def test_plain_zone_ids_are_read(tmp_path):
  table = _table(tmp_path, lambda r: r.update(zone_id="Chartres-2.b_9"))
  assert Z.read_zones(table)[0].zone_id == "Chartres-2.b_9"


# --------------------------------------------------------------------------- #
# metrics.json (jaxcrop.metrics.read_metrics, read by the plots CLI)

def _metrics_file(tmp_path, edit=None) -> pathlib.Path:
  """metrics.json as jaxcrop.evaluate writes it, for a 3-class confusion matrix."""
  from jaxcrop import metrics
  cm = [[5, 1, 0], [2, 7, 0], [0, 0, 3]]
  names = ["wheat", "maize", "rapeseed"]
  m = {"split": "test", "pixel": {"model": metrics.summarize(cm, names)},
       "confusion_matrix": {"pixel_model": cm}}
  if edit:
    edit(m)
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(m))
  return path


FIX = "pass W/eval/metrics.json of `python -m jaxcrop.evaluate` (or rerun it)"


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m["pixel"]["model"]["per_class"].pop(),
     "confusion_matrix['pixel_model'] is 3 x 3 but pixel.model lists 2 classes"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[5, 1], [2, 7]]),
     "confusion_matrix['pixel_model'] is 2 x 2 but pixel.model lists 3 classes"),
    (lambda m: m["confusion_matrix"]["pixel_model"][1].__setitem__(0, 4),
     "confusion_matrix['pixel_model'] row 1 sums to 11 but class 'maize' has support 9"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[5, 1, 0], [2, 7]]),
     "confusion_matrix['pixel_model'] is not a square table of counts"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[0.5, 0], [0, 1]]),
     "confusion_matrix['pixel_model'] is not a square table of counts"),
    (lambda m: m.update(confusion_matrix=[1, 2]),
     "confusion_matrix is not an object of matrices"),
])
def test_plots_refuses_an_inconsistent_metrics_file(edit, problem, tmp_path, capsys):
  from jaxcrop import plots
  path, out = _metrics_file(tmp_path, edit), tmp_path / "cm.png"
  for figure in ("confusion", "f1"):
    rc, _, err = run(plots.main, [figure, "--metrics", path, "--out", out], capsys)
    assert_error(rc, err, f"{path}: {problem}; {FIX}")
  assert not out.exists()


def test_a_consistent_metrics_file_is_read_and_plotted(tmp_path, capsys):
  from jaxcrop import metrics, plots
  path = _metrics_file(tmp_path)
  assert metrics.read_metrics(path)["confusion_matrix"]["pixel_model"][1] == [2, 7, 0]
  rc, _, err = run(plots.main, ["confusion", "--metrics", path, "--out", tmp_path / "c.png"],
                   capsys)
  assert rc == 0 and (tmp_path / "c.png").is_file(), err
  path.write_text("[1, 2]")
  with pytest.raises(PrepError, match="not a metrics file .a JSON list, not an object."):
    metrics.read_metrics(path)
