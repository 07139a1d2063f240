"""run.json: what the run of a model_dir is (method, model config, flags). Training writes it when
the run starts and reads it to resume and evaluate; export reads it to rebuild the model."""
import os

import tensorflow as tf

from vaeclust.lib import files

NAME = "run.json"


def path(model_dir: str) -> str:
  return os.path.join(model_dir, NAME)


def read(model_dir: str):
  """The run.json of `model_dir` as a dict, or None before a run has started there."""
  return files.read_json(path(model_dir)) if tf.io.gfile.exists(path(model_dir)) else None
