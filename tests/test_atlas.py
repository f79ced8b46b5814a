"""``python -m outro_sweep.atlas`` on the real pretrained SmolLM2 (offline, 2 CPU cores): the
facts measured on it, from atlas.json; the figures; the W&B run (offline file decoded, no
server here); the cache; the one-line refusal of a bad setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from outro_sweep.atlas.rules import rule_configs
from outro_sweep.atlas.store import atlas_identity
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
LIMIT = 4
ARGS = [f"benchmark.limit={LIMIT}", "logger.mode=offline"]
MASSIVE_FROM = 12  # the first layer whose entering residual stream holds SmolLM2's massive activation
LAST_SCANNED = 27  # OutRo's scan range is 0..L-3 (L = 30); the massive activation lasts to layer 28


def composed(out: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("atlas", overrides=[*ARGS, f"paths.output_dir={out}", *extra])


@pytest.fixture(scope="module")
def atlas_run(smollm2, tmp_path_factory) -> dict:
    """The atlas as a user runs it (a subprocess), timed. ``smollm2`` converts the model first."""
    out = tmp_path_factory.mktemp("atlas")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "outro_sweep.atlas", *ARGS, f"paths.output_dir={out}"], cwd=REPO,
                            env=ENV, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((out / "atlas" / "smollm2_135m").glob("*/atlas.json"))
    assert len(folders) == 1, folders
    directory = folders[0].parent
    return {"out": out, "directory": directory, "atlas": json.loads(folders[0].read_text()),
            "stdout": result.stdout, "seconds": seconds}


@pytest.mark.slow
def test_massive_activations_from_layer_12_at_token_0(atlas_run):
    atlas = atlas_run["atlas"]
    massive = atlas["massive"]
    for layer in range(MASSIVE_FROM, LAST_SCANNED + 2):
        assert massive["ratio"][layer] > 1000, (layer, massive["ratio"][layer])  # Sun et al.'s "massive"
        # docs/atlas.md: |h| about 25,000, 2,000-15,000x the median (2,400-14,000x measured)
        assert 24_000 < massive["top3"][layer][0] < 26_000, (layer, massive["top3"][layer])
        assert 2_000 < massive["ratio"][layer] < 15_000, (layer, massive["ratio"][layer])
        top = massive["carriers"][layer][0]
        assert (top["position"], top["dim"], top["share"]) == (0, 507, 1.0), (layer, top)
    for layer in range(MASSIVE_FROM):
        assert massive["ratio"][layer] < 1000, (layer, massive["ratio"][layer])
    rate = atlas["rules"]["rules"]["massive_activation"]["rate"]
    assert all(rate[layer] == 1.0 for layer in range(MASSIVE_FROM, LAST_SCANNED + 2)), rate
    assert all(rate[layer] < 0.5 for layer in range(MASSIVE_FROM)), rate


@pytest.mark.slow
def test_sink_dim_507_found_automatically(atlas_run):
    dims = atlas_run["atlas"]["dims"]
    assert dims["dims"][0] == 507, dims["dims"]
    assert all(507 in dims["layer_dims"][layer] for layer in range(MASSIVE_FROM, LAST_SCANNED + 2))


@pytest.mark.slow
def test_first_token_attention_mass_of_chat_prompts(atlas_run):
    """Measured on the built-in questions in SmolLM2's chat template (docs/atlas.md): over layers
    3-28 the first-token mass (mean over heads and queries) averages 0.53, each layer but 10-11
    lies in 0.36-0.82, and layers 10-11 are the two that attend elsewhere (< 0.1)."""
    attention = atlas_run["atlas"]["attention"]
    mass = attention["mass"]
    middle = mass[3:29]
    assert 0.50 <= sum(middle) / len(middle) <= 0.56, middle
    assert all(0.33 <= m <= 0.85 for layer, m in enumerate(mass[:29]) if layer >= 3 and layer not in (10, 11)), mass
    assert mass[10] < 0.1 and mass[11] < 0.1, mass
    # Gu et al.'s sink rate follows: almost every head is a sink head where the mass is high.
    assert all(attention["sink_rate"][layer] >= 0.75 for layer in range(MASSIVE_FROM, 29)), attention["sink_rate"]
    assert attention["sink_rate"][11] == 0.0


@pytest.mark.slow
def test_suggestion_starts_at_layer_12(atlas_run):
    suggestion = atlas_run["atlas"]["suggestion"]
    assert suggestion["relax_layers"] == [12, 14, 16]
    assert suggestion["line"] == ("sinks from layer 12: try outro.layer=12,14,16 (massive_activation); "
                                  "sink dims [507]")
    assert suggestion["first_layer"]["massive_activation"] == 12 and suggestion["first_layer"]["first_k"] == 0
    assert suggestion["line"] in atlas_run["stdout"] and suggestion["command"] in atlas_run["stdout"]
    saved = (atlas_run["directory"] / "suggestion.txt").read_text().splitlines()
    assert saved == [suggestion["line"], suggestion["rules_line"], suggestion["command"]]
    assert suggestion["rules_line"] == ("first layer with sinks: attention_mass 3, first_k 0, massive_activation 12, "
                                        "sink_dims 2")
    assert suggestion["rules_line"] in atlas_run["stdout"]
    assert suggestion["command"] == ("python -m outro_sweep -m model=smollm2_135m sink=massive_activation "
                                     "outro.layer=12,14,16")


@pytest.mark.slow
def test_figures_and_wandb_run(atlas_run):
    atlas, directory = atlas_run["atlas"], atlas_run["directory"]
    assert atlas["figures"] == ["massive.png", "sink_dims.png", "first_token_attention.png", "rules.png",
                               "value_share.png"]
    for name in atlas["figures"]:
        data = (directory / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
    runs = find_runs(directory)
    assert len(runs) == 1, runs
    run = read_run(runs[0])
    assert (run.job_type, run.run_id, run.exit_code) == ("atlas", atlas["identity"], 0)
    assert run.summary["suggestion"] == atlas["suggestion"]["line"]
    layers = [row for row in run.history if "massive/top1" in row]
    assert len(layers) == 30
    assert layers[MASSIVE_FROM]["rules/massive_activation/rate"] == 1.0
    assert any(key.startswith("figures/") for row in run.history for key in row)


@pytest.mark.slow
def test_every_rule_and_their_agreement(atlas_run):
    rules = atlas_run["atlas"]["rules"]
    assert set(rules["rules"]) == {path.stem for path in (CONF_DIR / "sink").glob("*.yaml")}
    assert rules["skipped"] == {}  # sink_dims reads SmolLM2's model.sink_dims
    assert all(r == 1.0 for r in rules["rules"]["first_k"]["rate"])
    # From layer 12 the massive-activation and the sink-dimension rules flag exactly token 0.
    agreement = rules["agreement"]["massive_activation|sink_dims"]
    assert all(agreement[layer] == 1.0 for layer in range(MASSIVE_FROM, LAST_SCANNED + 2)), agreement


@pytest.mark.slow
def test_second_call_is_served_from_the_cache(atlas_run):
    from outro_sweep.atlas import capture, run

    forwards, loads = capture.FORWARDS, run.LOADS
    result = run.run_atlas(composed(atlas_run["out"]))
    assert result.cached and result.directory == atlas_run["directory"]
    assert (capture.FORWARDS, run.LOADS) == (forwards, loads)  # nothing loaded, no forward pass
    assert result.atlas == atlas_run["atlas"]
    # A setting that changes the numbers is another atlas.
    other = OmegaConf.to_container(composed(atlas_run["out"], "atlas.tau=15"), resolve=True)
    assert atlas_identity(other, rule_configs(CONF_DIR)) != result.atlas["identity"]


@pytest.mark.slow
def test_runs_in_under_two_minutes(atlas_run):
    """The README's figure: the embedded model's atlas on 2 CPU cores (first load included)."""
    assert atlas_run["seconds"] < 120, atlas_run["seconds"]


@pytest.mark.parametrize("override, key", [("atlas.eps=1.5", "atlas.eps"), ("atlas.tau=0", "atlas.tau"),
                                           ("+atlas.taus=3", "atlas.taus")])
def test_bad_setting_is_one_line_before_the_model_loads(tmp_path, override, key):
    from outro_sweep.atlas import run

    loads = run.LOADS
    with pytest.raises(ConfigError) as error:
        run.run_atlas(composed(tmp_path, override))
    message = str(error.value)
    assert key in message and "valid" in message and "\n" not in message
    assert run.LOADS == loads


@pytest.mark.slow
def test_sink_value_acts_as_a_shared_bias(atlas_run):
    """OutRo's finding (ii) on SmolLM2, measured: where massive-activation sinks exist (layers
    12-28), non-sink head outputs point along the sink value (mean cosine 0.14-0.79, > 0.1 at
    every layer) and the sink value is a large part of them (share 0.33-0.79, > 0.25)."""
    value_share = atlas_run["atlas"]["value_share"]
    assert value_share["rule"] == "massive_activation"
    for layer in range(MASSIVE_FROM, LAST_SCANNED + 2):
        assert value_share["prompts"][layer] == LIMIT
        assert value_share["cosine"][layer] > 0.1 and value_share["share"][layer] > 0.25, layer
    assert value_share["cosine"][11] is None  # no sink at layer 11: no number
    assert sum(value_share["cosine"][MASSIVE_FROM:29]) / 17 > 0.35


@pytest.mark.slow
def test_a_cell_whose_relaxation_layer_has_no_sink_in_the_atlas_says_so(atlas_run):
    """A cell of the same model and output folder reads the atlas: layer 1 has no massive
    activation in SmolLM2 (they start at 12), so its log says layer 1 will change nothing."""
    result = subprocess.run([sys.executable, "-m", "outro_sweep", "outro.layer=[1,12]", "benchmark.limit=2",
                             "benchmark.scoring=logits", "logger.mode=disabled", "trainer.enable_progress_bar=false",
                             f"paths.output_dir={atlas_run['out']}", f"hydra.run.dir={atlas_run['out'] / 'cell_run'}"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in (result.stdout + result.stderr).splitlines() if "acts on sinks at layer" in line]
    assert "outro acts on sinks at layer 1, where" in line and f"sinks start at layer {MASSIVE_FROM}" in line
    assert "sink=massive_activation" in line and str(atlas_run["directory"]) in line
