"""imagine_ros.sim: the PyBullet pushing simulator, its scripted policy, the Shapes dataset and dataset collection.

Importing it registers the gymnasium ids in :data:`ENV_IDS`.
"""

import gymnasium as gym

ENV_IDS = ("ImagineRos/Push-v0", "ImagineRos/PushTask-v0")

if ENV_IDS[0] not in gym.registry:
    gym.register(id=ENV_IDS[0], entry_point="imagine_ros.sim.env:PushEnv", max_episode_steps=30)
    gym.register(id=ENV_IDS[1], entry_point="imagine_ros.sim.env:PushEnv", max_episode_steps=30, kwargs={"task": True})
