"""The published head map vectors (tests/vectors/heads.json, docs/heads.md) reproduce:
keys, values, every LEAF and NODE preimage and hash, the root, the heads leaf and its
leaf hash, and every proof text, with the reference code and with the incremental map."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ledger.formats.headmap import HeadMap, MemoryNodeStore, NodeStore, SqliteNodeStore
from ledger.formats.heads import (
    EMPTY,
    HeadsLeaf,
    HeadsProof,
    HeadValue,
    bit,
    leaf_node,
    map_node,
    reference_proof,
    reference_root,
    subject_key,
)
from ledger.formats.merkle import leaf_hash

ROOT = Path(__file__).resolve().parent.parent
VECTORS: dict[str, Any] = json.loads((ROOT / "tests" / "vectors" / "heads.json").read_text())
MAPS: list[dict[str, Any]] = VECTORS["maps"]


def _generator() -> ModuleType:
    path = ROOT / "tests" / "vectors" / "make_heads_vectors.py"
    spec = importlib.util.spec_from_file_location("make_heads_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _entry_hash(index: int) -> bytes:
    return hashlib.sha256(f"entry {index}".encode()).digest()


def _items(m: dict[str, Any]) -> dict[bytes, HeadValue]:
    """The map's values, replayed from its entries by the definition."""
    values: dict[bytes, HeadValue] = {}
    for e in m["entries"]:
        key = subject_key(e["subject"])
        count = values[key].count + 1 if key in values else 1
        values[key] = HeadValue(e["index"], count, _entry_hash(e["index"]))
    return values


def _nodes(items: dict[bytes, HeadValue], depth: int = 0, prefix: str = "") -> list[dict[str, Any]]:
    """Every LEAF and NODE top-down, from ledger.formats.heads' functions."""
    if not items:
        return []
    if len(items) == 1:
        ((key, v),) = items.items()
        preimage = (
            b"\x02" + key + v.index.to_bytes(8, "big") + v.count.to_bytes(8, "big") + v.leaf_hash
        )
        h = leaf_node(key, v)
        record: dict[str, Any] = {"kind": "LEAF", "key": key.hex()}
        below: list[dict[str, Any]] = []
    else:
        zero = {k: v for k, v in items.items() if not bit(k, depth)}
        one = {k: v for k, v in items.items() if bit(k, depth)}
        left, right = reference_root(zero, depth + 1), reference_root(one, depth + 1)
        preimage = b"\x03" + left + right
        h = map_node(left, right)
        record = {"kind": "NODE"}
        below = _nodes(zero, depth + 1, prefix + "0") + _nodes(one, depth + 1, prefix + "1")
    assert hashlib.sha256(preimage).digest() == h
    record.update(depth=depth, prefix=prefix, preimage=preimage.hex(), hash=h.hex())
    return [record, *below]


def _stores(tmp_path: Path) -> list[NodeStore]:
    return [
        MemoryNodeStore(),
        MemoryNodeStore(depth=0),
        MemoryNodeStore(depth=3),
        SqliteNodeStore(tmp_path / "heads.sqlite"),
    ]


def test_the_vectors_cover_each_map_and_proof_kind() -> None:
    assert [m["name"] for m in MAPS] == ["empty", "one subject", "two subjects"]
    kinds = {p["result"] for m in MAPS for p in m["proofs"]}
    assert kinds == {"inclusion", "absent-empty", "absent-leaf"}
    two = MAPS[2]
    # the two subjects split below the root: non-branching nodes above the split
    assert max(n["depth"] for n in two["nodes"] if n["kind"] == "NODE") > 0


@pytest.mark.parametrize("m", MAPS, ids=[m["name"] for m in MAPS])
def test_keys_values_and_every_node_reproduce(m: dict[str, Any]) -> None:
    for e in m["entries"]:
        assert bytes.fromhex(e["leaf_hash"]) == _entry_hash(e["index"])
    items = _items(m)
    assert [(v["key"], v["index"], v["count"], v["leaf_hash"]) for v in m["values"]] == [
        (k.hex(), v.index, v.count, v.leaf_hash.hex()) for k, v in items.items()
    ]
    for v in m["values"]:
        assert subject_key(v["subject"]).hex() == v["key"]
    assert _nodes(items) == m["nodes"]
    root = reference_root(items)
    assert root.hex() == m["root"]
    assert (root == EMPTY) == (not m["nodes"])


@pytest.mark.parametrize("m", MAPS, ids=[m["name"] for m in MAPS])
def test_heads_leaf_reproduces(m: dict[str, Any]) -> None:
    leaf = HeadsLeaf(m["size"], len(m["values"]), bytes.fromhex(m["root"]))
    assert leaf.encoded == m["heads_leaf"].encode() == bytes.fromhex(m["heads_leaf_hex"])
    assert leaf.leaf_hash.hex() == m["heads_leaf_hash"] == leaf_hash(leaf.encoded).hex()
    assert HeadsLeaf.parse(leaf.encoded) == leaf


@pytest.mark.parametrize("m", MAPS, ids=[m["name"] for m in MAPS])
def test_proofs_reproduce_and_verify(m: dict[str, Any]) -> None:
    items = _items(m)
    root = bytes.fromhex(m["root"])
    for p in m["proofs"]:
        proof = reference_proof(items, p["subject"])
        assert proof.encode() == p["text"]
        assert (proof.result, proof.depth) == (p["result"], p["depth"])
        parsed = HeadsProof.parse(p["text"])
        assert parsed == proof
        parsed.verify(root)


@pytest.mark.parametrize("m", MAPS, ids=[m["name"] for m in MAPS])
def test_the_incremental_map_reproduces_the_vectors(m: dict[str, Any], tmp_path: Path) -> None:
    for store in _stores(tmp_path):
        heads = HeadMap(store)
        for e in m["entries"]:
            heads.note(e["subject"], e["index"], bytes.fromhex(e["leaf_hash"]))
        staged = heads.stage(m["size"])
        assert staged.encoded.hex() == m["heads_leaf_hex"]
        heads.commit()
        assert heads.root.hex() == m["root"]
        for v in m["values"]:
            assert heads.value(v["subject"]) == HeadValue(
                v["index"], v["count"], bytes.fromhex(v["leaf_hash"])
            )
        for p in m["proofs"]:
            assert heads.prove(p["subject"]).encode() == p["text"]
        heads.close()
        (tmp_path / "heads.sqlite").unlink(missing_ok=True)


def test_the_published_files_are_up_to_date() -> None:
    generator = _generator()
    vectors = generator.make()
    assert json.dumps(vectors, indent=1, ensure_ascii=False) + "\n" == (
        ROOT / "tests" / "vectors" / "heads.json"
    ).read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "heads.md").read_text(encoding="utf-8")
    assert generator.render(vectors) in doc
