"""The reference trainer: tasks (quadratic, gpt, resnet), loop, checkpoints, rebuild."""

from hessnorm.train.gpt import GPT, GPTConfig
from hessnorm.train.loop import TrainConfig, rebuild, train
from hessnorm.train.tasks import TASKS, build_task

__all__ = ["TrainConfig", "train", "rebuild", "build_task", "TASKS", "GPT", "GPTConfig"]
