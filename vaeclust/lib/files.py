"""Writing files so that a reader never sees one half-written (write aside, then rename)."""
import json
import os
import uuid

import tensorflow as tf


def write_atomically(path: str, content, mode: str = "w"):
  """Writes text or bytes to a temporary sibling of `path`, then renames it into place."""
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(temporary, mode) as f:
    f.write(content)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json(path: str, value):
  write_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
