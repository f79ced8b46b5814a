"""Sweeps over config groups: model=hf_causal_lm on a local folder, benchmark=mmlu on the
real files, sink=first_k,attention_mass (the latter brings its own eager path)."""

from __future__ import annotations

import json

import pytest

from tests.test_sweep_e2e import run_cli

pytestmark = pytest.mark.slow  # subprocess runs


def test_sweep_over_model_benchmark_and_sink(tmp_path, tiny_model_dir, shared_data):
    sweep_dir = tmp_path / "multirun"
    result = run_cli(
        ["-m", "model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark=mmlu",
         f"benchmark.data_dir={shared_data / 'text_mc' / 'mmlu'}", "benchmark.subjects=[anatomy]",
         "benchmark.limit=3", "benchmark.scoring=logits", "sink=first_k,attention_mass", "outro.layer=1", "baseline=false",
         "logger.mode=disabled", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(p for p in sweep_dir.iterdir() if (p / "cell" / "metrics.json").exists())
    assert len(folders) == 2
    for folder in folders:
        records = [json.loads(line) for line in (folder / "cell" / "predictions.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == [f"mmlu/anatomy/test/{i}" for i in range(3)]
        assert all(r["valid"] and r["prediction"] in "ABCD" for r in records)  # logits scoring always answers
        if "first_k" in folder.name:
            # first_k (k=1): token 0 is a sink at every scanned layer (0..L-3 = 0..1), relaxed at layer 1
            assert all(r["diagnostics"]["outro"]["sink_positions"] == {"0": [0], "1": [0]} for r in records)
            assert all(r["diagnostics"]["outro"]["relaxed"] == {"1": [0]} for r in records)
        assert not list((folder / "cell").rglob("*.wandb"))  # logger.mode=disabled


def test_outro_off_is_the_stock_baseline(tmp_path):
    result = run_cli(["outro=off", "benchmark.limit=2", "benchmark.scoring=logits", "logger.mode=disabled"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = tmp_path.glob("cells/*/metrics.json")
    records = [json.loads(line) for line in (metrics_file.parent / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["diagnostics"] == {} for r in records)
    assert json.loads(metrics_file.read_text())["diagnostics"] == {}
