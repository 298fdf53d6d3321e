"""Shared fixtures: tiny models that build in milliseconds."""
import pytest
import torch

from ccvae import CCVAE


def tiny_model(*, labels=("Eyeglasses", "Smiling", "Male"), latent_dim=6, image_size=16, **kwargs) -> CCVAE:
    torch.manual_seed(0)
    return CCVAE(label_names=list(labels), latent_dim=latent_dim, image_size=image_size,
                 channels=[8] * {16: 2, 32: 3, 64: 4}[image_size], hidden_dim=16, **kwargs)


@pytest.fixture
def model() -> CCVAE:
    return tiny_model()


def tiny_batch(batch: int = 4, samples: int = 5):
    """A float64 tiny_model with a random labelled batch: (model, x, y, q(z|x), z (samples, batch, D))."""
    model = tiny_model().double()
    x = torch.rand(batch, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (batch, model.num_labels)).double()
    q = model.encode(x)
    return model, x, y, q, q.sample(samples)
