"""Padded batches and the forward pass: log-probs, entropy and hidden states equal an unpadded reference."""

from __future__ import annotations

import torch

from memrl.rl.batch import build_batch
from memrl.rl.scoring import forward_batch
from memrl.rollout.records import Rollout


def _rollout(prompt_ids, ids, finish="stop"):
    return Rollout(0, 0, "", "", token_ids=list(ids), prompt_token_ids=list(prompt_ids), finish_reason=finish)


def test_layout_left_padded_prompts_right_padded_responses():
    rs = [_rollout([5, 6, 7], [8, 9]), _rollout([5], [8, 9, 10, 11], finish="length")]
    b = build_batch(rs, [0, 1], [1.0, 0.0], pad_id=0)
    assert b.prompt_length == 3 and b.response_length == 4
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 0, 0], [0, 0, 5, 8, 9, 10, 11]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]]
    # positions of real tokens start at 0 whatever the padding
    assert b.position_ids[1, 2:].tolist() == [0, 1, 2, 3, 4]
    assert b.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    masked = build_batch(rs, [0, 1], [1.0, 0.0], pad_id=0, mask_truncated=True)
    assert masked.response_mask.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]
    sub = b.select([1])
    assert sub.input_ids.tolist() == [[0, 0, 5, 8, 9, 10, 11]] and sub.scores.tolist() == [0.0]


def test_forward_matches_unpadded_reference(policy):
    model, tok = policy
    model.eval()
    prompts = ["Compute 12 + 3.\n", "Compute 7 * 4 + 8 - 5.\nPut the final answer in \\boxed{}.\n"]
    responses = ["Careful: 12 + 3 = 15. \\boxed{15}", "Guess: \\boxed{7}"]
    rs = []
    for p, r in zip(prompts, responses):
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ri = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rs.append(_rollout(pi, ri))
    b = build_batch(rs, [0, 1], [0.0, 0.0], pad_id=tok.pad_token_id)
    positions = torch.tensor([2, -1])
    with torch.no_grad():
        out = forward_batch(model, b, temperature=1.0, with_entropy=True, hidden_positions=positions)
        for i, r in enumerate(rs):
            ids = torch.tensor([r.prompt_token_ids + r.token_ids])
            ref = model(input_ids=ids, output_hidden_states=True)
            logp = torch.log_softmax(ref.logits[0].float(), -1)
            P, n = len(r.prompt_token_ids), len(r.token_ids)
            expect = torch.stack([logp[P - 1 + t, r.token_ids[t]] for t in range(n)])
            torch.testing.assert_close(out.log_prob[i, :n], expect, atol=1e-4, rtol=1e-4)
            ent = -(logp.exp() * logp).sum(-1)[P - 1 : P - 1 + n]
            torch.testing.assert_close(out.entropy[i, :n], ent, atol=1e-4, rtol=1e-4)
            if positions[i] >= 0:
                # every layer's hidden state at response token 2, embedding output first
                want = torch.stack([h[0, P + 2] for h in ref.hidden_states])
                torch.testing.assert_close(out.hidden_states[i], want, atol=1e-4, rtol=1e-4)
            else:
                assert torch.count_nonzero(out.hidden_states[i]) == 0
    # temperature divides the logits before the softmax
    with torch.no_grad():
        hot = forward_batch(model, b, temperature=2.0)
        ids = torch.tensor([rs[0].prompt_token_ids + rs[0].token_ids])
        logp2 = torch.log_softmax(model(input_ids=ids).logits[0].float() / 2.0, -1)
    P = len(rs[0].prompt_token_ids)
    torch.testing.assert_close(hot.log_prob[0, 0], logp2[P - 1, rs[0].token_ids[0]], atol=1e-4, rtol=1e-4)
