"""The object classes of :mod:`vitkit.data.scenes`: composite shapes made of named parts.

Every class is drawn in a unit box ``(u, v) ∈ [0, 1]²`` (``u`` left → right, ``v`` top → bottom,
the object stands on ``v = 1``) as an ordered list of parts; each part is one or more primitives
(a polygon, or an ellipse approximated by a fixed polygon). Later parts are drawn over earlier ones
(a door over the walls), so the part map holds the visible part.

Geometry only uses + − × ÷ on Python floats and a constant unit-circle table rounded to 6 decimals,
so the vertices (and hence the masks PIL rasterises) are the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# the unit circle, rounded so that a 1-ulp difference between libm implementations cannot show
CIRCLE = tuple((round(math.cos(2 * math.pi * k / 24), 6), round(math.sin(2 * math.pi * k / 24), 6)) for k in range(24))

Point = tuple[float, float]


def ellipse(cu: float, cv: float, ru: float, rv: float, *, half: str | None = None) -> tuple[Point, ...]:
    """Polygon of an ellipse (24 vertices); ``half='top'`` keeps the upper half (v ≤ cv)."""
    pts = [(cu + ru * c, cv + rv * s) for c, s in CIRCLE]
    if half == "top":
        pts = [(cu + ru * c, cv - rv * abs(s)) for c, s in CIRCLE[:13]]
    return tuple(pts)


def rect(u0: float, v0: float, u1: float, v1: float) -> tuple[Point, ...]:
    return ((u0, v0), (u1, v0), (u1, v1), (u0, v1))


@dataclass(frozen=True)
class PartSpec:
    """One named part: polygons in the unit box, and the colours it is painted in (RGB 0–255)."""

    name: str
    polygons: tuple[tuple[Point, ...], ...]
    palette: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ClassSpec:
    """One object class: its parts in drawing order, width/height ratio and relative size."""

    name: str
    parts: tuple[PartSpec, ...]
    aspect: float  # width / height of the unit box when drawn
    scale: float  # height relative to the other classes at the same depth


_WOOD = ((120, 80, 40), (150, 100, 60), (90, 60, 30), (170, 130, 80))
_BRIGHT = ((200, 40, 40), (40, 90, 200), (230, 190, 30), (40, 160, 70), (150, 60, 170), (230, 120, 30))
_DARK = ((40, 40, 40), (70, 50, 40), (30, 40, 70), (60, 60, 60))
_PALE = ((220, 210, 190), (200, 200, 210), (230, 220, 160), (190, 210, 200), (240, 200, 190))
_GREEN = ((40, 120, 40), (70, 150, 50), (30, 90, 50), (110, 160, 60))

CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("house", (
        PartSpec("walls", (rect(0.08, 0.46, 0.92, 1.0),), _PALE + ((180, 90, 70),)),
        PartSpec("roof", (((0.0, 0.48), (0.5, 0.0), (1.0, 0.48)),), ((150, 40, 30), (90, 60, 50), (60, 70, 90))),
        PartSpec("door", (rect(0.42, 0.68, 0.58, 1.0),), _WOOD + _DARK),
        PartSpec("window", (rect(0.17, 0.56, 0.33, 0.72), rect(0.67, 0.56, 0.83, 0.72)),
                 ((150, 200, 230), (60, 80, 110), (230, 220, 140))),
    ), aspect=0.95, scale=1.1),
    ClassSpec("tree", (
        PartSpec("trunk", (rect(0.42, 0.55, 0.58, 1.0),), _WOOD),
        PartSpec("crown", (ellipse(0.5, 0.33, 0.48, 0.33),), _GREEN + ((200, 120, 40), (160, 60, 40))),
    ), aspect=0.7, scale=1.25),
    ClassSpec("car", (
        PartSpec("cabin", (((0.2, 0.48), (0.3, 0.12), (0.72, 0.12), (0.84, 0.48)),), _PALE + ((120, 160, 190),)),
        PartSpec("body", (rect(0.0, 0.45, 1.0, 0.86),), _BRIGHT + _DARK[:2]),
        PartSpec("wheels", (ellipse(0.22, 0.84, 0.12, 0.16), ellipse(0.78, 0.84, 0.12, 0.16)), _DARK),
    ), aspect=1.8, scale=0.6),
    ClassSpec("person", (
        PartSpec("legs", (rect(0.27, 0.58, 0.47, 1.0), rect(0.53, 0.58, 0.73, 1.0)), _DARK + ((50, 70, 130),)),
        PartSpec("torso", (rect(0.2, 0.2, 0.8, 0.62),), _BRIGHT),
        PartSpec("head", (ellipse(0.5, 0.1, 0.2, 0.1),), ((230, 190, 160), (180, 130, 90), (120, 80, 50))),
    ), aspect=0.42, scale=0.9),
    ClassSpec("flower", (
        PartSpec("stem", (rect(0.45, 0.4, 0.55, 1.0), ((0.55, 0.75), (0.85, 0.6), (0.55, 0.68))), _GREEN),
        PartSpec("petals", (ellipse(0.5, 0.26, 0.5, 0.26),), _BRIGHT + ((240, 150, 200), (250, 250, 250))),
        PartSpec("centre", (ellipse(0.5, 0.26, 0.16, 0.09),), ((230, 190, 30), (90, 60, 30), (250, 120, 20))),
    ), aspect=0.55, scale=0.7),
    ClassSpec("boat", (
        PartSpec("mast", (rect(0.46, 0.04, 0.52, 0.72),), _WOOD + _DARK[:1]),
        PartSpec("sail", (((0.53, 0.06), (0.53, 0.66), (0.95, 0.66)), ((0.45, 0.14), (0.45, 0.66), (0.12, 0.66))),
                 _PALE + ((250, 250, 250), (200, 60, 50))),
        PartSpec("hull", (((0.0, 0.7), (1.0, 0.7), (0.84, 1.0), (0.16, 1.0)),), _WOOD + _BRIGHT[:2]),
    ), aspect=1.0, scale=1.0),
    ClassSpec("fish", (
        PartSpec("tail", (((0.7, 0.5), (1.0, 0.18), (1.0, 0.82)),), _BRIGHT),
        PartSpec("body", (ellipse(0.4, 0.5, 0.38, 0.3),), _BRIGHT + ((160, 170, 180),)),
        PartSpec("eye", (ellipse(0.18, 0.42, 0.05, 0.07),), _DARK[:1] + ((250, 250, 250),)),
    ), aspect=1.7, scale=0.45),
    ClassSpec("mushroom", (
        PartSpec("stem", (rect(0.36, 0.42, 0.64, 1.0),), _PALE),
        PartSpec("cap", (ellipse(0.5, 0.5, 0.5, 0.48, half="top"),), ((200, 40, 40), (150, 90, 50), (230, 150, 40))),
        PartSpec("spots", (ellipse(0.3, 0.3, 0.07, 0.06), ellipse(0.62, 0.2, 0.08, 0.07), ellipse(0.72, 0.38, 0.06, 0.05)),
                 ((250, 250, 250), (230, 220, 180))),
    ), aspect=1.0, scale=0.55),
    ClassSpec("lamp", (
        PartSpec("pole", (rect(0.43, 0.18, 0.57, 0.93),), _DARK + ((120, 120, 130),)),
        PartSpec("base", (rect(0.25, 0.9, 0.75, 1.0),), _DARK),
        PartSpec("light", (((0.12, 0.2), (0.88, 0.2), (0.66, 0.0), (0.34, 0.0)),),
                 ((250, 240, 150), (250, 250, 220), (240, 180, 80))),
    ), aspect=0.28, scale=1.3),
    ClassSpec("bottle", (
        PartSpec("body", (rect(0.18, 0.36, 0.82, 1.0),), ((40, 120, 60), (120, 70, 30), (150, 190, 210), (60, 60, 140))),
        PartSpec("neck", (((0.2, 0.38), (0.38, 0.12), (0.62, 0.12), (0.8, 0.38)),),
                 ((40, 120, 60), (120, 70, 30), (150, 190, 210), (60, 60, 140))),
        PartSpec("cap", (rect(0.36, 0.0, 0.64, 0.12),), _BRIGHT + _DARK[:1]),
        PartSpec("label", (rect(0.18, 0.55, 0.82, 0.8),), _PALE + _BRIGHT[:2]),
    ), aspect=0.38, scale=0.55),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# the defect kinds of the ``defects`` target, as parts of the "defect" class
DEFECT_KINDS: tuple[str, ...] = ("scratch", "spot", "crack")

# global part ids (0 = no part): object parts in class order, then the defect kinds
PART_NAMES: tuple[str, ...] = tuple(f"{c.name}/{p.name}" for c in CLASSES for p in c.parts) + tuple(
    f"defect/{k}" for k in DEFECT_KINDS
)
PART_OFFSET: tuple[int, ...] = tuple(
    1 + sum(len(c.parts) for c in CLASSES[:i]) for i in range(len(CLASSES))
)  # global id of each class's first part
DEFECT_PART_OFFSET = 1 + sum(len(c.parts) for c in CLASSES)


def rotation(t: float) -> tuple[float, float]:
    """(cos θ, sin θ) of θ = 2·atan(t), from the rational parametrisation (exact IEEE arithmetic)."""
    d = 1.0 + t * t
    return (1.0 - t * t) / d, 2.0 * t / d


def place(poly: tuple[Point, ...], cx: float, cy: float, w: float, h: float, cs: tuple[float, float],
          flip: bool = False) -> list[Point]:
    """Unit-box polygon → pixel coordinates: box ``w × h`` centred at ``(cx, cy)``, rotated by ``cs``."""
    c, s = cs
    out = []
    for u, v in poly:
        x = (0.5 - u if flip else u - 0.5) * w
        y = (v - 0.5) * h
        out.append((cx + c * x - s * y, cy + s * x + c * y))
    return out
