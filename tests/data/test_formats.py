"""Dataset formats and `validate_file`: every bad line reported with its number and type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from felix_train.catalog import Algorithm, ModelFamily
from felix_train.data.formats import (
    ALGORITHM_FORMATS,
    DatasetFormat,
    ErrorType,
    detect_record_format,
    format_mismatch_message,
    iter_records,
    validate_file,
)
from felix_train.errors import DatasetError
from felix_train.jsonl import JSONLError, iter_jsonl, iter_jsonl_lines

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

F = DatasetFormat


def write_jsonl(path: Path, lines: list) -> Path:
    """Each item: a dict/list (dumped as JSON), a str (written as is) or bytes (raw)."""
    with open(path, "wb") as fh:
        for line in lines:
            if isinstance(line, bytes):
                fh.write(line + b"\n")
            elif isinstance(line, str):
                fh.write(line.encode("utf-8") + b"\n")
            else:
                fh.write(json.dumps(line).encode("utf-8") + b"\n")
    return path


def chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


GOOD_MSG = {"messages": chat(("user", "Hi"), ("assistant", "Hello!"))}
GOOD_TEXT = {"text": "some text"}
GOOD_PREF = {"prompt": "Q?", "chosen": "good", "rejected": "bad"}
GOOD_PROMPT = {"prompt": "2+2?", "answer": "4"}
GOOD_PC = {"prompt": "Say hi", "completion": "hi"}
GOOD_NER = {"input": "John lives in Paris.", "output": {"entities": {"person": ["John"], "location": ["Paris"]}}}


# (id, lines, [(line, type), ...]) — the exact errors the file must produce, in order.
MALFORMED = [
    # -- any format ------------------------------------------------------------------------------------------
    ("bad_json", [GOOD_TEXT, '{"text": "a",}'], [(2, "invalid_json")]),
    ("not_an_object", [GOOD_TEXT, "[1, 2]", '"just a string"'], [(2, "not_an_object"), (3, "not_an_object")]),
    ("empty_file", [], [(0, "empty_file")]),
    ("only_blank_lines", ["", "   ", "\t"], [(0, "empty_file")]),
    ("unknown_format", [{"question": "q", "reply": "r"}], [(1, "unknown_format")]),
    ("invalid_utf8", [GOOD_TEXT, b'{"text": "caf\xe9"}'], [(2, "invalid_utf8")]),
    ("mixed_formats", [GOOD_MSG, "", GOOD_MSG, GOOD_TEXT], [(4, "mixed_formats")]),
    # -- messages --------------------------------------------------------------------------------------------
    ("unknown_role", [GOOD_MSG, {"messages": chat(("user", "a"), ("bot", "b"), ("assistant", "c"))}],
     [(2, "unknown_role")]),
    ("empty_assistant_content", [{"messages": chat(("user", "a"), ("assistant", "  "))}], [(1, "empty_content")]),
    ("no_assistant_turn", [GOOD_MSG, GOOD_MSG, {"messages": chat(("system", "s"), ("user", "a"))}],
     [(3, "no_assistant_turn")]),
    ("last_turn_not_assistant", [{"messages": chat(("user", "a"), ("assistant", "b"), ("user", "c"))}],
     [(1, "last_turn_not_assistant")]),
    ("messages_not_list", [{"messages": "user: hi"}], [(1, "wrong_type")]),
    ("message_without_content", [{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}],
     [(1, "missing_key")]),
    ("content_not_string", [{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}],
     [(1, "wrong_type")]),
    ("tools_not_list", [{**GOOD_MSG, "tools": "search"}], [(1, "wrong_type")]),
    ("two_problems_one_line", [{"messages": chat(("robot", "a"), ("assistant", ""))}],
     [(1, "unknown_role"), (1, "empty_content")]),
    # -- prompt_completion -----------------------------------------------------------------------------------
    ("pc_mixed_types", [GOOD_PC, {"prompt": "a", "completion": chat(("assistant", "b"))}], [(2, "wrong_type")]),
    ("pc_empty_completion", [{"prompt": "a", "completion": ""}], [(1, "empty_value")]),
    ("pc_conversational_ends_with_user",
     [{"prompt": chat(("user", "a")), "completion": chat(("assistant", "b"), ("user", "c"))}],
     [(1, "last_turn_not_assistant")]),
    # -- text ------------------------------------------------------------------------------------------------
    ("text_not_string", [GOOD_TEXT, {"text": 12}], [(2, "wrong_type")]),
    ("text_empty", [{"text": ""}, GOOD_TEXT, {"text": "   "}], [(1, "empty_value"), (3, "empty_value")]),
    # -- preference ------------------------------------------------------------------------------------------
    ("chosen_equals_rejected", [GOOD_PREF, {"prompt": "Q", "chosen": "same", "rejected": "same"}],
     [(2, "chosen_equals_rejected")]),
    ("missing_rejected", [{"prompt": "Q", "chosen": "a"}], [(1, "missing_key")]),
    ("text_pair_without_prompt", [{"chosen": "a", "rejected": "b"}], [(1, "missing_key")]),
    ("preference_mixed_types", [{"prompt": "Q", "chosen": chat(("assistant", "a")), "rejected": "b"}],
     [(1, "wrong_type")]),
    ("conversational_chosen_ends_with_user",
     [{"chosen": chat(("user", "q"), ("assistant", "a"), ("user", "more")), "rejected": chat(("user", "q"), ("assistant", "b"))}],
     [(1, "last_turn_not_assistant")]),
    # -- prompt (GRPO) ---------------------------------------------------------------------------------------
    ("prompt_not_string", [GOOD_PROMPT, {"prompt": 42, "answer": "x"}], [(2, "wrong_type")]),
    ("prompt_empty", [{"prompt": "", "answer": "x"}], [(1, "empty_value")]),
    ("prompt_then_completion", [GOOD_PROMPT, GOOD_PC], [(2, "mixed_formats")]),
    # -- gliner2 ---------------------------------------------------------------------------------------------
    ("mention_not_found", [GOOD_NER, {"input": "Ann is here.", "output": {"entities": {"person": ["Bob"]}}}],
     [(2, "mention_not_found")]),
    ("empty_entities_no_type_anywhere", [{"input": "nothing", "output": {"classifications": []}},
                                         {"input": "nothing here", "output": {"entities": {}}},
                                         {"input": "nor here", "output": {"entities": {}}}],
     [(1, "no_task"), (2, "empty_entities")]),
    ("entity_values_not_list", [{"input": "Ann is here.", "output": {"entities": {"person": "Ann"}}}],
     [(1, "wrong_type")]),
    ("entity_values_not_strings", [{"input": "Ann is here.", "output": {"entities": {"person": [1]}}}],
     [(1, "wrong_type")]),
    ("empty_input", [{"input": "", "output": {"entities": {"person": []}}}], [(1, "empty_value")]),
    ("missing_output", [{"input": "Ann"}], [(1, "missing_key")]),
    ("output_without_task", [{"input": "Ann", "output": {}}], [(1, "no_task")]),
    ("misspelled_task", [{"input": "Ann", "output": {"entites": {"person": ["Ann"]}}}],
     [(1, "unexpected_key"), (1, "no_task")]),
    ("true_label_not_in_labels",
     [{"input": "great movie", "output": {"classifications": [
         {"task": "sentiment", "labels": ["positive", "negative"], "true_label": "good"}]}}],
     [(1, "invalid_label")]),
    ("classification_without_labels",
     [{"input": "great movie", "output": {"classifications": [{"task": "sentiment", "true_label": "positive"}]}}],
     [(1, "missing_key")]),
    ("relation_value_not_found",
     [{"input": "Elon founded SpaceX.", "output": {"relations": [{"founded": {"head": "Elon", "tail": "Tesla"}}]}}],
     [(1, "mention_not_found")]),
    ("relation_inconsistent_fields",
     [{"input": "Elon founded SpaceX and Tesla.", "output": {"relations": [
         {"founded": {"head": "Elon", "tail": "SpaceX"}}, {"founded": {"founder": "Elon", "company": "Tesla"}}]}}],
     [(1, "inconsistent_relation")]),
    ("relations_not_objects", [{"input": "Elon", "output": {"relations": ["founded"]}}], [(1, "wrong_type")]),
    ("choice_not_in_choices",
     [{"input": "iPhone 15 costs $999", "output": {"json_structures": [
         {"product": {"name": "iPhone 15", "category": {"value": "car", "choices": ["phone", "laptop"]}}}]}}],
     [(1, "invalid_label")]),
    ("structure_value_not_found",
     [{"input": "iPhone 15 costs $999", "output": {"json_structures": [{"product": {"name": "Pixel"}}]}}],
     [(1, "mention_not_found")]),
    ("record_metadata_bad_mode",
     [{"input": "iPhone 15 costs $999", "output": {"json_structures": [{"product": {"name": "iPhone 15"}}],
                                                   "record_metadata": {"product": {"mode": "magic"}}}}],
     [(1, "invalid_value")]),
    ("record_metadata_anchor_not_a_field",
     [{"input": "iPhone 15 costs $999", "output": {"json_structures": [{"product": {"name": "iPhone 15"}}],
                                                   "record_metadata": {"product": {"mode": "natural", "anchor": "sku"}}}}],
     [(1, "invalid_value")]),
    ("span_offsets_wrong",
     [{"input": "John lives in Paris.", "output": {"entities": {"person": [{"text": "John", "start": 1, "end": 5}]}}}],
     [(1, "mention_not_found")]),
    ("gliner2_then_messages", [GOOD_NER, GOOD_NER, GOOD_MSG], [(3, "mixed_formats")]),
]


@pytest.mark.parametrize("lines, expected", [pytest.param(l, e, id=i) for i, l, e in MALFORMED])
def test_malformed_file_reports_each_bad_line(tmp_path, lines, expected):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", lines))
    got = [(e.line, e.type) for e in report.errors]
    assert got == expected, [e.msg for e in report.errors]
    assert report.num_errors == len(expected)
    assert not report.ok
    for err in report.errors:
        assert err.type in {t.value for t in ErrorType}
        if err.line:
            assert err.msg.startswith(f"line {err.line}"), err.msg


def test_malformed_cases_cover_every_format():
    assert len(MALFORMED) >= 20
    formats = set()
    for _, lines, _ in MALFORMED:
        for line in lines:
            if isinstance(line, dict):
                formats.add(detect_record_format(line))
    assert formats >= set(DatasetFormat)


def test_messages_exact_wording(tmp_path):
    lines = [GOOD_MSG] * 11 + [{"messages": chat(("user", "a"), ("bot", "b"), ("assistant", "c"))}]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert report.errors[0].msg == 'line 12: messages[1].role is "bot"; expected one of system, user, assistant, tool'


def test_mixed_formats_exact_wording(tmp_path):
    lines = [GOOD_MSG] * 6 + [GOOD_TEXT]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert report.errors[0].msg == "line 7 is `text` but line 1 is `messages`; one dataset has one format"
    assert report.format is F.MESSAGES


def test_bad_json_names_the_position(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", ['{"text": "a",}']))
    assert report.errors[0].msg.startswith("line 1: invalid JSON at column 14: ")


def test_empty_entities_message_gives_the_fix(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", [{"input": "hi", "output": {"entities": {}}}]))
    assert [(e.line, e.type) for e in report.errors] == [(1, "empty_entities")]
    assert '"person": []' in report.errors[0].msg and "no record of this dataset names an entity type" in report.errors[0].msg


def test_empty_entities_accepted_where_the_dataset_names_types(tmp_path):
    # `{}` = no mention of any of the dataset's types; the trainer lists them all with [] (fill_entity_labels)
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", [{"input": "hi there", "output": {"entities": {}}}, GOOD_NER]))
    assert report.errors == [] and report.stats["records_without_entities"] == 1


def test_format_not_expected(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD_PREF])
    expected = ALGORITHM_FORMATS[(ModelFamily.CAUSAL_LM, Algorithm.SFT)]
    report = validate_file(path, expected, purpose="`sft` on causal_lm")
    assert [(e.line, e.type) for e in report.errors] == [(0, "format_not_accepted")]
    assert report.errors[0].msg == (
        "dataset is `preference` but `sft` on causal_lm needs one of messages, prompt_completion, text"
    )
    assert validate_file(path, {F.PREFERENCE}).ok


def test_format_mismatch_message_names_the_fix():
    msg = format_mismatch_message(F.PREFERENCE, "causal_lm", "sft", name="hh")
    assert msg.startswith("dataset 'hh' is `preference` but `sft` on causal_lm needs one of messages, prompt_completion, text")
    assert "training_algorithm: dpo" in msg
    assert "convert the file" in format_mismatch_message(F.GLINER2, "causal_lm", "grpo")


def test_max_errors_caps_the_list_not_the_count(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", [{"text": ""}] * 10), max_errors=3)
    assert len(report.errors) == 3 and report.num_errors == 10
    assert [e.line for e in report.errors] == [1, 2, 3]


def test_algorithm_formats_table():
    assert ALGORITHM_FORMATS == {
        (ModelFamily.GLINER2, Algorithm.SFT): {F.GLINER2},
        (ModelFamily.CAUSAL_LM, Algorithm.SFT): {F.MESSAGES, F.PROMPT_COMPLETION, F.TEXT},
        (ModelFamily.CAUSAL_LM, Algorithm.DPO): {F.PREFERENCE},
        (ModelFamily.CAUSAL_LM, Algorithm.GRPO): {F.PROMPT},
    }


@pytest.mark.parametrize(
    "record, fmt",
    [
        (GOOD_NER, F.GLINER2),
        (GOOD_MSG, F.MESSAGES),
        (GOOD_PC, F.PROMPT_COMPLETION),
        (GOOD_TEXT, F.TEXT),
        (GOOD_PREF, F.PREFERENCE),
        ({"chosen": chat(("user", "q"), ("assistant", "a")), "rejected": chat(("user", "q"), ("assistant", "b"))},
         F.PREFERENCE),
        (GOOD_PROMPT, F.PROMPT),
        ({"other": 1}, None),
        ([1], None),
    ],
)
def test_detect_record_format(record, fmt):
    assert detect_record_format(record) is fmt


# -- good files -------------------------------------------------------------------------------------------------

GOOD_FILES = {
    F.MESSAGES: [
        {"messages": chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"))},
        {"messages": [{"role": "user", "content": "Weather?"},
                      {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {}}}]},
                      {"role": "tool", "content": "sunny"},
                      {"role": "assistant", "content": "Sunny."}],
         "tools": [{"type": "function", "function": {"name": "w"}}]},
    ],
    F.PROMPT_COMPLETION: [
        GOOD_PC,
        {"prompt": "", "completion": "x"},
    ],
    F.TEXT: [{"text": "a"}, {"text": "bb"}, {"text": "ccc"}],
    F.PREFERENCE: [
        GOOD_PREF,
        {"prompt": "Q?", "chosen": "yes", "rejected": "no"},
    ],
    F.PROMPT: [GOOD_PROMPT, {"prompt": chat(("system", "math"), ("user", "3+3?")), "answer": "6"}],
    F.GLINER2: [
        GOOD_NER,
        {"input": "Nothing to see.", "output": {"entities": {"person": [], "location": []}}},
        {"input": "john met MARY", "output": {"entities": {"person": ["John", "mary"]}}},  # case-insensitive, as gliner2
        {"input": "John lives in Paris.", "output": {"entities": {"person": [{"text": "John", "start": 0, "end": 4}]}}},
        {"input": "great movie", "output": {"classifications": [
            {"task": "sentiment", "labels": ["positive", "negative"], "true_label": "positive",
             "label_descriptions": {"positive": "good"}, "examples": [["bad film", "negative"]]},
            {"task": "topics", "labels": ["film", "music", "food"], "true_label": ["film"], "multi_label": True}]}},
        {"input": "Elon founded SpaceX.", "output": {"relations": [{"founded": {"head": "Elon", "tail": "SpaceX"}}]}},
        {"input": "iPhone 15 costs $999", "output": {
            "json_structures": [{"product": {"name": "iPhone 15", "price": "$999", "color": None,
                                             "category": {"value": "phone", "choices": ["phone", "laptop"]}}}],
            "json_descriptions": {"product": {"name": "product name"}},
            "record_metadata": {"product": {"mode": "natural", "anchor": "name"}}}},
    ],
}


@pytest.mark.parametrize("fmt", list(GOOD_FILES), ids=lambda f: f.value)
def test_good_file_passes(tmp_path, fmt):
    lines = GOOD_FILES[fmt]
    path = write_jsonl(tmp_path / "d.jsonl", [lines[0], "", *lines[1:], "   "])
    report = validate_file(path, {fmt})
    assert report.ok, [e.msg for e in report.errors]
    assert report.format is fmt
    assert report.num_records == len(lines)
    assert report.columns == sorted({k for r in lines for k in r})
    chars = report.stats["chars"]
    assert chars["min"] <= chars["mean"] <= chars["max"] and chars["min"] <= chars["p95"] <= chars["max"]
    assert len(list(iter_records(path))) == len(lines)


def test_text_length_stats(tmp_path):
    lines = [{"text": "x" * n} for n in range(1, 21)]
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", lines))
    assert report.stats == {"chars": {"min": 1, "mean": 10.5, "max": 20, "p95": 19}}


def test_preference_length_counts_prompt_and_longer_response(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "abc", "chosen": "12345", "rejected": "1"}]))
    assert report.stats["chars"]["max"] == 8


def test_gliner2_stats(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", GOOD_FILES[F.GLINER2]))
    assert report.stats["records_per_task"] == {
        "classifications": 1, "entities": 4, "json_structures": 1, "relations": 1,
    }
    assert report.stats["records_per_entity_label"] == {"location": 1, "person": 3}
    assert report.stats["mentions_per_entity_label"] == {"location": 1, "person": 4}
    assert report.stats["records_without_entities"] == 4


def test_iter_records_skips_blank_lines_and_raises_on_bad_json(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD_TEXT, "", {"text": "b"}])
    assert list(iter_records(path)) == [GOOD_TEXT, {"text": "b"}]
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD_TEXT, "{oops"])
    with pytest.raises(DatasetError, match="line 2"):
        list(iter_records(bad))


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_TEXT).encode() + b"\n")
    assert validate_file(path).ok



# -- the one JSONL reader (felix_train.jsonl) the validator reads lines with -------------------------------------

def test_iter_jsonl_lines_yields_each_bad_line_and_goes_on(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD_TEXT, b"\xff", "", "{oops", [1], {"text": "b"}])
    got = list(iter_jsonl_lines(path))
    assert [n for n, _ in got] == [1, 2, 4, 5, 6]
    assert got[0][1] == GOOD_TEXT and got[3][1] == [1] and got[4][1] == {"text": "b"}
    utf8, bad_json = got[1][1], got[2][1]
    assert isinstance(utf8, JSONLError) and utf8.kind == "invalid_utf8" and utf8.line == 2
    assert utf8.message == "not UTF-8 (byte 0); save the file as UTF-8"
    assert isinstance(bad_json, JSONLError) and bad_json.kind == "invalid_json" and bad_json.line == 4
    assert bad_json.message.startswith("invalid JSON at column 2: ")
    with pytest.raises(JSONLError, match="line 2: not UTF-8") as err:  # iter_jsonl stops at the first bad line
        list(iter_jsonl(path))
    assert isinstance(err.value.__cause__, UnicodeDecodeError)


def test_validate_reports_reader_errors_with_their_line_and_type(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD_TEXT, b"\xff\xfe", "{bad", "[1]", "[" * 100_000])
    report = validate_file(path)
    assert [(e.line, e.type) for e in report.errors] == [
        (2, "invalid_utf8"), (3, "invalid_json"), (4, "not_an_object"), (5, "invalid_json"),
    ]
    assert report.errors[0].msg == "line 2: not UTF-8 (byte 0); save the file as UTF-8"
    assert report.errors[1].msg == "line 3: invalid JSON at column 2: Expecting property name enclosed in double quotes"
    assert report.errors[2].msg == "line 4: a record must be a JSON object, got list"
    assert report.errors[3].msg == "line 5: JSON nested too deeply"
    assert report.num_records == 5 and report.format is F.TEXT


def test_iter_records_maps_reader_errors_to_dataset_error(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD_TEXT, b"\xff"])
    with pytest.raises(DatasetError, match=r"line 2: not UTF-8 \(byte 0\)") as err:
        list(iter_records(bad))
    assert isinstance(err.value.__cause__, JSONLError)
    with pytest.raises(DatasetError, match="line 1: a record must be a JSON object, got list"):
        list(iter_records(write_jsonl(tmp_path / "list.jsonl", [[1]])))


# -- the real datasets in shared/data ---------------------------------------------------------------------------

def shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared/data is not checked out here)")
    return path


def test_real_wnut17_is_accepted_as_shipped():
    report = validate_file(shared("ner/wnut17_train.jsonl"), max_errors=5000)
    assert report.format is F.GLINER2 and report.num_records == 2000
    # SOURCES.md: 727 of the 2000 sentences have entities (1168 mentions); the other 1273 are `"entities": {}`,
    # accepted: the trainer lists the dataset's six types with [] in them.
    assert report.errors == []
    assert report.stats["records_per_task"] == {"entities": 727}
    assert sum(report.stats["mentions_per_entity_label"].values()) == 1168
    assert report.stats["records_without_entities"] == 1273


@pytest.mark.parametrize(
    "rel, fmt, columns",
    [
        ("dolly/dolly_open_qa_1000.jsonl", F.MESSAGES, ["messages"]),
        ("gsm8k/gsm8k_train_sample.jsonl", F.PROMPT, ["answer", "prompt", "solution"]),
        ("hh_rlhf/hh_rlhf_harmless_base_train_sample.jsonl", F.PREFERENCE, ["chosen", "prompt", "rejected"]),
    ],
)
def test_real_datasets_pass(rel, fmt, columns):
    report = validate_file(shared(rel))
    assert report.ok, [e.msg for e in report.errors[:5]]
    assert report.format is fmt and report.num_records == 1000 and report.columns == columns
