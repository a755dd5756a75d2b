"""Durable KV snapshots with the real Gemma 3 270M model: save, restart, restore."""

import asyncio

import pytest

from poly_ray.engine.kv_snapshots import SnapshotTooLarge, Vault
from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment

pytestmark = pytest.mark.model

PROMPT = "The history of the lighthouse keepers of the northern coast is long. " * 6


def request(prompt=PROMPT, key="42", max_tokens=12):
    return GenerationRequest(
        prompt=(Segment(prompt),), max_tokens=max_tokens, sampling=Sampling(temperature=0.0), cache_key=key
    )


def engine(gemma_path, folder, **kw):
    return Engine(gemma_path, context_size=512, slots=2, threads=2, flush_interval=0, snapshot_dir=folder, **kw)


async def run(e, req):
    events = [ev async for ev in e.generate(req)]
    return "".join(ev.text for ev in events if isinstance(ev, Chunk)), events[-1]


async def test_restart_restores_the_prompt_and_answers_the_same(gemma_path, tmp_path):
    cold_engine = engine(gemma_path, tmp_path)
    try:
        cold, done = await run(cold_engine, request())
        assert done.timings["cached_tokens"] == 0
    finally:
        cold_engine.close()
    assert list(tmp_path.glob("*.kv"))

    warm_engine = engine(gemma_path, tmp_path)
    try:
        warm, done = await run(warm_engine, request())
        assert isinstance(done, Done)
        assert done.timings["cached_tokens"] == done.prompt_tokens - 1
        assert warm == cold
        # A longer prompt with the same start reuses the saved prefix too.
        _, done = await run(warm_engine, request(PROMPT + " And then"))
        assert done.timings["cached_tokens"] > 0
    finally:
        warm_engine.close()


PRELUDE = "<start_of_turn>user\nYou answer questions about lighthouses in one sentence.<end_of_turn>\n" * 4


def task_request(prompt):
    """A task's turn as tasks/prompts.py builds it: operator text, the caller's, operator text."""
    return GenerationRequest(
        prompt=(Segment(PRELUDE + "<start_of_turn>user\n", special=True), Segment(prompt),
                Segment("<end_of_turn>\n<start_of_turn>model\n", special=True)),
        max_tokens=6, sampling=Sampling(temperature=0.0), cache_key="prelude/keeper",
    )


async def test_a_prelude_snapshot_holds_the_operators_text_only_and_a_new_replica_restores_it(gemma_path, tmp_path):
    first = engine(gemma_path, tmp_path)
    try:
        await run(first, task_request("my secret name is Wilhelmina"))
        head = first.tokenize_prompt(task_request("").prompt[:1])
        # Saved once: a second caller's turn leaves the snapshot as it was.
        await run(first, task_request("another caller"))
        assert first.stats()["kv_snapshots"]["saved"] == 1
    finally:
        first.close()
    from poly_ray.engine.kv_snapshots import SnapshotIndex

    [entry] = [e for e in SnapshotIndex(tmp_path, "").entries.values()]
    assert entry.tokens == head and entry.n_tokens == len(head)  # none of a caller's tokens on disk

    restarted = engine(gemma_path, tmp_path)
    try:
        _, done = await run(restarted, task_request("what colour is the lamp?"))
        assert done.timings["cached_tokens"] == len(head)
        assert restarted.stats()["kv_snapshots"]["restored"] == 1
    finally:
        restarted.close()


async def test_saving_the_prelude_leaves_the_first_callers_turn_in_its_slot(gemma_path, tmp_path):
    """The prelude is saved from a copy: the first caller's next turn still reads its whole
    earlier prompt from the cache (it once found only the prelude: its cells were cut)."""
    e = engine(gemma_path, tmp_path)
    try:
        first = task_request("which lighthouse is the oldest?")
        text, done = await run(e, first)
        assert e.stats()["kv_snapshots"]["saved"] == 1
        follow = GenerationRequest(prompt=(*first.prompt, Segment(text + "\n"), Segment("and the tallest?")),
                                   max_tokens=4, sampling=Sampling(temperature=0.0), cache_key="prelude/keeper")
        _, again = await run(e, follow)
        assert again.timings["cached_tokens"] >= done.prompt_tokens
    finally:
        e.close()


async def test_corrupt_snapshot_is_ignored_and_evaluated(gemma_path, tmp_path):
    e = engine(gemma_path, tmp_path)
    try:
        cold, _ = await run(e, request())
    finally:
        e.close()
    for f in tmp_path.glob("*.kv"):
        f.write_bytes(b"garbage" * 10)
    e = engine(gemma_path, tmp_path)
    try:
        again, done = await run(e, request())
        assert done.timings["cached_tokens"] == 0
        assert again == cold
    finally:
        e.close()


async def test_other_context_size_is_ignored(gemma_path, tmp_path):
    e = engine(gemma_path, tmp_path)
    try:
        await run(e, request())
    finally:
        e.close()
    e = Engine(gemma_path, context_size=256, slots=2, threads=2, flush_interval=0, snapshot_dir=tmp_path)
    try:
        _, done = await run(e, request())
        assert done.timings["cached_tokens"] == 0
    finally:
        e.close()


async def test_snapshot_over_budget_is_507(gemma_path, tmp_path):
    e = engine(gemma_path, tmp_path, snapshot_bytes=1000)
    try:
        # The first such request is answered (its snapshot's size is known only once
        # written) and nothing stays on disk; from then on the engine refuses it up front.
        _, done = await run(e, request())
        assert done.finish_reason in ("stop", "length")
        assert not list(tmp_path.glob("*.kv"))
        with pytest.raises(SnapshotTooLarge) as err:
            await run(e, request())
        assert err.value.status == 507 and "kv_snapshot_bytes" in err.value.message
    finally:
        e.close()


class InProcessVault:
    """The real ``Vault``, called in this process as a replica's VaultHandle calls the deployment."""

    def __init__(self, vault):
        self.vault, self.sent = vault, []

    async def fetch(self, fp, key):
        return await self.vault.get("gemma", fp, key)

    def publish(self, fp, key, tokens, data):  # on the engine's thread, while the test's loop awaits
        self.sent.append(key)
        asyncio.run_coroutine_threadsafe(self.vault.put("gemma", fp, key, tokens, data), self.loop).result(30)


async def test_a_replica_elsewhere_restores_a_snapshot_through_the_vault(gemma_path, tmp_path):
    """Two replicas with folders of their own (two nodes): what one saves, the other
    restores from the vault and answers the same, without reading the prompt again."""
    shared = InProcessVault(Vault(tmp_path / "head", {"gemma": 1 << 30}))
    shared.loop = asyncio.get_running_loop()
    first = engine(gemma_path, tmp_path / "node-a", shared_snapshots=shared)
    try:
        cold, done = await run(first, request())
        assert done.timings["cached_tokens"] == 0 and shared.sent == ["42"]
    finally:
        first.close()
    assert list((tmp_path / "head" / "gemma").glob("*.kv"))
    second = engine(gemma_path, tmp_path / "node-b", shared_snapshots=shared)
    try:
        warm, done = await run(second, request())
        assert done.timings["cached_tokens"] == done.prompt_tokens - 1 and warm == cold
        assert second.stats()["kv_snapshots"]["restored"] == 1
        # An id nobody saved is read afresh, and a snapshot of another model is never handed out.
        _, done = await run(second, request("Ships sail the grey sea at night. " * 6, key="never-saved"))
        assert done.timings["cached_tokens"] == 0
        assert await shared.vault.get("gemma", "another-model|ctx=512", "42") is None
    finally:
        second.close()


async def test_a_stopping_replica_hands_its_chains_to_the_vault_and_another_restores_them(gemma_path, tmp_path):
    """A chain's cells are not saved turn by turn; when its replica stops (scale-down),
    they go to the vault, and its next turn on another replica restores them."""
    shared = InProcessVault(Vault(tmp_path / "head", {"gemma": 1 << 30}))
    shared.loop = asyncio.get_running_loop()

    def turn(prompt):
        return GenerationRequest(prompt=(Segment(prompt),), max_tokens=6, sampling=Sampling(temperature=0.0),
                                 session="chain-of-ann")

    first = engine(gemma_path, tmp_path / "node-a", shared_snapshots=shared)
    try:
        said, done = await run(first, turn(PROMPT))
        history = done.prompt_tokens  # and some of the answer, as its text tokenizes again
        assert shared.sent == []  # nothing saved while the replica runs
        assert await asyncio.to_thread(first.hand_off) == 1  # the loop stays free for the vault's put
        assert shared.sent == ["chain/chain-of-ann"]
    finally:
        first.close()
    second = engine(gemma_path, tmp_path / "node-b", shared_snapshots=shared)
    try:
        _, done = await run(second, turn(PROMPT + said + " And then?"))
        assert done.timings["cached_tokens"] >= history - 1, (done.timings, history)
        assert second.stats()["kv_snapshots"]["restored"] == 1
    finally:
        second.close()
