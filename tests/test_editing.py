"""Invariants of the latent operations."""
import pytest
import torch

from ccvae import editing
from conftest import prior_on_its_side, tiny_model


@pytest.fixture
def setup(model):
    with torch.no_grad():  # make label 1's present mean the smaller one: a reversed axis
        model.prior_loc.copy_(torch.tensor([[-1.0, 2.0, -0.5], [1.5, -1.0, 3.0]]))
        model.prior_raw_scale.copy_(torch.tensor([[0.0, -1.0, 0.5], [0.3, 0.1, -0.5]]))
    z = editing.encode(model, torch.rand(4, 3, 16, 16))
    return model, z


def _others(z, i):
    return torch.cat([z[..., :i], z[..., i + 1:]], -1)


def test_set_and_resample_touch_only_their_latent(setup):
    model, z = setup
    L = model.num_labels
    for i in range(L):
        for out in (editing.set_latent(z, i, 3.0),
                    editing.resample_latent(model, z, i, present=True),
                    editing.resample_latent(model, z, model.label_names[i], present=False)):
            assert torch.equal(_others(out, i), _others(z, i))
            assert not torch.equal(out[:, i], z[:, i])
    styled = editing.resample_style(model, z)
    assert torch.equal(styled[:, :L], z[:, :L]) and not torch.equal(styled[:, L:], z[:, L:])
    swapped = editing.swap(model, z, z.flip(0), 2)
    assert torch.equal(swapped[:, 2], z.flip(0)[:, 2]) and torch.equal(_others(swapped, 2), _others(z, 2))
    assert torch.equal(z, editing.encode(model, torch.rand(4, 3, 16, 16))) is False  # inputs untouched


@pytest.mark.parametrize("boundary, v, past", [(-0.5, 0, 0.24), (1.0, 1, 0.28), (0.0, 1, 0.04)])
def test_resample_draws_the_prior_on_the_classifiers_side(setup, boundary, v, past):
    """Label 0's prior: N(-1, 0.69^2) absent, N(1.5, 0.85^2) present; the classifier's boundary is put
    where a share `past` of the side's prior draws lies beyond it."""
    model, z = setup
    with torch.no_grad():
        model.classifier_weight[0], model.classifier_bias[0] = 2.0, -2.0 * boundary
    loc, scale = (t.detach() for t in editing.characteristic_prior(model, 0))
    n = 20000
    draws = editing.resample_latent(model, z[:1].expand(n, -1), 0, present=bool(v),
                                    generator=torch.Generator().manual_seed(0))
    assert (editing.is_present(model, draws, 0) == bool(v)).all()  # never a face that reads otherwise
    # a prior draw already on its side is kept as it is (the first numbers the generator gives)
    prior = loc[v] + scale[v] * torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    kept = (prior[:, 0] > boundary) == bool(v)
    assert abs(float(1 - kept.float().mean()) - past) < 0.02
    assert torch.equal(draws[kept, :1], prior[kept])
    # and all of them follow the prior restricted to the side (reference by rejection)
    ref = prior_on_its_side(model, 0, v, 400000)[:, 0]
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        assert abs(float(draws[:, 0].quantile(q) - ref.quantile(q))) < 0.04, q
    assert abs(float(draws[:, 0].std() - ref.std())) < 0.02


def test_traversal_ranges_go_from_absent_to_present(setup):
    model, z = setup
    loc, scale = model.prior_params()
    for i in range(model.num_labels):
        absent, present = editing.traversal_range(model, i, margin=1.0)
        mu0, mu1 = loc[0, i].item(), loc[1, i].item()
        assert abs(absent - mu0) == pytest.approx(scale[0, i].item())
        assert abs(present - mu1) == pytest.approx(scale[1, i].item())
        # the walk starts where the classifier sees "absent" if it agrees with the prior's order
        assert (present - absent) * (mu1 - mu0) > 0
    walk = editing.traverse(model, z, 1, steps=8)
    absent, present = editing.traversal_range(model, 1)
    assert walk.shape == (4, 8, z.shape[1])
    assert walk[0, 0, 1].item() == pytest.approx(absent) and walk[0, -1, 1].item() == pytest.approx(present)
    assert torch.equal(_others(walk, 1), _others(z.unsqueeze(1).expand_as(walk), 1))


def test_grid_axes_follow_their_own_labels(setup):
    model, z = setup
    grid = editing.traverse_grid(model, z, 0, 2, steps=5)
    assert grid.shape == (4, 5, 5, z.shape[1])
    r0, r1 = editing.traversal_range(model, 0)
    c0, c1 = editing.traversal_range(model, 2)
    assert (r0, r1) != (c0, c1)
    torch.testing.assert_close(grid[0, :, 0, 0], torch.linspace(r0, r1, 5))  # rows: label 0's range
    torch.testing.assert_close(grid[0, 0, :, 2], torch.linspace(c0, c1, 5))  # columns: label 2's range
    assert torch.equal(grid[0, :, 3, 0], grid[0, :, 1, 0])  # the row label does not change along a row
    assert torch.equal(grid[0, 2, :, 2], grid[0, 4, :, 2])
    with pytest.raises(ValueError, match="two different labels"):
        editing.traverse_grid(model, z, 1, 1)


def test_generate_and_sample_labels(setup):
    model, _ = setup
    model.set_label_prior([0.0, 1.0, 0.5])
    g = torch.Generator().manual_seed(0)
    y = editing.sample_labels(model, 2000, generator=g)
    assert y[:, 0].mean() < 0.01 and y[:, 1].mean() > 0.99 and abs(y[:, 2].mean() - 0.5) < 0.05
    z = editing.generate(model, y, generator=g)
    loc, _ = model.prior_params()
    assert abs(z[y[:, 2] == 1, 2].mean() - loc[1, 2]) < 0.1
    assert z.shape == (2000, model.latent_dim)
    assert editing.decode(model, z[:3]).shape == (3, 3, 16, 16)
    assert editing.decode(model, z[:6].reshape(2, 3, -1)).shape == (2, 3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        editing.generate(model, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown label 'Hat'"):
        editing.traverse(model, z, "Hat")


def test_compatible_labels_never_clash_and_keep_each_labels_frequency():
    """Like the synthetic faces: three exclusive hair colours, Bald exclusive with bangs and a hat
    (listed after them: drawn in index order, Bald would find one of the two present too often)."""
    names = ["Bangs", "Wearing_Hat", "Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling"]
    pairs = [["Bald", "Bangs"], ["Bald", "Wearing_Hat"], ["Black_Hair", "Blond_Hair"],
             ["Black_Hair", "Brown_Hair"], ["Blond_Hair", "Brown_Hair"]]
    model = tiny_model(labels=names, latent_dim=9, exclusive_labels=pairs)
    prior = torch.tensor([0.5, 0.4, 0.05, 0.27, 0.17, 0.28, 0.5])
    model.set_label_prior(prior)
    exclusive = model.exclusive.float()

    def clashes(y):
        return ((y @ exclusive) * y).sum(1) > 0

    plain = editing.sample_labels(model, 20000, generator=torch.Generator().manual_seed(0))
    y = editing.sample_labels(model, 20000, generator=torch.Generator().manual_seed(0), compatible=True)
    assert clashes(plain).float().mean() > 0.1 and not clashes(y).any()
    assert torch.allclose(y.mean(0), prior, atol=0.012), y.mean(0)  # every label's frequency kept
    assert torch.equal(y[:, 6], plain[:, 6])  # a label without exclusive partners is drawn as before
    # without exclusive labels both modes draw the same labels from the same generator state
    free = tiny_model()
    assert torch.equal(editing.sample_labels(free, 50, generator=torch.Generator().manual_seed(1), compatible=True),
                       editing.sample_labels(free, 50, generator=torch.Generator().manual_seed(1)))
    # frequencies no compatible p(y) can keep (two exclusive labels at 0.9): still never both
    two = tiny_model(labels=("Black_Hair", "Brown_Hair"), latent_dim=4, exclusive_labels=[["Black_Hair", "Brown_Hair"]])
    two.set_label_prior([0.9, 0.9])
    y = editing.sample_labels(two, 1000, generator=torch.Generator().manual_seed(0), compatible=True)
    assert not (y.sum(1) > 1).any() and y[:, 0].mean() > 0.85


def test_label_probs_read_each_label_from_its_own_latent(setup):
    model, z = setup
    p = editing.label_probs(model, z)
    moved = editing.label_probs(model, editing.set_latent(z, 1, 10.0))
    assert torch.equal(moved[:, [0, 2]], p[:, [0, 2]]) and not torch.equal(moved[:, 1], p[:, 1])


def test_intervene_clears_exclusive_labels_only_where_it_sets_its_own_present():
    model = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"), exclusive_labels=[["Brown_Hair", "Black_Hair"]])
    assert model.config["exclusive_labels"] == [["Black_Hair", "Brown_Hair"]]  # in label order
    assert model.exclusive.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    with torch.no_grad():  # q(y_i = 1 | z_i) = sigmoid(z_i): present where z_i > 0
        model.prior_loc.copy_(torch.tensor([[-2.0, -3.0, -2.0], [2.0, 2.0, 2.0]]))
    z = torch.tensor([[-2.0, 2.0, 1.5, 0.1, 0.2, 0.3]]).repeat(4, 1)
    z[2, 1] = -1.0  # row 2 has no brown hair to clear
    out = editing.intervene(model, z, "Black_Hair", torch.tensor([2.0, -2.0, 2.0, 0.5]))
    assert out[:, 0].tolist() == [2.0, -2.0, 2.0, 0.5]
    # rows 0 and 3 now read black: brown goes to the mean of p(z | y = 0); row 1 stays brown-haired
    assert out[:, 1].tolist() == [-3.0, 2.0, -1.0, -3.0]
    assert torch.equal(out[:, 2:], z[:, 2:]) and z[0, 1] == 2.0  # the rest, and the input, untouched
    # a label without exclusive partners, and a model without exclusive labels: set_latent
    assert torch.equal(editing.intervene(model, z, 2, -2.0), editing.set_latent(z, 2, -2.0))
    plain = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"))
    assert plain.config["exclusive_labels"] == [] and not plain.exclusive.any()
    assert torch.equal(editing.intervene(plain, z, 0, 2.0), editing.set_latent(z, 0, 2.0))


def test_clear_exclusive_makes_walks_and_grids_into_edits_and_keeps_the_listed_axes():
    names = ("Black_Hair", "Brown_Hair", "Bald", "Wearing_Hat", "Smiling")
    model = tiny_model(labels=names, latent_dim=7,
                       exclusive_labels=[["Black_Hair", "Brown_Hair"], ["Bald", "Wearing_Hat"]])
    with torch.no_grad():  # q(y_i = 1 | z_i) = sigmoid(z_i): present where z_i > 0
        model.prior_loc.copy_(torch.tensor([[-2.0, -3.0, -4.0, -5.0, -2.0], [2.0] * 5]))
    z = torch.tensor([[-2.0, 2.0, -2.0, 2.0, 1.0, 0.5, 0.5]])  # brown hair and a hat
    walk = editing.traverse(model, z, "Black_Hair", steps=4)  # (1, 4, D)
    out = editing.clear_exclusive(model, walk, ["Black_Hair"])
    black = editing.label_probs(model, walk)[0, :, 0] >= 0.5
    assert black.any() and not black.all()
    assert torch.equal(out[0, :, 1], torch.where(black, -3.0, 2.0))  # brown cleared where black reads present
    assert torch.equal(out[..., 2:], walk[..., 2:]) and torch.equal(out[..., 0], walk[..., 0])
    for k in range(4):  # the walk's steps made one by one as intervene makes them
        assert torch.equal(out[0, k], editing.intervene(model, z, 0, walk[0, k, 0])[0])
    # a grid over Black_Hair and Bald: each clears its own partner; over both colours: both kept
    grid = editing.traverse_grid(model, z, "Black_Hair", "Bald", steps=3)[0]  # (3, 3, D)
    cleared = editing.clear_exclusive(model, grid, ["Black_Hair", "Bald"])
    p = editing.label_probs(model, grid)
    assert torch.equal(cleared[..., 1], torch.where(p[..., 0] >= 0.5, -3.0, 2.0))
    assert torch.equal(cleared[..., 3], torch.where(p[..., 2] >= 0.5, -5.0, 2.0))
    colours = editing.traverse_grid(model, z, "Black_Hair", "Brown_Hair", steps=3)[0]
    assert torch.equal(editing.clear_exclusive(model, colours, ["Black_Hair", "Brown_Hair"]), colours)
    assert torch.equal(editing.clear_exclusive(model, walk, ["Smiling"]), walk)  # no partners: unchanged


@pytest.mark.parametrize("pairs, message", [
    ([["Black_Hair", "Black_Hair"]], "is not a pair of two different labels"),
    ([["Black_Hair", "Red_Hair"]], "is not a pair of two different labels"),
    (["Black_Hair"], "is not a pair of two different labels"),
    ([["Black_Hair", "Brown_Hair", "Smiling"]], "is not a pair of two different labels"),
])
def test_invalid_exclusive_labels_are_named(pairs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"), exclusive_labels=pairs)


def hair_and_smile_model():
    """Black_Hair and Brown_Hair exclusive, Smiling free; q(y_i = 1 | z_i) = sigmoid(z_i) (present where z_i > 0)."""
    model = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"), exclusive_labels=[["Black_Hair", "Brown_Hair"]])
    with torch.no_grad():
        model.prior_loc.copy_(torch.tensor([[-2.0, -3.0, -2.0], [2.0, 2.0, 2.0]]))
    return model


def test_walks_grids_and_resamples_as_edits_are_what_clear_exclusive_makes_of_them():
    model = hair_and_smile_model()
    z = torch.tensor([[-2.0, 2.0, 1.0, 0.5, 0.5, 0.5]])  # brown hair, smiling
    walk = editing.traverse(model, z, "Black_Hair", steps=6)
    assert torch.equal(editing.traverse(model, z, "Black_Hair", steps=6, as_edits=True),
                       editing.clear_exclusive(model, walk, ["Black_Hair"]))
    assert not torch.equal(editing.clear_exclusive(model, walk, ["Black_Hair"]), walk)  # brown cleared somewhere
    grid = editing.traverse_grid(model, z, "Black_Hair", "Smiling", steps=3)
    assert torch.equal(editing.traverse_grid(model, z, "Black_Hair", "Smiling", steps=3, as_edits=True),
                       editing.clear_exclusive(model, grid, ["Black_Hair", "Smiling"]))
    colours = editing.traverse_grid(model, z, "Black_Hair", "Brown_Hair", steps=3, as_edits=True)
    assert torch.equal(colours, editing.traverse_grid(model, z, "Black_Hair", "Brown_Hair", steps=3))  # both axes kept
    many = z.repeat(64, 1)
    draws = editing.resample_latent(model, many, 0, present=True, generator=torch.Generator().manual_seed(0))
    edits = editing.resample_latent(model, many, 0, present=True, generator=torch.Generator().manual_seed(0),
                                    as_edits=True)
    assert torch.equal(edits, editing.clear_exclusive(model, draws, [0]))
    black = draws[:, 0] > 0
    assert black.sum() > 32 and (edits[black, 1] == -3.0).all() and (edits[~black, 1] == 2.0).all()


def test_random_faces_draw_compatible_labels_then_their_latents():
    model = hair_and_smile_model()
    model.set_label_prior([0.45, 0.45, 0.5])  # the factorised p(y) would ask for both colours in 1 of 5
    y, z = editing.random_face(model, 200, generator=torch.Generator().manual_seed(0))
    assert y.shape == (200, 3) and z.shape == (200, model.latent_dim)
    assert not (y[:, 0] * y[:, 1]).any() and 0.3 < y[:, 0].mean() < 0.6
    assert ((z[:, :3] > 0).float() == y).float().mean() > 0.9  # z_i ~ p(z_i | y_i): mostly on y_i's side
    again = editing.random_face(model, 200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[1], z)  # reproducible from the generator


def test_is_present_tells_which_side_of_its_slider_a_face_is_on():
    model = hair_and_smile_model()
    z = torch.tensor([[-2.0, 2.0, 1.0, 0.5, 0.5, 0.5], [2.0, -3.0, -1.0, 0.5, 0.5, 0.5]])
    assert editing.is_present(model, z, "Black_Hair").tolist() == [False, True]
    assert editing.is_present(model, z, 2).tolist() == [True, False]
    for i in range(model.num_labels):
        absent, present = editing.traversal_range(model, i)
        assert editing.is_present(model, editing.set_latent(z, i, present), i).all()
        assert not editing.is_present(model, editing.set_latent(z, i, absent), i).any()
    assert torch.equal(editing.is_present(model, z, 1), editing.label_probs(model, z)[:, 1] >= 0.5)
