from __future__ import annotations

import pytest

from adapters._text import StopScanner


def feed_all(scanner: StopScanner, pieces: list[str]) -> tuple[str, bool]:
    out: list[str] = []
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(scanner.flush())
    return "".join(out), False


def test_no_stops_passes_text_through() -> None:
    """Without stop strings every piece is emitted as it arrives."""
    scanner = StopScanner(())
    assert scanner.feed("abc") == ("abc", False)


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello wor", "ld. END more"], ["END"], ("Hello world. ", True)),
        (["Hello E", "N", "D"], ["END"], ("Hello ", True)),
        (["a", "b", "c"], ["bc", "abx"], ("a", True)),
        (["Hello E", "ND"], ["EN", "END"], ("Hello ", True)),
    ],
)
def test_stop_string_split_across_pieces(
    pieces: list[str], stops: list[str], expected: tuple[str, bool]
) -> None:
    """A stop string is found even when it arrives in several pieces, and nothing from it on is
    emitted."""
    assert feed_all(StopScanner(stops), pieces) == expected


def test_partial_match_is_held_then_released() -> None:
    """Text that only looks like the start of a stop string is held, then released once it
    cannot be one."""
    scanner = StopScanner(["STOP"])
    assert scanner.feed("go ST") == ("go ", False)
    assert scanner.feed("ay") == ("STay", False)


def test_flush_releases_held_text_at_the_end() -> None:
    """When generation ends for another reason, held-back text is not lost."""
    scanner = StopScanner(["STOP"])
    assert scanner.feed("the end ST") == ("the end ", False)
    assert scanner.flush() == "ST"
