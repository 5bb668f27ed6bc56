"""Live previews: a small picture of a running job's latents, every few denoising steps.

A tiny decoder (TAESD, a diffusers `AutoencoderTiny` folder) gives a recognisable picture for
a few milliseconds of work; without one, a fixed 4x3 latent-to-RGB matrix (the "cheap
approximation" AUTOMATIC1111 uses) gives a blurry one for almost nothing. Either way the
latents are only read, so a job's final pixels are the same with previews on or off.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import torch
    from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny

log = logging.getLogger(__name__)

# The longest side of a preview: enough to follow a job, small enough to poll (a few kB).
PREVIEW_SIDE = 128
DECODER_WEIGHTS = "diffusion_pytorch_model.safetensors"

# Latent channel -> (R, G, B), for latents as the pipeline holds them (already scaled by the
# VAE's scaling factor); the result is in [-1, 1] like a VAE's output.
SD15_FACTORS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_FACTORS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)

# A sink takes the latest preview as PNG bytes.
PreviewSink = Callable[[bytes], None]

_decoders: dict[str, AutoencoderTiny] = {}
_decoders_lock = threading.Lock()


class Previewer:
    """Renders every `every`-th step's latents (the first image of the batch) for `sink`."""

    def __init__(
        self, sink: PreviewSink, every: int, decoder_path: str = "", side: int = PREVIEW_SIDE
    ) -> None:
        if every < 0:
            raise ValueError(f"every must be 0 (off) or more, not {every}")
        self.sink = sink
        self.every = every
        self.decoder_path = decoder_path
        self.side = side

    def wants(self, done: int, total: int) -> bool:
        """Whether step `done` of `total` gets a preview (never the last: the result follows)."""
        return self.every > 0 and done < total and done % self.every == 0

    def step(self, done: int, total: int, latents: Any, base: str) -> None:
        """Hand the sink a preview of `latents` when this step gets one; never fails the job."""
        if latents is None or not self.wants(done, total):
            return
        try:
            image = render(latents, base, self.decoder_path, self.side)
        except Exception:
            # A preview is a nicety: a decoder that cannot read these latents costs it, not the job.
            log.exception("preview of step %s/%s failed", done, total)
            return
        if image is not None:
            self.sink(png_bytes(image))


def render(latents: Any, base: str, decoder_path: str = "", side: int = PREVIEW_SIDE) -> Any:
    """The first latent of the batch as a PIL image at most `side` pixels on its longer side.

    With `decoder_path`, a tiny decoder's picture; otherwise the linear approximation (None
    for latents it has no factors for: not 4 channels).
    """
    import torch  # lazy: heavy, not loaded at Django start-up

    with torch.inference_mode():
        first = latents[:1].detach()
        if decoder_path:
            decoder = load_decoder(decoder_path)
            pixels = decoder.decode(first.to(decoder.device, decoder.dtype)).sample
        else:
            pixels = approximate(first, base)
            if pixels is None:
                return None
        image = to_image(pixels[0])
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return image


def approximate(latents: torch.Tensor, base: str) -> torch.Tensor | None:
    """Latents (N, 4, h, w) -> an RGB picture (N, 3, h, w) in [-1, 1] by a fixed 4x3 matrix."""
    import torch  # lazy: heavy, not loaded at Django start-up

    if latents.shape[1] != 4:
        return None
    factors = torch.tensor(SDXL_FACTORS if base == "sdxl" else SD15_FACTORS, device=latents.device)
    return torch.einsum("nlhw,lr->nrhw", latents.float(), factors)


def to_image(pixels: torch.Tensor) -> Any:
    """One (3, h, w) picture in [-1, 1] as an 8-bit RGB PIL image."""
    scaled = ((pixels.float() + 1) / 2).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(scaled.permute(1, 2, 0).cpu().numpy(), "RGB")


def png_bytes(image: Any) -> bytes:
    """The preview as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_decoder(path: str) -> AutoencoderTiny:
    """The tiny decoder in `path` (loaded once per process), on the best device there is."""
    with _decoders_lock:
        decoder = _decoders.get(path)
        if decoder is None:
            # lazy: heavy, not loaded at Django start-up
            from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny

            from generation.engine.loader import pick_device

            decoder = AutoencoderTiny.from_pretrained(path)
            decoder.to(pick_device())
            decoder.eval()
            _decoders[path] = decoder
    return decoder


def build_demo_decoder(target_dir: str) -> bool:
    """Build a tiny AutoencoderTiny with seeded random weights; False if already built.

    Shaped like TAESD (4 latent channels, 8x upscale) but with few, narrow blocks, to test
    the decoder path without the real weights.
    """
    from generation.engine.demo import build_atomically

    def write(_scratch: str, out: str) -> None:
        import torch  # lazy: heavy, not loaded at Django start-up
        from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny

        torch.manual_seed(15)
        AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=4,
        ).save_pretrained(out, safe_serialization=True)

    return build_atomically(target_dir, DECODER_WEIGHTS, write)
