"""Exact weight converters from other libraries (torch is imported only when used)."""

from recurrax.interop.torch import from_torch, state_from_torch, state_to_torch

__all__ = ["from_torch", "state_from_torch", "state_to_torch"]
