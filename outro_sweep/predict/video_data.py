"""Video questions -> decoded clips -> left-padded processor batches for the predict loop.

Decoding happens in ``VideoQuestionDataset.__getitem__``, so ``predict.num_workers`` > 0
decodes clips in parallel worker processes while the model runs. Each clip goes through the
on-disk ``FrameCache``: the second cell of a sweep loads the frames instead of decoding.

A clip that cannot be decoded (corrupt, truncated, gone since the cell started) does not
stop the cell: its item carries the error, the collator leaves it out of the model batch,
and the predictor writes an error record for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from outro_sweep.benchmarks.video_base import VideoBenchmark, VideoQuestion
from outro_sweep.models.video_lm import LoadedVideoModel, VideoLMLoader
from outro_sweep.media.cache import FrameCache
from outro_sweep.media.decode import DecodedVideo, VideoError


@dataclass
class VideoItem:
    index: int  # position in the cell's question list (the predictions' sort key)
    question: VideoQuestion
    clip: DecodedVideo | None  # None when decoding failed
    error: str | None = None  # one line: why the clip could not be used
    cache: str | None = None  # "hit" (loaded from the frame cache) | "decoded" | None (failed)


class VideoQuestionDataset(Dataset):
    """The questions at ``indices`` (default: all), in that order; each item keeps its
    original index into ``questions`` (the predictions' key)."""

    def __init__(self, questions: list[VideoQuestion], benchmark: VideoBenchmark, loader: VideoLMLoader,
                 cache: FrameCache, indices: list[int] | None = None) -> None:
        self.questions = questions
        self.indices = list(range(len(questions))) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < len(questions) for i in self.indices):
            raise IndexError(f"question indices out of range 0..{len(questions) - 1}")
        self.benchmark = benchmark
        self.sampling = loader.sampling
        self.cache = cache

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> VideoItem:
        index = self.indices[position]
        question = self.questions[index]
        sampling = self.sampling
        if question.segment is not None:  # the benchmark bounds the clip (MVBench start/end)
            sampling = dataclasses.replace(sampling, start_s=question.segment[0], end_s=question.segment[1])
        decodes_before = self.cache.decodes
        try:
            clip = self.cache.get_or_decode_with(self.benchmark.video_path(question), sampling)
        except VideoError as err:
            return VideoItem(index, question, None, error=str(err).splitlines()[0])
        return VideoItem(index, question, clip, cache="decoded" if self.cache.decodes > decodes_before else "hit")


class VideoCollator:
    """Render each question through the processor's chat template, then one processor call
    for the batch's decodable clips (left padded: tokenizer.padding_side is "left")."""

    def __init__(self, loaded: LoadedVideoModel) -> None:
        self.loaded = loaded

    def __call__(self, items: list[VideoItem]) -> dict:
        usable = [item for item in items if item.clip is not None]
        inputs = None
        if usable:
            loader, processor = self.loaded.loader, self.loaded.processor
            texts = [loader.render(processor, item.question.prompt) for item in usable]
            inputs = loader.processor_inputs(processor, texts, [item.clip for item in usable])
        return {
            "inputs": inputs,  # processor tensors for ``usable`` rows, or None when every clip failed
            "usable": usable,
            "failed": [item for item in items if item.clip is None],
        }


class VideoDataModule(pl.LightningDataModule):
    """Like ``QuestionDataModule``: the dataset holds this process's share of the questions."""

    def __init__(self, dataset: VideoQuestionDataset, loaded: LoadedVideoModel, batch_size: int,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.allow_zero_length_dataloader_with_multiple_devices = True  # see QuestionDataModule
        self.dataset = dataset
        self.collate = VideoCollator(loaded)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self.collate)
