from poly_ray.engine.kv_slots import MIN_COPY, Placement, Slot, common_prefix, place


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_all_busy_means_wait():
    assert place([Slot(0, busy=True), Slot(1, busy=True)], [1, 2]) is None


def test_empty_slots_first():
    slots = [Slot(0, tokens=[9, 9], last_used=1.0), Slot(1)]
    assert place(slots, [1, 2, 3]) == Placement(1, 0)


PRELUDE = list(range(100, 100 + MIN_COPY))


def test_next_turn_stays_in_its_slot():
    slots = [Slot(0), Slot(1, tokens=PRELUDE, last_used=5.0)]
    assert place(slots, PRELUDE + [4, 5]) == Placement(1, MIN_COPY)


def test_a_short_prefix_is_read_afresh_even_in_place():
    # Its cells were computed beside other tokens than this prompt's: read whole, the
    # prompt is evaluated the same way each time (and a seeded request repeats its text).
    slots = [Slot(0, tokens=[1, 2, 3], last_used=5.0)]
    assert place(slots, [1, 2, 3, 4, 5]) == Placement(0, 0)
    assert place(slots, [1, 2, 3]) == Placement(0, 0)


def test_shared_prelude_is_copied_from_a_busy_slot():
    slots = [Slot(0, tokens=PRELUDE + [7], busy=True), Slot(1)]
    assert place(slots, PRELUDE + [8]) == Placement(1, MIN_COPY, copy_from=0)


def test_short_shared_prefixes_are_not_copied():
    slots = [Slot(0, tokens=[1, 2, 3, 7], busy=True), Slot(1)]
    assert place(slots, [1, 2, 3, 8]) == Placement(1, 0)


def test_partial_match_keeps_the_other_conversation():
    slots = [Slot(0, tokens=PRELUDE + [4], last_used=9.0), Slot(1, tokens=[5], last_used=1.0)]
    # Slot 0 shares the prelude but holds more: copy into the LRU slot 1, not cut slot 0 short.
    assert place(slots, PRELUDE + [6]) == Placement(1, MIN_COPY, copy_from=0)


def test_lru_eviction_when_nothing_matches():
    slots = [Slot(0, tokens=[5], last_used=3.0), Slot(1, tokens=[6], last_used=1.0), Slot(2, tokens=[7], busy=True)]
    assert place(slots, [1, 2]) == Placement(1, 0)


def test_one_prompt_token_is_always_left_to_evaluate():
    slots = [Slot(0, tokens=PRELUDE + [1])]
    assert place(slots, PRELUDE + [1]) == Placement(0, MIN_COPY)


def test_a_short_chat_session_continues_in_its_own_slot():
    """A session's next turn reuses its own cells however short (the first turn of a chat
    may be a dozen tokens); only a short prefix of another prompt is read afresh."""
    held = list(range(MIN_COPY - 4))
    slots = [Slot(0, held), Slot(1)]
    assert place(slots, held + [99, 98], session=True) == Placement(0, len(held))
    assert place(slots, held + [99, 98]) == Placement(1, 0)


def test_a_short_chain_of_turns_reuses_its_own_cells_only():
    """A Responses chain's next turn re-renders its history, so it shares most but not
    all of its slot's tokens: its own cells are reused however short, another chain's not."""
    held = list(range(MIN_COPY - 4))
    slots = [Slot(0, held, chain="owner/chain/resp_1"), Slot(1)]
    prompt = held[:-1] + [99, 98]
    assert place(slots, prompt, chain="owner/chain/resp_1") == Placement(1, len(held) - 1, copy_from=0)
    assert place(slots, prompt, chain="owner/chain/resp_2") == Placement(1, 0)
    assert place(slots, prompt) == Placement(1, 0)


def test_another_owners_cells_are_reused_only_for_the_operators_start():
    """N7: alice's cells beyond the prelude would tell bob how far his guess matches her prompt."""
    secret = PRELUDE + list(range(500, 540))
    slots = [Slot(0, tokens=secret, owner="alice", public=MIN_COPY + 4, last_used=5.0), Slot(1)]
    guess = secret[:-1] + [999]
    assert place(slots, guess, owner="alice", public=MIN_COPY) == Placement(1, len(secret) - 1, copy_from=0)
    assert place(slots, guess, owner="bob", public=MIN_COPY + 4) == Placement(1, MIN_COPY + 4, copy_from=0)
    # The prompt's own operator start bounds it too (a longer prelude of the slot is not this prompt's).
    assert place(slots, guess, owner="bob", public=MIN_COPY) == Placement(1, MIN_COPY, copy_from=0)
    # Below MIN_COPY of public cells, nothing of another owner's is reused.
    assert place(slots, guess, owner="bob", public=3) == Placement(1, 0)
