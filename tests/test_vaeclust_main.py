"""End to end through vaeclust.main (in this process; as a command where only a command shows it:
exit codes, kills): train → eval outputs, resume after a kill, errors."""
import csv
import glob
import json
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from vaeclust import main as vc_main_module
from vaeclust import model as vc_model


def test_train_and_eval_writes_the_evaluation_contract(vc_tiny, vc_main, tmp_path):
  model_dir = str(tmp_path / "run")
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--pretrain_steps=500", "--train_steps=800",
           "--checkpoint_every=400", "--balance_weight=1", "--eval_every=100",
           "--log_every=100", "--gmm_restarts=4", "--gmm_selection=coassociation")
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert set(metrics) >= {"acc", "nmi", "ari", "num_examples", "num_clusters", "step"}
  assert metrics["num_examples"] == 1797 and metrics["num_clusters"] == 10
  assert metrics["step"] == 800
  assert metrics["nmi"] > 0.5 and metrics["acc"] > 0.5  # chance is ~0.1
  with open(os.path.join(model_dir, "eval", "assignments.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1797 and set(rows[0]) == {"id", "cluster", "confidence", "fit"}
  assert all(0 <= int(r["cluster"]) < 10 and 0 < float(r["confidence"]) <= 1 for r in rows)
  with open(os.path.join(model_dir, "eval", "projector", "metadata.tsv")) as f:
    assert len(f.readlines()) == 1797 + 1  # every evaluated image, after the header
  assert os.path.exists(os.path.join(model_dir, "eval", "projector_config.pbtxt"))
  for picture in ("clusters.png", "confusion.png"):
    with open(os.path.join(model_dir, "eval", picture), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [n for n in os.listdir(os.path.join(model_dir, "eval")) if ".tmp-" in n]
  assert any(n.startswith("events") for n in os.listdir(os.path.join(model_dir, "train")))

  again = vc_main(f"--model_dir={model_dir}", "--mode=eval", "--dataset=digits",
                   "--image_size=8")
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    assert json.load(f)["acc"] == pytest.approx(metrics["acc"])
  assert "Resumed from" in again.stderr


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(start_module, vc_tiny, vc_main,
                                                                   tmp_path):
  args = [*vc_tiny, "--pretrain_steps=30", "--train_steps=60", "--checkpoint_every=10",
          "--gmm_restarts=2", "--gmm_selection=likelihood"]
  reference = tmp_path / "reference"
  vc_main(*args, f"--model_dir={reference}")
  model_dir = tmp_path / "killed"
  exists = lambda name: lambda: os.path.exists(model_dir / name)  # pylint: disable=unnecessary-lambda-assignment
  kills = [  # (when to kill, what must not be there yet)
      (exists("ckpt-10.index"), None),  # during the warm-up, right after a checkpoint
      (exists("ckpt-30.index"), "ckpt-prior-30.index"),  # the warm-up's last: during the GMM fit
      (exists("ckpt-prior-30.index"), "ckpt-40.index"),  # right after the prior's checkpoint
      (exists("ckpt-50.index"), "ckpt-60.index"),  # during training, right after a checkpoint
      (lambda: bool(glob.glob(str(model_dir / "eval.tmp-*"))), "eval/metrics.json"),  # while writing eval/
  ]
  for ready, not_yet in kills:
    process = start_module("vaeclust.main", *args, f"--model_dir={model_dir}")
    deadline = time.time() + 300
    while not ready() and process.poll() is None and time.time() < deadline:
      time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before the kill"
    assert not_yet is None or not os.path.exists(model_dir / not_yet), not_yet
    if not_yet == "ckpt-60.index":  # killed in training: resumed here, training alone
      latest = tf.train.latest_checkpoint(model_dir)  # ckpt-50, or ckpt-40 if its record was cut
      killed_at = int(latest.rsplit("-", 1)[1])
      log = vc_main(*args, f"--model_dir={model_dir}", "--mode=train").stderr
      assert f"Resumed from {latest}." in log
      assert "warmup: steps" not in log  # the warm-up and the GMM initialisation are not redone
      assert "Initialising the mixture prior" not in log
      assert f"train: steps {killed_at} → 60" in log and "train finished at step 60" in log
  vc_main(*args, f"--model_dir={model_dir}")
  for name in ("metrics.json", "assignments.csv"):
    assert (model_dir / "eval" / name).read_text() == (reference / "eval" / name).read_text()
  assert not [n for n in os.listdir(model_dir) if ".tmp-" in n or ".old-" in n]
  assert any(n.startswith("events") for n in os.listdir(model_dir / "eval"))


def test_the_prior_checkpoint_does_not_overwrite_the_warm_ups_last(vc_tiny, vc_main, tmp_path):
  model_dir = str(tmp_path / "run")
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--pretrain_steps=10", "--train_steps=10",
           "--gmm_restarts=1", "--mode=train")
  initialised = "model/prior_initialized/.ATTRIBUTES/VARIABLE_VALUE"
  for name, prior_initialized in (("ckpt-10", False), ("ckpt-prior-10", True)):
    assert tf.train.load_variable(os.path.join(model_dir, name), initialised) == prior_initialized
  assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, "ckpt-prior-10")


AUTO = ["--num_clusters=auto", "--num_clusters_range=2,16", "--pretrain_steps=300",
        "--train_steps=400", "--checkpoint_every=100", "--log_every=100", "--gmm_restarts=1"]


def _chosen(model_dir):
  with open(os.path.join(model_dir, "run.json")) as f:
    run = json.load(f)
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    assert json.load(f)["num_clusters"] == run["model"]["num_clusters"]
  assert run["num_clusters_choice"]["chosen"] == run["model"]["num_clusters"]
  return run


def test_auto_num_clusters_finds_the_classes_of_constructed_images(vc_tiny, vc_main, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  templates = rng.random((4, 8, 8)) < 0.5
  for k, template in enumerate(templates):
    (tmp_path / "images" / f"class{k}").mkdir(parents=True)
    for i in range(100):
      pixels = np.clip(template * 200.0 + 30 + rng.normal(0, 15, (8, 8)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(tmp_path / "images" / f"class{k}" / f"{i}.png")
  model_dir = tmp_path / "run"
  vc_main(*vc_tiny, *AUTO, "--dataset=folder", f"--data_dir={tmp_path / 'images'}", "--channels=1",
           f"--model_dir={model_dir}")
  run = _chosen(model_dir)
  assert run["model"]["num_clusters"] == 4
  assert run["num_clusters_choice"]["candidates"] == list(range(2, 17))
  with open(model_dir / "eval" / "metrics.json") as f:
    assert json.load(f)["acc"] > 0.95
  curve = {}
  for path in glob.glob(str(model_dir / "train" / "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "init/bic_by_num_clusters":
          curve[event.step] = float(tf.make_ndarray(value.tensor))
  assert sorted(curve) == list(range(2, 17)) and min(curve, key=curve.get) == 4
  from vaeclust import predict  # pylint: disable=g-import-not-at-top
  output = str(tmp_path / "clusters.csv")
  files, _ = predict.image_files([str(tmp_path / "images")])
  predict.predict(predict.Clusterer(str(model_dir)), files, output)
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 400 and [c for c in rows[0] if c.startswith("p_")] == ["p_0", "p_1", "p_2", "p_3"]


def test_auto_num_clusters_on_digits_is_near_ten_and_resumes_to_the_uninterrupted_result(vc_tiny, vc_main, tmp_path):
  reference = tmp_path / "reference"
  vc_main(*vc_tiny, *AUTO, f"--model_dir={reference}")
  k = _chosen(reference)["model"]["num_clusters"]
  assert 8 <= k <= 12
  with open(reference / "eval" / "assignments.csv") as f:
    assert {int(row["cluster"]) for row in csv.DictReader(f)} <= set(range(k))
  # Killed after run.json took the chosen K but before the first checkpoint with it: the resumed
  # run restores the warm-up's placeholder model and chooses again.
  model_dir = tmp_path / "killed"
  vc_main(*vc_tiny, *AUTO, f"--model_dir={model_dir}", "--train_steps=300", "--mode=train")
  for name in glob.glob(str(model_dir / "ckpt-prior-300*")):
    os.remove(name)
  tf.compat.v1.train.update_checkpoint_state(str(model_dir), str(model_dir / "ckpt-300"))
  assert _chosen_k_in_run_json(model_dir) == k
  vc_main(*vc_tiny, *AUTO, f"--model_dir={model_dir}", "--train_steps=350", "--mode=train")
  # and after it: from the chosen model's checkpoint
  vc_main(*vc_tiny, *AUTO, f"--model_dir={model_dir}")
  for name in ("metrics.json", "assignments.csv"):
    assert (model_dir / "eval" / name).read_text() == (reference / "eval" / name).read_text()


def _chosen_k_in_run_json(model_dir):
  with open(os.path.join(model_dir, "run.json")) as f:
    return json.load(f)["model"]["num_clusters"]


def _latest_step(model_dir):
  """Newest finished checkpoint (TF writes ckpt-N_temp/ first, then renames to ckpt-N.index)."""
  finished = (re.match(r"ckpt-(\d+)\.index$", name) for name in os.listdir(model_dir))
  steps = [int(m.group(1)) for m in finished if m]
  return max(steps, default=-1)


def _metrics_after_training_from_the_gmm(vc_tiny, vc_main, model_dir, initial_posterior_scale):
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--pretrain_steps=300", "--train_steps=400",
           "--consistency_weight=0.5", "--balance_weight=0", "--gmm_restarts=1", "--log_every=100",
           f"--initial_posterior_scale={initial_posterior_scale}")
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    return json.load(f)


def test_initial_posterior_scale_prevents_the_collapse_after_the_gmm_initialisation(
    vc_tiny, vc_main, tmp_path):
  # Without a balance term, the untrained scale head of q(z|x,c) makes every image move to the
  # widest prior component within 100 steps of the initialisation.
  untouched = _metrics_after_training_from_the_gmm(vc_tiny, vc_main, tmp_path / "untouched", 0)
  assert untouched["clusters_used"] <= 5, "this run does not collapse; the test needs one that does"
  scaled = _metrics_after_training_from_the_gmm(vc_tiny, vc_main, tmp_path / "scaled", 0.1)
  assert scaled["clusters_used"] >= 8 and scaled["acc"] > 0.5


@pytest.mark.parametrize("flag, message", [
    ("--num_clusters=1", "--num_clusters must be an integer of at least 2, or auto"),
    ("--num_clusters=auto --pretrain_steps=0", "--num_clusters=auto chooses K on the warm-up's "
     "codes: it needs a warm-up"),
    ("--train_epochs=-1", "flag --train_epochs=-1: -1.0 is not a non-negative number"),
    ("--max_train_steps=-1", "flag --max_train_steps=-1: -1 is not a non-negative integer"),
    ("--num_clusters=auto --num_clusters_range=5,3", "--num_clusters_range must be two integers"),
    ("--pretrain_steps=50", "--pretrain_steps must be between 0 and --train_steps"),
    ("--initial_posterior_scale=-1", "--initial_posterior_scale must be >= 0"),
    ("--conv_filters=a,b", "--conv_filters must be a comma-separated list"),
    ("--jit_compile --cpu_devices=2", "--jit_compile cannot run on several logical CPU devices"),
    ("--latent_dim=0", "--latent_dim must be at least 1"),
])
def test_bad_flags_fail_before_any_work(vc_tiny, vc_main, tmp_path, flag, message):
  result = vc_main(*vc_tiny, f"--model_dir={tmp_path}", "--train_steps=10", *flag.split(),
                    check=False)
  assert result.returncode != 0 and message in result.stderr
  assert not os.listdir(tmp_path)


def test_the_command_stops_with_one_clear_message_and_its_exit_code(run_module, tmp_path):
  result = run_module("vaeclust.main", "--dataset=stl10", f"--data_dir={tmp_path / 'tfds'}",
                      f"--model_dir={tmp_path / 'run'}", "--image_size=32", check=False,
                      timeout=120)
  assert result.returncode == 2
  assert "error: Dataset 'stl10' is not prepared under" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")


@pytest.fixture(scope="module")
def trained(vc_tiny, vc_main, tmp_path_factory):
  """A model_dir of 20 steps on the 8×8 digits (its eval/ written); copy it before changing it."""
  model_dir = str(tmp_path_factory.mktemp("trained") / "run")
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--train_steps=20")
  return model_dir


def _copy(model_dir, tmp_path):
  return shutil.copytree(model_dir, tmp_path / "run")


def test_eval_alone_scores_the_model_on_the_data_it_was_trained_on(vc_main, trained, tmp_path):
  model_dir = _copy(trained, tmp_path)
  metrics = model_dir / "eval" / "metrics.json"
  trained_metrics = metrics.read_text()
  metrics.unlink()
  vc_main("--mode=eval", f"--model_dir={model_dir}")  # README's form: no data flags
  assert metrics.read_text() == trained_metrics
  for flag, given in (("--image_size=28", "28×28 with 1"), ("--channels=3", "8×8 with 3")):
    refused = vc_main("--mode=eval", f"--model_dir={model_dir}", flag, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "holds a model of 8×8 images with 1 channel(s); " in refused.stderr
    assert f"gives {given}." in refused.stderr
  assert metrics.read_text() == trained_metrics
  other = vc_main("--mode=eval", f"--model_dir={model_dir}", "--dataset=mnist5k")  # at 8×8
  assert "Evaluating with --dataset=mnist5k; the model was trained with digits." in other.stderr
  with open(metrics) as f:
    assert json.load(f)["num_examples"] == 5000


def test_eval_of_a_run_json_without_flags_takes_its_dataset_and_the_other_flags(vc_main, trained, tmp_path):
  model_dir = _copy(trained, tmp_path)
  with open(model_dir / "run.json") as f:
    run = json.load(f)
  del run["flags"]  # as written before flags were stored
  with open(model_dir / "run.json", "w") as f:
    json.dump(run, f)
  (model_dir / "eval" / "metrics.json").unlink()
  vc_main("--mode=eval", f"--model_dir={model_dir}", "--image_size=8")
  with open(model_dir / "eval" / "metrics.json") as f:
    assert json.load(f)["num_examples"] == 1797


def test_resume_with_other_data_or_training_flags_is_refused_with_the_differences(vc_tiny, vc_main, trained):
  for flags, listed in (
      (["--dataset=mnist5k"], ["dataset: digits → mnist5k"]),
      (["--learning_rate=0.01", "--kl_warmup_steps=5", "--batch_size=32"],
       ["batch_size: 64 → 32", "kl_warmup_steps: 0 → 5", "learning_rate: 0.001 → 0.01"]),
      (["--latent_dim=4"], ["latent_dim: 8 → 4"])):
    refused = vc_main(*vc_tiny, f"--model_dir={trained}", "--train_steps=40", *flags, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"holds a run with other settings ({'; '.join(listed)})" in refused.stderr
  assert _latest_step(trained) == 20


def test_a_run_that_stored_num_clusters_as_an_integer_resumes(vc_tiny, vc_main, trained, tmp_path):
  model_dir = _copy(trained, tmp_path)
  run = json.loads((model_dir / "run.json").read_text())
  run["flags"]["num_clusters"] = 10  # as runs stored it before --num_clusters took auto
  (model_dir / "run.json").write_text(json.dumps(run))
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--mode=train")
  assert _latest_step(model_dir) == 30


def test_a_run_from_before_a_new_setting_resumes_with_its_default_only(vc_tiny, vc_main, trained,
                                                                       tmp_path):
  model_dir = _copy(trained, tmp_path)
  run = json.loads((model_dir / "run.json").read_text())
  for stored in (run["model"], run["flags"]):  # as runs stored them before the setting existed
    del stored["warmup_contrastive_weight"]
  (model_dir / "run.json").write_text(json.dumps(run))
  refused = vc_main(*vc_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--mode=train",
                    "--warmup_contrastive_weight=1", check=False)
  assert refused.returncode == 2 and "warmup_contrastive_weight: None → 1.0" in refused.stderr
  vc_main(*vc_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--mode=train")
  assert _latest_step(model_dir) == 30


def test_resume_may_change_how_long_how_often_and_where_a_run_goes(vc_tiny, vc_main, trained, tmp_path):
  model_dir = _copy(trained, tmp_path)
  resumed = vc_main(*vc_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--log_every=5",
                     "--eval_batch_size=100", "--checkpoint_every=5", "--mode=train")
  for name, value, before in (("train_steps", 30, 20), ("log_every", 5, 10),
                              ("eval_batch_size", 100, 512), ("checkpoint_every", 5, 1000)):
    assert f"Resuming with --{name}={value} (the run started with {before})." in resumed.stderr
  assert "train finished at step 30" in resumed.stderr


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_folder_images_are_all_clustered_or_named_as_skipped(vc_tiny, vc_main, tmp_path, odd_image_folder):
  folder, readable, unreadable = odd_image_folder
  model_dir = tmp_path / "run"
  result = vc_main("--dataset=folder", f"--data_dir={folder}", f"--model_dir={model_dir}",
                    *vc_tiny[1:], "--num_clusters=2", "--batch_size=4", "--train_steps=4")
  assigned = _read_csv(model_dir / "eval" / "assignments.csv")
  assert sorted(r["id"] for r in assigned) == sorted(readable)
  skipped = _read_csv(model_dir / "eval" / "skipped.csv")
  assert [r["file"] for r in skipped] == unreadable and all(r["reason"] for r in skipped)
  assert all(name in result.stderr for name in unreadable)


def test_folder_without_a_readable_image_stops_before_training(vc_main, tmp_path):
  (tmp_path / "images").mkdir()
  (tmp_path / "images" / "empty.jpg").write_bytes(b"")
  result = vc_main("--dataset=folder", f"--data_dir={tmp_path / 'images'}",
                    f"--model_dir={tmp_path / 'run'}", "--batch_size=4", check=False)
  assert result.returncode == 2 and "None of the 1 image files" in result.stderr
  assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "run")


def test_eval_of_an_empty_model_dir_says_train_first(vc_main, tmp_path):
  result = vc_main("--mode=eval", f"--model_dir={tmp_path}", check=False)
  assert result.returncode == 2 and "train first" in result.stderr


@pytest.mark.parametrize("config", ["mnist", "fashion_mnist", "cifar10", "stl10"])
def test_full_reproduction_configs_parse_and_look_for_their_data(vc_main, tmp_path, config):
  result = vc_main(f"--flagfile=configs/{config}.flags", f"--data_dir={tmp_path / 'tfds'}",
                    f"--model_dir={tmp_path / 'run'}", check=False)
  assert result.returncode == 2 and "is not prepared under" in result.stderr


def _template_folder(root, mode: str, classes: int = 4, per_class: int = 60, size: int = 16):
  """Class folders of noisy copies of random block templates (grey or colour PNG files)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  channels = 3 if mode == "RGB" else 1
  templates = np.kron(rng.random((classes, 4, 4, channels)) < 0.5, np.ones((1, 4, 4, 1)))
  for k, template in enumerate(templates):
    (root / f"class{k}").mkdir(parents=True)
    for i in range(per_class):
      pixels = np.clip(template * 200.0 + 30 + rng.normal(0, 15, template.shape), 0, 255)
      Image.fromarray(pixels.astype(np.uint8).squeeze(-1) if channels == 1
                      else pixels.astype(np.uint8), mode).save(root / f"class{k}" / f"{i}.png")


@pytest.mark.xdist_group("umap")  # folder.flags embeds the codes with UMAP
@pytest.mark.parametrize("config, mode, channels, max_steps, steps", [
    ("folder", "L", 1, 0, (60, 120)), ("cifar10_cpu", "RGB", 3, 50, (25, 50))])
def test_the_folder_recipe_sizes_its_run_by_the_folder(vc_main, tmp_path, config, mode, channels,
                                                       max_steps, steps):
  _template_folder(tmp_path / "images", mode)
  model_dir = tmp_path / "run"
  # the documented command with what a user knows, and a smaller network to stay quick
  # (cifar10_cpu.flags is folder.flags with CIFAR-10's K and size, which the test overrides)
  vc_main(f"--flagfile=configs/{config}.flags", f"--data_dir={tmp_path / 'images'}",
          "--num_clusters=4", "--image_size=16", f"--model_dir={model_dir}", "--conv_filters=8",
          "--hidden_units=32", "--batch_size=32", "--pretrain_epochs=8", "--train_epochs=16",
          f"--max_train_steps={max_steps}", "--gmm_restarts=3", "--log_every=10")
  with open(model_dir / "run.json") as f:
    run = json.load(f)
  # 240 images: 8 epochs of batch 32 are 60 steps, 16 epochs 120; a limit of 50 shortens both
  assert (run["model"]["pretrain_steps"], run["flags"]["train_steps"]) == steps
  assert run["model"]["channels"] == channels  # grey PNG files train as grey
  with open(model_dir / "eval" / "metrics.json") as f:
    assert json.load(f)["acc"] > 0.9


@pytest.mark.xdist_group("umap")  # one worker compiles UMAP's numba functions for all its tests
def test_init_manifold_umap_fits_the_restarts_on_the_embedded_codes(vc_tiny, vc_main, tmp_path):
  model_dir = tmp_path / "run"
  log = vc_main(*vc_tiny, f"--model_dir={model_dir}", "--pretrain_steps=20", "--train_steps=20",
                "--gmm_restarts=2", "--init_manifold=umap").stderr
  assert "UMAP embedding of" in log and "GMM fit(s) to" in log and "embedded codes" in log
  with open(model_dir / "eval" / "metrics.json") as f:
    assert json.load(f)["clusters_used"] >= 2


def test_the_views_that_score_the_gmm_restarts_are_the_nt_xent_views(monkeypatch, flags_of,
                                                                     tmp_path):
  """The stability that chooses among GMM restarts is measured under the views the model learns
  to ignore (for colour images crops, flips and colour jitter, not affine warps)."""
  model = vc_model.VariationalClustering(vc_model.Config(
      image_size=8, channels=3, num_clusters=2, latent_dim=2, conv_filters=(4,), hidden_units=8))
  views = []

  def recorded_view(images, noise):
    views.append(vc_model.VariationalClustering.contrastive_view(model, images, noise))
    return views[-1]

  monkeypatch.setattr(model, "contrastive_view", recorded_view)
  images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
  ds = tf.data.Dataset.from_tensor_slices({"image": images})
  # embed reads --seed and --eval_batch_size
  with flags_of("vaeclust.main", f"--model_dir={tmp_path}", "--seed=3", "--eval_batch_size=16"):
    codes, first, second = (vc_main_module.embed(model, ds, view=v) for v in (0, 1, 2))
  assert len(views) == 2  # views 1 and 2, each traced once for any batch size
  assert codes.shape == first.shape == (20, 2)
  np.testing.assert_allclose(codes, model.embed(images.astype(np.float32) / 255.0), rtol=1e-5)
  assert not np.allclose(first, codes) and not np.allclose(first, second)
