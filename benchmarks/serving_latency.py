"""gRPC serving latency and throughput next to calling the same SavedModel in process.

Exports a trained model (--model_dir; without it, trains the mnist5k architecture for a few
hundred steps — latency does not depend on how well it is trained), starts
`python -m export.server` on a free port, and measures on the same uint8 images in one run:
single-image Predict latency (p50/p99 over --requests calls) and batch throughput (images/s over
--batches calls of --batch_size images), through gRPC and through the in-process
`serving_default` signature. Prints a Markdown table.

  python benchmarks/serving_latency.py [--model_dir=DIR] [--requests=500] [--batches=20]
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from export import client as client_lib
from export import saved_model
from vaeclust.lib import data
from vaeclust.lib import files

flags.DEFINE_string("model_dir", None, "Trained model to export (default: train a small one).")
flags.DEFINE_integer("requests", 500, "Single-image requests timed.")
flags.DEFINE_integer("batches", 20, "Batches timed for throughput.")
flags.DEFINE_integer("batch_size", 256, "Images per throughput batch.")
flags.DEFINE_integer("threads", 4, "Server threads (export.server --threads).")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def train_small(model_dir: str):
  subprocess.run([sys.executable, "-m", "vaeclust.main", "--flagfile=configs/mnist5k.flags",
                  f"--model_dir={model_dir}", "--pretrain_steps=100", "--train_steps=200",
                  "--mode=train"], cwd=ROOT, check=True, env=ENV, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)


def images_for(model_dir: str, count: int) -> np.ndarray:
  """Real images of the model's dataset where it is bundled, else random pixels of its shape."""
  run = files.read_json(os.path.join(model_dir, "run.json"))
  size, channels = run["model"]["image_size"], run["model"]["channels"]
  if run["dataset"] in data.BUNDLED:
    ds, _ = data.load(run["dataset"], split="all", image_size=size, channels=channels)
    return np.stack([e["image"] for e in ds.take(count).as_numpy_iterator()])
  return np.random.default_rng(0).integers(0, 256, (count, size, size, channels), np.uint8)


def measure(call, images: np.ndarray):
  """(p50 ms, p99 ms) of one-image calls, images/s of batch calls."""
  for i in range(10):
    call(images[i:i + 1])
  call(images[:FLAGS.batch_size])
  latencies = []
  for i in range(FLAGS.requests):
    started = time.perf_counter()
    call(images[i % len(images)][None])
    latencies.append(time.perf_counter() - started)
  started = time.perf_counter()
  for _ in range(FLAGS.batches):
    call(images[:FLAGS.batch_size])
  throughput = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - started)
  p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
  return p50, p99, throughput


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as work:
    model_dir = FLAGS.model_dir or os.path.join(work, "run")
    if not FLAGS.model_dir:
      train_small(model_dir)
    version_dir = saved_model.export(model_dir, os.path.join(work, "models"), "bench")
    images = images_for(model_dir, FLAGS.batch_size)

    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    in_process = measure(lambda batch: signature(images=tf.constant(batch))["cluster"].numpy(),
                         images)

    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "export.server", f"--port={port}", "--model_name=bench",
         f"--model_base_path={os.path.dirname(version_dir)}", f"--threads={FLAGS.threads}"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = client_lib.Client(f"localhost:{port}", "bench", timeout=60)
    try:
      client.wait_until_available(timeout=180)
      grpc_served = measure(client.predict_images, images)
    finally:
      client.close()
      server.terminate()
      server.wait()

  shape = "×".join(str(d) for d in images.shape[1:])
  print(f"\n{shape} uint8 images, {FLAGS.requests} single-image calls, {FLAGS.batches} batches "
        f"of {FLAGS.batch_size}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end\n")
  print("| path | single image p50 | single image p99 | batch-256 throughput |"
        .replace("256", str(FLAGS.batch_size)))
  print("|---|---|---|---|")
  for name, (p50, p99, throughput) in (("in-process SavedModel `serving_default`", in_process),
                                       ("gRPC Predict via `export.server`", grpc_served)):
    print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {throughput:,.0f} images/s |")


if __name__ == "__main__":
  app.run(main)
