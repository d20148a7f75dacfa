"""Sans-I/O codecs: bytes in, events out; events in, bytes out. No sockets, no trio."""
