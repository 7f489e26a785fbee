"""Flat and nested entity decoding (`felix_train.ner_decoding`) on hand-made gliner2 payloads, and the flat
decoding inside threshold calibration."""

from __future__ import annotations

import pytest

from felix_train.ner_decoding import (
    FLAT,
    NESTED,
    decode_entities,
    flat_entities,
    has_cross_label_overlap,
    plain_entities,
    resolve_decoding,
)


def span(text: str, conf: float, start: int, end: int | None = None) -> dict:
    return {"text": text, "confidence": conf, "start": start, "end": start + len(text) if end is None else end}


def test_the_best_label_wins_an_overlap_across_labels():
    # "Acme Cloud" comes back as organization and product; the product scores higher
    ents = {"organization": [span("Acme Cloud", 0.7, 0), span("Berlin", 0.4, 20)],
            "product": [span("Acme Cloud", 0.9, 0)], "location": [span("Berlin", 0.8, 20)]}
    assert flat_entities(ents) == {"organization": [], "product": [span("Acme Cloud", 0.9, 0)],
                                   "location": [span("Berlin", 0.8, 20)]}


def test_nested_spans_keep_only_the_best_and_disjoint_ones_stay():
    text_spans = {"organization": [span("Bank of America", 0.6, 0)],
                  "location": [span("America", 0.8, 8), span("Paris", 0.3, 30)]}
    out = flat_entities(text_spans)
    assert out == {"organization": [], "location": [span("America", 0.8, 8), span("Paris", 0.3, 30)]}
    # the outer span wins when it scores higher; the inner one goes even under the same label
    same = {"location": [span("New York City", 0.9, 0), span("York", 0.95, 4)]}
    assert flat_entities(same) == {"location": [span("York", 0.95, 4)]}


def test_touching_spans_do_not_overlap():
    ents = {"person": [span("Ann", 0.9, 0, 3)], "organization": [span("Co", 0.5, 3, 5)]}
    assert flat_entities(ents) == ents


def test_ties_are_broken_by_start_end_then_label_whatever_the_dict_order():
    a = {"product": [span("Acme", 0.8, 0)], "organization": [span("Acme", 0.8, 0)]}
    b = dict(reversed(list(a.items())))
    assert flat_entities(a) == flat_entities(b) == {"product": [], "organization": [span("Acme", 0.8, 0)]}
    # equal scores, overlapping: the earlier span wins, then the shorter one
    c = {"x": [span("ab", 0.5, 1)], "y": [span("abc", 0.5, 0)], "z": [span("ab", 0.5, 0)]}
    assert flat_entities(c) == {"x": [], "y": [], "z": [span("ab", 0.5, 0)]}


def test_thresholds_apply_before_the_decoding():
    ents = {"organization": [span("Acme", 0.6, 0)], "product": [span("Acme", 0.9, 0)]}
    # product's own threshold drops its span first, so organization keeps it
    assert flat_entities(ents, {"default": 0.5, "product": 0.95}) == {"organization": [span("Acme", 0.6, 0)],
                                                                       "product": []}
    assert decode_entities(ents, NESTED, {"default": 0.7}) == {"organization": [], "product": [span("Acme", 0.9, 0)]}
    assert decode_entities(ents, NESTED) == ents
    assert decode_entities(ents, FLAT) == {"organization": [], "product": [span("Acme", 0.9, 0)]}


def test_items_without_offsets_and_single_values_keep_their_shape():
    ents = {"a": [{"text": "x", "confidence": 0.9}], "b": span("yy", 0.8, 0), "c": span("y", 0.9, 1), "d": []}
    assert flat_entities(ents) == {"a": [{"text": "x", "confidence": 0.9}], "b": None, "c": span("y", 0.9, 1),
                                   "d": []}


def test_plain_entities_answers_as_gliner2_does_for_the_caller_s_flags():
    ents = {"city": [span("Paris", 0.9, 0), span("paris", 0.8, 20), span("Rome", 0.7, 30)], "one": span("Ann", 0.5, 40)}
    assert plain_entities(ents, include_confidence=False, include_spans=False) == {"city": ["Paris", "Rome"],
                                                                                   "one": "Ann"}
    assert plain_entities(ents, include_confidence=True, include_spans=False) == {
        "city": [{"text": "Paris", "confidence": 0.9}, {"text": "Rome", "confidence": 0.7}],
        "one": {"text": "Ann", "confidence": 0.5}}
    spans_only = plain_entities(ents, include_confidence=False, include_spans=True)
    assert spans_only["city"][1] == {"text": "paris", "start": 20, "end": 25} and len(spans_only["city"]) == 3
    assert plain_entities(ents, include_confidence=True, include_spans=True) == ents


@pytest.mark.parametrize("text, ents, expected", [
    ("Acme Cloud opened in Berlin", {"organization": ["Acme"], "product": ["Acme Cloud"]}, True),
    ("Acme Cloud opened in Berlin", {"organization": ["Acme Cloud"], "location": ["Berlin"]}, False),
    ("Ann met Ann Lee", {"person": ["Ann", "Ann Lee"]}, False),  # same label: not a reason for nested
    ("Bob, then Co", {"person": ["Bob"], "organization": [", then"]}, False),  # touching, not overlapping
    # the second occurrence of "Lee" sits inside the other label's mention
    ("Lee went to Lee Park", {"person": ["Lee"], "location": ["Lee Park"]}, True),
    ("no entity here", {"person": []}, False),
])
def test_cross_label_overlap_finds_every_occurrence(text, ents, expected):
    assert has_cross_label_overlap(text, ents) is expected


def test_auto_resolves_to_nested_only_where_gold_overlaps_across_labels():
    flat_rec = {"input": "Ann works at Acme", "output": {"entities": {"person": ["Ann"], "organization": ["Acme"]}}}
    nested_rec = {"input": "Bank of America", "output": {"entities": {"organization": ["Bank of America"],
                                                                       "location": ["America"]}}}
    assert resolve_decoding("auto", [flat_rec]) == FLAT
    assert resolve_decoding("auto", [flat_rec, nested_rec]) == NESTED
    assert resolve_decoding("auto", [{"input": "x", "output": {"classifications": []}}]) == FLAT
    assert resolve_decoding("flat", [nested_rec]) == FLAT and resolve_decoding("nested", [flat_rec]) == NESTED


def test_calibration_scores_what_flat_decoding_returns():
    from felix_train.trainers.gliner2.calibrate import choose_thresholds

    # one record: "Acme" is an organization, the model also calls it a product (lower score) and finds a location
    gold = [{"organization": ["Acme"], "product": [], "location": ["Rome"]}] * 12
    scored = [{"organization": [("Acme", 0.6, 0, 4)], "product": [("Acme", 0.55, 0, 4)],
               "location": [("Rome", 0.7, 10, 14)]}] * 12
    nested = choose_thresholds(gold, scored)
    flat = choose_thresholds(gold, scored, FLAT)
    assert flat.f1_at_half == 1.0 and nested.f1_at_half < 1.0  # flat drops the product; nested keeps it at 0.5
    assert flat.f1_calibrated == 1.0 and flat.default == 0.5
    assert nested.f1_calibrated == 1.0 and nested.default == 0.6  # nested must raise the threshold to drop it
