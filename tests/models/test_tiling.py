import numpy as np

from trafficstream.models.detector import Detections
from trafficstream.models.tiling import cut_by_tile_edge, detect_tiled, merge


class ScriptedDetector:
    """Returns fixed detections per image size, so the tiling arithmetic is checked exactly."""

    def __init__(self, by_shape):
        self.by_shape = by_shape
        self.calls = []

    def detect_batch(self, images):
        self.calls.append([im.shape[:2] for im in images])
        return [self.by_shape.get(im.shape[:2], Detections(np.zeros((0, 4)), [], [])) for im in images]

    def __call__(self, image):
        return self.detect_batch([image])[0]


def _dets(*rows):
    a = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32))


def test_tile_boxes_shift_back_and_duplicates_merge():
    image = np.zeros((720, 1280, 3), np.uint8)
    full = _dets([600, 100, 640, 130, 0.5, 2])  # a far car, weakly seen in the full frame
    tile = _dets(
        [200, 100, 240, 130, 0.9, 2],  # the same car in tile coordinates (tile x0 = 400)
        [10, 20, 30, 40, 0.8, 2],  # a car only the tile sees
        [500, 250, 560, 300, 0.9, 7],
    )  # cut by the tile's bottom edge (y1=300 < 720): dropped
    det = ScriptedDetector({(720, 1280): full, (300, 560): tile})
    out = detect_tiled(det, image, [(400, 0, 960, 300)])
    assert det.calls == [[(720, 1280), (300, 560)]]  # one batch for frame + tile
    boxes = sorted(map(tuple, out.xyxy.tolist()))
    assert boxes == [(410.0, 20.0, 430.0, 40.0), (600.0, 100.0, 640.0, 130.0)]
    assert sorted(out.confidence.tolist()) == [0.800000011920929, 0.8999999761581421]


def test_no_tiles_is_a_plain_pass():
    image = np.zeros((100, 100, 3), np.uint8)
    det = ScriptedDetector({(100, 100): _dets([1, 1, 20, 20, 0.9, 2])})
    assert len(detect_tiled(det, image, [])) == 1
    assert det.calls == [[(100, 100)]]


def test_edge_mask_ignores_frame_borders():
    boxes = np.array([[0, 50, 20, 60], [50, 0, 60, 10], [90, 50, 100, 60]], np.float32)
    # Tile at the frame's top-left corner: its left/top edges are frame edges, its right edge is not.
    assert cut_by_tile_edge(boxes, (0, 0, 100, 100), 1280, 720).tolist() == [False, False, True]
    assert len(merge([_dets([0, 0, 10, 10, 0.9, 2]), _dets([0, 0, 10, 10, 0.5, 7])], 0.5)) == 1
