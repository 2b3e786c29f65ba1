import pytest
import torch
from torch import nn

from recorder.hooks import (LayerHooks, UnknownLayerError, activation_after, resolve_layers, signed_layer_note,
                            unit_responses)


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()),
        nn.Flatten(), nn.Linear(5 * 8 * 8, 3),
    )


def test_resolve_dotted_names_in_order():
    net = small_net()
    found = resolve_layers(net, ["2.0", "4"])
    assert list(found) == ["2.0", "4"]
    assert found["2.0"] is net[2][0]


def test_unknown_name_lists_close_matches_first_then_valid_names():
    with pytest.raises(UnknownLayerError, match=r"unknown layer '2\.9' \(did you mean '2\.1', '2\.0'") as info:
        resolve_layers(small_net(), ["2.0", "2.9"])
    assert "Valid layer names: '0', '1', '2', '2.0'" in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, ValueError)


def test_all_names_checked_before_any_hook_is_registered():
    net = small_net()
    with pytest.raises(UnknownLayerError):
        LayerHooks(net, ["0", "nope"], lambda *a: None)
    assert not net[0]._forward_hooks


@pytest.mark.parametrize("names, message", [([], "layers is empty"), (["0", "0"], "more than once")])
def test_bad_name_lists(names, message):
    with pytest.raises(ValueError, match=message):
        resolve_layers(small_net(), names)


def test_hooks_see_outputs_and_are_removed_on_close_and_on_exception():
    net = small_net()
    seen = []
    with LayerHooks(net, ["0", "4"], lambda name, out: seen.append((name, tuple(out.shape)))):
        net(torch.randn(2, 3, 8, 8))
    assert seen == [("0", (2, 4, 8, 8)), ("4", (2, 3))]
    assert not net[0]._forward_hooks and not net[4]._forward_hooks
    with pytest.raises(RuntimeError):
        with LayerHooks(net, ["0"], lambda *a: None):
            raise RuntimeError("boom")
    assert not net[0]._forward_hooks
    hooks = LayerHooks(net, ["0"], lambda *a: None)
    hooks.close()
    hooks.close()
    assert not net[0]._forward_hooks and not hooks.active


def test_unit_responses_match_brute_force_per_image_per_unit():
    conv = torch.randn(3, 4, 5, 6)
    mean, mx = unit_responses(conv, "c")
    for b in range(3):
        for k in range(4):
            values = [float(conv[b, k, y, x]) for y in range(5) for x in range(6)]
            assert mean[b, k].item() == pytest.approx(sum(values) / len(values), rel=1e-5, abs=1e-6)
            assert mx[b, k].item() == max(values)
    linear = torch.randn(3, 7)
    mean, mx = unit_responses(linear, "fc")
    assert torch.equal(mean, linear) and torch.equal(mx, linear)
    tokens = torch.randn(2, 5, 3)
    mean, mx = unit_responses(tokens, "t")
    assert torch.allclose(mean, tokens.mean(1)) and torch.equal(mx, tokens.max(1).values)
    assert unit_responses(conv.half(), "c")[0].dtype == torch.float32


@pytest.mark.parametrize("output, message", [
    (torch.randn(2, 3, 4, 5, 6), r"layer 'bad' has output shape \(2, 3, 4, 5, 6\)"),
    (torch.randn(4), r"layer 'bad' has output shape \(4,\)"),
    ((torch.randn(2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 4))),
     r"layer 'bad' returned tuple\(Tensor \[2, 3\], tuple\(Tensor \[1, 2, 4\], Tensor \[1, 2, 4\]\)\); "
     r"name the element to record with an index, e.g. 'bad\[0\]'"),
    ({"a": 1}, "returned dict, not a tensor"),
    (torch.ones(2, 3, dtype=torch.long), "need floats"),
])
def test_unsupported_outputs_name_layer_and_shape(output, message):
    with pytest.raises(ValueError, match=message):
        unit_responses(output, "bad")


class Sequence(nn.Module):
    """Rows of a 1-channel image as a sequence: an LSTM and self-attention over them."""

    def __init__(self, width: int = 6, hidden: int = 5):
        super().__init__()
        self.lstm = nn.LSTM(width, hidden, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden, num_heads=1, batch_first=True)
        self.fc = nn.Linear(hidden, 2)

    def forward(self, x):  # (B, 1, T, width)
        seq, _ = self.lstm(x[:, 0])  # (B, T, hidden)
        mixed, _ = self.attn(seq, seq, seq)
        return self.fc(mixed.mean(1))


def test_indexed_names_hook_an_element_of_a_tuple_output():
    torch.manual_seed(0)
    model, x = Sequence().eval(), torch.randn(3, 1, 4, 6)
    seen = {}
    with LayerHooks(model, ["lstm[0]", "lstm[1][0]", "attn[0]"], lambda n, o: seen.__setitem__(n, o)):
        model(x)
    seq, (h_n, _) = model.lstm(x[:, 0])
    assert torch.equal(seen["lstm[0]"], seq) and torch.equal(seen["lstm[1][0]"], h_n)
    assert torch.equal(seen["attn[0]"], model.attn(seq, seq, seq)[0])
    mean, _ = unit_responses(seen["attn[0]"], "attn[0]")
    assert mean.shape == (3, 5)


def test_indexed_names_are_checked_and_explained():
    model = Sequence()
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'lstn\[0\]'.*did you mean 'lstm'"):
        resolve_layers(model, ["lstn[0]"])
    with LayerHooks(model, ["lstm[5]"], lambda n, o: None):
        with pytest.raises(ValueError, match=r"layer 'lstm\[5\]': index 5 is out of range; the output is "
                                             r"tuple\(Tensor \[2, 4, 5\], tuple\(Tensor"):
            model(torch.randn(2, 1, 4, 6))
    with LayerHooks(model, ["fc[0]"], lambda n, o: None):
        with pytest.raises(ValueError, match=r"layer 'fc\[0\]': 'fc' returned Tensor \[2, 2\], which has no elements"):
            model(torch.randn(2, 1, 4, 6))


def test_activation_after_names_the_module_registered_next():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
    assert activation_after(model, "0") == "1"
    assert activation_after(model, "2") is None  # followed by Flatten, not an activation
    block = nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), nn.GELU())
    assert activation_after(block, "0") == "1"  # the block's own children are skipped
    assert activation_after(block, "0.0") is None  # BatchNorm follows


def test_signed_layer_note_names_what_to_record():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    assert "record '1', the activation after it" in signed_layer_note(net, "0", -0.5)
    assert "-0.5 < 0" in signed_layer_note(net, "0", -0.5)
    assert "nothing: these are the model's outputs (logits)" in signed_layer_note(net, "3", -1.0)
    assert "make it a module (nn.ReLU())" in signed_layer_note(Functional(), "conv", -0.1)
