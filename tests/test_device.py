"""The model under bf16 autocast and in channels_last (the GPU settings), checked on the CPU."""
import torch

from ccvae import default_device, editing, objective
from conftest import tiny_model


def test_default_device_is_cpu_without_cuda():
    if not torch.cuda.is_available():
        assert default_device().type == "cpu"
        try:
            default_device("cuda")
        except RuntimeError as e:
            assert "CUDA is not available" in str(e)
        else:
            raise AssertionError("asking for CUDA without it must fail")


def test_bf16_autocast_gives_finite_float32_terms():
    model = tiny_model()
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 2, (4, 3)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sup = objective.supervised(model, x, y, k=8)
        unsup = objective.unsupervised(model, x)
    assert sup.bound.dtype == torch.float32 and unsup.bound.dtype == torch.float32
    (sup.loss + unsup.loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # close to the float32 value: autocast changes precision, not the objective
    ref = objective.unsupervised(model, x, z=model.encode(x).mode()).bound
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = objective.unsupervised(model, x, z=model.encode(x).mode()).bound
    assert torch.allclose(low, ref, rtol=0.05, atol=5.0)


def test_channels_last_gives_the_same_outputs():
    model = tiny_model()
    x = torch.rand(4, 3, 16, 16)
    z = editing.encode(model, x)
    ref = editing.decode(model, z)
    model = model.to(memory_format=torch.channels_last)
    z_cl = editing.encode(model, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(z_cl, z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(editing.decode(model, z_cl), ref, rtol=1e-4, atol=1e-5)
