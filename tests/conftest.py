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


@pytest.fixture
def odd_image_folder(tmp_path):
  """A flat folder with one file of each awkward kind: returns (folder, {readable file: the RGB
  it shows}, [unreadable files])."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "images"
  folder.mkdir()
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(folder / "whole.jpg", quality=90)
  whole = (folder / "whole.jpg").read_bytes()
  (folder / "truncated.jpg").write_bytes(whole[:len(whole) * 2 // 3])
  with Image.open(folder / "truncated.jpg") as image:
    image.verify()  # a header check takes it for an image
  (folder / "empty.png").write_bytes(b"")
  Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
  Image.fromarray(np.full((20, 30), 100 * 257, np.uint16)).save(folder / "sixteen_bit.png")
  palette = Image.new("P", (20, 20), 1)
  palette.putpalette([0, 0, 0, 10, 200, 30])
  palette.save(folder / "palette.gif")
  Image.new("RGBA", (20, 20), (0, 0, 250, 100)).save(folder / "rgba.png")
  Image.new("RGB", (1, 1), (0, 250, 0)).save(folder / "one_pixel.png")
  Image.new("RGB", (8000, 8000), (250, 250, 0)).save(folder / "huge.png")
  readable = {"whole.jpg": tuple(noise.mean(axis=(0, 1))), "cmyk.jpg": (255, 0, 0),
              "sixteen_bit.png": (100, 100, 100), "palette.gif": (10, 200, 30),
              "rgba.png": (0, 0, 250), "one_pixel.png": (0, 250, 0), "huge.png": (250, 250, 0)}
  return folder, readable, ["empty.png", "truncated.jpg"]
