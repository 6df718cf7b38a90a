"""Unit tests of the trio shell (``emulator/runtime/``): in-memory streams, no real sockets."""
