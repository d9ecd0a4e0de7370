"""imagine_ros.evaluation: measuring trained models.

Frame quality (PSNR@N, SSIM@N), flow EPE, the end-effector detector and controllability, Shapes KL, cINN motion
transfer and eta sweeps.

It may import ``imagine_ros.models`` and the training helpers (clip datasets, ``training.metrics``); training never
imports it.
"""
