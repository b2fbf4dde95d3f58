"""Earth Engine route, offline: the requests that would be sent, not the server.

`ee.apitestcase.ApiTestCase` installs the algorithm list shipped with
earthengine-api, so expressions build and serialize without network; a fake
`ee.data.computePixels` records each request and answers NUMPY_NDARRAY data.
"""
import json
import math
import re

import ee
import numpy as np
import pytest
from ee import apitestcase

from cropcontracts import zonefolder
from prep import gee
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

ZONE = Zone("t_0", "Test", "Town", 0, 32631, x0=400_000.0, y0=5_000_000.0,
            width=30, height=20)


@pytest.fixture(autouse=True)
def ee_offline():
  case = apitestcase.ApiTestCase()
  case.setUp()
  yield
  case.tearDown()


class FakeServer:
  """computePixels stand-in: month m answers B2..B8 = 100 m + 10 c + 1, count 3;
  months in `empty` answer 0 (no valid observation)."""

  def __init__(self, fail_first=0, error="Too many concurrent aggregations.",
               empty=(), stop_after=None):
    self.requests, self.calls = [], 0
    self.fail_first, self.error, self.empty = fail_first, error, set(empty)
    self.stop_after = stop_after

  @staticmethod
  def month_of(text):
    """The month filtered: dates are the year's bounds and the month's."""
    found = sorted({int(m) for m in re.findall(r'"2023-(\d\d)-01"', text)})
    if len(found) == 3:            # 2023-01-01, 2023-mm-01, 2023-(m+1)-01
      return found[1]
    return 1 if found == [1, 2] else found[-1]   # January, or December

  def __call__(self, request):
    self.calls += 1
    if self.calls <= self.fail_first:
      raise ee.EEException(self.error)
    if self.stop_after is not None and len(self.requests) >= self.stop_after:
      raise ee.EEException("Computation timed out.")   # not retryable
    text = json.dumps(ee.serializer.encode(request["expression"], for_cloud_api=True))
    self.requests.append((request, text))
    month = self.month_of(text)
    dims = request["grid"]["dimensions"]
    dtype = [(b, np.uint16) for b in gee.EE_BANDS] + [("count", np.uint8)]
    out = np.zeros((dims["height"], dims["width"]), dtype)
    if month not in self.empty:
      for c, b in enumerate(gee.EE_BANDS):
        out[b] = 100 * month + 10 * c + 1
      out["count"] = 3
    return out


def _run(tmp_path, server, monkeypatch, **kw):
  monkeypatch.setattr(ee.data, "computePixels", server)
  return gee.composite_zone_from_gee(ZONE, tmp_path / "t_0", progress=False,
                                     sleep=lambda s: None, **kw)


def test_request_contents_and_tiling(tmp_path, monkeypatch):
  server = FakeServer()
  max_bytes = gee.BYTES_PER_PIXEL * 12 * 12        # 12 x 12 px tiles
  info = _run(tmp_path, server, monkeypatch, max_bytes=max_bytes)
  assert len(server.requests) == 12 * 6            # 12 months x (2 x 3) tiles
  request, text = server.requests[0]
  for needle in ('"COPERNICUS/S2_SR_HARMONIZED"', '"2023-01-01"', '"2024-01-01"',
                 '"2023-02-01"', '"SCL"', '"B2"', '"B3"', '"B4"', '"B8"',
                 '"ImageCollection.toArray"', '"Image.arraySort"', '"Image.arrayGet"',
                 '"Image.arrayLength"', '"reduce.count"', '"Image.floor"', '"Image.gte"', '"Image.lte"', '"Reducer.min"',
                 '"GeometryConstructors.Rectangle"', '"EPSG:32631"'):
    assert needle in text, needle
  assert '{"constantValue": 4}' in text and '{"constantValue": 7}' in text
  assert request["fileFormat"] == "NUMPY_NDARRAY"
  assert request["bandIds"] == ["B2", "B3", "B4", "B8", "count"]
  grid = request["grid"]
  assert grid["crsCode"] == "EPSG:32631"
  assert grid["affineTransform"]["scaleX"] == 10 and grid["affineTransform"]["scaleY"] == -10
  origins = {(r["grid"]["affineTransform"]["translateX"],
              r["grid"]["affineTransform"]["translateY"],
              r["grid"]["dimensions"]["width"], r["grid"]["dimensions"]["height"])
             for r, _ in server.requests}
  assert origins == {(400_000.0, 5_000_000.0, 12, 12), (400_120.0, 5_000_000.0, 12, 12),
                     (400_240.0, 5_000_000.0, 6, 12), (400_000.0, 4_999_880.0, 12, 8),
                     (400_120.0, 4_999_880.0, 12, 8), (400_240.0, 4_999_880.0, 6, 8)}
  for r, _ in server.requests:
    dims = r["grid"]["dimensions"]
    assert dims["width"] * dims["height"] * gee.BYTES_PER_PIXEL <= max_bytes
  img = zonefolder.open_zone(tmp_path / "t_0").read_image()
  np.testing.assert_array_equal(img[6, 19, 29], [701, 711, 721, 731])
  assert info["source"] == "earth-engine" and info["requests"] == 72
  assert not (tmp_path / "t_0" / gee.CACHE_DIR).exists()     # cache cleaned


def test_month_text_of_each_request(tmp_path, monkeypatch):
  server = FakeServer()
  _run(tmp_path, server, monkeypatch)
  assert len(server.requests) == 12                    # small zone: one tile a month
  _, text = server.requests[11]
  assert '"2023-12-01"' in text and '"2024-01-01"' in text


@pytest.mark.parametrize("h, w, max_bytes", [(1000, 1000, gee.MAX_REQUEST_BYTES),
                                              (1000, 1000, 4_000_000),
                                              (37, 101, 9 * 100), (5, 5, 9)])
def test_plan_tiles_cover_the_zone_exactly(h, w, max_bytes):
  zone = Zone("z", "R", "T", 0, 32631, 0.0, 0.0, width=w, height=h)
  tiles = gee.plan_tiles(zone, max_bytes=max_bytes)
  hits = np.zeros((h, w), int)
  for t in tiles:
    hits[t.row:t.row + t.height, t.col:t.col + t.width] += 1
    assert t.height * t.width * gee.BYTES_PER_PIXEL <= max_bytes
  assert (hits == 1).all()
  if max_bytes == gee.MAX_REQUEST_BYTES:
    assert len(tiles) == 1                            # a zone-month is 9 MB


def test_gap_months_are_filled(tmp_path, monkeypatch):
  server = FakeServer(empty={2, 12})
  with pytest.warns(UserWarning, match="no valid observation in 2023-02, 2023-12"):
    info = _run(tmp_path, server, monkeypatch)
  img = zonefolder.open_zone(tmp_path / "t_0").read_image()
  np.testing.assert_array_equal(img[1, 0, 0], [201, 211, 221, 231])  # (101+301)/2
  np.testing.assert_array_equal(img[11, 0, 0], [1101, 1111, 1121, 1131])
  assert info["months_without_observation"] == ["2023-02", "2023-12"]
  assert info["gap_filled_fraction"] == pytest.approx(2 / 12, abs=1e-6)


def test_retries_quota_errors_with_backoff(tmp_path, monkeypatch):
  server = FakeServer(fail_first=2)
  delays = []
  monkeypatch.setattr(ee.data, "computePixels", server)
  gee.composite_zone_from_gee(ZONE, tmp_path / "t_0", progress=False,
                              sleep=delays.append, base_delay=2.0)
  # base * 2**k, stretched by up to 25 % (fetch.JITTER)
  assert len(delays) == 2 and server.calls == 2 + 12
  assert 2.0 <= delays[0] <= 2.5 and 4.0 <= delays[1] <= 5.0


def test_gives_up_after_max_retries(tmp_path, monkeypatch):
  server = FakeServer(fail_first=100, error="HTTP 503 Service Unavailable")
  with pytest.raises(UserError, match="still failing after 3 retries .*rerun"):
    _run(tmp_path, server, monkeypatch, max_retries=3)
  assert server.calls == 4


def test_other_errors_are_not_retried(tmp_path, monkeypatch):
  server = FakeServer(fail_first=1, error="User memory limit exceeded.")
  with pytest.raises(UserError, match="Earth Engine refused .*User memory limit"):
    _run(tmp_path, server, monkeypatch)
  assert server.calls == 1


@pytest.mark.parametrize("text, retry", [
    ("Too Many Requests", True),                     # 429 reason, no code in the text
    ("Too many concurrent aggregations.", True),
    ("Quota exceeded for quota metric 'Requests'", True),
    ("The service is currently unavailable.", True),  # the usual 503 reason
    ("HTTP 502 Bad Gateway", True),
    ("An internal error has occurred (request: 1f2e).", True),
    ("Deadline exceeded", True),
    ("Total request size (50000000 bytes) must be less than or equal to "
     "50331648 bytes.", False),                      # "500" inside a number
    ("User memory limit exceeded.", False),
    ("Image.select: Pattern 'B5' did not match any bands.", False),
    ("Computation timed out.", False),               # the same request would again
])
def test_retryable_errors_by_their_reason_text(text, retry):
  assert gee.is_retryable(ee.EEException(text)) is retry


def test_folder_of_another_zone_is_refused_before_any_request(tmp_path, monkeypatch):
  other = Zone("o_0", "Test", "Town", 0, 32631, x0=500_000.0, y0=5_000_000.0,
               width=30, height=20)
  zonefolder.write_imagery(tmp_path / "t_0", other,
                           np.ones((12, 4, 20, 30), np.uint16),
                           np.ones((12, 20, 30), np.uint8),
                           [f"2023-{m:02d}" for m in range(1, 13)], {"source": "test"})
  server = FakeServer()
  with pytest.raises(UserError, match="already holds zone 'o_0'"):
    _run(tmp_path, server, monkeypatch)
  assert server.calls == 0 and not (tmp_path / "t_0" / gee.CACHE_DIR).exists()


def test_zone_of_same_id_on_another_grid_is_not_taken_as_done(tmp_path, monkeypatch):
  _run(tmp_path, FakeServer(), monkeypatch)
  moved = Zone("t_0", "Test", "Town", 0, 32631, x0=400_010.0, y0=5_000_000.0,
               width=30, height=20)
  monkeypatch.setattr(ee.data, "computePixels", FakeServer())
  with pytest.raises(UserError, match="already holds zone 't_0' on another grid"):
    gee.composite_zone_from_gee(moved, tmp_path / "t_0", progress=False,
                                sleep=lambda s: None)


def test_resumes_from_cache_then_skips_done_zone(tmp_path, monkeypatch):
  first = FakeServer(stop_after=5)
  with pytest.raises(UserError):
    _run(tmp_path, first, monkeypatch)
  cached = sorted(p.name for p in (tmp_path / "t_0" / gee.CACHE_DIR).glob("*.npy"))
  assert cached == [f"2023-0{m}_r0_c0.npy" for m in range(1, 6)]
  second = FakeServer()
  info = _run(tmp_path, second, monkeypatch)
  assert second.calls == 7 and info["requests_fetched_now"] == 7
  third = FakeServer()
  assert _run(tmp_path, third, monkeypatch)["requests"] == 12
  assert third.calls == 0                            # zone already complete


def test_cache_of_another_zone_is_dropped(tmp_path, monkeypatch):
  cache = tmp_path / "t_0" / gee.CACHE_DIR
  cache.mkdir(parents=True)
  (cache / "key.json").write_text('{"other": 1}')
  np.save(cache / "2023-01_r0_c0.npy", np.zeros((5, 20, 30), np.uint16))
  server = FakeServer()
  _run(tmp_path, server, monkeypatch)
  assert server.calls == 12


def test_unreadable_cached_tile_is_fetched_again(tmp_path, monkeypatch):
  first = FakeServer(stop_after=2)
  with pytest.raises(UserError):
    _run(tmp_path, first, monkeypatch)
  (tmp_path / "t_0" / gee.CACHE_DIR / "2023-02_r0_c0.npy").write_bytes(b"junk")
  second = FakeServer()
  _run(tmp_path, second, monkeypatch)
  assert second.calls == 11
  img = zonefolder.open_zone(tmp_path / "t_0").read_image()
  np.testing.assert_array_equal(img[1, 0, 0], [201, 211, 221, 231])


def test_missing_credentials_message(monkeypatch):
  monkeypatch.delenv("JAXCROP_EE_KEY", raising=False)
  monkeypatch.setenv("JAXCROP_EE_PROJECT", "my-proj")

  def refuse(*a, **k):
    raise ee.EEException("Please authorize access to your Earth Engine account by running\n\n"
                         "earthengine authenticate")
  monkeypatch.setattr(ee, "Initialize", refuse)
  with pytest.raises(UserError, match=r"cannot initialize \(project='my-proj'\): Please "
                                      r"authorize .*run `earthengine authenticate` .*"
                                      r"JAXCROP_EE_KEY.*JAXCROP_EE_PROJECT"):
    gee.initialize()


def test_bad_service_account_key(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCROP_EE_KEY", str(tmp_path / "nope.json"))
  with pytest.raises(UserError, match=r"nope\.json: JAXCROP_EE_KEY is not a readable"):
    gee.initialize("p")


# --- zone selection from WorldCover (prep.select_zones) ---------------------

from prep import select_zones as sz  # noqa: E402
from prep import zones as zones_table  # noqa: E402


def test_greedy_squares_hand_grid():
  f = np.array([[.9, .1, 0, 0, 0],
                [.8, .95, 0, 0, 0],
                [0, 0, 0, .7, 0],
                [0, 0, 0, 0, 0],
                [.6, 0, 0, 0, .85]])
  # (1,1) then (4,4); (2,3) touches neither; .9 and .8 overlap (1,1); then .6.
  assert sz.greedy_squares(f, 2, 4) == [(1, 1), (4, 4), (2, 3), (4, 0)]
  allowed = np.ones_like(f, bool)
  allowed[1, 1] = False
  assert sz.greedy_squares(f, 2, 2, allowed=allowed) == [(0, 0), (4, 4)]
  # Ties go to the nearer square.
  g = np.ones((1, 6))
  assert sz.greedy_squares(g, 1, 1, distance=np.array([[5, 4, 3, 0.5, 2, 1.]])) == [(0, 3)]


def test_square_fractions_is_block_mean():
  cells = np.random.default_rng(0).random((7, 9))
  got = sz.square_fractions(cells, 3)
  want = np.array([[cells[r:r + 3, c:c + 3].mean() for c in range(7)] for r in range(5)])
  np.testing.assert_allclose(got, want)


def test_select_zones_request_and_choice(monkeypatch):
  inits = []
  monkeypatch.setattr(gee, "initialize", lambda project=None: inits.append(project))
  region = ("Paris Basin", "Chartres", "chartres", 1.4890, 48.4439)
  grid = sz.fraction_grid(*region[3:], radius_km=20)
  cells = np.zeros((grid.rows, grid.cols))
  assert grid.rows == grid.cols == 51     # (20 + 5) km each side of the town, 1 km cells
  cells[10:20, 12:22] = 0.9          # a 10 x 10 km block, centre ~13 km from town
  cells[26:36, 26:36] = 0.5
  cells[:8, 42:] = 1.0               # a corner block beyond the 20 km radius
  requests = []

  def fake(request):
    requests.append(request)
    out = np.zeros((grid.rows, grid.cols), [("cropland", np.float32)])
    out["cropland"] = cells
    return out
  monkeypatch.setattr(ee.data, "computePixels", fake)
  zones = sz.select_zones([region], n_per_region=3, radius_km=20, progress=False,
                          project="p")
  (request,) = requests
  assert inits == ["p"]
  text = json.dumps(ee.serializer.encode(request["expression"], for_cloud_api=True))
  for needle in ('"ESA/WorldCover/v200"', '"Map"', '"Image.eq"', '{"constantValue": 40}',
                 '"Image.reduceResolution"', '"Reducer.mean"', '65536'):
    assert needle in text, needle
  assert request["grid"]["crsCode"] == "EPSG:32631"
  assert request["grid"]["affineTransform"]["scaleX"] == 1000
  assert request["grid"]["dimensions"] == {"width": grid.cols, "height": grid.rows}
  assert [z.zone_id for z in zones] == ["chartres_0", "chartres_1", "chartres_2"]
  assert [z.index for z in zones] == [0, 1, 2]
  # Index 0 (test) is the square of the seeded rank; the others keep their order.
  assert sz.draw_test_rank("chartres", 3, 0) == 2
  assert zones[1].cropland_fraction == 0.9 and zones[2].cropland_fraction == 0.5
  assert zones[0].cropland_fraction < 0.1          # only a sliver of the corner
  assert (zones[1].x0, zones[1].y0) == (grid.x0 + 12_000, grid.y0 - 10_000)
  assert (zones[2].x0, zones[2].y0) == (grid.x0 + 26_000, grid.y0 - 26_000)
  for z in zones:
    assert z.x0 % 10 == 0 and z.y0 % 10 == 0 and z.width == z.height == 1000
    assert z.source == "worldcover-v200" and z.epsg == 32631
    cx, cy = z.x0 + 5000, z.y0 - 5000
    assert math.hypot(cx - grid.tx, cy - grid.ty) <= 20_000
  _assert_apart(zones, 1000)


def _assert_apart(zones, gap_m):
  """No two squares closer than gap_m (the distance between two rectangles)."""
  for a in zones:
    for b in zones:
      if a is not b:
        dx = max(a.x0, b.x0) - min(a.x0 + a.width * a.res, b.x0 + b.width * b.res)
        dy = max(a.y0 - a.height * a.res, b.y0 - b.height * b.res) - min(a.y0, b.y0)
        assert math.hypot(max(dx, 0), max(dy, 0)) >= gap_m, (a.zone_id, b.zone_id)


def test_greedy_squares_keep_the_gap():
  f = np.array([[1.0, .99, .98, .97, .96, .95, .94]])
  # k = 2: touching squares (gap 0) share no cell; with gap 1 a cell stays between.
  assert sz.greedy_squares(f, 1, 3) == [(0, 0), (0, 1), (0, 2)]
  assert sz.greedy_squares(f, 2, 3) == [(0, 0), (0, 2), (0, 4)]
  assert sz.greedy_squares(f, 2, 3, gap=1) == [(0, 0), (0, 3), (0, 6)]
  g = np.zeros((5, 5))
  g[0, 0], g[2, 2], g[3, 3] = 1.0, 0.9, 0.8        # (2, 2) touches (0, 0) at a corner
  assert sz.greedy_squares(g, 2, 2) == [(0, 0), (2, 2)]
  assert sz.greedy_squares(g, 2, 2, gap=1) == [(0, 0), (3, 3)]


def test_chosen_squares_do_not_touch_on_a_uniform_cropland_grid():
  """A 40 km x 12 km field of cropland: the five best squares would touch
  side by side; 1 km of clearance is kept between any two."""
  region = ("Paris Basin", "Chartres", "chartres", 1.4890, 48.4439)
  grid = sz.fraction_grid(*region[3:], radius_km=30)
  cells = np.zeros((grid.rows, grid.cols))
  cells[30:42, 10:60] = 1.0
  cells[30:42, 10:60] += np.linspace(0, 0.01, 50)  # no ties: east is better
  zones = sz.choose_zones(cells, grid, *region[:3], n=5, radius_km=30)
  assert len(zones) == 5
  _assert_apart(zones, 1000)
  xs = sorted(z.x0 - grid.x0 for z in zones)
  # The best square ends at the block's east edge (col 50); then every 11 km.
  assert xs == [6000.0, 17_000.0, 28_000.0, 39_000.0, 50_000.0]
  touching = sz.choose_zones(cells, grid, *region[:3], n=5, radius_km=30, gap_m=0)
  assert sorted(z.x0 - grid.x0 for z in touching) == [10_000.0, 20_000.0, 30_000.0,
                                                     40_000.0, 50_000.0]
  # Centres within 5 km are at most 10 km apart: a second square would touch.
  near = sz.fraction_grid(*region[3:], radius_km=5)
  with pytest.raises(UserError, match=r"Paris Basin: only 1 10 km squares at least 1 km "
                     r"apart fit within 5 km of Chartres; raise radius_km"):
    sz.choose_zones(np.ones((near.rows, near.cols)), near, *region[:3], n=2, radius_km=5)


def test_test_zone_is_a_seeded_draw_not_always_the_top_square():
  """Every study region on the same synthetic grid (five separate blocks of
  decreasing cropland): index 0 is the square of rank draw_test_rank(slug),
  the draw is reproducible, and across the 8 regions it is not always rank 0."""
  tops = []
  for seed in (0, 1):
    test_fractions = []
    for region, town, slug, lon, lat in zones_table.REGIONS:
      grid = sz.fraction_grid(lon, lat, radius_km=30)
      cells = np.zeros((grid.rows, grid.cols))
      for j, value in enumerate((0.9, 0.8, 0.7, 0.6, 0.5)):
        cells[30:40, 8 + 11 * j:18 + 11 * j] = value
      zs = sz.choose_zones(cells, grid, region, town, slug, n=5, radius_km=30, seed=seed)
      again = sz.choose_zones(cells, grid, region, town, slug, n=5, radius_km=30, seed=seed)
      assert zs == again
      rank = sz.draw_test_rank(slug, 5, seed)
      assert zs[0].index == 0 and zs[0].zone_id == f"{slug}_0"
      assert zs[0].cropland_fraction == (0.9, 0.8, 0.7, 0.6, 0.5)[rank]
      rest = [z.cropland_fraction for z in zs[1:]]
      assert rest == sorted(rest, reverse=True) and len(set(rest)) == 4
      test_fractions.append(zs[0].cropland_fraction)
    assert len(set(test_fractions)) > 1 and set(test_fractions) != {0.9}
    tops.append(test_fractions)
  assert tops[0] != tops[1]                        # the seed changes the draw


# --- one acquisition, several tiles: mosaic per (date, spacecraft) -----------

def _resolved(image):
  """The serialized expression as one tree (value references resolved)."""
  graph = ee.serializer.encode(image, for_cloud_api=True)
  values = graph["values"]

  def resolve(node):
    if isinstance(node, dict):
      if set(node) == {"valueReference"}:
        return resolve(values[node["valueReference"]])
      if "functionDefinitionValue" in node:
        d = node["functionDefinitionValue"]
        return {"functionDefinitionValue": {"argumentNames": d["argumentNames"],
                                            "body": resolve(values[d["body"]])}}
      return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
      return [resolve(v) for v in node]
    return node
  return resolve(values[graph["result"]])


def _calls(node, name):
  """Arguments of every invocation of `name` in the tree, outermost first."""
  if isinstance(node, dict):
    f = node.get("functionInvocationValue")
    if f and f.get("functionName") == name:
      yield f["arguments"]
    for v in node.values():
      yield from _calls(v, name)
  elif isinstance(node, list):
    for v in node:
      yield from _calls(v, name)


def _fn(node):
  return node["functionInvocationValue"]["functionName"]


def _args(node):
  return node["functionInvocationValue"]["arguments"]


def test_month_is_the_median_of_acquisition_mosaics():
  tree = _resolved(gee.monthly_image(ZONE, 2023, 6))
  # The median and the count both read the month's collection of mosaics.
  (array,) = list(_calls(tree, "ImageCollection.toArray"))[:1]
  month = array["collection"]
  while _fn(month) == "Collection.map":               # select(band)
    month = _args(month)["collection"]
  assert _fn(month) == "ImageCollection.merge"
  mosaics = _args(month)["collection1"]
  assert _fn(mosaics) == "ImageCollection.fromImages"
  per_key = _args(mosaics)["images"]
  assert _fn(per_key) == "List.map"
  keys = _args(per_key)["list"]
  assert _fn(keys) == "List.distinct"
  agg = _args(_args(keys)["list"])
  assert agg["property"] == {"constantValue": "acquisition"}
  # Each key: filter on it, sort by own_crs (own CRS last = on top), mask, mosaic.
  body = _args(per_key)["baseAlgorithm"]["functionDefinitionValue"]["body"]
  (mosaic,) = list(_calls(body, "ImageCollection.mosaic"))
  masked = mosaic["collection"]
  assert _fn(masked) == "Collection.map"
  assert list(_calls(masked, "Image.updateMask"))          # mask_scene per tile
  ordered = _args(masked)["collection"]
  assert _fn(ordered) == "Collection.limit"
  assert _args(ordered)["key"] == {"constantValue": "own_crs"}
  assert _args(ordered).get("ascending") in (None, {"constantValue": True})
  (eq,) = list(_calls(_args(ordered)["collection"], "Filter.equals"))
  assert eq["leftField"] == {"constantValue": "acquisition"}
  # The acquisition key: UTC date and spacecraft; own_crs compares B2's CRS.
  text = json.dumps(tree)
  for needle in ('"system:time_start"', '"YYYY-MM-dd"', '"SPACECRAFT_NAME"',
                 '"Projection.crs"', '"String.compareTo"', '"EPSG:32631"'):
    assert needle in text, needle
  (count,) = list(_calls(tree, "reduce.count"))
  inner = count["collection"]
  while _fn(inner) == "Collection.map":
    inner = _args(inner)["collection"]
  assert inner == month                                # counts acquisitions


def test_zone_off_the_grid_is_refused_before_any_request(tmp_path, monkeypatch):
  server = FakeServer()
  monkeypatch.setattr(ee.data, "computePixels", server)
  off = Zone("t_0", "Test", "Town", 0, 32631, x0=400_000.0, y0=5_000_003.0,
             width=30, height=20)
  with pytest.raises(UserError, match=r"^zone t_0: corner .*y0=5000003\.0.* off the "
                                      r"10 m Sentinel-2 grid"):
    gee.composite_zone_from_gee(off, tmp_path / "t_0", progress=False)
  assert server.calls == 0 and not (tmp_path / "t_0").exists()



class ConcurrentServer(FakeServer):
  """FakeServer that holds each request `hold` seconds and records, thread-safely,
  how many requests are in flight and when each started; the first `quota_errors`
  calls raise `error` (`error_at`: when the first one did)."""

  def __init__(self, hold=0.01, quota_errors=0, error="429 Too Many Requests"):
    super().__init__()
    import threading
    self.lock, self.hold = threading.Lock(), hold
    self.quota_errors, self.quota_error, self.n = quota_errors, error, 0
    self.in_flight = self.max_in_flight = 0
    self.starts, self.error_at = [], None

  def __call__(self, request):
    import time
    with self.lock:
      self.n += 1
      now = time.monotonic()
      if self.n <= self.quota_errors:
        self.error_at = self.error_at or now
        raise ee.EEException(self.quota_error)
      self.in_flight += 1
      self.max_in_flight = max(self.max_in_flight, self.in_flight)
      self.starts.append(now)
    try:
      time.sleep(self.hold)
      with self.lock:
        return super().__call__(request)
    finally:
      with self.lock:
        self.in_flight -= 1


def test_concurrent_requests_are_bounded_by_workers(tmp_path, monkeypatch):
  server = ConcurrentServer()
  max_bytes = gee.BYTES_PER_PIXEL * 12 * 12        # 6 tiles a month: 72 requests
  info = _run(tmp_path, server, monkeypatch, max_bytes=max_bytes, workers=3)
  assert server.max_in_flight == 3 and len(server.requests) == 72
  assert info["requests_fetched_now"] == 72
  img = zonefolder.open_zone(tmp_path / "t_0").read_image()      # [T, H, W, C]
  np.testing.assert_array_equal(img[:, 7, 13, 0], [100 * m + 1 for m in range(1, 13)])


def test_quota_error_backs_off_every_worker(tmp_path, monkeypatch):
  server = ConcurrentServer(quota_errors=1, hold=0.02)
  max_bytes = gee.BYTES_PER_PIXEL * 12 * 12
  monkeypatch.setattr(ee.data, "computePixels", server)
  gee.composite_zone_from_gee(ZONE, tmp_path / "t_0", progress=False,
                              max_bytes=max_bytes, workers=4, base_delay=0.3)
  later = [t for t in server.starts if t > server.error_at]
  assert later and min(later) >= server.error_at + 0.3   # no worker went on regardless
  assert len(server.requests) == 72


def test_many_zones_share_one_pool(tmp_path, monkeypatch):
  server = ConcurrentServer()
  monkeypatch.setattr(ee.data, "computePixels", server)
  inits = []
  monkeypatch.setattr(gee, "initialize", lambda project=None: inits.append(project))
  zones = [ZONE, Zone("t_1", "Test", "Town", 1, 32631, x0=410_000.0, y0=5_000_000.0,
                      width=30, height=20)]
  infos = gee.composite_zones_from_gee(zones, tmp_path, workers=5, progress=False,
                                       project="p")
  assert [i["requests_fetched_now"] for i in infos] == [12, 12]
  assert inits == ["p"]                               # once for the run, not per zone
  assert server.max_in_flight == 5                    # 24 requests, 2 zones in flight
  assert all((tmp_path / z.zone_id / "s2.tif").is_file() for z in zones)
  with pytest.raises(UserError, match="--workers 0 must be at least 1"):
    gee.composite_zones_from_gee(zones, tmp_path, workers=0)


def test_beam_gee_source_equals_the_one_process_route(tmp_path, monkeypatch):
  """`prep beam --source gee` inside Beam (DirectRunner, in this process, the fake
  computePixels behind it): one initialize and one pool per DoFn instance, every
  request through that pool, and the same zone folders as the one-process route."""
  from prep import beam_composites
  zones = [ZONE, Zone("t_1", "Test", "Town", 1, 32631, x0=410_000.0, y0=5_000_000.0,
                      width=30, height=20)]
  server = ConcurrentServer()
  monkeypatch.setattr(ee.data, "computePixels", server)
  inits, pools = [], []
  monkeypatch.setattr(gee, "initialize", lambda project=None: inits.append(project))
  real_pool = gee.make_pool
  monkeypatch.setattr(gee, "make_pool", lambda workers=1, **kw: pools.append(workers) or
                      real_pool(workers, **kw))
  beam_composites.run(zones, tmp_path / "beam", source="gee", project="my-proj",
                      gee_workers=3, pipeline_args=["--runner", "DirectRunner"])
  assert inits and set(inits) == {"my-proj"} and len(pools) == len(inits)
  assert set(pools) == {3} and server.max_in_flight <= 3 and len(server.requests) == 24
  rows = beam_composites.read_summary(tmp_path / "beam")
  assert [r["zone_id"] for r in rows] == ["t_0", "t_1"] and not any(r["skipped"] for r in rows)
  gee.composite_zones_from_gee(zones, tmp_path / "one", workers=3, progress=False,
                               project="my-proj")
  for z in zones:
    a = zonefolder.open_zone(tmp_path / "beam" / z.zone_id)
    b = zonefolder.open_zone(tmp_path / "one" / z.zone_id)
    np.testing.assert_array_equal(a.read_image(), b.read_image())
    np.testing.assert_array_equal(a.read_valid_count(), b.read_valid_count())
  n = len(server.requests)
  beam_composites.run(zones, tmp_path / "beam", source="gee", project="my-proj")
  assert len(server.requests) == n                    # complete zones: no request
  assert all(r["skipped"] for r in beam_composites.read_summary(tmp_path / "beam"))
