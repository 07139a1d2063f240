"""Shared test set-up: quiet TensorFlow, CPU only (split in two logical devices), fixed seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

# Two logical CPU devices (before TensorFlow initialises its devices), so that in-process tests
# can run MirroredStrategy with two replicas.
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def fixed_seeds():
  np.random.seed(0)
  tf.random.set_seed(0)
