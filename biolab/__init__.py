"""biolab: a controlled synthetic-biography pretraining lab."""

__version__ = "0.1.0"
