"""Shared fixtures: tiny models that build in milliseconds."""
import pytest
import torch

from ccvae import CCVAE, editing


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


def prior_on_its_side(model, label: int, v: int, n: int, *, seed: int = 123) -> torch.Tensor:
    """Reference draws of p(z_i | y_i = v) restricted to where the classifier reads v, by rejection:
    n prior draws of label i's block, those the classifier reads otherwise dropped. (m <= n, d)."""
    loc, scale = editing.characteristic_prior(model, label)
    x = loc[v] + scale[v] * torch.randn(n, model.characteristic_dim, generator=torch.Generator().manual_seed(seed))
    z = torch.zeros(n, model.latent_dim)
    z[:, model.block(label)] = x
    return x[editing.is_present(model, z, label) == bool(v)]
