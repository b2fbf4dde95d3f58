"""Offsets keyed on the processing baseline, read from each source real products use."""
import datetime
import pathlib

import pytest

from prep import s2_products as s2
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from tests.real_samples import REAL, needs_real

MTD_0510 = REAL / "mtd_msil2a_baseline_0510" / "MTD_MSIL2A_S2B_20231217_N0510_T21JUK.xml"
SAFE_0400 = (REAL / "safe_tiny_T34TGN_N0400"
             / "S2B_MSIL2A_20220915T092029_N0400_R093_T34TGN_20220915T112452.SAFE")
real = needs_real
BANDS = ("B02", "B03", "B04", "B08")
D2019, D2023 = datetime.date(2019, 6, 1), datetime.date(2023, 6, 1)


@pytest.mark.parametrize("value, want", [
    ("05.10", "05.10"), ("5.1", "05.10"), ("N0509", "05.09"), ("0400", "04.00"),
    (4, "04.00"), (5.09, "05.09"), ("02.12", "02.12"), (" 04.00 ", "04.00"), ("", None)])
def test_normalize_baseline(value, want):
  assert s2.normalize_baseline(value) == want


def test_offset_is_keyed_on_the_baseline():
  assert s2.offset_of_baseline("04.00") == -1000
  assert s2.offset_of_baseline("05.10") == -1000
  assert s2.offset_of_baseline("03.01") == 0 and s2.offset_of_baseline("02.14") == 0


def test_baseline_from_product_ids():
  assert s2.baseline_from_product_id(
      "S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625.SAFE") == "05.10"
  assert s2.baseline_from_product_id(
      "S2A_MSIL2A_20190415T105031_N0500_R051_T31UCP_20230101T000000") == "05.00"
  assert s2.baseline_from_product_id("S2A_31UCP_20230415_0_L2A") is None


def test_stac_sources_of_the_baseline():
  # Earth Search / Planetary Computer
  assert s2.stac_offset({"s2:processing_baseline": "05.09"}, "x", D2023) == -1000
  # Copernicus Data Space: processing:version
  assert s2.stac_offset({"processing:version": "05.10"}, "y", D2023) == -1000
  assert s2.stac_offset({"processing:version": "03.01"}, "y", D2019) == 0
  # the id's _Nxxyy_ (CDSE ids are product names)
  cdse = "S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625.SAFE"
  assert s2.stac_offset({}, cdse, D2023) == -1000
  assert s2.stac_offset({"s2:product_uri": cdse}, "S2B_21JUK_20231217_0_L2A", D2023) == -1000
  # explicit statements win
  assert s2.stac_offset({"s2:processing_baseline": "05.09", "s2:boa_add_offset": 0},
                        "x", D2023) == 0
  assert s2.stac_offset({"s2:processing_baseline": "05.09",
                         "earthsearch:boa_offset_applied": True}, "x", D2023) == 0


def test_reprocessed_product_of_a_pre_2022_date_has_the_offset():
  assert s2.stac_offset({"s2:processing_baseline": "05.00"}, "x", D2019) == -1000
  assert s2.stac_offset(
      {}, "S2A_MSIL2A_20190415T105031_N0500_R051_T31UCP_20230101T000000", D2019) == -1000


def test_unknown_baseline_after_2022_01_25_is_an_error():
  assert s2.stac_offset({}, "S2A_31UCP_20220124_0_L2A", datetime.date(2022, 1, 24)) == 0
  with pytest.raises(UserError, match=r"^STAC item S2A_31UCP_20220125_0_L2A: acquired "
                                      r"2022-01-25 but no processing baseline found .*"
                                      r"add s2:processing_baseline"):
    s2.stac_offset({}, "S2A_31UCP_20220125_0_L2A", datetime.date(2022, 1, 25))
  with pytest.raises(UserError, match="s2:processing_baseline='v5' is not a processing"):
    s2.stac_offset({"s2:processing_baseline": "v5"}, "z", D2023)


def test_spacecraft():
  assert s2.spacecraft_of("x", {"platform": "sentinel-2b"}) == "B"
  assert s2.spacecraft_of("S2A_MSIL2A_20230415T105031_N0509_R051_T31UCP_x.SAFE") == "A"
  assert s2.spacecraft_of("S2C_31UCP_20250101_0_L2A") == "C"
  assert s2.spacecraft_of("item-7") == ""


@real
def test_real_mtd_of_baseline_0510():
  info = s2.read_mtd(MTD_0510)
  assert info["baseline"] == "05.10"
  assert info["offsets"] == {b: -1000 for b in s2.MTD_BANDS}
  assert info["product_uri"] == ("S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_"
                                 "20231217T175625.SAFE")
  assert info["spacecraft"] == "B"


@real
def test_real_safe_of_baseline_0400(tmp_path):
  info = s2.read_mtd(SAFE_0400 / "MTD_MSIL2A.xml")
  # Trimmed MTD: no PROCESSING_BASELINE, the datatake id says N04.00; offsets of B02-B04.
  assert info["baseline"] == "04.00" and info["spacecraft"] == "B"
  assert info["offsets"] == {"B02": -1000, "B03": -1000, "B04": -1000}
  # B08 is not listed: it takes the baseline's offset.
  assert s2.safe_offsets(SAFE_0400, BANDS, datetime.date(2022, 9, 15)) == (-1000,) * 4
  assert s2.baseline_from_product_id(SAFE_0400.name) == "04.00"


def test_safe_without_baseline_after_2022_is_an_error(tmp_path):
  safe = tmp_path / "S2A_MSIL2A_20230415T105031_R051_T31UCP_x.SAFE"   # no _Nxxyy_
  safe.mkdir()
  with pytest.raises(UserError, match=r"SAFE product S2A_MSIL2A_20230415T105031_R051_"
                                      r"T31UCP_x\.SAFE: acquired 2023-04-15 but no "
                                      r"processing baseline"):
    s2.safe_offsets(safe, BANDS, datetime.date(2023, 4, 15))
  (safe / "MTD_MSIL2A.xml").write_text("<a><PROCESSING_BASELINE>05.09</PROCESSING_BASELINE></a>")
  assert s2.safe_offsets(safe, BANDS, datetime.date(2023, 4, 15)) == (-1000,) * 4
  (safe / "MTD_MSIL2A.xml").write_text("<a><broken")
  with pytest.raises(UserError, match=r"MTD_MSIL2A\.xml: unreadable product metadata"):
    s2.safe_offsets(safe, BANDS, datetime.date(2023, 4, 15))


def test_zone_off_the_10m_grid_is_refused():
  s2.check_zone_grid(Zone("z", "R", "T", 0, 32631, x0=400_010.0, y0=5_000_000.0))
  with pytest.raises(UserError, match=r"^zone z: corner x0=400004\.0, y0=5000000\.0, res=10\.0 is "
                                      r"off the 10 m Sentinel-2 grid of EPSG:32631 .*"
                                      r"set x0=400000, y0=5000000, res=10 in its row"):
    s2.check_zone_grid(Zone("z", "R", "T", 0, 32631, x0=400_004.0, y0=5_000_000.0))
  with pytest.raises(UserError, match="off the 10 m Sentinel-2 grid"):
    s2.check_zone_grid(Zone("z", "R", "T", 0, 32631, x0=400_000.0, y0=5_000_000.0,
                            res=20.0))
