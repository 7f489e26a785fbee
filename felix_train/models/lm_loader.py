"""The one loader of a trained (or base) decoder LLM, for `felix-train eval` and for serving.

`load_causal_lm(ref, device)` loads what a `ModelRef` (`felix_train.models.source`) names:

- a PEFT adapter (`adapter_config.json`) as a `PeftModel` on its base (`ModelRef.base()`: the folder
  recorded in `adapter_config.json` when it is here, else the catalog base from the local model store),
  so the base is the adapter disabled (what the preference evals compare against);
- with `prefer_merged` (serving), a LoRA job's `merged/` export instead of its adapter, when there is one;
- a full model (`config.json`) otherwise.

The tokenizer (and its chat template) is the one saved beside the loaded folder, else beside the other
one, else the base's; a tokenizer without a pad token pads with its end-of-sequence token.
`causal_lm_source` says which folder that is, without loading anything. torch, transformers and peft are
imported inside `load_causal_lm`.
"""

from __future__ import annotations

from pathlib import Path

from felix_train.errors import FelixError
from felix_train.models.source import ModelRef

__all__ = ["causal_lm_source", "load_causal_lm"]


def causal_lm_source(ref: ModelRef, *, prefer_merged: bool = False) -> Path:
    """The folder `load_causal_lm` loads: the adapter, else the full weights (`merged/` first with `prefer_merged`).

    Raises FelixError when the model folder holds neither."""
    merged = ref.model_dir / "merged"
    if ref.weights is not None and (ref.adapter is None or (prefer_merged and ref.weights == merged)):
        return ref.weights
    if ref.adapter is not None:
        return ref.adapter
    raise FelixError(f"{ref.model_dir} holds neither a PEFT adapter (adapter_config.json), `merged/` nor a full "
                     "model (config.json); train the job again")


def load_causal_lm(ref: ModelRef, device: str, *, dtype=None, prefer_merged: bool = False):
    """(model in eval mode on `device`, tokenizer with a pad token), as the module docstring says.

    `dtype` is a torch dtype for the weights (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    source = causal_lm_source(ref, prefer_merged=prefer_merged)
    folders = [source, *(f for f in (ref.adapter, ref.weights) if f is not None and f != source)]
    tok_dir = next((f for f in folders if (f / "tokenizer_config.json").exists()), None) or \
        (ref.base() if source == ref.adapter else source)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if source == ref.adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(ref.base()), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(ref.adapter))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
    return model.to(device).eval(), tokenizer
