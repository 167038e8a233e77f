"""Synthetic people, their biographies (bioS / bioR) and QA pairs."""
