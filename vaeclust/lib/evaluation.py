"""Clustering a dataset with a trained model and writing the evaluation contract.

MODEL_DIR/eval/metrics.json   {"acc", "nmi", "ari", "num_examples", "num_clusters", "step", ...}
MODEL_DIR/eval/assignments.csv one row per image: id, cluster, confidence, fit
MODEL_DIR/eval/skipped.csv     one row per image file that could not be read: file, reason
MODEL_DIR/eval/clusters.png    the most confident images of each cluster, one row per cluster,
                               labelled with its id, size and matched class
MODEL_DIR/eval/confusion.png   classes × clusters counts, clusters in the order of their matched
                               class (only with labels)
MODEL_DIR/eval/projector_config.pbtxt, projector/  embeddings, metadata and sprite of the first
                               --projector_examples images for TensorBoard's Projector tab

The files of eval/ are always those of one evaluation (the step in metrics.json).
"""
import csv
import dataclasses
import io
import math
import os
from typing import Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from vaeclust.lib import data
from vaeclust.lib import files
from vaeclust.lib import images as images_lib
from vaeclust.lib import metrics as metrics_lib

MAX_GRID_ROWS = 100
PROJECTOR_DIR = "projector"


@dataclasses.dataclass
class Predictions:
  ids: np.ndarray
  labels: np.ndarray
  clusters: np.ndarray
  confidences: np.ndarray
  examples: np.ndarray  # [K, per_cluster, H, W, C] uint8, the most confident images of each cluster
  example_counts: np.ndarray  # [K] how many of `examples` are filled
  embeddings: np.ndarray = None  # [n, D] float32 of the first n images (n ≤ projector_examples)
  thumbnails: np.ndarray = None  # [n, t, t, C] uint8 of the same images, for the projector's sprite
  fits: np.ndarray = None  # [N] how well the model explains each image (higher: better)


def thumbnail_size(image_size: int, count: int) -> int:
  """Side of the projector's thumbnails: at most 64 pixels, and `count` of them in a square sprite
  of at most 8192 × 8192 (TensorBoard's limit)."""
  return max(1, min(image_size, 64, 8192 // max(1, math.ceil(math.sqrt(count)))))


def batch_function(fn: Callable, image_shape, *extra_specs: tf.TensorSpec):
  """`fn(images, *extra)` as one tf.function for float images [B, *image_shape] of any batch size:
  traced once, not again for a split's smaller last batch, and without AutoGraph (the models'
  inference has no tensor-dependent Python control flow)."""
  images = tf.TensorSpec([None, *image_shape], tf.float32)
  return tf.function(fn, input_signature=[images, *extra_specs], autograph=False)


def predict(outputs_fn: Callable, batches: tf.data.Dataset, num_clusters: int,
            per_cluster: int = 10, projector_examples: int = 0) -> Predictions:
  """Runs `outputs_fn(float images) → {"probabilities": [B, K], "embedding": [B, D]}` over every
  batch exactly once; keeps the embeddings and thumbnails of the first `projector_examples`."""
  ids, labels, clusters, confidences, embeddings, thumbnails, fits = [], [], [], [], [], [], []
  examples, best = None, np.full((num_clusters, per_cluster), -np.inf)
  kept = 0
  for batch in batches:
    outputs = outputs_fn(batch["image"])
    probs = outputs["probabilities"].numpy()
    cluster, confidence = probs.argmax(axis=1), probs.max(axis=1)
    ids.append(batch["id"].numpy())
    labels.append(batch["label"].numpy())
    clusters.append(cluster)
    confidences.append(confidence)
    if "fit" in outputs:
      fits.append(np.asarray(outputs["fit"], np.float32))
    pictures = np.round(batch["image"].numpy() * 255).astype(np.uint8)
    if kept < projector_examples:
      take = min(projector_examples - kept, len(probs))
      size = thumbnail_size(pictures.shape[1], projector_examples)
      embeddings.append(np.asarray(outputs["embedding"][:take], np.float32))
      thumbnails.append(data.resize_uint8(pictures[:take], size).numpy())
      kept += take
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
                     np.concatenate(confidences), examples, np.isfinite(best).sum(axis=1),
                     np.concatenate(embeddings) if embeddings else None,
                     np.concatenate(thumbnails) if thumbnails else None,
                     np.concatenate(fits) if fits else None)


def summarize(predictions: Predictions, num_clusters: int, step: int,
              over_clustering: int = 1) -> dict:
  """The metrics.json content: scores against labels (null without labels) and counts."""
  has_labels = np.any(predictions.labels >= 0)
  scores = metrics_lib.scores(predictions.labels if has_labels else None, predictions.clusters,
                              over=over_clustering)
  result = dict(scores, num_examples=int(len(predictions.clusters)), num_clusters=num_clusters,
                step=int(step), clusters_used=int(len(np.unique(predictions.clusters))))
  if predictions.fits is not None:
    result["fit_threshold"] = fit_threshold(predictions.fits)
  logging.info("Evaluation at step %d on %d images: %s", step, result["num_examples"],
               {k: v for k, v in result.items() if k in ("acc", "nmi", "ari", "clusters_used")})
  return result


@dataclasses.dataclass
class Pictures:
  """What a person looks at after an evaluation (eval/*.png and TensorBoard)."""
  clusters: np.ndarray  # uint8 [H, W, C]: a labelled row of most confident images per cluster
  confusion: Optional[bytes]  # PNG of the classes × clusters counts; None without labels


def pictures(predictions: Predictions, num_clusters: int, class_names=(),
             over_clustering: int = 1) -> Pictures:
  """Both pictures, clusters in the order of the class Hungarian matching gives them (so that a
  good clustering is a diagonal), each named by its id, size and matched class."""
  sizes = np.bincount(predictions.clusters, minlength=num_clusters)
  if not np.any(predictions.labels >= 0):
    order = np.arange(num_clusters)
    return Pictures(cluster_picture(predictions, order, [f"#{k} n={sizes[k]}" for k in order]), None)
  counts = metrics_lib.contingency(predictions.labels, predictions.clusters,
                                   len(class_names), num_clusters)
  names = [class_name(class_names, i) for i in range(counts.shape[0])]
  matched = metrics_lib.matched_classes(counts, over_clustering)
  order = cluster_order(matched, sizes)
  titles = [f"#{k} n={sizes[k]} class {names[matched[k]] if matched[k] >= 0 else '-'}"
            for k in order]
  return Pictures(cluster_picture(predictions, order, titles),
                  confusion_png(counts[:, order], names, [str(k) for k in order]))


def class_name(class_names, label: int) -> str:
  """The name of class `label` (its number where the data names no classes)."""
  return class_names[label] if label < len(class_names) else str(label)


def cluster_order(matched: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Clusters by matched class (largest first within a class), unmatched ones last by size."""
  return np.array(sorted(range(len(matched)), key=lambda k: (matched[k] < 0, matched[k], -sizes[k], k)),
                  np.int64)


FIT_PERCENTILE = 1.0


def fit_threshold(fits: np.ndarray) -> float:
  """The suggested outlier threshold: the FIT_PERCENTILE-th percentile of the evaluated images'
  fits (an image that fits worse than 99% of them is flagged)."""
  return float(np.percentile(fits, FIT_PERCENTILE))


def write_outputs(eval_dir: str, predictions: Predictions, result: dict, skipped=(),
                  figures: Optional[Pictures] = None, class_names=()):
  """Replaces the evaluation files of `eval_dir` by one new set (files.replace_directory; its
  TensorBoard events stay): metrics.json (`result`, whose step is the set's), assignments.csv,
  skipped.csv (the (file, reason) pairs of `skipped`; header only when none), the pictures
  (`figures`, default: unnamed classes) and the projector's files where predictions hold
  embeddings. A kill leaves the previous set whole, never files of two evaluations side by side."""
  figures = figures or pictures(predictions, result["num_clusters"])

  def write(directory):
    _write_set(directory, predictions, result, skipped, figures)
    if predictions.embeddings is not None:
      write_projector(directory, predictions, class_names)
  files.replace_directory(eval_dir, write)


def write_projector(directory: str, predictions: Predictions, class_names=()):
  """TensorBoard Projector files for the kept embeddings: projector/embeddings.tsv, metadata.tsv
  (id, cluster, confidence, class), sprite.png, and the plugin's projector_config.pbtxt in
  `directory` (a run directory of `tensorboard --logdir=MODEL_DIR`), with paths relative to it."""
  from tensorboard.plugins import projector  # pylint: disable=g-import-not-at-top
  n = len(predictions.embeddings)
  sub = os.path.join(directory, PROJECTOR_DIR)
  tf.io.gfile.makedirs(sub)
  files.write_atomically(os.path.join(sub, "embeddings.tsv"), "".join(
      "\t".join(f"{v:.6g}" for v in row) + "\n" for row in predictions.embeddings))

  rows = [["id", "cluster", "confidence", "class"]] + [
      [i.decode(), str(c), f"{p:.4f}", class_name(class_names, label) if label >= 0 else ""]
      for i, c, p, label in zip(predictions.ids[:n], predictions.clusters[:n],
                                predictions.confidences[:n], predictions.labels[:n])]
  files.write_atomically(os.path.join(sub, "metadata.tsv"), "".join(
      "\t".join(v.replace("\t", " ").replace("\n", " ") for v in row) + "\n" for row in rows))
  side = math.ceil(math.sqrt(n))
  thumbs = np.zeros((side * side,) + predictions.thumbnails.shape[1:], np.uint8)
  thumbs[:n] = predictions.thumbnails
  images_lib.write_png(os.path.join(sub, "sprite.png"),
                       images_lib.grid(thumbs.reshape((side, side) + thumbs.shape[1:]), pad=0))
  config = projector.ProjectorConfig()
  embedding = config.embeddings.add()
  embedding.tensor_name = "embedding"
  embedding.tensor_path = os.path.join(PROJECTOR_DIR, "embeddings.tsv")
  embedding.metadata_path = os.path.join(PROJECTOR_DIR, "metadata.tsv")
  embedding.sprite.image_path = os.path.join(PROJECTOR_DIR, "sprite.png")
  embedding.sprite.single_image_dim.extend(predictions.thumbnails.shape[1:3])
  projector.visualize_embeddings(directory, config)


def _write_set(directory: str, predictions: Predictions, result: dict, skipped, figures: Pictures):
  files.write_json(os.path.join(directory, "metrics.json"), result)
  fits = predictions.fits if predictions.fits is not None else np.full(len(predictions.ids), np.nan)
  _write_csv(os.path.join(directory, "assignments.csv"), ["id", "cluster", "confidence", "fit"],
             ([example_id.decode(), int(cluster), f"{confidence:.6f}", f"{fit:.6f}"]
              for example_id, cluster, confidence, fit in zip(predictions.ids, predictions.clusters,
                                                              predictions.confidences, fits)))
  _write_csv(os.path.join(directory, "skipped.csv"), ["file", "reason"], skipped)
  images_lib.write_png(os.path.join(directory, "clusters.png"), figures.clusters)
  if figures.confusion is not None:
    files.write_atomically(os.path.join(directory, "confusion.png"), figures.confusion, "wb")


def _write_csv(path: str, header, rows):
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(header)
  writer.writerows(rows)
  files.write_atomically(path, out.getvalue())


def cluster_picture(predictions: Predictions, order=None, titles=None) -> np.ndarray:
  """One row per non-empty cluster of `order` (default: by id; the first MAX_GRID_ROWS), most
  confident images first, each row after its title (e.g. "#3 n=512 class seven") when given."""
  order = np.arange(len(predictions.example_counts)) if order is None else np.asarray(order)
  titles = [str(k) for k in order] if titles is None else list(titles)
  shown = [(k, t) for k, t in zip(order, titles) if predictions.example_counts[k] > 0][:MAX_GRID_ROWS]
  rows = predictions.examples[[k for k, _ in shown]].copy()
  for row, (k, _) in enumerate(shown):
    rows[row, predictions.example_counts[k]:] = 0
  # small images are enlarged so that a row is tall enough for its title
  zoom = max(1, -(-images_lib.TITLE_HEIGHT // rows.shape[2]))
  rows = rows.repeat(zoom, axis=2).repeat(zoom, axis=3)
  return images_lib.titled_rows(images_lib.grid(rows), [t for _, t in shown], rows.shape[2])


def confusion_png(counts: np.ndarray, class_names, cluster_names) -> bytes:
  """A heat map of classes (rows, named) × clusters (columns, named), counts written in the cells
  when they are few enough to read; PNG bytes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  classes, clusters = counts.shape
  fig, ax = plt.subplots(figsize=(min(2.5 + clusters * 0.4, 40), min(1.5 + classes * 0.35, 40)))
  shown = ax.imshow(counts, cmap="viridis", aspect="auto")
  ax.set_xticks(np.arange(clusters), cluster_names, rotation=90 if clusters > 30 else 0,
                fontsize=8 if clusters > 30 else 10)
  ax.set_yticks(np.arange(classes), class_names, fontsize=8 if classes > 30 else 10)
  if classes * clusters <= 900:
    threshold = counts.max() / 2
    for i in range(classes):
      for j in range(clusters):
        if counts[i, j]:
          ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                  color="black" if counts[i, j] > threshold else "white")
  ax.set_xlabel("cluster (ordered by matched class)")
  ax.set_ylabel("class")
  fig.colorbar(shown, ax=ax, label="images")
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
  plt.close(fig)
  return buffer.getvalue()
