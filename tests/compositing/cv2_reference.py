#!/usr/bin/python3
"""Independent reference for the compositing tests, written with OpenCV as
SyncTalk_2D's inference uses it (cv2 images are BGR).

  cv2_reference.py pipeline DIR x1 y1 x2 y2
      DIR/frame.png -> DIR/visual.f32 (6x320x320 float32), and
      DIR/frame.png + DIR/pred.f32 (3x320x320 float32 BGR) ->
      DIR/synctalk328.png, DIR/resize.png
  cv2_reference.py resize DIR W0 H0 W1 H1 ...
      DIR/src_K.png -> DIR/linear_K.png, DIR/cubic_K.png (resized to WK x HK)
(one process per test: importing cv2 costs most of the time)
"""
import sys

import cv2
import numpy as np


def visual(d, x1, y1, x2, y2):
    img = cv2.imread(d + "/frame.png", cv2.IMREAD_COLOR)
    crop = img[y1:y2, x1:x2]
    crop = cv2.resize(crop, (328, 328))  # INTER_LINEAR (SyncTalk_2D passes no flag)
    real = crop[4:324, 4:324].copy()
    masked = cv2.rectangle(real.copy(), (5, 5), (310, 305), (0, 0, 0), -1)
    real = real.transpose(2, 0, 1).astype(np.float32) / 255.0
    masked = masked.transpose(2, 0, 1).astype(np.float32) / 255.0
    np.concatenate([real, masked], axis=0).astype(np.float32).tofile(d + "/visual.f32")


def paste(d, x1, y1, x2, y2):
    img = cv2.imread(d + "/frame.png", cv2.IMREAD_COLOR)
    pred = np.fromfile(d + "/pred.f32", dtype=np.float32).reshape(3, 320, 320)
    # Rounded (SyncTalk_2D truncates with np.uint8; the server rounds).
    pred = np.clip(np.floor(pred.transpose(1, 2, 0) * 255.0 + 0.5), 0, 255).astype(np.uint8)
    w, h = x2 - x1, y2 - y1

    out = img.copy()
    face = cv2.resize(out[y1:y2, x1:x2], (328, 328))
    face[4:324, 4:324] = pred
    out[y1:y2, x1:x2] = cv2.resize(face, (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(d + "/synctalk328.png", out)

    out = img.copy()
    out[y1:y2, x1:x2] = cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(d + "/resize.png", out)


def pipeline(d, x1, y1, x2, y2):
    visual(d, x1, y1, x2, y2)
    paste(d, x1, y1, x2, y2)


def resize(d, *sizes):
    for k in range(len(sizes) // 2):
        w, h = sizes[2 * k], sizes[2 * k + 1]
        src = cv2.imread("%s/src_%d.png" % (d, k), cv2.IMREAD_COLOR)
        for name, interp in (("linear", cv2.INTER_LINEAR), ("cubic", cv2.INTER_CUBIC)):
            out = cv2.resize(src, (w, h), interpolation=interp)
            cv2.imwrite("%s/%s_%d.png" % (d, name, k), out)


if __name__ == "__main__":
    mode, d, *nums = sys.argv[1:]
    args = [int(n) for n in nums]
    {"pipeline": pipeline, "resize": resize}[mode](d, *args)
