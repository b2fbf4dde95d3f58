"""cropmap: Sentinel-2 monthly composites + RPG crop labels as square patches.

Built by the stock TFDS command line from the repository root:

  tfds build tfds_builder/cropmap --data_dir=~/tensorflow_datasets          # demo
  tfds build tfds_builder/cropmap --config=demo --manual_dir=demo_run/zones  # its zones
  tfds build tfds_builder/cropmap --config=france2023 --manual_dir=out/zones
  tfds build tfds_builder/cropmap --config=points --manual_dir=out/points    # points.py
  tfds build tfds_builder/cropmap --config=france2023 --manual_dir=out/zones \
      --beam_pipeline_options="runner=DirectRunner"

Input: a folder of zone folders (`cropcontracts/zonefolder.py`), read one strip of
patch rows at a time. Output splits: `test` (each region's zone of index 0,
every patch, so a map assembled from it covers the zone) and
`fold0..fold{n-1}` (the other zones, whole zones dealt round-robin, patches
with a labelled pixel). Every split covers its zones whole: the edge patches
are padded, the padding labelled 255. See `patching.py` for the rules and
`info.metadata` for the normalization moments, class names and counts. An
overwrite never loses a good dataset: `overwrite_guard.py`, the one module
that relies on TFDS internals.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import sys

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from cropcontracts import atomic
from cropcontracts import moments as moments_lib
from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from tfds_builder.cropmap import metadata
from tfds_builder.cropmap import overwrite_guard
from tfds_builder.cropmap import patching
from tfds_builder.cropmap import points

# The nomenclature of this dataset VERSION. prep moving to another one changes
# every label, so it needs a new VERSION and release note (tests tie the two).
NOMENCLATURE = "v3"
# One build per data_dir and config: the lock file beside the version folders.
BUILD_LOCK = ".build.lock"


@dataclasses.dataclass
class CropmapConfig(tfds.core.BuilderConfig):
  """How zone folders become examples.

  Attributes:
    source: `demo` (built-in demo region, generated when --manual_dir holds no
      zone folder), `manual` (--manual_dir must hold the zone folders) or
      `points` (--manual_dir is a points folder; 1 x 1 examples, `points.py`).
    patch_size: side P of the square patches, pixels. 64 = 2^6: a U-Net of
      depth <= 4 halves it cleanly down to 4x4, one patch sees 640 m of context
      (several parcels), and a batch of 32 x 12 months x 64 x 64 x 4 fits
      easily in accelerator memory.
    num_folds: number of training folds (fold0..).
    nomenclature: the nomenclature version every zone must be labelled with.
    years: () for one year (--manual_dir holds the zone folders); else the
      years whose zone-years --manual_dir holds as `<year>/<zone_id>/`, split
      by zone and by year (`cropcontracts.years`: `y<year>_test`,
      `y<year>_fold<i>`).
  """
  source: str = "manual"
  patch_size: int = 64
  num_folds: int = 3
  nomenclature: str = NOMENCLATURE
  years: tuple = ()


class Builder(tfds.core.GeneratorBasedBuilder):
  """Crop-type segmentation patches from jaxcrop zone folders."""

  VERSION = tfds.core.Version("3.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Spatial test split + folds, patch moments per fold.",
      "1.1.0": "metadata `normalization`: mean and std over all training folds; "
               "examples unchanged.",
      "2.0.0": "Labels of nomenclature v2: RPG codes read with their meaning in the "
               "RPG edition (2023 list: JAC fallow, CAH/MCS cereals, CPL and PAG "
               "mixtures unlabelled, GES grain legumes); same 23 classes, zones "
               "must be relabelled with `python -m prep labels`. Training folds cover "
               "their zones whole: the right and bottom strip that whole patches left "
               "out (40 px of a 1000-px zone, ~8 % of the labels) enters as padded "
               "edge patches, the padding labelled 255.",
      "3.0.0": "Labels of nomenclature v3: the 23 classes of v2 and a background "
               "class, non_agricultural (id 23, the same name at every tier), on the "
               "pixels outside every RPG parcel beyond a margin (`prep labels "
               "--margin`, default 1 px; the pixels within it stay 255), so labels "
               "cover the land outside the parcels too. `class_pixel_counts` has 24 "
               "entries, the background's last. Zones must be relabelled with "
               "`python -m prep labels`.",
      "3.1.0": "Configs over several years (demo_years, france2021_2023): zone-years "
               "from <manual_dir>/<year>/<zone_id>/, splits y<year>_test and "
               "y<year>_fold<i> (the spatial split kept within every year, one split per "
               "zone-year), moments per split; metadata `years`. Single-year configs: "
               "examples and metadata unchanged.",
  }
  # The stock `tfds build` without --config builds every config listed here,
  # so only the demo, which needs nothing, is listed; configs that need a
  # --manual_dir of zone folders are found by name (`get_builder_config`).
  BUILDER_CONFIGS = [
      CropmapConfig(name="demo", source="demo",
                    description="Synthetic demo region from prep.demo (laptop scale)."),
  ]
  ON_REQUEST_CONFIGS = [
      CropmapConfig(name="france2023", source="manual",
                    description="The 40 study zones (8 regions x 5), RPG 2023 labels."),
      CropmapConfig(name="demo_years", source="demo", years=(2022, 2023),
                    description="The synthetic demo region in 2022 and 2023 "
                                "(prep.demo.seasons): year-held-out experiments."),
      CropmapConfig(name="france2021_2023", source="manual", years=(2021, 2022, 2023),
                    description="The 40 study zones in 2021, 2022 and 2023, each year's "
                                "RPG: --manual_dir holds <year>/<zone_id>/."),
      CropmapConfig(name="points", source="points", patch_size=1,
                    description="Labelled points (`python -m prep points`) as 1 x 1 "
                                "examples, stratified or grouped folds (points.py)."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "demo"
  builder_config_cls = CropmapConfig  # --config='{"name": "x", "patch_size": 32}' 
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Point --manual_dir at the folder of zone folders written by prep
  (`python -m prep composite …` then `python -m prep labels …`), e.g. out/zones.
  The demo config generates its own zones when --manual_dir holds none.
  """

  @classmethod
  def get_builder_config(cls, name, version=None):
    """A listed config, else one of `ON_REQUEST_CONFIGS` (e.g. france2023)."""
    found = super().get_builder_config(name, version)
    if found is None:
      found = next((c for c in cls.ON_REQUEST_CONFIGS if c.name == name), None)
    return found

  def _info(self) -> tfds.core.DatasetInfo:
    p = self.builder_config.patch_size
    tensor = lambda shape, dtype: tfds.features.Tensor(
        shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tensor((None, p, p, len(zonefolder.BANDS)), np.uint16),
            "label": tensor((p, p), np.uint8),
            "parcels": tensor((p, p), np.int32),  # tf.io.decode_raw has no uint32
            "valid_count": tensor((None, p, p), np.uint8),
            "zone_id": tfds.features.Text(),
            "region": tfds.features.Text(),
            "row": tfds.features.Scalar(np.int32),
            "col": tfds.features.Scalar(np.int32),
            "epsg": tfds.features.Scalar(np.int32),
            "transform": tfds.features.Tensor(shape=(6,), dtype=np.float64),
        }),
        supervised_keys=None,
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/jaxcrop/jaxcrop",
    )

  def is_prepared(self) -> bool:
    """Whether the dataset is built; False to the `tfds` command line's builder
    factory (`overwrite_guard.asked_by_the_cli`).

    `tfds build --overwrite` deletes a prepared dataset right after asking this,
    before any input is read, so a bad zone folder then lost a good dataset.
    Answering False there leaves the old dataset to `download_and_prepare`,
    which checks the inputs first and swaps the new build in (without
    --overwrite it still reuses the existing dataset).
    """
    if overwrite_guard.asked_by_the_cli(sys._getframe(1)):  # pylint: disable=protected-access
      overwrite_guard.install_one_line_errors()
      return False
    return super().is_prepared()

  def download_and_prepare(self, *, download_config=None, **kwargs):
    """TFDS's download_and_prepare, one build per data_dir and config at a time
    (a second one is refused; the build claims the config's folder, removing
    what killed builds left there, `atomic.claim`); an overwrite never loses a
    good dataset (`overwrite_guard.prepare`: every zone folder of --manual_dir is
    checked before the old version is set aside). A data_dir in a bucket has no
    lock: its builds are not refused and clear nothing.
    """
    download_config = download_config or tfds.download.DownloadConfig()
    prepare = functools.partial(
        overwrite_guard.prepare, self, download_config, super().download_and_prepare,
        functools.partial(self._check_manual_zones, download_config.manual_dir), **kwargs)
    try:
      with atomic.claim(self.data_path.parent, lock=BUILD_LOCK, wait=False,
                        patterns=overwrite_guard.killed_builds(self.data_path)):
        return prepare()
    except atomic.LockHeld:
      lock = pathlib.Path(os.fspath(self.data_path)).parent / BUILD_LOCK
      raise UserError(f"{lock}: another build of cropmap/{self.builder_config.name} is "
                      f"running on this data_dir; wait for it to finish (a killed build "
                      f"holds no lock), then rerun") from None

  def _check_manual_zones(self, manual) -> None:
    """Raises UserError for the first bad zone folder of `manual`, if it holds any
    (for the points config: unless `manual` is a points folder of its nomenclature)."""
    if self.builder_config.source == "points":
      points.open_folder(manual, self.builder_config.nomenclature)
    elif manual is not None and self._holds_zones(pathlib.Path(manual)):
      self._zones(pathlib.Path(manual))

  def _holds_zones(self, root: pathlib.Path) -> bool:
    years = self.builder_config.years
    return all(_holds_zones(root / str(y)) for y in years) if years else _holds_zones(root)

  def _zones(self, root: pathlib.Path) -> dict:
    """{year (None for a single-year config): its zone folders}, checked."""
    cfg = self.builder_config
    if not cfg.years:
      zones = patching.find_labelled_zones(root)
      patching.check_zones(zones, cfg.nomenclature)
      return {None: zones}
    by_year = {y: patching.find_labelled_zones(root / str(y)) for y in cfg.years}
    patching.check_zone_years(by_year, cfg.nomenclature)
    return by_year

  def _download_and_prepare(self, dl_manager, download_config):
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    return super()._download_and_prepare(dl_manager, download_config)

  def _zones_root(self, dl_manager) -> pathlib.Path:
    """The folder of zone folders: --manual_dir, or the generated demo."""
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual is not None and self._holds_zones(pathlib.Path(manual)):
      return pathlib.Path(manual)
    if self.builder_config.source == "demo":
      from prep import demo  # pylint: disable=g-import-not-at-top
      where, years = _demo_dir(dl_manager.download_dir), self.builder_config.years
      if years:   # the demo of each year in <where>_years/zones/<year>/
        return pathlib.Path(demo.make_demo(where.with_name(where.name + "_years"), seed=0,
                                           years=years))
      return pathlib.Path(demo.make_demo(where, seed=0))
    raise UserError(
        f"--manual_dir={manual}: {'holds no zone folder (no */meta.json)' if manual and pathlib.Path(manual).is_dir() else 'does not exist'}; "
        f"config {self.builder_config.name} needs the zone folders written by prep, "
        f"e.g. `tfds build tfds_builder/cropmap --config={self.builder_config.name} "
        f"--manual_dir=out/zones`")

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    if cfg.source == "points":
      return points.split_generators(self, getattr(dl_manager, "_manual_dir", None))
    root = self._zones_root(dl_manager)
    by_year = self._zones(root)
    members = patching.split_members(by_year, cfg.num_folds)
    zones = [z for zs in by_year.values() for z in zs]
    self.info.metadata.update(self._metadata(zones, members))
    if cfg.years:   # the zone-years, for the previous-year baseline (jaxcrop.previous_year)
      self.info.metadata.update(years=list(cfg.years), zones_root=str(root.resolve()))
    names = list(members)
    return {s: self._generate_examples(
                zone_paths=[str(z.path) for z in members[s]],
                keep_empty=patching.is_test(s))
            for s in names}

  def _metadata(self, zones, members) -> dict:
    """Class tables, months, bands, per-split counts and per-fold moments.

    One streaming read of each zone's rasters (a strip at a time) before the
    examples are written; the moments cover every valid pixel of each training
    zone, the counts the labelled pixels of the patches each split keeps.
    """
    cfg = self.builder_config
    nom = nomenclature_lib.load(cfg.nomenclature)
    counts, patches, dropped, moments = {}, {}, {}, {}
    for split, zs in members.items():
      test = patching.is_test(split)
      summaries = [patching.zone_summary(z, cfg.patch_size, test, nom.num_classes,
                                         with_moments=not test)
                   for z in tfds.core.utils.tqdm(zs, desc=f"Scanning {split} zones",
                                                 leave=False)]
      counts[split] = np.sum([s["class_pixels"] for s in summaries], 0).tolist()
      patches[split] = sum(s["patches"] for s in summaries)
      dropped[split] = sum(s["dropped"] for s in summaries)
      if not patches[split]:
        raise UserError(
            f"split {split} (zones {[z.zone_id for z in zs]}) has no patch of "
            f"{cfg.patch_size} px with a labelled pixel; use a smaller patch_size "
            f"or larger zones")
      if not test:
        moments[split] = moments_lib.merge_all(s["moments"] for s in summaries).to_json()
      if dropped[split]:
        logging.info("cropmap %s: dropped %d patch(es) without any labelled "
                     "pixel, kept %d", split, dropped[split], patches[split])
    return metadata.dataset_metadata(
        nom, months=zones[0].months, bands=zones[0].bands, patch_size=cfg.patch_size,
        num_folds=cfg.num_folds, counts=counts, examples=patches, dropped=dropped,
        moments=moments, members={s: [z.zone_id for z in zs] for s, zs in members.items()})

  def _generate_examples(self, zone_paths, keep_empty):
    p = self.builder_config.patch_size
    if getattr(self, "_use_beam", False):
      beam = tfds.core.lazy_imports.apache_beam
      return (beam.Create(zone_paths)
              | beam.FlatMap(patching.zone_patches, patch=p, keep_empty=keep_empty))
    return self._generate_local(zone_paths, p, keep_empty)

  @staticmethod
  def _generate_local(zone_paths, patch, keep_empty):
    for path in zone_paths:
      yield from patching.zone_patches(path, patch, keep_empty)


def _holds_zones(folder: pathlib.Path) -> bool:
  """Whether folder holds zone folders (any */meta.json)."""
  return folder.is_dir() and any((p / "meta.json").is_file() for p in folder.iterdir())


def _demo_dir(download_dir) -> pathlib.Path:
  """Where the demo region is generated: `<download_dir>/cropmap_demo`.

  prep writes with GDAL and plain files, so a download_dir on a bucket (the
  default under a `gs://` --data_dir) is replaced by a local cache folder.
  """
  download_dir = os.fspath(download_dir)
  if "://" in download_dir:
    local = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    logging.info("cropmap demo: %s is not a local folder; generating the demo region "
                 "under %s", download_dir, local / "jaxcrop")
    return local / "jaxcrop" / "cropmap_demo"
  return pathlib.Path(download_dir) / "cropmap_demo"
