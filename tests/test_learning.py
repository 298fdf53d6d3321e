"""A few hundred steps on a tiny labelled image set raise held-out accuracy far above chance."""
import torch

from ccvae import editing, objective
from conftest import tiny_model


def _images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 images: label 0 = a square in the top-left (varying size and brightness),
    label 1 = a bar along the bottom (varying length); a random grey background."""
    y = (torch.rand(n, 2, generator=g) < torch.tensor([0.5, 0.3])).float()
    x = torch.rand(n, 1, 1, 1, generator=g).mul(0.3).expand(n, 3, 16, 16).clone()
    for b in range(n):
        if y[b, 0]:
            s = int(torch.randint(3, 7, (1,), generator=g))
            x[b, :, 1:1 + s, 1:1 + s] = 0.6 + 0.4 * torch.rand(1, generator=g)
        if y[b, 1]:
            w = int(torch.randint(6, 15, (1,), generator=g))
            x[b, 1, 12:15, 1:1 + w] = 1.0
    return x, y


def test_supervised_training_learns_labels():
    g = torch.Generator().manual_seed(0)
    x_train, y_train = _images(512, g)
    x_test, y_test = _images(256, g)
    model = tiny_model(labels=["Square", "Bar"], latent_dim=6)
    model.set_label_prior(y_train.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def accuracy():
        z = editing.encode(model, x_test)
        return ((editing.label_probs(model, z) > 0.5).float() == y_test).float().mean().item()

    before = accuracy()
    torch.manual_seed(0)
    for step in range(300):
        idx = torch.randint(0, 512, (32,), generator=g)
        result = objective.supervised(model, x_train[idx], y_train[idx], k=16)
        loss = result.loss - 100.0 * result.log_qyx.mean()  # the trainer's classification weight alpha
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    assert after > 0.9, (before, after)
    assert after > before + 0.2
