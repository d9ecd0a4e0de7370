"""imagine_ros.training: datasets of clips, the training loop shared by all methods, evaluation."""
