"""A patch discriminator and its hinge losses, for training the ``realistic`` denoiser adversarially.

Why: a denoiser trained on MSE, SSIM or even LPIPS is still paid for predicting the conditional mean of the
lost detail, so it averages texture away (docs/refinement.md: sharpness 0.44–0.65 of the original's after the
LPIPS-trained denoiser). A discriminator that tells decoded patches of clean latents from decoded patches of
denoised ones pays the denoiser for *plausible* texture instead, as in HiFiC (Mentzer et al. 2020) and in the
generative decoders the product's designs build on. It is unconditional (judges realism only; the MSE and
LPIPS terms beside it keep the output tied to the stream) and sees 38-px patches by default, so it works on the
small crops a CPU can afford. Spectral normalisation keeps its gradients bounded without a penalty term.
A weak discriminator stays near chance and teaches nothing (docs/refinement.md), so its width, depth (patch
size), learning rate and updates per denoiser step are knobs of their own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def patch_size(layers: int) -> int:
    """Receptive field in pixels of a discriminator with ``layers`` stride-2 4×4 convolutions and a 3×3 head."""
    rf, jump = 1 + 2 * 2 ** layers, 2 ** layers  # the head's 3×3 at stride 2^layers
    for _ in range(layers):
        jump //= 2
        rf += 3 * jump
    return rf


class PatchDiscriminator(nn.Module):
    """Real/fake logits per patch of an RGB image in [0, 1] (B×3×H×W → B×1×H/2^L×W/2^L for ``layers`` = L).

    Channels double per layer from ``width`` (capped at 8 × width); three layers see 38-px patches, four 78
    (:func:`patch_size`)."""

    def __init__(self, width: int = 32, layers: int = 3):
        super().__init__()
        if width < 1 or not 1 <= layers <= 6:
            raise ValueError(f"discriminator width must be ≥ 1 and layers 1–6, got {width}, {layers}")
        mods, c = [], 3
        for i in range(layers):
            w = width * min(2 ** i, 8)
            mods += [spectral_norm(nn.Conv2d(c, w, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = w
        self.net = nn.Sequential(*mods, spectral_norm(nn.Conv2d(c, 1, 3, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def generator_loss(disc: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: raise the discriminator's score of ``fake`` (gradients flow into ``fake``)."""
    return -disc(fake).mean()


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss on detached images: real patches above +1, fake ones below −1."""
    return (torch.relu(1 - disc(real.detach())).mean() + torch.relu(1 + disc(fake.detach())).mean())


class Adversary:
    """The discriminator, its optimiser, the weight of its term in the denoiser's loss and how many updates it
    gets per denoiser step (``steps``; each on the same batch of decoded pixels, which the denoiser step has
    already paid for — the discriminator is a fraction of the decoder's cost)."""

    def __init__(self, weight: float, device, lr: float = 2e-4, width: int = 32, layers: int = 3, steps: int = 1):
        if weight <= 0:
            raise ValueError(f"adversarial weight must be > 0, got {weight}")
        if steps < 1:
            raise ValueError(f"discriminator steps per denoiser step must be ≥ 1, got {steps}")
        self.weight, self.steps = weight, steps
        self.disc = PatchDiscriminator(width, layers).to(device)
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=0.0)
        self.last = {"d": 0.0, "g": 0.0}

    def generator_term(self, fake: torch.Tensor) -> torch.Tensor:
        """``weight`` × the generator loss; the discriminator's own weights are not updated by it."""
        self.disc.requires_grad_(False)
        try:
            g = generator_loss(self.disc, fake)
        finally:
            self.disc.requires_grad_(True)
        self.last["g"] = float(g.detach())
        return self.weight * g

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """``steps`` discriminator updates on this batch; returns the last one's loss."""
        for _ in range(self.steps):
            d = discriminator_loss(self.disc, real, fake)
            self.opt.zero_grad(set_to_none=True)
            d.backward()
            self.opt.step()
        self.last["d"] = float(d.detach())
        return self.last["d"]

    def state(self) -> dict:
        return {"disc": self.disc.state_dict(), "disc_optimizer": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        try:
            self.disc.load_state_dict(state["disc"])
        except RuntimeError as e:  # another width or depth than the checkpoint's
            raise ValueError(f"the checkpoint's discriminator has another shape than asked for: {e}") from None
        self.opt.load_state_dict(state["disc_optimizer"])
