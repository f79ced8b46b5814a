"""Grouped cells equal their runs alone for every intervention the replay shares work for, not only
OutRo: SinkRouter in both modes (constant threshold; target_skip, whose prefill calibration reads
the layers from ``first_layer`` on), LSG's oracle gate (keys scaled after and before RoPE), and
stacks of two interventions (OutRo with SinkRouter, OutRo with LSG).

A group here is a baseline and two cells of one method, run one after another in one process
with one store, as a group task runs them, under ``group.verify=1`` (each cell's first batch
that would replay is run and compared instead, the second replays); "alone" is each cell with no
store. Compared: the generated tokens and every step's logits, bit for bit, each batch's per-row
diagnostics and the cell's running sums. SmolLM2 stands in for LSG's decoder with chosen
"visual" positions (real tokens 1..3 of each row, V-sinks 1 and 3), as test_lsg_gate.py does.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.prefix import PrefixReplay, check_steps, step_criteria
from outro_sweep.interventions.lsg import LSGIntervention
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.interventions.stack import InterventionStack

REPO = Path(__file__).resolve().parents[1]
BATCHES = [["The capital of France is a large old city on the river called",
            "Two plus two equals four, and three plus three equals", "Name one colour of the rainbow:"],
           ["The cat sat on the mat and then it", "Once upon a time there was a little", "The opposite of hot is"]]
GENERATE = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, temperature=None, top_p=None, top_k=None,
                output_logits=True, return_dict_in_generate=True)


def node(group: str, **settings) -> dict:
    """conf/<group>/<default or oracle>.yaml with ``settings``."""
    option = "oracle" if group == "lsg" else "default"
    return {**OmegaConf.to_container(OmegaConf.load(REPO / "conf" / group / f"{option}.yaml")), **settings}


class VisualPositions:
    """LSG's positions provider for a text model: real tokens 1..3 of each row of the prefill in
    progress are "visual", 1 and 3 the V-sinks (positions in the padded prefill)."""

    mask: torch.Tensor | None = None  # (B, S) the batch about to run, set by the test

    def __call__(self, loaded):
        return nullcontext(self)

    def _rows(self, offsets: tuple[int, ...]) -> list[torch.Tensor]:
        firsts = self.mask.long().argmax(dim=1).tolist()
        return [torch.tensor([first + i for i in offsets], dtype=torch.long) for first in firsts]

    def visual_positions(self) -> list[torch.Tensor]:
        return self._rows((1, 2, 3))

    def vsink_positions(self) -> list[torch.Tensor]:
        return self._rows((1, 3))


METHODS = {
    "sinkrouter_constant": [{"sinkrouter": node("sinkrouter", threshold=0.3)},
                            {"sinkrouter": node("sinkrouter", threshold=0.1)}],
    "sinkrouter_target_skip": [{"sinkrouter": node("sinkrouter", mode="target_skip", target_skip=0.3)},
                               {"sinkrouter": node("sinkrouter", mode="target_skip", target_skip=0.6)}],
    "lsg_rope_after": [{"lsg": node("lsg", layer=4, rho_vsink=0.1)}, {"lsg": node("lsg", layer=6, rho_vsink=0.1)}],
    "lsg_rope_before": [{"lsg": node("lsg", layer=4, rho_vsink=0.1, rope="before")},
                        {"lsg": node("lsg", layer=4, rho_vsink=0.9, rope="before")}],
    "outro_and_sinkrouter": [{"outro": node("outro", alpha=0.3, layer=1), "sinkrouter": node("sinkrouter")},
                             {"outro": node("outro", alpha=0.3, layer=2), "sinkrouter": node("sinkrouter")}],
    "outro_and_lsg": [{"outro": node("outro", alpha=0.3, layer=1), "lsg": node("lsg", layer=4, rho_vsink=0.1)},
                      {"outro": node("outro", alpha=3.0, layer=1), "lsg": node("lsg", layer=4, rho_vsink=0.1)}],
}


def run_cell(smollm2, config: dict, provider: VisualPositions, store: BoundedCache | None) -> dict:
    """One cell over BATCHES: per batch its tokens, step logits and diagnostics; its running sums."""
    model, tokenizer = smollm2.model, smollm2.tokenizer
    stack = InterventionStack.from_config(config)
    results = {"batches": []}
    with ExitStack() as cell:
        attached = cell.enter_context(stack.attach(smollm2, MassiveActivation()))
        if store is not None:
            cell.enter_context(PrefixReplay(model, attached, store, verify=1))
        for prompts in BATCHES:
            inputs = dict(tokenizer(prompts, return_tensors="pt", padding=True))
            provider.mask = inputs["attention_mask"]
            out = model.generate(**inputs, **GENERATE, pad_token_id=tokenizer.pad_token_id,
                                 stopping_criteria=step_criteria(model))
            check_steps(model)
            results["batches"].append((out.sequences, torch.stack(out.logits), attached.sample_diagnostics()))
        results["sums"] = attached.running_sums()
    return results


# SinkRouter's target_skip mode and a stack with LSG run in the development tier; the other four
# (about 4 s each on 2 CPU cores) with the slow tier, beside the grouped sweeps of test_group_sweep.py
FAST = ("sinkrouter_target_skip", "outro_and_lsg")


@pytest.mark.parametrize("method", [pytest.param(method, marks=() if method in FAST else pytest.mark.slow)
                                    for method in METHODS])
@torch.no_grad()
def test_grouped_cells_equal_their_runs_alone(smollm2, monkeypatch, method):
    provider = VisualPositions()
    monkeypatch.setattr(LSGIntervention, "positions", provider)
    cells = [{}, *METHODS[method]]  # the group's baseline first, as the sweeper orders it
    store = BoundedCache(2 ** 31)
    before = COUNTS.copy()
    grouped = [run_cell(smollm2, config, provider, store) for config in cells]
    shared = {key: COUNTS[key] - before[key] for key in COUNTS}
    alone = [run_cell(smollm2, config, provider, None) for config in cells]
    for index, (a, b) in enumerate(zip(grouped, alone)):
        for (tokens, logits, diagnostics), (tokens_alone, logits_alone, diagnostics_alone) in zip(a["batches"],
                                                                                                   b["batches"]):
            assert torch.equal(tokens, tokens_alone), f"cell {index}: tokens differ"
            assert torch.equal(logits, logits_alone), f"cell {index}: logits differ"
            assert diagnostics == diagnostics_alone, f"cell {index}: diagnostics differ"
        assert a["sums"] == b["sums"], f"cell {index}: running sums differ"
    # the case is not vacuous: the method changed the generation, the group verified and replayed
    assert any(not torch.equal(grouped[0]["batches"][0][1], cell["batches"][0][1]) for cell in grouped[1:])
    assert shared.get("verified_prefills", 0) == 2  # each of the two cells' first batch
    assert shared.get("prefix_layers_replayed", 0) + shared.get("decode_layers_replayed", 0) > 0
