"""Random image transforms written as TensorFlow ops for a train step; per-image randomness comes
from a noise.BatchNoise, so the same step draws the same transforms on any number of replicas."""
import math
from typing import Sequence

import tensorflow as tf

from vaeclust.lib import noise as noise_lib


def affine_transforms(scale, angle, shift_x, shift_y, height: int, width: int):
  """Rows [a0, a1, a2, b0, b1, b2, 0, 0] mapping output pixels back to input pixels.

  The forward map scales by `scale` and rotates by `angle` (radians, counter-clockwise in
  the (x=column, y=row) frame) about the image centre, then shifts by (shift_x·width,
  shift_y·height). `ImageProjectiveTransformV3` wants the inverse, which is what is returned.
  """
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  tx, ty = cx + shift_x * width, cy + shift_y * height
  a0, a1, b0, b1 = cos, sin, -sin, cos
  a2 = cx - a0 * tx - a1 * ty
  b2 = cy - b0 * tx - b1 * ty
  zeros = tf.zeros_like(a0)
  return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=-1)


def warp(images, transforms, fill_value: float = 0.0):
  """Bilinear warp of [B, H, W, C] float images by per-image transforms, each of the four
  neighbours outside the image counting as fill_value (as ImageProjectiveTransformV3 with
  CONSTANT fill). Written with gathers, which XLA compiles (that op has no XLA kernel)."""
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  t = tf.cast(transforms, tf.float32)[:, :, None, None]  # [B, 8, 1, 1]
  y, x = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                     indexing="ij")
  k = t[:, 6] * x + t[:, 7] * y + 1.0
  source_x = (t[:, 0] * x + t[:, 1] * y + t[:, 2]) / k  # [B, H, W]
  source_y = (t[:, 3] * x + t[:, 4] * y + t[:, 5]) / k
  x0, y0 = tf.floor(source_x), tf.floor(source_y)
  flat = tf.reshape(images, [-1, images.shape[-1] or shape[3]])
  first_row = tf.range(batch)[:, None, None] * height * width
  output = 0.0
  for corner_x, weight_x in ((x0, x0 + 1.0 - source_x), (x0 + 1.0, source_x - x0)):
    for corner_y, weight_y in ((y0, y0 + 1.0 - source_y), (y0 + 1.0, source_y - y0)):
      inside = ((corner_x >= 0) & (corner_x <= tf.cast(width - 1, tf.float32))
                & (corner_y >= 0) & (corner_y <= tf.cast(height - 1, tf.float32)))
      index = first_row + (tf.cast(tf.clip_by_value(corner_y, 0.0, tf.cast(height - 1, tf.float32)),
                                   tf.int32) * width
                           + tf.cast(tf.clip_by_value(corner_x, 0.0, tf.cast(width - 1, tf.float32)),
                                     tf.int32))
      value = tf.where(inside[..., None], tf.gather(flat, index), tf.cast(fill_value, images.dtype))
      output += (weight_x * weight_y)[..., None] * value
  return tf.cast(output, images.dtype)


def random_affine(images, rng: noise_lib.BatchNoise, scale_range: Sequence[float],
                  max_rotation_degrees: float, max_shift: float):
  """Warps each image by its own random scale, rotation and shift drawn from `rng`."""
  height, width = images.shape[1], images.shape[2]
  scale = rng.uniform([], scale_range[0], scale_range[1])
  max_angle = max_rotation_degrees * math.pi / 180.0
  angle = rng.uniform([], -max_angle, max_angle)
  shift = rng.uniform([2], -max_shift, max_shift)
  return warp(images, affine_transforms(scale, angle, shift[:, 0], shift[:, 1], height, width))


def random_resized_crop(images, rng: noise_lib.BatchNoise, scale_range: Sequence[float],
                        ratio_range: Sequence[float] = (3 / 4, 4 / 3)):
  """Crops each image to a random box (area fraction in scale_range, aspect ratio in ratio_range,
  log-uniform) and resizes it back to the input size, bilinearly."""
  area = rng.uniform([], scale_range[0], scale_range[1])
  log_ratio = rng.uniform([], math.log(ratio_range[0]), math.log(ratio_range[1]))
  ratio = tf.exp(log_ratio)
  width = tf.minimum(tf.sqrt(area * ratio), 1.0)
  height = tf.minimum(tf.sqrt(area / ratio), 1.0)
  offsets = rng.uniform([2], 0.0, 1.0)
  top, left = offsets[:, 0] * (1.0 - height), offsets[:, 1] * (1.0 - width)
  # tf.image.crop_and_resize's sampling as a warp (which, unlike that op, XLA compiles): output
  # pixel (x, y) reads input (left·(W−1) + width·x, top·(H−1) + height·y).
  rows, columns = images.shape[1], images.shape[2]
  zeros = tf.zeros_like(top)
  transforms = tf.stack([width, zeros, left * (columns - 1), zeros, height, top * (rows - 1),
                         zeros, zeros], axis=-1)
  return warp(images, transforms)


def random_flip(images, rng: noise_lib.BatchNoise):
  """Mirrors each image left-right with probability 1/2."""
  flip = rng.uniform([1, 1, 1]) < 0.5
  return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _gray(images):
  """Luma of [B, H, W, C] images (C = 1 or 3), keeping a channel axis of 1."""
  if images.shape[-1] == 1:
    return images
  return tf.image.rgb_to_grayscale(images)


def adjust_colors(images, brightness, contrast, saturation, hue):
  """Per-image colour change of [0, 1] images: multiply by `brightness`, scale the distance to the
  image's mean luma by `contrast` and to each pixel's luma by `saturation`, rotate hue by `hue`
  (a fraction of the colour circle). Factors are [B]; saturation and hue only touch colour images."""
  def per_image(v):
    return tf.reshape(tf.cast(v, images.dtype), [-1, 1, 1, 1])

  images = tf.clip_by_value(images * per_image(brightness), 0.0, 1.0)
  mean = tf.reduce_mean(_gray(images), axis=[1, 2, 3], keepdims=True)
  images = tf.clip_by_value((images - mean) * per_image(contrast) + mean, 0.0, 1.0)
  if images.shape[-1] == 3:
    gray = _gray(images)
    images = tf.clip_by_value((images - gray) * per_image(saturation) + gray, 0.0, 1.0)
    hsv = tf.image.rgb_to_hsv(images)
    rotated = tf.math.floormod(hsv[..., :1] + per_image(hue), 1.0)
    images = tf.image.hsv_to_rgb(tf.concat([rotated, hsv[..., 1:]], axis=-1))
  return images


def random_color_jitter(images, rng: noise_lib.BatchNoise, brightness: float, contrast: float,
                        saturation: float, hue: float, probability: float):
  """With `probability` per image, adjust_colors with factors U(1 ± strength) and hue U(± hue)."""
  factors = rng.uniform([3], -1.0, 1.0)
  hue_shift = rng.uniform([], -hue, hue) if hue else tf.zeros([tf.shape(images)[0]])
  jittered = adjust_colors(images, 1.0 + brightness * factors[:, 0], 1.0 + contrast * factors[:, 1],
                           1.0 + saturation * factors[:, 2], hue_shift)
  apply = rng.uniform([1, 1, 1]) < probability
  return tf.where(apply, jittered, images)


def random_grayscale(images, rng: noise_lib.BatchNoise, probability: float):
  """With `probability` per image, replaces a colour image by its luma in every channel."""
  apply = rng.uniform([1, 1, 1]) < probability
  return tf.where(apply, tf.broadcast_to(_gray(images), tf.shape(images)), images)


def contrastive_view(images, rng: noise_lib.BatchNoise, crop_scale: Sequence[float],
                     jitter: Sequence[float], jitter_probability: float,
                     grayscale_probability: float, flip: bool = True):
  """A SimCLR view of [0, 1] images: random resized crop, flip (unless flip=False), colour jitter
  (brightness, contrast, saturation, hue), random grayscale."""
  images = random_resized_crop(images, rng, crop_scale)
  if flip:
    images = random_flip(images, rng)
  images = random_color_jitter(images, rng, *jitter, probability=jitter_probability)
  return random_grayscale(images, rng, grayscale_probability)
