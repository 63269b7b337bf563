"""cnnsearch: search for convolutional image classifiers.

Public names are imported lazily by the modules that need them, so `cnnsearch --help`
starts without loading torch.
"""

__version__ = "0.1.0"
