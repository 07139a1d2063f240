"""SimCLR's NT-Xent loss with the negatives of the whole global batch, on any number of replicas:
C3-GAN's discriminator and VC's contrastive warm-up both use it."""
import tensorflow as tf

from vaeclust.lib import distribute


def nt_xent(first, second, temperature: float, all_first=None, all_second=None, offset=0):
  """SimCLR's NT-Xent: for each of the 2b views [first; second] ([b, E] each), the other view of
  the same image against every other view of the global batch [all_first; all_second] ([N, E]
  each, this replica's images at rows offset … offset + b − 1; default: the local batch alone),
  cosine similarity / τ. Returns [2b]."""
  if all_first is None:
    all_first, all_second, offset = first, second, 0
  anchors = tf.math.l2_normalize(tf.concat([first, second], axis=0), axis=-1)
  candidates = tf.math.l2_normalize(tf.concat([all_first, all_second], axis=0), axis=-1)
  n = tf.shape(all_first)[0]
  rows = offset + tf.range(tf.shape(first)[0])
  similarity = tf.matmul(anchors, candidates, transpose_b=True) / temperature
  itself = tf.equal(tf.range(2 * n)[None, :], tf.concat([rows, n + rows], axis=0)[:, None])
  similarity = tf.where(itself, tf.constant(-1e9, similarity.dtype), similarity)
  positives = tf.concat([n + rows, rows], axis=0)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=similarity)


def global_nt_xent(first, second, temperature: float):
  """nt_xent of a replica's two views [b, E] against the views of every replica (gathered
  differentiably), so that R replicas of b images train as one of R·b. Returns [2b]."""
  dim = first.shape[-1]
  both, offset = distribute.cross_replica_concat(tf.concat([first, second], axis=-1))
  return nt_xent(first, second, temperature, both[:, :dim], both[:, dim:], offset)
