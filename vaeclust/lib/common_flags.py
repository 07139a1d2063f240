"""Flags every clustering run understands (both methods; other tools rely on these names)."""
from absl import flags

from vaeclust.lib import data
from vaeclust.lib import distribute

MODES = ("train", "eval", "train_and_eval")
AUTO = "auto"  # --num_clusters=auto


def define():
  """Defines the shared flags and their checks; call once at import of a main module."""
  flags.DEFINE_enum("dataset", "mnist5k", data.DATASETS,
                    "Images to cluster: a tfds name, a bundled set (mnist5k, digits) or `folder`.")
  flags.DEFINE_string("data_dir", None,
                      "tfds data directory (prepared datasets), or the image folder for "
                      "--dataset=folder (sub-folder names, if any, are labels used only to score).")
  flags.DEFINE_string("train_split", None, "Split to train on (tfds syntax, e.g. train+unlabelled); "
                      "default: the dataset's usual clustering split.")
  flags.DEFINE_string("eval_split", None, "Split to evaluate on; default as --train_split.")
  flags.DEFINE_integer("image_size", 28, "Images are resized to image_size × image_size.")
  flags.DEFINE_integer("channels", 0, "1 (grey) or 3 (colour); 0 keeps the dataset's own.")
  flags.DEFINE_boolean("crop_to_bbox", False, "Crop to the dataset's bounding box where it has one.")
  flags.DEFINE_string("num_clusters", "10", "Number of clusters K (at least 2), or `auto`: "
                     "Variational Clustering chooses K without labels after its warm-up, within "
                     "--num_clusters_range.")
  flags.DEFINE_integer("batch_size", 128, "Global batch size (split evenly across replicas).")
  flags.DEFINE_integer("eval_batch_size", 256, "Batch size for evaluation.")
  flags.DEFINE_integer("projector_examples", 10_000, "Evaluated images whose embeddings, "
                       "thumbnails and clusters the evaluation writes for TensorBoard's Projector "
                       "tab (MODEL_DIR/eval/projector/; the first ones in evaluation order). 0: none.",
                       lower_bound=0)
  flags.DEFINE_integer("train_steps", 10_000, "Total training steps (warm-up included).")
  flags.DEFINE_integer("seed", 0, "Random seed for weights, sampling and data order.")
  flags.DEFINE_string("model_dir", None, "Directory for checkpoints, TensorBoard logs and eval/.")
  flags.DEFINE_enum("mode", "train_and_eval", MODES,
                    "train, eval (the newest checkpoint in --model_dir), or train_and_eval.")
  flags.DEFINE_integer("log_every", 100, "Steps between progress lines and TensorBoard scalars.")
  flags.DEFINE_integer("eval_every", 0, "Also score the clustering every this many training steps "
                       "(TensorBoard eval/*; labels are only used to score). 0: only at the end.")
  flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.")
  flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")
  flags.DEFINE_enum("strategy", "mirrored", distribute.STRATEGIES,
                    "tf.distribute strategy: mirrored (all local GPUs, else CPU), multi_worker "
                    "(from TF_CONFIG), one_device, tpu.")
  flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices (replicas).")
  flags.DEFINE_enum("mixed_precision", "off", ["off", "mixed_float16", "mixed_bfloat16"],
                    "Compute in 16-bit floats with float32 weights (mixed_float16 adds dynamic loss "
                    "scaling; use mixed_bfloat16 on TPUs and recent CPUs). The mixture prior, KL "
                    "terms, softmaxes and losses stay float32.")
  flags.DEFINE_boolean("jit_compile", False, "Compile each training step with XLA.")

  flags.mark_flag_as_required("model_dir")
  flags.register_validator("num_clusters", lambda v: v == AUTO or (v.isdigit() and int(v) >= 2),
                           message="--num_clusters must be an integer of at least 2, or auto.")
  for name, low in (("batch_size", 1), ("eval_batch_size", 1),
                    ("train_steps", 0), ("image_size", 8), ("log_every", 1),
                    ("checkpoint_every", 1), ("keep_checkpoints", 1), ("cpu_devices", 1)):
    flags.register_validator(name, lambda value, low=low: value is not None and value >= low,
                             message=f"--{name} must be at least {low}.")
  flags.register_multi_flags_validator(
      ["eval_every", "log_every"], lambda f: f["eval_every"] % f["log_every"] == 0,
      message="--eval_every must be a multiple of --log_every (0: evaluate only at the end).")
  flags.register_validator("channels", lambda value: value in (0, 1, 3),
                           message="--channels must be 0 (dataset's own), 1 or 3.")
