"""SFT's chat template: one with `{% generation %}` markers that renders like the model's own.

`training_chat_template(tokenizer, model_id)` keeps a template that has the markers, else takes TRL's
training template for the model family, else (ChatML models whose template renders exactly like felix's
ChatML, SmolLM2 among them) felix's ChatML with markers; with none of these it refuses, because
assistant-only loss would silently train on the prompt. `setup_tokenizer(ctx, needs_markers)` is the
base tokenizer (right padding) with that template.

Imports transformers and TRL at module import: load it only inside a trainer's `run()`.
"""

from __future__ import annotations

import re

from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from felix_train.errors import FelixError
from felix_train.models.causal_lm import EOS_TOKEN, chatml_template
from felix_train.trainers.context import TrainContext
from felix_train.trainers.lm_common import load_tokenizer

_PROBES = [
    [{"role": "user", "content": "PROBE_USER_1"}, {"role": "assistant", "content": "PROBE_ASSISTANT_1"}],
    [{"role": "system", "content": "PROBE_SYSTEM"}, {"role": "user", "content": "PROBE_USER_1"},
     {"role": "assistant", "content": "PROBE_ASSISTANT_1"}, {"role": "user", "content": "PROBE_USER_2"},
     {"role": "assistant", "content": "PROBE_ASSISTANT_2"}],
]


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _chatml_training_template(tokenizer) -> str | None:
    """ChatML with generation markers, if it renders exactly like the tokenizer's own template; else None."""
    original = tokenizer.chat_template
    if not isinstance(original, str) or "<|im_start|>" not in original or "<|im_end|>" not in original:
        return None
    try:
        alone = _render(tokenizer, original, _PROBES[0][:1])
    except Exception:  # noqa: BLE001 - a template that cannot render the probe is not ChatML-compatible
        return None
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n", alone, re.S)
    candidate = chatml_template(found.group(1) if found else None)
    for messages in _PROBES:
        if _render(tokenizer, original, messages) != _render(tokenizer, candidate, messages):
            return None
        if _render(tokenizer, original, messages[:-1], True) != _render(tokenizer, candidate, messages[:-1], True):
            return None
    return candidate


def training_chat_template(tokenizer, model_id: str) -> str:
    """A chat template with `{% generation %}` markers that renders like the model's own.

    Kept as is when it has the markers; else TRL's training template for the model family
    (`trl.chat_template_utils.get_training_chat_template`); else, for ChatML models whose template
    renders exactly like felix's ChatML template (SmolLM2 among them), that template with markers.

    Raises:
        FelixError: no such template can be made: assistant-only loss would silently train on the prompt.
    """
    template = tokenizer.chat_template
    if template is None:
        if EOS_TOKEN in tokenizer.get_vocab() and "<|im_start|>" in tokenizer.get_vocab():
            return chatml_template()
        raise FelixError(f"{model_id} has no chat template, so its assistant turns cannot be found; "
                         "set `engine.completion_only_loss: false` to train on whole sequences, or use "
                         "`text` / `prompt_completion` datasets")
    if has_generation_markers(template):
        return template if isinstance(template, str) else template["default"]
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        patched = None
    if patched is not None:
        return patched
    chatml = _chatml_training_template(tokenizer)
    if chatml is not None:
        return chatml
    raise FelixError(
        f"the chat template of {model_id} has no `{{% generation %}}` markers and neither TRL nor felix can patch "
        "it, so assistant-only loss would train on the prompt too; set `engine.completion_only_loss: false` to "
        "train on whole conversations knowingly, or use `prompt_completion` datasets"
    )


def setup_tokenizer(ctx: TrainContext, needs_markers: bool):
    tokenizer = load_tokenizer(ctx)
    tokenizer.padding_side = "right"
    if needs_markers:
        template = training_chat_template(tokenizer, ctx.model.entry.id)
        if template != tokenizer.chat_template:
            ctx.reporter.log("chat template: using a training-compatible version with {% generation %} markers "
                             "(renders the same text); it is saved with the model")
        tokenizer.chat_template = template
    return tokenizer
