"""Ingest of each format, the index on disk, incremental re-ingest, and hybrid retrieval on a small corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routes.knowledge.embedding import EmbedderMismatchError, LocalEmbedder
from routes.knowledge.index import KnowledgeIndex, KnowledgeIndexError
from routes.knowledge.indexer import add_files, expand_paths, remove_files
from routes.knowledge.ingest import UnsupportedFileError, read_chunks, read_sections, split_words
from routes.knowledge.lexical import LexicalIndex, terms
from routes.knowledge.retrieval import HybridRetriever


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF: one Helvetica text line per page, with a correct cross-reference table."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % len(objects)
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(256)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "billing.md").write_text(
        "# Billing\n\nInvoices are emailed monthly.\n\n## Refunds\n\nRefunds are paid back within 30 days.\n\n"
        "```\n# not a heading\n```\n\n# Errors\n\nError E4711 means the card was declined by the bank.\n",
        encoding="utf-8",
    )
    (docs / "hub.html").write_text(
        "<html><head><style>p{}</style></head><body><nav>Home | Help</nav><h1>Hub</h1><p>The Hub is a device.</p>"
        "<h2>Delivery</h2><p>It is shipped by courier in <b>three</b> business days.</p>"
        "<script>track()</script><!-- hidden --></body></html>",
        encoding="utf-8",
    )
    (docs / "hours.txt").write_text("Support is open Monday to Friday from 8 to 18.", encoding="utf-8")
    (docs / "manual.pdf").write_bytes(make_pdf(["The Hub needs a power supply of 12 volts.", "Clean it with water."]))
    (docs / ".hidden.md").write_text("# secret", encoding="utf-8")
    (docs / "image.png").write_bytes(b"\x89PNG")
    return docs


# --- ingest, format by format ------------------------------------------------------------------------------


def test_markdown_sections_keep_the_heading_path(corpus: Path) -> None:
    sections = read_sections(corpus / "billing.md")
    assert [section.heading for section in sections] == [(), ("Billing",), ("Billing", "Refunds"), ("Errors",)]
    assert "# not a heading" in sections[2].text  # a fenced block is not a heading (markdown-it-py)
    chunks = read_chunks(corpus / "billing.md")
    assert [(chunk.heading, chunk.position) for chunk in chunks] == [
        ("Billing", 0),
        ("Billing > Refunds", 1),
        ("Errors", 2),
    ]
    assert chunks[1].indexed_text.startswith("Billing > Refunds\nRefunds are paid back")


def test_html_drops_scripts_styles_navigation_and_comments(corpus: Path) -> None:
    chunks = read_chunks(corpus / "hub.html")
    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("Hub", "The Hub is a device."),
        ("Hub > Delivery", "It is shipped by courier in three business days."),
    ]


def test_plain_text_is_one_section(corpus: Path) -> None:
    (chunk,) = read_chunks(corpus / "hours.txt")
    assert (chunk.heading, chunk.text) == ("", "Support is open Monday to Friday from 8 to 18.")


def test_pdf_text_is_read_page_by_page(corpus: Path) -> None:
    chunks = read_chunks(corpus / "manual.pdf")
    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("page 1", "The Hub needs a power supply of 12 volts."),
        ("page 2", "Clean it with water."),
    ]


def test_a_documents_title_reaches_every_one_of_its_chunks(corpus: Path) -> None:
    (corpus / "policy.md").write_text(
        '---\nlayout: page\ntitle: "Refund policy"\n---\nRead this first.\n\n## Cards\n\nPaid back in 30 days.\n',
        encoding="utf-8",
    )
    chunks = read_chunks(corpus / "policy.md")
    assert [(chunk.title, chunk.heading, chunk.text) for chunk in chunks] == [
        ("Refund policy", "", "Read this first."),  # the front matter is no text (nor a setext heading)
        ("Refund policy", "Cards", "Paid back in 30 days."),
    ]
    assert chunks[1].indexed_text == "Refund policy\nCards\nPaid back in 30 days."
    billing = read_chunks(corpus / "billing.md")  # no front matter: the first level-1 heading, said once
    assert {chunk.title for chunk in billing} == {"Billing"}
    assert billing[0].indexed_text.startswith("Billing\nInvoices")
    assert billing[2].indexed_text.startswith("Billing\nErrors\nError E4711")
    (corpus / "page.html").write_text(
        "<html><head><title>Hub manual</title></head><body><h1>Setup</h1><p>Plug it in.</p></body></html>"
    )
    (chunk,) = read_chunks(corpus / "page.html")
    assert (chunk.title, chunk.heading, chunk.indexed_text) == ("Hub manual", "Setup", "Hub manual\nSetup\nPlug it in.")
    assert {chunk.title for chunk in read_chunks(corpus / "hub.html")} == {"Hub"}  # no <title>: the first h1
    (hours,) = read_chunks(corpus / "hours.txt")
    assert (hours.title, hours.indexed_text) == ("", hours.text)


async def test_a_title_is_stored_embedded_and_counted(corpus: Path, tmp_path: Path, embedder: LocalEmbedder) -> None:
    (corpus / "policy.md").write_text("---\ntitle: Refund policy\n---\n## Cards\n\nPaid in 30 days.\n")
    empty = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    index, _ = await add_files(empty, [corpus / "policy.md", corpus / "hours.txt"], embedder)
    index.save()
    loaded = KnowledgeIndex.load(tmp_path / "index")
    policy, hours = loaded.chunks
    assert (policy.title, hours.title) == ("Refund policy", "")
    assert policy.terms["refund"] == 1
    np.testing.assert_allclose(loaded.vectors[0], embedder.embed_sync(["Refund policy\nCards\nPaid in 30 days."])[0])
    assert b'"title"' not in (tmp_path / "index" / "chunks.jsonl").read_bytes().splitlines()[1]  # none: not written


async def test_many_files_are_added_in_one_pass_in_order(tmp_path: Path, embedder: LocalEmbedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for number in range(300):  # more chunks than one embedding batch, so batches span files
        (docs / f"d{number:03d}.txt").write_text(f"Document number {number} is about topic {number % 7}.")
    empty = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    together, report = await add_files(empty, expand_paths([docs]), embedder)
    one_by_one = empty
    for path in expand_paths([docs]):
        one_by_one, _ = await add_files(one_by_one, [path], embedder)
    assert len(report.added) == 300
    assert [chunk.source for chunk in together.chunks] == [f"docs/d{n:03d}.txt" for n in range(300)]
    assert together.version == one_by_one.version
    assert together.files == one_by_one.files
    np.testing.assert_allclose(together.vectors, one_by_one.vectors, rtol=1e-5, atol=1e-6)
    (docs / "d005.txt").write_text("Changed.")
    changed, report = await add_files(together, [docs / "d005.txt", docs / "d005.txt", docs / "d006.txt"], embedder)
    assert (report.replaced, report.unchanged) == (["docs/d005.txt"], ["docs/d005.txt", "docs/d006.txt"])
    assert [chunk.text for chunk in changed.chunks[-1:]] == ["Changed."]
    assert len(changed.chunks) == len(changed.vectors) == 300


def test_unknown_and_broken_files_are_refused(corpus: Path) -> None:
    with pytest.raises(UnsupportedFileError, match="unsupported file type"):
        read_chunks(corpus / "image.png")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    with pytest.raises(UnsupportedFileError, match="not a readable PDF"):
        read_chunks(corpus / "broken.pdf")


def test_long_text_is_cut_into_overlapping_chunks() -> None:
    words = [f"w{i}" for i in range(250)]
    windows = split_words(" ".join(words), size=100, overlap=20)
    assert [window.split()[0] for window in windows] == ["w0", "w80", "w160"]
    assert windows[0].split()[-20:] == windows[1].split()[:20]  # the overlap
    assert windows[-1].split()[-1] == "w249"
    assert split_words("   ") == []


def test_directories_are_walked_for_readable_files(corpus: Path) -> None:
    names = [path.name for path in expand_paths([corpus])]
    assert names == ["billing.md", "hours.txt", "hub.html", "manual.pdf"]
    with pytest.raises(FileNotFoundError):
        expand_paths([corpus / "missing.md"])


# --- the index: on disk, incremental -----------------------------------------------------------------------


async def test_add_save_load_and_incremental_re_ingest(corpus: Path, tmp_path: Path, embedder: LocalEmbedder) -> None:
    directory = tmp_path / "index"
    empty = KnowledgeIndex.empty(directory, embedder.name, embedder.dimension)
    index, report = await add_files(empty, expand_paths([corpus]), embedder)
    assert sorted(report.added) == ["docs/billing.md", "docs/hours.txt", "docs/hub.html", "docs/manual.pdf"]
    assert report.chunks == len(index.chunks) == 8
    assert index.vectors.shape == (8, 256)
    index.save()
    loaded = KnowledgeIndex.load(directory)
    assert (loaded.version, loaded.chunks, loaded.files) == (index.version, index.chunks, index.files)
    np.testing.assert_array_equal(loaded.vectors, index.vectors)

    again, report = await add_files(loaded, expand_paths([corpus]), embedder)
    assert (len(report.unchanged), report.chunks, again.version) == (4, 0, index.version)

    (corpus / "hours.txt").write_text("Support is open every day from 7 to 22.", encoding="utf-8")
    changed, report = await add_files(again, [corpus / "hours.txt"], embedder)
    assert (report.replaced, report.chunks) == (["docs/hours.txt"], 1)
    assert changed.version != index.version
    assert [chunk.text for chunk in changed.chunks if chunk.source == "docs/hours.txt"] == [
        "Support is open every day from 7 to 22."
    ]
    assert len(changed.chunks) == 8
    row = next(i for i, chunk in enumerate(changed.chunks) if chunk.source == "docs/hours.txt")
    np.testing.assert_allclose(
        changed.vectors[row], embedder.embed_sync(["Support is open every day from 7 to 22."])[0]
    )

    smaller, removed, missing = remove_files(changed, [corpus / "manual.pdf", "docs/nothing.md"])
    assert (removed, missing) == (["docs/manual.pdf"], ["docs/nothing.md"])
    assert "docs/manual.pdf" not in smaller.files
    assert len(smaller.chunks) == len(smaller.vectors) == 6
    assert smaller.version not in (index.version, changed.version)


async def test_an_index_refuses_another_embedder(corpus: Path, tmp_path: Path, embedder: LocalEmbedder) -> None:
    other = KnowledgeIndex.empty(tmp_path / "index", "text-embedding-3-small", 1536)
    with pytest.raises(EmbedderMismatchError, match="made by text-embedding-3-small"):
        await add_files(other, [corpus / "hours.txt"], embedder)
    with pytest.raises(EmbedderMismatchError):
        HybridRetriever(other, embedder)


def test_a_missing_or_inconsistent_index_is_a_clear_error(tmp_path: Path, embedder: LocalEmbedder) -> None:
    with pytest.raises(KnowledgeIndexError, match=r"no knowledge index in .*turnout index add"):
        KnowledgeIndex.load(tmp_path / "nowhere")
    index = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    index.save()
    (tmp_path / "index" / "chunks.jsonl").write_text('{"source": "x"}\n', encoding="utf-8")
    with pytest.raises(KnowledgeIndexError, match="unreadable"):
        KnowledgeIndex.load(tmp_path / "index")


# --- retrieval -------------------------------------------------------------------------------------------


@pytest.fixture
async def retriever(corpus: Path, tmp_path: Path, embedder: LocalEmbedder) -> HybridRetriever:
    empty = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    index, _ = await add_files(empty, expand_paths([corpus]), embedder)
    return HybridRetriever(index, embedder)


@pytest.mark.parametrize(
    ("question", "source", "heading"),
    [
        ("How do I get my money back?", "docs/billing.md", "Billing > Refunds"),
        ("what does E4711 mean", "docs/billing.md", "Errors"),  # a code: the lexical side finds it
        ("how long until the device arrives", "docs/hub.html", "Hub > Delivery"),
        ("which voltage does it need", "docs/manual.pdf", "page 1"),
    ],
)
async def test_hybrid_search_finds_the_passage(retriever: HybridRetriever, question, source, heading) -> None:
    best = (await retriever.search(question, top_k=3)).passages[0]
    assert (best.source, best.heading) == (source, heading)


async def test_top_k_and_min_score(retriever: HybridRetriever) -> None:
    passages = (await retriever.search("refunds paid back", top_k=2)).passages
    assert len(passages) == 2
    assert passages[0].score >= passages[1].score
    every = HybridRetriever(retriever.index, retriever.embedder, distinct=False)
    everything = (await every.search("refunds paid back", top_k=50)).passages
    assert len(everything) == 8  # every chunk; by default, each document once
    distinct = (await retriever.search("refunds paid back", top_k=50)).passages
    assert len(distinct) == len(retriever.index.files) < 8
    best = everything[0].similarity
    strict = (await retriever.search("refunds paid back", top_k=50, min_score=best - 1e-6)).passages
    assert [p.similarity for p in strict] == [best]
    assert (await retriever.search("   ", top_k=3)).passages == []
    vector = (await retriever.embedder.embed(["refunds paid back"])).vectors[0]
    assert retriever.best_similarity(vector) == pytest.approx(max(p.similarity for p in everything), abs=1e-6)


def test_bm25_prefers_rare_terms_and_shorter_chunks() -> None:
    assert terms("The refunds, and E4711!") == ["refund", "e4711"]
    index = LexicalIndex(
        [{"refund": 1, "card": 1}, {"refund": 1, "card": 1, "bank": 1, "month": 1, "email": 1}, {"card": 2}]
    )
    scores = index.scores("refund")
    assert scores[0] > scores[1] > 0 == scores[2]
    assert index.scores("refund card")[2] < index.scores("refund card")[0]
    assert not index.scores("unknown words").any()


def test_the_server_runs_blas_on_one_thread() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from routes.knowledge.retrieval import one_blas_thread

    with threadpool_limits(limits=None):  # restores the test process's own setting afterwards
        one_blas_thread()
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas  # numpy's BLAS is loaded (the dense search uses it)
        assert all(pool["num_threads"] == 1 for pool in blas)
