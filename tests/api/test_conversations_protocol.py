"""Conversations API shapes without a server, checked against the openai package's types."""

import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource

from poly_ray.api.conversations import protocol as p
from poly_ray.errors import BadRequest, PayloadTooLarge


def test_conversation_object_is_a_valid_openai_conversation():
    conv = Conversation.model_validate(p.conversation_object({"topic": "demo"}))
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "demo"}
    assert ConversationDeletedResource.model_validate(p.deleted(conv.id)).deleted


@pytest.mark.parametrize("value, path", [
    ([], "metadata:"),
    ({f"k{i}": "v" for i in range(17)}, "metadata:"),
    ({"k" * 65: "v"}, "metadata.kkkk"),
    ({"n": 3}, "metadata.n:"),
    ({"long": "x" * 513}, "metadata.long:"),
])
def test_bad_metadata_names_the_key(value, path):
    with pytest.raises(BadRequest) as err:
        p.metadata(value)
    assert err.value.message.startswith(path)


def test_items_use_the_responses_rules_with_their_own_path():
    [item] = p.new_items([{"type": "message", "role": "user", "content": "hi"}])
    assert item["role"] == "user" and p.new_items(None) == []
    with pytest.raises(BadRequest, match=r"^items\[0\]\.role:"):
        p.new_items([{"role": "robot", "content": "x"}])
    with pytest.raises(BadRequest, match=r"^items:"):
        p.new_items("hi")
    with pytest.raises(PayloadTooLarge, match=r"^items: at most 20"):
        p.new_items([{"role": "user", "content": "x"}] * 21)
