"""Reading knowledge files (Markdown, plain text, HTML, PDF) into heading-tagged sections, and cutting chunks.

Each format is read by a library made for it: markdown-it-py finds Markdown's headings (so a `#` inside
a fenced code block is not one), BeautifulSoup walks HTML (`h1`-`h6` open sections; scripts, styles
and navigation are dropped), pypdf extracts a PDF's text page by page (a page is its section). A plain
text file is one section.

A section's text is cut into chunks of about `CHUNK_WORDS` words that overlap by `OVERLAP_WORDS`, so a
sentence cut at one chunk's end is whole in the next. Every chunk keeps its heading path ("Billing >
Refunds"), which is also embedded and indexed with it: a passage under "Refunds" is found by "refund"
even when its own words never say it.

A document's title reaches every one of its chunks: it is embedded and indexed with each (unless the
chunk's heading path already starts with it), so the passages deep in "Refund policy" are found by
"refund policy" too. The title is a Markdown file's front-matter `title:` or else its first level-1
heading, an HTML page's `<title>` or else its first `h1`, a PDF's metadata title; a plain text file has none.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CHUNK_WORDS",
    "OVERLAP_WORDS",
    "SUFFIXES",
    "Chunk",
    "Document",
    "Section",
    "UnsupportedFileError",
    "read_chunks",
    "read_document",
]

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
    title: str = ""
    """The document's title ("" when it has none)."""

    @property
    def indexed_text(self) -> str:
        """What is embedded and counted (`indexed_text`)."""
        return indexed_text(self.title, self.heading, self.text)


def indexed_text(title: str, heading: str, text: str) -> str:
    """A chunk's text as embedded and counted: its document's title, its heading path, its text (those there are)."""
    title = "" if not title or heading == title or heading.startswith(f"{title} > ") else title
    return "\n".join(part for part in (title, heading, text) if part)


@dataclass(frozen=True, slots=True)
class Document:
    """A knowledge file read: its title ("" when none) and its sections."""

    title: str
    sections: list[Section]


_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _front_matter(source: str) -> tuple[str, str]:
    """A Markdown file's front-matter `title` ("" when none) and its text without the front matter."""
    found = _FRONT_MATTER.match(source)
    if found is None:
        return "", source
    title = _FRONT_TITLE.search(found.group(1))
    text = title.group(1).strip("\"'") if title else ""
    return text, "\n" * found.group(0).count("\n") + source[found.end() :]  # line numbers kept


@functools.cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")  # built once: its rules are compiled on construction


def _markdown_document(source: str) -> Document:
    title, source = _front_matter(source)
    lines = source.splitlines()
    tokens = _markdown().parse(source)
    headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            inline = tokens[index + 1]
            headings.append((token.map[0], token.map[1], int(token.tag[1]), inline.content.strip()))
    title = title or next((text for _, _, level, text in headings if level == 1), "")
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    start = 0
    for begin, end, level, text in headings:
        sections.append(Section(tuple(title for _, title in path), "\n".join(lines[start:begin])))
        path = [*(entry for entry in path if entry[0] < level), (level, text)]
        start = end
    sections.append(Section(tuple(title for _, title in path), "\n".join(lines[start:])))
    return Document(title, sections)


_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_SKIPPED_TAGS = ("script", "style", "nav", "noscript", "template", "head")


def _html_document(source: str) -> Document:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(source, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title is not None else ""
    if not title:
        first = soup.find("h1")
        title = first.get_text(" ", strip=True) if first is not None else ""
    return Document(title, list(_html_sections(soup)))


def _html_sections(soup: Any) -> Iterator[Section]:
    from bs4.element import NavigableString, Tag

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


def _pdf_document(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata is not None else None) or ""
    except (PdfReadError, ValueError, KeyError) as exc:
        raise UnsupportedFileError(f"{path}: not a readable PDF ({exc})") from exc
    sections = [Section((f"page {number}",), text) for number, text in enumerate(pages, start=1)]
    return Document(str(title).strip(), sections)


def read_sections(path: Path) -> list[Section]:
    """The sections of a knowledge file, by its suffix (`read_document`)."""
    return read_document(path).sections


def read_document(path: Path) -> Document:
    """A knowledge file's title and sections, by its suffix.

    Raises:
        UnsupportedFileError: the suffix is not one of `SUFFIXES`, or the file cannot be decoded.
        OSError: the file cannot be read.
    """
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedFileError(f"{path}: unsupported file type (supported: {', '.join(sorted(SUFFIXES))})")
    if kind == "pdf":
        return _pdf_document(path)
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if kind == "markdown":
        return _markdown_document(source)
    if kind == "html":
        return _html_document(source)
    return Document("", [Section((), source)])


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
    document = read_document(path)
    chunks: list[Chunk] = []
    for section in document.sections:
        heading = " > ".join(part for part in section.heading if part)
        for text in split_words(section.text, size, overlap):
            chunks.append(Chunk(text=text, heading=heading, position=len(chunks), title=document.title))
    return chunks
