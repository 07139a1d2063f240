"""Train and evaluate Variational Clustering.

  python -m vaeclust.main --flagfile=configs/mnist5k.flags --model_dir=/tmp/run1
  tensorboard --logdir=/tmp/run1
"""
import importlib.util
import time

from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from vaeclust import model as vc_model
from vaeclust import num_clusters as num_clusters_lib
from vaeclust import prior_init
from vaeclust.lib import command
from vaeclust.lib import common_flags
from vaeclust.lib import data
from vaeclust.lib import distribute
from vaeclust.lib import evaluation
from vaeclust.lib import experiment
from vaeclust.lib import hparams
from vaeclust.lib import images as images_lib
from vaeclust.lib import noise as noise_lib
from vaeclust.lib import training

# The checkpoint saved once the prior is initialised, ckpt-prior-STEP (the warm-up's last is
# ckpt-STEP).
PRIOR_CHECKPOINT = "ckpt-prior"
PRIOR_LOGITS_KEY = "model/prior/logits/.ATTRIBUTES/VARIABLE_VALUE"  # [K] in a checkpoint
FLAGS = flags.FLAGS
# The shared flags, one per field of the model's Config, and these (of training and of the prior's
# initialisation, not of the model).
METHOD_FLAGS = common_flags.method_flags()
hparams.define_flags(vc_model.Config, METHOD_FLAGS)
flags.DEFINE_integer("gmm_init_examples", 20_000, "Training images whose codes fit that GMM.",
                     flag_values=METHOD_FLAGS)
flags.DEFINE_integer("gmm_restarts", 20, "GMM fits from different starts after the warm-up; the one "
                     "kept by --gmm_selection initialises the prior (1: a single fit).",
                     flag_values=METHOD_FLAGS)
flags.DEFINE_enum("gmm_selection", "augmentation", prior_init.CRITERIA,
                  "Which GMM restart initialises the prior: augmentation (assignments most stable "
                  "under the NT-Xent's views), consensus (agrees most with the other restarts; "
                  "for images too small to augment), likelihood (highest), or coassociation "
                  "(none: the prior is fitted to the groups of images that the restarts put "
                  "together most often).",
                  flag_values=METHOD_FLAGS)
flags.DEFINE_enum("init_manifold", "none", prior_init.MANIFOLDS,
                  "Where the GMMs that initialise the prior are fitted: on the warm-up codes (none) "
                  "or on their UMAP embedding in K dimensions (umap, as N2D; needs umap-learn), "
                  "whose groups then give the prior's components their moments in code space.",
                  flag_values=METHOD_FLAGS)
flags.DEFINE_float("pretrain_epochs", 0.0, "Warm-up length in passes over the training images; "
                   "sets --pretrain_steps from the number of images and --batch_size (0: use "
                   "--pretrain_steps).", lower_bound=0.0, flag_values=METHOD_FLAGS)
flags.DEFINE_float("train_epochs", 0.0, "Training length (warm-up included) in passes over the "
                   "training images; sets --train_steps likewise (0: use --train_steps).",
                   lower_bound=0.0, flag_values=METHOD_FLAGS)
flags.DEFINE_integer("max_train_steps", 0, "With --train_epochs: the most steps the run may take "
                     "(warm-up included); a longer epoch schedule is shortened to it, the warm-up by "
                     "the same factor, so that a large folder stays within a time budget (0: no "
                     "limit).", lower_bound=0, flag_values=METHOD_FLAGS)
flags.DEFINE_list("num_clusters_range", ["2", "30"], "With --num_clusters=auto: the smallest and "
                  "largest K to choose from (by the BIC of Gaussian mixtures fitted to the warm-up "
                  "codes).", flag_values=METHOD_FLAGS)

flags.register_validator(
    "init_manifold", lambda v: v != "umap" or importlib.util.find_spec("umap") is not None,
    message="--init_manifold=umap needs umap-learn: pip install umap-learn.",
    flag_values=METHOD_FLAGS)
flags.register_validator("gmm_restarts", lambda v: v >= 1, message="--gmm_restarts must be at least 1.",
                         flag_values=METHOD_FLAGS)
flags.register_multi_flags_validator(
    ["temperature_start", "temperature_end"], lambda f: f["temperature_start"] >= f["temperature_end"],
    message="--temperature_start must be at least --temperature_end.", flag_values=METHOD_FLAGS)
flags.register_validator(
    "num_clusters_range", lambda v: len(v) == 2 and all(s.isdigit() for s in v)
    and 2 <= int(v[0]) <= int(v[1]),
    message="--num_clusters_range must be two integers low,high with 2 <= low <= high.",
    flag_values=METHOD_FLAGS)
flags.register_multi_flags_validator(
    ["num_clusters", "pretrain_steps", "pretrain_epochs", "mode"],
    lambda f: f["num_clusters"] != common_flags.AUTO or f["pretrain_steps"] > 0
    or f["pretrain_epochs"] > 0 or f["mode"] == "eval",
    message="--num_clusters=auto chooses K on the warm-up's codes: it needs a warm-up "
    "(--pretrain_steps or --pretrain_epochs > 0).",
    flag_values=METHOD_FLAGS)
flags.register_multi_flags_validator(
    ["pretrain_steps", "train_steps"], lambda f: 0 <= f["pretrain_steps"] <= f["train_steps"],
    message="--pretrain_steps must be between 0 and --train_steps.", flag_values=METHOD_FLAGS)


def config_from_flags(info: data.DatasetInfo) -> vc_model.Config:
  steps_from_epochs(info)
  return hparams.from_flags(vc_model.Config, FLAGS, image_size=info.image_size,
                            channels=info.channels, num_clusters=num_clusters_of_run(),
                            seed=FLAGS.seed)


def steps_from_epochs(info: data.DatasetInfo):
  """Sets --pretrain_steps / --train_steps from --pretrain_epochs / --train_epochs (so that one
  recipe fits folders of any size; run.json then records the steps)."""
  for epochs, steps in (("pretrain_epochs", "pretrain_steps"), ("train_epochs", "train_steps")):
    if not FLAGS[epochs].value:
      continue
    if not info.num_examples:
      command.fail(f"--{epochs} needs the number of training images, which {info.name} does not "
                   f"tell before reading them; give --{steps} instead.")
    FLAGS[steps].value = max(1, round(FLAGS[epochs].value * info.num_examples / FLAGS.batch_size))
    logging.info("--%s=%g: %s = %d (%d images, batch %d).", epochs, FLAGS[epochs].value, steps,
                 FLAGS[steps].value, info.num_examples, FLAGS.batch_size)
  if FLAGS.train_epochs and FLAGS.max_train_steps and FLAGS.train_steps > FLAGS.max_train_steps:
    shortening = FLAGS.max_train_steps / FLAGS.train_steps
    if FLAGS.pretrain_epochs:  # first: the flags' check wants the warm-up within training
      FLAGS.pretrain_steps = max(1, round(FLAGS.pretrain_steps * shortening))
    FLAGS.train_steps = FLAGS.max_train_steps
    logging.info("--max_train_steps=%d: train_steps = %d, pretrain_steps = %d (%.2f of the epoch "
                 "schedule).", FLAGS.max_train_steps, FLAGS.train_steps, FLAGS.pretrain_steps,
                 shortening)
  if not 0 <= FLAGS.pretrain_steps <= FLAGS.train_steps:
    command.fail(f"The warm-up ({FLAGS.pretrain_steps} steps) is longer than training "
                 f"({FLAGS.train_steps} steps); --train_epochs includes the warm-up.")


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
    model.compile(optimizer=experiment.optimizer(keras.optimizers.Adam(model.config.learning_rate)))
    model.optimizer.build(model.trainable_variables)
  trainer = experiment.resume(vc_model.checkpoint(model), model.optimizer.iterations, strategy,
                              restore=restore)
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
              on_log=experiment.every_eval_step(evaluate, model))
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
  """Fits GMMs to the warm-up codes (or their UMAP embedding) and copies the one --gmm_selection
  keeps (or the moments of its groups) into the prior."""
  codes = embed(model, ds)
  # with a single fit there is nothing to choose
  criterion = FLAGS.gmm_selection if FLAGS.gmm_restarts > 1 else "likelihood"
  views = [embed(model, ds, view=v) for v in (1, 2)] if criterion == "augmentation" else []
  k, covariance = model.config.num_clusters, model.config.prior_covariance
  space = codes
  if FLAGS.init_manifold == "umap":
    start = time.time()
    space, views = prior_init.umap_embedding(codes, views, k, FLAGS.seed)
    logging.info("UMAP embedding of %d codes in %d dimensions in %.0f s.", len(codes), k,
                 time.time() - start)
  logging.info("Initialising the mixture prior: %d GMM fit(s) to %d %s.", FLAGS.gmm_restarts,
               len(codes), "codes" if space is codes else "embedded codes")
  choice = prior_init.choose_mixture(space, k, covariance, FLAGS.gmm_restarts, FLAGS.seed,
                                     criterion, views)
  gmm = choice.gmm
  if space is not codes:
    gmm = prior_init.mixture_from_groups(codes, codes, gmm.predict_proba(space), covariance,
                                         FLAGS.seed, refine=False)
  # every worker fits its own GMMs; the chief's must initialise all of them
  model.init_prior(*distribute.from_first_replica(
      trainer.strategy, [gmm.weights_, gmm.means_, gmm.covariances_]))
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
  """Code means m(x) of every image of a uint8 dataset (view 0), or of a view of each as the
  NT-Xent and consistency terms see them (view ≥ 1: each view its own random transforms)."""
  def codes(images, batch_number):
    if view:
      noise = noise_lib.BatchNoise(FLAGS.seed, batch_number, tf.shape(images)[0], stream=view)
      images = model.contrastive_view(images, noise)
    return model.embed(images)

  c = model.config
  infer = evaluation.batch_function(codes, [c.image_size, c.image_size, c.channels],
                                    tf.TensorSpec([], tf.int64))

  batches = data.evaluation_batches(ds, FLAGS.eval_batch_size)
  return np.concatenate([infer(b["image"], tf.constant(i, tf.int64)).numpy()
                         for i, b in enumerate(batches)])


def log_model_summaries(model, writer, step: int, channels: int):
  """The objective on the evaluation split, reconstructions of evaluation images, samples from
  every mixture component and the mixture weights."""
  ds, _ = experiment.load_split(train=False, channels=channels)
  c = model.config
  test_step = evaluation.batch_function(lambda images: model.test_step({"image": images}),
                                        [c.image_size, c.image_size, c.channels])
  totals, count = {}, 0
  for batch in data.evaluation_batches(ds, FLAGS.eval_batch_size):
    size = int(tf.shape(batch["image"])[0])
    for name, value in test_step(batch["image"]).items():
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


def resumed(run: dict) -> dict:
  """With a K chosen by the run (--num_clusters=auto), the K of its newest checkpoint: the
  warm-up's placeholder until the chosen model's first checkpoint."""
  if FLAGS.num_clusters == common_flags.AUTO or run.get("num_clusters_choice"):
    k = checkpoint_num_clusters(FLAGS.model_dir)
    run = dict(run, model=dict(run["model"], num_clusters=k or run["model"]["num_clusters"]))
  return run


def summaries(model, writer, step: int, final: bool):
  if final:
    log_model_summaries(model, writer, step, model.config.channels)


METHOD = experiment.Method(
    name="variational_clustering", flags=METHOD_FLAGS, config=config_from_flags, build=build,
    train=train, scoring=lambda model: (model.config.num_outputs, 1), summaries=summaries,
    resumed=resumed)


if __name__ == "__main__":
  experiment.cli(METHOD)
