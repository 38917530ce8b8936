"""orbitseg: orbital CT segmentation from raw scanner files to measured labels."""

__version__ = "0.1.0"
