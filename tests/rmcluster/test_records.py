import pytest

from rmcluster.records import RecordError, derive_id, items_from_raw, parse_record

PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]


def test_messages_record_is_one_item():
    (item,) = items_from_raw({"id": 5, "messages": PROMPT + [{"role": "assistant", "content": "4"}]})
    assert (item.id, item.index, item.label, item.num_prompt_messages) == ("5", 0, None, 2)


def test_responses_record_appends_each_response_as_assistant_turn():
    items = items_from_raw({"prompt": "2+2?", "responses": ["4", [{"role": "assistant", "content": "five"}]]})
    assert [i.index for i in items] == [0, 1]
    assert items[0].messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert items[1].messages[-1]["content"] == "five"
    assert len({i.id for i in items}) == 1


def test_pair_record_is_chosen_then_rejected():
    items = items_from_raw({"prompt": PROMPT, "chosen": "4", "rejected": "5"})
    assert [(i.index, i.label) for i in items] == [(0, "chosen"), (1, "rejected")]
    assert items[0].messages[:2] == PROMPT and items[0].num_prompt_messages == 2


def test_text_record():
    (item,) = items_from_raw({"text": "<|begin_of_text|>hi"})
    assert item.text == "<|begin_of_text|>hi" and item.messages is None


def test_metadata_keys_and_nulls_are_ignored():
    # Parquet with mixed shapes gives every record every column, null where absent.
    items = items_from_raw({"text": None, "messages": None, "prompt": "q", "responses": ["a"], "source": "x"})
    assert len(items) == 1


def test_derived_ids_are_deterministic_and_content_based():
    a = {"prompt": "q", "responses": ["a"]}
    assert items_from_raw(dict(a))[0].id == items_from_raw(dict(a))[0].id == derive_id(a)
    assert items_from_raw({"prompt": "q", "responses": ["b"]})[0].id != derive_id(a)


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"prompt": "q"}, "responses: Field required"),
        ({"prompt": "q", "chosen": "a"}, "rejected: Field required"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        ({"messages": [{"role": "user"}]}, "messages.0.content: Field required"),
        ({"prompt": "q", "responses": ["a", 3]}, "responses.1"),
        ({"text": ""}, "text: String should have at least 1 character"),
        ({"foo": 1}, "a record needs one of"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_errors_name_the_record_and_field(raw, fragment):
    with pytest.raises(RecordError) as info:
        parse_record(raw)
    assert fragment in str(info.value)
    if isinstance(raw, dict):
        assert info.value.record_id in str(info.value)


def test_error_id_matches_valid_id_derivation():
    bad = {"prompt": "q", "responses": []}
    with pytest.raises(RecordError) as info:
        parse_record(bad)
    assert info.value.record_id == derive_id(bad)
