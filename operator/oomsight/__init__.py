"""oomsight: why was it OOM-killed, what is about to be, what limit should it have."""

__version__ = "0.1.0"
