"""Boards as data: what a board is (kind, address, interpreter, rootfs, ...), not how to talk to it.

Transports (``xqhil.transport``) act on these descriptions.
"""
from .inventory import load_inventory
from .spec import KINDS, BoardSpec, check_providers, check_usable, resolve_board

__all__ = ["BoardSpec", "KINDS", "check_providers", "check_usable", "load_inventory", "resolve_board"]
