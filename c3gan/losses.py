"""C3-GAN loss terms, one value per example (float32) unless stated, so callers average them over
the global batch; batch-level terms say so."""
import math

import tensorflow as tf


def cosine_logits(embeddings, centroids, temperature: float):
  """s_k(x) = cos(h(x), l_k) / τ: [B, E] × [Y, E] → [B, Y]."""
  return tf.matmul(tf.math.l2_normalize(embeddings, axis=-1),
                   tf.math.l2_normalize(centroids, axis=-1), transpose_b=True) / temperature


def info_nce(embeddings, centroids, codes, temperature: float):
  """Cross-entropy of each fake image's own code among all centroids (InfoNCE with the other
  codes' centroids as negatives). codes: int [B]."""
  logits = cosine_logits(embeddings, centroids, temperature)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=logits)


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


def entropy(logits):
  """H(softmax(logits)) per row, from log_softmax (stable for confident rows)."""
  log_p = tf.nn.log_softmax(logits, axis=-1)
  return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def balance_entropy(mean_probabilities):
  """−H(mean_i p(·|x_i)) for the batch-mean posterior [Y] (batch-level, scalar): lowest when
  images spread evenly over the clusters."""
  p = tf.clip_by_value(mean_probabilities, 1e-12, 1.0)
  return tf.reduce_sum(p * tf.math.log(p))


def mode_seeking(images, twins, noises, twin_noises):
  """MSGAN's mode-seeking term for fakes and their twins (same code, other noise): 1 / (mean
  |x − x'| / mean |n − n'| + 1e-5) per pair; low when other noise draws another image.
  images, twins [B, H, W, C]; noises, twin_noises [B, N]."""
  image_distance = tf.reduce_mean(tf.abs(images - twins), axis=[1, 2, 3])
  noise_distance = tf.reduce_mean(tf.abs(noises - twin_noises), axis=-1)
  return 1.0 / (image_distance / noise_distance + 1e-5)


def hinge_real(logits):
  return tf.nn.relu(1.0 - logits)


def hinge_fake(logits):
  return tf.nn.relu(1.0 + logits)


def mask_area(masks, low: float, high: float):
  """max(0, low − m̄) + max(0, m̄ − high) with m̄ each mask's mean ([B, H, W, 1] → [B])."""
  area = tf.reduce_mean(masks, axis=[1, 2, 3])
  return tf.nn.relu(low - area) + tf.nn.relu(area - high)


def mask_binarization(masks):
  """Mean binary entropy of each mask's pixels, in bits as in the reference: pushes the mask to
  0/1."""
  m = tf.clip_by_value(masks, 1e-6, 1.0 - 1e-6)
  nats = -m * tf.math.log(m) - (1.0 - m) * tf.math.log(1.0 - m)
  return tf.reduce_mean(nats, axis=[1, 2, 3]) / math.log(2.0)
