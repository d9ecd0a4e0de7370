"""imagine_ros.training: datasets of clips, run settings, the training loop shared by all methods, metrics."""
