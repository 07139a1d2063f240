"""Export a trained model as a versioned SavedModel that TensorFlow Serving can serve.

  python -m export.saved_model --model_dir=runs/mnist --export_base=/models --model_name=mnist

writes /models/mnist/<version>/ (saved_model.pb, variables/, assets.extra/ with the warmup
requests and metadata.json). A version is written aside in a directory TF Serving ignores and
renamed into place when complete, so a server polling the base path never sees half a model, and
an existing version is never overwritten.
"""
import datetime
import importlib
import math
import os

from absl import app
from absl import flags
import tensorflow as tf

from export import signatures
from export import warmup
from vaeclust.lib import command
from vaeclust.lib import files
from vaeclust.lib import run_file

FLAGS = flags.FLAGS
# run.json "method" → the model module that serving needs of a method: `from_run(run: dict)` (the
# untrained model, whose config's `num_outputs` says how many cluster probabilities it gives),
# `checkpoint(model)` (what training saves) and CHECKPOINT_STEP (the training step's key in it).
# Imported only when used, so that exporting one method never needs another's package.
MODEL_BUILDERS = {"variational_clustering": "vaeclust.model", "c3gan": "c3gan.model"}
METADATA_FILE = os.path.join("assets.extra", "metadata.json")


class ExportError(Exception):
  """A model that cannot be exported; the message says why."""


def load_trained(model_dir: str):
  """(run.json contents, model restored from the newest checkpoint, training step, checkpoint)."""
  run = run_file.read(model_dir)
  if run is None:
    raise ExportError(f"{model_dir} holds no trained model ({run_file.NAME} is missing).")
  module = model_module(run.get("method"))
  checkpoint = tf.train.latest_checkpoint(model_dir)
  if checkpoint is None:
    raise ExportError(f"{model_dir} has {run_file.NAME} but no checkpoint; train first.")
  model = module.from_run(run)
  tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial() \
      .assert_existing_objects_matched()
  step = int(tf.train.load_checkpoint(checkpoint).get_tensor(module.CHECKPOINT_STEP))
  return run, model, step, checkpoint


def model_module(method: str):
  """The model module of a method (see MODEL_BUILDERS)."""
  if method not in MODEL_BUILDERS:
    raise ExportError(f"Unknown method {method!r} in {run_file.NAME}; "
                      f"export knows {', '.join(sorted(MODEL_BUILDERS))}.")
  try:
    return importlib.import_module(MODEL_BUILDERS[method])
  except ImportError as e:
    raise ExportError(f"Cannot export a {method} model: {e}.") from e


def fit_threshold(model_dir: str, step: int) -> float:
  """The outlier threshold of `fit` that the evaluation of this step suggested (eval/metrics.json);
  NaN when the newest evaluation is of another step or there is none."""
  path = os.path.join(model_dir, "eval", "metrics.json")
  if not tf.io.gfile.exists(path):
    return float("nan")
  metrics = files.read_json(path)
  if metrics.get("step") != step or metrics.get("fit_threshold") is None:
    return float("nan")
  return float(metrics["fit_threshold"])


def versions(model_base: str) -> list:
  """Integer version directories under BASE/NAME, ascending (what TF Serving considers)."""
  if not tf.io.gfile.isdir(model_base):
    return []
  names = (n.rstrip("/") for n in tf.io.gfile.listdir(model_base))
  return sorted(int(n) for n in names
                if n.isdigit() and tf.io.gfile.isdir(os.path.join(model_base, n)))


def export(model_dir: str, export_base: str, model_name: str, version: int = None) -> str:
  """Writes BASE/NAME/<version> (default: one above the largest) and returns its path."""
  model_base = os.path.join(export_base, model_name)
  next_version = max(versions(model_base), default=0) + 1
  version = version or next_version
  target = os.path.join(model_base, str(version))
  if tf.io.gfile.exists(target):
    raise ExportError(f"{target} exists; versions are never overwritten "
                      f"(omit --version to write {next_version}).")
  run, model, step, checkpoint = load_trained(model_dir)
  config = run["model"]
  metadata = {"method": run["method"], "dataset": run.get("dataset", ""),
              # what `probabilities` holds: with over-clustering (C3-GAN), classes × over codes
              "num_clusters": model.config.num_outputs,
              "image_size": config["image_size"],
              "channels": config["channels"], "step": step, "version": version,
              "checkpoint": os.path.basename(checkpoint),
              "fit_threshold": fit_threshold(model_dir, step),
              "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  module = signatures.ServingModule(model, config["image_size"], config["channels"], metadata)

  tf.io.gfile.makedirs(model_base)
  temporary = os.path.join(model_base, f".tmp-{version}-{os.getpid()}")  # not an integer: ignored
  try:
    tf.saved_model.save(module, temporary, signatures=module.signatures())
    warmup.write(temporary, warmup.requests(model_name, config["image_size"], config["channels"]))
    files.write_json(os.path.join(temporary, METADATA_FILE),  # JSON has no NaN: null
                     {k: None if isinstance(v, float) and math.isnan(v) else v
                      for k, v in metadata.items()})
    try:
      tf.io.gfile.rename(temporary, target)
    except (OSError, tf.errors.OpError) as e:  # another export took this version meanwhile
      raise ExportError(f"Cannot move the export into {target}: {e}.") from e
  finally:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.rmtree(temporary)
  return target


def define_flags(flag_values: flags.FlagValues = FLAGS):
  """The command's flags, in absl's FLAGS or (a test, say) a FlagValues of their own."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("model_dir", None, "Trained model: the --model_dir of the training run "
                      "(run.json and checkpoints; the newest checkpoint is exported).", **define)
  flags.DEFINE_string("export_base", None, "Directory of served models (TF Serving's model base "
                      "paths live here: EXPORT_BASE/MODEL_NAME/VERSION).", **define)
  flags.DEFINE_string("model_name", None, "Name the model is served under.", **define)
  flags.DEFINE_integer("version", None, "Version number to write (default: one above the largest "
                       "existing version, 1 for the first). An existing version is an error.",
                       **define)
  for name in ("model_dir", "export_base", "model_name"):
    flags.mark_flag_as_required(name, flag_values)
  flags.register_validator("version", lambda v: v is None or v >= 1,
                           message="--version must be a positive integer.", **define)


def main(argv):
  del argv
  try:
    path = export(FLAGS.model_dir, FLAGS.export_base, FLAGS.model_name, FLAGS.version)
  except ExportError as e:
    command.fail(str(e))
  print(path)


if __name__ == "__main__":
  define_flags()
  app.run(main)
