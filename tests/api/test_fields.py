"""The pieces every family's bodies share (api/fields.py): one pagination, whose
unknown cursor is the same 400 as the store's; the strict base."""

import pytest
from pydantic import ValidationError

from poly_ray.api.fields import Body, ListQuery, Tokens, page
from poly_ray.errors import BadRequest
from poly_ray.state.store import Store

ITEMS = [{"id": f"i{n}"} for n in range(5)]


def ids(body: dict) -> list[str]:
    return [i["id"] for i in body["data"]]


def test_page_orders_limits_and_follows_cursors_like_the_store(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.create("a", "conversation", {"id": "p"})
    for item in ITEMS:
        store.create("a", "item", item, parent="p")
    for query in (ListQuery(), ListQuery(order="asc", limit=2), ListQuery(after="i3"), ListQuery(order="asc", after="i1"),
                  ListQuery(order="asc", before="i3"), ListQuery(after="i4", before="i1")):
        in_store = store.list("a", "item", parent="p", **query.page()).to_body()
        assert ids(page(ITEMS, query)) == ids(in_store), query
        assert page(ITEMS, query)["has_more"] == in_store["has_more"], query
    store.close()


@pytest.mark.parametrize("cursor", ["after", "before"])
def test_an_unknown_cursor_is_the_same_400_everywhere(tmp_path, cursor):
    store = Store(tmp_path / "s.sqlite3")
    store.create("a", "conversation", {"id": "p"})
    store.create("a", "item", ITEMS[0], parent="p")
    query = ListQuery(**{cursor: "nope"})
    with pytest.raises(BadRequest) as held:
        page(ITEMS, query)
    with pytest.raises(BadRequest) as stored:
        store.list("a", "item", parent="p", **query.page())
    assert held.value.message == stored.value.message == f"{cursor}: no item with id 'nope'"
    store.close()


def test_bodies_refuse_unknown_fields_nan_and_counts_past_any_context():
    class Sample(Body):
        max_tokens: Tokens | None = None
        temperature: float | None = None

    for bad in ({"unknown": 1}, {"temperature": float("nan")}, {"max_tokens": 0}, {"max_tokens": 1 << 21}):
        with pytest.raises(ValidationError):
            Sample.model_validate(bad)
    assert Sample.model_validate({"max_tokens": 1 << 20}).max_tokens == 1 << 20
