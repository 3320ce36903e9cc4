"""Reading the rehearsal's plot back (rehearsal/plot.py): how much of it is failed-request red."""

from pathlib import Path

from matplotlib.image import imread

from rehearsal.plot import FAILED


def red_pixels(path: Path) -> int:
    image = imread(path)
    red = tuple(int(FAILED[i : i + 2], 16) / 255 for i in (1, 3, 5))
    close = abs(image[:, :, :3] - red).max(axis=2) < 0.02
    return int(close.sum())
