//! Per-target mirroring decisions (I/O-free).
