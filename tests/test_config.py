"""jaxcrop.config: a config file and its overrides, typed by the field; mistakes as UserError."""
import pathlib

import pytest

from jaxcrop import config as config_lib
from cropcontracts.errors import UserError

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hybrid.py"


def test_overrides_take_the_type_of_their_field():
  c = config_lib.load(f"{CONFIG}:demo,tiny")
  assert c.data.builder_config == "demo" and c.model.unet.widths == (8, 16)
  for path, text in (("optimizer.lr", "2"), ("model.unet.widths", "[4, 8]"),
                     ("data.augment", "False"), ("data.data_dir", "/d"),
                     ("eval.max_batches", "7"), ("model.temporal.pooling", "max")):
    config_lib.override(c, path, text)
  assert c.optimizer.lr == 2.0 and isinstance(c.optimizer.lr, float)
  assert c.model.unet.widths == (4, 8)                 # a tuple field stays a tuple
  assert c.data.augment is False and c.data.data_dir == "/d" and c.eval.max_batches == 7
  assert c.model.temporal.pooling == "max"


def test_the_config_is_locked_and_a_missing_get_config_is_named(tmp_path):
  c = config_lib.load(str(CONFIG))
  with pytest.raises(AttributeError):
    c.optimizer.lrr = 1.0                              # a typo never adds a field
  (tmp_path / "empty.py").write_text("X = 1\n")
  with pytest.raises(UserError, match=r"--config=.*empty.py: .*empty.py defines no "
                                        r"get_config\(variant\)"):
    config_lib.load(str(tmp_path / "empty.py"))


def test_parse_value_by_type():
  assert config_lib.parse_value("true", bool) is True
  assert config_lib.parse_value("(1, 2)", list) == [1, 2]
  with pytest.raises(ValueError, match="expected a tuple such as"):
    config_lib.parse_value("[1", tuple)
