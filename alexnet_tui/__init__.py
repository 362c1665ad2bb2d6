"""alexnet-tui: train the 2012 AlexNet on an image folder from the terminal."""

__version__ = "0.1.0"
