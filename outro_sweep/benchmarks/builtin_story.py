"""In-context retrieval stories the project generates itself (bAbI-style "where is X?").

Why this benchmark: a 135M model is at chance on ``builtin_mc`` (arithmetic, calendars, ...),
which tests knowledge and skills it lacks. These questions test only whether the model reads
its own context, which is what a sink intervention claims to change: every answer is stated
in the story, in a sentence naming the asked person. Nothing is third-party text; questions
are built from a seed at load time and every answer is recomputable from the story (the
tests parse the sentences back and solve them without this module).

A story is ``moves`` movement sentences ("Mary went to the kitchen.") among ``people``
people, with ``distractors`` sentences that move nobody ("John picked up the milk.") mixed
in. The asked person moves once (``single_fact``) or twice (``two_facts``, ``before``);
everyone else moves at least once, never to a place the asked person goes. Tasks:

* ``single_fact``: "Where is Mary?" after one move of Mary's: the place of that move;
* ``two_facts``: "Where is Mary?" after two moves: the later place;
* ``before``: "Where was Mary before the office?" after a move to the office: the place of
  Mary's move before it. Not in the default mix: from ``named_options=2`` the office itself
  is offered, and SmolLM2-135M picks it almost always (accuracy 0.08).

Options. The correct place and ``num_options - 1`` wrong ones, "the <place>". ``named_options``
of the wrong ones are places the story names, the rest places it never names. The two kinds
test two steps of retrieval: an unnamed place is ruled out by finding any place in the story
(copying), a named one only by binding the place to the asked person. Named wrong places, in
the order they are taken: one other person's place, then the asked person's other place (the
earlier one for ``two_facts``, the one the question names for ``before``), then more other
people's places. ``named_options`` may be a list, cycled through per question: the default
[0, 1] mixes the two steps, and the category ``named_options`` separates them. A story too
short to name enough places gets unnamed ones instead.

No shortcut without binding. The answering sentence is at a seeded random place among the
moves (uniform over those its task allows), and the first named wrong place is, in turn, one
last named after the answering sentence and one last named before it (category
``named_wrong``: after/before). So "the last place named" and "the first place named" score
like copying any story place: 0.5 where one wrong option is named, 1 where none is. The
category ``distance`` (movement sentences after the answering one) shows how accuracy falls
as the fact recedes from the question.

Measured on SmolLM2-135M-Instruct at the defaults (n=300, cloze, acc): 0.63 on plain text,
0.70 with its chat template (chance 0.25, and 0.25 with the story removed from the prompt);
0.76 / 0.85 where no wrong option is named, 0.50 / 0.55 where one is, so it copies imperfectly
and shows little binding: a perfect copier without binding would score 0.75. By distance (plain)
0.80 at 0 down to 0.31 at 4: the headroom is in reading facts further from the question.

Prompts. ``prefix`` is the story (one paragraph) and a newline; the question is the question
sentence alone. Cloze scoring (the default: the model never has to map its answer to a letter,
which a 135M model does poorly) reads ``story + "\nQuestion: Where is Mary?\nAnswer:"`` and scores each
option (" the kitchen") as its continuation; letter scoring reads the story, then the shared
lettered format (``ask``). Options are "the kitchen", not "kitchen": after "Answer:" a bare
noun is unlikely whatever the story says (on 60 early stories SmolLM2 scored 0.33 with bare
places, 0.42 with "the ..."), and with the shared " the" only the place differs.

Questions cycle through ``tasks``, then ``named_options`` (so any ``limit`` keeps the mix
balanced), and the correct option's position is a fresh permutation of the letters for each
block of ``num_options`` questions: every letter is right equally often (within one) over any
prefix. One generator,
consumed in a fixed order, makes everything: the same seed gives the same questions, and a
smaller ``num_questions`` gives a prefix of a larger one.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal, NamedTuple

from outro_sweep.benchmarks.base import Benchmark, Question, ask
from outro_sweep.benchmarks.sampling import balanced_position
from outro_sweep.config.schema import NonEmpty, Range, check_arguments, show
from outro_sweep.errors import ConfigError

# Given names, all distinct and none a place or an object below.
NAMES = (
    "Mary", "John", "Sandra", "Daniel", "Emma", "Oliver", "Sophie", "Lucas", "Hannah", "Peter",
    "Alice", "Thomas", "Julia", "Mark", "Nina", "Samuel", "Laura", "David", "Grace", "Henry",
)  # fmt: skip
# Places, each one lowercase word read after "the"; all distinct. Each is one token for
# SmolLM2 (" kitchen"), so its cloze options differ in exactly one token.
PLACES = (
    "kitchen", "garden", "office", "bedroom", "bathroom", "hall", "basement", "garage",
    "library", "attic", "balcony", "park", "school", "cinema", "museum", "station",
)  # fmt: skip
# Every verb means "is now at the place"; none implies having been there before.
VERBS = ("went to", "moved to", "travelled to", "journeyed to", "walked to", "ran to")
# Distractor sentences: a person handles an object. They name no place, so they never change
# where anyone is, but they sit between the facts and lengthen the story.
ACTIONS = ("picked up", "dropped", "grabbed", "put down", "took", "found")
OBJECTS = ("apple", "football", "milk", "book", "umbrella", "key", "newspaper", "cup", "hat", "box")
# Where the asked person is now, in several wordings (same answer).
WHERE_NOW = ("Where is {name}?", "Where is {name} now?", "Where is {name} at the moment?", "In which place is {name}?")
# The asked person's place before a move to the named one.
WHERE_BEFORE = ("Where was {name} before the {place}?", "Where was {name} before going to the {place}?")

TASKS = ("single_fact", "two_facts", "before")
FACTS = {"single_fact": 1, "two_facts": 2, "before": 2}  # moves of the asked person per task
# Options are distinct places; 8 of the 16 still leave enough never named in a story for
# the unnamed wrong options.
MAX_OPTIONS = 8
MAX_PEOPLE = len(NAMES)


class Story(NamedTuple):
    sentences: list[str]  # the story, in order
    question: str
    answer: str  # the correct place
    wrong: list[str]  # the wrong places offered, in the order they were wanted
    distance: int  # movement sentences after the one that answers
    side: str  # the first named wrong place: "after"/"before" (last named after/before the
    # answering sentence), "none" (named_options=0)


class BuiltinStory(Benchmark):
    name = "builtin_story"

    def __init__(
        self,
        num_questions: Annotated[int, Range(ge=1)] = 300,
        seed: int = 0,
        num_options: Annotated[int, Range(ge=2, le=MAX_OPTIONS)] = 4,
        people: Annotated[int, Range(ge=2, le=MAX_PEOPLE)] = 3,
        moves: Annotated[int, Range(ge=2, le=50)] = 5,
        distractors: Annotated[int, Range(ge=0, le=50)] = 1,
        named_options: Annotated[int, Range(ge=0, le=MAX_OPTIONS - 1)]
        | Annotated[list[Annotated[int, Range(ge=0, le=MAX_OPTIONS - 1)]], NonEmpty()] = (0, 1),
        tasks: Annotated[list[Literal[TASKS]], NonEmpty()] = ("single_fact", "two_facts"),
        **kwargs,
    ) -> None:
        kwargs.setdefault("scoring", "cloze")
        super().__init__(**kwargs)
        check_arguments(BuiltinStory, locals(), self.config_key)
        tasks = list(dict.fromkeys(tasks))  # a repeated task would only skew the cycle
        most = max(FACTS[t] for t in tasks)
        if moves < most + people - 1:
            raise ConfigError(
                f"benchmark.moves={moves} is too few for benchmark.people={people} and benchmark.tasks={show(tasks)}: "
                f"valid values are moves >= {most + people - 1} (the asked person moves up to {most} times, "
                f"every other person at least once)"
            )
        given = named_options if isinstance(named_options, int) else list(named_options)  # a plain list to show
        named = [given] if isinstance(given, int) else list(dict.fromkeys(given))  # cycled through per question
        if max(named) > num_options - 1:
            raise ConfigError(
                f"benchmark.named_options={show(given)} "
                f"exceeds the {num_options - 1} wrong options of benchmark.num_options={num_options}: "
                f"valid values are 0..{num_options - 1}, or a list of them"
            )
        self.num_questions = num_questions
        self.seed = seed
        self.num_options = num_options
        self.people = people
        self.moves = moves
        self.distractors = distractors
        self.named_options = named
        self.tasks = tasks

    def describe(self) -> str:
        return (f"num_questions={self.num_questions}, seed={self.seed}, num_options={self.num_options}, "
                f"people={self.people}, moves={self.moves}, distractors={self.distractors}, "
                f"named_options={self.named_options}, tasks={self.tasks}")

    def _slots(self, rng: random.Random, task: str) -> tuple[list[int], int]:
        """(the asked person's movement sentences, ascending; the index among them of the one
        that answers). The answering one is uniform over the sentences its task allows."""
        last = self.moves - 1
        if task == "single_fact":
            return [rng.randint(0, last)], 0
        if task == "two_facts":  # the answer is the later move
            later = rng.randint(1, last)
            return [rng.randint(0, later - 1), later], 1
        earlier = rng.randint(0, last - 1)  # before: the answer is the earlier move
        return [earlier, rng.randint(earlier + 1, last)], 0

    def _story(self, rng: random.Random, task: str, named_options: int, later_first: bool) -> Story:
        """One story and its question, ``named_options`` of its wrong options named by the
        story. ``later_first``: the first of them is a place last named after the answering
        sentence (where the story has one), else one last named before it."""
        asked, *others = rng.sample(NAMES, self.people)
        slots, answering = self._slots(rng, task)
        # The other slots: every other person once (each is a candidate the question must
        # rule out), the slots left to any of them.
        movers = others + [rng.choice(others) for _ in range(self.moves - len(slots) - len(others))]
        rng.shuffle(movers)
        for slot in slots:
            movers.insert(slot, asked)
        # The asked person goes to distinct places (so "before the office" names one move).
        # Nobody else goes to them: another person's place is then always a wrong option, and
        # "Where is Mary?" never has a second, equally right reading.
        asked_places = rng.sample(PLACES, len(slots))
        free = [p for p in PLACES if p not in asked_places]
        where: dict[str, str] = {}  # each other person's place so far
        last_named: dict[str, int] = {}  # the other people's places: the last move naming each
        sentences = []
        for slot, name in enumerate(movers):
            if name == asked:
                place = asked_places[slots.index(slot)]
            else:
                place = rng.choice([p for p in free if p != where.get(name)])  # a move goes somewhere new
                where[name] = place
                last_named[place] = slot
            sentences.append(f"{name} {rng.choice(VERBS)} the {place}.")
        for _ in range(self.distractors):
            sentence = f"{rng.choice([asked, *others])} {rng.choice(ACTIONS)} the {rng.choice(OBJECTS)}."
            sentences.insert(rng.randint(0, len(sentences)), sentence)
        answer = asked_places[answering]
        if task == "before":
            question = rng.choice(WHERE_BEFORE).format(name=asked, place=asked_places[1])
        else:
            question = rng.choice(WHERE_NOW).format(name=asked)
        # Named wrong places, most wanted first. Other people's places lead, and the first one
        # is last named after the answering sentence in half the questions, before it in the
        # other half: "the place named last" and "the place named first" then score as a coin
        # flip between the two named options, no better than copying any story place. Then
        # the asked person's other place (two_facts: the earlier one; before: the one the
        # question names).
        named = list(last_named)
        rng.shuffle(named)
        after = [p for p in named if last_named[p] > slots[answering]]
        before = [p for p in named if last_named[p] < slots[answering]]
        lead, rest = (after, before) if later_first else (before, after)
        candidates = (lead + rest)[:1] + [p for p in asked_places if p != answer] + (lead + rest)[1:]
        # Everybody else moves at least once, so candidates[0] is always another person's place.
        side = "none" if not named_options else "after" if candidates[0] in after else "before"
        unnamed = [p for p in free if p not in named]
        rng.shuffle(unnamed)
        # named_options named places, then unnamed ones; a story too short to name enough
        # takes more unnamed ones, one naming nearly every place takes more named ones.
        wrong = candidates[:named_options]
        wrong += unnamed[: self.num_options - 1 - len(wrong)]
        wrong += candidates[named_options:][: self.num_options - 1 - len(wrong)]
        return Story(sentences, question, answer, wrong, self.moves - 1 - slots[answering], side)

    def _load(self) -> list[Question]:
        rng = random.Random(self.seed)
        questions: list[Question] = []
        positions: list[int] = []
        for i in range(self.num_questions):
            position = balanced_position(rng, i, self.num_options, positions)  # drawn first: the rng's order fixes the questions
            # Tasks cycle fastest, then named_options, then the side of the first named wrong
            # place: every (task, named_options) pair comes equally often, each with both sides.
            tasks, named = len(self.tasks), len(self.named_options)
            task = self.tasks[i % tasks]
            named_options = self.named_options[(i // tasks) % named]
            story = self._story(rng, task, named_options, later_first=(i // (tasks * named)) % 2 == 0)
            # Which places are wrong options is decided above; where each goes is seeded here,
            # so no kind of wrong place sits at a fixed letter.
            wrong = list(story.wrong)
            rng.shuffle(wrong)
            options = tuple(f"the {p}" for p in wrong[:position] + [story.answer] + wrong[position:])
            questions.append(
                ask(
                    id=f"{self.name}/{task}/{i // len(self.tasks)}",
                    question=story.question,
                    options=options,
                    answer=chr(ord("A") + position),
                    categories=(("task", task), ("named_options", str(named_options)), ("facts", str(FACTS[task])),
                                ("distance", str(story.distance)), ("named_wrong", story.side),
                                ("people", str(self.people)), ("distractors", str(self.distractors))),
                    prefix=" ".join(story.sentences) + "\n",
                    strip=False,
                )
            )
        return questions
