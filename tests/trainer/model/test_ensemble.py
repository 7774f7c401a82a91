"""age-ensemble: the mean of the members' logits in one self-describing .h5, rank-consistent, refusals by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.artifact import load_model, read_metadata, save_model
from core.tta import with_flip_averaging
from trainer.cli.ensemble import main
from trainer.model.build import build_model

IMG_SIZE = 32
META = {
    "start_label": 10,
    "end_label": 20,
    "num_classes": 11,
    "img_size": IMG_SIZE,
    "chip_padding": 0.25,
    "threshold": 0.5,
    "arch_type": "resnet",
    "arch_subtype": 18,
    "detector": "hog",
    "upsample": 0,
}


def member(folder: Path, name: str, seed: int, flip: bool = False, **changes: object) -> Path:
    """An untrained (differently seeded) member; ``flip`` wraps it the way test_time_flip does."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model("resnet", 18, IMG_SIZE, 11, width=8)
    # Random heads, so that members' logits differ visibly; the biases only shift, so they stay ordered.
    head = model.get_layer("coral")
    rng = np.random.default_rng(seed)
    kernel, biases = head.get_weights()
    head.set_weights([kernel + rng.normal(0, 0.5, kernel.shape).astype("float32"), biases + rng.normal(0, 0.5)])
    if flip:
        model = with_flip_averaging(model)
    meta = META | {"test_metrics": {"mae": float(seed)}, "run_dir": f"runs/{name}"} | changes
    return save_model(model, folder / f"{name}.h5", meta)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("members")
    return [member(folder, "a", 1, flip=True), member(folder, "b", 2, flip=True), member(folder, "c", 3)]


def test_logits_are_the_mean_of_the_members_and_stay_rank_consistent(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ensemble.h5"
    assert main(["--models", *map(str, members), "--out", str(out)]) == 0

    images = np.random.default_rng(0).uniform(0, 255, (5, IMG_SIZE, IMG_SIZE, 3)).astype("float32")
    expected = np.mean([load_model(path).predict(images, verbose=0) for path in members], axis=0)
    logits = load_model(out).predict(images, verbose=0)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    probas = 1 / (1 + np.exp(-logits))
    assert np.all(np.diff(probas, axis=1) <= 1e-6), "the mean of rank-consistent members is rank-consistent"

    meta = read_metadata(out)
    assert {key: meta[key] for key in META} == META
    assert [entry["file"] for entry in meta["members"]] == ["a.h5", "b.h5", "c.h5"]
    assert [entry["test_metrics"] for entry in meta["members"]] == [{"mae": 1.0}, {"mae": 2.0}, {"mae": 3.0}]
    assert "test_metrics" not in meta, "the members' scores do not describe the ensemble"


def test_drop_flip_averages_the_members_networks_without_their_mirror_passes(
    members: list[Path], tmp_path: Path
) -> None:
    from core.tta import HorizontalFlip, without_flip_averaging

    out = tmp_path / "ensemble.h5"
    assert main(["--models", *map(str, members), "--out", str(out), "--drop-flip"]) == 0

    images = np.random.default_rng(2).uniform(0, 255, (3, IMG_SIZE, IMG_SIZE, 3)).astype("float32")
    inner = [without_flip_averaging(load_model(path)) for path in members]
    assert not any(isinstance(layer, HorizontalFlip) for net in inner for layer in net.layers)
    expected = np.mean([net.predict(images, verbose=0) for net in inner], axis=0)
    ensemble = load_model(out)
    np.testing.assert_allclose(ensemble.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(layer, HorizontalFlip) for layer in ensemble.layers)
    assert read_metadata(out)["test_time_flip"] is False


def test_the_file_loads_in_a_fresh_process(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ensemble.h5"
    assert main(["--models", *map(str, members[:2]), "--out", str(out)]) == 0
    images = np.full((1, IMG_SIZE, IMG_SIZE, 3), 100.0, dtype="float32")
    expected = load_model(out).predict(images, verbose=0)
    code = (
        "import sys, numpy as np; from core.artifact import load_model; "
        f"m = load_model({str(out)!r}); "
        f"print(repr(m.predict(np.full((1, {IMG_SIZE}, {IMG_SIZE}, 3), 100.0, 'float32'), verbose=0).tolist()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    np.testing.assert_allclose(np.array(eval(done.stdout.strip().splitlines()[-1])), expected, atol=1e-5)


def test_scoring_on_aligned_chips_writes_the_ensembles_own_test_metrics(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chips = np.random.default_rng(1).integers(0, 256, (4, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
    for i, chip in enumerate(chips):
        Image.fromarray(chip).save(tmp_path / f"{i}.png")
    rows = "\n".join(f"{i},{i}.png,{age}" for i, age in enumerate([11, 14, 17, 20]))
    (tmp_path / "test.csv").write_text(f"ID,Path,Age\n{rows}\n")
    out = tmp_path / "ensemble.h5"
    args = ["--models", *map(str, members), "--out", str(out), "--csv", str(tmp_path / "test.csv")]
    assert main([*args, "--images", str(tmp_path)]) == 0

    logits = load_model(out).predict(chips.astype("float32"), verbose=0)
    predicted = 10 + (1 / (1 + np.exp(-logits)) > 0.5).sum(axis=1)
    mae = np.abs(predicted - np.array([11, 14, 17, 20])).mean()
    meta = read_metadata(out)
    assert meta["test_metrics"]["n"] == 4
    assert meta["test_metrics"]["mae"] == pytest.approx(mae, abs=1e-4)
    assert meta["test_csv"] == "test.csv"
    assert f"MAE {meta['test_metrics']['mae']}" in capsys.readouterr().out
    assert (meta["calibration"]["n"], meta["calibration"]["source"]) == (4, "test.csv")

    # --calibrate-csv: the intervals are calibrated on another set than the one scored.
    (tmp_path / "val.csv").write_text("ID,Path,Age\n0,0.png,12\n1,1.png,13\n2,2.png,99\n")
    calibrated = tmp_path / "calibrated.h5"
    more = ["--calibrate-csv", str(tmp_path / "val.csv"), "--images", str(tmp_path)]
    assert main([*args[:-3], str(calibrated), *args[-2:], *more]) == 0
    entry = read_metadata(calibrated)["calibration"]
    assert (entry["n"], entry["source"], entry["outside_range"]) == (3, "val.csv", 1)


def test_members_of_different_chip_sizes_each_see_the_chip_at_their_own_size(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    big = save_model(build_model("resnet", 18, 48, 11, width=8), tmp_path / "big.h5", META | {"img_size": 48})
    out = tmp_path / "ensemble.h5"
    assert main(["--models", str(members[0]), str(big), "--out", str(out)]) == 0
    assert "48 px, resized in the model for a.h5 (32 px)" in capsys.readouterr().out

    chips = np.random.default_rng(3).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    small = tf.image.resize(chips, (IMG_SIZE, IMG_SIZE), antialias=True).numpy()
    expected = (load_model(members[0]).predict(small, verbose=0) + load_model(big).predict(chips, verbose=0)) / 2
    np.testing.assert_allclose(load_model(out).predict(chips, verbose=0), expected, rtol=1e-5, atol=1e-5)
    meta = read_metadata(out)
    assert meta["img_size"] == 48, "the service cuts chips at the largest member's size"
    assert [entry["img_size"] for entry in meta["members"]] == [IMG_SIZE, 48]


def test_an_ensemble_given_as_a_member_contributes_its_members_with_equal_weight(
    members: list[Path], tmp_path: Path
) -> None:
    pair = tmp_path / "pair.h5"
    assert main(["--models", str(members[0]), str(members[1]), "--out", str(pair), "--drop-flip"]) == 0
    out = tmp_path / "three.h5"
    assert main(["--models", str(pair), str(members[2]), "--out", str(out)]) == 0

    from core.tta import without_flip_averaging

    images = np.random.default_rng(4).uniform(0, 255, (3, IMG_SIZE, IMG_SIZE, 3)).astype("float32")
    nets = [without_flip_averaging(load_model(path)) for path in members]
    expected = np.mean([net.predict(images, verbose=0) for net in nets], axis=0)
    np.testing.assert_allclose(load_model(out).predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)
    entries = read_metadata(out)["members"]
    assert [(entry["file"], entry.get("via")) for entry in entries] == [
        ("a.h5", "pair.h5"),
        ("b.h5", "pair.h5"),
        ("c.h5", None),
    ]


@pytest.mark.parametrize(
    ("change", "named"),
    [({"chip_padding": 0.4}, "chip_padding"), ({"start_label": 0}, "start_label"), ({"detector": "cnn"}, "detector")],
)
def test_members_that_align_or_decode_differently_are_refused_by_name(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, named: str
) -> None:
    odd = member(tmp_path, "odd", 4, **change)
    out = tmp_path / "ensemble.h5"
    assert main(["--models", str(members[0]), str(odd), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "odd.h5" in err
    assert "a.h5" in err
    assert not out.exists()


def test_bad_arguments_exit_2_and_write_nothing(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ensemble.h5"
    cases = [
        (["--models", str(members[0]), "--out", str(out)], "at least two"),
        (["--models", str(members[0]), str(tmp_path / "gone.h5"), "--out", str(out)], "not found"),
        (["--models", *map(str, members[:2]), "--out", str(members[0])], "overwrite"),
        (["--models", *map(str, members[:2]), "--out", str(out), "--csv", "x.csv"], "--images"),
        (["--models", *map(str, members[:2]), "--out", str(tmp_path / "e.keras")], ".h5"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
