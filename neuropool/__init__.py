"""neuropool: Neuropixels recordings in, sorted and localised units out, over a pool of workers."""

__version__ = "0.1.0"
