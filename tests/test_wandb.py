"""W&B as a user without a W&B login gets it: the real ``cnnlab`` console script, no WANDB_* variable, an
empty HOME. Each run goes offline by itself and is read back from its own ``.wandb`` file (protobuf records
of ``wandb.proto``): per-epoch and per-step metrics, the config once as flat keys, report images,
interactive charts and tables, the best checkpoint artifact, one finished W&B run per multirun job, all in
the sweep's group. A login to a server out of reach goes offline too."""

from __future__ import annotations

import json
import socket
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import logged_out_env, run_console_script
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) chunks
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` transaction log, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, payload = 7, b""
    while position + CHUNK_HEADER.size <= len(data):
        room = BLOCK_SIZE - position % BLOCK_SIZE
        if room < CHUNK_HEADER.size:  # block trailer
            position += room
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        chunk = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        position += CHUNK_HEADER.size + length
        if kind in (FULL, FIRST):
            payload = b""
        payload += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


class OfflineRun:
    """What one offline W&B run recorded."""

    def __init__(self, run_dir: Path) -> None:
        (self.path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        self.files = self.path.parent / "files"
        self.history: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.artifacts: dict[str, list[set[str]]] = defaultdict(list)
        self.run: Any = None
        self.exit_code: int | None = None
        for record in read_records(self.path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                self.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "config":
                self.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
            elif kind == "summary":
                self.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "artifact":
                self.artifacts[record.artifact.type].append(set(record.artifact.aliases))
            elif kind == "run":
                self.run = record.run
            elif kind == "exit":
                self.exit_code = record.exit.exit_code

    def logged(self, key: str) -> list[Any]:
        return [row[key] for row in self.history if key in row]

    def table(self, key: str) -> dict:
        (path,) = self.logged(f"{key}/path")
        return json.loads((self.files / path).read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("wandb")
    args = [
        "-m",
        "debug=fast",
        "logger=wandb",
        "logger.wandb.log_model=true",
        "optim.lr=0.01,0.001",
        "hydra.sweep.dir=sweep",
    ]
    result = run_console_script("cnnlab", args, cwd, logged_out_env(cwd / "home"))
    return cwd / "sweep", result.stdout + result.stderr


def test_without_login_each_job_is_its_own_offline_run_in_the_sweep_group(sweep: tuple[Path, str]) -> None:
    sweep_dir, output = sweep
    runs = [OfflineRun(sweep_dir / job) for job in ("0", "1")]
    assert runs[0].run.run_id != runs[1].run.run_id
    assert {r.run.run_group for r in runs} == {"sweep"}
    assert all(r.exit_code == 0 for r in runs)
    assert [r.config["optim.lr"] for r in runs] == [0.01, 0.001]
    assert output.count("No W&B login") == 2
    for run in runs:
        assert f"wandb sync {run.path.parent}" in output


def test_run_files_hold_metrics_config_images_tables_and_the_best_checkpoint(sweep: tuple[Path, str]) -> None:
    sweep_dir, _ = sweep
    run = OfflineRun(sweep_dir / "0")
    for metric in ("train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "test/f1_macro"):
        assert len(run.logged(metric)) == 1, metric  # debug=fast: one epoch
    # the batch loss on every trainer.log_every_n_steps step (debug=fast: 1, two batches)
    assert len(run.logged("train/loss_step")) == 2
    results = json.loads((sweep_dir / "0" / "results.json").read_text())
    assert run.logged("test/acc") == [pytest.approx(results["test/acc"])]
    assert run.summary["test/auroc_macro"] == pytest.approx(results["test/auroc_macro"])
    # the resolved config once, as flat keys: no second, nested copy of the module's hyperparameters
    config = OmegaConf.load(sweep_dir / "0" / ".hydra" / "config.yaml")
    assert run.config["model.net._target_"] == config.model.net._target_
    assert run.config["data.batch_size"] == config.data.batch_size
    assert run.config["trainer.max_epochs"] == 1
    user_keys = {key for key in run.config if not key.startswith("_wandb")}
    assert not {"model", "optimizer", "class_names", "preprocessing"} & user_keys
    assert not [key for key in user_keys if isinstance(run.config[key], dict) and run.config[key]]
    # the report's figures as images
    for figure in ("confusion_matrix", "roc_curves", "learning_curves", "per_class_metrics", "misclassified"):
        assert run.logged(f"report/{figure}/_type") == ["image-file"]
        (path,) = run.logged(f"report/{figure}/path")
        assert (run.files / path).read_bytes()[:4] == b"\x89PNG"
    # confusion matrix and classification report as tables, equal to the files on disk
    report = json.loads((sweep_dir / "0" / "report" / "classification_report.json").read_text())
    table = run.table("report/classification_report")
    assert table["columns"] == ["class", "precision", "recall", "f1-score", "support"]
    for name, precision, recall, f1, support in table["data"]:
        assert [precision, recall, f1, support] == pytest.approx([report[name][k] for k in table["columns"][1:]])
    confusion = (sweep_dir / "0" / "report" / "confusion_matrix.csv").read_text().splitlines()
    assert [[str(v) for v in row] for row in run.table("report/confusion_matrix_table")["data"]] == [
        line.split(",") for line in confusion[1:]
    ]
    # interactive charts: W&B's confusion-matrix panel with the same counts, the ROC panel with every class
    # that has positives and negatives
    for chart, panel in (
        ("confusion_matrix_chart", "wandb/confusion_matrix/v1"),
        ("roc_curves_chart", "wandb/area-under-curve/v0"),
    ):
        assert run.config[f"_wandb/visualize/report/{chart}"]["panel_config"]["panelDefId"] == panel
    counts = {
        (actual, predicted): n for actual, predicted, n in run.table("report/confusion_matrix_chart_table")["data"]
    }
    names = confusion[0].split(",")[1:]
    on_disk = {}
    for line in confusion[1:]:
        actual, *row = line.split(",")
        on_disk.update({(actual, predicted): int(n) for predicted, n in zip(names, row) if int(n)})
    assert {key: n for key, n in counts.items() if n} == on_disk
    roc = run.table("report/roc_curves_chart_table")
    assert roc["columns"] == ["class", "fpr", "tpr"]
    curves = defaultdict(list)
    for name, fpr, tpr in roc["data"]:
        curves[name].append((fpr, tpr))
    assert set(curves) <= set(names) and len(curves) >= 2
    for points in curves.values():
        assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0) and points == sorted(points)
    # logger.wandb.log_model=true: checkpoints as model artifacts, the best one aliased "best"
    assert any("best" in aliases for aliases in run.artifacts["model"])


def test_logged_in_without_reaching_the_server_logs_offline(tmp_path: Path) -> None:
    """A W&B login (as `wandb login --host` leaves it: ~/.netrc and the base URL in wandb's settings file) to
    a server the machine cannot reach: the run goes offline at once instead of failing after wandb's timeout."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{probe.getsockname()[1]}"
    env = logged_out_env(tmp_path / "home")
    (tmp_path / "home" / ".config" / "wandb").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "wandb" / "settings").write_text(f"[default]\nbase_url = http://{server}\n")
    (tmp_path / "home" / ".netrc").write_text(f"machine {server}\n  login user\n  password {'a' * 40}\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    result = run_console_script("cnnlab", ["debug=smoke", "logger=wandb"], tmp_path, env)
    assert f"W&B server http://{server} not reachable: logging offline" in result.stdout + result.stderr
    (run_dir,) = {path.parent for path in tmp_path.glob("outputs/*/*/results.json")}
    run = OfflineRun(run_dir)
    assert run.exit_code == 0 and run.logged("val/acc")
