"""Split a WikiText ``.tokens`` file into articles, losing no token.

The file is already tokenised: words are separated by spaces and every line
ends a "sentence" whose end is the ``<eos>`` token of the standard word-level
setup (217,646 tokens in WikiText-103 valid = words + one ``<eos>`` per line,
blank lines included). An article starts with the blank line in front of a
title line `` = Title = ``; section headings are `` = = Section = = ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

#: Line end, as in the dataset's own vocabulary.
EOS = '<eos>'


@dataclass
class Article:
    title: str
    lines: List[str]

    def tokens(self) -> List[str]:
        """Words of every line, each line closed by ``<eos>``."""
        out: List[str] = []
        for line in self.lines:
            out.extend(line.split())
            out.append(EOS)
        return out


def _is_blank(line: Optional[str]) -> bool:
    # None stands for "before the first line" / "after the last line".
    return line is None or not line.strip()


def title_of(line: str) -> Optional[str]:
    """``' = Homarus gammarus = '`` -> ``'Homarus gammarus'``; None for other lines."""
    words = line.split()
    if len(words) >= 3 and words[0] == words[-1] == '=' and words[1] != '=':
        return ' '.join(words[1:-1])
    return None


def _with_neighbours(lines: Iterable[str]) -> Iterator[Tuple[Optional[str], str, Optional[str]]]:
    previous: Optional[str] = None
    current: Optional[str] = None
    for nxt in lines:
        if current is not None:
            yield previous, current, nxt
        previous, current = current, nxt
    if current is not None:
        yield previous, current, None


def read_articles(lines: Iterable[str]) -> Iterator[Article]:
    """Articles in file order; concatenating their lines gives the file back.

    A title counts only between blank lines, so a sentence that happens to
    start and end with ``=`` cannot split an article. Lines before the first
    title (none in the official files) form an article with an empty title.
    """
    lines_so_far: List[str] = []
    title = ''
    for previous, line, nxt in _with_neighbours(lines):
        line = line.rstrip('\n')
        found = title_of(line)
        if found is not None and _is_blank(previous) and _is_blank(nxt):
            # The blank line in front of the title opens the new article.
            opening = [lines_so_far.pop()] if previous is not None else []
            if lines_so_far:
                yield Article(title, lines_so_far)
            lines_so_far, title = opening, found
        lines_so_far.append(line)
    if lines_so_far:
        yield Article(title, lines_so_far)
