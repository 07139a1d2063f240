"""Clustering a dataset with a trained model and writing the evaluation contract.

MODEL_DIR/eval/metrics.json   {"acc", "nmi", "ari", "num_examples", "num_clusters", "step", ...}
MODEL_DIR/eval/assignments.csv one row per image: id, cluster, confidence
MODEL_DIR/eval/skipped.csv     one row per image file that could not be read: file, reason
MODEL_DIR/eval/clusters.png    the most confident images of each cluster, one row per cluster
MODEL_DIR/eval/confusion.png   classes × clusters counts (only with labels)

The files of eval/ are always those of one evaluation (the step in metrics.json).
"""
import csv
import dataclasses
import io
import os
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from vaeclust.lib import files
from vaeclust.lib import images as images_lib
from vaeclust.lib import metrics as metrics_lib

MAX_GRID_ROWS = 100


@dataclasses.dataclass
class Predictions:
  ids: np.ndarray
  labels: np.ndarray
  clusters: np.ndarray
  confidences: np.ndarray
  examples: np.ndarray  # [K, per_cluster, H, W, C] uint8, the most confident images of each cluster
  example_counts: np.ndarray  # [K] how many of `examples` are filled


def predict(probabilities_fn: Callable, batches: tf.data.Dataset, num_clusters: int,
            per_cluster: int = 10) -> Predictions:
  """Runs `probabilities_fn(float images) → [B, K]` over every batch exactly once."""
  ids, labels, clusters, confidences = [], [], [], []
  examples, best = None, np.full((num_clusters, per_cluster), -np.inf)
  for batch in batches:
    probs = probabilities_fn(batch["image"]).numpy()
    cluster, confidence = probs.argmax(axis=1), probs.max(axis=1)
    ids.append(batch["id"].numpy())
    labels.append(batch["label"].numpy())
    clusters.append(cluster)
    confidences.append(confidence)
    pictures = np.round(batch["image"].numpy() * 255).astype(np.uint8)
    if examples is None:
      examples = np.zeros((num_clusters, per_cluster) + pictures.shape[1:], np.uint8)
    for k in np.unique(cluster):
      members = np.flatnonzero(cluster == k)
      pool_conf = np.concatenate([best[k], confidence[members]])
      pool_img = np.concatenate([examples[k], pictures[members]])
      keep = np.argsort(-pool_conf, kind="stable")[:per_cluster]
      best[k], examples[k] = pool_conf[keep], pool_img[keep]
  if not ids:
    raise ValueError("The evaluation split has no examples.")
  return Predictions(np.concatenate(ids), np.concatenate(labels), np.concatenate(clusters),
                     np.concatenate(confidences), examples, np.isfinite(best).sum(axis=1))


def summarize(predictions: Predictions, num_clusters: int, step: int,
              over_clustering: int = 1) -> dict:
  """The metrics.json content: scores against labels (null without labels) and counts."""
  has_labels = np.any(predictions.labels >= 0)
  scores = metrics_lib.scores(predictions.labels if has_labels else None, predictions.clusters,
                              over=over_clustering)
  result = dict(scores, num_examples=int(len(predictions.clusters)), num_clusters=num_clusters,
                step=int(step), clusters_used=int(len(np.unique(predictions.clusters))))
  logging.info("Evaluation at step %d on %d images: %s", step, result["num_examples"],
               {k: v for k, v in result.items() if k in ("acc", "nmi", "ari", "clusters_used")})
  return result


def write_outputs(eval_dir: str, predictions: Predictions, result: dict, skipped=()):
  """Replaces the evaluation files of `eval_dir` by one new set (files.replace_directory; its
  TensorBoard events stay): metrics.json (`result`, whose step is the set's), assignments.csv,
  skipped.csv (the (file, reason) pairs of `skipped`; header only when none) and the pictures. A
  kill leaves the previous set whole, never files of two evaluations side by side."""
  files.replace_directory(eval_dir, lambda directory: _write_set(directory, predictions, result,
                                                                 skipped))


def _write_set(directory: str, predictions: Predictions, result: dict, skipped):
  files.write_json(os.path.join(directory, "metrics.json"), result)
  _write_csv(os.path.join(directory, "assignments.csv"), ["id", "cluster", "confidence"],
             ([example_id.decode(), int(cluster), f"{confidence:.6f}"]
              for example_id, cluster, confidence in zip(predictions.ids, predictions.clusters,
                                                         predictions.confidences)))
  _write_csv(os.path.join(directory, "skipped.csv"), ["file", "reason"], skipped)
  images_lib.write_png(os.path.join(directory, "clusters.png"), cluster_picture(predictions))
  if np.any(predictions.labels >= 0):
    counts = metrics_lib.contingency(predictions.labels, predictions.clusters)
    files.write_atomically(os.path.join(directory, "confusion.png"), confusion_png(counts), "wb")


def _write_csv(path: str, header, rows):
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(header)
  writer.writerows(rows)
  files.write_atomically(path, out.getvalue())


def cluster_picture(predictions: Predictions) -> np.ndarray:
  """One row per non-empty cluster (the first MAX_GRID_ROWS), most confident images first."""
  used = np.flatnonzero(predictions.example_counts > 0)[:MAX_GRID_ROWS]
  rows = predictions.examples[used].copy()
  for row, k in enumerate(used):
    rows[row, predictions.example_counts[k]:] = 0
  return images_lib.grid(rows)


def confusion_png(counts: np.ndarray) -> bytes:
  """A heat map of classes (rows) × clusters (columns), PNG bytes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  classes, clusters = counts.shape
  fig, ax = plt.subplots(figsize=(min(2 + clusters * 0.35, 30), min(1.5 + classes * 0.35, 30)))
  shown = ax.imshow(counts, cmap="viridis", aspect="auto")
  ax.set_xlabel("cluster")
  ax.set_ylabel("class")
  fig.colorbar(shown, ax=ax, label="images")
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
  plt.close(fig)
  return buffer.getvalue()
