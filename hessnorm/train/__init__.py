"""The reference trainer: tasks (quadratic, gpt, resnet), the loop, the run-folder format."""

from hessnorm.train.gpt import GPT, GPTConfig
from hessnorm.train.loop import TrainConfig, train
from hessnorm.train.runs import rebuild
from hessnorm.train.tasks import TASKS, build_task

__all__ = ["TrainConfig", "train", "rebuild", "build_task", "TASKS", "GPT", "GPTConfig"]
