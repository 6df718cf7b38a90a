"""HTTP/1.1 and HTTP/2 on the client leg, sans I/O: the codec, one connection's state, the
gateway's own pages and the access log's error codes."""
