"""Image grids for TensorBoard and evaluation pictures."""
import numpy as np
import tensorflow as tf

from vaeclust.lib import files


def grid(images, pad: int = 1) -> np.ndarray:
  """[rows, cols, H, W, C] floats in [0, 1] (or uint8) → one uint8 [H', W', C] picture."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
  rows, cols, height, width, channels = images.shape
  out = np.full((rows * (height + pad) + pad, cols * (width + pad) + pad, channels), 128, np.uint8)
  for r in range(rows):
    for c in range(cols):
      top, left = pad + r * (height + pad), pad + c * (width + pad)
      out[top:top + height, left:left + width] = images[r, c]
  return out


TITLE_HEIGHT = 14  # pixels of a line of PIL's default font


def titled_rows(picture: np.ndarray, titles, row_height: int, pad: int = 1) -> np.ndarray:
  """A grid picture (rows of `row_height` pixels between `pad`-pixel lines, as grid() makes) with a
  margin at its left holding each row's title."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  font = ImageFont.load_default()
  width = max([int(font.getlength(t)) for t in titles] + [0]) + 6
  margin = Image.new("L", (width, picture.shape[0]), 40)
  draw = ImageDraw.Draw(margin)
  for row, title in enumerate(titles):
    top = pad + row * (row_height + pad) + max(0, (row_height - TITLE_HEIGHT) // 2)
    draw.text((3, top), title, fill=255, font=font)
  margin = np.repeat(np.asarray(margin)[..., None], picture.shape[-1], axis=-1)
  return np.concatenate([margin, picture], axis=1)


def write_png(path: str, picture: np.ndarray):
  files.write_atomically(path, tf.io.encode_png(picture).numpy(), mode="wb")


def summary_image(name: str, picture: np.ndarray, step: int):
  """Logs one uint8 [H, W, C] picture to the default summary writer."""
  tf.summary.image(name, picture[None], step=step, max_outputs=1)
