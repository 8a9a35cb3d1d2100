"""The paper's methods besides LoRA, and the one registry of all methods (`baselines.registry`)."""

from .registry import METHODS, MethodError, check, prepare

__all__ = ["METHODS", "MethodError", "check", "prepare"]
