"""Mention replacement (`engine.mention_replacement`): what is swapped, what is left alone, and that it is seeded."""

from __future__ import annotations

import random

from felix_train.trainers.gliner2.augment import mention_pool, plain_entity_record, replace_mentions

RECORDS = [
    {"input": "John Smith works at Google in London .",
     "output": {"entities": {"person": ["John Smith"], "company": ["Google"], "location": ["London"]}}},
    {"input": "Mary Jones joined Apple in Paris .",
     "output": {"entities": {"person": ["Mary Jones"], "company": ["Apple"], "location": ["Paris"]}}},
    {"input": "Ada met Bob .", "output": {"entities": {"person": ["Ada", "Bob"], "company": [], "location": []}}},
    {"input": "the weather was good .", "output": {"entities": {"person": [], "company": [], "location": []}}},
]
POOL = mention_pool(RECORDS)


def test_the_pool_holds_each_label_s_distinct_mentions():
    assert POOL == {"person": ["Ada", "Bob", "John Smith", "Mary Jones"], "company": ["Apple", "Google"],
                    "location": ["London", "Paris"]}


def test_every_mention_swapped_at_p_1_in_the_text_and_its_list():
    out = replace_mentions(RECORDS[0], POOL, 1.0, random.Random(0))
    ents = out["output"]["entities"]
    assert ents["company"] == ["Apple"] and ents["location"] == ["Paris"]
    assert ents["person"][0] in {"Ada", "Bob", "Mary Jones"}
    assert out["input"] == f"{ents['person'][0]} works at Apple in Paris ."
    assert RECORDS[0]["input"] == "John Smith works at Google in London ."  # the record itself is not changed


def test_p_0_and_entity_free_records_are_returned_as_they_are():
    assert replace_mentions(RECORDS[0], POOL, 0.0, random.Random(0)) is RECORDS[0]
    assert replace_mentions(RECORDS[3], POOL, 1.0, random.Random(0)) is RECORDS[3]


def test_the_draw_is_a_function_of_the_seed_and_about_p_of_the_mentions_change():
    draws = [replace_mentions(RECORDS[1], POOL, 0.5, random.Random(f"42:{e}:1")) for e in range(200)]
    again = [replace_mentions(RECORDS[1], POOL, 0.5, random.Random(f"42:{e}:1")) for e in range(200)]
    assert draws == again
    changed = sum(a != b for d in draws for a, b in zip(d["output"]["entities"].values(),
                                                           RECORDS[1]["output"]["entities"].values()))
    assert 0.35 < changed / (3 * 200) < 0.65


def test_ambiguous_records_are_left_alone():
    other_task = {"input": "Ada met Bob .", "output": {"entities": {"person": ["Ada"]},
                                                       "relations": [{"met": {"head": "Ada", "tail": "Bob"}}]}}
    nested = {"input": "New York Times in New York .", "output": {"entities": {"company": ["New York Times"],
                                                                               "location": ["New York"]}}}
    two_labels = {"input": "Paris is Paris .", "output": {"entities": {"person": ["Paris"], "location": ["Paris"]}}}
    missing = {"input": "john smith spoke .", "output": {"entities": {"person": ["John Smith"]}}}
    assert not plain_entity_record(other_task)
    for record in (other_task, nested, two_labels, missing):
        assert replace_mentions(record, POOL, 1.0, random.Random(0)) is record


def test_a_mention_inside_a_word_is_not_replaced():
    record = {"input": "Bobby and Bob .", "output": {"entities": {"person": ["Bob"]}}}
    out = replace_mentions(record, {"person": ["Bob", "Eve"]}, 1.0, random.Random(0))
    assert out["input"] == "Bobby and Eve ." and out["output"]["entities"]["person"] == ["Eve"]
