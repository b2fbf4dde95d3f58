"""Command-line plumbing shared by jaxcrop's programs: a user mistake is one line.

Every program (`train`, `evaluate`, `cv`: `main_with_flags`; `predict`, `plots`:
argparse) runs its work through the one handler, `cropcontracts.errors.run`: a
`UserError` (the one class of user mistakes; `UnknownCodeError` carries the
codes) or an OSError naming a path prints `error: <message>` as one line,
exit status 2; Ctrl-C prints `interrupted` (130). Anything else, ValueError
included, is a bug and keeps its traceback: a config value the code refuses is
raised as a `UserError` where it is checked.

`main_with_flags` parses absl-style flags (`--name=value`, `--name value`,
`--[no]flag`) and, for programs with a `--config` flag, loads the config file
and applies `--config.a.b=v` overrides (`jaxcrop.config`). Each mistake (unknown
flag, bad value, missing config file, unknown variant or field, an override
before --config) is a `UserError` raised where it is detected,
with its own message.
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import types
from typing import Any, Callable, Sequence

from cropcontracts import errors
from cropcontracts.errors import UserError
from jaxcrop import config as config_lib

HELP_FLAGS = ("-h", "--help", "-help", "-?")


@dataclasses.dataclass(frozen=True)
class Flag:
  """One command-line flag.

  kind: str | int | bool, a tuple of allowed strings (an enum), or "config" (a
  `configs/*.py[:variant]` file, loaded; `--config.a.b=v` overrides its fields).
  """
  name: str
  kind: Any
  help: str
  default: Any = None
  lower_bound: int | None = None

  def usage(self) -> str:
    """The flag's lines of --help."""
    if self.kind is bool:
      head = f"--[no]{self.name}"
    elif isinstance(self.kind, tuple):
      head = f"--{self.name}: <{'|'.join(self.kind)}>"
    else:
      head = f"--{self.name}"
    default = f"\n    (default: {self.default!r})" if self.default is not None else ""
    return f"  {head}: {self.help}{default}"

  def parse(self, text: str) -> Any:
    """The value of `--name=text`; UserError naming the flag when it is not one."""
    where = f"--{self.name}={text}"
    if self.kind is bool:
      value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
      if value is None:
        raise UserError(f"{where}: expected true or false")
      return value
    if isinstance(self.kind, tuple):
      if text not in self.kind:
        raise UserError(f"{where}: value should be one of <{'|'.join(self.kind)}>")
      return text
    if self.kind is int:
      try:
        value = int(text)
      except ValueError:
        raise UserError(f"{where}: expected an integer") from None
      if self.lower_bound is not None and value < self.lower_bound:
        raise UserError(f"{where}: must be at least {self.lower_bound}")
      return value
    return text


def flags_help(flags: Sequence[Flag]) -> str:
  return "\n".join(f.usage() for f in flags)


def _did_you_mean(name: str, names) -> str:
  close = difflib.get_close_matches(name, list(names), n=1)
  return f" (did you mean --{close[0]}?)" if close else ""


def parse_flags(flags: Sequence[Flag], argv: Sequence[str]) -> types.SimpleNamespace:
  """argv (without the program name) → one attribute per flag.

  A flag of kind "config" becomes the loaded, locked ConfigDict, its
  `--config.a.b=v` overrides applied in command-line order (they must come after
  --config). Every mistake raises UserError with a one-line message.
  """
  by_name = {f.name: f for f in flags}
  values = {f.name: f.default for f in flags}
  config_flag = next((f.name for f in flags if f.kind == "config"), None)
  overrides, rest = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    i += 1
    if not arg.startswith("-") or arg in ("-", "--"):
      rest.append(arg)
      continue
    name, eq, text = arg.lstrip("-").partition("=")
    flag = by_name.get(name)
    if flag is None and config_flag and name.startswith(f"{config_flag}."):
      if values[config_flag] is None:
        raise UserError(f"--{name} comes before --{config_flag}; put --{config_flag} first")
      if not eq:
        if i == len(argv):
          raise UserError(f"--{name}: needs a value (--{name}=VALUE)")
        text, i = argv[i], i + 1
      overrides.append((name[len(config_flag) + 1:], text))
      continue
    if flag is None and name.startswith("no") and not eq and \
        getattr(by_name.get(name[2:]), "kind", None) is bool:
      values[name[2:]] = False
      continue
    if flag is None:
      raise UserError(f"--{name}: unknown flag{_did_you_mean(name, by_name)}")
    if flag.kind is bool and not eq:
      values[name] = True
      continue
    if not eq:
      if i == len(argv):
        raise UserError(f"--{name}: needs a value (--{name}=VALUE)")
      text, i = argv[i], i + 1
    values[name] = text if flag.kind == "config" else flag.parse(text)
  if rest:
    raise UserError(f"unexpected argument(s) {' '.join(rest)}: every option is a --flag "
                     f"(see --help)")
  if config_flag and values[config_flag] is not None:
    spec = values[config_flag]
    config = config_lib.load(spec, flag=f"--{config_flag}")
    for path, text in overrides:
      config_lib.override(config, path, text, flag=f"--{config_flag}")
    values[config_flag] = config
  return types.SimpleNamespace(**values)


def main_with_flags(doc: str, flags: Sequence[Flag],
                    body: Callable[[types.SimpleNamespace], int | None],
                    argv: Sequence[str] | None = None) -> int:
  """Runs a flags program: parse argv (sys.argv[1:] when None), then body(values).

  `--help` prints doc and the flags (status 0). Returns the exit status: 0, 2 for
  a user mistake, 130 on Ctrl-C.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in HELP_FLAGS for a in argv):
    print(doc.strip() + "\n\nflags:\n" + flags_help(flags))
    return 0
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  if not absl_flags.FLAGS.is_parsed():   # absl logging (Orbax) then logs without a warning
    absl_flags.FLAGS.mark_as_parsed()
  return errors.run(lambda: body(parse_flags(flags, argv)))
