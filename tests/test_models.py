"""poisoncert.models: every architecture builds, the batched (stacked) forward equals each model's
own forward, and the FLOP count the benchmarks divide by is the textbook one."""

import numpy as np
import pytest
import torch

from poisoncert.errors import PoisonCertError
from poisoncert.models import ARCHITECTURES, BatchedContext, batched_forward, build_model, stacked_forward, training_flops_per_sample
from poisoncert.models import forward_flops_per_sample

SHAPES = {"small_cnn": (1, 8, 8), "mlp": (1, 8, 8), "lenet": (1, 28, 28), "nin": (1, 28, 28), "resnet18": (3, 32, 32)}


def test_every_architecture_has_a_test_shape():
    assert set(SHAPES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_build_model_gives_logits(arch):
    c, h, w = SHAPES[arch]
    torch.manual_seed(0)
    model = build_model(arch, c, h, w, 7).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, c, h, w))
    assert out.shape == (3, 7)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_batched_forward_equals_each_models_own_forward(arch):
    c, h, w = SHAPES[arch]
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = build_model(arch, c, h, w, 5).eval()
        with torch.no_grad():  # non-trivial running statistics, different per model
            for name, buf in m.named_buffers():
                if name.endswith("running_mean"):
                    buf.normal_(0.0, 0.1)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 1.5)
        models.append(m)
    state = {name: torch.stack([m.state_dict()[name] for m in models]) for name in models[0].state_dict()}
    x = [torch.randn(4, c, h, w, generator=torch.Generator().manual_seed(10 + i)) for i in range(2)]
    with torch.no_grad():
        out = batched_forward(models[0], state, torch.cat(x, dim=1), BatchedContext(2, None))
        own = torch.stack([m(xi) for m, xi in zip(models, x)])
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(out, own, rtol=1e-4, atol=1e-4)


def _two_models(arch, n_classes=5):
    c, h, w = SHAPES[arch]
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(build_model(arch, c, h, w, n_classes))
    state = {name: torch.stack([m.state_dict()[name] for m in models]) for name in models[0].state_dict()}
    x = [torch.randn(4, c, h, w, generator=torch.Generator().manual_seed(10 + i)) for i in range(2)]
    return models, state, x


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_stacked_forward_equals_each_models_own_forward(arch):
    """The stacked layout (B, n, H, W, C): convolutions as bmm over im2col patches, in evaluation with
    the tiling max-pool folded into the product, in training with masked BatchNorm statistics; the
    same function as every model's own module, and the same gradients."""
    models, state, x = _two_models(arch)
    xs = torch.stack([xi.permute(0, 2, 3, 1) for xi in x])  # (B, n, H, W, C)
    with torch.no_grad():
        out = stacked_forward(models[0], state, xs.contiguous(), BatchedContext(2, None))
        own = torch.stack([m.eval()(xi) for m, xi in zip(models, x)])
    torch.testing.assert_close(out, own, rtol=1e-4, atol=1e-4)
    # training: batch statistics over the real rows, gradients of each model's own loss; in float64, where
    # rounding cannot hide a wrong gradient (in float32, BatchNorm over 4 rows amplifies it to 1% in NiN)
    models = [m.double() for m in models]
    state = {k: (v.double() if v.is_floating_point() else v) for k, v in state.items()}
    x = [xi.double() for xi in x]
    params = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in state.items()}
    keys = [k for k, v in params.items() if v.requires_grad]
    ctx = BatchedContext(2, torch.ones(4, 2, dtype=torch.float64))
    loss = stacked_forward(models[0], params, torch.stack([xi.permute(0, 2, 3, 1) for xi in x]).contiguous(), ctx).square().sum()
    grads = dict(zip(keys, torch.autograd.grad(loss, [params[k] for k in keys])))
    for b, (m, xi) in enumerate(zip(models, x)):
        m.train().zero_grad()
        m(xi).square().sum().backward()
        for k, v in m.named_parameters():
            torch.testing.assert_close(grads[k][b], v.grad, rtol=1e-9, atol=1e-9, msg=f"{arch} {k}")


@pytest.mark.parametrize("arch,shape,n", [("small_cnn", (1, 8, 8), 5), ("small_cnn", (3, 10, 10), 5), ("lenet", (1, 28, 28), 5),
                                          ("small_cnn", (1, 28, 28), 16)])  # the engine's shapes (Fashion-MNIST, batch 16)
def test_stacked_per_model_kernels_are_the_group_kernels_bit_for_bit(arch, shape, n, monkeypatch):
    """The stacked layout runs its first convolution with the max-pool and ReLU after it one model at a
    time (training: :class:`poisoncert.models._ConvPool`; evaluation: ``_stacked_conv_eval``, which also
    lets a group's padding dummies go unevaluated). Both must give the bits of the whole-group
    ``bmm`` + ``max_pool2d`` + ``relu`` (the path taken when the input needs a gradient), the
    gradients included, also on ties: integer-valued images make equal maxima and zeros."""
    c, h, w = shape
    B = 3
    torch.manual_seed(0)
    models = [build_model(arch, c, h, w, 10) for _ in range(B)]
    state = {k: torch.stack([m.state_dict()[k] for m in models]) for k in models[0].state_dict()}
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2, 3, (B, n, h, w, c), generator=g).float()
    x[:, 0] = 0.0  # a blank image: every window of it ties

    # training masks: every row real, and the trainer's (real rows first, then padding; one model with one real
    # row, where an mm may take another kernel (a matrix-vector product), one all padding)
    lead = (torch.arange(n).unsqueeze(1) < torch.tensor([n, 1, 0]).unsqueeze(0)).float()

    def run(x, training, grad=True, state=state, B=B, mask=None):
        params = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in state.items()}
        mask = torch.ones(n, B) if mask is None else mask
        ctx = BatchedContext(B, mask if training else None)
        with torch.set_grad_enabled(grad):
            out = stacked_forward(models[0], params, x, ctx)
        if not grad:
            return out, []
        keys = [k for k, v in params.items() if v.requires_grad]
        up = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        if training:  # the loss reads the real rows only (a padding row's output is never used)
            out = out * mask.t().unsqueeze(-1)
            up = up * mask.t().unsqueeze(-1)
        return out, torch.autograd.grad(out, [params[k] for k in keys], up) if training else []

    from poisoncert import models as M

    used = []
    for name in ("_stacked_conv_eval",):
        real = getattr(M, name)
        monkeypatch.setattr(M, name, lambda *a, _real=real, _name=name, **k: used.append(_name) or _real(*a, **k))
    real_apply = M._ConvPool.apply

    def record(*a):
        used.append("_ConvPool")
        used.extend(["real rows"] if a[5] is not None and min(a[5]) < n else [])
        used.extend(["head"] if len(a) > 7 and a[7] is not None else [])
        return real_apply(*a)

    monkeypatch.setattr(M._ConvPool, "apply", record)
    for training, mask in ((True, None), (True, lead), (False, None)):
        fast, fast_grads = run(x, training, mask=mask)
        ref, ref_grads = run(x.clone().requires_grad_(), training, mask=mask)  # the whole-group kernels
        assert torch.equal(fast, ref), (arch, training)
        for a, b in zip(fast_grads, ref_grads, strict=True):
            assert torch.equal(a, b), (arch, training)
    no_grad, _ = run(x, False, grad=False)
    assert torch.equal(no_grad, ref)
    first, _ = run(x[:2].contiguous(), False, grad=False, state={k: v[:2] for k, v in state.items()}, B=2)
    assert torch.equal(first, ref[:2])  # the others dropped (train._evaluate_group keeps at least two)
    k = 3 if arch == "small_cnn" else 5
    if M.mm_matches_bmm(n * h * w, k * k * c + 1, models[0][0].out_channels, c == 1, B):  # this machine: the fast path ran
        assert "_ConvPool" in used and "_stacked_conv_eval" in used, used
        assert "real rows" in used, used  # the padding images skipped
        if arch == "small_cnn":
            assert "head" in used, used  # the Linear after the Flatten joined the step


def test_stacked_fold_of_a_window_one_pool_keeps_the_relu():
    """A MaxPool2d(1) between a convolution and a ReLU folds too: the ReLU must still be applied
    (evaluation, per-model path), as the module and the whole-group path apply it."""
    torch.manual_seed(0)
    tmpl = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.MaxPool2d(1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))
    state = {k: torch.stack([v.detach().clone()] * 2) for k, v in tmpl.state_dict().items()}
    x = torch.randn(2, 5, 6, 6, 1)
    with torch.no_grad():
        fast = stacked_forward(tmpl, state, x, BatchedContext(2, None))
        ref = stacked_forward(tmpl, state, x.clone().requires_grad_(), BatchedContext(2, None))
        own = tmpl(x[0].permute(0, 3, 1, 2))
    assert torch.equal(fast, ref)
    torch.testing.assert_close(fast[0], own, rtol=1e-5, atol=1e-5)


def test_the_bit_agreement_checks_are_decided_again_when_the_thread_count_changes():
    """Whether mm gives bmm's bits depends on the thread count (on this machine: NiN-sized reductions
    agree on 1 thread, not on 2), so a cached answer must not outlive a change of it."""
    from poisoncert import models as M

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        M.mm_matches_bmm(96, 2401, 16, False, 4)
        misses = M._mm_matches_bmm.cache_info().misses
        M.mm_matches_bmm(96, 2401, 16, False, 4)
        assert M._mm_matches_bmm.cache_info().misses == misses  # cached
        torch.set_num_threads(2)
        M.mm_matches_bmm(96, 2401, 16, False, 4)
        assert M._mm_matches_bmm.cache_info().misses == misses + 1  # decided again
    finally:
        torch.set_num_threads(before)


def test_stacked_training_buffers_refuse_a_second_forward_before_the_backward():
    """The stacked layout reuses its patch buffers from step to step: a backward after a second
    forward must fail loudly (autograd's version counter), never compute a gradient from the
    second forward's patches."""
    torch.manual_seed(0)
    ms = [build_model("small_cnn", 1, 8, 8, 3) for _ in range(2)]
    state = {k: torch.stack([m.state_dict()[k] for m in ms]).requires_grad_() for k in ms[0].state_dict()}
    first = stacked_forward(ms[0], state, torch.randn(2, 4, 8, 8, 1), BatchedContext(2, torch.ones(4, 2))).sum()
    stacked_forward(ms[0], state, torch.randn(2, 4, 8, 8, 1), BatchedContext(2, torch.ones(4, 2)))
    with pytest.raises(RuntimeError, match="modified by an inplace operation|has been modified inplace"):
        first.backward()


def test_relu_before_max_pool_runs_after_it_bit_for_bit():
    """The batched interpreters run a ReLU that precedes a MaxPool2d after it: the same values and
    the same gradients, bit for bit, also on ties (zeros, equal maxima)."""
    from poisoncert.models import _children

    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.ReLU())
    assert [type(m).__name__ for _, m in _children(seq)] == ["Conv2d", "MaxPool2d", "ReLU", "ReLU"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (64, 3, 8, 8), generator=g).float()  # many ties and zeros
    x[:8] = 0.0
    for fn in (torch.nn.functional.max_pool2d,):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = fn(torch.relu(a), 2), torch.relu(fn(b, 2))
        assert torch.equal(ya, yb)
        up = torch.randn(ya.shape, generator=g)
        ga, = torch.autograd.grad(ya, a, up)
        gb, = torch.autograd.grad(yb, b, up)
        assert torch.equal(ga, gb)


def test_unknown_architecture_and_bad_sizes_are_one_line_errors():
    with pytest.raises(PoisonCertError, match="unknown architecture 'vgg'; valid ones: lenet, mlp"):
        build_model("vgg", 1, 8, 8, 10)
    with pytest.raises(PoisonCertError, match="n_classes must be >= 1"):
        build_model("mlp", 1, 8, 8, 0)
    with pytest.raises(PoisonCertError, match="lenet needs images of at least 12x12"):
        build_model("lenet", 1, 8, 8, 10)


def test_flop_count_of_the_mlp_is_two_per_multiply_add():
    model = build_model("mlp", 1, 8, 8, 10)
    macs = 64 * 128 + 128 * 128 + 128 * 10
    assert forward_flops_per_sample(model, 1, 8, 8) == 2 * macs
    # training: forward + weight gradients (= forward) + input gradients of all but the first layer
    assert training_flops_per_sample(model, 1, 8, 8) == 3 * 2 * macs - 2 * 64 * 128


def test_flop_count_of_small_cnn_counts_the_convolution_per_output_pixel():
    model = build_model("small_cnn", 1, 8, 8, 10)
    conv = 32 * 8 * 8 * (1 * 3 * 3)  # MACs: every output pixel of every channel, 3x3x1 inputs
    linear = 32 * 4 * 4 * 10
    assert forward_flops_per_sample(model, 1, 8, 8) == 2 * (conv + linear)
    assert np.isfinite(training_flops_per_sample(model, 1, 8, 8))


def test_training_flops_by_hand_at_fashion_mnist_size():
    """28x28x1 counted by hand (2 FLOPs per multiply-add). Training = forward + weight gradients
    (as many as the forward) + input gradients of every layer but the first: the first layer's
    input is the image, which needs no gradient (issue 25: 3 x forward overstated small_cnn by 35%)."""
    small = {"conv": 32 * 28 * 28 * 9, "linear": 32 * 14 * 14 * 10}
    lenet = {"conv1": 6 * 28 * 28 * 25, "conv2": 16 * 10 * 10 * 6 * 25, "fc1": 16 * 5 * 5 * 120, "fc2": 120 * 84, "fc3": 84 * 10}
    for arch, macs, first in (("small_cnn", small, "conv"), ("lenet", lenet, "conv1")):
        model = build_model(arch, 1, 28, 28, 10)
        fwd = 2 * sum(macs.values())
        assert forward_flops_per_sample(model, 1, 28, 28) == fwd, arch
        assert training_flops_per_sample(model, 1, 28, 28) == 3 * fwd - 2 * macs[first], arch
    assert training_flops_per_sample(build_model("small_cnn", 1, 28, 28, 10), 1, 28, 28) == 2 * (3 * 288512 - 225792)
    # the old count (3 x forward) is 35% too high for small_cnn, 10% for lenet
    ratio = {a: 3 * forward_flops_per_sample(build_model(a, 1, 28, 28, 10), 1, 28, 28)
             / training_flops_per_sample(build_model(a, 1, 28, 28, 10), 1, 28, 28) for a in ("small_cnn", "lenet")}
    assert round(ratio["small_cnn"], 2) == 1.35 and round(ratio["lenet"], 2) == 1.10


def test_stacked_evaluation_per_offset_products_keep_the_group_bits_with_nan_and_inf():
    """Evaluation multiplies one pooling-window offset at a time and folds each product into the
    running maximum (``_window_max``'s order); the group's path takes the same maxima in the same
    order, so both agree bit for bit even where a NaN or an infinity reaches a window (a diverged
    model's logits must not depend on the path either; a maximum that drops NaNs, ``torch.fmax``,
    fails here)."""
    torch.manual_seed(0)
    ms = [build_model("small_cnn", 1, 28, 28, 10) for _ in range(3)]
    state = {k: torch.stack([m.state_dict()[k] for m in ms]) for k in ms[0].state_dict()}
    x = torch.randn(3, 16, 28, 28, 1)
    x[0, 3, 5, 7] = float("nan")
    x[1, 2, 10, 10] = float("inf")
    x[2, 4, 0, 0] = -float("inf")
    with torch.no_grad():
        fast = stacked_forward(ms[0], state, x, BatchedContext(3, None))
        ref = stacked_forward(ms[0], state, x.clone().requires_grad_(), BatchedContext(3, None))
    assert fast.isnan().any() and torch.equal(fast.view(torch.int32), ref.view(torch.int32))
