"""The rclpy layer of imagine_ros: the only place that imports ``rclpy`` and ROS message packages.

- :mod:`imagine_ros.ros.prediction_node`: ``imagine_prediction`` (``ros2 run imagine_ros imagine_prediction``)
- :mod:`imagine_ros.ros.sim_node`: ``imagine_sim`` (``ros2 run imagine_ros imagine_sim``)

Both are thin: the logic lives in plain Python (:mod:`imagine_ros.pipeline`, :mod:`imagine_ros.sim_bridge`,
:mod:`imagine_ros.ros_msgs`, :mod:`imagine_ros.node_params`) and is tested without ROS. Importing this package does
not import rclpy; importing the node modules does.
"""
