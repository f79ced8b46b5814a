"""A grouped sweep on a CUDA GPU gives every cell what that cell gives alone (SmolLM2, OutRo on
and off, two sink rules). Skipped without CUDA: a GPU cannot exist on the CI machine."""

from __future__ import annotations

import pytest
import torch

from tests.test_group_sweep import TEXT, assert_same_cells, counters, sweep

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_grouped_sweep_on_the_gpu_equals_its_cells_alone(tmp_path):
    on_gpu = ["trainer.accelerator=gpu", "trainer.devices=1"]
    sweep(tmp_path / "grouped", *TEXT, *on_gpu)
    sweep(tmp_path / "alone", *TEXT, *on_gpu, "group.share=false")
    assert_same_cells(tmp_path / "grouped", tmp_path / "alone", expected=5)
    assert counters(tmp_path / "grouped")["model_loads"] == 1
