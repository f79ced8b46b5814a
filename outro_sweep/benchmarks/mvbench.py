"""MVBench (Li et al., CVPR 2024), 20 temporal tasks, in the release's layout.

``data_dir/json/<task>.json`` holds one task: a list of
``{"video": "<file>", "question": "...", "candidates": ["...", ...], "answer": "<text>"}``
(some tasks add ``start``/``end`` seconds bounding the clip). The correct letter is the
position of the answer text among the candidates (the candidates are not shuffled, as
in the official evaluation). The category is the task, named by its file name.

Each task's videos come from another dataset and sit in their own folder under
``video/`` of the release (``TASK_FOLDERS``, from the official evaluation's data list):
``question.video`` is ``<folder>/<file>``, so ``video_dir`` is the release's ``video/``.
A task file not in that list is read with its file names as given.
"""

from __future__ import annotations

from pathlib import Path

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import VideoBenchmark, Question, ask

# task file stem -> folder under video/ (Episodic Reasoning: folders of frames, not files)
TASK_FOLDERS = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_v1_480",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/frames_fps3_hq",
    "counterfactual_inference": "clevrer/video_validation",
}


class MVBench(VideoBenchmark):
    name = "mvbench"
    layout = "json/<task>.json files (MVBench: lists of {video, question, candidates, answer})"
    default_video_ext = None  # the json names each file with its extension
    kinds = ("mc",)

    def __init__(self, data_dir: str, tasks="all", **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        available = sorted(p.stem for p in (self.root / "json").glob("*.json"))
        if not available:
            self._file("json/<task>.json")  # raises: nothing to read
        self.tasks = self._select("tasks", tasks, available)

    def data_files(self) -> dict[str, Path]:
        return self._relative(*(self.root / "json" / f"{task}.json" for task in self.tasks))

    def describe(self) -> str:
        return f"tasks=[{', '.join(self.tasks)}]"

    def _load(self) -> list[Question]:
        expected = "objects with video, question, candidates (a list) and answer (one of the candidates)"
        questions = []
        for task in self.tasks:
            path = self.root / "json" / f"{task}.json"
            data = self._read_json(path)
            if not isinstance(data, list):
                raise self._malformed(path, "top level", "a list of " + expected)
            folder = TASK_FOLDERS.get(task)
            for number, record in enumerate(data):
                if (not isinstance(record, dict) or not {"video", "question", "candidates", "answer"} <= set(record)
                        or not isinstance(record["candidates"], list) or record["answer"] not in record["candidates"]):
                    raise self._malformed(path, f"record {number}", expected)
                candidates = tuple(str(c) for c in record["candidates"])
                segment = None
                if "start" in record and "end" in record:
                    segment = (float(record["start"]), float(record["end"]))
                questions.append(
                    ask(
                        id=f"{self.name}/{task}/{number}",
                        video=f"{folder}/{record['video']}" if folder else str(record["video"]),
                        question=record["question"],
                        options=candidates,
                        answer=option_letters(len(candidates))[record["candidates"].index(record["answer"])],
                        kind="mc",
                        categories=(("task", task),),
                        segment=segment,
                    )
                )
        return questions
