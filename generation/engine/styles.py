"""Style presets: a named prompt template and negative prompt, as Stability's style_preset names.

Plain strings (no torch): the web tier applies a preset before the job is queued, so the stored
prompt is the one the engine ran.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StylePreset:
    """A prompt template (`{prompt}` is the caller's prompt) and the negative prompt it adds."""

    template: str
    negative: str

    def apply(self, prompt: str, negative_prompt: str) -> tuple[str, str]:
        """(prompt, negative prompt) with this style; the caller's negative comes first."""
        negative = ", ".join(part for part in (negative_prompt.strip(), self.negative) if part)
        return self.template.format(prompt=prompt), negative


# The style_preset names of Stability's API, in their order.
STYLE_PRESETS: dict[str, StylePreset] = {
    "3d-model": StylePreset(
        "professional 3d model of {prompt}, octane render, highly detailed, volumetric lighting",
        "ugly, deformed, noisy, low poly, blurry, painting",
    ),
    "analog-film": StylePreset(
        "analog film photo of {prompt}, faded film, grainy, vignette, vintage, kodachrome",
        "painting, drawing, illustration, cartoon, anime, 3d render, glitch, deformed",
    ),
    "anime": StylePreset(
        "anime artwork of {prompt}, anime style, key visual, vibrant, studio anime",
        "photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    "cinematic": StylePreset(
        "cinematic film still of {prompt}, shallow depth of field, vignette, high budget, "
        "moody, epic, film grain",
        "anime, cartoon, graphic, text, painting, crayon, sketch, abstract, deformed",
    ),
    "comic-book": StylePreset(
        "comic book panel of {prompt}, graphic illustration, comic art, graphic novel art, "
        "vibrant, highly detailed",
        "photograph, deformed, glitch, noisy, realistic, stock photo",
    ),
    "digital-art": StylePreset(
        "concept art of {prompt}, digital artwork, illustrative, painterly, matte painting, "
        "highly detailed",
        "photo, photorealistic, realism, ugly",
    ),
    "enhance": StylePreset(
        "breathtaking {prompt}, award-winning, professional, highly detailed",
        "ugly, deformed, noisy, blurry, distorted, grainy",
    ),
    "fantasy-art": StylePreset(
        "ethereal fantasy concept art of {prompt}, magnificent, celestial, painterly, epic, "
        "majestic, magical, fantasy art",
        "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed",
    ),
    "isometric": StylePreset(
        "isometric style {prompt}, vibrant, beautiful, crisp, detailed, ultra detailed, intricate",
        "deformed, mutated, ugly, disfigured, blur, blurry, noise, noisy, realistic, photographic",
    ),
    "line-art": StylePreset(
        "line art drawing of {prompt}, professional, sleek, modern, minimalist, graphic, "
        "line art, vector graphics",
        "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, realistic, colorful",
    ),
    "low-poly": StylePreset(
        "low-poly style {prompt}, low-poly game art, polygon mesh, jagged, blocky, "
        "wireframe edges, centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "modeling-compound": StylePreset(
        "play-doh style {prompt}, sculpture, clay art, centered composition, claymation",
        "sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "neon-punk": StylePreset(
        "neonpunk style {prompt}, cyberpunk, vaporwave, neon, vibes, vibrant, stunningly "
        "beautiful, crisp, detailed, sleek, ultramodern, magenta highlights, dark purple shadows",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly",
    ),
    "origami": StylePreset(
        "origami style {prompt}, paper art, pleated paper, folded, origami art, pleats, "
        "cut and fold, centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "photographic": StylePreset(
        "cinematic photo of {prompt}, 35mm photograph, film, bokeh, professional, 4k, "
        "highly detailed",
        "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed",
    ),
    "pixel-art": StylePreset(
        "pixel-art {prompt}, low-res, blocky, pixel art style, 8-bit graphics",
        "sloppy, messy, blurry, noisy, highly detailed, ultra textured, photo, realistic",
    ),
    "tile-texture": StylePreset(
        "{prompt}, seamless tileable texture, repeating pattern, flat lighting, top-down",
        "perspective, shadows, vignette, border, frame, text, watermark",
    ),
}
