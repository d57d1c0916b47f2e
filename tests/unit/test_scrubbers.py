"""The scrubbers: a key is replaced however the text around it is split into pieces."""

from __future__ import annotations

import random

from supervisor.secrets import ByteStreamScrubber, Redactor, StreamScrubber

REDACTOR = Redactor.from_environ(
    {"A_API_KEY": "sk-abcdefgh1234", "B_API_KEY": "sk-ab-zzzzzzzzzz99", "C_TOKEN": "xyzxyzxyz", "HOME": "/root"}
)
PIECES = ["sk-abcdefgh1234", "sk-ab-zzzzzzzzzz99", "xyzxyzxyz", "sk-", "sk-ab", "xyz", "hello ", "s", "data: {}\n\n"]


def random_splits(seed: int) -> list[tuple[str, list[int]]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(2000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        cases.append((text, cuts))
    return cases


def test_relayed_bytes_are_scrubbed_as_the_whole_text_would_be_however_they_are_split() -> None:
    for text, cuts in random_splits(7):
        data = text.encode()
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        scrubber = ByteStreamScrubber(REDACTOR)
        out = b"".join(scrubber.feed(p) for p in pieces) + scrubber.flush()
        assert out == REDACTOR.scrub(text).encode(), pieces


def test_text_deltas_are_scrubbed_as_the_whole_text_would_be_however_they_are_split() -> None:
    for text, cuts in random_splits(11):
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        scrubber = StreamScrubber(REDACTOR)
        out = "".join(scrubber.feed(p) for p in pieces) + scrubber.flush()
        assert out == REDACTOR.scrub(text), pieces


def test_a_piece_ending_a_line_is_passed_on_whole() -> None:
    scrubber = ByteStreamScrubber(REDACTOR)
    assert scrubber.feed(b'data: {"x": 1}\n\n') == b'data: {"x": 1}\n\n'
    assert scrubber.feed(b"the key: sk-ab") == b"the key: "  # could be the start of a key: held back
    assert scrubber.feed(b"cdefgh1234.") == b"[redacted:A_API_KEY]."
