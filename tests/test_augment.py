"""The affine warp against transforms whose result is known exactly."""
import math

import numpy as np
import tensorflow as tf

from vaeclust.lib import augment


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


def test_random_affine_is_reproducible_from_the_generator_seed():
  images = tf.random.uniform([4, 8, 8, 1], seed=3)
  a = augment.random_affine(images, tf.random.Generator.from_seed(7), (0.9, 1.1), 10, 0.1)
  b = augment.random_affine(images, tf.random.Generator.from_seed(7), (0.9, 1.1), 10, 0.1)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, images)
