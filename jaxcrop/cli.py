"""Command-line plumbing shared by jaxcrop's programs: a user mistake is one line.

Every program (`train`, `evaluate`, `cv` on absl flags; `predict`, `plots` on
argparse) runs its work through `run`: a user error (`UserError` and its kin
`DatasetError`, `PredictError`; a path that does not exist) prints
`error: <message>` as one line on stderr and gives exit status 2, without a
traceback; Ctrl-C prints `interrupted` (status 130). Anything else is a bug and
keeps its traceback.

`absl_main` parses absl flags (and `--config` files with `--config.a.b=v`
overrides) into a fresh `FlagValues`, so that `main(argv)` can be called more
than once in a process (tests), and turns every flag mistake (unknown flag, bad
value, missing config file, unknown config variant or field) into that same
one line.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

from absl import flags

from cropcontracts import errors
from cropcontracts.errors import UserError

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")
print_error = errors.print_error
one_line = errors.one_line


def run(fn: Callable[..., int | None], *args, user_errors: tuple = (), **kwargs) -> int:
  """errors.run(fn, …), with `user_errors` (extra exception types this program
  declares user mistakes) reported as UserErrors."""
  def body():
    try:
      return fn(*args, **kwargs)
    except tuple(user_errors) as e:
      raise UserError(str(e)) from None
  return errors.run(body)


class UsageError(UserError):
  """A flag mistake: the message is printed as `error: …`."""


def _config_error(name: str, value: str, e: BaseException) -> str:
  """One line for a --config file that failed to load or to run get_config()."""
  text = str(e)
  if "[Errno 2]" in text or "No such file" in text:
    path = value.split(":", 1)[0]
    return f"--{name}={value}: config file {path} not found (e.g. configs/hybrid.py:demo)"
  # config_flags embeds the traceback of get_config: keep its last line (`ValueError: …`).
  last = [l for l in text.strip().splitlines() if l.strip()][-1].strip()
  last = re.sub(r"^\w+(Error|Exception): ", "", last)
  return f"--{name}={value}: {last}"


def _flag_error(e: flags.Error) -> str:
  text = str(e)
  m = re.match(r"flag --(\w+)=(.*?): Error whilst parsing config file", text)
  if m:
    return _config_error(m.group(1), m.group(2), e)
  m = re.match(r"Found (\S+?)(=\S*)? in argv before a value for --(\w+) was specified", text)
  if m:   # config_flags reads overrides in order: the file must come first
    return f"{m.group(1)} comes before --{m.group(3)}; put --{m.group(3)} first"
  return re.sub(r"^flag (--\S+?): ", r"\1: ", text)   # `flag --x=v: …` → `--x=v: …`


def _config_flag_names(fv: flags.FlagValues) -> list[str]:
  """Names of the --config-file flags of fv."""
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  return [n for n, f in fv._flags().items()  # pylint: disable=protected-access
          if isinstance(f.parser, config_flags.ConfigFileFlagParser)]


def _override_error(argv: Sequence[str], config_names: list[str], e: Exception) -> str | None:
  """One line for `--config.a.b=v` naming a field the config does not have (None when
  no override on the command line names the missing field: then it is not the user's)."""
  missing = re.match(r"""\W*(\w+)""", str(e))
  hint = re.search(r'Did you mean "([^"]+)" instead of', str(e))
  for arg in argv:
    for name in config_names:
      flag = arg.split("=", 1)[0]
      if missing and flag.startswith(f"--{name}.") and missing.group(1) in flag.split(".")[1:]:
        return f"{flag}: no such config field" + (
            f" (did you mean {hint.group(1)!r}?)" if hint else "")
  return None


def parse_flags(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
  """Parses argv into fv; every mistake raises UsageError with a one-line message."""
  try:
    rest = fv(list(argv))
  except flags.Error as e:
    raise UsageError(_flag_error(e)) from None
  except (AttributeError, KeyError) as e:   # config_flags: override of a missing field
    text = _override_error(argv, _config_flag_names(fv), e)
    if text is None:
      raise
    raise UsageError(text) from None
  for name in _config_flag_names(fv):
    value = fv[name].value
    error = getattr(value, "_error", None) if type(value).__name__ == "_ErrorConfig" else None
    if error is not None:   # config_flags defers a failed load to the first use
      raise UsageError(_config_error(name, _argv_value(argv, name), error))
  if len(rest) > 1:
    raise UsageError(f"unexpected argument(s) {' '.join(rest[1:])}: every option is a "
                     f"--flag (see --help)")
  return rest


def _argv_value(argv: Sequence[str], name: str) -> str:
  """The value given to --name on the command line ('' when absent)."""
  for i, arg in enumerate(argv):
    if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith((f"--{name}=", f"-{name}=")):
      return arg.split("=", 1)[1]
  return ""


def flags_help(fv: flags.FlagValues) -> str:
  """absl's help of fv without its module header line and `(default: 'None')`."""
  lines = fv.get_help(prefix="", include_special_flags=False).splitlines()
  return "\n".join(l for l in lines if l.startswith(" ") and l.strip() != "(default: 'None')")


def absl_main(doc: str, define_flags: Callable[[flags.FlagValues, list], None],
              body: Callable[[flags.FlagValues], int | None], argv: Sequence[str] | None = None,
              *, user_errors: tuple = ()) -> int:
  """Runs an absl-flags program: parse argv (sys.argv when None), then body(flag values).

  define_flags(fv, argv) defines the program's flags in fv (argv is what
  `--config.x=v` overrides are read from). `--help` prints doc and the flags
  (status 0). Returns the exit status: 0, 2 for a user mistake, 130 on Ctrl-C.
  """
  argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
  fv = flags.FlagValues()
  define_flags(fv, argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(doc.strip() + "\n\nflags:\n" + flags_help(fv))
    return 0
  if not flags.FLAGS.is_parsed():   # absl logging (Orbax) then logs without a warning
    flags.FLAGS.mark_as_parsed()
  try:
    parse_flags(fv, argv)
  except UsageError as e:
    print_error(str(e))
    return 2
  return run(body, fv, user_errors=user_errors)
