"""imagine_ros: predict a robot camera's future frames and optical flows from one image."""

__version__ = "0.1.0"
