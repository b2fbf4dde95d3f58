"""Experiment configs from the command line: `configs/<name>.py[:variant]` and `--config.a.b=v`.

`load(spec)` imports the config file and calls its `get_config(variant)` (the
ml_collections convention, `variant` "" when the spec has no colon); the result
is locked, so a typo can never add a field. `override(config, "a.b", text)`
writes one command-line value into an existing field, parsed by the field's
type (bool, int, float, str, tuple or list; a `placeholder` field by its
declared type), through ConfigDict's typed assignment. A mistake raises
`UserError`, one line naming the flag, what is wrong and, for an unknown
field, the nearest name. Code that refuses a config value raises `UserError`
too, where it checks it.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib

from ml_collections import config_dict

from cropcontracts.errors import UserError


def load(spec: str, flag: str = "--config") -> config_dict.ConfigDict:
  """The locked ConfigDict of `path[:variant]`; UserError when the file or variant is wrong."""
  path, _, variant = spec.partition(":")
  where = f"{flag}={spec}"
  if not pathlib.Path(path).is_file():
    raise UserError(f"{where}: config file {path} not found (e.g. configs/hybrid.py:demo)")
  module_spec = importlib.util.spec_from_file_location(f"_config_{pathlib.Path(path).stem}",
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"{where}: {path} defines no get_config(variant)")
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except UserError as e:   # the file's own check of the variant: say which flag
    raise UserError(f"{where}: {e}") from None
  config.lock()
  return config


def _field(config, path: str, flag: str):
  """(the ConfigDict holding the field, its key) of dotted `path`; UserError if absent."""
  node, parts = config, path.split(".")
  for depth, key in enumerate(parts):
    if not isinstance(node, config_dict.ConfigDict) or key not in node:
      names = list(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
      close = difflib.get_close_matches(key, names, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise UserError(f"{flag}.{path}: no such config field{hint}")
    if depth < len(parts) - 1:
      node = node[key]
  return node, parts[-1]


def parse_value(text: str, kind: type):
  """`text` as a value of `kind` (the field's type); ValueError saying why not."""
  if kind is bool:
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
    if value is None:
      raise ValueError(f"expected true or false, got {text!r}")
    return value
  if kind is int:
    return int(text)
  if kind is float:
    return float(text)
  if kind is str:
    return text
  if kind in (tuple, list):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ValueError(f"expected a {kind.__name__} such as (8, 16)") from None
    if not isinstance(value, (tuple, list)):
      raise ValueError(f"expected a {kind.__name__} such as (8, 16)")
    return kind(value)
  raise ValueError(f"a field of type {kind.__name__} cannot be set from the command line")


def override(config, path: str, text: str, flag: str = "--config") -> None:
  """Sets field `path` (dotted) of `config` from command-line `text`, typed by the field."""
  node, key = _field(config, path, flag)
  current = node[key]
  if isinstance(current, config_dict.ConfigDict):
    raise UserError(f"{flag}.{path}: a group of fields; set one of them, e.g. "
                      f"{flag}.{path}.{next(iter(current.keys()), 'x')}=…")
  kind = type(current) if current is not None else node.get_ref(key).get_type()
  try:
    node[key] = parse_value(text, kind)
  except (ValueError, TypeError) as e:   # parse_value's or ConfigDict's typed assignment
    raise UserError(f"{flag}.{path}={text}: {e}") from None
