"""Synthetic captions: deterministic sentences derived from the image itself.

They are not descriptions of what is in the picture: they name its brightness, orientation,
dominant colours and size, so demo output is recognisably about each image and the same image
always gets the same caption (a retried request is indistinguishable from the first).
"""

from __future__ import annotations

from beam_caption.simulator.image_parts import ImageFacts


def brightness_word(brightness: float) -> str:
    """very dark / dark / softly lit / bright / very bright for a mean luma in 0..1."""
    for limit, word in ((0.15, "very dark"), (0.33, "dark"), (0.55, "softly lit"),
                        (0.85, "bright")):
        if brightness < limit:
            return word
    return "very bright"


def orientation_word(width: int, height: int) -> str:
    """landscape-format, portrait-format or square (within 2%)."""
    if abs(width - height) <= 0.02 * max(width, height):
        return "square"
    return "landscape-format" if width > height else "portrait-format"


def colour_phrase(colours: tuple[str, ...]) -> str:
    """'mostly blue', 'mostly blue and white', 'mostly blue, white and gray'."""
    if not colours:
        return "of no particular colour"
    if len(colours) == 1:
        return f"mostly {colours[0]}"
    return f"mostly {', '.join(colours[:-1])} and {colours[-1]}"


def describe(facts: ImageFacts) -> str:
    """One sentence, e.g. 'A bright landscape-format photo, mostly blue and white, 1024x768.'"""
    kind = "photo" if facts.format == "JPEG" else "image"
    light = brightness_word(facts.brightness)
    article = "An" if light[0] in "aeiou" else "A"
    return (f"{article} {light} {orientation_word(facts.width, facts.height)} {kind}, "
            f"{colour_phrase(facts.colours)}, {facts.width}x{facts.height}.")


def caption(images: list[ImageFacts]) -> str:
    """The answer to a captioning request: one sentence per image (numbered when several)."""
    if not images:
        return "There is no image in this request to describe."
    if len(images) == 1:
        return describe(images[0])
    return " ".join(f"Image {i}: {describe(f)}" for i, f in enumerate(images, start=1))


def keywords(images: list[ImageFacts]) -> list[str]:
    """Short tags for structured answers: colours, brightness and orientation words."""
    tags: list[str] = []
    for facts in images:
        for word in (*facts.colours, brightness_word(facts.brightness),
                     orientation_word(facts.width, facts.height)):
            if word not in tags:
                tags.append(word)
    return tags or ["none"]
