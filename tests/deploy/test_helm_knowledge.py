"""The chart fills the knowledge volume (issue 18, point 8): the index Job, its documents, the pods' wait for the index.

Rendered by Helm's Go SDK as `tests/deploy/test_helm_chart.py` does; the Job's own command is then run here,
with the container's paths mapped into a temporary directory, so that what the chart asks of `turnout index
add` is checked by Turnout itself, and the documents name the policy key the code reads (`index:`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.cli.main import main
from routes import KnowledgeIndex
from routes.rag import RagSettings
from tests.deploy.helm_chart import ROOT, SHARED_DATABASE, Rendered, render

DOCUMENTS = {"refunds.md": "# Refunds\n\nRefunds are paid back within 30 days.\n", "hours.txt": "Open 8 to 18."}
BUILD: dict[str, Any] = {**SHARED_DATABASE, "knowledge": {"enabled": True, "build": {"enabled": True}}}


def _built(**build: Any) -> Rendered:
    return render({**SHARED_DATABASE, "knowledge": {"enabled": True, "build": {"enabled": True, **build}}})


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_the_job_indexes_the_documents_from_the_charts_configmap_into_the_volume() -> None:
    rendered = _built(documents=DOCUMENTS)
    job = rendered.one("Job", "knowledge")
    assert job["metadata"]["name"] == "shop-turnout-index-1"  # one per release revision: an upgrade indexes again
    (container,) = _pod(job)["containers"]
    assert container["args"][:2] == ["index", "add"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["knowledge"]["mountPath"] == "/var/lib/turnout/knowledge"
    assert "readOnly" not in mounts["knowledge"]  # the Job writes the index; the pods only read it
    assert mounts["documents"] == {"name": "documents", "mountPath": "/var/lib/turnout/documents", "readOnly": True}
    volumes = {volume["name"]: volume for volume in _pod(job)["volumes"]}
    claim = rendered.one("PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["knowledge"]["persistentVolumeClaim"] == {"claimName": claim}
    documents = rendered.named("ConfigMap", "shop-turnout-documents")
    assert documents["data"] == DOCUMENTS
    assert volumes["documents"]["configMap"] == {"name": "shop-turnout-documents"}
    assert volumes["policy"]["configMap"]["name"] == rendered.one("ConfigMap", "proxy")["metadata"]["name"]


@pytest.mark.parametrize(
    ("build", "volume"),
    [
        ({"configMap": "team-docs"}, {"name": "documents", "configMap": {"name": "team-docs"}}),
        (
            {"source": {"persistentVolumeClaim": {"claimName": "docs", "readOnly": True}}},
            {"name": "documents", "persistentVolumeClaim": {"claimName": "docs", "readOnly": True}},
        ),
    ],
)
def test_the_documents_may_come_from_an_existing_configmap_or_any_volume(
    build: dict[str, Any], volume: dict[str, Any]
) -> None:
    rendered = _built(**build)
    assert volume in _pod(rendered.one("Job", "knowledge"))["volumes"]
    assert [obj for obj in rendered.all("ConfigMap") if obj["metadata"]["name"].endswith("-documents")] == []


def test_without_the_build_there_is_no_job_and_no_wait() -> None:
    for values in ({**SHARED_DATABASE, "knowledge": {"enabled": True}}, SHARED_DATABASE):
        rendered = render(values)
        assert rendered.all("Job") == []
        assert "initContainers" not in rendered.deployment["spec"]["template"]["spec"]


def test_the_jobs_command_builds_an_index_the_pods_wait_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-keys-secret")  # the Job has the keys Secret, as the pods do
    rendered = _built(documents=DOCUMENTS)
    (container,) = _pod(rendered.one("Job", "knowledge"))["containers"]
    root = tmp_path / "container"

    def local(path: str) -> str:  # the container's absolute paths, under `root`
        return str(root / path.lstrip("/")) if path.startswith("/") else path

    (root / "etc" / "turnout").mkdir(parents=True)
    (root / "etc" / "turnout" / "policy.yaml").write_text(rendered.policy_file, encoding="utf-8")
    documents = root / "var" / "lib" / "turnout" / "documents"
    documents.mkdir(parents=True)
    for name, text in rendered.named("ConfigMap", "shop-turnout-documents")["data"].items():
        (documents / name).write_text(text, encoding="utf-8")
    (wait,) = rendered.deployment["spec"]["template"]["spec"]["initContainers"]
    manifest = local(wait["command"][-1])
    command = [sys.executable, *wait["command"][1:-1], manifest]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as waiting:  # noqa: S603 - our interpreter
        try:
            assert main([local(arg) for arg in container["args"]]) == 0  # `turnout index add` as the Job runs it
            assert waiting.wait(timeout=60) == 0  # the pods' wait ends once the index is there
        finally:
            waiting.kill()
    index = KnowledgeIndex.load(root / "var" / "lib" / "turnout" / "knowledge")
    assert sorted(index.files) == ["documents/hours.txt", "documents/refunds.md"]  # named beside the index
    assert (Path(manifest).parent / "manifest.json").is_file()
    mounts = {mount["name"]: mount for mount in wait["volumeMounts"]}
    assert mounts["knowledge"]["readOnly"] is True


def test_every_document_names_the_policy_key_the_code_reads() -> None:
    assert "index" in RagSettings.__struct_fields__
    assert "knowledge" not in RagSettings.__struct_fields__
    wrong = re.compile(r"`knowledge: \$\{TURNOUT_KNOWLEDGE_DIR\}`|route's `knowledge:`|route names it as `knowledge:")
    for path in ("README.md", "helm/turnout/values.yaml", "Dockerfile"):
        text = (ROOT / path).read_text(encoding="utf-8")
        assert not wrong.search(text), path
    assert "`index: ${TURNOUT_KNOWLEDGE_DIR}`" in (ROOT / "helm/turnout/values.yaml").read_text(encoding="utf-8")
