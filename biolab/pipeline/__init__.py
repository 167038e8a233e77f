"""Experiments as stage graphs: plan, cache, build, and the manifests the report reads."""
