"""tf.distribute set-up shared by both methods: devices, the strategy, and who may write files."""
import functools
import os
import tempfile
from typing import Tuple

from absl import logging
import keras
import tensorflow as tf

STRATEGIES = ("mirrored", "multi_worker", "one_device", "tpu")


def split_cpu(num_devices: int):
  """Splits the CPU into `num_devices` logical devices so MirroredStrategy runs that many replicas.

  Must run before TensorFlow initialises its devices (i.e. first thing in main), unless the CPU
  is split into enough devices already (a run in a process that has split it).
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  if num_devices <= 1 or len(tf.config.get_logical_device_configuration(cpu) or ()) >= num_devices:
    return
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


@functools.lru_cache(maxsize=None)
def mirrored(devices: Tuple[str, ...]) -> tf.distribute.MirroredStrategy:
  """One MirroredStrategy per set of devices in a process: a second one on the same devices would
  reuse collective keys the runtime has bound to the first one's tensors (a process that runs
  several times: a notebook, the tests)."""
  return tf.distribute.MirroredStrategy(list(devices))


def make_strategy(name: str, cpu_devices: int = 1) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `--strategy`; `mirrored` uses every GPU, else `cpu_devices`
  logical CPU devices."""
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")[:cpu_devices]
    strategy = mirrored(tuple(d.name for d in gpus) or tuple(d.name for d in cpus))
  elif name == "multi_worker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  elif name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
  else:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
  logging.info("Strategy %s with %d replica(s).", name, strategy.num_replicas_in_sync)
  return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True for the one process that writes checkpoints, summaries, evaluation and exports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and not has_chief


def writable_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """model_dir for the chief; a private temporary directory for every other worker."""
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(tempfile.gettempdir(), f"worker_{resolver.task_type}_{resolver.task_id}",
                      os.path.basename(os.path.normpath(model_dir)))


def from_first_replica(strategy: tf.distribute.Strategy, values):
  """The first replica's `values` (a list of arrays, or of per-replica values) on every replica
  of every worker, as numpy arrays.

  Whatever a worker computes outside the steps (the GMM fitted to the warm-up codes, say) can
  differ from the chief's: other hardware rounds otherwise, and a fit can then end elsewhere.
  Mirrored variables set from such values would stay different for good, because every worker
  adds the same all-reduced updates to them. Replica 0 lives on the chief.
  """
  def keep_first(*replica_values):
    return [cross_replica_concat(v[None])[0][0] for v in replica_values]

  results = tf.function(lambda *v: strategy.run(keep_first, args=v))(*values)
  return [strategy.experimental_local_results(r)[0].numpy() for r in results]


def num_replicas() -> int:
  """Replicas in sync, from inside a replica context (a step function)."""
  return tf.distribute.get_replica_context().num_replicas_in_sync


def global_batch_mean(values):
  """Mean of [B, K] values over the global batch (all-reduced across replicas), from inside a
  step function."""
  ctx = tf.distribute.get_replica_context()
  total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(values, axis=0))
  count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(values)[0], tf.float32))
  return total / count


def apply_gradients(optimizer, tape, loss, variables):
  """One optimizer step on d(loss)/d(variables), from inside a step function.

  Under mixed_float16 (a LossScaleOptimizer) the gradients are those of the dynamically scaled
  loss (tape.gradient's output_gradients), so that small float16 gradients do not underflow; the
  optimizer unscales them. It decides whether to skip a step (and lower the scale) from the first
  replica's gradients before they are all-reduced, so a non-finite gradient on another replica
  would reach the weights: if any replica's gradients are non-finite, every replica's are made
  NaN, and all skip the step together. Variables without a gradient are left out.
  """
  grads = tape.gradient(loss, variables, output_gradients=optimizer.scale_loss(tf.ones_like(loss)))
  context = tf.distribute.get_replica_context()
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and \
      context.num_replicas_in_sync > 1:
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    non_finite_replicas = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                             1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(non_finite_replicas > 0, float("nan"), 0.0)
    grads = [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]
  optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])


def cross_replica_concat(values):
  """([R·b, ...] the rows of every replica in replica order, first row of this replica's b rows),
  from inside a step function; differentiable (an all-reduce of zero-padded copies, as SimCLR
  gathers its negatives)."""
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return values, 0
  replicas, replica = context.num_replicas_in_sync, context.replica_id_in_sync_group
  padded = tf.scatter_nd([[replica]], values[None],
                         tf.concat([[replicas], tf.shape(values)], axis=0))
  gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, padded)
  return (tf.reshape(gathered, tf.concat([[-1], tf.shape(values)[1:]], axis=0)),
          replica * tf.shape(values)[0])
