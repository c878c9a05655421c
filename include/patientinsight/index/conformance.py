"""A static check, for mypy only: each implementation satisfies its Protocol of index.types. Never
imported at run time; a method that drifts from its Protocol fails `mypy` here, by name."""

from __future__ import annotations

from patientinsight.index.embedded import EmbeddedIndex, EmbeddedReader
from patientinsight.index.embedded_builder import EmbeddedBuilder
from patientinsight.index.pinecone import PineconeIndex
from patientinsight.index.pinecone_builder import PineconeBuilder
from patientinsight.index.pinecone_reader import PineconeReader
from patientinsight.index.types import IndexReader, VectorIndex, VersionBuilder


def embedded(index: EmbeddedIndex, reader: EmbeddedReader, builder: EmbeddedBuilder) -> None:
    _index: VectorIndex = index
    _reader: IndexReader = reader
    _builder: VersionBuilder = builder


def pinecone(index: PineconeIndex, reader: PineconeReader, builder: PineconeBuilder) -> None:
    _index: VectorIndex = index
    _reader: IndexReader = reader
    _builder: VersionBuilder = builder
