"""Training speed of Variational Clustering, a plain VAE and C3-GAN on this machine, with and
without XLA, next to their memory, FLOPs and the machine's matmul speed; prints Markdown.

  python benchmarks/training_speed.py [--configs=vc_mnist5k,vae_mnist5k] [--xla=both|on|off]
      [--steps=10] [--warmup_steps=2] [--cub_batch_size=8]
  python benchmarks/training_speed.py --quick   # smoke check: mnist5k sizes, 3 timed steps

Configurations are the models at the sizes of their flag files, parsed by the methods' own mains
(vaeclust.main / c3gan.main config_from_flags): VC at configs/mnist5k.flags and configs/stl10.flags
(also with --consistency_weight=0, which drops the augmented second encoder pass), a plain VAE with
the same encoder and decoder at both sizes, and C3-GAN at configs/c3gan_mnist5k.flags and at the
full 128×128 size of configs/cub.flags with a batch of --cub_batch_size. Every configuration and
XLA setting runs in its own child process (this script re-invoking itself with --child), one after
another, on the default (one-device) strategy: `tf.function(model.train_step)`, with
`jit_compile=True` for XLA.

What the numbers mean:
  images/s: batch × --steps / wall time of --steps train steps on one fixed tf.random.uniform batch
    of the configuration's shape (no input pipeline), after --warmup_steps untimed steps (tracing
    and compiling), synchronised by reading the step's losses at the end. "n/a (reason)" where XLA
    cannot compile the step. The progress lines also give the cores the child kept busy (its CPU
    time ÷ wall time): well under the core count means other processes took the CPU.
  peak RSS: getrusage(RUSAGE_SELF).ru_maxrss of that child at the end of its timed steps (model,
    optimizer, activations and the TensorFlow runtime; the matmul child shows the runtime alone).
  GFLOPs/image: floating-point operations of one whole train step (forward, backward and optimizer
    update; for C3-GAN its D step and G step) ÷ batch, counted by the TensorFlow profiler
    (float_operation) on the traced train-step graph. It counts ops with registered FLOP statistics
    (convolutions and their gradients, matmuls, most element-wise arithmetic), not e.g. ReLU,
    sigmoid, exp or the image warps, nor C3-GAN's few small ops on its sampled codes (their batch
    size is dynamic), so it slightly undercounts.
  % of matmul peak: images/s × FLOPs/image ÷ the FLOP/s of a float32 n×n tf.linalg.matmul
    (n = --matmul_size, 2n³ FLOPs, all cores, after warm-up).
  input pipeline (vc_mnist5k only): images/s of data.training_batches on the bundled mnist5k alone,
    and of VC train steps fed by it, with the share of that time blocked in next(iterator).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (model, configs/FILE.flags, flags given after the file, description)
CONFIGS = {
    "vc_mnist5k": ("vc", "mnist5k", (), "Variational Clustering"),
    "vc_mnist5k_no_consistency": ("vc", "mnist5k", ("--consistency_weight=0",),
                                  "Variational Clustering"),
    "vae_mnist5k": ("vae", "mnist5k", (), "plain VAE"),
    "vc_stl10": ("vc", "stl10", (), "Variational Clustering"),
    "vc_stl10_no_consistency": ("vc", "stl10", ("--consistency_weight=0",),
                                "Variational Clustering"),
    "vae_stl10": ("vae", "stl10", (), "plain VAE"),
    "c3gan_mnist5k": ("c3gan", "c3gan_mnist5k", (), "C3-GAN"),
    "c3gan_cub": ("c3gan", "cub", (), "C3-GAN"),
}
QUICK_CONFIGS = ["vc_mnist5k", "vc_mnist5k_no_consistency", "vae_mnist5k", "c3gan_mnist5k"]
PIPELINE_CONFIG = "vc_mnist5k"
XLA_MODES = {"both": (False, True), "off": (False,), "on": (True,)}

flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to measure, of: {', '.join(CONFIGS)}.")
flags.DEFINE_enum("xla", "both", list(XLA_MODES),
                  "Time the train steps without XLA, with it, or both.")
flags.DEFINE_integer("steps", 10, "Timed train steps per configuration.")
flags.DEFINE_integer("warmup_steps", 2,
                     "Untimed train steps first (the first one traces and compiles).")
flags.DEFINE_integer("cub_batch_size", 8, "Batch of c3gan_cub (configs/cub.flags has 64).")
flags.DEFINE_integer("matmul_size", 2048, "n of the n×n float32 matmul that measures peak FLOP/s.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches timed of the input pipeline alone.")
flags.DEFINE_boolean("quick", False, "Smoke check: 3 timed steps after 1 warm-up step, 20 pipeline "
                     "batches, a 1024² matmul, and only the mnist5k-sized configurations unless "
                     "--configs is given.")
flags.DEFINE_string("child", None, "Internal: be the child process that measures this "
                    "configuration (or `matmul`, `pipeline`) and prints one JSON line.")
flags.DEFINE_boolean("child_xla", False, "Internal: the child compiles its train step with XLA.")
flags.DEFINE_boolean("child_flops", False, "Internal: the child also counts the step's FLOPs.")
FLAGS = flags.FLAGS
XLA_KERNEL_MISSING = re.compile(r"No registered '(\w+)' OpKernel for XLA_CPU_JIT")


# ----- child processes ---------------------------------------------------------------------------

def model_config(name: str):
  """Parses configs/FILE.flags with the method's flags (next to this benchmark's) and returns that
  main's model Config."""
  from vaeclust.lib import common_flags  # pylint: disable=g-import-not-at-top
  from vaeclust.lib import data  # pylint: disable=g-import-not-at-top
  kind, flag_file, overrides, _ = CONFIGS[name]
  if kind == "c3gan":
    from c3gan import main as method_main  # pylint: disable=g-import-not-at-top
  else:
    from vaeclust import main as method_main  # pylint: disable=g-import-not-at-top
  common_flags.use(method_main.METHOD.flags)
  if name == "c3gan_cub":
    overrides += (f"--batch_size={FLAGS.cub_batch_size}",)
  # --model_dir is required by the mains' flags; nothing is written.
  FLAGS([sys.argv[0], f"--flagfile={os.path.join(ROOT, 'configs', flag_file + '.flags')}",
         *overrides, "--model_dir=unused"])
  info = data.DatasetInfo(FLAGS.dataset, FLAGS.image_size,
                          FLAGS.channels or data.natural_channels(FLAGS.dataset), True, None)
  return method_main.config_from_flags(info)


def plain_vae_class():
  """The PlainVAE class; defined here so that the parent process never imports TensorFlow."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vaeclust import losses  # pylint: disable=g-import-not-at-top
  from vaeclust import networks  # pylint: disable=g-import-not-at-top
  from vaeclust.lib import noise as noise_lib  # pylint: disable=g-import-not-at-top

  class PlainVAE(keras.Model):
    """VC's encoder and decoder with one Gaussian code q(z|x), an N(0, I) prior and VC's pixel
    likelihood: what VC's mixture prior, relaxed categorical and guards add to."""

    def __init__(self, config):
      super().__init__()
      c = self.config = config
      self.encoder = networks.conv_encoder(c.image_size, c.channels, c.conv_filters, c.hidden_units)
      self.code_mean = keras.layers.Dense(c.latent_dim, name="code_mean")
      self.code_raw_scale = keras.layers.Dense(c.latent_dim, name="code_raw_scale")
      self.decoder = networks.conv_decoder(c.latent_dim, c.image_size, c.channels, c.conv_filters,
                                           c.hidden_units)
      self.pixel_log_scale = self.add_weight(name="pixel_log_scale", shape=(c.channels,),
                                             initializer="zeros",
                                             trainable=c.likelihood == "gaussian")
      for head in (self.code_mean, self.code_raw_scale):
        head.build((None, c.hidden_units))
      self.built = True

    def train_step(self, data):
      """One negative-ELBO step: reconstruction + KL(q(z|x) || N(0, I)), closed form."""
      images = data["image"]
      with tf.GradientTape() as tape:
        features = self.encoder(images, training=True)
        mean = self.code_mean(features)
        scale = tf.nn.softplus(self.code_raw_scale(features)) + self.config.scale_floor
        noise = noise_lib.BatchNoise(self.config.seed, self.optimizer.iterations, tf.shape(images)[0])
        decoded = self.decoder(mean + scale * noise.normal([self.config.latent_dim]), training=True)
        if self.config.likelihood == "bernoulli":
          reconstruction = losses.bernoulli_nll(decoded, images)
        else:
          reconstruction = losses.gaussian_nll(decoded, self.pixel_log_scale, images)
        kl = 0.5 * tf.reduce_sum(
            tf.square(mean) + tf.square(scale) - 1.0 - 2.0 * tf.math.log(scale), axis=-1)
        loss = tf.nn.compute_average_loss(reconstruction + kl)
      variables = self.trainable_variables
      self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return {"loss": tf.reduce_mean(reconstruction + kl),
              "reconstruction": tf.reduce_mean(reconstruction), "kl": tf.reduce_mean(kl)}

  return PlainVAE


def build_model(name: str):
  """The configuration's model, its optimizer(s) built as its main builds them, and its batch."""
  import keras  # pylint: disable=g-import-not-at-top
  config = model_config(name)
  keras.utils.set_random_seed(FLAGS.seed)
  kind = CONFIGS[name][0]
  if kind == "c3gan":
    from c3gan import model as c3gan_model  # pylint: disable=g-import-not-at-top
    model = c3gan_model.C3GAN(config)
    model.set_optimizers(
        keras.optimizers.Adam(FLAGS.d_learning_rate, beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2),
        keras.optimizers.Adam(FLAGS.g_learning_rate, beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2))
  else:
    if kind == "vc":
      from vaeclust import model as vc_model  # pylint: disable=g-import-not-at-top
      model = vc_model.VariationalClustering(config)
    else:
      model = plain_vae_class()(config)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate))
    model.optimizer.build(model.trainable_variables)
  return model, FLAGS.batch_size


def synced(logs) -> dict:
  """Reads every value of a step's logs (waiting for the step), checking they are finite."""
  values = {name: float(value) for name, value in logs.items()}
  if not all(np.isfinite(list(values.values()))):
    raise FloatingPointError(f"Non-finite logs: {values}")
  return values


def count_flops(step_fn, batch) -> int:
  """Profiler float_operation count of the graph `step_fn(batch)` traces to."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top
  spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, batch)
  graph = tf.function(step_fn).get_concrete_function(spec).graph
  options = (option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build())
  return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def xla_failure(error) -> str:
  """A short reason why XLA could not compile the step."""
  missing = sorted(set(XLA_KERNEL_MISSING.findall(str(error))))
  if missing:
    return f"no XLA CPU kernel for {', '.join(missing)}"
  return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"


def measure_config(name: str) -> dict:
  """Child: images/s of the configuration's train step, peak RSS and (with --child_flops) FLOPs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, batch_size = build_model(name)
  c = model.config
  batch = {"image": tf.random.uniform([batch_size, c.image_size, c.image_size, c.channels], seed=0)}
  result = {"image_size": c.image_size, "channels": c.channels, "batch": batch_size,
            "params": int(sum(np.prod(v.shape) for v in model.trainable_variables))}
  step = tf.function(model.train_step, jit_compile=FLAGS.child_xla)
  # A step XLA cannot compile (an op without an XLA kernel) is reported, not fatal.
  try:
    for _ in range(FLAGS.warmup_steps):
      synced(step(batch))
  except tf.errors.InvalidArgumentError as e:
    if not FLAGS.child_xla:
      raise
    result["error"] = xla_failure(e)
  else:
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(FLAGS.steps):
      logs = step(batch)
    synced(logs)
    seconds = time.perf_counter() - started
    result["images_per_second"] = FLAGS.steps * batch_size / seconds
    result["cores_busy"] = (time.process_time() - cpu_started) / seconds
  result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if FLAGS.child_flops:
    result["flops_per_image"] = count_flops(model.train_step, batch) / batch_size
  return result


def measure_matmul() -> dict:
  """Child: FLOP/s of a float32 n×n matmul, the best of a few timed rounds after warm-up."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n = FLAGS.matmul_size
  a, b = tf.random.normal([n, n], seed=0), tf.random.normal([n, n], seed=1)
  for _ in range(3):
    tf.linalg.matmul(a, b).numpy()
  rounds, repeats = [], 5
  for _ in range(3):
    started = time.perf_counter()
    for _ in range(repeats):
      product = tf.linalg.matmul(a, b)
    product.numpy()
    rounds.append(2 * n ** 3 * repeats / (time.perf_counter() - started))
  return {"flops_per_second": max(rounds),
          "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_pipeline() -> dict:
  """Child: the real input pipeline of vc_mnist5k alone, then VC train steps (no XLA, as the
  trainer runs them) fed by it, timing next(iterator) and the step separately."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vaeclust.lib import data  # pylint: disable=g-import-not-at-top
  model, batch_size = build_model(PIPELINE_CONFIG)
  ds, info = data.load(FLAGS.dataset, split=data.default_split(FLAGS.dataset, train=True),
                       image_size=FLAGS.image_size, channels=model.config.channels)
  batches = data.training_batches(ds, batch_size, FLAGS.seed)

  # Alone: the first batch fills the shuffle buffer and the cache with the whole dataset; one
  # epoch of warm-up reaches the steady state training sees, and the steps go on from there.
  iterator = iter(batches)
  for _ in range(-(-info.num_examples // batch_size)):
    next(iterator)["image"].numpy()
  started = time.perf_counter()
  for _ in range(FLAGS.pipeline_batches):
    next(iterator)["image"].numpy()
  alone = FLAGS.pipeline_batches * batch_size / (time.perf_counter() - started)

  step = tf.function(model.train_step)
  for _ in range(FLAGS.warmup_steps):
    synced(step(next(iterator)))
  waiting = stepping = 0.0
  for _ in range(FLAGS.steps):
    started = time.perf_counter()
    batch = next(iterator)
    fetched = time.perf_counter()
    synced(step(batch))
    waiting += fetched - started
    stepping += time.perf_counter() - fetched
  return {"pipeline_images_per_second": alone, "batch": batch_size,
          "fed_images_per_second": FLAGS.steps * batch_size / (waiting + stepping),
          "next_seconds": waiting / FLAGS.steps, "step_seconds": stepping / FLAGS.steps}


def run_child(name: str, *extra, required: bool = False) -> dict:
  """Runs this script as a child measuring `name`; its JSON result, or {"error": ...} when it
  failed (raises instead if `required`)."""
  command = [sys.executable, os.path.abspath(__file__), f"--child={name}", f"--steps={FLAGS.steps}",
             f"--warmup_steps={FLAGS.warmup_steps}", f"--cub_batch_size={FLAGS.cub_batch_size}",
             f"--matmul_size={FLAGS.matmul_size}", f"--pipeline_batches={FLAGS.pipeline_batches}",
             *extra]
  child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  if child.returncode:
    lines = child.stderr.strip().splitlines() or [f"exit code {child.returncode}"]
    if required:
      raise RuntimeError(f"The {name} child failed:\n" + "\n".join(lines[-20:]))
    return {"error": f"child failed: {lines[-1][:200]}"}
  return json.loads(child.stdout.strip().splitlines()[-1])


# ----- parent: run the children, print the tables -------------------------------------------------

def rate(result) -> str:
  if "images_per_second" in result:
    return f"{result['images_per_second']:,.1f}"
  return f"n/a ({result['error']})" if "error" in result else "—"


def peak_fraction(result, flops_per_image, peak) -> str:
  if "images_per_second" not in result or flops_per_image is None:
    return "—"
  return f"{100 * result['images_per_second'] * flops_per_image / peak:.1f}%"


def ratio(numerator, denominator) -> str:
  if "images_per_second" in numerator and "images_per_second" in denominator:
    return f"{numerator['images_per_second'] / denominator['images_per_second']:.2f}"
  return "n/a"


def xla_label(xla: bool) -> str:
  return "XLA on" if xla else "XLA off"


def table_row(name: str, off: dict, on: dict, flops_per_image, peak) -> str:
  _, flag_file, overrides, description = CONFIGS[name]
  shape = next((r for r in (off, on) if "batch" in r), None)
  cells = [description, " ".join((flag_file,) + overrides)]
  cells += ([f"{shape['image_size']}²×{shape['channels']}", str(shape["batch"]),
             f"{shape['params']:,}"] if shape else ["—"] * 3)
  cells += [rate(off), rate(on),
            " / ".join(f"{r['max_rss_mb']:,.0f}" if "max_rss_mb" in r else "—"
                       for r in (off, on)),
            f"{flops_per_image / 1e9:.4g}" if flops_per_image else "—",
            " / ".join(peak_fraction(r, flops_per_image, peak) for r in (off, on))]
  return "| " + " | ".join(cells) + " |"


def main(argv):
  del argv
  if FLAGS.child:
    measure = {"matmul": measure_matmul, "pipeline": measure_pipeline}.get(FLAGS.child)
    print(json.dumps(measure() if measure else measure_config(FLAGS.child)))
    return
  names = FLAGS.configs
  if FLAGS.quick:
    FLAGS.steps, FLAGS.warmup_steps, FLAGS.pipeline_batches, FLAGS.matmul_size = 3, 1, 20, 1024
    if not FLAGS["configs"].present:
      names = QUICK_CONFIGS
  unknown = set(names) - set(CONFIGS)
  if unknown:
    raise app.UsageError(f"Unknown --configs {', '.join(sorted(unknown))}; "
                         f"choose of {', '.join(CONFIGS)}.")
  modes = XLA_MODES[FLAGS.xla]
  load_before = os.getloadavg()[0]

  results = {}
  for name in names:
    for xla in modes:
      extra = (["--child_xla"] if xla else []) + (["--child_flops"] if xla == modes[0] else [])
      results[name, xla] = result = run_child(name, *extra)
      busy = f", {result['cores_busy']:.1f} cores busy" if "cores_busy" in result else ""
      print(f"{name} {xla_label(xla)}: images/s {rate(result)}{busy}", flush=True)
  matmul = run_child("matmul", required=True)
  peak = matmul["flops_per_second"]
  pipeline = run_child("pipeline", required=True) if PIPELINE_CONFIG in names else None

  print(f"\n{os.cpu_count()} CPU cores, default (one-device) strategy; {FLAGS.steps} timed steps "
        f"after {FLAGS.warmup_steps} warm-up step(s), on a fixed random batch; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after. GFLOPs/image: TF profiler "
        "count of the whole train-step graph (forward + backward + optimizer) ÷ batch.\n")
  print("| model | config | image | batch | trainable params | XLA off images/s | XLA on images/s "
        "| peak RSS MB (off / on) | GFLOPs/image | % of matmul peak (off / on) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in names:
    print(table_row(name, results.get((name, False), {}), results.get((name, True), {}),
                    results[name, modes[0]].get("flops_per_image"), peak))

  print(f"\nMatmul: {peak / 1e9:,.1f} GFLOP/s ({FLAGS.matmul_size}² float32 tf.linalg.matmul, "
        f"best of 3 rounds; that child's peak RSS, mostly the TensorFlow runtime: "
        f"{matmul['max_rss_mb']:,.0f} MB).")
  for size in ("mnist5k", "stl10"):
    vae = f"vae_{size}"
    for vc in (f"vc_{size}", f"vc_{size}_no_consistency"):
      if vc in names and vae in names:
        print(f"Images/s {vc} / {vae}: " + ", ".join(
            f"{ratio(results[vc, xla], results[vae, xla])} ({xla_label(xla)})" for xla in modes))
  if pipeline:
    total = pipeline["next_seconds"] + pipeline["step_seconds"]
    print(f"\nInput pipeline ({PIPELINE_CONFIG}: data.training_batches on the bundled mnist5k, "
          f"batch {pipeline['batch']}): alone {pipeline['pipeline_images_per_second']:,.0f} "
          f"images/s ({FLAGS.pipeline_batches} batches after one epoch). VC train steps (no XLA) "
          f"fed by it: {pipeline['fed_images_per_second']:,.0f} images/s over {FLAGS.steps} steps, "
          f"each {1000 * pipeline['next_seconds']:.2f} ms blocked in next(iterator) "
          f"({100 * pipeline['next_seconds'] / total:.1f}%) and "
          f"{1000 * pipeline['step_seconds']:.1f} ms in the step (synced every step; the trainer "
          f"calls next() inside its tf.function instead); on the random batch: "
          f"{rate(results.get((PIPELINE_CONFIG, False), {}))} images/s.")


if __name__ == "__main__":
  app.run(main)
