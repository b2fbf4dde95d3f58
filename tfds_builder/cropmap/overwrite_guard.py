"""The overwrite guard: an overwrite never loses a good cropmap dataset, and
the stock `tfds build` prints a bad input as one line.

The only module of the builder that relies on TFDS internals; each one it
relies on is named here, and `tests/test_tfds_builder.py` fails loudly when
one changes (tensorflow-datasets 4.9):

1. `tensorflow_datasets.scripts.cli.build._make_builder`, the command line's
   builder factory, asks `builder.is_prepared()` and, under `--overwrite`,
   deletes `builder.data_path` right away, before any input is read. The
   builder answers False to that one caller (`asked_by_the_cli`), so the old
   dataset stays until `prepare` has checked the inputs.
2. `tensorflow_datasets.scripts.cli.cli_utils.download_and_prepare` turns
   `--overwrite` into a download mode whose `overwrite_dataset` is true, which
   `prepare` reads (as it does from any DownloadConfig in-process).
3. `DatasetBuilder.download_and_prepare` writes into
   `<data_path.parent>/incomplete.<random>_<version>/`
   (`tensorflow_datasets.core.utils.file_utils._get_incomplete_dir`) and
   renames it when whole: a build killed meanwhile leaves that folder behind.
4. absl's `app.run` (the command line's `launch_cli`) calls the installed
   `app.ExceptionHandler`s once the stack has unwound: `OneLineErrors`, installed
   when the command line's builder factory first asks (1), prints a UserError
   as one line with exit status 2.

Nothing depends on what was imported before: the command line is recognised
by the caller of `is_prepared`, not by the modules loaded.
"""
from __future__ import annotations

import os
import sys

from absl import app

from cropcontracts import errors

# (1): the module and function of the command line's builder factory.
CLI_BUILD_MODULE = "tensorflow_datasets.scripts.cli.build"
CLI_BUILDER_FACTORY = "_make_builder"
# (3): the prefix of TFDS's temporary build folders.
INCOMPLETE_PREFIX = "incomplete."


def killed_builds(data_path) -> tuple[str, ...]:
  """The globs, relative to `data_path`'s parent, of what builds of `data_path`
  (a version folder) leave when killed: TFDS's temporary build folders (3). The
  caller removes them when it takes the build lock (`atomic.claim`)."""
  return (f"{INCOMPLETE_PREFIX}*_{data_path.name}",)


def asked_by_the_cli(frame) -> bool:
  """Whether `frame` (the caller of `is_prepared`) is the `tfds build`
  command line's builder factory, which deletes a prepared dataset under
  --overwrite (1)."""
  return (frame.f_code.co_name == CLI_BUILDER_FACTORY
          and frame.f_globals.get("__name__") == CLI_BUILD_MODULE)


def install_one_line_errors() -> None:
  """Installs `OneLineErrors` (4), once: the builder calls it when the command
  line's builder factory asks (1), the first thing `tfds build` asks it."""
  if not any(isinstance(h, OneLineErrors) for h in app.EXCEPTION_HANDLERS):
    app.install_exception_handler(OneLineErrors())


def prepare(builder, download_config, download_and_prepare, check_inputs, **kwargs):
  """Runs `download_and_prepare(download_config=…, **kwargs)` (TFDS's) for
  `builder`, whose build lock the caller holds (having removed the temporary
  build folders of killed builds, `killed_builds`); an overwrite never loses a
  good dataset.

  Overwriting (2), `check_inputs()` runs before anything is removed; the old
  version folder then waits beside the new build (`.<version>.previous`) and
  comes back if the build fails. A run killed meanwhile gets it back at the
  next start.
  """
  path = builder.data_path
  backup = path.parent / f".{path.name}.previous"
  if backup.exists():
    if path.exists():
      backup.rmtree()
    else:                       # an overwrite killed mid-build: the old dataset is back
      backup.rename(path)
  if not (download_config.download_mode.overwrite_dataset and path.exists()):
    return download_and_prepare(download_config=download_config, **kwargs)
  check_inputs()
  path.rename(backup)
  try:
    download_and_prepare(download_config=download_config, **kwargs)
  except BaseException:
    if not path.exists():
      backup.rename(path)
    raise
  backup.rmtree()
  return None


class OneLineErrors(app.ExceptionHandler):
  """Under the `tfds` command line: a UserError (a bad or missing input) is one
  line naming the zone, the file and the fix, and exit status 2, not a
  traceback. absl calls handlers once the stack has unwound (TFDS has already
  removed its incomplete folders), and catches SystemExit raised in them, hence
  `os._exit` after flushing."""

  def wants(self, exc) -> bool:
    return isinstance(exc, errors.UserError)

  def handle(self, exc) -> None:
    sys.stdout.flush()
    print(f"tfds build cropmap: error: {errors.one_line(exc)}", file=sys.stderr, flush=True)
    os._exit(errors.USER_EXIT)  # pylint: disable=protected-access
