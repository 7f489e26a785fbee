"""`engine.span_loss` (felix_train.trainers.gliner2.loss): gliner2's span loss at the neutral settings, term for term
and draw for draw; a positive weight and a focal gamma change the gradient as they say; the spec field validated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gliner2")

from gliner2.models.span.model import SpanExtractorModel  # noqa: E402

from felix_train.errors import SpecError  # noqa: E402
from felix_train.spec import JobSpec, validate_spec  # noqa: E402
from felix_train.trainers.gliner2.loss import SpanLoss, set_span_loss, span_cell_loss, span_labels  # noqa: E402

# one instance, two fields, 5 words, widths up to 3: field 0 has a 2-word span at word 1, field 1 a list of spans
STRUCTURE = [1, [[(1, 2), [(0, 0), (-1, -1), (3, 4)]]]]


def scores(seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, 5, 3, generator=g).requires_grad_(requires_grad)


def gliner2_loss(s, training: bool):
    """gliner2's own `compute_struct_loss_from_scores` (it reads `self.training` only)."""
    return SpanExtractorModel.compute_struct_loss_from_scores(SimpleNamespace(training=training), s, STRUCTURE)


def test_labels_are_gliner2_s_cells():
    labs = span_labels(scores(), STRUCTURE)
    assert labs.sum() == 3
    assert labs[0, 0, 1, 1] == labs[0, 1, 0, 0] == labs[0, 1, 3, 1] == 1


@pytest.mark.parametrize("training", [True, False])
def test_neutral_settings_are_gliner2_s_loss_draw_for_draw(training):
    s = scores()
    torch.manual_seed(7)
    want = gliner2_loss(s, training)
    torch.manual_seed(7)
    got = span_cell_loss(s, span_labels(s, STRUCTURE), SpanLoss(), training=training)
    assert torch.equal(got, want)
    assert SpanLoss().is_gliner2 and not SpanLoss(focal_gamma=2).is_gliner2


def grad_of(loss: SpanLoss):
    s = scores(requires_grad=True)
    span_cell_loss(s, span_labels(s, STRUCTURE), loss, training=False).backward()
    return s.grad


def test_positive_weight_scales_only_the_positive_cells_gradient():
    labs = span_labels(scores(), STRUCTURE).bool()
    plain, weighted = grad_of(SpanLoss()), grad_of(SpanLoss(positive_weight=3.0))
    assert torch.allclose(weighted[labs], 3 * plain[labs])
    assert torch.equal(weighted[~labs], plain[~labs])


def test_focal_gamma_turns_easy_cells_down_more_than_hard_ones():
    s = scores()
    labs = span_labels(s, STRUCTURE)
    plain, focal = grad_of(SpanLoss()), grad_of(SpanLoss(focal_gamma=2.0))
    valid = (torch.arange(5).unsqueeze(1) + torch.arange(3).unsqueeze(0) < 5).expand_as(s)
    assert not torch.allclose(plain, focal)
    p_t = torch.where(labs > 0, torch.sigmoid(s), 1 - torch.sigmoid(s))
    ratio = (focal / plain)[valid]
    easy, hard = p_t[valid].argmax(), p_t[valid].argmin()
    assert ratio[easy] < ratio[hard] <= 1  # the surest cell keeps the least of its gradient


def test_negative_drop_zero_keeps_every_negative():
    s = scores()
    labs = span_labels(s, STRUCTURE)
    torch.manual_seed(0)
    every = span_cell_loss(s, labs, SpanLoss(negative_drop=0.0), training=True)
    assert torch.equal(every, span_cell_loss(s, labs, SpanLoss(), training=False))


@pytest.fixture(scope="module")
def tiny(model_store):
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model
    from felix_train.trainers.gliner2.model import add_entity_count_loss, load_gliner2

    torch.set_num_threads(1)
    path = resolve_model(get_entry("felix/tiny-gliner2"), model_store)

    def load():
        model = load_gliner2(path)
        add_entity_count_loss(model)
        return model.train()

    return load


def batch_grads(model):
    """Total loss and the span head's gradient for one fixed two-record batch (one of them entity-free)."""
    import random

    from gliner2.training.trainer import ExtractorCollator

    recs = [("John Smith went to Paris today .", {"entities": {"person": ["John Smith"], "location": ["Paris"]}}),
            ("nothing to see here .", {"entities": {"person": [], "location": []}})]
    random.seed(0)
    torch.manual_seed(0)
    batch = ExtractorCollator(model.processor, is_training=True)(recs)
    model.zero_grad()
    out = model(batch)
    out["total_loss"].backward()
    return out["total_loss"].detach(), torch.cat([p.grad.flatten() for p in model.span_rep.parameters()])


def test_the_model_trains_with_the_option_and_stays_gliner2_at_neutral(tiny):
    plain_loss, plain_grad = batch_grads(tiny())
    neutral = tiny()
    assert set_span_loss(neutral, SpanLoss()) is False  # nothing replaced: gliner2's own method
    assert "compute_struct_loss_from_scores" not in vars(neutral)
    focal = tiny()
    assert set_span_loss(focal, SpanLoss(positive_weight=3.0, focal_gamma=2.0)) is True
    assert "compute_struct_loss_from_scores" in vars(focal)  # on the instance; the class is untouched
    assert "compute_struct_loss_from_scores" not in vars(tiny())
    loss, grad = batch_grads(focal)
    assert torch.isfinite(loss) and not torch.allclose(loss, plain_loss)
    assert not torch.allclose(grad, plain_grad)
    forced = tiny()  # the replacement itself, at the neutral settings, gives gliner2's loss and gradient
    forced.compute_struct_loss_from_scores = lambda s, st, masking_rate=0.5: span_cell_loss(
        s, span_labels(s, st), SpanLoss(), training=forced.training)
    loss, grad = batch_grads(forced)
    assert torch.allclose(loss, plain_loss) and torch.allclose(grad, plain_grad)


def test_span_loss_is_an_engine_field_with_gliner2_s_defaults_and_located_errors():
    spec = JobSpec(base_model="felix/tiny-gliner2", datasets=[{"name": "x"}])
    assert spec.engine.span_loss.model_dump() == {"positive_weight": 1.0, "focal_gamma": 0.0, "negative_drop": 0.5}
    spec = JobSpec(base_model="x", datasets=[{"name": "x"}], engine={"span_loss": {"focal_gamma": 2, "positive_weight": 3}})
    assert SpanLoss(**spec.engine.span_loss.model_dump()).describe() == \
        "positive_weight 3, focal_gamma 2, negative_drop 0.5"
    with pytest.raises(SpecError) as err:
        validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}],
                       "engine": {"span_loss": {"positive_weight": 0, "focal_gamma": -1, "negative_drop": 1,
                                                "alpha": 0.75}}}, check_datasets=False)
    locs = {tuple(e.loc) for e in err.value.errors}
    assert {("engine", "span_loss", f) for f in ("positive_weight", "focal_gamma", "negative_drop", "alpha")} <= locs


def test_unset_span_loss_fields_come_from_the_catalog_and_the_spec_s_own_win(monkeypatch):
    from felix_train.catalog import get_entry

    def resolved(engine: dict) -> dict:
        spec = validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}], "engine": engine},
                             check_datasets=False)
        again = validate_spec(spec.model_dump(mode="json"), check_datasets=False)  # a saved spec resolves the same
        assert again.engine.span_loss == spec.engine.span_loss
        return spec.engine.span_loss.model_dump()

    assert resolved({}) == {"positive_weight": 1.0, "focal_gamma": 0.0, "negative_drop": 0.5}
    monkeypatch.setattr(get_entry("felix/tiny-gliner2"), "default_span_loss", {"positive_weight": 3.0, "focal_gamma": 2.0})
    assert resolved({}) == {"positive_weight": 3.0, "focal_gamma": 2.0, "negative_drop": 0.5}
    assert resolved({"span_loss": {"positive_weight": 1, "negative_drop": 0}}) == \
        {"positive_weight": 1.0, "focal_gamma": 2.0, "negative_drop": 0.0}
