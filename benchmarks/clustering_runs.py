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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vaeclust.lib import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaeclust.lib import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position

SCORES = ("acc", "nmi", "ari", "many_to_one_acc")


def config_flags(name: str) -> dict:
  """The `--name=value` lines of configs/NAME.flags."""
  with open(os.path.join(ROOT, "configs", f"{name}.flags")) as f:
    return dict(line.strip().lstrip("-").split("=", 1) for line in f
                if line.startswith("--") and "=" in line)


def pixels(config: str):
  """(images as [N, pixels] floats in [0, 1], labels) of a config's bundled dataset."""
  settings = config_flags(config)
  ds, _ = data.load(settings["dataset"], split="all", image_size=int(settings["image_size"]))
  examples = list(ds.as_numpy_iterator())
  images = np.stack([e["image"] for e in examples]).reshape(len(examples), -1) / 255.0
  return images.astype(np.float64), np.array([e["label"] for e in examples])


def train_and_score(module: str, config: str, seed: int, extra_flags=(), inspect=None):
  """Runs `python -m MODULE --flagfile=configs/CONFIG.flags --seed=SEED` in a fresh model_dir:
  its eval scores, wall time (`seconds`), console log (`log`) and what `inspect(model_dir)`
  returns (a dict, merged in) before the directory is removed. A failed run raises with the end
  of its log."""
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


def baseline(method: str, x: np.ndarray, y: np.ndarray, k: int, seed: int):
  """k-means (10 restarts) or a diagonal GMM on the pixels, scored against the labels."""
  started = time.time()
  if method == "k-means":
    predicted = sk_cluster.KMeans(k, n_init=10, random_state=seed).fit_predict(x)
  elif method == "gmm":
    predicted = sk_mixture.GaussianMixture(k, covariance_type="diag", reg_covar=1e-2,
                                           random_state=seed).fit(x).predict(x)
  else:
    raise ValueError(f"Unknown baseline {method!r}.")
  seconds = time.time() - started
  scores = metrics.scores(y, predicted)
  return {**{key: scores[key] for key in SCORES}, "seconds": seconds}


def cell(values, digits: int = 3) -> str:
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"
