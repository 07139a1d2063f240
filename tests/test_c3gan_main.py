"""End to end through c3gan.main (in this process; its command for exit codes): train → eval
outputs → re-eval → resume, and errors."""
import csv
import json
import os

import pytest


def _metrics(model_dir):
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    return json.load(f)


def test_train_eval_and_resume(c3gan_tiny, c3gan_main, tmp_path):
  model_dir = str(tmp_path / "run")
  c3gan_main(*c3gan_tiny, f"--model_dir={model_dir}", "--train_steps=20", "--checkpoint_every=10")
  metrics = _metrics(model_dir)
  assert set(metrics) >= {"acc", "nmi", "ari", "many_to_one_acc", "num_examples", "num_clusters",
                          "step"}
  assert metrics["num_examples"] == 1797 and metrics["num_clusters"] == 20  # 10 classes × 2
  assert metrics["step"] == 20 and 0 < metrics["acc"] <= metrics["many_to_one_acc"] <= 1
  with open(os.path.join(model_dir, "eval", "assignments.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1797 and set(rows[0]) == {"id", "cluster", "confidence", "fit"}
  assert all(0 <= int(r["cluster"]) < 20 and 0 < float(r["confidence"]) <= 1 for r in rows)
  with open(os.path.join(model_dir, "eval", "projector", "metadata.tsv")) as f:
    assert len(f.readlines()) == 1797 + 1  # every evaluated image, after the header
  assert os.path.exists(os.path.join(model_dir, "eval", "projector_config.pbtxt"))
  for picture in ("clusters.png", "confusion.png"):
    with open(os.path.join(model_dir, "eval", picture), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for name in ("train", "eval"):
    assert any(n.startswith("events") for n in os.listdir(os.path.join(model_dir, name)))
  samples = os.path.join(model_dir, "eval", "samples")
  assert sorted(os.listdir(samples)) == sorted(f"code_{k}" for k in range(20))
  for k in (0, 19):
    names = os.listdir(os.path.join(samples, f"code_{k}"))
    assert sorted(names) == sorted(f"{i}.png" for i in range(32))  # --eval_samples_per_code default
    with open(os.path.join(samples, f"code_{k}", "0.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [n for n in os.listdir(os.path.join(model_dir, "eval")) if ".tmp-" in n or ".old-" in n]
  with open(os.path.join(model_dir, "run.json")) as f:
    run = json.load(f)
  assert run["method"] == "c3gan" and run["model"]["over_clustering"] == 2
  assert run["flags"]["dataset"] == "digits" and run["flags"]["g_learning_rate"] == 2e-4

  again = c3gan_main(f"--model_dir={model_dir}", "--mode=eval", "--eval_batch_size=512")
  assert f"Resumed from {os.path.join(model_dir, 'ckpt-20')}" in again.stderr
  assert _metrics(model_dir)["acc"] == pytest.approx(metrics["acc"])

  refused = c3gan_main(*c3gan_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--beta_1=0.9",
                     check=False)
  assert refused.returncode == 2 and "(beta_1: 0.5 → 0.9)" in refused.stderr
  resumed = c3gan_main(*c3gan_tiny, f"--model_dir={model_dir}", "--train_steps=30", "--checkpoint_every=10",
                     "--mode=train")
  assert f"Resumed from {os.path.join(model_dir, 'ckpt-20')}" in resumed.stderr
  assert "train: steps 20 → 30" in resumed.stderr
  assert "train finished at step 30" in resumed.stderr
  assert os.path.exists(os.path.join(model_dir, "ckpt-30.index"))


@pytest.mark.parametrize("flag, message", [
    ("--over_clustering=0", "--over_clustering must be at least 1"),
    ("--g_filters=16,8,8", "log2(image_size/4) + 1 --g_filters"),
    ("--temperature=0", "--temperature must be > 0"),
    ("--view_crop_scale=0.5,2", "--view_crop_scale must be low,high"),
    ("--g_res_blocks=1,-1", "--g_res_blocks must be two non-negative integers"),
    ("--g_res_blocks=1,2,3", "--g_res_blocks must be two non-negative integers"),
    ("--num_clusters=auto", "C3-GAN needs the number of classes: --num_clusters=K"),
])
def test_bad_flags_fail_before_any_work(c3gan_tiny, c3gan_main, tmp_path, flag, message):
  result = c3gan_main(*c3gan_tiny, f"--model_dir={tmp_path}", "--train_steps=10", flag,
                      check=False)
  assert result.returncode != 0 and message in result.stderr
  assert not os.listdir(tmp_path)


def test_eval_of_an_empty_model_dir_says_train_first(run_module, tmp_path):
  result = run_module("c3gan.main", "--mode=eval", f"--model_dir={tmp_path}", check=False,
                      timeout=120)
  assert result.returncode == 2 and "train first" in result.stderr
  assert "Traceback" not in result.stderr


def test_model_dir_of_the_other_method_is_refused(c3gan_tiny, c3gan_main, tmp_path):
  with open(tmp_path / "run.json", "w") as f:
    json.dump({"method": "variational_clustering", "dataset": "digits", "model": {}}, f)
  result = c3gan_main(*c3gan_tiny, f"--model_dir={tmp_path}", "--mode=eval", check=False)
  assert result.returncode == 2 and "not c3gan" in result.stderr


@pytest.mark.parametrize("config", ["cub", "cars", "dogs", "flowers"])
def test_reference_configs_parse_and_look_for_their_data(c3gan_main, tmp_path, config):
  result = c3gan_main(f"--flagfile=configs/{config}.flags", f"--data_dir={tmp_path / 'tfds'}",
                      f"--model_dir={tmp_path / 'run'}", check=False)
  assert result.returncode == 2 and "is not prepared under" in result.stderr
