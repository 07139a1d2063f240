"""Train and evaluate C3-GAN.

  python -m c3gan.main --flagfile=configs/c3gan_mnist5k.flags --model_dir=/tmp/c3gan1
  tensorboard --logdir=/tmp/c3gan1
"""
import os

from absl import flags
import keras
import tensorflow as tf

from c3gan import model as c3gan_model
from c3gan import networks
from vaeclust.lib import common_flags
from vaeclust.lib import data
from vaeclust.lib import experiment
from vaeclust.lib import files
from vaeclust.lib import hparams
from vaeclust.lib import images as images_lib

FLAGS = flags.FLAGS
# The shared flags, one per field of the model's Config, and these (hyper-parameters of training,
# not of the model).
METHOD_FLAGS = common_flags.method_flags()
hparams.define_flags(c3gan_model.Config, METHOD_FLAGS)
flags.DEFINE_float("d_learning_rate", 2e-4, "Adam learning rate of the discriminator and centroids.",
                   flag_values=METHOD_FLAGS)
flags.DEFINE_float("g_learning_rate", 2e-4, "Adam learning rate of the generators.",
                   flag_values=METHOD_FLAGS)
flags.DEFINE_float("beta_1", 0.5, "Adam β1 of both optimizers.", lower_bound=0, upper_bound=1,
                   flag_values=METHOD_FLAGS)
flags.DEFINE_float("beta_2", 0.999, "Adam β2 of both optimizers.", lower_bound=0, upper_bound=1,
                   flag_values=METHOD_FLAGS)
flags.DEFINE_integer("picture_codes", 10, "Codes (rows) in the TensorBoard pictures of generated "
                     "images.", lower_bound=1, flag_values=METHOD_FLAGS)
flags.DEFINE_integer("eval_samples_per_code", 32, "Generated images of each code written at every "
                     "evaluation to MODEL_DIR/eval/samples/code_<k>/<i>.png (0: none).",
                     lower_bound=0, flag_values=METHOD_FLAGS)


def _resolution_steps(image_size):
  try:
    return networks.num_resolution_steps(image_size)
  except ValueError:
    return None


for _name in ("d_learning_rate", "g_learning_rate"):
  flags.register_validator(_name, lambda v: v > 0, message=f"--{_name} must be > 0.",
                           flag_values=METHOD_FLAGS)
flags.register_validator("num_clusters", lambda v: v != common_flags.AUTO,
                         message="C3-GAN needs the number of classes: --num_clusters=K (auto is "
                         "Variational Clustering's).", flag_values=METHOD_FLAGS)
flags.register_multi_flags_validator(
    ["mode", "image_size", "g_filters", "d_filters"],
    lambda f: f["mode"] == "eval" or (_resolution_steps(f["image_size"]) is not None
               and len(f["g_filters"]) == _resolution_steps(f["image_size"]) + 1
               and len(f["d_filters"]) == _resolution_steps(f["image_size"])),
    message="To train, --image_size must be a power of two >= 8, with log2(image_size/4) + 1 --g_filters "
    "and log2(image_size/4) --d_filters (e.g. 128: 6 and 5; 32: 4 and 3).", flag_values=METHOD_FLAGS)


def config_from_flags(info: data.DatasetInfo) -> c3gan_model.Config:
  return hparams.from_flags(c3gan_model.Config, FLAGS, image_size=info.image_size,
                            channels=info.channels, num_clusters=int(FLAGS.num_clusters),
                            seed=FLAGS.seed)


def log_pictures(model, writer, step: int):
  """Generated images, backgrounds, masks and foregrounds: one row per code, one z per column."""
  rows = min(FLAGS.picture_codes, model.config.num_codes)
  pictures = model.sample_grid(list(range(rows)), columns=8)
  with writer.as_default(step=step):
    for name, grid in pictures.items():
      images_lib.summary_image(f"generated/{name}", images_lib.grid(grid.numpy()), step)
  writer.flush()


def write_samples(model, step: int):
  """MODEL_DIR/eval/samples/code_<k>/<i>.png: --eval_samples_per_code fresh images of each code,
  replaced as one set."""
  if not FLAGS.eval_samples_per_code:
    return
  samples = model.code_samples(FLAGS.eval_samples_per_code, seed=[FLAGS.seed, step]).numpy()

  def write(directory):
    for code, images in enumerate(samples):
      code_dir = os.path.join(directory, f"code_{code}")
      tf.io.gfile.makedirs(code_dir)
      for i, image in enumerate(images):
        with tf.io.gfile.GFile(os.path.join(code_dir, f"{i}.png"), "wb") as f:
          f.write(tf.io.encode_png(image).numpy())
  files.replace_directory(os.path.join(FLAGS.model_dir, "eval", "samples"), write)


def build(run: dict, strategy):
  """The model run.json describes with an Adam for D (+ centroids) and one for G, restored."""
  with strategy.scope():
    model = c3gan_model.from_run(run)
    model.set_optimizers(*(experiment.optimizer(keras.optimizers.Adam(
        rate, beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2))
        for rate in (FLAGS.d_learning_rate, FLAGS.g_learning_rate)))
  return model, experiment.resume(c3gan_model.checkpoint(model), model.d_optimizer.iterations,
                                  strategy)


def train(model, run: dict, train_ds, trainer, strategy, evaluate):
  """D then G steps on every batch, scoring every --eval_every steps."""
  del run, strategy
  dataset_fn = experiment.training_input(train_ds, FLAGS.batch_size, FLAGS.seed, trainer.step)
  trainer.run(model.train_step, dataset_fn, FLAGS.train_steps, phase="train",
              on_log=experiment.every_eval_step(evaluate, model))
  return model, trainer


def summaries(model, writer, step: int, final: bool):
  """At every evaluation: the generated grids (TensorBoard) and eval/samples/."""
  del final
  log_pictures(model, writer, step)
  write_samples(model, step)


METHOD = experiment.Method(
    name="c3gan", flags=METHOD_FLAGS, config=config_from_flags, build=build, train=train,
    scoring=lambda model: (model.config.num_outputs, model.config.over_clustering),
    summaries=summaries)


if __name__ == "__main__":
  experiment.cli(METHOD)
