"""The contract every model loader fulfils."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch

from outro_sweep.config.schema import Doc, NonEmpty, Range, check_arguments
from outro_sweep.files.atomic import write_text_atomic
from outro_sweep.files.fingerprint import folder_files


@dataclass
class LoadedModel:
    """A model ready for prediction: the module that ``generate``s, what turns prompts (and
    clips) into its inputs, and the loader that knows how."""

    model: torch.nn.Module  # for Qwen2.5-Omni: the thinker
    processor: object  # a text model's tokenizer, a video model's ProcessorMixin (tokenizer + video [+ audio])
    loader: "ModelLoader"
    name: str
    sink_dims: list[int] = field(default_factory=list)  # per-model sink dimensions (sink_dims rule)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# model.path: where the weights are (read without contacting the hub).
ModelPath = Annotated[str, NonEmpty(), Doc("a local model folder or a hub id in the local HF cache")]


class ModelLoader:
    """Base class: subclasses implement ``num_layers`` (cheap: the config only) and ``folder``
    (where the files are); video loaders also override ``load_processor``, ``inputs`` and ``load``."""

    config_key: ClassVar[str] = "model"  # the config group of its keys (prefixes them in messages)
    #: True where the model computes its own rotary positions from its inputs and KV cache (Qwen's
    #: M-RoPE keeps the prefill's rope deltas); otherwise a forward is given positions that count
    #: real tokens only, so a left-padded row sees the positions it would alone.
    derives_positions: ClassVar[bool] = False
    #: transformers ``model_type`` values of the models this loader loads (e.g. "qwen2_5_vl"), so
    #: per-family facts below are found from a bare transformers model too (``family_of``).
    model_types: ClassVar[tuple[str, ...]] = ()
    #: Attribute names of the model's vision/audio towers, on the model or on its inner ``model``;
    #: no intervention edits them, so a group of cells reuses their outputs (``group.towers``).
    towers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str,
        dtype: Literal[tuple(_DTYPES)] = "float32",
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
        use_chat_template: bool = True,
        sink_dims: list[Annotated[int, Range(ge=0)]] | None = None,
    ) -> None:
        check_arguments(ModelLoader, locals(), self.config_key)
        self.name = name
        self.dtype = _DTYPES[dtype]
        self.attn_implementation = attn_implementation
        self.use_chat_template = use_chat_template
        self.sink_dims = list(sink_dims or [])
        # The Hugging Face Hub is never contacted at run time: every load is offline.
        os.environ["HF_HUB_OFFLINE"] = "1"

    def num_layers(self) -> int:
        """Number of decoder layers, read from the config without loading weights."""
        raise NotImplementedError

    def hidden_size(self) -> int:
        """Width of the decoder's residual stream, read from the config without loading weights."""
        raise NotImplementedError

    def max_positions(self) -> int:
        """Positions the model is trained for (``max_position_embeddings``), read from the config
        without loading weights: the longest sequence a long-context benchmark may ask for."""
        raise NotImplementedError

    def load_processor(self):
        """The tokenizer, left-padding (every row's last real token at the end, where generation
        starts); no weights. Video loaders return their processor."""
        from transformers import AutoTokenizer

        return left_padding(AutoTokenizer.from_pretrained(self.folder()))

    def folder(self) -> str:
        """Where the model's files are (a local folder or a cached hub id)."""
        raise NotImplementedError

    def model_files(self) -> dict[str, Path]:
        """The files whose bytes make the model's predictions (weights, configs, tokenizer, chat
        template) by a name relative to the model's folder, fingerprinted into the cell identity
        (``outro_sweep.cell.identity``); no weights are loaded. Default: every file of
        ``folder()``, a local folder or a hub id's snapshot in the local HF cache ({} when
        neither exists: the cell's checks refuse such a model)."""
        folder = local_model_folder(self.folder())
        return {} if folder is None else folder_files(folder)

    def load(self) -> LoadedModel:
        from transformers import AutoModelForCausalLM

        processor = self.load_processor()
        model = AutoModelForCausalLM.from_pretrained(
            self.folder(), dtype=self.dtype, attn_implementation=self.attn_implementation
        )
        model.eval()
        return LoadedModel(model, processor, self, self.name, self.sink_dims)

    # ------------------------------------------------------------------ inputs

    def chat(self, processor) -> bool:
        """Whether prompts go through the chat template (asked for, and the tokenizer has one)."""
        return self.use_chat_template and bool(getattr(processor, "chat_template", None))

    def render(self, processor, prompt: str, template: bool = True) -> str:
        """The exact text the model reads: the chat template around the prompt, or the prompt
        (``template=False``: a question that is read as is, ``Question.template``)."""
        if not (template and self.chat(processor)):
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def inputs(self, processor, texts: list[str], clips: list, template: bool = True) -> dict:
        """Rendered texts -> ``{"input_ids", "attention_mask"}`` (B, S), left-padded; a text
        model has no clips. The chat template already holds the special tokens; a text rendered
        without it (``template=False`` or no chat model) gets the tokenizer's own (BOS, if any)."""
        encoded = processor(texts, return_tensors="pt", padding=True,
                            add_special_tokens=not (template and self.chat(processor)))
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def generate_kwargs(self) -> dict:
        """Extra keyword arguments for ``model.generate`` (e.g. Omni's audio flag)."""
        return {}

    def position_ids(self, mask: torch.Tensor) -> torch.Tensor | None:
        """(B, S) positions of a left-padded prompt batch from its (B, S) padding mask: each real
        token's index among its row's real tokens; None where the model derives its own."""
        if self.derives_positions:
            return None
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def continuation_position_ids(self, model: torch.nn.Module, real: torch.Tensor, length: int) -> torch.Tensor:
        """Positions of ``length`` tokens that continue a prefill whose rows hold ``real`` (B,)
        real tokens: (B, T), each row counting on from its own last real position."""
        return real[:, None] + torch.arange(length, device=real.device)

    def answer_logits(self, loaded: LoadedModel, inputs: dict) -> torch.Tensor:
        """(B, V) float next-token logits right after each prompt (option-letter scoring)."""
        mask = inputs["attention_mask"]
        logits = loaded.model(input_ids=inputs["input_ids"], attention_mask=mask,
                              position_ids=self.position_ids(mask), logits_to_keep=1).logits
        return logits[:, -1].float()


def local_model_folder(path: str) -> Path | None:
    """``path`` itself when it is a folder, else the snapshot a hub id resolves to in the local
    HF cache (the hub is never contacted), else None."""
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # noqa: BLE001 - not a cached hub id (or not a valid repo id at all)
        return None


def without_gguf_quantization(folder: Path) -> Path:
    """``folder``, a model de-quantised from a GGUF file and saved as plain safetensors, with the
    ``quantization_config`` its config inherited from the GGUF load removed: the weights are plain,
    and other loaders (lm-eval's HF model) would otherwise look for the GGUF file. Idempotent; a
    folder converted before this rule is mended on its next load."""
    config_file = Path(folder) / "config.json"
    config = json.loads(config_file.read_text())
    if "quantization_config" in config:
        del config["quantization_config"]
        write_text_atomic(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(folder)


def left_padding(processor):
    """Left padding (and a pad token) on a tokenizer or on a processor's tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor
