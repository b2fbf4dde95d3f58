"""Training: losses by hand, resume after SIGTERM == uninterrupted, 4 devices == 1."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.hybrid import get_config
from jaxcrop import checkpoint, input_pipeline, losses, train

K, T, C, S = 3, 4, 4, 16


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """The runs below compile the same functions: share them through a disk cache."""
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  old = {k: getattr(jax.config, k) for k in
         ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
  for k, v in old.items():
    jax.config.update(k, v)


def fake_meta():
  return input_pipeline.DatasetMeta(
      num_classes=K, class_names=["wheat", "maize", "vines"], tier2_names=["cereal", "vines"],
      tier1_names=["crop"], tier2_of=np.array([0, 0, 1]), tier1_of=np.zeros(K, np.int32),
      colors=["#ffff00", "#ff8800", "#880088"], months=list(range(1, T + 1)),
      bands=["B2", "B3", "B4", "B8"], mean=np.zeros((T, C), np.float32),
      std=np.ones((T, C), np.float32), class_pixel_counts=np.array([400, 100, 0]),
      nomenclature_version="v1", version="1.0.0", builder_config="fake")


def fake_batch(rng, b):
  """Learnable patches: class k pixels have band mean k; a few unlabelled."""
  label = rng.integers(0, 2, (b, S, S)).astype(np.int32)
  image = rng.normal(size=(b, T, S, S, C)).astype(np.float32) * 0.5
  image += label[:, None, :, :, None]
  label[:, :2] = 255
  return {"image": image, "label": label}


class FakeData:
  """Stands in for jaxcrop.input_pipeline: deterministic batches per (seed, step)."""

  def __init__(self, sigterm_at=None):
    self.sigterm_at = sigterm_at

  def load_meta(self, cfg_data):
    return fake_meta()

  def train_iterator(self, cfg_data, *, seed, start_step=0):
    step = start_step
    while True:
      if step == self.sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)   # preemption: the step in flight finishes
      yield fake_batch(np.random.default_rng([seed, step]), cfg_data.batch_size // jax.process_count())
      step += 1

  def eval_batches(self, cfg_data, split):
    """Two batches, the second with one padding example; 4×4-pixel parcels."""
    rng = np.random.default_rng(99)
    n = cfg_data.eval_batch_size
    blocks = (np.arange(S)[:, None] // 4) * (S // 4) + np.arange(S)[None, :] // 4 + 1
    for i in range(2):
      b = fake_batch(rng, n)
      b["mask"] = np.array([1.0] * (n - i) + [0.0] * i, np.float32)
      b["parcels"] = np.broadcast_to(blocks, (n, S, S)).astype(np.uint32)
      b["zone_id"] = np.array([f"z{i}{j}".encode() for j in range(n)])
      b["region"] = np.array([b"north", b"south"][i:i + 1] * n)
      yield b


def tiny_config(**train_overrides):
  c = get_config("tiny")
  c.model.temporal.dropout = 0.1        # exercises the per-step dropout rng
  c.train.tensorboard = False       # metrics.jsonl only: no TensorFlow import
  c.optimizer.lr = 3e-2
  c.train.update(train_overrides)
  return c


def test_class_weights_by_hand():
  w = losses.class_weights([400, 100, 0], "inv_sqrt")
  np.testing.assert_allclose(w, [2 * (1 / 20) / (1 / 20 + 1 / 10), 2 * (1 / 10) / (1 / 20 + 1 / 10), 0],
                             rtol=1e-6)
  np.testing.assert_allclose(losses.class_weights([400, 100, 0], "inv"), [0.4, 1.6, 0], rtol=1e-6)
  np.testing.assert_array_equal(losses.class_weights([5, 0], "none"), [1, 0])
  with pytest.raises(ValueError, match="unknown class_weights 'sqrt'"):
    losses.class_weights([1], "sqrt")


def test_cross_entropy_by_hand():
  logits = np.log(np.array([[[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]]))
  label = np.array([[[0, 1, 255]]])
  loss, n = losses.cross_entropy(logits, label)
  assert int(n) == 2
  np.testing.assert_allclose(loss, (-np.log(0.5) - np.log(0.8)) / 2, rtol=1e-6)
  loss, _ = losses.cross_entropy(logits, label, weights=np.array([1.0, 3.0, 1.0]))
  np.testing.assert_allclose(loss, (-np.log(0.5) - 3 * np.log(0.8)) / 4, rtol=1e-6)
  loss, _ = losses.cross_entropy(logits, label, label_smoothing=0.3)
  t0 = np.array([0.8, 0.1, 0.1]) @ -np.log([0.5, 0.25, 0.25])
  t1 = np.array([0.1, 0.8, 0.1]) @ -np.log([0.1, 0.8, 0.1])
  np.testing.assert_allclose(loss, (t0 + t1) / 2, rtol=1e-6)
  assert float(losses.cross_entropy(logits, np.full((1, 1, 3), 255))[0]) == 0.0


def params_of(workdir):
  return checkpoint.load_trained(workdir, "last").variables


def assert_trees_close(a, b, atol):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol), a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  result = train.train_and_evaluate(tiny_config(), workdir, data=FakeData())
  return workdir, result


def test_training_writes_outputs_and_learns(uninterrupted):
  workdir, result = uninterrupted
  assert result["step"] == 6 and result["model"]["params"] > 0
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "val_macro_f1" in l] == [3, 6]
  assert json.loads((workdir / "config.json").read_text())["model"]["unet"]["widths"] == [8, 16]
  assert json.loads((workdir / "dataset_meta.json").read_text())["num_classes"] == K
  best = json.loads((workdir / "val_best.json").read_text())
  assert best["macro_f1"] == pytest.approx(result["best_val_macro_f1"]) 
  # Above the 0.5 of a coin flip after 6 steps. Not higher: over seeds 0-3 the value spans
  # 0.54-0.70 with flax dropout masks and 0.56-0.73 with the hash masks (same rate).
  assert best["overall_accuracy"] > 0.5
  trained = checkpoint.load_trained(workdir, "best")
  assert trained.step == best["step"]
  x = fake_batch(np.random.default_rng(0), 2)["image"]
  assert trained.model.apply(trained.variables, x).shape == (2, S, S, K)


def test_sigterm_then_resume_equals_uninterrupted(uninterrupted, tmp_path, capsys):
  full_dir, _ = uninterrupted
  first = train.train_and_evaluate(tiny_config(), tmp_path, data=FakeData(sigterm_at=3))
  assert first["step"] == 4   # the signal arrives while batch 3 is fetched; step 4 finishes
  assert "SIGTERM" in capsys.readouterr().err
  second = train.train_and_evaluate(tiny_config(), tmp_path, data=FakeData())
  assert second["step"] == 6
  assert "resuming from step 4" in capsys.readouterr().err
  assert_trees_close(params_of(tmp_path), params_of(full_dir), atol=1e-6)


def test_four_devices_equal_one(uninterrupted, tmp_path):
  full_dir, _ = uninterrupted
  code = ("import sys; sys.path.insert(0, '.');"
          "import jax; assert jax.device_count() == 4;"
          "from tests.test_train import FakeData, tiny_config; from jaxcrop import train;"
          f"train.train_and_evaluate(tiny_config(), {str(tmp_path)!r}, data=FakeData())")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", code], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert_trees_close(params_of(tmp_path), params_of(full_dir), atol=1e-4)


class UnlabelledValData(FakeData):
  """Validation without labelled pixels: macro-F1 stays 0, never improves after the first."""

  def eval_batches(self, cfg_data, split):
    for b in super().eval_batches(cfg_data, split):
      yield {**b, "label": np.full_like(b["label"], 255)}


def test_early_stopping_after_patience(tmp_path):
  result = train.train_and_evaluate(tiny_config(eval_every=1, early_stopping_patience=2),
                                    tmp_path, data=UnlabelledValData())
  assert result["step"] == 3 and result["early_stopped"]   # evals at 1 (best), 2, 3 (2 bad)
  assert checkpoint.load_trained(tmp_path, "last").step == 3
  assert checkpoint.load_trained(tmp_path, "best").step == 1


def test_multihost_detection():
  assert not train.is_multihost(False, {})
  assert not train.is_multihost(False, {"TPU_WORKER_HOSTNAMES": "localhost"})   # one-host TPU VM
  assert train.is_multihost(False, {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"})
  assert train.is_multihost(False, {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"})
  assert train.is_multihost(True, {})
