"""Clustering quality of Variational Clustering next to k-means and a GMM on raw pixels.

Trains VC through its public entry point (`python -m vaeclust.main --flagfile=configs/D.flags`)
once per seed, and fits the baselines on the same images with the same seeds in the same run.
Prints mean ± std of ACC / NMI / ARI and wall time per method and dataset, as a Markdown table.

  python benchmarks/vc_quality.py --datasets=mnist5k,digits --seeds=0,1,2
"""
from absl import app
from absl import flags
import numpy as np

import clustering_runs

flags.DEFINE_list("datasets", ["mnist5k", "digits"], "Bundled datasets, each with configs/NAME.flags.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every method runs once per seed.")
flags.DEFINE_list("extra_flags", [], "More flags for vaeclust.main (e.g. --train_steps=2000).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  rows = []
  for name in FLAGS.datasets:
    x, y = clustering_runs.pixels(name)
    k = len(np.unique(y))
    results = {"VC": [], "k-means (pixels)": [], "GMM diag (pixels)": []}
    for seed in (int(s) for s in FLAGS.seeds):
      results["VC"].append(clustering_runs.train_and_score("vaeclust.main", name, seed, FLAGS.extra_flags))
      results["k-means (pixels)"].append(clustering_runs.baseline("k-means", x, y, k, seed))
      results["GMM diag (pixels)"].append(clustering_runs.baseline("gmm", x, y, k, seed))
      print(f"{name} seed {seed}: " + "; ".join(
          f"{m} acc {r[-1]['acc']:.3f} ({r[-1]['seconds']:.0f} s)" for m, r in results.items()),
            flush=True)
    for method, runs in results.items():
      rows.append(f"| {name} | {method} | " + " | ".join(
          clustering_runs.cell([r[key] for r in runs]) for key in ("acc", "nmi", "ari"))
                  + f" | {np.mean([r['seconds'] for r in runs]):.0f} s |")
  print(f"\n{len(FLAGS.seeds)} seeds ({', '.join(FLAGS.seeds)}), mean ± std; wall time per seed.\n")
  print("| dataset | method | ACC | NMI | ARI | time |")
  print("|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
