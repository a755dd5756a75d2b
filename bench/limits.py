"""What counting the stream limits across ingress replicas costs: a place taken and
given back through the coordinator deployment (two or more ingress replicas) against
the same in the ingress's own book (one replica), in one run, on a local Ray.

Per place: the take's round trip (a caller waits for it before its generation
starts) and the release (sent without waiting). Printed: microseconds per place,
p50 and p99 of the take, and the ratio to the local book.

    .venv/bin/python bench/limits.py [places]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time


async def measure(limits, n: int) -> list[float]:
    takes = []
    for i in range(n):
        start = time.perf_counter()
        release = await limits.take(f"credential-{i % 8}")
        takes.append(time.perf_counter() - start)
        release()
    return takes


def main(n: int) -> None:
    import ray
    from ray import serve

    from poly_ray.api.limits import StreamLimits
    from poly_ray.serve.coordinator import Coordinator, SharedLedger
    from poly_ray.serve.options import COORDINATOR_OPTIONS

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    options = {**COORDINATOR_OPTIONS, "ray_actor_options": {"num_cpus": 0}}
    handle = serve.run(serve.deployment(name="coordinator", **options)(Coordinator).bind(64, 16), name="bench")

    async def run():
        shared = StreamLimits(SharedLedger(handle))
        local = StreamLimits.local(64, 16)
        await measure(shared, 50)  # warm the handle's router
        return await measure(local, n), await measure(shared, n)

    local, shared = asyncio.run(run())
    serve.shutdown()
    ray.shutdown()

    def row(name: str, takes: list[float]) -> str:
        q = statistics.quantiles(takes, n=100)
        return f"| {name} | {statistics.mean(takes) * 1e6:.0f} | {q[49] * 1e6:.0f} | {q[98] * 1e6:.0f} |"

    print(f"\n{n} places, each taken and given back\n")
    print("| book | µs per take, mean | p50 | p99 |\n|---|---|---|---|")
    print(row("the ingress's own (one replica)", local))
    print(row("the coordinator's (several replicas)", shared))
    print(f"\ncoordinator / own: {statistics.mean(shared) / statistics.mean(local):.0f}x; "
          f"{statistics.mean(shared) * 1e3:.2f} ms added before each generation")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
