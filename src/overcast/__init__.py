"""overcast: many GPU providers as one pool of AI compute."""

__version__ = "0.1.0"
