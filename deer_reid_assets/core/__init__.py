"""Plain core of deer-reid: database, images, models, matching, metrics.

Nothing in this package imports Dagster; the Dagster layer (``deer_reid_assets.defs``) wires it.
"""
