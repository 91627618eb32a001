"""A small line-chart PNG writer for scripts/soak: standard library only (zlib, struct).

    chart = Chart(width=1000, panel_height=220, title="...")
    chart.panel("DAEMON RSS (MIB)", [Series("VMRSS", xs, ys, BLUE), ...])
    chart.band(x0, x1, "RESTART T0")          # a shaded span on every panel (an event)
    chart.save("out.png", x_label="SECONDS")

Panels share the x axis and are stacked. Axes get "nice" ticks (1, 2, 5 x 10^k) labelled with
a built-in 5x7 bitmap font (upper case, digits and a little punctuation; lower case is drawn
as upper case). Each panel has a legend (a colour swatch and the series' name) in its top
left corner. Lines are drawn 2 pixels wide; a gap in a series (y None) breaks its line.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
LIGHT: Color = (235, 235, 235)
BLUE: Color = (31, 119, 180)
ORANGE: Color = (255, 127, 14)
GREEN: Color = (44, 160, 44)
RED: Color = (214, 39, 40)
PURPLE: Color = (148, 103, 189)
BAND: Color = (255, 224, 224)

# 5x7 glyphs, column by column (bit 0 = top row), as in the classic glcdfont
FONT: dict[str, tuple[int, ...]] = {
    " ": (0, 0, 0, 0, 0),
    "0": (0x3E, 0x51, 0x49, 0x45, 0x3E), "1": (0x00, 0x42, 0x7F, 0x40, 0x00),
    "2": (0x42, 0x61, 0x51, 0x49, 0x46), "3": (0x21, 0x41, 0x45, 0x4B, 0x31),
    "4": (0x18, 0x14, 0x12, 0x7F, 0x10), "5": (0x27, 0x45, 0x45, 0x45, 0x39),
    "6": (0x3C, 0x4A, 0x49, 0x49, 0x30), "7": (0x01, 0x71, 0x09, 0x05, 0x03),
    "8": (0x36, 0x49, 0x49, 0x49, 0x36), "9": (0x06, 0x49, 0x49, 0x29, 0x1E),
    "A": (0x7E, 0x11, 0x11, 0x11, 0x7E), "B": (0x7F, 0x49, 0x49, 0x49, 0x36),
    "C": (0x3E, 0x41, 0x41, 0x41, 0x22), "D": (0x7F, 0x41, 0x41, 0x22, 0x1C),
    "E": (0x7F, 0x49, 0x49, 0x49, 0x41), "F": (0x7F, 0x09, 0x09, 0x09, 0x01),
    "G": (0x3E, 0x41, 0x49, 0x49, 0x7A), "H": (0x7F, 0x08, 0x08, 0x08, 0x7F),
    "I": (0x00, 0x41, 0x7F, 0x41, 0x00), "J": (0x20, 0x40, 0x41, 0x3F, 0x01),
    "K": (0x7F, 0x08, 0x14, 0x22, 0x41), "L": (0x7F, 0x40, 0x40, 0x40, 0x40),
    "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F), "N": (0x7F, 0x04, 0x08, 0x10, 0x7F),
    "O": (0x3E, 0x41, 0x41, 0x41, 0x3E), "P": (0x7F, 0x09, 0x09, 0x09, 0x06),
    "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E), "R": (0x7F, 0x09, 0x19, 0x29, 0x46),
    "S": (0x46, 0x49, 0x49, 0x49, 0x31), "T": (0x01, 0x01, 0x7F, 0x01, 0x01),
    "U": (0x3F, 0x40, 0x40, 0x40, 0x3F), "V": (0x1F, 0x20, 0x40, 0x20, 0x1F),
    "W": (0x3F, 0x40, 0x38, 0x40, 0x3F), "X": (0x63, 0x14, 0x08, 0x14, 0x63),
    "Y": (0x07, 0x08, 0x70, 0x08, 0x07), "Z": (0x61, 0x51, 0x49, 0x45, 0x43),
    ".": (0x00, 0x60, 0x60, 0x00, 0x00), ",": (0x00, 0x50, 0x30, 0x00, 0x00),
    ":": (0x00, 0x36, 0x36, 0x00, 0x00), "-": (0x08, 0x08, 0x08, 0x08, 0x08),
    "+": (0x08, 0x08, 0x3E, 0x08, 0x08), "=": (0x14, 0x14, 0x14, 0x14, 0x14),
    "/": (0x20, 0x10, 0x08, 0x04, 0x02), "_": (0x40, 0x40, 0x40, 0x40, 0x40),
    "(": (0x00, 0x1C, 0x22, 0x41, 0x00), ")": (0x00, 0x41, 0x22, 0x1C, 0x00),
    "%": (0x23, 0x13, 0x08, 0x64, 0x62), "#": (0x14, 0x7F, 0x14, 0x7F, 0x14),
    "<": (0x08, 0x14, 0x22, 0x41, 0x00), ">": (0x00, 0x41, 0x22, 0x14, 0x08),
    "?": (0x02, 0x01, 0x51, 0x09, 0x06), "'": (0x00, 0x05, 0x03, 0x00, 0x00),
}
GLYPH_W, GLYPH_H = 6, 8  # 5x7 and a column/row of spacing


class Canvas:
    """An RGB image in a bytearray, with the few primitives a line chart needs."""

    def __init__(self, width: int, height: int, bg: Color = WHITE) -> None:
        self.w, self.h = width, height
        self.px = bytearray(bytes(bg) * (width * height))

    def set(self, x: int, y: int, c: Color) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: Color) -> None:
        """Fill [x0, x1] x [y0, y1] (inclusive, clipped)."""
        x0, x1 = max(0, min(x0, x1)), min(self.w - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h - 1, max(y0, y1))
        if x0 > x1 or y0 > y1:
            return
        row = bytes(c) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = 3 * (y * self.w + x0)
            self.px[i:i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, c: Color, width: int = 1) -> None:
        """Bresenham, `width` pixels thick (a square brush)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            if width == 1:
                self.set(x0, y0, c)
            else:
                self.rect(x0, y0, x0 + width - 1, y0 + width - 1, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def dashed_vline(self, x: int, y0: int, y1: int, c: Color, dash: int = 4) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            if (y // dash) % 2 == 0:
                self.set(x, y, c)

    def text(self, x: int, y: int, s: str, c: Color = BLACK, scale: int = 1) -> None:
        """Draw `s` with its top left corner at (x, y)."""
        for ch in s.upper():
            cols = FONT.get(ch, FONT["?"])
            for cx, bits in enumerate(cols):
                for cy in range(7):
                    if bits >> cy & 1:
                        self.rect(x + cx * scale, y + cy * scale,
                                  x + (cx + 1) * scale - 1, y + (cy + 1) * scale - 1, c)
            x += GLYPH_W * scale

    @staticmethod
    def text_width(s: str, scale: int = 1) -> int:
        return max(0, len(s) * GLYPH_W * scale - scale)

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w:3 * (y + 1) * self.w])
                       for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def nice_ticks(lo: float, hi: float, want: int = 5) -> list[float]:
    """Ticks at multiples of 1, 2 or 5 x 10^k covering [lo, hi], about `want` of them."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, want)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def tick_label(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:g}"


@dataclass
class Series:
    name: str
    xs: list[float]
    ys: list[float | None]
    color: Color = BLUE


@dataclass
class Panel:
    title: str
    series: list[Series]
    y_min: float | None = 0.0  # None: from the data


@dataclass
class Chart:
    width: int = 1000
    panel_height: int = 220
    title: str = ""
    panels: list[Panel] = field(default_factory=list)
    bands: list[tuple[float, float, str]] = field(default_factory=list)

    def panel(self, title: str, series: list[Series], y_min: float | None = 0.0) -> None:
        self.panels.append(Panel(title, series, y_min))

    def band(self, x0: float, x1: float, label: str = "") -> None:
        self.bands.append((x0, x1, label))

    def render(self, x_label: str = "") -> Canvas:
        left, right, top, gap, bottom = 70, 20, 50 if self.title else 20, 34, 40
        h = top + len(self.panels) * (self.panel_height + gap) - gap + bottom
        cv = Canvas(self.width, h)
        if self.title:
            cv.text(left, 10, self.title, BLACK, 2)
        xs = [x for p in self.panels for s in p.series for x in s.xs]
        xs += [x for b in self.bands for x in b[:2]]
        x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        x_ticks = nice_ticks(x_lo, x_hi, 10)
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
        pw = self.width - left - right

        def px_x(x: float) -> int:
            return left + round((x - x_lo) / (x_hi - x_lo or 1) * pw)

        for k, p in enumerate(self.panels):
            y0 = top + k * (self.panel_height + gap)  # the panel's top edge
            ph = self.panel_height
            ys = [y for s in p.series for y in s.ys if y is not None]
            lo = min(ys) if ys else 0.0
            hi = max(ys) if ys else 1.0
            if p.y_min is not None:
                lo = min(lo, p.y_min)
            if hi - lo < 1e-9:
                hi = lo + 1
            y_ticks = nice_ticks(lo, hi + (hi - lo) * 0.08, 5)  # headroom for the legend
            y_lo, y_hi = y_ticks[0], y_ticks[-1]

            def px_y(y: float, y0: int = y0, y_lo: float = y_lo, y_hi: float = y_hi) -> int:
                return y0 + ph - round((y - y_lo) / (y_hi - y_lo or 1) * ph)

            for b0, b1, _ in self.bands:
                cv.rect(px_x(b0), y0, max(px_x(b1), px_x(b0) + 2), y0 + ph, BAND)
            for t in y_ticks:
                y = px_y(t)
                cv.line(left, y, left + pw, y, LIGHT)
                lab = tick_label(t)
                cv.text(left - 6 - cv.text_width(lab), y - 3, lab, BLACK)
            for t in x_ticks:
                x = px_x(t)
                cv.line(x, y0, x, y0 + ph, LIGHT)
                cv.line(x, y0 + ph, x, y0 + ph + 4, BLACK)
                lab = tick_label(t)
                cv.text(x - cv.text_width(lab) // 2, y0 + ph + 7, lab, BLACK)
            for b0, _, label in self.bands:
                cv.dashed_vline(px_x(b0), y0, y0 + ph, RED)
                if label:
                    cv.text(px_x(b0) + 3, y0 + ph - 10, label, RED)
            for s in p.series:
                prev = None
                for x, y in zip(s.xs, s.ys):
                    if y is None:
                        prev = None
                        continue
                    pt = (px_x(x), px_y(y))
                    if prev is not None:
                        cv.line(*prev, *pt, s.color, 2)
                    else:
                        cv.rect(pt[0], pt[1], pt[0] + 1, pt[1] + 1, s.color)
                    prev = pt
            # frame, title, legend
            cv.line(left, y0, left, y0 + ph, BLACK)
            cv.line(left, y0 + ph, left + pw, y0 + ph, BLACK)
            cv.line(left, y0, left + pw, y0, GREY)
            cv.line(left + pw, y0, left + pw, y0 + ph, GREY)
            cv.text(left, y0 - 11, p.title, BLACK)
            lx = left + 8
            for s in p.series:
                cv.rect(lx, y0 + 6, lx + 14, y0 + 12, s.color)
                cv.text(lx + 19, y0 + 6, s.name, BLACK)
                lx += 19 + cv.text_width(s.name) + 16
        if x_label:
            cv.text(left + pw - cv.text_width(x_label), h - 12, x_label, BLACK)
        return cv

    def save(self, path: str, x_label: str = "") -> None:
        with open(path, "wb") as f:
            f.write(self.render(x_label).png())


if __name__ == "__main__":  # a self-check: python scripts/soakplot.py /tmp/x.png
    import sys

    xs = [i * 1.0 for i in range(300)]
    c = Chart(title="SOAKPLOT SELF-CHECK 0123456789")
    c.panel("SINE (MIB)", [Series("SIN", xs, [100 + 50 * math.sin(x / 20) for x in xs], BLUE),
                           Series("COS", xs, [100 + 40 * math.cos(x / 15) for x in xs], ORANGE)])
    c.panel("RAMP", [Series("X/2", xs, [x / 2 if x % 100 > 5 else None for x in xs], GREEN)])
    c.band(100, 108, "RESTART T0")
    c.band(200, 215, "RESTART T1")
    c.save(sys.argv[1] if len(sys.argv) > 1 else "soakplot-check.png", "SECONDS")
