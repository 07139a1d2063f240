"""The per-step noise: numbers strictly inside (0, 1), so normal and Gumbel draws stay finite."""
import numpy as np
import tensorflow as tf

from vaeclust.lib import noise as noise_lib


def test_every_32_bit_integer_maps_strictly_inside_the_unit_interval():
  bits = tf.constant([0, 1, 2**31, 2**32 - 2, 2**32 - 1], tf.uint32)
  fractions = noise_lib.open_unit_interval(bits).numpy()
  assert fractions.min() > 0.0 and fractions.max() < 1.0
  np.testing.assert_allclose(fractions[0], 1.0 - fractions[-1], rtol=1e-6)  # centred cells
  assert np.isfinite(tf.math.ndtri(fractions).numpy()).all()
  assert np.isfinite(-np.log(-np.log(fractions))).all()  # Gumbel quantile


def test_normal_draws_have_unit_moments():
  draws = noise_lib.BatchNoise(seed=0, step=tf.constant(3, tf.int64), batch_size=50_000).normal([4])
  draws = draws.numpy()
  assert draws.shape == (50_000, 4) and np.isfinite(draws).all()
  np.testing.assert_allclose(draws.mean(), 0.0, atol=0.01)
  np.testing.assert_allclose(draws.std(), 1.0, atol=0.01)
