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
               checkpoint_manager: tf.train.CheckpointManager,
               summary_writer: tf.summary.SummaryWriter, global_batch_size: int,
               log_every: int = 100, checkpoint_every: int = 1000, jit_compile: bool = False):
    self.strategy = strategy
    self.step_counter = step_counter
    self.manager = checkpoint_manager
    self.writer = summary_writer
    self.global_batch_size = global_batch_size
    self.log_every = max(1, log_every)
    self.checkpoint_every = max(1, checkpoint_every)
    self.jit_compile = jit_compile

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
      return {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
              for name, value in logs.items()}

    logging.info("%s: steps %d → %d (global batch %d).", phase, start, until_step,
                 self.global_batch_size)
    started, last_time, last_step = time.time(), time.time(), start
    while self.step < until_step:
      step = self.step
      num_steps = min(until_step, _next_multiple(step, self.log_every),
                      _next_multiple(step, self.checkpoint_every)) - step
      for _ in range(num_steps):
        logs = run_step(iterator)
      logs = {name: float(value) for name, value in logs.items()}
      step = self.step
      if not all(map(_finite, logs.values())):
        raise FloatingPointError(f"Non-finite loss at step {step}: {logs}")
      if step % self.log_every == 0 or step == until_step:
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


def _finite(value: float) -> bool:
  return value == value and abs(value) != float("inf")


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
