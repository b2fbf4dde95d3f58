"""A model release (`jaxcrop.export`): predict accepts it and maps bit for bit as
from the workdir; its manifest catches a missing or altered file."""
import json
import shutil

import numpy as np
import pytest
import rasterio

from jaxcrop import export, predict, release
from tests import fixtures
from tests.fixtures import assert_error


@pytest.fixture(scope="module")
def released(demo_workdir, tmp_path_factory):
  workdir, _ = demo_workdir
  out = tmp_path_factory.mktemp("release") / "model"
  assert export.main(["--workdir", str(workdir), "--out", str(out)]) == 0
  return workdir, out


def _zone(small_demo):
  return sorted(p for p in (small_demo / "zones").iterdir() if p.is_dir())[0]


def test_export_holds_the_checkpoint_card_mlm_and_a_manifest(released):
  workdir, out = released
  names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
  assert {"config.json", "dataset_meta.json", "calibration.json", "MODEL_CARD.md",
          "mlm.json", "MANIFEST.json"} <= names
  assert not any("/opt/" in n for n in names)          # no optimizer state
  manifest = json.loads((out / "MANIFEST.json").read_text())
  assert manifest["format"] == "jaxcrop-release/1"
  assert set(manifest["files"]) == names - {"MANIFEST.json"}
  assert json.loads((out / "calibration.json").read_text()) == json.loads(
      (workdir / "calibration.json").read_text())
  card = (out / "MODEL_CARD.md").read_text()
  assert "## Calibration" in card and "**Synthetic.**" not in card   # builder "e2e"
  assert "## Intended use and limits" in card and "Temperature" in card
  mlm = json.loads((out / "mlm.json").read_text())
  assert fixtures.stac_core_errors(mlm, "item") == []          # STAC core, offline
  props = mlm["properties"]
  assert any("/mlm/" in e for e in mlm["stac_extensions"])
  assert props["mlm:tasks"] == ["semantic-segmentation", "classification"]
  meta = json.loads((workdir / "dataset_meta.json").read_text())
  assert props["mlm:input"][0]["bands"] == meta["bands"]
  assert props["mlm:input"][0]["input"]["shape"] == [-1, len(meta["months"]), -1, -1,
                                                     len(meta["bands"])]
  assert [s["mean"] for s in props["mlm:input"][0]["value_scaling"]] == pytest.approx(
      np.ravel(meta["mean"]).tolist())
  assert [c["name"] for c in props["mlm:output"][0]["classification:classes"]] == \
      meta["class_names"]
  assert props["mlm:total_parameters"] > 0
  # trained on the demo dataset, the card says "synthetic" first
  import dataclasses
  import types
  import ml_collections
  from cropcontracts.dataset_meta import DatasetMeta
  from jaxcrop import modelcard
  meta = DatasetMeta.from_json((out / "dataset_meta.json").read_text())
  trained = types.SimpleNamespace(      # what the card reads of checkpoint.Trained
      config=ml_collections.ConfigDict(json.loads((out / "config.json").read_text())),
      meta=dataclasses.replace(meta, builder_config="demo"), variables={}, step=2)
  text = modelcard.card(trained, None, None, "m")
  assert text.index("**Synthetic.**") < text.index("## Model")
  assert "Not evaluated" in text and "No temperature fitted" in text
  scores = {"pixel": {"model": {"macro_f1": 0.5, "overall_accuracy": 0.75}},
            "parcel": {"model": {"macro_f1": 0.25, "overall_accuracy": 0.125}}}
  metrics = {"split": "test", "checkpoint": "best", "step": 2, "per_region": {"Beauce": {}},
             "tiers": {f"tier{t}": {"class_names": ["a"] * t, **scores} for t in (1, 2, 3)},
             "calibration": {"bins": 15, "tiers": {"tier3": {"ece_before": 0.2,
                                                             "ece_after": 0.03}}}}
  record = {"temperature": 1.5, "pixels": 1000, "split": "fold1", "ece_before": 0.1,
            "ece_after": 0.02}
  text = modelcard.card(trained, metrics, record, "m")
  assert "| 2 | 2 | 0.5000 | 0.7500 | 0.2500 | 0.1250 |" in text and "Beauce" in text
  assert "Temperature 1.5000, fitted on 1,000 pixels of the fold1 split" in text
  assert "| 3 | 0.2000 | 0.0300 |" in text


def test_predict_from_the_release_equals_predict_from_the_workdir(released, small_demo,
                                                                  tmp_path):
  workdir, out = released
  zone = _zone(small_demo)
  for src, maps in ((workdir, "a"), (out, "b")):
    assert predict.main(["--workdir", str(src), "--zone", str(zone), "--out",
                         str(tmp_path / maps), "--tile", "32", "--overlap", "8"]) == 0
  for f in ("classes.tif", "confidence.tif", "validity.tif"):
    a, b = tmp_path / "a" / zone.name / f, tmp_path / "b" / zone.name / f
    assert a.read_bytes() == b.read_bytes(), f
  with rasterio.open(tmp_path / "a" / zone.name / "confidence.tif") as src:
    assert (src.read(1) != 255).any()
  item = json.loads((tmp_path / "b" / zone.name / "item.json").read_text())
  record = json.loads((out / "calibration.json").read_text())
  assert item["properties"]["jaxcrop:temperature"] == record["temperature"]
  assert item["properties"]["jaxcrop:checkpoint_step"] == record["step"]


def test_a_missing_or_altered_release_file_is_one_line(released, small_demo, tmp_path, capsys):
  _, out = released
  copy = shutil.copytree(out, tmp_path / "model")
  assert release.verify(copy)
  card = copy / "MODEL_CARD.md"
  card.write_text(card.read_text() + "edited\n")
  args = ["--zone", str(_zone(small_demo)), "--out", str(tmp_path / "maps")]
  rc = predict.main(["--workdir", str(copy), *args])
  assert_error(rc, capsys.readouterr().err,
               f"{card}: altered since the model release was made (its SHA-256 differs "
               f"from MANIFEST.json); copy the release again or export it again")
  (copy / "calibration.json").unlink()
  shutil.copy(out / "MODEL_CARD.md", card)
  rc = predict.main(["--workdir", str(copy), *args])
  assert_error(rc, capsys.readouterr().err,
               f"{copy / 'calibration.json'}: missing from the model release (MANIFEST.json "
               f"lists it); copy the release again or export it again (python -m "
               f"jaxcrop.export)")
  assert not (tmp_path / "maps").exists()
  rc = export.main(["--workdir", str(released[0]), "--out", str(out)])
  assert_error(rc, capsys.readouterr().err,
               f"{out}: --out already exists; choose another folder")


def test_export_help_and_a_workdir_without_checkpoint(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    export.main(["--help"])
  assert e.value.code == 0 and "--workdir" in capsys.readouterr().out
  rc = export.main(["--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith(f"error: --workdir {tmp_path / 'none'}: ")
  assert not (tmp_path / "r").exists()
