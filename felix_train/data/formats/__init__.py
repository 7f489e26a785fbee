"""Dataset formats, and the validation of a JSONL file against them.

A dataset is one JSONL file (one JSON object per line, UTF-8) in exactly one format:

> Formats and the algorithms that read them

- `gliner2` (gliner2 / sft): `{"input": str, "output": {"entities": {label: [mention, ...]}, "classifications":
  [...], "relations": [...], "json_structures": [...]}}`, the gliner2 library's own JSONL training format.
- `messages` (causal_lm / sft): `{"messages": [{"role", "content"}, ...]}` plus an optional `tools` list.
- `prompt_completion` (causal_lm / sft): `prompt` and `completion`, both strings or both lists of messages.
- `text` (causal_lm / sft): `{"text": str}`.
- `preference` (causal_lm / dpo): `prompt`, `chosen`, `rejected`, all strings or all lists of messages; `prompt`
  may be left out when `chosen` and `rejected` are whole conversations.
- `prompt` (causal_lm / grpo): `prompt` (a string or a list of messages) plus any other columns (e.g. `answer`)
  that the reward functions read; no `completion`, `chosen` or `rejected`.

`validate_file` streams the file once and reports every bad line with its number, a reason and a stable
`type`. For `gliner2` it rejects whatever gliner2 2.1.0's `InputExample.validate` rejects (and what its loader
would crash on), so a file that passes here never fails inside gliner2. Pure Python: no torch, no gliner2 import.

> The package, one module per job

- `core`: the `DatasetFormat` enum, `ALGORITHM_FORMATS` (what each algorithm reads), `detect_record_format`,
  the `ErrorType` / `LineError` / `ValidationReport` types and the small checks every family shares.
- `ner`: gliner2 records (`input` + `output`) and their task/label stats.
- `chat`: SFT records, `messages`, `prompt_completion` and `text` (and the message-list check).
- `preference`: DPO pairs. `prompt`: GRPO prompts with their answer/reward columns.
- `validate`: the line-level driver, `validate_file`, `check_record`, `iter_records`, reading lines with
  `felix_train.jsonl.iter_jsonl_lines` (the one JSONL reader).

Every public name is importable from `felix_train.data.formats`.
"""

from felix_train.data.formats.chat import ROLES
from felix_train.data.formats.core import (
    ALGORITHM_FORMATS,
    DatasetFormat,
    ErrorType,
    LineError,
    ValidationReport,
    accepted_formats,
    describe_formats,
    detect_record_format,
    format_mismatch_message,
)
from felix_train.data.formats.ner import GLINER2_OUTPUT_KEYS, GLINER2_TASKS
from felix_train.data.formats.validate import check_record, iter_records, record_chars, validate_file

__all__ = [
    "ALGORITHM_FORMATS",
    "GLINER2_OUTPUT_KEYS",
    "GLINER2_TASKS",
    "ROLES",
    "DatasetFormat",
    "ErrorType",
    "LineError",
    "ValidationReport",
    "accepted_formats",
    "check_record",
    "describe_formats",
    "detect_record_format",
    "format_mismatch_message",
    "iter_records",
    "record_chars",
    "validate_file",
]
