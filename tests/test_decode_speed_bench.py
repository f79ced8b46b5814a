"""``python -m outro_sweep.perf.sinkrouter``: its arguments, its prompts and its decode timing
on the real SmolLM2-135M, stock and SinkRouter side by side."""

from __future__ import annotations

import pytest
import torch

from outro_sweep.perf import sinkrouter as bench


def test_contexts_take_token_counts_or_max_and_refuse_the_rest(capsys):
    args = bench.build_parser().parse_args(["--contexts", "1024", "max"])
    assert args.contexts == [1024, "max"]
    assert bench.build_parser().parse_args([]).contexts == [1024, 4096, "max"]
    for bad in ("0", "4k"):
        with pytest.raises(SystemExit):
            bench.build_parser().parse_args(["--contexts", bad])
        assert "valid values are positive integers (tokens) or max" in capsys.readouterr().err


def test_too_few_new_tokens_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--new-tokens", "1"])
    assert "--new-tokens=1: valid values are integers >= 2" in capsys.readouterr().err


def test_the_prompt_has_exactly_the_context_length_and_decode_time_excludes_the_prefill(smollm2):
    inputs = bench.prompt_ids(smollm2.tokenizer, 300, rows=2)
    assert inputs["input_ids"].shape == (2, 300) and bool(inputs["attention_mask"].all())
    with torch.inference_mode():
        seconds = bench.decode_seconds(smollm2.model, inputs, 3, smollm2.tokenizer.pad_token_id)
    assert seconds > 0


@pytest.mark.slow
def test_the_bench_prints_a_ratio_and_a_skip_rate_per_context(capsys):
    assert bench.main(["--contexts", "64", "128", "--new-tokens", "4", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [int(row[0]) for row in rows] == [64, 128]
    for row in rows:
        assert row[3].endswith("x") and float(row[3][:-1]) > 0
        assert row[4].endswith("%") and 0 <= float(row[4][:-1]) <= 100
