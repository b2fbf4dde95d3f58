"""The RPG code table: coverage of the official list, key codes, loader errors."""
import csv
import pathlib

import numpy as np
import pytest

from cropcontracts import nomenclature
from cropcontracts.nomenclature import UnknownCodeError
from cropcontracts.zonefolder import NO_LABEL

ROOT = pathlib.Path(__file__).resolve().parents[1]
CODES_CSV = ROOT / "cropcontracts" / "data" / "rpg_codes_v1.csv"
# The official code list lives outside the repo, in a `shared/` folder beside the
# checkout (or beside a parent of it, for worktrees); CI has it.
_REF = pathlib.Path("shared", "reference", "rpg_codes_prototype_hierarchy.csv")
REFERENCE = next((p / _REF for p in ROOT.parents if (p / _REF).is_file()),
                 ROOT.parent / _REF)


def _rows():
  with CODES_CSV.open(encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nom():
  return nomenclature.load()


@pytest.mark.skipif(not REFERENCE.is_file(), reason="shared reference not present")
def test_every_official_code_is_mapped_with_its_label_and_group(nom):
  with REFERENCE.open(encoding="utf-8", newline="") as f:
    ref = list(csv.reader(f, delimiter=";"))[1:]
  assert len(ref) == 351
  by_code = {r["CODE_CULTU"]: r for r in _rows()}
  missing = [r[0] for r in ref if r[0] not in nom.code_to_tier3]
  assert missing == []
  for code, label, group, *_ in ref:
    assert by_code[code]["label_fr"] == label
    assert by_code[code]["CODE_GROUP"] == group


def test_table_columns_and_no_duplicate_codes():
  rows = _rows()
  assert list(rows[0]) == ["CODE_CULTU", "label_fr", "CODE_GROUP", "tier3"]
  codes = [r["CODE_CULTU"] for r in rows]
  assert len(codes) == len(set(codes)) == 371
  assert all(c == c.strip() and c for c in codes)


def test_every_class_has_a_code(nom):
  used = set(nom.code_to_tier3.values())
  assert set(nom.tier3) - used == set()
  assert used - set(nom.tier3) == {"ignore"}


@pytest.mark.parametrize("code,name", [
    ("MIS", "maize"), ("MIE", "maize"), ("MID", "maize"), ("BTH", "winter_wheat"),
    ("BDH", "durum_wheat"), ("ORH", "winter_barley"), ("ORP", "spring_cereal"),
    ("TTH", "other_winter_cereal"), ("SOG", "sorghum"), ("CZH", "rapeseed"),
    ("TRN", "sunflower"), ("SOJ", "soybean"), ("PPR", "protein_legumes"),
    ("BTN", "sugar_beet"), ("PTF", "potato"), ("LIF", "flax_hemp"),
    ("CHV", "flax_hemp"), ("FRA", "vegetables_flowers"), ("LAV", "other_crops"),
    ("PTR", "temporary_grassland"), ("PPH", "permanent_grassland"),
    ("LUZ", "fodder_legumes"), ("J5M", "fallow"), ("VRC", "vineyard"),
    ("NOX", "orchard"), ("OLI", "olive")])
def test_key_codes(nom, code, name):
  assert nom.classes_of_codes([code])[0] == nom.class_id(name)


@pytest.mark.parametrize("code", ["BOR", "BTA", "SNA", "TCR", "ZZZ", "NR", "CSS"])
def test_non_crop_codes_are_ignored(nom, code):
  assert nom.classes_of_codes([code])[0] == NO_LABEL


def test_classes_of_codes_vectorized_and_strips(nom):
  out = nom.classes_of_codes([" BTH", "BOR", "MIS "])
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, [0, NO_LABEL, 5])


def test_unknown_codes_are_listed(nom):
  with pytest.raises(UnknownCodeError) as e:
    nom.classes_of_codes(["BTH", "QQQ", "XYZ", "QQQ"])
  assert e.value.codes == ["QQQ", "XYZ"]
  assert str(e.value).startswith("2 RPG CODE_CULTU value(s) not in nomenclature v1: QQQ, XYZ;")
  assert "cropcontracts/data/rpg_codes_v1.csv" in str(e.value)


def test_duplicate_code_in_table_is_an_error(tmp_path, monkeypatch):
  data = ROOT / "cropcontracts" / "data"
  (tmp_path / "classes_vt.csv").write_text(
      (data / "classes_v1.csv").read_text(encoding="utf-8"), encoding="utf-8")
  (tmp_path / "rpg_codes_vt.csv").write_text(
      "CODE_CULTU,label_fr,CODE_GROUP,tier3\nBTH,a,1,winter_wheat\nBTH,b,1,ignore\n",
      encoding="utf-8")
  monkeypatch.setattr(nomenclature, "DATA_DIR", tmp_path)
  with pytest.raises(nomenclature.UserError, match=r"duplicate CODE_CULTU \['BTH'\]"):
    nomenclature.load("vt")
