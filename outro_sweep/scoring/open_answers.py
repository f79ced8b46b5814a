"""Scoring answers that are not option letters: normalised exact match, yes/no, and WUPS.

``normalize_answer``: lower-case; punctuation becomes space; the articles a/an/the go;
number words zero..twenty become digits ("two" -> "2"); whitespace collapses. Two
answers match when their normal forms are equal (``exact_match``; any reference counts).

``first_number``: the digits of the first number in the answer (the passkey benchmark's
``open_metric="number"``: right when it equals the reference).

``parse_yes_no``: "yes" or "no" when the answer says so, else None (scored as wrong):

1. the first word decides when it is yes/no (or yeah, yep, yup / nope);
2. otherwise the answer must contain exactly one of the words yes/no (any number of times).

WUPS (Wu-Palmer similarity set score; Malinowski & Fritz 2014) as computed by the NExT-OE
evaluation (github doc-doc/NExT-OE, ``metrics.py``):

* ``wup(w1, w2)``: 1 when the words are equal; else the Wu-Palmer similarity of the two
  words' first WordNet synsets (0 if either word has none), multiplied by 0.1 when it is
  below the threshold ``alpha`` (0 and 0.9 are reported: WUPS@0, WUPS@0.9);
* ``wups(A, B)``: the product over the words a of A of max_b wup(a, b), skipping the
  words whose max is 0; 0 when every word was skipped;
* score(pred, ref) = min(wups(pred, ref), wups(ref, pred));
* NExT-OE counts (DC) and binary (DB) questions score 1/0 by exact match instead (here
  after ``normalize_answer``, so "9" matches "nine": the script compares raw words);
  with several references the best score counts.

The word similarity is a parameter (``similarity(w1, w2) -> float | None``, the Wu-Palmer
similarity of the first synsets, None when a word has none), so the arithmetic runs
without WordNet. ``wordnet_similarity()`` builds the real one from NLTK and raises a
ConfigError when NLTK or its WordNet corpus is missing (``nltk.download("wordnet")`` needs
the network; offline, Debian's wordnet-base and wordnet-sense-index packages hold the same
WordNet 3.0 files, which NLTK reads from ``<nltk_data>/corpora/wordnet/`` once the
``lexnames`` file it also needs, absent from Debian's copy, is put beside them). Differences from the official script: tokens are lower-case runs of letters
and digits (not NLTK's word_tokenize), and there is no lemmatisation (the script
lemmatises with pywsd and drops a NExT-QA stopword list: pass ``stopwords`` for the latter).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from outro_sweep.errors import ConfigError

Similarity = Callable[[str, str], "float | None"]

ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {
    word: str(i)
    for i, word in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
    )
}
YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
NO_WORDS = frozenset({"no", "nope"})
EXACT_MATCH_TYPES = ("DC", "DB")  # NExT-OE: count and binary questions
_PUNCT = re.compile(r"[^\w\s]|_")
_TOKEN = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d+(?:,\d{3})*")  # digits, thousands commas allowed ("48,213")


def normalize_answer(text: str) -> str:
    words = _PUNCT.sub(" ", str(text).lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def exact_match(prediction: str, references: str | Sequence[str]) -> bool:
    if isinstance(references, str):
        references = [references]
    normal = normalize_answer(prediction)
    return any(normal == normalize_answer(r) for r in references)


def first_number(text: str) -> str | None:
    """The first number in ``text``, its digits only ("The pass key is 48,213." -> "48213"), else None."""
    found = _NUMBER.search(str(text))
    return found.group(0).replace(",", "") if found else None


def parse_yes_no(text: str) -> str | None:
    words = _TOKEN.findall(str(text).lower())
    if not words:
        return None
    if words[0] in YES_WORDS:
        return "yes"
    if words[0] in NO_WORDS:
        return "no"
    said = {w for w in words if w in ("yes", "no")}
    return said.pop() if len(said) == 1 else None


def tokenize(text: str, stopwords: Iterable[str] = ()) -> list[str]:
    stop = set(stopwords)
    return [w for w in _TOKEN.findall(str(text).lower()) if w not in stop]


def wup(word1: str, word2: str, alpha: float, similarity: Similarity) -> float:
    if word1 == word2:
        return 1.0
    sim = similarity(word1, word2) or 0.0
    return 0.1 * sim if sim < alpha else sim


def wups(words1: Sequence[str], words2: Sequence[str], alpha: float, similarity: Similarity) -> float:
    score, counted = 1.0, False
    for w1 in words1:
        best = max((wup(w1, w2, alpha, similarity) for w2 in words2), default=0.0)
        if best == 0:
            continue
        score *= best
        counted = True
    return score if counted else 0.0


def wups_score(
    prediction: str, reference: str, alpha: float, similarity: Similarity, stopwords: Iterable[str] = ()
) -> float:
    """min(wups(pred, ref), wups(ref, pred)) over the two answers' tokens."""
    pred, ref = tokenize(prediction, stopwords), tokenize(reference, stopwords)
    return min(wups(pred, ref, alpha, similarity), wups(ref, pred, alpha, similarity))


def nextoe_score(
    prediction: str,
    references: str | Sequence[str],
    qtype: str,
    alpha: float,
    similarity: Similarity,
    stopwords: Iterable[str] = (),
) -> float:
    """One NExT-OE question's score: exact match for DC/DB, else WUPS; best over the references."""
    if isinstance(references, str):
        references = [references]
    stopwords = tuple(stopwords)
    if qtype in EXACT_MATCH_TYPES:
        pred = " ".join(tokenize(normalize_answer(prediction), stopwords))
        return float(any(pred == " ".join(tokenize(normalize_answer(r), stopwords)) for r in references))
    return max(wups_score(prediction, r, alpha, similarity, stopwords) for r in references)


def wordnet_similarity() -> Similarity:
    """Wu-Palmer similarity of two words' first WordNet synsets, from NLTK's WordNet."""
    how = (
        "valid values are benchmark.open_metric=exact_match, or a machine with nltk installed and its corpus fetched "
        "(python -m nltk.downloader wordnet, which needs the network)"
    )
    try:
        from nltk.corpus import wordnet
    except ImportError:
        raise ConfigError(f"benchmark.open_metric=wups needs nltk, which is not installed: {how}") from None
    try:
        wordnet.ensure_loaded()
        wordnet.synsets("dog")  # a corpus missing some of its files fails only when read
    except (LookupError, OSError) as err:
        reason = "not installed" if isinstance(err, LookupError) else f"incomplete ({str(err).strip()})"
        raise ConfigError(f"benchmark.open_metric=wups needs the WordNet corpus of nltk, which is {reason}: {how}") from None

    cache: dict[str, list] = {}

    def synsets(word: str) -> list:
        if word not in cache:
            cache[word] = wordnet.synsets(word)
        return cache[word]

    def similarity(word1: str, word2: str) -> float | None:
        s1, s2 = synsets(word1), synsets(word2)
        if not s1 or not s2:
            return None
        return s1[0].wup_similarity(s2[0])

    return similarity
