"""The verifiable set the confidence cascade is calibrated and measured on: arithmetic with
known results, generated from a seed, and short factual questions written here with their
answers. Deterministic: the same seed gives the same questions, in the same order.

Grading: an arithmetic answer is right when the first number in it is the result; a factual
answer is right when, lowercased with punctuation and articles removed, it contains the gold
answer (or one of its spellings) as whole words. ("A spider has 8 legs" counts; a 135M model
rarely answers in one word even when asked.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from adapters.base import ChatRequest, Message

SYSTEM = "Answer with only the final answer: a number or a few words. No explanation."
# A few worked turns so a tiny model answers in the expected short form.
SHOTS = (
    ("What is 3 + 4?", "7"),
    ("What is the capital of Italy?", "Rome"),
    ("What is 12 - 5?", "7"),
    ("What color is grass?", "Green"),
)

FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of England?", ("london",)),
    ("What is the capital of Russia?", ("moscow",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("What is the capital of China?", ("beijing",)),
    ("What is the capital of Greece?", ("athens",)),
    ("What is the capital of Portugal?", ("lisbon",)),
    ("What is the capital of Kenya?", ("nairobi",)),
    ("What is the capital of Peru?", ("lima",)),
    ("What is the capital of Norway?", ("oslo",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many legs does a dog have?", ("4", "four")),
    ("How many days are in a week?", ("7", "seven")),
    ("How many months are in a year?", ("12", "twelve")),
    ("How many hours are in a day?", ("24", "twenty four")),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("How many continents are there?", ("7", "seven")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("How many sides does a hexagon have?", ("6", "six")),
    ("What is the largest planet in the solar system?", ("jupiter",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("Which planet is closest to the Sun?", ("mercury",)),
    ("What is the largest ocean on Earth?", ("pacific", "pacific ocean")),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What is the chemical symbol for water?", ("h2o",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("What is the boiling point of water in degrees Celsius?", ("100",)),
    ("What is the freezing point of water in degrees Celsius?", ("0", "zero")),
    ("Who wrote Romeo and Juliet?", ("shakespeare", "william shakespeare")),
    ("Who painted the Mona Lisa?", ("leonardo da vinci", "da vinci", "leonardo")),
    ("Who was the first president of the United States?", ("george washington", "washington")),
    ("Who developed the theory of relativity?", ("einstein", "albert einstein")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What color are bananas when ripe?", ("yellow",)),
    ("What color do you get by mixing blue and yellow?", ("green",)),
    ("What is the opposite of hot?", ("cold",)),
    ("What is the opposite of up?", ("down",)),
    ("What animal says moo?", ("cow", "cows")),
    ("What animal is known as the king of the jungle?", ("lion",)),
    ("What is the largest mammal?", ("blue whale", "whale")),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the currency of Japan?", ("yen", "japanese yen")),
    ("What is the tallest mountain in the world?", ("everest", "mount everest")),
    ("What is the longest river in Africa?", ("nile", "the nile")),
    ("What is the main ingredient of guacamole?", ("avocado", "avocados")),
    ("How many players are on a soccer team on the field?", ("11", "eleven")),
    ("What is the square root of 81?", ("9", "nine")),
    ("What is the first letter of the English alphabet?", ("a",)),
    ("Which organ pumps blood through the body?", ("heart", "the heart")),
    ("What is the hardest natural substance?", ("diamond", "diamonds")),
    ("Which metal is liquid at room temperature?", ("mercury",)),
    ("What is the smallest prime number?", ("2", "two")),
)

Kind = Literal["arithmetic", "factual"]


@dataclass(frozen=True, slots=True)
class Question:
    kind: Kind
    text: str
    answers: tuple[str, ...]  # normalised; any of them is right

    def request(self, max_tokens: int) -> ChatRequest:
        """The greedy request the model answers, asking for token log-probs."""
        messages = [Message("system", SYSTEM)]
        for question, answer in SHOTS:
            messages += [Message("user", question), Message("assistant", answer)]
        messages.append(Message("user", self.text))
        return ChatRequest(
            messages=tuple(messages), max_tokens=max_tokens, temperature=0.0, logprobs=True
        )


def arithmetic(seed: int, count: int) -> list[Question]:
    """``count`` sums, differences and products, from easy to harder, from ``seed``."""
    rng = random.Random(seed)
    out: list[Question] = []
    shapes = ("add1", "add2", "sub2", "mul1")
    for i in range(count):
        shape = shapes[i % len(shapes)]
        if shape == "add1":
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            text, result = f"What is {a} + {b}?", a + b
        elif shape == "add2":
            a, b = rng.randint(10, 99), rng.randint(1, 20)
            text, result = f"What is {a} + {b}?", a + b
        elif shape == "sub2":
            a = rng.randint(10, 60)
            b = rng.randint(1, a)
            text, result = f"What is {a} - {b}?", a - b
        else:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            text, result = f"What is {a} * {b}?", a * b
        out.append(Question("arithmetic", text, (str(result),)))
    return out


def question_set(seed: int, arithmetic_count: int) -> list[Question]:
    """The arithmetic questions, then every factual one."""
    facts = [Question("factual", text, answers) for text, answers in FACTS]
    return arithmetic(seed, arithmetic_count) + facts


_NUMBER = re.compile(r"-?\d+")
_PUNCT = re.compile(r"[^\w\s]")
_ARTICLES = {"a", "an", "the"}


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation or articles, of the answer's first line."""
    first = text.strip().split("\n", 1)[0].lower()
    words = _PUNCT.sub(" ", first).split()
    kept = [w for w in words if w not in _ARTICLES]
    return kept or words


def correct(question: Question, answer: str) -> bool:
    """Whether ``answer`` is right (see the module docstring)."""
    if question.kind == "arithmetic":
        found = _NUMBER.search(answer)
        return found is not None and found.group() == question.answers[0]
    words = normalise(answer)
    for gold in question.answers:
        target = gold.split()
        if any(words[i : i + len(target)] == target for i in range(len(words))):
            return True
    return False
