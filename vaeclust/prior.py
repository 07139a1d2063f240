"""The learnable Gaussian-mixture prior p(c) p(z|c) of Variational Clustering."""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def inverse_softplus(x):
  return np.log(np.expm1(x))


class GaussianMixturePrior(keras.layers.Layer):
  """K diagonal Gaussians with learnable weights (softmax of logits), means and scales.

  Scales are softplus(raw) + floor so that no component can shrink to a point (a NaN source).
  The layer holds parameters only; distributions are built on demand, never returned by `call`.
  """

  def __init__(self, num_clusters: int, latent_dim: int, scale_floor: float = 1e-3, **kwargs):
    super().__init__(**kwargs)
    self.num_clusters, self.latent_dim, self.scale_floor = num_clusters, latent_dim, scale_floor
    self.logits = self.add_weight(name="logits", shape=(num_clusters,), initializer="zeros")
    self.means = self.add_weight(name="means", shape=(num_clusters, latent_dim),
                                 initializer=keras.initializers.RandomNormal(stddev=1.0))
    self.raw_scales = self.add_weight(
        name="raw_scales", shape=(num_clusters, latent_dim),
        initializer=keras.initializers.Constant(inverse_softplus(1.0 - scale_floor)))

  @property
  def scales(self):
    return tf.nn.softplus(self.raw_scales) + self.scale_floor

  def mixture(self) -> tfd.Distribution:
    """p(z) = Σ_k π_k N(z; μ_k, σ_k²)."""
    return tfd.MixtureSameFamily(
        tfd.Categorical(logits=self.logits),
        tfd.MultivariateNormalDiag(loc=self.means, scale_diag=self.scales))

  def component(self, k) -> tfd.Distribution:
    return tfd.MultivariateNormalDiag(loc=tf.gather(self.means, k),
                                      scale_diag=tf.gather(self.scales, k))

  def log_joint(self, z):
    """log p(c=k) + log p(z|c=k) for codes z [B, D] → [B, K]."""
    components = tfd.MultivariateNormalDiag(loc=self.means, scale_diag=self.scales)
    return tf.nn.log_softmax(self.logits) + components.log_prob(z[:, None, :])

  def assign(self, weights, means, variances):
    """Sets the mixture to given parameters (e.g. a GMM fitted to the latent codes)."""
    weights = np.maximum(np.asarray(weights, np.float64), 1e-6)
    self.logits.assign(np.log(weights / weights.sum()).astype(np.float32))
    self.means.assign(np.asarray(means, np.float32))
    scales = np.maximum(np.sqrt(np.asarray(variances, np.float64)), 2 * self.scale_floor)
    self.raw_scales.assign(inverse_softplus(scales - self.scale_floor).astype(np.float32))
