"""The index split (reader / writer / manifest / store): manifest bookkeeping in one place, the
stored gallery read through the index API (as the bank, the export parity check and the folder
evaluation read it), the search's tie order, and the one model-contract rule."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.index import (GalleryItems, add_items, build_index, open_index, read_stored, rebuild_index,
                             remove_items)
from index_fixtures import make_items, make_tiny_models
from hetsearch.models import load_checkpoint
from hetsearch.models.contract import check_pair, declared_compatible, space_mismatch


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def gallery(models):
    return load_checkpoint(models.gallery)


def test_every_change_bumps_the_revision_and_records_history(tmp_path, gallery):
    folder = tmp_path / "idx"
    build_index(folder, gallery, make_items(12))
    add_items(folder, gallery, make_items(3, seed=1, prefix="new"))
    remove_items(folder, [0, 999])
    manifest = rebuild_index(folder, "hnsw")
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest and manifest["revision"] == 4
    # the history entries keep the keys (and key order) earlier versions wrote
    assert [list(entry) for entry in manifest["history"]] == [
        ["op", "count", "origin", "at", "embed_s", "skipped"],
        ["op", "count", "origin", "at", "skipped", "duplicates"],
        ["op", "count", "at", "not_found"],
        ["op", "index_type", "at"]]
    assert manifest["history"][2]["not_found"] == ["999"]
    assert manifest["updated_at"] == manifest["history"][-1]["at"]
    assert manifest["item_count"] == 14 and manifest["next_id"] == 15 and manifest["index_type"] == "hnsw"
    assert set(manifest["files"]) == {"index.faiss", "metadata.sqlite", "ids.npy", "vectors.npy", "thumbnails.npy"}


def test_read_stored_is_row_aligned(tmp_path, gallery):
    folder = tmp_path / "idx"
    items = make_items(10)
    build_index(folder, gallery, items)
    remove_items(folder, [2, 5])
    stored = read_stored(folder)
    assert stored.ids.tolist() == [0, 1, 3, 4, 6, 7, 8, 9]
    assert stored.sources == [f"item{i}" for i in stored.ids]
    assert stored.labels == [items.labels[i] for i in stored.ids]
    assert stored.vectors.shape == (8, 16) and stored.thumbnails.shape == (8, 1, 16, 16)
    np.testing.assert_array_equal(np.asarray(stored.thumbnails), items.images.numpy()[stored.ids])
    assert stored.gallery_model_id == gallery.meta.model_id


def test_search_lists_equal_scores_by_ascending_id(tmp_path, gallery):
    items = make_items(6)
    copies = GalleryItems(images=items.images[[1, 1, 1]], sources=["a", "b", "c"], labels=[None] * 3,
                          fields=[{}] * 3)
    folder = tmp_path / "idx"
    build_index(folder, gallery, items)
    _, new_ids = add_items(folder, gallery, copies)
    index = open_index(folder)
    try:
        query = read_stored(folder).vectors[[1]]
        hits = index.search(query, 4)[0]
    finally:
        index.close()
    scores = [h.score for h in hits]
    assert scores[0] == pytest.approx(scores[3], abs=1e-6)  # item 1 and its three copies tie
    assert sorted(h.id for h in hits) == [1, *new_ids]
    # Embedding the copies in another batch can move their scores in the last bits on some CPU
    # kernels (AVX2 oneDNN); the rule is checked on the scores the index really holds: descending
    # score, equal scores by ascending id (on most kernels all four are equal: [1, *new_ids]).
    assert [h.id for h in hits] == [h.id for h in sorted(hits, key=lambda h: (-h.score, h.id))]


def test_one_space_rule_everywhere(models):
    query, gallery = models.query_meta, models.gallery_meta
    assert space_mismatch(query.spec, gallery.spec) is None
    wide = replace(gallery, spec=replace(gallery.spec, embedding_dim=32))
    big = replace(gallery, spec=replace(gallery.spec, image_size=32))
    assert space_mismatch(query.spec, wide.spec).what == "embedding_dim"
    assert space_mismatch(query.spec, big.spec).what == "input"
    with pytest.raises(CompatibilityError, match=re.escape(
            f"query model {query.model_id} embeds into 16 dimensions but gallery model {gallery.model_id} into 32; "
            "heterogeneous search needs the same embedding dimension (train the query model with "
            "model.embedding_dim=32 and compat.gallery_model=<gallery checkpoint>)")):
        check_pair(query, wide)
    with pytest.raises(CompatibilityError, match=re.escape(
            f"query model {query.model_id} takes 1x16px images, gallery model {gallery.model_id} 1x32px")):
        check_pair(query, big)
    from hetsearch.compat.gallery import check_same_embedding_space

    with pytest.raises(CompatibilityError, match=re.escape(
            f"compat.method=bct: the query model embeds into 16 dimensions but the gallery model {gallery.model_id} "
            "into 32; set model.embedding_dim=32 so that query embeddings can be searched in the gallery index")):
        check_same_embedding_space(query.spec, wide, "bct")
    with pytest.raises(CompatibilityError, match=re.escape(
            f"compat.method=l2: the query model takes 1x16px images, the gallery model {gallery.model_id} 1x32px; "
            "set data.channels=1 data.image_size=32")):
        check_same_embedding_space(query.spec, big, "l2")
    assert declared_compatible(query, gallery) and declared_compatible(gallery, gallery)
    assert not declared_compatible(models.stranger_meta, gallery)


def test_nas_evaluator_uses_the_space_rule(models):
    from hetsearch.models import create_model
    from hetsearch.nas.evaluator import CandidateEvaluator

    supernet = load_checkpoint(models.gallery).model  # not a supernet: refused before the space check
    with pytest.raises(ConfigError, match="cmpnas_supernet"):
        CandidateEvaluator(supernet, supernet, None, None)
    wide = create_model("resnet18", backbone_args={"width": 4}, num_classes=4, embedding_dim=32, image_size=16)
    supernet.spec = replace(supernet.spec, backbone="cmpnas_supernet")
    with pytest.raises(ConfigError, match="the supernet embeds into 16 dimensions but the gallery model into 32"):
        CandidateEvaluator(supernet, wide, None, None)


def test_no_module_outside_index_reads_its_files():
    """`export`, `compat` and the folder evaluation read an index through the index API only."""
    src = Path(__file__).resolve().parents[1] / "src" / "hetsearch"
    names = ("METADATA_NAME", "VECTORS_NAME", "THUMBNAILS_NAME", "IDS_NAME", "FAISS_NAME", "metadata.sqlite",
             "vectors.npy", "thumbnails.npy")
    offenders = [str(path.relative_to(src)) for path in src.rglob("*.py")
                 if path.parent.name != "index" and any(name in path.read_text() for name in names)]
    assert offenders == []
