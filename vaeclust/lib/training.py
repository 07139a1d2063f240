"""One training loop for every tf.distribute strategy: `strategy.run` of a model's step inside a
tf.function, checkpoints through tf.train.CheckpointManager, scalars to TensorBoard, progress logs.

Keras' `fit` is not used: it fails under MultiWorkerMirroredStrategy and its callbacks are not
chief-aware. Step functions compute losses averaged over the *global* batch.
"""
import time
from typing import Callable, Dict, Optional

from absl import logging
import tensorflow as tf


class Trainer:
  """Runs step functions on a distributed dataset until a target step, saving as it goes."""

  def __init__(self, strategy: tf.distribute.Strategy, step_counter: tf.Variable,
               checkpoint: tf.train.Checkpoint, checkpoint_dir: str,
               summary_writer: tf.summary.SummaryWriter, global_batch_size: int,
               log_every: int = 100, checkpoint_every: int = 1000, keep_checkpoints: int = 3,
               jit_compile: bool = False):
    self.strategy = strategy
    self.step_counter = step_counter
    self.keep_checkpoints = keep_checkpoints
    self.manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, keep_checkpoints)
    self.writer = summary_writer
    self.global_batch_size = global_batch_size
    self.log_every = max(1, log_every)
    self.checkpoint_every = max(1, checkpoint_every)
    self.jit_compile = jit_compile
    # The step counter after the first step of a run() whose logs were not finite (-1: none yet),
    # set inside the step so that the loop learns the exact step at no extra host sync.
    self.non_finite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)

  @property
  def step(self) -> int:
    return int(self.step_counter.numpy())

  def run(self, step_fn: Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]],
          dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset], until_step: int,
          phase: str = "train", on_log: Optional[Callable[[int, dict], None]] = None):
    """Calls `step_fn(per-replica batch)` until the step counter reaches `until_step`.

    `dataset_fn(input_context)` builds one input pipeline with the per-replica batch size.
    """
    start = self.step
    if start >= until_step:
      return
    if self.strategy.num_replicas_in_sync == 1:
      # One replica: feed the pipeline directly. A distributed iterator gives the same batches but
      # made steps 1.6-1.9x slower on a 2-core CPU (cause not found yet).
      dataset = dataset_fn(tf.distribute.InputContext())
    else:
      dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dataset)
    replica_step = step_fn
    if self.jit_compile:  # XLA compiles the step; the loop, the iterator and string ids stay out
      compiled_step = tf.function(step_fn, jit_compile=True)
      replica_step = lambda batch: compiled_step(  # pylint: disable=g-long-lambda
          {name: value for name, value in batch.items() if value.dtype != tf.string})

    # One step per call: an in-graph loop over several steps would trace the (large) step twice,
    # before the loop and inside it. No autograph: the steps are plain TensorFlow code and
    # converting them (and Keras' optimizer) costs a third of the tracing time.
    @tf.function(autograph=False)
    def run_step(iterator):
      logs = self.strategy.run(replica_step, args=(next(iterator),))
      logs = {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
              for name, value in logs.items()}
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(value, tf.float32)))
                              for value in logs.values()])
      first = tf.logical_and(tf.logical_not(finite), self.non_finite_step < 0)
      self.non_finite_step.assign(tf.where(first, tf.cast(self.step_counter, tf.int64),
                                           self.non_finite_step))
      return logs

    logging.info("%s: steps %d → %d (global batch %d).", phase, start, until_step,
                 self.global_batch_size)
    started, last_time, last_step = time.time(), time.time(), start
    self.non_finite_step.assign(-1)
    interval = {}  # every log of the steps since the last log line: their means are shown
    while self.step < until_step:
      step = self.step
      num_steps = min(until_step, _next_multiple(step, self.log_every),
                      _next_multiple(step, self.checkpoint_every)) - step
      for _ in range(num_steps):
        # no host sync and no op per step: a Keras metric's update_state cost ~2 ms per log
        for name, value in run_step(iterator).items():
          interval.setdefault(name, []).append(value)
      self._stop_if_non_finite(phase)
      step = self.step
      if step % self.log_every == 0 or step == until_step:
        logs = {name: float(tf.reduce_mean(tf.cast(tf.stack(values), tf.float64)))
                for name, values in interval.items()}
        interval = {}
        now = time.time()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        eta = (until_step - step) / max(rate, 1e-9)
        logging.info("%s step %d/%d  %.1f steps/s  %.0f images/s  ETA %s  %s", phase, step,
                     until_step, rate, rate * self.global_batch_size, _duration(eta),
                     "  ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items())))
        with self.writer.as_default(step=step):
          for name, value in logs.items():
            tf.summary.scalar(f"{phase}/{name}", value)
          tf.summary.scalar(f"{phase}/steps_per_second", rate)
        if on_log:
          on_log(step, logs)
        last_time, last_step = now, step
      if step % self.checkpoint_every == 0 or step == until_step:
        self.manager.save(checkpoint_number=step)
    self.writer.flush()
    logging.info("%s finished at step %d in %s.", phase, self.step, _duration(time.time() - started))

  def _stop_if_non_finite(self, phase: str):
    """Raises, before anything is saved, if a step since the last check had a non-finite loss or
    log (the weights are then likely NaN too). A float16 step that the loss scale skipped for
    overflowing gradients has finite logs and passes."""
    step = int(self.non_finite_step.numpy())
    if step < 0:
      return
    last = tf.train.latest_checkpoint(self.manager.directory)
    raise FloatingPointError(
        f"{phase}: non-finite loss at step {step}; stopped without saving. The last good "
        f"checkpoint is {last or 'none (nothing was saved yet)'}; a restart resumes from it, and "
        "would meet the same batches: lower the learning rate or change the run in a new "
        "--model_dir.")

  def save_as(self, name: str):
    """Saves the current step as checkpoint `name`-STEP, next to the step's ckpt-STEP: a second
    save of one step (VC's prior, initialised after the warm-up's last step) must not overwrite
    files that the `checkpoint` state file already names, or a kill during it would leave the
    newest checkpoint unreadable. It is kept and deleted like the other checkpoints."""
    checkpoint, directory = self.manager.checkpoint, self.manager.directory
    tf.train.CheckpointManager(checkpoint, directory, self.keep_checkpoints,
                               checkpoint_name=name).save(checkpoint_number=self.step)
    # a new manager reads the state file, and so manages the checkpoint just saved
    self.manager = tf.train.CheckpointManager(checkpoint, directory, self.keep_checkpoints)


def restore(checkpoint: tf.train.Checkpoint, directory: str) -> Optional[str]:
  """Restores the newest checkpoint in `directory`, if any; returns its path.

  Every worker restores from the chief's directory, not from the one it saves to (a non-chief's
  private one, which a restarted or replaced machine may have lost): workers that resumed from
  different steps would stall each other's collectives.
  """
  path = tf.train.latest_checkpoint(directory)
  if path:
    checkpoint.restore(path)
    logging.info("Resumed from %s.", path)
  return path


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
