"""An exact pinhole camera over a flat road, for the vanishing-point calibration tests."""

from __future__ import annotations

import math

import numpy as np

WIDTH, HEIGHT = 1280, 720
CENTRE = (WIDTH / 2, HEIGHT / 2)


def camera(f: float, height: float, tilt_deg: float, yaw_deg: float, roll_deg: float, x: float = -2.0) -> np.ndarray:
    """World (road: x across, y along, z up) -> pixel 3x4 projection of a camera at (x, 0, height)."""
    t, yw, r = (math.radians(a) for a in (tilt_deg, yaw_deg, roll_deg))
    forward = np.array([math.sin(yw) * math.cos(t), math.cos(yw) * math.cos(t), -math.sin(t)])
    right = np.array([math.cos(yw), -math.sin(yw), 0.0])
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    R = roll @ R
    K = np.array([[f, 0, CENTRE[0]], [0, f, CENTRE[1]], [0, 0, 1]])
    C = np.array([x, 0.0, height])
    return K @ np.hstack([R, (-R @ C)[:, None]])


def to_pixels(P: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = P @ np.column_stack([xy, np.zeros(len(xy)), np.ones(len(xy))]).T
    return (h[:2] / h[2]).T


def in_view(px: np.ndarray) -> np.ndarray:
    return (px[:, 0] >= 0) & (px[:, 0] < WIDTH) & (px[:, 1] >= 0) & (px[:, 1] < HEIGHT)
