//! Header rewriting producing the exact bytes to replay (I/O-free).
