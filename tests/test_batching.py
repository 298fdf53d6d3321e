"""MicroBatcher: concurrent callers get exactly what fn would give each of them alone."""
import threading
import time

import pytest
import torch

from ccvae import editing
from app_batching import MicroBatcher
from conftest import tiny_model


class Recorder:
    """fn wrapper that records every batch size and can be slowed down or made to fail."""

    def __init__(self, fn, *, delay_s: float = 0.0):
        self.fn, self.delay_s, self.sizes = fn, delay_s, []
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            self.sizes.append(x.shape[0])
        time.sleep(self.delay_s)
        return self.fn(x)


def call_at_once(batcher, inputs):
    """Each input from its own thread, released together; (outputs, errors) in input order."""
    outputs, errors = [None] * len(inputs), [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def call(k):
        barrier.wait()
        try:
            outputs[k] = batcher(inputs[k])
        except Exception as error:  # noqa: BLE001 - the test inspects it
            errors[k] = error

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a caller never got its answer"
    return outputs, errors


def test_concurrent_decodes_equal_unbatched_decodes_and_are_batched():
    model = tiny_model().eval()
    zs = [torch.randn(1, 6, generator=torch.Generator().manual_seed(k)) for k in range(12)]
    recorder = Recorder(lambda z: editing.decode(model, z), delay_s=0.02)
    with MicroBatcher(recorder, max_batch=16, max_wait_s=0.01) as decode:
        outputs, errors = call_at_once(decode, zs)
    assert errors == [None] * 12
    for z, out in zip(zs, outputs):
        assert out.shape == (1, 3, 16, 16)
        assert torch.allclose(out, editing.decode(model, z), atol=1e-5)  # its own row, not a neighbour's
    assert sum(recorder.sizes) == 12 and len(recorder.sizes) < 12  # some calls shared a batch


def test_a_lone_call_is_answered_without_waiting_for_company():
    with MicroBatcher(lambda x: x * 2, max_wait_s=0.0) as double:
        start = time.perf_counter()
        assert torch.equal(double(torch.ones(1, 3)), torch.full((1, 3), 2.0))
        assert time.perf_counter() - start < 1.0


def test_batches_respect_max_batch_and_keep_multi_row_requests_whole():
    recorder = Recorder(lambda x: x + 1, delay_s=0.02)
    inputs = [torch.full((n, 2), float(k)) for k, n in enumerate([1, 3, 2, 1, 4, 1, 2, 3])]
    with MicroBatcher(recorder, max_batch=4, max_wait_s=0.01) as add_one:
        outputs, errors = call_at_once(add_one, inputs)
    assert errors == [None] * len(inputs)
    for x, out in zip(inputs, outputs):
        assert torch.equal(out, x + 1)
    assert max(recorder.sizes) <= 4 and sum(recorder.sizes) == 17


def test_a_request_larger_than_max_batch_runs_alone():
    with MicroBatcher(lambda x: -x, max_batch=2) as negate:
        assert torch.equal(negate(torch.arange(10.0).reshape(5, 2)), -torch.arange(10.0).reshape(5, 2))


def test_a_bad_request_fails_alone_and_the_others_are_answered():
    weights = torch.arange(1.0, 4.0).reshape(3, 1)
    recorder = Recorder(lambda x: x @ weights, delay_s=0.02)
    inputs = [torch.ones(1, 3), torch.ones(1, 3) * 2, torch.ones(1, 5), torch.ones(1, 3) * 4]  # (1, 5) fits nothing
    with MicroBatcher(recorder, max_wait_s=0.01) as total:
        outputs, errors = call_at_once(total, inputs)
    assert errors[2] is not None and outputs[2] is None
    for k in (0, 1, 3):
        assert errors[k] is None and torch.equal(outputs[k], inputs[k] @ weights)


def test_an_input_that_fn_refuses_fails_only_its_caller_and_the_batcher_keeps_serving():
    def picky(x):
        if (x < 0).any():
            raise ValueError("negative latent")
        return x

    with MicroBatcher(picky, max_wait_s=0.01) as check:
        outputs, errors = call_at_once(check, [torch.ones(1, 2), -torch.ones(1, 2), torch.ones(1, 2) * 3])
        assert isinstance(errors[1], ValueError) and "negative latent" in str(errors[1])
        assert torch.equal(outputs[0], torch.ones(1, 2)) and torch.equal(outputs[2], torch.ones(1, 2) * 3)
        with pytest.raises(ValueError, match="negative latent"):
            check(-torch.ones(1, 2))
        assert torch.equal(check(torch.ones(1, 2)), torch.ones(1, 2))  # still serving


def test_fn_returning_the_wrong_number_of_rows_is_an_error_not_a_mixup():
    with MicroBatcher(lambda x: x[:1]) as broken:
        with pytest.raises(ValueError, match="one row per input row"):
            broken(torch.ones(3, 2))


def test_fn_runs_without_autograd_even_from_a_grad_enabled_thread():
    layer = torch.nn.Linear(2, 2)
    with MicroBatcher(layer) as run:
        assert not run(torch.ones(1, 2)).requires_grad


def test_bad_arguments_and_calls_after_close_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda x: x, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(lambda x: x, max_wait_s=-1)
    batcher = MicroBatcher(lambda x: x)
    with pytest.raises(ValueError, match=r"\(n, \.\.\.\)"):
        batcher(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"\(n, \.\.\.\)"):
        batcher(torch.ones(0, 3))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(torch.ones(1, 2))
