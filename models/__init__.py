"""imagine_ros.models: one module per method, shared layers and the method registry."""
