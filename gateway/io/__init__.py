"""Imperative shell: sockets, serial ports, files; moves bytes between codecs and channels."""
