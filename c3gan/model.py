"""C3-GAN: clusters are the discriminator's embedding space, centred on the generator's codes.

A generator draws a background from z and a foreground + mask from (z, one-hot code c); the
discriminator D gives a real/fake logit and an embedding h(x). A learnable table maps each code to
a centroid l_c in that space. D (with the centroids) is trained so that h(fake) is closest, by
cosine, to its own code's centroid (InfoNCE), so that two views of a real image embed alike
(NT-Xent), and so that real images are confidently and evenly assigned; the generator is trained
adversarially and through the same InfoNCE. Cluster of an image = argmax_k cos(h(x), l_k).
"""
import contextlib
import dataclasses
import math
from typing import Tuple

import keras
import tensorflow as tf

from c3gan import losses
from c3gan import networks
from vaeclust.lib import augment
from vaeclust.lib import contrastive as contrastive_lib
from vaeclust.lib import distribute
from vaeclust.lib import hparams
from vaeclust.lib import noise as noise_lib


_positive, _non_negative, _unit, _range = (hparams.positive, hparams.non_negative, hparams.unit,
                                          hparams.ordered_pair)


def _widths(v):
  return len(v) >= 1 and all(w > 0 for w in v)


_field = hparams.field


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyper-parameters of the model and its objective, each with its flag (same name, in
  c3gan.main); defaults are the reference's."""
  image_size: int
  channels: int
  num_clusters: int  # classes K; the model has num_clusters × over_clustering codes
  over_clustering: int = _field(
      1, "Codes per class: the model has num_clusters × this many clusters; ACC then lets each "
      "class take this many (reference: 2 on CUB, 3 else).", lambda v: v >= 1,
      "--over_clustering must be at least 1.")
  z_dim: int = _field(64, "Dimension of the noise z shared by both generators.", lambda v: v >= 1,
                      "--z_dim must be at least 1.")
  code_noise_dim: int = _field(8, "Dimension of the noise of the code embedding.", lambda v: v >= 1,
                               "--code_noise_dim must be at least 1.")
  g_filters: Tuple[int, ...] = _field(
      (512, 256, 128, 64, 16, 16), "Generator widths: at 4×4, then after each ×2 up-block "
      "(log2(image_size/4) of them).", _widths,
      "--g_filters must be a comma-separated list of positive integers.")
  g_res_blocks: Tuple[int, int] = _field(
      (3, 2), "Residual blocks of the generators at full resolution: before the mask and "
      "foreground heads (also the background generator's), and in the foreground head.",
      hparams.pair_of(_non_negative),
      "--g_res_blocks must be two non-negative integers.")
  d_filters: Tuple[int, ...] = _field(
      (64, 128, 256, 512, 512), "Discriminator widths, one per stride-2 conv down to 4×4 "
      "(log2(image_size/4) of them).", _widths,
      "--d_filters must be a comma-separated list of positive integers.")
  embedding_dim: int = _field(512, "Dimension of the discriminator's embedding h(x).",
                              lambda v: v >= 1, "--embedding_dim must be at least 1.")
  temperature: float = _field(0.1, "τ of the cosine cluster logits cos(h(x), l_k)/τ.", _positive,
                              "--temperature must be > 0.")
  contrastive_temperature: float = _field(0.1, "τ of NT-Xent between two views of real images.",
                                          _positive, "--contrastive_temperature must be > 0.")
  info_weight: float = _field(5.0, "Weight of InfoNCE between a fake's embedding and its code's "
                              "centroid (D and G).", _non_negative, "--info_weight must be >= 0.")
  info_fg_weight: float = _field(1.0, "Weight of the same InfoNCE on the masked fake m·x̂.",
                                 _non_negative, "--info_fg_weight must be >= 0.")
  d_batch_norm: bool = _field(True, "Batch norm in the discriminator's trunk, as in the "
                              "reference; without it D judges every image on its own, the same in "
                              "training and at inference.")
  generator_info_scale: float = _field(
      1.0, "The generator's step weighs both InfoNCE terms by this times --info_weight / "
      "--info_fg_weight (1 as in the reference; below 1 when the codes' InfoNCE would drown the "
      "adversarial signal).", _non_negative, "--generator_info_scale must be >= 0.")
  contrastive_weight: float = _field(1.0, "Weight of NT-Xent on real images (D).", _non_negative,
                                     "--contrastive_weight must be >= 0.")
  entropy_weight: float = _field(0.1, "Weight of the mean entropy of real images' cluster "
                                 "posteriors (D; makes each confident).", _non_negative,
                                 "--entropy_weight must be >= 0.")
  balance_weight: float = _field(0.1, "Weight of −entropy of the global-batch mean posterior of "
                                 "real images (D; spreads them over the clusters).", _non_negative, "--balance_weight must be >= 0.")
  adversarial_weight: float = _field(1.0, "Weight of the generator's hinge loss −D(x̂).",
                                     _non_negative, "--adversarial_weight must be >= 0.")
  mask_area_weight: float = _field(1.0, "Weight of keeping each mask's mean inside "
                                   "--mask_area_range.", _non_negative,
                                   "--mask_area_weight must be >= 0.")
  mask_binary_weight: float = _field(1.0, "Weight of the masks' binary entropy (pushes to 0/1).",
                                     _non_negative, "--mask_binary_weight must be >= 0.")
  mask_area_range: Tuple[float, float] = _field(
      (0.1, 0.9), "Allowed mean mask area low,high.", _range(0, 1),
      "--mask_area_range must be low,high with 0 <= low <= high <= 1.")
  fg_scale: Tuple[float, float] = _field(
      (0.8, 1.5), "Range of the random zoom of foreground and mask.", _range(open_low=True),
      "--fg_scale must be low,high with 0 < low <= high.")
  fg_rotation: float = _field(15.0, "Largest random rotation of foreground and mask, degrees.",
                              _non_negative, "--fg_rotation must be >= 0.")
  fg_shift: float = _field(0.15, "Largest random shift of foreground and mask, image fraction.",
                           _non_negative, "--fg_shift must be >= 0.")
  flip: bool = _field(True, "Mirror real images and their contrastive view at random (off for "
                      "digits, whose mirror images are other shapes).")
  view_crop_scale: Tuple[float, float] = _field(
      (0.2, 1.0), "Area range of the contrastive view's random crop.", _range(0, 1, open_low=True),
      "--view_crop_scale must be low,high with 0 < low <= high <= 1.")
  view_jitter: Tuple[float, float, float, float] = _field(
      (0.4, 0.4, 0.4, 0.1), "Colour jitter of the contrastive view: brightness, contrast, "
      "saturation, hue.", lambda v: len(v) == 4 and min(v) >= 0 and v[3] <= 0.5,
      "--view_jitter must be four numbers >= 0: brightness, contrast, saturation, hue "
      "(hue <= 0.5).")
  view_jitter_probability: float = _field(0.8, "Probability of colour jitter per view.", _unit,
                                          "--view_jitter_probability must be in [0, 1].")
  view_grayscale_probability: float = _field(0.2, "Probability of a grey view (colour images).",
                                             _unit, "--view_grayscale_probability must be in "
                                             "[0, 1].")
  view_rotation: float = _field(0.0, "Largest random rotation of the contrastive view, degrees "
                                "(0 as in the reference; helps digits, whose crops and colours "
                                "vary little).", _non_negative, "--view_rotation must be >= 0.")
  view_shift: float = _field(0.0, "Largest random shift of the contrastive view, image fraction "
                             "(0 as in the reference).", _non_negative,
                             "--view_shift must be >= 0.")
  background: bool = _field(True, "Compose each fake from a code-free background, the code's "
                            "foreground and a mask, as in the reference; without it the foreground "
                            "generator draws the whole image (no mask, mask losses, masked InfoNCE "
                            "or foreground warp): for images that are one object, such as digits.")
  code_input_scale: float = _field(
      0.0, "> 0: the one-hot code times this is also concatenated to z at the foreground "
      "generator's input (InfoGAN/ClusterGAN style), so that the code rather than z decides what "
      "is drawn; 0 as in the reference.", _non_negative, "--code_input_scale must be >= 0.")
  conditional_discriminator: bool = _field(
      False, "Condition D's real/fake logit on the cluster (projection discriminator): a fake on "
      "its code, a real image on its nearest centroid, so that each code must draw what its "
      "cluster's real images look like (not in the reference).")
  diversity_weight: float = _field(
      0.0, "Weight of the mode-seeking term (MSGAN) of the generator: each fake gets a twin of "
      "its code from other noise, and G is penalised by 1 / (their mean pixel distance / their "
      "noises' mean distance), so that the noise, not only the code, changes what is drawn (not in the reference).",
      _non_negative, "--diversity_weight must be >= 0.")
  seed: int = 0

  @property
  def num_codes(self) -> int:
    return self.num_clusters * self.over_clustering

  @property
  def num_outputs(self) -> int:
    """How many cluster probabilities the model gives an image: one per code."""
    return self.num_codes


class C3GAN(keras.Model):
  """Generators, discriminator and centroids, with a D step then a G step per batch."""

  def __init__(self, config: Config, **kwargs):
    super().__init__(**kwargs)
    self.config = c = config
    self.background_generator = networks.background_generator(
        c.z_dim, c.image_size, c.channels, c.g_filters, c.g_res_blocks[0]) if c.background else None
    self.foreground_generator = networks.foreground_generator(
        c.z_dim, c.num_codes, c.code_noise_dim, c.image_size, c.channels, c.g_filters,
        c.code_input_scale, with_mask=c.background, res_blocks=c.g_res_blocks)
    self.discriminator = networks.discriminator(c.image_size, c.channels, c.d_filters,
                                                c.embedding_dim, c.d_batch_norm)
    # l_k = W[k] + b: one row of a learnable table per code, trained with D.
    self.centroid_table = keras.layers.Dense(c.embedding_dim, name="centroids", dtype="float32",
                                             kernel_initializer=keras.initializers.Orthogonal())
    self.centroid_table.build((None, c.num_codes))
    # logit(x, k) = D's logit + ⟨v_k, φ(x)⟩; zeros: training starts from the unconditional D.
    self.projection_table = None
    if c.conditional_discriminator:
      features = 16 * c.d_filters[-1]
      self.projection_table = keras.layers.Dense(features, use_bias=False, name="projection",
                                                 dtype="float32", kernel_initializer="zeros")
      self.projection_table.build((None, c.num_codes))
    self.d_optimizer = None
    self.g_optimizer = None
    self.built = True

  @property
  def d_variables(self):
    projection = self.projection_table.trainable_variables if self.projection_table else []
    return (self.discriminator.trainable_variables + self.centroid_table.trainable_variables
            + projection)

  @property
  def g_variables(self):
    background = self.background_generator.trainable_variables if self.config.background else []
    return background + self.foreground_generator.trainable_variables

  def set_optimizers(self, d_optimizer, g_optimizer):
    """Gives D (+ centroids) and G one optimizer each and creates their slots up front."""
    self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
    d_optimizer.build(self.d_variables)
    g_optimizer.build(self.g_variables)

  # ----- inference -------------------------------------------------------------------------------

  def centroids(self):
    return self.centroid_table(tf.eye(self.config.num_codes))

  def cluster_logits(self, embeddings):
    return losses.cosine_logits(embeddings, self.centroids(), self.config.temperature)

  def adversarial_logit(self, logit, features, codes):
    """D's real/fake logit of images of `codes` (int [B]): with a conditional D, plus the
    projection ⟨v_code, φ(x)⟩; else the logit itself."""
    if self.projection_table is None:
      return logit
    projection = self.projection_table(tf.one_hot(codes, self.config.num_codes))
    return logit + tf.reduce_sum(projection * features, axis=-1)

  def call(self, images, training=False):
    """images float [B, H, W, C] in [0, 1] → cluster logits/probabilities over the codes, h(x)
    and `fit`: D's real/fake logit (higher: more like the training images; with a conditional D,
    like the training images of the image's cluster)."""
    logit, embedding, features = self.discriminator(images * 2.0 - 1.0, training=training)
    logits = self.cluster_logits(embedding)
    fit = self.adversarial_logit(logit, features, tf.argmax(logits, axis=-1, output_type=tf.int32))
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "embedding": embedding,
            "fit": tf.cast(fit, tf.float32)}

  # ----- generation ------------------------------------------------------------------------------

  def step_noise(self, batch):
    """The noise of this training step for a replica's `batch` examples (see noise_lib: the same
    on any number of replicas)."""
    return noise_lib.BatchNoise(self.config.seed, self.d_optimizer.iterations, batch)

  def sample_latents(self, noise: noise_lib.BatchNoise):
    """z, codes (int, without replacement within the global batch when there are enough codes),
    code noise and the foreground's affine transforms for noise.batch_size fake images."""
    c = self.config
    z = noise.normal([c.z_dim])
    codes = tf.cond(
        noise.global_batch_size <= c.num_codes,
        lambda: noise.rows(tf.argsort(noise.shared_uniform([c.num_codes]))),
        lambda: noise.uniform([], 0, c.num_codes, dtype=tf.int32))
    codes = tf.ensure_shape(codes, [None])
    code_noise = noise.normal([c.code_noise_dim])
    scale = noise.uniform([], c.fg_scale[0], c.fg_scale[1])
    max_angle = c.fg_rotation * math.pi / 180.0
    angle = noise.uniform([], -max_angle, max_angle)
    shift = noise.uniform([2], -c.fg_shift, c.fg_shift)
    transforms = augment.affine_transforms(scale, angle, shift[:, 0], shift[:, 1], c.image_size,
                                           c.image_size)
    return {"z": z, "codes": codes, "code_noise": code_noise, "transforms": transforms}

  def generate(self, sample, training: bool):
    """Images in [-1, 1]: background, foreground and mask (warped by sample["transforms"] when
    given), their composition bg·(1−m) + fg·m, and the masked composition m·x̂. Without a
    background the image is the foreground, unwarped, and there is no mask."""
    one_hot = tf.one_hot(sample["codes"], self.config.num_codes)
    inputs = [sample["z"], one_hot, sample["code_noise"]]
    if not self.config.background:
      image = self.foreground_generator(inputs, training=training)
      return {"foreground": image, "image": image}
    background = self.background_generator(sample["z"], training=training)
    foreground, mask = self.foreground_generator(inputs, training=training)
    if sample.get("transforms") is not None:
      warped = augment.warp(tf.concat([foreground, mask], axis=-1), sample["transforms"])
      foreground, mask = warped[..., :-1], warped[..., -1:]
    image = background * (1.0 - mask) + foreground * mask
    return {"background": background, "foreground": foreground, "mask": mask,
            "image": image, "masked": mask * image}

  # ----- training --------------------------------------------------------------------------------

  def views(self, images, noise: noise_lib.BatchNoise):
    """The two views of real [0, 1] images for D, in [-1, 1]: (flipped) images and a SimCLR view."""
    c = self.config
    first = augment.random_flip(images, noise) if c.flip else images
    second = augment.contrastive_view(images, noise, c.view_crop_scale, c.view_jitter,
                                      c.view_jitter_probability, c.view_grayscale_probability, c.flip)
    if c.view_rotation or c.view_shift:
      second = augment.random_affine(second, noise, (1.0, 1.0), c.view_rotation, c.view_shift)
    return first * 2.0 - 1.0, second * 2.0 - 1.0

  def d_step(self, images, noise: noise_lib.BatchNoise):
    """One update of D and the centroids on a replica's real [0, 1] images and as many fakes."""
    c = self.config
    sample = self.sample_latents(noise)
    fake = {name: tf.stop_gradient(x) for name, x in self.generate(sample, training=True).items()}
    real, view = self.views(images, noise)
    with tf.GradientTape() as tape:
      real_logit, real_embedding, real_features = self.discriminator(real, training=True)
      with self._real_image_statistics():
        _, view_embedding, _ = self.discriminator(view, training=True)
        fake_logit, fake_embedding, fake_features = self.discriminator(fake["image"], training=True)
        if c.background:
          _, masked_embedding, _ = self.discriminator(fake["masked"], training=True)
      centroids = self.centroids()
      real_logits = losses.cosine_logits(real_embedding, centroids, c.temperature)
      # a real image is judged against the training images of its own (current) cluster
      real_clusters = tf.stop_gradient(tf.argmax(real_logits, axis=-1, output_type=tf.int32))
      real_logit = self.adversarial_logit(real_logit, real_features, real_clusters)
      fake_logit = self.adversarial_logit(fake_logit, fake_features, sample["codes"])
      terms = {
          "d_hinge_real": losses.hinge_real(real_logit),
          "d_hinge_fake": losses.hinge_fake(fake_logit),
          "d_info": losses.info_nce(fake_embedding, centroids, sample["codes"], c.temperature),
          "entropy": losses.entropy(real_logits),
      }
      per_example = (terms["d_hinge_real"] + terms["d_hinge_fake"] + c.info_weight * terms["d_info"]
                     + c.entropy_weight * terms["entropy"])
      if c.background:
        terms["d_info_fg"] = losses.info_nce(masked_embedding, centroids, sample["codes"],
                                             c.temperature)
        per_example += c.info_fg_weight * terms["d_info_fg"]
      # negatives from the whole global batch, as on one replica
      contrastive = contrastive_lib.global_nt_xent(real_embedding, view_embedding,
                                                   c.contrastive_temperature)
      mean_probabilities = distribute.global_batch_mean(tf.nn.softmax(real_logits))
      balance = losses.balance_entropy(mean_probabilities)
      # Each replica adds the same global term; gradients of the all-reduce sum them back once.
      loss = (tf.nn.compute_average_loss(per_example)
              + c.contrastive_weight * tf.nn.compute_average_loss(contrastive)
              + c.balance_weight * balance / distribute.num_replicas())
    distribute.apply_gradients(self.d_optimizer, tape, loss, self.d_variables)
    logs = {name: tf.reduce_mean(value) for name, value in terms.items()}
    logs.update(
        contrastive=tf.reduce_mean(contrastive), balance=balance,
        d_loss=tf.reduce_mean(per_example) + c.contrastive_weight * tf.reduce_mean(contrastive)
        + c.balance_weight * balance,
        clusters_used=tf.reduce_sum(tf.cast(mean_probabilities > 0.1 / c.num_codes, tf.float32)))
    return logs

  def g_step(self, noise: noise_lib.BatchNoise):
    """One update of both generators on noise.batch_size fresh fakes."""
    c = self.config
    sample = self.sample_latents(noise)
    with tf.GradientTape() as tape:
      fake = self.generate(sample, training=True)
      with self._real_image_statistics():
        fake_logit, fake_embedding, fake_features = self.discriminator(fake["image"], training=True)
        if c.background:
          _, masked_embedding, _ = self.discriminator(fake["masked"], training=True)
      fake_logit = self.adversarial_logit(fake_logit, fake_features, sample["codes"])
      centroids = self.centroids()
      info_scale = c.generator_info_scale
      terms = {
          "g_adversarial": -fake_logit,
          "g_info": losses.info_nce(fake_embedding, centroids, sample["codes"], c.temperature),
      }
      per_example = (c.adversarial_weight * terms["g_adversarial"]
                     + info_scale * c.info_weight * terms["g_info"])
      if c.background:
        terms.update(
            g_info_fg=losses.info_nce(masked_embedding, centroids, sample["codes"], c.temperature),
            # on the warped mask, as composed (its zero padding counts as background)
            mask_area=losses.mask_area(fake["mask"], *c.mask_area_range),
            mask_binary=losses.mask_binarization(fake["mask"]))
        per_example += (info_scale * c.info_fg_weight * terms["g_info_fg"]
                        + c.mask_area_weight * terms["mask_area"]
                        + c.mask_binary_weight * terms["mask_binary"])
      if c.diversity_weight:  # a twin of each fake: the same code, other noise
        twin = dict(sample, z=noise.normal([c.z_dim]), code_noise=noise.normal([c.code_noise_dim]))
        terms["g_diversity"] = losses.mode_seeking(
            fake["image"], self.generate(twin, training=True)["image"],
            *(tf.concat([s["z"], s["code_noise"]], axis=-1) for s in (sample, twin)))
        per_example += c.diversity_weight * terms["g_diversity"]
      loss = tf.nn.compute_average_loss(per_example)
    distribute.apply_gradients(self.g_optimizer, tape, loss, self.g_variables)
    logs = {name: tf.reduce_mean(value) for name, value in terms.items()}
    logs.update(g_loss=tf.reduce_mean(per_example))
    if c.background:
      logs.update(mask_mean=tf.reduce_mean(fake["mask"]))
    return logs

  @contextlib.contextmanager
  def _real_image_statistics(self):
    """D calls inside normalise by their batch but leave D's batch-norm moving statistics as they
    were: inference normalises real images, so the statistics must come from real images only
    (with fakes and views mixed in, short runs put every real image in one cluster)."""
    statistics = self.discriminator.non_trainable_variables
    saved = [tf.identity(v) for v in statistics]
    yield
    for variable, value in zip(statistics, saved):
      variable.assign(value)

  def train_step(self, data):
    """A D step on the replica's batch, then a G step on as many fresh fakes."""
    images = data["image"]
    noise = self.step_noise(tf.shape(images)[0])
    logs = self.d_step(images, noise)
    logs.update(self.g_step(noise))
    return logs

  # ----- pictures --------------------------------------------------------------------------------

  def sample_grid(self, codes, columns: int):
    """[len(codes), columns, H, W, C] pictures in [0, 1] (image; with a background also it, the
    mask and the foreground):
    one row per code, the same z (and zero code noise) down each column, no affine warp."""
    c = self.config
    rows = len(codes)
    # A fixed z per column (not the training generator), so pictures are comparable across steps.
    z = tf.tile(tf.random.stateless_normal([1, columns, c.z_dim], seed=[c.seed, 0]), [rows, 1, 1])
    sample = {"z": tf.reshape(z, [rows * columns, c.z_dim]),
              "codes": tf.repeat(tf.constant(codes, tf.int32), columns),
              "code_noise": tf.zeros([rows * columns, c.code_noise_dim])}
    fake = self.generate(sample, training=False)
    pictures = {"image": fake["image"]}
    if c.background:
      pictures.update(background=fake["background"], foreground=fake["foreground"],
                      mask=fake["mask"] * 2.0 - 1.0)
    return {name: tf.reshape((x + 1.0) / 2.0, [rows, columns] + x.shape[1:].as_list())
            for name, x in pictures.items()}

  def code_samples(self, per_code: int, seed, batch_size: int = 256):
    """uint8 [codes, per_code, H, W, C]: generated images of every code from fresh z and code
    noise (keyed by `seed`, e.g. (run seed, step)), without the training warp, as inference
    would draw them."""
    c = self.config
    codes = tf.repeat(tf.range(c.num_codes), per_code)
    z = tf.random.stateless_normal([len(codes), c.z_dim], seed=seed)
    code_noise = tf.random.stateless_normal([len(codes), c.code_noise_dim], seed=[seed[0], seed[1] + 1])
    images = []
    for start in range(0, len(codes), batch_size):
      part = slice(start, start + batch_size)
      fake = self.generate({"z": z[part], "codes": codes[part], "code_noise": code_noise[part]},
                           training=False)
      images.append(tf.cast(tf.round((fake["image"] + 1.0) * 127.5), tf.uint8))
    return tf.reshape(tf.concat(images, 0), [c.num_codes, per_code] + images[0].shape[1:].as_list())


# The training step's key in what `checkpoint` saves (D's optimizer counts the steps).
CHECKPOINT_STEP = "d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint(model: C3GAN) -> tf.train.Checkpoint:
  """What training saves and restores: the networks, the centroids and both optimizers."""
  return tf.train.Checkpoint(model=model, d_optimizer=model.d_optimizer,
                             g_optimizer=model.g_optimizer)


def from_run(run: dict) -> C3GAN:
  """The (untrained) model described by a run.json's "model" dict; restore weights after."""
  return C3GAN(hparams.from_dict(Config, run["model"]))
