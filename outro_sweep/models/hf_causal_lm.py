"""Any Hugging Face causal LM from a local folder or an already-cached hub id."""

from __future__ import annotations

import os

from outro_sweep.config.schema import check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.models.base import ModelLoader, ModelPath


class HFCausalLM(ModelLoader):
    def __init__(self, path: ModelPath, name: str = "hf_causal_lm", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        check_arguments(HFCausalLM, locals(), self.config_key)
        self.path = os.path.expanduser(str(path))

    def _config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as err:  # no such folder or cached id; a folder without a config
            raise ConfigError(
                f"model.path={self.path!r} is neither a model folder nor a hub id in the local HF cache "
                f"(the hub is never contacted): {str(err).splitlines()[0]}"
            ) from None

    def _text_config(self):
        config = self._config()
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def num_layers(self) -> int:
        return int(self._text_config().num_hidden_layers)

    def hidden_size(self) -> int:
        return int(self._text_config().hidden_size)

    def max_positions(self) -> int:
        return int(self._text_config().max_position_embeddings)

    def folder(self) -> str:
        return self.path
