"""The command lines of train, evaluate and cv: argparse, a `--config` file, one-line mistakes.

Every jaxcrop program (`train`, `evaluate`, `cv`: `main`; `predict`, `plots`,
`mosaic`: argparse of their own) runs its work through the one handler,
`cropcontracts.errors.run`: a `UserError` (the one class of user mistakes) or
an OSError naming a path prints `error: <message>` as one line, exit status 2;
Ctrl-C prints `interrupted` (130). Anything else, ValueError included, is a bug
and keeps its traceback: a config value the code refuses is raised as a
`UserError` where it is checked.

`ArgumentParser` is argparse with three additions:
- every mistake it finds (a missing value, a bad choice, an unknown flag, with
  a did-you-mean, a stray argument) is a `UserError`: one line, no usage dump;
  `--help` prints the full help and exits 0;
- `add_config` adds `--config FILE[:variant]`, loaded by `jaxcrop.config`, and
  its typed overrides `--config.a.b=v` (or `--config.a.b v`), which must come
  after it;
- boolean flags are `--flag` / `--no-flag` (`add_switch`). The absl spellings
  of jaxcrop 0.2 (`--noflag`, `--flag=false`) still work in 0.3, each with a
  one-line `notice:` on stderr; they go in 0.4 (docs/releases.md).
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import Callable, Sequence

from cropcontracts import errors
from cropcontracts.errors import UserError
from jaxcrop import config as config_lib

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


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose mistakes are one-line UserErrors; see the module doc."""

  def __init__(self, prog: str, doc: str):
    super().__init__(prog=prog, description=doc.strip(), allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    self._has_config = False

  def error(self, message):
    raise UserError(message)

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

  def parse(self, argv: Sequence[str]) -> argparse.Namespace:
    """argv (without the program name) → one attribute per flag; UserError on a mistake.

    With `add_config`, `args.config` is the loaded ConfigDict with the
    `--config.a.b=v` overrides applied in command-line order (None without --config).
    """
    argv = [str(a) for a in argv]
    if "-h" in argv or "--help" in argv:   # help wins over any mistake beside it
      self.print_help()
      self.exit(0)
    argv, overrides = self._overrides(argv)
    args, extras = self.parse_known_args([self._current_spelling(a) for a in argv])
    self._refuse(extras)
    if self._has_config and args.config is not None:
      spec = args.config
      args.config = config_lib.load(spec, flag=CONFIG)
      for path, text in overrides:
        config_lib.override(args.config, path, text, flag=CONFIG)
    return args

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

  def _refuse(self, extras: list[str]) -> None:
    """UserError for what argparse did not take: an unknown flag first, else
    the stray arguments."""
    names = [o[2:] for a in self._actions for o in a.option_strings if o.startswith("--")]
    for arg in extras:
      if arg.startswith("-") and arg not in ("-", "--"):
        flag = arg.partition("=")[0]
        close = difflib.get_close_matches(flag.lstrip("-"), names, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise UserError(f"{flag}: unknown flag{hint}")
    if extras:
      raise UserError(f"unexpected argument(s) {' '.join(extras)}: every option is a "
                      f"--flag (see --help)")


def main(parser: ArgumentParser, body: Callable[[argparse.Namespace], int | None],
         argv: Sequence[str] | None = None) -> int:
  """Runs a program: parse argv (sys.argv[1:] when None), then body(args).

  Returns the exit status: body's (None → 0), 2 for a user mistake, 130 on
  Ctrl-C; `--help` exits 0 (SystemExit, as argparse does).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  if not absl_flags.FLAGS.is_parsed():   # absl logging (Orbax) then logs without a warning
    absl_flags.FLAGS.mark_as_parsed()
  return errors.run(lambda: body(parser.parse(argv)))
