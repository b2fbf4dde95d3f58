"""STAC route against a real HTTP catalogue on 127.0.0.1 (prep/demo/stac_server.py).

pystac-client, its paging and GDAL's /vsicurl/ range reads run for real; only
the catalogue is local. The demo's scenes are served as the catalogue's items.
"""
import contextlib
import gc
import json
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from prep import cli, scenes, stac
from prep.zones import read_zones
from prep.demo.stac_server import StacServer

FAST = dict(progress=False, http_retries=0, base_delay=0.0, retries=2)


@pytest.fixture(scope="module")
def small_demo(small_demo):
  """(the session's small demo, its zones): raw inputs, and zones/ the local route's
  folders (read-only)."""
  return small_demo, read_zones(small_demo / "raw" / "zones.csv")


@pytest.fixture
def few(small_demo, tmp_path):
  """Four demo items (Jan, Feb, Apr, May: no March) in a scene folder of their own."""
  root, zones = small_demo
  src = root / "raw" / "scenes"
  by_month = {}
  north = [p for p in src.iterdir() if "_T31UCQ_" in p.name]     # one tile, COG items
  for n in sorted(north, key=lambda p: p.name.split("_")[2]):
    by_month.setdefault(n.name.split("_")[2][4:6], n.name)
  names = [by_month[m] for m in ("01", "02", "04", "05")]
  d = tmp_path / "scenes"
  for n in names:
    shutil.copytree(src / n, d / n)
  return d, zones[0], names


def _run(server, zone, out, **kw):
  cat = kw.pop("cat", None) or stac.catalog(server.url)
  return stac.composite_zone_from_stac(zone, out, cat=cat, **{**FAST, **kw})


def _same_imagery(a: pathlib.Path, b: pathlib.Path) -> None:
  for name in ("s2.tif", "valid_count.tif"):
    assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_stac_route_equals_local_route_bit_for_bit(small_demo, tmp_path):
  root, zones = small_demo
  with StacServer(root / "raw" / "scenes", page_size=7) as server:
    for zone in zones[:1]:
      out = tmp_path / zone.zone_id
      info = _run(server, zone, out, workers=3)
      _same_imagery(out, root / "zones" / zone.zone_id)
      local = json.loads((root / "zones" / zone.zone_id / "meta.json").read_text())
      for key in ("scenes_per_month", "gap_filled_fraction", "nodata_pixels",
                  "harmonization_offsets"):
        assert info[key] == local["imagery"][key], key
      assert info["source"] == "stac" and info["items_found"] == 75
      assert not (out / stac.CACHE_DIR).exists()          # removed once written
    # 75 items (25 acquisitions x 3 tiles, SAFE ones through their catalogue item) in
    # pages of 7: 11 POSTs through the real pystac-client.
    assert server.requests["/search"] == 11
    assert [b.get("token") for b in server.search_bodies[:4]] == [None, "7", "14", "21"]
    assert server.search_bodies[0]["collections"] == ["sentinel-2-l2a"]
    assert server.search_bodies[0]["datetime"] == "2023-01-01T00:00:00Z/2023-12-31T23:59:59Z"
    # A rerun finds the zone done and reads nothing.
    before = sum(server.bytes_sent.values())
    again = _run(server, zones[0], tmp_path / zones[0].zone_id)
    assert again["windows_read_now"] == 375 and sum(server.bytes_sent.values()) == before


def _wide_item(folder: pathlib.Path, iid: str) -> None:
  """A 1024 x 1024 px COG-like scene (256-px tiles) around a 40 px zone."""
  import rasterio
  from affine import Affine
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for band, res, dtype in [("B02", 10, "uint16"), ("B03", 10, "uint16"),
                           ("B04", 10, "uint16"), ("B08", 10, "uint16"),
                           ("SCL", 20, "uint8")]:
    n = 1024 * 10 // res
    arr = (rng.integers(1, 5000, (n, n)) if band != "SCL" else np.full((n, n), 4)
           ).astype(dtype)
    with rasterio.open(folder / f"{band}.tif", "w", driver="GTiff", width=n, height=n,
                       count=1, dtype=dtype, crs="EPSG:32631", nodata=0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate",
                       transform=Affine(res, 0, 400_000, 0, -res, 5_010_240)) as dst:
      dst.write(arr, 1)
  item = {"type": "Feature", "stac_version": "1.0.0", "id": iid,
          "bbox": [1.5, 45.0, 1.8, 45.3], "geometry": None,
          "properties": {"datetime": "2023-06-01T10:56:21Z",
                         "earthsearch:boa_offset_applied": True},
          "assets": {b: {"href": f"{b}.tif"} for b in (*scenes.BAND_FILES, "SCL")}}
  (folder / f"{iid}.json").write_text(json.dumps(item))


def test_only_the_zone_window_is_read(tmp_path):
  """Range reads: a 40 px zone inside one 256-px tile of a 1024 px scene reads ~1/16."""
  from cropcontracts.zone import Zone
  _wide_item(tmp_path / "scenes" / "wide", "wide")
  zone = Zone("w_0", "Test", "Town", 0, 32631, x0=403_000.0, y0=5_007_240.0,
              width=40, height=40)
  with StacServer(tmp_path / "scenes",
                  edit_item=lambda i: dict(i, bbox=[-180, -90, 180, 90])) as server:
    with pytest.warns(UserWarning, match="no scene in 2023-01"):
      _run(server, zone, tmp_path / "out")
    sent = sum(server.bytes_sent.values())
  size = sum(p.stat().st_size for p in (tmp_path / "scenes" / "wide").glob("*.tif"))
  local = tmp_path / "local"
  with pytest.warns(UserWarning):
    scenes.composite_zone_from_scenes(tmp_path / "scenes", zone, local, progress=False)
  _same_imagery(tmp_path / "out", local)
  assert 0 < sent < 0.1 * size, (sent, size)


def test_month_without_item_is_gap_filled_as_the_local_route(few, tmp_path):
  d, zone, _ = few
  with StacServer(d) as server, pytest.warns(UserWarning, match="no scene in 2023-03"):
    info = _run(server, zone, tmp_path / "stac")
  with pytest.warns(UserWarning, match="no scene in 2023-03"):
    scenes.composite_zone_from_scenes(d, zone, tmp_path / "local", progress=False)
  _same_imagery(tmp_path / "stac", tmp_path / "local")
  assert info["months_without_scene"][0] == "2023-03" and info["scenes_used"] == 4


def test_read_failing_twice_then_succeeding_is_retried(few, tmp_path):
  d, zone, names = few
  slept = []
  with StacServer(d) as server, pytest.warns(UserWarning, match="no scene"):
    server.fail(f"{names[1]}/B03.tif", 503, tries=2)
    server.fault(f"{names[2]}/B08.tif", "truncate")
    _run(server, zone, tmp_path / "stac", retries=3, base_delay=0.5, workers=1,
         sleep=slept.append)
  # B03: 0.5 then 1.0 s; B08: 0.5 s; each stretched by up to 25 % (fetch.JITTER)
  assert len(slept) == 3
  for got, base in zip(slept, [0.5, 1.0, 0.5]):
    assert base <= got <= 1.25 * base
  with pytest.warns(UserWarning):
    scenes.composite_zone_from_scenes(d, zone, tmp_path / "local", progress=False)
  _same_imagery(tmp_path / "stac", tmp_path / "local")


def test_read_that_keeps_failing_stops_and_a_rerun_reads_only_the_rest(few, tmp_path):
  d, zone, names = few
  out = tmp_path / "stac"
  with StacServer(d) as server:
    server.fail(f"{names[2]}/SCL.tif", 500)
    with pytest.raises(UserError) as e:
      _run(server, zone, out, workers=1, retries=2)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"item {names[2]} band SCL: still failing after 2 retries")
    assert "rerun the same command later, it resumes" in msg
    assert not (out / "s2.tif").exists() and not (out / "meta.json").exists()
    # items 0 and 1, and the four bands of item 2 read before its SCL; the first
    # failure stops the rest (item 3 is not started)
    cached = len(list((out / stac.CACHE_DIR).glob("*.npy")))
    assert cached == 2 * 5 + 4
    server.failing.clear()
    server.bytes_sent.clear()
    with pytest.warns(UserWarning, match="no scene"):
      info = _run(server, zone, out)
    assert info["windows_read_now"] == 20 - cached
    assert set(server.bytes_sent) <= {f"{n}/{b}.tif" for n in names[2:]
                                      for b in (*scenes.BAND_FILES, "SCL")}
    assert f"{names[2]}/SCL.tif" in server.bytes_sent
  assert zonefolder.open_zone(out).meta["imagery"]["source"] == "stac"


def test_defects_skip_the_item_and_are_recorded(few, tmp_path):
  """Missing asset, 404 and a corrupt file: warned, skipped, listed in meta.json."""
  d, zone, names = few

  def drop_b08(item):
    if item["id"] == names[0]:
      item["assets"].pop("B08")
    return item

  with StacServer(d, edit_item=drop_b08) as server, warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    server.fail(f"{names[1]}/B04.tif", 404)
    server.fault(f"{names[3]}/B02.tif", "garbage")
    info = _run(server, zone, tmp_path / "stac")
  text = " ".join(str(x.message) for x in w)
  assert "1 item(s) lack an asset and are skipped" in text
  assert "2 item(s) unreadable and skipped" in text
  assert info["items_missing_asset"] == {names[0]: ["B08"]}
  assert set(info["items_unreadable"]) == {names[1], names[3]}
  assert info["items_unreadable"][names[1]].startswith("B04: not-found")
  assert info["items_unreadable"][names[3]].startswith("B02: ")
  assert info["scenes_used"] == 1
  meta = zonefolder.open_zone(tmp_path / "stac").meta["imagery"]
  assert meta["items_unreadable"] == info["items_unreadable"]


def test_403_re_signs_once(few, tmp_path):
  d, zone, names = few
  calls = []

  def sign(href, fresh):
    calls.append(fresh)
    return f"{href}?sig={'new' if fresh else 'expired'}"

  with StacServer(d) as server, pytest.warns(UserWarning, match="no scene"):
    cat = stac.Catalog("signed", server.url, sign=sign)
    server.require_sig(f"{names[0]}/B02.tif", "new")
    _run(server, zone, tmp_path / "ok", cat=cat)
  assert calls.count(True) == 1 and calls.count(False) == 20

  with StacServer(d) as server:
    cat = stac.Catalog("signed", server.url, sign=lambda href, fresh: href + "?sig=x")
    server.require_sig(f"{names[0]}/B02.tif", "new")
    with pytest.raises(UserError, match=f"item {names[0]} band B02: access refused .*"
                       "the signature was renewed once; check the catalogue's"):
      _run(server, zone, tmp_path / "refused", cat=cat)
  assert not (tmp_path / "refused" / "meta.json").exists()


def test_catalogue_unreachable_is_one_line(tmp_path, capsys, small_demo):
  """Without -q too: the catalogue is opened before the progress bar starts, so
  stderr holds the one line and nothing else."""
  import socket
  with socket.socket() as s:            # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  root, _ = small_demo
  rc = cli.main(["stac", "--zones-csv", str(root / "raw" / "zones.csv"), "--all",
                 "--catalog", f"http://127.0.0.1:{port}", "--out", str(tmp_path)])
  import re
  err = capsys.readouterr().err   # the whole of it: one line, the client's words in brackets
  assert rc == 2 and re.fullmatch(
      re.escape(f"error: catalogue http://127.0.0.1:{port}: unreachable, not a STAC API or "
                f"refused the search of sentinel-2-l2a (APIError: HTTPConnectionPool(") +
      r"[^\n]*" + re.escape("); check the network and --catalog, or rerun later\n"), err), err


def test_not_a_stac_api_is_one_line(few):
  d, zone, names = few
  with StacServer(d) as server:
    for url in (f"{server.url}/files/{names[0]}/{names[0]}.json",    # an item
                f"{server.url}/files/{names[0]}/B02.tif",             # not JSON
                f"{server.url}/nowhere"):                             # 404
      with pytest.raises(UserError, match=f"catalogue {url}: unreachable, not a STAC API"):
        stac.search_items(stac.catalog(url), zone, 2023)


def test_cli_stac_on_the_loopback_catalogue(few, tmp_path, capsys, small_demo):
  d, zone, _ = few
  root, _ = small_demo
  with StacServer(d) as server:
    rc = cli.main(["-q", "stac", "--zones-csv", str(root / "raw" / "zones.csv"),
                   "--zones", zone.zone_id, "--catalog", server.url, "--out",
                   str(tmp_path), "--max-cloud", "100", "--workers", "2"])
  assert rc == 0
  meta = zonefolder.open_zone(tmp_path / zone.zone_id).meta["imagery"]
  assert meta["catalog"] == server.url and meta["max_cloud"] == 100.0
  assert "warning: zone" in capsys.readouterr().err


def test_beam_stac_source_equals_the_local_route(small_demo, tmp_path, capsys):
  """`prep beam --source stac` (DirectRunner, the loopback catalogue): the zone
  folder equals the local route's bit for bit; a rerun reads nothing."""
  from prep import beam_composites
  root, zones = small_demo
  zone = zones[0]
  with StacServer(root / "raw" / "scenes") as server:
    rc = cli.main(["-q", "beam", "--source", "stac", "--catalog", server.url,
                   "--zones-csv", str(root / "raw" / "zones.csv"), "--zones", zone.zone_id,
                   "--out", str(tmp_path), "--stac-workers", "2",
                   "--", "--runner", "DirectRunner"])
    assert rc == 0, capsys.readouterr().err
    _same_imagery(tmp_path / zone.zone_id, root / "zones" / zone.zone_id)
    meta = zonefolder.open_zone(tmp_path / zone.zone_id).meta["imagery"]
    assert meta["source"] == "stac" and meta["catalog"] == server.url
    assert not (tmp_path / zone.zone_id / stac.CACHE_DIR).exists()
    [row] = beam_composites.read_summary(tmp_path)
    assert row["zone_id"] == zone.zone_id and not row["skipped"]
    searched = server.requests["/search"]
    beam_composites.run([zone], tmp_path, source="stac", catalog=server.url)
    assert server.requests["/search"] == searched            # complete: no request
  from tests.fixtures import assert_error
  capsys.readouterr()
  rc = cli.main(["-q", "beam", "--source", "stac", "--catalog", "aws", "--zones-csv",
                 str(root / "raw" / "zones.csv"), "--all", "--out", str(tmp_path)])
  assert_error(rc, capsys.readouterr().err, AWS)


def test_max_cloud_drops_items_before_reading(few, tmp_path):
  d, zone, names = few

  def cloudy(item):
    item["properties"]["eo:cloud_cover"] = 80.0 if item["id"] == names[0] else 10.0
    return item

  with StacServer(d, edit_item=cloudy) as server, pytest.warns(UserWarning):
    info = _run(server, zone, tmp_path / "stac", max_cloud=50)
    assert not any(k.startswith(names[0]) for k in server.bytes_sent)
  assert info["items_above_max_cloud"] == 1 and info["scenes_used"] == 3


def test_baseline_overrules_earth_search_flag_in_meta(few, tmp_path):
  d, zone, names = few

  def flagged(item):
    if item["id"] == names[0]:
      item["properties"].update({"s2:processing_baseline": "05.09",
                                 "earthsearch:boa_offset_applied": True})
    return item

  with StacServer(d, edit_item=flagged) as server, pytest.warns(UserWarning):
    info = _run(server, zone, tmp_path / "stac")
  assert info["boa_offset_flag_overruled"] == [names[0]]
  # the demo's products all carry the offset of baseline 05.09; the flagged one too
  assert info["harmonization_offsets"] == [-1000]


def test_catalog_names_paths_env_and_error_kinds(monkeypatch):
  assert stac.catalog("earth-search").url == "https://earth-search.aws.element84.com/v1"
  assert stac.catalog("planetary-computer").sign is not None
  assert stac.catalog("https://x.test/api/", "s2").collection == "s2"
  with pytest.raises(UserError, match="--catalog 'aws': not a known catalogue"):
    stac.catalog("aws")
  assert stac.gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
  assert stac.gdal_path("s3://eodata/S2/B02.jp2") == "/vsis3/eodata/S2/B02.jp2"
  monkeypatch.delenv("CDSE_S3_SECRET_KEY", raising=False)
  monkeypatch.setenv("CDSE_S3_ACCESS_KEY", "k")
  with pytest.raises(UserError, match="catalogue cdse: set CDSE_S3_SECRET_KEY"):
    stac.check_env(stac.catalog("cdse"))
  opts = stac.gdal_options(stac.catalog("cdse"))
  assert opts["AWS_ACCESS_KEY_ID"] == "k" and opts["AWS_VIRTUAL_HOSTING"] == "FALSE"
  assert opts["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
  assert stac.classify("HTTP response code: 503") == "transient"
  assert stac.classify("HTTP response code: 404") == "not-found"
  assert stac.classify("HTTP response code: 403") == "forbidden"
  assert stac.classify("not recognized as being in a supported file format") == "corrupt"


def test_bench_line_stac_vs_local(small_demo, capsys):
  from benchmarks import stac as bench
  root, zones = small_demo
  rec = bench.bench_stac(root, small=True, workers=2)
  assert json.loads(capsys.readouterr().out) == rec
  assert rec["identical"] is True and rec["items"] == 75 and rec["search_pages"] == 4
  assert rec["ratio"] > 0 and 0 < rec["bytes_requested"] <= 1.05 * rec["bytes_of_files"]
  assert rec["bytes_ratio"] == round(rec["bytes_requested"] / rec["bytes_of_files"], 3)


AWS = ("--catalog 'aws': not a known catalogue (earth-search, planetary-computer, cdse) nor "
       "an http(s):// STAC API URL")


@pytest.mark.parametrize("catalogue, expected", [
    ("aws", AWS),
    ("cdse", "catalogue cdse: set CDSE_S3_ACCESS_KEY and CDSE_S3_SECRET_KEY (the S3 keys of a "
             "Copernicus Data Space account, https://eodata-s3keysmanager.dataspace.copernicus.eu)")])
def test_cli_catalogue_mistakes_are_one_line(catalogue, expected, small_demo, tmp_path,
                                             capsys, monkeypatch):
  from tests.fixtures import assert_error
  monkeypatch.delenv("CDSE_S3_ACCESS_KEY", raising=False)
  monkeypatch.delenv("CDSE_S3_SECRET_KEY", raising=False)
  root, _ = small_demo
  rc = cli.main(["-q", "stac", "--zones-csv", str(root / "raw" / "zones.csv"), "--all",
                 "--catalog", catalogue, "--out", str(tmp_path)])
  assert_error(rc, capsys.readouterr().err, expected)


def test_tiles_of_one_acquisition_are_mosaicked_as_in_the_local_route(few, tmp_path):
  """A second tile of one (date, spacecraft): one observation, in both routes."""
  d, zone, names = few
  for name in names:                  # each item gets a twin tile, same acquisition
    twin = name.replace("T31UCQ", "T31UDQ")
    shutil.copytree(d / name, d / twin)
    item = json.loads((d / twin / f"{name}.json").read_text())
    (d / twin / f"{name}.json").unlink()
    (d / twin / f"{twin}.json").write_text(json.dumps(dict(item, id=twin)))
  with StacServer(d) as server, pytest.warns(UserWarning):
    info = _run(server, zone, tmp_path / "stac")
  with pytest.warns(UserWarning):
    local = scenes.composite_zone_from_scenes(d, zone, tmp_path / "local", progress=False)
  _same_imagery(tmp_path / "stac", tmp_path / "local")
  assert info["scenes_per_month"][0] == 2 and info["acquisitions_per_month"][0] == 1
  assert info["acquisitions_per_month"] == local["acquisitions_per_month"]
  assert zonefolder.open_zone(tmp_path / "stac").read_valid_count().max() == 1


def test_item_epsg_from_the_item():
  assert scenes.item_epsg({"proj:epsg": 32631}) == 32631
  assert scenes.item_epsg({"proj:code": "EPSG:32630"}) == 32630
  assert scenes.item_epsg({"s2:mgrs_tile": "31UCP"}) == 32631
  assert scenes.item_epsg({"s2:mgrs_tile": "21JUK"}) == 32721     # south of the equator
  assert scenes.item_epsg({"mgrs:utm_zone": 30, "mgrs:latitude_band": "T"}) == 32630
  assert scenes.item_epsg({}) is None


def test_zone_off_the_10m_grid_is_refused_before_any_request(few, tmp_path):
  import dataclasses
  d, zone, _ = few
  with StacServer(d) as server:
    with pytest.raises(UserError, match="off the 10 m Sentinel-2 grid"):
      _run(server, dataclasses.replace(zone, x0=zone.x0 + 5), tmp_path / "z")
    assert server.requests == {}


def _warm_cache(server, zone, out, names) -> None:
  """A run stopped by a read that keeps failing (the last item's SCL): 19 of the
  20 windows are in the cache, nothing of the zone folder is written."""
  server.fail(f"{names[3]}/SCL.tif", 500)
  with pytest.raises(UserError, match="still failing"):
    _run(server, zone, out, workers=1, retries=0)
  server.failing.clear()
  assert len(list((out / stac.CACHE_DIR).glob("*.npy"))) == 19


@contextlib.contextmanager
def _threads_switching_often():
  """Threads switch every microsecond and a collection (running finalizers, which
  lets another thread in) follows every allocation: races show at once."""
  interval, threshold = sys.getswitchinterval(), gc.get_threshold()
  sys.setswitchinterval(1e-6)
  gc.set_threshold(1, 1, 1)
  try:
    yield
  finally:
    sys.setswitchinterval(interval)
    gc.set_threshold(*threshold)


def test_twenty_resumed_runs_from_one_warm_cache_give_one_folder(few, tmp_path):
  """A resume is no matter of luck: every rerun from the same warm cache (its
  windows read by 4 threads at once) ends, and with the same zone folder. With
  threads switching this often, np.load's header parsing (ast, not thread-safe on
  CPython 3.11) failed the first reruns with "SystemError: AST constructor
  recursion depth mismatch"."""
  d, zone, names = few
  state = tmp_path / "state"
  with StacServer(d) as server:
    _warm_cache(server, zone, state, names)
    folders = []
    for i in range(20):
      out = tmp_path / f"rerun{i}"
      shutil.copytree(state, out)
      with pytest.warns(UserWarning, match="no scene"), _threads_switching_often():
        info = _run(server, zone, out, workers=4)
      assert info["windows_read_now"] == 1 and not (out / stac.CACHE_DIR).exists()
      folders.append(out)
  for out in folders[1:]:
    _same_imagery(out, folders[0])
    assert (out / "meta.json").read_bytes() == (folders[0] / "meta.json").read_bytes()
  with pytest.warns(UserWarning, match="no scene"):
    scenes.composite_zone_from_scenes(d, zone, tmp_path / "local", progress=False)
  _same_imagery(folders[0], tmp_path / "local")


KILLED_MID_WINDOW = """
import sys
from cropcontracts import atomic
from prep import cli, fetch
save, saved = fetch.ZoneCache.save, []

def stalled(self, piece, array):      # the third window: killed while written
  saved.append(piece)
  if len(saved) == 3:
    with atomic.atomic_path(self.path(piece)) as tmp:
      tmp.write_bytes(array.tobytes()[:100])
      print("writing", flush=True)
      sys.stdin.read()
  save(self, piece, array)

fetch.ZoneCache.save = stalled
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_killed_run_leaves_no_temporary_in_the_cache_after_a_rerun(few, small_demo,
                                                                     tmp_path):
  """`prep stac` killed while it writes a window, then rerun: the killed run's
  temporary goes (the rerun holds the cache's lock, so it is a dead run's), its
  whole windows stay, also when the rerun stops again."""
  d, zone, names = few
  root, _ = small_demo
  out = tmp_path / zone.zone_id
  cache = out / stac.CACHE_DIR
  repo = pathlib.Path(__file__).resolve().parents[1]
  with StacServer(d) as server:
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WINDOW, "-q", "stac", "--zones-csv",
         root / "raw" / "zones.csv", "--zones", zone.zone_id, "--catalog", server.url,
         "--out", tmp_path, "--workers", "1"], cwd=repo, text=True,
        env=dict(os.environ, PYTHONPATH=str(repo)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
      assert killed.stdout.readline() == "writing\n"
    finally:
      killed.kill()
      killed.communicate()
    assert len(list(cache.glob(".*.partial"))) == 1 and len(list(cache.glob("*.npy"))) == 2
    server.fail(f"{names[3]}/SCL.tif", 500)
    with pytest.raises(UserError, match="still failing"):      # the rerun stops again
      _run(server, zone, out, workers=1, retries=0)
    assert not list(cache.glob(".*.partial")) and len(list(cache.glob("*.npy"))) == 19
    server.failing.clear()
    with pytest.warns(UserWarning, match="no scene"):
      assert _run(server, zone, out)["windows_read_now"] == 1
  assert not cache.exists() and not list(out.glob(".*.partial"))
