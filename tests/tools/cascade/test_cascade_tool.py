"""The cascade's offline tool: its verifiable set, its grading and its fit."""

from __future__ import annotations

import operator
import random

from gateway.tools.cascade.fit import Graded, curve, fit, report
from gateway.tools.cascade.questions import Question, correct, question_set

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_the_set_is_deterministic_and_its_arithmetic_is_right() -> None:
    first, again = question_set(7, 40), question_set(7, 40)
    assert first == again
    assert question_set(8, 40) != first
    for question in first:
        if question.kind == "arithmetic":
            a, op, b = question.text.removeprefix("What is ").removesuffix("?").split()
            assert str(OPS[op](int(a), int(b))) == question.answers[0]
    assert sum(q.kind == "factual" for q in first) >= 50


def test_grading() -> None:
    sum_ = Question("arithmetic", "What is 2 + 3?", ("5",))
    assert correct(sum_, "5")
    assert correct(sum_, "The answer is 5.")
    assert not correct(sum_, "15")
    assert not correct(sum_, "6, not 5")
    spider = Question("factual", "How many legs does a spider have?", ("8", "eight"))
    assert correct(spider, "A spider has 8 legs")
    assert correct(spider, "Eight.")
    assert not correct(spider, "18")
    capital = Question("factual", "What is the capital of Canada?", ("ottawa",))
    assert not correct(capital, "Toronto")


def test_the_fit_ranks_confident_answers_right_on_separable_data() -> None:
    rng = random.Random(3)
    rows = [
        Graded("arithmetic", f"q{i}", "a", right, (rng.uniform(-0.3, 0) if right else -2.0,))
        for i, right in enumerate(rng.random() < 0.5 for _ in range(60))
    ]
    table = fit(rows, "mean")
    assert table.confidence([-0.1]) == 1.0
    assert table.confidence([-2.0]) == 0.0
    _, figures = report(rows)
    assert figures["auroc_calibrated_out_of_fold"]["mean"] == 1.0
    points = curve(rows, [1.0 if r.right else 0.0 for r in rows])
    half = next(p for p in points if p["threshold"] == 0.5)
    assert half["kept_accuracy"] == 1.0
    assert half["escalated_share"] == round(sum(not r.right for r in rows) / len(rows), 4)
