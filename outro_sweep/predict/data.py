"""Questions -> (decoded clips) -> left-padded model batches for the Lightning predict loop.

One dataset and one collator for every benchmark and model: a question with a ``video`` has
its clip decoded in ``QuestionDataset.__getitem__`` (so ``predict.num_workers`` > 0 decodes
in parallel worker processes while the model runs), through the on-disk ``FrameCache`` (the
second cell of a sweep loads the frames instead of decoding; the next cell of a group in the
same process takes them from memory); the model's loader renders the
prompt (chat template, system prompt) and builds the batch (a tokenizer call, or the
processor with the clips).

A clip that cannot be decoded (corrupt, truncated, gone since the cell started) does not
stop the cell: its item carries the error, the collator leaves it out of the model batch,
and the predictor writes an error record for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from outro_sweep.benchmarks.base import Question
from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.media.decode import DecodedVideo, VideoError
from outro_sweep.models.base import LoadedModel
from outro_sweep.predict.cloze import cloze_options


def prompt_hash(rendered: str) -> str:
    """sha256 of the exact text the model reads (16 hex): chat template, system prompt,
    instruction and question all count."""
    return hashlib.sha256(rendered.encode()).hexdigest()[:16]


def rendered_prompt(loader, processor, question: Question) -> str:
    """The exact text the model reads for ``question`` (its chat template where it takes one)."""
    return loader.render(processor, question.prompt, question.template)


def question_hash(loader, processor, question: Question) -> str:
    """``prompt_hash`` of all the text that makes a question's prediction: the rendered prompt
    and, where set, the cloze continuations (a cloze prompt names no option) and stop strings."""
    text = rendered_prompt(loader, processor, question)
    if question.continuations:
        text += "\0continuations\0" + "\0".join(question.continuations)
    if question.stop:
        text += "\0stop\0" + "\0".join(question.stop)
    return prompt_hash(text)


@dataclass
class Item:
    index: int  # position in the cell's question list (the predictions' sort key)
    question: Question
    clip: DecodedVideo | None = None  # the decoded clip of a video question
    error: str | None = None  # one line: why the clip could not be used
    cache: str | None = None  # "hit" (loaded from the frame cache) | "decoded" | None (failed or no clip)
    clip_key: str | None = None  # the frame cache's key of the clip, where a group keeps clips in memory


class ClipSource:
    """Where a video question's frames come from: the benchmark's video_dir, sampled the model's
    way (``loader.sampling``), through the frame cache."""

    def __init__(self, benchmark, sampling, cache, kept: BoundedCache | None = None) -> None:
        """kept: decoded clips kept in memory for the next cells of a group (outro_sweep.group),
        by the frame cache's key (file identity and sampling); None keeps nothing."""
        self.benchmark, self.sampling, self.cache, self.kept = benchmark, sampling, cache, kept

    def item(self, index: int, question: Question) -> Item:
        sampling = self.sampling
        if question.segment is not None:  # the benchmark bounds the clip (MVBench start/end)
            sampling = dataclasses.replace(sampling, start_s=question.segment[0], end_s=question.segment[1])
        decodes_before = self.cache.decodes
        path = self.benchmark.video_path(question)
        try:
            key = self.cache.key(path, sampling) if self.kept is not None else None
            clip = self.kept.get(key) if key is not None else None
            if clip is not None:
                COUNTS["clip_reuses"] += 1
                return Item(index, question, clip, cache="hit", clip_key=key)
            clip = self.cache.get_or_decode_with(path, sampling)
        except VideoError as err:
            return Item(index, question, error=str(err).splitlines()[0])
        decoded = self.cache.decodes > decodes_before
        COUNTS["clip_decodes" if decoded else "clip_reads"] += 1
        if key is not None:
            self.kept.put(key, clip)
        return Item(index, question, clip, cache="decoded" if decoded else "hit", clip_key=key)


class QuestionDataset(Dataset):
    """The questions at ``indices`` (default: all), in that order; each item keeps its
    original index into ``questions``, so a resumed or multi-process cell's records are keyed
    exactly as a single uninterrupted run's. ``clips``: where video questions' clips come from."""

    def __init__(self, questions: list, indices: list[int] | None = None, clips: ClipSource | None = None) -> None:
        self.questions = questions
        self.indices = list(range(len(questions))) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < len(questions) for i in self.indices):
            raise IndexError(f"question indices out of range 0..{len(questions) - 1}")
        self.clips = clips

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Item:
        index = self.indices[position]
        question = self.questions[index]
        if question.video is None:
            return Item(index, question)
        return self.clips.item(index, question)


class Collator:
    """Render each prompt through the model's loader, hash it, and build one left-padded batch
    of the usable rows (one tokenizer or processor call; row-wise where the processor needs it).

    kept: model batches kept for the next cells of a group (outro_sweep.group), by the rendered
    prompts and the clips' frame-cache keys: the processor is a function of those alone, so the
    next cell gets the same tensors (and the tower cache recognises them without hashing their
    pixels again); None keeps nothing."""

    def __init__(self, loaded: LoadedModel, kept: BoundedCache | None = None) -> None:
        self.loaded = loaded
        self.kept = kept

    def _inputs(self, texts: list[str], usable: list[Item], template: bool):
        loader, processor = self.loaded.loader, self.loaded.processor
        clips = [item.clip for item in usable]
        if self.kept is None or any(item.clip is not None and item.clip_key is None for item in usable):
            return loader.inputs(processor, texts, clips, template)
        key = ("model batch", tuple(texts), tuple(item.clip_key for item in usable), template)
        inputs = self.kept.get(key)
        if inputs is None:
            inputs = loader.inputs(processor, texts, clips, template)
            self.kept.put(key, inputs)
        else:
            COUNTS["batch_reuses"] += 1
        return type(inputs)(dict(inputs)) if hasattr(inputs, "keys") else inputs  # the caller's own mapping

    def __call__(self, items: list[Item]) -> dict:
        loader, processor = self.loaded.loader, self.loaded.processor
        usable = [item for item in items if item.error is None]
        # A benchmark's questions are all templated or all read as is (Question.template).
        template = all(item.question.template for item in usable)
        texts = [rendered_prompt(loader, processor, item.question) for item in usable]
        cloze = None
        if any(item.question.cloze for item in usable):
            # the prefill reads each context; the options' tokens continue it (predict.cloze)
            special = not (template and loader.chat(processor))
            tokenizer = getattr(processor, "tokenizer", processor)
            cloze = [cloze_options(tokenizer, text, item.question.continuations, special)
                     for text, item in zip(texts, usable)]
            texts = [options.context for options in cloze]
        inputs = self._inputs(texts, usable, template) if usable else None
        return {
            "inputs": inputs,  # model tensors for the ``usable`` rows, or None when every clip failed
            "usable": usable,
            "failed": [item for item in items if item.error is not None],
            "prompt_hashes": {item.index: question_hash(loader, processor, item.question) for item in items},
            "cloze": cloze,  # per usable row: its context and options' tokens (cloze scoring), else None
        }


class QuestionDataModule(pl.LightningDataModule):
    """``dataset`` holds this process's share of the questions, already split among the
    processes of a multi-process cell, so Lightning's own distributed sampler is not used
    (``use_distributed_sampler=False``); a process may get none."""

    def __init__(self, dataset: QuestionDataset, loaded: LoadedModel, batch_size: int, num_workers: int = 0,
                 kept: BoundedCache | None = None) -> None:
        super().__init__()
        # A multi-process cell near its end may leave a process without questions: it still
        # takes part in the collectives and writes nothing.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.dataset = dataset
        self.collate = Collator(loaded, kept)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self.collate)
