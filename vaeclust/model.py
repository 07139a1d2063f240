"""Variational Clustering: a VAE whose prior is a learnable Gaussian mixture.

Latent = a cluster variable c and a continuous code z. The encoder gives q(c|x) (logits) and
q(z|x,c) = N(m(x) + A·c, softplus(s(x) + B·c)); during training c is a relaxed one-hot
(Gumbel-softmax) sample with an annealed temperature, so the discrete and the continuous parts are
reparametrized together and gradients flow end to end. The prior p(c)p(z|c) is a learnable
Gaussian mixture trained jointly by the same optimizer. Cluster of an image = argmax q(c|x).

Training has an optional warm-up inside the same run: plain autoencoder steps on m(x), after
which the mixture is initialised from a GMM fitted to the codes (`init_prior`, `prior_init`).
"""
import dataclasses
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaeclust import losses
from vaeclust import networks
from vaeclust import prior as prior_lib
from vaeclust.lib import augment
from vaeclust.lib import contrastive as contrastive_lib
from vaeclust.lib import distribute
from vaeclust.lib import hparams
from vaeclust.lib import noise as noise_lib

tfd = tfp.distributions


_field = hparams.field


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyper-parameters of the model and its objective, each with its flag (same name, in
  vaeclust.main)."""
  image_size: int
  channels: int
  num_clusters: int
  latent_dim: int = _field(10, "Dimension of the continuous code z.", lambda v: v >= 1,
                           "--latent_dim must be at least 1.")
  conv_filters: Tuple[int, ...] = _field(
      (32, 64, 128), "Filters of the strided encoder convolutions (each halves the image; the "
      "decoder mirrors them).", lambda v: len(v) >= 1 and min(v) > 0,
      "--conv_filters must be a comma-separated list of positive integers.")
  hidden_units: int = _field(256, "Width of the dense layer of encoder and decoder.",
                             lambda v: v >= 1, "--hidden_units must be at least 1.")
  # "auto" becomes bernoulli for 1 channel, gaussian (learned per-channel scale) otherwise
  likelihood: str = _field("auto", "p(x|z): bernoulli for grey images in [0, 1], gaussian "
                           "(learned scale) for colour; auto picks by channels.",
                           choices=("auto", "bernoulli", "gaussian"))
  prior_covariance: str = _field("full", "Covariance of each mixture component p(z|c): full "
                                 "(Cholesky factor) or diagonal.", choices=("full", "diag"))
  scale_floor: float = _field(1e-3, "Smallest standard deviation of q(z|x,c) and p(z|c).",
                              lambda v: v > 0, "--scale_floor must be > 0.")
  temperature_start: float = _field(1.0, "Gumbel-softmax temperature after the warm-up.")
  temperature_end: float = _field(0.5, "Lowest Gumbel-softmax temperature.", lambda v: v > 0,
                                  "--temperature_end must be > 0.")
  temperature_decay_steps: int = _field(
      5000, "Steps for the temperature to fall by a factor e (exponential decay).")
  kl_warmup_steps: int = _field(0, "Steps of a linear 0→1 ramp of the KL weight after the "
                                "warm-up (0: full weight at once).")
  learning_rate: float = _field(1e-3, "Adam learning rate (encoder, decoder and prior).",
                                hparams.positive, "--learning_rate must be > 0.")
  # Adam's moment estimates at the switch come from the warm-up's loss, and the prior's are empty
  # (its first updates are several times the learning rate): full-size ELBO steps at once can
  # reshuffle within tens of steps the clusters the GMM initialisation found.
  learning_rate_ramp_steps: int = _field(
      0, "Steps of a linear 0→1 ramp of the learning rate after the warm-up (0: the full rate at "
      "once).", hparams.non_negative, "--learning_rate_ramp_steps must be >= 0.")
  balance_weight: float = _field(0.0, "Weight of KL(batch-mean q(c|x) ‖ uniform), which stops "
                                 "images collapsing into few clusters.", lambda v: v >= 0,
                                 "--balance_weight must be >= 0.")
  consistency_weight: float = _field(0.0, "Weight of the cross-entropy between q(c|x) and "
                                     "q(c|view of x), views as for NT-Xent (affine warps of grey "
                                     "images; crops, flips, colour jitter of colour ones); > 0 "
                                     "also warms up on such views.")
  pretrain_steps: int = _field(0, "Warm-up autoencoder steps, after which the mixture prior is "
                               "initialised from a GMM fitted to the codes (0: no warm-up).")
  warmup_contrastive_weight: float = _field(
      0.0, "Weight of NT-Xent (SimCLR) between the codes m(x) of two augmented views of each image "
      "in the warm-up: codes that place an image near its augmented copies, so the mixture fitted "
      "to them groups images by content more than by pixel overlap (0: a plain autoencoder). "
      "Views: random affine warps for grey images, crop + flip + colour jitter + grey for colour.",
      hparams.non_negative, "--warmup_contrastive_weight must be >= 0.")
  contrastive_weight: float = _field(
      0.0, "Weight of the same NT-Xent in VC training after the warm-up: keeps the codes of an "
      "image's views together while the ELBO reshapes the encoder (0: none).",
      hparams.non_negative, "--contrastive_weight must be >= 0.")
  contrastive_temperature: float = _field(0.5, "τ of the NT-Xent terms.", hparams.positive,
                                          "--contrastive_temperature must be > 0.")
  view_crop_scale: Tuple[float, float] = _field(
      (0.3, 1.0), "Area range of the random crop of colour images' contrastive views.",
      hparams.ordered_pair(0, 1, open_low=True),
      "--view_crop_scale must be low,high with 0 < low <= high <= 1.")
  # When the prior is initialised: q(z|x,c)'s scale is set to this fraction of the prior
  # components' own spread (0: left as the warm-up leaves it, i.e. untrained; see init_prior).
  initial_posterior_scale: float = _field(
      0.1, "After the warm-up, start the scale of q(z|x,c) at this fraction of the fitted "
      "components' within-cluster std (0: leave the untrained scale head as it is, which can be "
      "much wider than the components and pull images into the widest one).", lambda v: v >= 0,
      "--initial_posterior_scale must be >= 0.")
  # "prior+head": q(c|x) logits = log p(c | z = m(x)) under the mixture prior + a learned head
  # (zero at the start, so a GMM-initialised prior clusters at once); "head": the head alone.
  cluster_posterior: str = _field("prior+head", "q(c|x) logits: log p(c | z=m(x)) under the "
                                  "mixture prior plus a learned head (starts at zero), or the "
                                  "head alone.", choices=("prior+head", "head"))
  augment_scale: Tuple[float, float] = _field(
      (0.9, 1.1), "Range of the random zoom of augmentations.",
      lambda v: len(v) == 2 and 0 < v[0] <= v[1],
      "--augment_scale must be two numbers low,high with 0 < low <= high.")
  augment_rotation: float = _field(10.0, "Largest random rotation of augmentations, degrees.")
  augment_shift: float = _field(0.08, "Largest random shift of augmentations, image fraction.")
  seed: int = 0

  @property
  def num_outputs(self) -> int:
    """How many cluster probabilities the model gives an image."""
    return self.num_clusters

  def __post_init__(self):
    if self.likelihood == "auto":
      object.__setattr__(self, "likelihood", "bernoulli" if self.channels == 1 else "gaussian")


class VariationalClustering(keras.Model):
  """The encoder, decoder and mixture prior, with warm-up and ELBO train steps."""

  def __init__(self, config: Config, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    c = config
    self.encoder = networks.conv_encoder(c.image_size, c.channels, c.conv_filters, c.hidden_units)
    self.cluster_logits = keras.layers.Dense(
        c.num_clusters, name="cluster_logits",
        kernel_initializer="zeros" if c.cluster_posterior == "prior+head" else "glorot_uniform")
    self.code_mean = keras.layers.Dense(c.latent_dim, name="code_mean")
    self.code_raw_scale = keras.layers.Dense(c.latent_dim, name="code_raw_scale")
    # How the cluster shifts q(z|x,c); zero at the start so warm-up trains a plain autoencoder.
    self.cluster_mean_shift = keras.layers.Dense(c.latent_dim, use_bias=False, kernel_initializer="zeros",
                                                 name="cluster_mean_shift")
    self.cluster_scale_shift = keras.layers.Dense(c.latent_dim, use_bias=False,
                                                  kernel_initializer="zeros", name="cluster_scale_shift")
    self.decoder = networks.conv_decoder(c.latent_dim, c.image_size, c.channels, c.conv_filters,
                                         c.hidden_units)
    self.prior = prior_lib.GaussianMixturePrior(c.num_clusters, c.latent_dim, c.prior_covariance,
                                                c.scale_floor, name="prior")
    if c.likelihood not in ("bernoulli", "gaussian"):
      raise ValueError(f"Unknown likelihood {c.likelihood!r}.")
    if c.cluster_posterior not in ("prior+head", "head"):
      raise ValueError(f"Unknown cluster_posterior {c.cluster_posterior!r}.")
    self.pixel_log_scale = self.add_weight(name="pixel_log_scale", shape=(c.channels,),
                                           initializer="zeros", trainable=c.likelihood == "gaussian",
                                           autocast=False)
    self.prior_initialized = self.add_weight(name="prior_initialized", shape=(), dtype="bool",
                                             initializer="zeros", trainable=False)
    self.build((None, c.image_size, c.image_size, c.channels))

  def build(self, input_shape):
    """Creates every variable up front, as the optimizer and checkpoints need them all."""
    c = self.config
    for head in (self.cluster_logits, self.code_mean, self.code_raw_scale):
      head.build((None, c.hidden_units))
    for shift in (self.cluster_mean_shift, self.cluster_scale_shift):
      shift.build((None, c.num_clusters))
    self.built = True

  # ----- inference -------------------------------------------------------------------------------

  def call(self, images, training=False):
    """images float [B, H, W, C] in [0, 1] → cluster logits/probabilities, the code m(x) and
    `fit`, how well the model explains each image (see `fit`)."""
    features = self.encoder(images, training=training)
    logits = self.cluster_posterior_logits(features)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits),
            "embedding": tf.cast(self.code_mean(features), tf.float32),
            "fit": self.fit(images, features, logits)}

  def embed(self, images):
    """The code m(x) alone (call's `embedding`, without the decoder pass that `fit` needs)."""
    return tf.cast(self.code_mean(self.encoder(images)), tf.float32)

  def fit(self, images, features, logits):
    """The ELBO per pixel value (nats, higher is better) at the posterior mean: −(−log p(x|z̄) +
    E_q(c|x) KL(q(z|x,c) ‖ p(z|c)) + KL(q(c|x) ‖ p(c))) / pixels with z̄ the mean of q(z|x,c) for
    c = q(c|x). Images unlike the training data reconstruct badly and fall in no component: low."""
    probs = tf.nn.softmax(logits)
    mean, _ = self.posterior(features, probs)
    # under a mixed-precision policy Keras hands call() 16-bit images; the terms are float32
    reconstruction = self.reconstruction_nll(self.decoder(mean), tf.cast(images, tf.float32))
    means_k, scales_k = self.posterior_every_cluster(features)
    kl_z = losses.expected_gaussian_kl(probs, means_k, scales_k, self.prior.means,
                                       self.prior.scale_tril)
    kl_c = losses.categorical_kl(logits, self.prior.logits[None])
    pixels = float(self.config.image_size ** 2 * self.config.channels)
    return -(reconstruction + kl_z + kl_c) / pixels

  def cluster_posterior_logits(self, features):
    """Logits of q(c|x) from encoder features (see Config.cluster_posterior)."""
    logits = tf.cast(self.cluster_logits(features), tf.float32)
    if self.config.cluster_posterior == "prior+head":
      code = tf.cast(self.code_mean(features), tf.float32)
      log_joint = self.prior.log_joint(code)  # log p(c) p(z=m(x)|c), [B, K]
      logits += log_joint - tf.reduce_logsumexp(log_joint, axis=-1, keepdims=True)
    return logits

  def temperature(self):
    """Gumbel-softmax temperature: exponential decay from start to end after the warm-up."""
    c = self.config
    steps = tf.maximum(tf.cast(self.optimizer.iterations, tf.float32) - c.pretrain_steps, 0.0)
    decayed = c.temperature_start * tf.exp(-steps / max(c.temperature_decay_steps, 1))
    return tf.maximum(decayed, c.temperature_end)

  def kl_weight(self):
    return self._ramp_after_warmup(self.config.kl_warmup_steps)

  def learning_rate(self):
    """The ELBO steps' learning rate (the warm-up's is the full rate)."""
    return self.config.learning_rate * self._ramp_after_warmup(self.config.learning_rate_ramp_steps)

  def _ramp_after_warmup(self, length: int):
    """0→1 over the `length` ELBO steps after the warm-up (1 from the first with length 0)."""
    steps = tf.cast(self.optimizer.iterations, tf.float32) - self.config.pretrain_steps
    return tf.clip_by_value((steps + 1.0) / max(length, 1), 0.0, 1.0)

  def posterior(self, features, clusters):
    """Mean and scale of q(z|x,c) for one relaxed/one-hot c [B, K] per image → [B, D] each."""
    mean, raw_scale = self._code_params(features)
    return self._shifted(mean, raw_scale, clusters)

  def posterior_every_cluster(self, features):
    """Mean and scale of q(z|x,c=k) for every k → [B, K, D] each."""
    mean, raw_scale = self._code_params(features)
    return self._shifted(mean[:, None], raw_scale[:, None], tf.eye(self.config.num_clusters))

  def _code_params(self, features):
    return (tf.cast(self.code_mean(features), tf.float32),
            tf.cast(self.code_raw_scale(features), tf.float32))

  def _shifted(self, mean, raw_scale, clusters):
    mean = mean + tf.cast(self.cluster_mean_shift(clusters), tf.float32)
    raw_scale = raw_scale + tf.cast(self.cluster_scale_shift(clusters), tf.float32)
    return mean, tf.nn.softplus(raw_scale) + self.config.scale_floor

  def reconstruction_nll(self, decoded, images):
    decoded = tf.cast(decoded, tf.float32)
    if self.config.likelihood == "bernoulli":
      return losses.bernoulli_nll(decoded, images)
    return losses.gaussian_nll(decoded, self.pixel_log_scale, images)

  def decode_mean(self, z):
    """E[x|z] in [0, 1] for pictures."""
    decoded = tf.cast(self.decoder(z), tf.float32)
    return tf.sigmoid(decoded) if self.config.likelihood == "bernoulli" else tf.clip_by_value(decoded, 0., 1.)

  # ----- objective -------------------------------------------------------------------------------

  def objective_terms(self, images, training: bool, noise: noise_lib.BatchNoise):
    """Per-example negative-ELBO terms, plus the guards against cluster collapse."""
    c = self.config
    features = self.encoder(images, training=training)
    logits = self.cluster_posterior_logits(features)
    probs = tf.nn.softmax(logits)
    clusters = relaxed_one_hot_sample(logits, self.temperature(), noise)
    mean, scale = self.posterior(features, clusters)
    z = mean + scale * noise.normal([c.latent_dim])
    reconstruction = self.reconstruction_nll(self.decoder(z, training=training), images)

    means_k, scales_k = self.posterior_every_cluster(features)
    kl_z = losses.expected_gaussian_kl(probs, means_k, scales_k, self.prior.means,
                                       self.prior.scale_tril)
    kl_c = losses.categorical_kl(logits, self.prior.logits[None])
    terms = {"reconstruction": reconstruction, "kl_z": kl_z, "kl_c": kl_c}
    if c.consistency_weight:
      # the NT-Xent terms' views: for colour images q(c|x) must then not follow the colours
      augmented = self.contrastive_view(images, noise)
      logits_aug = self.cluster_posterior_logits(self.encoder(augmented, training=training))
      terms["consistency"] = losses.consistency_ce(logits, logits_aug)
    return terms, probs

  def augment(self, images, noise: noise_lib.BatchNoise):
    c = self.config
    return augment.random_affine(images, noise, c.augment_scale, c.augment_rotation, c.augment_shift)

  def step_noise(self, images):
    """The noise of this training step for a replica's batch (see noise_lib: the same on any
    number of replicas)."""
    return noise_lib.BatchNoise(self.config.seed, self.optimizer.iterations, tf.shape(images)[0])

  def train_step(self, data):
    """One ELBO step on a replica's batch; losses are averaged over the global batch."""
    images = data["image"]
    c = self.config
    with tf.GradientTape() as tape:
      noise = self.step_noise(images)
      terms, probs = self.objective_terms(images, training=True, noise=noise)
      per_example = terms["reconstruction"] + self.kl_weight() * (terms["kl_z"] + terms["kl_c"])
      if "consistency" in terms:
        per_example += c.consistency_weight * terms["consistency"]
      loss = tf.nn.compute_average_loss(per_example)
      if c.contrastive_weight:
        contrastive = self.views_nt_xent(self.code_mean_of(self.contrastive_view(images, noise)),
                                         images, noise)
        loss += c.contrastive_weight * tf.nn.compute_average_loss(contrastive)
      mean_probs = distribute.global_batch_mean(probs)
      balance = losses.balance_kl(mean_probs)
      if c.balance_weight:
        # Each replica adds the same global term; gradients of the all-reduce sum them back once.
        loss += c.balance_weight * balance / distribute.num_replicas()
    # the optimizer's rate variable (checkpointed, as with a constant rate) follows the ramp
    self.optimizer.learning_rate.assign(self.learning_rate())
    distribute.apply_gradients(self.optimizer, tape, loss, self.trainable_variables)
    logs = {name: tf.reduce_mean(value) for name, value in terms.items()}
    total = tf.reduce_mean(per_example) + c.balance_weight * balance
    if c.contrastive_weight:
      logs["contrastive"] = tf.reduce_mean(contrastive)
      total += c.contrastive_weight * logs["contrastive"]
    logs.update(loss=total, balance_kl=balance,
                temperature=self.temperature(), kl_weight=self.kl_weight(),
                learning_rate=self.learning_rate(),
                clusters_used=tf.reduce_sum(tf.cast(mean_probs > 0.1 / c.num_clusters, tf.float32)))
    return logs

  def pretrain_step(self, data):
    """Warm-up: a deterministic autoencoder on the code mean m(x) (the prior is untouched); with
    consistency or NT-Xent it reconstructs each image from the code of a view of it
    (contrastive_view), and with warmup_contrastive_weight the codes of two views of an image also
    attract (NT-Xent)."""
    c = self.config
    images = data["image"]
    noise = self.step_noise(images)
    with tf.GradientTape() as tape:
      views = c.warmup_contrastive_weight or c.consistency_weight
      z = self.code_mean_of(self.contrastive_view(images, noise) if views else images)
      reconstruction = self.reconstruction_nll(self.decoder(z, training=True), images)
      logs = {"reconstruction": tf.reduce_mean(reconstruction)}
      loss = tf.nn.compute_average_loss(reconstruction)
      total = logs["reconstruction"]
      if c.warmup_contrastive_weight:
        contrastive = self.views_nt_xent(z, images, noise)
        loss += c.warmup_contrastive_weight * tf.nn.compute_average_loss(contrastive)
        logs["contrastive"] = tf.reduce_mean(contrastive)
        total += c.warmup_contrastive_weight * logs["contrastive"]
    distribute.apply_gradients(self.optimizer, tape, loss, self.trainable_variables)
    return dict(logs, loss=total)

  def code_mean_of(self, images):
    """m(x) in float32, in training mode."""
    return tf.cast(self.code_mean(self.encoder(images, training=True)), tf.float32)

  def views_nt_xent(self, first, images, noise: noise_lib.BatchNoise):
    """NT-Xent [2b] between `first` (the codes m(x) of a contrastive view of `images`) and the
    codes of another view of them."""
    second = self.code_mean_of(self.contrastive_view(images, noise))
    return contrastive_lib.global_nt_xent(first, second, self.config.contrastive_temperature)

  def contrastive_view(self, images, noise: noise_lib.BatchNoise):
    """An augmented view for the NT-Xent terms: a random affine warp of grey images; a
    SimCLR view (crop, flip, colour jitter, grey) of colour images, whose colours say little of
    what they show."""
    c = self.config
    if c.channels == 1:
      return self.augment(images, noise)
    return augment.contrastive_view(images, noise, c.view_crop_scale, (0.4, 0.4, 0.4, 0.1),
                                    jitter_probability=0.8, grayscale_probability=0.2)

  def test_step(self, data):
    """Mean objective terms and ELBO on a batch, without updates."""
    images = data["image"]
    terms, _ = self.objective_terms(images, training=False, noise=self.step_noise(images))
    logs = {name: tf.reduce_mean(value) for name, value in terms.items()}
    logs["elbo"] = -tf.reduce_mean(terms["reconstruction"] + terms["kl_z"] + terms["kl_c"])
    return logs

  # ----- prior initialisation and sampling ---------------------------------------------------------

  def init_prior(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray):
    """Copies a fitted Gaussian mixture (see prior_init) into the prior and marks it initialised.

    The warm-up never trains the scale head of q(z|x,c); left at its random start it is far wider
    than the fitted components, and E_q(c|x) KL(q(z|x,c) || p(z|c)) is then smallest for the
    widest component, which pulls every image there. With `initial_posterior_scale` the head
    starts as a constant that fraction of the components' mean within-cluster std per dimension.
    """
    self.prior.assign(weights, means, covariances)
    fraction = self.config.initial_posterior_scale
    if fraction:
      covariances = np.asarray(covariances, np.float64)
      variances = covariances if covariances.ndim == 2 else np.diagonal(covariances, axis1=1, axis2=2)
      spread = np.sqrt(np.asarray(weights) @ variances)  # [D]
      scale = np.maximum(fraction * spread - self.config.scale_floor, 1e-4)
      kernel, bias = self.code_raw_scale.get_weights()
      self.code_raw_scale.set_weights([np.zeros_like(kernel),
                                       np.log(np.expm1(scale)).astype(bias.dtype)])
    self.prior_initialized.assign(True)

  def sample_images(self, per_cluster: int):
    """[K, per_cluster, H, W, C] images decoded from z ~ p(z|c=k) for every k."""
    k = self.config.num_clusters
    # Fixed noise, so pictures of different steps are comparable.
    eps = tf.random.stateless_normal([k, per_cluster, self.config.latent_dim], [self.config.seed, 0])
    z = self.prior.means[:, None] + tf.linalg.matvec(self.prior.scale_tril[:, None], eps)
    decoded = self.decode_mean(tf.reshape(z, [k * per_cluster, -1]))
    return tf.reshape(decoded, [k, per_cluster] + decoded.shape[1:].as_list())


def relaxed_one_hot_sample(logits, temperature, noise: noise_lib.BatchNoise):
  """A reparametrized sample of tfd.RelaxedOneHotCategorical(temperature, logits) (Gumbel-softmax)
  from the step's noise: softmax((logits + Gumbel noise) / temperature)."""
  gumbel = tfd.Gumbel(loc=0.0, scale=1.0).quantile(noise.uniform([logits.shape[-1]]))  # u in (0, 1)
  return tf.nn.softmax((logits + gumbel) / temperature)


# The training step's key in what `checkpoint` saves.
CHECKPOINT_STEP = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint(model: VariationalClustering) -> tf.train.Checkpoint:
  """What training saves and restores of a compiled model: its weights and its optimizer."""
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


def from_run(run: dict) -> VariationalClustering:
  """The (untrained) model a run.json describes; restore its checkpoint into it. Every method has
  a `from_run`, so that tools such as export can rebuild any trained model from its run.json."""
  return VariationalClustering(hparams.from_dict(Config, run["model"]))



def copy_cluster_free_weights(source: VariationalClustering, target: VariationalClustering):
  """Copies every weight of `source` into `target` of the same shape: all that does not depend on
  K (encoder, decoder, code heads; what the warm-up trained). The cluster heads and the prior of
  a `target` with another number of clusters stay as built (the warm-up leaves them as built in
  `source` too)."""
  if len(source.weights) != len(target.weights):
    raise ValueError("the two models differ in more than their number of clusters.")
  for source_weight, target_weight in zip(source.weights, target.weights):
    if tuple(source_weight.shape) == tuple(target_weight.shape):
      target_weight.assign(source_weight)
