"""The paper's methods besides LoRA, and the one registry of all methods (`baselines.registry`)."""

from .common import MethodError
from .registry import METHODS, check, load, prepare, save

__all__ = ["METHODS", "MethodError", "check", "load", "prepare", "save"]
