"""Antlers: the 16-point keypoint layout, features from keypoints, antler seasons and the
season-aware matching constraint. Plain code: no Dagster, no SQL."""
