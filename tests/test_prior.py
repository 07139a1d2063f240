"""The mixture prior: its densities against TFP's mixture, and initialisation from a GMM."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn import mixture

from vaeclust import prior as prior_lib


@pytest.mark.parametrize("covariance", prior_lib.COVARIANCES)
def test_assign_reproduces_a_fitted_gmm(covariance):
  rng = np.random.default_rng(0)
  codes = np.concatenate([rng.normal(size=(200, 3)) @ rng.normal(size=(3, 3)) + 5 * k
                          for k in range(3)])
  gmm = mixture.GaussianMixture(3, covariance_type=covariance, random_state=0).fit(codes)
  prior = prior_lib.GaussianMixturePrior(3, 3, covariance)
  prior.assign(gmm.weights_, gmm.means_, gmm.covariances_)
  z = tf.constant(codes[::37], tf.float32)
  np.testing.assert_allclose(prior.mixture().log_prob(z), gmm.score_samples(codes[::37]), rtol=1e-3, atol=1e-3)
  log_joint = prior.log_joint(z).numpy()
  responsibilities = np.exp(log_joint - log_joint.max(1, keepdims=True))
  responsibilities /= responsibilities.sum(1, keepdims=True)
  np.testing.assert_allclose(responsibilities, gmm.predict_proba(codes[::37]), atol=1e-3)


def test_scales_never_fall_below_the_floor():
  prior = prior_lib.GaussianMixturePrior(2, 2, "full", scale_floor=0.01)
  prior.raw_scales.assign(tf.fill(prior.raw_scales.shape, -50.0))
  assert float(tf.reduce_min(tf.linalg.diag_part(prior.scale_tril))) >= 0.01 - 1e-7
