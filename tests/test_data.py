"""Every data source: bundled sets, tfds names (mocked, offline), image folders; the pipelines."""
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vaeclust.lib import data


def test_bundled_sets_are_real_labelled_digits():
  ds, info = data.load("mnist5k", split="all", image_size=28)
  assert info.num_examples == 5000 and info.channels == 1 and info.has_labels
  labels = np.array([int(e["label"]) for e in ds])
  assert np.bincount(labels).tolist() == [500] * 10
  ds, info = data.load("digits", split="all", image_size=16)
  example = next(iter(ds))
  assert example["image"].shape == (16, 16, 1) and example["image"].dtype == tf.uint8
  assert int(tf.reduce_max(example["image"])) > 200  # rescaled from 0..16
  assert info.num_examples == 1797


@pytest.mark.parametrize("name", sorted(data.TFDS_SOURCES))
def test_tfds_sources_read_through_tfds(name, tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    ds, info = data.load(name, split=data.default_split(name, True), image_size=32,
                         data_dir=str(tmp_path), crop_to_bbox=True)
    examples = list(ds)
  assert len(examples) == 6 and info.has_labels
  assert examples[0]["image"].shape == (32, 32, data.natural_channels(name))
  assert examples[0]["id"].numpy().decode().startswith(name + "/")


def test_stl10_can_train_on_the_unlabelled_split(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    ds, _ = data.load("stl10", split="train+unlabelled", image_size=24, data_dir=str(tmp_path))
    assert len(list(ds)) == 4


def test_missing_tfds_data_says_where_and_how(tmp_path):
  with pytest.raises(data.DataError, match=r"not prepared under .*tfds build cifar10"):
    data.load("cifar10", split="train", image_size=32, data_dir=str(tmp_path))


def _save(path, size=(10, 12), mode="RGB", value=200):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_labelled_folder_skips_unreadable_files(tmp_path, caplog):
  _save(str(tmp_path / "cats" / "a.png"))
  _save(str(tmp_path / "cats" / "b.jpg"), mode="L")
  _save(str(tmp_path / "dogs" / "c.bmp"))
  _save(str(tmp_path / "dogs" / "d.gif"), mode="L")
  (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
  (tmp_path / "dogs" / "notes.txt").write_text("ignored")
  ds, info = data.load("folder", split="all", image_size=8, data_dir=str(tmp_path), channels=3)
  examples = {e["id"].numpy().decode(): e for e in ds}
  assert sorted(examples) == ["cats/a.png", "cats/b.jpg", "dogs/c.bmp", "dogs/d.gif"]
  assert [int(examples[k]["label"]) for k in sorted(examples)] == [0, 0, 1, 1]
  assert examples["cats/a.png"]["image"].shape == (8, 8, 3) and info.has_labels
  assert "broken.png" in caplog.text


def test_folder_decodes_every_file_and_names_each_unreadable_one(odd_image_folder, caplog):
  folder, readable, unreadable = odd_image_folder
  ds, info = data.load("folder", split="all", image_size=8, data_dir=str(folder), channels=3)
  colours = {e["id"].numpy().decode(): e["image"].numpy().mean(axis=(0, 1)) for e in ds}
  assert sorted(colours) == sorted(readable) and info.num_examples == len(readable)
  for name, rgb in readable.items():
    np.testing.assert_allclose(colours[name], rgb, atol=3, err_msg=name)
  assert [name for name, _ in info.skipped] == unreadable
  assert all(reason for _, reason in info.skipped)
  for name, reason in info.skipped:
    assert f"{name}: {reason}" in caplog.text


def test_folder_of_unreadable_files_fails_when_listed(tmp_path):
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "text.jpg").write_text("not a picture")
  with pytest.raises(data.DataError, match="None of the 2 image files .* could be read"):
    data.load("folder", split="all", image_size=8, data_dir=str(tmp_path))


def test_flat_folder_has_no_labels(tmp_path):
  for i in range(3):
    _save(str(tmp_path / f"{i}.png"))
  ds, info = data.load("folder", split="all", image_size=8, data_dir=str(tmp_path), channels=1)
  labels = [int(e["label"]) for e in ds]
  assert labels == [-1, -1, -1] and not info.has_labels


def test_folder_errors_are_clear(tmp_path):
  with pytest.raises(data.DataError, match="not a directory"):
    data.load("folder", split="all", image_size=8, data_dir=str(tmp_path / "missing"))
  with pytest.raises(data.DataError, match="No image files"):
    data.load("folder", split="all", image_size=8, data_dir=str(tmp_path))


def test_training_batches_are_deterministic_with_a_seed():
  ds, _ = data.load("digits", split="all", image_size=8)
  first = [b["id"].numpy().tolist() for b in data.training_batches(ds, 32, seed=3).take(3)]
  again = [b["id"].numpy().tolist() for b in data.training_batches(ds, 32, seed=3).take(3)]
  other = [b["id"].numpy().tolist() for b in data.training_batches(ds, 32, seed=4).take(3)]
  assert first == again and first != other
  batch = next(iter(data.training_batches(ds, 32, seed=3)))
  assert batch["image"].dtype == tf.float32 and float(tf.reduce_max(batch["image"])) <= 1.0


def test_evaluation_batches_cover_every_example_once():
  ds, _ = data.load("digits", split="all", image_size=8)
  ids = np.concatenate([b["id"].numpy() for b in data.evaluation_batches(ds, 100)])
  assert len(ids) == 1797 and len(set(ids.tolist())) == 1797


def test_channel_conversion_is_the_same_with_known_and_unknown_channel_counts():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, size=(2, 5, 4, 1), dtype=np.uint8)
  rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], axis=-1)
  grey_alpha = np.concatenate([grey, np.full_like(grey, 7)], axis=-1)
  to_grey = np.round(tf.image.rgb_to_grayscale(rgb.astype(np.float32)).numpy()).astype(np.uint8)
  unknown = [tf.TensorSpec([None, None, None, None], tf.uint8)]  # channels known at run time only
  dynamic = {c: tf.function(lambda x, c=c: data.convert_channels(x, c), input_signature=unknown)
             for c in (1, 3)}
  for image, channels, expected in [(rgb, 3, rgb), (rgba, 3, rgb), (grey, 3, np.repeat(grey, 3, -1)),
                                    (grey_alpha, 3, np.repeat(grey, 3, -1)), (rgb, 1, to_grey),
                                    (rgba, 1, to_grey), (grey, 1, grey), (grey_alpha, 1, grey)]:
    np.testing.assert_array_equal(data.convert_channels(tf.constant(image), channels), expected)
    np.testing.assert_array_equal(dynamic[channels](tf.constant(image)), expected)


@pytest.mark.parametrize("resumed_at", [1, 27, 28, 29, 60])  # one epoch of 1797 is 28.1 batches
def test_resumed_training_batches_continue_the_uninterrupted_stream(resumed_at):
  ds, _ = data.load("digits", split="all", image_size=8)

  def ids(start, count):
    batches = data.training_batches(ds, 64, seed=3, skip=start * 64).take(count)
    return [b["id"].numpy().tolist() for b in batches]

  uninterrupted = ids(0, 70)
  assert ids(resumed_at, 70 - resumed_at) == uninterrupted[resumed_at:]
  stream = np.concatenate(uninterrupted)
  first, second = stream[:1797], stream[1797:2 * 1797]
  assert len(set(first)) == 1797 and sorted(first) == sorted(second)  # every epoch is the set
  assert first.tolist() != second.tolist()  # in another order


def test_a_folder_of_grey_images_loads_as_grey_and_one_colour_image_makes_it_colour(tmp_path):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (6, 6), dtype=np.uint8)
  Image.fromarray(grey, "L").save(tmp_path / "a.png")
  Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(tmp_path / "b.png")  # R = G = B
  Image.fromarray(grey, "L").save(tmp_path / "c.jpg")
  assert data.natural_channels("folder", str(tmp_path)) == 1
  ds, info = data.load("folder", split="all", image_size=6, data_dir=str(tmp_path))
  assert info.channels == 1 and next(iter(ds))["image"].shape == (6, 6, 1)
  colour = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
  colour[0, 0] = (200, 10, 10)
  Image.fromarray(colour, "RGB").save(tmp_path / "d.png")
  data.list_image_folder.cache_clear()  # the listing is cached per folder
  assert data.natural_channels("folder", str(tmp_path)) == 3
  assert data.load("folder", split="all", image_size=6, data_dir=str(tmp_path))[1].channels == 3
