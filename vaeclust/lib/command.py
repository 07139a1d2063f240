"""How the project's commands stop on an error the user can fix: one paragraph, no traceback."""
import sys

from absl import logging


def fail(message: str):
  """Stops the program with a one-paragraph explanation (exit code 2) instead of a traceback."""
  logging.error(message)
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)
