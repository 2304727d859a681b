"""A patch discriminator and its hinge losses, for training the ``realistic`` denoiser adversarially.

Why: a denoiser trained on MSE, SSIM or even LPIPS is still paid for predicting the conditional mean of the
lost detail, so it averages texture away (docs/refinement.md: sharpness 0.44–0.65 of the original's after the
LPIPS-trained denoiser). A discriminator that tells decoded patches of clean latents from decoded patches of
denoised ones pays the denoiser for *plausible* texture instead, as in HiFiC (Mentzer et al. 2020) and in the
generative decoders the product's designs build on. It is unconditional (judges realism only; the MSE and
LPIPS terms beside it keep the output tied to the stream) and sees patches of about 46 px, so it works on the
small crops a CPU can afford. Spectral normalisation keeps its gradients bounded without a penalty term.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Real/fake logits per patch of an RGB image in [0, 1] (B×3×H×W → B×1×H/8×W/8)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def generator_loss(disc: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: raise the discriminator's score of ``fake`` (gradients flow into ``fake``)."""
    return -disc(fake).mean()


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss on detached images: real patches above +1, fake ones below −1."""
    return (torch.relu(1 - disc(real.detach())).mean() + torch.relu(1 + disc(fake.detach())).mean())


class Adversary:
    """The discriminator, its optimiser and the weight of its term in the denoiser's loss."""

    def __init__(self, weight: float, device, lr: float = 2e-4, width: int = 32):
        if weight <= 0:
            raise ValueError(f"adversarial weight must be > 0, got {weight}")
        self.weight = weight
        self.disc = PatchDiscriminator(width).to(device)
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
        """One discriminator update on this batch; returns its loss."""
        d = discriminator_loss(self.disc, real, fake)
        self.opt.zero_grad(set_to_none=True)
        d.backward()
        self.opt.step()
        self.last["d"] = float(d.detach())
        return self.last["d"]

    def state(self) -> dict:
        return {"disc": self.disc.state_dict(), "disc_optimizer": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["disc_optimizer"])
