"""Train and evaluate Variational Clustering.

  python -m vaeclust.main --flagfile=configs/mnist5k.flags --model_dir=/tmp/run1
  tensorboard --logdir=/tmp/run1
"""
from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from vaeclust import model as vc_model
from vaeclust import num_clusters as num_clusters_lib
from vaeclust import prior_init
from vaeclust.lib import common_flags
from vaeclust.lib import data
from vaeclust.lib import distribute
from vaeclust.lib import experiment
from vaeclust.lib import images as images_lib
from vaeclust.lib import noise as noise_lib
from vaeclust.lib import training

METHOD = "variational_clustering"
# The checkpoint saved once the prior is initialised, ckpt-prior-STEP (the warm-up's last is
# ckpt-STEP).
PRIOR_CHECKPOINT = "ckpt-prior"
PRIOR_LOGITS_KEY = "model/prior/logits/.ATTRIBUTES/VARIABLE_VALUE"  # [K] in a checkpoint
FLAGS = flags.FLAGS
common_flags.define()
flags.DEFINE_integer("latent_dim", 10, "Dimension of the continuous code z.")
flags.DEFINE_list("conv_filters", ["32", "64", "128"], "Filters of the strided encoder convolutions "
                  "(each halves the image; the decoder mirrors them).")
flags.DEFINE_integer("hidden_units", 256, "Width of the dense layer of encoder and decoder.")
flags.DEFINE_enum("likelihood", "auto", ["auto", "bernoulli", "gaussian"],
                  "p(x|z): bernoulli for grey images in [0, 1], gaussian (learned scale) for colour; "
                  "auto picks by channels.")
flags.DEFINE_enum("cluster_posterior", "prior+head", ["prior+head", "head"],
                  "q(c|x) logits: log p(c | z=m(x)) under the mixture prior plus a learned head "
                  "(starts at zero), or the head alone.")
flags.DEFINE_enum("prior_covariance", "full", ["full", "diag"],
                  "Covariance of each mixture component p(z|c): full (Cholesky factor) or diagonal.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (encoder, decoder and prior).")
flags.DEFINE_float("temperature_start", 1.0, "Gumbel-softmax temperature after the warm-up.")
flags.DEFINE_float("temperature_end", 0.5, "Lowest Gumbel-softmax temperature.")
flags.DEFINE_integer("temperature_decay_steps", 5000,
                     "Steps for the temperature to fall by a factor e (exponential decay).")
flags.DEFINE_integer("kl_warmup_steps", 0, "Steps of a linear 0→1 ramp of the KL weight after the "
                     "warm-up (0: full weight at once).")
flags.DEFINE_float("balance_weight", 0.0, "Weight of KL(batch-mean q(c|x) || uniform), which stops "
                   "images collapsing into few clusters.")
flags.DEFINE_float("consistency_weight", 0.0, "Weight of the cross-entropy between q(c|x) and "
                   "q(c|augmented x); > 0 also warms up on augmented inputs.")
flags.DEFINE_integer("pretrain_steps", 0, "Warm-up autoencoder steps, after which the mixture prior "
                     "is initialised from a GMM fitted to the codes (0: no warm-up).")
flags.DEFINE_float("initial_posterior_scale", 0.1, "After the warm-up, start the scale of q(z|x,c) "
                   "at this fraction of the fitted components' within-cluster std (0: leave the "
                   "untrained scale head as it is, which can be much wider than the components "
                   "and pull images into the widest one).")
flags.DEFINE_integer("gmm_init_examples", 20_000, "Training images whose codes fit that GMM.")
flags.DEFINE_integer("gmm_restarts", 20, "GMM fits from different starts after the warm-up; the one "
                     "kept by --gmm_selection initialises the prior (1: a single fit).")
flags.DEFINE_enum("gmm_selection", "augmentation", prior_init.CRITERIA,
                  "Which GMM restart initialises the prior: augmentation (assignments most stable "
                  "under augmentation), consensus (agrees most with the other restarts; for images "
                  "too small to augment), likelihood (highest), or coassociation (none: the prior "
                  "is fitted to the groups of images that the restarts put together most often).")
flags.DEFINE_list("num_clusters_range", ["2", "30"], "With --num_clusters=auto: the smallest and "
                  "largest K to choose from (by the BIC of Gaussian mixtures fitted to the warm-up "
                  "codes).")
flags.DEFINE_list("augment_scale", ["0.9", "1.1"], "Range of the random zoom of augmentations.")
flags.DEFINE_float("augment_rotation", 10.0, "Largest random rotation of augmentations, degrees.")
flags.DEFINE_float("augment_shift", 0.08, "Largest random shift of augmentations, image fraction.")
flags.DEFINE_float("scale_floor", 1e-3, "Smallest standard deviation of q(z|x,c) and p(z|c).")

flags.register_validator("gmm_restarts", lambda v: v >= 1, message="--gmm_restarts must be at least 1.")
flags.register_validator("latent_dim", lambda v: v >= 1, message="--latent_dim must be at least 1.")
flags.register_validator("conv_filters", lambda v: len(v) >= 1 and all(s.isdigit() and int(s) > 0 for s in v),
                         message="--conv_filters must be a comma-separated list of positive integers.")
flags.register_validator("augment_scale", lambda v: len(v) == 2 and 0 < float(v[0]) <= float(v[1]),
                         message="--augment_scale must be two numbers low,high with 0 < low <= high.")
flags.register_validator("temperature_end", lambda v: v > 0, message="--temperature_end must be > 0.")
flags.register_validator("learning_rate", lambda v: v > 0, message="--learning_rate must be > 0.")
flags.register_validator("initial_posterior_scale", lambda v: v >= 0,
                         message="--initial_posterior_scale must be >= 0.")
flags.register_validator("scale_floor", lambda v: v > 0, message="--scale_floor must be > 0.")
flags.register_multi_flags_validator(
    ["temperature_start", "temperature_end"], lambda f: f["temperature_start"] >= f["temperature_end"],
    message="--temperature_start must be at least --temperature_end.")
flags.register_validator(
    "num_clusters_range", lambda v: len(v) == 2 and all(s.isdigit() for s in v)
    and 2 <= int(v[0]) <= int(v[1]),
    message="--num_clusters_range must be two integers low,high with 2 <= low <= high.")
flags.register_multi_flags_validator(
    ["num_clusters", "pretrain_steps", "mode"],
    lambda f: f["num_clusters"] != common_flags.AUTO or f["pretrain_steps"] > 0 or f["mode"] == "eval",
    message="--num_clusters=auto chooses K on the warm-up's codes: it needs --pretrain_steps > 0.")
flags.register_multi_flags_validator(
    ["pretrain_steps", "train_steps"], lambda f: 0 <= f["pretrain_steps"] <= f["train_steps"],
    message="--pretrain_steps must be between 0 and --train_steps.")


def config_from_flags(info: data.DatasetInfo) -> vc_model.Config:
  likelihood = FLAGS.likelihood
  if likelihood == "auto":
    likelihood = "bernoulli" if info.channels == 1 else "gaussian"
  return vc_model.Config(
      image_size=info.image_size, channels=info.channels, num_clusters=num_clusters_of_run(),
      latent_dim=FLAGS.latent_dim, conv_filters=tuple(int(f) for f in FLAGS.conv_filters),
      hidden_units=FLAGS.hidden_units, likelihood=likelihood, scale_floor=FLAGS.scale_floor,
      prior_covariance=FLAGS.prior_covariance,
      temperature_start=FLAGS.temperature_start, temperature_end=FLAGS.temperature_end,
      temperature_decay_steps=FLAGS.temperature_decay_steps, kl_warmup_steps=FLAGS.kl_warmup_steps,
      balance_weight=FLAGS.balance_weight, consistency_weight=FLAGS.consistency_weight,
      pretrain_steps=FLAGS.pretrain_steps, initial_posterior_scale=FLAGS.initial_posterior_scale,
      cluster_posterior=FLAGS.cluster_posterior,
      augment_scale=tuple(float(s) for s in FLAGS.augment_scale),
      augment_rotation=FLAGS.augment_rotation, augment_shift=FLAGS.augment_shift, seed=FLAGS.seed)


def num_clusters_of_run() -> int:
  """K of the model the flags describe. With --num_clusters=auto that is the K that run.json
  records once the warm-up has chosen it, and the largest candidate before (a placeholder: the
  warm-up trains no variable that depends on K)."""
  if FLAGS.num_clusters != common_flags.AUTO:
    return int(FLAGS.num_clusters)
  stored = experiment.stored_run()
  return stored["model"]["num_clusters"] if stored else int(FLAGS.num_clusters_range[1])


def checkpoint_num_clusters(directory: str):
  """K of the model in the newest checkpoint of `directory` (None without one): a run killed
  after the warm-up chose K but before its first checkpoint with that K resumes with the
  warm-up's placeholder and chooses again (the same K: the choice is seeded)."""
  path = tf.train.latest_checkpoint(directory)
  if not path:
    return None
  return tf.train.load_checkpoint(path).get_variable_to_shape_map()[PRIOR_LOGITS_KEY][0]


def build(run: dict, strategy, restore: bool = True):
  """The model run.json describes with its optimizer, and the Trainer that saves them (after
  restoring the newest checkpoint, with `restore`)."""
  with strategy.scope():
    model = vc_model.from_run(run)
    model.compile(optimizer=experiment.optimizer(keras.optimizers.Adam(FLAGS.learning_rate)))
    model.optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
  trainer = experiment.resume(checkpoint, model.optimizer.iterations, strategy, restore=restore)
  return model, trainer


def train(model, run: dict, train_ds, trainer: training.Trainer, strategy, evaluate):
  """Warm-up (optional), the choice of K (--num_clusters=auto), the GMM initialisation of the
  prior, then ELBO steps; all of them on one stream of batches, which a resumed run continues
  where it stopped. Returns the trained model and its Trainer (others than those given when K
  was chosen)."""
  trainer.run(model.pretrain_step, training_input(train_ds, trainer), model.config.pretrain_steps,
              phase="warmup")
  # a checkpoint with the prior initialised tells a resumed run that this is done
  if model.config.pretrain_steps and not bool(model.prior_initialized.numpy()):
    ds = train_ds.take(FLAGS.gmm_init_examples)
    if FLAGS.num_clusters == common_flags.AUTO:
      model, trainer = with_chosen_num_clusters(model, run, ds, trainer, strategy)
    initialise_prior(model, ds, trainer)
    trainer.save_as(PRIOR_CHECKPOINT)
    if FLAGS.eval_every:
      evaluate(model, trainer.step, write_files=False)
  trainer.run(model.train_step, training_input(train_ds, trainer), FLAGS.train_steps,
              phase="train",
              on_log=experiment.every_eval_step(lambda step, **kw: evaluate(model, step, **kw)))
  return model, trainer


def with_chosen_num_clusters(model, run: dict, ds: tf.data.Dataset, trainer: training.Trainer,
                             strategy):
  """Chooses K on the warm-up codes, records it in run.json and the train summaries, and returns
  a model of K clusters holding the warm-up's weights (its optimizer starts afresh) with the
  Trainer that saves it."""
  low, high = (int(v) for v in FLAGS.num_clusters_range)
  codes = embed(model, ds)
  logging.info("Choosing K in %d…%d by the BIC of GMMs fitted to %d warm-up codes.", low, high,
               len(codes))
  choice = num_clusters_lib.choose(codes, range(low, high + 1), model.config.prior_covariance,
                                   FLAGS.seed)
  # every worker chooses on its own codes; the chief's choice holds for all of them
  k = int(distribute.from_first_replica(strategy, [np.array(choice.num_clusters, np.int32)])[0])
  logging.info("Chose K = %d (BIC %s).", k, ", ".join(
      f"{c}: {b:.0f}" for c, b in zip(choice.candidates, choice.scores)))
  with trainer.writer.as_default():
    for candidate, score in zip(choice.candidates, choice.scores):
      tf.summary.scalar("init/bic_by_num_clusters", score, step=candidate)
    tf.summary.scalar("init/num_clusters", k, step=trainer.step)
  run = dict(run, model=dict(run["model"], num_clusters=k), num_clusters_choice={
      "criterion": "bic", "candidates": choice.candidates, "scores": choice.scores, "chosen": k})
  experiment.rewrite_run(run, strategy)
  chosen, chosen_trainer = build(run, strategy, restore=False)
  vc_model.copy_cluster_free_weights(model, chosen)
  chosen.optimizer.iterations.assign(trainer.step)
  return chosen, chosen_trainer


def training_input(train_ds, trainer: training.Trainer):
  return experiment.training_input(train_ds, FLAGS.batch_size, FLAGS.seed, trainer.step)


def initialise_prior(model, ds: tf.data.Dataset, trainer: training.Trainer):
  """Fits GMMs to the warm-up codes and copies the one --gmm_selection keeps into the prior."""
  codes = embed(model, ds)
  # with a single fit there is nothing to choose
  criterion = FLAGS.gmm_selection if FLAGS.gmm_restarts > 1 else "likelihood"
  views = [embed(model, ds, view=v) for v in (1, 2)] if criterion == "augmentation" else []
  logging.info("Initialising the mixture prior: %d GMM fit(s) to %d codes.", FLAGS.gmm_restarts,
               len(codes))
  choice = prior_init.choose_mixture(codes, model.config.num_clusters,
                                     model.config.prior_covariance, FLAGS.gmm_restarts, FLAGS.seed,
                                     criterion, views)
  # every worker fits its own GMMs; the chief's must initialise all of them
  model.init_prior(*distribute.from_first_replica(
      trainer.strategy, [choice.gmm.weights_, choice.gmm.means_, choice.gmm.covariances_]))
  if FLAGS.gmm_restarts == 1:
    return
  if choice.index < 0:
    logging.info("Prior from the co-association groups of %d restarts (their consensus: %.3f to "
                 "%.3f).", FLAGS.gmm_restarts, min(choice.scores), max(choice.scores))
  else:
    logging.info("Kept GMM restart %d by %s %.3f (restarts: %.3f to %.3f).", choice.index + 1,
                 criterion, choice.scores[choice.index], min(choice.scores), max(choice.scores))
  with trainer.writer.as_default(step=trainer.step):
    measure = "consensus" if criterion == "coassociation" else criterion
    tf.summary.histogram(f"init/restart_{measure}", choice.scores)
    if choice.index >= 0:
      tf.summary.scalar(f"init/{criterion}", choice.scores[choice.index])


def embed(model, ds: tf.data.Dataset, view: int = 0) -> np.ndarray:
  """Code means m(x) of every image of a uint8 dataset (view 0), or of an augmented copy of each
  (view ≥ 1: each view its own random transforms)."""
  @tf.function
  def infer(images, batch_number):
    if view:
      noise = noise_lib.BatchNoise(FLAGS.seed, batch_number, tf.shape(images)[0], stream=view)
      images = model.augment(images, noise)
    return model.embed(images)

  batches = data.evaluation_batches(ds, FLAGS.eval_batch_size)
  return np.concatenate([infer(b["image"], tf.constant(i, tf.int64)).numpy()
                         for i, b in enumerate(batches)])


def log_model_summaries(model, writer, step: int, channels: int):
  """The objective on the evaluation split, reconstructions of evaluation images, samples from
  every mixture component and the mixture weights."""
  ds, _ = experiment.load_split(train=False, channels=channels)
  test_step = tf.function(model.test_step)
  totals, count = {}, 0
  for batch in data.evaluation_batches(ds, FLAGS.eval_batch_size):
    size = int(tf.shape(batch["image"])[0])
    for name, value in test_step(batch).items():
      totals[name] = totals.get(name, 0.0) + float(value) * size
    count += size
  images = next(iter(data.evaluation_batches(ds, 16)))["image"]
  codes = model.embed(images)
  pairs = tf.stack([images, model.decode_mean(codes)], axis=0)
  with writer.as_default(step=step):
    for name, total in totals.items():
      tf.summary.scalar(f"eval/{name}", total / count)
    images_lib.summary_image("pictures/reconstructions (top: input)", images_lib.grid(pairs), step)
    images_lib.summary_image("pictures/samples_per_component",
                             images_lib.grid(model.sample_images(8)), step)
    tf.summary.histogram("prior/mixture_weights", tf.nn.softmax(model.prior.logits), step=step)
  writer.flush()


def main(argv):
  del argv
  strategy = experiment.start()
  run, train_ds = experiment.prepare_run(METHOD, __name__, config_from_flags, strategy)
  if FLAGS.num_clusters == common_flags.AUTO or run.get("num_clusters_choice"):
    k = checkpoint_num_clusters(FLAGS.model_dir)
    run = dict(run, model=dict(run["model"], num_clusters=k or run["model"]["num_clusters"]))
  model, trainer = build(run, strategy)
  eval_writer = experiment.summary_writer(strategy, "eval")

  def evaluate(model, step, write_files=True):
    return experiment.evaluate(model, model.config.num_clusters, step, strategy, eval_writer,
                               model.config.channels, write_files=write_files)

  if FLAGS.mode != "eval":
    model, trainer = train(model, run, train_ds, trainer, strategy, evaluate)
  if FLAGS.mode != "train":
    evaluate(model, trainer.step)
    if distribute.is_chief(strategy):
      log_model_summaries(model, eval_writer, trainer.step, model.config.channels)


if __name__ == "__main__":
  app.run(main)
