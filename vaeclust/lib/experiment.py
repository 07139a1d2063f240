"""What a clustering run does around its model, shared by both methods' mains: data from flags,
the strategy, the checkpoint manager, the saved run description, and the evaluation step."""
import dataclasses
import json
import os
import sys

from absl import flags
from absl import logging
import keras
import tensorflow as tf

from vaeclust.lib import data
from vaeclust.lib import distribute
from vaeclust.lib import evaluation
from vaeclust.lib import files
from vaeclust.lib import images as images_lib
from vaeclust.lib import training

FLAGS = flags.FLAGS
RUN_FILE = "run.json"


def fail(message: str):
  """Stops the program with a one-paragraph explanation instead of a traceback."""
  logging.error(message)
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def start() -> tf.distribute.Strategy:
  """Seeds, devices, strategy and precision policy from --seed/--cpu_devices/--strategy/
  --mixed_precision (first thing a main does)."""
  keras.utils.set_random_seed(FLAGS.seed)  # weight initialisers, Python and NumPy
  distribute.split_cpu(FLAGS.cpu_devices)
  name = FLAGS.strategy
  if FLAGS.jit_compile and name == "mirrored" and not tf.config.list_logical_devices("GPU"):
    # On CPU devices MirroredStrategy synchronises through merge_call, which an XLA-compiled step
    # cannot contain, and XLA cannot reach another logical CPU device's variables.
    if FLAGS.cpu_devices > 1:
      fail("--jit_compile cannot run on several logical CPU devices (an XLA-compiled step cannot "
           "reach another device's variables); use it with --cpu_devices=1 or on GPUs/TPUs.")
    logging.info("--jit_compile on CPU: training on one_device (the same single replica).")
    name = "one_device"
  strategy = distribute.make_strategy(name)
  if FLAGS.mixed_precision != "off":
    keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
  return strategy


def optimizer(inner: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
  """`inner`, with dynamic loss scaling under mixed_float16 (whose small gradients would
  underflow); distribute.apply_gradients scales the gradients."""
  if keras.mixed_precision.global_policy().name == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(inner)
  return inner


def load_split(train: bool, channels: int = 0):
  """The uint8 dataset and its info for --train_split (train=True) or --eval_split."""
  split = (FLAGS.train_split if train else FLAGS.eval_split or FLAGS.train_split) \
      or data.default_split(FLAGS.dataset, train)
  try:
    return data.load(FLAGS.dataset, split=split, image_size=FLAGS.image_size,
                     data_dir=FLAGS.data_dir, channels=channels or FLAGS.channels or None,
                     crop_to_bbox=FLAGS.crop_to_bbox)
  except data.DataError as e:
    fail(str(e))


def training_input(ds: tf.data.Dataset, global_batch_size: int, seed: int):
  """A dataset_fn for Trainer.run: one sharded pipeline per worker with the per-replica batch."""
  def dataset_fn(ctx: tf.distribute.InputContext):
    return data.training_batches(ds, ctx.get_per_replica_batch_size(global_batch_size), seed, ctx)
  return dataset_fn


def checkpoint_manager(checkpoint: tf.train.Checkpoint, strategy) -> tf.train.CheckpointManager:
  directory = distribute.writable_dir(FLAGS.model_dir, strategy)
  return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=FLAGS.keep_checkpoints)


def summary_writer(strategy, name: str):
  if not distribute.is_chief(strategy):
    return tf.summary.create_noop_writer()
  return tf.summary.create_file_writer(os.path.join(FLAGS.model_dir, name))


def save_or_check_run(method: str, model_config, strategy):
  """Saves what the model is (method, precision, config) in model_dir/run.json, or checks a
  resumed run asks for the same model and optimizer state; returns what is stored there."""
  path = os.path.join(FLAGS.model_dir, RUN_FILE)
  wanted = {"method": method, "dataset": FLAGS.dataset, "mixed_precision": FLAGS.mixed_precision,
            "model": dataclasses.asdict(model_config)}
  if tf.io.gfile.exists(path):
    stored = files.read_json(path)
    stored_precision = stored.get("mixed_precision", "off")
    if (stored_precision == "mixed_float16") != (FLAGS.mixed_precision == "mixed_float16"):
      # The loss scale is optimizer state: the checkpoints would not restore into the optimizer.
      fail(f"{FLAGS.model_dir} was trained with --mixed_precision={stored_precision}; "
           "mixed_float16 keeps a loss scale in the optimizer's checkpointed state, so resume "
           f"with --mixed_precision={stored_precision} or use a new --model_dir.")
    normalised = json.loads(json.dumps(wanted))  # tuples → lists, as stored
    if stored["method"] != method or stored["model"] != normalised["model"]:
      differences = sorted(k for k in normalised["model"]
                           if stored["model"].get(k) != normalised["model"][k])
      fail(f"{FLAGS.model_dir} holds a {stored['method']} model with other settings "
           f"({', '.join(differences) or 'method'}); use a new --model_dir or the same flags.")
    return stored
  if distribute.is_chief(strategy):
    files.write_json(path, wanted)
  return wanted


def prepare_run(method: str, config_from_flags, strategy):
  """(run.json contents, training dataset): with --mode=eval the stored run and no dataset;
  otherwise the training split, and the model config built from it by `config_from_flags(info)`
  saved (or checked against a resumed run)."""
  if FLAGS.mode == "eval":
    return load_run(method), None
  train_ds, info = load_split(train=True)
  return save_or_check_run(method, config_from_flags(info), strategy), train_ds


def resume(checkpoint: tf.train.Checkpoint, step_counter: tf.Variable, strategy):
  """Restores the newest checkpoint of --model_dir (one must exist for --mode=eval); returns the
  Trainer that saves into it and the evaluation summary writer."""
  manager = checkpoint_manager(checkpoint, strategy)
  restored = training.restore(checkpoint, FLAGS.model_dir)
  if FLAGS.mode == "eval" and not restored:
    fail(f"No checkpoint in {FLAGS.model_dir}; train first.")
  trainer = training.Trainer(strategy, step_counter, manager, summary_writer(strategy, "train"),
                             FLAGS.batch_size, FLAGS.log_every, FLAGS.checkpoint_every,
                             jit_compile=FLAGS.jit_compile)
  return trainer, summary_writer(strategy, "eval")


def every_eval_step(evaluate):
  """An on_log callback for Trainer.run that scores (without writing eval/ files) every
  --eval_every steps."""
  def on_log(step, logs):
    del logs
    if FLAGS.eval_every and step % FLAGS.eval_every == 0:
      evaluate(step, write_files=False)
  return on_log


def load_run(method: str) -> dict:
  """run.json of an existing model_dir (for --mode=eval and exports)."""
  path = os.path.join(FLAGS.model_dir, RUN_FILE)
  if not tf.io.gfile.exists(path):
    fail(f"{FLAGS.model_dir} holds no trained model ({RUN_FILE} is missing); train first.")
  stored = files.read_json(path)
  if stored["method"] != method:
    fail(f"{FLAGS.model_dir} holds a {stored['method']} model, not {method}.")
  return stored


def evaluate(probabilities_fn, num_clusters: int, step: int, strategy, writer,
             channels: int, over_clustering: int = 1, write_files: bool = True):
  """Clusters --eval_split, logs scores to TensorBoard and (with write_files) writes
  MODEL_DIR/eval/*; only the chief writes anything."""
  ds, info = load_split(train=False, channels=channels)
  predictions = evaluation.predict(tf.function(probabilities_fn),
                                   data.evaluation_batches(ds, FLAGS.eval_batch_size), num_clusters)
  if not distribute.is_chief(strategy):
    return None
  eval_dir = os.path.join(FLAGS.model_dir, "eval")
  result = evaluation.summarize(predictions, num_clusters, step, over_clustering)
  if write_files:
    evaluation.write_outputs(eval_dir, predictions, result, info.skipped)
  with writer.as_default(step=step):
    for name in ("acc", "nmi", "ari", "many_to_one_acc", "clusters_used"):
      if result.get(name) is not None:
        tf.summary.scalar(f"eval/{name}", result[name])
    images_lib.summary_image("eval/images_per_cluster", evaluation.cluster_picture(predictions), step)
  writer.flush()
  return result
