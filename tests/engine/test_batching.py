"""What one decode step holds: generated tokens, prompt chunks, and a prompt's last
token always apart from the rest of its prompt (no model needed)."""

from dataclasses import dataclass, field

from poly_ray.engine.batching import compose


@dataclass
class R:
    pending: list[int] = field(default_factory=list)
    next_token: int | None = None
    draft: list[int] = field(default_factory=list)
    repeatable: bool = True


def steps(runs, batch_size=512):
    """Every step until the prompts are read: [(run index, token, logits), ...] per step."""
    out = []
    while any(r.pending for r in runs):
        out.append([(runs.index(r), t, lg) for r, t, lg in compose(runs, batch_size)])
    return out


def test_a_fresh_prompt_reads_its_last_token_alone_as_a_cached_one_would():
    fresh, cached = R(pending=[1, 2, 3, 4, 5]), R(pending=[5])
    assert steps([fresh]) == [[(0, 1, False), (0, 2, False), (0, 3, False), (0, 4, False)], [(0, 5, True)]]
    # After a cached prefix the step that reads the last token looks the same.
    assert steps([cached]) == [[(0, 5, True)]]
    assert steps([R(pending=[7])]) == [[(0, 7, True)]]


def test_a_request_that_cannot_repeat_reads_its_whole_prompt_in_one_step():
    assert steps([R(pending=[1, 2, 3], repeatable=False)]) == [[(0, 1, False), (0, 2, False), (0, 3, True)]]
    # In chunks: the last chunk ends with the logits.
    long = R(pending=list(range(600)), repeatable=False)
    assert [[lg for _, _, lg in s] for s in steps([long])] == [[False] * 512, [False] * 87 + [True]]
    # Beside a generating stream, in the slice the stream leaves.
    gen, reading = R(next_token=9), R(pending=[1, 2], repeatable=False)
    assert compose([reading, gen], 512) == [(gen, 9, True), (reading, 1, False), (reading, 2, True)]


def test_only_a_seed_or_greedy_drawing_pays_the_step():
    from poly_ray.engine.batching import repeatable
    from poly_ray.generation import Sampling
    assert repeatable(Sampling(seed=5)) and repeatable(Sampling(temperature=0.0))
    assert not repeatable(Sampling(temperature=0.8))


def test_generated_and_last_prompt_tokens_go_first_with_logits():
    gen, reading, last = R(next_token=9), R(pending=[1, 2, 3]), R(pending=[8])
    assert compose([reading, gen, last], 512) == [(gen, 9, True), (last, 8, True), (reading, 1, False), (reading, 2, False)]
    assert gen.next_token is None and last.pending == [] and reading.pending == [3]
    assert compose([reading, gen, last], 512) == [(reading, 3, True)]


def test_a_long_prompt_is_read_in_chunks_and_beside_streams_in_slices():
    long = R(pending=list(range(1000)))
    first = compose([long], 512)
    assert len(first) == 512 and not any(lg for _, _, lg in first)
    gen = R(next_token=1)
    second = compose([long, gen], 512)
    assert second[0] == (gen, 1, True) and len(second) == 1 + 128  # a quarter of the batch beside a stream
    rest = steps([long])
    assert [len(s) for s in rest] == [1000 - 512 - 128 - 1, 1] and rest[-1] == [(0, 999, True)]


def test_two_prompts_share_the_room_and_never_overflow_the_batch():
    a, b = R(pending=list(range(300))), R(pending=list(range(300)))
    for step in steps([a, b], batch_size=256):
        assert 0 < len(step) <= 256
    assert not a.pending and not b.pending


def test_a_draft_goes_behind_its_sampled_token_each_with_logits():
    spec, reading = R(next_token=9, draft=[4, 5]), R(pending=[1, 2, 3])
    assert compose([reading, spec], 512) == [(spec, 9, True), (spec, 4, True), (spec, 5, True),
                                             (reading, 1, False), (reading, 2, False)]
