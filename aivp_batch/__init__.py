"""aivp-batch: a declarative, Hydra-driven batch runner that turns AIVP storyboards into video clips."""

__version__ = "0.1.0"
