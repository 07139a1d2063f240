"""The learnable Gaussian-mixture prior p(c) p(z|c) of Variational Clustering."""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors
COVARIANCES = ("full", "diag")


class GaussianMixturePrior(keras.layers.Layer):
  """K Gaussians with learnable weights (softmax of logits), means and scales.

  Each component's scale is a lower-triangular Cholesky factor ("full" covariance) or a diagonal
  ("diag"); its diagonal is softplus(raw) + floor so no component can shrink to a point. The
  layer holds parameters only; distributions are built on demand, never returned by `call`.
  """

  def __init__(self, num_clusters: int, latent_dim: int, covariance: str = "full",
               scale_floor: float = 1e-3, **kwargs):
    super().__init__(**kwargs)
    if covariance not in COVARIANCES:
      raise ValueError(f"Unknown covariance {covariance!r}; choose one of {COVARIANCES}.")
    self.num_clusters, self.latent_dim = num_clusters, latent_dim
    self.covariance, self.scale_floor = covariance, scale_floor
    self._to_tril = tfb.FillScaleTriL(diag_shift=scale_floor)  # softplus diagonal + floor
    # autocast=False: float32 even inside a mixed-precision model's call.
    self.logits = self.add_weight(name="logits", shape=(num_clusters,), initializer="zeros",
                                  autocast=False)
    self.means = self.add_weight(name="means", shape=(num_clusters, latent_dim),
                                 initializer=keras.initializers.RandomNormal(stddev=1.0),
                                 autocast=False)
    identity = np.broadcast_to(np.eye(latent_dim, dtype=np.float32), (num_clusters, latent_dim, latent_dim))
    self.raw_scales = self.add_weight(name="raw_scales", shape=self._raw_from_tril(identity).shape,
                                      initializer=keras.initializers.Constant(self._raw_from_tril(identity)),
                                      autocast=False)

  def _raw_from_tril(self, tril: np.ndarray) -> np.ndarray:
    if self.covariance == "full":
      return self._to_tril.inverse(tf.constant(tril, tf.float32)).numpy()
    diagonal = np.maximum(np.diagonal(tril, axis1=-2, axis2=-1) - self.scale_floor, 1e-6)
    return np.log(np.expm1(diagonal)).astype(np.float32)

  @property
  def scale_tril(self):
    """Cholesky factors of the component covariances, [K, D, D]."""
    if self.covariance == "full":
      return self._to_tril.forward(self.raw_scales)
    return tf.linalg.diag(tf.nn.softplus(self.raw_scales) + self.scale_floor)

  def components(self) -> tfd.Distribution:
    """p(z|c) for every c, batch shape [K]."""
    return tfd.MultivariateNormalTriL(loc=self.means, scale_tril=self.scale_tril)

  def mixture(self) -> tfd.Distribution:
    """p(z) = Σ_k π_k N(z; μ_k, Σ_k)."""
    return tfd.MixtureSameFamily(tfd.Categorical(logits=self.logits), self.components())

  def log_joint(self, z):
    """log p(c=k) + log p(z|c=k) for codes z [B, D] → [B, K]."""
    return tf.nn.log_softmax(self.logits) + self.components().log_prob(z[:, None, :])

  def assign(self, weights, means, covariances):
    """Sets the mixture to given parameters (e.g. a GMM fitted to the codes); `covariances` are
    [K, D, D] matrices, or [K, D] variances."""
    weights = np.maximum(np.asarray(weights, np.float64), 1e-6)
    self.logits.assign(np.log(weights / weights.sum()).astype(np.float32))
    self.means.assign(np.asarray(means, np.float32))
    covariances = np.asarray(covariances, np.float64)
    if covariances.ndim == 2:
      covariances = np.einsum("kd,de->kde", covariances, np.eye(covariances.shape[1]))
    floor = (2 * self.scale_floor) ** 2 * np.eye(covariances.shape[-1])
    self.raw_scales.assign(self._raw_from_tril(np.linalg.cholesky(covariances + floor).astype(np.float32)))
