"""Destinations a request can be sent to: OpenAI-compatible upstreams, the RAG route, and the simulated upstream."""

from routes.base import Answer, AnswerStream, Call, ChatCall, Route
from routes.knowledge.embedders import OpenAIEmbedder
from routes.knowledge.index import KnowledgeIndex, KnowledgeIndexError
from routes.knowledge.retrieval import HybridRetriever, Passage, Retriever
from routes.openai_chat import OpenAIChatRoute
from routes.rag import RagRoute
from routes.upstream import Upstream, UpstreamPath, UpstreamTimeouts, new_session

__all__ = [
    "Answer",
    "AnswerStream",
    "Call",
    "ChatCall",
    "HybridRetriever",
    "KnowledgeIndex",
    "KnowledgeIndexError",
    "OpenAIChatRoute",
    "OpenAIEmbedder",
    "Passage",
    "RagRoute",
    "Retriever",
    "Route",
    "Upstream",
    "UpstreamPath",
    "UpstreamTimeouts",
    "new_session",
]
