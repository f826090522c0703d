from __future__ import annotations

import pytest

from adapters._text import StopScanner


def feed_all(scanner: StopScanner, pieces: list[str]) -> tuple[str, str | None]:
    out: list[str] = []
    for piece in pieces:
        text, matched = scanner.feed(piece)
        out.append(text)
        if matched is not None:
            return "".join(out), matched
    out.append(scanner.flush())
    return "".join(out), None


def test_no_stops_passes_text_through() -> None:
    """Without stop strings every piece is emitted as it arrives."""
    scanner = StopScanner(())
    assert scanner.feed("abc") == ("abc", None)


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello wor", "ld. END more"], ["END"], ("Hello world. ", "END")),
        (["Hello E", "N", "D"], ["END"], ("Hello ", "END")),
        (["a", "b", "c"], ["bc", "abx"], ("a", "bc")),
        (["Hello E", "ND"], ["END", "EN"], ("Hello ", "EN")),
        (["1, 2, 3"], [".", ","], ("1", ",")),
    ],
)
def test_stop_string_split_across_pieces(
    pieces: list[str], stops: list[str], expected: tuple[str, str | None]
) -> None:
    """A stop string is found even when it arrives in several pieces, nothing from it on is
    emitted, and the scanner says which one ended the text (the first to start; of those
    starting together, the shortest, which completed first)."""
    assert feed_all(StopScanner(stops), pieces) == expected


def test_partial_match_is_held_then_released() -> None:
    """Text that only looks like the start of a stop string is held, then released once it
    cannot be one."""
    scanner = StopScanner(["STOP"])
    assert scanner.feed("go ST") == ("go ", None)
    assert scanner.feed("ay") == ("STay", None)


def test_flush_releases_held_text_at_the_end() -> None:
    """When generation ends for another reason, held-back text is not lost."""
    scanner = StopScanner(["STOP"])
    assert scanner.feed("the end ST") == ("the end ", None)
    assert scanner.flush() == "ST"
