"""The argument parser of every command line: argparse whose mistakes are one line.

`ArgumentParser` is argparse (`allow_abbrev=False`: a flag is spelt in full)
whose every mistake is a `UserError`, which the command's one handler,
`errors.run`, prints as one line `error: <message>` with exit status 2 and no
usage dump (`main` runs a command that way):
- argparse's own messages: a missing required option or subcommand, a bad
  choice (an unknown subcommand too), a value of the wrong type
  ("argument --tile: invalid int value: 'x'"), a missing value;
- an unknown flag, with the closest flag of its command or subcommand
  ("--wrkdir: unknown flag (did you mean --workdir?)");
- arguments that no option takes ("unexpected argument(s) …").

Subcommands (`add_subparsers`) are parsers of the same class. `--help` prints
the full help and exits 0 (SystemExit, as argparse does); in a command without
subcommands it wins over any mistake beside it. A description or epilog written
on several lines keeps its line breaks (examples, tables); one written on a
single line is wrapped to the terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
from typing import Callable, Sequence

from cropcontracts import errors
from cropcontracts.errors import UserError

HELP = ("-h", "--help")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Keeps the line breaks of a text written on several lines; wraps a one-line text."""

  def _fill_text(self, text, width, indent):
    if "\n" in text:
      return super()._fill_text(text, width, indent)
    return argparse.HelpFormatter._fill_text(self, text, width, indent)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose mistakes are one-line UserErrors; see the module doc."""

  def __init__(self, prog: str | None = None, description: str | None = None, **kw):
    kw.setdefault("allow_abbrev", False)
    kw.setdefault("formatter_class", HelpFormatter)
    super().__init__(prog=prog, description=description and description.strip(), **kw)

  def error(self, message):
    raise UserError(message)

  def parse_args(self, args: Sequence[str] | None = None, namespace=None) -> argparse.Namespace:
    """argv (without the program name; None: sys.argv[1:]) → one attribute per
    option; UserError on a mistake."""
    argv = self._argv(args)
    try:
      ns, extras = self.parse_known_args(argv, namespace)
    except UserError:
      self._refuse_misspelt(argv)   # "--ot: unknown flag (did you mean --out?)", not "required"
      raise
    self._refuse(extras, ns)
    return ns

  def _argv(self, args: Sequence[str] | None) -> list[str]:
    """The arguments as strings; prints the help and exits 0 when they ask for it
    (before `--`) in a command without subcommands."""
    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    if self._subparsers is None and any(a in HELP for a in _options(argv)):
      self.print_help()
      self.exit(0)
    return argv

  def _refuse_misspelt(self, argv: list[str]) -> None:
    """UserError for an unknown flag in argv, if argparse finds one once nothing
    is required (a misspelt required flag otherwise reads as a missing one)."""
    with _nothing_required(self):
      try:
        ns, extras = self.parse_known_args(argv)
      except UserError:
        return
    self._refuse([a for a in _options(extras) if a.startswith("-") and a != "-"], ns)

  def _path(self, ns: argparse.Namespace) -> list[ArgumentParser]:
    """This parser and the subcommands that `ns` chose, outermost first."""
    for action in self._actions:
      if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
        sub = action.choices.get(getattr(ns, action.dest, None))
        if isinstance(sub, ArgumentParser):
          return [self] + sub._path(ns)
    return [self]

  def _refuse(self, extras: list[str], ns: argparse.Namespace) -> None:
    """UserError for what argparse did not take: an unknown flag first, else
    the stray arguments."""
    for arg in _options(extras):
      if arg.startswith("-") and arg != "-":
        raise UserError(_unknown_flag(arg.partition("=")[0], self._path(ns)))
    if extras:
      raise UserError(f"unexpected argument(s) {' '.join(extras)}: every option is a "
                      f"--flag (see --help)")

  def flags(self) -> list[str]:
    """This parser's option strings (-q, --quiet, …)."""
    return [o for a in self._actions for o in a.option_strings]


def _options(argv: list[str]) -> list[str]:
  """The arguments before `--` (after it, none is an option)."""
  return argv[:argv.index("--")] if "--" in argv else argv


@contextlib.contextmanager
def _nothing_required(parser: argparse.ArgumentParser):
  """Every option, group and subcommand of `parser` and its subcommands optional
  for the duration."""
  parsers, things = [parser], []
  while parsers:
    p = parsers.pop()
    things += p._actions + p._mutually_exclusive_groups  # pylint: disable=protected-access
    parsers += [s for a in p._actions if isinstance(a, argparse._SubParsersAction)  # pylint: disable=protected-access
                for s in a.choices.values()]
  saved = [t.required for t in things]
  for t in things:
    t.required = False
  try:
    yield
  finally:
    for t, required in zip(things, saved):
      t.required = required


def _unknown_flag(flag: str, path: list[ArgumentParser]) -> str:
  """The message for `flag`, unknown where it stands on the command line `path`
  (outermost command first): where it goes when an outer command owns it, else
  the closest flag, of the innermost command first."""
  owner = next((p for p in path[:-1] if flag in p.flags()), None)
  if owner is not None:
    return (f"{flag}: unknown flag of {path[-1].prog}; it goes before the command "
            f"({owner.prog} {flag} …)")
  for p in reversed(path):   # the innermost command's flags first
    names = [f[2:] for f in p.flags() if f.startswith("--")]
    close = difflib.get_close_matches(flag.lstrip("-"), names, n=1)
    if close:
      return f"{flag}: unknown flag (did you mean --{close[0]}?)"
  return f"{flag}: unknown flag"


def main(parser: ArgumentParser, body: Callable[[argparse.Namespace], int | None],
         argv: Sequence[str] | None = None) -> int:
  """Runs a command: body(parser.parse_args(argv)) under `errors.run`.

  Returns the exit status: body's (None → 0), 2 for a user mistake (a bad
  argument included), 130 on Ctrl-C; `--help` exits 0 (SystemExit, as argparse does).
  """
  return errors.run(lambda: body(parser.parse_args(argv)))
