"""`--context exif`: one short, factual line about a photo for the prompt ("Taken 2024-07-03 18:40
near Lisbon, Portugal."), from its capture time and GPS position.

Place names come from an offline reverse geocoder whose data ships inside a registry package
(reverse-geocode: GeoNames places of 1,000+ people and their countries, a k-d tree built in
~0.3 s once per process); nothing is looked up online. The nearest place is often a
neighbourhood ("Intendente" for central Lisbon), so the line names the nearest city of some
size when one is close, and the nearest place otherwise (a mountain village stays itself).
"""

from __future__ import annotations

import math
import threading
from datetime import datetime
from typing import Any

from beam_caption.inputs.metadata import PhotoMeta

CONTEXT_MODES = ("none", "exif")
# (least population, farthest distance in km): the first that has a place wins.
_CITY_RULES = ((1_000_000, 30.0), (100_000, 20.0), (15_000, 10.0))
_EARTH_KM = 6371.0
_LOCK = threading.Lock()


def context_line(meta: PhotoMeta | None, *, location: bool = True,
                 video: bool = False) -> str | None:
    """The line added to the prompt, or None when the photo says neither when nor where."""
    if meta is None:
        return None
    when = _when(meta.taken_at)
    where = None
    if location and meta.gps_latitude is not None and meta.gps_longitude is not None:
        where = place_name(meta.gps_latitude, meta.gps_longitude)
    if not when and not where:
        return None
    verb = "Recorded" if video else "Taken"
    parts = [verb] + ([when] if when else []) + ([f"near {where}"] if where else [])
    return " ".join(parts) + "."


def place_name(latitude: float, longitude: float) -> str | None:
    """"City, Country" near a position, from the offline geocoder; None if it is unavailable
    or the position is not on Earth."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    try:
        import reverse_geocode
    except ImportError:  # the place is left out, never the caption
        return None
    with _LOCK:  # the package builds its tree on first use, not thread-safe
        for population, km in _CITY_RULES:
            place = reverse_geocode.get((latitude, longitude), min_population=population)
            if _distance_km(latitude, longitude, place) <= km:
                return _label(place)
        return _label(reverse_geocode.get((latitude, longitude)))


def _when(taken_at: str | None) -> str | None:
    if not taken_at:
        return None
    try:
        return datetime.fromisoformat(taken_at).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return None


def _label(place: dict[str, Any]) -> str:
    city, country = place.get("city"), place.get("country")
    return ", ".join(p for p in (city, country) if p)


def _distance_km(lat: float, lon: float, place: dict[str, Any]) -> float:
    """Great-circle distance from (lat, lon) to a geocoder place."""
    p1, p2 = math.radians(lat), math.radians(place["latitude"])
    dp, dl = p2 - p1, math.radians(place["longitude"] - lon)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(a)))
