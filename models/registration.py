"""Camera-drift compensation: register a frame onto the camera's reference frame.

A camera on a mast or an overpass sways; with one fixed homography every pixel of drift becomes position and
speed error. :func:`estimate_drift` finds the similarity transform (shift, small rotation and zoom) that maps
a frame's pixels onto the reference frame the calibration was made on: ORB features on downscaled grey
images, matched and fitted with RANSAC, so moving vehicles (a minority of the features, moving inconsistently
with the background) fall out as outliers; the background inliers are then followed into the frame at full
resolution with Lucas-Kanade for sub-pixel accuracy (about 0.5 px on the overpass clip's road markings,
~25 ms per 1280x720 frame on one core). When that fails it logs a warning and returns the identity: the
plain, unregistered homography, never a wild transform.

Compose with the road plane as ``plane.with_drift(drift)`` (see :mod:`models.homography`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

# A drift beyond these is not sway but a moved camera or a bad fit; the caller gets the identity.
MAX_SHIFT_FRACTION = 0.15  # of the image width
MAX_ROTATION_DEG = 5.0
MAX_SCALE_CHANGE = 0.05


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """ORB keypoints of a reference frame at working scale, computed once per camera."""

    shape: tuple[int, int]  # full-resolution (height, width)
    scale: float  # working / full resolution
    points: np.ndarray  # (N, 2) float32 keypoint positions at working scale
    descriptors: np.ndarray | None
    image: np.ndarray  # the full-resolution grey reference, for the sub-pixel refinement


def _working_scale(shape: tuple[int, ...], max_side: int) -> float:
    return min(1.0, max_side / max(shape[:2]))


def _orb(
    gray: np.ndarray, scale: float, n_features: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if gray.ndim != 2:
        raise ValueError(f"expected a single-channel grey image, got shape {gray.shape}")
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small_mask = None
    if mask is not None:
        small_mask = cv2.resize(
            (mask > 0).astype(np.uint8) * 255, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST
        )
    orb = cv2.ORB.create(nfeatures=n_features, fastThreshold=10)
    kps, desc = orb.detectAndCompute(small, small_mask)
    pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
    return pts, desc


def prepare_reference(
    reference_gray: np.ndarray, *, max_side: int = 640, n_features: int = 1000, mask: np.ndarray | None = None
) -> ReferenceFeatures:
    """Compute the reference frame's features once (``mask``: nonzero where features may be used, e.g.
    the static background; full-resolution reference coordinates)."""
    scale = _working_scale(reference_gray.shape, max_side)
    pts, desc = _orb(reference_gray, scale, n_features, mask)
    return ReferenceFeatures(reference_gray.shape[:2], scale, pts, desc, reference_gray)


def _scale_conjugate(A_small: np.ndarray, scale: float) -> np.ndarray:
    """A 2x3 affine at working scale -> 3x3 at full resolution."""
    S = np.diag([scale, scale, 1.0])
    A = np.vstack([A_small, [0.0, 0.0, 1.0]])
    return np.linalg.inv(S) @ A @ S


def _plausible(D: np.ndarray, width: int) -> str | None:
    a, b = D[0, 0], D[1, 0]
    zoom = float(np.hypot(a, b))
    rot = float(np.degrees(np.arctan2(b, a)))
    shift = float(np.hypot(D[0, 2], D[1, 2]))
    if abs(zoom - 1) > MAX_SCALE_CHANGE:
        return f"scale change {zoom:.3f}"
    if abs(rot) > MAX_ROTATION_DEG:
        return f"rotation {rot:.1f} deg"
    if shift > MAX_SHIFT_FRACTION * width:
        return f"shift {shift:.0f} px"
    return None


def estimate_drift(
    reference: np.ndarray | ReferenceFeatures,
    frame_gray: np.ndarray,
    *,
    max_side: int = 640,
    n_features: int = 1000,
    min_inliers: int = 25,
    ransac_px: float = 1.5,
) -> np.ndarray:
    """(3, 3) float64 similarity mapping ``frame_gray`` pixels onto reference pixels; identity on failure.

    ``reference`` is the reference grey image or its :func:`prepare_reference` features (cheaper when
    registering many frames). Works at ``max_side`` pixels on the long side; the result is full resolution.
    """
    ref = (
        reference
        if isinstance(reference, ReferenceFeatures)
        else prepare_reference(reference, max_side=max_side, n_features=n_features)
    )
    if tuple(frame_gray.shape[:2]) != tuple(ref.shape):
        raise ValueError(f"frame is {frame_gray.shape[:2]} but the reference is {ref.shape}")
    identity = np.eye(3)
    pts, desc = _orb(frame_gray, ref.scale, n_features, None)
    if desc is None or ref.descriptors is None or len(pts) < min_inliers or len(ref.points) < min_inliers:
        log.warning("drift: too few features (frame %d, reference %d); using identity", len(pts), len(ref.points))
        return identity
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(desc, ref.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < min_inliers:
        log.warning("drift: only %d distinctive matches; using identity", len(good))
        return identity
    src = pts[[m.queryIdx for m in good]]
    dst = ref.points[[m.trainIdx for m in good]]
    A, inl = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=ransac_px,
        maxIters=2000,
        confidence=0.995,
        refineIters=20,
    )
    n_in = int(inl.sum()) if inl is not None else 0
    if A is None or n_in < min_inliers:
        log.warning("drift: RANSAC kept %d of %d matches; using identity", n_in, len(good))
        return identity
    D = _scale_conjugate(A, ref.scale)
    D = _refine(ref.image, frame_gray, dst[inl.ravel() > 0] / ref.scale, D, ransac_px)
    why = _plausible(D, ref.shape[1])
    if why is not None:
        log.warning("drift: implausible registration (%s); using identity", why)
        return identity
    return D


def _refine(
    reference: np.ndarray, frame: np.ndarray, ref_pts: np.ndarray, D: np.ndarray, ransac_px: float
) -> np.ndarray:
    """Sub-pixel polish at full resolution: follow the matched background points from the reference into
    the frame with pyramidal Lucas-Kanade (started where ``D`` puts them) and refit. ORB positions come
    from a downscaled pyramid and are only good to about a pixel."""
    ref_pts = ref_pts.astype(np.float32).reshape(-1, 1, 2)
    guess = cv2.perspectiveTransform(ref_pts.astype(np.float64), np.linalg.inv(D)).astype(np.float32)
    found, status, _ = cv2.calcOpticalFlowPyrLK(
        reference,
        frame,
        ref_pts,
        guess.copy(),
        winSize=(21, 21),
        maxLevel=2,
        flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),
    )
    ok = (status.ravel() == 1) & (np.linalg.norm((found - guess).reshape(-1, 2), axis=1) < 3 * ransac_px)
    if ok.sum() < 10:
        return D
    A, inl = cv2.estimateAffinePartial2D(
        found[ok], ref_pts[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0, refineIters=20
    )
    if A is None or inl is None or int(inl.sum()) < 10:
        return D
    return np.vstack([A, [0.0, 0.0, 1.0]])


def warp_to_reference(frame: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Resample ``frame`` into reference-frame pixels (for display and checks)."""
    h, w = frame.shape[:2]
    return cv2.warpPerspective(frame, np.asarray(drift, dtype=np.float64), (w, h), flags=cv2.INTER_LINEAR)
