"""The neural image codec: autoencoder latents, adaptive quantization, integer entropy coding, one container.

Encode: pad to a multiple of the latent stride (edge replication) → encoder → per-image decoder sensitivity →
steps for the requested operating point → symbols → per-channel integer models → ANS payload → container.
Decode is the exact inverse up to the decoder network, and every quality figure reported at encode time comes
from running that same decode path, so the recorded PSNR is the PSNR a restore will get.

Operating points (exactly one): ``quality`` 0–100 (a fixed base step per quality), ``target_bpp`` (bisection
on the base step against the exact stream size, landing within ±5% where the image allows it) or ``min_psnr``
(the largest base step whose *decoded* PSNR meets the floor, found with a bracketing secant search).

A target below what the full-resolution latent reaches at the coarsest step is coded at a reduced resolution
(:data:`CODED_SCALES`) and upscaled on decode: there the smaller picture at a finer step beats the full one at
its coarsest on PSNR, LPIPS and DISTS alike, where the full one could not even meet the target (docs/codec.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from . import bitstream, entropy, latent_coding
from . import verdicts as V
from .autoencoder import LatentAutoencoder
from .base import CODECS, TARGET_TOLERANCE, Capabilities, Codec
from .bracket import Probe, cheapest_passing
from .errors import (
    BitstreamError,
    CorruptStream,
    ModelMismatch,
    QualityFloorUnreachable,
    UnreadableImage,
)
from .images import DEFAULT_MAX_PIXELS, Picture, decode_alpha, encode_alpha, restored_mode, to_image
from .latent_search import LatentSearch, search_latent
from .metrics import psnr
from .precision import encoder_dtype
from .quantize import QuantParams, choose_params, decoder_sensitivity, dequantize, quantize, uniform_params
from .types import Decoded, EncodeResult

DEFAULT_QUALITY = 75
_SECTION_ALPHA, _SECTION_ICC, _SECTION_EXIF = "ALPH", "ICCP", "EXIF"


def check_one_knob(quality: float | None, target_bpp: float | None, min_psnr: float | None) -> None:
    """Every codec's ``encode`` takes at most one operating point (codec/base.py)."""
    if sum(x is not None for x in (quality, target_bpp, min_psnr)) > 1:
        raise ValueError("give at most one of quality, target_bpp, min_psnr")


def quality_to_step(quality: float) -> float:
    """Base quantization step for a 0–100 quality: 0.12 at 100 (within ~0.1 dB of the autoencoder's own
    ceiling on photos), doubling every 17.5 points down to about 6.8 at 0."""
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in [0, 100], got {quality}")
    return 0.12 * 2.0 ** ((100.0 - quality) / 17.5)


#: search range of the rate-control and quality-floor modes (wider than the quality scale on both ends)
STEP_FINEST, STEP_COARSEST = 0.03, 12.0
#: the resolutions (fractions of width and height) ``target_bpp`` may code at, tried in turn while even the
#: coarsest step overshoots the target; a side is never reduced below the codec's ``min_coded`` pixels
CODED_SCALES = (1.0, 0.5, 0.25)
#: resampling of the reduced resolution: antialiased down at encode, bicubic up at decode (Pillow's integer
#: arithmetic, the same pixels on every machine)
_DOWN, _UP = Image.Resampling.LANCZOS, Image.Resampling.BICUBIC


@dataclass
class Analysis:
    """Everything about one image that does not depend on the operating point: the encoder pass, the latent
    search and the sensitivities — most of an encode's cost. :meth:`NeuralCodec.analyse` returns it so one
    picture can be coded at several operating points (a rate ladder, an RD benchmark) without repeating it."""

    pic: Picture
    latent: np.ndarray  # (C, h, w) float32
    sensitivity: np.ndarray  # (C,)
    pad: tuple[int, int]  # right, bottom
    sections: dict[str, bytes]
    search: dict | None = None  # what the encoder-side latent search did (latent_search.SearchResult.summary)
    codec: "NeuralCodec | None" = field(default=None, repr=False)  # the codec that made it (search, model)
    #: the picture to restore when ``pic`` is a reduced copy of it (else None: ``pic`` itself)
    source: Picture | None = field(default=None, repr=False)
    #: analyses of reduced copies, by scale, made when rate control first needs them
    reduced: dict[float, "Analysis | None"] = field(default_factory=dict, repr=False)

    @property
    def original(self) -> Picture:
        return self.source or self.pic

    @property
    def restored_size(self) -> tuple[int, int] | None:
        """(width, height) to restore when the coded picture is a reduced copy."""
        return None if self.source is None else (self.source.width, self.source.height)


class NeuralCodec(Codec):
    """Codec over any :class:`LatentAutoencoder`. ``adaptive=False`` uses one global step (the baseline)."""

    caps = Capabilities(refines=True, analysis=True)

    @classmethod
    def from_spec(cls, spec) -> "NeuralCodec":
        """The codec over the model ``spec.name`` (weights verified, cached per process) with the spec's options."""
        from .models import load_model
        from .spec import default_device

        return cls(load_model(spec.name, weights=spec.weights, device=spec.device or default_device()),
                   adaptive=not spec.global_step, entropy_model=spec.entropy_model, rdoq=spec.rdoq,
                   verify_refine=spec.verify_refine, refiner=spec.refiner,
                   verify_realistic=spec.verify_realistic, realistic_refiner=spec.refiner,
                   latent_search=spec.latent_search, full_resolution=spec.full_resolution,
                   probes=spec.probes, encoder_precision=spec.encoder_precision)

    def __init__(
        self,
        model: LatentAutoencoder,
        *,
        adaptive: bool = True,
        sensitivity_crop: int = 32,
        probes: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_coded: int = 64,
        entropy_model: str | None = None,
        rdoq: float | None = None,
        verify_refine: bool = False,
        refiner=None,
        verify_realistic: bool = False,
        realistic_refiner=None,
        latent_search: LatentSearch | int | None = None,
        encoder_precision: str = "float32",
        full_resolution: bool = False,
    ):
        self.model = model
        # what target_bpp may code at (CODED_SCALES); full resolution only when asked
        self.coded_scales = (1.0,) if full_resolution else CODED_SCALES
        # the arithmetic of the encoder and the sensitivity probes (codec/precision.py); decoding is float32
        self.encoder_dtype = encoder_dtype(encoder_precision, model)
        # encoder-side search for a better latent to quantize (codec/latent_search.py); an int is its iterations
        if isinstance(latent_search, int):
            latent_search = LatentSearch(latent_search) if latent_search else None
        self.latent_search = latent_search
        # encoder-side checks of refinement against the original, recorded in the stream (codec.verdicts): faithful
        # with ``refiner``, realistic with ``realistic_refiner`` (None: the codec's own for each mode)
        self.verify_refine, self.refiner = verify_refine, refiner
        self.verify_realistic, self.realistic_refiner = verify_realistic, realistic_refiner
        # how new streams are entropy-coded (latent_coding; None: the model's own); decoding follows the id each
        # stream carries
        if entropy_model is None:
            from .models import spec

            entropy_model = spec(model.name).entropy_model
        self.coder = latent_coding.coder(entropy_model)
        # RD-optimised rounding (an encoder choice; streams decode the same either way): None = the coder's default
        self.rdoq = self.coder.default_rdoq if rdoq is None else float(rdoq)
        if self.rdoq < 0:
            raise ValueError("rdoq must be ≥ 0")
        if self.rdoq and not self.coder.prices_symbols:
            raise ValueError(f"the {entropy_model} entropy model cannot price symbols: RD-optimised quantization "
                             "needs a context model (e.g. tae-f2-ctx)")
        self.name = model.name
        self.adaptive = adaptive
        self.sensitivity_crop = sensitivity_crop
        if probes < 1:
            raise ValueError("probes must be ≥ 1")
        self.probes = probes
        self.max_pixels = max_pixels
        # tiny images are edge-padded to at least this many pixels per side: a lone 8x8 block gives the
        # convolutions no context (a flat 1x1 image came back 60 levels off); the padding is carried in the header
        self.min_coded = min_coded

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        pic: Picture,
        *,
        quality: float | None = None,
        target_bpp: float | None = None,
        min_psnr: float | None = None,
        measure: bool = True,
        analysis: Analysis | None = None,
    ) -> EncodeResult:
        """Code ``pic`` at one operating point. ``analysis``: :meth:`analyse` of this very ``pic`` by this codec,
        when the caller codes it at several points; the streams are byte-identical to those without it."""
        check_one_knob(quality, target_bpp, min_psnr)
        if analysis is None:
            a = self.analyse(pic)
        elif analysis.pic is not pic:
            raise ValueError("the analysis belongs to another picture")
        elif analysis.codec is not self:
            raise ValueError("the analysis was made by another codec (its latent search and model may differ)")
        else:
            a = analysis
        if min_psnr is not None:
            return self._encode_min_psnr(a, min_psnr)
        if target_bpp is not None:
            if target_bpp <= 0:
                raise ValueError("target_bpp must be positive")
            a = self._resolution_for(a, target_bpp)
            step, knob = self._step_for_bpp(a, target_bpp), {"target_bpp": target_bpp}
        else:
            q = DEFAULT_QUALITY if quality is None else quality
            step, knob = quality_to_step(q), {"quality": q}
        data, params = self._code(a, step)
        # one unrefined decode serves both the measured PSNR and the refinement check
        planes = self._reconstruct_planes(a, data) if measure or self.checks_refinement else None
        measured = psnr(pic.reference(), planes) if measure else None
        return self._verified(EncodeResult(data, pic.width, pic.height, measured, dict(params, **knob),
                                           decoded=planes if measure else None), a, planes)

    def _verified(self, res: EncodeResult, a: Analysis, planes: np.ndarray | None = None) -> EncodeResult:
        """With ``verify_refine`` / ``verify_realistic``: decode the stream unrefined (``planes``, when the caller
        already has them) and with each candidate setting of the mode, measure each against the original, and add
        the mode's check as a stream section (``codec.verdicts``). The payload is untouched, so the unrefined
        decode — and ``psnr`` — do not change."""
        if not self.checks_refinement:
            return res
        from . import refine as R
        from .images import colour_planes
        from .metrics import METRICS, Reference, sharpness_ratio

        reference = a.original.reference()
        ref = Reference(reference, device=self.model.device)  # scored once per candidate decode

        faithful, realistic = ("psnr", "ms_ssim", "lpips"), ("lpips", "sharpness")  # what each check compares

        def figures(planes, names):
            return tuple(sharpness_ratio(reference, planes) if m == "sharpness" else METRICS.get(m)(ref, planes)
                         for m in names)

        def measure(cfg, refiner, names):
            return figures(colour_planes(self.decode(res.data, refine=cfg, refiner=refiner).rgb, a.pic.mode), names)

        wanted = tuple(dict.fromkeys((faithful if self._checks_faithful else ())
                                     + (realistic if self._checks_realistic else ())))
        base = dict(zip(wanted, figures(planes, wanted) if planes is not None
                        else measure(R.RefineConfig("none", 0), None, wanted)))
        s, params = bitstream.parse(res.data), dict(res.params)
        if self._checks_faithful:
            refiner = R.resolve(self.refiner, self.name, self.model.device)
            k, dp, dm = V.choose_verified_steps(
                tuple(base[m] for m in faithful),
                {k: measure(R.RefineConfig("faithful", k, verified=False), refiner, faithful) for k in V.VERIFY_STEPS})
            s.sections[V.VERDICT_SECTION] = V.Verdict(refiner.fingerprint(), k, dp, dm).pack()
            params["refine_verified"] = {"steps": k, "d_psnr": round(dp, 3), "d_ms_ssim": round(dm, 6)}
        if self._checks_realistic:
            refiner = R.resolve(self.realistic_refiner, self.name, self.model.device, mode="realistic")
            tried = {(k, eta): measure(R.RefineConfig("realistic", k, V.VERIFY_SEED, verified=False, eta=eta),
                                       refiner, realistic) for k, eta in V.REALISTIC_CANDIDATES}
            k, eta, dl, sharp = V.choose_realistic(tuple(base[m] for m in realistic), tried)
            v = V.RealisticVerdict(refiner.fingerprint(), k, eta, V.VERIFY_SEED, dl, base["sharpness"] or 0.0, sharp)
            s.sections[V.REALISTIC_SECTION] = v.pack()
            params["realistic_verified"] = {"steps": k, "eta": eta, "seed": V.VERIFY_SEED, "d_lpips": round(dl, 5),
                                            "sharpness": round(sharp, 4)}
        return EncodeResult(bitstream.pack(s), res.width, res.height, res.psnr, params, decoded=res.decoded)

    @property
    def checks_refinement(self) -> bool:
        """Whether encoding checks a refinement mode against the original (``_verified``)."""
        return self._checks_faithful or self._checks_realistic

    @property
    def _checks_faithful(self) -> bool:
        """``verify_refine``, unless faithful decodes this model's latents unrefined (nothing to check)."""
        return self.verify_refine and not self._unrefined("faithful", self.refiner)

    @property
    def _checks_realistic(self) -> bool:
        """``verify_realistic``, unless realistic decodes this model's latents unrefined."""
        return self.verify_realistic and not self._unrefined("realistic", self.realistic_refiner)

    def _unrefined(self, mode: str, refiner) -> str | None:
        """Why ``mode`` leaves this model's latents as they are with ``refiner`` (``refine.unrefined``)."""
        from .refine import unrefined

        return unrefined(refiner, self.name, mode)

    @torch.no_grad()
    def analyse(self, pic: Picture) -> Analysis:
        """The quality-independent part of encoding ``pic`` (see :class:`Analysis`)."""
        h, w = pic.height, pic.width
        pad_b, pad_r = self._coded_size(h) - h, self._coded_size(w) - w
        rgb = np.pad(pic.rgb, ((0, pad_b), (0, pad_r), (0, 0)), mode="edge")
        x = torch.from_numpy(rgb).to(self.model.device).permute(2, 0, 1)[None].float().div_(255.0)
        z = self.model.encode(x, dtype=self.encoder_dtype)[0]
        search = None
        if self.latent_search is not None and self.latent_search.iterations:
            found = search_latent(self.model, z[None], x, (h, w), self.latent_search)
            z, search = found.latent[0], found.summary(self.latent_search.iterations)
        sens = (
            decoder_sensitivity(self.model, z, crop=self.sensitivity_crop, probes=self.probes,
                                dtype=self.encoder_dtype)
            if self.adaptive
            else np.ones(z.shape[0])
        )
        sections = {}
        if pic.alpha is not None:
            sections[_SECTION_ALPHA] = encode_alpha(pic.alpha)
        if pic.icc:
            sections[_SECTION_ICC] = pic.icc
        if pic.exif:
            sections[_SECTION_EXIF] = pic.exif
        return Analysis(pic, z.float().cpu().numpy(), sens, (pad_r, pad_b), sections, search, self)

    def _reduced(self, a: Analysis, scale: float) -> Analysis | None:
        """The analysis of ``a``'s picture at ``scale`` of its width and height (None: a side would fall below
        ``min_coded``). The alpha plane, ICC and EXIF stay the original's: only the colour planes are reduced."""
        if scale == 1.0:
            return a
        if scale not in a.reduced:
            pic = a.original
            w, h = round(pic.width * scale), round(pic.height * scale)
            if min(w, h) < self.min_coded:
                a.reduced[scale] = None
            else:
                rgb = np.asarray(Image.fromarray(pic.rgb).resize((w, h), _DOWN))
                small = self.analyse(Picture(rgb, None, pic.mode))
                small.sections, small.source = a.sections, pic
                a.reduced[scale] = small
        return a.reduced[scale]

    def _resolution_for(self, a: Analysis, target_bpp: float) -> Analysis:
        """The analysis rate control codes ``target_bpp`` from: the first of :data:`CODED_SCALES` whose coarsest
        step meets the target (within :data:`~.base.TARGET_TOLERANCE`). When none does (the stream's fixed overhead
        alone is above it), full resolution at its coarsest step: a smaller picture would spend about the same
        bytes on fewer pixels."""
        target = (1 + TARGET_TOLERANCE) * target_bpp * a.original.width * a.original.height / 8.0
        for scale in self.coded_scales:
            here = self._reduced(a, scale)
            if here is None:
                break
            if self._estimated_bytes(here, STEP_COARSEST) <= target:
                return here
        return a

    def _coded_size(self, n: int) -> int:
        d = self.model.downscale
        return max(-(-n // d) * d, self.min_coded)

    def _quantize(self, a: Analysis, step: float):
        """(params, symbols, laws): ``laws`` is what RD-optimised rounding already computed for the coder (None
        with plain rounding), so pricing or coding the symbols does not run the entropy model a second time."""
        qp = choose_params(a.latent, step, a.sensitivity) if self.adaptive else uniform_params(a.latent, step)
        if self.rdoq:
            laws: list = []
            return qp, self.coder.rd_quantize(a.latent, qp, self.rdoq, laws), laws
        return qp, quantize(a.latent, qp), None

    def _stream(self, a: Analysis, qp: QuantParams, side: bytes, payload: bytes) -> bytes:
        return bitstream.pack(
            bitstream.Stream(
                codec=self.name,
                width=a.pic.width,
                height=a.pic.height,
                restored_size=a.restored_size,
                mode=a.pic.mode,
                params=qp.pack() + side,
                payload=payload,
                model_fingerprint=bytes.fromhex(self.model.fingerprint)[: bitstream.FINGERPRINT_BYTES],
                entropy_model=self.coder.id,
                pad_right=a.pad[0],
                pad_bottom=a.pad[1],
                sections=a.sections,
            )
        )

    def _code(self, a: Analysis, step: float) -> tuple[bytes, dict]:
        qp, symbols, laws = self._quantize(a, step)
        data = self._stream(a, qp, *self.coder.encode(symbols, qp, laws))
        params = {"base_step": round(step, 6), "adaptive": self.adaptive}
        if a.source is not None:
            params["coded_size"] = [a.pic.width, a.pic.height]
        if self.rdoq:
            params["rdoq"] = self.rdoq
        if a.search:
            params["latent_search"] = a.search
        return data, params

    def _estimated_bytes(self, a: Analysis, step: float) -> float:
        """Stream size from the ideal code length — exact to a few bytes, without running the coder."""
        qp, symbols, laws = self._quantize(a, step)
        bits, side = self.coder.ideal_bits(symbols, qp, laws)
        return len(self._stream(a, qp, b"\0" * side, b"")) + 4 * math.ceil(bits / 32)

    def _step_for_bpp(self, a: Analysis, target_bpp: float, iterations: int = 40) -> float:
        """Bisection in log-step: stream size decreases monotonically (in practice) with the step."""
        target = target_bpp * a.original.width * a.original.height / 8.0
        lo, hi = math.log(STEP_FINEST), math.log(STEP_COARSEST)
        best = (math.inf, STEP_FINEST)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            size = self._estimated_bytes(a, math.exp(mid))
            best = min(best, (abs(size - target), math.exp(mid)))
            if size > target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-4:
                break
        return best[1]

    def _encode_min_psnr(self, a: Analysis, floor: float, max_evals: int = 10) -> EncodeResult:
        """Largest step whose decoded PSNR ≥ ``floor``; every candidate returned was decoded and measured."""
        ref = a.pic.reference()

        def probe(log_step: float) -> Probe:
            data, params = self._code(a, math.exp(log_step))
            p = psnr(ref, self._reconstruct_planes(a, data))
            return Probe(log_step, p - floor, len(data), (p, data, params))

        # PSNR is close to linear in the log step; steps within 2% are not worth another decode
        search = cheapest_passing(probe, passing=math.log(STEP_FINEST), failing=math.log(STEP_COARSEST),
                                  start=(math.log(STEP_FINEST), math.log(STEP_COARSEST)), max_probes=max_evals,
                                  min_width=0.02)
        if search.best is None:
            raise QualityFloorUnreachable(f"best achievable PSNR with {self.name} is "
                                          f"{search.probes[-1].payload[0]:.2f} dB, below the floor {floor:.2f} dB")
        p, data, params = search.best.payload
        return self._verified(EncodeResult(data, a.pic.width, a.pic.height, p, dict(params, min_psnr=floor)), a)

    def _reconstruct_planes(self, a: Analysis, data: bytes) -> np.ndarray:
        dec = self.decode(data)
        from .images import colour_planes

        return colour_planes(dec.rgb, a.pic.mode)

    # ---------------------------------------------------------------- decode
    def _coder_for(self, model_id: int) -> latent_coding.LatentCoder:
        """The entropy coder a stream's id names: this codec's own for its id (a research ``ctx:<folder>`` model
        is known to no other codec, and its id is never a shipped model's), else the shipped one."""
        return self.coder if model_id == self.coder.id else latent_coding.coder_for_id(model_id)

    def parse(self, data: bytes) -> tuple[bitstream.Stream, QuantParams, bytes]:
        """Container and parameter checks, all before any network runs; returns the stream, its quantization
        and the entropy coder's side information."""
        s = bitstream.parse(data)
        if s.codec != self.name:
            raise ModelMismatch(f"stream was made with codec {s.codec!r}; this decoder is {self.name!r}")
        mine = bytes.fromhex(self.model.fingerprint)[: bitstream.FINGERPRINT_BYTES]
        if s.model_fingerprint != mine:
            raise ModelMismatch(
                f"stream needs decoder weights {s.model_fingerprint.hex()}…, the loaded {self.name} weights are {mine.hex()}…"
            )
        coder = self._coder_for(s.entropy_model)  # UnsupportedVersion for an unknown id
        d = self.model.downscale
        for size, pad in ((s.width, s.pad_right), (s.height, s.pad_bottom)):
            if (size + pad) % d or pad >= max(d, self.min_coded):
                raise CorruptStream("padding is inconsistent with the model's stride")
        for w, h in {(s.width, s.height), s.output_size}:
            if w * h > self.max_pixels:
                raise CorruptStream(f"declared size {w}x{h} exceeds the {self.max_pixels} pixel guard")
        if s.restored_size is not None and not all(
                o > c for o, c in zip(s.output_size, (s.width, s.height))):
            raise CorruptStream(f"restored size {s.output_size} is not larger than the coded {s.width}x{s.height}")
        if _SECTION_ALPHA in s.sections and restored_mode(s.mode, True) not in ("RGBA", "LA"):
            # the encoder never writes alpha for 16-bit greyscale; Pillow cannot attach it (ValueError)
            raise CorruptStream(f"an alpha section is not valid for mode {s.mode!r}")
        qp, rest = QuantParams.unpack(s.params)
        if qp.channels != self.model.latent_channels:
            raise CorruptStream(f"stream has {qp.channels} latent channels, the model {self.model.latent_channels}")
        coder.check_side(rest, qp)
        return s, qp, rest

    @torch.no_grad()
    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        """``refine`` (a :class:`~latentarc.codec.refine.RefineConfig`) denoises the dequantized latent before
        the decoder network; ``refiner`` a :class:`~latentarc.codec.refine.Refiner` or refiner name (default:
        the codec's own, see ``refine.refiner_for_codec``). The noise level comes from the stream's steps; a
        stream encoded with ``verify_refine`` / ``verify_realistic`` also says which setting its mode should use
        (``refine.effective``)."""
        s, qp, side = self.parse(data)
        alpha = None
        if _SECTION_ALPHA in s.sections:  # the lossless plane is checked before any network runs
            try:
                alpha = decode_alpha(s.sections[_SECTION_ALPHA], *s.output_size)
            except Image.DecompressionBombError as e:  # a forged PNG header; not an OSError, so decode_alpha misses it
                raise UnreadableImage(f"alpha plane is damaged: {e}") from None
        d = self.model.downscale
        h, w = (s.height + s.pad_bottom) // d, (s.width + s.pad_right) // d
        try:
            symbols = self._coder_for(s.entropy_model).decode(side, s.payload, qp, (qp.channels, h, w))
        except BitstreamError:
            raise
        except Exception as e:  # constriction reports exhausted or invalid data with its own exceptions
            raise CorruptStream(f"entropy decoding failed: {e}") from None
        latent = torch.from_numpy(dequantize(symbols.reshape(-1, h, w), qp)).to(self.model.device)
        refinement = "none"
        if refine is not None and refine.active:
            from . import refine as R

            resolved = R.resolve(refiner, self.name, self.model.device, refine.mode)
            if resolved is None:
                refinement = f"none ({self._unrefined(refine.mode, refiner)})"
            else:
                R.check_latent_space(resolved, self.model.fingerprint)
                refine, refinement = R.effective(refine, s.sections, resolved)
                latent = R.apply(latent[None], qp.step_values(), refine, resolved, self.name)[0]
        img = self.model.decode(latent[None])[0]
        rgb = (img.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy())
        rgb = np.ascontiguousarray(rgb[: s.height, : s.width])
        if s.restored_size is not None:
            rgb = np.asarray(Image.fromarray(rgb).resize(s.restored_size, _UP))
        image = to_image(rgb, s.mode, alpha)
        return Decoded(image, s.mode, s.sections.get(_SECTION_ICC), s.sections.get(_SECTION_EXIF), rgb, refinement)

    def weights_sha256(self) -> str | None:
        return self.model.fingerprint

    def info(self, data: bytes) -> dict:
        """Header, parameters, and payload size against the model's ideal code length."""
        s, qp, side_info = self.parse(data)
        d = self.model.downscale
        h, w = (s.height + s.pad_bottom) // d, (s.width + s.pad_right) // d
        coder = self._coder_for(s.entropy_model)
        symbols = coder.decode(side_info, s.payload, qp, (qp.channels, h, w))
        ideal, _ = coder.ideal_bits(symbols, qp)
        models = entropy.unpack_models(side_info, qp.channels) if coder.id == entropy.ENTROPY_MODEL_ID else []
        side = len(data) - len(s.payload)
        return {
            "codec": s.codec,
            "format_version": s.format_version,
            "model_fingerprint": s.model_fingerprint.hex(),
            "entropy_model": s.entropy_model,
            "entropy_model_name": coder.name,
            "width": s.output_size[0],
            "height": s.output_size[1],
            "coded_width": s.width,
            "coded_height": s.height,
            "pad_right": s.pad_right,
            "pad_bottom": s.pad_bottom,
            "mode": s.mode,
            "restored_mode": restored_mode(s.mode, _SECTION_ALPHA in s.sections),
            "sections": {k: len(v) for k, v in s.sections.items()},
            "latent_channels": qp.channels,
            "steps": [round(x, 6) for x in qp.step_values().tolist()],
            "channel_models": [[m.max_abs, m.p_zero, m.theta] for m in models],
            "stream_bytes": len(data),
            "payload_bytes": len(s.payload),
            "side_info_bytes": side,
            "ideal_payload_bytes": round(ideal / 8, 1),
            "ideal_total_bytes": round(ideal / 8 + side, 1),
            "overhead_vs_ideal_pct": round(100 * (len(data) / (ideal / 8 + side) - 1), 4) if ideal else 0.0,
            "bpp": round(len(data) * 8 / (s.output_size[0] * s.output_size[1]), 5),
            "refine_verified": _verdict_info(s.sections, V.Verdict),
            "realistic_verified": _verdict_info(s.sections, V.RealisticVerdict),
        }


def _verdict_info(sections: dict, kind) -> dict | None:
    """The encoder's refinement check of one mode as ``info`` shows it (None: the stream was not checked)."""
    body = sections.get(kind.SECTION)
    return None if body is None else kind.unpack(body).info()


@CODECS.register_fallback
def _model_codec(name: str) -> type[NeuralCodec]:
    """Any name that is no other codec's is a model name (``UnknownModel`` when it is built, if it is not one)."""
    return NeuralCodec
