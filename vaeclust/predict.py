"""Cluster image files with a trained model of either method, without a server.

  python -m vaeclust.predict --model_dir=runs/mnist --output=clusters.csv a.png more_images/ ...

Folders are searched recursively for PNG/JPEG/BMP/GIF files. Images are decoded, converted and
resized exactly as in training and in the exported SavedModel, then clustered in batches (any
number of files fits in memory) with the newest checkpoint of --model_dir. The CSV has the
columns file, cluster, confidence (the largest probability), fit (how well the model explains the
image: VC's ELBO per pixel, C3-GAN's real/fake logit), outlier (1 when fit is below the threshold
the run's evaluation suggested, empty when there is none), then p_0 … p_{K-1}; it is written aside
and renamed into place when complete. Files that do not decode are named on standard error
and left out, and the exit status is then 1.
"""
import concurrent.futures
import csv
import os
import sys
import uuid

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from export import saved_model
from vaeclust.lib import data

FLAGS = flags.FLAGS
HEADER = ["file", "cluster", "confidence", "fit", "outlier"]


def define_flags():
  flags.DEFINE_string("model_dir", None, "Trained model: the --model_dir of a training run of "
                      "either method (its newest checkpoint is used).")
  flags.DEFINE_string("output", None, "CSV file to write (file, cluster, confidence, p_0 …).")
  flags.DEFINE_integer("batch_size", 256, "Images clustered at a time.", lower_bound=1)
  for name in ("model_dir", "output"):
    flags.mark_flag_as_required(name)


def image_files(paths):
  """The image files named by `paths` (files as given, folders searched recursively and sorted),
  and the paths that are neither."""
  found, missing = [], []
  for path in paths:
    if tf.io.gfile.isdir(path):
      inside = [os.path.join(directory, name) for directory, _, names in tf.io.gfile.walk(path)
                for name in names if name.lower().endswith(data.IMAGE_EXTENSIONS)]
      found.extend(sorted(inside))
    elif tf.io.gfile.exists(path):
      found.append(path)
    else:
      missing.append(path)
  return found, missing


class Clusterer:
  """A trained model and the training pipeline's preprocessing, one traced function for batches."""

  def __init__(self, model_dir: str):
    self.run, self.model, self.step, self.checkpoint = saved_model.load_trained(model_dir)
    self.image_size = self.run["model"]["image_size"]
    self.channels = self.run["model"]["channels"]
    self.fit_threshold = saved_model.fit_threshold(model_dir, self.step)
    self._outputs = tf.function(
        lambda images: self.model(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec([None, self.image_size, self.image_size, self.channels],
                                       tf.uint8)])

  def load(self, path: str):
    """uint8 [S, S, C] of one file as training sees it (as --dataset=folder decodes and formats it)."""
    image = data.decode_file(tf.io.read_file(path))
    return data.resize_uint8(data.convert_channels(image, self.channels), self.image_size).numpy()

  def outputs(self, images: np.ndarray):
    """(probabilities [B, K], fit [B]) of uint8 images [B, S, S, C]."""
    outputs = self._outputs(images)
    return (tf.cast(outputs["probabilities"], tf.float32).numpy(),
            tf.cast(outputs["fit"], tf.float32).numpy())


def _try_load(clusterer: Clusterer, path: str):
  try:
    return clusterer.load(path), None
  except tf.errors.OpError as e:
    return None, e.message.strip().splitlines()[0]


def predict(clusterer: Clusterer, files, output: str, batch_size: int = 256):
  """Writes `output` for `files`; returns the (file, reason) pairs that could not be read."""
  unreadable = []
  temporary = f"{output}.tmp-{uuid.uuid4().hex}"
  if os.path.dirname(output):
    tf.io.gfile.makedirs(os.path.dirname(output))
  num_clusters = None
  try:
    with tf.io.gfile.GFile(temporary, "w") as f, \
        concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
      writer = csv.writer(f)
      for start in range(0, len(files), batch_size):
        names = files[start:start + batch_size]
        loaded = list(pool.map(lambda p: _try_load(clusterer, p), names))
        unreadable.extend((n, why) for n, (_, why) in zip(names, loaded) if why)
        readable = [(n, image) for n, (image, _) in zip(names, loaded) if image is not None]
        if not readable:
          continue
        probabilities, fits = clusterer.outputs(np.stack([image for _, image in readable]))
        if num_clusters is None:
          num_clusters = probabilities.shape[1]
          writer.writerow(HEADER + [f"p_{k}" for k in range(num_clusters)])
        for (name, _), p, fit in zip(readable, probabilities, fits):
          outlier = "" if np.isnan(clusterer.fit_threshold) else int(fit < clusterer.fit_threshold)
          writer.writerow([name, int(p.argmax()), f"{p.max():.6f}", f"{fit:.6f}", outlier]
                          + [f"{v:.6f}" for v in p])
        logging.info("Clustered %d of %d files.", min(start + batch_size, len(files)), len(files))
      if num_clusters is None:  # nothing readable: a header only
        writer.writerow(HEADER)
    tf.io.gfile.rename(temporary, output, overwrite=True)
  finally:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.remove(temporary)
  return unreadable


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Name the image files or folders to cluster after the flags.")
  files, missing = image_files(paths)
  try:
    clusterer = Clusterer(FLAGS.model_dir)
  except saved_model.ExportError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("Clustering %d files with %s (step %d).", len(files), clusterer.checkpoint,
               clusterer.step)
  unreadable = predict(clusterer, files, FLAGS.output, FLAGS.batch_size)
  for path in missing:
    print(f"{path}: not clustered: no such file or folder", file=sys.stderr)
  for path, reason in unreadable:
    print(f"{path}: not clustered: {reason}", file=sys.stderr)
  print(f"{len(files) - len(unreadable)} files clustered into {FLAGS.output}", file=sys.stderr)
  if missing or unreadable:
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
