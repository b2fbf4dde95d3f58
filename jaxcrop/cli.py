"""The command lines of train, evaluate and cv: a `--config` file and on/off switches.

Every command line parses with `cropcontracts.cli.ArgumentParser` (argparse
whose every mistake is one line `error: …`, exit status 2, with a did-you-mean
for an unknown flag, no usage dump; `--help` exits 0 with the full help) and
runs its work through the one handler, `cropcontracts.errors.run`. This module
adds what only train, evaluate and cv have:
- `add_config` adds `--config FILE[:variant]`, loaded by `jaxcrop.config`, and
  its typed overrides `--config.a.b=v` (or `--config.a.b v`), which must come
  after it;
- boolean flags are `--flag` / `--no-flag` (`add_switch`). The absl spellings
  of jaxcrop 0.2 (`--noflag`, `--flag=false`) still work in 0.3, each with a
  one-line `notice:` on stderr; they go in 0.4 (docs/releases.md).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from cropcontracts import cli as base
from cropcontracts.errors import UserError
from jaxcrop import config as config_lib
from jaxcrop import host_memory

CONFIG = "--config"


def positive_int(text: str) -> int:
  """An argparse `type`: an integer ≥ 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


class ArgumentParser(base.ArgumentParser):
  """The one-line parser with `--config` and `--flag/--no-flag`; see the module doc."""

  def __init__(self, prog: str | None = None, description: str | None = None, **kw):
    super().__init__(prog, description, **kw)
    self._has_config = False

  def add_config(self, help: str) -> None:  # pylint: disable=redefined-builtin
    """--config FILE[:variant]: parsed into the loaded, locked ConfigDict."""
    self._has_config = True
    self.add_argument(CONFIG, metavar="FILE[:VARIANT]", help=(
        f"{help} Any field can then be set with {CONFIG}.a.b=VALUE (or {CONFIG}.a.b "
        f"VALUE), after {CONFIG}; the value is parsed by the field's type."))

  def add_switch(self, name: str, default: bool,
                 help: str) -> None:  # pylint: disable=redefined-builtin
    """--name / --no-name (the 0.2 spellings --noname and --name=false still parse)."""
    self.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default,
                      help=f"{help} (default: --{'' if default else 'no-'}{name})")
    self.epilog = ("The 0.2 spellings of on/off flags, --noflag and --flag=false, still "
                   "work in 0.3 with a notice; they go in 0.4 (docs/releases.md).")

  def parse_args(self, args: Sequence[str] | None = None, namespace=None) -> argparse.Namespace:
    """argv (without the program name; None: sys.argv[1:]) → one attribute per
    flag; UserError on a mistake.

    With `add_config`, `args.config` is the loaded ConfigDict with the
    `--config.a.b=v` overrides applied in command-line order (None without --config).
    """
    argv, overrides = self._overrides(self._argv(args))   # --help first
    ns = super().parse_args([self._current_spelling(a) for a in argv], namespace)
    if self._has_config and ns.config is not None:
      ns.config = config_lib.load(ns.config, flag=CONFIG)
      for path, text in overrides:
        config_lib.override(ns.config, path, text, flag=CONFIG)
    return ns

  def _overrides(self, argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(argv without the `--config.a.b[=v]` overrides, [(a.b, v)] in order)."""
    rest, overrides, seen_config = [], [], False
    i = 0
    while i < len(argv):
      arg, i = argv[i], i + 1
      seen_config |= arg == CONFIG or arg.startswith(CONFIG + "=")
      if not (self._has_config and arg.startswith(CONFIG + ".")):
        rest.append(arg)
        continue
      name, eq, text = arg.partition("=")
      if not seen_config:
        raise UserError(f"{name} comes before {CONFIG}; put {CONFIG} first")
      if not eq:
        if i == len(argv):
          raise UserError(f"{name}: needs a value ({name}=VALUE)")
        text, i = argv[i], i + 1
      overrides.append((name[len(CONFIG) + 1:], text))
    return rest, overrides

  def _switches(self) -> set[str]:
    """The names of the --name / --no-name flags."""
    return {a.option_strings[0][2:] for a in self._actions
            if isinstance(a, argparse.BooleanOptionalAction)}

  def _current_spelling(self, arg: str) -> str:
    """`arg`, or for a 0.2 spelling of a switch (--noname, --name=false) its 0.3
    one, with a one-line notice on stderr."""
    if not arg.startswith("--"):
      return arg
    name, eq, text = arg[2:].partition("=")
    switches = self._switches()
    if not eq and name.startswith("no") and name[2:] in switches:
      new = f"--no-{name[2:]}"
    elif eq and name in switches:
      try:
        new = f"--{name}" if config_lib.parse_value(text, bool) else f"--no-{name}"
      except ValueError:
        raise UserError(f"{arg}: expected --{name} or --no-{name}") from None
    else:
      return arg
    print(f"notice: {arg} is deprecated, use {new}", file=sys.stderr)
    return new


def main(parser: ArgumentParser, body: Callable[[argparse.Namespace], int | None],
         argv: Sequence[str] | None = None) -> int:
  """`cropcontracts.cli.main` (parse argv, None: sys.argv[1:], then body(args) →
  the exit status), absl marked as parsed first; the body runs with the host allocator
  set for XLA:CPU (`host_memory.first`)."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  if not absl_flags.FLAGS.is_parsed():   # absl logging (Orbax) then logs without a warning
    absl_flags.FLAGS.mark_as_parsed()
  return base.main(parser, host_memory.first(body), argv)
