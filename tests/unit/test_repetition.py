"""The repetition guard's thresholds: loops trip it early, legitimate repetition does not."""

from __future__ import annotations

import pytest

from supervisor.backends.repetition import RepetitionGuard, describe_loop, find_loop


def feed_until_trip(guard: RepetitionGuard, unit: str, times: int) -> int | None:
    for index in range(times):
        if guard.feed(unit):
            return index + 1
    return None


@pytest.mark.parametrize(
    ("unit", "most_repeats"),
    [
        ("A-sort\n", 32),  # the loop seen in issue 11: about 200 characters
        ("x", 216),
        ("\n", 216),
        ("This is the complete solution and it works for every input you give.\n", 5),
        ('{"name": "A-sort"},\n', 12),
    ],
)
def test_a_loop_trips_the_guard_after_about_200_characters(unit: str, most_repeats: int) -> None:
    guard = RepetitionGuard()
    tripped_at = feed_until_trip(guard, unit, 1000)
    assert tripped_at is not None
    assert tripped_at <= most_repeats
    assert guard.loop is not None
    assert guard.loop.passage == unit or len(unit) == 1


@pytest.mark.parametrize(
    "text",
    [
        "".join(f"row {i},{i * i}\n" for i in range(300)),  # a CSV: similar lines, never equal
        "def f(x):\n    return x\n\n\n" * 3,  # a few identical short blocks: under 200 characters
        "    assert add(1, 1) == 2\n" * 3,
        "=" * 120 + "\n",  # a long rule line
        "".join(f"- item {i}\n" for i in range(200)),
    ],
)
def test_legitimate_repetition_is_left_alone(text: str) -> None:
    guard = RepetitionGuard()
    for start in range(0, len(text), 5):
        assert not guard.feed(text[start : start + 5]), text[: start + 5][-80:]


def test_find_loop_reports_the_shortest_period_and_describe_names_it() -> None:
    text = "Sure.\n" + "ab" * 150
    loop = find_loop(text, 4, 200, 400)
    assert loop is not None
    assert loop.period == 2
    assert loop.repeats == 150
    assert describe_loop("intro\n" + "A-sort\n" * 40) == (
        "looping: the same 7-character passage 'A-sort\\n' came out 40 times in a row; the generation was stopped"
    )
    assert find_loop("no loop here at all", 4, 200, 400) is None
