"""Reading knowledge files (Markdown, plain text, HTML, PDF) into heading-tagged sections, and cutting chunks.

Each format is read by a library made for it: markdown-it-py finds Markdown's headings (so a `#` inside
a fenced code block is not one), BeautifulSoup walks HTML (`h1`-`h6` open sections; scripts, styles
and navigation are dropped), pypdf extracts a PDF's text page by page (a page is its section). A plain
text file is one section.

A section's text is cut into chunks of about `CHUNK_WORDS` words that overlap by `OVERLAP_WORDS`, so a
sentence cut at one chunk's end is whole in the next. Every chunk keeps its heading path ("Billing >
Refunds"), which is also embedded and indexed with it: a passage under "Refunds" is found by "refund"
even when its own words never say it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHUNK_WORDS", "OVERLAP_WORDS", "SUFFIXES", "Chunk", "Section", "UnsupportedFileError", "read_chunks"]

CHUNK_WORDS = 120
"""Words per chunk: a passage of a few sentences, well inside a small embedding model's reach."""
OVERLAP_WORDS = 30
"""Words each chunk repeats from the end of the one before it."""
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
"""File suffixes `turnout index add` reads, and their formats."""


class UnsupportedFileError(Exception):
    """A file whose format cannot be read (its suffix is unknown, or its content is broken)."""


@dataclass(frozen=True, slots=True)
class Section:
    """A stretch of text under one heading path."""

    heading: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage to index: its text, where it comes from, and its place in the file."""

    text: str
    heading: str
    """The heading path, joined by " > " ("" when the file has no headings)."""
    position: int
    """The chunk's number within its file, from 0."""

    @property
    def indexed_text(self) -> str:
        """What is embedded and counted: the heading path, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def _markdown_sections(source: str) -> Iterator[Section]:
    from markdown_it import MarkdownIt

    lines = source.splitlines()
    tokens = MarkdownIt("commonmark").parse(source)
    headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            inline = tokens[index + 1]
            headings.append((token.map[0], token.map[1], int(token.tag[1]), inline.content.strip()))
    path: list[tuple[int, str]] = []
    start = 0
    for begin, end, level, text in headings:
        yield Section(tuple(title for _, title in path), "\n".join(lines[start:begin]))
        path = [*(entry for entry in path if entry[0] < level), (level, text)]
        start = end
    yield Section(tuple(title for _, title in path), "\n".join(lines[start:]))


_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_SKIPPED_TAGS = ("script", "style", "nav", "noscript", "template", "head")


def _html_sections(source: str) -> Iterator[Section]:
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, Tag

    soup = BeautifulSoup(source, "html.parser")
    for tag in soup.find_all(_SKIPPED_TAGS):
        tag.decompose()
    path: list[tuple[int, str]] = []
    words: list[str] = []
    for node in soup.descendants:
        if isinstance(node, Tag) and node.name in _HEADING_TAGS:
            yield Section(tuple(title for _, title in path), " ".join(words))
            level, title = int(node.name[1]), node.get_text(" ", strip=True)
            path, words = [*(entry for entry in path if entry[0] < level), (level, title)], []
        elif type(node) is NavigableString and node.find_parent(_HEADING_TAGS) is None:  # not a comment
            words.append(str(node))
    yield Section(tuple(title for _, title in path), " ".join(words))


def _pdf_sections(path: Path) -> Iterator[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise UnsupportedFileError(f"{path}: not a readable PDF ({exc})") from exc
    for number, text in enumerate(pages, start=1):
        yield Section((f"page {number}",), text)


def read_sections(path: Path) -> list[Section]:
    """The sections of a knowledge file, by its suffix.

    Raises:
        UnsupportedFileError: the suffix is not one of `SUFFIXES`, or the file cannot be decoded.
        OSError: the file cannot be read.
    """
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedFileError(f"{path}: unsupported file type (supported: {', '.join(sorted(SUFFIXES))})")
    if kind == "pdf":
        return list(_pdf_sections(path))
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if kind == "markdown":
        return list(_markdown_sections(source))
    if kind == "html":
        return list(_html_sections(source))
    return [Section((), source)]


_WORD = re.compile(r"\S+")


def split_words(text: str, size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """`text` as windows of `size` words, each starting `size - overlap` words after the one before."""
    words = _WORD.findall(text)
    if not words:
        return []
    step = max(1, size - overlap)
    windows = []
    for start in range(0, len(words), step):
        windows.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return windows


def read_chunks(path: Path, size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    """The chunks of a knowledge file, in order (see the module docstring).

    Raises:
        UnsupportedFileError: the file's format is unknown or its content is unreadable.
        OSError: the file cannot be read.
    """
    chunks: list[Chunk] = []
    for section in read_sections(path):
        heading = " > ".join(part for part in section.heading if part)
        for text in split_words(section.text, size, overlap):
            chunks.append(Chunk(text=text, heading=heading, position=len(chunks)))
    return chunks
