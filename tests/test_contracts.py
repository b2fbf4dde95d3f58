"""The bottom layer: the one error handler, atomic writes, the dataset-meta check."""
import os
import warnings

import numpy as np
import pytest

from cropcontracts import atomic, errors, zonefolder
from cropcontracts.dataset_meta import DatasetMeta
from tests import fixtures


def test_run_user_error_is_one_line_exit_2(capsys):
  def bad():
    raise errors.UserError("zones.csv: column x0\n  is not a number; fix the table")
  assert errors.run(bad) == 2
  assert capsys.readouterr().err == "error: zones.csv: column x0 is not a number; fix the table\n"


def test_run_missing_path_names_the_file(capsys, tmp_path):
  assert errors.run(open, tmp_path / "absent.gpkg") == 2
  assert capsys.readouterr().err == f"error: {tmp_path / 'absent.gpkg'}: No such file or directory\n"


def test_run_keeps_the_traceback_of_a_bug():
  with pytest.raises(ValueError, match="shape"):
    errors.run(lambda: (_ for _ in ()).throw(ValueError("shape mismatch in Conv")))
  with pytest.raises(FloatingPointError):
    errors.run(lambda: (_ for _ in ()).throw(FloatingPointError("nan")))


def test_run_status_interrupt_and_warnings(capsys):
  assert errors.run(lambda: None) == 0
  assert errors.run(lambda: 3) == 3

  def interrupted():
    raise KeyboardInterrupt
  assert errors.run(interrupted) == 130
  assert capsys.readouterr().err == "interrupted\n"
  assert errors.run(lambda: warnings.warn("month 2023-02\n has no scene")) == 0
  assert capsys.readouterr().err == "warning: month 2023-02 has no scene\n"


def test_atomic_write_appears_whole_with_umask_permissions(tmp_path):
  path = tmp_path / "sub" / "meta.json"
  atomic.write_json(path, {"a": 1})
  assert path.read_text() == '{\n  "a": 1\n}\n'
  assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~atomic.umask())
  with pytest.raises(RuntimeError):
    with atomic.atomic_path(path) as tmp:
      tmp.write_text("half")
      raise RuntimeError("killed")
  assert path.read_text() == '{\n  "a": 1\n}\n'          # the old file is left intact
  assert sorted(os.listdir(path.parent)) == ["meta.json"]  # and no temporary one
  assert atomic.is_remote("gs://b/x.json") and not atomic.is_remote(tmp_path)


def test_claim_clears_what_dead_writers_left_never_a_live_ones(tmp_path):
  """A temporary is a dead writer's when nobody else holds the folder's lock (a
  second open of the lock file conflicts like another process's)."""
  def leftovers():
    (tmp_path / ".s2.tif.abc.partial").write_bytes(b"half")
    (tmp_path / ".z_0.def.partial").mkdir(exist_ok=True)          # a folder written whole
    (tmp_path / ".z_0.def.partial" / "classes.tif").write_bytes(b"x")
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    (tmp_path / "ckpt" / "3.orbax-checkpoint-tmp").mkdir(exist_ok=True)
  kept = {".lock", "ckpt", "s2.tif"}
  (tmp_path / "s2.tif").write_bytes(b"whole")
  leftovers()
  with atomic.claim(tmp_path, patterns=(atomic.PARTIAL, "ckpt/*.orbax-checkpoint-tmp*")):
    assert {p.name for p in tmp_path.iterdir()} == kept
    assert not list((tmp_path / "ckpt").iterdir())
    with pytest.raises(atomic.LockHeld):                     # a writer's turn is its own
      with atomic.claim(tmp_path, wait=False):
        pass
  with atomic.claim(tmp_path, shared=True):                  # a live writer and its
    leftovers()                                              # temporaries, beside another
    with atomic.claim(tmp_path, shared=True):                # writer: that one clears nothing
      assert {p.name for p in tmp_path.iterdir()} == kept | {".s2.tif.abc.partial",
                                                              ".z_0.def.partial"}
  with atomic.claim(tmp_path, shared=True):                  # alone: they were a dead one's
    assert {p.name for p in tmp_path.iterdir()} == kept
  assert atomic.remove_temporaries(tmp_path) == []
  with atomic.claim("gs://bucket/maps", shared=True):        # a bucket: nothing to lock
    pass


def test_shared_writers_go_on_unlocked_where_the_filesystem_has_no_flock(tmp_path,
                                                                        monkeypatch):
  import errno
  def no_flock(f, how):   # what a FUSE mount of a bucket may answer
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")
  monkeypatch.setattr(atomic.fcntl, "flock", no_flock)
  (tmp_path / ".x.abc.partial").write_bytes(b"")             # perhaps a live writer's
  with atomic.claim(tmp_path, shared=True):
    assert (tmp_path / ".x.abc.partial").exists()            # so it stays
  with pytest.raises(OSError):                               # writers that take turns
    with atomic.claim(tmp_path):                             # need the lock
      pass


def test_constants_have_one_home():
  assert zonefolder.BANDS == ("B2", "B3", "B4", "B8")
  assert zonefolder.VALID_SCL == {4, 5, 6, 7}
  assert (zonefolder.NODATA, zonefolder.NO_LABEL) == (0, 255)
  assert zonefolder.month_labels(2023)[::11] == ["2023-01", "2023-12"]


def test_compatible_with_names_each_difference():
  meta = fixtures.make_meta(t=3, version="v1")
  assert meta.compatible_with(fixtures.make_meta(t=3)) == []
  other = fixtures.make_meta(t=4, bands=("B2", "B3", "B4"))
  assert meta.compatible_with(other) == [
      "3 months (2023-01..2023-03) vs 4 (2023-01..2023-04)",
      "bands ['B2', 'B3', 'B4', 'B8'] vs ['B2', 'B3', 'B4']"]
  fewer = DatasetMeta.from_json(meta.to_json())
  fewer.class_names = fewer.class_names[:5]
  assert meta.compatible_with(fewer) == [f"classes: {meta.num_classes} (v1) vs 5 (v1)"]
  np.testing.assert_array_equal(DatasetMeta.from_json(meta.to_json()).mean, meta.mean)


def test_keyed_folder_keeps_its_own_pieces_and_drops_another_keys(tmp_path):
  cache = atomic.keyed_folder(tmp_path / ".cache", {"zone": "a", "year": 2023})
  (cache / "tile_0.npy").write_bytes(b"x")
  again = atomic.keyed_folder(tmp_path / ".cache", {"year": 2023, "zone": "a"})  # key order
  assert sorted(p.name for p in again.iterdir()) == ["key.json", "tile_0.npy"]
  other = atomic.keyed_folder(tmp_path / ".cache", {"zone": "b", "year": 2023})
  assert sorted(p.name for p in other.iterdir()) == ["key.json"]
  (tmp_path / "stray").mkdir()
  (tmp_path / "stray" / "old.npy").write_bytes(b"y")          # no key.json: not ours
  assert sorted(p.name for p in atomic.keyed_folder(tmp_path / "stray", {}).iterdir()) == \
      ["key.json"]
