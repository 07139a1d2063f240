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
