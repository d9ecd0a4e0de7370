"""Read a LeRobot folder with LeRobot's own dataset reader (``LeRobotDataset`` of the ``lerobot-dataset`` package, run
by another Python: ``LEROBOT_PYTHON``) and save every frame of one video key and ``observation.state`` to an .npz.

Usage: python lerobot_reader.py ROOT VIDEO_KEY OUT.npz. LeRobot's reader does the metadata, the parquet rows, the
episode -> video file and timestamp mapping and the tolerance checks; only the frame source under it is replaced:
``lerobot-dataset`` imports torchvision, whose PyPI wheels need CUDA torch, so ``torchvision.io.VideoReader`` (its
``pyav`` backend) is given here as the few lines of PyAV it wraps. Prints a JSON summary.
"""

import importlib.machinery
import json
import sys
import types

import av
import numpy as np
import torch


class VideoReader:  # torchvision.io.VideoReader(path, "video") with the pyav backend: seek to a key frame, iterate
    def __init__(self, path, stream="video"):
        self.container = av.open(path)
        self.stream = self.container.streams.video[0]

    def seek(self, ts, keyframes_only=True):
        self.container.seek(int(ts / self.stream.time_base), stream=self.stream, backward=True, any_frame=False)

    def __iter__(self):
        for frame in self.container.decode(self.stream):
            data = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            yield {"pts": float(frame.pts * self.stream.time_base), "data": data}


tv = types.ModuleType("torchvision")
tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
tv.transforms = types.SimpleNamespace(ToTensor=None)
tv.io = types.SimpleNamespace(VideoReader=VideoReader)
tv.set_video_backend = lambda backend: None
sys.modules["torchvision"] = tv

from ledataset.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

root, key, out = sys.argv[1:4]
ds = LeRobotDataset("local/imagine_ros_export", root=root, video_backend="pyav")
frames, state, episode = [], [], []
for i in range(len(ds)):
    item = ds[i]
    frames.append((item[key].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0))
    state.append(item["observation.state"].numpy())
    episode.append(int(item["episode_index"]))
np.savez(out, frames=np.stack(frames), state=np.stack(state), episode=np.array(episode))
print(
    json.dumps(
        {
            "episodes": ds.num_episodes,
            "frames": ds.num_frames,
            "fps": ds.fps,
            "task": ds[0]["task"],
            "version": ds.meta.info["codebase_version"],
            "stats_keys": sorted(ds.meta.stats or {}),
        }
    )
)
