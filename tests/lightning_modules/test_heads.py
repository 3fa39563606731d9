"""Heads: shapes, exact values against hand computations, where gradients reach, the options they record, errors."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.heads import ClsHead, ConcatAllHead, Head, LastKHead, LayerCnnHead, MeanHead

B, T, H, L = 3, 5, 8, 4


def hidden(seed: int = 0, dtype=torch.float64):
    """A leaf [L+1, B, T, H] tensor and its unbound tuple, as HF's ``hidden_states``."""
    g = torch.Generator().manual_seed(seed)
    stack = torch.randn(L + 1, B, T, H, generator=g, dtype=dtype).requires_grad_()
    return stack, tuple(stack.unbind(0))


def mask():
    return torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])


OUT_DIMS = [
    (ClsHead, {}, H),
    (MeanHead, {}, H),
    (LastKHead, {}, 4 * H),
    (LastKHead, {"k": 2}, 2 * H),
    (LastKHead, {"k": 3, "reduce": "mean"}, H),
    (LastKHead, {"k": 1, "reduce": "max"}, H),
    (ConcatAllHead, {}, L * H),
    (LayerCnnHead, {}, 3 * 32),
    (LayerCnnHead, {"kernel_sizes": (1, 4), "num_filters": 5}, 2 * 5),
]


def test_every_head_is_covered():
    import lightning_modules.heads as module

    defined = {c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Head) and c is not Head}
    assert {cls for cls, _, _ in OUT_DIMS} == defined


@pytest.mark.parametrize("cls,kwargs,width", OUT_DIMS)
def test_shape_out_dim_and_finite_gradient(cls, kwargs, width):
    torch.manual_seed(0)
    head = cls(H, L, **kwargs).double()
    stack, hs = hidden()
    out = head(hs, mask())
    assert out.shape == (B, head.out_dim) and head.out_dim == width
    out.square().sum().backward()
    assert torch.isfinite(stack.grad).all() and stack.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cls,kwargs,reached",
    [
        (ClsHead, {}, {L}),
        (MeanHead, {}, {L}),
        (LastKHead, {"k": 2}, {L - 1, L}),
        (LastKHead, {"k": 3, "reduce": "mean"}, {L - 2, L - 1, L}),
        (ConcatAllHead, {}, set(range(1, L + 1))),
        (LayerCnnHead, {"dropout": 0.0}, set(range(1, L + 1))),
    ],
)
def test_gradient_reaches_exactly_the_pooled_layers_and_first_token(cls, kwargs, reached):
    torch.manual_seed(0)
    head = cls(H, L, **kwargs).double()
    stack, hs = hidden()
    head(hs, mask()).sum().backward()
    per_layer = stack.grad.abs().sum(dim=(1, 2, 3))
    for layer in range(L + 1):  # index 0 is the embedding output
        assert (per_layer[layer] > 0) == (layer in reached), (layer, per_layer)
    if cls is not MeanHead:
        assert stack.grad[:, :, 1:].abs().sum() == 0  # only the first token is read


def test_max_last_k_gradient_goes_to_the_argmax_layer_only():
    head = LastKHead(H, L, k=2, reduce="max")
    stack, hs = hidden()
    head(hs, mask()).sum().backward()
    first = stack.detach()[:, :, 0]  # [L+1, B, H]
    winner_is_top = first[L] > first[L - 1]
    assert torch.equal(stack.grad[L, :, 0], winner_is_top.double())
    assert torch.equal(stack.grad[L - 1, :, 0], (~winner_is_top).double())
    assert stack.grad[: L - 1].abs().sum() == 0


def test_values_equal_hand_computation():
    _, hs = hidden()
    first = [h[:, 0].detach() for h in hs]  # per layer, [B, H]
    with torch.no_grad():
        concat = LastKHead(H, L, k=3)(hs, mask())
        mean = LastKHead(H, L, k=3, reduce="mean")(hs, mask())
        maxed = LastKHead(H, L, k=3, reduce="max")(hs, mask())
        everything = ConcatAllHead(H, L)(hs, mask())
    for b in range(B):
        for i in range(H):
            vals = [first[layer][b, i].item() for layer in (L - 2, L - 1, L)]
            assert [concat[b, j * H + i].item() for j in range(3)] == vals  # lowest layer first
            assert mean[b, i].item() == pytest.approx(sum(vals) / 3, abs=1e-12)
            assert maxed[b, i].item() == max(vals)
            assert [everything[b, j * H + i].item() for j in range(L)] == [
                first[layer][b, i].item() for layer in range(1, L + 1)
            ]


def test_masked_mean_ignores_padding_exactly():
    _, hs = hidden()
    m = mask()
    with torch.no_grad():
        out = MeanHead(H, L)(hs, m)
        poisoned = [h.clone() for h in hs]
        poisoned[-1][m == 0] = 1e6  # whatever sits under padding must not matter
        out_poisoned = MeanHead(H, L)(tuple(poisoned), m)
    top = hs[-1].detach()
    for b, n in enumerate([5, 3, 1]):
        for i in range(H):
            assert out[b, i].item() == pytest.approx(sum(top[b, t, i].item() for t in range(n)) / n, abs=1e-12)
    assert torch.equal(out, out_poisoned)


def test_layer_cnn_equals_hand_computed_convolution_and_pooling():
    torch.manual_seed(0)
    head = LayerCnnHead(H, L, kernel_sizes=(1, 2, 4), num_filters=3, dropout=0.5).double().eval()
    _, hs = hidden()
    with torch.no_grad():
        out = head(hs, mask())
    first = torch.stack([h[:, 0] for h in hs[1:]], 1).detach()  # [B, L, H]
    expected = []
    for conv in head.convs:
        w, bias = conv.weight[:, 0].detach(), conv.bias.detach()  # [F, k, H], [F]
        k = w.shape[1]
        for f in range(w.shape[0]):
            windows = [sum((w[f, j] * first[:, s + j]).sum(-1) for j in range(k)) + bias[f] for s in range(L - k + 1)]
            expected.append(torch.stack(windows, 1).clamp_min(0).amax(1))
    torch.testing.assert_close(out, torch.stack(expected, 1), rtol=0, atol=1e-12)


def test_layer_cnn_over_token_means_reads_every_real_token_of_every_layer_and_no_pad():
    torch.manual_seed(0)
    head = LayerCnnHead(H, L, kernel_sizes=(1, 2), num_filters=3, dropout=0.0, token="mean").double().eval()
    stack, hs = hidden()
    m = mask()
    out = head(hs, m)
    means = torch.stack([(h * m[..., None]).sum(1) / m.sum(1, keepdim=True) for h in hs[1:]], 1)
    reference = LayerCnnHead(H, L, kernel_sizes=(1, 2), num_filters=3, dropout=0.0).double().eval()
    reference.load_state_dict(head.state_dict())
    # the same convolutions over [CLS] vectors that are the token means: the same output
    fake = tuple(torch.cat([mu[:, None], x[:, 1:]], 1) for x, mu in zip(hs[1:], means.unbind(1)))
    torch.testing.assert_close(out, reference((hs[0],) + fake, m), rtol=0, atol=1e-12)
    out.sum().backward()
    grad = stack.grad  # [layers + 1, B, T, H]
    assert grad[0].abs().sum() == 0  # never the embedding output
    real = m.bool()
    assert grad[1:].abs().sum(-1)[:, ~real].sum() == 0  # pads get nothing
    assert grad[1:].abs().sum() > 0
    for b, n in enumerate(m.sum(1).tolist()):  # a mean: every real token of a layer gets the same gradient
        torch.testing.assert_close(grad[1:, b, :n], grad[1:, b, :1].expand(-1, n, -1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="token must be first \\(\\[CLS\\]\\) or mean, got 'max'"):
        LayerCnnHead(H, L, token="max")


def test_layer_cnn_dropout_only_in_training():
    torch.manual_seed(0)
    head = LayerCnnHead(H, L, dropout=0.5).double()
    _, hs = hidden()
    with torch.no_grad():
        evaluated = head.eval()(hs, mask())
        trained = head.train()(hs, mask())
    kept = trained != 0
    assert not kept.all()  # some features dropped
    torch.testing.assert_close(trained[kept], 2 * evaluated[kept])


def test_k_out_of_range_is_an_error_naming_k_and_l():
    for reduce in LastKHead.REDUCE:
        with pytest.raises(ValueError, match=r"k=5.*L=4"):
            LastKHead(H, L, k=5, reduce=reduce)
        with pytest.raises(ValueError, match=r"k=0.*L=4"):
            LastKHead(H, L, k=0, reduce=reduce)
    with pytest.raises(ValueError, match=r"k=2.5"):
        LastKHead(H, L, k=2.5)
    assert LastKHead(H, 4).out_dim == 4 * H
    with pytest.raises(ValueError, match=r"k=4.*L=2"):  # the default k=4 needs four layers
        LastKHead(H, 2, reduce="mean")
    with pytest.raises(ValueError, match="reduce must be one of concat, mean, max"):
        LastKHead(8, 4, reduce="sum")


def test_cnn_kernel_taller_than_the_stack_is_an_error():
    with pytest.raises(ValueError, match=r"kernel sizes \[5\].*L=4"):
        LayerCnnHead(H, L, kernel_sizes=(2, 5))
    with pytest.raises(ValueError, match=r"kernel sizes \[3, 4\].*L=2"):
        LayerCnnHead(H, 2)  # the default (2, 3, 4) on a 2-layer model
    with pytest.raises(ValueError, match="at least one kernel size"):
        LayerCnnHead(H, L, kernel_sizes=())
    with pytest.raises(ValueError, match="dropout"):
        LayerCnnHead(H, L, dropout=1.0)


def test_a_head_records_the_options_it_was_built_with():
    """What the export writes into config.json to build the same head again, tuples as JSON lists."""
    assert LayerCnnHead(H, L, kernel_sizes=(1, 2), num_filters=3).options == {"kernel_sizes": [1, 2], "num_filters": 3}
    assert LastKHead(H, L, 2, reduce="max").options == {"k": 2, "reduce": "max"}
    assert ClsHead(H, L).options == {} and ConcatAllHead(hidden_size=H, num_layers=L).options == {}
    import copy

    assert copy.deepcopy(LastKHead(H, L, k=3)).options == {"k": 3}


def test_heads_on_a_real_tiny_bert(tiny_bert_dir):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_bert_dir).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=(ids != 0).long(), output_hidden_states=True)
    layers, width = encoder.config.num_hidden_layers, encoder.config.hidden_size
    assert len(out.hidden_states) == layers + 1
    for cls, kwargs in [(ConcatAllHead, {}), (LastKHead, {"k": 2}), (LayerCnnHead, {"kernel_sizes": [1, 2]})]:
        assert cls(width, layers, **kwargs)(out.hidden_states, ids != 0).shape == (
            2,
            layers * width if cls is not LayerCnnHead else 64,
        )
