"""A clustering run, shared by both methods: `run(method)` does everything a main does around
its model (the strategy, data from flags, the saved run description, checkpoints, training,
evaluation) and a main declares only its `Method`."""
import dataclasses
import json
import os
import weakref
from typing import Any, Callable, Optional

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from vaeclust.lib import command
from vaeclust.lib import common_flags
from vaeclust.lib import data
from vaeclust.lib import distribute
from vaeclust.lib import evaluation
from vaeclust.lib import files
from vaeclust.lib import images as images_lib
from vaeclust.lib import run_file
from vaeclust.lib import training

FLAGS = flags.FLAGS
# Which images a run clusters: --mode=eval takes them from run.json unless given.
DATA_FLAGS = ("dataset", "data_dir", "train_split", "eval_split", "image_size", "channels",
              "crop_to_bbox")
# Flags a resumed run may change: how long and how often, where, on what devices and how fast it
# runs, and what it shows. None of them is in the checkpoint or changes what a step computes
# beyond rounding (mixed_precision has its own check: float16 keeps a loss scale).
RESUMABLE_FLAGS = frozenset({
    "train_steps", "log_every", "checkpoint_every", "eval_every", "keep_checkpoints",
    "eval_batch_size", "mode", "model_dir", "strategy", "cpu_devices", "jit_compile",
    "mixed_precision", "picture_codes", "eval_samples_per_code", "projector_examples"})


@dataclasses.dataclass(frozen=True)
class Method:
  """What a main declares of its method; `run` does the rest."""
  name: str  # run.json's "method"
  flags: flags.FlagValues  # the shared flags and the method's own (common_flags.method_flags())
  config: Callable[[data.DatasetInfo], Any]  # the model Config of a new run, from flags and data
  # (run.json contents, strategy) → (model with its optimizers, Trainer after restoring the newest
  # checkpoint of --model_dir)
  build: Callable
  # (model, run, training dataset, Trainer, strategy, evaluate) → (trained model, its Trainer);
  # evaluate(model, step, write_files=True) scores a model (see `run`)
  train: Callable
  scoring: Callable[[Any], tuple]  # model → (config.num_outputs, over-clustering: its codes per class)
  # (model, writer, step, final) → the method's own evaluation summaries (the chief only)
  summaries: Optional[Callable] = None
  # run.json contents → what to build on resuming (e.g. a setting training has decided since)
  resumed: Optional[Callable] = None


def cli(method: Method):
  """`python -m <main>`: parses the command line into the method's flags and runs it."""
  common_flags.use(method.flags)
  app.run(lambda argv: run(method))


def run(method: Method):
  """Trains and/or evaluates (--mode) the run of --model_dir, which the flags describe."""
  strategy = start()
  run_description, train_ds = prepare_run(method, strategy)
  if method.resumed:
    run_description = method.resumed(run_description)
  model, trainer = method.build(run_description, strategy)
  eval_writer = summary_writer(strategy, "eval")

  def evaluate_model(model, step, write_files=True, final=False):
    num_clusters, over_clustering = method.scoring(model)
    result = evaluate(model, num_clusters, step, strategy, eval_writer, model.config.channels,
                      over_clustering, write_files)
    if method.summaries and distribute.is_chief(strategy):
      method.summaries(model, eval_writer, step, final)
    return result

  if FLAGS.mode != "eval":
    model, trainer = method.train(model, run_description, train_ds, trainer, strategy,
                                  evaluate_model)
  if FLAGS.mode != "train":
    evaluate_model(model, trainer.step, final=True)


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
      command.fail("--jit_compile cannot run on several logical CPU devices (an XLA-compiled step cannot "
                   "reach another device's variables); use it with --cpu_devices=1 or on GPUs/TPUs.")
    logging.info("--jit_compile on CPU: training on one_device (the same single replica).")
    name = "one_device"
  strategy = distribute.make_strategy(name, FLAGS.cpu_devices)
  keras.mixed_precision.set_global_policy(
      "float32" if FLAGS.mixed_precision == "off" else FLAGS.mixed_precision)
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
    command.fail(str(e))


def training_input(ds: tf.data.Dataset, global_batch_size: int, seed: int, step: int = 0):
  """A dataset_fn for Trainer.run: one sharded pipeline per worker with the per-replica batch,
  starting at training step `step` of the stream that `seed` orders (a resumed run continues the
  uninterrupted run's batches)."""
  def dataset_fn(ctx: tf.distribute.InputContext):
    return data.training_batches(ds, ctx.get_per_replica_batch_size(global_batch_size), seed, ctx,
                                 skip=step * global_batch_size // ctx.num_input_pipelines)
  return dataset_fn


def summary_writer(strategy, name: str):
  if not distribute.is_chief(strategy):
    return tf.summary.create_noop_writer()
  return tf.summary.create_file_writer(os.path.join(FLAGS.model_dir, name))


def run_flags(method: Method) -> dict:
  """Every flag of the method (the shared ones and its own) by name, as JSON stores them: what a
  run was started with."""
  return json.loads(json.dumps({name: FLAGS[name].value for name in method.flags}))


def stored_flags(run: dict) -> dict:
  """The flags run.json says its run was started with; run.json files written before flags were
  stored hold only the dataset (the other flags then take their values from the command line)."""
  return run.get("flags", {"dataset": run["dataset"]})


def stored_run():
  """run.json of --model_dir, or None before the run has started."""
  return run_file.read(FLAGS.model_dir)


def rewrite_run(run: dict, strategy):
  """Writes `run` as run.json (the chief, atomically): when a run starts, and again once training
  has decided a setting of the model that the flags leave open."""
  if distribute.is_chief(strategy):
    files.write_json(run_file.path(FLAGS.model_dir), run)


def save_or_check_run(method: Method, model_config, strategy):
  """Saves what the run is (method, precision, model config, flags) in model_dir/run.json, or
  checks that a resumed run continues it; returns what is stored there."""
  wanted = json.loads(json.dumps(  # tuples → lists, as stored
      {"method": method.name, "dataset": FLAGS.dataset, "mixed_precision": FLAGS.mixed_precision,
       "model": dataclasses.asdict(model_config), "flags": run_flags(method)}))
  stored = stored_run()
  if stored is not None:
    # Only the chief compares flags (its refusal stops the cluster): the others may differ in
    # what does not reach the shared variables, and a non-chief finds the run.json the chief has
    # just written for this very run.
    check_resumed_run(stored, wanted, compare_flags=distribute.is_chief(strategy))
    return stored
  rewrite_run(wanted, strategy)
  return wanted


def check_resumed_run(stored: dict, wanted: dict, compare_flags: bool = True):
  """Stops unless `wanted` continues the `stored` run: the same method, model, data, optimizer and
  schedules (another dataset or learning rate would silently train a different run on top of the
  checkpoint); logs the flags a resumed run may change (RESUMABLE_FLAGS)."""
  stored_precision = stored.get("mixed_precision", "off")
  if (stored_precision == "mixed_float16") != (FLAGS.mixed_precision == "mixed_float16"):
    # The loss scale is optimizer state: the checkpoints would not restore into the optimizer.
    command.fail(f"{FLAGS.model_dir} was trained with --mixed_precision={stored_precision}; "
                 "mixed_float16 keeps a loss scale in the optimizer's checkpointed state, so resume "
                 f"with --mixed_precision={stored_precision} or use a new --model_dir.")
  if stored["method"] != wanted["method"]:
    command.fail(f"{FLAGS.model_dir} holds a {stored['method']} model, not {wanted['method']}; "
                 "use a new --model_dir.")
  before = stored_flags(stored)
  # str(): a flag whose type changed keeps its value (--num_clusters was an integer, now "10")
  changed = {name: (before[name], value) for name, value in wanted["flags"].items()
             if compare_flags and name in before and str(before[name]) != str(value)}
  for name, value in wanted["model"].items():  # what the flags and the data made of the model
    # a setting newer than the run: the run trained without it, as with its default
    newer = name not in stored["model"] and name in FLAGS and not FLAGS[name].present
    if stored["model"].get(name) != value and not newer:
      changed.setdefault(name, (stored["model"].get(name), value))
  for name in sorted(changed.keys() & RESUMABLE_FLAGS):
    logging.info("Resuming with --%s=%s (the run started with %s).", name, changed[name][1],
                 changed[name][0])
  refused = sorted(changed.keys() - RESUMABLE_FLAGS)
  if refused:
    listed = "; ".join(f"{name}: {changed[name][0]} → {changed[name][1]}" for name in refused)
    command.fail(f"{FLAGS.model_dir} holds a run with other settings ({listed}). Resume it with the "
                 f"settings it was started with (they are in {run_file.NAME}) or use a new --model_dir.")


def use_run_data(run: dict):
  """--mode=eval: the data flags not on the command line take the run's values (README's
  `--mode=eval --model_dir=DIR` scores the model on its own data); stops when the images would not
  have the model's size and channels."""
  before = stored_flags(run)
  for name in DATA_FLAGS:
    if name not in before:
      continue
    if not FLAGS[name].present:
      setattr(FLAGS, name, before[name])
    elif FLAGS[name].value != before[name]:
      logging.warning("Evaluating with --%s=%s; the model was trained with %s.", name,
                      FLAGS[name].value, before[name])
  size, channels = run["model"]["image_size"], run["model"]["channels"]
  given = (FLAGS.image_size,
           FLAGS.channels or data.natural_channels(FLAGS.dataset, FLAGS.data_dir))
  if given != (size, channels):
    command.fail(f"{FLAGS.model_dir} holds a model of {size}×{size} images with {channels} channel(s); "
                 f"--dataset={FLAGS.dataset} --image_size={FLAGS.image_size} --channels={FLAGS.channels} "
                 f"gives {given[0]}×{given[0]} with {given[1]}. Leave out the data flags to evaluate on "
                 "the run's own data, or pass its --image_size and --channels.")


def prepare_run(method: Method, strategy):
  """(run.json contents, training dataset): with --mode=eval the stored run and no dataset (the
  run's data flags in effect); otherwise the training split, and the run (its model config built
  from the flags and the data by method.config(info)) saved or checked against a resumed run."""
  if FLAGS.mode == "eval":
    stored = load_run(method.name)
    use_run_data(stored)
    return stored, None
  train_ds, info = load_split(train=True)
  return save_or_check_run(method, method.config(info), strategy), train_ds


def resume(checkpoint: tf.train.Checkpoint, step_counter: tf.Variable, strategy,
           restore: bool = True) -> training.Trainer:
  """Restores the newest checkpoint of --model_dir (with `restore`; one must exist for
  --mode=eval); returns the Trainer that saves into it."""
  if restore:
    restored = training.restore(checkpoint, FLAGS.model_dir)
    if FLAGS.mode == "eval" and not restored:
      command.fail(f"No checkpoint in {FLAGS.model_dir}; train first.")
  trainer = training.Trainer(strategy, step_counter, checkpoint,
                             distribute.writable_dir(FLAGS.model_dir, strategy),
                             summary_writer(strategy, "train"), FLAGS.batch_size, FLAGS.log_every,
                             FLAGS.checkpoint_every, FLAGS.keep_checkpoints,
                             jit_compile=FLAGS.jit_compile)
  return trainer


def every_eval_step(evaluate, model):
  """An on_log callback for Trainer.run that scores `model` with `evaluate(model, step, ...)`
  (see `run`; without writing eval/ files) every --eval_every steps."""
  def on_log(step, logs):
    del logs
    if FLAGS.eval_every and step % FLAGS.eval_every == 0:
      evaluate(model, step, write_files=False)
  return on_log


def load_run(method: str) -> dict:
  """run.json of an existing model_dir (for --mode=eval and exports)."""
  stored = stored_run()
  if stored is None:
    command.fail(f"{FLAGS.model_dir} holds no trained model ({run_file.NAME} is missing); train first.")
  if stored["method"] != method:
    command.fail(f"{FLAGS.model_dir} holds a {stored['method']} model, not {method}.")
  return stored


_traced = weakref.WeakKeyDictionary()  # outputs_fn → its tf.function, traced once per model


def evaluate(outputs_fn, num_clusters: int, step: int, strategy, writer,
             channels: int, over_clustering: int = 1, write_files: bool = True):
  """Clusters --eval_split with `outputs_fn(images) → {"probabilities", "embedding"}`, logs
  scores to TensorBoard and (with write_files) writes MODEL_DIR/eval/*; only the chief writes
  anything."""
  if not distribute.is_chief(strategy):  # what the others would compute, nobody would read
    return None
  ds, info = load_split(train=False, channels=channels)
  if outputs_fn not in _traced:
    _traced[outputs_fn] = evaluation.batch_function(outputs_fn,
                                                    [FLAGS.image_size, FLAGS.image_size, channels])
  predictions = evaluation.predict(
      _traced[outputs_fn], data.evaluation_batches(ds, FLAGS.eval_batch_size), num_clusters,
      projector_examples=FLAGS.projector_examples if write_files else 0)
  eval_dir = os.path.join(FLAGS.model_dir, "eval")
  result = evaluation.summarize(predictions, num_clusters, step, over_clustering)
  figures = evaluation.pictures(predictions, num_clusters, info.class_names, over_clustering)
  if write_files:
    evaluation.write_outputs(eval_dir, predictions, result, info.skipped, figures,
                             info.class_names)
  with writer.as_default(step=step):
    for name in ("acc", "nmi", "ari", "many_to_one_acc", "clusters_used"):
      if result.get(name) is not None:
        tf.summary.scalar(f"eval/{name}", result[name])
    images_lib.summary_image("eval/images_per_cluster", figures.clusters, step)
    if figures.confusion is not None:
      images_lib.summary_image("eval/confusion", tf.io.decode_png(figures.confusion).numpy(), step)
  writer.flush()
  return result
