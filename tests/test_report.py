"""The per-run report: every file from a real run, numbers that agree with scikit-learn and with the
confusion matrix, learning curves read from Lightning's metrics.csv, and cnnlab-eval re-creating it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_results, run_cli
from sklearn.metrics import classification_report, confusion_matrix

from cnnlab.evaluation.metrics import compute_metrics
from cnnlab.evaluation.plots import learning_curves_figure
from cnnlab.evaluation.report import read_history, write_report
from cnnlab.inference import Predictions

FIGURES = [
    "confusion_matrix.png",
    "roc_curves.png",
    "learning_curves.png",
    "per_class_metrics.png",
    "misclassified.png",
]
REPORT_FILES = [
    "classification_report.txt",
    "classification_report.json",
    "confusion_matrix.csv",
    "predictions.csv",
    "report.md",
    *FIGURES,
]


def random_predictions(n: int = 120, names: tuple[str, ...] = ("cat", "dog", "frog", "ship")) -> Predictions:
    """Logits that are right about half the time, so every cell of the confusion matrix gets counts."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(names), n)
    logits = rng.normal(size=(n, len(names))).astype(np.float32)
    logits[np.arange(n), labels] += rng.uniform(0, 2.5, n)
    images = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    return Predictions(logits, list(names), [f"img{i}" for i in range(n)], labels=labels, images=images)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def assert_report_matches(report: dict, y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> None:
    """``report`` equals scikit-learn's classification_report of the same predictions, key by key."""
    expected = classification_report(
        y_true, y_pred, labels=list(range(len(names))), target_names=names, output_dict=True, zero_division=0
    )
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == (pytest.approx(value) if isinstance(value, float) else pytest.approx(value, rel=1e-6))


def assert_report_matches_confusion(report: dict, counts: np.ndarray, names: list[str]) -> None:
    """Precision, recall, support and accuracy recomputed by hand from the confusion matrix."""
    true_positives = np.diag(counts)
    for i, name in enumerate(names):
        predicted, actual = counts[:, i].sum(), counts[i].sum()
        assert report[name]["support"] == actual
        assert report[name]["precision"] == pytest.approx(true_positives[i] / predicted if predicted else 0.0)
        assert report[name]["recall"] == pytest.approx(true_positives[i] / actual if actual else 0.0)
    assert report["accuracy"] == pytest.approx(true_positives.sum() / counts.sum())


def test_metrics_agree_with_sklearn_and_the_confusion_matrix() -> None:
    predictions = random_predictions()
    metrics = compute_metrics(predictions)
    names = predictions.class_names
    assert (metrics.confusion == confusion_matrix(predictions.labels, predictions.predicted)).all()
    assert_report_matches(metrics.report, predictions.labels, predictions.predicted, names)
    assert_report_matches_confusion(metrics.report, metrics.confusion, names)
    assert 0.5 < metrics.auroc_macro <= 1.0  # logits favour the true class
    assert set(metrics.roc) == set(names)


def test_a_class_absent_from_the_split_is_reported_but_has_no_roc_curve(tmp_path: Path) -> None:
    predictions = random_predictions()
    keep = predictions.labels != 3
    predictions = Predictions(
        predictions.logits[keep],
        predictions.class_names,
        [s for s, k in zip(predictions.sources, keep) if k],
        labels=predictions.labels[keep],
        images=predictions.images[keep],
    )
    report = write_report(predictions, tmp_path, "test", history={}, results={}, hparams={}, overrides=[])
    assert report.metrics.report["ship"]["support"] == 0
    assert set(report.metrics.roc) == {"cat", "dog", "frog"}
    assert "learning_curves" not in report.figures  # no metrics.csv, no curves, the rest is written
    assert all((tmp_path / name).exists() for name in REPORT_FILES if name != "learning_curves.png")


def test_report_md_shows_other_figures_already_in_the_report_dir(tmp_path: Path) -> None:
    (tmp_path / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write_report(random_predictions(), tmp_path, "val", history={}, results={}, hparams={}, overrides=[])
    markdown = (tmp_path / "report.md").read_text()
    assert "](samples.png)" in markdown and "val split: 120 images, 4 classes" in markdown


def test_history_assigns_learning_rates_to_the_epoch_they_were_used_in(tmp_path: Path) -> None:
    """Lightning's layout: LR rows (no epoch) at the first step of an epoch, epoch rows at its last."""
    rows = [
        "epoch,lr-Adam,step,train/loss,val/loss",
        ",0.1,0,,",
        "0,,9,,2.0",
        "0,,9,2.5,",
        ",0.1,10,,",
        "1,,19,,1.5",
        "1,,19,1.8,",
        ",0.02,20,,",
        "2,,29,,1.6",
        "2,,29,1.2,",
    ]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    history = read_history(tmp_path / "metrics.csv")
    assert history["lr-Adam"] == {0: 0.1, 1: 0.1, 2: 0.02}
    assert history["val/loss"] == {0: 2.0, 1: 1.5, 2: 1.6}
    assert history["train/loss"] == {0: 2.5, 1: 1.8, 2: 1.2}


# the default model trains in fp32; cnn_baseline_s4 in bf16 mixed precision on CPUs with native bf16, where
# the report and cnnlab-eval must compute in the run's precision to agree with its trainer.test
@pytest.fixture(scope="module", params=["mobilenetv3_small", "cnn_baseline_s4"])
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("report_run")
    run_cli(["debug=fast", "trainer.max_epochs=2", f"model={request.param}", "hydra.run.dir=run"], cwd)
    return cwd / "run"


@pytest.mark.parametrize(
    ("rates", "marked"),
    [
        ([1e-3] * 10 + [2e-4] * 10 + [4e-5] * 10, [10, 20]),  # ReduceLROnPlateau's two drops
        ([1e-3 * (1 + np.cos(np.pi * e / 30)) / 2 for e in range(30)], []),  # cosine: a new rate every epoch
    ],
)
def test_learning_curves_mark_the_schedules_steps_not_every_epoch(rates: list[float], marked: list[int]) -> None:
    history = {"train/loss": {e: 1.0 / (e + 1) for e in range(30)}, "lr-Adam": dict(enumerate(rates))}
    figure = learning_curves_figure(history, best_epoch=None)
    for ax in figure.axes:
        dotted_verticals = [
            line for line in ax.get_lines() if line.get_linestyle() == ":" and len(set(line.get_xdata())) == 1
        ]
        vertical = [line.get_xdata()[0] for line in dotted_verticals]
        assert vertical == marked


def test_a_run_writes_every_report_file(run_dir: Path) -> None:
    report_dir = run_dir / "report"
    for name in REPORT_FILES:
        assert (report_dir / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report_dir / "report.md").read_text()
    results = read_results(run_dir)
    assert all(f"]({name})" in markdown for name in FIGURES)
    assert f"{results['num_params']:,}" in markdown
    assert "`trainer.max_epochs=2`" in markdown
    assert 0.0 <= results["test/auroc_macro"] <= 1.0
    history = read_history(run_dir / "metrics.csv")
    assert list(history["train/loss"]) == list(history["val/acc"]) == list(history["lr-Adam"]) == [0, 1]


def test_run_report_numbers_agree_with_sklearn_and_the_confusion_matrix(run_dir: Path) -> None:
    report_dir = run_dir / "report"
    report = json.loads((report_dir / "classification_report.json").read_text())
    header, *rows = read_csv(report_dir / "confusion_matrix.csv")
    names = header[1:]
    counts = np.array([[int(v) for v in row[1:]] for row in rows])
    assert [row[0] for row in rows] == names
    _, *predictions = read_csv(report_dir / "predictions.csv")
    y_true = np.array([names.index(true) for _, true, _, _ in predictions])
    y_pred = np.array([names.index(predicted) for _, _, predicted, _ in predictions])

    assert (confusion_matrix(y_true, y_pred, labels=range(len(names))) == counts).all()
    assert_report_matches(report, y_true, y_pred, names)
    assert_report_matches_confusion(report, counts, names)
    results = read_results(run_dir)
    assert counts.sum() == results["split_sizes"]["test"]
    assert report["accuracy"] == pytest.approx(results["test/acc"], abs=1e-6)  # the whole test split was tested
    assert f"{report['accuracy']:.4f}" in (report_dir / "classification_report.txt").read_text()


def test_cnnlab_eval_recreates_the_report_from_the_checkpoint(run_dir: Path) -> None:
    cwd = run_dir.parent
    run_cli([f"ckpt_path={run_dir}/checkpoints/best.ckpt", "hydra.run.dir=eval"], cwd, module="cnnlab.evaluate")
    for name in REPORT_FILES:
        assert (cwd / "eval" / "report" / name).exists(), name
    for name in ("classification_report.json", "confusion_matrix.csv", "predictions.csv"):
        assert (cwd / "eval" / "report" / name).read_text() == (run_dir / "report" / name).read_text(), name
    results = read_results(cwd / "eval")
    assert results["test/auroc_macro"] == pytest.approx(read_results(run_dir)["test/auroc_macro"])
