"""`python -m vaeclust.predict` and its pieces: the clusters of image files equal the evaluation's
(eval/assignments.csv) and the exported SavedModel's, for both methods; unreadable files are named."""
import csv
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from export import saved_model
from vaeclust import predict as predict_lib
from vaeclust.lib import data

TRAIN = {
    "vaeclust.main": ["--conv_filters=8", "--hidden_units=32", "--latent_dim=4",
                      "--pretrain_steps=30", "--train_steps=60", "--gmm_restarts=2"],
    "c3gan.main": ["--g_filters=16,8", "--g_res_blocks=1,0", "--d_filters=8", "--embedding_dim=8", "--noflip",
                   "--train_steps=10", "--eval_samples_per_code=0"],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """240 of the 8×8 digits as PNG files in class folders, grey, enlarged to 16×16."""
  root = tmp_path_factory.mktemp("digits")
  ds, _ = data.load("digits", split="all", image_size=8)
  for i, example in enumerate(ds.take(240).as_numpy_iterator()):
    directory = root / str(example["label"])
    directory.mkdir(exist_ok=True)
    Image.fromarray(example["image"][..., 0]).resize((16, 16)).save(directory / f"{i}.png")
  return str(root)


@pytest.fixture(scope="module")
def trained(in_process, folder, tmp_path_factory):
  """model_dir of a run of each method on `folder`, trained on first use."""
  runs = {}

  def get(module):
    if module not in runs:
      runs[module] = str(tmp_path_factory.mktemp("run") / module)
      in_process(module, "--dataset=folder", f"--data_dir={folder}", "--image_size=8",
                 "--num_clusters=4", "--batch_size=32", "--log_every=10",
                 f"--model_dir={runs[module]}", "--seed=1", *TRAIN[module])
    return runs[module]
  return get


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.parametrize("module", sorted(TRAIN))
def test_predict_equals_the_evaluation_and_the_exported_model(module, folder, trained, tmp_path):
  model_dir = trained(module)
  evaluated = {r["id"]: r for r in _read_csv(os.path.join(model_dir, "eval", "assignments.csv"))}
  assert len(evaluated) == 240

  clusterer = predict_lib.Clusterer(model_dir)
  files, missing = predict_lib.image_files([folder])
  assert len(files) == 240 and not missing
  output = str(tmp_path / "out" / "clusters.csv")
  assert predict_lib.predict(clusterer, files, output, batch_size=50) == []
  rows = _read_csv(output)
  num_clusters = len(rows[0]) - 5
  assert num_clusters == 4
  assert list(rows[0])[:6] == ["file", "cluster", "confidence", "fit", "outlier", "p_0"]
  for row in rows:
    expected = evaluated[os.path.relpath(row["file"], folder)]
    assert row["cluster"] == expected["cluster"], row["file"]
    assert float(row["confidence"]) == pytest.approx(float(expected["confidence"]), abs=1e-5)
    assert float(row["fit"]) == pytest.approx(float(expected["fit"]), abs=1e-4)
    assert row["outlier"] == str(int(float(row["fit"]) < clusterer.fit_threshold))
    probabilities = [float(row[f"p_{k}"]) for k in range(num_clusters)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert int(np.argmax(probabilities)) == int(row["cluster"])

  exported = saved_model.export(model_dir, str(tmp_path / "models"), "m")
  served = tf.saved_model.load(exported).signatures["predict_encoded"](
      image_bytes=tf.constant([open(r["file"], "rb").read() for r in rows]))
  np.testing.assert_array_equal(served["cluster"].numpy(), [int(r["cluster"]) for r in rows])
  np.testing.assert_allclose(served["fit"].numpy(), [float(r["fit"]) for r in rows], atol=1e-4)
  # about 1% of the evaluated images fit worse than the suggested threshold
  assert 0 < sum(r["outlier"] == "1" for r in rows) <= 240 * 0.02 + 1


def test_predict_command_names_unreadable_files_and_writes_the_others(run_module, folder, trained,
                                                                      tmp_path):
  model_dir = trained("vaeclust.main")
  mixed = tmp_path / "mixed"
  (mixed / "deeper").mkdir(parents=True)
  Image.open(os.path.join(folder, "0", "0.png")).convert("RGB").save(mixed / "deeper" / "a.jpg")
  Image.open(os.path.join(folder, "1", "1.png")).save(mixed / "b.png")
  (mixed / "broken.png").write_bytes(b"not an image")
  (mixed / "notes.txt").write_text("not looked at")
  output = tmp_path / "clusters.csv"
  result = run_module("vaeclust.predict", f"--model_dir={model_dir}", f"--output={output}",
                      str(mixed), str(tmp_path / "nowhere.png"), check=False, timeout=200)
  assert result.returncode == 1, result.stderr[-2000:]
  assert f"{mixed / 'broken.png'}: not clustered" in result.stderr
  assert f"{tmp_path / 'nowhere.png'}: not clustered: no such file or folder" in result.stderr
  rows = _read_csv(output)
  assert sorted(os.path.relpath(r["file"], mixed) for r in rows) == ["b.png", "deeper/a.jpg"]
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]

  nothing = run_module("vaeclust.predict", f"--model_dir={tmp_path}", f"--output={output}",
                       str(mixed), check=False, timeout=200)
  assert nothing.returncode == 2 and "holds no trained model" in nothing.stderr


def test_images_of_another_kind_are_flagged_far_more_often_than_held_out_images(trained, tmp_path):
  clusterer = predict_lib.Clusterer(trained("vaeclust.main"))
  assert np.isfinite(clusterer.fit_threshold)
  ds, _ = data.load("digits", split="all", image_size=8)
  # digits not trained on, enlarged as the folder's were, then as training sees them
  held_out = np.stack([np.asarray(Image.fromarray(e["image"][..., 0]).resize((16, 16)))[..., None]
                       for e in ds.skip(1500).as_numpy_iterator()])
  held_out = data.resize_uint8(data.convert_channels(held_out, clusterer.channels), 8).numpy()
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  photos = np.stack([photo[y:y + 64, x:x + 64] for photo in load_sample_images().images
                     for y in range(0, 384, 64) for x in range(0, 576, 96)])  # 108 photo crops
  photos = data.resize_uint8(data.convert_channels(photos, clusterer.channels), 8).numpy()
  rates = {}
  for name, images in (("held-out digits", held_out), ("photos", photos)):
    _, fits = clusterer.outputs(images)
    rates[name] = float(np.mean(fits < clusterer.fit_threshold))
  assert rates["held-out digits"] < 0.1 and rates["photos"] > 0.8, rates
