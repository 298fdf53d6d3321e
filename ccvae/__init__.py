"""ccvae: Capturing Label Characteristics in VAEs (Joy et al., ICLR 2021).

    from ccvae import CCVAE, editing
    model = CCVAE.from_pretrained("checkpoints/synthetic-faces")
"""
from . import editing, objective
from .device import default_device
from .hub import CheckpointError
from .model import CCVAE

__all__ = ["CCVAE", "CheckpointError", "default_device", "editing", "objective"]
__version__ = "0.1.0"
