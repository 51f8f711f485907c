"""The stage scripts run as a user runs them: outputs, determinism, and bad input at the edges."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import checkpoint
from pipeline.checkpoint import GLYPH_KEYS, distinct_glyphs
from pipeline.glyphs import clean_glyphs, nearest, parse_glyph, render
from pipeline.make_dataset import make_dataset
from pipeline.params import load_params
from pipeline.writing import save_npz
from tests.conftest import ROOT, assert_one_line_error, copy_of, edit_params, run_module, run_stages

IMAGES = [
    "metrics/images/predictions.png",
    "metrics/images/misclassified.png",
    "metrics/images/hidden_weights.png",
    "metrics/images/curves.png",
    "metrics/images/confusion.png",
    "metrics/images/samples.png",
    "metrics/images/moved.png",
]
OUTPUTS = [
    "data/x_train.npy",
    "data/y_train.npy",
    "data/x_test.npy",
    "data/y_test.npy",
    "models/model.npz",
    "metrics/history.tsv",
    "metrics/metrics.json",
    "metrics/confusion.json",
    "metrics/robustness.json",
    "metrics/predictions.json",
    "models/trace.npz",
    "metrics/explorer.html",
    *IMAGES,
]


def digests(project: Path) -> dict[str, str]:
    return {name: hashlib.md5((project / name).read_bytes()).hexdigest() for name in OUTPUTS}


def test_default_dataset_is_the_three_tutorial_glyphs_and_a_noisy_test_set(built):
    x_train, y_train = np.load(built / "data/x_train.npy"), np.load(built / "data/y_train.npy")
    x_test, y_test = np.load(built / "data/x_test.npy"), np.load(built / "data/y_test.npy")
    np.testing.assert_array_equal(x_train, clean_glyphs())
    np.testing.assert_array_equal(y_train, [0, 1, 2])
    assert x_train.dtype == x_test.dtype == np.uint8 and y_train.dtype == y_test.dtype == np.uint8
    assert x_test.shape == (300, 30) and y_test.shape == (300,)
    assert np.bincount(y_test).tolist() == [100, 100, 100]
    assert set(np.unique(x_test)) == {0, 1}
    assert 0.05 < np.mean(x_test != clean_glyphs()[y_test]) < 0.15  # dataset.noise is 0.1


def test_every_output_is_byte_identical_on_a_second_run(built, tmp_path):
    again = copy_of(built, tmp_path / "copy")
    for name in OUTPUTS:
        (again / name).unlink()
    run_stages(again)
    assert digests(again) == digests(built)


def test_the_model_file_describes_itself(built):
    with np.load(built / "models/model.npz", allow_pickle=False) as model:
        assert model["w1"].shape == (30, 5) and model["w2"].shape == (5, 3)
        assert model["sizes"].tolist() == [30, 5, 3] and model["classes"].tolist() == ["A", "B", "C"]
        assert str(model["loss"]) == "bce" and str(model["activation"]) == "sigmoid"
        assert not model["bias"] and "b1" not in model.files


def test_metrics_are_argmax_accuracy_and_the_training_loss(built):
    metrics = json.loads((built / "metrics/metrics.json").read_text())
    assert set(metrics) == {"train", "test", "robustness", "moved"} and set(metrics["train"]) == {"accuracy", "loss"}
    assert set(metrics["test"]) == {"accuracy", "loss", "precision", "recall"}
    with np.load(built / "models/model.npz") as model:
        w1, w2 = model["w1"], model["w2"]
    x, y = np.load(built / "data/x_test.npy").astype(float), np.load(built / "data/y_test.npy")
    out = 1 / (1 + np.exp(-(1 / (1 + np.exp(-x @ w1)) @ w2)))
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(out.argmax(1) == y), abs=1e-6)
    bce = -np.mean(np.sum(np.where(np.eye(3)[y] == 1, np.log(out), np.log(1 - out)), axis=1))
    assert metrics["test"]["loss"] == pytest.approx(bce, abs=1e-6)
    assert metrics["train"]["accuracy"] == 1.0


def test_history_has_one_row_per_epoch(built):
    lines = (built / "metrics/history.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss\taccuracy" and len(lines) == 1 + 300
    assert lines[1].startswith("1\t") and lines[-1].startswith("300\t")


def test_confusion_rows_follow_the_test_labels(built):
    rows = json.loads((built / "metrics/confusion.json").read_text())
    y = np.load(built / "data/y_test.npy")
    assert [r["actual"] for r in rows] == ["ABC"[i] for i in y]
    assert {r["predicted"] for r in rows} <= {"A", "B", "C"}


def test_more_training_copies_leave_the_test_set_unchanged(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "dataset", train_per_class=50)
    run_stages(project, ["make_dataset"])
    assert np.load(project / "data/x_train.npy").shape == (153, 30)
    for name in ("data/x_test.npy", "data/y_test.npy"):
        assert (project / name).read_bytes() == (built / name).read_bytes()


def test_zero_epochs_saves_the_initial_weights(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", epochs=0)
    run_stages(project, ["train"])
    rng = np.random.default_rng(0)  # train.seed
    with np.load(project / "models/model.npz") as model:
        np.testing.assert_array_equal(model["w1"], rng.standard_normal((30, 5)))
        np.testing.assert_array_equal(model["w2"], rng.standard_normal((5, 3)))
    assert (project / "metrics/history.tsv").read_text() == "step\tloss\taccuracy\n"


def test_biases_are_saved_when_on(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", bias=True, loss="mse", batch_size=2)
    run_stages(project, ["train", "evaluate", "predict"])
    with np.load(project / "models/model.npz") as model:
        assert model["b1"].shape == (5,) and model["b2"].shape == (3,) and str(model["loss"]) == "mse"


def test_a_diverging_run_writes_no_model(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", lr=1e300, bias=True)
    before = digests(project)
    proc = run_module("pipeline.train", cwd=project)
    assert_one_line_error(
        proc,
        "train: logits reached ",
        " at epoch 1, beyond exp's range ±707; try a smaller train.lr (now 1e+300)",
        status=1,
    )
    assert digests(project) == before


def test_predict_prints_one_line_per_file(built):
    files = ["data/samples/a.txt", "data/samples/b.txt", "data/samples/c.txt"]
    proc = run_module("pipeline.predict", *files, cwd=built)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == files
    assert [line.split(": ")[1][0] for line in lines] == ["A", "B", "C"]
    for line in lines:
        score = float(line.split("(")[1].rstrip(")"))
        assert 0.5 < score <= 1.0


def test_predict_reports_bad_files_and_still_predicts_the_good_ones(built, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("..##..\n.#..#.\n######\n#....#\n")
    proc = run_module("pipeline.predict", str(bad), "data/samples/b.txt", str(tmp_path / "none.txt"), cwd=built)
    assert proc.returncode == 2
    assert proc.stdout.startswith("data/samples/b.txt: B (")
    assert proc.stderr.splitlines() == [
        f"error: {bad}: expected 5 rows of 6 pixels, found 4 rows",
        f"error: {tmp_path / 'none.txt'}: no such file",
    ]


def test_predict_takes_another_model(built, tmp_path):
    proc = run_module("pipeline.predict", "--model", str(tmp_path / "nope.npz"), "data/samples/a.txt", cwd=built)
    assert_one_line_error(proc, f"{tmp_path / 'nope.npz'}: missing")


def test_the_predict_stage_writes_every_sample(built):
    rows = json.loads((built / "metrics/predictions.json").read_text())
    samples = sorted(p.relative_to(built).as_posix() for p in (built / "data/samples").glob("*.txt"))
    assert [row["file"] for row in rows] == samples
    by_file = {row["file"]: row for row in rows}
    assert [by_file[f"data/samples/{c}.txt"]["letter"] for c in "abc"] == ["A", "B", "C"]
    x_train, y_train = np.load(built / "data/x_train.npy"), np.load(built / "data/y_train.npy")
    for row in rows:
        assert set(row) == {"file", "letter", "score", "A", "B", "C", "nearest", "distance"}
        assert row["score"] == row[row["letter"]] == max(row["A"], row["B"], row["C"])
        glyph = parse_glyph((built / row["file"]).read_text(), row["file"])
        distances = (x_train != glyph).sum(axis=1)
        assert row["distance"] == distances.min() and row["nearest"] == "ABC"[y_train[np.argmin(distances)]]


def test_precision_and_recall_follow_the_confusion_rows(built):
    metrics = json.loads((built / "metrics/metrics.json").read_text())
    rows = json.loads((built / "metrics/confusion.json").read_text())
    for letter in "ABC":
        hits = sum(r["actual"] == r["predicted"] == letter for r in rows)
        predicted = sum(r["predicted"] == letter for r in rows)
        actual = sum(r["actual"] == letter for r in rows)
        assert metrics["test"]["precision"][letter] == pytest.approx(hits / predicted if predicted else 0, abs=1e-6)
        assert metrics["test"]["recall"][letter] == pytest.approx(hits / actual, abs=1e-6)


def test_robustness_covers_every_noise_level_and_degrades(built):
    levels = yaml.safe_load((built / "params.yaml").read_text())["evaluate"]["noise_levels"]
    curve = json.loads((built / "metrics/robustness.json").read_text())
    metrics = json.loads((built / "metrics/metrics.json").read_text())["robustness"]
    assert [point["noise"] for point in curve] == levels
    assert [metrics["noise_" + f"{level:g}".replace(".", "_")] for level in levels] == [p["accuracy"] for p in curve]
    assert curve[0]["noise"] == 0 and curve[0]["accuracy"] == 1.0  # noise 0: the training glyphs themselves
    assert curve[-1]["accuracy"] < curve[0]["accuracy"]


def test_robustness_levels_are_independent_of_each_other(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "evaluate", noise_levels=[0.1, 0.3, 0.5])
    run_stages(project, ["evaluate"])
    before = {p["noise"]: p["accuracy"] for p in json.loads((built / "metrics/robustness.json").read_text())}
    after = {p["noise"]: p["accuracy"] for p in json.loads((project / "metrics/robustness.json").read_text())}
    assert after[0.1] == before[0.1] and after[0.3] == before[0.3] and 0.5 in after


def test_every_picture_is_a_png_of_a_sensible_size(built):
    from PIL import Image

    for name in IMAGES:
        with Image.open(built / name) as image:
            assert image.format == "PNG" and image.width >= 200 and image.height >= 80, name


def test_predict_show_prints_the_glyph_beside_every_score(built):
    proc = run_module("pipeline.predict", "--show", "data/samples/c.txt", cwd=built)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("data/samples/c.txt: C (")
    glyph = (built / "data/samples/c.txt").read_text().split()
    assert [line.split()[0] for line in lines[1:6]] == glyph
    assert [line.split()[1] for line in lines[1:4]] == ["A", "B", "C"]
    assert lines[3].endswith("<") and not lines[1].endswith("<")


@pytest.mark.parametrize(
    "content,message",
    [
        ("epoch\tloss\n1\t0.5\n", "expected the header step, loss, accuracy, found ['epoch', 'loss']"),
        ("step\tloss\taccuracy\n1\t0.5\t0.3\n2\t0.4\n", "line 3: expected 3 numbers, found 2"),
    ],
)
def test_a_bad_history_names_the_line_and_the_stage_to_rerun(built, tmp_path, content, message):
    project = copy_of(built, tmp_path / "copy")
    (project / "metrics/history.tsv").write_text(content)
    assert_one_line_error(
        run_module("pipeline.evaluate", cwd=project), f"metrics/history.tsv: {message}", "rerun `dvc repro train`"
    )


def test_a_zero_epoch_model_is_evaluated_without_warnings(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "train", epochs=0)
    run_stages(project, ["train", "evaluate"])
    proc = run_module("pipeline.evaluate", cwd=project)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_shift_adds_every_moved_placement_before_the_noisy_copies(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "dataset", shift=1, train_per_class=4, noise=0.0)
    run_stages(project, ["make_dataset"])
    x, y = np.load(project / "data/x_train.npy"), np.load(project / "data/y_train.npy")
    grid = clean_glyphs().reshape(3, 5, 6)
    # The tutorial's A touches every edge; its B and C have an empty first and last column.
    moved = [np.roll(grid[c], right, axis=1).reshape(30) for c in (1, 2) for right in (-1, 1)]
    np.testing.assert_array_equal(x[:7], np.vstack([clean_glyphs(), moved]))
    assert y[:7].tolist() == [0, 1, 2, 1, 1, 2, 2]
    # Noise 0: the copies are each letter's placements in turn (A, B, C interleaved).
    placements = {0: [clean_glyphs()[0]], 1: [clean_glyphs()[1], *moved[:2]], 2: [clean_glyphs()[2], *moved[2:]]}
    expected = [placements[c][i % len(placements[c])] for i in range(4) for c in range(3)]
    np.testing.assert_array_equal(x[7:], expected)
    assert y[7:].tolist() == [0, 1, 2] * 4


def test_moved_accuracy_is_measured_on_the_glyphs_moved_by_one_column(built, tmp_path):
    moved = json.loads((built / "metrics/metrics.json").read_text())["moved"]
    grid = clean_glyphs().reshape(3, 5, 6)
    files = []
    for c in (1, 2):
        for right in (-1, 1):
            path = tmp_path / f"moved_{c}_{right}.txt"
            path.write_text("\n".join(render(np.roll(grid[c], right, axis=1).reshape(30))) + "\n")
            files.append((str(path), "ABC"[c]))
    proc = run_module("pipeline.predict", *[name for name, _ in files], cwd=built)
    read = [line.split(": ")[1][0] for line in proc.stdout.splitlines()]
    assert moved["clean"] == np.mean([r == letter for r, (_, letter) in zip(read, files)])
    assert 0 <= moved["noisy"] <= 1


def write_glyph(path: Path, glyph: np.ndarray) -> Path:
    path.write_text("\n".join(render(glyph)) + "\n")
    return path


def test_predict_notes_a_glyph_four_pixels_from_every_training_glyph_and_only_then(built, tmp_path):
    a = clean_glyphs()[0].copy()
    near, far = a.copy(), a.copy()
    near[[0, 1, 5]] = 1  # 3 pixels from A: blank corners inked
    far[[0, 1, 5, 26]] = 1  # 4 pixels from A, and further from B and C
    files = [str(write_glyph(tmp_path / "near.txt", near)), str(write_glyph(tmp_path / "far.txt", far))]
    proc = run_module("pipeline.predict", "--show", *files, cwd=built)
    assert proc.returncode == 0, proc.stderr
    assert "nearest training glyph: A, 3 pixels away\n" in proc.stdout
    assert "nearest training glyph: A, 4 pixels away (far)" in proc.stdout
    assert proc.stderr.splitlines() == [
        f"note: {files[1]}: 4 pixels from the nearest training glyph (A); the model has not seen anything like it"
    ]
    plain = run_module("pipeline.predict", *files, cwd=built)  # the parsed lines stay FILE: LETTER (SCORE)
    assert [line.split(": ")[0] for line in plain.stdout.splitlines()] == files and plain.stderr == proc.stderr


def test_predict_knows_when_the_training_data_is_not_the_models(built, tmp_path):
    project = copy_of(built, tmp_path / "copy")
    edit_params(project, "dataset", train_per_class=5)
    run_stages(project, ["make_dataset"])  # new training data; the model is still the old one
    assert_one_line_error(
        run_module("pipeline.predict", cwd=project),
        "data/x_train.npy: not the training set of this model; rerun `dvc repro train`",
    )
    adhoc = run_module("pipeline.predict", "--show", "data/samples/a.txt", cwd=project)
    assert adhoc.returncode == 0 and adhoc.stderr == ""  # the CLI compares with the model's own glyphs
    assert "nearest training glyph: A, 0 pixels away" in adhoc.stdout
    model = project / "models/model.npz"  # as saved before models kept their glyphs: data/x_train.npy is read
    with np.load(model) as arrays:
        save_npz(model, {key: arrays[key] for key in arrays if key not in GLYPH_KEYS})
    adhoc = run_module("pipeline.predict", "--show", "data/samples/a.txt", cwd=project)
    assert adhoc.returncode == 0 and "nearest training glyph: unknown" in adhoc.stdout
    assert adhoc.stderr == (
        "note: data/x_train.npy: not the training set of this model; rerun `dvc repro train`; "
        "no nearest training glyphs\n"
    )
    (project / "data/x_train.npy").unlink()  # a model fetched alone, with no data: predictions still come
    adhoc = run_module("pipeline.predict", "data/samples/a.txt", cwd=project)
    assert adhoc.returncode == 0 and adhoc.stdout.startswith("data/samples/a.txt: A (")
    assert "data/x_train.npy: missing" in adhoc.stderr and len(adhoc.stderr.splitlines()) == 1


def test_a_model_used_outside_the_project_names_the_nearest_training_glyph_as_inside(built, tmp_path):
    """A model fetched alone (`dvc artifacts get ... -o model.npz`) keeps its distinct training glyphs."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(built / "models/model.npz", outside / "model.npz")
    names = sorted(path.name for path in (built / "data/samples").glob("*.txt"))
    for name in names:
        shutil.copy(built / "data/samples" / name, outside / name)
    inside = run_module("pipeline.predict", "--show", *(f"data/samples/{n}" for n in names), cwd=built)
    alone = run_module("pipeline.predict", "--model", "model.npz", "--show", *names, cwd=outside)
    assert alone.returncode == 0 and inside.returncode == 0, alone.stderr
    assert "x_train" not in alone.stderr and "unknown" not in alone.stdout
    assert alone.stdout == inside.stdout.replace("data/samples/", "")
    assert alone.stderr == inside.stderr.replace("data/samples/", "") and "far" in alone.stdout


def test_the_distinct_glyphs_a_model_keeps_give_the_nearest_glyph_of_the_whole_training_set():
    params = load_params(ROOT / "params.yaml")
    dataset = dataclasses.replace(params.dataset, train_per_class=300, shift=1)
    x, y = make_dataset(dataset)["train"]
    kept = distinct_glyphs(x, y)
    assert kept is not None and len(kept[0]) < len(x) and len(np.unique(kept[0], axis=0)) == len(kept[0])
    probes = np.random.default_rng(5).integers(0, 2, (2000, 30), dtype=np.uint8)
    probes = np.concatenate([probes, x[:50]])
    assert nearest(probes, *kept) == nearest(probes, x, y)


def test_a_training_set_of_more_distinct_glyphs_than_a_model_keeps_leaves_them_to_data(monkeypatch):
    x = np.random.default_rng(6).integers(0, 2, (50, 30), dtype=np.uint8)
    y = np.zeros(50, dtype=np.uint8)
    monkeypatch.setattr(checkpoint, "MAX_GLYPHS", len(np.unique(x, axis=0)))
    assert distinct_glyphs(x, y) is not None
    monkeypatch.setattr(checkpoint, "MAX_GLYPHS", len(np.unique(x, axis=0)) - 1)
    assert distinct_glyphs(x, y) is None
