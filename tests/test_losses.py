import math

import torch

from masksub_hf.losses import (contrastive_soft_cross_entropy, resolve_loss_name, sigmoid_bce, soft_cross_entropy,
                               squared_error)
from tests.helpers import tiny_bert


def test_soft_cross_entropy_by_hand():
    sub = torch.tensor([[0.0, math.log(3.0)]])   # softmax -> [1/4, 3/4]
    main = torch.tensor([[math.log(2.0), 0.0]])  # softmax -> [2/3, 1/3]
    expected = -(2 / 3 * math.log(1 / 4) + 1 / 3 * math.log(3 / 4))
    assert torch.isclose(soft_cross_entropy(sub, main), torch.tensor(expected))


def test_soft_cross_entropy_gradient_is_the_kl_gradient_and_never_reaches_main():
    torch.manual_seed(0)
    sub = torch.randn(4, 5, requires_grad=True)
    main = torch.randn(4, 5, requires_grad=True)
    soft_cross_entropy(sub, main).backward()
    grad = sub.grad.clone()
    sub.grad = None
    p = main.detach().softmax(-1)
    kl = (p * (p.log() - sub.log_softmax(-1))).sum(-1).mean()
    kl.backward()
    assert torch.allclose(grad, sub.grad, atol=1e-6)
    assert main.grad is None  # the target is detached


def test_sub_loss_equals_entropy_when_branches_agree():
    z = torch.randn(6, 4)
    p = z.softmax(-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert torch.isclose(soft_cross_entropy(z, z), entropy, atol=1e-6)


def test_sigmoid_and_squared_error_by_hand():
    sub, main = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -1.0]])
    t = torch.sigmoid(main)
    s = torch.sigmoid(sub)
    expected = -(t * s.log() + (1 - t) * (1 - s).log()).mean()
    assert torch.isclose(sigmoid_bce(sub, main), expected, atol=1e-6)
    assert torch.isclose(squared_error(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])), torch.tensor(2.5))


def test_contrastive_averages_both_directions():
    torch.manual_seed(0)
    sub, main = torch.randn(3, 3), torch.randn(3, 3)
    both = (soft_cross_entropy(sub, main) + soft_cross_entropy(sub.t(), main.t())) / 2
    assert torch.isclose(contrastive_soft_cross_entropy(sub, main), both)


def test_losses_run_in_fp32_whatever_the_input_dtype():
    sub, main = torch.randn(4, 3).bfloat16(), torch.randn(4, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for fn in (soft_cross_entropy, sigmoid_bce, squared_error):
            out = fn(sub, main)
            assert out.dtype == torch.float32
            assert torch.isclose(out, fn(sub.float(), main.float()))


def test_loss_follows_the_models_task():
    assert resolve_loss_name(tiny_bert(num_labels=3)) == "softmax"
    assert resolve_loss_name(tiny_bert(num_labels=1)) == "mse"
    assert resolve_loss_name(tiny_bert(num_labels=4, problem_type="multi_label_classification")) == "sigmoid"
    assert resolve_loss_name(tiny_bert(num_labels=3), "sigmoid") == "sigmoid"
