"""Per-example terms of the Variational Clustering objective (negative ELBO and its guards).

All functions return one value per example (or a scalar for batch-level terms) in float32, so the
caller decides how to average across replicas.
"""
import math

import tensorflow as tf


def gaussian_kl(mean_q, scale_q, mean_p, scale_tril_p):
  """KL(N(mean_q, diag(scale_q²)) || N(mean_p, L Lᵀ)) with L = scale_tril_p, in closed form.

  Shapes broadcast: mean_q/scale_q/mean_p [..., D], scale_tril_p [..., D, D].
  """
  dim = tf.shape(mean_q)[-1]
  inverse = tf.linalg.triangular_solve(scale_tril_p, tf.eye(dim, batch_shape=tf.shape(scale_tril_p)[:-2]))
  whitened = tf.linalg.matvec(inverse, mean_p - mean_q)
  trace = tf.reduce_sum(tf.square(scale_q) * tf.reduce_sum(tf.square(inverse), axis=-2), axis=-1)
  log_det_p = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril_p)), axis=-1)
  log_det_q = 2.0 * tf.reduce_sum(tf.math.log(scale_q), axis=-1)
  return 0.5 * (trace + tf.reduce_sum(tf.square(whitened), axis=-1) - tf.cast(dim, mean_q.dtype)
                + log_det_p - log_det_q)


def expected_gaussian_kl(cluster_probs, mean_q, scale_q, prior_means, prior_scale_tril):
  """E_{c~q(c|x)} KL(q(z|x,c) || p(z|c)), exact over the K components.

  cluster_probs [B, K]; mean_q/scale_q [B, K, D] (q(z|x,c=k) for every k); prior_means [K, D];
  prior_scale_tril [K, D, D].
  """
  kl_per_component = gaussian_kl(mean_q, scale_q, prior_means[None], prior_scale_tril[None])
  return tf.reduce_sum(cluster_probs * kl_per_component, axis=-1)


def categorical_kl(logits_q, logits_p):
  """KL(Cat(softmax(logits_q)) || Cat(softmax(logits_p))) over the last axis."""
  log_q = tf.nn.log_softmax(logits_q, axis=-1)
  log_p = tf.nn.log_softmax(logits_p, axis=-1)
  return tf.reduce_sum(tf.exp(log_q) * (log_q - log_p), axis=-1)


def balance_kl(mean_probs):
  """KL(mean_batch q(c|x) || uniform) = log K − H(mean q): zero only when clusters are used evenly."""
  num_clusters = tf.cast(tf.shape(mean_probs)[-1], mean_probs.dtype)
  entropy = -tf.reduce_sum(mean_probs * tf.math.log(mean_probs + 1e-8), axis=-1)
  return tf.math.log(num_clusters) - entropy


def consistency_ce(target_logits, logits):
  """Cross-entropy of q(c|aug x) against q(c|x) treated as a fixed target."""
  target = tf.stop_gradient(tf.nn.softmax(target_logits, axis=-1))
  return -tf.reduce_sum(target * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def bernoulli_nll(logits, targets):
  """−log p(x|z) for pixels in [0, 1] under independent Bernoullis, summed over the image."""
  nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
  return tf.reduce_sum(nll, axis=[1, 2, 3])


def gaussian_nll(means, log_scale, targets):
  """−log p(x|z) under N(means, exp(log_scale)²) per pixel, summed over the image."""
  log_scale = tf.broadcast_to(log_scale, tf.shape(means))
  nll = (0.5 * tf.square((targets - means) * tf.exp(-log_scale)) + log_scale
         + 0.5 * math.log(2.0 * math.pi))
  return tf.reduce_sum(nll, axis=[1, 2, 3])
