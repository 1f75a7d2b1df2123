"""Layer-wise logits equal the entries of a full lm_head projection of output_hidden_states."""

from __future__ import annotations

import torch

from memrl.meds.features import final_norm_module, layer_logits, output_head, select_layers


def test_features_equal_full_projection_entries(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    ids = torch.randint(3, 300, (3, 12))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    anchors = torch.tensor([4, 7, 10])
    rows = torch.arange(3)
    hidden = torch.stack([h[rows, anchors] for h in out.hidden_states], dim=1)  # [B, L + 1, H]
    targets = ids[rows, anchors + 1]
    weight, bias = output_head(model)
    got = layer_logits(hidden, targets, weight, bias)
    L = model.config.num_hidden_layers
    assert got.shape == (3, L)
    head = model.get_output_embeddings()
    with torch.no_grad():
        for layer in range(1, L + 1):
            full = head(out.hidden_states[layer])  # [B, T, V]
            torch.testing.assert_close(got[:, layer - 1], full[rows, anchors, targets], rtol=1e-5, atol=1e-5)
        # the last hidden state is already final-normed: its value is the model's own output logit
        torch.testing.assert_close(got[:, -1], out.logits[rows, anchors, targets], rtol=1e-5, atol=1e-5)
        # final_norm=True normes every earlier layer, the last one unchanged
        norm = final_norm_module(model)
        normed = layer_logits(hidden, targets, weight, bias, norm)
        for layer in range(1, L):
            want = head(norm(out.hidden_states[layer]))[rows, anchors, targets]
            torch.testing.assert_close(normed[:, layer - 1], want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(normed[:, -1], got[:, -1])


def test_select_layers():
    x = torch.tensor([[1.0, 2.0, 4.0, 7.0], [0.0, 1.0, 1.0, 0.0]])
    assert select_layers(x, None).tolist() == [[4.0, 7.0], [1.0, 0.0]]  # half by default
    assert select_layers(x, 3).tolist() == [[2.0, 4.0, 7.0], [1.0, 1.0, 0.0]]
    assert select_layers(x, 0).shape == (2, 4) and select_layers(x, 99).shape == (2, 4)
    # differences first (1, 2, 3 and 1, 0, -1), then the last n of them
    assert select_layers(x, 3, layer_diff=True).tolist() == [[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]]
    assert select_layers(x, None, layer_diff=True).tolist() == [[2.0, 3.0], [0.0, -1.0]]
    assert select_layers(x, 0, layer_diff=True).shape == (2, 3)
