"""C3-GAN networks as Keras functional models (so every variable exists once they are built).

Generator: a background G_bg(z) and a foreground G_fg(z, c, cz) giving a foreground image and a
sigmoid mask; GLU up-blocks with batch norm, tanh images in [-1, 1]. Discriminator: a strided conv
trunk with a real/fake logit head and an embedding head h(x). Layouts follow the reference code
(see /work/shared/reference/c3gan.md); the widths are arguments.
"""
import math
from typing import Sequence

import keras
from keras import ops


def _orthogonal():
  return keras.initializers.Orthogonal(gain=1.0)


def _batch_norm():
  """Batch norm over the global batch (statistics all-reduced across replicas), so that the
  model trains the same on any number of replicas."""
  return keras.layers.BatchNormalization(
      momentum=0.9, epsilon=1e-5, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
      synchronized=True)


class GLU(keras.layers.Layer):
  """Gated linear unit over channels: x[..., :C] * sigmoid(x[..., C:])."""

  def call(self, x):
    half = x.shape[-1] // 2
    return x[..., :half] * ops.sigmoid(x[..., half:])

  def compute_output_shape(self, input_shape):
    return input_shape[:-1] + (input_shape[-1] // 2,)


class AddPerImage(keras.layers.Layer):
  """features [B, H, W, C] + vector [B, C] at every pixel (a code as a per-image bias)."""

  def call(self, features, vector):
    return features + vector[:, None, None, :]


def _conv(filters, kernel, **kwargs):
  return keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                             kernel_initializer=_orthogonal(), **kwargs)


def same_block(x, filters):
  """conv3×3 to 2·filters → BN → GLU."""
  return GLU()(_batch_norm()(_conv(2 * filters, 3)(x)))


def up_block(x, filters):
  """Nearest ×2 upsampling, then a same_block."""
  return same_block(keras.layers.UpSampling2D(2, interpolation="nearest")(x), filters)


def res_block(x):
  """conv3×3 (C→2C) → BN → GLU → conv3×3 (C→C) → BN, plus the input."""
  filters = x.shape[-1]
  y = _batch_norm()(_conv(filters, 3)(same_block(x, filters)))
  return keras.layers.Add()([x, y])


# Output layers compute in float32 under a mixed-precision policy (images, mask, logit, embedding).
def _to_image(x, channels):
  return keras.layers.Conv2D(channels, 3, padding="same", activation="tanh",
                             kernel_initializer=_orthogonal(), dtype="float32")(x)


def num_resolution_steps(image_size: int) -> int:
  """How many ×2 steps lie between 4×4 and image_size (a power of two ≥ 8)."""
  steps = math.log2(image_size / 4) if image_size >= 8 else 0.5
  if steps != int(steps):
    raise ValueError(f"Image size must be a power of two of at least 8; got {image_size}.")
  return int(steps)


def _projected_noise(z, filters):
  """Linear(z → filters·4·4·2, no bias) → BN → GLU → [B, 4, 4, filters]."""
  x = keras.layers.Dense(4 * 4 * 2 * filters, use_bias=False, kernel_initializer=_orthogonal())(z)
  x = GLU()(_batch_norm()(x))
  return keras.layers.Reshape((4, 4, filters))(x)


def _check_widths(image_size: int, g_filters: Sequence[int]):
  if len(g_filters) != num_resolution_steps(image_size) + 1:
    raise ValueError(f"{image_size}×{image_size} images need {num_resolution_steps(image_size) + 1} "
                     f"generator widths (4×4 and each ×2 step); got {list(g_filters)}.")


def background_generator(z_dim: int, image_size: int, channels: int, g_filters: Sequence[int],
                         res_blocks: int = 3):
  """G_bg(z) → background image [B, S, S, channels] in [-1, 1]."""
  _check_widths(image_size, g_filters)
  z = keras.Input((z_dim,), name="z")
  x = _projected_noise(z, g_filters[0])
  for filters in g_filters[1:]:
    x = up_block(x, filters)
  for _ in range(res_blocks):
    x = res_block(x)
  return keras.Model(z, _to_image(x, channels), name="background_generator")


def foreground_generator(z_dim: int, num_codes: int, code_noise_dim: int, image_size: int,
                         channels: int, g_filters: Sequence[int], code_input_scale: float = 0.0,
                         with_mask: bool = True, res_blocks: Sequence[int] = (3, 2)):
  """G_fg(z, c, cz) → (foreground image in [-1, 1], mask in [0, 1]), or the image alone without
  `with_mask`.

  The one-hot code c is embedded as a Gaussian (μ, log σ) sampled with the noise cz, tiled at 4×4
  and concatenated to the projected z. Before the foreground head c enters again as a per-image
  bias (the reference tiles c over the image and concatenates it, the same away from borders).
  With `code_input_scale` > 0, c times it is also concatenated to z before the projection (as in
  InfoGAN and ClusterGAN): the projection's batch norm then sees code and noise together, and a
  large scale gives the code, not z, the say in what is drawn. `res_blocks`: how many residual
  blocks at full resolution before the mask/foreground heads and in the foreground head.
  """
  _check_widths(image_size, g_filters)
  z = keras.Input((z_dim,), name="z")
  code = keras.Input((num_codes,), name="code")
  code_noise = keras.Input((code_noise_dim,), name="code_noise")
  embedded = keras.layers.Dense(4 * code_noise_dim, use_bias=False, kernel_initializer=_orthogonal())(code)
  embedded = GLU()(_batch_norm()(embedded))
  mean, log_scale = embedded[:, :code_noise_dim], embedded[:, code_noise_dim:]
  sampled = mean + ops.exp(log_scale) * code_noise
  tiled = keras.layers.UpSampling2D(4)(keras.layers.Reshape((1, 1, code_noise_dim))(sampled))
  projected = z
  if code_input_scale:
    projected = keras.layers.Concatenate()([z, keras.layers.Rescaling(code_input_scale)(code)])
  x = keras.layers.Concatenate()([_projected_noise(projected, g_filters[0]), tiled])
  for filters in g_filters[1:]:
    x = up_block(x, filters)
  for _ in range(res_blocks[0]):
    x = res_block(x)
  if with_mask:
    mask = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32",
                               kernel_initializer=_orthogonal())(same_block(x, x.shape[-1]))
  code_bias = keras.layers.Dense(x.shape[-1], use_bias=False, kernel_initializer=_orthogonal())(code)
  y = same_block(AddPerImage()(x, code_bias), x.shape[-1])
  for _ in range(res_blocks[1]):
    y = res_block(y)
  image = _to_image(same_block(y, y.shape[-1]), channels)
  return keras.Model([z, code, code_noise], [image, mask] if with_mask else image,
                     name="foreground_generator")


def discriminator(image_size: int, channels: int, d_filters: Sequence[int], embedding_dim: int,
                  batch_norm: bool = True):
  """D(x in [-1, 1]) → (real/fake logit [B], embedding h(x) [B, embedding_dim], the trunk's
  features φ(x) at 4×4, flattened [B, 16·d_filters[-1]]: what a class projection acts on).

  Without `batch_norm` the trunk's convolutions have biases instead: D then treats every image on
  its own, the same in training and at inference.
  """
  if len(d_filters) != num_resolution_steps(image_size):
    raise ValueError(f"{image_size}×{image_size} images need {num_resolution_steps(image_size)} "
                     f"discriminator widths (one per stride-2 conv to 4×4); got {list(d_filters)}.")

  def conv_norm(x, filters, kernel, **kwargs):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=not batch_norm,
                            kernel_initializer=_orthogonal(), **kwargs)(x)
    return _batch_norm()(x) if batch_norm else x

  images = keras.Input((image_size, image_size, channels), name="images")
  x = keras.layers.LeakyReLU(0.2)(keras.layers.Conv2D(
      d_filters[0], 4, strides=2, padding="same", use_bias=False, kernel_initializer=_orthogonal())(images))
  for filters in d_filters[1:]:
    x = keras.layers.LeakyReLU(0.2)(conv_norm(x, filters, 4, strides=2))
  x = keras.layers.LeakyReLU(0.2)(conv_norm(x, d_filters[-1], 3))
  logit = keras.layers.Conv2D(1, 4, strides=4, kernel_initializer=_orthogonal(), name="real_fake",
                              dtype="float32")(x)
  e = keras.layers.LeakyReLU(0.2)(conv_norm(x, d_filters[-1], 3))
  embedding = keras.layers.Conv2D(embedding_dim, 4, strides=4, kernel_initializer=_orthogonal(),
                                  name="embedding", dtype="float32")(e)
  flat_logit = keras.layers.Flatten(dtype="float32")(logit)[:, 0]
  flat = keras.layers.Flatten(dtype="float32")
  return keras.Model(images, [flat_logit, flat(embedding), flat(x)], name="discriminator")
