"""The RPG code tables: coverage of the official lists per edition, key codes,
changed meanings, loader errors; v1 still readable."""
import csv
import pathlib
import re
import unicodedata

import numpy as np
import pytest

from cropcontracts import nomenclature
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL
from cropcontracts.nomenclature import UnknownCodeError

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "cropcontracts" / "data"
CODES_CSV = DATA / "rpg_codes_v2.csv"
# The official code lists live outside the repo, in a `shared/` folder beside the
# checkout (or beside a parent of it, for worktrees).
_REF = pathlib.Path("shared", "reference")
REF = next((p / _REF for p in ROOT.parents if (p / _REF).is_dir()), ROOT.parent / _REF)
OLD_LIST = REF / "rpg_codes_prototype_hierarchy.csv"      # pre-2023 list
NEW_LIST = REF / "rpg_codes_2023_declaration.md"          # list in force since 2023
needs_ref = pytest.mark.skipif(not OLD_LIST.is_file() or not NEW_LIST.is_file(),
                               reason=f"shared reference absent ({REF})")


def _rows():
  with CODES_CSV.open(encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def _typo(s):
  """A label without typographic variants (’ vs ', case, spacing)."""
  return " ".join(unicodedata.normalize("NFKC", s).replace("’", "'").lower().split())


def _old_list():
  with OLD_LIST.open(encoding="utf-8", newline="") as f:
    return {r[0]: (r[1], r[2]) for r in list(csv.reader(f, delimiter=";"))[1:]}


def _new_list():
  rows = re.findall(r"^\| ([A-Z0-9]{3}) \| (.*) \| (?:yes|\*\*no\*\*) \|$",
                    NEW_LIST.read_text(encoding="utf-8"), re.M)
  return dict(rows)


def name(nom, code, edition):
  i = nom.classes_of_codes([code], edition)[0]
  return "ignore" if i == NO_LABEL else nom.tier3[i]


@pytest.fixture(scope="module")
def nom():
  return nomenclature.load()


def test_default_version_is_v3_the_v1_classes_and_the_background(nom):
  assert nomenclature.VERSION == "v3" and nom.version == "v3"
  v1 = nomenclature.load("v1")
  assert (nom.tier3[:-1], nom.tier2[:-1], nom.tier1[:-1], nom.colors[:-1]) == (
      v1.tier3, v1.tier2, v1.tier1, v1.colors)
  assert nom.tier3[-1] == nomenclature.BACKGROUND and nom.background_id == 23


@needs_ref
def test_every_pre_2023_code_reads_in_2015_to_2022_with_its_label_and_group(nom):
  old = _old_list()
  assert len(old) == 351
  for edition in (2015, 2019, 2022):
    valid = nom.codes_of(edition)
    assert set(valid) == set(old) | {"NR"}
  for code, (label, group) in old.items():
    row = nom.row(code, 2022)
    assert row.code_group == group, code
    # A row that runs on past 2022 carries the 2023 wording of the same meaning.
    assert (row.label_fr == label if row.last_edition == 2022
            else row.last_edition is None), code


@needs_ref
def test_every_2023_code_reads_from_2023_with_its_2023_label(nom):
  new = _new_list()
  assert len(new) == 147
  for edition in (2023, 2025):
    assert set(nom.codes_of(edition)) == set(new) | {"NR"}
  for code, label in new.items():
    assert nom.row(code, 2023).label_fr == label, code


@needs_ref
def test_a_code_has_two_rows_exactly_where_its_label_changed_in_meaning(nom):
  old, new = _old_list(), _new_list()
  typographic = {c for c in set(old) & set(new) if _typo(old[c][0]) != _typo(new[c])
                 and len(nom.code_rows[c]) == 1}
  # Same meaning, other typography or plural: one row over all editions.
  assert typographic == {"AIL", "CSS", "MRS", "OEI", "TRU", "LAV", "CAC", "OIG", "MLG"}
  for c in set(old) & set(new):
    rows = nom.code_rows[c]
    if _typo(old[c][0]) == _typo(new[c]) or c in typographic:
      assert [(r.first_edition, r.last_edition) for r in rows] == [(2015, None)], c
    else:
      assert [(r.first_edition, r.last_edition) for r in rows] == [(2015, 2022), (2023, None)]
  for c in set(old) - set(new):
    assert [(r.first_edition, r.last_edition) for r in nom.code_rows[c]] == [(2015, 2022)]
  for c in set(new) - set(old):
    assert [(r.first_edition, r.last_edition) for r in nom.code_rows[c]] == [(2023, None)]


def test_table_columns_and_ranges(nom):
  rows = _rows()
  assert list(rows[0]) == ["CODE_CULTU", "first_edition", "last_edition", "label_fr",
                           "CODE_GROUP", "tier3"]
  assert len(rows) == 432 and len(nom.code_rows) == 374
  assert all(r["CODE_CULTU"] == r["CODE_CULTU"].strip() and r["CODE_CULTU"] for r in rows)
  assert {r["first_edition"] for r in rows} == {"2015", "2023"}
  assert {r["last_edition"] for r in rows} == {"", "2022"}


@pytest.mark.parametrize("edition", [2019, 2023])
def test_every_class_has_a_code_in_each_edition(nom, edition):
  used = {r.tier3 for r in nom.codes_of(edition).values()}
  assert set(nom.tier3) - used == {nomenclature.BACKGROUND}   # no code: the land outside
  assert used - set(nom.tier3) == {"ignore"}


@pytest.mark.parametrize("code,cls", [
    ("JAC", "fallow"),                # jachère (terre arable): the fallow of the 2023 list
    ("CAH", "other_winter_cereal"),   # other secondary winter cereal / pseudo-cereal
    ("MCS", "spring_cereal"),         # spring cereal mixtures
    ("CNA", "ignore"),                # unmanaged chestnut grove: woodland, as CAE/CEE/CNE
    ("CNE", "ignore"), ("CAE", "ignore"),
    ("MIS", "maize"), ("MID", "maize"), ("BTH", "winter_wheat"), ("BDH", "durum_wheat"),
    ("ORH", "winter_barley"), ("ORP", "spring_cereal"), ("TTH", "other_winter_cereal"),
    ("SOG", "sorghum"), ("CZH", "rapeseed"), ("TRN", "sunflower"), ("SOJ", "soybean"),
    ("PPR", "protein_legumes"), ("FVP", "protein_legumes"), ("BTN", "sugar_beet"),
    ("PTC", "potato"), ("LIF", "flax_hemp"), ("CHV", "flax_hemp"),
    ("FRA", "vegetables_flowers"), ("LAV", "other_crops"), ("PTR", "temporary_grassland"),
    ("PPH", "permanent_grassland"), ("LUZ", "fodder_legumes"), ("VRC", "vineyard"),
    ("NOX", "orchard"), ("OLI", "olive")])
def test_key_codes_2023(nom, code, cls):
  assert name(nom, code, 2023) == cls


@pytest.mark.parametrize("code,before,since", [
    # Forage of cereals (< 50 % legumes) -> multi-species mixture, no dominant species.
    ("CPL", "other_winter_cereal", "ignore"),
    ("GES", "fodder_legumes", "protein_legumes"),   # gesse -> cowpea, dolichos, gesse
    ("PAG", "protein_legumes", "ignore"),           # -> any other grain OR forage legume
    ("PPH", "permanent_grassland", "permanent_grassland"),  # absorbs PRL (6 years +)
    ("JNO", "fallow", "fallow"),                    # black fallow -> sanitary fallow
    ("MLF", "fodder_legumes", "fodder_legumes"),    # + grain legumes, mixtures
    ("OAG", "other_crops", "other_crops"), ("OHR", "rapeseed", "rapeseed")])
def test_changed_meaning_follows_the_edition(nom, code, before, since):
  assert name(nom, code, 2019) == before
  assert name(nom, code, 2023) == since
  old, new = nom.row(code, 2019), nom.row(code, 2023)
  assert old is not new and (old.last_edition, new.first_edition) == (2022, 2023)
  assert old.label_fr != new.label_fr


def test_cpl_2023_is_a_mixture_not_a_cereal(nom):
  row = nom.row("CPL", 2023)
  assert row.label_fr.startswith("Mélange multi-espèces")
  assert name(nom, "CPL", 2023) not in {t for t, t2 in zip(nom.tier3, nom.tier2)
                                        if t2 == "small_grain_cereal"}


@pytest.mark.parametrize("code,cls", [("PRL", "permanent_grassland"), ("J5M", "fallow"),
                                      ("MIE", "maize"), ("PTF", "potato")])
def test_pre_2023_only_codes_read_before_2023_and_not_after(nom, code, cls):
  assert name(nom, code, 2022) == cls
  with pytest.raises(UnknownCodeError) as e:
    nom.classes_of_codes([code], 2023)
  assert f"{code} (valid in editions 2015–2022)" in str(e.value)
  assert "is the RPG edition right? (--rpg-year)" in str(e.value)


@pytest.mark.parametrize("code", ["BOR", "BTA", "SNE", "TCR", "ZZZ", "NR", "CSS"])
def test_non_crop_codes_are_ignored(nom, code):
  assert nom.classes_of_codes([code])[0] == NO_LABEL


def test_classes_of_codes_vectorized_and_strips(nom):
  out = nom.classes_of_codes([" BTH", "BOR", "MIS "])
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, [0, NO_LABEL, 5])


def test_unknown_codes_are_listed(nom):
  with pytest.raises(UnknownCodeError) as e:
    nom.classes_of_codes(["BTH", "QQQ", "XYZ", "QQQ"], 2023)
  assert e.value.codes == ["QQQ", "XYZ"]
  assert str(e.value) == (
      "2 RPG CODE_CULTU value(s) not in nomenclature v3 for RPG edition 2023: QQQ, XYZ; "
      "add them to cropcontracts/data/rpg_codes_v3.csv (tier3 `ignore` to skip them) and bump "
      "the version, or pass --unknown-codes ignore to leave them unlabelled")
  np.testing.assert_array_equal(
      nom.classes_of_codes(["BTH", "QQQ"], 2023, unknown="ignore"), [0, NO_LABEL])


def test_unknown_code_error_with_counts():
  e = UnknownCodeError(["QQQ", "J5M"], "v2", 2023, {"QQQ": (1, 0.5), "J5M": (3, 12.345)},
                       {"J5M": "2015–2022"})
  assert e.listing == ("2 RPG CODE_CULTU value(s) not in nomenclature v2 for RPG edition "
                       "2023: J5M (3 parcels, 12.35 ha; valid in editions 2015–2022), "
                       "QQQ (1 parcel, 0.50 ha)")


def test_v1_tables_still_read_for_every_edition():
  v1 = nomenclature.load("v1")
  assert v1.version == "v1" and len(v1.code_rows) == 371
  for edition in (2015, 2023, 2030):
    assert v1.tier3[v1.classes_of_codes(["J5M"], edition)[0]] == "fallow"
    assert v1.tier3[v1.classes_of_codes(["CPL"], edition)[0]] == "other_winter_cereal"
  with pytest.raises(UnknownCodeError, match="not in nomenclature v1 for RPG edition 2023: JAC"):
    v1.classes_of_codes(["JAC"], 2023)


def _table(tmp_path, monkeypatch, version, body,
           header="CODE_CULTU,first_edition,last_edition,label_fr,CODE_GROUP,tier3"):
  """A loader of test tables `version` (a name no other test loads: load() caches)."""
  (tmp_path / f"classes_{version}.csv").write_text(
      (DATA / "classes_v2.csv").read_text(encoding="utf-8"), encoding="utf-8")
  (tmp_path / f"rpg_codes_{version}.csv").write_text(f"{header}\n{body}", encoding="utf-8")
  monkeypatch.setattr(nomenclature, "DATA_DIR", tmp_path)
  return lambda: nomenclature.load(version)


def test_duplicate_code_in_undated_table_is_an_error(tmp_path, monkeypatch):
  load = _table(tmp_path, monkeypatch, "t_dup", "BTH,a,1,winter_wheat\nBTH,b,1,ignore\n",
                header="CODE_CULTU,label_fr,CODE_GROUP,tier3")
  with pytest.raises(UserError, match=r"duplicate CODE_CULTU \['BTH'\]"):
    load()


def test_overlapping_editions_are_an_error(tmp_path, monkeypatch):
  load = _table(tmp_path, monkeypatch, "t_overlap",
                "CPL,2015,2023,a,16,ignore\nCPL,2023,,b,16,ignore\n")
  with pytest.raises(UserError,
                     match=r"CODE_CULTU CPL has overlapping editions \(2015–2023 and 2023 on\)"):
    load()


def test_edition_ranges_read_and_checked(tmp_path, monkeypatch):
  load = _table(tmp_path, monkeypatch, "t_ranges",
                "CPL,2015,2019,a,16,other_winter_cereal\nCPL,2021,,b,16,ignore\n")
  nom = load()
  assert name(nom, "CPL", 2019) == "other_winter_cereal" and name(nom, "CPL", 2021) == "ignore"
  with pytest.raises(UnknownCodeError, match=r"CPL \(valid in editions 2015–2019, 2021 on\)"):
    nom.classes_of_codes(["CPL"], 2020)
  load = _table(tmp_path, monkeypatch, "t_order", "CPL,2019,2015,a,16,ignore\n")
  with pytest.raises(UserError, match=r"line 2: CPL last_edition 2015 is before"):
    load()


def test_v3_adds_the_background_as_the_last_class_of_its_own_at_every_tier():
  v2, v3 = nomenclature.load("v2"), nomenclature.load("v3")
  assert v3.tier3[:-1] == v2.tier3 and v3.num_classes == 24
  assert v3.background_id == 23 and v3.tier3[23] == nomenclature.BACKGROUND
  assert v3.crop_ids == tuple(range(23)) and v2.background_id is None
  assert v3.tier2_names[v3.tier2_of()[23]] == v3.tier1_names[v3.tier1_of()[23]] == \
      "non_agricultural"
  assert v3.tier1_names == ("field_crops", "grassland", "permanent_crops", "non_agricultural")
  codes = v3.codes_of(2023)          # the same RPG codes as v2, none of them background
  assert codes.keys() == v2.codes_of(2023).keys()
  assert 23 not in set(v3.classes_of_codes(list(codes)))
