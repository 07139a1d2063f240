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
from vaeclust.lib import distribute
from vaeclust.lib import noise as noise_lib


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyper-parameters of the model and its objective (one flag each in c3gan.main); defaults are
  the reference's."""
  image_size: int
  channels: int
  num_clusters: int  # classes K; the model has num_clusters × over_clustering codes
  over_clustering: int = 1
  z_dim: int = 64
  code_noise_dim: int = 8
  g_filters: Tuple[int, ...] = (512, 256, 128, 64, 16, 16)  # 4×4, then one per ×2 step
  d_filters: Tuple[int, ...] = (64, 128, 256, 512, 512)  # one per stride-2 conv
  embedding_dim: int = 512
  temperature: float = 0.1  # of the cosine cluster logits (InfoNCE and inference)
  contrastive_temperature: float = 0.1
  info_weight: float = 5.0
  info_fg_weight: float = 1.0
  d_batch_norm: bool = True  # reference: D normalises by batch statistics
  generator_info_scale: float = 1.0  # G step's info weights = this × the D step's (reference: 1)
  contrastive_weight: float = 1.0
  entropy_weight: float = 0.1  # mean per-image entropy of real images' posteriors (confident)
  balance_weight: float = 0.1  # −entropy of the batch-mean posterior (balanced)
  adversarial_weight: float = 1.0
  mask_area_weight: float = 1.0
  mask_binary_weight: float = 1.0
  mask_area_range: Tuple[float, float] = (0.1, 0.9)
  fg_scale: Tuple[float, float] = (0.8, 1.5)  # random affine of foreground and mask
  fg_rotation: float = 15.0  # degrees
  fg_shift: float = 0.15  # fraction of the image size
  flip: bool = True  # mirror real images and their contrastive view
  view_crop_scale: Tuple[float, float] = (0.2, 1.0)
  view_jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
  view_jitter_probability: float = 0.8
  view_grayscale_probability: float = 0.2
  view_rotation: float = 0.0  # degrees of a random rotation of the contrastive view (not in the
  view_shift: float = 0.0  # reference; for digits, whose crops and colours vary little)
  # False: the image is the foreground generator's alone (no background, mask or warp; for images
  # without a separate object on a scene, such as digits)
  background: bool = True
  code_input_scale: float = 0.0  # > 0: the code × this also joins z at G_fg's input
  seed: int = 0

  @property
  def num_codes(self) -> int:
    return self.num_clusters * self.over_clustering


class C3GAN(keras.Model):
  """Generators, discriminator and centroids, with a D step then a G step per batch."""

  def __init__(self, config: Config, **kwargs):
    super().__init__(**kwargs)
    self.config = c = config
    self.background_generator = networks.background_generator(
        c.z_dim, c.image_size, c.channels, c.g_filters) if c.background else None
    self.foreground_generator = networks.foreground_generator(
        c.z_dim, c.num_codes, c.code_noise_dim, c.image_size, c.channels, c.g_filters,
        c.code_input_scale, with_mask=c.background)
    self.discriminator = networks.discriminator(c.image_size, c.channels, c.d_filters,
                                                c.embedding_dim, c.d_batch_norm)
    # l_k = W[k] + b: one row of a learnable table per code, trained with D.
    self.centroid_table = keras.layers.Dense(c.embedding_dim, name="centroids", dtype="float32",
                                             kernel_initializer=keras.initializers.Orthogonal())
    self.centroid_table.build((None, c.num_codes))
    self.d_optimizer = None
    self.g_optimizer = None
    self.built = True

  @property
  def d_variables(self):
    return self.discriminator.trainable_variables + self.centroid_table.trainable_variables

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

  def call(self, images, training=False):
    """images float [B, H, W, C] in [0, 1] → cluster logits/probabilities over the codes, h(x)
    and `fit`: D's real/fake logit (higher: more like the training images)."""
    logit, embedding = self.discriminator(images * 2.0 - 1.0, training=training)
    logits = self.cluster_logits(embedding)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "embedding": embedding,
            "fit": tf.cast(logit, tf.float32)}

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
      real_logit, real_embedding = self.discriminator(real, training=True)
      with self._real_image_statistics():
        _, view_embedding = self.discriminator(view, training=True)
        fake_logit, fake_embedding = self.discriminator(fake["image"], training=True)
        if c.background:
          _, masked_embedding = self.discriminator(fake["masked"], training=True)
      centroids = self.centroids()
      real_logits = losses.cosine_logits(real_embedding, centroids, c.temperature)
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
      both, offset = distribute.cross_replica_concat(
          tf.concat([real_embedding, view_embedding], axis=-1))
      contrastive = losses.nt_xent(real_embedding, view_embedding, c.contrastive_temperature,
                                   both[:, :c.embedding_dim], both[:, c.embedding_dim:], offset)
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
        fake_logit, fake_embedding = self.discriminator(fake["image"], training=True)
        if c.background:
          _, masked_embedding = self.discriminator(fake["masked"], training=True)
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


def from_run(run: dict) -> C3GAN:
  """The (untrained) model described by a run.json's "model" dict; restore weights after."""
  return C3GAN(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in run["model"].items()}))
