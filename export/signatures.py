"""The serving module of a trained model: signatures that take raw images of any size and channel
count and preprocess them in-graph exactly as training did, so clients need no vaeclust code."""
import tensorflow as tf

from vaeclust.lib import data

DEFAULT = "serving_default"  # uint8 pixels
ENCODED = "predict_encoded"  # PNG/JPEG/BMP/GIF bytes
METADATA = "metadata"
IMAGES = "images"
# TF Serving's REST API base64-decodes {"b64": ...} values of any string input; "_bytes" is the
# usual name suffix for binary string tensors (TF Serving base64-encodes such outputs).
IMAGE_BYTES = "image_bytes"


def preprocess(images: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """uint8 [B, H, W, 1|2|3|4] → float32 [B, S, S, channels] in [0, 1], as the training pipeline."""
  tf.debugging.assert_rank(images, 4, message="images must be [batch, height, width, channels]")
  have = tf.shape(images)[-1]
  tf.debugging.assert_equal(tf.logical_and(have >= 1, have <= 4), True,
                            message="images must have 1, 2, 3 or 4 channels")
  images = data.resize_uint8(data.convert_channels(images, channels), image_size)
  return tf.cast(images, tf.float32) / 255.0


class ServingModule(tf.Module):
  """Holds the model and its metadata (str or int values); `signatures()` is what
  tf.saved_model.save needs."""

  def __init__(self, model, image_size: int, channels: int, metadata: dict):
    super().__init__()
    self.model = model
    self.image_size = image_size
    self.channels = channels
    self.metadata_values = dict(metadata)

  def _predict(self, images):
    outputs = self.model(preprocess(images, self.image_size, self.channels), training=False)
    probabilities = tf.cast(outputs["probabilities"], tf.float32)
    return {"cluster": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
            "probabilities": probabilities,
            "embedding": tf.cast(outputs["embedding"], tf.float32),
            "fit": tf.cast(outputs["fit"], tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name=IMAGES)])
  def predict_images(self, images):
    return self._predict(images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)])
  def predict_encoded(self, image_bytes):
    def decode(encoded):
      image = tf.io.decode_image(encoded, expand_animations=False)  # [H, W, 1..4], first GIF frame
      return data.resize_uint8(data.convert_channels(image, self.channels), self.image_size)
    images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec(
        [self.image_size, self.image_size, self.channels], tf.uint8))
    return self._predict(images)

  @tf.function(input_signature=[])
  def metadata(self):
    def dtype(value):
      return {int: tf.int64, float: tf.float32}.get(type(value), tf.string)
    return {key: tf.constant(value, dtype(value)) for key, value in self.metadata_values.items()}

  def signatures(self) -> dict:
    return {DEFAULT: self.predict_images, ENCODED: self.predict_encoded, METADATA: self.metadata}
