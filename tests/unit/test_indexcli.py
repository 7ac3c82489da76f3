"""`turnout index add | stats | search | remove`, and the shipped example index (the embedders: tests/contract)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from proxy.cli.main import main
from routes import KnowledgeIndex
from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.indexer import add_files, expand_paths

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "policies" / "examples"


def test_add_stats_search_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are paid back within 30 days.\n", encoding="utf-8")
    (docs / "hours.txt").write_text("Support is open from 8 to 18 on weekdays.", encoding="utf-8")
    index = str(tmp_path / "index")
    assert main(["index", "add", str(docs), "--index", index]) == 0
    assert "2 added, 0 replaced, 0 unchanged; 2 chunks embedded" in capsys.readouterr().out
    assert main(["index", "add", str(docs / "hours.txt"), "--index", index, "--quiet"]) == 0
    assert "0 added, 0 replaced, 1 unchanged; 0 chunks embedded; 2 chunks in 2 files" in capsys.readouterr().out

    assert main(["index", "stats", "--index", index]) == 0
    stats = capsys.readouterr().out
    assert "embedder: wordllama/l2_supercat (256 dimensions)" in stats
    assert "files: 2, chunks: 2" in stats
    assert "docs/refunds.md: 1 chunks" in stats

    assert main(["index", "search", "when do I get my money back", "--index", index, "--top-k", "1"]) == 0
    found = capsys.readouterr().out
    assert found.startswith("1. docs/refunds.md > Refunds (chunk 0; similarity 0.")
    assert "Refunds are paid back within 30 days." in found

    assert main(["index", "remove", str(docs / "refunds.md"), "--index", index]) == 0
    assert "1 removed; 1 chunks left" in capsys.readouterr().out
    assert main(["index", "remove", "docs/refunds.md", "--index", index]) == 1
    assert "not in the index" in capsys.readouterr().err


def test_many_queries_in_one_run_print_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are paid back within 30 days.\n", encoding="utf-8")
    (docs / "hours.txt").write_text("Support is open from 8 to 18 on weekdays.", encoding="utf-8")
    index = str(tmp_path / "index")
    assert main(["index", "add", str(docs), "--index", index, "--quiet"]) == 0
    capsys.readouterr()
    plain = tmp_path / "queries.txt"
    plain.write_text("when do I get my money back\n\nwhen is support open\n", encoding="utf-8")
    assert main(["index", "search", "--queries", str(plain), "--index", index, "--top-k", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["query"], line["passages"][0]["source"]) for line in lines] == [
        ("when do I get my money back", "docs/refunds.md"),
        ("when is support open", "docs/hours.txt"),
    ]
    assert set(lines[0]["passages"][0]) == {"rank", "source", "heading", "position", "similarity", "score", "text"}
    assert "id" not in lines[0]
    jsonl = '{"id": "q1", "query": "refunds"}\n{"id": 7, "query": "support hours", "qrels": {}}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(jsonl))
    assert main(["index", "search", "--queries", "-", "--index", index, "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["id"], len(line["passages"])) for line in lines] == [("q1", 2), (7, 2)]
    assert main(["index", "search", "refunds", "--json", "--index", index, "--top-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["passages"][0]["heading"] == "Refunds"
    (tmp_path / "bad.jsonl").write_text('refunds\n{"id": 1}\n', encoding="utf-8")
    assert main(["index", "search", "--queries", str(tmp_path / "bad.jsonl"), "--index", index]) == 1
    assert "bad.jsonl:2: not a query" in capsys.readouterr().err
    assert main(["index", "search", "refunds", "--queries", str(plain), "--index", index]) == 2
    assert main(["index", "search", "--index", index]) == 2
    assert "give one QUERY, or --queries FILE" in capsys.readouterr().err


def test_index_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "stats", "--index", str(tmp_path / "none")]) == 1
    assert "no knowledge index in" in capsys.readouterr().err
    (tmp_path / "notes.docx").write_bytes(b"PK")
    assert main(["index", "add", str(tmp_path / "notes.docx"), "--index", str(tmp_path / "i")]) == 1
    assert "unsupported file type" in capsys.readouterr().err
    KnowledgeIndex.empty(tmp_path / "other", "text-embedding-3-small", 1536).save()
    assert main(["index", "search", "refunds", "--index", str(tmp_path / "other")]) == 1
    assert "made by text-embedding-3-small (1536 dimensions), not by wordllama" in capsys.readouterr().err


async def test_the_shipped_example_index_is_up_to_date(tmp_path: Path) -> None:
    shipped = KnowledgeIndex.load(EXAMPLES / "knowledge-index")
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "knowledge", copy / "knowledge")
    index = KnowledgeIndex.load(shutil.copytree(EXAMPLES / "knowledge-index", copy / "knowledge-index"))
    rebuilt, report = await add_files(
        KnowledgeIndex.empty(index.directory, index.embedder, index.dimension),
        expand_paths([copy / "knowledge"]),
        LocalEmbedder(256),
    )
    assert sorted(report.added) == sorted(shipped.files)
    assert rebuilt.version == shipped.version, "re-run: turnout index add policies/examples/knowledge --index ..."
    np.testing.assert_allclose(rebuilt.vectors, shipped.vectors, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "question", ["When is support open?", "What are your opening hours?", "How can I call support?"]
)
async def test_the_examples_contact_questions_get_the_hours_passage(question: str) -> None:
    from proxy.config.settings import load_settings
    from routes.knowledge.retrieval import HybridRetriever
    from routes.rag import RagSettings

    # The `contact` rule sends these to the docs route; its min_score must not cut the passage that answers.
    deployment = load_settings(
        {"TURNOUT_CONFIG": str(EXAMPLES / "knowledge-base.yaml"), "OPENAI_API_KEY": "sk-placeholder"}
    ).deployment
    retriever = HybridRetriever(deployment.indexes["docs"], LocalEmbedder(256))
    rag = deployment.routes["docs"]
    assert isinstance(rag, RagSettings)
    passages = (await retriever.search(question, top_k=rag.top_k, min_score=rag.min_score)).passages
    assert "knowledge/support-hours.txt" in [passage.source for passage in passages]
