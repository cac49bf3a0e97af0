"""Every study run says how it compares with the study: the row of the installed record
(cnnlab/evaluation/studies.yaml) a run's overrides select, the study's number beside the run's in
results.json, report.md, the end-of-run block, summary.md/csv and the offline W&B runs; a run the study never
ran, or of no study, says so or shows nothing."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shlex
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import logged_out_env, read_results, run_console_script
from fakedata import write_all
from hydra import compose, initialize_config_module
from test_experiments import reproduce_rows
from test_wandb import OfflineRun

from cnnlab.evaluation.studies import load_record, match_study, update_comparison

RECORD = load_record()
ROWS = [row for study in RECORD["studies"].values() for row in study["compare"]]


def matched(*overrides: str) -> dict | None:
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return match_study(list(overrides), dict(cfg.hydra.runtime.choices), cfg)


S0, S1, S3 = (
    "experiment=s0_mobilenetv3_eurosat",
    "experiment=s1_mobilenetv2_imagefolder",
    "experiment=s3_resnet50_lrelu_fruits360",
)


@pytest.mark.parametrize(
    "overrides, row, reported",
    [
        ((S0,), "S0-act", "93.94"),
        ((S0, "activation=hardswish"), "S0-act", "93.94"),
        ((S0, "activation=gelu"), "S0-act", "95.00"),
        (("experiment=s0_mobilenetv3_hybrid_eurosat",), "S0-hybrid", "91.52"),
        ((S1,), "S1-cv", "98"),
        ((S1, "freeze=top_k", "freeze.trainable=10"), "S1-freeze", "88"),
        ((S1, "freeze=top_k", "freeze.trainable=all"), "S1-freeze", "96"),
        ((S1, "optim.lr=1e-3"), "S1-lr", "88"),
        ((S1, "data.batch_size=128"), "S1-bs", "87"),
        ((S1, "optim=keras_sgd"), "S1-opt", "80"),
        ((S1, "data.num_folds=5", "data.fold=3"), "S1-cv", "98"),
        ((S3,), "S3-lrelu", "94.83"),
        ((S3, "+grid=s3_lrelu_alpha_1e-5"), "S3-lrelu", "86.98"),
        ((S3, "+grid=s3_lrelu_alpha_2e-2"), "S3-lrelu", "93.53"),
        ((S3, "activation.alpha=0.02", "activation.beta=0.9"), "S3-lrelu", "93.53"),
        (
            ("experiment=s2_alexnet_cifar10", "hparams_search=s2_alexnet_hyperband_testset", "optim.lr=3e-3"),
            "S2-hyperband",
            "80.55",
        ),
        (("experiment=s2_resnet18_cifar10",), "S2-models", None),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_overrides_select_the_study_row(overrides, row, reported):
    study = matched(*overrides)
    assert (study["row"], study["reported_text"]) == (row, reported)
    assert study["departures"] == []  # the row's own settings, or a search's sampled ones, are no departure


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ((S0, "activation=relu"), "S0 ran no activation=relu"),
        ((S1, "optim.lr=0.5"), "S1 ran no optim.lr=0.5"),
        ((S1, "freeze=top_k", "freeze.trainable=5"), "S1 ran no freeze=top_k, freeze.trainable=5"),
        ((S3, "activation.alpha=0.5"), "S3 ran no"),
    ],
)
def test_a_setting_the_study_never_ran_has_no_row(overrides, reason):
    study = matched(*overrides)
    assert study["row"] is None and study["reason"].startswith(reason)


def test_changing_a_stated_setting_is_a_departure():
    (departure,) = matched(S0, "optim.lr=0.01")["departures"]
    assert departure.startswith("optim.lr=0.01 (the study: 0.001; optimizer, as stated, S0 sec.")
    assert matched(S0, "data.img_size=32")["departures"][0].startswith("data.img_size=32 (the study: 64")


def test_a_run_of_no_study_has_none():
    assert matched("debug=fast") is None
    assert matched("model=resnet18_s2", "data=cifar10") is None


def test_difference_is_in_the_studys_units_and_rounding():
    results = {"test/acc": 0.87654, "study": {**matched(S1, "optim.lr=1e-3")}}
    update_comparison(results)
    assert (results["study"]["this_run"], results["study"]["difference"]) == (88, 0)
    assert results["study"]["comparison"].endswith("reported 88 % test accuracy, this run 88 % (difference +0)")
    results = {"test/acc": 0.9312, "test/acc_std": 0.0123, "study": {**matched(S3)}}
    update_comparison(results)
    assert results["study"]["comparison"].endswith("this run 93.12 ± 1.23 % (difference -1.71)")


# -- the record against README's study table ------------------------------------------------------------------


def readme_reported_cells() -> dict[str, str]:
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Reproducing the studies", 1)[1]
    return {m[0]: m[1] for m in re.findall(r"^\| (\S+) \| `cnnlab [^`]+` \| [^|]+ \| ([^|]+) \|", section, re.M)}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['row']} {r['experiment']} {r['choose']}")
def test_compared_number_is_the_one_readme_reports(row):
    cells = readme_reported_cells()
    assert row["row"] in cells
    assert row["reported"] is None or row["reported"] in cells[row["row"]]


def test_every_readme_study_command_compares_each_of_its_experiments():
    """Each experiment of a README command has rows (S0-hybrid's plain run is S0-act's hardswish row), and
    every README row is the row of some run."""
    compared = {r["experiment"] for r in ROWS}
    for row_id, args, _ in reproduce_rows():
        experiments = next(a for a in args if a.startswith("experiment=")).split("=", 1)[1].split(",")
        assert set(experiments) <= compared, row_id
        assert row_id in {r["row"] for r in ROWS}


README_JOBS = [
    (row_id, jobs, row["reported"])
    for study in RECORD["studies"].values()
    for row_id, row in study["readme_rows"].items()
    if len(
        jobs := [
            (f"experiment={experiment}", *(f"{k}={v}" for k, v in zip(row.get("sweep") or {}, values)))
            for experiment in row["experiments"]
            for values in itertools.product(*(row.get("sweep") or {}).values())
        ]
    )
    == len(row["reported"])
]


@pytest.mark.parametrize("row_id, jobs, reported", README_JOBS, ids=[r for r, _, _ in README_JOBS])
def test_each_job_of_a_readme_command_is_compared_with_its_reported_number(row_id, jobs, reported):
    """The jobs of a README command (its experiments times its sweep values) select, in order, the numbers
    README's row reports (where the row reports one number per job); S0-hybrid's plain job is S0-act's."""
    studies = [matched(*job) for job in jobs]
    assert [s["reported_text"] for s in studies] == reported
    assert row_id in {s["row"] for s in studies}


# -- what a user gets -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def s0_sweep(data_dir, tmp_path_factory) -> tuple[Path, str]:
    """README's S0-act command cut to one activation the study ran and one it did not, logged to W&B by a
    user with no login (offline), on tiny EuroSAT."""
    cwd = tmp_path_factory.mktemp("s0")
    args = ["-m", S0, "activation=gelu,relu", "debug=smoke", f"paths.data_dir={data_dir}", "logger=wandb"]
    result = run_console_script("cnnlab", args, cwd, logged_out_env(cwd / "home"))
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep, result.stdout


def test_run_records_its_study_row_and_the_difference(s0_sweep):
    sweep, _ = s0_sweep
    results = read_results(sweep / "0")
    study = results["study"]
    assert (study["study"], study["row"], study["reported"], study["metric"]) == ("S0", "S0-act", 95.0, "test/acc")
    assert study["this_run"] == round(100 * results["test/acc"], 2)
    assert study["difference"] == round(study["this_run"] - 95.0, 2)
    # debug=smoke changes what S0 states: named as departures
    assert any(d.startswith("data.img_size=32 (the study: 64") for d in study["departures"])
    report = (sweep / "0" / "report" / "report.md").read_text()
    line = f"S0-act (S0 sec. 9.1): reported 95.00 % test accuracy, this run {study['this_run']:.2f} % "
    assert line + f"(difference {study['difference']:+.2f})" in report
    assert "class balance of the splits (our reading" in report and "docs/fidelity.md" in report
    assert "The seed reports it otherwise too:\n\n- test accuracy: its classification report" in report
    other = read_results(sweep / "1")["study"]
    assert other["row"] is None and other["reason"] == "S0 ran no activation=relu"
    assert "S0 ran no activation=relu" in (sweep / "1" / "report" / "report.md").read_text()


def test_sweep_summary_puts_the_reported_number_beside_each_job(s0_sweep):
    sweep, _ = s0_sweep
    with open(sweep / "summary.csv", newline="") as f:
        rows = {row["activation"]: row for row in csv.DictReader(f)}
    gelu = read_results(sweep / "0")["study"]
    assert (rows["gelu"]["study row"], rows["gelu"]["reported %"]) == ("S0-act", "95.00")
    assert rows["gelu"]["difference"] == f"{gelu['difference']:+.2f}"
    assert rows["relu"]["study row"] == "none: S0 ran no activation=relu" and rows["relu"]["reported %"] == ""
    markdown = (sweep / "summary.md").read_text()
    assert "Compared with S0: Hybrid MobileNetV3 on EuroSAT RGB (PyTorch)" in markdown
    assert f"| S0-act | 95.00 | {gelu['this_run']:.2f} | {gelu['difference']:+.2f} |" in markdown
    # cnnlab-summarize rebuilds the same comparison later
    out = sweep.parent / "rebuilt"
    run_console_script("cnnlab-summarize", [str(sweep), "--out", str(out)], sweep, logged_out_env(sweep / "home"))
    assert (out / "summary.csv").read_text().splitlines()[1:] != []
    assert (
        f"| S0-act | 95.00 | {gelu['this_run']:.2f} | {gelu['difference']:+.2f} |" in (out / "summary.md").read_text()
    )


def test_wandb_runs_carry_the_study_and_the_sweep_comparison(s0_sweep):
    sweep, _ = s0_sweep
    job = OfflineRun(sweep / "0")
    gelu = read_results(sweep / "0")["study"]
    assert {k: v for k, v in job.config.items() if k.startswith("study.")} == {
        "study.id": "S0",
        "study.row": "S0-act",
        "study.metric": "test/acc",
        "study.reported": 95.0,
    }
    assert (job.summary["study/reported"], job.summary["study/difference"]) == (95.0, gelu["difference"])
    assert "study/comparison_chart_table/path" in job.summary  # wandb.plot.bar's table
    assert OfflineRun(sweep / "1").config["study.row"] is None
    comparison = OfflineRun(sweep)
    assert comparison.run.job_type == "summary" and comparison.run.run_group == OfflineRun(sweep / "0").run.run_group
    (table_file,) = comparison.files.glob("media/table/study/comparison_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["job", "study row", "reported %", "this run %", "difference"]
    assert table["data"] == [["0", "S0-act", 95.0, gelu["this_run"], gelu["difference"]]]
    assert "study/difference_chart_table/path" in comparison.summary


def test_run_without_a_study_shows_no_comparison(data_dir, tmp_path):
    result = run_console_script(
        "cnnlab",
        ["debug=fast", f"paths.data_dir={data_dir}", "hydra.run.dir=outputs/plain"],
        tmp_path,
        logged_out_env(tmp_path / "home"),
    )
    run_dir = tmp_path / "outputs" / "plain"
    assert read_results(run_dir)["study"] is None
    assert "study" not in (run_dir / "report" / "report.md").read_text().lower()
    assert "study" not in result.stdout.split("Run finished:", 1)[1]


def test_end_of_run_block_compares(data_dir, tmp_path):
    result = run_console_script(
        "cnnlab",
        [
            S1,
            "freeze=top_k",
            "freeze.trainable=10",
            "debug=smoke",
            "model.net.weights=null",
            f"paths.data_dir={data_dir}",
            "hydra.run.dir=outputs/s1",
        ],
        tmp_path,
        logged_out_env(tmp_path / "home"),
    )
    study = read_results(tmp_path / "outputs" / "s1")["study"]
    block = result.stdout.split("Run finished:", 1)[1]
    assert (
        f"  study       S1-freeze (S1 sec. C a)): reported 88 % test accuracy, this run {study['this_run']:.0f} % "
        f"(difference {study['difference']:+.0f})" in block
    )
    assert "departs from the study: model.net.weights=null, data.img_size=32, data.batch_size=8" in block


# -- cnnlab-studies -------------------------------------------------------------------------------------------


def normalized(command: str) -> list[str]:
    """A command's words with numbers as numbers (``1e-1`` is ``0.1``) and no quoting."""

    def word(text: str) -> str:
        key, sep, values = text.partition("=")
        numbers = []
        for value in values.split(","):
            try:
                numbers.append(repr(float(value)))
            except ValueError:
                numbers.append(value)
        return key + sep + ",".join(numbers)

    return [word(w) for w in shlex.split(command)]


def test_cnnlab_studies_lists_every_readme_row_with_its_command_and_numbers(tmp_path):
    listing = run_console_script("cnnlab-studies", [], tmp_path, logged_out_env(tmp_path / "home")).stdout
    assert [line.split()[0] for line in listing.splitlines() if re.match(r"S\d  ", line)] == list(RECORD["studies"])
    readme = {row_id: shlex.join(["cnnlab", *args]) for row_id, args, _ in reproduce_rows()}
    blocks = dict(re.findall(r"^  (S\d-\S+)\n    (cnnlab [^\n]+)$", listing, re.M))
    assert blocks.keys() == readme.keys()
    assert {k: normalized(v) for k, v in blocks.items()} == {k: normalized(v) for k, v in readme.items()}
    for row in ROWS:
        if row["reported"] is not None:
            assert f"{row['reported']} %" in listing


def test_cnnlab_studies_shows_one_study_with_its_deviations(tmp_path):
    env = logged_out_env(tmp_path / "home")
    shown = run_console_script("cnnlab-studies", ["--study", "s1"], tmp_path, env).stdout
    assert shown.startswith("S1  S1: MobileNetV2") and "S0-act" not in shown and "S1-freeze" in shown
    assert "hparams_search=s1_tpe | search (differs, S1 sec. A): S1's space and folds sampled by TPE" in shown
    assert "docs/fidelity.md#s1" in shown
    wrong = run_console_script("cnnlab-studies", ["--study", "S9"], tmp_path, env, check=False)
    assert wrong.returncode == 2 and wrong.stderr.strip().endswith("error: no study 'S9': one of S0, S1, S2, S3, S4")


def test_fold_sweep_puts_the_fold_mean_beside_the_studys_number_and_tags_mlflow(data_dir, tmp_path):
    """README's S1-cv command cut to two folds, logged to MLflow and TensorBoard: summary.md's mean ± std over
    the folds sits beside S1's final 98 %; each MLflow run carries the study as tags and params, each
    TensorBoard log as hyperparameters."""
    from mlflow.tracking import MlflowClient

    args = [
        "-m", S1, "data.num_folds=5", "data.fold=0,1", "debug=smoke", "model.net.weights=null",
        f"paths.data_dir={data_dir}", "logger=[mlflow,tensorboard]",
    ]  # fmt: skip
    run_console_script("cnnlab", args, tmp_path, logged_out_env(tmp_path / "home"))
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    folds = [read_results(sweep / job)["study"] for job in ("0", "1")]
    assert {(s["row"], s["reported"]) for s in folds} == {("S1-cv", 98.0)}
    mean = statistics.mean(s["this_run"] for s in folds)
    spread = statistics.stdev(s["this_run"] for s in folds)
    markdown = (sweep / "summary.md").read_text()
    means = markdown.split("## Mean ± std over `data.fold`", 1)[1]
    assert f"| S1-cv | 98 | {mean:.0f} ± {spread:.1f} | {mean - 98:+.0f} |" in means
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert (run.data.tags["study"], run.data.tags["study_row"]) == ("S1", "S1-cv")
        assert (run.data.params["study/id"], float(run.data.params["study/reported"])) == ("S1", 98.0)
    for job in ("0", "1"):
        hparams = yaml.safe_load((sweep / job / "tensorboard" / "hparams.yaml").read_text())
        assert hparams["study"] == {"id": "S1", "row": "S1-cv", "metric": "test/acc", "reported": 98.0}
