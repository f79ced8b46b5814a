"""Reading the chosen letter: from generated text, and from next-token logits."""

from __future__ import annotations

import pytest
import torch

from outro_sweep.benchmarks.builtin_mc import BuiltinMC
from outro_sweep.errors import ConfigError
from outro_sweep.predict.letter_logits import letter_logits, letter_token_ids
from outro_sweep.scoring.letters import choose_letter, parse_choice

ABCD = ("A", "B", "C", "D")


@pytest.mark.parametrize(
    "text,expected",
    [
        # the bare letter, however wrapped
        ("B", "B"),
        ("B.", "B"),
        (" B", "B"),
        ("\n\nC", "C"),
        ("(B)", "B"),
        ("[D]", "D"),
        ("B) Paris", "B"),
        ("B. Paris is the capital", "B"),
        ("B: Paris", "B"),
        ("**C**", "C"),
        ('"D"', "D"),
        ("'A'", "A"),
        ("`B`", "B"),
        ("A", "A"),
        ("A.", "A"),
        ("A) a cat", "A"),
        # the letter after an answer phrase
        ("The answer is B", "B"),
        ("The answer is B.", "B"),
        ("Answer: C", "C"),
        ("answer: (D)", "D"),
        ("ANSWER: A", "A"),
        ("The correct answer is: **C**", "C"),
        ("The answer would be D because ...", "D"),
        ("I think the answer is B", "B"),
        ("Option D is correct", "D"),
        ("I choose option C.", "C"),
        ("The right choice is (A).", "A"),
        ("So it must be (C)", "C"),
        ("B. Paris\nAnswer: B", "B"),  # repeats of one letter agree
        # no valid letter
        ("", None),
        ("   ", None),
        ("b", None),  # lower case never counts
        ("the answer is c", None),
        ("E", None),  # not one of the options
        ("The answer is E", None),
        ("Because it is obvious", None),
        ("None of the above", None),
        ("Vitamin C", None),  # a letter inside option text is not a choice
        ("B2", None),
        ("Answer the question", None),
        ("answer choices are listed", None),
        # the English article / pronoun, never the letter
        ("A cat is on the mat", None),
        ("A is correct", None),  # the price of the article rule
        ("The answer is A cat", None),
        ("I think so", None),
        # ambiguous
        ("B or C", None),
        ("A or B", None),
        ("B, C", None),
        ("B/D", None),
        ("(A) and (B)", None),
        ("B. The answer is C", None),
        ("Answer: A. No wait, the answer is D", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, ABCD) == expected


def test_parse_choice_respects_the_letters_offered():
    assert parse_choice("E", "ABCDE") == "E"
    assert parse_choice("C", "AB") is None
    letters = tuple("ABCDEFGHIJ")
    assert parse_choice("I", letters) == "I"
    assert parse_choice("I.", letters) == "I"
    assert parse_choice("I think it is J", letters) is None  # "I" the pronoun; J not after a phrase
    assert parse_choice("I think the answer is J", letters) == "J"


class _FakeTokenizer:
    """Spells each character as its own token, and a space as a token of its own."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_letter_token_ids_requires_a_single_token():
    assert letter_token_ids(_FakeTokenizer(), "AB") == {"A": [ord("A")], "B": [ord("B")]}

    class Splitting(_FakeTokenizer):
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text.strip() == "C" else super().encode(text)

    with pytest.raises(ConfigError, match=r"^benchmark\.scoring=logits .*'C'"):
        letter_token_ids(Splitting(), "ABC")


def test_letter_logits_take_the_best_variant_and_the_choice_the_best_letter():
    ids = {"A": [0, 1], "B": [2, 3], "C": [4]}
    logits = torch.tensor([0.0, 1.0, 3.0, -1.0, 2.5, 99.0])  # 99 is not a letter token
    assert letter_logits(logits, ids) == {"A": 1.0, "B": 3.0, "C": 2.5}
    assert choose_letter(letter_logits(logits, ids)) == "B"
    logits[1] = 5.0  # "A"'s second variant now beats everything
    assert choose_letter(letter_logits(logits, ids)) == "A"
    assert choose_letter(letter_logits(torch.zeros(6), ids)) == "A"  # ties: the first letter
    assert choose_letter({"C": 1.0, "B": 1.0, "A": 0.0}) == "B"  # ties in any key order: alphabetical first


def test_letter_tokens_and_logits_choice_with_real_tokenizer(smollm2):
    tokenizer, model = smollm2.tokenizer, smollm2.model
    ids = letter_token_ids(tokenizer, ABCD)
    for letter, variants in ids.items():
        assert len(variants) == 2  # SmolLM2 has both "A" and " A" as single tokens
        assert sorted(tokenizer.decode([v]) for v in variants) == sorted([letter, " " + letter])
    assert len({v for variants in ids.values() for v in variants}) == 8

    questions = BuiltinMC(num_questions=6).load()
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q.prompt}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1, :]
    letter_of = {v: letter for letter, variants in ids.items() for v in variants}
    agreed = 0
    for row in logits:
        chosen = choose_letter(letter_logits(row, ids))
        assert chosen in ABCD
        top = int(row.argmax())
        if top in letter_of:  # the greedy next token is a letter: both scorings must agree
            assert chosen == letter_of[top]
            assert parse_choice(tokenizer.decode([top]), ABCD) == chosen
            agreed += 1
    assert agreed >= 1  # the instruct model does answer with a letter here
