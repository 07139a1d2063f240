"""The affine warp against transforms whose result is known exactly."""
import math

import numpy as np
import tensorflow as tf

from vaeclust.lib import augment
from vaeclust.lib import noise as noise_lib


def _noise(seed, images):
  return noise_lib.BatchNoise(seed, step=0, batch_size=tf.shape(images)[0])

def _image(size=9):
  return tf.reshape(tf.range(size * size, dtype=tf.float32), [1, size, size, 1])


def _warp(image, scale=1.0, angle=0.0, shift_x=0.0, shift_y=0.0):
  size = image.shape[1]
  t = augment.affine_transforms(tf.constant([scale]), tf.constant([angle]), tf.constant([shift_x]),
                                tf.constant([shift_y]), size, size)
  return augment.warp(image, t)[0, ..., 0].numpy()


def test_identity_keeps_the_image():
  np.testing.assert_allclose(_warp(_image()), _image()[0, ..., 0], atol=1e-4)


def test_shift_moves_content_right_and_down():
  image = _image()
  out = _warp(image, shift_x=2 / 9, shift_y=1 / 9)
  np.testing.assert_allclose(out[1:, 2:], image[0, :-1, :-2, 0], atol=1e-3)
  assert np.all(out[0] == 0) and np.all(out[:, :2] == 0)


def test_quarter_turn_is_a_rot90():
  image = _image()
  out = _warp(image, angle=math.pi / 2)
  # counter-clockwise in the (x = column, y = row) frame with y pointing down
  expected = np.rot90(image[0, ..., 0].numpy(), k=-1)
  np.testing.assert_allclose(out, expected, atol=1e-3)


def test_zoom_in_by_two_samples_the_centre():
  image = _image()
  out = _warp(image, scale=2.0)
  np.testing.assert_allclose(out[4, 4], image[0, 4, 4, 0], atol=1e-4)
  np.testing.assert_allclose(out[4, 6], image[0, 4, 5, 0], atol=1e-4)


def test_random_affine_is_reproducible_from_the_seed():
  images = tf.random.uniform([4, 8, 8, 1], seed=3)
  a = augment.random_affine(images, _noise(7, images), (0.9, 1.1), 10, 0.1)
  b = augment.random_affine(images, _noise(7, images), (0.9, 1.1), 10, 0.1)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, images)


def test_full_area_square_crop_keeps_the_image():
  images = tf.random.uniform([3, 8, 8, 3], seed=1)
  out = augment.random_resized_crop(images, _noise(0, images), (1.0, 1.0), (1.0, 1.0))
  np.testing.assert_allclose(out, images, atol=1e-5)


def test_half_area_crop_is_an_upsampled_part_of_the_image():
  # A horizontal ramp: a crop of width w starting at x0 is again a ramp with slope w.
  ramp = tf.tile(tf.reshape(tf.linspace(0.0, 1.0, 16), [1, 1, 16, 1]), [4, 16, 1, 1])
  out = augment.random_resized_crop(ramp, _noise(3, ramp), (0.25, 0.25),
                                    (1.0, 1.0)).numpy()
  slopes = (out[:, :, -1, 0] - out[:, :, 0, 0]).mean(axis=1)
  np.testing.assert_allclose(slopes, 0.5, atol=1e-4)  # side sqrt(0.25) = half the width
  assert np.all(out[:, :, 0, 0] >= 0) and np.all(out[:, :, -1, 0] <= 1)


def test_flip_mirrors_about_half_of_the_images():
  images = tf.random.uniform([200, 4, 4, 1], seed=2)
  out = augment.random_flip(images, _noise(0, images)).numpy()
  mirrored = np.all(np.isclose(out, images.numpy()[:, :, ::-1]), axis=(1, 2, 3))
  kept = np.all(out == images.numpy(), axis=(1, 2, 3))
  assert np.all(mirrored | kept) and 70 < mirrored.sum() < 130


def test_adjust_colors_against_hand_computation():
  rgb = np.array([[0.2, 0.4, 0.6], [0.5, 0.5, 0.1]], np.float32).reshape(1, 1, 2, 3)
  luma = rgb @ np.array([0.2989, 0.587, 0.114], np.float32)
  out = augment.adjust_colors(tf.constant(rgb), [1.5], [1.0], [1.0], [0.0]).numpy()
  np.testing.assert_allclose(out, np.clip(rgb * 1.5, 0, 1), atol=1e-5)
  out = augment.adjust_colors(tf.constant(rgb), [1.0], [0.5], [1.0], [0.0]).numpy()
  np.testing.assert_allclose(out, (rgb - luma.mean()) * 0.5 + luma.mean(), atol=1e-3)
  out = augment.adjust_colors(tf.constant(rgb), [1.0], [1.0], [0.0], [0.0]).numpy()
  np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), atol=1e-3)
  # a third of the colour circle turns red into green
  red = tf.constant([[[[1.0, 0.0, 0.0]]]])
  np.testing.assert_allclose(augment.adjust_colors(red, [1.0], [1.0], [1.0], [1 / 3]), [[[[0, 1, 0]]]],
                             atol=1e-5)


def test_grey_images_only_get_brightness_and_contrast():
  grey = tf.random.uniform([2, 4, 4, 1], seed=4)
  out = augment.adjust_colors(grey, [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.3, 0.3])
  np.testing.assert_allclose(out, grey, atol=1e-6)
  view = augment.contrastive_view(grey, _noise(0, grey), (0.5, 1.0),
                                  (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
  assert view.shape == grey.shape and float(tf.reduce_min(view)) >= 0 and float(tf.reduce_max(view)) <= 1


def test_random_grayscale_makes_equal_channels_with_its_probability():
  images = tf.random.uniform([100, 4, 4, 3], seed=5)
  out = augment.random_grayscale(images, _noise(0, images), 0.3).numpy()
  grey = np.all(np.isclose(out[..., 0], out[..., 2]), axis=(1, 2))
  assert 15 < grey.sum() < 45
  np.testing.assert_array_equal(out[~grey], images.numpy()[~grey])


def test_contrastive_view_is_reproducible_from_the_seed():
  images = tf.random.uniform([4, 8, 8, 3], seed=6)
  a, b = (augment.contrastive_view(images, _noise(9, images), (0.2, 1.0),
                                   (0.4, 0.4, 0.4, 0.1), 0.8, 0.2) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, images)


def test_warp_matches_tensorflows_projective_transform_op():
  images = tf.random.uniform([5, 11, 13, 3], seed=8)
  noise = noise_lib.BatchNoise(3, step=0, batch_size=5)
  transforms = augment.affine_transforms(noise.uniform([], 0.7, 1.4), noise.uniform([], -1.0, 1.0),
                                         noise.uniform([], -0.3, 0.3), noise.uniform([], -0.3, 0.3),
                                         11, 13)
  expected = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=[11, 13], fill_value=0.25,
      interpolation="BILINEAR", fill_mode="CONSTANT")
  np.testing.assert_allclose(augment.warp(images, transforms, fill_value=0.25), expected, atol=1e-5)
  compiled = tf.function(augment.warp, jit_compile=True)(images, transforms, 0.25)
  np.testing.assert_allclose(compiled, expected, atol=1e-5)


def test_random_resized_crop_samples_like_tensorflows_crop_and_resize():
  images = tf.random.uniform([6, 10, 12, 3], seed=9)
  crops = augment.random_resized_crop(images, _noise(4, images), (0.2, 0.9))
  # the same boxes, from the same noise, through tf.image.crop_and_resize
  noise = _noise(4, images)
  area, log_ratio = noise.uniform([], 0.2, 0.9), noise.uniform([], math.log(3 / 4), math.log(4 / 3))
  width = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), 1.0)
  height = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), 1.0)
  offsets = noise.uniform([2], 0.0, 1.0)
  top, left = offsets[:, 0] * (1.0 - height), offsets[:, 1] * (1.0 - width)
  boxes = tf.stack([top, left, top + height, left + width], axis=-1)
  expected = tf.image.crop_and_resize(images, boxes, tf.range(6), [10, 12])
  np.testing.assert_allclose(crops, expected, atol=1e-5)
