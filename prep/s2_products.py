"""What real Sentinel-2 L2A products declare: processing baseline, BOA offset, spacecraft.

Since processing baseline 04.00 (first products 25 Jan 2022) L2A digital
numbers carry an offset: reflectance = (DN + BOA_ADD_OFFSET) / 10000 with
BOA_ADD_OFFSET = -1000. The offset belongs to the *baseline*, not to the
acquisition date: ESA's reprocessing (collection 1, baseline 05.00) gives
products of 2017-2021 acquisitions baseline >= 04.00, offset included. So the
offset is always derived from what the product says about itself:

  STAC items   `s2:boa_add_offset` (an explicit offset), else
               `earthsearch:boa_offset_applied: true` (Earth Search already
               removed it: 0), else the baseline of `s2:processing_baseline`
               (Earth Search, Planetary Computer) or `processing:version`
               (Copernicus Data Space), else the `_Nxxyy_` part of the item id
               or of `s2:product_uri`.
  SAFE         `MTD_MSIL2A.xml`: the `BOA_ADD_OFFSET band_id=…` values (per
               band, when listed) and `PROCESSING_BASELINE` (else the `_Nxx.yy`
               end of the datatake identifier), else the `_Nxxyy_` part of the
               product name.

Baseline >= 04.00 -> -1000, below -> 0. An acquisition from 2022-01-25 on
whose baseline cannot be found is an error (`require_baseline`): it may carry
the offset or not, and guessing 0 would shift every reflectance by 0.1.
Before that date a product without any baseline is taken as an original
(pre-04.00) product: 0.

Pure functions of strings, dicts and one XML file; `prep.scenes` and the STAC
route call them. Baselines are normalized strings "NN.NN" (`"04.00"`,
`"05.10"`), which compare correctly as strings.
"""
from __future__ import annotations

import datetime
import pathlib
import re
import xml.etree.ElementTree as ET

from cropcontracts.errors import UserError

BOA_ADD_OFFSET = -1000                       # DN offset from baseline 04.00 on
OFFSET_BASELINE = "04.00"                    # first baseline with the offset
OFFSET_FIRST_DATE = datetime.date(2022, 1, 25)   # first products of baseline 04.00
RES = 10.0                                   # the 10 m bands' grid (m)
# MTD_MSIL2A band_id -> band: the 13 bands in ESA order.
MTD_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
             "B10", "B11", "B12")
_PRODUCT_BASELINE = re.compile(r"_N(\d{2})(\d{2})(?:_|$|\.)")
_DATATAKE_BASELINE = re.compile(r"_N(\d{2})\.(\d{2})$")
_SPACECRAFT = re.compile(r"^S2([A-D])_", re.IGNORECASE)


def normalize_baseline(value) -> str | None:
  """"NN.NN" from "05.10", "5.1", "N0510", "0510", 5.1 or 4; None when empty.

  A one-digit minor is a tenth ("5.1" -> "05.10"), as in the "x.y" spelling of
  some catalogues. Raises ValueError on anything else.
  """
  if value is None or (isinstance(value, str) and not value.strip()):
    return None
  if isinstance(value, bool):
    raise ValueError(f"not a processing baseline: {value!r}")
  if isinstance(value, (int, float)):
    value = f"{float(value):.2f}"
  text = str(value).strip().upper().removeprefix("N")
  m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", text) or re.fullmatch(r"(\d{2})(\d{2})", text)
  if not m:
    m = re.fullmatch(r"(\d{1,2})", text)
    if not m:
      raise ValueError(f"not a processing baseline: {value!r}")
    return f"{int(m.group(1)):02d}.00"
  major, minor = m.groups()
  return f"{int(major):02d}.{minor.ljust(2, '0')}"


def offset_of_baseline(baseline: str) -> int:
  """BOA_ADD_OFFSET of a normalized baseline: -1000 from 04.00 on, else 0."""
  return BOA_ADD_OFFSET if baseline >= OFFSET_BASELINE else 0


def baseline_from_product_id(product_id: str) -> str | None:
  """Baseline of the `_Nxxyy_` part of a product id (SAFE name, CDSE id), or None.

  `S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625.SAFE` -> "05.10".
  Earth Search ids (`S2A_31UCP_20230415_0_L2A`) carry none.
  """
  m = _PRODUCT_BASELINE.search(pathlib.PurePath(product_id).name)
  return f"{m.group(1)}.{m.group(2)}" if m else None


def baseline_from_stac(properties: dict, item_id: str = "") -> str | None:
  """Baseline a STAC item declares, or None.

  `s2:processing_baseline` (Earth Search, Planetary Computer), then
  `processing:version` (Copernicus Data Space), then the `_Nxxyy_` part of
  `s2:product_uri` or of the item id.
  Raises UserError when a declared value is not a baseline.
  """
  for key in ("s2:processing_baseline", "processing:version"):
    if properties.get(key) not in (None, ""):
      try:
        return normalize_baseline(properties[key])
      except ValueError:
        raise UserError(f"STAC item {item_id}: {key}={properties[key]!r} is not a "
                        f"processing baseline (expected e.g. \"05.10\"); fix the "
                        f"item's properties") from None
  for text in (properties.get("s2:product_uri") or "", item_id):
    if (found := baseline_from_product_id(text)):
      return found
  return None


def stac_offset(properties: dict, item_id: str, date: datetime.date) -> int:
  """BOA_ADD_OFFSET of a STAC item's digital numbers (module docstring).

  Raises UserError for an acquisition from 2022-01-25 on that declares neither
  an offset nor a baseline.
  """
  if properties.get("s2:boa_add_offset") is not None:
    return int(properties["s2:boa_add_offset"])
  if properties.get("earthsearch:boa_offset_applied") is True:
    return 0
  baseline = require_baseline(baseline_from_stac(properties, item_id),
                              f"STAC item {item_id}", date,
                              "s2:processing_baseline (or processing:version)")
  return 0 if baseline is None else offset_of_baseline(baseline)


def require_baseline(baseline: str | None, what: str, date: datetime.date,
                     where: str) -> str | None:
  """`baseline`, or UserError when it is None and the date is 2022-01-25 or later.

  `what` names the item, `where` the field the user should fill in.
  """
  if baseline is None and date >= OFFSET_FIRST_DATE:
    raise UserError(
        f"{what}: acquired {date} but no processing baseline found (products of "
        f"baseline >= {OFFSET_BASELINE} carry a BOA offset of {BOA_ADD_OFFSET}); "
        f"add {where} or remove the scene")
  return baseline


def _strip(tag: str) -> str:
  return tag.rsplit("}", 1)[-1]


def read_mtd(path) -> dict:
  """The facts of a `MTD_MSIL2A.xml` that compositing needs.

  Returns:
    {"baseline": "NN.NN" or None (PROCESSING_BASELINE, else the datatake
     identifier's `_Nxx.yy`), "offsets": {band: int} of the listed
     BOA_ADD_OFFSET values (band names B01…B12; empty when none),
     "product_uri": str or None, "spacecraft": "A"/"B"/… or None}.
  Raises UserError when the file is unreadable or not XML.
  """
  path = pathlib.Path(path)
  try:
    root = ET.parse(path).getroot()
  except (OSError, ET.ParseError) as e:
    raise UserError(f"{path}: unreadable product metadata ({e}); re-download the "
                    f"product or remove it") from None
  info = {"baseline": None, "offsets": {}, "product_uri": None, "spacecraft": None}
  datatake = None
  for el in root.iter():
    tag, text = _strip(el.tag), (el.text or "").strip()
    if tag == "PROCESSING_BASELINE" and text:
      try:
        info["baseline"] = normalize_baseline(text)
      except ValueError:
        raise UserError(f"{path}: PROCESSING_BASELINE {text!r} is not a baseline; "
                        f"re-download the product") from None
    elif tag == "BOA_ADD_OFFSET":
      band_id = int(el.get("band_id", el.get("bandId", "-1")))
      if 0 <= band_id < len(MTD_BANDS):
        info["offsets"][MTD_BANDS[band_id]] = int(float(text))
    elif tag == "PRODUCT_URI" and text:
      info["product_uri"] = text
    elif tag == "SPACECRAFT_NAME" and text:
      info["spacecraft"] = text[-1].upper()
    elif tag == "Datatake" and el.get("datatakeIdentifier"):
      datatake = el.get("datatakeIdentifier")
  if info["baseline"] is None and datatake:
    if (m := _DATATAKE_BASELINE.search(datatake)):
      info["baseline"] = f"{m.group(1)}.{m.group(2)}"
  if info["spacecraft"] is None and datatake and datatake.startswith("GS2"):
    info["spacecraft"] = datatake[3].upper()       # GS2B_20220915T092029_…
  return info


def safe_offsets(safe, bands, date: datetime.date) -> tuple[int, ...]:
  """BOA_ADD_OFFSET of each of `bands` (e.g. "B02") of a SAFE product.

  From `MTD_MSIL2A.xml`: a band's listed BOA_ADD_OFFSET, else the offset of
  the MTD's baseline; without the MTD (or a baseline in it), the offset of the
  product name's `_Nxxyy_`. Raises UserError for an acquisition from
  2022-01-25 on with no baseline anywhere and no listed offset.
  """
  safe = pathlib.Path(safe)
  mtd = safe / "MTD_MSIL2A.xml"
  info = read_mtd(mtd) if mtd.is_file() else {"baseline": None, "offsets": {}}
  baseline = info["baseline"] or baseline_from_product_id(safe.name)
  listed = info["offsets"]
  if not all(b in listed for b in bands):
    baseline = require_baseline(baseline, f"SAFE product {safe.name}", date,
                                "its MTD_MSIL2A.xml (PROCESSING_BASELINE) or the "
                                "product name's _Nxxyy_")
  fallback = 0 if baseline is None else offset_of_baseline(baseline)
  return tuple(listed.get(b, fallback) for b in bands)


def spacecraft_of(product_id: str = "", properties: dict | None = None) -> str:
  """"A", "B", "C"… of Sentinel-2A/B/C, from STAC `platform` or the id; "" if unknown."""
  platform = str((properties or {}).get("platform") or "").strip().lower()
  if re.fullmatch(r"sentinel-?2[a-d]", platform):
    return platform[-1].upper()
  m = _SPACECRAFT.match(pathlib.PurePath(product_id).name)
  return m.group(1).upper() if m else ""


def check_zone_grid(zone, table=None) -> None:
  """UserError unless the zone's corner lies on the 10 m Sentinel-2 grid.

  `table`: the zones table the zone comes from, named in the message.

  Sentinel-2 tiles have their 10 m pixel edges on multiples of 10 m of their
  UTM CRS; a zone corner off that grid (a hand-edited zones table) would make
  every band be resampled with a sub-pixel shift, silently.
  """
  def off(v: float) -> bool:
    return abs(v / RES - round(v / RES)) > 1e-6

  if zone.res != RES or off(zone.x0) or off(zone.y0):
    fix_x, fix_y = round(zone.x0 / RES) * RES, round(zone.y0 / RES) * RES
    where = f"{table}: " if table else ""
    raise UserError(
        f"{where}zone {zone.zone_id}: corner x0={zone.x0!r}, y0={zone.y0!r}, res={zone.res!r} "
        f"is off the 10 m Sentinel-2 grid of {zone.crs} (imagery would be resampled "
        f"with a sub-pixel shift); set x0={fix_x:.0f}, y0={fix_y:.0f}, res=10 in "
        f"its row of the zones table")
