"""Clustering quality of Variational Clustering next to k-means and a GMM on raw pixels.

Trains VC through its public entry point (`python -m vaeclust.main --flagfile=configs/D.flags`)
once per seed, and fits the baselines on the same images with the same seeds in the same run.
Prints mean ± std of ACC / NMI / ARI and wall time per method and dataset, as a Markdown table.

  python benchmarks/vc_quality.py --datasets=mnist5k,digits --seeds=0,1,2
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from sklearn import cluster as sk_cluster
from sklearn import mixture as sk_mixture

from vaeclust.lib import data
from vaeclust.lib import metrics

flags.DEFINE_list("datasets", ["mnist5k", "digits"], "Bundled datasets, each with configs/NAME.flags.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every method runs once per seed.")
flags.DEFINE_list("extra_flags", [], "More flags for vaeclust.main (e.g. --train_steps=2000).")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pixels(name: str, image_size: int):
  ds, _ = data.load(name, split="all", image_size=image_size)
  examples = list(ds.as_numpy_iterator())
  images = np.stack([e["image"] for e in examples]).reshape(len(examples), -1) / 255.0
  return images.astype(np.float64), np.array([e["label"] for e in examples])


def image_size_of(config_path: str) -> int:
  with open(config_path) as f:
    return next(int(line.split("=")[1]) for line in f if line.startswith("--image_size="))


def run_vc(name: str, seed: int):
  with tempfile.TemporaryDirectory() as model_dir:
    started = time.time()
    subprocess.run([sys.executable, "-m", "vaeclust.main", f"--flagfile=configs/{name}.flags",
                    f"--model_dir={model_dir}", f"--seed={seed}", *FLAGS.extra_flags],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.time() - started
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
      result = json.load(f)
  return {"acc": result["acc"], "nmi": result["nmi"], "ari": result["ari"], "seconds": seconds}


def run_baseline(method: str, x: np.ndarray, y: np.ndarray, k: int, seed: int):
  started = time.time()
  if method == "k-means":
    predicted = sk_cluster.KMeans(k, n_init=10, random_state=seed).fit_predict(x)
  else:
    predicted = sk_mixture.GaussianMixture(k, covariance_type="diag", reg_covar=1e-2,
                                           random_state=seed).fit(x).predict(x)
  seconds = time.time() - started
  result = metrics.scores(y, predicted)
  return {"acc": result["acc"], "nmi": result["nmi"], "ari": result["ari"], "seconds": seconds}


def cell(values):
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main(argv):
  del argv
  rows = []
  for name in FLAGS.datasets:
    x, y = pixels(name, image_size_of(os.path.join(ROOT, "configs", f"{name}.flags")))
    k = len(np.unique(y))
    results = {"VC": [], "k-means (pixels)": [], "GMM diag (pixels)": []}
    for seed in (int(s) for s in FLAGS.seeds):
      results["VC"].append(run_vc(name, seed))
      results["k-means (pixels)"].append(run_baseline("k-means", x, y, k, seed))
      results["GMM diag (pixels)"].append(run_baseline("gmm", x, y, k, seed))
      print(f"{name} seed {seed}: " + "; ".join(
          f"{m} acc {r[-1]['acc']:.3f}" for m, r in results.items()), flush=True)
    for method, runs in results.items():
      rows.append(f"| {name} | {method} | " + " | ".join(
          cell([r[key] for r in runs]) for key in ("acc", "nmi", "ari"))
                  + f" | {np.mean([r['seconds'] for r in runs]):.0f} s |")
  print(f"\n{len(FLAGS.seeds)} seeds ({', '.join(FLAGS.seeds)}), mean ± std; wall time per seed.\n")
  print("| dataset | method | ACC | NMI | ARI | time |")
  print("|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
