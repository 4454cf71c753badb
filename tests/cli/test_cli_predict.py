"""``ember predict --output FILE`` writes the predictions (``.pt``, ``.jsonl``, ``.csv``), refuses to
overwrite a file unless asked, and reports a format that does not fit in one line (issue 14, item 4)."""

from __future__ import annotations

import csv
import json
import textwrap

import pytest
import torch

from ember.cli.main import EmberCLI, main

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    import ember

    X = torch.arange(30, dtype=torch.float32).reshape(10, 3) / 10

    class Net(ember.Module):
        def __init__(self, kind: str = "tensor"):
            super().__init__()
            self.kind = kind
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            y = self(batch[0])
            if self.kind == "dict":
                return {"y": y, "label": y.argmax(1)}
            if self.kind == "text":
                return ["a"] * len(y)
            return y

    class Data(ember.DataModule):
        def __init__(self, loaders: int = 1):
            super().__init__()
            self.loaders = loaders

        def predict_dataloader(self):
            shuffled = DataLoader(TensorDataset(X), batch_size=4, shuffle=True)
            return shuffled if self.loaders == 1 else [shuffled, DataLoader(TensorDataset(X[:3]), batch_size=2)]
    """
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    name = f"predmod_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return name


def args(module: str, *extra: str) -> list[str]:
    return [
        "predict", "--model", f"{module}.Net", "--data", f"{module}.Data", "--seed_everything", "0",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


def expected(cli: EmberCLI) -> torch.Tensor:
    with torch.no_grad():
        return cli.model(__import__(cli.model.__module__).X)


def test_csv_rows_name_each_sample_by_its_dataset_index(project, tmp_path, capsys):
    cli = EmberCLI(args(project, "--output", "p.csv"))
    assert "ember predict: 3 batches of predictions written to p.csv" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(rows[0]) == ["index", "prediction_0", "prediction_1"]
    indices = [int(r["index"]) for r in rows]
    assert sorted(indices) == list(range(10)) and indices != list(range(10))  # shuffled, and traced back
    want = expected(cli)
    for r in rows:
        got = torch.tensor([float(r["prediction_0"]), float(r["prediction_1"])])
        torch.testing.assert_close(got, want[int(r["index"])])


def test_pt_holds_what_trainer_predict_returns(project, tmp_path):
    cli = EmberCLI(args(project, "--output", "p.pt"))
    saved = torch.load(tmp_path / "p.pt", weights_only=True)
    assert len(saved) == 3 and [len(b) for b in saved] == [4, 4, 2]
    for a, b in zip(saved, cli.result):
        torch.testing.assert_close(a, b)


def test_jsonl_with_a_dict_and_two_loaders(project, tmp_path):
    EmberCLI(args(project, "--model.kind", "dict", "--data.loaders", "2", "--output", "p.jsonl"))
    rows = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert len(rows) == 13 and set(rows[0]) == {"dataloader_idx", "index", "y", "label"}
    assert [r["index"] for r in rows if r["dataloader_idx"] == 1] == [0, 1, 2]
    assert all(len(r["y"]) == 2 and r["label"] in (0, 1) for r in rows)


def test_existing_file_is_refused_unless_overwrite(project, tmp_path, capsys):
    (tmp_path / "p.csv").write_text("keep me")
    assert main(args(project, "--output", "p.csv")) == 2
    err = capsys.readouterr().err
    assert err.startswith("ember: error: --output 'p.csv' exists already") and "--overwrite true" in err
    assert err.count("\n") == 1 and (tmp_path / "p.csv").read_text() == "keep me"
    assert main(args(project, "--output", "p.csv", "--overwrite", "true")) == 0
    assert (tmp_path / "p.csv").read_text().startswith("index,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "p.txt"], "unknown format '.txt'; use one of .pt, .jsonl, .csv"),
        (["--output", "nowhere/p.csv"], "does not exist"),
        (["--model.kind", "text", "--output", "p.csv"], "predict_step returned list for 'prediction'"),
    ],
)
def test_user_errors_are_one_line(project, tmp_path, capsys, extra, message):
    assert main(args(project, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ember: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "p.csv").exists()


def test_without_output_the_count_is_reported(project, capsys):
    assert main(args(project)) == 0
    assert "ember predict: 3 batches predicted (give --output FILE.pt|.jsonl|.csv to keep them)" in capsys.readouterr().out
