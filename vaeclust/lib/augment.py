"""Random image transforms written as TensorFlow ops, usable inside a train step or a tf.data map."""
import math
from typing import Sequence

import tensorflow as tf


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
  """Bilinear warp of [B, H, W, C] float images by per-image transforms, padding with fill_value."""
  shape = tf.shape(images)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=tf.cast(transforms, tf.float32), output_shape=shape[1:3],
      fill_value=tf.cast(fill_value, tf.float32), interpolation="BILINEAR", fill_mode="CONSTANT")


def random_affine(images, rng: tf.random.Generator, scale_range: Sequence[float],
                  max_rotation_degrees: float, max_shift: float):
  """Warps each image by its own random scale, rotation and shift drawn from `rng`."""
  batch = tf.shape(images)[0]
  height, width = images.shape[1], images.shape[2]
  scale = rng.uniform([batch], scale_range[0], scale_range[1])
  max_angle = max_rotation_degrees * math.pi / 180.0
  angle = rng.uniform([batch], -max_angle, max_angle)
  shift = rng.uniform([2, batch], -max_shift, max_shift)
  return warp(images, affine_transforms(scale, angle, shift[0], shift[1], height, width))
