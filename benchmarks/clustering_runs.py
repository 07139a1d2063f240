"""What the quality benchmarks share: a method trained through its public entry point, the raw-pixel
baselines fitted on the same images, and the mean ± std cells of their tables."""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn import cluster as sk_cluster
from sklearn import mixture as sk_mixture

from vaeclust.lib import data
from vaeclust.lib import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCORES = ("acc", "nmi", "ari", "many_to_one_acc")


def config_flags(name: str) -> dict:
  """The `--name=value` lines of configs/NAME.flags."""
  with open(os.path.join(ROOT, "configs", f"{name}.flags")) as f:
    return dict(line.strip().lstrip("-").split("=", 1) for line in f
                if line.startswith("--") and "=" in line)


def pixels(config: str):
  """(images as [N, pixels] floats in [0, 1], labels) of a config's bundled dataset."""
  settings = config_flags(config)
  return images_and_labels(settings["dataset"], int(settings["image_size"]))


def images_and_labels(dataset: str, image_size: int, data_dir=None):
  """(images as [N, pixels] floats in [0, 1], labels) of a dataset (a folder: its sub-folders)."""
  ds, _ = data.load(dataset, split="all", image_size=image_size, data_dir=data_dir)
  examples = list(ds.as_numpy_iterator())
  images = np.stack([e["image"] for e in examples]).reshape(len(examples), -1) / 255.0
  return images.astype(np.float64), np.array([e["label"] for e in examples])


def write_folder(dataset: str, image_size: int, root: str):
  """Writes a bundled dataset as PNG files in one sub-folder per class below `root`, so that it
  can be clustered as a user's folder would be."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  ds, _ = data.load(dataset, split="all", image_size=image_size)
  for i, example in enumerate(ds.as_numpy_iterator()):
    folder = os.path.join(root, f"class_{example['label']}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(example["image"].squeeze(-1) if example["image"].shape[-1] == 1
                    else example["image"]).save(os.path.join(folder, f"{i}.png"))


def train_and_score(module: str, config: str, seed: int, extra_flags=(), inspect=None):
  """Runs `python -m MODULE --flagfile=configs/CONFIG.flags --seed=SEED EXTRA_FLAGS` in a fresh
  model_dir: its eval scores, wall time (`seconds`), console log (`log`) and what
  `inspect(model_dir)` returns (a dict, merged in) before the directory is removed. A failed run
  raises with the end of its log."""
  with tempfile.TemporaryDirectory() as model_dir:
    started = time.time()
    child = subprocess.run(
        [sys.executable, "-m", module, f"--flagfile=configs/{config}.flags",
         f"--model_dir={model_dir}", f"--seed={seed}", *extra_flags],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.time() - started
    if child.returncode:
      raise RuntimeError(f"{module} --seed={seed} failed (exit {child.returncode}):\n"
                         + child.stderr[-3000:])
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
      scores = json.load(f)
    inspected = inspect(model_dir) if inspect else {}
  return {**{key: scores[key] for key in SCORES}, "seconds": seconds, "log": child.stderr,
          **inspected}


BASELINES = ("k-means", "gmm", "spectral", "umap+gmm")


def baseline(method: str, x: np.ndarray, y: np.ndarray, k: int, seed: int):
  """A clustering of the pixels, scored against the labels: k-means (10 restarts), a diagonal
  GMM, spectral clustering of the 10-nearest-neighbour graph, or a full GMM on a 10-dimensional
  UMAP embedding (20 neighbours, min_dist 0, as N2D)."""
  started = time.time()
  if method == "k-means":
    predicted = sk_cluster.KMeans(k, n_init=10, random_state=seed).fit_predict(x)
  elif method == "gmm":
    predicted = sk_mixture.GaussianMixture(k, covariance_type="diag", reg_covar=1e-2,
                                           random_state=seed).fit(x).predict(x)
  elif method == "spectral":
    predicted = sk_cluster.SpectralClustering(
        k, affinity="nearest_neighbors", n_neighbors=10, assign_labels="cluster_qr",
        random_state=seed).fit_predict(x)
  elif method == "umap+gmm":
    import umap  # pylint: disable=g-import-not-at-top
    embedded = umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0,
                         random_state=seed).fit_transform(x)
    predicted = sk_mixture.GaussianMixture(k, covariance_type="full",
                                           random_state=seed).fit(embedded).predict(embedded)
  else:
    raise ValueError(f"Unknown baseline {method!r}; one of {BASELINES}.")
  seconds = time.time() - started
  scores = metrics.scores(y, predicted)
  return {**{key: scores[key] for key in SCORES}, "seconds": seconds}


def cell(values, digits: int = 3) -> str:
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"
