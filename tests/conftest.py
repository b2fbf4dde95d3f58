"""Test-wide settings: TensorFlow quiet and off any accelerator, JAX on CPU; a
shared JAX compilation cache."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402  (after JAX_PLATFORMS)


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
