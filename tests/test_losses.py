"""The objective's terms against TensorFlow Probability and Monte-Carlo estimates."""
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaeclust import losses

tfd = tfp.distributions


def _normal(shape, scale=1.0, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(size=shape) * scale, tf.float32)


def _tril(shape, seed):
  """Random lower-triangular factors with a positive diagonal."""
  raw = np.tril(np.random.default_rng(seed).normal(size=shape) * 0.5)
  idx = np.arange(shape[-1])
  raw[..., idx, idx] = np.exp(raw[..., idx, idx])
  return tf.constant(raw, tf.float32)


def test_gaussian_kl_matches_tfp_for_full_and_diagonal_priors():
  mean_q, mean_p = _normal([5, 4], seed=1), _normal([5, 4], seed=2)
  scale_q = tf.exp(_normal([5, 4], 0.5, 3))
  for scale_tril in (_tril([5, 4, 4], 4), tf.linalg.diag(tf.exp(_normal([5, 4], 0.5, 5)))):
    expected = tfd.kl_divergence(tfd.MultivariateNormalDiag(mean_q, scale_q),
                                 tfd.MultivariateNormalTriL(mean_p, scale_tril))
    np.testing.assert_allclose(losses.gaussian_kl(mean_q, scale_q, mean_p, scale_tril), expected,
                               rtol=1e-4, atol=1e-4)


def test_expected_gaussian_kl_matches_monte_carlo():
  """E_{c~q(c|x)} E_{z~q(z|x,c)} [log q(z|x,c) − log p(z|c)] by sampling c and z."""
  batch, k, d = 3, 4, 2
  probs = tf.nn.softmax(_normal([batch, k], seed=5))
  mean_q, scale_q = _normal([batch, k, d], seed=6), tf.exp(_normal([batch, k, d], 0.3, 7))
  prior_means, prior_tril = _normal([k, d], seed=8), _tril([k, d, d], 9)
  exact = losses.expected_gaussian_kl(probs, mean_q, scale_q, prior_means, prior_tril)

  n = 200_000
  c = tf.transpose(tfd.Categorical(probs=probs).sample(n, seed=(1, 2)))  # [B, n]
  q = tfd.MultivariateNormalDiag(tf.gather(mean_q, c, batch_dims=1),
                                 tf.gather(scale_q, c, batch_dims=1))
  p = tfd.MultivariateNormalTriL(tf.gather(prior_means, c), tf.gather(prior_tril, c))
  z = q.sample(seed=(3, 4))
  estimate = tf.reduce_mean(q.log_prob(z) - p.log_prob(z), axis=1)
  np.testing.assert_allclose(exact, estimate, rtol=0.03, atol=0.03)


def test_categorical_kl_matches_tfp():
  logits_q, logits_p = _normal([6, 5], seed=10), _normal([1, 5], seed=11)
  expected = tfd.kl_divergence(tfd.Categorical(logits=logits_q), tfd.Categorical(logits=logits_p))
  np.testing.assert_allclose(losses.categorical_kl(logits_q, logits_p), expected, rtol=1e-5, atol=1e-6)


def test_balance_kl_is_zero_only_for_even_use():
  assert abs(float(losses.balance_kl(tf.fill([4], 0.25)))) < 1e-6
  collapsed = float(losses.balance_kl(tf.constant([1.0, 0.0, 0.0, 0.0])))
  np.testing.assert_allclose(collapsed, np.log(4.0), rtol=1e-5)


def test_consistency_ce_does_not_move_the_target():
  target, logits = _normal([3, 5], seed=12), _normal([3, 5], seed=13)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([target, logits])
    loss = tf.reduce_sum(losses.consistency_ce(target, logits))
  assert tape.gradient(loss, target) is None
  assert float(tf.reduce_max(tf.abs(tape.gradient(loss, logits)))) > 0


def test_reconstruction_nlls_match_tfp():
  logits, targets = _normal([2, 3, 3, 1], seed=14), tf.random.uniform([2, 3, 3, 1], seed=1)
  bernoulli = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 3)
  np.testing.assert_allclose(losses.bernoulli_nll(logits, targets), -bernoulli.log_prob(targets),
                             rtol=1e-5)
  log_scale = tf.constant([-0.7])
  gaussian = tfd.Independent(tfd.Normal(logits, tf.exp(log_scale)), 3)
  np.testing.assert_allclose(losses.gaussian_nll(logits, log_scale, targets),
                             -gaussian.log_prob(targets), rtol=1e-5)
