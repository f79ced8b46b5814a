"""builtin_story: generated stories read back and solved from their own text.

The solver here parses the story sentence by sentence with its own patterns (nothing from the
benchmark's module but the class), so a wrong gold letter fails whatever the generator does.
"""

from __future__ import annotations

import inspect
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from outro_sweep.benchmarks.builtin_story import BuiltinStory
from outro_sweep.benchmarks.prompting import format_mc_prompt
from outro_sweep.errors import ConfigError

MOVE = re.compile(r"([A-Z][a-z]+) (?:went|moved|travelled|journeyed|walked|ran) to the ([a-z]+)\.")
HANDLE = re.compile(r"([A-Z][a-z]+) (?:picked up|dropped|grabbed|put down|took|found) the ([a-z]+)\.")
WHERE_NOW = re.compile(r"(?:Where is ([A-Z][a-z]+)(?: now| at the moment)?|In which place is ([A-Z][a-z]+))\?")
WHERE_BEFORE = re.compile(r"Where was ([A-Z][a-z]+) before (?:going to )?the ([a-z]+)\?")


def sentences(story: str) -> list[str]:
    return re.findall(r"[^.]+\.", story.strip())


def solve(story: str, question: str) -> str:
    """The place that answers ``question``, from the story alone; every sentence must be a move
    or an object being handled."""
    visits: dict[str, list[str]] = {}
    for sentence in sentences(story):
        sentence = sentence.strip()
        if move := MOVE.fullmatch(sentence):
            visits.setdefault(move.group(1), []).append(move.group(2))
        else:
            assert HANDLE.fullmatch(sentence), f"neither a move nor a distractor: {sentence!r}"
    if WHERE_NOW.fullmatch(question):
        return visits[asked_of(question)][-1]
    name, later = WHERE_BEFORE.fullmatch(question).groups()
    places = visits[name]
    assert places.count(later) == 1, (story, question)  # "before the office" names one move
    assert places.index(later) > 0, (story, question)
    return places[places.index(later) - 1]


def asked_of(question: str) -> str:
    now = WHERE_NOW.fullmatch(question)
    return (now.group(1) or now.group(2)) if now else WHERE_BEFORE.fullmatch(question).group(1)


def places_of(question) -> list[str]:
    """The option texts as places: every option reads "the <place>"."""
    found = [re.fullmatch(r"the ([a-z]+)", option) for option in question.options]
    assert all(found), question.options
    return [m.group(1) for m in found]


def moves_in(story: str) -> list[tuple[str, str]]:
    return [m.groups() for s in sentences(story) if (m := MOVE.fullmatch(s.strip()))]


@pytest.fixture(scope="module")
def story():
    return BuiltinStory().load()


def test_defaults_count_ids_and_categories(story):
    assert len(story) == 300
    assert len({q.id for q in story}) == 300
    for q in story:
        task, index = re.fullmatch(r"builtin_story/(\w+)/(\d+)", q.id).groups()
        assert task == q.category
        names = [name for name, _ in q.categories]
        assert names == ["task", "named_options", "facts", "distance", "named_wrong", "people", "distractors"]
    # Tasks and named_options cycle: every pair equally often.
    pairs = Counter((q.category_dict["task"], q.category_dict["named_options"]) for q in story)
    assert pairs == {(t, n): 75 for t in ("single_fact", "two_facts") for n in ("0", "1")}
    assert len({q.prefix for q in story}) == 300  # no story repeats


def test_is_deterministic():
    assert BuiltinStory(seed=3).load() == BuiltinStory(seed=3).load()
    assert [q.prompt for q in BuiltinStory(seed=3).load()] != [q.prompt for q in BuiltinStory(seed=4).load()]
    # A smaller benchmark is the start of a larger one, and limit takes a prefix too.
    assert BuiltinStory(num_questions=50).load() == BuiltinStory().load()[:50]
    assert BuiltinStory(limit=7).load() == BuiltinStory().load()[:7]


SETTINGS = [
    {},
    {"seed": 1, "tasks": ["before"], "named_options": 2},
    {"seed": 2, "tasks": ["single_fact", "two_facts", "before"], "named_options": [0, 1, 2, 3]},
    {"seed": 3, "num_options": 2, "people": 2, "moves": 3, "distractors": 0, "named_options": 1},
    {"seed": 4, "num_options": 8, "people": 6, "moves": 12, "distractors": 4, "named_options": [0, 7]},
    {"seed": 5, "num_options": 5, "people": 20, "moves": 50, "distractors": 50, "named_options": 4},
]


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_answers_solved_from_the_story(kwargs):
    questions = BuiltinStory(num_questions=240, **kwargs).load()
    for q in questions:
        places = places_of(q)
        assert len(set(places)) == len(places), q  # options distinct
        answer = solve(q.prefix, q.question)
        assert places.count(answer) == 1, q
        assert places[ord(q.answer) - ord("A")] == answer, q


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_stories_follow_the_knobs(kwargs):
    bench = BuiltinStory(num_questions=120, **kwargs)
    for q in bench.load():
        cats = q.category_dict
        story = sentences(q.prefix)
        moves = moves_in(q.prefix)
        assert len(moves) == bench.moves and len(story) == bench.moves + bench.distractors
        assert cats["people"] == str(bench.people) and cats["distractors"] == str(bench.distractors)
        assert len({name for name, _ in moves}) == bench.people  # everybody moves at least once
        asked = asked_of(q.question)
        assert sum(name == asked for name, _ in moves) == int(cats["facts"])
        # distance: movement sentences after the one that states the answer
        answer = solve(q.prefix, q.question)
        answering = max(i for i, move in enumerate(moves) if move == (asked, answer))
        assert cats["distance"] == str(len(moves) - 1 - answering)
        # named_options of the wrong places are named by the story, where it names enough
        named = {place for _, place in moves}
        wrong = [p for p in places_of(q) if p != answer]
        wanted = min(int(cats["named_options"]), len(named - {answer}))
        got = sum(p in named for p in wrong)
        # exactly as many, unless the story names so many places that unnamed ones run out
        assert got == wanted or (got > wanted and len(named) >= 10), (q, got, wanted)
        # named_wrong: where the named wrong place was last named, relative to the answer
        if cats["named_options"] == "0":
            assert cats["named_wrong"] == "none"
        elif cats["named_options"] == "1" and got == 1:
            (other,) = [p for p in wrong if p in named]
            assert other not in {p for n, p in moves if n == asked}, q  # another person's place comes first
            last = max(i for i, (_, place) in enumerate(moves) if place == other)
            assert cats["named_wrong"] == ("after" if last > answering else "before"), q
        # nobody else goes where the asked person goes
        assert not any(name != asked and place in {p for n, p in moves if n == asked} for name, place in moves)


@pytest.mark.parametrize("num_options", [2, 3, 4, 5, 8])
def test_answer_letters_evenly_spread(num_options):
    questions = BuiltinStory(num_questions=301, num_options=num_options,
                             named_options=[0, min(1, num_options - 1)]).load()
    counts = Counter(q.answer for q in questions)
    assert sorted(counts) == [chr(ord("A") + i) for i in range(num_options)]
    assert max(counts.values()) - min(counts.values()) <= 1
    for task in ("single_fact", "two_facts"):  # and not tied to a task
        assert len({q.answer for q in questions if q.category == task}) == num_options


def test_no_position_shortcut():
    """Answer-free strategies score no better than they should. "The last place named among the
    options" and "the first one": a coin flip between the two named options at named_options=1;
    a kind of wrong option does not sit at a fixed letter."""
    questions = BuiltinStory(num_questions=800, named_options=1).load()

    def pick(q, last: bool) -> bool:
        story = q.prefix
        places = places_of(q)
        where = {p: (story.rfind(f" {p}.") if last else story.find(f" {p}.")) for p in places}
        named = {p: i for p, i in where.items() if i >= 0}
        chosen = (max if last else min)(named, key=named.get)
        return places.index(chosen) == ord(q.answer) - ord("A")

    for last in (True, False):
        share = sum(pick(q, last) for q in questions) / len(questions)
        assert 0.42 <= share <= 0.58, (last, share)
    sides = Counter(q.category_dict["named_wrong"] for q in questions)
    assert set(sides) == {"after", "before"} and abs(sides["after"] - sides["before"]) <= 0.1 * len(questions), sides
    # The named wrong option is at every letter but the answer's, about equally often.
    letters = Counter()
    for q in questions:
        answer = solve(q.prefix, q.question)
        named = {p for _, p in moves_in(q.prefix)}
        letters.update(chr(ord("A") + i) for i, p in enumerate(places_of(q)) if p in named and p != answer)
    assert max(letters.values()) < 1.3 * min(letters.values()), letters


def test_prompts_cloze_and_letters(story):
    q = story[0]
    assert q.cloze and q.prefix.endswith("\n") and "\n" not in q.prefix[:-1]
    assert q.prompt == f"{q.prefix}Question: {q.question}\nAnswer:"
    assert q.continuations == tuple(" " + o for o in q.options)
    lettered = BuiltinStory(scoring="logits").load()[0]
    assert lettered.prompt == q.prefix + format_mc_prompt(q.question, list(q.options)) and not lettered.cloze
    assert (lettered.options, lettered.answer, lettered.categories) == (q.options, q.answer, q.categories)


def test_selection_keys():
    sampled = BuiltinStory(sample=40, sample_seed=1).load()
    assert len(sampled) == 40 and Counter(q.category for q in sampled) == {"single_fact": 20, "two_facts": 20}
    circular = BuiltinStory(num_questions=3, circular=True).load()
    assert len(circular) == 12
    for q in circular:  # every rotation keeps the right place under its letter
        assert places_of(q)[ord(q.answer) - ord("A")] == solve(q.prefix, q.question)


def test_places_are_one_smollm2_token():
    """The options differ in one token for SmolLM2 (" the" is shared), so no option is longer."""
    from outro_sweep.benchmarks.builtin_story import PLACES
    from outro_sweep.models.smollm2 import SmolLM2

    loader = SmolLM2(cache_dir=os.environ.get("OUTRO_SWEEP_CACHE", os.path.expanduser("~/.cache/outro_sweep")))
    if not (loader.converted_dir / "tokenizer.json").is_file():
        pytest.skip(f"SmolLM2 is not converted yet in {loader.converted_dir}")
    tokenizer = loader.load_processor()
    for place in PLACES:
        assert len(tokenizer(" " + place, add_special_tokens=False)["input_ids"]) == 1, place


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"num_questions": 0}, "benchmark.num_questions"),
        ({"num_questions": "300"}, "benchmark.num_questions"),
        ({"seed": 1.5}, "benchmark.seed"),
        ({"num_options": 1}, "benchmark.num_options"),
        ({"num_options": 9}, "benchmark.num_options"),
        ({"people": 1}, "benchmark.people"),
        ({"people": 21}, "benchmark.people"),
        ({"moves": 3}, "benchmark.moves"),  # 3 people, two_facts: needs 4
        ({"people": 2, "moves": 2, "tasks": ["before"]}, "benchmark.moves"),
        ({"distractors": -1}, "benchmark.distractors"),
        ({"distractors": True}, "benchmark.distractors"),
        ({"named_options": 4}, "benchmark.named_options"),  # 4 options: 3 wrong ones
        ({"named_options": [0, 5]}, "benchmark.named_options"),
        ({"named_options": []}, "benchmark.named_options"),
        ({"num_options": 2, "named_options": 2}, "benchmark.named_options"),
        ({"tasks": ["where"]}, "benchmark.tasks"),
        ({"tasks": []}, "benchmark.tasks"),
        ({"tasks": "single_fact"}, "benchmark.tasks"),
        ({"limit": -1}, "benchmark.limit"),
        ({"scoring": "vote"}, "benchmark.scoring"),
    ],
)
def test_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        BuiltinStory(**kwargs)
    message = str(info.value)
    assert message.startswith(key + "=") and "valid values" in message and "\n" not in message


def test_yaml_defaults_match_the_class():
    """conf/benchmark/builtin_story.yaml spells out the class's defaults (no silent drift)."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf/benchmark/builtin_story.yaml"))
    assert node.pop("_target_") == "outro_sweep.benchmarks.builtin_story.BuiltinStory"
    own = {name: p.default for name, p in inspect.signature(BuiltinStory.__init__).parameters.items()
           if p.default is not inspect.Parameter.empty}
    for name, default in own.items():
        assert node[name] == (list(default) if isinstance(default, tuple) else default), name
    built = BuiltinStory(**node)
    assert built.load() == BuiltinStory().load()
