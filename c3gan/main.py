"""Train and evaluate C3-GAN.

  python -m c3gan.main --flagfile=configs/c3gan_mnist5k.flags --model_dir=/tmp/c3gan1
  tensorboard --logdir=/tmp/c3gan1
"""
import os

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from c3gan import model as c3gan_model
from vaeclust.lib import common_flags
from vaeclust.lib import data
from vaeclust.lib import distribute
from vaeclust.lib import experiment
from vaeclust.lib import files
from vaeclust.lib import images as images_lib

METHOD = "c3gan"
FLAGS = flags.FLAGS
common_flags.define()
flags.DEFINE_integer("over_clustering", 1, "Codes per class: the model has num_clusters × this many "
                     "clusters; ACC then lets each class take this many (reference: 2 on CUB, 3 else).")
flags.DEFINE_integer("z_dim", 64, "Dimension of the noise z shared by both generators.")
flags.DEFINE_integer("code_noise_dim", 8, "Dimension of the noise of the code embedding.")
flags.DEFINE_list("g_filters", ["512", "256", "128", "64", "16", "16"],
                  "Generator widths: at 4×4, then after each ×2 up-block (log2(image_size/4) of them).")
flags.DEFINE_list("d_filters", ["64", "128", "256", "512", "512"],
                  "Discriminator widths, one per stride-2 conv down to 4×4 (log2(image_size/4) of them).")
flags.DEFINE_integer("embedding_dim", 512, "Dimension of the discriminator's embedding h(x).")
flags.DEFINE_float("temperature", 0.1, "τ of the cosine cluster logits cos(h(x), l_k)/τ.")
flags.DEFINE_float("contrastive_temperature", 0.1, "τ of NT-Xent between two views of real images.")
flags.DEFINE_float("info_weight", 5.0, "Weight of InfoNCE between a fake's embedding and its code's "
                   "centroid (D and G).")
flags.DEFINE_float("info_fg_weight", 1.0, "Weight of the same InfoNCE on the masked fake m·x̂.")
flags.DEFINE_float("generator_info_scale", 1.0, "The generator's step weighs both InfoNCE terms by "
                   "this times --info_weight / --info_fg_weight (1 as in the reference; below 1 "
                   "when the codes' InfoNCE would drown the adversarial signal, as on digits).")
flags.DEFINE_boolean("d_batch_norm", True, "Batch norm in the discriminator's trunk, as in the "
                     "reference; without it D judges every image on its own, the same in training "
                     "and at inference.")
flags.DEFINE_boolean("background", True, "Compose each fake from a code-free background, the "
                     "code's foreground and a mask, as in the reference; without it the foreground "
                     "generator draws the whole image (no mask, mask losses, masked InfoNCE or "
                     "foreground warp): for images that are one object, such as digits.")
flags.DEFINE_float("code_input_scale", 0.0, "> 0: the one-hot code times this is also concatenated "
                   "to z at the foreground generator's input (InfoGAN/ClusterGAN style), so that "
                   "the code rather than z decides what is drawn; 0 as in the reference.")
flags.DEFINE_float("contrastive_weight", 1.0, "Weight of NT-Xent on real images (D).")
flags.DEFINE_float("entropy_weight", 0.1, "Weight of the mean entropy of real images' cluster "
                   "posteriors (D; makes each confident).")
flags.DEFINE_float("balance_weight", 0.1, "Weight of −entropy of the global-batch mean posterior "
                   "(D; spreads images over the clusters).")
flags.DEFINE_float("adversarial_weight", 1.0, "Weight of the generator's hinge loss −D(x̂).")
flags.DEFINE_float("mask_area_weight", 1.0, "Weight of keeping each mask's mean inside --mask_area_range.")
flags.DEFINE_float("mask_binary_weight", 1.0, "Weight of the masks' binary entropy (pushes to 0/1).")
flags.DEFINE_list("mask_area_range", ["0.1", "0.9"], "Allowed mean mask area low,high.")
flags.DEFINE_list("fg_scale", ["0.8", "1.5"], "Range of the random zoom of foreground and mask.")
flags.DEFINE_float("fg_rotation", 15.0, "Largest random rotation of foreground and mask, degrees.")
flags.DEFINE_float("fg_shift", 0.15, "Largest random shift of foreground and mask, image fraction.")
flags.DEFINE_boolean("flip", True, "Mirror real images and their contrastive view at random "
                     "(off for digits, whose mirror images are other shapes).")
flags.DEFINE_list("view_crop_scale", ["0.2", "1.0"], "Area range of the contrastive view's random crop.")
flags.DEFINE_list("view_jitter", ["0.4", "0.4", "0.4", "0.1"],
                  "Colour jitter of the contrastive view: brightness, contrast, saturation, hue.")
flags.DEFINE_float("view_jitter_probability", 0.8, "Probability of colour jitter per view.")
flags.DEFINE_float("view_grayscale_probability", 0.2, "Probability of a grey view (colour images).")
flags.DEFINE_float("view_rotation", 0.0, "Largest random rotation of the contrastive view, degrees "
                   "(0 as in the reference; helps digits, whose crops and colours vary little).")
flags.DEFINE_float("view_shift", 0.0, "Largest random shift of the contrastive view, image fraction "
                   "(0 as in the reference).")
flags.DEFINE_float("d_learning_rate", 2e-4, "Adam learning rate of the discriminator and centroids.")
flags.DEFINE_float("g_learning_rate", 2e-4, "Adam learning rate of the generators.")
flags.DEFINE_float("beta_1", 0.5, "Adam β1 of both optimizers.")
flags.DEFINE_float("beta_2", 0.999, "Adam β2 of both optimizers.")
flags.DEFINE_integer("picture_codes", 10, "Codes (rows) in the TensorBoard pictures of generated images.")
flags.DEFINE_integer("eval_samples_per_code", 32, "Generated images of each code written at every "
                     "evaluation to MODEL_DIR/eval/samples/code_<k>/<i>.png (0: none).")


def _is_int_list(values):
  return len(values) >= 1 and all(v.isdigit() and int(v) > 0 for v in values)


def _is_range(values, low=0.0, high=float("inf")):
  try:
    a, b = (float(v) for v in values)
  except ValueError:
    return False
  return low <= a <= b <= high


def _resolution_steps(image_size):
  steps = np.log2(image_size / 4)
  return int(steps) if image_size >= 8 and steps == int(steps) else None


for _name in ("over_clustering", "z_dim", "code_noise_dim", "embedding_dim", "picture_codes"):
  flags.register_validator(_name, lambda v: v >= 1, message=f"--{_name} must be at least 1.")
flags.register_validator("eval_samples_per_code", lambda v: v >= 0,
                         message="--eval_samples_per_code must be >= 0.")
for _name in ("temperature", "contrastive_temperature", "d_learning_rate", "g_learning_rate"):
  flags.register_validator(_name, lambda v: v > 0, message=f"--{_name} must be > 0.")
for _name in ("info_weight", "info_fg_weight", "generator_info_scale", "contrastive_weight",
              "entropy_weight",
              "balance_weight", "adversarial_weight", "mask_area_weight", "mask_binary_weight",
              "fg_rotation", "fg_shift", "view_rotation", "view_shift", "code_input_scale"):
  flags.register_validator(_name, lambda v: v >= 0, message=f"--{_name} must be >= 0.")
for _name in ("beta_1", "beta_2", "view_jitter_probability", "view_grayscale_probability"):
  flags.register_validator(_name, lambda v: 0 <= v <= 1, message=f"--{_name} must be in [0, 1].")
flags.register_validator("num_clusters", lambda v: v != common_flags.AUTO,
                         message="C3-GAN needs the number of classes: --num_clusters=K (auto is "
                         "Variational Clustering's).")
flags.register_validator("mask_area_range", lambda v: _is_range(v, 0, 1),
                         message="--mask_area_range must be low,high with 0 <= low <= high <= 1.")
flags.register_validator("fg_scale", lambda v: _is_range(v) and float(v[0]) > 0,
                         message="--fg_scale must be low,high with 0 < low <= high.")
flags.register_validator("view_crop_scale", lambda v: _is_range(v, 0, 1) and float(v[0]) > 0,
                         message="--view_crop_scale must be low,high with 0 < low <= high <= 1.")
flags.register_validator("view_jitter", lambda v: len(v) == 4 and all(
    s.replace(".", "", 1).isdigit() for s in v) and float(v[3]) <= 0.5,
                         message="--view_jitter must be four numbers >= 0: brightness, contrast, "
                         "saturation, hue (hue <= 0.5).")
flags.register_validator("g_filters", _is_int_list,
                         message="--g_filters must be a comma-separated list of positive integers.")
flags.register_validator("d_filters", _is_int_list,
                         message="--d_filters must be a comma-separated list of positive integers.")
flags.register_multi_flags_validator(
    ["mode", "image_size", "g_filters", "d_filters"],
    lambda f: f["mode"] == "eval" or (_resolution_steps(f["image_size"]) is not None
               and len(f["g_filters"]) == _resolution_steps(f["image_size"]) + 1
               and len(f["d_filters"]) == _resolution_steps(f["image_size"])),
    message="To train, --image_size must be a power of two >= 8, with log2(image_size/4) + 1 --g_filters "
    "and log2(image_size/4) --d_filters (e.g. 128: 6 and 5; 32: 4 and 3).")


def config_from_flags(info: data.DatasetInfo) -> c3gan_model.Config:
  def floats(values):
    return tuple(float(v) for v in values)

  return c3gan_model.Config(
      image_size=info.image_size, channels=info.channels, num_clusters=int(FLAGS.num_clusters),
      over_clustering=FLAGS.over_clustering, z_dim=FLAGS.z_dim, code_noise_dim=FLAGS.code_noise_dim,
      g_filters=tuple(int(f) for f in FLAGS.g_filters),
      d_filters=tuple(int(f) for f in FLAGS.d_filters), embedding_dim=FLAGS.embedding_dim,
      temperature=FLAGS.temperature, contrastive_temperature=FLAGS.contrastive_temperature,
      info_weight=FLAGS.info_weight, info_fg_weight=FLAGS.info_fg_weight,
      generator_info_scale=FLAGS.generator_info_scale, d_batch_norm=FLAGS.d_batch_norm,
      contrastive_weight=FLAGS.contrastive_weight, entropy_weight=FLAGS.entropy_weight,
      balance_weight=FLAGS.balance_weight, adversarial_weight=FLAGS.adversarial_weight,
      mask_area_weight=FLAGS.mask_area_weight, mask_binary_weight=FLAGS.mask_binary_weight,
      mask_area_range=floats(FLAGS.mask_area_range), fg_scale=floats(FLAGS.fg_scale),
      fg_rotation=FLAGS.fg_rotation, fg_shift=FLAGS.fg_shift, flip=FLAGS.flip,
      view_crop_scale=floats(FLAGS.view_crop_scale), view_jitter=floats(FLAGS.view_jitter),
      view_jitter_probability=FLAGS.view_jitter_probability,
      view_grayscale_probability=FLAGS.view_grayscale_probability,
      view_rotation=FLAGS.view_rotation, view_shift=FLAGS.view_shift,
      background=FLAGS.background, code_input_scale=FLAGS.code_input_scale, seed=FLAGS.seed)


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


def main(argv):
  del argv
  strategy = experiment.start()
  run, train_ds = experiment.prepare_run(METHOD, __name__, config_from_flags, strategy)
  with strategy.scope():
    model = c3gan_model.from_run(run)
    model.set_optimizers(
        experiment.optimizer(keras.optimizers.Adam(FLAGS.d_learning_rate, beta_1=FLAGS.beta_1,
                                                   beta_2=FLAGS.beta_2)),
        experiment.optimizer(keras.optimizers.Adam(FLAGS.g_learning_rate, beta_1=FLAGS.beta_1,
                                                   beta_2=FLAGS.beta_2)))
  config = model.config
  checkpoint = tf.train.Checkpoint(model=model, d_optimizer=model.d_optimizer,
                                   g_optimizer=model.g_optimizer)
  trainer = experiment.resume(checkpoint, model.d_optimizer.iterations, strategy)
  eval_writer = experiment.summary_writer(strategy, "eval")

  def evaluate(step, write_files=True):
    result = experiment.evaluate(model, config.num_codes,
                                 step, strategy, eval_writer, config.channels,
                                 over_clustering=config.over_clustering, write_files=write_files)
    if distribute.is_chief(strategy):
      log_pictures(model, eval_writer, step)
      write_samples(model, step)
    return result

  if FLAGS.mode != "eval":
    dataset_fn = experiment.training_input(train_ds, FLAGS.batch_size, FLAGS.seed,
                                             trainer.step)
    trainer.run(model.train_step, dataset_fn, FLAGS.train_steps, phase="train",
                on_log=experiment.every_eval_step(evaluate))
  if FLAGS.mode != "train":
    evaluate(trainer.step)


if __name__ == "__main__":
  app.run(main)
