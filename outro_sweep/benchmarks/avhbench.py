"""AVHBench (Sung-Bin et al., ICLR 2025), cross-modal hallucination in audio-visual LLMs.

No copy of the data was at hand when this was written: the layout below is the public
one (github kaist-ami/AVHBench README, "AVHBench_v0"), and its assumptions are marked.

* per-video layout (``qa_file: null``, the v0 release): ``data_dir/json/<video_id>.json``,
  each a list of ``{"video_id": "00191", "task": "...", "text": "<question>",
  "label": "Yes" | "No" | "<caption>"}``, videos in ``data_dir/video/``;
* single-file layout (``qa_file: <name>.json``): one list of the same records (the shape
  of the repository's ``qa_final_single_filtered.json``).

Tasks, under either spelling seen in the public files:

=====================================  ===============================  ======
key                                    task names                       kind
=====================================  ===============================  ======
audio_driven_video_hallucination       Audio-driven Video Hallucination  yesno
                                       AV Hallucination (Video)
video_driven_audio_hallucination       Video-driven Audio Hallucination  yesno
                                       AV Hallucination (Audio)
av_matching                            AV Matching                       yesno
av_captioning                          AV Captioning                     open
=====================================  ===============================  ======

Assumed: the question is ``text`` (``question`` is accepted too); the video of a record is
``<video_id>.mp4`` (a ``video_id`` ending in ``_swap`` names the audio-swapped copy the
release ships beside each real clip); a question's id is ``avhbench/<video_id>/<n>``, n
counting that video's records in file order. Files are read in sorted name order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from outro_sweep.benchmarks.video_base import YES_NO, VideoBenchmark, Question, ask

TASK_NAMES = {
    "audio-driven video hallucination": "audio_driven_video_hallucination",
    "av hallucination (video)": "audio_driven_video_hallucination",
    "video-driven audio hallucination": "video_driven_audio_hallucination",
    "av hallucination (audio)": "video_driven_audio_hallucination",
    "av matching": "av_matching",
    "audio-visual matching": "av_matching",
    "av captioning": "av_captioning",
    "audio-visual captioning": "av_captioning",
}
TASKS = (
    "audio_driven_video_hallucination",
    "video_driven_audio_hallucination",
    "av_matching",
    "av_captioning",
)
YES_NO_TASKS = TASKS[:3]


class AVHBench(VideoBenchmark):
    name = "avhbench"
    layout = "json/<video_id>.json files (AVHBench v0: lists of {video_id, task, text, label}), or a single qa_file"
    kinds = ("yesno", "open")

    def __init__(self, data_dir: str, qa_file: str | None = None, tasks=YES_NO_TASKS, **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.tasks = self._select("tasks", tasks, TASKS)
        if qa_file is None:
            self.files = sorted((self.root / "json").glob("*.json"))
            if not self.files:
                self._file("json/<video_id>.json", key="benchmark.qa_file")  # raises: nothing to read
        else:
            self.files = [self._file(str(qa_file), key="benchmark.qa_file")]

    def data_files(self) -> dict[str, Path]:
        return self._relative(*self.files)

    def describe(self) -> str:
        return f"tasks=[{', '.join(self.tasks)}]"

    def _records(self) -> list[tuple[Path, int, dict]]:
        records = []
        for path in self.files:
            data = self._read_json(path)
            if not isinstance(data, list):
                raise self._malformed(path, "top level", "a list of {video_id, task, text, label}")
            records.extend((path, number, record) for number, record in enumerate(data))
        return records

    def _load(self) -> list[Question]:
        expected = f"objects with video_id, text, label and a task among {', '.join(sorted(set(TASK_NAMES)))}"
        seen: Counter[str] = Counter()
        questions = []
        for path, number, record in self._records():
            text = record.get("text", record.get("question")) if isinstance(record, dict) else None
            task = TASK_NAMES.get(str(record.get("task", "")).strip().lower()) if isinstance(record, dict) else None
            if text is None or task is None or "video_id" not in record or "label" not in record:
                raise self._malformed(path, f"record {number}", expected)
            vid = str(record["video_id"])
            n = seen[vid]
            seen[vid] += 1
            if task not in self.tasks:
                continue
            label = str(record["label"]).strip()
            kind = "open"
            if task in YES_NO_TASKS:
                if label.lower() not in YES_NO:
                    raise self._malformed(path, f"record {number} (label {label!r})", f"{task} labels Yes or No")
                kind, label = "yesno", label.lower()
            questions.append(
                ask(
                    id=f"{self.name}/{vid}/{n}",
                    video=vid + self.video_ext,
                    question=str(text),
                    options=(),
                    answer=label,
                    kind=kind,
                    categories=(("task", task),),
                    short_answer=task != "av_captioning",  # its text asks for a sentence already
                )
            )
        return questions
