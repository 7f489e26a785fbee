"""The GLiNER2 span loss as felix trains it: `engine.span_loss` (positive weight, focal loss, negative drop).

gliner2's span model scores every (instance, field, start word, width) cell of a record and sums a
binary cross-entropy over all of them, after dropping each negative cell with probability 0.5
(`SpanExtractorModel.compute_struct_loss_from_scores`, `masking_rate=0.5`). On tweets, where most
records hold no entity at all, nearly every cell is a negative: they swamp the gradient and the
rare types stay at 0. `set_span_loss` replaces that method on one model instance (the class and the
saved files are unchanged, so the model stays loadable by stock gliner2) with the same loss plus:

- `positive_weight` w: a positive cell's term times w (GLiNER's focal alpha a is w = a / (1 - a));
- `focal_gamma` g: each term times (1 - p_t)^g, p_t the probability given to the right answer
  (Lin et al. 2017, the loss GLiNER trains with), so confidently right cells, nearly all of them
  easy negatives, count for little;
- `negative_drop` q: the share of negative cells left out of the loss at random, gliner2's masking
  rate.

At (1, 0, 0.5) the loss is gliner2's, term for term and draw for draw (the same random mask).
Eval losses use the same weights (without the random drop, as gliner2 does).
"""

from __future__ import annotations

from felix_train.spec_engine import SpanLossSpec as SpanLoss  # the spec's own model: `engine.span_loss`, resolved

MAX_COUNT = 19  # gliner2's count head predicts 0..19


def span_labels(scores, structure):
    """The 0/1 target of every cell of `scores` ([count, fields, length, width]) for gliner2's `structure`."""
    import torch

    labs = torch.zeros_like(scores)
    for i in range(min(structure[0], MAX_COUNT)):
        for k, span in enumerate(structure[1][i]):
            if not isinstance(span, (tuple, list)):
                continue
            for sub in ([span] if isinstance(span, tuple) else span):
                if sub is None or sub == (-1, -1):
                    continue
                start, end = sub
                width = end - start
                if 0 <= start < scores.shape[2] and 0 <= width < scores.shape[3]:
                    labs[i, k, start, width] = 1
    return labs


def span_cell_loss(scores, labs, loss: SpanLoss, *, training: bool):
    """The summed span loss over the valid cells of `scores` against `labs` (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    if loss.negative_drop > 0.0 and training:
        keep = (~((labs == 0) & (torch.rand_like(scores) < loss.negative_drop))).to(scores.dtype)
    else:
        keep = torch.ones_like(scores)
    cell = F.binary_cross_entropy_with_logits(scores, labs, reduction="none")
    if loss.focal_gamma:
        p = torch.sigmoid(scores)
        p_t = torch.where(labs > 0, p, 1 - p)
        cell = cell * (1 - p_t).pow(loss.focal_gamma)
    if loss.positive_weight != 1.0:
        cell = cell * torch.where(labs > 0, loss.positive_weight, 1.0).to(cell.dtype)
    length, width = scores.shape[-2:]
    starts = torch.arange(length, device=scores.device).unsqueeze(1)
    offsets = torch.arange(width, device=scores.device).unsqueeze(0)
    valid = ((starts + offsets) < length).to(cell.dtype)
    return (cell * keep * valid).sum()


def set_span_loss(model, loss: SpanLoss) -> bool:
    """Train `model` (a gliner2 span model) with `loss`; False when there is nothing to change.

    Replaces `compute_struct_loss_from_scores` on this instance only; the boundary architecture,
    which has no such method, keeps its own loss.
    """
    original = getattr(model, "compute_struct_loss_from_scores", None)
    if original is None or loss.is_gliner2:
        return False

    def compute_struct_loss_from_scores(scores, structure, masking_rate: float = 0.5):
        gold_count = min(structure[0], MAX_COUNT)
        if scores.shape[0] != gold_count:
            raise ValueError(f"score count dimension {scores.shape[0]} != gold count {gold_count}")
        return span_cell_loss(scores, span_labels(scores, structure), loss, training=model.training)

    compute_struct_loss_from_scores._felix_span_loss = loss
    model.compute_struct_loss_from_scores = compute_struct_loss_from_scores
    return True
