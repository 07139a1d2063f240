"""Writing files so that a reader never sees one half-written (write aside, flush to disk, then
rename), nor, after a crash or power cut, a renamed file whose contents never reached the disk."""
import json
import os
import uuid

import tensorflow as tf


def write_atomically(path: str, content, mode: str = "w"):
  """Writes text or bytes to a temporary sibling of `path`, then renames it into place."""
  directory = os.path.dirname(path) or "."
  tf.io.gfile.makedirs(directory)
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(temporary, mode) as f:
    f.write(content)
  _sync(temporary)
  tf.io.gfile.rename(temporary, path, overwrite=True)
  _sync(directory)


def replace_directory(path: str, write_contents):
  """Fills a temporary sibling of directory `path` with `write_contents(temporary_path)`, then
  swaps it into place, so readers see the old set of files or the new one, never a mix (a kill
  between the two renames leaves no `path` until the next call). Entries of the old directory that
  the new set lacks (TensorBoard's event files, another writer's subdirectory) stay."""
  _finish_replacements(path)
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  tf.io.gfile.makedirs(temporary)
  write_contents(temporary)
  for directory, _, names in tf.io.gfile.walk(temporary):
    for name in names:
      _sync(os.path.join(directory, name))
    _sync(directory)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rename(path, f"{path}.old-{uuid.uuid4().hex}")
  tf.io.gfile.rename(temporary, path)
  _sync(os.path.dirname(path) or ".")
  _finish_replacements(path)


def _finish_replacements(path: str):
  """Completes replacements of `path`, including those a kill interrupted: half-written new sets
  go; an old directory comes back whole if no new one took its place, else hands over the entries
  the new one lacks, and goes."""
  for stale in tf.io.gfile.glob(f"{path}.tmp-*"):
    tf.io.gfile.rmtree(stale)
  for old in tf.io.gfile.glob(f"{path}.old-*"):
    if not tf.io.gfile.exists(path):
      tf.io.gfile.rename(old, path)
      continue
    for name in tf.io.gfile.listdir(old):
      name = name.rstrip("/")
      if not tf.io.gfile.exists(os.path.join(path, name)):
        tf.io.gfile.rename(os.path.join(old, name), os.path.join(path, name))
    tf.io.gfile.rmtree(old)


def _sync(path: str):
  """fsyncs a local file or directory (a rename can reach the disk before the data it names);
  remote stores (gs://...) keep an object once its writer is closed."""
  if "://" in path:
    return
  descriptor = os.open(path, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def write_json(path: str, value):
  write_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
