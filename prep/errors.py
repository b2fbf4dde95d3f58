"""User-facing errors of the prep stage.

A `PrepError` is a user mistake or a bad input: the command line prints its
message on one line (naming the file and the fix) and exits with status 2,
never with a traceback. Bugs stay ordinary exceptions.
"""


class PrepError(Exception):
  """An input or usage problem that the user can fix; the message says how."""
