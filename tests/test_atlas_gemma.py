"""The atlas beyond one architecture: Gemma 3 270M (sliding-window layers, QK-norm, scaled
embeddings), a base model read with plain prompts. Its sinks start at layer 1, not 12: token 0
carries a massive activation in dim 400 at layers 1-3 and in dim 163 from layer 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("outro_sweep.models.gemma3", reason="model=gemma3_270m is not in this tree")
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def atlas(gemma3, tmp_path_factory) -> dict:
    """``gemma3`` converts the model once (or skips where its packages are absent)."""
    out = tmp_path_factory.mktemp("atlas_gemma")
    result = subprocess.run([sys.executable, "-m", "outro_sweep.atlas", "model=gemma3_270m", "benchmark.limit=4",
                             "logger.mode=disabled", f"paths.output_dir={out}"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (out / "atlas" / "gemma3_270m").glob("*/atlas.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_massive_activations_from_layer_1_in_dims_400_then_163(atlas):
    massive = atlas["massive"]
    assert massive["ratio"][0] < 1000 and atlas["rules"]["rules"]["massive_activation"]["rate"][0] == 0.0
    for layer in range(1, 15):
        top = massive["carriers"][layer][0]
        assert (top["position"], top["share"]) == (0, 1.0), (layer, top)
        assert top["dim"] == (400 if layer <= 3 else 163), (layer, top)
        assert massive["ratio"][layer] > 1000, (layer, massive["ratio"][layer])
        assert atlas["rules"]["rules"]["massive_activation"]["rate"][layer] == 1.0, layer


@pytest.mark.slow
def test_suggestion_starts_at_layer_1(atlas):
    suggestion = atlas["suggestion"]
    assert suggestion["relax_layers"] == [1, 3, 5]
    assert suggestion["line"].startswith("sinks from layer 1: try outro.layer=1,3,5 (massive_activation)")
    # Gemma's model config has no sink_dims (no tau separates its sink): the rule is listed as not run.
    assert "sink_dims" in atlas["rules"]["skipped"]
    assert atlas["value_share"]["cosine"][1] is not None
