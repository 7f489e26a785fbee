"""The GLiNER2 model as felix trains it: loading, the entity count loss, label sampling, the LoRA plan.

- `add_entity_count_loss`: gliner2 2.1.0 skips the count-head loss for entity tasks, so on
  entity-only data the count head is never trained, and once it predicts 0 inference returns no
  entities; felix adds it back on the model instance.
- `set_label_sampling`: entity types shuffled in each training record; gliner2's synthetic label
  names (`entity 1`, ...) off when no record carries label descriptions.
- `lora_plan`: the linear layers gliner2's LoRA adapts for the target groups, and the task heads
  none of whose layers is a target, which felix trains in full (PEFT `modules_to_save`) instead
  of leaving them frozen as gliner2 would. The catalog's built bases, whose heads are fresh,
  target the encoder only.
"""

from __future__ import annotations

import os

MAX_COUNT = 19  # gliner2's count head predicts 0..19


def load_gliner2(path: str | os.PathLike):
    """`GLiNER2.from_pretrained` on a local folder (paths must be `str`)."""
    from gliner2 import GLiNER2

    return GLiNER2.from_pretrained(str(path))


def add_entity_count_loss(model) -> None:
    """Train gliner2's count head on entity tasks too (a required fix for gliner2 2.1.0).

    `SpanExtractorModel._compute_sample_loss` skips the count loss for `entities`
    ("legacy behaviour"), yet inference predicts the entity count with the same head
    and extracts nothing when it predicts 0: a model fine-tuned on entities alone from
    fresh heads returns no entities at all. The entity task's gold count is always 1 (one
    instance holding every type), so the loss teaches the head to open that instance.
    The method is replaced on this instance only; the class and saved files are unchanged.
    """
    import torch
    import torch.nn.functional as F

    original = getattr(model, "_compute_sample_loss", None)
    if original is None or getattr(original, "_felix_entity_count", False):
        return  # not a span model (the boundary architecture has its own count head), or done

    def compute_sample_loss(token_embeddings, embs_per_schema, task_types, structure_labels, device,
                            span_scores_per_schema=None):
        losses = original(token_embeddings=token_embeddings, embs_per_schema=embs_per_schema,
                          task_types=task_types, structure_labels=structure_labels, device=device,
                          span_scores_per_schema=span_scores_per_schema)
        counts, p_embs = [], []
        for i, task_type in enumerate(task_types):
            if task_type != "entities" or not embs_per_schema[i] or structure_labels[i][0] == 0:
                continue
            counts.append(min(int(structure_labels[i][0]), MAX_COUNT))
            p_embs.append(embs_per_schema[i][0])  # the [P] token of the entity schema
        if counts:
            logits = model.count_pred(torch.stack(p_embs))
            target = torch.tensor(counts, dtype=torch.long, device=logits.device)
            losses["count"] = losses["count"] + F.cross_entropy(logits, target, reduction="sum")
        return losses

    compute_sample_loss._felix_entity_count = True
    model._compute_sample_loss = compute_sample_loss


def set_label_sampling(model, records: list[dict]) -> list[str]:
    """Adjust gliner2's training-time label sampling for felix data; returns what changed, for the log.

    - Entity types are shuffled in every training record (gliner2 2.1.0 keeps the listed
      order). felix lists every label of a dataset in every record, in one order, so without
      shuffling the model can learn "the first [E] is person" instead of reading the label:
      measured on the MiniLM quickstart, such a model scored eval F1 0.93 with the training
      order of labels and 0.10 with the labels sorted (types permuted by position).
    - Synthetic label names are off when no training record describes its labels. With
      probability `synthetic_entity_label_prob` (0.2) gliner2 renames a record's types (and
      structure fields) to `entity 1`, `entity 2`, ... so that the model learns to read
      `entity_descriptions` / `json_descriptions`; without descriptions such a record carries
      no label information, and one record in five is spent on it.
    """
    sampling = getattr(getattr(model, "processor", None), "sampling_config", None)
    if sampling is None:
        return []
    changed = []
    if hasattr(sampling, "shuffle_entities") and not sampling.shuffle_entities:
        sampling.shuffle_entities = True
        changed.append("entity types shuffled in each training record")
    described = any(isinstance(r.get("output"), dict)
                    and (r["output"].get("entity_descriptions") or r["output"].get("json_descriptions"))
                    for r in records)
    if not described and getattr(sampling, "synthetic_entity_label_prob", 0):
        sampling.synthetic_entity_label_prob = 0.0
        changed.append("no label descriptions in the data: synthetic label names (`entity 1`, ...) off")
    return changed


def lora_plan(model, targets: list[str]) -> tuple[list[str], list[str]]:
    """(linear layers that get LoRA adapters, task heads trained in full) for gliner2 target groups.

    The adapted layers are what gliner2's own LoRA picks for `targets`; a task head
    (`span_rep`, `classifier`, `count_embed`, `count_pred`, ...) none of whose layers is
    adapted trains in full instead of staying frozen.
    """
    from gliner2.training.lora_targets import _resolve_targets, _task_module_names

    lora_modules = _resolve_targets(model, list(targets))
    present = {name for name, _ in model.named_children()}
    heads = [h for h in _task_module_names(model) if h in present]
    full = [h for h in heads if not any(m == h or m.startswith(f"{h}.") for m in lora_modules)]
    return lora_modules, full
