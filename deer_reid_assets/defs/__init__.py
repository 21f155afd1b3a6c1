"""The Dagster layer: assets, checks, resources and jobs that wire the plain core together."""
