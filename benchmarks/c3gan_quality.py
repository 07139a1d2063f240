"""Clustering quality and speed of C3-GAN next to k-means on raw pixels, plus the cost of the
full-size (128×128, reference widths) model on this machine.

Quality: trains C3-GAN through its public entry point (`python -m c3gan.main
--flagfile=configs/c3gan_mnist5k.flags --seed=S`) once per seed and fits k-means (10 restarts) on
the same images' pixels with the same seeds in the same run; prints mean ± std of ACC / NMI / ARI,
training steps/s and wall time. Labels are only used to score.

Full size: a few train steps (a D step and a G step each) of the reference model on random
128×128 colour images, in a child process; prints steps/s after the first (compiling) step and the
child's peak resident memory (getrusage max RSS).

  python benchmarks/c3gan_quality.py --seeds=0,1,2 --full_size_steps=3
"""
import json
import os
import re
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

import clustering_runs

flags.DEFINE_string("config", "c3gan_mnist5k", "configs/NAME.flags to train.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each method runs once per seed (empty: none).")
flags.DEFINE_list("extra_flags", [], "More flags for c3gan.main (e.g. --train_steps=400).")
flags.DEFINE_integer("full_size_steps", 0, "Train steps of the 128×128 reference model to time "
                     "(0: skip).")
flags.DEFINE_integer("full_size_batch", 8, "Batch of the full-size timing (the reference trains 64).")
flags.DEFINE_boolean("full_size_child", False, "Internal: be the child process that times the "
                     "full-size model and prints one JSON line.")
FLAGS = flags.FLAGS
RATE = re.compile(r"train step (\d+)/\d+\s+([\d.]+) steps/s")


def run_c3gan(seed: int):
  result = clustering_runs.train_and_score("c3gan.main", FLAGS.config, seed, FLAGS.extra_flags)
  # Logged rates after the first interval (which includes tracing and compiling the step).
  rates = [float(r) for _, r in RATE.findall(result["log"])[1:]]
  result["steps_per_second"] = float(np.mean(rates)) if rates else float("nan")
  return result


def time_full_size():
  """Runs in the child process: reference model, random images, timed train steps."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from c3gan import model as c3gan_model  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  model = c3gan_model.C3GAN(c3gan_model.Config(image_size=128, channels=3, num_clusters=200,
                                               over_clustering=2))
  model.set_optimizers(keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5))
  batch = {"image": tf.random.uniform([FLAGS.full_size_batch, 128, 128, 3], seed=0)}
  step = tf.function(model.train_step)
  started = time.time()
  step(batch)
  first = time.time() - started
  started = time.time()
  for _ in range(FLAGS.full_size_steps - 1):
    logs = step(batch)
  seconds = time.time() - started
  assert all(np.isfinite(float(v)) for v in logs.values())
  print(json.dumps({
      "batch": FLAGS.full_size_batch, "first_step_seconds": first,
      "steps_per_second": (FLAGS.full_size_steps - 1) / seconds,
      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "g_params": model.background_generator.count_params() + model.foreground_generator.count_params(),
      "d_params": model.discriminator.count_params() + model.centroid_table.count_params()}))


def main(argv):
  del argv
  if FLAGS.full_size_child:
    time_full_size()
    return
  seeds = [int(s) for s in FLAGS.seeds]
  if seeds:
    x, y = clustering_runs.pixels(FLAGS.config)
    k = int(clustering_runs.config_flags(FLAGS.config)["num_clusters"])
    results = {"C3-GAN": [], "k-means (pixels)": []}
    for seed in seeds:
      results["C3-GAN"].append(run_c3gan(seed))
      results["k-means (pixels)"].append(clustering_runs.baseline("k-means", x, y, k, seed))
      print(f"seed {seed}: " + "; ".join(
          f"{m} acc {r[-1]['acc']:.3f} nmi {r[-1]['nmi']:.3f} ari {r[-1]['ari']:.3f} "
          f"({r[-1]['seconds']:.0f} s)" for m, r in results.items())
            + f"; C3-GAN {results['C3-GAN'][-1]['steps_per_second']:.2f} steps/s", flush=True)
    print(f"\n{FLAGS.config}, {len(seeds)} seeds ({', '.join(FLAGS.seeds)}), mean ± std.\n")
    print("| method | ACC | NMI | ARI | many-to-one ACC | train steps/s | wall time per seed |")
    print("|---|---|---|---|---|---|---|")
    for method, runs in results.items():
      rates = [r.get("steps_per_second", np.nan) for r in runs]
      print(f"| {method} | " + " | ".join(clustering_runs.cell([r[key] for r in runs])
                                         for key in ("acc", "nmi", "ari", "many_to_one_acc"))
            + f" | {'—' if np.isnan(rates).all() else f'{np.mean(rates):.2f}'}"
            + f" | {np.mean([r['seconds'] for r in runs]):.0f} s |")
  if FLAGS.full_size_steps:
    if FLAGS.full_size_steps < 2:
      raise app.UsageError("--full_size_steps must be at least 2 (the first one compiles).")
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--full_size_child", "--seeds=",
         f"--full_size_steps={FLAGS.full_size_steps}", f"--full_size_batch={FLAGS.full_size_batch}"],
        cwd=clustering_runs.ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if child.returncode:
      raise RuntimeError(child.stderr[-3000:])
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nFull-size model (128×128, Y=400, G {r['g_params'] / 1e6:.2f}M / D {r['d_params'] / 1e6:.2f}M "
          f"parameters), batch {r['batch']} on CPU: {r['steps_per_second']:.3f} steps/s "
          f"({r['steps_per_second'] * r['batch']:.1f} images/s) after a first step of "
          f"{r['first_step_seconds']:.0f} s; peak RSS {r['max_rss_mb']:.0f} MB.")


if __name__ == "__main__":
  app.run(main)
