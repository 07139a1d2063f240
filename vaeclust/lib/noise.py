"""Random numbers for a training step that do not depend on how the global batch is split.

A `tf.random.Generator` made under a tf.distribute strategy gives every replica its own stream, so
1 and N replicas would train on different noise. Here every replica draws the numbers of the whole
global batch from one stateless stream, keyed by (seed, step, stream, draw number), and keeps its
own rows. A run therefore reproduces across device and worker counts and with or without XLA, and
because the noise is a function of the step, a resumed run draws what the uninterrupted one would.
"""
import tensorflow as tf

# One algorithm everywhere: the default picks per device, so XLA or a GPU would draw other numbers.
ALGORITHM = "philox"


class BatchNoise:
  """Per-example random numbers for one replica's share of one step's global batch.

  Replica r of R holds rows [r·b, (r+1)·b) of the global batch of R·b examples (every replica
  gets the same per-replica batch b, as training batches drop their remainder).
  """

  def __init__(self, seed: int, step, batch_size, stream: int = 0):
    """`batch_size`: this replica's (local) batch; `step` a scalar (e.g. optimizer.iterations);
    `stream` tells apart independent uses of the same step (e.g. several augmented views)."""
    context = tf.distribute.get_replica_context()  # None in a cross-replica context
    replicas = context.num_replicas_in_sync if context else 1
    replica = context.replica_id_in_sync_group if context else 0
    self.batch_size = tf.cast(batch_size, tf.int32)
    self.global_batch_size = self.batch_size * replicas
    self._start = self.batch_size * tf.cast(replica, tf.int32)
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    self._key = tf.random.experimental.stateless_fold_in(key, stream, alg=ALGORITHM)
    self._draws = 0

  def rows(self, values):
    """This replica's rows of a [global batch, ...] tensor."""
    return values[self._start:self._start + self.batch_size]

  def uniform(self, shape=(), minval=0.0, maxval=1.0, dtype=tf.float32):
    """[local batch, *shape] uniform numbers in [minval, maxval) (integers: minval ≤ n < maxval)."""
    fraction = self.rows(self._open_unit_interval(self._global(shape)))
    if dtype.is_integer:
      return minval + tf.minimum(tf.cast(fraction * (maxval - minval), dtype), maxval - minval - 1)
    return tf.cast(minval + fraction * (maxval - minval), dtype)

  def normal(self, shape=()):
    """[local batch, *shape] standard normal float32 numbers (the inverse normal CDF of uniform
    numbers)."""
    return tf.math.ndtri(self.uniform(shape))

  def shared_uniform(self, shape):
    """Uniform (0, 1) numbers of `shape`, the same on every replica (not per example)."""
    return self._open_unit_interval(shape)

  def _open_unit_interval(self, shape):
    """Uniform numbers from random 32-bit integers: TensorFlow's float samplers give other
    numbers under XLA than in its own kernels, its integer bits do not."""
    return open_unit_interval(tf.random.stateless_uniform(
        shape, self._seed(), minval=None, maxval=None, dtype=tf.uint32, alg=ALGORITHM))

  def _global(self, shape):
    return tf.concat([[self.global_batch_size], tf.constant(shape, tf.int32, [len(shape)])], 0)

  def _seed(self):
    self._draws += 1  # counts draws at trace time: the same sequence on every replica and step
    return tf.random.experimental.stateless_fold_in(self._key, self._draws, alg=ALGORITHM)


def open_unit_interval(bits):
  """Random uint32 → float32 strictly inside (0, 1), on a grid of 2²³ points centred in their
  cells: with 24 bits the top point, 1 − 2⁻²⁵, is not a float32 and rounds to 1, where the
  inverse normal CDF and Gumbel quantile are infinite."""
  return (tf.cast(tf.bitwise.right_shift(bits, 9), tf.float32) + 0.5) * 2.0 ** -23
