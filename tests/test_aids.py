"""Training aids (train/aids.py): the intervention term, edit focus, precedence, residual emphasis."""
import math

import pytest
import torch

from ccvae import objective
from ccvae.distributions import image_log_likelihood
from conftest import tiny_batch, tiny_model
from train import aids


def test_intervention_edits_target_the_flipped_label_and_train_only_the_decoder_side():
    model = tiny_model().double()
    torch.manual_seed(3)
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64)
    z = model.encode(x).sample()  # (B, D), through the encoder
    with torch.no_grad():  # a classifier that reads every label as present, whatever the image
        model.classifier_weight.zero_()
        model.classifier_bias.fill_(30.0)
    ones, zeros = torch.ones(6, 3, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64)
    # labels all present: every edit flips one to absent, which this classifier never reads
    value, label = aids.intervention_edits(model, z.detach(), ones)
    torch.testing.assert_close(value, torch.full((6,), -30.0, dtype=torch.float64), atol=1e-9, rtol=0)
    assert label.shape == (6,) and ((label >= 0) & (label < 3)).all()
    # labels all absent: every edit asks for present, which it always reads
    value, _ = aids.intervention_edits(model, z, zeros)
    assert (value > -1e-9).all() and (value <= 0).all()

    model = tiny_model()
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 2, (4, 3)).float()
    aids.intervention_edits(model, model.encode(x).sample(), y)[0].sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads.items():  # the judge (classifier, prior) takes nothing; decoder and encoder (via z) do
        if name.startswith(("classifier", "prior")):
            assert g is None or not g.any(), name
    assert any(g is not None and g.any() for n, g in grads.items() if n.startswith("decoder")), "decoder"
    assert any(g is not None and g.any() for n, g in grads.items() if n.startswith("encoder")), "encoder via z"


def test_the_judge_gets_no_gradient_through_the_edited_image():
    model = tiny_model()
    torch.manual_seed(4)
    y = torch.randint(0, 2, (4, 3)).float()
    z = torch.randn(4, model.latent_dim)  # no path into the encoder except as the judge
    aids.intervention_edits(model, z, y)[0].sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.decoder.parameters())


def _recording_model():
    """A tiny model with p(z_i | y_i = 0) at -50 and p(z_i | y_i = 1) at +50, both narrow, whose
    decode records the latents it is given: (model, list of the (B, D) latents decoded)."""
    model = tiny_model()
    with torch.no_grad():
        model.prior_loc.copy_(torch.tensor([[-50.0] * 3, [50.0] * 3]))
        model.prior_raw_scale.fill_(-10.0)
    decoded = []
    plain_decode = model.decode
    model.decode = lambda z: decoded.append(z.detach().clone()) or plain_decode(z)
    return model, decoded


def test_adding_a_label_clears_its_exclusive_partner_first_as_the_app_edits():
    model, decoded = _recording_model()
    y = torch.tensor([[1.0, 0.0, 0.0]]).repeat(300, 1)  # every face has label 0, exclusive with label 1
    z = torch.randn(300, model.latent_dim)
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 1] = exclusive[1, 0] = True
    with torch.no_grad():
        aids.intervention_edits(model, z, y, generator=torch.Generator().manual_seed(0), exclusive=exclusive)
    edit = decoded[-1]
    added1, added2, removed0 = edit[:, 1] > 40, edit[:, 2] > 40, (edit[:, 0] < -40) & (edit[:, 1] < 40)
    assert added1.any() and added2.any() and removed0.any()  # any flip is drawn
    assert (edit[added1, 0] < -40).all()  # adding label 1 cleared label 0 first
    assert torch.equal(edit[added2, 0], z[added2, 0])  # label 2 goes with label 0: kept
    assert torch.equal(edit[:, 3:], z[:, 3:])  # the style latents never change
    with torch.no_grad():  # without exclusive pairs nothing is cleared
        aids.intervention_edits(model, z, y, generator=torch.Generator().manual_seed(0))
    edit = decoded[-1]
    added1 = edit[:, 1] > 40
    assert added1.any() and torch.equal(edit[added1, 0], z[added1, 0])
    with pytest.raises(ValueError, match=r"exclusive has shape \(2, 2\), expected \(3, 3\)"):
        aids.intervention_edits(model, z, y, exclusive=torch.zeros(2, 2, dtype=torch.bool))


def test_precedence_lifts_an_exclusive_pair_one_way_in_list_order():
    exclusive = torch.zeros(4, 4, dtype=torch.bool)
    for i, j in [(0, 1), (0, 2), (1, 2)]:  # 0, 1 and 2 pairwise exclusive; 3 free
        exclusive[i, j] = exclusive[j, i] = True
    torch.testing.assert_close(aids.with_precedence(exclusive, []), exclusive)
    lifted = aids.with_precedence(exclusive, [2, 0])  # 2 wins over 0 and 1, 0 over 1
    expected = exclusive.clone()
    expected[2, 0] = expected[2, 1] = expected[0, 1] = False  # row: the label added
    torch.testing.assert_close(lifted, expected)
    assert lifted[0, 2] and lifted[1, 0] and lifted[1, 2]  # the losers' edits still respect the winners
    assert not lifted[:, 3].any() and not lifted[3].any()  # a listed order never makes a pair exclusive
    for order in ([0, 0], [4], [-1]):
        with pytest.raises(ValueError, match=r"order must list distinct labels in 0\.\.3"):
            aids.with_precedence(exclusive, order)


def test_an_edit_adding_a_label_with_precedence_keeps_its_partner_and_the_reverse_clears_it():
    model, decoded = _recording_model()
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(150, 1)  # label 0 or label 1, exclusive
    z = torch.where(y.bool(), 50.0, -50.0)
    z = torch.cat([z, torch.randn(300, model.latent_dim - 3)], 1)
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 1] = exclusive[1, 0] = True
    with torch.no_grad():
        aids.intervention_edits(model, z, y, generator=torch.Generator().manual_seed(0),
                                exclusive=aids.with_precedence(exclusive, [1]))
    edit = decoded[-1]
    both = (edit[:, 0] > 40) & (edit[:, 1] > 40)
    assert both[0::2].any() and not both[1::2].any()  # adding 1 to a face of 0 keeps 0; adding 0 to 1 never does
    added_1 = (y[:, 1] == 0) & (edit[:, 1] > 40)
    assert added_1.any() and (edit[added_1, 0] > 40).all()  # label 1 wins: label 0 stays present
    added_0 = (y[:, 0] == 0) & (edit[:, 0] > 40)
    assert added_0.any() and (edit[added_0, 1] < -40).all()  # drawn with label 1 cleared first


def test_edit_focus_is_uniform_without_misses_and_follows_the_miss_rate_as_asked():
    none = torch.zeros(2, 3)
    assert torch.equal(aids.edit_focus(none, 0.7), torch.ones(3))  # nothing drawn yet: the prior alone
    drawn = torch.tensor([[100.0, 100.0, 100.0], [1.0, 3.0, 11.0]])
    miss = (drawn[1] + 0.05) / (drawn[0] + 1)
    assert torch.equal(aids.edit_focus(drawn, 0.0), torch.ones(3))
    torch.testing.assert_close(aids.edit_focus(drawn, 1.0), miss / miss.mean())
    half = aids.edit_focus(drawn, 0.5)
    torch.testing.assert_close(half, 0.5 + 0.5 * miss / miss.mean())
    assert half.mean().item() == pytest.approx(1.0) and half.min() >= 0.5  # every label keeps half its share
    with pytest.raises(ValueError, match=r"intervention_focus must lie in \[0, 1\], got 1.5"):
        aids.edit_focus(drawn, 1.5)


def test_focus_draws_the_flipped_label_by_weight():
    model = tiny_model()
    with torch.no_grad():  # the value names the edited label: -20 for adding 1, -30 for adding 2
        model.classifier_weight.zero_()
        model.classifier_bias.copy_(torch.tensor([-10.0, -20.0, -30.0]))
    y = torch.zeros(300, 3)
    z = torch.randn(300, model.latent_dim)
    with torch.no_grad():
        value, label = aids.intervention_edits(model, z, y, generator=torch.Generator().manual_seed(0),
                                               focus=torch.tensor([1e-6, 1e-6, 1.0]))
    assert ((value + 30).abs() < 0.01).float().mean() > 0.99 and (label == 2).float().mean() > 0.99
    with pytest.raises(ValueError, match=r"focus must hold one weight per label, shape \(3,\), got \(2,\)"):
        aids.intervention_edits(model, z, y, focus=torch.ones(2))


def test_residual_emphasis_keeps_every_value_and_scales_each_pixels_gradient_by_its_error():
    torch.manual_seed(3)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.1, dtype=torch.float64)
    assert aids.emphasise_residuals(x, logits, aids.Emphasis(0.0)) is logits
    plain = image_log_likelihood(x, logits, "gaussian", s)
    (g_plain,) = torch.autograd.grad(plain.sum(), logits)
    spread = []
    for power, eps in ((1.0, 0.01), (2.0, 0.01), (1.0, 0.3), (1.0, 3.0)):
        emph = image_log_likelihood(x, aids.emphasise_residuals(x, logits, aids.Emphasis(power, eps)), "gaussian", s)
        torch.testing.assert_close(emph, plain)  # the value is the plain log-likelihood
        (g,) = torch.autograd.grad(emph.sum(), logits)
        r = (((x - torch.sigmoid(logits)) ** 2).sum(1, keepdim=True) + eps ** 2).sqrt() ** power
        torch.testing.assert_close(g, g_plain * r / r.mean((2, 3), keepdim=True))  # weights average 1 per image
        if power == 1.0:
            spread.append(float((g / g_plain).std()))
    assert spread[0] > spread[1] > spread[2]  # a higher floor pulls the weights towards the plain gradient's 1
    for bad, match in ((aids.Emphasis(-1.0), "residual_emphasis must be a finite power >= 0, got -1.0"),
                       (aids.Emphasis(math.inf), "finite power >= 0, got inf"),
                       (aids.Emphasis(1.0, 0.0), "residual_emphasis_floor must be a finite number > 0, got 0.0")):
        with pytest.raises(ValueError, match=match):
            aids.emphasise_residuals(x, logits, bad)


def test_an_emphasised_likelihood_keeps_the_objectives_values_and_changes_the_decoders_gradient():
    model, x, y, q, z = tiny_batch(4, 5)
    assert aids.emphasised_log_likelihood(model, aids.Emphasis(0.0)) is None  # off: the model's own
    plain = objective.supervised(model, x, y, z=z, posterior=q)
    emph = objective.supervised(model, x, y, z=z, posterior=q,
                                log_likelihood=aids.emphasised_log_likelihood(model, aids.Emphasis(1.0)))
    torch.testing.assert_close(emph.bound, plain.bound)
    torch.testing.assert_close(emph.loss, plain.loss)
    params = list(model.decoder.parameters())
    g_plain = torch.autograd.grad(plain.loss, params, retain_graph=True)
    g_emph = torch.autograd.grad(emph.loss, params)
    assert not all(torch.allclose(a, b) for a, b in zip(g_plain, g_emph))  # the decoder learns otherwise
