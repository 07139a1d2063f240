"""Clustering quality and speed of C3-GAN next to k-means on raw pixels, plus the cost of the
full-size (128×128, reference widths) model on this machine.

Quality: trains C3-GAN through its public entry point (`python -m c3gan.main
--flagfile=configs/c3gan_mnist5k.flags --seed=S`) once per seed and fits k-means (10 restarts) on
the same images' pixels with the same seeds in the same run; prints mean ± std of ACC / NMI / ARI,
training steps/s and wall time. Labels are only used to score.

Generation: each run writes --eval_samples_per_code generated images of every code
(MODEL_DIR/eval/samples/); a judge — a small CNN classifier that this benchmark trains on the
labelled bundled images (4/5 of them; its accuracy on the other 1/5 is printed) — scores them.
Code purity is the share of a code's samples that the judge gives that code's majority class
(mean over codes); "classes covered" counts the distinct majority classes of the codes; FD is the
Fréchet distance between the judge's penultimate features of the generated images and of all real
images, next to the FD of as many held-out-sized random real images (the floor) in the same run.
Labels are used only by this judge and to score, never by training or model selection.

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
from scipy import linalg

import clustering_runs

flags.DEFINE_string("config", "c3gan_mnist5k", "configs/NAME.flags to train.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each method runs once per seed (empty: none).")
flags.DEFINE_list("extra_flags", [], "More flags for c3gan.main (e.g. --train_steps=400).")
flags.DEFINE_integer("samples_per_code", 100, "Generated images of each code the judge scores.")
flags.DEFINE_integer("full_size_steps", 0, "Train steps of the 128×128 reference model to time "
                     "(0: skip).")
flags.DEFINE_integer("full_size_batch", 8, "Batch of the full-size timing (the reference trains 64).")
flags.DEFINE_boolean("full_size_child", False, "Internal: be the child process that times the "
                     "full-size model and prints one JSON line.")
FLAGS = flags.FLAGS
RATE = re.compile(r"train step (\d+)/\d+\s+([\d.]+) steps/s")


class Judge:
  """A small digit classifier trained on the labelled real images, and its penultimate features
  (the generation scores' only use of labels)."""

  def __init__(self, images, labels, seed: int = 0):
    import keras  # pylint: disable=g-import-not-at-top
    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(images))
    train, held_out = order[:len(images) * 4 // 5], order[len(images) * 4 // 5:]
    inputs = keras.Input(images.shape[1:])
    x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, activation="relu")(keras.layers.MaxPool2D()(x))
    x = keras.layers.Flatten()(keras.layers.MaxPool2D()(x))
    features = keras.layers.Dense(64, activation="relu")(keras.layers.Dropout(0.3)(x))
    classifier = keras.Model(inputs, keras.layers.Dense(int(labels.max()) + 1, activation="softmax")(
        keras.layers.Dropout(0.3)(features)))
    classifier.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(images[train], labels[train], epochs=10, batch_size=64, verbose=0)
    self.held_out_accuracy = classifier.evaluate(images[held_out], labels[held_out], verbose=0)[1]
    self.classifier = classifier
    self.features = keras.Model(inputs, features)
    self.real_features = self.features.predict(images, verbose=0)
    floor_rows = np.random.default_rng(seed + 1).choice(len(images), len(held_out), replace=False)
    self.real_floor = frechet_distance(self.real_features[floor_rows], self.real_features)

  def score(self, samples):
    """samples float [codes, n, H, W, C] in [0, 1] → purity, classes covered, FD."""
    codes, n = samples.shape[:2]
    flat = samples.reshape((codes * n,) + samples.shape[2:])
    judged = self.classifier.predict(flat, verbose=0).argmax(axis=1).reshape(codes, n)
    majority = [np.bincount(row).argmax() for row in judged]
    return {"purity": float(np.mean([np.mean(row == m) for row, m in zip(judged, majority)])),
            "classes_covered": len(set(majority)),
            "fd": frechet_distance(self.features.predict(flat, verbose=0), self.real_features)}


def frechet_distance(a, b) -> float:
  """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) of two feature sets (rows)."""
  mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
  # a little on the diagonal: ReLU features that never fire make the covariances singular
  ridge = 1e-6 * np.eye(a.shape[1])
  cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
  root = linalg.sqrtm(cov_a @ cov_b).real
  return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def read_samples(model_dir: str) -> np.ndarray:
  """MODEL_DIR/eval/samples/code_<k>/<i>.png → float [codes, n, H, W, C] in [0, 1]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = os.path.join(model_dir, "eval", "samples")
  codes = sorted(os.listdir(root), key=lambda name: int(name.split("_")[1]))
  samples = []
  for code in codes:
    names = sorted(os.listdir(os.path.join(root, code)), key=lambda name: int(name.split(".")[0]))
    samples.append([np.asarray(Image.open(os.path.join(root, code, n))) for n in names])
  samples = np.asarray(samples, np.float32) / 255.0
  return samples[..., None] if samples.ndim == 4 else samples


def run_c3gan(seed: int, judge: Judge):
  result = clustering_runs.train_and_score(
      "c3gan.main", FLAGS.config, seed,
      [f"--eval_samples_per_code={FLAGS.samples_per_code}", *FLAGS.extra_flags],
      inspect=lambda model_dir: judge.score(read_samples(model_dir)))
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
    settings = clustering_runs.config_flags(FLAGS.config)
    size, k = int(settings["image_size"]), int(settings["num_clusters"])
    judge = Judge(x.reshape(len(x), size, size, -1).astype(np.float32), y)
    print(f"judge: held-out accuracy {judge.held_out_accuracy:.3f}; FD of {len(x) // 5} random "
          f"real images to all real images {judge.real_floor:.2f}", flush=True)
    results = {"C3-GAN": [], "k-means (pixels)": []}
    for seed in seeds:
      results["C3-GAN"].append(run_c3gan(seed, judge))
      results["k-means (pixels)"].append(clustering_runs.baseline("k-means", x, y, k, seed))
      gan = results["C3-GAN"][-1]
      print(f"seed {seed}: " + "; ".join(
          f"{m} acc {r[-1]['acc']:.3f} nmi {r[-1]['nmi']:.3f} ari {r[-1]['ari']:.3f} "
          f"({r[-1]['seconds']:.0f} s)" for m, r in results.items())
            + f"; C3-GAN {gan['steps_per_second']:.2f} steps/s, purity {gan['purity']:.3f}, "
            f"{gan['classes_covered']} classes covered, FD {gan['fd']:.2f}", flush=True)
    print(f"\n{FLAGS.config}, {len(seeds)} seeds ({', '.join(FLAGS.seeds)}), mean ± std; "
          f"generation judged on {FLAGS.samples_per_code} samples per code (FD floor "
          f"{judge.real_floor:.2f}).\n")
    print("| method | ACC | NMI | ARI | many-to-one ACC | code purity | classes covered | FD "
          "| train steps/s | wall time per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, runs in results.items():
      rates = [r.get("steps_per_second", np.nan) for r in runs]
      generation = [clustering_runs.cell([r[key] for r in runs], digits) if key in runs[0] else "—"
                    for key, digits in (("purity", 3), ("classes_covered", 1), ("fd", 2))]
      print(f"| {method} | " + " | ".join(clustering_runs.cell([r[key] for r in runs])
                                         for key in ("acc", "nmi", "ari", "many_to_one_acc"))
            + " | " + " | ".join(generation)
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
