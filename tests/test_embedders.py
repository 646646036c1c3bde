"""The embedders (pipeline/embedders.py): the int8 ONNX graphs embed as the models they come from, a
tampered download is refused, and a collection is only searched with an embedder of the vector
space that built it; switching embedder rebuilds it (alias swap), chunks carried over included."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from haystack import Document

from core.errors import EmbedderMismatch
from core.packaged_models import ONNX_JARS, DevModelError, OnnxJar, onnx_embedder
from core.settings import load_settings
from pipeline.embedders import document_embedder, embedder_spec, text_embedder
from tests.conftest import HANDBOOK, drop_collection, unique_collection

TEXTS = [
    "How many days of paid vacation do full-time employees get?",
    "ALTER SEQUENCE changes the parameters of an existing sequence generator.",
    "The on-call rotation hands over every Monday at 10:00.",
    "Ünïcödé, emoji 🎉 and a very long word: " + "x" * 400,
]


def vectors(settings, texts, name):
    embedder = text_embedder(settings.model_copy(update={"embedder": name}))
    embedder.warm_up()
    return np.array([embedder.run(text=t)["embedding"] for t in texts])


def test_the_int8_minilm_embeds_as_the_torch_minilm_it_was_quantized_from():
    settings = load_settings()
    torch_vectors = vectors(settings, TEXTS, "all-MiniLM-L6-v2")
    int8_vectors = vectors(settings, TEXTS, "all-MiniLM-L6-v2-int8")
    assert np.allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-4)
    assert min((torch_vectors * int8_vectors).sum(axis=1)) > 0.97
    assert embedder_spec(settings.model_copy(update={"embedder": "all-MiniLM-L6-v2-int8"})).space == "all-MiniLM-L6-v2"


def test_e5_finds_the_passage_that_answers_and_embeds_documents_as_passages():
    settings = load_settings().model_copy(update={"embedder": "e5-small-v2-int8"})
    question = vectors(settings, ["How do I make a sequence start over from 1?"], "e5-small-v2-int8")[0]
    docs = [Document(content=TEXTS[1], meta={"title": "ALTER SEQUENCE", "section": "Description"}),
            Document(content=TEXTS[2], meta={"title": "On-call"}),
            Document(content=TEXTS[0], meta={"title": "Time off", "section": None})]
    embedder = document_embedder(settings, meta_fields_to_embed=["title", "section"], batch_size=2)
    embedder.warm_up()
    embedded = embedder.run(documents=docs)["documents"]
    assert [d.content for d in embedded] == [d.content for d in docs] and docs[0].embedding is None
    scores = [float(np.dot(question, d.embedding)) for d in embedded]
    assert scores.index(max(scores)) == 0, scores
    # The passage prefix, then the meta fields that are set, then the text, one per line.
    alone = embedder.encoder.encode(["passage: Time off\n" + TEXTS[0]])[0]
    assert np.dot(alone, embedded[2].embedding) > 0.9999


def test_a_tampered_embedder_download_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    jar = tmp_path / "tampered.jar"
    good = ONNX_JARS["e5-small-v2-int8"]
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr(good.tokenizer, "{}")
        archive.writestr(good.graph, b"not the graph")
    tampered = OnnxJar(good.artifact, "0.0.0-test", good.graph, good.graph_sha256, good.tokenizer, good.tokenizer_sha256)
    monkeypatch.setattr(OnnxJar, "url", property(lambda self: jar.as_uri()))
    monkeypatch.setitem(ONNX_JARS, "e5-small-v2-int8", tampered)
    settings = load_settings(cache_dir=tmp_path / "cache")
    with pytest.raises(DevModelError, match="SHA-256"):
        onnx_embedder(settings, "e5-small-v2-int8")
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.services
def test_a_collection_is_searched_only_in_its_vector_space_and_a_new_embedder_rebuilds_it(weaviate, tmp_path):
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService
    from pipeline.stores import admin_client

    docs = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, docs)
    elsewhere = tmp_path / "elsewhere"  # a file ingested once, then gone from this machine
    elsewhere.mkdir()
    (elsewhere / "parking.md").write_text("# Parking\n\nThe office garage opens at 06:30; visitors park on level -2.\n")
    int8 = weaviate.model_copy(update={"embedder": "all-MiniLM-L6-v2-int8"})
    e5 = weaviate.model_copy(update={"embedder": "e5-small-v2-int8"})
    collection = unique_collection("Embedders")
    services = []

    def service(settings):
        services.append(AnswerService(settings))
        return services[-1]

    try:
        Indexer(int8, collection).ingest([docs])
        Indexer(int8, collection).ingest([elsewhere / "parking.md"])
        shutil.rmtree(elsewhere)
        question = "How many days of paid vacation do full-time employees get?"
        found = {name: service(s).retrieve(question, collection)[0]
                 for name, s in (("int8", int8), ("torch", weaviate))}  # one space: both search it
        assert found["int8"][0].meta["source"].endswith("time-off.md")
        assert found["torch"][0].meta["source"] == found["int8"][0].meta["source"]

        with pytest.raises(EmbedderMismatch) as refused:
            service(e5).retrieve(question, collection)
        assert "re-index" in refused.value.user_message and "e5-small-v2" in str(refused.value)

        report = Indexer(e5, collection).ingest([docs])  # not asked for: the other space forces it
        assert "all-MiniLM-L6-v2" in report.rebuilt and report.copied >= 1
        after = service(e5)
        assert after.retrieve(question, collection)[0][0].meta["source"].endswith("time-off.md")
        parking, _, _ = after.retrieve("When does the office garage open?", collection)
        assert parking[0].meta["source"].endswith("parking.md")
        # The carried-over chunk was embedded again by e5, not copied with MiniLM's vector.
        client = admin_client(weaviate)
        try:
            stored = [o for o in client.collections.get(collection).iterator(include_vector=True)
                      if o.properties["source"].endswith("parking.md")]
        finally:
            client.close()
        expected = document_embedder(e5, meta_fields_to_embed=["title", "section"]).run(documents=[
            Document(content=o.properties["content"], meta={k: o.properties.get(k) for k in ("title", "section")})
            for o in stored
        ])["documents"]
        for obj, doc in zip(stored, expected, strict=True):
            assert float(np.dot(obj.vector["default"], doc.embedding)) > 0.999
        with pytest.raises(EmbedderMismatch):
            service(weaviate).retrieve(question, collection)
    finally:
        for s in services:
            s.close()
        drop_collection(weaviate, collection)
