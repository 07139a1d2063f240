"""Flags every clustering run understands (both methods; other tools rely on these names)."""
import functools
import sys

from absl import flags

from vaeclust.lib import data
from vaeclust.lib import distribute

MODES = ("train", "eval", "train_and_eval")
AUTO = "auto"  # --num_clusters=auto


def method_flags() -> flags.FlagValues:
  """A method's own set of flags, holding the shared ones: its main defines the rest in it, and
  `use` makes it the process's flags when that method runs. Each method keeps its defaults and
  checks (both have a --balance_weight; C3-GAN refuses --num_clusters=auto), and both mains
  import in one process."""
  fv = flags.FlagValues()
  _define(fv)
  return fv


def use(method: flags.FlagValues):
  """Puts a method's flags into absl's global FLAGS, where app.run parses them (--flagfile and
  --help included, which lists them as the main program's) and the shared code reads them; the
  flags of another method that ran before in this process leave first."""
  if _in_use and _in_use[0] is not method:
    flags.FLAGS.remove_flag_values(_in_use.pop())
  if not _in_use:
    flags.FLAGS.append_flag_values(method)
    for name in method:
      flags.FLAGS.register_flag_by_module(sys.argv[0], method[name])  # absl's main module
    _in_use.append(method)


_in_use = []  # the method flags now in absl's FLAGS


def _define(fv: flags.FlagValues):
  """Defines the shared flags and their checks in `fv`."""
  enum, string, integer, boolean, required, validator, multi_validator = (
      functools.partial(define, flag_values=fv) for define in (
          flags.DEFINE_enum, flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_boolean,
          flags.mark_flag_as_required, flags.register_validator,
          flags.register_multi_flags_validator))
  enum("dataset", "mnist5k", data.DATASETS,
       "Images to cluster: a tfds name, a bundled set (mnist5k, digits) or `folder`.")
  string("data_dir", None,
         "tfds data directory (prepared datasets), or the image folder for "
         "--dataset=folder (sub-folder names, if any, are labels used only to score).")
  string("train_split", None, "Split to train on (tfds syntax, e.g. train+unlabelled); "
         "default: the dataset's usual clustering split.")
  string("eval_split", None, "Split to evaluate on; default as --train_split.")
  integer("image_size", 28, "Images are resized to image_size × image_size.")
  integer("channels", 0, "1 (grey) or 3 (colour); 0 keeps the dataset's own.")
  boolean("crop_to_bbox", False, "Crop to the dataset's bounding box where it has one.")
  string("num_clusters", "10", "Number of clusters K (at least 2), or `auto`: "
         "Variational Clustering chooses K without labels after its warm-up, within "
         "--num_clusters_range.")
  integer("batch_size", 128, "Global batch size (split evenly across replicas).")
  integer("eval_batch_size", 256, "Batch size for evaluation.")
  integer("projector_examples", 10_000, "Evaluated images whose embeddings, "
          "thumbnails and clusters the evaluation writes for TensorBoard's Projector "
          "tab (MODEL_DIR/eval/projector/; the first ones in evaluation order). 0: none.",
          lower_bound=0)
  integer("train_steps", 10_000, "Total training steps (warm-up included).")
  integer("seed", 0, "Random seed for weights, sampling and data order.")
  string("model_dir", None, "Directory for checkpoints, TensorBoard logs and eval/.")
  enum("mode", "train_and_eval", MODES,
       "train, eval (the newest checkpoint in --model_dir), or train_and_eval.")
  integer("log_every", 100, "Steps between progress lines and TensorBoard scalars.")
  integer("eval_every", 0, "Also score the clustering every this many training steps "
          "(TensorBoard eval/*; labels are only used to score). 0: only at the end.")
  integer("checkpoint_every", 1000, "Steps between checkpoints.")
  integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")
  enum("strategy", "mirrored", distribute.STRATEGIES,
       "tf.distribute strategy: mirrored (all local GPUs, else CPU), multi_worker "
       "(from TF_CONFIG), one_device, tpu.")
  integer("cpu_devices", 1, "Split the CPU into this many logical devices (replicas).")
  enum("mixed_precision", "off", ["off", "mixed_float16", "mixed_bfloat16"],
       "Compute in 16-bit floats with float32 weights (mixed_float16 adds dynamic loss "
       "scaling; use mixed_bfloat16 on TPUs and recent CPUs). The mixture prior, KL "
       "terms, softmaxes and losses stay float32.")
  boolean("jit_compile", False, "Compile each training step with XLA.")

  required("model_dir")
  validator("num_clusters", lambda v: v == AUTO or (v.isdigit() and int(v) >= 2),
            message="--num_clusters must be an integer of at least 2, or auto.")
  for name, low in (("batch_size", 1), ("eval_batch_size", 1),
                    ("train_steps", 0), ("image_size", 8), ("log_every", 1),
                    ("checkpoint_every", 1), ("keep_checkpoints", 1), ("cpu_devices", 1)):
    validator(name, lambda value, low=low: value is not None and value >= low,
              message=f"--{name} must be at least {low}.")
  multi_validator(
      ["eval_every", "log_every"], lambda f: f["eval_every"] % f["log_every"] == 0,
      message="--eval_every must be a multiple of --log_every (0: evaluate only at the end).")
  validator("channels", lambda value: value in (0, 1, 3),
            message="--channels must be 0 (dataset's own), 1 or 3.")
