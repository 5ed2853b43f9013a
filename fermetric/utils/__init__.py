"""Small shared helpers: seeding, atomic file writes, devices, logging."""
from fermetric.utils.seeding import seed_everything, make_generator
from fermetric.utils.io import atomic_write_bytes, atomic_write_text, write_json, read_json, atomic_torch_save
from fermetric.utils.device import resolve_device

__all__ = [
    "seed_everything",
    "make_generator",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "atomic_torch_save",
    "resolve_device",
]
