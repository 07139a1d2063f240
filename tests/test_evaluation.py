"""Evaluation pictures: clusters ordered by matched class, named rows, a readable confusion."""
import io
import os

import numpy as np
from PIL import Image

from vaeclust.lib import evaluation


def _predictions(labels, clusters, num_clusters, size=8):
  examples = np.zeros((num_clusters, 3, size, size, 1), np.uint8)
  counts = np.minimum(np.bincount(clusters, minlength=num_clusters), 3)
  for k in range(num_clusters):
    examples[k, :counts[k]] = 40 + 20 * k
  return evaluation.Predictions(np.array([b"x"] * len(labels)), np.asarray(labels),
                                np.asarray(clusters), np.ones(len(labels)), examples, counts)


def test_clusters_are_ordered_by_matched_class_so_a_good_clustering_is_a_diagonal():
  labels = np.repeat([0, 1, 2], 5)
  permutation = np.array([2, 0, 1])
  clusters = permutation[labels]
  clusters[0] = 3  # a small extra cluster, matched to no class
  matched = np.array([1, 2, 0, -1])
  order = evaluation.cluster_order(matched, np.bincount(clusters, minlength=4))
  np.testing.assert_array_equal(order, [2, 0, 1, 3])
  figures = evaluation.pictures(_predictions(labels, clusters, 4), 4, ("zero", "one", "two"))
  confusion = np.asarray(Image.open(io.BytesIO(figures.confusion)))
  assert confusion.ndim == 3 and confusion.shape[0] > 100
  # four non-empty clusters → four rows of 8-pixel images enlarged to fit their titles
  picture = figures.clusters
  assert picture.dtype == np.uint8 and picture.shape[-1] == 1
  rows = 4
  row_height = (picture.shape[0] - 1) // rows - 1
  assert row_height >= 14
  # the first row holds cluster 2's images (class zero): the grey level 40 + 20·2 = 80
  title_width = picture.shape[1] - (3 * (row_height + 1) + 1)
  assert title_width > 40
  assert picture[1 + row_height // 2, title_width + 1 + row_height // 2, 0] == 80


def test_unlabelled_data_gets_a_titled_cluster_picture_and_no_confusion():
  clusters = np.array([0, 0, 1, 2])
  figures = evaluation.pictures(_predictions(np.full(4, -1), clusters, 3), 3)
  assert figures.confusion is None
  assert figures.clusters.shape[0] == 3 * (16 + 1) + 1  # 8-pixel images shown at 16


def test_projector_files_parse_with_tensorboards_config_and_match_the_embeddings(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins import projector  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (30, 12, 12, 3), dtype=np.uint8)
  weights = rng.normal(size=(12 * 12 * 3, 5)).astype(np.float32)
  labels = np.arange(30) % 3

  def outputs(batch):
    embedding = tf.reshape(batch, [-1, 12 * 12 * 3]) @ weights
    return {"embedding": embedding, "probabilities": tf.nn.softmax(embedding[:, :4])}

  batches = tf.data.Dataset.from_tensor_slices(
      {"image": images.astype(np.float32) / 255, "label": labels,
       "id": [f"img/{i}" for i in range(30)]}).batch(8)
  predictions = evaluation.predict(outputs, batches, 4, projector_examples=20)
  assert predictions.embeddings.shape == (20, 5) and predictions.thumbnails.shape == (20, 12, 12, 3)
  result = {"num_clusters": 4, "step": 0}
  eval_dir = str(tmp_path / "eval")
  evaluation.write_outputs(eval_dir, predictions, result, class_names=("cat", "dog", "owl"))

  with open(os.path.join(eval_dir, "projector_config.pbtxt")) as f:
    config = text_format.Parse(f.read(), projector.ProjectorConfig())
  (embedding,) = config.embeddings
  vectors = np.loadtxt(os.path.join(eval_dir, embedding.tensor_path), delimiter="\t")
  np.testing.assert_allclose(vectors, outputs(images[:20].astype(np.float32) / 255)["embedding"],
                             rtol=1e-4, atol=1e-4)
  with open(os.path.join(eval_dir, embedding.metadata_path)) as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert rows[0] == ["id", "cluster", "confidence", "class"] and len(rows) == 21
  assert rows[4][0] == "img/3" and rows[4][3] == "cat" and rows[5][3] == "dog"
  assert [int(r[1]) for r in rows[1:]] == list(predictions.clusters[:20])
  sprite = np.asarray(Image.open(os.path.join(eval_dir, embedding.sprite.image_path)))
  assert list(embedding.sprite.single_image_dim) == [12, 12]
  assert sprite.shape == (5 * 12, 5 * 12, 3)  # 20 thumbnails in a 5 × 5 square
  np.testing.assert_array_equal(sprite[12:24, :12], images[5])  # row 1, column 0: the sixth image


def test_thumbnails_fit_tensorboards_sprite_limit():
  assert evaluation.thumbnail_size(28, 10_000) == 28
  assert evaluation.thumbnail_size(96, 10_000) == 64
  assert evaluation.thumbnail_size(96, 100_000) * 317 <= 8192
