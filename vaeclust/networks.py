"""Convolutional encoder and decoder of Variational Clustering, sized by flags."""
from typing import Sequence

import keras


def conv_encoder(image_size: int, channels: int, filters: Sequence[int], hidden_units: int,
                 name: str = "encoder") -> keras.Sequential:
  """Strided 4x4 convolutions (each halves the image) then a dense layer: image → features."""
  return keras.Sequential(
      [keras.Input((image_size, image_size, channels))]
      + [keras.layers.Conv2D(f, 4, strides=2, padding="same", activation="relu") for f in filters]
      + [keras.layers.Flatten(), keras.layers.Dense(hidden_units, activation="relu")],
      name=name)


def conv_decoder(latent_dim: int, image_size: int, channels: int, filters: Sequence[int],
                 hidden_units: int, name: str = "decoder") -> keras.Sequential:
  """Mirror of the encoder: latent code → per-pixel parameters (logits or means), cropped to size."""
  base = -(-image_size // 2 ** len(filters))  # the encoder's final size ("same" padding)
  excess = base * 2 ** len(filters) - image_size
  return keras.Sequential(
      [keras.Input((latent_dim,)),
       keras.layers.Dense(hidden_units, activation="relu"),
       keras.layers.Dense(base * base * filters[-1], activation="relu"),
       keras.layers.Reshape((base, base, filters[-1]))]
      + [keras.layers.Conv2DTranspose(f, 4, strides=2, padding="same", activation="relu")
         for f in list(reversed(filters))[1:] + [filters[0]]]
      + [keras.layers.Cropping2D(((excess // 2, excess - excess // 2),) * 2),
         keras.layers.Conv2D(channels, 3, padding="same")],
      name=name)
