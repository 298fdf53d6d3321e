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
