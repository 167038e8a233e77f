"""Measuring a trained model: QA exact match, task sets, memorization; one batched generator."""
