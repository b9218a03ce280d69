"""A faiss index split into shards: each shard holds a contiguous range of the item rows, every
search asks each shard and merges their answers by score. It answers like one faiss index
(`search(x, k)` -> (scores, rows), `ntotal`, `d`), so `serving.service.retriever.LoadedVersion` serves it
unchanged.

An IVF index is sharded the way faiss distributes one (its `IndexShardsIVF`): the coarse quantizer
is trained once on a sample of all items and copied into every shard, and each shard adds its own
rows to the same lists. A search picks the ``nprobe`` lists once with that quantizer and hands
them to every shard, so the shards probe the same lists and see the same vectors as the
unsharded index: the merged top-k is the unsharded index's (ties in score aside), the tuned
``nprobe`` carries over, and the coarse search is not repeated per shard. The merge is faiss's own
(`IndexShardsIVF` / `IndexShards`, C++); a host holding only some shards merges in numpy
(`search_preassigned` per shard, the same lists). A flat index is sharded by rows (exact either
way). HNSW is not sharded.

A sharded index is stored in one file (the version's ``index.faiss``) as an uncompressed zip of
``shard-NNN.faiss`` members and ``bases.npy`` (each shard's first row): a host that serves some
shards reads only its members (`read_sharded(path, shards=[...])`). Here every shard is searched
in one process, one after the other or in a thread pool (faiss releases the GIL); shards on other
hosts would answer the same `search` over the network (not built).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
BASES = "bases.npy"


def shard_name(i: int) -> str:
    return f"shard-{i:03d}.faiss"


class ShardedIndex:
    """Shards of contiguous item rows (shard i holds rows bases[i] .. bases[i] + ntotal_i - 1)."""

    def __init__(self, shards: Sequence[faiss.Index], bases: Sequence[int] | None = None, threads: int = 1):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards = list(shards)
        dims = {s.d for s in self.shards}
        if len(dims) != 1:
            raise ValueError(f"shards of different dimensions {sorted(dims)}")
        self.d = dims.pop()
        sizes = [s.ntotal for s in self.shards]
        self.bases = np.asarray(bases if bases is not None else np.cumsum([0] + sizes[:-1]), np.int64)
        if len(self.bases) != len(self.shards):
            raise ValueError(f"{len(self.bases)} bases for {len(self.shards)} shards")
        self.ntotal = int(sum(sizes))
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._ivfs = _shared_quantizer_ivfs(self.shards)  # None unless IVF shards of one quantizer
        self._merged = self._faiss_shards()

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def _faiss_shards(self):
        """faiss's own shard merge (C++) over these shards when their rows are consecutive from 0:
        `IndexShardsIVF` (the lists picked once by a copy of the shared quantizer) or
        `IndexShards`; None otherwise (a subset of shards: merged here in numpy)."""
        if not np.array_equal(self.bases, np.cumsum([0] + [s.ntotal for s in self.shards[:-1]])):
            return None
        threaded = self.threads > 1
        if self._ivfs is not None:
            first = self._ivfs[0]
            self._quantizer = faiss.IndexFlat(first.d, first.metric_type)  # kept alive: faiss does not own it
            self._quantizer.add(first.quantizer.reconstruct_n(0, first.nlist))
            merged = faiss.IndexShardsIVF(self._quantizer, first.nlist, threaded, True)
        else:
            merged = faiss.IndexShards(self.d, threaded, True)
        for shard in self.shards:
            merged.add_shard(shard)
        return merged

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of shape (n, k), best first, like `faiss.Index.search` (rows -1 and
        scores -inf where fewer than k items exist)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._merged is not None:
            params = faiss.SearchParametersIVF(nprobe=self._ivfs[0].nprobe) if self._ivfs is not None else None
            scores, rows = self._merged.search(x, k, params=params)
            return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows
        assigned = None
        if self._ivfs is not None:  # the shared quantizer picks the lists once for every shard
            first = self._ivfs[0]
            centroid_scores, lists = first.quantizer.search(x, first.nprobe)
            assigned = (lists, centroid_scores)

        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            shard = self.shards[i]
            if assigned is None:
                scores, rows = shard.search(x, min(k, shard.ntotal))
            else:
                scores, rows = self._ivfs[i].search_preassigned(x, min(k, shard.ntotal), *assigned)
            return scores, np.where(rows >= 0, rows + self.bases[i], -1)

        parts = (
            list(self._pool.map(one, range(len(self.shards))))
            if self._pool
            else [one(i) for i in range(len(self.shards))]
        )
        scores = np.concatenate([p[0] for p in parts], axis=1)
        rows = np.concatenate([p[1] for p in parts], axis=1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        take = min(k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :take]  # ties: the lower shard first
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_rows = np.take_along_axis(rows, order, axis=1)
        if take < k:
            top_scores = np.pad(top_scores, ((0, 0), (0, k - take)), constant_values=-np.inf)
            top_rows = np.pad(top_rows, ((0, 0), (0, k - take)), constant_values=-1)
        return top_scores, top_rows


def _shared_quantizer_ivfs(shards: Sequence[faiss.Index]) -> list | None:
    """The shards as IVF indexes when all are IVF with the same flat coarse quantizer (same
    centroids) and the same nprobe at search time; else None (each shard searches alone)."""
    ivfs = []
    for shard in shards:
        try:
            ivf = faiss.extract_index_ivf(shard)
        except RuntimeError:
            return None
        if not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
            return None  # an HNSW quantizer's search is not exact: let each shard search alone
        ivfs.append(ivf)
    centroids = ivfs[0].quantizer.reconstruct_n(0, ivfs[0].nlist)
    if any(
        ivf.nlist != ivfs[0].nlist or not np.array_equal(ivf.quantizer.reconstruct_n(0, ivf.nlist), centroids)
        for ivf in ivfs[1:]
    ):
        return None
    return ivfs


def split_rows(n: int, n_shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard's rows: contiguous, sizes differing by at most one."""
    if not 1 <= n_shards <= n:
        raise ValueError(f"cannot split {n} rows into {n_shards} shards")
    edges = np.linspace(0, n, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def shard_index(template: faiss.Index, vectors: np.ndarray, n_shards: int, threads: int = 1) -> ShardedIndex:
    """`vectors` split by rows into `n_shards` copies of the empty, trained `template` (a flat or
    IVF index: the same coarse quantizer in every shard)."""
    if template.ntotal:
        raise ValueError("the template must be empty (trained, no vectors)")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    shards, bases = [], []
    for start, stop in split_rows(len(x), n_shards):
        shard = faiss.clone_index(template)
        shard.add(x[start:stop])
        shards.append(shard)
        bases.append(start)
    return ShardedIndex(shards, bases, threads)


def write_sharded(index: ShardedIndex, path: str | Path) -> None:
    """One uncompressed zip: a member per shard (its faiss serialisation) and the bases."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        bases = io.BytesIO()
        np.save(bases, index.bases, allow_pickle=False)
        z.writestr(BASES, bases.getvalue())
        for i, shard in enumerate(index.shards):
            z.writestr(shard_name(i), faiss.serialize_index(shard).tobytes())


def is_sharded_file(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def read_sharded(path: str | Path, shards: Sequence[int] | None = None, threads: int = 1) -> ShardedIndex:
    """The sharded index in `path`, or only the given `shards` (each read alone from the file)."""
    with zipfile.ZipFile(path) as z:
        bases = np.load(io.BytesIO(z.read(BASES)), allow_pickle=False)
        wanted = range(len(bases)) if shards is None else list(shards)
        loaded = [faiss.deserialize_index(np.frombuffer(z.read(shard_name(i)), dtype=np.uint8)) for i in wanted]
    return ShardedIndex(loaded, [int(bases[i]) for i in wanted], threads)
