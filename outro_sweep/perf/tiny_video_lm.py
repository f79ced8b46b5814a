"""A small random Qwen2.5-VL behind the real Qwen2.5-VL processor, for benchmarks without weights.

The processor, tokenizer and chat template are the checkpoint's own files (a folder such as
``../shared/data/hf_configs/Qwen__Qwen2.5-VL-7B-Instruct``), so prompts, visual token counts and
pixels are exactly a real user's; the weights are random and the towers small (sizes below), so
the timings show where a cell's work goes, not a 7B model's absolute cost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Everything of the checkpoint folder but its config (the sizes below replace it) and weights.
PROCESSOR_FILES = ("chat_template.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "preprocessor_config.json", "generation_config.json")
TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=12, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32768)
MROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]}  # sums to head_dim / 2 = 32
VISION = dict(depth=8, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
              fullatt_block_indexes=[3, 7], window_size=112)


def save_tiny_qwen2_5_vl(checkpoint_files: Path, folder: Path, seed: int = 0) -> Path:
    """Write the model and the checkpoint's processor files to ``folder`` (what ``model.path`` takes)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    missing = [name for name in PROCESSOR_FILES if not (checkpoint_files / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint_files} lacks the Qwen2.5-VL processor file {missing[0]}: valid values "
                                "are a folder holding the checkpoint's tokenizer, chat template and processor files")
    real = json.loads((checkpoint_files / "config.json").read_text())
    text = real.get("text_config", real)
    ids = {key: real[key] for key in ("image_token_id", "video_token_id", "vision_start_token_id",
                                      "vision_end_token_id")}
    config = Qwen2_5_VLConfig(
        text_config=dict(TEXT, vocab_size=text["vocab_size"], rope_parameters=dict(MROPE),
                         bos_token_id=text.get("bos_token_id"), eos_token_id=text.get("eos_token_id")),
        vision_config=VISION, tie_word_embeddings=True, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in PROCESSOR_FILES:
        shutil.copyfile(checkpoint_files / name, folder / name)  # writable copies
    return folder
