"""What a photo says about itself: capture time (with its UTC offset), camera, lens and GPS, from
its EXIF or from a Google Takeout JSON sidecar.

Pure functions on bytes already read. EXIF is read from the header Pillow has opened (no pixel
is decoded); a HEIC's EXIF comes through pillow-heif the same way. A Takeout sidecar fills what
the photo's own EXIF lacks (Takeout strips nothing, but edited or shared copies often lose it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

_MAKE, _MODEL = 0x010F, 0x0110
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED, _DATETIME = 0x9003, 0x9004, 0x0132
_OFFSET_ORIGINAL, _OFFSET = 0x9011, 0x9010
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434
_TEXT_LIMIT = 120
# ISO 6709 as phones write it: "+38.7223-009.1393+012.500/"
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?")


@dataclass(frozen=True)
class PhotoMeta:
    """A photo's capture facts; every field may be unknown (None).

    `taken_at` is the local wall-clock time the camera recorded ("2024-07-03T18:40:12"), and
    `taken_at_offset` its offset from UTC ("+01:00") when the camera wrote one: a phone's EXIF
    holds both, a Takeout sidecar holds UTC.
    """

    taken_at: str | None = None
    taken_at_offset: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens_model: str | None = None
    gps_latitude: float | None = None
    gps_longitude: float | None = None
    gps_altitude: float | None = None

    def filled_from(self, other: PhotoMeta | None) -> PhotoMeta:
        """These facts, with the unknown ones taken from `other`. A capture time and its offset
        travel together, and so do the GPS coordinates (never a latitude from one source and a
        longitude from the other)."""
        if other is None:
            return self
        out = self
        if out.taken_at is None:
            out = dataclasses.replace(out, taken_at=other.taken_at,
                                      taken_at_offset=other.taken_at_offset)
        if out.gps_latitude is None or out.gps_longitude is None:
            out = dataclasses.replace(out, gps_latitude=other.gps_latitude,
                                      gps_longitude=other.gps_longitude,
                                      gps_altitude=other.gps_altitude)
        for name in ("camera_make", "camera_model", "lens_model"):
            if getattr(out, name) is None:
                out = dataclasses.replace(out, **{name: getattr(other, name)})
        return out

    def without_location(self) -> PhotoMeta:
        """The same facts with the GPS position removed (--no-location)."""
        return dataclasses.replace(self, gps_latitude=None, gps_longitude=None,
                                   gps_altitude=None)

    def is_empty(self) -> bool:
        """True when nothing is known."""
        return all(v is None for v in dataclasses.astuple(self))

    def columns(self) -> dict[str, Any]:
        """The captions-table columns (pipeline/schema.py), `taken_at` as a naive datetime."""
        values = dataclasses.asdict(self)
        values["taken_at"] = (datetime.fromisoformat(self.taken_at)
                              if self.taken_at else None)
        return values


def exif_meta(im: Image.Image) -> PhotoMeta:
    """The capture facts in an opened image's EXIF (header only); empty when it has none.

    A malformed EXIF block gives what could be read: it must never fail a decodable image.
    """
    try:
        exif = Image.Image.getexif(im)
    except Exception:  # a malformed EXIF block
        return PhotoMeta()
    sub = _ifd(exif, _EXIF_IFD)
    gps = _ifd(exif, _GPS_IFD)
    taken = _exif_time(sub.get(_DATETIME_ORIGINAL) or sub.get(_DATETIME_DIGITIZED)
                       or exif.get(_DATETIME))
    offset = _offset(sub.get(_OFFSET_ORIGINAL) or sub.get(_OFFSET)) if taken else None
    lat, lon = _coordinate(gps.get(2), gps.get(1)), _coordinate(gps.get(4), gps.get(3))
    if lat is None or lon is None or (lat == 0 and lon == 0):
        lat = lon = None
    return PhotoMeta(taken_at=taken, taken_at_offset=offset,
                     camera_make=_text(exif.get(_MAKE)), camera_model=_text(exif.get(_MODEL)),
                     lens_model=_text(sub.get(_LENS_MODEL)),
                     gps_latitude=lat, gps_longitude=lon,
                     gps_altitude=_altitude(gps.get(6), gps.get(5)) if lat is not None else None)


def takeout_meta(data: bytes) -> PhotoMeta | None:
    """The facts of a Google Takeout JSON sidecar (photoTakenTime, geoData), or None when it is
    not one (another JSON file, or not JSON at all)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or not ({"photoTakenTime", "geoData", "geoDataExif"} & set(doc)):
        return None
    taken = offset = None
    # A sidecar another tool wrote may hold any JSON under these keys: what is not the shape
    # Takeout writes is ignored, never an error that stops the photo (or the run).
    taken_time = doc.get("photoTakenTime")
    stamp = taken_time.get("timestamp") if isinstance(taken_time, dict) else None
    try:
        when = datetime.fromtimestamp(int(stamp), UTC)
        taken, offset = when.replace(tzinfo=None).isoformat(timespec="seconds"), "+00:00"
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    lat = lon = alt = None
    for key in ("geoData", "geoDataExif"):
        geo = doc.get(key)
        if not isinstance(geo, dict):
            continue
        try:
            lat, lon = float(geo["latitude"]), float(geo["longitude"])
            alt = float(geo.get("altitude", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        if (lat, lon) != (0.0, 0.0) and _on_earth(lat, lon):
            break  # Takeout writes 0.0, 0.0 for "no location"
        lat = lon = alt = None
    return PhotoMeta(taken_at=taken, taken_at_offset=offset, gps_latitude=lat,
                     gps_longitude=lon, gps_altitude=alt)


def video_meta(tags: dict[str, str]) -> PhotoMeta:
    """The capture facts in a video container's metadata (PyAV's `container.metadata`): an
    iPhone's `com.apple.quicktime.creationdate` (local time with offset), else `creation_time`
    (UTC); the place from ISO 6709 (`com.apple.quicktime.location.ISO6709` or Android's
    `location`); make and model from QuickTime's keys."""
    taken = offset = None
    for key in ("com.apple.quicktime.creationdate", "creation_time"):
        try:
            when = datetime.fromisoformat(tags[key].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        taken = when.replace(tzinfo=None).isoformat(timespec="seconds")
        delta = when.utcoffset()
        if delta is not None:
            minutes = int(delta.total_seconds() // 60)
            sign = "-" if minutes < 0 else "+"
            offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        break
    lat = lon = alt = None
    place = tags.get("com.apple.quicktime.location.ISO6709") or tags.get("location")
    match = _ISO6709.match(place or "")
    if match:
        lat, lon = float(match.group(1)), float(match.group(2))
        alt = float(match.group(3)) if match.group(3) else None
        if not _on_earth(lat, lon) or (lat, lon) == (0.0, 0.0):
            lat = lon = alt = None
    return PhotoMeta(taken_at=taken, taken_at_offset=offset,
                     camera_make=_text(tags.get("com.apple.quicktime.make")),
                     camera_model=_text(tags.get("com.apple.quicktime.model")),
                     gps_latitude=lat, gps_longitude=lon, gps_altitude=alt)


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:  # a broken sub-directory
        return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:_TEXT_LIMIT] or None


def _exif_time(value: Any) -> str | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" as ISO 8601 local time; None when absent or invalid."""
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat(timespec="seconds")
    except ValueError:
        return None


def _offset(value: Any) -> str | None:
    """EXIF's "+HH:MM" offset, checked; None when absent or malformed."""
    text = _text(value)
    if not text or len(text) != 6 or text[0] not in "+-" or text[3] != ":":
        return None
    try:
        hours, minutes = int(text[1:3]), int(text[4:6])
    except ValueError:
        return None
    return text if hours <= 14 and minutes < 60 else None


def _coordinate(dms: Any, ref: Any) -> float | None:
    """A GPS (degrees, minutes, seconds) triple and its N/S/E/W reference as signed degrees."""
    try:
        degrees, minutes, seconds = (float(part) for part in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if not math.isfinite(value):
        return None
    ref_text = _text(ref) or ""
    return round(-value if ref_text.upper() in ("S", "W") else value, 7)


def _altitude(value: Any, ref: Any) -> float | None:
    try:
        altitude = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(altitude):
        return None
    below = ref in (1, b"\x01", "\x01")
    return round(-altitude if below else altitude, 2)


def _on_earth(lat: float, lon: float) -> bool:
    return -90 <= lat <= 90 and -180 <= lon <= 180
